"""Reconcile an export against what was published: the Analytics Table and CloudWatch (SPEC §8).

After a backfill someone has to decide whether the published numbers are right.  This module
recomputes the expected daily metrics from an export (:func:`~bubbly_metrics.aggregate`),
reads back what the Analytics Table and CloudWatch hold, and lists every
``(date, app, metric)`` where they differ, with both values and the likely *cause* where the
export shows one (:class:`Cause`):

- sessions whose ``updatedAt`` moved them to a later day than their ``createdAt`` (a session
  counts on the day of its last update, so a table written by earlier daily runs still
  counts it on the earlier day);
- items in the export that were past their TTL (``expiresAt``) when it was taken — DynamoDB
  deletes expired items lazily, so exports taken at different times disagree about them;
- items deleted from the main table, as listed by an incremental export's deletes;
- days older than CloudWatch's two-week window (never sent there: not a difference);
- ``(date, app)`` rows missing from the table (or from CloudWatch), and rows the table holds
  for apps the export has no activity for.

Everything else is *unexplained*.  :func:`reconcile` does it all in one call and returns a
:class:`ReconcileResult`; the CLI's ``reconcile`` command and the backfill reconciliation
notebook both use it.  The pieces are public too: :func:`compare_metrics` (pure, on frames),
:func:`discrepancy_evidence` (what in the export could explain a difference),
:func:`read_deletes` and :func:`classify_differences`.

Examples
--------
Comparing two metric frames needs no AWS at all:

>>> import datetime as dt
>>> import polars as pl
>>> expected = pl.DataFrame({"date": [dt.date(2025, 3, 1)], "app": ["chess"],
...                          "active_users": [2], "games_played": [3],
...                          "parties_created": [1], "parties_joined": [0]})
>>> actual = expected.with_columns(games_played=pl.lit(4))
>>> diff = compare_metrics(expected, actual, target="analytics_table")
>>> diff.filter(pl.col("status") == "differs").select("metric", "expected", "actual").rows()
[('games_played', 3, 4)]
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from bubbly_metrics.cloudwatch import DEFAULT_MARGIN, NAMESPACE, cloudwatch_window
from bubbly_metrics.dates import DateRange, parse_date
from bubbly_metrics.exceptions import ExportNotFoundError, InvalidArgumentError
from bubbly_metrics.exports import DataFile, ExportInfo, find_export, list_exports
from bubbly_metrics.metrics import METRIC_COLUMNS
from bubbly_metrics.pipeline import AggregateResult, aggregate
from bubbly_metrics.records import to_events
from bubbly_metrics.scan import RAW_SCHEMA, map_files, scan_export

__all__ = [
    "COMPARISON_SCHEMA",
    "EVIDENCE_COLUMNS",
    "TARGETS",
    "Cause",
    "ReconcileResult",
    "classify_differences",
    "compare_metrics",
    "compare_per_user",
    "daily_runs_table",
    "discrepancy_evidence",
    "read_deletes",
    "read_snapshot",
    "reconcile",
    "relative_difference_matrix",
]

logger = logging.getLogger(__name__)

TARGETS = ("analytics_table", "cloudwatch")
"""What an export can be reconciled against (values of the ``target`` column)."""

MATCH, DIFFERS, OUTSIDE_WINDOW = "match", "differs", "outside_window"
STATUSES = (MATCH, DIFFERS, OUTSIDE_WINDOW)
"""Values of ``status``: equal, different, or not compared (outside CloudWatch's window)."""


class Cause:
    """Likely causes of a difference (values of the ``cause`` column).

    A cause is given only where the data shows it; each comes with advice in :data:`ADVICE`.
    """

    REDATED = "redated"
    """Sessions moved between days by a later ``updatedAt`` (sessions are dated by it)."""
    TTL_EXPIRED = "ttl_expired"
    """Items past their TTL ``expiresAt``: deleted by TTL since the target was written, or still
    in the export (DynamoDB deletes expired items lazily)."""
    DELETED = "deleted"
    """Items deleted from the main table (an incremental export's deletes)."""
    MISSING_FROM_TABLE = "missing_from_table"
    """The Analytics Table has no item for a ``(date, app)`` with activity in the export."""
    MISSING_FROM_CLOUDWATCH = "missing_from_cloudwatch"
    """CloudWatch has no datum for a ``(date, app)`` with activity, inside its window."""
    NOT_IN_EXPORT = "not_in_export"
    """The target holds activity for a ``(date, app)`` the export has none for."""
    OUTSIDE_CLOUDWATCH_WINDOW = "outside_cloudwatch_window"
    """A day older than CloudWatch's two-week window: never sent there, so not compared."""
    UNEXPLAINED = "unexplained"
    """Nothing in the export explains the difference."""


CAUSES = (
    Cause.REDATED,
    Cause.TTL_EXPIRED,
    Cause.DELETED,
    Cause.MISSING_FROM_TABLE,
    Cause.MISSING_FROM_CLOUDWATCH,
    Cause.NOT_IN_EXPORT,
    Cause.OUTSIDE_CLOUDWATCH_WINDOW,
    Cause.UNEXPLAINED,
)

ADVICE: dict[str, tuple[str, str]] = {
    Cause.REDATED: (
        "sessions moved to a later day by a later updatedAt (a session counts on the day of its last update)",
        "expected after daily runs; re-run the backfill for these days if the table should follow the export",
    ),
    Cause.TTL_EXPIRED: (
        "records past their TTL (expiresAt): deleted by TTL after the run that counted them, or still in "
        "the export because DynamoDB deletes expired items lazily (~2 days)",
        "accept: the activity happened; exports taken at different times disagree about them",
    ),
    Cause.DELETED: (
        "records deleted from the main table between the run that wrote the target and this export",
        "accept, or re-run the backfill for these days if deleted records must not count",
    ),
    Cause.MISSING_FROM_TABLE: (
        "no Analytics Table item for a (date, app) with activity",
        "the run for that day failed or never ran: re-run "
        "`aggregate LOCATION --mode backfill --start D --end D --publish --analytics-table TABLE`",
    ),
    Cause.MISSING_FROM_CLOUDWATCH: (
        "no CloudWatch datum for a (date, app) with activity, inside CloudWatch's window",
        "re-publish those days while they are still within CloudWatch's two weeks",
    ),
    Cause.NOT_IN_EXPORT: (
        "the target holds activity for an app the export has none for that day",
        "check that the export and the table belong together; re-run the backfill to overwrite",
    ),
    Cause.OUTSIDE_CLOUDWATCH_WINDOW: (
        "older than CloudWatch's two-week window: never sent there (Analytics Table only)",
        "nothing: expected in a backfill, not a difference",
    ),
    Cause.UNEXPLAINED: (
        "no re-dated, expired or deleted record in the export explains it",
        "check which export wrote the target (provenance columns), compare per-user data, re-run the day",
    ),
}
"""Cause → (what it means, what to do)."""

EVIDENCE_COLUMNS = (
    "redated_out",
    "redated_in",
    "expired",
    "deleted_in_export",
    "deleted_not_in_export",
    "expired_not_in_export",
)
"""Counts of records that can explain a difference at ``(date, app, metric)``:

``redated_out``
    sessions created that day but dated a later day by ``updatedAt``;
``redated_in``
    sessions dated that day but created an earlier day;
``expired``
    records counted that day that were past their TTL at export time;
``deleted_in_export``
    records dated that day, deleted per the incremental export, still in this export;
``deleted_not_in_export``
    records dated that day, deleted per the incremental export, absent from this export;
``expired_not_in_export``
    the same for records deleted by TTL: their ``expiresAt`` had passed when the incremental
    export that holds their delete ended.

Session counts apply to ``active_users`` and ``games_played``; parties to
``parties_created``; members to ``parties_joined``.
"""

_METRIC_OF_KIND = {
    "session": ["active_users", "games_played"],
    "party": ["parties_created"],
    "member": ["parties_joined"],
}
_METRIC_ORDER = {m: i for i, m in enumerate(METRIC_COLUMNS)}

_KEYS = ("date", "app", "metric")
EVIDENCE_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "app": pl.String(),
    "metric": pl.String(),
    **{c: pl.Int64() for c in EVIDENCE_COLUMNS},
}

