"""Aggregator Lambda: aggregate an export, publish metrics, write the table and the ledger.

Environment: ``EXPORT_BUCKET``, ``ANALYTICS_TABLE``, ``S3_PREFIX`` (default ``exports/``).
Events:

- The S3 → EventBridge ``Object Created`` event of an export's ``manifest-summary.json``
  (``{"source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {"name"},
  "object": {"key"}}}``): that export, exactly.  Incremental: every whole UTC day of its window.
  Full: the backfill it was started for (``backfill-request.json`` beside it, written by the
  Export Lambda), up to its last day; a full export without one is left alone (a backfill
  rewrites history) and the run says so.  A day already aggregated from that same export (the
  ledger says so: the event was delivered twice) is not aggregated again.
- ``{"mode": "incremental"}`` without a ``date`` (the 02:30 schedule, a safety net): yesterday,
  from the latest completed incremental export covering it -- unless the ledger says it was
  already aggregated from that export (nothing to do), or no export covers it yet but the
  day's export is still running (it will be aggregated on completion).  Both succeed.
- ``{"mode": "incremental", "date": "YYYY-MM-DD"}`` and ``{"mode": "backfill",
  "backfillStartDate": "YYYY-MM-DD"}`` (docs/operations.md's): always aggregated, as asked.  Exports are
  looked for under ``s3://{EXPORT_BUCKET}/{S3_PREFIX}``: the latest completed FULL export for a
  backfill, the latest completed INCREMENTAL export covering the day otherwise.

Every event is checked before anything is read (:mod:`bubbly_metrics.handlers._events`): an S3 event
must name exactly one export's ``AWSDynamoDB/<ExportId>/manifest-summary.json`` under
``s3://{EXPORT_BUCKET}/{S3_PREFIX}``; the operator's events have known fields of the right types,
and dates within the bounds (``BACKFILL_FLOOR_DATE``, default 2025-01-17; ``BACKFILL_MAX_DAYS``,
default 800, or the event's ``maxDays``; no day after today).  A backfill request read beside a
full export meets the same bounds.

What each event does is decided by the library (:func:`bubbly_metrics.daily.run_daily`);
results carry ``status``: ``aggregated``, ``skipped`` (already done), ``waiting`` (export
running) or ``ignored`` (a full export nobody asked to backfill from).

Logs, in order: ``Processing data files...``, ``Processed X items so far...`` (after each data
file), ``Aggregation complete``, ``Publishing metrics to CloudWatch...``, ``Writing records to
Analytics Table...``, (incremental) ``Engagement metrics published``, ``Aggregator Lambda
completed successfully``.

An incremental day, once committed, also gets its ``WeeklyActiveUsers``,
``MonthlyActiveUsers`` and ``Stickiness`` per App and its all-apps ``ActiveUsers`` /
``GamesPlayed`` (:func:`~bubbly_metrics.engagement.publish_engagement`, from the table's last 28
days); the result's ``engagement`` says what was sent.  If that fails, the rows stay committed
and the invocation fails, naming it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from typing import Any

from bubbly_metrics.daily import STATE_MACHINE_ENV, DailyConfig, DailyRequest, Routing, run_daily
from bubbly_metrics.handlers._events import (
    bounded_dates,
    completed_export,
    export_folder,
    parse_event,
    require_env,
)
from bubbly_metrics.handlers._logging import RemainingTime, json_logging
from bubbly_metrics.start_export import DEFAULT_S3_PREFIX, normalize_prefix

logger = logging.getLogger(__name__)

MAP_MEMORY_ENV = "DISTRIBUTED_MAP_MEMORY_MB"
"""The map function's memory, which sizes the batches (set by the stack)."""
MEMORY_ENV = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
"""This function's memory (set by Lambda)."""


def handle(
    event: Any,
    context: Any,
    *,
    env: Mapping[str, str] | None = None,
    now: dt.datetime | None = None,
    storage_options: dict[str, Any] | None = None,
    dynamodb_client: Any = None,
    cloudwatch_client: Any = None,
) -> dict[str, Any]:
    """:func:`lambda_handler` with its environment, clock and AWS clients injectable."""
    env = os.environ if env is None else env
    with json_logging(context, errors=logger), bounded_dates(env, event):
        now = now or dt.datetime.now(dt.UTC)
        config = DailyConfig(
            bucket=require_env(env, "EXPORT_BUCKET"),
            table=require_env(env, "ANALYTICS_TABLE"),
            prefix=normalize_prefix(env.get("S3_PREFIX", DEFAULT_S3_PREFIX)),
            now=now,
            token=getattr(context, "aws_request_id", None) or now.isoformat(),
            state_machine_arn=(env.get(STATE_MACHINE_ENV) or "").strip(),
            memory_mb=env.get(MEMORY_ENV),
            map_memory_mb=env.get(MAP_MEMORY_ENV),
            storage_options=storage_options,
            dynamodb_client=dynamodb_client,
            cloudwatch_client=cloudwatch_client,
            watch=lambda: RemainingTime(context, logger),
            logger=logger,
        )
        return run_daily(_request(event, config), config)


def _request(event: Any, config: DailyConfig) -> DailyRequest:
    """The event, checked: a completed export's folder, or the operator's mode and dates."""
    routing = Routing.of(event)
    completed = completed_export(event)
    if completed is not None:
        return DailyRequest(routing, folder=export_folder(*completed, bucket=config.bucket, prefix=config.prefix))
    request = parse_event(event, now=config.now)
    return DailyRequest(routing, mode=request["mode"], start=request["backfillStartDate"], date=request["date"])


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Aggregate the latest matching export, publish it, and return a JSON-able summary."""
    return handle(event, context)
