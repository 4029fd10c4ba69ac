"""Export Lambda: start DynamoDB exports of the main table to the export bucket.

Environment: ``TABLE_NAME`` (the main table's ARN; a name is looked up), ``EXPORT_BUCKET``,
``S3_PREFIX`` (default ``exports/``), and for the daily catch-up ``ANALYTICS_TABLE`` (where
the ledger is) and ``LOOKBACK_DAYS`` (default 7, at most 35).  Events:

- ``{"mode": "incremental"}`` (the 02:00 schedule): with ``ANALYTICS_TABLE``, every day of the
  last ``LOOKBACK_DAYS`` that the ledger lacks gets its incremental export (yesterday, normally;
  after an outage, every day it missed), each with its day's deterministic ``ClientToken``, so
  a second run starts nothing new.  Days older than point-in-time recovery reaches are
  reported, not skipped silently.  Without ``ANALYTICS_TABLE``: yesterday only.
- ``{"mode": "incremental", "date": "YYYY-MM-DD"}``: that day.  ``{"mode": "backfill",
  "backfillStartDate": "YYYY-MM-DD"}``: a full export (and its backfill request beside it).
- ``{"check": "lateness"}`` (the lateness schedule): publish how many days of the look-back
  are not aggregated (metric ``DaysNotAggregated``); the lateness alarm watches it.

Every event is checked before any AWS call (:func:`bubbly_metrics.handlers._events.parse_event`):
unknown fields, wrong types and dates outside the bounds (``BACKFILL_FLOOR_DATE``, default
2025-01-17; ``BACKFILL_MAX_DAYS``, default 800, or the event's ``maxDays``; nothing after
today; years 2012-2100) are refused in one line, starting nothing.

Returns the export's ARN, status and S3 prefix (for the daily run: yesterday's, plus every
export started under ``exportsStarted``), see :func:`bubbly_metrics.start_export.start_export`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from typing import Any

from bubbly_metrics._log import log
from bubbly_metrics._text import clip
from bubbly_metrics.exceptions import ConfigurationError, InvalidArgumentError
from bubbly_metrics.handlers._events import bounded_dates, parse_event, require_env
from bubbly_metrics.handlers._logging import json_logging
from bubbly_metrics.start_export import DEFAULT_S3_PREFIX, start_export

logger = logging.getLogger(__name__)


def handle(
    event: Any,
    context: Any,
    *,
    env: Mapping[str, str] | None = None,
    now: dt.datetime | None = None,
    client: Any = None,
    cloudwatch_client: Any = None,
) -> dict[str, Any]:
    """:func:`lambda_handler` with its environment, clock and AWS clients injectable."""
    env = os.environ if env is None else env
    # On error the line names the event in a bounded summary, never the whole event.
    with json_logging(context, errors=logger, event=clip(repr(event))), bounded_dates(env, event):
        table = require_env(env, "TABLE_NAME")
        bucket = require_env(env, "EXPORT_BUCKET")
        prefix = env.get("S3_PREFIX", DEFAULT_S3_PREFIX)
        if isinstance(event, Mapping) and "check" in event:
            if event["check"] != "lateness" or len(event) != 1:
                raise InvalidArgumentError(
                    f'Invalid check. Must be \'lateness\', alone: {{"check": "lateness"}} (got {clip(repr(event))})'
                )
            return _lateness(env, now, client, cloudwatch_client)
        request = parse_event(event, now=now)
        if request["mode"] == "incremental" and request["date"] is None and env.get("ANALYTICS_TABLE"):
            return _daily(env, table, bucket, prefix, now, client)
        result = start_export(
            table=table,
            bucket=bucket,
            mode=request["mode"],
            prefix=prefix,
            date=request["date"],
            backfill_start=request["backfillStartDate"],
            now=now,
            client=client,
        )
        log(logger, "Export started", **result)
        return result


def _lookback(env: Mapping[str, str]) -> int:
    from bubbly_metrics.gaps import DEFAULT_LOOKBACK, MAX_LOOKBACK

    text = (env.get("LOOKBACK_DAYS") or "").strip()
    if not text:
        return DEFAULT_LOOKBACK
    if not text.isdigit() or not 1 <= int(text) <= MAX_LOOKBACK:
        raise ConfigurationError(f"LOOKBACK_DAYS must be a number of days from 1 to {MAX_LOOKBACK}, got {text!r}")
    return int(text)


def _daily(
    env: Mapping[str, str], table: str, bucket: str, prefix: str, now: dt.datetime | None, client: Any
) -> dict[str, Any]:
    """Start an export for every day of the look-back the ledger lacks (normally: yesterday)."""
    from bubbly_metrics.exceptions import AnalyticsTableError
    from bubbly_metrics.gaps import catch_up, find_gaps

    lookback = _lookback(env)
    try:
        report = find_gaps(env["ANALYTICS_TABLE"].strip(), lookback=lookback, now=now, client=client)
    except AnalyticsTableError:
        # Without the ledger, still export yesterday (what the daily run always did), then fail.
        result = start_export(table=table, bucket=bucket, prefix=prefix, now=now, client=client)
        log(logger, "Export started", **result)
        raise
    for day in report.with_status("unrecoverable"):
        log(logger, f"{day.day} is not aggregated: {day.note}", level=logging.WARNING, date=day.day.isoformat())
    started = catch_up(
        report,
        table=table,
        bucket=bucket,
        prefix=prefix,
        client=client,
        on_start=lambda r: log(logger, "Export started", **r),
    )
    summary: dict[str, Any] = {
        "lookback": {"start": report.start.isoformat(), "end": report.end.isoformat()},
        "missing": [d.isoformat() for d in report.missing],
        "unrecoverable": [d.day.isoformat() for d in report.with_status("unrecoverable")],
        "exportsStarted": started,
    }
    last = f"{report.end + dt.timedelta(days=1)}T00:00:00Z"
    summary.update(next((r for r in started if r.get("exportToTime") == last), {}))
    if not started:
        message = f"Nothing to export: every day from {report.start} to {report.end} is aggregated or unrecoverable"
        log(logger, message, **summary)
        summary["message"] = message
    return summary


def _lateness(env: Mapping[str, str], now: dt.datetime | None, client: Any, cloudwatch_client: Any) -> dict[str, Any]:
    from bubbly_metrics.gaps import find_gaps, publish_lateness

    report = find_gaps(require_env(env, "ANALYTICS_TABLE"), lookback=_lookback(env), now=now, client=client)
    published = publish_lateness(report, client=cloudwatch_client)
    late = [d.day.isoformat() for d in report.with_status("missing", "unrecoverable")]
    level = logging.WARNING if late else logging.INFO
    message = f"{len(late)} day(s) not aggregated: {', '.join(late)}" if late else "Every day is aggregated"
    log(logger, message, level=level, notAggregated=late, **published)
    return {"notAggregated": late, **published}


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Start the export(s) the event asks for; return the ARN, status and S3 prefix."""
    return handle(event, context)
