"""Modes and date ranges (docs/rules.md#modes-and-date-ranges), with an injected "now"."""

from __future__ import annotations

import datetime as dt

import pytest

from bubbly_metrics.dates import (
    BACKFILL_START_DATE,
    DateRange,
    parse_date,
    resolve_range,
    yesterday,
)
from bubbly_metrics.exceptions import BubblyMetricsError, InvalidArgumentError, InvalidDateError

NOW = dt.datetime(2025, 3, 18, 2, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "bad",
    [
        "2025-1-17",
        "17/01/2025",
        "2025-02-30",
        "2025-13-01",
        "20250117",
        "2025-01-17T00:00:00",
        " 2025-01-17",
        "2025-01-17\n",
        "",
        "２０２５-01-17",
    ],
)
def test_bad_start_is_rejected_naming_backfill_start_date(bad: str) -> None:
    with pytest.raises(InvalidDateError, match="Invalid backfillStartDate format") as excinfo:
        resolve_range(mode="backfill", start=bad, now=NOW)
    assert repr(bad) in str(excinfo.value)


@pytest.mark.parametrize("bad", ["2025-1-17", "17/01/2025", "2025-02-30"])
def test_bad_end_and_date_are_rejected_naming_the_argument(bad: str) -> None:
    with pytest.raises(InvalidDateError, match="Invalid end format"):
        resolve_range(mode="backfill", start="2025-01-17", end=bad, now=NOW)
    with pytest.raises(InvalidDateError, match="Invalid date format"):
        resolve_range(mode="incremental", date=bad, now=NOW)


def test_parse_date() -> None:
    assert parse_date("2024-02-29") == dt.date(2024, 2, 29)
    assert parse_date(dt.date(2025, 1, 17)) == dt.date(2025, 1, 17)
    with pytest.raises(InvalidDateError, match="Invalid start format"):
        parse_date("2025-02-29", name="start")  # not a leap year
    with pytest.raises(InvalidDateError, match="got a datetime"):
        parse_date(dt.datetime(2025, 1, 17), name="start")  # type: ignore[arg-type]
    with pytest.raises(InvalidDateError):
        parse_date(20250117)  # type: ignore[arg-type]


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        resolve_range(mode="backfill", start="17/01/2025", now=NOW)
    assert issubclass(InvalidDateError, BubblyMetricsError)


def test_start_after_end_is_rejected() -> None:
    with pytest.raises(InvalidDateError, match="start 2025-03-10 is after end 2025-03-09"):
        resolve_range(mode="backfill", start="2025-03-10", end="2025-03-09", now=NOW)
    # The default end is yesterday: a start of today is after it.
    with pytest.raises(InvalidDateError, match="after end 2025-03-17"):
        resolve_range(mode="backfill", start="2025-03-18", now=NOW)


def test_incremental_default_is_yesterday_of_now() -> None:
    assert resolve_range(now=NOW) == DateRange(dt.date(2025, 3, 17), dt.date(2025, 3, 17))
    assert resolve_range(mode="incremental", now=dt.datetime(2025, 3, 1, 0, 0, tzinfo=dt.UTC)).start == dt.date(
        2025, 2, 28
    )
    assert resolve_range(mode="incremental", now=dt.datetime(2025, 1, 1, 23, 59, 59, tzinfo=dt.UTC)).start == dt.date(
        2024, 12, 31
    )
    assert resolve_range(mode="incremental", date="2025-02-01", now=NOW) == DateRange(
        dt.date(2025, 2, 1), dt.date(2025, 2, 1)
    )


