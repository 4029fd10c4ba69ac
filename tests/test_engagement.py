"""WAU, MAU, stickiness and retention (bubbly_metrics.engagement) against a plain-Python reference.

The reference (tests/engagement_reference.py) counts with sets, day by day.  It is checked on
the shipped sample, on random per-user histories (hypothesis: windows across month ends, gaps
of days without anyone, apps that start late), and the same figures are computed from the
Analytics Table after publishing to moto.
"""

from __future__ import annotations

import datetime as dt
import io

import boto3
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import bubbly_metrics as bm
from bubbly_metrics.analytics_table import per_user_from_table, read_analytics_table
from bubbly_metrics.cli import main
from bubbly_metrics.engagement import ACTIVE_SCHEMA, ENGAGEMENT_SCHEMA, RETENTION_SCHEMA, engagement_from_table
from bubbly_metrics.exceptions import InvalidArgumentError
from bubbly_metrics.publish import publish
from tests import engagement_reference as ref
from tests.aws_helpers import ANALYTICS, RequestLog, create_analytics_table

D = dt.date


def frame(rows: list[dict[str, object]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def triples(active: pl.DataFrame) -> set[tuple[dt.date, str, str]]:
    return set(active.select("date", "app", "user_id").iter_rows())


@pytest.fixture(scope="module")
def sample() -> bm.AggregateResult:
    return bm.aggregate(bm.sample_export_location(), mode="backfill", now=bm.SAMPLE_NOW)


# -- by hand --------------------------------------------------------------------------------------


def test_windows_by_hand():
    # u1 on Jan 30 and Feb 2; u2 on Feb 1 only; nobody on Jan 31.  3-day "weeks", 4-day "months".
    active = pl.DataFrame(
        {
            "date": [D(2025, 1, 30), D(2025, 2, 2), D(2025, 2, 1)],
            "app": ["chess"] * 3,
            "user_id": ["u1", "u1", "u2"],
        }
    )
    got = bm.engagement_metrics(active, week_days=3, month_days=4).collect()
    assert got["date"].to_list() == [D(2025, 1, 30), D(2025, 1, 31), D(2025, 2, 1), D(2025, 2, 2)]
    assert got["active_users"].to_list() == [1, 0, 1, 1]
    assert got["weekly_active_users"].to_list() == [None, None, 2, 2]  # Feb 1: u1 (Jan 30), u2
    assert got["monthly_active_users"].to_list() == [None, None, None, 2]
    assert got["stickiness"].to_list() == [None, None, None, 0.5]
    partial = bm.engagement_metrics(active, week_days=3, month_days=4, partial_windows=True).collect()
    assert partial["weekly_active_users"].to_list() == [1, 1, 2, 2]
    assert partial["monthly_active_users"].to_list() == [1, 1, 2, 2]


def test_retention_by_hand():
    day = D(2025, 3, 1)
    active = pl.DataFrame(
        {
            "date": [day, day, day + dt.timedelta(days=1), day + dt.timedelta(days=7), day + dt.timedelta(days=1)],
            "app": ["a"] * 5,
            "user_id": ["u1", "u2", "u1", "u2", "u3"],
        }
    )
    got = bm.retention(active, days=[1, 7, 30], history_days=0).collect()
    # Mar 1: u1, u2 new; Mar 2: u3 new.  Day 30 is past the data's end (Mar 8): no rows.
    assert got.rows() == [
        (day, "a", 1, 2, 1, 0.5),
        (day, "a", 7, 2, 1, 0.5),
        (day + dt.timedelta(days=1), "a", 1, 1, 0, 0.0),
    ]
    # Left censoring: with a day of history required, Mar 1's "new" users are not reported.
    censored = bm.retention(active, days=[1], history_days=1).collect()
    assert censored["cohort_date"].to_list() == [day + dt.timedelta(days=1)]


def test_per_user_rows_without_sessions_are_not_active():
    per_user = pl.DataFrame(
        {
            "date": [D(2025, 1, 1), D(2025, 1, 1)],
            "app": ["a", "a"],
            "user_id": ["player", "host"],
            "games": [2, 0],
            "parties_created": [0, 1],
        }
    )
    assert bm.active_user_days(per_user).collect()["user_id"].to_list() == ["player"]


# -- the shipped sample against the reference -------------------------------------------------------


def test_sample_matches_reference(sample):
    active = triples(bm.active_user_days(sample).collect())
    first, last = sample.date_range.start, sample.date_range.end
    for partial in (False, True):
        got = bm.engagement_metrics(sample, partial_windows=partial).collect()
        want = frame(ref.engagement(active, first, last, partial_windows=partial), ENGAGEMENT_SCHEMA)
        assert_frame_equal(got, want)
    # DAU is the daily ActiveUsers metric, dense over the same days and apps.
    assert_frame_equal(
        got.select("date", "app", "active_users"),
        sample.metrics.filter(pl.col("app").is_in(got["app"].unique().implode())).select("date", "app", "active_users"),
    )
    for history in (0, 28):
        got = bm.retention(sample, history_days=history).collect()
        want = frame(ref.retention(active, first, last, history_days=history), RETENTION_SCHEMA)
        assert_frame_equal(got, want)
        assert got.height > 0


def test_sample_figures(sample):
    # A few figures, so that a change of definition shows up here and not only as "differs".
    got = bm.engagement_metrics(sample).collect()
    assert got.height == sample.date_range.days * 5
    assert got.filter(pl.col("date") == D(2025, 2, 12))["monthly_active_users"].null_count() == 5
    assert got.filter(pl.col("date") == D(2025, 2, 13))["monthly_active_users"].null_count() == 0
    assert got.filter(pl.col("date") == D(2025, 1, 23))["weekly_active_users"].null_count() == 0


def test_a_list_of_sources_takes_each_day_from_the_first_holding_it(sample):
    per_user = sample.per_user
    early = per_user.filter(pl.col("date") < D(2025, 2, 20))
    late = per_user.filter(pl.col("date") >= D(2025, 2, 10))
    both = bm.engagement_metrics([early, late], start=sample.date_range.start, end=sample.date_range.end)
    assert_frame_equal(both.collect(), bm.engagement_metrics(sample).collect())
    # A user re-dated between two exports: Feb 1 in the first part, Feb 2 in the second.
    first = pl.DataFrame({"date": [D(2025, 2, 1)], "app": ["a"], "user_id": ["u"]})
    second = pl.DataFrame({"date": [D(2025, 2, 1), D(2025, 2, 2)], "app": ["a", "a"], "user_id": ["v", "u"]})
    got = bm.active_user_days([first, second]).sort("date").collect()
    assert got.rows() == [(D(2025, 2, 1), "a", "u"), (D(2025, 2, 2), "a", "u")]
    # An AggregateResult holds its whole range, days without anyone included.
    assert bm.active_user_days([sample, second]).filter(pl.col("user_id").is_in(["u", "v"])).collect().is_empty()


def test_a_full_export_then_the_daily_runs_after_it(tmp_path):
    from bubbly_metrics.reconciliation import daily_runs_table
    from bubbly_metrics.synthetic import write_history

    # The full export was taken on the morning of March 4; the daily exports go on to March 17
    # (March 10's never ran).
    write_history(
        tmp_path, n_items=3000, days=60, daily_days=14, missing_day="2025-03-10", export_time="2025-03-04T02:00:00Z"
    )
    full = bm.aggregate(str(tmp_path), mode="backfill", now=bm.SAMPLE_NOW)
    assert full.date_range.end == D(2025, 3, 3)
    daily = daily_runs_table(str(tmp_path), start="2025-03-04", end="2025-03-17")
    both = [full, daily]
    first, last = D(2025, 1, 17), D(2025, 3, 17)
    active = triples(full.per_user.filter(pl.col("games") > 0)) | {
        (d, a, u) for d, a, ids in daily.select("date", "app", "active_user_ids").iter_rows() for u in ids
    }
    assert {d for d, _, _ in active} >= {D(2025, 3, 3), D(2025, 3, 4), D(2025, 3, 17)}
    assert D(2025, 3, 10) not in {d for d, _, _ in active}
    got = bm.engagement_metrics(both, start=first, end=last).collect()
    assert_frame_equal(got, frame(ref.engagement(active, first, last), ENGAGEMENT_SCHEMA))
    assert_frame_equal(
        bm.retention(both, end=last).collect(), frame(ref.retention(active, first, last), RETENTION_SCHEMA)
    )


# -- random histories against the reference ----------------------------------------------------------

BASE = D(2025, 1, 20)  # windows cross the ends of January, February (28 days) and March

histories = st.sets(
    st.tuples(st.integers(0, 80), st.sampled_from(["sudoku", "chess"]), st.sampled_from(["u1", "u2", "u3", "u4", "ü"])),
    max_size=60,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=histories,
    start=st.integers(0, 40),
    length=st.integers(0, 45),
    week=st.integers(1, 9),
    month=st.integers(1, 35),
    partial=st.booleans(),
    history_days=st.integers(0, 30),
    ns=st.sets(st.integers(1, 35), min_size=1, max_size=4),
)
def test_random_histories_match_reference(history, start, length, week, month, partial, history_days, ns):
    active = {(BASE + dt.timedelta(days=d), app, user) for d, app, user in history}
    first = BASE + dt.timedelta(days=start)
    last = first + dt.timedelta(days=length)
    frame_in = pl.DataFrame(sorted(active), schema=ACTIVE_SCHEMA, orient="row")
    got = bm.engagement_metrics(
        frame_in, start=first, end=last, week_days=week, month_days=month, partial_windows=partial
    ).collect()
    want = ref.engagement(active, first, last, week_days=week, month_days=month, partial_windows=partial)
    assert_frame_equal(got, frame(want, ENGAGEMENT_SCHEMA))
    got_r = bm.retention(frame_in, start=first, end=last, days=sorted(ns), history_days=history_days).collect()
    want_r = ref.retention(active, first, last, days=ns, history_days=history_days)
    assert_frame_equal(got_r, frame(want_r, RETENTION_SCHEMA))


@settings(max_examples=25, deadline=None)
@given(parts=st.lists(st.tuples(histories, st.sets(st.integers(0, 80), max_size=20)), min_size=1, max_size=3))
def test_a_list_takes_each_day_from_the_first_part_holding_it(parts):
    # Each part is a per-user frame: its active users (games 1) and days it holds without a
    # session (a party created, games 0), which it holds all the same.
    frames, expected_parts = [], []
    for history, idle in parts:
        active = {(BASE + dt.timedelta(days=d), app, user) for d, app, user in history}
        idle_days = {BASE + dt.timedelta(days=d) for d in idle}
        rows = [(d, a, u, 1) for d, a, u in sorted(active)] + [(d, "chess", "host", 0) for d in sorted(idle_days)]
        schema = {**ACTIVE_SCHEMA, "games": pl.Int64()}
        frames.append(pl.DataFrame(rows, schema=schema, orient="row"))
        expected_parts.append(({d for d, _, _ in active} | idle_days, active))
    got = triples(bm.active_user_days(frames).collect())
    assert got == ref.first_holder(expected_parts)


@settings(max_examples=25, deadline=None)
@given(history=histories)
def test_default_range_is_the_active_days(history):
    active = {(BASE + dt.timedelta(days=d), app, user) for d, app, user in history}
    frame_in = pl.DataFrame(sorted(active), schema=ACTIVE_SCHEMA, orient="row")
    got = bm.engagement_metrics(frame_in).collect()
    if not active:
        assert got.is_empty() and got.schema == pl.Schema(ENGAGEMENT_SCHEMA)
        return
    first, last = min(d for d, _, _ in active), max(d for d, _, _ in active)
    assert_frame_equal(got, frame(ref.engagement(active, first, last), ENGAGEMENT_SCHEMA))


# -- arguments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda f: bm.engagement_metrics(f, week_days=0), "week_days must be"),
        (lambda f: bm.engagement_metrics(f, month_days=2.5), "month_days must be"),  # type: ignore[arg-type]
        (lambda f: bm.engagement_metrics(f, start="2025-02-01", end="2025-01-01"), "start 2025-02-01 is after end"),
        (lambda f: bm.retention(f, days=7), "days must be a list"),  # type: ignore[arg-type]
        (lambda f: bm.retention(f, days=[0, 1]), "days must be a list"),
        (lambda f: bm.retention(f, history_days=-1), "history_days must be"),
        (lambda f: bm.engagement_metrics(f, partial_windows="yes"), "partial_windows must be"),  # type: ignore[arg-type]
        (lambda f: bm.engagement_metrics(f.drop("user_id")), "source frame needs columns"),
        (lambda f: bm.engagement_metrics("s3://bucket/"), "source must be"),
        (lambda f: bm.engagement_metrics([]), "empty list"),
    ],
)
def test_arguments_are_checked_when_called(call, message):
    active = pl.DataFrame({"date": [D(2025, 1, 1)], "app": ["a"], "user_id": ["u"]})
    with pytest.raises(InvalidArgumentError, match=message):
        call(active)


