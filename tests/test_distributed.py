"""The distributed backfill (bubbly_metrics.distributed): plan → map → reduce == aggregate().

- Property: for any export hypothesis writes (malformed records, broken lines, a missing data
  file, incremental deletes) and any split of its data files into batches, the reduce of the
  maps equals ``aggregate()``: metrics, per-user data and record outcomes.
- A lost batch fails the reduce, naming it; a batch run twice changes nothing.
- The routing rule (one Aggregator or the state machine) from the manifest and the memory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import bubbly_metrics as bm
from bubbly_metrics import distributed as dist
from bubbly_metrics.exceptions import ExportIntegrityError, InvalidArgumentError
from bubbly_metrics.synthetic import write_full_export, write_incremental_export, write_synthetic_export
from tests.test_differential import (
    NOW,
    SETTINGS,
    START,
    WINDOW_FROM,
    WINDOW_TO,
    apply_damage,
    bucket,
    damage,
    incremental_records,
    items,
)


def sorted_outcomes(result: bm.AggregateResult) -> pl.DataFrame:
    return result.outcomes.sort("status", "reason", "file", nulls_last=True)


def assert_same_result(got: bm.AggregateResult, want: bm.AggregateResult) -> None:
    assert got.export.export_id == want.export.export_id
    assert (got.mode, got.date_range) == (want.mode, want.date_range)
    assert_frame_equal(got.metrics, want.metrics)
    assert_frame_equal(got.per_user, want.per_user)
    assert_frame_equal(sorted_outcomes(got), sorted_outcomes(want))
    assert_frame_equal(got.malformed(by_file=True), want.malformed(by_file=True))
    assert got.counts == want.counts
    assert got.to_dict() == want.to_dict() or _same_but_examples(got.to_dict(), want.to_dict())


def _same_but_examples(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # The per-reason example is "one of them": across files it may be another file's record.
    return {k: v for k, v in a.items() if k != "malformedExamples"} == {
        k: v for k, v in b.items() if k != "malformedExamples"
    }


def resplit(run: Path, seed: int, pieces: int) -> None:
    """Rewrite the run's plan as an arbitrary split (shuffled, uneven) of the same files."""
    plan = json.loads((run / "plan.json").read_text())
    keys = [k for b in plan for k in b["files"]]
    rng = random.Random(seed)
    rng.shuffle(keys)
    cuts = sorted(rng.sample(range(1, len(keys)), min(pieces, len(keys)) - 1)) if len(keys) > 1 else []
    groups = [keys[i:j] for i, j in zip([0, *cuts], [*cuts, len(keys)], strict=True)]
    (run / "plan.json").write_text(
        json.dumps([{"batch": n, "files": g, "items": 0} for n, g in enumerate(groups) if g])
    )


def map_reduce(
    source: str, run: Path, *, mode: str, split: tuple[int, int] | None, per_batch: int
) -> bm.AggregateResult:
    plan = dist.plan_run(
        source, run=str(run), mode=mode, start=START if mode == "backfill" else None, now=NOW, items_per_batch=per_batch
    )
    if split is not None:
        resplit(run, *split)
        plan = dist.Plan.read(str(run))
    for batch in plan.batches:
        dist.map_batch(str(run), batch)
    return dist.reduce_run(str(run))


# --- the property ---------------------------------------------------------------------------


@settings(SETTINGS, max_examples=40)  # each example plans, maps and reduces: ~0.1 s
@given(
    rows=st.lists(items(), max_size=40),
    n_files=st.integers(1, 5),
    spec=damage(),
    per_batch=st.integers(1, 30),
    split=st.none() | st.tuples(st.integers(0, 2**16), st.integers(1, 5)),
)
def test_map_reduce_equals_aggregate_backfill(
    rows: list[dict[str, Any]], n_files: int, spec: dict[str, Any], per_batch: int, split: tuple[int, int] | None
) -> None:
    with bucket() as root:
        written = write_full_export(root / "x", rows, export_time=NOW - dt.timedelta(minutes=30), n_files=n_files)
        apply_damage(written, spec)
        want = bm.aggregate(str(root / "x"), mode="backfill", start=START, now=NOW)
        got = map_reduce(str(root / "x"), root / "run", mode="backfill", split=split, per_batch=per_batch)
        assert_same_result(got, want)


@settings(SETTINGS, max_examples=40)  # each example plans, maps and reduces: ~0.1 s
@given(
    pairs=st.lists(st.tuples(items(), st.sampled_from(["insert", "update", "delete"])), max_size=40),
    n_files=st.integers(1, 4),
    spec=damage(),
    split=st.tuples(st.integers(0, 2**16), st.integers(1, 4)),
)
def test_map_reduce_equals_aggregate_incremental(
    pairs: list[tuple[dict[str, Any], str]], n_files: int, spec: dict[str, Any], split: tuple[int, int]
) -> None:
    with bucket() as root:
        written = write_incremental_export(
            root / "x", incremental_records(pairs), export_from=WINDOW_FROM, export_to=WINDOW_TO, n_files=n_files
        )
        apply_damage(written, spec)
        want = bm.aggregate(str(root / "x"), mode="incremental", now=NOW)
        got = map_reduce(str(root / "x"), root / "run", mode="incremental", split=split, per_batch=10)
        assert_same_result(got, want)


# --- failures and re-runs -------------------------------------------------------------------


@pytest.fixture
def export(tmp_path: Path) -> str:
    write_synthetic_export(tmp_path / "export", n_items=600, days=10, start="2025-03-03", n_files=6, seed=3)
    return str(tmp_path / "export")


