"""Heat-map data: a day × app matrix of relative differences."""

from __future__ import annotations

import polars as pl

from bubbly_metrics.exceptions import InvalidArgumentError
from bubbly_metrics.metrics import METRIC_COLUMNS
from bubbly_metrics.reconciliation.compare import OUTSIDE_WINDOW, check_target

__all__ = ["relative_difference_matrix"]


def relative_difference_matrix(
    comparison: pl.DataFrame,
    *,
    target: str = "analytics_table",
    metric: str | None = None,
) -> pl.DataFrame:
    """Day × app matrix of relative differences, for a heat map.

    Parameters
    ----------
    comparison
        :func:`compare_metrics` / :func:`classify_differences` output.
    target
        Which target's comparison to use.
    metric
        One metric column, or ``None`` for the largest difference (by absolute value, sign
        kept) over the four metrics.

    Returns
    -------
    polars.DataFrame
        ``date`` then one Float64 column per app (sorted): ``(actual - expected) / expected``,
        0.0 where values match, ``+inf`` where nothing was expected but the target holds
        something (no ratio exists: 0 -> 1 is not a doubling), null where nothing was compared
        (outside CloudWatch's window).
    """
    check_target(target)
    if metric is not None and metric not in METRIC_COLUMNS:
        raise InvalidArgumentError(f"metric must be one of {METRIC_COLUMNS} or None, got {metric!r}")
    rows = comparison.filter(pl.col("target") == target)
    if metric is not None:
        rows = rows.filter(pl.col("metric") == metric)
    expected = pl.col("expected").fill_null(0)
    rel = (
        pl.when(pl.col("status") == OUTSIDE_WINDOW)
        .then(None)
        .when(pl.col("difference") == 0)
        .then(0.0)
        .when(expected == 0)
        .then(float("inf"))
        .otherwise(pl.col("difference").cast(pl.Float64) / expected.cast(pl.Float64))
    )
    cells = (
        rows.with_columns(rel.alias("relative_difference"))
        .group_by("date", "app")
        .agg(
            pl.col("relative_difference")
            .sort_by(pl.col("relative_difference").abs(), descending=True, nulls_last=True)
            .first()
            .alias("value")
        )
        .sort("date", "app")
    )
    if cells.height == 0:
        return pl.DataFrame(schema={"date": pl.Date})
    apps = sorted(cells["app"].unique().to_list())
    wide = cells.pivot(on="app", index="date", values="value", sort_columns=True).sort("date")
    return wide.select(
        "date",
        *(pl.col(a).cast(pl.Float64) if a in wide.columns else pl.lit(None, pl.Float64).alias(a) for a in apps),
    )
