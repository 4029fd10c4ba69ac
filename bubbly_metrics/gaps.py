"""Missing days: which days the ledger lacks, and the exports that bring them back.

A day is **aggregated** when the ledger (:mod:`bubbly_metrics.ledger`) has it (a day published
partially, without some data files, counts as missing); **stale** when
it was aggregated from an export older than a later full export that holds it (a backfill
from that export would give fresher numbers); **missing** when the ledger lacks it and
DynamoDB can still export it; **unrecoverable** when the ledger lacks it and it is older than
point-in-time recovery reaches (35 days): no incremental export can bring it back, only a
backfill from a full export (which holds what the table still holds).

:func:`find_gaps` reads the ledger once (one Query) and classifies a range of days;
:func:`catch_up` starts one incremental export per missing day, with the same deterministic
``ClientToken`` and S3 prefix as the daily export of that day
(:func:`bubbly_metrics.start_export.plan_export`), so running it twice starts nothing twice.
Each export then completes, and its ``manifest-summary.json`` event makes the Aggregator
aggregate that day.  The Export Lambda's daily run and ``python -m bubbly_metrics gaps --fill``
both call these.

Examples
--------
>>> import datetime as dt
>>> now = dt.datetime(2025, 3, 18, 2, 0, tzinfo=dt.UTC)
>>> [str(d) for d in lookback_days(now=now, lookback=3)]
['2025-03-15', '2025-03-16', '2025-03-17']
>>> recoverable(dt.date(2025, 2, 11), now=now), recoverable(dt.date(2025, 2, 12), now=now)
(False, True)
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from bubbly_metrics import _aws as aws
from bubbly_metrics._aws import NAMESPACE
from bubbly_metrics._time import iso, midnight, utc_now
from bubbly_metrics.dates import parse_date, yesterday
from bubbly_metrics.exceptions import ExportStartError, InvalidArgumentError, InvalidDateError
from bubbly_metrics.ledger import LedgerEntry, read_ledger

__all__ = [
    "DEFAULT_LOOKBACK",
    "MAX_LOOKBACK",
    "PITR_DAYS",
    "DayStatus",
    "GapReport",
    "catch_up",
    "find_gaps",
    "lookback_days",
    "publish_lateness",
    "recoverable",
]

logger = logging.getLogger(__name__)

PITR_DAYS = 35
"""How far back point-in-time recovery reaches, so how far back an incremental export can start."""

DEFAULT_LOOKBACK = 7
"""Days the Export Lambda's daily run looks back for missing days."""

MAX_LOOKBACK = PITR_DAYS
"""The longest look-back: older days cannot be exported again anyway."""

LATENESS_METRIC = "DaysNotAggregated"
"""CloudWatch metric (namespace ``BubblyClouds/Analytics``, no dimensions) the lateness alarm watches."""

Status = Literal["aggregated", "stale", "missing", "unrecoverable"]


def recoverable(day: dt.date, *, now: dt.datetime) -> bool:
    """True when an incremental export of ``day`` can still start (PITR reaches its 00:00 UTC)."""
    return midnight(day) >= utc_now(now) - dt.timedelta(days=PITR_DAYS)


def lookback_days(*, now: dt.datetime | None = None, lookback: int = DEFAULT_LOOKBACK) -> list[dt.date]:
    """The ``lookback`` days ending yesterday (UTC), oldest first."""
    if isinstance(lookback, bool) or not isinstance(lookback, int) or not 1 <= lookback <= MAX_LOOKBACK:
        raise InvalidArgumentError(f"lookback must be a number of days from 1 to {MAX_LOOKBACK}, got {lookback!r}")
    last = yesterday(utc_now(now))
    return [last - dt.timedelta(days=n) for n in range(lookback - 1, -1, -1)]