COMPARISON_SCHEMA: dict[str, pl.DataType] = {
    "target": pl.String(),
    "date": pl.Date(),
    "app": pl.String(),
    "metric": pl.String(),
    "expected": pl.Int64(),
    "actual": pl.Int64(),
    "difference": pl.Int64(),
    "relative_difference": pl.Float64(),
    "status": pl.String(),
}
"""Columns of :func:`compare_metrics`; :func:`classify_differences` adds the evidence
columns, ``cause`` and ``detail``."""

DIFFERENCE_COLUMNS = (
    "target",
    "date",
    "app",
    "metric",
    "expected",
    "actual",
    "difference",
    "relative_difference",
    "cause",
    "detail",
)


# --------------------------------------------------------------------------------------------
# Comparing


def _metrics_frame(frame: Any, name: str) -> pl.DataFrame:
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    if not isinstance(frame, pl.DataFrame):
        raise InvalidArgumentError(f"{name} must be a polars DataFrame, got {type(frame).__name__}")
    missing = [c for c in ("date", "app", *METRIC_COLUMNS) if c not in frame.columns]
    if missing:
        raise InvalidArgumentError(f"{name} lacks column(s) {missing}; it has {frame.columns}")
    return frame.select(
        pl.col("date").cast(pl.Date),
        pl.col("app").cast(pl.String),
        *(pl.col(c).cast(pl.Int64) for c in METRIC_COLUMNS),
    )


def _long(frame: pl.DataFrame, value: str) -> pl.DataFrame:
    return frame.unpivot(index=["date", "app"], on=list(METRIC_COLUMNS), variable_name="metric", value_name=value)


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise InvalidArgumentError(f"target must be one of {TARGETS}, got {target!r}")


def compare_metrics(
    expected: pl.DataFrame,
    actual: pl.DataFrame,
    *,
    target: str,
    window: tuple[dt.date, dt.date] | None = None,
) -> pl.DataFrame:
    """Compare expected daily metrics with what a target holds, per ``(date, app, metric)``.

    Parameters
    ----------
    expected
        Daily metrics computed from the export (``AggregateResult.metrics``).
    actual
        What the target holds, shaped like ``expected`` (e.g. :func:`read_analytics_table`
        or :func:`read_cloudwatch_metrics` output; extra columns are ignored).  A missing
        row or a null value means the target holds nothing there.
    target
        ``"analytics_table"`` or ``"cloudwatch"`` (the ``target`` column).
    window
        Inclusive first and last day the target can hold (CloudWatch's window, see
        :func:`~bubbly_metrics.cloudwatch.cloudwatch_window`); days outside it get status
        ``"outside_window"`` and are not compared.

    Returns
    -------
    polars.DataFrame
        :data:`COMPARISON_SCHEMA`, one row per ``(date, app, metric)`` present on either
        side.  ``difference`` is ``actual - expected`` (a missing value counts as 0);
        ``relative_difference`` is ``difference / max(expected, 1)``, so a missing row is
        -1.0 (-100 %).  ``status`` is ``"match"``, ``"differs"`` or ``"outside_window"``.
        A row missing from the target where nothing was expected is a match: incremental
        runs write no row for an app without activity.
    """
    _check_target(target)
    expected = _metrics_frame(expected, "expected")
    actual = _metrics_frame(actual, "actual")
    if window is not None:
        first, last = window
        if not isinstance(first, dt.date) or not isinstance(last, dt.date) or first > last:
            raise InvalidArgumentError(f"window must be (first, last) dates, first <= last; got {window!r}")
    joined = _long(expected, "expected").join(_long(actual, "actual"), on=list(_KEYS), how="full", coalesce=True)
    exp, act = pl.col("expected"), pl.col("actual")
    outside = ~pl.col("date").is_between(window[0], window[1]) if window is not None else pl.lit(False)
    difference = act.fill_null(0) - exp.fill_null(0)
    status = (
        pl.when(outside)
        .then(pl.lit(OUTSIDE_WINDOW))
        .when(difference != 0)
        .then(pl.lit(DIFFERS))
        .otherwise(pl.lit(MATCH))
    )
    return (
        joined.with_columns(
            pl.lit(target).alias("target"),
            pl.when(~outside).then(difference).alias("difference"),
            pl.when(~outside)
            .then(difference.cast(pl.Float64) / pl.max_horizontal(exp.fill_null(0), pl.lit(1)).cast(pl.Float64))
            .alias("relative_difference"),
            status.alias("status"),
        )
        .select(list(COMPARISON_SCHEMA))
        .cast(COMPARISON_SCHEMA)  # type: ignore[arg-type]
        .sort("date", "app", pl.col("metric").replace_strict(_METRIC_ORDER, return_dtype=pl.Int8))
    )


