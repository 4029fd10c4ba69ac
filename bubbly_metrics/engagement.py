"""Engagement beyond daily counts: WAU, MAU, stickiness and cohort retention per app.

Daily counts cannot be summed into weekly or monthly ones (a user active on three days of a
week is one weekly user, not three), so everything here is computed from *who* was active:
the distinct ``(date, app, user_id)`` triples of users with at least one session that day —
the users :data:`ActiveUsers <bubbly_metrics.metrics.METRIC_NAMES>` counts.  They come from
an export (``AggregateResult`` or its ``per_user`` frame) or from the Analytics Table's
``activeUserIds`` (:func:`~bubbly_metrics.analytics_table.read_analytics_table`), and give the
same numbers either way.

- :func:`~bubbly_metrics.engagement_activity.active_user_days` — any of those sources as one
  LazyFrame of distinct triples; :func:`~bubbly_metrics.engagement_activity.read_activity` reads
  a full export, then the daily runs of the incremental exports after it (both in
  :mod:`bubbly_metrics.engagement_activity`, and importable from here);
- :func:`engagement_metrics` — per ``(date, app)``: ``active_users``,
  ``weekly_active_users``, ``monthly_active_users`` and ``stickiness`` (DAU / MAU);
- :func:`retention` — per cohort of new users and day N: cohort size, users retained, rate;
  :func:`retention_curve` pools the cohorts of each app into one rate per day N;
- :func:`~bubbly_metrics.engagement_publish.engagement_from_table` — one day's figures from the
  Analytics Table's last ``month_days`` days (a bounded number of Query calls), for a daily job;
  :func:`~bubbly_metrics.engagement_publish.publish_engagement` sends them to CloudWatch (the
  Aggregator, after each daily run).  Both live in :mod:`bubbly_metrics.engagement_publish` and
  are importable from here too.

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
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import polars as pl

from bubbly_metrics.dates import parse_date
from bubbly_metrics.engagement_activity import ACTIVE_SCHEMA, Source, _range_of, active_user_days, read_activity
from bubbly_metrics.exceptions import PARAM, InvalidArgumentError

if TYPE_CHECKING:  # pragma: no cover  (the daily job's names, importable from here: __getattr__ below)
    from bubbly_metrics.engagement_publish import (  # noqa: F401
        ENGAGEMENT_METRIC_NAMES,
        MIN_SECONDS,
        TOTAL_METRIC_NAMES,
        engagement_from_table,
        publish_engagement,
    )

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


def _window(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{PARAM} must be a whole number of days >= 1, got {value!r}", param=name)
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
    return _engagement_frame(active.cache(), first, last, week=week, month=month, partial_windows=partial_windows)


def _engagement_frame(
    active: pl.LazyFrame, first: pl.Expr, last: pl.Expr, *, week: int, month: int, partial_windows: bool
) -> pl.LazyFrame:
    """:func:`engagement_metrics` of the active triples ``active``, over the days ``first`` .. ``last``."""
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
        raise InvalidArgumentError(f"{PARAM} must be a list of whole numbers of days >= 1, got {days!r}", param="days")
    values = list(days)
    if not values or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in values):
        raise InvalidArgumentError(
            f"{PARAM} must be a list of whole numbers of days >= 1, got {values!r}", param="days"
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
            f"{PARAM} must be a whole number of days >= 0, got {history_days!r}", param="history_days"
        )
    active, first, last = _bounds(source, start, end)
    return _retention_frame(active.cache(), first, last, ns=ns, history_days=history_days)


def _retention_frame(
    active: pl.LazyFrame, first: pl.Expr, last: pl.Expr, *, ns: list[int], history_days: int
) -> pl.LazyFrame:
    """:func:`retention` of the active triples ``active``, over the days ``first`` .. ``last``."""
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


# -- the daily job's names, defined in bubbly_metrics.engagement_publish ---------------------------

_DAILY_JOB = {
    "ENGAGEMENT_METRIC_NAMES",
    "MIN_SECONDS",
    "TOTAL_METRIC_NAMES",
    "engagement_from_table",
    "publish_engagement",
}


def __getattr__(name: str) -> Any:
    """The daily job's names (:mod:`bubbly_metrics.engagement_publish`), imported when first used."""
    if name in _DAILY_JOB:
        from bubbly_metrics import engagement_publish

        return getattr(engagement_publish, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
