"""Aggregator Lambda: aggregate the latest matching export, publish metrics, write the table.

Environment: ``EXPORT_BUCKET``, ``ANALYTICS_TABLE``, ``S3_PREFIX`` (default ``exports/``).
Event: ``{"mode": "incremental"|"backfill", "backfillStartDate": "YYYY-MM-DD"}`` (and an
optional ``"date"`` for one incremental day).  Exports are looked for under
``s3://{EXPORT_BUCKET}/{S3_PREFIX}``: the latest completed FULL export for a backfill, the
latest completed INCREMENTAL export (whose window must cover the day) otherwise.

Logs, in order: ``Processing data files...``, ``Processed X items so far...`` (after each data
file), ``Aggregation complete``, ``Publishing metrics to CloudWatch...``, ``Writing records to
Analytics Table...``, ``Aggregator Lambda completed successfully``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from bubbly_metrics.handlers import RemainingTime, json_logging, log, parse_event, require_env
from bubbly_metrics.start_export import DEFAULT_S3_PREFIX, normalize_prefix

logger = logging.getLogger(__name__)

_STAGE_LINES = {
    "cloudwatch": "Publishing metrics to CloudWatch...",
    "table": "Writing records to Analytics Table...",
}


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
    with json_logging(context):
        try:
            return _run(event, context, env, now, storage_options, dynamodb_client, cloudwatch_client)
        except Exception as exc:
            fields: dict[str, Any] = {"errorType": type(exc).__name__}
            if getattr(exc, "report", None):
                fields["report"] = exc.report  # type: ignore[attr-defined]
            log(logger, str(exc), level=logging.ERROR, **fields)
            raise


def _run(
    event: Any,
    context: Any,
    env: Mapping[str, str],
    now: dt.datetime | None,
    storage_options: dict[str, Any] | None,
    dynamodb_client: Any,
    cloudwatch_client: Any,
) -> dict[str, Any]:
    from bubbly_metrics.pipeline import aggregate
    from bubbly_metrics.publish import publish

    bucket = require_env(env, "EXPORT_BUCKET")
    table = require_env(env, "ANALYTICS_TABLE")
    location = f"s3://{bucket}/{normalize_prefix(env.get('S3_PREFIX', DEFAULT_S3_PREFIX))}"
    request = parse_event(event)
    now = now or dt.datetime.now(dt.UTC)
    remaining = RemainingTime(context, logger)

    # Distributed backfill (docs/scale.md): whether to start the state machine instead, and
    # starting it, live in bubbly_metrics.distributed; this handler only asks.
    from bubbly_metrics.distributed import route_backfill

    distributed_run = route_backfill(
        event,
        env=env,
        location=location,
        bucket=bucket,
        remaining_ms=remaining.millis(),
        token=getattr(context, "aws_request_id", None) or now.isoformat(),
        now=now,
        storage_options=storage_options,
    )
    if distributed_run is not None:
        log(logger, "Distributed backfill started", **distributed_run)
        return distributed_run

    log(logger, "Processing data files...", location=location, mode=request["mode"])
    progress = {"items": 0, "files": 0}
    started = scan_end = time.perf_counter()

    def on_file(data_file: Any, records: int) -> None:
        nonlocal scan_end
        progress["items"] += records
        progress["files"] += 1
        scan_end = time.perf_counter()
        log(
            logger,
            f"Processed {progress['items']} items so far...",
            itemsRead=progress["items"],
            filesRead=progress["files"],
            dataFile=data_file.key,
        )
        remaining.check("the scan")

    result = aggregate(
        location,
        mode=request["mode"],
        start=request["backfillStartDate"],
        date=request["date"],
        now=now,
        storage_options=storage_options,
        on_file=on_file,
    )
    finished = time.perf_counter()
    # Files are decoded and summarised as they stream in; the scan ends with the last file,
    # what follows (merging per-file tables, the daily metrics) is the aggregation proper.
    scanned = (scan_end if progress["files"] else finished) - started
    summary = result.to_dict()
    log(logger, "Aggregation complete", **summary)
    remaining.check("aggregation")

    def on_stage(stage: str) -> None:
        remaining.check(stage)
        log(logger, _STAGE_LINES[stage])

    # publish() raises PublishError after doing everything it could; handle() logs its
    # report and re-raises, so the invocation is recorded as failed.
    report = publish(
        result,
        table=table,
        now=now,
        dynamodb_client=dynamodb_client,
        cloudwatch_client=cloudwatch_client,
        on_stage=on_stage,
    )
    cloudwatch = report.get("cloudwatch") or {}
    summary.update(
        {
            "exportLocation": location,
            "analyticsTable": table,
            "rowsWritten": report["rowsWritten"],
            "itemsWritten": report["itemsWritten"],
            "datumsPublished": report["datumsPublished"],
            "datumsSkippedTooOld": report["datumsSkippedTooOld"],
            "datumsSkippedFuture": report["datumsSkippedFuture"],
            "cloudwatchWindow": cloudwatch.get("window"),
            "failures": report["failures"],
            "timings": {
                "scan": round(scanned, 3),
                "aggregate": round(finished - started - scanned, 3),
                **report["timings"],
            },
        }
    )
    if cloudwatch.get("note"):
        summary["note"] = cloudwatch["note"]
    log(logger, "Aggregator Lambda completed successfully", **summary)
    return summary


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Aggregate the latest matching export, publish it, and return a JSON-able summary."""
    return handle(event, context)
