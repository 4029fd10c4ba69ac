"""notebooks/engagement.ipynb, executed on a real Jupyter kernel (as tests/test_notebooks.py does).

It runs on its defaults (the shipped sample) and against moto's Analytics Table holding the
sample's backfill; a cell appended by the test saves the frames the notebook computed, which
must equal the plain-Python reference's figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import bubbly_metrics as bm
from bubbly_metrics.engagement import ENGAGEMENT_SCHEMA, RETENTION_SCHEMA
from bubbly_metrics.publish import publish
from tests import engagement_reference as ref
from tests.aws_helpers import ANALYTICS, create_analytics_table
from tests.test_notebooks import images, text_of

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "engagement.ipynb"
SAVE = 'engagement.write_parquet("engagement.parquet")\ncohorts.write_parquet("cohorts.parquet")'


def execute(cwd: Path, **parameters: Any) -> Any:
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    (index,) = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    nb.cells.append(nbformat.v4.new_code_cell(SAVE))
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


@pytest.fixture
def kernel_env(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # the kernel inherits it: no display needed


@pytest.fixture(scope="module")
def sample() -> bm.AggregateResult:
    return bm.aggregate(bm.sample_export_location(), mode="backfill", now=bm.SAMPLE_NOW)


def reference_frames(sample: bm.AggregateResult) -> tuple[pl.DataFrame, pl.DataFrame]:
    active = set(bm.active_user_days(sample).collect().iter_rows())
    first, last = sample.date_range.start, sample.date_range.end
    engagement = pl.DataFrame(ref.engagement(active, first, last), schema=ENGAGEMENT_SCHEMA, orient="row")
    cohorts = pl.DataFrame(ref.retention(active, first, last), schema=RETENTION_SCHEMA, orient="row")
    return engagement, cohorts


def check(nb: Any, cwd: Path, sample: bm.AggregateResult) -> None:
    assert images(nb) == 4  # DAU/WAU/MAU, stickiness, retention curve, heat map
    assert "days read: 2025-01-17 → 2025-03-17" in text_of(nb)
    engagement, cohorts = reference_frames(sample)
    assert_frame_equal(pl.read_parquet(cwd / "engagement.parquet"), engagement)
    assert_frame_equal(pl.read_parquet(cwd / "cohorts.parquet"), cohorts)


def test_runs_on_the_shipped_sample(kernel_env, tmp_path, sample):
    nb = execute(tmp_path)
    check(nb, tmp_path, sample)


def test_runs_on_the_analytics_table(aws, kernel_env, tmp_path, sample):
    create_analytics_table()
    publish(sample, table=ANALYTICS, cloudwatch=False, now=bm.SAMPLE_NOW)
    nb = execute(tmp_path, ANALYTICS_TABLE=ANALYTICS, END="2025-03-17", NOW="2025-03-18T02:30:00Z")
    check(nb, tmp_path, sample)


def test_runs_on_a_full_export_and_its_incremental_exports(kernel_env, tmp_path):
    from bubbly_metrics.synthetic import write_history

    root = tmp_path / "bucket"
    write_history(root, n_items=3000, days=60, daily_days=14, export_time="2025-03-04T02:00:00Z")
    nb = execute(tmp_path, EXPORT_LOCATION=str(root), INCREMENTAL_LOCATION=str(root), NOW="2025-03-18T02:30:00Z")
    assert images(nb) == 4 and "days read: 2025-01-17 → 2025-03-17" in text_of(nb)
    parts, days = bm.read_activity(str(root), incremental=str(root), now=bm.SAMPLE_NOW)
    active = set(bm.active_user_days(parts).collect().iter_rows())
    want = pl.DataFrame(ref.engagement(active, days.start, days.end), schema=ENGAGEMENT_SCHEMA, orient="row")
    assert_frame_equal(pl.read_parquet(tmp_path / "engagement.parquet"), want)
    want = pl.DataFrame(ref.retention(active, days.start, days.end), schema=RETENTION_SCHEMA, orient="row")
    assert_frame_equal(pl.read_parquet(tmp_path / "cohorts.parquet"), want)
