"""Results reach pandas and DuckDB users as the README shows (the ``pandas`` extra brings pyarrow)."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import bubbly_metrics as bm


@pytest.fixture(scope="module")
def result() -> bm.AggregateResult:
    return bm.aggregate(bm.sample_export_location(), mode="backfill", start="2025-03-01", now=bm.SAMPLE_NOW)


def test_metrics_to_pandas_keeps_every_row_and_value(result: bm.AggregateResult) -> None:
    frame = result.metrics.to_pandas()
    assert len(frame) == result.metrics.height > 0
    assert list(frame.columns) == result.metrics.columns
    assert_frame_equal(pl.from_pandas(frame), result.metrics, check_dtypes=False)


def test_duckdb_queries_the_result_in_place(result: bm.AggregateResult) -> None:
    import duckdb

    metrics = result.metrics
    relation = duckdb.sql("select app, sum(games_played) as games from metrics group by app order by app")
    assert relation is not None
    games = relation.pl()
    expected = metrics.group_by("app").agg(games=pl.col("games_played").sum()).sort("app")
    assert_frame_equal(games, expected, check_dtypes=False)
    assert games["games"].sum() > 0
