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

Nothing an event holds is trusted (issue #25): :func:`parse_event`, :func:`completed_export`
and :func:`export_folder` check every field's shape and type, the S3 key's length and place, and
the dates' bounds (:func:`configured_bounds`: ``BACKFILL_FLOOR_DATE``, ``BACKFILL_MAX_DAYS``, the
event's ``maxDays``) before any AWS call, and refuse anything else in one line.  Values from an
event appear in logs, errors and results clipped to ~200 characters
(:func:`bubbly_metrics._text.clip`), and :class:`JsonFormatter` writes any line, bounded.

This module holds what the handlers share: structured logging (with the error line of a failed
invocation), environment and event parsing, the remaining-time watch, and publishing a result
with the guide's log lines (:func:`publish_logged`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from bubbly_metrics._text import CLIP, clip
from bubbly_metrics.dates import MODES, DateBounds, date_bounds, parse_date, resolve_range
from bubbly_metrics.exceptions import ConfigurationError, InvalidArgumentError, PublishError

__all__ = [
    "EVENT_FIELDS",
    "LOW_TIME_MS",
    "MAX_KEY_BYTES",
    "SUMMARY_NAME",
    "JsonFormatter",
    "RemainingTime",
    "bounded_dates",
    "check_key",
    "completed_export",
    "configured_bounds",
    "export_folder",
    "json_logging",
    "log",
    "parse_event",
    "positive_int",
    "publish_logged",
    "require_env",
]

INVALID_MODE = "Invalid mode. Must be 'incremental' or 'backfill'"

LOW_TIME_MS = 60_000
"""Warn once when the invocation has less than this many milliseconds left."""

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "fields"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, message, requestId, fields.

    Any line is written, whatever it holds: a lone surrogate (a ``U+D800`` in an event)
    becomes its JSON escape instead of failing the write, and a line longer than
    :data:`MAX_LINE` characters is written again with every value bounded (:func:`_bounded`),
    so one huge field cannot lose the line or flood CloudWatch (256 KB per event).
    """

    def __init__(self, request_id: str | None = None) -> None:
        super().__init__()
        self.request_id = request_id

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line of JSON."""
        entry: dict[str, Any] = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        if self.request_id:
            entry["requestId"] = self.request_id
        entry.update(getattr(record, "fields", None) or {})
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = _dumps(entry)
        if line is None or len(line) > MAX_LINE:
            line = _dumps(_bounded(entry)) or ""
        if not line or len(line) > MAX_LINE:
            line = _dumps({k: clip(entry.get(k), LONG) for k in ("timestamp", "level", "logger", "message")}) or ""
        return line


MAX_LINE = 32_768
"""Characters of one JSON log line, beyond which its values are bounded (CloudWatch keeps 256 KB)."""

LONG = 4_000
"""Characters kept of a bounded line's message and exception (values from outside keep 200)."""


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # arguments that do not fit the format: still log what was meant
        return f"{clip(record.msg, LONG)} {clip(record.args)}"


def _dumps(entry: Any) -> str | None:
    try:
        text = json.dumps(entry, default=str, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        return None
    # Lone surrogates are valid in a str but not in UTF-8: written as \udXXX escapes they stay
    # JSON (the same string when parsed) and the line is written.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _bounded(value: Any, depth: int = 0, key: str = "") -> Any:
    """``value`` with strings clipped, lists and objects shortened, nesting cut (for a log line)."""
    if isinstance(value, str):
        return clip(value, LONG if key in ("message", "exception") else CLIP)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= 4:
        return clip(value)
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {clip(str(k), 64): _bounded(v, depth + 1, str(k)) for k, v in items[:50]}
        if len(items) > 50:
            out["…"] = f"{len(items) - 50} more"
        return out
    if isinstance(value, list | tuple):
        shown = [_bounded(v, depth + 1) for v in value[:20]]
        return shown + [f"… {len(value) - 20} more"] if len(value) > 20 else shown
    return clip(value)


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
            log(errors, clip(str(exc), LONG), level=logging.ERROR, **fields)
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


EVENT_FIELDS = ("mode", "backfillStartDate", "date", "maxDays", "engine", "itemsPerBatch", "allowPartial")
"""The fields of an invocation event (the guide's, plus the date range override, the
distributed backfill's choices and the operator's explicit partial publish); any other field
is refused, so a misspelt ``backfillStartdate`` is an error, not a silent backfill of the
whole history."""

ENGINES = ("single", "distributed")


def positive_int(value: Any, name: str) -> int:
    """``value`` if it is a whole number >= 1 (not a boolean: ``true`` is not 1); else refuse by name."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive whole number, got {clip(repr(value))}")
    return value


def configured_bounds(env: Mapping[str, str], event: Any = None) -> DateBounds:
    """The date bounds of an invocation, from its environment and event.

    ``BACKFILL_FLOOR_DATE`` and ``BACKFILL_MAX_DAYS`` from ``env`` (defaults
    :data:`~bubbly_metrics.dates.BACKFILL_FLOOR`, :data:`~bubbly_metrics.dates.MAX_BACKFILL_DAYS`),
    then the event's ``maxDays`` (the explicit override of the range's maximum).
    """
    bounds = DateBounds()
    floor_text = (env.get("BACKFILL_FLOOR_DATE") or "").strip()
    floor = parse_date(floor_text, name="BACKFILL_FLOOR_DATE") if floor_text else bounds.floor
    max_text = (env.get("BACKFILL_MAX_DAYS") or "").strip()
    if max_text and not (max_text.isascii() and max_text.isdigit() and 1 <= int(max_text) <= 36_500):
        raise ConfigurationError(
            f"BACKFILL_MAX_DAYS must be a number of days from 1 to 36500, got {clip(repr(max_text))}"
        )
    max_days = int(max_text) if max_text else bounds.max_days
    if isinstance(event, Mapping) and event.get("maxDays") is not None:
        max_days = positive_int(event["maxDays"], "maxDays")
    return DateBounds(floor=floor, max_days=max_days)


@contextmanager
def bounded_dates(env: Mapping[str, str], event: Any = None) -> Iterator[DateBounds]:
    """Apply :func:`configured_bounds` to every date range resolved in the block."""
    bounds = configured_bounds(env, event)
    with date_bounds(floor=bounds.floor, max_days=bounds.max_days):
        yield bounds


def parse_event(event: Any, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Validate an invocation event; return ``mode``, ``backfillStartDate``, ``date`` and the rest.

    ``mode`` defaults to ``incremental`` (a scheduled EventBridge event carries only
    ``{"mode": "incremental"}``).  Every field's type is checked and the dates are resolved
    (:func:`~bubbly_metrics.dates.resolve_range`, under the current
    :func:`~bubbly_metrics.dates.date_bounds`) here, before any AWS call: a bad event is one
    line naming the field, and nothing is read or written.
    """
    if event is None:
        event = {}
    if not isinstance(event, Mapping):
        raise InvalidArgumentError(
            f'the event must be a JSON object like {{"mode": "incremental"}}, got a {type(event).__name__}: '
            f"{clip(repr(event))}"
        )
    unknown = [k for k in event if k not in EVENT_FIELDS]
    if unknown:
        raise InvalidArgumentError(
            f"unknown field(s) in the event: {clip(', '.join(clip(repr(k), 40) for k in unknown[:5]))}; "
            f"the fields are {', '.join(EVENT_FIELDS)}"
        )
    mode = event.get("mode")
    mode = "incremental" if mode is None else mode
    if not isinstance(mode, str) or mode not in MODES:
        raise InvalidArgumentError(f"{INVALID_MODE} (got {clip(repr(mode))})")
    start = event.get("backfillStartDate")
    start = start if mode == "backfill" and start not in (None, "") else None
    date = event.get("date")
    date = date if mode == "incremental" and date not in (None, "") else None
    engine = event.get("engine")
    if engine is not None and engine not in ENGINES:
        raise InvalidArgumentError(f"Invalid engine. Must be 'single' or 'distributed' (got {clip(repr(engine))})")
    for name in ("maxDays", "itemsPerBatch"):
        if event.get(name) is not None:
            positive_int(event[name], name)
    if event.get("allowPartial") is not None and not isinstance(event["allowPartial"], bool):
        raise InvalidArgumentError(f"allowPartial must be true or false, got {clip(repr(event['allowPartial']))}")
    if mode == "backfill":
        resolve_range(mode="backfill", start=start, now=now)
    else:
        resolve_range(mode="incremental", date=date, now=now)
    return {"mode": mode, "backfillStartDate": start, "date": date}


SUMMARY_NAME = "manifest-summary.json"

MAX_KEY_BYTES = 1024
"""S3's limit on an object key (UTF-8 bytes)."""

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_EXPORT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_key(key: Any, what: str = "key") -> str:
    """``key`` if it can be an S3 key (a non-empty string of at most 1024 UTF-8 bytes); else refuse."""
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError(f"{what} must be a non-empty string, got {clip(repr(key))}")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"{what} is not valid UTF-8: {clip(repr(key))}") from None
    if size > MAX_KEY_BYTES:
        raise InvalidArgumentError(f"{what} is {size} bytes, longer than S3's {MAX_KEY_BYTES}: {clip(repr(key))}")
    return key


