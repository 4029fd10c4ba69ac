"""The daily pipeline's decisions: what the Aggregator does with each request.

The Aggregator Lambda (:mod:`bubbly_metrics.handlers.aggregator`) parses its event and
environment into a :class:`DailyRequest` and a :class:`DailyConfig` and calls :func:`run_daily`,
which decides:

- A completed export (its ``manifest-summary.json``'s S3 event): that export, exactly
  (:func:`on_completion`).  Incremental: every whole UTC day of its window.  Full: the backfill
  it was started for (``backfill-request.json`` beside it, written by the Export Lambda), up to
  its last day; a full export without one is left alone (a backfill rewrites history).  A day
  already aggregated from that same export (the ledger says so: the event was delivered twice)
  is not aggregated again.
- The scheduled incremental run without a date (a safety net, :func:`safety_net`): yesterday,
  from the latest completed incremental export covering it -- unless the ledger says it was
  already aggregated from that export (nothing to do), or no export covers it yet but the day's
  export is still running (it will be aggregated on completion).
- A person's request (``date`` or ``backfill``): always aggregated, as asked.

Each aggregation (:func:`aggregate_and_publish`) first asks
:func:`~bubbly_metrics.distributed.route_backfill` whether a backfill goes to the distributed
engine; otherwise it aggregates here, publishes
(:func:`~bubbly_metrics.daily_outputs.publish_logged`) and, for an incremental day, publishes
its engagement metrics (:func:`~bubbly_metrics.daily_outputs.engagement_logged`).  Results
carry ``status``: ``aggregated``, ``skipped`` (already done), ``waiting`` (export running) or
``ignored`` (a full export nobody asked to backfill from).  Every step logs its line through
the caller's logger (:attr:`DailyConfig.logger`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from bubbly_metrics._log import log
from bubbly_metrics.daily_outputs import FileProgress, engagement_logged, publish_logged
from bubbly_metrics.dates import parse_date, resolve_range, yesterday
from bubbly_metrics.exceptions import ExportWindowError
from bubbly_metrics.exports import ExportInfo, find_export, list_exports
from bubbly_metrics.ledger import read_ledger
from bubbly_metrics.start_export import BACKFILL_REQUEST, daily_export_folder, read_backfill_request

__all__ = [
    "ENGINES",
    "RUNS_PREFIX",
    "STATE_MACHINE_ENV",
    "SUMMARY_NAME",
    "DailyConfig",
    "DailyRequest",
    "DailyRun",
    "Routing",
    "TimeLeft",
    "aggregate_and_publish",
    "on_completion",
    "run_daily",
    "safety_net",
]

logger = logging.getLogger(__name__)

ENGINES = ("single", "distributed")
"""Values of a backfill request's ``engine``: one Aggregator invocation, or the state machine."""

SUMMARY_NAME = "manifest-summary.json"
"""The file whose creation says an export completed."""

STATE_MACHINE_ENV = "DISTRIBUTED_STATE_MACHINE_ARN"
"""The Aggregator's environment variable naming the distributed backfill's state machine (set
by the stack): :attr:`DailyConfig.state_machine_arn`."""

RUNS_PREFIX = "distributed-runs/"
"""Where distributed runs live in the export bucket: outside ``S3_PREFIX``'s exports, under its
1-day expiry (``deploy/distributed.py`` holds the same value: deploy/ does not import the package)."""


class TimeLeft(Protocol):
    """The time an invocation has left (:class:`bubbly_metrics.handlers._logging.RemainingTime`)."""

    def millis(self) -> int | None:
        """Milliseconds left (``None``: no limit known)."""

    def seconds(self) -> float | None:
        """Seconds left (``None``: no limit known)."""

    def check(self, stage: str) -> None:
        """Warn (once) when little time is left at ``stage``."""


