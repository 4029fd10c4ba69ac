"""Reconciliation plots: built without pyplot, on the Agg canvas."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io

import matplotlib.colors
import numpy as np
import polars as pl
import pytest

from bubbly_metrics.exceptions import InvalidArgumentError
from bubbly_metrics.plots import plot_difference_heatmap, plot_metrics
from bubbly_metrics.reconciliation import classify_differences, compare_metrics, reconcile
from tests import reconcile_scenario as sc

WINDOW = (dt.date(2025, 3, 5), dt.date(2025, 3, 18))


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """A reconciliation of the scenario's export against frames with two planted differences."""
    root = sc.write_new_world(tmp_path_factory.mktemp("new"))
    plain = reconcile(str(root), start=sc.START, end=sc.END, now=sc.NOW)
    expected = plain.expected
    held = expected.with_columns(
        pl.when((pl.col("date") == dt.date(2025, 3, 6)) & (pl.col("app") == "chess"))
        .then(9)
        .otherwise(pl.col("games_played"))
        .alias("games_played")
    ).filter(~((pl.col("date") == dt.date(2025, 3, 8)) & (pl.col("app") == "sudoku")))
    comparison = pl.concat(
        [
            compare_metrics(expected, held, target="analytics_table"),
            compare_metrics(expected, held, target="cloudwatch", window=WINDOW),
        ]
    )
    return dataclasses.replace(
        plain,
        comparison=classify_differences(comparison, plain.evidence),
        table=held,
        cloudwatch=held,
        cloudwatch_window=WINDOW,
    )


def png(fig) -> bool:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    return buffer.getvalue().startswith(b"\x89PNG")


def rings(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections)


def test_time_series_has_a_panel_per_metric_and_marks_what_differs(result):
    fig = plot_metrics(result)
    axes = fig.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ["active_users", "games_played", "parties_created", "parties_joined"]
    # games_played differs twice (03-06 chess, the missing 03-08 sudoku row); the others once.
    assert [rings(ax) for ax in axes] == [1, 2, 1, 1]
    # Per app: an expected line and a dashed line of what the table holds.
    assert len(axes[0].get_lines()) == 2 * 2
    assert "Analytics Table" in fig._suptitle.get_text()
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert labels == ["chess", "sudoku", "held by the Analytics Table", "differs"]
    assert png(fig)


def test_red_means_differs_and_nothing_else(result):
    fig = plot_metrics(result)
    for ax in fig.get_axes():
        for line in ax.get_lines():
            assert matplotlib.colors.to_hex(line.get_color()) != matplotlib.colors.to_hex("C3"), "an app drawn in red"
        for band in ax.patches:
            assert matplotlib.colors.to_hex(band.get_facecolor()) in ("#f4c7c3", matplotlib.colors.to_hex("0.85"))


def test_cloudwatch_series_shade_days_outside_the_window(result):
    fig = plot_metrics(result, target="cloudwatch", metrics=["games_played"], apps=["chess"])
    (ax,) = fig.get_axes()
    assert len(ax.get_lines()) == 2 and rings(ax) == 1
    # Grey band for 03-01 → 03-04 and a red band for the one day chess differs (03-06); the
    # sudoku row missing on 03-08 is not on this plot, so it gets no band.
    assert len(ax.patches) == 2
    assert png(fig)


def test_a_band_only_while_differing_days_are_the_exception(result):
    # Every day of chess's games differs: a band on each would highlight nothing.
    every_day = result.comparison.with_columns(
        pl.when((pl.col("app") == "chess") & (pl.col("metric") == "games_played") & (pl.col("status") == "match"))
        .then(pl.lit("differs"))
        .otherwise(pl.col("status"))
        .alias("status")
    )
    fig = plot_metrics(
        dataclasses.replace(result, comparison=every_day), target="analytics_table", metrics=["games_played"]
    )
    (ax,) = fig.get_axes()
    assert len(ax.patches) == 0
    assert [t.get_text() for t in ax.texts] == [f"differs on {result.date_range.days} of {result.date_range.days} days"]


