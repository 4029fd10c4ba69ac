"""CloudWatch publisher and reader against moto's CloudWatch (server mode)."""

from __future__ import annotations

import datetime as dt

import boto3
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from bubbly_metrics._retry import Backoff
from bubbly_metrics.cloudwatch import (
    NAMESPACE,
    OUTSIDE_WINDOW,
    build_datums,
    cloudwatch_window,
    publish_metrics,
    read_cloudwatch_metrics,
)
from bubbly_metrics.exceptions import CloudWatchError, InvalidArgumentError
from bubbly_metrics.metrics import METRICS_SCHEMA
from tests.aws_helpers import Faulty, RequestLog, always_fail, client_error, throttle_first

NOW = dt.datetime(2025, 3, 18, 2, 30, tzinfo=dt.UTC)
NO_WAIT = Backoff(max_attempts=5, sleep=lambda s: None)
NAMES = {"ActiveUsers", "GamesPlayed", "PartiesCreated", "PartiesJoined"}


def daily(start: dt.date, end: dt.date, apps=("sudoku", "chess")) -> pl.DataFrame:
    days = pl.date_range(start, end, "1d", eager=True)
    rows = []
    for i, day in enumerate(days):
        for j, app in enumerate(apps):
            rows.append(
                {
                    "date": day,
                    "app": app,
                    "active_users": i + j,
                    "games_played": 3 * i + j,
                    "parties_created": i % 4,
                    "parties_joined": (i * j) % 5,
                }
            )
    return pl.DataFrame(rows, schema=METRICS_SCHEMA).sort("date", "app")


def test_window_is_two_weeks_minus_a_margin():
    assert cloudwatch_window(now=NOW) == (dt.date(2025, 3, 5), dt.date(2025, 3, 18))
    # At 00:30 the day 14 days back would be sent only with no margin at all.
    late = dt.datetime(2025, 3, 18, 0, 30, tzinfo=dt.UTC)
    assert cloudwatch_window(now=late)[0] == dt.date(2025, 3, 5)
    assert cloudwatch_window(now=late, margin=dt.timedelta(0))[0] == dt.date(2025, 3, 5)
    assert cloudwatch_window(now=dt.datetime(2025, 3, 18, tzinfo=dt.UTC), margin=dt.timedelta(0))[0] == dt.date(
        2025, 3, 4
    )
    with pytest.raises(InvalidArgumentError, match="margin"):
        cloudwatch_window(now=NOW, margin=dt.timedelta(days=15))
    with pytest.raises(InvalidArgumentError, match="naive"):
        cloudwatch_window(now=dt.datetime(2025, 3, 18))


def test_datums_follow_the_spec():
    plan = build_datums(daily(dt.date(2025, 3, 16), dt.date(2025, 3, 17)), now=NOW)
    assert len(plan.datums) == 2 * 2 * 4
    first = plan.datums[0]
    assert first["Dimensions"] == [{"Name": "App", "Value": "chess"}]
    assert first["Unit"] == "Count"
    assert first["Timestamp"] == dt.datetime(2025, 3, 16, tzinfo=dt.UTC)
    assert {d["MetricName"] for d in plan.datums} == NAMES
    by_name = {d["MetricName"]: d["Value"] for d in plan.datums[:4]}
    assert by_name == {
        "ActiveUsers": 1.0,
        "GamesPlayed": 1.0,
        "PartiesCreated": 0.0,
        "PartiesJoined": 0.0,
    }


def test_publish_and_read_back(aws):
    metrics = daily(dt.date(2025, 3, 6), dt.date(2025, 3, 17))
    report = publish_metrics(metrics, now=NOW, backoff=NO_WAIT)
    assert report["datumsPublished"] == metrics.height * 4
    assert report["datumsSkippedTooOld"] == 0 and report["failures"] == []
    back = read_cloudwatch_metrics(start="2025-03-06", end="2025-03-17")
    assert_frame_equal(back, metrics)
    # Publishing again adds duplicate samples; the Maximum statistic reads the same values.
    publish_metrics(metrics, now=NOW, backoff=NO_WAIT)
    assert_frame_equal(
        read_cloudwatch_metrics(start="2025-03-06", end="2025-03-17", apps=["chess", "sudoku"]),
        metrics,
    )