@dataclass(frozen=True)
class Routing:
    """What a request says about where and how it runs: the fields of its event that steer it.

    Taken as they come (:meth:`of`); :func:`~bubbly_metrics.distributed.route_backfill` checks
    ``engine`` and ``items_per_batch``.
    """

    mode: Any = "incremental"
    start: Any = None
    """``backfillStartDate``, as given."""
    engine: Any = None
    items_per_batch: Any = None
    allow_partial: bool = False
    """The operator's explicit partial publish (``allowPartial: true``)."""

    @classmethod
    def of(cls, event: Any) -> Routing:
        """The routing fields of ``event`` (none when it is not a JSON object)."""
        if not isinstance(event, Mapping):
            return cls()
        return cls(
            mode=event.get("mode") or "incremental",
            start=event.get("backfillStartDate") or None,
            engine=event.get("engine"),
            items_per_batch=event.get("itemsPerBatch"),
            allow_partial=event.get("allowPartial") is True,
        )


@dataclass(frozen=True)
class DailyRequest:
    """What one invocation asks: a completed export's folder, or a mode and its dates."""

    routing: Routing = Routing()
    folder: str | None = None
    """``…/AWSDynamoDB/<ExportId>`` of the export that just completed (an S3 event)."""
    mode: str = "incremental"
    start: str | None = None
    """``backfillStartDate`` of a backfill."""
    date: str | None = None
    """The incremental day asked for (``None``: the scheduled run for yesterday)."""


@dataclass(frozen=True)
class DailyConfig:
    """Everything an invocation works with, from its environment and context: built once."""

    bucket: str
    """``EXPORT_BUCKET``."""
    table: str
    """``ANALYTICS_TABLE``."""
    prefix: str
    """``S3_PREFIX``, normalised."""
    now: dt.datetime
    token: str
    """Names the distributed execution a request would start (the request id), so a retried
    event starts none."""
    state_machine_arn: str = ""
    """The distributed backfill's state machine (empty: not deployed)."""
    memory_mb: int | str | None = None
    """This function's memory in MB (empty: one vCPU's), which sizes what it can aggregate in time.

    As the environment gives it: read only when a backfill is routed, so a bad value fails
    that alone."""
    map_memory_mb: int | str | None = None
    """The map function's memory in MB (empty: one vCPU's), which sizes the distributed run's
    batches; read, like ``memory_mb``, only when a backfill is routed."""
    storage_options: dict[str, Any] | None = None
    dynamodb_client: Any = None
    cloudwatch_client: Any = None
    watch: Callable[[], TimeLeft | None] = lambda: None
    """A new watch on the time left, for each aggregation."""
    logger: logging.Logger = field(default=logger)
    """Where the pipeline's lines go (the handler's logger)."""

    @property
    def location(self) -> str:
        """Where the exports are: ``s3://{bucket}/{prefix}``."""
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class DailyRun:
    """One aggregation decided on: what it reads, which days, and how it may be routed."""

    source: str | ExportInfo
    mode: str
    routing: Routing
    token: str
    start: str | dt.date | None = None
    end: dt.date | None = None
    date: str | dt.date | None = None
    resume: bool = False
    """Continue what an earlier run of the same export left (automatic runs); a person's
    request rewrites every day."""


def run_daily(request: DailyRequest, config: DailyConfig) -> dict[str, Any]:
    """Do what ``request`` asks (see the module's docstring); return the invocation's summary."""
    if request.folder is not None:
        return on_completion(request.folder, request.routing, config)
    if request.mode == "incremental" and request.date is None:
        return safety_net(request.routing, config)
    run = DailyRun(
        config.location,
        mode=request.mode,
        routing=request.routing,
        token=config.token,
        start=request.start,
        date=request.date,
    )
    return aggregate_and_publish(run, config)


def _ledgered(config: DailyConfig, export: ExportInfo, first: dt.date, last: dt.date) -> bool:
    """True when every day of ``first``..``last`` was aggregated from ``export``."""
    ledger = read_ledger(config.table, start=first, end=last, client=config.dynamodb_client)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    # A partial entry (allowPartial) is in the table but not aggregated: run it again.
    return all(
        (e := ledger.get(d)) is not None
        and not e.partial
        and (e.export_arn, e.export_id) == (export.export_arn, export.export_id)
        for d in days
    )


