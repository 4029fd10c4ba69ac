"""Plots of engagement (:mod:`bubbly_metrics.engagement`), for notebooks.

As :mod:`bubbly_metrics.plots`: matplotlib is imported when a plot is drawn, and figures are
built without pyplot; a figure returned as a cell's last expression is displayed inline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import polars as pl

from bubbly_metrics.engagement import retention_curve
from bubbly_metrics.exceptions import InvalidArgumentError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_active_users", "plot_retention_curve", "plot_retention_heatmap", "plot_stickiness"]

_SERIES = (
    ("active_users", "daily (DAU)"),
    ("weekly_active_users", "weekly (WAU)"),
    ("monthly_active_users", "monthly (MAU)"),
)


def _collected(frame: pl.DataFrame | pl.LazyFrame, columns: Sequence[str], name: str) -> pl.DataFrame:
    data = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    if not isinstance(data, pl.DataFrame) or not set(columns) <= set(data.columns):
        raise InvalidArgumentError(f"{name} needs a frame with columns {', '.join(columns)}")
    return data


def _apps(data: pl.DataFrame, apps: Sequence[str] | None) -> list[str]:
    present = sorted(data["app"].unique().to_list())
    if apps is None:
        return present
    missing = [a for a in apps if a not in present]
    if missing:
        raise InvalidArgumentError(f"apps {missing} are not in the frame (it has {present})")
    return list(apps)


def plot_active_users(
    engagement: pl.DataFrame | pl.LazyFrame,
    *,
    apps: Sequence[str] | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Draw DAU, WAU and MAU over time, one panel per app.

    Parameters
    ----------
    engagement
        :func:`~bubbly_metrics.engagement_metrics` output.
    apps
        The apps to draw (default: all, alphabetically).
    figsize
        Figure size in inches (default: 11 wide, 2.2 per app).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    data = _collected(engagement, ["date", "app", *(c for c, _ in _SERIES)], "plot_active_users")
    chosen = _apps(data, apps)
    fig = Figure(figsize=figsize or (11, 2.2 * max(len(chosen), 1) + 0.6), layout="constrained")
    axes = fig.subplots(max(len(chosen), 1), 1, sharex=True, squeeze=False)[:, 0]
    for ax, app in zip(axes, chosen, strict=False):
        rows = data.filter(pl.col("app") == app).sort("date")
        for column, label in _SERIES:
            # Null (a window reaching before the data) is a gap in the line, not a zero.
            ax.plot(
                rows["date"].to_list(), rows[column].cast(pl.Float64).fill_null(float("nan")).to_list(), label=label
            )
        ax.set_title(app, loc="left")
        ax.set_ylabel("users")
        ax.set_ylim(bottom=0)
    axes[0].legend(loc="upper left", ncols=3, fontsize="small")
    fig.suptitle("Active users per app: daily, trailing week, trailing 28 days")
    return fig


def plot_stickiness(
    engagement: pl.DataFrame | pl.LazyFrame,
    *,
    apps: Sequence[str] | None = None,
    figsize: tuple[float, float] = (11, 3.5),
) -> Figure:
    """Draw stickiness (DAU / MAU) over time, one line per app.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.ticker as mticker
    from matplotlib.figure import Figure

    data = _collected(engagement, ["date", "app", "stickiness"], "plot_stickiness")
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    for app in _apps(data, apps):
        rows = data.filter(pl.col("app") == app).sort("date")
        ax.plot(rows["date"].to_list(), rows["stickiness"].fill_null(float("nan")).to_list(), label=app)
    ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0))
    ax.set_ylim(bottom=0)
    ax.set_ylabel("DAU / MAU")
    ax.legend(loc="upper left", fontsize="small")
    fig.suptitle("Stickiness: the share of the last 28 days' users who played that day")
    return fig


def plot_retention_curve(
    cohorts: pl.DataFrame | pl.LazyFrame,
    *,
    apps: Sequence[str] | None = None,
    figsize: tuple[float, float] = (8, 3.5),
) -> Figure:
    """Draw each app's retention curve: pooled rate at each day N (:func:`~bubbly_metrics.retention_curve`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.ticker as mticker
    from matplotlib.figure import Figure

    data = _collected(cohorts, ["cohort_date", "app", "day_n", "cohort_size", "retained"], "plot_retention_curve")
    curve = retention_curve(data).collect()
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    if curve.is_empty():
        ax.text(0.5, 0.5, "no cohort can be observed yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    for app in _apps(curve, apps):
        rows = curve.filter(pl.col("app") == app)
        ax.plot(rows["day_n"].to_list(), rows["rate"].to_list(), marker="o", label=app)
    ax.set_xticks(sorted(curve["day_n"].unique().to_list()))
    ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("day N after the first session")
    ax.set_ylabel("active on day N")
    ax.legend(fontsize="small")
    fig.suptitle("Retention of new users, all cohorts pooled")
    return fig


def plot_retention_heatmap(
    cohorts: pl.DataFrame | pl.LazyFrame,
    *,
    app: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Draw one app's cohort × day-N heat map of retention rates, each cell labelled.

    A cell reads "rate (retained/cohort size)"; an empty cell is a day N after the data's end.
    ``app`` defaults to the app with the most new users in the frame.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import numpy as np
    from matplotlib.figure import Figure

    data = _collected(
        cohorts, ["cohort_date", "app", "day_n", "cohort_size", "retained", "rate"], "plot_retention_heatmap"
    )
    if app is None and not data.is_empty():
        first_n = data.filter(pl.col("day_n") == pl.col("day_n").min())
        app = (
            first_n.group_by("app")
            .agg(pl.col("cohort_size").sum())
            .sort("cohort_size", "app", descending=[True, False])["app"][0]
        )
    rows = data.filter(pl.col("app") == app)
    if rows.is_empty():
        raise InvalidArgumentError(f"app {app!r} has no cohort in the frame (apps: {sorted(data['app'].unique())})")
    ns = sorted(rows["day_n"].unique().to_list())
    dates = sorted(rows["cohort_date"].unique().to_list())
    values = np.full((len(dates), len(ns)), np.nan)
    labels = [["" for _ in ns] for _ in dates]
    for row in rows.iter_rows(named=True):
        i, j = dates.index(row["cohort_date"]), ns.index(row["day_n"])
        values[i, j] = row["rate"]
        labels[i][j] = f"{row['rate']:.0%} ({row['retained']}/{row['cohort_size']})"
    fig = Figure(figsize=figsize or (2.0 * len(ns) + 2.5, 0.28 * len(dates) + 1.4), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="viridis", vmin=0, interpolation="nearest")
    for i, line in enumerate(labels):
        for j, text in enumerate(line):
            if text:
                light = values[i, j] < 0.5 * max(float(np.nanmax(values)), 1e-9)
                ax.text(j, i, text, ha="center", va="center", fontsize="x-small", color="white" if light else "black")
    ax.set_xticks(range(len(ns)), [f"day {n}" for n in ns])
    ax.set_yticks(range(len(dates)), [d.isoformat() for d in dates], fontsize="small")
    ax.set_ylabel("cohort (first day active)")
    fig.colorbar(image, ax=ax, label="retained / cohort size")
    fig.suptitle(f"Retention by cohort: {app}")
    return fig