def test_yesterday_is_a_utc_day() -> None:
    # 01:00 on the 18th in UTC+05:00 is still the 17th in UTC: yesterday is the 16th.
    plus_five = dt.timezone(dt.timedelta(hours=5))
    assert yesterday(dt.datetime(2025, 3, 18, 1, 0, tzinfo=plus_five)) == dt.date(2025, 3, 16)
    # 22:00 on the 17th in UTC-05:00 is already the 18th in UTC.
    minus_five = dt.timezone(dt.timedelta(hours=-5))
    assert yesterday(dt.datetime(2025, 3, 17, 22, 0, tzinfo=minus_five)) == dt.date(2025, 3, 17)
    with pytest.raises(InvalidArgumentError, match="timezone-aware"):
        yesterday(dt.datetime(2025, 3, 18, 2, 30))


def test_backfill_range() -> None:
    full = resolve_range(mode="backfill", now=NOW)
    assert full == DateRange(BACKFILL_START_DATE, dt.date(2025, 3, 17))
    assert dt.date(2025, 1, 17) == BACKFILL_START_DATE
    assert full.days == 60
    one = resolve_range(mode="backfill", start="2025-03-17", now=NOW)
    assert (one.days, str(one)) == (1, "2025-03-17")
    explicit = resolve_range(mode="backfill", start=dt.date(2025, 2, 27), end="2025-03-02", now=NOW)
    assert (explicit.days, str(explicit)) == (4, "2025-02-27 → 2025-03-02")


def test_mode_and_argument_mixups_are_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="Invalid mode. Must be 'incremental' or 'backfill'"):
        resolve_range(mode="daily", now=NOW)
    with pytest.raises(InvalidArgumentError, match="give date, not start/end"):
        resolve_range(mode="incremental", start="2025-03-01", now=NOW)
    with pytest.raises(InvalidArgumentError, match="give start/end, not date"):
        resolve_range(mode="backfill", date="2025-03-01", now=NOW)


def test_parse_instant_accepts_z_offsets_and_naive_as_utc() -> None:
    from bubbly_metrics.dates import parse_instant

    utc = dt.datetime(2025, 3, 18, 2, 30, tzinfo=dt.UTC)
    assert parse_instant("2025-03-18T02:30:00Z") == utc
    assert parse_instant("2025-03-18T02:30:00") == utc
    assert parse_instant("2025-03-18T04:30:00+02:00") == utc
    assert parse_instant(None) is None


def test_parse_instant_rejects_garbage_naming_the_argument() -> None:
    from bubbly_metrics.dates import parse_instant

    with pytest.raises(InvalidDateError, match="Invalid --now: expected an ISO-8601 instant"):
        parse_instant("yesterday", name="--now")


# --- bounds (issue #25): a floor, nothing after today, a sane window of years, a maximum range ---


@pytest.mark.parametrize(
    ("start", "text"),
    [
        ("0001-01-01", "Invalid backfillStartDate: 0001-01-01 is outside the years 2012-2100"),
        ("0205-01-17", "Invalid backfillStartDate: 0205-01-17 is outside the years 2012-2100"),
        ("9999-12-31", "Invalid backfillStartDate: 9999-12-31 is outside the years 2012-2100"),
        ("2011-12-31", "Invalid backfillStartDate: 2011-12-31 is outside the years 2012-2100 (DynamoDB exists"),
        ("2025-01-16", "backfillStartDate 2025-01-16 is before the backfill floor 2025-01-17 (BACKFILL_FLOOR_DATE)"),
        ("2025-03-19", "backfillStartDate 2025-03-19 is in the future (today is 2025-03-18, UTC)"),
    ],
)
def test_hostile_starts_are_one_clear_error(start: str, text: str) -> None:
    with pytest.raises(InvalidDateError) as info:
        resolve_range(mode="backfill", start=start, now=NOW)
    assert str(info.value).startswith(text)
    assert "\n" not in str(info.value)


def test_years_are_bounded_for_every_date_argument() -> None:
    with pytest.raises(InvalidDateError, match="Invalid end: 9999-12-31 is outside"):
        resolve_range(mode="backfill", start="2025-01-17", end="9999-12-31", now=NOW)
    with pytest.raises(InvalidDateError, match="Invalid date: 0205-01-17 is outside"):
        resolve_range(mode="incremental", date="0205-01-17", now=NOW)
    with pytest.raises(InvalidDateError, match="Invalid since: 2101-01-01 is outside"):
        parse_date(dt.date(2101, 1, 1), name="since")
    with pytest.raises(InvalidDateError, match="now is in 9999"):
        resolve_range(mode="incremental", now=dt.datetime(9999, 12, 31, tzinfo=dt.UTC))