def _already(config: DailyConfig, export: ExportInfo, first: dt.date, last: dt.date) -> dict[str, Any]:
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
    log(config.logger, message, **summary)
    return {**summary, "message": message}


def on_completion(folder: str, routing: Routing, config: DailyConfig) -> dict[str, Any]:
    """Aggregate exactly the export in ``folder`` (``…/AWSDynamoDB/<ExportId>``), just completed."""
    log(config.logger, "Export completed", s3Uri=f"s3://{config.bucket}/{folder}/{SUMMARY_NAME}")
    export = find_export(f"s3://{config.bucket}/{folder}", storage_options=config.storage_options)
    if export.export_type == "INCREMENTAL":
        # Every whole UTC day of the window (the Export Lambda's windows are one day).
        days = [d for d in _window_days(export) if export.covers_day(d)]
        if not days:
            raise ExportWindowError(
                f"incremental export {export.export_id} covers {export.window}: no whole UTC day to aggregate"
            )
        if _ledgered(config, export, days[0], days[-1]):
            return _already(config, export, days[0], days[-1])
        run = DailyRun(export, mode="incremental", routing=routing, token=config.token, resume=True)
        summaries = [aggregate_and_publish(replace(run, date=day), config) for day in days]
        return summaries[0] if len(summaries) == 1 else {"status": "aggregated", "runs": summaries}
    return _on_full_completion(folder, export, config)


def _on_full_completion(folder: str, export: ExportInfo, config: DailyConfig) -> dict[str, Any]:
    """Aggregate the backfill a full export was started for.

    Its request is written beside it by the Export Lambda; a full export started any other way
    is left alone: a backfill rewrites history.
    """
    export_prefix = folder[: folder.rfind("/AWSDynamoDB/")] if "/AWSDynamoDB/" in folder else ""
    request = read_backfill_request(config.bucket, export_prefix)
    start = request.get("backfillStartDate") if request else None
    if not start:
        message = (
            f"Full export {export.export_id} completed without a backfill request ({BACKFILL_REQUEST}): "
            'not aggregated; to backfill from it, invoke with {"mode": "backfill", "backfillStartDate": ...}'
        )
        log(config.logger, message, exportId=export.export_id, status="ignored")
        return {"status": "ignored", "exportId": export.export_id, "message": message}
    first = parse_date(start, name="backfillStartDate")
    last = export.last_day
    # The request is a file in the bucket: its start meets the same bounds as an event's.
    resolve_range(mode="backfill", start=first, end=last, now=config.now)
    if last is not None and first <= last and _ledgered(config, export, first, last):
        return _already(config, export, first, last)
    # A large one may go distributed, as a backfill request would; named after the export, so
    # the summary's event delivered twice starts one execution.
    routing = Routing(mode="backfill", start=first.isoformat())
    run = DailyRun(export, mode="backfill", routing=routing, token=export.export_id, start=first, end=last, resume=True)
    return aggregate_and_publish(run, config)


def _window_days(export: ExportInfo) -> list[dt.date]:
    if export.export_from is None or export.export_to is None:
        return []
    first, last = export.export_from.date(), export.export_to.date()
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def safety_net(routing: Routing, config: DailyConfig) -> dict[str, Any]:
    """The scheduled run for yesterday: aggregate it unless it is done or its export is running."""
    day = yesterday(config.now)
    exports = list_exports(config.location, storage_options=config.storage_options)
    covering = [e for e in exports if e.status == "COMPLETED" and e.export_type == "INCREMENTAL" and e.covers_day(day)]
    if covering:
        export = covering[-1]  # the latest (list_exports is oldest first)
        if _ledgered(config, export, day, day):
            return _already(config, export, day, day)
        run = DailyRun(export, mode="incremental", routing=routing, token=config.token, date=day, resume=True)
        return aggregate_and_publish(run, config)
    folder = f"s3://{config.bucket}/{daily_export_folder(day, prefix=config.prefix)}"
    running = [e for e in exports if e.status == "IN_PROGRESS" and e.location.startswith(folder)]
    if running:
        message = (
            f"Export for {day} is still in progress ({running[-1].export_id}): it will be aggregated when it completes"
        )
        log(config.logger, message, status="waiting", date=day.isoformat(), exportId=running[-1].export_id)
        return {
            "status": "waiting",
            "mode": "incremental",
            "date": day.isoformat(),
            "exportId": running[-1].export_id,
            "message": message,
        }
    # Nothing for that day, done or running: a real failure, reported as the library words it.
    run = DailyRun(config.location, mode="incremental", routing=routing, token=config.token, date=day)
    return aggregate_and_publish(run, config)