@dataclass(frozen=True)
class DayStatus:
    """What the ledger says about one day."""

    day: dt.date
    status: Status
    entry: LedgerEntry | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``date``, ``status``, ``note`` and the ledger entry (if any)."""
        out: dict[str, Any] = {"date": self.day.isoformat(), "status": self.status, "note": self.note}
        if self.entry is not None:
            out["ledger"] = self.entry.to_dict()
        return out


@dataclass(frozen=True)
class GapReport:
    """The status of every day of ``start``..``end``, as of ``now``."""

    start: dt.date
    end: dt.date
    now: dt.datetime
    days: list[DayStatus] = field(default_factory=list)

    def with_status(self, *statuses: Status) -> list[DayStatus]:
        """The days with any of ``statuses``, oldest first."""
        return [d for d in self.days if d.status in statuses]

    @property
    def missing(self) -> list[dt.date]:
        """Days the ledger lacks that an incremental export can still bring back."""
        return [d.day for d in self.with_status("missing")]

    @property
    def not_aggregated(self) -> int:
        """Days the ledger lacks, recoverable or not (what the lateness metric reports)."""
        return len(self.with_status("missing", "unrecoverable"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the range, counts by status and every day that is not plainly aggregated."""
        counts = {s: len(self.with_status(s)) for s in ("aggregated", "stale", "missing", "unrecoverable")}
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "counts": counts,
            "days": [d.to_dict() for d in self.days if d.status != "aggregated"],
        }


def find_gaps(
    table: str,
    *,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    lookback: int = DEFAULT_LOOKBACK,
    now: dt.datetime | None = None,
    client: Any = None,
) -> GapReport:
    """Classify every day of a range from the ledger (one Query).

    Parameters
    ----------
    table
        The Analytics Table (the ledger lives in it).
    start, end
        Inclusive range; ``end`` defaults to yesterday (UTC), ``start`` to ``lookback`` days
        ending at ``end``.  ``end`` cannot be today or later: a day is exported once it ended.
    lookback
        Days before ``end`` when ``start`` is not given (1-35, default 7).
    now
        The current time (UTC-aware; default: the wall clock): "yesterday" and what PITR reaches.
    client
        A boto3 DynamoDB client; built from the environment when not given.

    Returns
    -------
    GapReport
    """
    now = utc_now(now)
    first, last = _range(start, end, lookback, now)
    # The whole ledger: a full export aggregated for other days can make these stale.
    ledger = read_ledger(table, client=client)
    fulls = [e for e in ledger.values() if e.export_type == "FULL" and e.export_as_of is not None]
    latest_full = max(fulls, key=lambda e: e.export_as_of or now, default=None)
    days: list[DayStatus] = []
    day = first
    while day <= last:
        days.append(_day_status(day, ledger.get(day), latest_full, now))
        day += dt.timedelta(days=1)
    return GapReport(first, last, now, days)


def _range(
    start: str | dt.date | None, end: str | dt.date | None, lookback: int, now: dt.datetime
) -> tuple[dt.date, dt.date]:
    """:func:`find_gaps`' first and last day."""
    last = parse_date(end, name="end") if end is not None else yesterday(now)
    if last > yesterday(now):
        raise InvalidDateError(f"end {last} has not ended yet (now is {iso(now)})")
    if start is not None:
        first = parse_date(start, name="start")
    else:
        lookback_days(now=now, lookback=lookback)  # validates lookback
        first = last - dt.timedelta(days=lookback - 1)
    if first > last:
        raise InvalidDateError(f"start {first} is after end {last}")
    return first, last


