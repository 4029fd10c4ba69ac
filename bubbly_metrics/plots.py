"""Plots of a reconciliation (:class:`~bubbly_metrics.reconciliation.ReconcileResult`), for notebooks.

matplotlib is imported when a plot is drawn, never on ``import bubbly_metrics``; it is in
the ``notebooks`` extra.  The functions build :class:`matplotlib.figure.Figure` objects
without pyplot (no global state): in Jupyter, a figure returned as a cell's last expression
is displayed by the inline backend.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import polars as pl

from bubbly_metrics.exceptions import InvalidArgumentError
from bubbly_metrics.metrics import METRIC_COLUMNS
from bubbly_metrics.reconciliation import TARGETS, relative_difference_matrix

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from bubbly_metrics.reconciliation import ReconcileResult

__all__ = ["plot_difference_heatmap", "plot_metrics"]

_TARGET_LABELS = {"analytics_table": "the Analytics Table", "cloudwatch": "CloudWatch"}

# Each colour means one thing.  Red is "differs" (rings, and the band on a day that stands
# out); grey is "not compared" (outside CloudWatch's window); apps take the other tab10 colours,
# so no app is drawn in red.
_DIFFERS = "#c62828"
_DIFFERS_BAND = "#f4c7c3"
_NOT_COMPARED = "0.85"
_APP_COLORS = [f"C{i}" for i in range(10) if i != 3]  # C3 is tab10's red
#: A band marks the days that differ only while they are the exception: over more than this
#: share of the days plotted it would cover nearly everything and highlight nothing.
_BAND_MAX_SHARE = 1 / 3
#: Values are written in the heat map's cells up to this many cells (beyond, they are unreadable).
_MAX_ANNOTATED_CELLS = 600


def _label(result: ReconcileResult, target: str | None) -> str:
    """How a target is named: the Analytics Table may stand for a snapshot or the daily runs."""
    if target == "analytics_table" and result.table_source != "analytics_table":
        return {"snapshot": "the snapshot", "daily_runs": "the daily runs"}[result.table_source]
    return _TARGET_LABELS.get(target or "", "")


def _target(result: ReconcileResult, target: str | None) -> str | None:
    if target is None:
        return result.targets[0] if result.targets else None
    if target not in TARGETS:
        raise InvalidArgumentError(f"target must be one of {TARGETS} or None, got {target!r}")
    if target not in result.targets:
        raise InvalidArgumentError(f"{target} was not compared in this reconciliation ({result.targets or 'none'})")
    return target


def _day_span(first: dt.date, last: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """From the middle of the day before ``first`` to the middle of ``last`` (days are points)."""
    half = dt.timedelta(hours=12)
    return dt.datetime.combine(first, dt.time()) - half, dt.datetime.combine(last, dt.time()) + half


def _shade_outside_window(ax: Any, result: ReconcileResult, target: str | None) -> None:
    if target != "cloudwatch" or result.cloudwatch_window is None:
        return
    first = result.cloudwatch_window[0]
    start = result.date_range.start
    if start < first:
        ax.axvspan(*_day_span(start, first - dt.timedelta(days=1)), color=_NOT_COMPARED, zorder=0)


def plot_metrics(
    result: ReconcileResult,
    *,
    target: str | None = None,
    metrics: Sequence[str] = METRIC_COLUMNS,
    apps: Sequence[str] | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Draw one time series per metric, a line per app, with the days that differ marked.

    Solid lines are the metrics expected from the export; dashed lines what ``target``
    holds; red rings mark each ``(date, app)`` whose value differs.  While the days on which a
    plotted app differs are the exception (at most a third of the days), a light red band marks
    each of them; beyond that a band would cover nearly every day, so the panel says on how many
    days values differ instead.  Red means "differs" only: apps are drawn in the other
    colours.  For CloudWatch, days outside its two-week window are shaded grey (not compared).
    Panels are labelled with the metric columns (``active_users``, ...), as in the tables.

    Parameters
    ----------
    result
        A :func:`~bubbly_metrics.reconcile` result.
    target
        ``"analytics_table"`` or ``"cloudwatch"``; default: the first target compared
        (none: expected values only).
    metrics
        Metric columns to plot, one panel each.
    apps
        Apps to plot (default: every app).
    figsize
        Figure size in inches (default: 11 wide, 2.4 per panel).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    target = _target(result, target)
    unknown = [m for m in metrics if m not in METRIC_COLUMNS]
    if unknown or not metrics:
        raise InvalidArgumentError(f"metrics must be a non-empty selection of {METRIC_COLUMNS}, got {list(metrics)}")
    rows = (
        result.comparison.filter(pl.col("target") == target)
        if target is not None
        else pl.DataFrame(schema=result.comparison.schema)
    )
    all_apps = sorted(set(result.expected["app"].to_list()) | set(rows["app"].to_list()))
    apps = list(apps) if apps is not None else all_apps
    fig = Figure(figsize=figsize or (11, 2.4 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    colors = [_APP_COLORS[i % len(_APP_COLORS)] for i in range(len(apps))]
    for ax, metric in zip(axes, metrics, strict=True):
        _shade_outside_window(ax, result, target)
        metric_rows = rows.filter((pl.col("metric") == metric) & pl.col("app").is_in(apps))
        differing = metric_rows.filter(pl.col("status") == "differs")
        _mark_differing_days(ax, differing, result.date_range.days)
        for app, color in zip(apps, colors, strict=True):
            _draw_app(ax, result, metric, metric_rows, differing, app, color)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(
        handles=_legend_handles(result, target, apps, colors),
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        frameon=False,
    )
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(axes[-1].xaxis.get_major_locator()))
    title = "Expected from the export" + (f" vs {_label(result, target)}" if target else "")
    fig.suptitle(f"{title}, {result.date_range}")
    return fig


def _mark_differing_days(ax: Any, differing: pl.DataFrame, plotted_days: int) -> None:
    """A band on each day that differs while they are the exception; else how many days differ."""
    differing_days = differing["date"].unique().sort().to_list()
    if len(differing_days) <= _BAND_MAX_SHARE * plotted_days:
        for day in differing_days:
            ax.axvspan(*_day_span(day, day), color=_DIFFERS_BAND, zorder=0)
    else:
        ax.text(
            0.005,
            0.97,
            f"differs on {len(differing_days)} of {plotted_days} days",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
            color=_DIFFERS,
        )


def _draw_app(
    ax: Any,
    result: ReconcileResult,
    metric: str,
    metric_rows: pl.DataFrame,
    differing: pl.DataFrame,
    app: str,
    color: str,
) -> None:
    """One app on one panel: expected (solid), held by the target (dashed), rings where they differ."""
    exp = result.expected.filter(pl.col("app") == app).sort("date")
    ax.plot(exp["date"].to_list(), exp[metric].to_list(), color=color, lw=1.4, label=app)
    held = metric_rows.filter((pl.col("app") == app) & (pl.col("status") != "outside_window")).sort("date")
    if held.height:
        ax.plot(
            held["date"].to_list(),
            held["actual"].fill_null(0).to_list(),
            color=color,
            lw=1.0,
            ls="--",
            alpha=0.8,
        )
    marks = differing.filter(pl.col("app") == app)
    if marks.height:
        ax.scatter(
            marks["date"].to_list(),
            marks["actual"].fill_null(0).to_list(),
            s=46,
            facecolors="none",
            edgecolors=_DIFFERS,
            linewidths=1.5,
            zorder=3,
        )


def _legend_handles(result: ReconcileResult, target: str | None, apps: list[str], colors: list[str]) -> list[Any]:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, lw=1.4, label=a) for a, c in zip(apps, colors, strict=True)]
    if target is not None:
        handles += [
            Line2D([], [], color="0.3", lw=1.0, ls="--", label=f"held by {_label(result, target)}"),
            Line2D([], [], ls="", marker="o", mfc="none", mec=_DIFFERS, label="differs"),
        ]
    return handles


def plot_difference_heatmap(
    result: ReconcileResult,
    *,
    target: str | None = None,
    metric: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Draw a heat map, day × app, of the relative difference ``(actual - expected) / expected``.

    Each cell is the largest relative difference (by absolute value, sign kept) over the
    metrics, or over ``metric`` alone, written in the cell while the map is small enough to
    read (up to 600 cells).  Red: the target holds more than the export says; blue: less
    (-100 % is a missing row); white: equal; grey: not compared (outside CloudWatch's
    window).  A cell where nothing was expected but the target holds something has no ratio
    (0 -> 1 is not a doubling): it is hatched and labelled ``new``, outside the colour scale.
    The scale is symmetric around 0 and reaches the largest difference shown, uncapped.

    Parameters
    ----------
    result
        A :func:`~bubbly_metrics.reconcile` result.
    target
        ``"analytics_table"`` or ``"cloudwatch"``; default: the first target compared.
    metric
        One metric column, or ``None`` for all four.
    figsize
        Figure size in inches (default: 11 wide, 0.45 per app + 1.6).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib
    import matplotlib.ticker as mticker
    import numpy as np
    from matplotlib.figure import Figure

    target = _target(result, target)
    matrix = (
        relative_difference_matrix(result.comparison, target=target, metric=metric)
        if target is not None
        else pl.DataFrame(schema={"date": pl.Date})
    )
    apps = [c for c in matrix.columns if c != "date"]
    fig = Figure(figsize=figsize or (11, 0.45 * max(len(apps), 1) + 1.6), layout="constrained")
    ax = fig.subplots()
    what = metric if metric else "largest of the four metrics"
    if not apps or matrix.height == 0:
        ax.text(0.5, 0.5, "nothing compared", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        fig.suptitle(f"Relative difference ({what})")
        return fig
    values = matrix.select(apps).to_numpy().astype(float).T  # apps × days; NaN = not compared, inf = new
    new = np.isposinf(values)
    ratios = np.where(new, np.nan, values)
    finite = np.abs(ratios[np.isfinite(ratios)])
    limit = float(max(finite.max() if finite.size else 0.0, 0.01))
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad=_NOT_COMPARED)
    image = ax.imshow(
        np.ma.masked_invalid(ratios),
        aspect="auto",
        cmap=cmap,
        vmin=-limit,
        vmax=limit,
        interpolation="nearest",
    )
    _hatch_new_cells(ax, new)
    if values.size <= _MAX_ANNOTATED_CELLS:
        _write_cells(ax, values, limit)
    _label_axes(ax, matrix["date"].to_list(), apps)
    bar = fig.colorbar(image, ax=ax, format=mticker.PercentFormatter(1.0))
    bar.set_label("(actual − expected) / expected")
    fig.suptitle(f"Relative difference, {_label(result, target)} vs the export ({what})")
    return fig


def _hatch_new_cells(ax: Any, new: Any) -> None:
    """Cells where nothing was expected but the target holds something: no ratio, hatched."""
    import matplotlib
    import numpy as np

    for row, col in zip(*np.nonzero(new), strict=True):
        ax.add_patch(
            matplotlib.patches.Rectangle(
                (col - 0.5, row - 0.5), 1, 1, facecolor="white", edgecolor="0.4", hatch="///", lw=0.5
            )
        )


def _write_cells(ax: Any, values: Any, limit: float) -> None:
    """Each differing cell's value (``new`` where no ratio exists)."""
    import numpy as np

    for (row, col), value in np.ndenumerate(values):
        if np.isnan(value) or value == 0:
            continue  # not compared, or equal: an empty cell reads faster than "0 %"
        text = "new" if np.isposinf(value) else f"{value:+.0%}"
        dark = np.isfinite(value) and abs(value) > 0.6 * limit
        ax.text(col, row, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")


def _label_axes(ax: Any, days: list[dt.date], apps: list[str]) -> None:
    step = max(1, len(days) // 15)
    ax.set_xticks(
        range(0, len(days), step),
        [d.strftime("%m-%d") for d in days[::step]],
        rotation=45,
        ha="right",
    )
    ax.set_yticks(range(len(apps)), apps)
    ax.set_xlabel("day")
