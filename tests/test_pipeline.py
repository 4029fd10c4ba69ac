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


def test_an_unguarded_script_runs_once_with_worker_processes(tmp_path: Path, generated: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text(
        "import bubbly_metrics as bm\n"
        "print('top-level code ran')\n"
        f"r = bm.aggregate({str(generated)!r}, mode='backfill', start='2025-02-01', end='2025-02-10', processes=True)\n"
        "print(r.metrics.height)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("top-level code ran") == 1
    assert proc.stdout.strip().endswith("40")


def test_a_worker_that_dies_fails_its_task_and_the_pool_still_stops() -> None:
    import os

    from bubbly_metrics._worker import ProcessPool
    from bubbly_metrics.exceptions import WorkerError

    with ProcessPool(2) as pool:
        ok, failing = pool.submit(pow, 2, 10), pool.submit(int, "not a number")
        assert ok.result(timeout=60) == 1024
        with pytest.raises(ValueError, match="not a number"):
            failing.result(timeout=60)
        dead = pool.submit(os._exit, 3)
        with pytest.raises(WorkerError, match="exit code 3"):
            dead.result(timeout=60)
        later = [pool.submit(pow, 3, 2) for _ in range(4)]
        # Nothing hangs: each later task is either done by the live worker or failed.
        for future in later:
            assert future.exception(timeout=60) is None or isinstance(future.exception(), WorkerError)


def test_a_local_lane_runs_tasks_in_this_process_beside_the_workers() -> None:
    import os

    from bubbly_metrics._worker import ProcessPool

    with ProcessPool(1, local=1) as pool:
        pids = {f.result(timeout=60) for f in [pool.submit(os.getpid) for _ in range(40)]}
        with pytest.raises(ValueError, match="not a number"):
            pool.submit(int, "not a number").result(timeout=60)
    assert os.getpid() in pids  # the local lane took some tasks (the worker may have taken others)
    with ProcessPool(0, local=1) as alone:
        assert alone.submit(os.getpid).result(timeout=60) == os.getpid()


class _OddError(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def _raise_odd() -> None:
    raise _OddError(1, 2)


def test_an_error_that_cannot_be_rebuilt_is_reported_not_hung() -> None:
    from bubbly_metrics._worker import ProcessPool
    from bubbly_metrics.exceptions import WorkerError

    with ProcessPool(1) as pool:
        with pytest.raises(WorkerError, match="1/2"):
            pool.submit(_raise_odd).result(timeout=60)
        assert pool.submit(pow, 2, 3).result(timeout=60) == 8


class _Unrebuildable(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def _warn(message: str) -> int:
    import logging

    log = logging.getLogger("bubbly_metrics.scan")
    log.warning("from a worker: %s", message)
    log.info("info travels too when this process wants it")
    log.debug("below the level: never sent")
    log.warning("a bad log call: %d", "not a number")  # reported on stderr, never fails the task
    log.warning("an extra that pickles but cannot be rebuilt", extra={"odd": _Unrebuildable(1, 2)})
    return 7


def test_what_a_worker_logs_reaches_this_process_loggers(caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import os

    from bubbly_metrics._worker import ProcessPool

    with caplog.at_level(logging.INFO, logger="bubbly_metrics"), ProcessPool(1) as pool:
        assert pool.submit(_warn, "hello").result(timeout=60) == 7
    records = [r for r in caplog.records if r.name == "bubbly_metrics.scan"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.WARNING, "from a worker: hello"),
        (logging.INFO, "info travels too when this process wants it"),
        (logging.WARNING, "an extra that pickles but cannot be rebuilt"),
    ]
    assert {r.process for r in records} != {os.getpid()}


def test_unreadable_lines_read_by_a_worker_are_logged_here(
    tmp_path: Path, generated: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import gzip
    import logging
    import os
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(generated, root)
    files = bm.find_export(str(root)).data_files()
    for f in files:  # one broken line in every file, so both lanes (worker and local) meet one
        lines = gzip.decompress(Path(f.path).read_bytes()).split(b"\n")
        lines[3] = lines[3][: len(lines[3]) // 2]
        Path(f.path).write_bytes(gzip.compress(b"\n".join(lines)))
    with caplog.at_level(logging.WARNING, logger="bubbly_metrics"):
        result = bm.aggregate(str(root), mode="backfill", start="2025-02-01", now=NOW, processes=True, threads=2)
    assert result.malformed().filter(pl.col("reason") == "broken_json_line")["records"].item() == len(files)
    skipped = [r for r in caplog.records if "skipped 1 unreadable line(s), first at line 4" in r.getMessage()]
    assert sorted(r.getMessage().split(":")[0] for r in skipped) == sorted(f.key for f in files)
    assert {r.process for r in skipped} - {os.getpid()}, "no record came from the worker process"


# --- batches: a file's records are summarised a batch at a time ----------------------------


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> int:
    """Tiny read chunks, decode blocks and batches, so every file spans many of each."""
    from bubbly_metrics import _readfile

    monkeypatch.setattr(_readfile, "_CHUNK", 512)
    monkeypatch.setattr(_readfile, "_LINES_BATCH", 2048)
    monkeypatch.setattr(_readfile, "BATCH_ROWS", 16)
    return 16


def test_batched_summaries_equal_whole_files(generated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bubbly_metrics import _readfile

    whole = bm.aggregate(str(generated), mode="backfill", start="2025-02-01", now=NOW, processes=False)
    monkeypatch.setattr(_readfile, "_LINES_BATCH", 4096)
    monkeypatch.setattr(_readfile, "BATCH_ROWS", 37)
    batched = bm.aggregate(str(generated), mode="backfill", start="2025-02-01", now=NOW, processes=False)
    assert whole.counts["malformed"] > 0
    assert_frame_equal(batched.metrics, whole.metrics)
    assert_frame_equal(batched.per_user, whole.per_user)
    assert_frame_equal(
        batched.malformed(by_file=True).drop("example_model_id", "example_owner"),
        whole.malformed(by_file=True).drop("example_model_id", "example_owner"),
    )
    assert batched.counts == whole.counts


def _two_member_export(tmp_path: Path, *, damage_second: bool) -> bm.ExportInfo:
    import gzip
    import random

    from bubbly_metrics.synthetic import write_full_export

    rng = random.Random(3)  # incompressible payloads: a read chunk holds a line or two
    items = [
        {
            "modelId": {"S": f"session-sudoku-{i:04d}"},
            "owner": {"S": f"user-u{i % 7}"},
            "updatedAt": {"N": "1738900000"},
            "payload": {"S": "".join(rng.choices("abcdefghij0123456789", k=400))},
        }
        for i in range(60)
    ]
    written = write_full_export(tmp_path, items, export_time="2025-02-10T02:00:00Z", n_files=1)
    path = written.data_files[0]
    lines = gzip.decompress(path.read_bytes()).split(b"\n")[:-1]
    first = gzip.compress(b"".join(x + b"\n" for x in lines[:40]), mtime=0)
    second = bytearray(gzip.compress(b"".join(x + b"\n" for x in lines[40:]), mtime=0))
    if damage_second:
        second[12:24] = b"\xff" * 12  # inside the deflate data
    path.write_bytes(first + bytes(second))
    return bm.find_export(str(tmp_path))


def test_deletes_of_a_corrupt_member_are_dropped_with_its_other_lines(tmp_path: Path, small_batches: int) -> None:
    import gzip
    import random

    from bubbly_metrics.synthetic import write_incremental_export

    rng = random.Random(5)  # incompressible payloads: lines are decoded long before a member ends

    def session(i: int) -> dict[str, object]:
        return {
            "modelId": {"S": f"session-sudoku-{i:04d}"},
            "owner": {"S": f"user-u{i % 7}"},
            "updatedAt": {"N": "1739577600"},  # 2025-02-15
            "payload": {"S": "".join(rng.choices("abcdefghij0123456789", k=400))},
        }

    # Each member: 20 inserts and 5 deletes.
    records = [
        {"Keys": {"modelId": session(i)["modelId"]}, "NewImage": session(i)}
        if i % 5
        else {"Keys": {"modelId": session(i)["modelId"]}, "OldImage": session(i)}
        for i in range(1, 51)
    ]
    written = write_incremental_export(
        tmp_path, records, export_from="2025-02-15T00:00:00Z", export_to="2025-02-16T00:00:00Z", n_files=1
    )
    path = written.data_files[0]
    lines = gzip.decompress(path.read_bytes()).split(b"\n")[:-1]
    first = gzip.compress(b"".join(x + b"\n" for x in lines[:25]), mtime=0)
    second = bytearray(gzip.compress(b"".join(x + b"\n" for x in lines[25:]), mtime=0))
    path.write_bytes(first + bytes(second))
    now = dt.datetime(2025, 2, 16, 2, 30, tzinfo=dt.UTC)
    intact = bm.aggregate(str(tmp_path), mode="incremental", date="2025-02-15", now=now)
    assert intact.counts["deleted"] == 10 and intact.items_read == 50
    second[-8] ^= 0xFF  # the second member's CRC: caught only after all its lines were decoded
    path.write_bytes(first + bytes(second))
    damaged = bm.aggregate(str(tmp_path), mode="incremental", date="2025-02-15", now=now)
    # The damaged member's lines are all dropped, its deletes too: only the first member's count.
    assert damaged.counts["deleted"] == 5 and damaged.counts["counted"] == 20
    assert damaged.malformed()["reason"].to_list() == ["corrupt_gzip"]


def _batches(export: bm.ExportInfo) -> list[pl.DataFrame]:
    from bubbly_metrics.scan import map_files

    return [batch for _, batches, _ in map_files(export, list, per_batch=lambda frame: frame) for batch in batches]


def test_batches_are_bounded_and_never_straddle_gzip_members(tmp_path: Path, small_batches: int) -> None:
    batches = _batches(_two_member_export(tmp_path, damage_second=False))
    lines = [b["line"].to_list() for b in batches]
    assert len(batches) > 4
    # A batch closes at the first decoded block that reaches the bound (a block here is a few lines).
    assert all(len(x) < small_batches + 8 for x in lines)
    assert [n for x in lines for n in x] == list(range(1, 61))
    assert not any(x[0] <= 40 < x[-1] for x in lines)  # member 1 is lines 1-40


def test_a_corrupt_member_drops_its_batches_and_keeps_earlier_members(tmp_path: Path, small_batches: int) -> None:
    batches = _batches(_two_member_export(tmp_path, damage_second=True))
    frame = pl.concat(batches)
    kept = frame.filter(pl.col("read_error").is_null())
    assert kept["line"].to_list() == list(range(1, 41))
    assert frame.filter(pl.col("read_error").is_not_null()).select("line", "read_error").rows() == [
        (41, "corrupt_gzip")
    ]


def test_merged_activity_keeps_counts_beyond_16_bits_exact() -> None:
    # Parts are held with the narrowest count type that fits them (UInt16 nearly always).
    from bubbly_metrics.metrics import merge_activity

    day = dt.date(2025, 2, 1)

    def part(rows: list[tuple[str, int, int]]) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "date": [day] * len(rows),
                "app": ["sudoku"] * len(rows),
                "user_id": [u for u, _, _ in rows],
                "games": [g for _, g, _ in rows],
                "parties_created": [p for _, _, p in rows],
                "parties_joined": [0] * len(rows),
            }
        )

    merged = merge_activity([part([("u", 70_000, 0), ("v", 1, 0)]), part([("u", 65_535, 1)]), part([("w", 2, 3)])])
    got = merged.with_columns(pl.col("user_id").cast(pl.String)).sort("user_id")
    assert got.select("user_id", "games", "parties_created").rows() == [
        ("u", 135_535, 1),
        ("v", 1, 0),
        ("w", 2, 3),
    ]


@pytest.mark.parametrize("each_route", ["counting", "rows"], indirect=True)
def test_file_summaries_keep_none_of_the_decoders_blocks(
    generated: Path, each_route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a run keeps of each file until its end (its summary) is copied out of the decoded columns.

    A summary column kept zero-copy keeps its whole block alive: kept for every file until the
    run ends, that grew memory with the export (+250 MB on 10M items) and system time 5-7 fold.
    """
    import gc

    from bubbly_metrics import _decoder
    from bubbly_metrics.metrics import ActivityMerger

    gc.collect()
    before = _decoder.FAST.live_exports()  # whatever an earlier test in this process still holds
    held: list[int] = []
    result = ActivityMerger.result

    def count_then_merge(self: ActivityMerger) -> pl.DataFrame:
        gc.collect()  # every file is read: only what the run keeps is left
        held.append(_decoder.FAST.live_exports())
        return result(self)

    monkeypatch.setattr(ActivityMerger, "result", count_then_merge)
    run = bm.aggregate(str(generated), mode="backfill", start="2025-02-01", now=NOW, processes=False)
    assert run.counts["malformed"] > 0 and run.metrics["games_played"].sum() > 0
    assert held == [before]