def test_old_and_future_days_are_counted_not_sent(aws):
    log = RequestLog()
    client = log.attach(boto3.client("cloudwatch"))
    metrics = daily(dt.date(2025, 1, 17), dt.date(2025, 3, 20))
    report = publish_metrics(metrics, now=NOW, client=client, backoff=NO_WAIT)
    first, last = dt.date(2025, 3, 5), dt.date(2025, 3, 18)
    inside = metrics.filter(pl.col("date").is_between(first, last)).height
    assert report["datumsPublished"] == inside * 4
    assert report["datumsSkippedTooOld"] == metrics.filter(pl.col("date") < first).height * 4
    assert report["datumsSkippedFuture"] == metrics.filter(pl.col("date") > last).height * 4
    assert OUTSIDE_WINDOW in report["note"] and "2025-01-17 → 2025-03-04" in report["note"]
    stamps = {d["Timestamp"] for call in log.of("PutMetricData") for d in call["MetricData"]}
    assert min(stamps) == dt.datetime(2025, 3, 5, tzinfo=dt.UTC)
    assert max(stamps) == dt.datetime(2025, 3, 18, tzinfo=dt.UTC)


def test_requests_stay_under_1000_datums_and_1_mb(aws):
    log = RequestLog()
    client = log.attach(boto3.client("cloudwatch"))
    # 13 days x 40 apps x 4 metrics = 2,080 datums: more than two requests' worth.
    apps = [f"app{i:02d}" for i in range(40)]
    metrics = daily(dt.date(2025, 3, 5), dt.date(2025, 3, 17), apps=apps)
    report = publish_metrics(metrics, now=NOW, client=client, backoff=NO_WAIT)
    calls = log.of("PutMetricData")
    assert len(calls) == 3 and report["requests"] == 3
    assert all(len(c["MetricData"]) <= 1000 for c in calls)
    assert sum(len(c["MetricData"]) for c in calls) == metrics.height * 4 == report["datumsPublished"]
    assert all(size < 1_000_000 for name, size in log.body_sizes if name == "PutMetricData")


def test_long_app_names_split_requests_by_size(aws):
    log = RequestLog()
    client = log.attach(boto3.client("cloudwatch"))
    apps = [f"{'x' * 1000}{i:02d}"[-1024:] for i in range(25)]
    metrics = daily(dt.date(2025, 3, 8), dt.date(2025, 3, 17), apps=apps)  # 1,000 datums of ~1 KB
    publish_metrics(metrics, now=NOW, client=client, backoff=NO_WAIT)
    sizes = [size for name, size in log.body_sizes if name == "PutMetricData"]
    assert len(sizes) > 1  # 1,000 datums fit the count limit but not the size limit
    assert all(size < 1_000_000 for size in sizes)
    assert sum(len(c["MetricData"]) for c in log.of("PutMetricData")) == 1000


def test_apps_cloudwatch_would_refuse_are_reported_and_the_rest_sent(aws):
    # Each of these breaks the Dimension rules and would fail its whole request of 1,000 datums.
    refused = ["Sudokú", "tab\there", "   ", "x" * 1025]
    fine = ["sudoku", ":colon-first is fine for a value", "x" * 1024]
    log = RequestLog()
    client = log.attach(boto3.client("cloudwatch"))
    metrics = daily(dt.date(2025, 3, 15), dt.date(2025, 3, 17), apps=(*refused, *fine))
    assert set(build_datums(metrics, now=NOW).invalid) == set(refused)
    with pytest.raises(CloudWatchError, match="printable ASCII") as info:
        publish_metrics(metrics, now=NOW, client=client, backoff=NO_WAIT)
    report = info.value.report
    (failure,) = report["failures"]
    assert failure["datums"] == 3 * len(refused) * 4  # every day of every refused app
    assert "and 1 more app(s)" in failure["error"]
    refused_datums, total = 3 * len(refused) * 4, 3 * (len(refused) + len(fine)) * 4
    assert f"{refused_datums} of {total} datum(s) not published" in str(info.value)
    sent = {d["Dimensions"][0]["Value"] for call in log.of("PutMetricData") for d in call["MetricData"]}
    assert sent == set(fine) and report["datumsPublished"] == 3 * len(fine) * 4


