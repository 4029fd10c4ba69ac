"""Results display well in a notebook: a short repr and a small HTML card with the head of the frame."""

from __future__ import annotations

import bubbly_metrics as bm


def test_aggregate_result_repr_is_one_short_line_with_what_was_read() -> None:
    result = bm.aggregate(bm.sample_export_location(), mode="backfill", start="2025-03-01", now=bm.SAMPLE_NOW)
    text = repr(result)
    assert len(text) < 300 and "\n" not in text
    assert result.export.export_id in text and f"{result.items_read:,} read" in text
    assert f"{result.metrics.height:,} rows" in text
    card = result._repr_html_()
    assert "<table" in card and f"{result.metrics.height:,} rows, the first 10" in card
    assert card.count("<tr>") < 40  # the head, not all the rows


def test_reconcile_result_repr_says_what_differs() -> None:
    result = bm.reconcile(bm.sample_export_location(), analytics_table=bm.DailyRuns(), now=bm.SAMPLE_NOW)
    text = repr(result)
    assert len(text) < 400 and "\n" not in text and "values differ" in text
    assert "values differ" in result._repr_html_()


def test_exports_frame_is_list_exports_as_a_frame() -> None:
    import datetime as dt

    location = bm.sample_export_location()
    frame = bm.exports_frame(location)
    listed = bm.list_exports(location)
    assert frame["export_id"].to_list() == [e.export_id for e in listed]
    assert frame["as_of"].to_list() == [e.as_of for e in listed]
    assert frame.filter(frame["export_type"] == "FULL")["as_of"].item() == dt.datetime(2025, 3, 18, 2, 0, tzinfo=dt.UTC)
    assert frame.height == 14 and set(frame["status"]) == {"COMPLETED"}


def test_the_exports_docstring_examples_run() -> None:
    import doctest

    import bubbly_metrics.exports as module

    assert doctest.testmod(module).failed == 0