def test_nothing_after_today() -> None:
    with pytest.raises(InvalidDateError, match="end 2025-03-19 is in the future"):
        resolve_range(mode="backfill", start="2025-03-01", end="2025-03-19", now=NOW)
    with pytest.raises(InvalidDateError, match="date 2025-03-19 is in the future"):
        resolve_range(mode="incremental", date="2025-03-19", now=NOW)
    # Today itself is not the future (an end of today reads what there is so far).
    assert resolve_range(mode="backfill", start="2025-03-17", end="2025-03-18", now=NOW).days == 2


def test_the_floor_is_the_default_start_and_can_be_moved() -> None:
    from bubbly_metrics.dates import BACKFILL_FLOOR, date_bounds

    assert BACKFILL_FLOOR == BACKFILL_START_DATE == dt.date(2025, 1, 17)
    assert resolve_range(mode="backfill", start="2024-06-01", floor="2024-01-01", now=NOW).start == dt.date(2024, 6, 1)
    with date_bounds(floor="2025-03-01"):
        assert resolve_range(mode="backfill", now=NOW).start == dt.date(2025, 3, 1)
        with pytest.raises(InvalidDateError, match="before the backfill floor 2025-03-01"):
            resolve_range(mode="backfill", start="2025-02-01", now=NOW)
    assert resolve_range(mode="backfill", now=NOW).start == BACKFILL_FLOOR  # restored
    with pytest.raises(InvalidDateError, match="Invalid floor: 0205-01-17 is outside"):
        resolve_range(mode="backfill", floor="0205-01-17", now=NOW)


def test_a_range_longer_than_the_maximum_needs_an_override() -> None:
    from bubbly_metrics.dates import MAX_BACKFILL_DAYS, date_bounds

    assert MAX_BACKFILL_DAYS == 800
    # The whole history from the floor fits for years to come: up to 2027-03-27.
    late = dt.datetime(2027, 3, 28, 12, tzinfo=dt.UTC)
    assert resolve_range(mode="backfill", now=late).days == 800
    with pytest.raises(InvalidDateError, match=r"2025-01-17 → 2027-03-28 is 801 days, more than the maximum of 800"):
        resolve_range(mode="backfill", now=late + dt.timedelta(days=1))
    assert resolve_range(mode="backfill", now=late + dt.timedelta(days=1), max_days=801).days == 801
    with date_bounds(floor="2012-01-01"):
        with pytest.raises(InvalidDateError, match="allow a longer range explicitly with maxDays"):
            resolve_range(mode="backfill", start="2012-01-01", now=NOW)
        with date_bounds(max_days=5000):
            assert resolve_range(mode="backfill", start="2012-01-01", now=NOW).days == 4825
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InvalidArgumentError, match=r"max_days \(the longest backfill, in days\) must be"):
            resolve_range(mode="backfill", max_days=bad, now=NOW)  # type: ignore[arg-type]


def test_the_modules_examples_run() -> None:
    import doctest

    from bubbly_metrics import dates

    assert doctest.testmod(dates).failed == 0


def test_a_value_that_looks_like_a_placeholder_is_quoted_as_given():
    """Errors name their parameter by placeholder; a user's value is never taken for one."""
    from bubbly_metrics.dates import parse_date

    with pytest.raises(InvalidDateError) as caught:
        parse_date("{param}", name="start")
    assert str(caught.value) == "Invalid start format: expected YYYY-MM-DD, got '{param}'"
    assert caught.value.message_for("--start") == "Invalid --start format: expected YYYY-MM-DD, got '{param}'"