def compare_per_user(per_user: pl.DataFrame, table: pl.DataFrame) -> pl.DataFrame:
    """Per-user differences between an export's activity and the Analytics Table's.

    Only ``(date, app)`` rows the table holds are compared (a missing row is already a
    difference of its own).

    Parameters
    ----------
    per_user
        ``AggregateResult.per_user``: date, app, user_id, games, parties_created.
    table
        :func:`~bubbly_metrics.analytics_table.read_analytics_table` output.

    Returns
    -------
    polars.DataFrame
        ``date``, ``app``, ``user_id``, ``expected_games``, ``actual_games``,
        ``expected_parties_created``, ``actual_parties_created`` for users whose games or
        parties created differ, sorted.
    """
    from bubbly_metrics.analytics_table import per_user_from_table

    stored = per_user_from_table(table)
    mine = (
        per_user.select("date", "app", "user_id", "games", "parties_created")
        .with_columns(pl.col("date").cast(pl.Date))
        .join(table.select("date", "app"), on=["date", "app"], how="semi")
        .filter((pl.col("games") > 0) | (pl.col("parties_created") > 0))
    )
    both = mine.join(stored, on=["date", "app", "user_id"], how="full", coalesce=True, suffix="_actual")
    return (
        both.select(
            "date",
            "app",
            "user_id",
            pl.col("games").fill_null(0).cast(pl.Int64).alias("expected_games"),
            pl.col("games_actual").fill_null(0).cast(pl.Int64).alias("actual_games"),
            pl.col("parties_created").fill_null(0).cast(pl.Int64).alias("expected_parties_created"),
            pl.col("parties_created_actual").fill_null(0).cast(pl.Int64).alias("actual_parties_created"),
        )
        .filter(
            (pl.col("expected_games") != pl.col("actual_games"))
            | (pl.col("expected_parties_created") != pl.col("actual_parties_created"))
        )
        .sort("date", "app", "user_id")
    )


# --------------------------------------------------------------------------------------------
# Evidence: what in the export can explain a difference


def _empty_evidence() -> pl.DataFrame:
    return pl.DataFrame(schema=EVIDENCE_SCHEMA)


def _by_metric(counts: pl.DataFrame) -> pl.DataFrame:
    """(date, app, kind, evidence...) → (date, app, metric, evidence...)."""
    kinds = pl.DataFrame(
        [(kind, metric) for kind, metrics in _METRIC_OF_KIND.items() for metric in metrics],
        schema={"kind": pl.String, "metric": pl.String},
        orient="row",
    )
    return counts.join(kinds, on="kind").drop("kind")