def test_results_are_lazy(sample):
    assert isinstance(bm.engagement_metrics(sample), pl.LazyFrame)
    assert isinstance(bm.retention(sample), pl.LazyFrame)
    assert isinstance(bm.active_user_days(sample), pl.LazyFrame)


# -- the Analytics Table gives the same numbers ----------------------------------------------------


def test_table_gives_the_export_figures(aws, sample):
    create_analytics_table()
    report = publish(sample, table=ANALYTICS, cloudwatch=False, now=bm.SAMPLE_NOW).to_dict()
    assert report["failures"] == []
    table = read_analytics_table(ANALYTICS, start=sample.date_range.start, end=sample.date_range.end)
    first, last = sample.date_range.start, sample.date_range.end
    assert_frame_equal(
        bm.engagement_metrics(table, start=first, end=last).collect(), bm.engagement_metrics(sample).collect()
    )
    assert_frame_equal(bm.retention(table, start=first, end=last).collect(), bm.retention(sample).collect())
    per_user = per_user_from_table(table)  # the exploded per-user frame works too
    assert_frame_equal(
        bm.engagement_metrics(per_user, start=first, end=last).collect(), bm.engagement_metrics(sample).collect()
    )


def test_one_day_from_the_table_reads_28_days(aws, sample):
    create_analytics_table()
    publish(sample, table=ANALYTICS, cloudwatch=False, now=bm.SAMPLE_NOW)
    log = RequestLog()
    client = log.attach(boto3.client("dynamodb"))
    day = D(2025, 3, 1)
    got = engagement_from_table(ANALYTICS, day=day, client=client, now=bm.SAMPLE_NOW)
    queries = log.of("Query")
    assert len(queries) == 28 and not log.of("Scan")
    assert {q["ExpressionAttributeValues"][":d"]["S"] for q in queries} == {
        (day - dt.timedelta(days=k)).isoformat() for k in range(28)
    }
    # The same figures as the whole export's, that day (windows fit the 28 days read), for the
    # apps active in the window (trivia starts on March 12: the whole export has a row of zeros).
    want = bm.engagement_metrics(sample).filter(pl.col("date") == day, pl.col("monthly_active_users") > 0)
    assert got.height == 4
    assert_frame_equal(got, want.collect())