def test_heat_map_is_day_by_app(result):
    fig = plot_difference_heatmap(result, target="cloudwatch")
    ax, _colorbar = fig.get_axes()
    values = ax.get_images()[0].get_array()
    assert values.shape == (2, 17)  # apps (chess, sudoku) × days
    assert values.mask[:, :4].all() and not values.mask[:, 4:].any()  # before the window: grey
    assert values[0, 5] == pytest.approx(2.0)  # chess 03-06: 9 games instead of 3
    assert values[1, 7] == -1.0  # sudoku 03-08: missing row
    assert np.count_nonzero(values.filled(0)) == 2
    assert [t.get_text() for t in ax.get_yticklabels()] == ["chess", "sudoku"]
    # The values are in the cells (matches and days not compared left empty).
    assert sorted(t.get_text() for t in ax.texts) == ["+200%", "-100%"]
    assert png(fig)


def test_heat_map_does_not_call_something_from_nothing_a_doubling(result):
    # The table holds a chess row on 03-10 with 1 party created where the export has none.
    comparison = result.comparison.with_columns(
        pl.when((pl.col("date") == dt.date(2025, 3, 10)) & (pl.col("app") == "chess"))
        .then(pl.struct(expected=pl.lit(0), actual=pl.lit(1), difference=pl.lit(1), status=pl.lit("differs")))
        .otherwise(pl.struct("expected", "actual", "difference", "status"))
        .struct.unnest()
    )
    fig = plot_difference_heatmap(dataclasses.replace(result, comparison=comparison), target="analytics_table")
    ax, colorbar = fig.get_axes()
    assert "new" in [t.get_text() for t in ax.texts]
    assert any(patch.get_hatch() for patch in ax.patches)  # hatched, outside the colour scale
    values = ax.get_images()[0].get_array()
    assert values.mask[0, 9]  # the new cell is not coloured as a ratio
    assert colorbar.get_ylabel() == "(actual − expected) / expected"
    assert ax.get_images()[0].norm.vmax == pytest.approx(2.0)  # uncapped: reaches +200 %


def test_plots_without_a_target(result):
    nothing = dataclasses.replace(result, table=None, cloudwatch=None, comparison=result.comparison.clear())
    fig = plot_metrics(nothing)
    assert [rings(ax) for ax in fig.get_axes()] == [0, 0, 0, 0]
    assert fig._suptitle.get_text().startswith("Expected from the export,")
    empty = plot_difference_heatmap(nothing)
    assert empty.get_axes()[0].texts[0].get_text() == "nothing compared"
    assert png(empty)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: plot_metrics(r, target="s3"), "target must be one of"),
        (lambda r: plot_metrics(r, metrics=["sessions"]), "metrics must be a non-empty selection"),
        (lambda r: plot_metrics(r, metrics=[]), "metrics must be a non-empty selection"),
        (lambda r: plot_difference_heatmap(r, metric="sessions"), "metric must be one of"),
        (
            lambda r: plot_metrics(dataclasses.replace(r, cloudwatch=None), target="cloudwatch"),
            "cloudwatch was not compared",
        ),
    ],
)
def test_plot_arguments_are_checked(result, call, message):
    with pytest.raises(InvalidArgumentError, match=message):
        call(result)


def test_a_snapshot_or_the_daily_runs_are_named_as_such(result):
    for source, name in (("daily_runs", "the daily runs"), ("snapshot", "the snapshot")):
        named = dataclasses.replace(result, table_source=source)
        assert f"vs {name}" in plot_metrics(named, target="analytics_table")._suptitle.get_text()
        assert f"{name} vs the export" in plot_difference_heatmap(named, target="analytics_table")._suptitle.get_text()
    assert "vs the Analytics Table" in plot_metrics(result, target="analytics_table")._suptitle.get_text()