def _file_evidence(
    records: pl.DataFrame,
    *,
    first: dt.date,
    last: dt.date,
    as_of: int | None,
    deleted_keys: pl.DataFrame | None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-file evidence counts (date, app, kind, ...) and the keys of deleted items present."""
    lazy = records.lazy()
    events = to_events(lazy)
    # A session is dated by updatedAt; dating the same records by createdAt (the same
    # classification, fed createdAt instead) tells which sessions changed day.  to_events
    # keeps row order, so the two frames line up row by row.
    created = to_events(
        lazy.with_columns(
            pl.col("created_at").alias("updated_at"),
            pl.col("created_at_type").alias("updated_at_type"),
        )
    ).select(pl.col("date").alias("created_date"))
    frame = pl.concat([events.collect(), created.collect()], how="horizontal").filter(pl.col("kind").is_not_null())
    date, created_date = pl.col("date"), pl.col("created_date")
    redated = frame.filter(
        (pl.col("kind") == "session") & date.is_not_null() & created_date.is_not_null() & (created_date < date)
    )
    parts = [
        redated.filter(created_date.is_between(first, last))
        .group_by(created_date.alias("date"), "app", "kind")
        .agg(pl.len().cast(pl.Int64).alias("redated_out")),
        redated.filter(date.is_between(first, last))
        .group_by("date", "app", "kind")
        .agg(pl.len().cast(pl.Int64).alias("redated_in")),
    ]
    if as_of is not None:
        parts.append(
            frame.filter(date.is_between(first, last) & (pl.col("expires_at") < as_of))
            .group_by("date", "app", "kind")
            .agg(pl.len().cast(pl.Int64).alias("expired"))
        )
    counts = pl.concat(parts, how="diagonal")
    present = (
        frame.join(deleted_keys, on=["model_id", "owner"], how="semi").select("model_id", "owner")
        if deleted_keys is not None and deleted_keys.height
        else pl.DataFrame(schema={"model_id": pl.String, "owner": pl.String})
    )
    return counts, present


def discrepancy_evidence(
    source: str | ExportInfo,
    *,
    start: str | dt.date,
    end: str | dt.date,
    deletes: pl.DataFrame | None = None,
    export_type: str | None = None,
    storage_options: dict[str, Any] | None = None,
    threads: int | None = None,
) -> pl.DataFrame:
    """Count the records of an export that can explain a difference, per ``(date, app, metric)``.

    Reads the export once more (file by file, memory bounded like
    :func:`~bubbly_metrics.aggregate`) looking for re-dated sessions and TTL-expired
    records, and dates the deleted records of ``deletes``.

    Parameters
    ----------
    source
        The export the expected metrics come from (location or :class:`ExportInfo`).
    start, end
        The days reconciled (inclusive).
    deletes
        Deleted items (:func:`read_deletes` output), or ``None``.
    export_type
        ``"full"`` or ``"incremental"`` when ``source`` is a location holding several.
    storage_options, threads
        As for :func:`~bubbly_metrics.scan_export`.

    Returns
    -------
    polars.DataFrame
        ``date``, ``app``, ``metric`` and the :data:`EVIDENCE_COLUMNS` counts, for rows
        with any evidence, sorted.
    """
    first, last = parse_date(start, name="start"), parse_date(end, name="end")
    if first > last:
        raise InvalidArgumentError(f"start {first} is after end {last}")
    export = find_export(source, export_type=export_type, storage_options=storage_options)
    as_of = int(export.as_of.timestamp()) if export.as_of is not None else None
    deleted = _deleted_events(deletes, first, last) if deletes is not None else None
    deleted_keys = deleted.select("model_id", "owner").unique() if deleted is not None else None

    def transform(frames: list[pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
        records = pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=RAW_SCHEMA)
        return _file_evidence(records, first=first, last=last, as_of=as_of, deleted_keys=deleted_keys)

    counts: list[pl.DataFrame] = []
    present: list[pl.DataFrame] = []
    for _, (file_counts, file_present), _ in map_files(export, transform, threads=threads):
        counts.append(file_counts)
        present.append(file_present)
    if deleted is not None and deleted.height:
        keys = pl.concat(present) if present else deleted.select("model_id", "owner").clear()
        in_export = keys.unique().with_columns(pl.lit(True).alias("_in_export"))
        present_ = pl.col("_in_export").fill_null(False)
        counts.append(
            deleted.join(in_export, on=["model_id", "owner"], how="left")
            .group_by("date", "app", "kind")
            .agg(
                present_.sum().cast(pl.Int64).alias("deleted_in_export"),
                (~present_ & ~pl.col("ttl")).sum().cast(pl.Int64).alias("deleted_not_in_export"),
                (~present_ & pl.col("ttl")).sum().cast(pl.Int64).alias("expired_not_in_export"),
            )
        )
    if not any(c.height for c in counts):
        return _empty_evidence()
    merged = pl.concat([c for c in counts if c.height], how="diagonal")
    for column in EVIDENCE_COLUMNS:
        if column not in merged.columns:
            merged = merged.with_columns(pl.lit(0, pl.Int64).alias(column))
    totals = merged.group_by("date", "app", "kind").agg(
        pl.col(c).fill_null(0).sum().cast(pl.Int64) for c in EVIDENCE_COLUMNS
    )
    return (
        _by_metric(totals)
        .select(list(EVIDENCE_SCHEMA))
        .sort("date", "app", pl.col("metric").replace_strict(_METRIC_ORDER, return_dtype=pl.Int8))
    )


def _deleted_events(deletes: pl.DataFrame, first: dt.date, last: dt.date) -> pl.DataFrame:
    """Date the deleted items in the range: date, app, kind, model_id, owner, ttl."""
    if isinstance(deletes, pl.LazyFrame):
        deletes = deletes.collect()
    if not isinstance(deletes, pl.DataFrame) or any(c not in deletes.columns for c in RAW_SCHEMA):
        raise InvalidArgumentError("deletes must be a frame of raw records, as read_deletes returns")
    # A delete written after the item's expiresAt is TTL's (AWS exports TTL deletes like any other).
    ttl = (
        (pl.col("expires_at").cast(pl.Float64, strict=False) <= pl.col("deleted_before")).fill_null(False)
        if "deleted_before" in deletes.columns
        else pl.lit(False)
    )
    # A deleted session also explains its createdAt day: a daily run counted it there before a
    # later update re-dated it (to_events keeps rows in order, so the frames line up row by row).
    lazy = deletes.lazy()
    created = to_events(
        lazy.with_columns(pl.col("created_at").alias("updated_at"), pl.col("created_at_type").alias("updated_at_type"))
    ).select(pl.col("date").alias("created_date"))
    events = pl.concat(
        [to_events(lazy).collect(), created.collect(), deletes.select(ttl.alias("ttl"))], how="horizontal"
    ).filter(pl.col("kind").is_not_null())
    columns = ["date", "app", "kind", "model_id", "owner", "ttl"]
    redated = events.filter(
        (pl.col("kind") == "session") & pl.col("created_date").is_not_null() & (pl.col("created_date") < pl.col("date"))
    ).with_columns(pl.col("created_date").alias("date"))
    return pl.concat([events.select(columns), redated.select(columns)]).filter(pl.col("date").is_between(first, last))


# --------------------------------------------------------------------------------------------
# Deletes of an incremental export


def _incremental_exports(
    source: str | ExportInfo, *, since: dt.date | None, storage_options: dict[str, Any] | None
) -> list[ExportInfo]:
    """The completed incremental exports at ``source`` (or the one given), oldest window first."""
    if isinstance(source, ExportInfo):
        if source.export_type != "INCREMENTAL":
            raise InvalidArgumentError(
                f"export {source.export_id} is a {source.export_type} export; deletes come from INCREMENTAL exports"
            )
        return [find_export(source)]
    exports = [
        e
        for e in list_exports(source, storage_options=storage_options)
        if e.status == "COMPLETED"
        and e.export_type == "INCREMENTAL"
        and (since is None or e.export_to is None or e.export_to.date() > since)
    ]
    if not exports:  # the library's own "No export found in S3" error, with what is there
        return [find_export(source, export_type="incremental", storage_options=storage_options)]
    for export in exports:
        export.check_supported()
    return sorted(exports, key=lambda e: (e.export_to or dt.datetime.min.replace(tzinfo=dt.UTC), e.export_id))


DELETES_SCHEMA: dict[str, pl.DataType] = {**RAW_SCHEMA, "deleted_before": pl.Int64()}
"""Columns of :func:`read_deletes`: the raw record columns of each deleted item, and the end of
the window of the export holding its delete (epoch seconds)."""


def read_deletes(
    source: str | ExportInfo,
    *,
    since: str | dt.date | None = None,
    storage_options: dict[str, Any] | None = None,
) -> pl.DataFrame:
    """Read the deleted items of incremental exports: each delete's ``OldImage``.

    A delete is a record with ``Keys`` and ``OldImage`` and no ``NewImage`` (SPEC §2.2);
    TTL's deletes are exported the same way.  Metrics ignore deletes (they count activity that
    happened); reconciliation uses them to explain why a number published earlier is higher
    than the export says now.

    Parameters
    ----------
    source
        A location (every completed incremental export there is read: the daily exports
        together hold every delete since the first) or one incremental :class:`ExportInfo`.
    since
        Skip exports whose window ended by this day (deletes before a range cannot explain
        numbers in it).
    storage_options
        Passed through to the filesystem (s3fs for ``s3://``).

    Returns
    -------
    polars.DataFrame
        :data:`DELETES_SCHEMA`: the :data:`~bubbly_metrics.scan.RAW_SCHEMA` rows (``file``,
        ``line``, ``model_id``, ``owner``, timestamps, ``expires_at``) of each deleted item,
        read by the deletes view of :func:`~bubbly_metrics.scan_export`, and
        ``deleted_before``.  Unreadable lines and damaged files are skipped with the scan's
        warnings: deletes only explain differences.

    Raises
    ------
    InvalidArgumentError
        When ``source`` is a full export (full exports hold no deletes).
    """
    first = parse_date(since, name="since") if since is not None else None
    frames = [
        scan_export(export, deletes=True)
        .filter(pl.col("read_error").is_null())
        .with_columns(
            pl.lit(int(export.export_to.timestamp()) if export.export_to else None, pl.Int64).alias("deleted_before")
        )
        for export in _incremental_exports(source, since=first, storage_options=storage_options)
    ]
    return pl.concat(pl.collect_all(frames)) if frames else pl.DataFrame(schema=DELETES_SCHEMA)


# --------------------------------------------------------------------------------------------
# What the Analytics Table holds, without the table: daily runs replayed, or a snapshot


def daily_runs_table(
    source: str,
    *,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    storage_options: dict[str, Any] | None = None,
    threads: int | None = None,
) -> pl.DataFrame:
    """What the daily runs wrote to the Analytics Table, replayed from the incremental exports at ``source``.

    Each day from ``start`` to ``end`` that a completed incremental export covers is
    aggregated in incremental mode, exactly as the Aggregator Lambda runs it the morning after,
    and turned into the items the Lambda writes (:func:`~bubbly_metrics.analytics_table.build_items`,
    stamped with the export's ``exportToTime`` as the run's time).  A day no export covers has
    no row, as when its run never happened.  Offline, this is what a table written by daily
    runs holds, to reconcile a backfill against without AWS.

    Parameters
    ----------
    source
        A location holding incremental exports (local folder or ``s3://`` URI).
    start, end
        Inclusive days (default: the first and last day the exports there cover).
    storage_options, threads
        As for :func:`~bubbly_metrics.aggregate`.

    Returns
    -------
    polars.DataFrame
        :data:`~bubbly_metrics.analytics_table.TABLE_SCHEMA`, as
        :func:`~bubbly_metrics.analytics_table.read_analytics_table` returns the table.
    """
    from bubbly_metrics.analytics_table import build_items, table_from_items

    exports = _incremental_exports(source, since=None, storage_options=storage_options)
    by_day: dict[dt.date, ExportInfo] = {}
    for export in exports:  # oldest first: the latest export covering a day wins, as find_export picks
        if export.export_from is None or export.export_to is None:
            continue
        day = export.export_from.date()
        while day < export.export_to.date():
            if export.covers_day(day):
                by_day[day] = export
            day += dt.timedelta(days=1)
    if not by_day:
        return table_from_items([])
    first = parse_date(start, name="start") if start is not None else min(by_day)
    last = parse_date(end, name="end") if end is not None else max(by_day)
    if first > last:
        raise InvalidArgumentError(f"start {first} is after end {last}")
    items: list[dict[str, Any]] = []
    for day, export in sorted(by_day.items()):
        if not first <= day <= last:
            continue
        run_at = export.export_to + dt.timedelta(hours=2) if export.export_to else None
        result = aggregate(export, mode="incremental", date=day, now=run_at, threads=threads)
        for group in build_items(
            result.metrics, per_user=result.per_user, export_arn=export.export_arn, mode="incremental", now=run_at
        ):
            items.extend(group)
    return table_from_items(items, now=dt.datetime.now(dt.UTC))


def read_snapshot(path: str, *, storage_options: dict[str, Any] | None = None) -> pl.DataFrame:
    """Read a local (or ``s3://``) snapshot of the Analytics Table: Parquet or ``aws dynamodb scan`` JSON.

    Parameters
    ----------
    path
        Either the Parquet that ``aggregate --format parquet`` writes (``date``, ``app`` and the
        metric columns; the per-user data is not in it), or the JSON that
        ``aws dynamodb scan --table-name TABLE --output json`` prints (``{"Items": [...]}``, or
        a bare list of items; split rows are reassembled as the table reader does).
    storage_options
        Passed through to the filesystem (s3fs for ``s3://``).

    Returns
    -------
    polars.DataFrame
        Comparable with the export's metrics (:func:`compare_metrics`): ``date``, ``app``, the
        metric columns, and for JSON the per-user data and provenance of
        :func:`~bubbly_metrics.analytics_table.read_analytics_table`.

    Raises
    ------
    InvalidArgumentError
        When the file is neither, or lacks the columns; the message names the file.
    """
    import json

    from bubbly_metrics.analytics_table import table_from_items
    from bubbly_metrics.locations import filesystem

    if not isinstance(path, str) or not path:
        raise InvalidArgumentError(f"snapshot must be a file path, got {path!r}")
    fs, resolved = filesystem(path, storage_options)
    try:
        with fs.open(resolved, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise InvalidArgumentError(f"snapshot {path} does not exist") from None
    if data[:4] == b"PAR1":
        import io

        try:
            frame = pl.read_parquet(io.BytesIO(data))
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise InvalidArgumentError(f"snapshot {path} is not readable Parquet: {exc}".splitlines()[0]) from None
        missing = [c for c in ("date", "app", *METRIC_COLUMNS) if c not in frame.columns]
        if missing:
            raise InvalidArgumentError(
                f"snapshot {path} lacks column(s) {missing}: write it with `aggregate --format parquet` "
                "(without --per-user)"
            )
        return _metrics_frame(frame, f"snapshot {path}")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgumentError(
            f"snapshot {path} is neither Parquet nor JSON ({exc}); give the Parquet of "
            "`aggregate --format parquet` or the JSON of `aws dynamodb scan`"
        ) from None
    items = document.get("Items") if isinstance(document, dict) else document
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("date"), dict) and isinstance(i.get("app"), dict) for i in items
    ):
        raise InvalidArgumentError(
            f"snapshot {path} is JSON but not Analytics Table items: expected the output of "
            '`aws dynamodb scan` ({"Items": [{"date": {"S": ...}, "app": {"S": ...}, ...}]})'
        )
    return table_from_items(items)


# --------------------------------------------------------------------------------------------
# Classifying


def classify_differences(comparison: pl.DataFrame, evidence: pl.DataFrame | None = None) -> pl.DataFrame:
    """Attach evidence counts and a likely ``cause`` (and a readable ``detail``) to a comparison.

    Parameters
    ----------
    comparison
        :func:`compare_metrics` output (possibly several targets concatenated).
    evidence
        :func:`discrepancy_evidence` output, or ``None`` (then only missing rows, rows not
        in the export and days outside CloudWatch's window are classified).

    Returns
    -------
    polars.DataFrame
        ``comparison`` plus the :data:`EVIDENCE_COLUMNS`, ``cause`` (a :class:`Cause`
        value; null where values match) and ``detail``.

    Notes
    -----
    The first rule that applies wins:

    1. outside CloudWatch's window → ``outside_cloudwatch_window`` (not a difference);
    2. the target holds nothing where activity was expected → ``missing_from_table`` /
       ``missing_from_cloudwatch``;
    3. the target holds **more** than expected: sessions created that day were re-dated
       later (``redated``), or records dated that day were deleted before the export, by
       TTL (``ttl_expired``, when TTL deleted more of them than anything else did) or
       otherwise (``deleted``);
    4. the target holds **less**: sessions created earlier were re-dated into that day
       (``redated``), records were past their TTL at export time (``ttl_expired``), or
       deleted records are still in the export (``deleted``);
    5. the export has nothing for that ``(date, app)`` → ``not_in_export``;
    6. otherwise ``unexplained``.
    """
    missing = [c for c in COMPARISON_SCHEMA if c not in comparison.columns]
    if missing:
        raise InvalidArgumentError(f"comparison lacks column(s) {missing}: pass compare_metrics output")
    evidence = _empty_evidence() if evidence is None else evidence
    frame = comparison.select(list(COMPARISON_SCHEMA)).join(
        evidence.select(list(EVIDENCE_SCHEMA)).cast(EVIDENCE_SCHEMA),  # type: ignore[arg-type]
        on=list(_KEYS),
        how="left",
    )
    frame = frame.with_columns(pl.col(c).fill_null(0) for c in EVIDENCE_COLUMNS)
    status, diff, metric = pl.col("status"), pl.col("difference"), pl.col("metric")
    sessions = metric.is_in(_METRIC_OF_KIND["session"])
    more, less = diff > 0, diff < 0
    missing_cause = (
        pl.when(pl.col("target") == "cloudwatch")
        .then(pl.lit(Cause.MISSING_FROM_CLOUDWATCH))
        .otherwise(pl.lit(Cause.MISSING_FROM_TABLE))
    )
    cause = (
        pl.when(status == OUTSIDE_WINDOW)
        .then(pl.lit(Cause.OUTSIDE_CLOUDWATCH_WINDOW))
        .when(status == MATCH)
        .then(pl.lit(None, pl.String))
        .when(pl.col("actual").is_null() & less)
        .then(missing_cause)
        .when(more & sessions & (pl.col("redated_out") > 0))
        .then(pl.lit(Cause.REDATED))
        .when(more & (pl.col("expired_not_in_export") > pl.col("deleted_not_in_export")))
        .then(pl.lit(Cause.TTL_EXPIRED))
        .when(more & (pl.col("deleted_not_in_export") > 0))
        .then(pl.lit(Cause.DELETED))
        .when(less & sessions & (pl.col("redated_in") > 0))
        .then(pl.lit(Cause.REDATED))
        .when(less & (pl.col("expired") > 0))
        .then(pl.lit(Cause.TTL_EXPIRED))
        .when(less & (pl.col("deleted_in_export") > 0))
        .then(pl.lit(Cause.DELETED))
        .when(pl.col("expected").is_null())
        .then(pl.lit(Cause.NOT_IN_EXPORT))
        .otherwise(pl.lit(Cause.UNEXPLAINED))
    )
    frame = frame.with_columns(cause.alias("cause"))
    c = pl.col("cause")
    detail = (
        pl.when(c == Cause.REDATED)
        .then(
            pl.when(more)
            .then(pl.format("{} session(s) created this day are dated later by updatedAt", "redated_out"))
            .otherwise(pl.format("{} session(s) created earlier are dated this day by updatedAt", "redated_in"))
        )
        .when(c == Cause.TTL_EXPIRED)
        .then(
            pl.when(more)
            .then(pl.format("{} record(s) deleted by TTL before the export", "expired_not_in_export"))
            .otherwise(pl.format("{} record(s) past their TTL at export time", "expired"))
        )
        .when(c == Cause.DELETED)
        .then(
            pl.when(more)
            .then(pl.format("{} record(s) deleted before the export", "deleted_not_in_export"))
            .otherwise(pl.format("{} deleted record(s) still in the export", "deleted_in_export"))
        )
        .when(c == Cause.MISSING_FROM_TABLE)
        .then(pl.lit("no Analytics Table item for this (date, app)"))
        .when(c == Cause.MISSING_FROM_CLOUDWATCH)
        .then(pl.lit("no CloudWatch datum for this (date, app)"))
        .when(c == Cause.NOT_IN_EXPORT)
        .then(pl.lit("the export has no activity for this (date, app)"))
        .when(c == Cause.OUTSIDE_CLOUDWATCH_WINDOW)
        .then(pl.lit("older than CloudWatch's two-week window: not sent, not compared"))
        .when(c == Cause.UNEXPLAINED)
        .then(pl.lit("nothing in the export explains it"))
    )
    return frame.with_columns(detail.alias("detail"))


# --------------------------------------------------------------------------------------------
# Heat map data


def relative_difference_matrix(
    comparison: pl.DataFrame,
    *,
    target: str = "analytics_table",
    metric: str | None = None,
) -> pl.DataFrame:
    """Day × app matrix of relative differences, for a heat map.

    Parameters
    ----------
    comparison
        :func:`compare_metrics` / :func:`classify_differences` output.
    target
        Which target's comparison to use.
    metric
        One metric column, or ``None`` for the largest difference (by absolute value, sign
        kept) over the four metrics.

    Returns
    -------
    polars.DataFrame
        ``date`` then one Float64 column per app (sorted): ``(actual - expected) / expected``,
        0.0 where values match, ``+inf`` where nothing was expected but the target holds
        something (no ratio exists: 0 -> 1 is not a doubling), null where nothing was compared
        (outside CloudWatch's window).
    """
    _check_target(target)
    if metric is not None and metric not in METRIC_COLUMNS:
        raise InvalidArgumentError(f"metric must be one of {METRIC_COLUMNS} or None, got {metric!r}")
    rows = comparison.filter(pl.col("target") == target)
    if metric is not None:
        rows = rows.filter(pl.col("metric") == metric)
    expected = pl.col("expected").fill_null(0)
    rel = (
        pl.when(pl.col("status") == OUTSIDE_WINDOW)
        .then(None)
        .when(pl.col("difference") == 0)
        .then(0.0)
        .when(expected == 0)
        .then(float("inf"))
        .otherwise(pl.col("difference").cast(pl.Float64) / expected.cast(pl.Float64))
    )
    cells = (
        rows.with_columns(rel.alias("relative_difference"))
        .group_by("date", "app")
        .agg(
            pl.col("relative_difference")
            .sort_by(pl.col("relative_difference").abs(), descending=True, nulls_last=True)
            .first()
            .alias("value")
        )
        .sort("date", "app")
    )
    if cells.height == 0:
        return pl.DataFrame(schema={"date": pl.Date})
    apps = sorted(cells["app"].unique().to_list())
    wide = cells.pivot(on="app", index="date", values="value", sort_columns=True).sort("date")
    return wide.select(
        "date",
        *(pl.col(a).cast(pl.Float64) if a in wide.columns else pl.lit(None, pl.Float64).alias(a) for a in apps),
    )


# --------------------------------------------------------------------------------------------
# One call


@dataclass(frozen=True)
class ReconcileResult:
    """Everything one reconciliation found (:func:`reconcile`).

    ``comparison`` holds every compared ``(target, date, app, metric)`` (status, evidence,
    cause); :attr:`differences` only those that differ.
    """

    aggregate: AggregateResult
    """The aggregation of the export: expected metrics, per-user data, malformed counts."""
    comparison: pl.DataFrame
    """:func:`classify_differences` output for every target compared."""
    evidence: pl.DataFrame
    """:func:`discrepancy_evidence` output (empty when not computed)."""
    table: pl.DataFrame | None = None
    """What the Analytics Table holds for the range (``None``: not compared)."""
    cloudwatch: pl.DataFrame | None = None
    """What CloudWatch holds inside its window (``None``: not compared)."""
    cloudwatch_window: tuple[dt.date, dt.date] | None = None
    """First and last day CloudWatch accepts at the reconciliation's ``now``."""
    deletes: pl.DataFrame | None = None
    """Deleted items read from the incremental export (``None``: none given)."""
    deletes_export: ExportInfo | None = None
    """The latest incremental export the deletes come from."""
    analytics_table: str | None = None
    """The Analytics Table's name, or what stood for it: ``snapshot PATH`` or ``daily runs (N days)``."""
    table_source: str = "analytics_table"
    """What ``table`` was read from: ``"analytics_table"``, ``"snapshot"`` or ``"daily_runs"``."""

    @property
    def export(self) -> ExportInfo:
        """The export the expected metrics come from."""
        return self.aggregate.export

    @property
    def date_range(self) -> DateRange:
        """The days reconciled."""
        return self.aggregate.date_range

    @property
    def expected(self) -> pl.DataFrame:
        """Expected daily metrics (``AggregateResult.metrics``)."""
        return self.aggregate.metrics

    @property
    def targets(self) -> list[str]:
        """The targets compared, in :data:`TARGETS` order."""
        compared = {
            "analytics_table": self.table is not None,
            "cloudwatch": self.cloudwatch is not None,
        }
        return [t for t in TARGETS if compared[t]]

    @property
    def differences(self) -> pl.DataFrame:
        """The ``(target, date, app, metric)`` that differ: values, ``cause`` and ``detail``."""
        return self.comparison.filter(pl.col("status") == DIFFERS).select(DIFFERENCE_COLUMNS)

    @property
    def outside_window(self) -> pl.DataFrame:
        """Values not compared with CloudWatch because their day is older than its window."""
        return self.comparison.filter(pl.col("status") == OUTSIDE_WINDOW).select(DIFFERENCE_COLUMNS)

    @property
    def differs(self) -> bool:
        """True when any compared value differs (the CLI exits 1)."""
        return bool(self.comparison.filter(pl.col("status") == DIFFERS).height)

    @property
    def user_differences(self) -> pl.DataFrame | None:
        """Per-user differences with the Analytics Table (:func:`compare_per_user`)."""
        if self.table is None or "games_per_user" not in self.table.columns:
            return None  # no table, or a snapshot without per-user data (Parquet)
        return compare_per_user(self.aggregate.per_user, self.table)

    def causes(self) -> pl.DataFrame:
        """Differing values per target and cause, with what each cause means and what to do.

        Days outside CloudWatch's window are listed too (they are not differences).
        """
        counted = (
            self.comparison.filter(pl.col("status") != MATCH)
            .group_by("target", "cause")
            .agg(pl.len().cast(pl.Int64).alias("values"))
        )
        advice = pl.DataFrame(
            [(c, *ADVICE[c]) for c in CAUSES],
            schema={"cause": pl.String, "meaning": pl.String, "action": pl.String},
            orient="row",
        ).with_row_index("_order")
        return counted.join(advice, on="cause", how="left").sort("target", "_order").drop("_order")

    def summary(self) -> dict[str, Any]:
        """Return a JSON-able summary: export, range, values compared and differing per target."""
        targets: dict[str, Any] = {}
        for target in self.targets:
            rows = self.comparison.filter(pl.col("target") == target)
            differing = rows.filter(pl.col("status") == DIFFERS)
            entry: dict[str, Any] = {
                "compared": rows.filter(pl.col("status") != OUTSIDE_WINDOW).height,
                "differing": differing.height,
                "causes": {
                    cause: n
                    for cause, n in sorted(
                        differing.group_by("cause").len().iter_rows(),
                        key=lambda r: CAUSES.index(r[0]),
                    )
                },
            }
            missing = differing.filter(pl.col("actual").is_null()).select("date", "app").unique()
            entry["rowsMissing"] = missing.height
            if target == "analytics_table" and self.table is not None:
                held = set(self.table["date"].to_list())
                days = pl.date_range(self.date_range.start, self.date_range.end, "1d", eager=True).to_list()
                expected_days = set(self.expected.filter(pl.sum_horizontal(METRIC_COLUMNS) > 0)["date"].to_list())
                entry["daysMissing"] = [d.isoformat() for d in days if d in expected_days and d not in held]
            if target == "cloudwatch" and self.cloudwatch_window is not None:
                first, last = self.cloudwatch_window
                entry["window"] = {"from": first.isoformat(), "to": last.isoformat()}
                entry["outsideWindow"] = rows.filter(pl.col("status") == OUTSIDE_WINDOW).height
            targets[target] = entry
        return {
            "exportId": self.export.export_id,
            "exportType": self.export.export_type,
            "mode": self.aggregate.mode,
            "startDate": self.date_range.start.isoformat(),
            "endDate": self.date_range.end.isoformat(),
            "analyticsTable": self.analytics_table,
            "deletesFrom": self.deletes_export.export_id if self.deletes_export else None,
            "targets": targets,
            "differing": sum(t["differing"] for t in targets.values()),
            "differs": self.differs,
        }

    def summary_line(self) -> str:
        """Return one line for humans: per target, values compared, differing, and causes."""
        if not self.targets:
            return f"{self.date_range}: nothing compared (no Analytics Table or CloudWatch given)"
        parts = []
        for target, entry in self.summary()["targets"].items():
            if entry["differing"]:
                causes = ", ".join(f"{c} {n}" for c, n in entry["causes"].items())
                text = f"{target}: {entry['differing']} of {entry['compared']} values differ"
                text += f" ({causes})"
            else:
                text = f"{target}: all {entry['compared']} values match"
            if entry.get("outsideWindow"):
                first = entry["window"]["from"]
                text += (
                    f"; {entry['outsideWindow']} values before {first} are outside CloudWatch's window (not compared)"
                )
            parts.append(text)
        return f"{self.date_range}: " + "; ".join(parts)

    def __repr__(self) -> str:
        return f"ReconcileResult(export {self.export.export_id} ({self.export.export_type}); {self.summary_line()})"

    def _repr_html_(self) -> str:
        from bubbly_metrics._display import html_card

        facts = {
            "export": f"{self.export.export_id} ({self.export.export_type})",
            "compared with": ", ".join(self.targets) or "nothing",
            "result": self.summary_line(),
        }
        return html_card("ReconcileResult", facts, self.differences, name="differences")

    def to_dict(self) -> dict[str, Any]:
        """:meth:`summary` plus the differing rows (JSON-able; dates as ISO strings)."""
        rows = self.differences.with_columns(pl.col("date").cast(pl.String)).to_dicts()
        return {**self.summary(), "differences": rows}


def _now(now: dt.datetime | None) -> dt.datetime:
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise InvalidArgumentError(f"now must be timezone-aware (UTC), got naive {now!r}")
    return now.astimezone(dt.UTC)


def _apps(*frames: pl.DataFrame | None) -> list[str]:
    apps: set[str] = set()
    for frame in frames:
        if frame is not None:
            apps.update(frame["app"].to_list())
    return sorted(apps)


def _empty_comparison() -> pl.DataFrame:
    return pl.DataFrame(schema=COMPARISON_SCHEMA)


def reconcile(
    source: str | ExportInfo,
    *,
    analytics_table: str | None = None,
    snapshot: str | pl.DataFrame | None = None,
    daily_runs: bool = False,
    cloudwatch: bool = False,
    incremental: str | ExportInfo | None = None,
    mode: str = "backfill",
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    date: str | dt.date | None = None,
    now: dt.datetime | None = None,
    explain: bool = True,
    storage_options: dict[str, Any] | None = None,
    verify: bool = False,
    threads: int | None = None,
    on_file: Callable[[DataFile, int], None] | None = None,
    dynamodb_client: Any = None,
    cloudwatch_client: Any = None,
    namespace: str = NAMESPACE,
    margin: dt.timedelta = DEFAULT_MARGIN,
) -> ReconcileResult:
    """Aggregate an export and compare it with the Analytics Table and/or CloudWatch.

    Parameters
    ----------
    source
        Export location or :class:`ExportInfo`, as for :func:`~bubbly_metrics.aggregate`
        (``backfill`` reads the latest FULL export there).
    analytics_table
        Name of the Analytics Table to compare with (``None``: not compared).
    snapshot
        Instead of the live table, a local snapshot of it (:func:`read_snapshot`: the Parquet of
        ``aggregate --format parquet`` or the JSON of ``aws dynamodb scan``), or a frame shaped
        like :func:`~bubbly_metrics.analytics_table.read_analytics_table` output.
    daily_runs
        Instead of the live table, what the daily runs wrote: the incremental exports at
        ``incremental`` (default: ``source``) replayed day by day as the Aggregator Lambda
        runs them (:func:`daily_runs_table`); offline.  Without ``start``, the range begins
        at the first day they cover; their deletes explain differences too.
    cloudwatch
        Also compare with CloudWatch, for the days inside its two-week window at ``now``;
        older days get status ``outside_window`` (not differences).
    incremental
        Where the incremental exports are (a location: the deletes of every export there
        whose window ends inside the range), or one incremental :class:`ExportInfo`; their
        deletes can explain differences (:func:`read_deletes`).  ``None`` for none.
    mode, start, end, date, now
        As for :func:`~bubbly_metrics.aggregate`: the days reconciled.  ``now`` also fixes
        CloudWatch's window; inject it for reproducible runs.
    explain
        Read the export a second time for evidence of causes (:func:`discrepancy_evidence`);
        ``False`` is faster and classifies only missing rows and days outside the window.
    storage_options, verify, threads
        As for :func:`~bubbly_metrics.aggregate` (also used to read ``incremental``).
    on_file
        Progress callback of the aggregation pass, as for :func:`~bubbly_metrics.aggregate`
        (the evidence pass, if any, reads the same files again without calling it).
    dynamodb_client, cloudwatch_client
        boto3 clients; built from the environment when not given.
    namespace, margin
        CloudWatch namespace, and the margin of its window (see
        :func:`~bubbly_metrics.cloudwatch.cloudwatch_window`).

    Returns
    -------
    ReconcileResult
        ``.summary_line()``, ``.differences``, ``.differs`` and the frames compared.
    """
    if analytics_table is not None and (not isinstance(analytics_table, str) or not analytics_table):
        raise InvalidArgumentError(f"analytics_table must name a table or be None, got {analytics_table!r}")
    if not isinstance(cloudwatch, bool):
        raise InvalidArgumentError(f"cloudwatch must be True or False, got {cloudwatch!r}")
    if not isinstance(daily_runs, bool):
        raise InvalidArgumentError(f"daily_runs must be True or False, got {daily_runs!r}")
    given = [n for n, v in (("analytics_table", analytics_table), ("snapshot", snapshot)) if v is not None]
    if daily_runs:
        given.append("daily_runs")
    if len(given) > 1:
        raise InvalidArgumentError(f"compare with one of analytics_table, snapshot or daily_runs, not {given}")
    now = _now(now)
    table_name = analytics_table
    table: pl.DataFrame | None = None
    if daily_runs:
        runs_source = incremental if incremental is not None else source
        if not isinstance(runs_source, str):
            raise InvalidArgumentError("daily_runs needs a location holding the incremental exports (incremental=...)")
        incremental = runs_source
        try:
            table = daily_runs_table(runs_source, end=end, storage_options=storage_options, threads=threads)
        except ExportNotFoundError as exc:
            raise ExportNotFoundError(
                f"{exc}; daily_runs replays the daily incremental exports: point incremental= at them, "
                "or compare with a table or a snapshot instead"
            ) from None
        if start is None and table.height:
            start = table["date"].min()  # type: ignore[assignment]
        table_name = f"daily runs ({table['date'].n_unique()} days)"
    elif snapshot is not None:
        if isinstance(snapshot, pl.DataFrame):
            table = _metrics_frame(snapshot, "snapshot") if "games_per_user" not in snapshot.columns else snapshot
            table_name = "snapshot"
        else:
            table = read_snapshot(snapshot, storage_options=storage_options)
            table_name = f"snapshot {snapshot}"
    result = aggregate(
        source,
        mode=mode,
        start=start,
        end=end,
        date=date,
        now=now,
        storage_options=storage_options,
        verify=verify,
        threads=threads,
        on_file=on_file,
    )
    first, last = result.date_range.start, result.date_range.end
    deletes_export = deletes = None
    if incremental is not None:
        deletes_export = find_export(incremental, export_type="incremental", storage_options=storage_options)
        deletes = read_deletes(incremental, since=first, storage_options=storage_options)
    evidence = (
        discrepancy_evidence(result.export, start=first, end=last, deletes=deletes, threads=threads)
        if explain
        else _empty_evidence()
    )
    comparisons = []
    if analytics_table is not None:
        from bubbly_metrics.analytics_table import read_analytics_table

        table = read_analytics_table(analytics_table, start=first, end=last, client=dynamodb_client)
    if table is not None:
        table = table.filter(pl.col("date").is_between(first, last))
        comparisons.append(compare_metrics(result.metrics, table, target="analytics_table"))
    held = window = None
    if cloudwatch:
        from bubbly_metrics.cloudwatch import read_cloudwatch_metrics

        window = cloudwatch_window(now=now, margin=margin)
        lo, hi = max(first, window[0]), min(last, window[1])
        if lo <= hi:
            held = read_cloudwatch_metrics(
                start=lo,
                end=hi,
                apps=_apps(result.metrics, table),
                client=cloudwatch_client,
                namespace=namespace,
            )
        else:
            held = _empty_metrics()
        comparisons.append(compare_metrics(result.metrics, held, target="cloudwatch", window=window))
    comparison = classify_differences(pl.concat(comparisons) if comparisons else _empty_comparison(), evidence)
    reconciled = ReconcileResult(
        aggregate=result,
        comparison=comparison,
        evidence=evidence,
        table=table,
        cloudwatch=held,
        cloudwatch_window=window,
        deletes=deletes,
        deletes_export=deletes_export,
        analytics_table=table_name,
        table_source="daily_runs" if daily_runs else "snapshot" if snapshot is not None else "analytics_table",
    )
    logger.info("reconciled %s: %s", result.export.export_id, reconciled.summary_line())
    return reconciled


def _empty_metrics() -> pl.DataFrame:
    return pl.DataFrame(schema={"date": pl.Date, "app": pl.String, **{c: pl.Int64 for c in METRIC_COLUMNS}})


class _Module(types.ModuleType):
    """The module itself, callable as :func:`reconcile`.

    ``bubbly_metrics.reconcile`` names both this module and its main function; once anything
    imports the module, Python binds the package attribute to the module, and
    ``bm.reconcile(...)`` would otherwise fail with "'module' object is not callable".
    """

    def __call__(self, *args: Any, **kwargs: Any) -> ReconcileResult:
        return reconcile(*args, **kwargs)


sys.modules[__name__].__class__ = _Module
