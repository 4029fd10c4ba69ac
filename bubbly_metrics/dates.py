"""Modes and date ranges (docs/rules.md#modes-and-date-ranges): which UTC days a run covers, with an injectable "now".

Errors carry the parameter at fault (``param``): a front door names it its own way with
:meth:`~bubbly_metrics.exceptions.BubblyMetricsError.message_for`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from bubbly_metrics._text import clip
from bubbly_metrics._time import utc_now
from bubbly_metrics.exceptions import PARAM, InvalidArgumentError, InvalidDateError, placeholder

__all__ = [
    "BACKFILL_FLOOR",
    "BACKFILL_START_DATE",
    "MAX_BACKFILL_DAYS",
    "YEARS",
    "DateBounds",
    "DateRange",
    "Mode",
    "date_bounds",
    "parse_date",
    "parse_instant",
    "resolve_range",
]

Mode = Literal["incremental", "backfill"]
MODES: tuple[Mode, ...] = ("incremental", "backfill")

BACKFILL_START_DATE = dt.date(2025, 1, 17)
"""The first day of BubblyClouds analytics history: the default backfill start."""

BACKFILL_FLOOR = BACKFILL_START_DATE
"""The default floor: no backfill starts before BubblyClouds' history does (2025-01-17).

Lambdas take another from ``BACKFILL_FLOOR_DATE``, the CLI from ``--floor``, the library from
``floor=`` or :func:`date_bounds`."""

MAX_BACKFILL_DAYS = 800
"""The default longest backfill range, in days, without an explicit override.

