"""Engagement beyond daily counts: WAU, MAU, stickiness and cohort retention per app.

Daily counts cannot be summed into weekly or monthly ones (a user active on three days of a
week is one weekly user, not three), so everything here is computed from *who* was active:
the distinct ``(date, app, user_id)`` triples of users with at least one session that day —
the users :data:`ActiveUsers <bubbly_metrics.metrics.METRIC_NAMES>` counts.  They come from
an export (``AggregateResult`` or its ``per_user`` frame) or from the Analytics Table's
``activeUserIds`` (:func:`~bubbly_metrics.analytics_table.read_analytics_table`), and give the
same numbers either way.

- :func:`active_user_days` — any of those sources as one LazyFrame of distinct triples;
  :func:`read_activity` reads a full export, then the daily runs of the incremental exports
  after it;
- :func:`engagement_metrics` — per ``(date, app)``: ``active_users``,
  ``weekly_active_users``, ``monthly_active_users`` and ``stickiness`` (DAU / MAU);
- :func:`retention` — per cohort of new users and day N: cohort size, users retained, rate;
  :func:`retention_curve` pools the cohorts of each app into one rate per day N;
- :func:`engagement_from_table` — one day's figures from the Analytics Table's last
  ``month_days`` days (a bounded number of Query calls), for a daily job;
  :func:`publish_engagement` sends them to CloudWatch (the Aggregator, after each daily run).

Windows are 7 and 28 days by default: whole weeks, so every window holds each weekday equally
often (weekend peaks do not make one "week" bigger than another), and 28 days rather than a
calendar month, so February's MAU is not biased low against March's by having fewer days.

Examples
--------
>>> import bubbly_metrics as bm
>>> result = bm.aggregate(bm.sample_export_location(), mode="backfill", now=bm.SAMPLE_NOW)
>>> bm.engagement_metrics(result).collect().columns
['date', 'app', 'active_users', 'weekly_active_users', 'monthly_active_users', 'stickiness']
>>> bm.retention(result).collect().columns
['cohort_date', 'app', 'day_n', 'cohort_size', 'retained', 'rate']
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import polars as pl

from bubbly_metrics.dates import DateRange, parse_date
from bubbly_metrics.exceptions import InvalidArgumentError

__all__ = [
    "ACTIVE_SCHEMA",
    "ENGAGEMENT_SCHEMA",
    "RETENTION_SCHEMA",
    "active_user_days",
    "engagement_from_table",
    "engagement_metrics",
    "publish_engagement",
    "read_activity",
    "retention",
    "retention_curve",
]

ACTIVE_SCHEMA: dict[str, pl.DataType] = {"date": pl.Date(), "app": pl.String(), "user_id": pl.String()}
"""Columns of :func:`active_user_days`."""

ENGAGEMENT_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "app": pl.String(),
    "active_users": pl.Int64(),
    "weekly_active_users": pl.Int64(),
    "monthly_active_users": pl.Int64(),
    "stickiness": pl.Float64(),
}
"""Columns of :func:`engagement_metrics`."""

RETENTION_SCHEMA: dict[str, pl.DataType] = {
    "cohort_date": pl.Date(),
    "app": pl.String(),
    "day_n": pl.Int64(),
    "cohort_size": pl.Int64(),
    "retained": pl.Int64(),
    "rate": pl.Float64(),
}
"""Columns of :func:`retention`."""

WEEK_DAYS = 7
MONTH_DAYS = 28
RETENTION_DAYS = (1, 7, 30)

logger = logging.getLogger(__name__)

Source = Any
"""What the functions here read: an ``AggregateResult``, a per-user frame (``date``, ``app``,
``user_id``, ``games``), an Analytics Table frame (``active_user_ids``), a frame of active
triples (``date``, ``app``, ``user_id``), or a list of these (each day from the first that holds it)."""


# -- the source: distinct (date, app, user_id) of active users ------------------------------------


def _triples(source: Source) -> pl.LazyFrame:
    from bubbly_metrics.pipeline import AggregateResult

    if isinstance(source, AggregateResult):
        source = source.activity
    if not isinstance(source, pl.DataFrame | pl.LazyFrame):
        raise InvalidArgumentError(
            "source must be an AggregateResult, a per-user frame, an Analytics Table frame or a list of them, "
            f"got {type(source).__name__}"
        )
    lazy = source.lazy()
    columns = lazy.collect_schema().names()
    if "active_user_ids" in columns:  # read_analytics_table: the stored ids of the day's active users
        lazy = lazy.select("date", "app", pl.col("active_user_ids").alias("user_id")).explode("user_id")
        lazy = lazy.drop_nulls("user_id")
    elif {"date", "app", "user_id"} <= set(columns):
        if "games" in columns:  # per-user activity: active means at least one session (SPEC §3)
            lazy = lazy.filter(pl.col("games") > 0)
    else:
        raise InvalidArgumentError(
            "source frame needs columns date, app, user_id (and games), or active_user_ids; "
            f"got {', '.join(columns) or 'no columns'}"
        )
    return lazy.select(
        pl.col("date").cast(pl.Date),
        pl.col("app").cast(pl.String),
        pl.col("user_id").cast(pl.String),
    )


def _held_days(source: Source) -> pl.LazyFrame:
    """The days a source holds, as one column ``date``.

    An ``AggregateResult``'s range; else the days a frame has any row for (a per-user row
    without a session, a table row without users).
    """
    from bubbly_metrics.pipeline import AggregateResult

    if isinstance(source, AggregateResult):
        first, last = source.date_range.start, source.date_range.end
        return pl.LazyFrame({"date": pl.date_range(first, last, "1d", eager=True)})
    return source.lazy().select(pl.col("date").cast(pl.Date)).unique()


def _range_of(source: Source) -> tuple[dt.date | None, dt.date | None]:
    """The days an ``AggregateResult`` (or a list of them) covers; ``(None, None)`` otherwise."""
    from bubbly_metrics.pipeline import AggregateResult

    sources = source if isinstance(source, list | tuple) else [source]
    ranges = [s.date_range for s in sources if isinstance(s, AggregateResult)]
    if not ranges or len(ranges) != len(sources):
        return None, None
    return min(r.start for r in ranges), max(r.end for r in ranges)


def active_user_days(
    source: Source,
    *,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
) -> pl.LazyFrame:
    """Distinct ``(date, app, user_id)`` of users active that day (at least one session).

    Parameters
    ----------
    source
        An ``AggregateResult`` (:func:`~bubbly_metrics.aggregate`), its ``per_user`` or
        ``activity`` frame, a frame of :func:`~bubbly_metrics.analytics_table.read_analytics_table`
        (its ``active_user_ids``), a frame already holding ``date``, ``app``, ``user_id``, or a
        list of these, e.g. the backfill of a full export, then the daily runs of the incremental
        exports after it (:func:`~bubbly_metrics.reconcile.daily_runs_table`).  Each day comes
        from the first part that holds it (an ``AggregateResult`` holds its range, a frame the
        days it has rows for), never from two: a session re-dated between two exports would
        otherwise count on both days.
    start, end
        Keep only these days (inclusive, ``YYYY-MM-DD`` or dates).

    Returns
    -------
    polars.LazyFrame
        :data:`ACTIVE_SCHEMA`: one row per active user, app and day.
    """
    first = parse_date(start, name="start") if start is not None else None
    last = parse_date(end, name="end") if end is not None else None
    if first and last and first > last:
        raise InvalidArgumentError(f"start {first} is after end {last}")
    sources = list(source) if isinstance(source, list | tuple) else [source]
    if not sources:
        raise InvalidArgumentError("source is an empty list: give at least one result or frame")
    parts, held = [], None
    for part in sources:
        triples = _triples(part)
        parts.append(triples if held is None else triples.join(held, on="date", how="anti"))
        days = _held_days(part)
        held = days if held is None else pl.concat([held, days]).unique()
    lazy = pl.concat(parts, how="vertical")
    if first:
        lazy = lazy.filter(pl.col("date") >= first)
    if last:
        lazy = lazy.filter(pl.col("date") <= last)
    return lazy.unique()


def read_activity(
    source: str,
    *,
    incremental: str | None = None,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    now: dt.datetime | None = None,
    storage_options: dict[str, Any] | None = None,
    verify: bool = False,
    on_file: Callable[[Any, int], None] | None = None,
) -> tuple[list[Any], DateRange]:
    """Read the activity of a range of days: a full export, then the incremental exports after it.

    The latest full export at ``source`` gives the days it holds (a backfill,
    :func:`~bubbly_metrics.aggregate`); with ``incremental``, the days after its last one, up
    to ``end``, come from the incremental exports there, aggregated one day at a time as the
    daily runs do (:func:`~bubbly_metrics.reconcile.daily_runs_table`); a day no incremental
    export covers has no activity.

    Parameters
    ----------
    source
        Export location holding the full export (local folder or ``s3://`` URI).
    incremental
        Location of the incremental exports (may be ``source``); without it, the range ends at
        the full export's last day when ``end`` is not given.
    start, end, now, storage_options, verify, on_file
        As for :func:`~bubbly_metrics.aggregate` in backfill mode (``end`` defaults to
        yesterday, UTC, as of ``now``).

    Returns
    -------
    tuple[list, DateRange]
        The parts, for :func:`engagement_metrics` and :func:`retention` (``[AggregateResult]``
        or ``[AggregateResult, daily runs' table frame]``), and the days they cover.
    """
    from bubbly_metrics.dates import resolve_range
    from bubbly_metrics.pipeline import aggregate, export_for
    from bubbly_metrics.reconcile import daily_runs_table

    wanted = resolve_range(mode="backfill", start=start, end=end, now=now)
    export = export_for(source, mode="backfill", storage_options=storage_options)
    full_end = wanted.end
    if incremental is not None and export.last_day is not None:
        full_end = max(min(wanted.end, export.last_day), wanted.start)
    result = aggregate(
        export,
        mode="backfill",
        start=wanted.start,
        end=full_end if incremental is not None or end is not None else None,
        now=now,
        storage_options=storage_options,
        verify=verify,
        on_file=on_file,
    )
    parts: list[Any] = [result]
    last = result.date_range.end
    if incremental is not None and last < wanted.end:
        after = last + dt.timedelta(days=1)
        parts.append(daily_runs_table(incremental, start=after, end=wanted.end, storage_options=storage_options))
        last = wanted.end
    logger.info("activity of %s: %d part(s)", DateRange(result.date_range.start, last), len(parts))
    return parts, DateRange(result.date_range.start, last)


def _window(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{{param}} must be a whole number of days >= 1, got {value!r}", param=name)
    return value


def _bounds(
    source: Source, start: str | dt.date | None, end: str | dt.date | None
) -> tuple[pl.LazyFrame, pl.Expr, pl.Expr]:
    """The active triples in range, and the first/last day of the data as expressions.

    Without ``start``/``end``, the range an ``AggregateResult`` was aggregated over, else the
    earliest/latest active day in the data.
    """
    given_start, given_end = _range_of(source)
    start = start if start is not None else given_start
    end = end if end is not None else given_end
    active = active_user_days(source, start=start, end=end)
    first = pl.lit(parse_date(start, name="start")) if start is not None else pl.col("date").min()
    last = pl.lit(parse_date(end, name="end")) if end is not None else pl.col("date").max()
    return active, first, last


# -- WAU / MAU / stickiness -----------------------------------------------------------------------


def _window_deltas(active: pl.LazyFrame, days: int) -> pl.LazyFrame:
    """Per ``(app, date)``: +1 where a user's coverage starts, -1 where it ends.

    ``active`` holds each active ``(date, app, user_id)`` with ``next``, the user's next active
    day in that app (null for the last).

    A user active on day t is in the trailing window of every day t .. t+days-1.  Cutting each
    such span at the user's next active day makes one user's spans disjoint, so the running
    sum of starts minus ends over the calendar is the number of distinct users in the window:
    two rows per active (user, day), whatever the window's length — where joining every active
    day with its ``days`` offsets would hold ``days`` rows per active (user, day).
    """
    spans = active.select(
        "app",
        pl.col("date").alias("begin"),
        pl.min_horizontal(pl.col("date") + pl.duration(days=days), "next").alias("stop"),
    )
    begins = spans.select("app", pl.col("begin").alias("date"), pl.lit(1, pl.Int64).alias("delta"))
    stops = spans.select("app", pl.col("stop").alias("date"), pl.lit(-1, pl.Int64).alias("delta"))
    return pl.concat([begins, stops]).group_by("app", "date").agg(pl.col("delta").sum())


def engagement_metrics(
    source: Source,
    *,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    week_days: int = WEEK_DAYS,
    month_days: int = MONTH_DAYS,
    partial_windows: bool = False,
) -> pl.LazyFrame:
    """Daily, weekly and monthly active users and stickiness, per ``(date, app)``.

    ``weekly_active_users`` (``monthly_active_users``) on day d is the number of distinct
    users active on any of the ``week_days`` (``month_days``) days ending with d;
    ``stickiness`` is ``active_users / monthly_active_users`` (the share of the month's users
    who came that day).  Dense: every day of the range × every app with an active user in it.

    Parameters
    ----------
    source
        Active users, as :func:`active_user_days` takes them (an ``AggregateResult``, a
        per-user frame, an Analytics Table frame, or a list of them).
    start, end
        The days the data covers, inclusive.  Default: the range an ``AggregateResult`` was
        aggregated over, else the first and last day anyone was active.  Activity outside is
        ignored: a window never reaches before ``start``.
    week_days, month_days
        Window lengths, in days (default 7 and 28: whole weeks, so each window holds every
        weekday equally often, and no calendar-month length bias).
    partial_windows
        Windows that begin before ``start`` hold only part of their days, so their counts are
        lower bounds: null by default (and so is stickiness); ``True`` gives the partial counts.

    Returns
    -------
    polars.LazyFrame
        :data:`ENGAGEMENT_SCHEMA`, sorted by date and app.

    Notes
    -----
    Memory is proportional to the distinct active ``(user, day)`` pairs: each contributes a
    start and an end of the span of days it keeps its user in a window, cut at the user's next
    active day so that no user is counted twice (see :func:`_window_deltas`); a cumulative sum
    over the calendar turns them into counts.  Nothing grows with the window's length.

    Examples
    --------
    u1 plays on January 30 and February 2, u2 on February 1; 3-day weeks, 4-day months:

    >>> import datetime as dt
    >>> import polars as pl
    >>> active = pl.DataFrame({
    ...     "date": [dt.date(2025, 1, 30), dt.date(2025, 2, 2), dt.date(2025, 2, 1)],
    ...     "app": ["chess"] * 3,
    ...     "user_id": ["u1", "u1", "u2"],
    ... })
    >>> out = engagement_metrics(active, week_days=3, month_days=4).collect()
    >>> out.select("weekly_active_users", "monthly_active_users", "stickiness").rows()
    [(None, None, None), (None, None, None), (2, None, None), (2, 2, 0.5)]
    """
    week = _window(week_days, "week_days")
    month = _window(month_days, "month_days")
    if not isinstance(partial_windows, bool):
        raise InvalidArgumentError(f"partial_windows must be True or False, got {partial_windows!r}")
    active, first, last = _bounds(source, start, end)
    active = active.cache()
    # One row of bounds (none without data and without start/end), then its days.
    bounds = active.select(first.alias("first"), last.alias("last")).drop_nulls()
    calendar = bounds.select(pl.date_ranges("first", "last", "1d").alias("date")).explode("date")
    apps = active.select("app").unique()
    days = calendar.join(apps, how="cross")
    dau = active.group_by("date", "app").agg(pl.len().cast(pl.Int64).alias("active_users"))
    frame = days.join(dau, on=["date", "app"], how="left").with_columns(pl.col("active_users").fill_null(0))

    def whole(length: int) -> pl.Expr:  # the window lies within the data (the calendar starts at its first day)
        return pl.col("date") - pl.duration(days=length - 1) >= pl.col("date").min()

    # Each user's next active day, once for both windows (grouping by user is the costly part).
    following = active.with_columns(pl.col("date").shift(-1).over("app", "user_id", order_by="date").alias("next"))
    following = following.cache()
    for name, length in (("weekly_active_users", week), ("monthly_active_users", month)):
        deltas = _window_deltas(following, length).rename({"delta": name})
        frame = (
            frame.join(deltas, on=["app", "date"], how="left")
            .with_columns(pl.col(name).fill_null(0).cum_sum().over("app", order_by="date"))
            .with_columns(pl.when(pl.lit(partial_windows) | whole(length)).then(pl.col(name)))
        )
    stickiness = pl.when(pl.col("monthly_active_users") > 0).then(
        pl.col("active_users") / pl.col("monthly_active_users")
    )
    return (
        frame.with_columns(stickiness.alias("stickiness"))
        .select(pl.col(c).cast(t) for c, t in ENGAGEMENT_SCHEMA.items())
        .sort("date", "app")
    )


# -- retention ------------------------------------------------------------------------------------


def _day_ns(days: Iterable[int]) -> list[int]:
    if isinstance(days, int | str) or not isinstance(days, Iterable):
        raise InvalidArgumentError(
            f"{{param}} must be a list of whole numbers of days >= 1, got {days!r}", param="days"
        )
    values = list(days)
    if not values or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in values):
        raise InvalidArgumentError(
            f"{{param}} must be a list of whole numbers of days >= 1, got {values!r}", param="days"
        )
    return sorted(set(values))


def retention(
    source: Source,
    *,
    days: Sequence[int] = RETENTION_DAYS,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    history_days: int = MONTH_DAYS,
) -> pl.LazyFrame:
    """Day-N retention of each cohort of new users: the share of them active again N days later.

    A user's cohort is the first day they were active in an app *within the data read*; for
    each cohort and N in ``days``, ``retained`` counts those of its users active on exactly
    cohort day + N (classic day-N retention, not "on or after"), and ``rate`` is
    ``retained / cohort_size``.

    Parameters
    ----------
    source
        Active users, as :func:`active_user_days` takes them.
    days
        The Ns (default 1, 7 and 30).
    start, end
        The days the data covers, inclusive (defaults as in :func:`engagement_metrics`).
    history_days
        Left censoring.  The data cannot tell a new user from one last seen just before
        ``start``: on the first day of the data *everyone* looks new.  So a cohort is reported
        only when at least ``history_days`` days of data precede it (default 28, the monthly
        window: its users were not active in the previous 28 days, and the day's MAU agrees
        with it).  ``0`` reports every cohort, the earliest ones inflated by returning users.

    Returns
    -------
    polars.LazyFrame
        :data:`RETENTION_SCHEMA`, sorted by cohort date, app and N.  Right censoring: a cohort
        whose day + N is after ``end`` has no row for that N (not yet observable, not zero).
        Days without new users of an app have no cohort and no rows.

    Examples
    --------
    u1 and u2 start on March 1, u3 on March 2; u1 is back on March 2, u2 on March 8:

    >>> import datetime as dt
    >>> import polars as pl
    >>> active = pl.DataFrame({
    ...     "date": [dt.date(2025, 3, d) for d in (1, 1, 2, 8, 2)],
    ...     "app": ["a"] * 5,
    ...     "user_id": ["u1", "u2", "u1", "u2", "u3"],
    ... })
    >>> retention(active, days=[1, 7, 30], history_days=0).collect().rows()  # doctest: +NORMALIZE_WHITESPACE
    [(datetime.date(2025, 3, 1), 'a', 1, 2, 1, 0.5),
     (datetime.date(2025, 3, 1), 'a', 7, 2, 1, 0.5),
     (datetime.date(2025, 3, 2), 'a', 1, 1, 0, 0.0)]
    """
    ns = _day_ns(days)
    if isinstance(history_days, bool) or not isinstance(history_days, int) or history_days < 0:
        raise InvalidArgumentError(
            f"{{param}} must be a whole number of days >= 0, got {history_days!r}", param="history_days"
        )
    active, first, last = _bounds(source, start, end)
    active = active.cache()
    limits = active.select(first.alias("first"), last.alias("last"))
    cohorts = active.group_by("app", "user_id").agg(pl.col("date").min().alias("cohort_date"))
    offsets = pl.LazyFrame({"day_n": ns}, schema={"day_n": pl.Int64})
    sizes = cohorts.group_by("cohort_date", "app").agg(pl.len().cast(pl.Int64).alias("cohort_size"))
    retained = (
        cohorts.join(offsets, how="cross")
        .with_columns((pl.col("cohort_date") + pl.duration(days=pl.col("day_n"))).alias("date"))
        .join(active, on=["app", "user_id", "date"], how="semi")
        .group_by("cohort_date", "app", "day_n")
        .agg(pl.len().cast(pl.Int64).alias("retained"))
    )
    return (
        sizes.join(offsets, how="cross")
        .join(limits, how="cross")
        .filter(
            pl.col("cohort_date") >= pl.col("first") + pl.duration(days=history_days),
            pl.col("cohort_date") + pl.duration(days=pl.col("day_n")) <= pl.col("last"),
        )
        .join(retained, on=["cohort_date", "app", "day_n"], how="left")
        .with_columns(pl.col("retained").fill_null(0))
        .with_columns((pl.col("retained") / pl.col("cohort_size")).alias("rate"))
        .select(pl.col(c).cast(t) for c, t in RETENTION_SCHEMA.items())
        .sort("cohort_date", "app", "day_n")
    )


def retention_curve(cohorts: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """Pool :func:`retention`'s cohorts into one curve per app: the rate at each day N.

    ``rate`` is ``retained / users`` summed over the cohorts that can be observed at that N
    (each user weighs the same, so a day with one new user does not swing the curve); later Ns
    have fewer cohorts (right censoring), ``cohorts`` says how many.

    Returns
    -------
    polars.LazyFrame
        ``app``, ``day_n``, ``cohorts``, ``users``, ``retained``, ``rate``, sorted by app and N.
    """
    return (
        cohorts.lazy()
        .group_by("app", "day_n")
        .agg(
            pl.len().cast(pl.Int64).alias("cohorts"),
            pl.col("cohort_size").sum().cast(pl.Int64).alias("users"),
            pl.col("retained").sum().cast(pl.Int64),
        )
        .with_columns((pl.col("retained") / pl.col("users")).alias("rate"))
        .sort("app", "day_n")
    )


# -- one day from the Analytics Table (the daily job) ---------------------------------------------


def engagement_from_table(
    table: str,
    *,
    day: str | dt.date,
    client: Any = None,
    week_days: int = WEEK_DAYS,
    month_days: int = MONTH_DAYS,
    threads: int = 8,
    now: dt.datetime | None = None,
) -> pl.DataFrame:
    """One day's :func:`engagement_metrics` from the Analytics Table's trailing ``month_days`` days.

    Reads exactly the days ``day - (month_days - 1)`` .. ``day`` (one Query per day, paginated
    for days of many items: ``month_days`` Query calls for a day that fits one page per day),
    never an export, so a daily job can publish WAU/MAU once that day's rows are committed.

    Parameters
    ----------
    table
        The Analytics Table's name.
    day
        The day to compute, ``YYYY-MM-DD`` or a date.
    client, threads, now
        As for :func:`~bubbly_metrics.analytics_table.read_analytics_table`.
    week_days, month_days
        Window lengths (``week_days`` at most ``month_days``: only that many days are read).

    Returns
    -------
    polars.DataFrame
        :data:`ENGAGEMENT_SCHEMA`: a row per app active in the window (an app whose last active
        user is more than ``month_days`` days old has none).  Days the table lacks count as days
        without activity: check the ledger (:mod:`bubbly_metrics.gaps`) first.

    Notes
    -----
    Cost at 10 apps and ~100k monthly users (``bench/engagement.py --users 500000``: 250k active
    user-days in 28 days): 280 items, 5.9 MB, 28 Query calls (a day's items are 0.22 MB, one
    page), ~1,530 strongly consistent read units; assembling the items and computing take ~1.3 s
    of CPU on a shared 2-core machine, plus the calls and boto3's parsing.  The items' per-user
    games and parties maps come too: a projection on ``activeUserIds`` would cut the bytes sent
    and parsed, not the read units (DynamoDB charges a Query by the size of the items it reads,
    whatever it returns of them).
    """
    from bubbly_metrics.analytics_table import read_analytics_table

    target = parse_date(day, name="day")
    month = _window(month_days, "month_days")
    week = _window(week_days, "week_days")
    if week > month:
        raise InvalidArgumentError(f"week_days ({week}) must not exceed month_days ({month}): only those are read")
    first = target - dt.timedelta(days=month - 1)
    frame = read_analytics_table(table, start=first, end=target, client=client, threads=threads, now=now)
    metrics = engagement_metrics(frame, start=first, end=target, week_days=week, month_days=month)
    return metrics.filter(pl.col("date") == target).collect()


# -- the daily job: publish one day's WAU / MAU / stickiness to CloudWatch ---------------------------

ENGAGEMENT_METRIC_NAMES = {
    "weekly_active_users": "WeeklyActiveUsers",
    "monthly_active_users": "MonthlyActiveUsers",
    "stickiness": "Stickiness",
}
"""Per-``App`` CloudWatch metrics :func:`publish_engagement` sends (``Stickiness`` is a ratio, 0-1)."""

TOTAL_METRIC_NAMES = {"active_users": "ActiveUsers", "games_played": "GamesPlayed"}
"""Metrics :func:`publish_engagement` also sends *without* a dimension: the day's sum over all apps
(the ledger's totals), the one series the anomaly alarm watches, whatever apps appear later."""

MIN_SECONDS = 4.0
"""Seconds of the invocation that must be left to start (29 Queries, 8 at a time, and ~1.3 s of CPU at 100k
monthly users take a few seconds; the rest is margin for throttling retries)."""


def _dimension_ok(app: str) -> bool:  # as cloudwatch.DIMENSION_RULE: printable ASCII, not blank, <= 1024
    return app.isascii() and app.isprintable() and bool(app.strip(" ")) and len(app) <= 1024


def publish_engagement(
    table: str,
    *,
    day: str | dt.date,
    now: dt.datetime | None = None,
    dynamodb_client: Any = None,
    cloudwatch_client: Any = None,
    namespace: str | None = None,
    time_left: Callable[[], float | None] | None = None,
    min_seconds: float = MIN_SECONDS,
    backoff: Any = None,
) -> dict[str, Any]:
    """Publish ``day``'s WAU, MAU and stickiness per app, and its all-apps totals, to CloudWatch.

    For the daily job, once ``day``'s rows are committed to the Analytics Table (its ledger
    entry is there).  Reads the ledger of the 28 days ending ``day`` (one Query), then the
    table's days (:func:`engagement_from_table`: 28 Queries, or 7 when only the week is
    complete), never an export.  Sends, stamped ``day`` 00:00 UTC:

    - ``WeeklyActiveUsers`` per ``App`` when the 7 days ending ``day`` are in the ledger, whole;
    - ``MonthlyActiveUsers`` and ``Stickiness`` (DAU / MAU) per ``App`` when the 28 days are;
    - ``ActiveUsers`` and ``GamesPlayed`` with no dimension: the day's sums over apps, from its
      ledger entry (what the anomaly alarm watches).

    A day missing from the ledger (never aggregated, or only partially: ``allowPartial``) would
    count as a day without activity and bias the windows low, so a window holding one is not
    published, and the days are named in the report (after a deployment, the first 27 days have
    no whole month).  Re-running sends the same values (read them with ``Maximum``).

    Never raises for AWS errors: the day's rows are committed whatever happens here.

    Returns
    -------
    dict
        JSON-able: ``status`` — ``published``; ``incomplete`` (the totals, and WAU if its week
        is whole, were sent; ``missingDays`` lists the ledger's gaps); ``skipped`` (the day is
        outside CloudWatch's two-week window, or not in the ledger); ``failed`` (``error`` says
        why; nothing, or not everything, was sent) — and ``date``, ``apps``,
        ``datumsPublished``, ``metrics`` (the names sent), ``queries`` (DynamoDB Query calls:
        the ledger's and one per day read, more only for a day past 1 MB), ``seconds``, ``note``.
    """
    from bubbly_metrics.cloudwatch import NAMESPACE, OUTSIDE_WINDOW, cloudwatch_window, put_datums
    from bubbly_metrics.ledger import read_ledger

    target = parse_date(day, name="day")
    now = now or dt.datetime.now(dt.UTC)
    namespace = namespace or NAMESPACE
    started = time.perf_counter()
    report: dict[str, Any] = {
        "status": "published",
        "date": target.isoformat(),
        "apps": 0,
        "datumsPublished": 0,
        "metrics": [],
        "queries": 1,
    }

    def done(status: str, **fields: Any) -> dict[str, Any]:
        report.update(status=status, seconds=round(time.perf_counter() - started, 3), **fields)
        return report

    first_ok, last_ok = cloudwatch_window(now=now)
    if not first_ok <= target <= last_ok:
        return done("skipped", note=f"{target} is {OUTSIDE_WINDOW}")
    left = time_left() if time_left is not None else None
    if left is not None and left < min_seconds:
        return done("failed", error=f"not started: {left:.1f}s left in the invocation, {min_seconds:.0f}s needed")
    try:
        month_first = target - dt.timedelta(days=MONTH_DAYS - 1)
        ledger = read_ledger(table, start=month_first, end=target, client=dynamodb_client)
        window = [month_first + dt.timedelta(days=i) for i in range(MONTH_DAYS)]
        missing = [d for d in window if (e := ledger.get(d)) is None or e.partial]
        entry = ledger.get(target)
        if entry is None or entry.partial:
            return done("skipped", note=f"{target} is not in the ledger whole: nothing published")
        week_ok = all(d not in missing for d in window[-WEEK_DAYS:])
        month_ok = not missing
        stamp = dt.datetime(target.year, target.month, target.day, tzinfo=dt.UTC)
        datums: list[dict[str, Any]] = [
            {
                "MetricName": name,
                "Dimensions": [],
                "Timestamp": stamp,
                "Value": float(entry.totals[column]),
                "Unit": "Count",
            }
            for column, name in TOTAL_METRIC_NAMES.items()
        ]
        sent = set(TOTAL_METRIC_NAMES.values())
        if week_ok:
            length = MONTH_DAYS if month_ok else WEEK_DAYS
            report["queries"] += length
            frame = engagement_from_table(
                table, day=target, client=dynamodb_client, week_days=WEEK_DAYS, month_days=length, now=now
            )
            columns = ["weekly_active_users"] + (["monthly_active_users", "stickiness"] if month_ok else [])
            for row in frame.sort("app").iter_rows(named=True):
                if not _dimension_ok(row["app"]):
                    continue  # the day's own publish already reported it
                report["apps"] += 1
                for column in columns:
                    if row[column] is None:
                        continue
                    name = ENGAGEMENT_METRIC_NAMES[column]
                    sent.add(name)
                    datums.append(
                        {
                            "MetricName": name,
                            "Dimensions": [{"Name": "App", "Value": row["app"]}],
                            "Timestamp": stamp,
                            "Value": float(row[column]),
                            "Unit": "None" if column == "stickiness" else "Count",
                        }
                    )
        sent_report = put_datums(datums, client=cloudwatch_client, namespace=namespace, backoff=backoff)
        report["datumsPublished"] = sent_report["datumsPublished"]
        report["metrics"] = sorted(sent)
    except Exception as exc:
        published = getattr(exc, "report", None) or {}
        report["datumsPublished"] = published.get("datumsPublished", report["datumsPublished"])
        return done("failed", error=f"{type(exc).__name__}: {exc}")
    if month_ok:
        return done("published")
    shown = ", ".join(d.isoformat() for d in missing[:5]) + (
        f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    )
    held = "WeeklyActiveUsers published; " if week_ok else ""
    return done(
        "incomplete",
        missingDays=[d.isoformat() for d in missing],
        note=f"{held}{len(missing)} day(s) of the 28 ending {target} are not in the ledger whole ({shown}): "
        "windows holding them are not published (they would count those days as without activity)",
    )
