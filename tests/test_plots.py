"""Reconciliation plots: built without pyplot, on the Agg canvas."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io

import numpy as np
import polars as pl
import pytest

from bubbly_metrics.exceptions import InvalidArgumentError
from bubbly_metrics.plots import plot_difference_heatmap, plot_metrics
from bubbly_metrics.reconcile import classify_differences, compare_metrics, reconcile
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
    assert [ax.get_ylabel() for ax in axes] == [
        "ActiveUsers",
        "GamesPlayed",
        "PartiesCreated",
        "PartiesJoined",
    ]
    # games_played differs twice (03-06 chess, the missing 03-08 sudoku row); the others once.
    assert [rings(ax) for ax in axes] == [1, 2, 1, 1]
    # Per app: an expected line and a dashed line of what the table holds.
    assert len(axes[0].get_lines()) == 2 * 2
    assert "Analytics Table" in fig._suptitle.get_text()
    assert png(fig)


def test_cloudwatch_series_shade_days_outside_the_window(result):
    fig = plot_metrics(result, target="cloudwatch", metrics=["games_played"], apps=["chess"])
    (ax,) = fig.get_axes()
    assert len(ax.get_lines()) == 2 and rings(ax) == 1
    # Grey band for 03-01 → 03-04, red bands for the days that differ (03-06, 03-08).
    assert len(ax.patches) == 3
    assert png(fig)


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
    assert png(fig)


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
        assert f"{name} vs export" in plot_difference_heatmap(named, target="analytics_table")._suptitle.get_text()
    assert "vs Analytics Table" in plot_metrics(result, target="analytics_table")._suptitle.get_text()