def _shape(value: Any, field: str) -> str:
    if isinstance(value, Mapping):
        return clip(repr(value.get(field)))
    return f"a {type(value).__name__}" if value is not None else "missing"


def completed_export(event: Any) -> tuple[str, str] | None:
    """``(bucket, key)`` of an S3 → EventBridge ``Object Created`` event, else ``None``.

    The shape (https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html)::

        {"source": "aws.s3", "detail-type": "Object Created",
         "detail": {"bucket": {"name": "..."}, "object": {"key": "...", ...}, ...}, ...}

    Anything else (the guide's ``{"mode": ...}`` events) is ``None``.  An ``aws.s3`` event of
    another kind or shape (``detail.bucket`` not an object, a key that is not a string or is
    longer than S3 allows) is refused, in one line.  The key is used as it comes: unlike S3's
    own notifications (to SQS, SNS, Lambda), EventBridge events do not URL-encode it.
    """
    if not isinstance(event, Mapping) or event.get("source") != "aws.s3":
        return None
    detail = event.get("detail")
    kind = event.get("detail-type")
    bucket_info = detail.get("bucket") if isinstance(detail, Mapping) else None
    object_info = detail.get("object") if isinstance(detail, Mapping) else None
    bucket = bucket_info.get("name") if isinstance(bucket_info, Mapping) else None
    key = object_info.get("key") if isinstance(object_info, Mapping) else None
    if kind != "Object Created" or not isinstance(bucket, str) or not isinstance(key, str) or not key:
        raise InvalidArgumentError(
            "an aws.s3 event must be 'Object Created' with detail.bucket.name and detail.object.key strings, "
            f"got detail-type {clip(repr(kind))}, bucket {_shape(bucket_info, 'name')}, "
            f"key {_shape(object_info, 'key')}"
        )
    if not _BUCKET.fullmatch(bucket):
        raise InvalidArgumentError(f"detail.bucket.name is not an S3 bucket name: {clip(repr(bucket))}")
    return bucket, check_key(key, "detail.object.key")


