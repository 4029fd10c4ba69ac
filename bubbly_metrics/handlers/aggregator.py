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
  "backfillStartDate": "YYYY-MM-DD"}`` (the guide's): always aggregated, as asked.  Exports are
  looked for under ``s3://{EXPORT_BUCKET}/{S3_PREFIX}``: the latest completed FULL export for a
  backfill, the latest completed INCREMENTAL export covering the day otherwise.

Every event is checked before anything is read (:mod:`bubbly_metrics.handlers`): an S3 event
must name exactly one export's ``AWSDynamoDB/<ExportId>/manifest-summary.json`` under
``s3://{EXPORT_BUCKET}/{S3_PREFIX}``; the guide's events have known fields of the right types,
and dates within the bounds (``BACKFILL_FLOOR_DATE``, default 2025-01-17; ``BACKFILL_MAX_DAYS``,
default 800, or the event's ``maxDays``; no day after today).  A backfill request read beside a
full export meets the same bounds.

Results carry ``status``: ``aggregated``, ``skipped`` (already done), ``waiting`` (export
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
import functools
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from bubbly_metrics.dates import parse_date, resolve_range, yesterday
from bubbly_metrics.exceptions import ExportWindowError
from bubbly_metrics.exports import ExportInfo, find_export, list_exports
from bubbly_metrics.handlers import (
    SUMMARY_NAME,
    RemainingTime,
    bounded_dates,
    completed_export,
    engagement_logged,
    export_folder,
    json_logging,
    log,
    parse_event,
    publish_logged,
    require_env,
)
from bubbly_metrics.ledger import read_ledger
from bubbly_metrics.start_export import (
    BACKFILL_REQUEST,
    DEFAULT_S3_PREFIX,
    daily_export_folder,
    normalize_prefix,
    read_backfill_request,
)

logger = logging.getLogger(__name__)


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
        return _run(event, context, env, now, storage_options, dynamodb_client, cloudwatch_client)


def _run(
    event: Any,
    context: Any,
    env: Mapping[str, str],
    now: dt.datetime | None,
    storage_options: dict[str, Any] | None,
    dynamodb_client: Any,
    cloudwatch_client: Any,
) -> dict[str, Any]:
    bucket = require_env(env, "EXPORT_BUCKET")
    table = require_env(env, "ANALYTICS_TABLE")
    prefix = normalize_prefix(env.get("S3_PREFIX", DEFAULT_S3_PREFIX))
    location = f"s3://{bucket}/{prefix}"
    now = now or dt.datetime.now(dt.UTC)
    run = functools.partial(
        _aggregate_and_publish,
        routing=event if isinstance(event, Mapping) else {},
        token=getattr(context, "aws_request_id", None) or now.isoformat(),
        context=context,
        env=env,
        bucket=bucket,
        table=table,
        now=now,
        storage_options=storage_options,
        dynamodb_client=dynamodb_client,
        cloudwatch_client=cloudwatch_client,
    )
    completed = completed_export(event)
    if completed is not None:
        folder = export_folder(*completed, bucket=bucket, prefix=prefix)
        return _on_completion(
            folder, bucket=bucket, now=now, run=run, table=table, ddb=dynamodb_client, options=storage_options
        )
    request = parse_event(event, now=now)
    if request["mode"] == "incremental" and request["date"] is None:
        return _safety_net(
            location,
            bucket=bucket,
            prefix=prefix,
            run=run,
            table=table,
            now=now,
            ddb=dynamodb_client,
            options=storage_options,
        )
    return run(location, mode=request["mode"], start=request["backfillStartDate"], date=request["date"])


def _ledgered(table: str, export: ExportInfo, first: dt.date, last: dt.date, ddb: Any) -> bool:
    """True when every day of ``first``..``last`` was aggregated from ``export``."""
    ledger = read_ledger(table, start=first, end=last, client=ddb)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    # A partial entry (allowPartial) is in the table but not aggregated: run it again.
    return all(
        (e := ledger.get(d)) is not None
        and not e.partial
        and (e.export_arn, e.export_id) == (export.export_arn, export.export_id)
        for d in days
    )


def _already(export: ExportInfo, first: dt.date, last: dt.date) -> dict[str, Any]:
    days = first.isoformat() if first == last else f"{first} → {last}"
    message = f"Already aggregated: {days} from export {export.export_id}; nothing to do"
    summary: dict[str, Any] = {
        "status": "skipped",
        "mode": "backfill" if export.export_type == "FULL" else "incremental",
        "exportId": export.export_id,
        "exportArn": export.export_arn,
        "startDate": first.isoformat(),
        "endDate": last.isoformat(),
    }
    log(logger, message, **summary)
    return {**summary, "message": message}


def _on_completion(
    folder: str, *, bucket: str, now: dt.datetime, run: Any, table: str, ddb: Any, options: Any
) -> dict[str, Any]:
    """Aggregate exactly the export in ``folder`` (``…/AWSDynamoDB/<ExportId>``), just completed."""
    log(logger, "Export completed", s3Uri=f"s3://{bucket}/{folder}/{SUMMARY_NAME}")
    export = find_export(f"s3://{bucket}/{folder}", storage_options=options)
    if export.export_type == "INCREMENTAL":
        # Every whole UTC day of the window (the Export Lambda's windows are one day).
        days = [d for d in _window_days(export) if export.covers_day(d)]
        if not days:
            raise ExportWindowError(
                f"incremental export {export.export_id} covers {export.window}: no whole UTC day to aggregate"
            )
        if _ledgered(table, export, days[0], days[-1], ddb):
            return _already(export, days[0], days[-1])
        summaries = [run(export, mode="incremental", date=day, resume=True) for day in days]
        return summaries[0] if len(summaries) == 1 else {"status": "aggregated", "runs": summaries}
    # A full export: the backfill it was started for (its request, written beside it by the
    # Export Lambda).  One started any other way is left alone: a backfill rewrites history.
    export_prefix = folder[: folder.rfind("/AWSDynamoDB/")] if "/AWSDynamoDB/" in folder else ""
    request = read_backfill_request(bucket, export_prefix)
    start = request.get("backfillStartDate") if request else None
    if not start:
        message = (
            f"Full export {export.export_id} completed without a backfill request ({BACKFILL_REQUEST}): "
            'not aggregated; to backfill from it, invoke with {"mode": "backfill", "backfillStartDate": ...}'
        )
        log(logger, message, exportId=export.export_id, status="ignored")
        return {"status": "ignored", "exportId": export.export_id, "message": message}
    first = parse_date(start, name="backfillStartDate")
    last = export.last_day
    # The request is a file in the bucket: its start meets the same bounds as an event's.
    resolve_range(mode="backfill", start=first, end=last, now=now)
    if last is not None and first <= last and _ledgered(table, export, first, last, ddb):
        return _already(export, first, last)
    # A large one may go distributed, as a backfill request would; named after the export, so
    # the summary's event delivered twice starts one execution.
    routing = {"mode": "backfill", "backfillStartDate": first.isoformat()}
    return run(export, mode="backfill", start=first, end=last, routing=routing, token=export.export_id, resume=True)


def _window_days(export: ExportInfo) -> list[dt.date]:
    if export.export_from is None or export.export_to is None:
        return []
    first, last = export.export_from.date(), export.export_to.date()
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def _safety_net(
    location: str, *, bucket: str, prefix: str, run: Any, table: str, now: dt.datetime, ddb: Any, options: Any
) -> dict[str, Any]:
    """The scheduled run for yesterday: aggregate it unless it is done or its export is running."""
    day = yesterday(now)
    exports = list_exports(location, storage_options=options)
    covering = [e for e in exports if e.status == "COMPLETED" and e.export_type == "INCREMENTAL" and e.covers_day(day)]
    if covering:
        export = covering[-1]  # the latest (list_exports is oldest first)
        if _ledgered(table, export, day, day, ddb):
            return _already(export, day, day)
        return run(export, mode="incremental", date=day, resume=True)
    folder = f"s3://{bucket}/{daily_export_folder(day, prefix=prefix)}"
    running = [e for e in exports if e.status == "IN_PROGRESS" and e.location.startswith(folder)]
    if running:
        message = (
            f"Export for {day} is still in progress ({running[-1].export_id}): it will be aggregated when it completes"
        )
        log(logger, message, status="waiting", date=day.isoformat(), exportId=running[-1].export_id)
        return {
            "status": "waiting",
            "mode": "incremental",
            "date": day.isoformat(),
            "exportId": running[-1].export_id,
            "message": message,
        }
    # Nothing for that day, done or running: a real failure, reported as the library words it.
    return run(location, mode="incremental", date=day)


def _aggregate_and_publish(
    source: str | ExportInfo,
    *,
    mode: str,
    start: str | dt.date | None = None,
    end: dt.date | None = None,
    date: str | dt.date | None = None,
    routing: Mapping[str, Any],
    token: str,
    context: Any,
    resume: bool = False,
    env: Mapping[str, str],
    bucket: str,
    table: str,
    now: dt.datetime,
    storage_options: dict[str, Any] | None,
    dynamodb_client: Any,
    cloudwatch_client: Any,
) -> dict[str, Any]:
    """Aggregate ``source`` and publish it, or start the distributed backfill ``routing`` asks for.

    ``routing`` is what :func:`~bubbly_metrics.distributed.route_backfill` decides on (the
    request's ``mode``, ``engine``, ``itemsPerBatch``); ``token`` names the execution it would
    start, so a repeated request starts none.
    """
    from bubbly_metrics.pipeline import aggregate

    location = source.location if isinstance(source, ExportInfo) else source
    remaining = RemainingTime(context, logger)

    # Distributed backfill (docs/scale.md): whether to start the state machine instead, and
    # starting it, live in bubbly_metrics.distributed; this handler only asks.
    from bubbly_metrics.distributed import route_backfill

    distributed_run = route_backfill(
        routing,
        env=env,
        location=location,
        bucket=bucket,
        remaining_ms=remaining.millis(),
        token=token,
        now=now,
        storage_options=storage_options,
    )
    if distributed_run is not None:
        log(logger, "Distributed backfill started", **distributed_run)
        return distributed_run

    log(logger, "Processing data files...", location=location, mode=mode)
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
        source,
        mode=mode,
        start=start,
        end=end,
        date=date,
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

    published = publish_logged(
        result,
        logger=logger,
        table=table,
        now=now,
        dynamodb_client=dynamodb_client,
        cloudwatch_client=cloudwatch_client,
        remaining=remaining,
        allow_partial=routing.get("allowPartial") is True,
        # Automatic runs (a completion event, the safety net) continue what an earlier run of
        # the same export left when its time ran out; a person's request rewrites every day.
        resume=resume,
    )
    summary.update({"status": "aggregated", "exportLocation": location, **published})
    summary["timings"] = {
        "scan": round(scanned, 3),
        "aggregate": round(finished - started - scanned, 3),
        **published["timings"],
    }
    if mode == "incremental":  # the day is committed: its WAU/MAU from the table (docs/operations.md)
        summary["engagement"] = engagement_logged(
            result.date_range.end,
            summary=summary,
            logger=logger,
            table=table,
            now=now,
            dynamodb_client=dynamodb_client,
            cloudwatch_client=cloudwatch_client,
            remaining=remaining,
        )
    log(logger, "Aggregator Lambda completed successfully", **summary)
    return summary


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Aggregate the latest matching export, publish it, and return a JSON-able summary."""
    return handle(event, context)