def _day_status(
    day: dt.date, entry: LedgerEntry | None, latest_full: LedgerEntry | None, now: dt.datetime
) -> DayStatus:
    """What the ledger's ``entry`` (if any) says about ``day``, given the latest full export aggregated."""
    if entry is not None and entry.partial:
        # Published without some data files (allow_partial): in the table, not complete.
        note = f"published partially from export {entry.export_id} ({entry.unreadable_files} data file(s) unreadable); "
        if recoverable(day, now=now):
            return DayStatus(day, "missing", entry, note + "an incremental export can bring it back")
        return DayStatus(day, "unrecoverable", entry, note + "backfill it from a full export")
    if entry is not None:
        full_as_of = latest_full.export_as_of if latest_full is not None else None
        if (
            latest_full is not None
            and full_as_of is not None
            and entry.export_as_of is not None
            and entry.export_as_of < full_as_of
            and midnight(day) + dt.timedelta(days=1) <= full_as_of
        ):
            note = (
                f"aggregated from {entry.export_type} export {entry.export_id}, older than full export "
                f"{latest_full.export_id} ({iso(full_as_of)}); backfill it from a full export"
            )
            return DayStatus(day, "stale", entry, note)
        return DayStatus(day, "aggregated", entry)
    if recoverable(day, now=now):
        return DayStatus(day, "missing", None, "not aggregated; an incremental export can bring it back")
    return DayStatus(
        day,
        "unrecoverable",
        None,
        f"not aggregated, and older than point-in-time recovery's {PITR_DAYS} days: not recoverable "
        "by export; backfill it from a full export instead",
    )


def catch_up(
    report: GapReport,
    *,
    table: str,
    bucket: str,
    prefix: str | None = None,
    client: Any = None,
    on_start: Any = None,
) -> list[dict[str, Any]]:
    """Start one incremental export per missing day of ``report`` (24-hour window each).

    Every request is the daily export's own (:func:`~bubbly_metrics.start_export.start_export`
    with ``date=day``): the same ``ClientToken``, so a repeated run returns the exports already
    started instead of starting more (DynamoDB keeps a token for 8 hours; a day still missing
    the next day is exported again, which is what it needs).  Every day is tried; failures are
    raised together at the end.

    Parameters
    ----------
    report
        What :func:`find_gaps` returned.
    table, bucket, prefix
        The main table (ARN or name), the export bucket and ``S3_PREFIX``.
    client
        A boto3 DynamoDB client; built from the environment when not given.
    on_start
        Called with each started export's result (handlers log it).

    Returns
    -------
    list of dict
        One :func:`~bubbly_metrics.start_export.start_export` result per started export.

    Raises
    ------
    ExportStartError
        After trying every day, when any export could not be started.
    """
    from bubbly_metrics.start_export import DEFAULT_S3_PREFIX, resolve_table_arn, start_export

    if not report.missing:
        return []
    client = aws.client("dynamodb", client, region=aws.arn_region(table) if isinstance(table, str) else None)
    arn = resolve_table_arn(table, client=client)
    started: list[dict[str, Any]] = []
    errors: list[str] = []
    for day in report.missing:
        try:
            result = start_export(
                table=arn,
                bucket=bucket,
                mode="incremental",
                prefix=DEFAULT_S3_PREFIX if prefix is None else prefix,
                date=day,
                now=report.now,
                client=client,
            )
        except ExportStartError as exc:
            logger.warning("catch-up export of %s not started: %s", day, exc)
            errors.append(f"{day}: {exc}")
            continue
        started.append(result)
        if on_start is not None:
            on_start(result)
    if errors:
        raise ExportStartError(
            f"{len(errors)} of {len(report.missing)} catch-up export(s) could not be started "
            f"({len(started)} started); first: {errors[0]}"
        )
    return started


def publish_lateness(report: GapReport, *, client: Any = None, namespace: str | None = None) -> dict[str, Any]:
    """Publish how many days of ``report`` are not aggregated (the lateness alarm's metric).

    One PutMetricData of :data:`LATENESS_METRIC` (no dimensions, Count) stamped ``report.now``.
    """
    value = report.not_aggregated
    datum = {"MetricName": LATENESS_METRIC, "Value": float(value), "Unit": "Count", "Timestamp": report.now}
    aws.client("cloudwatch", client).put_metric_data(Namespace=namespace or NAMESPACE, MetricData=[datum])
    return {"metric": LATENESS_METRIC, "value": value, "metricTimestamp": iso(report.now)}
