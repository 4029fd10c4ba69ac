"""AWS Lambda entrypoints: thin front doors over the library (SPEC §6).

- ``bubbly_metrics.handlers.export.lambda_handler`` — the Export Lambda: starts a DynamoDB
  export to S3 (:func:`bubbly_metrics.start_export.start_export`).
- ``bubbly_metrics.handlers.aggregator.lambda_handler`` — the Aggregator Lambda: aggregates
  the latest matching export (:func:`bubbly_metrics.aggregate`) and publishes it
  (:func:`bubbly_metrics.publish.publish`).

Both take the event ``{"mode": "incremental" | "backfill", "backfillStartDate": "YYYY-MM-DD"}``
(``mode`` defaults to ``incremental``; an optional ``"date": "YYYY-MM-DD"`` picks the
incremental day instead of yesterday).  The Aggregator also takes S3's EventBridge event for an
export's ``manifest-summary.json`` (:func:`completed_export`), the Export Lambda also
``{"check": "lateness"}``; each module's docstring says what each event does.  They log one
JSON object per line (``timestamp``, ``level``, ``logger``, ``message``, ``requestId`` and
fields of the event) so CloudWatch Logs Insights can query them, log and re-raise every error
so Lambda records the failure, and return a JSON-serialisable summary.

The distributed backfill's Map and Reduce Lambdas are in :mod:`bubbly_metrics.handlers.distributed`.

This module holds what the handlers share: structured logging (with the error line of a failed
invocation), environment and event parsing, the remaining-time watch, and publishing a result
with the guide's log lines (:func:`publish_logged`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from bubbly_metrics.dates import MODES
from bubbly_metrics.exceptions import ConfigurationError, InvalidArgumentError

__all__ = [
    "LOW_TIME_MS",
    "SUMMARY_NAME",
    "JsonFormatter",
    "RemainingTime",
    "completed_export",
    "json_logging",
    "log",
    "publish_logged",
    "parse_event",
    "require_env",
]

INVALID_MODE = "Invalid mode. Must be 'incremental' or 'backfill'"

LOW_TIME_MS = 60_000
"""Warn once when the invocation has less than this many milliseconds left."""

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "fields"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, message, requestId, fields."""

    def __init__(self, request_id: str | None = None) -> None:
        super().__init__()
        self.request_id = request_id

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line of JSON."""
        entry: dict[str, Any] = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.request_id:
            entry["requestId"] = self.request_id
        entry.update(getattr(record, "fields", None) or {})
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


@contextmanager
def json_logging(
    context: Any = None, *, stream: Any = None, errors: logging.Logger | None = None, **error_fields: Any
) -> Iterator[None]:
    """Send the package's logs (handlers' and library's) to stdout as JSON for one invocation.

    The ``bubbly_metrics`` logger is switched to INFO with its own handler and stops
    propagating (the Lambda runtime's root handler would print each line a second time, as
    plain text); everything is restored on exit, so importing code is never affected.  With
    ``errors``, an exception leaving the block is logged there first (its message, ``errorType``,
    the ``report`` a :class:`~bubbly_metrics.exceptions.PublishError` carries, ``error_fields``)
    and re-raised, so the invocation is recorded as failed.
    """
    package = logging.getLogger("bubbly_metrics")
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(JsonFormatter(getattr(context, "aws_request_id", None)))
    saved = package.level, package.propagate
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    package.propagate = False
    try:
        yield
    except Exception as exc:
        if errors is not None:
            fields: dict[str, Any] = {"errorType": type(exc).__name__, **error_fields}
            if getattr(exc, "report", None):
                fields["report"] = exc.report  # type: ignore[attr-defined]
            log(errors, str(exc), level=logging.ERROR, **fields)
        raise
    finally:
        package.removeHandler(handler)
        package.setLevel(saved[0])
        package.propagate = saved[1]


def log(logger: logging.Logger, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``message`` with ``fields`` as top-level keys of the JSON line."""
    logger.log(level, message, extra={"fields": fields})


def require_env(env: Mapping[str, str], name: str) -> str:
    """Return ``env[name]``; raise ``{name} environment variable is required`` if unset or empty."""
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigurationError(f"{name} environment variable is required")
    return value


def parse_event(event: Any) -> dict[str, Any]:
    """Validate an invocation event; return ``mode``, ``backfillStartDate`` and ``date``.

    ``mode`` defaults to ``incremental`` (a scheduled EventBridge event carries only
    ``{"mode": "incremental"}``).  Dates are checked where they are used, by the library.
    """
    if event is None:
        event = {}
    if not isinstance(event, Mapping):
        raise InvalidArgumentError(f"the event must be a JSON object, got {type(event).__name__}: {event!r}")
    mode = event.get("mode")
    mode = "incremental" if mode is None else mode
    if mode not in MODES:
        raise InvalidArgumentError(f"{INVALID_MODE} (got {mode!r})")
    start = event.get("backfillStartDate")
    date = event.get("date")
    return {
        "mode": mode,
        "backfillStartDate": start if mode == "backfill" and start not in (None, "") else None,
        "date": date if mode == "incremental" and date not in (None, "") else None,
    }


