"""What the handlers take from outside: their environment and events, checked before any AWS call.

Nothing an event holds is trusted: :func:`parse_event`, :func:`completed_export` and
:func:`export_folder` check every field's shape and type, the S3 key's length and place, and
the dates' bounds (:func:`configured_bounds`: ``BACKFILL_FLOOR_DATE``, ``BACKFILL_MAX_DAYS``, the
event's ``maxDays``) before any AWS call, and refuse anything else in one line.  Values from an
event appear in errors clipped to ~200 characters (:func:`bubbly_metrics._text.clip`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from bubbly_metrics._text import clip
from bubbly_metrics.daily import ENGINES, SUMMARY_NAME
from bubbly_metrics.dates import MODES, DateBounds, date_bounds, parse_date, resolve_range
from bubbly_metrics.exceptions import ConfigurationError, InvalidArgumentError

__all__ = [
    "ENGINES",
    "EVENT_FIELDS",
    "INVALID_MODE",
    "MAX_KEY_BYTES",
    "SUMMARY_NAME",
    "bounded_dates",
    "check_key",
    "completed_export",
    "configured_bounds",
    "export_folder",
    "parse_event",
    "positive_int",
    "require_env",
]

INVALID_MODE = "Invalid mode. Must be 'incremental' or 'backfill'"


def require_env(env: Mapping[str, str], name: str) -> str:
    """Return ``env[name]``; raise ``{name} environment variable is required`` if unset or empty."""
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigurationError(f"{name} environment variable is required")
    return value


EVENT_FIELDS = ("mode", "backfillStartDate", "date", "maxDays", "engine", "itemsPerBatch", "allowPartial")
"""The fields of an invocation event (the operator's (docs/operations.md), plus the date range override, the
distributed backfill's choices and the operator's explicit partial publish); any other field
is refused, so a misspelt ``backfillStartdate`` is an error, not a silent backfill of the
whole history."""


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

    Anything else (docs/operations.md's ``{"mode": ...}`` events) is ``None``.  An ``aws.s3`` event of
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
