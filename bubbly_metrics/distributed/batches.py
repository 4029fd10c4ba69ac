"""A distributed run's map (one batch of data files into its partial) and reduce (every partial into the result)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from bubbly_metrics.distributed.plan import Plan, read_parquet, run_path, write_bytes, write_parquet
from bubbly_metrics.exceptions import ExportIntegrityError, InvalidArgumentError
from bubbly_metrics.exports import DataFile
from bubbly_metrics.locations import filesystem
from bubbly_metrics.metrics import ActivityMerger, daily_metrics, merge_outcomes
from bubbly_metrics.pipeline import AggregateResult, summarize_export

__all__ = ["ReducedRun", "map_batch", "reduce_run"]

logger = logging.getLogger(__package__)  # the engine's lines keep one logger name


def _partial(run: str, batch: int, part: str) -> str:
    return run_path(run, f"partials/batch-{batch:05d}.{part}")


def map_batch(
    run: str,
    batch: Mapping[str, Any] | int,
    *,
    storage_options: dict[str, Any] | None = None,
    verify: bool = False,
    threads: int | None = None,
    on_file: Callable[[DataFile, int], None] | None = None,
) -> dict[str, Any]:
    """Summarise one batch of the run's plan and write its partial; return what it wrote.

    ``batch`` is an element of ``plan.json`` (what the Distributed Map passes) or its number.
    The partial is ``partials/batch-NNNNN.activity.parquet`` (per ``(date, app, user_id)``:
    games, parties created, parties joined), ``.outcomes.parquet`` (records by outcome,
    malformed ones per reason and file with an example's keys), and last ``.json``, which
    commits it and names the files it covers.  Running a batch twice writes the same partial.
    """
    plan = Plan.read(run, storage_options=storage_options)
    if isinstance(batch, int):
        if not 0 <= batch < len(plan.batches):
            raise InvalidArgumentError(f"batch {batch} is not in run {run}, which has {len(plan.batches)} batch(es)")
        batch = plan.batches[batch]
    try:
        number, keys = int(batch["batch"]), [str(k) for k in batch["files"]]
    except (KeyError, TypeError, ValueError):
        raise InvalidArgumentError(f"not a batch of a plan: {batch!r}") from None
    if not 0 <= number < len(plan.batches) or plan.batches[number]["files"] != keys:
        raise InvalidArgumentError(f"batch {number} given does not match batch {number} of run {run}'s plan")
    export = plan.export(storage_options)
    by_key = {f.key: f for f in export.data_files()}
    files = [by_key[k] for k in keys if k in by_key]
    if len(files) != len(keys):
        missing = sorted(set(keys) - set(by_key))
        raise ExportIntegrityError(f"batch {number} names data files not in export {export.export_id}: {missing[:5]}")
    activity, outcomes = summarize_export(
        export, plan.date_range, verify=verify, threads=threads, processes=False, on_file=on_file, files=files
    )
    # Strings, not the run-local Categorical codes: a partial is read by another process.
    activity = activity.with_columns(pl.col("app", "user_id").cast(pl.String))
    write_parquet(activity, _partial(plan.run, number, "activity.parquet"), storage_options)
    write_parquet(outcomes, _partial(plan.run, number, "outcomes.parquet"), storage_options)
    report = {
        "run": plan.run,
        "batch": number,
        "files": keys,
        "items": int(outcomes["records"].sum()),
        "userDays": activity.height,
        "digest": _digest(keys),
    }
    write_bytes(_partial(plan.run, number, "json"), json.dumps(report).encode(), storage_options)
    logger.info(
        "batch %d: %d data file(s), %d records, %d user-days", number, len(keys), report["items"], activity.height
    )
    return {k: v for k, v in report.items() if k != "files"} | {"dataFiles": len(keys)}


def _digest(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def reduce_run(run: str, *, storage_options: dict[str, Any] | None = None) -> AggregateResult:
    """Merge every partial of ``run`` into the :class:`AggregateResult` ``aggregate()`` gives.

    Fails, naming them, when a batch of the plan has no committed partial or one for other
    files, or when the plan no longer covers the export's manifest: a partial missing from the
    sum would make every number of its days too small, silently.
    """
    plan = Plan.read(run, storage_options=storage_options)
    export = plan.export(storage_options)
    planned = [k for b in plan.batches for k in b["files"]]
    listed = [f.key for f in export.data_files()]
    if sorted(planned) != sorted(listed) or len(set(planned)) != len(planned):
        raise ExportIntegrityError(
            f"run {plan.run}: its plan covers {len(planned)} data file(s) but export {export.export_id} "
            f"lists {len(listed)}; plan the run again"
        )
    lost: list[int] = []
    for b in plan.batches:
        fs, path = filesystem(_partial(plan.run, int(b["batch"]), "json"), storage_options)
        try:
            committed = json.loads(fs.cat_file(path))
        except FileNotFoundError:
            lost.append(int(b["batch"]))
            continue
        if committed.get("files") != b["files"]:
            lost.append(int(b["batch"]))
    if lost:
        shown = ", ".join(str(n) for n in lost[:20]) + (" …" if len(lost) > 20 else "")
        raise ExportIntegrityError(
            f"run {plan.run}: {len(lost)} of {len(plan.batches)} batch(es) have no partial ({shown}); "
            f"run their map again (`map {plan.run} --batch N`), then reduce"
        )
    if not plan.batches:  # an export without data files: the single run's empty tables
        activity, outcomes = summarize_export(export, plan.date_range, files=[])
    else:
        merger = ActivityMerger()
        parts = []
        for b in plan.batches:
            merger.add(read_parquet(_partial(plan.run, int(b["batch"]), "activity.parquet"), storage_options))
            parts.append(read_parquet(_partial(plan.run, int(b["batch"]), "outcomes.parquet"), storage_options))
        activity, outcomes = merger.result(), merge_outcomes(parts)
    metrics = daily_metrics(activity, plan.date_range, dense=plan.mode == "backfill").collect()
    logger.info("reduced %d batch(es) of run %s: %d user-days", len(plan.batches), plan.run, activity.height)
    return AggregateResult(export, plan.mode, plan.date_range, activity, outcomes, metrics)


@dataclass(frozen=True)
class ReducedRun:
    """A distributed run reduced (and, once :attr:`published` is set, published): the Reduce Lambda's summary."""

    run: str
    result: AggregateResult
    published: dict[str, Any] = field(default_factory=dict)
    """The publish summary's fields (:func:`~bubbly_metrics.daily_outputs.publish_logged`)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the result's summary, ``run``, ``engine`` (``distributed``) and what was published."""
        return self.result.to_dict() | {"run": self.run, "engine": "distributed"} | self.published
