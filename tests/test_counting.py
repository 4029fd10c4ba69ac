"""Counting in the compiled decoder against the Polars route: the rules of records exist twice.

With :data:`bubbly_metrics._decoder.COUNTING`, the compiled decoder counts records whose outcome
is plain (ignored; counted or outside the range, with a plainly spelled timestamp) per (day,
app, user) in C++, and leaves every other record as a row for Polars
(:mod:`bubbly_metrics.records`).  The contract: for any block it takes and any date range, the
summary of its counts plus the Polars summary of the rows it left equals the Polars summary of
all the block's rows.  Hypothesis draws the differential test's items (valid, malformed and
noise records, odd timestamps), hostile attribute values, and timestamps at every edge the C++
parsers decide (tests/test_differential.py runs whole exports through both routes too).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from bubbly_metrics import _decoder, pipeline
from bubbly_metrics._readfile import _complete
from bubbly_metrics.dates import DateRange
from bubbly_metrics.metrics import merge_activity, merge_outcomes
from tests.test_differential import APPS, IDS, TIMESTAMPS, USERS, items
from tests.test_fastscan import PLAIN_IMAGE, VALUE

pytestmark = pytest.mark.skipif(
    _decoder.FAST is None and os.environ.get("BUBBLY_METRICS_DECODER") == "msgspec",
    reason="BUBBLY_METRICS_DECODER=msgspec turns the compiled decoder off",
)

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WANTED = 0  # set on first use (the compiled decoder's columns of the aggregate path)

# Timestamps at the edges of what the C++ parsers take (and just past them).
EDGE_N = [
    "0", "-0", "00", "007", "+5", " 5", "5 ", "-1", "-0.5", "-0.0", "-1.0", "1.0", "1.", ".5", "1e3", "1E3",
    "999999999999999999", "9999999999999999999", "-999999999999999999", "123456789012345.5",
    "1234567890123456.5", "-123456789012345.000001", "253402300799", "253402300799.9", "253402300800",
    "-62135596800", "-62135596800.1", "-62135596801", "86399", "86400", "-86400", "-86401", "1741600000",
    "1741651199.999", "1741651200", "١٧٤١٦٠٠٠٠٠",
]  # fmt: skip
EDGE_S = [
    "2025-03-10T10:00:00Z", "2025-03-10T10:00:00+23:59", "2025-03-10T10:00:00-23:59", "2025-03-10T10:00:00+24:00",
    "2025-03-10T10:00:00+00:60", "2025-03-10T23:59:60Z", "2025-03-10T00:00:00.123456789-05:30",
    "2025-03-10T00:00:00.1234567891Z", "2025-03-10T00:00:00.Z", "2024-02-29T12:00:00Z", "2023-02-29T12:00:00Z",
    "2000-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "1970-01-01T00:00:00Z", "1970-01-01T00:00:00.5+01:00",
    "1971-01-01T00:00:00.999999999+23:59", "1969-12-31T23:59:59.5Z", "9998-12-31T23:59:59Z",
    "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "２０２５-03-10T10:00:00Z",
    "2025-03-10T10:00:00z", "2025-03-10t10:00:00Z", "2025-3-10T10:00:00Z", "2025-03-10T10:00:00+0100",
    "2025-03-11T00:00:00+00:00", "2025-03-10T23:59:59.999-00:01",
]  # fmt: skip
EDGE_TIMESTAMPS = st.one_of(
    st.sampled_from(EDGE_N).map(lambda n: {"N": n}),
    st.sampled_from(EDGE_S).map(lambda s: {"S": s}),
    TIMESTAMPS,
    VALUE,
    st.integers(-(2**62), 2**62).map(lambda n: {"N": str(n)}),
    st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31)).map(
        lambda d: {"S": d.strftime("%Y-%m-%dT%H:%M:%S.%fZ").rjust(27, "0")}
    ),
)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """An item: from the differential test, a hostile image, or a plain one with an edge timestamp."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return draw(items())
    if choice == 1:
        return draw(PLAIN_IMAGE)
    kind = draw(st.sampled_from(["session", "party", "member"]))
    app, item_id, user = draw(APPS), draw(IDS), draw(USERS)
    if kind == "member":
        item = {"modelId": {"S": f"member-user-{user}"}, "owner": {"S": f"party-{app}-{item_id}"}}
    else:
        item = {"modelId": {"S": f"{kind}-{app}-{item_id}"}, "owner": {"S": f"user-{user}"}}
    item["updatedAt" if kind == "session" else "createdAt"] = draw(EDGE_TIMESTAMPS)
    return item


def _line(record: dict[str, Any], incremental: bool, ascii_only: bool) -> bytes:
    line = {"Keys": {}, "NewImage": record} if incremental else {"Item": record}
    return json.dumps(line, ensure_ascii=ascii_only).encode()


# Ranges: the differential test's, single days at the edges, and every day there is.
RANGES = st.sampled_from(
    [
        (dt.date(2025, 3, 8), dt.date(2025, 3, 12)),
        (dt.date(2025, 3, 10), dt.date(2025, 3, 10)),
        (dt.date(1970, 1, 1), dt.date(1970, 1, 1)),
        (dt.date(1969, 12, 31), dt.date(1971, 1, 1)),
        (dt.date(1, 1, 1), dt.date(9999, 12, 31)),
        (dt.date(9998, 12, 31), dt.date(9999, 12, 31)),
    ]
).map(lambda r: DateRange(*r))


def _rows(block: Any) -> pl.DataFrame:
    return _complete([pl.DataFrame(block)], "data/f.json.gz")