def test_plan_cuts_by_item_counts_without_splitting_files(export: str, tmp_path: Path) -> None:
    plan = dist.plan_run(export, run=str(tmp_path / "run"), now=NOW, start="2025-03-03", items_per_batch=250)
    files = bm.find_export(export).data_files()
    assert [k for b in plan.batches for k in b["files"]] == [f.key for f in files]
    assert all(b["items"] <= 250 or len(b["files"]) == 1 for b in plan.batches)
    assert sum(b["items"] for b in plan.batches) == 600
    # plan.json is the Distributed Map's item list: a JSON array of the batches.
    assert json.loads((tmp_path / "run" / "plan.json").read_text()) == plan.batches


def test_a_lost_batch_fails_the_reduce_naming_it(export: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    plan = dist.plan_run(export, run=str(run), now=NOW, start="2025-03-03", items_per_batch=200)
    assert len(plan.batches) >= 3
    for batch in plan.batches[:1] + plan.batches[2:]:
        dist.map_batch(str(run), batch)
    with pytest.raises(ExportIntegrityError, match=r"1 of \d+ batch\(es\) have no partial \(1\)"):
        dist.reduce_run(str(run))
    dist.map_batch(str(run), 1)  # the operator re-runs it
    want = bm.aggregate(export, mode="backfill", start="2025-03-03", now=NOW)
    assert_same_result(dist.reduce_run(str(run)), want)


def test_a_batch_run_twice_writes_the_same_partial(export: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    plan = dist.plan_run(export, run=str(run), now=NOW, start="2025-03-03", items_per_batch=200)
    for batch in plan.batches:
        dist.map_batch(str(run), batch)
    first = {p.name: p.read_bytes() for p in (run / "partials").iterdir()}
    dist.map_batch(str(run), plan.batches[0])
    again = {p.name: p.read_bytes() for p in (run / "partials").iterdir()}
    assert first == again
    assert_same_result(dist.reduce_run(str(run)), bm.aggregate(export, mode="backfill", start="2025-03-03", now=NOW))


def test_a_batch_not_in_the_plan_is_refused(export: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    plan = dist.plan_run(export, run=str(run), now=NOW, start="2025-03-03", items_per_batch=200)
    forged = {"batch": 0, "files": plan.batches[1]["files"]}
    with pytest.raises(InvalidArgumentError, match="does not match batch 0"):
        dist.map_batch(str(run), forged)
    with pytest.raises(InvalidArgumentError, match="not in run"):
        dist.map_batch(str(run), 99)
    with pytest.raises(InvalidArgumentError, match="run.json not found"):
        dist.reduce_run(str(tmp_path / "nowhere"))


def test_a_plan_from_another_export_is_refused(export: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    dist.plan_run(export, run=str(run), now=NOW, start="2025-03-03", items_per_batch=200)
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(meta | {"exportId": "01700000000000-deadbeef"}))
    with pytest.raises(ExportIntegrityError, match="was planned for export 01700000000000-deadbeef"):
        dist.reduce_run(str(run))


# --- sizing ---------------------------------------------------------------------------------


def test_single_run_estimate_scales_with_items_and_memory(export: str) -> None:
    info = bm.find_export(export)
    small = dist.single_run_estimate(info, memory_mb=3008, timeout_seconds=900)
    assert small.fits and small.items == 600
    # The estimate reads the manifest's item count: a table 500,000x this one does not fit
    # the stack's default Aggregator (3,008 MB, 900 s), and doubling memory halves the scan.
    huge = dataclasses.replace(info, item_count=300_000_000)
    at_3008 = dist.single_run_estimate(huge, memory_mb=3008, timeout_seconds=900)
    at_6016 = dist.single_run_estimate(huge, memory_mb=6016, timeout_seconds=900)
    assert not at_3008.fits
    fixed = dist.SINGLE_RUN_FIXED_SECONDS
    assert at_6016.seconds - fixed == pytest.approx((at_3008.seconds - fixed) / 2)
    # No more than 6 vCPUs however much memory.
    assert dist.single_run_estimate(huge, memory_mb=20_000, timeout_seconds=900).vcpus == 6
    assert dist.default_items_per_batch(3538) == 2 * dist.default_items_per_batch(1769)


# --- CLI ------------------------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str, str]:
    import io

    from bubbly_metrics.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_plan_map_reduce_prints_what_aggregate_prints(export: str, tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    now = ["--now", "2025-03-13T02:30:00Z"]
    code, out, _ = cli("plan", export, "--run", run, "--start", "2025-03-03", "--items-per-batch", "150", *now)
    assert code == 0 and json.loads(out)["batches"] == 6
    code, out, _ = cli("map", run, "--batch", "0", "--batch", "5")
    assert code == 0 and [json.loads(line)["batch"] for line in out.splitlines()] == [0, 5]
    code, _, err = cli("reduce", run)
    assert code == 1 and "4 of 6 batch(es) have no partial (1, 2, 3, 4)" in err
    assert cli("map", run)[0] == 0  # the rest (and 0 and 5 again)
    code, reduced, _ = cli("reduce", run, "--format", "csv")
    _, aggregated, _ = cli("aggregate", export, "--mode", "backfill", "--start", "2025-03-03", "--format", "csv", *now)
    assert code == 0 and reduced == aggregated and reduced.count("\n") > 10
    code, _, err = cli("reduce", run, "--dry-run")
    assert code == 2 and "go with --publish" in err