SUMMARY_NAME = "manifest-summary.json"


def completed_export(event: Any) -> tuple[str, str] | None:
    """``(bucket, key)`` of an S3 → EventBridge ``Object Created`` event, else ``None``.

    The shape (https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html)::

        {"source": "aws.s3", "detail-type": "Object Created",
         "detail": {"bucket": {"name": "..."}, "object": {"key": "...", ...}, ...}, ...}

    Anything else (the guide's ``{"mode": ...}`` events) is ``None``.  An ``aws.s3`` event of
    another kind, or without a bucket and key, is refused by name.  The key is used as it comes:
    unlike S3's own notifications (to SQS, SNS, Lambda), EventBridge events do not URL-encode it.
    """
    if not isinstance(event, Mapping) or event.get("source") != "aws.s3":
        return None
    detail = event.get("detail")
    kind = event.get("detail-type")
    bucket = detail.get("bucket", {}).get("name") if isinstance(detail, Mapping) else None
    key = detail.get("object", {}).get("key") if isinstance(detail, Mapping) else None
    if kind != "Object Created" or not isinstance(bucket, str) or not isinstance(key, str) or not key:
        raise InvalidArgumentError(
            f"an aws.s3 event must be 'Object Created' with detail.bucket.name and detail.object.key, "
            f"got detail-type {kind!r}, bucket {bucket!r}, key {key!r}"
        )
    return bucket, key


class RemainingTime:
    """Watches ``context.get_remaining_time_in_millis()`` and warns once when it runs low."""

    def __init__(self, context: Any, logger: logging.Logger, *, threshold_ms: int = LOW_TIME_MS) -> None:
        self.getter = getattr(context, "get_remaining_time_in_millis", None)
        self.logger = logger
        self.threshold_ms = threshold_ms
        self.warned = False

    def millis(self) -> int | None:
        """Milliseconds left in the invocation (``None`` outside Lambda)."""
        return int(self.getter()) if callable(self.getter) else None

    def seconds(self) -> float | None:
        """Seconds left in the invocation (``None`` outside Lambda)."""
        left = self.millis()
        return left / 1000 if left is not None else None

    def check(self, stage: str) -> None:
        """Log a warning (once) if less than ``threshold_ms`` remain."""
        left = self.millis()
        if self.warned or left is None or left >= self.threshold_ms:
            return
        self.warned = True
        log(
            self.logger,
            f"Lambda remaining time is low: {left / 1000:.1f}s left during {stage}",
            level=logging.WARNING,
            remainingMillis=left,
            stage=stage,
            hint="raise the function's timeout or process the backfill in smaller date ranges",
        )


_STAGE_LINES = {
    "cloudwatch": "Publishing metrics to CloudWatch...",
    "table": "Writing records to Analytics Table...",
}


def publish_logged(
    result: Any,
    *,
    logger: logging.Logger,
    table: str,
    now: dt.datetime,
    dynamodb_client: Any = None,
    cloudwatch_client: Any = None,
    remaining: RemainingTime | None = None,
    allow_partial: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """:func:`~bubbly_metrics.publish.publish` ``result`` with the guide's stage lines.

    The table is written day by day within ``remaining`` time (a day that would not finish is
    not started); ``allow_partial`` publishes although data files could not be read; ``resume``
    leaves the days the ledger holds from this export as they are.

    Logs ``Publishing metrics to CloudWatch...`` and ``Writing records to Analytics Table...``
    as each stage starts (checking ``remaining`` time first) and returns the summary fields a
    handler reports: ``analyticsTable``, ``rowsWritten``, ``itemsWritten``, ``datumsPublished``,
    ``datumsSkippedTooOld``, ``datumsSkippedFuture``, ``cloudwatchWindow``, ``failures``,
    ``timings`` (publish's) and ``note`` when CloudWatch left one.  A
    :class:`~bubbly_metrics.exceptions.PublishError` (raised after doing everything it could)
    carries its report; :func:`json_logging` logs it.
    """
    from bubbly_metrics.publish import publish

    def on_stage(stage: str) -> None:
        if remaining is not None:
            remaining.check(stage)
        log(logger, _STAGE_LINES[stage])

    report = publish(
        result,
        table=table,
        now=now,
        dynamodb_client=dynamodb_client,
        cloudwatch_client=cloudwatch_client,
        on_stage=on_stage,
        allow_partial=allow_partial,
        resume=resume,
        time_left=remaining.seconds if remaining is not None else None,
    )
    cloudwatch = report.get("cloudwatch") or {}
    fields: dict[str, Any] = {
        "analyticsTable": table,
        **{
            key: report[key]
            for key in (
                "rowsWritten",
                "itemsWritten",
                "datumsPublished",
                "datumsSkippedTooOld",
                "datumsSkippedFuture",
                "failures",
            )
        },
        "cloudwatchWindow": cloudwatch.get("window"),
        "timings": report["timings"],
    }
    if cloudwatch.get("note"):
        fields["note"] = cloudwatch["note"]
    return fields
