"""The notebooks, executed on a real Jupyter kernel (nbclient), offline.

Parameters are injected the way papermill does it: a cell inserted right after the cell tagged
``parameters`` overrides its assignments, so what runs is exactly what a user gets after
editing that cell.  The exploration notebook runs on its defaults (the shipped sample).  The
reconciliation notebook runs twice: on its defaults (the shipped sample, nothing to compare)
and against moto's server holding an Analytics Table and CloudWatch metrics seeded by the
library's own writers with known discrepancies (``tests/reconcile_scenario.py``); the test
checks the differences the notebook found.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests import reconcile_scenario as sc
from tests.aws_helpers import create_analytics_table
from tests.conftest import upload_tree

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
RECONCILIATION = NOTEBOOKS / "backfill_reconciliation.ipynb"
EXPLORE = NOTEBOOKS / "explore_export.ipynb"


@pytest.fixture
def kernel_env(monkeypatch):
    # The kernel is a subprocess: it inherits this environment (AWS_* from the ``aws`` fixture).
    # Agg keeps any plot off a display; the notebook itself selects the inline backend,
    # which renders through Agg into the cell outputs.
    monkeypatch.setenv("MPLBACKEND", "Agg")


def execute(path: Path, cwd: Path, **parameters: Any) -> Any:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    (index,) = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def outputs(nb: Any, kind: str) -> list[Any]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == kind]


def text_of(nb: Any, name: str = "stdout") -> str:
    return "".join(o.get("text", "") for o in outputs(nb, "stream") if o.get("name") == name)


def images(nb: Any) -> int:
    return sum("image/png" in o.get("data", {}) for k in ("display_data", "execute_result") for o in outputs(nb, k))


def test_notebooks_are_committed_without_outputs():
    import nbformat

    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert RECONCILIATION in paths and EXPLORE in paths
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), f"{path.name} has outputs"
        assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1, path.name


def test_reconciliation_notebook_runs_offline_on_its_defaults(kernel_env, tmp_path):
    out = tmp_path / "comparison.parquet"
    nb = execute(RECONCILIATION, tmp_path, OUTPUT=str(out))
    assert outputs(nb, "error") == [] and text_of(nb, "stderr") == ""
    text = text_of(nb)
    assert "2025-01-17 → 2025-03-17: nothing compared" in text
    assert "No Analytics Table configured" in text
    assert pl.read_parquet(out).is_empty()
    # The expected-only time series and the (empty) heat map are still drawn.
    assert images(nb) == 2


def test_reconciliation_notebook_finds_the_planted_differences(aws, kernel_env, tmp_path):
    new_root = sc.write_new_world(tmp_path / "new")
    location = upload_tree(new_root, "bubbly-exports", aws)
    create_analytics_table(sc.ANALYTICS)
    sc.seed_outputs(sc.write_old_world(tmp_path / "old"))
    out = tmp_path / "comparison.parquet"

    nb = execute(
        RECONCILIATION,
        tmp_path,
        EXPORT_LOCATION=location + "exports/",
        INCREMENTAL_LOCATION=location + "exports/",
        ANALYTICS_TABLE=sc.ANALYTICS,
        COMPARE_CLOUDWATCH=True,
        ENDPOINT_URL=aws,
        REGION="eu-west-2",
        START=sc.START,
        END=sc.END,
        NOW=sc.NOW.isoformat(),
        OUTPUT=str(out),
    )

    assert outputs(nb, "error") == [] and text_of(nb, "stderr") == ""
    comparison = pl.read_parquet(out)
    found = {
        target: set(
            comparison.filter((pl.col("target") == target) & (pl.col("status") == "differs"))
            .select("date", "app", "metric", "cause")
            .iter_rows()
        )
        for target in ("analytics_table", "cloudwatch")
    }
    assert found["analytics_table"] == sc.TABLE_DIFFS
    assert found["cloudwatch"] == sc.CLOUDWATCH_DIFFS
    outside = comparison.filter(pl.col("status") == "outside_window")
    assert outside.height == sc.OUTSIDE_WINDOW
    assert outside["date"].max() == dt.date(2025, 3, 4)
    text = text_of(nb)
    assert "2025-03-01 → 2025-03-17: analytics_table: 13 of 204 values differ" in text
    assert "CloudWatch window: 2025-03-05 → 2025-03-18" in text
    # Two time series (table, CloudWatch) and two heat maps.
    assert images(nb) == 4


def test_explore_notebook_runs_offline_on_its_defaults(kernel_env, tmp_path):
    nb = execute(EXPLORE, tmp_path, TOP=3)
    assert outputs(nb, "error") == [] and text_of(nb, "stderr") == ""
    shown = "".join(
        o.get("data", {}).get("text/plain", "") for k in ("execute_result", "display_data") for o in outputs(nb, k)
    )
    # Records by kind, the ignored kinds by modelId prefix, and the malformed records' reasons.
    for word in ("session", "invite", "bad_owner", "01742263200000-9f31f99d"):
        assert word in shown
