"""Engagement plots: built without pyplot, on the Agg canvas."""

from __future__ import annotations

import io

import polars as pl
import pytest

import bubbly_metrics as bm
from bubbly_metrics.engagement import RETENTION_SCHEMA
from bubbly_metrics.engagement_plots import (
    plot_active_users,
    plot_retention_curve,
    plot_retention_heatmap,
    plot_stickiness,
)
from bubbly_metrics.exceptions import InvalidArgumentError


@pytest.fixture(scope="module")
def frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    result = bm.aggregate(bm.sample_export_location(), mode="backfill", now=bm.SAMPLE_NOW)
    return bm.engagement_metrics(result).collect(), bm.retention(result).collect()


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    return buffer.getvalue()


def test_every_plot_draws(frames):
    engagement, cohorts = frames
    assert len(plot_active_users(engagement).axes) == 5  # one panel per app
    assert len(plot_active_users(engagement.lazy(), apps=["chess"]).axes) == 1
    assert png(plot_stickiness(engagement, apps=["sudoku", "chess"])).startswith(b"\x89PNG")
    assert png(plot_retention_curve(cohorts)).startswith(b"\x89PNG")
    heat = plot_retention_heatmap(cohorts)
    day_1 = cohorts.filter(pl.col("day_n") == 1).group_by("app").agg(pl.col("cohort_size").sum())
    most = day_1.sort("cohort_size", descending=True)["app"][0]
    assert heat.get_suptitle() == f"Retention by cohort: {most}"  # the app with the most new users
    # Every cell is labelled with its rate and counts.
    labels = [t.get_text() for t in heat.axes[0].texts]
    assert len(labels) == cohorts.filter(pl.col("app") == most).height
    assert all("%" in t and "/" in t for t in labels)


def test_empty_and_wrong_input(frames):
    engagement, cohorts = frames
    empty = plot_retention_curve(pl.DataFrame(schema=RETENTION_SCHEMA))
    assert [t.get_text() for t in empty.axes[0].texts] == ["no cohort can be observed yet"]
    with pytest.raises(InvalidArgumentError, match="not in the frame"):
        plot_active_users(engagement, apps=["pong"])
    with pytest.raises(InvalidArgumentError, match="has no cohort"):
        plot_retention_heatmap(cohorts, app="pong")
    with pytest.raises(InvalidArgumentError, match="needs a frame with columns"):
        plot_stickiness(cohorts)