def test_retention_curve_pools_cohorts(sample):
    active = triples(bm.active_user_days(sample).collect())
    rows = ref.retention(active, sample.date_range.start, sample.date_range.end)
    want: dict[tuple[str, int], list[int]] = {}
    for row in rows:
        totals = want.setdefault((row["app"], row["day_n"]), [0, 0, 0])
        totals[0] += 1
        totals[1] += row["cohort_size"]
        totals[2] += row["retained"]
    got = bm.retention_curve(bm.retention(sample)).collect()
    assert {(a, n): [c, u, r] for a, n, c, u, r, _ in got.iter_rows()} == want
    assert got["rate"].to_list() == [r / u for _, _, _, u, r, _ in got.iter_rows()]


# -- a generated year of history: export, table and the daily computation against the reference ------

YEAR_NOW = dt.datetime(2026, 1, 17, 2, 30, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def year_root(tmp_path_factory) -> str:
    from bubbly_metrics.synthetic import generate_items, write_full_export

    root = tmp_path_factory.mktemp("year")
    items = generate_items(n_items=12_000, start="2025-01-17", days=365, n_users=300, seed=28)
    write_full_export(root, items, export_time="2026-01-17T02:00:00Z", n_files=2)
    return str(root)


@pytest.fixture(scope="module")
def year(year_root) -> bm.AggregateResult:
    return bm.aggregate(year_root, mode="backfill", start="2025-01-17", now=YEAR_NOW)


class TableOfItems:
    """A DynamoDB client's ``query`` over items in memory, by day: the Analytics Table a publish writes."""

    def __init__(self, items: list[dict]) -> None:
        self.by_day: dict[str, list[dict]] = {}
        for item in items:
            self.by_day.setdefault(item["date"]["S"], []).append(item)
        self.days_queried: list[str] = []

    def query(self, **kwargs):
        day = kwargs["ExpressionAttributeValues"][":d"]["S"]
        self.days_queried.append(day)
        return {"Items": self.by_day.get(day, [])}


def test_a_year_every_day_from_the_table_and_the_cli(year, year_root):
    from bubbly_metrics.analytics_table import build_items

    # The daily computation of every day of the year, on the items a publish writes (the same
    # code path as on DynamoDB, without a server): each reads its 28 days and nothing else.
    table = TableOfItems([i for g in build_items(year.metrics, per_user=year.per_user, now=YEAR_NOW) for i in g])
    active = triples(bm.active_user_days(year).collect())
    first, last = year.date_range.start, year.date_range.end
    # Before February 13 the table holds fewer than 28 days: windows count the days it has.
    want = frame(ref.engagement(active, first, last, partial_windows=True), ENGAGEMENT_SCHEMA)
    day = first
    got = []
    while day <= last:
        table.days_queried.clear()
        got.append(engagement_from_table("T", day=day, client=table, threads=1, now=YEAR_NOW))
        assert len(table.days_queried) == 28 and max(table.days_queried) == day.isoformat()
        day += dt.timedelta(days=1)
    assert_frame_equal(pl.concat(got), want.filter(pl.col("monthly_active_users") > 0))
    # The CLI on the year's export.
    out, err = io.StringIO(), io.StringIO()
    assert (
        main(["engagement", year_root, "--now", YEAR_NOW.isoformat(), "--format", "csv"], stdout=out, stderr=err) == 0
    )
    want = frame(ref.engagement(active, first, last), ENGAGEMENT_SCHEMA)
    assert_frame_equal(pl.read_csv(io.StringIO(out.getvalue()), schema=want.schema), want)
    out = io.StringIO()
    argv = ["engagement", year_root, "--now", YEAR_NOW.isoformat(), "--retention", "--format", "csv"]
    assert main(argv, stdout=out, stderr=err) == 0
    want = frame(ref.retention(active, first, last), RETENTION_SCHEMA)
    assert_frame_equal(pl.read_csv(io.StringIO(out.getvalue()), schema=want.schema), want)


def test_a_year_matches_reference(year):
    assert (year.date_range.start, year.date_range.end) == (D(2025, 1, 17), D(2026, 1, 16))
    active = triples(bm.active_user_days(year).collect())
    first, last = year.date_range.start, year.date_range.end
    got = bm.engagement_metrics(year).collect()
    assert_frame_equal(got, frame(ref.engagement(active, first, last), ENGAGEMENT_SCHEMA))
    cohorts = bm.retention(year).collect()
    assert_frame_equal(cohorts, frame(ref.retention(active, first, last), RETENTION_SCHEMA))
    assert cohorts["retained"].sum() > 0 and cohorts.filter(pl.col("day_n") == 30).height > 0


def test_a_year_from_the_table_day_by_day(aws, year):
    create_analytics_table()
    assert publish(year, table=ANALYTICS, cloudwatch=False, now=YEAR_NOW).failures == []
    active = triples(bm.active_user_days(year).collect())
    # Month ends and a new year: the daily computation reads only the 28 days before each.
    for day in (D(2025, 3, 1), D(2025, 7, 31), D(2026, 1, 1)):
        got = engagement_from_table(ANALYTICS, day=day, now=YEAR_NOW)
        want = [r for r in ref.engagement(active, year.date_range.start, day) if r["date"] == day]
        want = [r for r in want if r["monthly_active_users"]]  # apps active in the window
        assert_frame_equal(got, frame(want, ENGAGEMENT_SCHEMA))


def test_docstring_examples_run():
    import doctest

    import bubbly_metrics.engagement as module

    assert doctest.testmod(module).failed == 0