def export_folder(event_bucket: str, key: str, *, bucket: str, prefix: str) -> str:
    """The ``…/AWSDynamoDB/<ExportId>`` folder of the one export whose summary ``key`` is.

    The key must be ``{prefix}[export's prefix/]AWSDynamoDB/<ExportId>/manifest-summary.json``
    in ``bucket``: anything else (another bucket or prefix, another file, no export id, ``..``
    or empty segments) is refused in one line -- never "the newest export under the prefix".
    """
    parts = key.split("/")
    if (
        event_bucket != bucket
        or not key.startswith(prefix)
        or len(parts) < 3
        or parts[-1] != SUMMARY_NAME
        or parts[-3] != "AWSDynamoDB"
        or not _EXPORT_ID.fullmatch(parts[-2])
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise InvalidArgumentError(
            f"the event is for s3://{clip(event_bucket, 63)}/{clip(repr(key))}, not a {SUMMARY_NAME} under "
            f"s3://{bucket}/{prefix} in an AWSDynamoDB/<ExportId>/ folder (check the EventBridge rule's pattern)"
        )
    return "/".join(parts[:-1])


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
    ).to_dict()
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


def engagement_logged(
    day: dt.date,
    *,
    summary: dict[str, Any],
    logger: logging.Logger,
    table: str,
    now: dt.datetime,
    dynamodb_client: Any = None,
    cloudwatch_client: Any = None,
    remaining: RemainingTime | None = None,
) -> dict[str, Any]:
    """:func:`~bubbly_metrics.engagement.publish_engagement` for ``day``, once its rows are committed.

    Logs one line (``Engagement metrics published``, or a warning naming the ledger's missing
    days) and returns the report for the handler's summary.  When it failed, the day's rows
    stay committed, but the invocation ends unsuccessful, as every output failure does (SPEC
    §6): a :class:`~bubbly_metrics.exceptions.PublishError` carrying ``summary`` with the report
    under ``engagement`` (:func:`json_logging` logs it, as the one line).  Re-running the day
    (``{"mode": "incremental", "date": ...}``) publishes them again, with the same values.
    """
    from bubbly_metrics.engagement import publish_engagement

    report = publish_engagement(
        table,
        day=day,
        now=now,
        dynamodb_client=dynamodb_client,
        cloudwatch_client=cloudwatch_client,
        time_left=remaining.seconds if remaining is not None else None,
    )
    if report["status"] == "failed":
        raise PublishError(
            f"Engagement metrics (WAU/MAU) for {day} not published: {report['error']} — the day's rows are "
            f'committed; re-run the day ({{"mode": "incremental", "date": "{day}"}}) to publish them',
            {**summary, "engagement": report},
        )
    level = logging.WARNING if report["status"] == "incomplete" else logging.INFO
    log(
        logger,
        f"Engagement metrics {report['status']}" + (f": {report['note']}" if report.get("note") else ""),
        level=level,
        engagement=report,
    )
    return report
