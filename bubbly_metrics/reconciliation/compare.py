"""Comparing expected daily metrics with what a target holds, per ``(date, app, metric)``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from bubbly_metrics.exceptions import InvalidArgumentError
from bubbly_metrics.metrics import METRIC_COLUMNS

__all__ = ["COMPARISON_SCHEMA", "STATUSES", "TARGETS", "compare_metrics", "compare_per_user"]

TARGETS = ("analytics_table", "cloudwatch")
"""What an export can be reconciled against (values of the ``target`` column)."""

MATCH, DIFFERS, OUTSIDE_WINDOW = "match", "differs", "outside_window"
STATUSES = (MATCH, DIFFERS, OUTSIDE_WINDOW)
"""Values of ``status``: equal, different, or not compared (outside CloudWatch's window)."""

METRIC_ORDER = {m: i for i, m in enumerate(METRIC_COLUMNS)}

KEYS = ("date", "app", "metric")

COMPARISON_SCHEMA: dict[str, pl.DataType] = {
    "target": pl.String(),
    "date": pl.Date(),
    "app": pl.String(),
    "metric": pl.String(),
    "expected": pl.Int64(),
    "actual": pl.Int64(),
    "difference": pl.Int64(),
    "relative_difference": pl.Float64(),
    "status": pl.String(),
}
"""Columns of :func:`compare_metrics`; :func:`classify_differences` adds the evidence
columns, ``cause`` and ``detail``."""


def metrics_frame(frame: Any, name: str) -> pl.DataFrame:
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    if not isinstance(frame, pl.DataFrame):
        raise InvalidArgumentError(f"{name} must be a polars DataFrame, got {type(frame).__name__}")
    missing = [c for c in ("date", "app", *METRIC_COLUMNS) if c not in frame.columns]
    if missing:
        raise InvalidArgumentError(f"{name} lacks column(s) {missing}; it has {frame.columns}")
    return frame.select(
        pl.col("date").cast(pl.Date),
        pl.col("app").cast(pl.String),
        *(pl.col(c).cast(pl.Int64) for c in METRIC_COLUMNS),
    )


def _long(frame: pl.DataFrame, value: str) -> pl.DataFrame:
    return frame.unpivot(index=["date", "app"], on=list(METRIC_COLUMNS), variable_name="metric", value_name=value)


def check_target(target: str) -> None:
    if target not in TARGETS:
        raise InvalidArgumentError(f"target must be one of {TARGETS}, got {target!r}")


def compare_metrics(
    expected: pl.DataFrame,
    actual: pl.DataFrame,
    *,
    target: str,
    window: tuple[dt.date, dt.date] | None = None,
) -> pl.DataFrame:
    """Compare expected daily metrics with what a target holds, per ``(date, app, metric)``.

    Parameters
    ----------
    expected
        Daily metrics computed from the export (``AggregateResult.metrics``).
    actual
        What the target holds, shaped like ``expected`` (e.g. :func:`read_analytics_table`
        or :func:`read_cloudwatch_metrics` output; extra columns are ignored).  A missing
        row or a null value means the target holds nothing there.
    target
        ``"analytics_table"`` or ``"cloudwatch"`` (the ``target`` column).
    window
        Inclusive first and last day the target can hold (CloudWatch's window, see
        :func:`~bubbly_metrics.cloudwatch.cloudwatch_window`); days outside it get status
        ``"outside_window"`` and are not compared.

    Returns
    -------
    polars.DataFrame
        :data:`COMPARISON_SCHEMA`, one row per ``(date, app, metric)`` present on either
        side.  ``difference`` is ``actual - expected`` (a missing value counts as 0);
        ``relative_difference`` is ``difference / max(expected, 1)``, so a missing row is
        -1.0 (-100 %).  ``status`` is ``"match"``, ``"differs"`` or ``"outside_window"``.
        A row missing from the target where nothing was expected is a match: incremental
        runs write no row for an app without activity.
    """
    check_target(target)
    expected = metrics_frame(expected, "expected")
    actual = metrics_frame(actual, "actual")
    if window is not None:
        first, last = window
        if not isinstance(first, dt.date) or not isinstance(last, dt.date) or first > last:
            raise InvalidArgumentError(f"window must be (first, last) dates, first <= last; got {window!r}")
    joined = _long(expected, "expected").join(_long(actual, "actual"), on=list(KEYS), how="full", coalesce=True)
    exp, act = pl.col("expected"), pl.col("actual")
    outside = ~pl.col("date").is_between(window[0], window[1]) if window is not None else pl.lit(False)
    difference = act.fill_null(0) - exp.fill_null(0)
    status = (
        pl.when(outside)
        .then(pl.lit(OUTSIDE_WINDOW))
        .when(difference != 0)
        .then(pl.lit(DIFFERS))
        .otherwise(pl.lit(MATCH))
    )
    return (
        joined.with_columns(
            pl.lit(target).alias("target"),
            pl.when(~outside).then(difference).alias("difference"),
            pl.when(~outside)
            .then(difference.cast(pl.Float64) / pl.max_horizontal(exp.fill_null(0), pl.lit(1)).cast(pl.Float64))
            .alias("relative_difference"),
            status.alias("status"),
        )
        .select(list(COMPARISON_SCHEMA))
        .cast(COMPARISON_SCHEMA)  # type: ignore[arg-type]
        .sort("date", "app", pl.col("metric").replace_strict(METRIC_ORDER, return_dtype=pl.Int8))
    )


def compare_per_user(per_user: pl.DataFrame, table: pl.DataFrame) -> pl.DataFrame:
    """Per-user differences between an export's activity and the Analytics Table's.

    Only ``(date, app)`` rows the table holds are compared (a missing row is already a
    difference of its own).

    Parameters
    ----------
    per_user
        ``AggregateResult.per_user``: date, app, user_id, games, parties_created.
    table
        :func:`~bubbly_metrics.analytics_table.read_analytics_table` output.

    Returns
    -------
    polars.DataFrame
        ``date``, ``app``, ``user_id``, ``expected_games``, ``actual_games``,
        ``expected_parties_created``, ``actual_parties_created`` for users whose games or
        parties created differ, sorted.
    """
    from bubbly_metrics.analytics_table import per_user_from_table

    stored = per_user_from_table(table)
    mine = (
        per_user.select("date", "app", "user_id", "games", "parties_created")
        .with_columns(pl.col("date").cast(pl.Date))
        .join(table.select("date", "app"), on=["date", "app"], how="semi")
        .filter((pl.col("games") > 0) | (pl.col("parties_created") > 0))
    )
    both = mine.join(stored, on=["date", "app", "user_id"], how="full", coalesce=True, suffix="_actual")
    return (
        both.select(
            "date",
            "app",
            "user_id",
            pl.col("games").fill_null(0).cast(pl.Int64).alias("expected_games"),
            pl.col("games_actual").fill_null(0).cast(pl.Int64).alias("actual_games"),
            pl.col("parties_created").fill_null(0).cast(pl.Int64).alias("expected_parties_created"),
            pl.col("parties_created_actual").fill_null(0).cast(pl.Int64).alias("actual_parties_created"),
        )
        .filter(
            (pl.col("expected_games") != pl.col("actual_games"))
            | (pl.col("expected_parties_created") != pl.col("actual_parties_created"))
        )
        .sort("date", "app", "user_id")
    )


def empty_comparison() -> pl.DataFrame:
    return pl.DataFrame(schema=COMPARISON_SCHEMA)


def empty_metrics() -> pl.DataFrame:
    return pl.DataFrame(schema={"date": pl.Date, "app": pl.String, **{c: pl.Int64 for c in METRIC_COLUMNS}})
