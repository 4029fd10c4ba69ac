"""Modes and date ranges (SPEC §4): which UTC days a run covers, with an injectable "now"."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

from bubbly_metrics.exceptions import InvalidArgumentError, InvalidDateError

__all__ = ["BACKFILL_START_DATE", "DateRange", "Mode", "parse_date", "parse_instant", "resolve_range"]

Mode = Literal["incremental", "backfill"]
MODES: tuple[Mode, ...] = ("incremental", "backfill")

BACKFILL_START_DATE = dt.date(2025, 1, 17)
"""The first day of BubblyClouds analytics history: the default backfill start."""

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class DateRange:
    """An inclusive range of UTC calendar days."""

    start: dt.date
    end: dt.date

    @property
    def days(self) -> int:
        """Number of days in the range."""
        return (self.end - self.start).days + 1

    def __str__(self) -> str:
        return self.start.isoformat() if self.start == self.end else f"{self.start} → {self.end}"


def parse_date(value: str | dt.date, *, name: str = "date") -> dt.date:
    """Parse ``YYYY-MM-DD`` strictly; raise :class:`InvalidDateError` naming ``name``.

    >>> parse_date("2025-01-17")
    datetime.date(2025, 1, 17)
    """
    if isinstance(value, dt.datetime):
        raise InvalidDateError(f"Invalid {name} format: expected a date (YYYY-MM-DD), got a datetime {value!r}")
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise InvalidDateError(f"Invalid {name} format: expected YYYY-MM-DD, got {value!r}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidDateError(f"Invalid {name} format: {value!r} is not a calendar date") from None


def parse_instant(value: str | dt.datetime | None, *, name: str = "now") -> dt.datetime | None:
    """Parse an ISO-8601 instant into a UTC-aware datetime (``Z`` accepted; naive means UTC).

    >>> parse_instant("2025-03-18T02:30:00Z")
    datetime.datetime(2025, 3, 18, 2, 30, tzinfo=datetime.timezone.utc)
    """
    if value is None or isinstance(value, dt.datetime):
        instant = value
    elif isinstance(value, str):
        try:
            instant = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidDateError(
                f"Invalid {name}: expected an ISO-8601 instant like 2025-03-18T02:30:00Z, got {value!r}"
            ) from None
    else:
        raise InvalidDateError(f"Invalid {name}: expected an ISO-8601 instant, got {value!r}")
    if instant is None:
        return None
    return instant.replace(tzinfo=dt.UTC) if instant.tzinfo is None else instant.astimezone(dt.UTC)


def yesterday(now: dt.datetime | None = None) -> dt.date:
    """The UTC day before ``now`` (default: the current time)."""
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise InvalidArgumentError(f"now must be timezone-aware (UTC), got naive {now!r}")
    try:
        return now.astimezone(dt.UTC).date() - dt.timedelta(days=1)
    except OverflowError:
        raise InvalidDateError(f"now {now.isoformat()} has no day before it") from None


def resolve_range(
    *,
    mode: str = "incremental",
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    date: str | dt.date | None = None,
    now: dt.datetime | None = None,
) -> DateRange:
    """Return the days a run covers.

    ``incremental``: one day, ``date`` or yesterday (UTC).  ``backfill``: ``start`` (default
    2025-01-17) to ``end`` (default yesterday), inclusive.

    >>> import datetime as dt
    >>> str(resolve_range(mode="backfill", start="2025-01-17",
    ...                   now=dt.datetime(2025, 1, 20, 2, 30, tzinfo=dt.UTC)))
    '2025-01-17 → 2025-01-19'
    """
    if mode not in MODES:
        raise InvalidArgumentError(f"Invalid mode. Must be 'incremental' or 'backfill' (got {mode!r})")
    if mode == "incremental":
        if start is not None or end is not None:
            raise InvalidArgumentError("incremental mode covers one day: give date, not start/end")
        day = parse_date(date, name="date") if date is not None else yesterday(now)
        return DateRange(day, day)
    if date is not None:
        raise InvalidArgumentError("backfill mode covers a range: give start/end, not date")
    first = parse_date(start, name="backfillStartDate") if start is not None else BACKFILL_START_DATE
    last = parse_date(end, name="end") if end is not None else yesterday(now)
    if first > last:
        raise InvalidDateError(f"start {first} is after end {last}: nothing to aggregate")
    return DateRange(first, last)
