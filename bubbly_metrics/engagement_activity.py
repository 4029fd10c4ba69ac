"""Who was active: the distinct ``(date, app, user_id)`` of users with a session, from any source.

What :mod:`bubbly_metrics.engagement` computes WAU, MAU, stickiness and retention from (the
users :data:`ActiveUsers <bubbly_metrics.metrics.METRIC_NAMES>` counts), read from an export
(``AggregateResult`` or its ``per_user`` frame) or from the Analytics Table's ``activeUserIds``
(:func:`~bubbly_metrics.analytics_table.read_analytics_table`), the same numbers either way.

- :func:`active_user_days` — any of those sources as one LazyFrame of distinct triples;
- :func:`read_activity` reads a full export, then the daily runs of the incremental exports
  after it.

Both are importable from :mod:`bubbly_metrics.engagement`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import polars as pl

from bubbly_metrics.dates import DateRange, parse_date
from bubbly_metrics.exceptions import InvalidArgumentError

__all__ = ["ACTIVE_SCHEMA", "Source", "active_user_days", "read_activity"]

ACTIVE_SCHEMA: dict[str, pl.DataType] = {"date": pl.Date(), "app": pl.String(), "user_id": pl.String()}
"""Columns of :func:`active_user_days`."""


logger = logging.getLogger("bubbly_metrics.engagement")  # the name its log lines have always had

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
        if "games" in columns:  # per-user activity: active means at least one session (docs/rules.md#metrics)
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
        exports after it (:func:`~bubbly_metrics.reconciliation.daily_runs_table`).  Each day comes
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
    daily runs do (:func:`~bubbly_metrics.reconciliation.daily_runs_table`); a day no incremental
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
    from bubbly_metrics.pipeline import aggregate, plan_days
    from bubbly_metrics.reconciliation import daily_runs_table

    # The range as asked: it runs past the full export on purpose when daily runs follow it.
    plan = plan_days(
        source, mode="backfill", start=start, end=end, now=now, storage_options=storage_options, to_export=False
    )
    export, wanted = plan.export, plan.date_range
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
