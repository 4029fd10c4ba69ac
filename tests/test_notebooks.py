"""The notebooks, executed on a real Jupyter kernel (nbclient), offline.

Parameters are injected the way papermill does it: a cell inserted right after the cell tagged
``parameters`` overrides its assignments, so what runs is exactly what a user gets after
editing that cell.  The exploration notebook runs on its defaults (the shipped sample).  The
reconciliation notebook runs twice: on its defaults (the shipped sample's daily runs against
its backfill, checked against an independent computation) and against moto's server holding an
Analytics Table and CloudWatch metrics seeded by the library's own writers with known
discrepancies (``tests/reconcile_scenario.py``); the test checks the differences the notebook
found.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import bubbly_metrics as bm
from bubbly_metrics.reconciliation import relative_difference_matrix
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


def _independent_reconciliation(root: Path) -> tuple[dict[tuple[Any, ...], tuple[int, int | None]], Any]:
    """What the sample's daily runs and backfill say, and why they differ, without the library.

    tests/reference.py aggregates the full export (backfill, dense) and each incremental export
    (its day); the evidence comes from the raw files with gzip + json: sessions re-dated by
    ``updatedAt`` in the full export, and the deletes (``OldImage``) of the incremental exports,
    by TTL when ``expiresAt`` had passed at the end of their export's window.
    """
    from collections import defaultdict

    from tests import reference

    summaries = {
        d: json.loads((d / "manifest-summary.json").read_text())
        for d in (root / "AWSDynamoDB").iterdir()
        if d.name != "data"
    }
    (full_dir,) = [d for d, s in summaries.items() if s.get("exportType") is None]
    daily = {
        dt.date.fromisoformat(s["exportFromTime"][:10]): (d, s)
        for d, s in summaries.items()
        if s.get("exportType") == "INCREMENTAL_EXPORT"
    }
    first = min(daily)
    last = dt.date.fromisoformat(summaries[full_dir]["exportTime"][:10]) - dt.timedelta(days=1)
    metrics = ("active_users", "games_played", "parties_created", "parties_joined")
    expected = {
        (row[0], row[1], m): v
        for row in reference.aggregate(full_dir, root, start=first, end=last, dense=True).metrics
        for m, v in zip(metrics, row[2:], strict=True)
    }
    actual: dict[tuple[Any, ...], int] = {}
    for day, (d, _) in daily.items():
        for row in reference.aggregate(d, root, start=day, end=day, dense=False).metrics:
            actual.update({(row[0], row[1], m): v for m, v in zip(metrics, row[2:], strict=True)})
    diffs = {
        key: (expected.get(key, 0), actual.get(key))
        for key in set(expected) | set(actual)
        if expected.get(key, 0) != actual.get(key, 0)
    }

    def records(export_dir: Path, image: str) -> Any:
        for entry in map(json.loads, (export_dir / "manifest-files.json").read_text().splitlines()):
            for line in gzip.decompress((root / entry["dataFileS3Key"]).read_bytes()).splitlines():
                yield json.loads(line).get(image)

    metric_of = {
        "session": ("active_users", "games_played"),
        "party": ("parties_created",),
        "member": ("parties_joined",),
    }
    evidence: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    in_full = set()
    for item in records(full_dir, "Item"):
        in_full.add((item["modelId"]["S"], item["owner"]["S"]))
        record = reference.classify(item, "")
        created = reference.classify({**item, "updatedAt": item.get("createdAt")}, "")
        if record.kind == "session" and record.date and created.date and created.date < record.date:
            for m in metric_of["session"]:
                evidence[(created.date, record.app, m)].add("redated")
    for _, (d, summary) in daily.items():
        window_end = dt.datetime.fromisoformat(summary["exportToTime"].replace("Z", "+00:00")).timestamp()
        for entry in map(json.loads, (d / "manifest-files.json").read_text().splitlines()):
            for line in gzip.decompress((root / entry["dataFileS3Key"]).read_bytes()).splitlines():
                change = json.loads(line)
                if "NewImage" in change or (change["Keys"]["modelId"]["S"], change["Keys"]["owner"]["S"]) in in_full:
                    continue
                old = change["OldImage"]
                record = reference.classify(old, "")
                if record.kind is None or record.reason is not None:
                    continue
                ttl = float(old.get("expiresAt", {}).get("N", "inf")) <= window_end
                days: set[dt.date | None] = {record.date}
                if record.kind == "session":
                    days.add(reference.classify({**old, "updatedAt": old.get("createdAt")}, "").date)
                for deleted_day in days:
                    for m in metric_of[record.kind]:
                        evidence[(deleted_day, record.app, m)].add("ttl_expired" if ttl else "deleted")
    for day in (first + dt.timedelta(days=i) for i in range((last - first).days + 1)):
        if day not in daily:
            for key in diffs:
                if key[0] == day:
                    evidence[key].add("missing_from_table")
    return diffs, evidence


def test_reconciliation_notebook_finds_the_samples_causes_on_first_open(kernel_env, tmp_path):
    # Defaults only: the shipped sample, its daily runs against its backfill, offline.
    out = tmp_path / "comparison.parquet"
    nb = execute(RECONCILIATION, tmp_path, OUTPUT=str(out))
    assert outputs(nb, "error") == [] and text_of(nb, "stderr") == ""
    assert "2025-03-04 → 2025-03-17: analytics_table: " in text_of(nb)
    comparison = pl.read_parquet(out)
    differs = comparison.filter(pl.col("status") == "differs")

    diffs, evidence = _independent_reconciliation(Path(bm.sample_export_location()))
    found = {(r["date"], r["app"], r["metric"]): (r["expected"], r["actual"]) for r in differs.iter_rows(named=True)}
    assert found == diffs  # the same values differ, with the same numbers on both sides
    causes = {(r["date"], r["app"], r["metric"]): r["cause"] for r in differs.iter_rows(named=True)}
    for key, cause in causes.items():
        assert cause in evidence[key], (key, cause, evidence[key])  # attributed to a cause it has
    counts = differs.group_by("cause").len()
    assert set(counts["cause"]) == {"redated", "deleted", "ttl_expired", "missing_from_table"}, counts
    # The plots show it: both drawn, and the heat map has coloured (non-zero) cells.
    assert images(nb) == 2
    matrix = relative_difference_matrix(comparison)
    assert matrix.drop("date").select(pl.any_horizontal(pl.all().fill_null(0) != 0).sum()).item() > 0


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
    full = bm.find_export(bm.sample_export_location(), export_type="full").export_id
    for word in ("session", "invite", "bad_owner", full):
        assert word in shown
