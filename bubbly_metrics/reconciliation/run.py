"""The one call: aggregate an export and compare it with the Analytics Table and/or CloudWatch."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import polars as pl

from bubbly_metrics._time import utc_now
from bubbly_metrics.cloudwatch import DEFAULT_MARGIN, NAMESPACE, cloudwatch_window
from bubbly_metrics.dates import DateRange
from bubbly_metrics.exceptions import PARAM, InvalidArgumentError
from bubbly_metrics.exports import DataFile, ExportInfo, find_export
from bubbly_metrics.pipeline import AggregateResult, aggregate
from bubbly_metrics.reconciliation.causes import classify_differences
from bubbly_metrics.reconciliation.compare import compare_metrics, empty_comparison, empty_metrics
from bubbly_metrics.reconciliation.deletes import read_deletes
from bubbly_metrics.reconciliation.evidence import discrepancy_evidence, empty_evidence
from bubbly_metrics.reconciliation.result import ReconcileResult
from bubbly_metrics.reconciliation.stand_ins import DailyRuns, Snapshot, TableSource, check_table_source, load_stand_in

__all__ = ["reconcile"]

logger = logging.getLogger("bubbly_metrics.reconcile")  # the name its log lines have always had


def reconcile(
    source: str | ExportInfo,
    *,
    analytics_table: TableSource | None = None,
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
        Export location or :class:`ExportInfo`, as for :func:`~bubbly_metrics.aggregate`.
    analytics_table
        The table's name, or what stands for it: a :class:`Snapshot`, or :class:`DailyRuns`.
    cloudwatch
        Also compare with CloudWatch: the days inside its two-week window at ``now``.
    incremental
        Where incremental exports are: their deletes explain differences (:func:`read_deletes`).
    mode, start, end, date, now, storage_options, verify, threads, on_file
        As for :func:`~bubbly_metrics.aggregate`; ``now`` also fixes CloudWatch's window.
    explain
        Read the export again for evidence of causes (:func:`discrepancy_evidence`).
    dynamodb_client, cloudwatch_client, namespace, margin
        boto3 clients, CloudWatch's namespace and its window's margin (``cloudwatch_window``).

    Returns
    -------
    ReconcileResult
    """
    now = _checked_now(analytics_table, cloudwatch, now)
    stand_in, table_name, incremental = load_stand_in(
        analytics_table, source, incremental, end=end, storage_options=storage_options, threads=threads
    )
    result = aggregate(
        source,
        mode=mode,
        start=_first_day(analytics_table, stand_in, start),
        end=end,
        date=date,
        now=now,
        storage_options=storage_options,
        verify=verify,
        threads=threads,
        on_file=on_file,
    )
    deletes_export, deletes = _deletes(incremental, result.date_range.start, storage_options)
    evidence = _evidence(result, deletes, threads) if explain else empty_evidence()
    table = _table(analytics_table, stand_in, result.date_range, dynamodb_client)
    held, window = _cloudwatch(
        cloudwatch, result, table, now=now, margin=margin, client=cloudwatch_client, namespace=namespace
    )
    reconciled = ReconcileResult(
        aggregate=result,
        comparison=_classified(result.metrics, table, held, window, evidence),
        evidence=evidence,
        table=table,
        cloudwatch=held,
        cloudwatch_window=window,
        deletes=deletes,
        deletes_export=deletes_export,
        analytics_table=table_name,
        table_source=_table_source(analytics_table),
    )
    logger.info("reconciled %s: %s", result.export.export_id, reconciled.summary_line())
    return reconciled


def _checked_now(analytics_table: object, cloudwatch: object, now: dt.datetime | None) -> dt.datetime:
    """Refuse what :func:`reconcile` alone takes when it is wrong; ``now`` in UTC."""
    check_table_source(analytics_table)
    if not isinstance(cloudwatch, bool):
        raise InvalidArgumentError(f"{PARAM} must be True or False, got {cloudwatch!r}", param="cloudwatch")
    return utc_now(now)


def _first_day(against: TableSource | None, stand_in: pl.DataFrame | None, start: str | dt.date | None) -> Any:
    """``start``; by default, for the daily runs, the first day they cover."""
    if isinstance(against, DailyRuns) and start is None and stand_in is not None and stand_in.height:
        return stand_in["date"].min()
    return start


def _evidence(result: AggregateResult, deletes: pl.DataFrame | None, threads: int | None) -> pl.DataFrame:
    first, last = result.date_range.start, result.date_range.end
    return discrepancy_evidence(result.export, start=first, end=last, deletes=deletes, threads=threads)


def _table_source(against: TableSource | None) -> str:
    """``ReconcileResult.table_source``: what the table was read from."""
    if isinstance(against, DailyRuns):
        return "daily_runs"
    if isinstance(against, Snapshot):
        return "snapshot"
    return "analytics_table"


def _deletes(
    incremental: str | ExportInfo | None, first: dt.date, storage_options: dict[str, Any] | None
) -> tuple[ExportInfo | None, pl.DataFrame | None]:
    """The latest incremental export at ``incremental`` and the deletes that can explain the range."""
    if incremental is None:
        return None, None
    export = find_export(incremental, export_type="incremental", storage_options=storage_options)
    return export, read_deletes(incremental, since=first, storage_options=storage_options)


def _table(
    against: TableSource | None, stand_in: pl.DataFrame | None, days: DateRange, client: Any
) -> pl.DataFrame | None:
    """What the Analytics Table (or its stand-in) holds for the range; ``None``: not compared."""
    table = stand_in
    if isinstance(against, str):
        from bubbly_metrics.analytics_table import read_analytics_table

        table = read_analytics_table(against, start=days.start, end=days.end, client=client)
    return table.filter(pl.col("date").is_between(days.start, days.end)) if table is not None else None


def _cloudwatch(
    cloudwatch: bool,
    result: AggregateResult,
    table: pl.DataFrame | None,
    *,
    now: dt.datetime,
    margin: dt.timedelta,
    client: Any,
    namespace: str,
) -> tuple[pl.DataFrame | None, tuple[dt.date, dt.date] | None]:
    """What CloudWatch holds for the days of the range inside its window, and that window."""
    if not cloudwatch:
        return None, None
    from bubbly_metrics.cloudwatch import read_cloudwatch_metrics

    window = cloudwatch_window(now=now, margin=margin)
    lo, hi = max(result.date_range.start, window[0]), min(result.date_range.end, window[1])
    if lo > hi:
        return empty_metrics(), window
    apps = _apps(result.metrics, table)
    return read_cloudwatch_metrics(start=lo, end=hi, apps=apps, client=client, namespace=namespace), window


def _classified(
    expected: pl.DataFrame,
    table: pl.DataFrame | None,
    held: pl.DataFrame | None,
    window: tuple[dt.date, dt.date] | None,
    evidence: pl.DataFrame,
) -> pl.DataFrame:
    """Every target's comparison with the expected metrics, with causes."""
    comparisons = []
    if table is not None:
        comparisons.append(compare_metrics(expected, table, target="analytics_table"))
    if held is not None:
        comparisons.append(compare_metrics(expected, held, target="cloudwatch", window=window))
    return classify_differences(pl.concat(comparisons) if comparisons else empty_comparison(), evidence)


def _apps(*frames: pl.DataFrame | None) -> list[str]:
    apps: set[str] = set()
    for frame in frames:
        if frame is not None:
            apps.update(frame["app"].to_list())
    return sorted(apps)