The whole history from the floor (2025-01-17) fits until 2027-03-27; what it stops is a typo
that turns a start into centuries of zero rows.  Lambdas take another from
``BACKFILL_MAX_DAYS`` (or the event's ``maxDays``), the CLI from ``--max-days``."""

YEARS = (2012, 2100)
"""The years a date may be in: DynamoDB (and so any export) exists since 2012; 2100 is far
enough ahead for anything real and keeps day arithmetic far from ``date.max``."""

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


def parse_date(value: str | dt.date, *, name: str = "date", param: str | None = None) -> dt.date:
    """Parse ``YYYY-MM-DD`` strictly; raise :class:`InvalidDateError` naming ``name``.

    The error's ``param`` is ``param`` (the library's name for the argument), default ``name``.

    The year must be within :data:`YEARS` (2012-2100): ``0205-01-17`` is a typo, not a date
    any export holds.

    >>> parse_date("2025-01-17")
    datetime.date(2025, 1, 17)
    """

    def bad(message: str) -> InvalidDateError:
        return InvalidDateError(message, param=param or name, called=name)

    if isinstance(value, dt.datetime):
        raise bad(f"Invalid {PARAM} format: expected a date (YYYY-MM-DD), got a datetime {value!r}")
    if isinstance(value, dt.date):
        day = value
    elif not isinstance(value, str) or not _DATE.fullmatch(value):
        raise bad(f"Invalid {PARAM} format: expected YYYY-MM-DD, got {clip(repr(value))}")
    else:
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise bad(f"Invalid {PARAM} format: {value!r} is not a calendar date") from None
    if not YEARS[0] <= day.year <= YEARS[1]:
        raise bad(
            f"Invalid {PARAM}: {day.year:04d}-{day.month:02d}-{day.day:02d} is outside the years "
            f"{YEARS[0]}-{YEARS[1]} (DynamoDB exists since 2012): check the year, e.g. 2025-01-17"
        )
    return day


def parse_instant(
    value: str | dt.datetime | None, *, name: str = "now", param: str | None = None
) -> dt.datetime | None:
    """Parse an ISO-8601 instant into a UTC-aware datetime (``Z`` accepted; naive means UTC).

    An error names ``name``; its ``param`` is ``param`` (default ``name``), as for :func:`parse_date`.

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
                f"Invalid {PARAM}: expected an ISO-8601 instant like 2025-03-18T02:30:00Z, got {value!r}",
                param=param or name,
                called=name,
            ) from None
    else:
        raise InvalidDateError(
            f"Invalid {PARAM}: expected an ISO-8601 instant, got {value!r}", param=param or name, called=name
        )
    if instant is None:
        return None
    return instant.replace(tzinfo=dt.UTC) if instant.tzinfo is None else instant.astimezone(dt.UTC)


@dataclass(frozen=True)
class DateBounds:
    """How far back a backfill may start and how many days it may cover without an override.

    ``floor``: the earliest backfill start (default :data:`BACKFILL_FLOOR`).  ``max_days``: the
    longest backfill range, in days (default :data:`MAX_BACKFILL_DAYS`).
    """

    floor: dt.date = BACKFILL_FLOOR
    max_days: int = MAX_BACKFILL_DAYS

    def __post_init__(self) -> None:
        parse_date(self.floor, name="floor")
        if isinstance(self.max_days, bool) or not isinstance(self.max_days, int) or self.max_days < 1:
            raise InvalidArgumentError(
                f"{PARAM} (the longest backfill, in days) must be a positive whole number, got {clip(self.max_days)}",
                param="max_days",
            )


_BOUNDS: ContextVar[DateBounds | None] = ContextVar("bubbly_metrics_date_bounds", default=None)


@contextmanager
def date_bounds(*, floor: str | dt.date | None = None, max_days: int | None = None) -> Iterator[DateBounds]:
    """Within the block, :func:`resolve_range` (and all that calls it) uses these bounds.

    What is not given keeps its current value.  Front doors use it: a Lambda handler with
    ``BACKFILL_FLOOR_DATE`` / ``BACKFILL_MAX_DAYS`` (and an event's ``maxDays``), the CLI with
    ``--floor`` / ``--max-days``, so the library calls they make need no extra argument.

    >>> with date_bounds(floor="2025-03-01"):  # a backfill's default start is the floor
    ...     str(resolve_range(mode="backfill", now=dt.datetime(2025, 3, 4, tzinfo=dt.UTC)))
    '2025-03-01 → 2025-03-03'
    """
    current = current_bounds()
    bounds = DateBounds(
        floor=parse_date(floor, name="floor") if floor is not None else current.floor,
        max_days=current.max_days if max_days is None else max_days,
    )
    token = _BOUNDS.set(bounds)
    try:
        yield bounds
    finally:
        _BOUNDS.reset(token)


def current_bounds() -> DateBounds:
    """The bounds :func:`resolve_range` applies here (see :func:`date_bounds`)."""
    return _BOUNDS.get() or DateBounds()


def yesterday(now: dt.datetime | None = None) -> dt.date:
    """The UTC day before ``now`` (default: the current time)."""
    try:
        return utc_now(now).date() - dt.timedelta(days=1)
    except OverflowError:
        assert now is not None  # the current time has a day before it
        raise InvalidDateError(f"now {now.isoformat()} has no day before it", param="now") from None


def resolve_range(
    *,
    mode: str = "incremental",
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    date: str | dt.date | None = None,
    now: dt.datetime | None = None,
    floor: str | dt.date | None = None,
    max_days: int | None = None,
) -> DateRange:
    """Return the days a run covers.

    ``incremental``: one day, ``date`` or yesterday (UTC).  ``backfill``: ``start`` (default:
    the floor, 2025-01-17) to ``end`` (default yesterday), inclusive.

    Every day is within :data:`YEARS` and not after today (UTC, of ``now``).  A backfill starts
    no earlier than ``floor`` and covers at most ``max_days`` days; both default to the current
    :func:`date_bounds` (:data:`BACKFILL_FLOOR`, :data:`MAX_BACKFILL_DAYS`).

    >>> import datetime as dt
    >>> str(resolve_range(mode="backfill", start="2025-01-17",
    ...                   now=dt.datetime(2025, 1, 20, 2, 30, tzinfo=dt.UTC)))
    '2025-01-17 → 2025-01-19'
    """
    if not isinstance(mode, str) or mode not in MODES:
        raise InvalidArgumentError(f"Invalid mode. Must be 'incremental' or 'backfill' (got {clip(repr(mode))})")
    bounds = current_bounds()
    if floor is not None or max_days is not None:
        bounds = DateBounds(
            floor=parse_date(floor, name="floor") if floor is not None else bounds.floor,
            max_days=bounds.max_days if max_days is None else max_days,
        )
    today = yesterday(now) + dt.timedelta(days=1)
    if mode == "incremental":
        if start is not None or end is not None:
            raise InvalidArgumentError("incremental mode covers one day: give date, not start/end")
        day = parse_date(date, name="date") if date is not None else yesterday(now)
        _not_future(day, today, "date")
        _in_years(day, "now")
        return DateRange(day, day)
    if date is not None:
        raise InvalidArgumentError("backfill mode covers a range: give start/end, not date")
    # The messages name the Lambda payload's fields; a front door renames them (message_for).
    first = parse_date(start, name="backfillStartDate", param="start") if start is not None else bounds.floor
    last = parse_date(end, name="end") if end is not None else yesterday(now)
    _in_years(last, "now")
    if first < bounds.floor:
        raise InvalidDateError(
            f"{PARAM} {first} is before the backfill floor {bounds.floor} ({placeholder('floor')}): "
            "give a later start, or lower the floor if older data really exists",
            param="start",
            called="backfillStartDate",
            also={"floor": "BACKFILL_FLOOR_DATE"},
        )
    _not_future(first, today, "backfillStartDate", param="start")
    _not_future(last, today, "end")
    if first > last:
        raise InvalidDateError(f"start {first} is after end {last}: nothing to aggregate")
    days = DateRange(first, last)
    if days.days > bounds.max_days:
        raise InvalidDateError(
            f"backfill {days} is {days.days} days, more than the maximum of {bounds.max_days} ({PARAM}): "
            f"check the dates, or allow a longer range explicitly with {PARAM}",
            param="max_days",
            called="maxDays",
        )
    return days


def _not_future(day: dt.date, today: dt.date, name: str, *, param: str | None = None) -> None:
    """Refuse a day after today; with ``param``, the message names the parameter as a front door asks."""
    if day > today:
        raise InvalidDateError(
            f"{PARAM if param else name} {day} is in the future (today is {today}, UTC): give a past day",
            param=param,
            called=name,
        )


def _in_years(day: dt.date, name: str) -> None:
    # A default day comes from `now`: a clock far outside the years is refused as a date would be.
    if not YEARS[0] <= day.year <= YEARS[1]:
        raise InvalidDateError(f"{name} is in {day.year:04d}, outside the years {YEARS[0]}-{YEARS[1]}")
