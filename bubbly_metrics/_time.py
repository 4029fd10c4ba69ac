"""Time helpers shared by the package: one definition of "now", midnight and ISO instants.

Every instant the package handles is UTC; a naive ``datetime`` is refused rather than guessed.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

__all__ = ["iso", "midnight", "utc_now"]

_ISO_FORMATS = {
    "seconds": "%Y-%m-%dT%H:%M:%SZ",
    "milliseconds": "%Y-%m-%dT%H:%M:%S.{ms:03d}Z",
    "microseconds": "%Y-%m-%dT%H:%M:%S.%fZ",
}


def utc_now(now: dt.datetime | None = None, *, name: str = "now") -> dt.datetime:
    """``now`` in UTC (default: the current time); a naive ``now`` is an ``InvalidArgumentError``."""
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        from bubbly_metrics.exceptions import InvalidArgumentError

        raise InvalidArgumentError(f"{name} must be timezone-aware (UTC), got naive {now!r}")
    return now.astimezone(dt.UTC)


def midnight(day: dt.date) -> dt.datetime:
    """The UTC instant ``day`` starts."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def iso(when: dt.datetime, *, timespec: Literal["seconds", "milliseconds", "microseconds"] = "seconds") -> str:
    """``when`` as an ISO-8601 UTC instant ending in ``Z`` (``2025-03-18T02:00:00Z``)."""
    when = when.astimezone(dt.UTC)
    text = when.strftime(_ISO_FORMATS[timespec])
    return text.format(ms=when.microsecond // 1000) if timespec == "milliseconds" else text