def aggregate_and_publish(run: DailyRun, config: DailyConfig) -> dict[str, Any]:
    """Aggregate ``run`` and publish it, or start the distributed backfill its routing asks for.

    ``run.routing`` is what :func:`~bubbly_metrics.distributed.route_backfill` decides on (the
    request's ``mode``, ``engine``, ``itemsPerBatch``); ``run.token`` names the execution it
    would start, so a repeated request starts none.
    """
    # Distributed backfill (docs/scale.md): whether to start the state machine instead, and
    # starting it, live in bubbly_metrics.distributed; the pipeline only asks.
    from bubbly_metrics.distributed import route_backfill

    location = run.source.location if isinstance(run.source, ExportInfo) else run.source
    remaining = config.watch()
    distributed_run = route_backfill(
        run.routing,
        config=config,
        location=location,
        remaining_ms=remaining.millis() if remaining is not None else None,
        token=run.token,
    )
    if distributed_run is not None:
        summary = distributed_run.to_dict()
        log(config.logger, "Distributed backfill started", **summary)
        return summary
    result, summary, timings = _aggregate_logged(run, location, config, remaining)
    published = publish_logged(
        result,
        logger=config.logger,
        table=config.table,
        now=config.now,
        dynamodb_client=config.dynamodb_client,
        cloudwatch_client=config.cloudwatch_client,
        remaining=remaining,
        allow_partial=run.routing.allow_partial,
        resume=run.resume,
    )
    summary.update({"status": "aggregated", "exportLocation": location, **published})
    summary["timings"] = {**timings, **published["timings"]}
    if run.mode == "incremental":  # the day is committed: its WAU/MAU from the table (docs/operations.md)
        summary["engagement"] = engagement_logged(
            result.date_range.end,
            summary=summary,
            logger=config.logger,
            table=config.table,
            now=config.now,
            dynamodb_client=config.dynamodb_client,
            cloudwatch_client=config.cloudwatch_client,
            remaining=remaining,
        )
    log(config.logger, "Aggregator Lambda completed successfully", **summary)
    return summary


def _aggregate_logged(
    run: DailyRun, location: str, config: DailyConfig, remaining: TimeLeft | None
) -> tuple[Any, dict[str, Any], dict[str, float]]:
    """Aggregate ``run`` with the progress lines; return the result, its summary and timings."""
    from bubbly_metrics.pipeline import aggregate

    log(config.logger, "Processing data files...", location=location, mode=run.mode)
    progress = FileProgress(config.logger, remaining)
    started = time.perf_counter()
    result = aggregate(
        run.source,
        mode=run.mode,
        start=run.start,
        end=run.end,
        date=run.date,
        now=config.now,
        storage_options=config.storage_options,
        on_file=progress,
    )
    finished = time.perf_counter()
    # Files are decoded and summarised as they stream in; the scan ends with the last file,
    # what follows (merging per-file tables, the daily metrics) is the aggregation proper.
    scanned = (progress.last if progress.last is not None else finished) - started
    summary = result.to_dict()
    log(config.logger, "Aggregation complete", **summary)
    if remaining is not None:
        remaining.check("aggregation")
    return result, summary, {"scan": round(scanned, 3), "aggregate": round(finished - started - scanned, 3)}
