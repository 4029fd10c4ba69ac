"""The handlers' logging: one JSON object per line, and the watch on the invocation's time left.

:func:`json_logging` sends the package's logs to stdout as JSON for one invocation
(``timestamp``, ``level``, ``logger``, ``message``, ``requestId`` and the fields of
:func:`bubbly_metrics._log.log`) so CloudWatch Logs Insights can query them, and logs the error
line of a failed invocation; :class:`JsonFormatter` writes any line, bounded.
:class:`RemainingTime` warns once when the invocation runs low on time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from bubbly_metrics._log import log
from bubbly_metrics._text import CLIP, clip

__all__ = ["LONG", "LOW_TIME_MS", "MAX_LINE", "JsonFormatter", "RemainingTime", "json_logging"]

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
