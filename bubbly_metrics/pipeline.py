"""The pipeline in one call: export location → daily per-app metrics (``aggregate``).

Examples
--------
>>> import datetime as dt
>>> from bubbly_metrics import aggregate, sample_export_location
>>> result = aggregate(sample_export_location(), mode="backfill",
...                    now=dt.datetime(2025, 3, 18, 2, 30, tzinfo=dt.UTC))
>>> result.metrics.columns
['date', 'app', 'active_users', 'games_played', 'parties_created', 'parties_joined']
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from bubbly_metrics._rows import detached
from bubbly_metrics.dates import DateRange, resolve_range
from bubbly_metrics.exceptions import InvalidArgumentError
from bubbly_metrics.exports import DataFile, ExportInfo, find_export
from bubbly_metrics.metrics import (
    STATUSES,
    ActivityMerger,
    daily_metrics,
    deleted_outcomes,
    malformed_counts,
    merge_outcomes,
    plain_outcomes,
    record_outcomes,
    user_activity,
)
from bubbly_metrics.records import to_events
from bubbly_metrics.scan import RAW_SCHEMA, ReadError, map_files
from bubbly_metrics.scan import decoder as scan_decoder

__all__ = [
    "FILE_ERRORS",
    "AggregateResult",
    "DayPlan",
    "aggregate",
    "export_for",
    "plan_days",
    "run_days",
    "summarize_export",
]

logger = logging.getLogger(__name__)


FILE_ERRORS = (ReadError.MISSING_FILE, ReadError.TRUNCATED_GZIP, ReadError.CORRUPT_GZIP, ReadError.COUNT_MISMATCH)
"""Read errors that mean records of a data file are missing from a run (not one bad line)."""


@dataclass(frozen=True)
class AggregateResult:
    """Everything one aggregation run produced.

    ``metrics`` is the daily per-app table (docs/rules.md#metrics); ``activity`` the per-user table it is
    derived from (:func:`~bubbly_metrics.metrics.user_activity`); ``outcomes`` what became
    of every record read (:func:`~bubbly_metrics.metrics.record_outcomes`, plus one ``deleted``
    row for an incremental export's deletes).
    """

    export: ExportInfo
    mode: str
    date_range: DateRange
    activity: pl.DataFrame
    outcomes: pl.DataFrame
    metrics: pl.DataFrame

    @property
    def per_user(self) -> pl.DataFrame:
        """Per ``(date, app, user_id)``: games, parties created, parties joined (sorted).

        ``activity`` with plain ``String`` keys and ``Int64`` counts (it holds Categorical
        codes and ``UInt32``: a fraction of the memory per row).
        """
        counts = ("games", "parties_created", "parties_joined")
        return self.activity.with_columns(
            pl.col("app", "user_id").cast(pl.String), pl.col(*counts).cast(pl.Int64)
        ).sort("date", "app", "user_id")

    def malformed(self, *, by_file: bool = False) -> pl.DataFrame:
        """Malformed records per reason (and per file), with one example's keys."""
        return malformed_counts(self.outcomes, by_file=by_file).collect()

    def unreadable_files(self) -> list[tuple[str, str]]:
        """``(file, reason)`` of every data file the run could not read whole, sorted.

        Missing (404, access denied), truncated, corrupt gzip, or holding another number of
        records than the manifest lists: the run's numbers lack (some of) that file's records.
        Unreadable *lines* inside a file are malformed records, not this.
        """
        rows = self.outcomes.filter(pl.col("reason").is_in(FILE_ERRORS) & pl.col("file").is_not_null())
        return sorted({(str(f), str(r)) for f, r in rows.select("file", "reason").iter_rows()})

    @property
    def items_read(self) -> int:
        """Records read from the export (unreadable lines, gzip damage and deletes included)."""
        return int(self.outcomes["records"].sum())

    @property
    def counts(self) -> dict[str, int]:
        """Records by outcome: counted, ignored (other kinds), malformed, outside the range, deleted."""
        totals = dict(self.outcomes.group_by("status").agg(pl.col("records").sum()).iter_rows())
        return {status: int(totals.get(status, 0)) for status in STATUSES}

    def _facts(self) -> dict[str, str]:
        export = self.export
        counts = ", ".join(f"{status} {n:,}" for status, n in self.counts.items() if n)
        return {
            "export": f"{export.export_id} ({export.export_type})",
            "mode": f"{self.mode}, {self.date_range}",
            "records": f"{self.items_read:,} read: {counts or 'none'}",
            "metrics": f"{self.metrics.height:,} rows, {self.metrics['app'].n_unique()} apps",
        }

    def __repr__(self) -> str:
        facts = self._facts()
        return f"AggregateResult({facts['mode']}; export {facts['export']}; {facts['records']}; {facts['metrics']})"

    def _repr_html_(self) -> str:
        from bubbly_metrics._display import html_card

        return html_card("AggregateResult", self._facts(), self.metrics, name="metrics")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able run summary (handlers return it; the CLI prints it on request)."""
        return {
            "exportId": self.export.export_id,
            "exportArn": self.export.export_arn,
            "mode": self.mode,
            "startDate": self.date_range.start.isoformat(),
            "endDate": self.date_range.end.isoformat(),
            "itemsRead": self.items_read,
            "records": self.counts,
            "malformed": {r["reason"]: r["records"] for r in self.malformed().iter_rows(named=True)},
            # docs/rules.md#records: a few examples are logged, keys only (never payloads).
            "malformedExamples": {
                r["reason"]: {"modelId": r["example_model_id"], "owner": r["example_owner"]}
                for r in self.malformed().iter_rows(named=True)
            },
            "rows": self.metrics.height,
        }


# The raw columns the metrics read; the others are never materialised on this path.
_NEEDED = frozenset(
    {
        "file",
        "model_id",
        "owner",
        "created_at",
        "created_at_type",
        "updated_at",
        "updated_at_type",
        "read_error",
        "error_count",
    }
)


_Summary = tuple[pl.DataFrame, pl.DataFrame]
"""``(user_activity, record_outcomes)`` of some records."""


# The event columns the summaries read: leaving ``expires_at``/``ts`` out lets Polars prune
# their expressions, which cuts the fixed cost of each batch's query (see docs/performance.md).
_SUMMARY_EVENTS = ("file", "model_id", "owner", "kind", "app", "user_id", "date", "reason", "error_count")


def _summarize_batch(records: pl.DataFrame, date_range: DateRange) -> _Summary:
    events = to_events(records.lazy()).select(_SUMMARY_EVENTS).cache()
    activity, outcomes = pl.collect_all([user_activity(events, date_range), record_outcomes(events, date_range)])
    return activity, outcomes


_EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class _Summarizer:
    """Summarises a batch of records (``per_batch`` of :func:`~bubbly_metrics.scan.map_files`).

    With the compiled decoder counting (:data:`bubbly_metrics._decoder.COUNTING`), the file
    reader asks it for :attr:`count_days`, lets the decoder count plain records into
    per-(day, app, user) counts, and turns them into a summary of the same shape with
    :meth:`from_counts`; the records it did not count come here as rows.
    """

    date_range: DateRange

    def __call__(self, records: pl.DataFrame) -> _Summary:
        return _summarize_batch(records, self.date_range)

    @property
    def count_days(self) -> tuple[int, int]:
        """The range's first and last day, in days since 1970-01-01."""
        return (self.date_range.start - _EPOCH).days, (self.date_range.end - _EPOCH).days

    def from_counts(self, counts: Any) -> _Summary:
        """The summary of a compiled decoder's counts (``_fastscan.Counts``).

        A column kept zero-copy keeps the whole block alive: ``date`` goes through Int64 to be a
        copy, and ``app``/``user_id`` (zero-copy here) are copied when the run's merger interns
        them (:class:`~bubbly_metrics.metrics.ActivityMerger`), after which the caller drops this.
        """
        activity = pl.DataFrame(counts.summary()).select(
            pl.col("line").cast(pl.Int64).cast(pl.Date).alias("date"),
            pl.col("model_id").alias("app"),
            pl.col("owner").alias("user_id"),
            pl.col("games", "parties_created", "parties_joined").cast(pl.Int64),
        )
        return activity, plain_outcomes(*counts.totals())


def _combine(parts: list[_Summary], date_range: DateRange) -> _Summary:
    """One data file's summary from its batches' (concatenated: the final merge sums them)."""
    if not parts:
        return _summarize_batch(pl.DataFrame(schema=RAW_SCHEMA), date_range)
    if len(parts) == 1:
        return parts[0]
    return pl.concat([a for a, _ in parts], how="vertical"), pl.concat([o for _, o in parts], how="vertical")


# Below this many items, starting worker processes (each imports Polars) costs more
# than decoding on every core saves.
PROCESSES_FROM_ITEMS = 250_000


def summarize_export(
    export: ExportInfo,
    date_range: DateRange,
    *,
    verify: bool = False,
    threads: int | None = None,
    processes: bool | None = None,
    on_file: Callable[[DataFile, int], None] | None = None,
    files: list[DataFile] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read the export once; return its ``(user_activity, record_outcomes)`` tables.

    Each data file is decoded, turned into events and summarised by one worker, a batch of
    records at a time, and the small per-file tables are kept compactly as they arrive
    (:class:`~bubbly_metrics.metrics.ActivityMerger`), so memory holds a few batches of
    records at most, never the export.  Workers are threads, or processes for large exports
    read without the compiled decoder (``processes=None`` decides from the decoder, the
    manifest's item count and the CPUs).  The result equals summarising :func:`~bubbly_metrics.scan_export`'s
    LazyFrame whole; its ``app``/``user_id`` are Categorical (see ``AggregateResult.per_user``).

    ``files`` summarises only those data files (one batch of a distributed run,
    :func:`bubbly_metrics.distributed.map_batch`): the tables of disjoint batches merge into
    the export's exactly (:class:`~bubbly_metrics.metrics.ActivityMerger`, :func:`merge_outcomes`).
    """
    if processes is None:
        # The compiled decoder releases the GIL, as ISA-L and Polars do: threads then use every
        # core, in one process, as fast as processes and in less memory (see docs/performance.md).
        # msgspec holds the GIL: processes.
        processes = (
            (os.cpu_count() or 1) > 1
            and ((export.item_count or 0) if files is None else sum(f.item_count for f in files))
            >= PROCESSES_FROM_ITEMS
            and scan_decoder() == "msgspec"
        )
    per_batch = _Summarizer(date_range)
    transform = functools.partial(_combine, date_range=date_range)
    activity = ActivityMerger()
    outcomes: list[pl.DataFrame] = []
    deletes = 0
    for _data_file, summary, file_deletes in map_files(
        export,
        transform,
        verify=verify,
        threads=threads,
        processes=processes,
        on_file=on_file,
        columns=_NEEDED,
        per_batch=per_batch,
        files=files,
    ):
        activity.add(summary[0])
        outcomes.append(detached(summary[1]))
        deletes += file_deletes
        del summary  # its frames may share memory with the file's decoded blocks: only the copies above are kept
    if deletes:
        outcomes.append(deleted_outcomes(deletes))
    if not outcomes:  # an export without data files
        acts, outs = transform([])
        activity.add(acts)
        outcomes.append(outs)
    return activity.result(), merge_outcomes(outcomes)


def export_for(
    source: str | ExportInfo,
    *,
    mode: str,
    day: dt.date | None = None,
    storage_options: dict[str, Any] | None = None,
) -> ExportInfo:
    """The export a run of ``mode`` reads (docs/rules.md#finding-exports); :func:`run_days` says which days it can give.

    Backfill: the latest completed FULL export.  Incremental: the latest completed INCREMENTAL
    export whose window covers ``day`` (any, when ``day`` is None).  An :class:`ExportInfo`
    given as ``source`` must be of that type.
    """
    wanted = "FULL" if mode == "backfill" else "INCREMENTAL"
    covering = day if mode == "incremental" else None
    export = find_export(source, export_type=wanted, covering=covering, storage_options=storage_options)
    if export.export_type != wanted:
        raise InvalidArgumentError(
            f"{mode} mode reads {wanted} exports; export {export.export_id} is {export.export_type or export.status}"
        )
    return export


def run_days(export: ExportInfo, *, mode: str, date_range: DateRange, end_given: bool = True) -> DateRange:
    """The days a run of ``mode`` over ``date_range`` aggregates from ``export``.

    Every one of them must be held by the export (:meth:`ExportInfo.check_covers`): a day it
    does not hold would come out as zeros, and overwrite real numbers once published.  A
    backfill whose end was not given (it is "yesterday") ends instead at the last day the full
    export holds, with a warning: a backfill run the day after its export (the export finished
    past UTC midnight, or a re-run on an export that is still there) does all the work it can,
    and leaves the later days, which the daily incremental runs write, as they are.
    """
    last = export.last_day
    if mode == "backfill" and not end_given and last is not None and date_range.start <= last < date_range.end:
        logger.warning(
            "backfill ends %s, the last day full export %s (%s) holds, not %s: later days are left as they are",
            last,
            export.export_id,
            export.window,
            date_range.end,
        )
        date_range = DateRange(date_range.start, last)
    export.check_covers(date_range.start if mode == "incremental" else date_range.end)
    return date_range


@dataclass(frozen=True)
class DayPlan:
    """What a run aggregates: the export it reads and the days it takes from it (:func:`plan_days`)."""

    export: ExportInfo
    date_range: DateRange


def plan_days(
    source: str | ExportInfo,
    *,
    mode: str,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    date: str | dt.date | None = None,
    now: dt.datetime | None = None,
    storage_options: dict[str, Any] | None = None,
    to_export: bool = True,
) -> DayPlan:
    """Resolve the date range, pick the export, clip the days: what a run of ``mode`` aggregates.

    The one home of that sequence (:func:`aggregate`, the distributed run's plan and start):
    :func:`~bubbly_metrics.dates.resolve_range` (``start``, ``end``, ``date``, ``now`` as for
    :func:`aggregate`), :func:`export_for` (for an incremental run, the export covering the
    range's day), then :func:`run_days` (a backfill without ``end`` stops at the export's last
    day).  ``to_export=False`` leaves out that last step: the range as resolved, for a caller
    whose range goes past the export on purpose (the full export, then daily runs).
    """
    date_range = resolve_range(mode=mode, start=start, end=end, date=date, now=now)
    export = export_for(source, mode=mode, day=date_range.start, storage_options=storage_options)
    if to_export:
        date_range = run_days(export, mode=mode, date_range=date_range, end_given=end is not None)
    return DayPlan(export, date_range)


def aggregate(
    source: str | ExportInfo,
    *,
    mode: str = "incremental",
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    date: str | dt.date | None = None,
    now: dt.datetime | None = None,
    storage_options: dict[str, Any] | None = None,
    verify: bool = False,
    threads: int | None = None,
    processes: bool | None = None,
    on_file: Callable[[DataFile, int], None] | None = None,
) -> AggregateResult:
    """Aggregate an export into daily per-app metrics.

    Parameters
    ----------
    source
        Export location (local folder or ``s3://`` URI) or an :class:`ExportInfo`.  For a
        location, the latest completed export of the mode's type is used: FULL for
        ``backfill``, and for ``incremental`` the latest INCREMENTAL export whose window covers
        the day (so re-running an older day reads that day's export).
    mode
        ``"incremental"`` (one day) or ``"backfill"`` (a range of days; output is dense).
    start, end
        Backfill range, ``YYYY-MM-DD`` or dates.  Without ``start``, the range begins on the
        first day the export holds activity (never before the backfill floor, 2025-01-17 by
        default: :func:`~bubbly_metrics.dates.date_bounds`); without ``end``, it stops at the
        last day the full export holds (:func:`run_days`).  ``result.date_range`` says which
        days were aggregated.
    date
        Incremental day (default: yesterday, UTC).
    now
        The current time (UTC-aware); defaults to the wall clock.  Inject it for
        reproducible runs.
    storage_options, verify, threads, on_file
        As for :func:`~bubbly_metrics.scan_export`.
    processes
        Decode in worker processes (``True``), on threads (``False``), or decide from the
        decoder and the export's size (``None``); see :func:`summarize_export`.

    Returns
    -------
    AggregateResult
    """
    days = plan_days(source, mode=mode, start=start, end=end, date=date, now=now, storage_options=storage_options)
    export, date_range = days.export, days.date_range
    logger.info(
        "aggregating %s export %s for %s (decoder: %s)",
        export.export_type,
        export.export_id,
        date_range,
        scan_decoder(),
    )
    activity, outcomes = summarize_export(
        export, date_range, verify=verify, threads=threads, processes=processes, on_file=on_file
    )
    first_active = activity["date"].min()
    if mode == "backfill" and start is None and isinstance(first_active, dt.date) and first_active > date_range.start:
        # A backfill's default start is the floor (BubblyClouds' history start); a table whose
        # history starts later would otherwise get a dense row of zeros for every day before it.
        logger.info("backfill starts at %s, the first day the export holds activity", first_active)
        date_range = DateRange(first_active, date_range.end)
    if activity.is_empty():
        outside = int(outcomes.filter(pl.col("status") == "outside_range")["records"].sum())
        logger.warning(
            "no activity in %s: every metric is zero (%d counted record(s) of the export are dated outside it)",
            date_range,
            outside,
        )
    metrics = daily_metrics(activity, date_range, dense=mode == "backfill").collect()
    return AggregateResult(export, mode, date_range, activity, outcomes, metrics)
