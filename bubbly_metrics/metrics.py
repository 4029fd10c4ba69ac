"""Dated events → daily per-app metrics and per-user breakdowns (SPEC §3, §4).

Everything is computed from one compact table, :func:`summarize_events`: one streaming
pass over the export groups events by ``(date, app, user_id)`` and folds ignored, malformed
and out-of-range records into a few status rows.  The metrics, per-user breakdowns and
malformed counts are then cheap eager views of it, so an export is read exactly once
whatever is asked of it, and memory is bounded by distinct user-days, not by the export.
"""

from __future__ import annotations

import polars as pl

from bubbly_metrics.dates import DateRange

__all__ = [
    "METRIC_COLUMNS",
    "METRIC_NAMES",
    "daily_metrics",
    "malformed_counts",
    "per_user",
    "summarize_events",
]

METRIC_COLUMNS = ("active_users", "games_played", "parties_created", "parties_joined")
METRIC_NAMES = {
    "active_users": "ActiveUsers",
    "games_played": "GamesPlayed",
    "parties_created": "PartiesCreated",
    "parties_joined": "PartiesJoined",
}
"""Column name → CloudWatch metric name."""

COUNTED, IGNORED, MALFORMED, OUTSIDE = "counted", "ignored", "malformed", "outside_range"


def summarize_events(events: pl.LazyFrame, date_range: DateRange) -> pl.LazyFrame:
    """Group events into the compact table every result is derived from.

    Columns: ``status`` (``counted``, ``ignored``, ``malformed``, ``outside_range``),
    ``date``, ``app``, ``user_id`` (set on ``counted`` rows), ``reason`` and ``file`` (set on
    ``malformed`` rows), ``records``, ``games``, ``parties_created``, ``parties_joined``,
    and ``example_model_id``/``example_owner`` (one example per malformed group, keys only).
    """
    in_range = pl.col("date").is_between(date_range.start, date_range.end)
    status = (
        pl.when(pl.col("reason").is_not_null())
        .then(pl.lit(MALFORMED))
        .when(pl.col("kind").is_null())
        .then(pl.lit(IGNORED))
        .when(in_range)
        .then(pl.lit(COUNTED))
        .otherwise(pl.lit(OUTSIDE))
    )
    counted = pl.col("status") == COUNTED
    malformed = pl.col("status") == MALFORMED
    kind = pl.col("kind")
    return (
        events.with_columns(status.alias("status"))
        .select(
            "status",
            *(pl.when(counted).then(pl.col(c)).alias(c) for c in ("date", "app", "user_id")),
            *(pl.when(malformed).then(pl.col(c)).alias(c) for c in ("reason", "file")),
            (counted & (kind == "session")).alias("_s"),
            (counted & (kind == "party")).alias("_p"),
            (counted & (kind == "member")).alias("_m"),
            pl.when(malformed).then(pl.col("model_id")).alias("_mid"),
            pl.when(malformed).then(pl.col("owner")).alias("_own"),
        )
        .group_by("status", "date", "app", "user_id", "reason", "file")
        .agg(
            pl.len().cast(pl.Int64).alias("records"),
            pl.col("_s").sum().cast(pl.Int64).alias("games"),
            pl.col("_p").sum().cast(pl.Int64).alias("parties_created"),
            pl.col("_m").sum().cast(pl.Int64).alias("parties_joined"),
            pl.col("_mid").drop_nulls().first().alias("example_model_id"),
            pl.col("_own").drop_nulls().first().alias("example_owner"),
        )
    )


def per_user(summary: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Per-user breakdown: one row per ``(date, app, user_id)`` with any activity.

    Columns ``date``, ``app``, ``user_id``, ``games`` (sessions that day; > 0 means the
    user was active), ``parties_created``, ``parties_joined``.
    """
    return (
        summary.lazy()
        .filter(pl.col("status") == COUNTED)
        .select("date", "app", "user_id", "games", "parties_created", "parties_joined")
        .sort("date", "app", "user_id")
    )


def daily_metrics(summary: pl.DataFrame | pl.LazyFrame, date_range: DateRange, *, dense: bool) -> pl.LazyFrame:
    """Daily per-app metrics from :func:`summarize_events`.

    With ``dense=True`` (backfill) every day of ``date_range`` × every app seen in it has a
    row, zeros where nothing happened.  Otherwise (incremental) only apps with activity.
    """
    users = per_user(summary)
    metrics = users.group_by("date", "app").agg(
        (pl.col("games") > 0).sum().cast(pl.Int64).alias("active_users"),
        pl.col("games").sum().cast(pl.Int64).alias("games_played"),
        pl.col("parties_created").sum().cast(pl.Int64).alias("parties_created"),
        pl.col("parties_joined").sum().cast(pl.Int64).alias("parties_joined"),
    )
    if dense:
        days = pl.LazyFrame({"date": pl.date_range(date_range.start, date_range.end, "1d", eager=True)})
        apps = metrics.select("app").unique()
        metrics = (
            days.join(apps, how="cross")
            .join(metrics, on=["date", "app"], how="left")
            .with_columns(pl.col(c).fill_null(0) for c in METRIC_COLUMNS)
        )
    return metrics.select("date", "app", *METRIC_COLUMNS).sort("date", "app")


def malformed_counts(summary: pl.DataFrame | pl.LazyFrame, *, by_file: bool = False) -> pl.LazyFrame:
    """Malformed records per reason (and per data file with ``by_file=True``), with one example."""
    keys = ["reason", "file"] if by_file else ["reason"]
    return (
        summary.lazy()
        .filter(pl.col("status") == MALFORMED)
        .group_by(keys)
        .agg(
            pl.col("records").sum().alias("records"),
            pl.col("example_model_id").drop_nulls().first(),
            pl.col("example_owner").drop_nulls().first(),
        )
        .sort(keys)
    )