def test_throttling_is_retried(aws):
    flaky = Faulty(boto3.client("cloudwatch"), put_metric_data=throttle_first(3, "Throttling"))
    sleeps: list[float] = []
    metrics = daily(dt.date(2025, 3, 10), dt.date(2025, 3, 17))
    report = publish_metrics(metrics, now=NOW, client=flaky, backoff=Backoff(max_attempts=5, sleep=sleeps.append))
    assert report["datumsPublished"] == metrics.height * 4 and len(sleeps) == 3
    assert sleeps[0] < sleeps[2]  # backoff grows
    assert_frame_equal(read_cloudwatch_metrics(start="2025-03-10", end="2025-03-17"), metrics)


def test_a_failing_batch_is_reported_and_the_others_still_sent(aws):
    real = boto3.client("cloudwatch")

    def fail_second(call, kwargs, method):
        if call == 2:
            raise client_error("InvalidParameterValue", "PutMetricData")
        return method(**kwargs)

    flaky = Faulty(real, put_metric_data=fail_second)
    apps = [f"app{i:02d}" for i in range(40)]
    metrics = daily(dt.date(2025, 3, 5), dt.date(2025, 3, 17), apps=apps)
    with pytest.raises(CloudWatchError, match="not published") as info:
        publish_metrics(metrics, now=NOW, client=flaky, backoff=NO_WAIT)
    report = info.value.report
    (failure,) = report["failures"]
    assert failure["datums"] == 1000 and "InvalidParameterValue" in failure["error"]
    assert report["datumsPublished"] + failure["datums"] == metrics.height * 4
    assert flaky.counts["put_metric_data"] == 3  # not retried: the request itself was refused


def test_a_permanent_failure_is_retried_then_raised(aws):
    flaky = Faulty(boto3.client("cloudwatch"), put_metric_data=always_fail("Throttling"))
    with pytest.raises(CloudWatchError, match="after 5 attempt"):
        publish_metrics(
            daily(dt.date(2025, 3, 10), dt.date(2025, 3, 17)),
            now=NOW,
            client=flaky,
            backoff=NO_WAIT,
        )
    assert flaky.counts["put_metric_data"] == 5


def test_dry_run_sends_nothing():
    class Refuse:
        def __getattr__(self, name):
            raise AssertionError(f"dry run called {name}")

    report = publish_metrics(daily(dt.date(2025, 1, 17), dt.date(2025, 3, 17)), now=NOW, dry_run=True, client=Refuse())
    assert report["datums"] == 13 * 2 * 4 and report["datumsPublished"] == 0
    assert report["datumsSkippedTooOld"] == (60 - 13) * 2 * 4


def test_reader_without_data_and_with_a_bad_range(aws):
    empty = read_cloudwatch_metrics(start="2025-03-01", end="2025-03-02")
    assert empty.is_empty() and empty.columns[:2] == ["date", "app"]
    with pytest.raises(InvalidArgumentError, match="after end"):
        read_cloudwatch_metrics(start="2025-03-02", end="2025-03-01")
    assert NAMESPACE == "BubblyClouds/Analytics"


def test_docstring_examples_run():
    import doctest

    import bubbly_metrics.cloudwatch as module

    assert doctest.testmod(module).failed == 0