def _normal(summaries: list[tuple[pl.DataFrame, pl.DataFrame]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    activity = merge_activity([a for a, _ in summaries])
    activity = activity.with_columns(pl.col("app", "user_id").cast(pl.String)).sort("date", "app", "user_id")
    outcomes = merge_outcomes([o for _, o in summaries]).sort("status", "reason", "file", nulls_last=True)
    return activity, outcomes


def _assert_routes_agree(block: bytes, incremental: bool, date_range: DateRange) -> None:
    fast = _decoder.FAST
    wanted = _decoder.wanted(pipeline._NEEDED)
    summarizer = pipeline._Summarizer(date_range)
    whole = fast.decode([block], 1, incremental, False, wanted)
    if whole is None:
        return  # declined: msgspec reads the block, and nothing is counted (see below)
    counts = fast.counts(*summarizer.count_days)
    left = fast.decode([block], 1, incremental, False, wanted, None, counts)
    assert left is not None and left[1:] == whole[1:]
    expected = _normal([summarizer(_rows(whole[0]))])
    actual = _normal([summarizer(_rows(left[0])), summarizer.from_counts(counts)])
    assert_frame_equal(actual[0], expected[0])
    assert_frame_equal(actual[1], expected[1])


# --- tests ----------------------------------------------------------------------------------


@SETTINGS
@given(
    recs=st.lists(records(), min_size=1, max_size=30),
    incremental=st.booleans(),
    ascii_only=st.booleans(),
    date_range=RANGES,
)
def test_counting_equals_the_polars_route(
    recs: list[dict[str, Any]], incremental: bool, ascii_only: bool, date_range: DateRange
) -> None:
    block = b"\n".join(_line(r, incremental, ascii_only) for r in recs) + b"\n"
    _assert_routes_agree(block, incremental, date_range)


@pytest.mark.parametrize("date_range", [DateRange(dt.date(2025, 3, 8), dt.date(2025, 3, 12))])
def test_every_edge_timestamp_agrees(date_range: DateRange) -> None:
    lines = []
    for kind, attribute in (("session", "updatedAt"), ("party", "createdAt")):
        for value in [*({"N": n} for n in EDGE_N), *({"S": s} for s in EDGE_S)]:
            owner = {"S": "user-u1"}
            lines.append(_line({"modelId": {"S": f"{kind}-sudoku-1"}, "owner": owner, attribute: value}, False, True))
    block = b"\n".join(lines) + b"\n"
    for dr in (date_range, DateRange(dt.date(1, 1, 1), dt.date(9999, 12, 31))):
        _assert_routes_agree(block, False, dr)


def test_plain_records_are_counted_not_left_as_rows() -> None:
    fast = _decoder.FAST
    session = {"modelId": {"S": "session-sudoku-1"}, "owner": {"S": "user-u1"}, "updatedAt": {"N": "1741600000"}}
    iso = {**session, "updatedAt": {"S": "2025-03-10T10:00:00.000Z"}}
    member = {"modelId": {"S": "member-user-u2"}, "owner": {"S": "party-chess-9"}, "createdAt": {"N": "1741600000.5"}}
    noise = {"modelId": {"S": "sudoku-1"}, "owner": {"S": "system"}}
    late = {**session, "updatedAt": {"N": "1900000000"}}
    bad = {**session, "owner": {"S": "User-u1"}}
    block = b"\n".join(_line(r, False, True) for r in (session, iso, member, noise, late, bad)) + b"\n"
    counts = fast.counts(*pipeline._Summarizer(DateRange(dt.date(2025, 3, 8), dt.date(2025, 3, 12))).count_days)
    left, lines, deletes, rest = fast.decode([block], 1, False, False, _decoder.wanted(pipeline._NEEDED), None, counts)
    assert (len(left), lines, deletes) == (1, 6, 0)  # only the malformed record is a row
    assert counts.totals() == (3, 1, 1)  # counted, outside the range, ignored
    summary = pl.DataFrame(counts.summary()).sort("model_id")
    assert summary.rows() == [(20157, "chess", "u2", 0, 0, 1), (20157, "sudoku", "u1", 2, 0, 0)]


def test_a_declined_block_leaves_the_counts_as_they_were() -> None:
    fast = _decoder.FAST
    session = {"modelId": {"S": "session-sudoku-1"}, "owner": {"S": "user-u1"}, "updatedAt": {"N": "1741600000"}}
    counts = fast.counts(0, 30000)
    wanted = _decoder.wanted(pipeline._NEEDED)
    line = _line(session, False, True)
    assert fast.decode([line + b"\n"], 1, False, False, wanted, None, counts) is not None
    before = (counts.totals(), pl.DataFrame(counts.summary()).rows())
    # New groups and old ones are touched before the broken last line declines the block.
    other = _line({**session, "owner": {"S": "user-u9"}}, False, True)
    assert fast.decode([line + b"\n" + other + b"\n{broken\n"], 2, False, False, wanted, None, counts) is None
    assert (counts.totals(), pl.DataFrame(counts.summary()).rows()) == before


def test_counts_merge_and_clear() -> None:
    fast = _decoder.FAST
    session = {"modelId": {"S": "session-sudoku-1"}, "owner": {"S": "user-u1"}, "updatedAt": {"N": "1741600000"}}
    block = _line(session, False, True) + b"\n"
    wanted = _decoder.wanted(pipeline._NEEDED)
    a, b = fast.counts(0, 30000), fast.counts(0, 30000)
    fast.decode([block], 1, False, False, wanted, None, a)
    fast.decode([block + block], 2, False, False, wanted, None, b)
    a.merge(b)
    assert a.totals() == (3, 0, 0) and b.totals() == (0, 0, 0)
    assert pl.DataFrame(a.summary())["games"].to_list() == [3]
    a.clear()
    assert a.totals() == (0, 0, 0) and pl.DataFrame(a.summary()).height == 0
