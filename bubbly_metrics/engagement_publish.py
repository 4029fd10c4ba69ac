"""The daily job's engagement: one day's WAU, MAU and stickiness from the Analytics Table, to CloudWatch.

- :func:`engagement_from_table` — one day's figures from the Analytics Table's last
  ``month_days`` days (a bounded number of Query calls), never an export;
- :func:`publish_engagement` sends them, with the day's all-apps totals, to CloudWatch (the
  Aggregator, after each daily run).

The figures are :func:`~bubbly_metrics.engagement.engagement_metrics`'s; both names stay
importable from :mod:`bubbly_metrics.engagement`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import polars as pl

from bubbly_metrics._time import midnight, utc_now
from bubbly_metrics.dates import parse_date
from bubbly_metrics.engagement import MONTH_DAYS, WEEK_DAYS, _window, engagement_metrics
from bubbly_metrics.exceptions import InvalidArgumentError

__all__ = [
    "ENGAGEMENT_METRIC_NAMES",
    "MIN_SECONDS",
    "TOTAL_METRIC_NAMES",
    "engagement_from_table",
    "publish_engagement",
]


# -- one day from the Analytics Table ---------------------------------------------------------------


def engagement_from_table(
    table: str,
    *,
    day: str | dt.date,
    client: Any = None,
    week_days: int = WEEK_DAYS,
    month_days: int = MONTH_DAYS,
    threads: int = 8,
    now: dt.datetime | None = None,
) -> pl.DataFrame:
    """One day's :func:`engagement_metrics` from the Analytics Table's trailing ``month_days`` days.

    Reads exactly the days ``day - (month_days - 1)`` .. ``day`` (one Query per day, paginated
    for days of many items: ``month_days`` Query calls for a day that fits one page per day),
    never an export, so a daily job can publish WAU/MAU once that day's rows are committed.

    Parameters
    ----------
    table
        The Analytics Table's name.
    day
        The day to compute, ``YYYY-MM-DD`` or a date.
    client, threads, now
        As for :func:`~bubbly_metrics.analytics_table.read_analytics_table`.
    week_days, month_days
        Window lengths (``week_days`` at most ``month_days``: only that many days are read).

    Returns
    -------
    polars.DataFrame
        :data:`ENGAGEMENT_SCHEMA`: a row per app active in the window (an app whose last active
        user is more than ``month_days`` days old has none).  Days the table lacks count as days
        without activity: check the ledger (:mod:`bubbly_metrics.gaps`) first.

    Notes
    -----
    Its cost (items, bytes, Query calls, read units, CPU) is measured by ``bench/engagement.py``:
    see docs/performance.md.  The items' per-user games and parties maps come too: a projection
    on ``activeUserIds`` would cut the bytes sent and parsed, not the read units (DynamoDB
    charges a Query by the size of the items it reads, whatever it returns of them).
    """
    from bubbly_metrics.analytics_table import read_analytics_table

    target = parse_date(day, name="day")
    month = _window(month_days, "month_days")
    week = _window(week_days, "week_days")
    if week > month:
        raise InvalidArgumentError(f"week_days ({week}) must not exceed month_days ({month}): only those are read")
    first = target - dt.timedelta(days=month - 1)
    frame = read_analytics_table(table, start=first, end=target, client=client, threads=threads, now=now)
    metrics = engagement_metrics(frame, start=first, end=target, week_days=week, month_days=month)
    return metrics.filter(pl.col("date") == target).collect()


# -- publish one day's WAU / MAU / stickiness to CloudWatch ----------------------------------------

ENGAGEMENT_METRIC_NAMES = {
    "weekly_active_users": "WeeklyActiveUsers",
    "monthly_active_users": "MonthlyActiveUsers",
    "stickiness": "Stickiness",
}
"""Per-``App`` CloudWatch metrics :func:`publish_engagement` sends (``Stickiness`` is a ratio, 0-1)."""

TOTAL_METRIC_NAMES = {"active_users": "ActiveUsers", "games_played": "GamesPlayed"}
"""Metrics :func:`publish_engagement` also sends *without* a dimension: the day's sum over all apps
(the ledger's totals), the one series the anomaly alarm watches, whatever apps appear later."""

MIN_SECONDS = 4.0
"""Seconds of the invocation that must be left to start (29 Queries, 8 at a time, and the computation take a
few seconds at 100k monthly users, see docs/performance.md; the rest is margin for throttling retries)."""


def _dimension_ok(app: str) -> bool:  # as cloudwatch.DIMENSION_RULE: printable ASCII, not blank, <= 1024
    return app.isascii() and app.isprintable() and bool(app.strip(" ")) and len(app) <= 1024


def publish_engagement(
    table: str,
    *,
    day: str | dt.date,
    now: dt.datetime | None = None,
    dynamodb_client: Any = None,
    cloudwatch_client: Any = None,
    namespace: str | None = None,
    time_left: Callable[[], float | None] | None = None,
    min_seconds: float = MIN_SECONDS,
    backoff: Any = None,
) -> dict[str, Any]:
    """Publish ``day``'s WAU, MAU and stickiness per app, and its all-apps totals, to CloudWatch.

    For the daily job, once ``day``'s rows are committed to the Analytics Table (its ledger
    entry is there).  Reads the ledger of the 28 days ending ``day`` (one Query), then the
    table's days (:func:`engagement_from_table`: 28 Queries, or 7 when only the week is
    complete), never an export.  Sends, stamped ``day`` 00:00 UTC:

    - ``WeeklyActiveUsers`` per ``App`` when the 7 days ending ``day`` are in the ledger, whole;
    - ``MonthlyActiveUsers`` and ``Stickiness`` (DAU / MAU) per ``App`` when the 28 days are;
    - ``ActiveUsers`` and ``GamesPlayed`` with no dimension: the day's sums over apps, from its
      ledger entry (what the anomaly alarm watches).

    A day missing from the ledger (never aggregated, or only partially: ``allowPartial``) would
    count as a day without activity and bias the windows low, so a window holding one is not
    published, and the days are named in the report (after a deployment, the first 27 days have
    no whole month).  Re-running sends the same values (read them with ``Maximum``).

    Never raises for AWS errors: the day's rows are committed whatever happens here.

    Returns
    -------
    dict
        JSON-able: ``status`` — ``published``; ``incomplete`` (the totals, and WAU if its week
        is whole, were sent; ``missingDays`` lists the ledger's gaps); ``skipped`` (the day is
        outside CloudWatch's two-week window, or not in the ledger); ``failed`` (``error`` says
        why; nothing, or not everything, was sent) — and ``date``, ``apps``,
        ``datumsPublished``, ``metrics`` (the names sent), ``queries`` (DynamoDB Query calls:
        the ledger's and one per day read, more only for a day past 1 MB), ``seconds``, ``note``.
    """
    from bubbly_metrics.cloudwatch import NAMESPACE, OUTSIDE_WINDOW, cloudwatch_window

    target = parse_date(day, name="day")
    now = utc_now(now)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "status": "published",
        "date": target.isoformat(),
        "apps": 0,
        "datumsPublished": 0,
        "metrics": [],
        "queries": 1,
    }

    def done(status: str, **fields: Any) -> dict[str, Any]:
        report.update(status=status, seconds=round(time.perf_counter() - started, 3), **fields)
        return report

    first_ok, last_ok = cloudwatch_window(now=now)
    if not first_ok <= target <= last_ok:
        return done("skipped", note=f"{target} is {OUTSIDE_WINDOW}")
    left = time_left() if time_left is not None else None
    if left is not None and left < min_seconds:
        return done("failed", error=f"not started: {left:.1f}s left in the invocation, {min_seconds:.0f}s needed")
    clients = {"dynamodb_client": dynamodb_client, "cloudwatch_client": cloudwatch_client}
    try:
        missing = _send(table, target, report, now=now, namespace=namespace or NAMESPACE, backoff=backoff, **clients)
    except Exception as exc:
        published = getattr(exc, "report", None) or {}
        report["datumsPublished"] = published.get("datumsPublished", report["datumsPublished"])
        return done("failed", error=f"{type(exc).__name__}: {exc}")
    if missing is None:
        return done("skipped", note=f"{target} is not in the ledger whole: nothing published")
    if not missing:
        return done("published")
    return done("incomplete", missingDays=[d.isoformat() for d in missing], note=_incomplete_note(target, missing))


