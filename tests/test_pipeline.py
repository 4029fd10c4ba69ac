"""The one-call pipeline: worker processes and threads agree, locally and on S3."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import bubbly_metrics as bm
from bubbly_metrics.synthetic import write_generated_export
from tests.conftest import upload_tree

NOW = dt.datetime(2025, 2, 11, 2, 30, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("generated")
    write_generated_export(root, n_items=6000, n_files=5, start="2025-02-01", days=10, seed=3, processes=2)
    return root


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def test_worker_processes_give_the_same_result_as_threads(generated: Path) -> None:
    threads = bm.aggregate(str(generated), mode="backfill", start="2025-02-01", now=NOW, processes=False)
    procs = bm.aggregate(str(generated), mode="backfill", start="2025-02-01", now=NOW, processes=True)
    assert threads.metrics["games_played"].sum() > 0
    assert_frame_equal(procs.metrics, threads.metrics)
    assert_frame_equal(procs.per_user, threads.per_user)
    assert_frame_equal(_sorted(procs.outcomes), _sorted(threads.outcomes))
    assert procs.counts == threads.counts


def test_worker_processes_read_s3_with_the_parents_aws_environment(aws: str, generated: Path) -> None:
    url = upload_tree(generated, "pipeline", aws, prefix="exports/backfill/")
    local = bm.aggregate(str(generated), mode="backfill", start="2025-02-01", now=NOW)
    remote = bm.aggregate(url, mode="backfill", start="2025-02-01", now=NOW, processes=True)
    assert_frame_equal(remote.metrics, local.metrics)


def test_worker_processes_stop_on_a_checksum_mismatch(tmp_path: Path, generated: Path) -> None:
    import shutil

    from bubbly_metrics.exceptions import ExportIntegrityError

    root = tmp_path / "copy"
    shutil.copytree(generated, root)
    victim = bm.find_export(str(root)).data_files()[2]
    path = Path(victim.path)
    path.write_bytes(path.read_bytes()[:-9] + bytes(9))
    with pytest.raises(ExportIntegrityError, match=victim.key):
        bm.aggregate(str(root), mode="backfill", start="2025-02-01", now=NOW, processes=True, verify=True)