def _ledger_window(table: str, target: dt.date, client: Any) -> tuple[Any, list[dt.date]]:
    """``target``'s ledger entry (``None`` unless whole), and the days of its 28 the ledger lacks whole."""
    from bubbly_metrics.ledger import read_ledger

    month_first = target - dt.timedelta(days=MONTH_DAYS - 1)
    ledger = read_ledger(table, start=month_first, end=target, client=client)
    window = [month_first + dt.timedelta(days=i) for i in range(MONTH_DAYS)]
    missing = [d for d in window if (e := ledger.get(d)) is None or e.partial]
    entry = ledger.get(target)
    return (None if entry is None or entry.partial else entry), missing


def _week_whole(target: dt.date, missing: list[dt.date]) -> bool:
    """The ``WEEK_DAYS`` days ending ``target`` are all in the ledger, whole."""
    return all(d <= target - dt.timedelta(days=WEEK_DAYS) for d in missing)


def _send(
    table: str,
    target: dt.date,
    report: dict[str, Any],
    *,
    now: dt.datetime,
    dynamodb_client: Any,
    cloudwatch_client: Any,
    namespace: str,
    backoff: Any,
) -> list[dt.date] | None:
    """Send ``target``'s totals, and its windows that are whole; the ledger's missing days (``None``: skipped)."""
    from bubbly_metrics.cloudwatch import put_datums

    entry, missing = _ledger_window(table, target, dynamodb_client)
    if entry is None:
        return None
    stamp = midnight(target)
    datums: list[dict[str, Any]] = [
        {
            "MetricName": name,
            "Dimensions": [],
            "Timestamp": stamp,
            "Value": float(entry.totals[column]),
            "Unit": "Count",
        }
        for column, name in TOTAL_METRIC_NAMES.items()
    ]
    if _week_whole(target, missing):
        length = WEEK_DAYS if missing else MONTH_DAYS
        report["queries"] += length
        frame = engagement_from_table(
            table, day=target, client=dynamodb_client, week_days=WEEK_DAYS, month_days=length, now=now
        )
        columns = ["weekly_active_users"] + ([] if missing else ["monthly_active_users", "stickiness"])
        datums += _app_datums(frame, columns, stamp, report)
    sent_report = put_datums(datums, client=cloudwatch_client, namespace=namespace, backoff=backoff)
    report["datumsPublished"] = sent_report["datumsPublished"]
    report["metrics"] = sorted({datum["MetricName"] for datum in datums})
    return missing


def _app_datums(
    frame: pl.DataFrame, columns: list[str], stamp: dt.datetime, report: dict[str, Any]
) -> list[dict[str, Any]]:
    """The per-``App`` datums of ``columns`` (``report["apps"]`` counts the apps)."""
    datums = []
    for row in frame.sort("app").iter_rows(named=True):
        if not _dimension_ok(row["app"]):
            continue  # the day's own publish already reported it
        report["apps"] += 1
        for column in columns:
            if row[column] is None:
                continue
            datums.append(
                {
                    "MetricName": ENGAGEMENT_METRIC_NAMES[column],
                    "Dimensions": [{"Name": "App", "Value": row["app"]}],
                    "Timestamp": stamp,
                    "Value": float(row[column]),
                    "Unit": "None" if column == "stickiness" else "Count",
                }
            )
    return datums


def _incomplete_note(target: dt.date, missing: list[dt.date]) -> str:
    shown = ", ".join(d.isoformat() for d in missing[:5]) + (
        f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    )
    held = "WeeklyActiveUsers published; " if _week_whole(target, missing) else ""
    return (
        f"{held}{len(missing)} day(s) of the 28 ending {target} are not in the ledger whole ({shown}): "
        "windows holding them are not published (they would count those days as without activity)"
    )
