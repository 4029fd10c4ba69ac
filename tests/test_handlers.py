"""The Lambda handlers end to end against moto's server: real-layout exports in S3, fake contexts.

Exports are written by bubbly_metrics.synthetic in the real AWS layout (manifests, shared
incremental data folder) and uploaded to the moto bucket — never moto's own export emulation,
which writes no manifests.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import boto3
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from bubbly_metrics import aggregate
from bubbly_metrics.analytics_table import ITEM_LIMIT, per_user_from_table, read_analytics_table
from bubbly_metrics.cloudwatch import read_cloudwatch_metrics
from bubbly_metrics.engagement import engagement_metrics, publish_engagement
from bubbly_metrics.exceptions import (
    ConfigurationError,
    ExportNotFoundError,
    InvalidArgumentError,
    InvalidDateError,
    PublishError,
)
from bubbly_metrics.handlers import aggregator, export
from bubbly_metrics.synthetic import (
    generate_incremental_records,
    generate_items,
    write_full_export,
    write_incremental_export,
)
from tests.aws_helpers import (
    ANALYTICS,
    BUCKET,
    FakeContext,
    Faulty,
    RequestLog,
    client_error,
    create_analytics_table,
    create_main_table,
    dynamodb_item_size,
    midnight,
    scan_all,
)
from tests.conftest import upload_tree

NOW = dt.datetime(2025, 3, 18, 2, 30, tzinfo=dt.UTC)
DAY = dt.date(2025, 3, 17)
WINDOW = (dt.date(2025, 3, 5), dt.date(2025, 3, 17))
ENV = {"EXPORT_BUCKET": BUCKET, "ANALYTICS_TABLE": ANALYTICS, "S3_PREFIX": "exports/"}
METRICS = ["date", "app", "active_users", "games_played", "parties_created", "parties_joined"]
GUIDE_LINES = [
    "Processing data files...",
    "Aggregation complete",
    "Publishing metrics to CloudWatch...",
    "Writing records to Analytics Table...",
    "Aggregator Lambda completed successfully",
]
PROGRESS = re.compile(r"^Processed \d+ items so far\.\.\.$")


def in_progress(written) -> None:
    """Make a completed export look like one still running: `_started` but no summary."""
    (written.export_dir / "manifest-summary.json").unlink()
    (written.export_dir / "manifest-summary.md5").unlink()


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, object]:
    """A bucket root holding the exports the Export Lambda would have written, and decoys."""
    root = tmp_path_factory.mktemp("bucket")
    items = lambda seed: generate_items(n_items=3000, start="2025-01-17", days=60, seed=seed)  # noqa: E731
    older = write_full_export(
        root,
        items(1),
        export_time="2025-03-17T02:05:00Z",
        prefix="exports/backfill/20250317T000000Z/",
        seed=1,
    )
    full = write_full_export(
        root,
        items(2),
        export_time="2025-03-18T02:05:00Z",
        prefix="exports/backfill/20250318T000000Z/",
        seed=2,
    )
    running = write_full_export(
        root,
        items(3),
        export_time="2025-03-18T02:20:00Z",
        prefix="exports/backfill/20250318T000000Z/",
        seed=3,
    )
    in_progress(running)
    end = midnight(DAY + dt.timedelta(days=1))
    day_items = generate_items(n_items=600, start=DAY, days=1, seed=4)
    incremental = write_incremental_export(
        root,
        generate_incremental_records(day_items, seed=4, window_end_micros=int(end.timestamp() * 1e6)),
        export_from=end - dt.timedelta(days=1),
        export_to=end,
        prefix="exports/incremental/20250318T000000Z/",
        n_files=3,
    )
    later = write_incremental_export(
        root,
        generate_incremental_records(generate_items(n_items=50, start=DAY, days=1, seed=5), seed=5),
        export_from=end,
        export_to=end + dt.timedelta(days=1),
        prefix="exports/incremental/20250319T000000Z/",
        seed=5,
    )
    in_progress(later)
    return {"root": root, "older": older, "full": full, "incremental": incremental}


@pytest.fixture
def bucket(aws, exports):
    upload_tree(exports["root"], BUCKET, aws)
    create_analytics_table()
    return f"s3://{BUCKET}/exports/"


def json_lines(capsys) -> list[dict]:
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert all({"timestamp", "level", "logger", "message"} <= set(entry) for entry in lines)
    return lines


def clients():
    log = RequestLog()
    return log, log.attach(boto3.client("dynamodb")), log.attach(boto3.client("cloudwatch"))


def check_limits(log: RequestLog) -> None:
    """No request over any AWS limit (moto enforces none of these)."""
    for call in log.of("BatchWriteItem"):
        requests = [r for rs in call["RequestItems"].values() for r in rs]
        assert len(requests) <= 25
        assert all(dynamodb_item_size(r["PutRequest"]["Item"]) <= ITEM_LIMIT for r in requests if "PutRequest" in r)
    for call in log.of("TransactWriteItems"):
        assert len(call["TransactItems"]) <= 100
    for call in log.of("PutMetricData"):
        assert len(call["MetricData"]) <= 1000
    assert all(size < 1_000_000 for name, size in log.body_sizes if name == "PutMetricData")


def expected_per_user(result) -> pl.DataFrame:
    return (
        result.per_user.filter((pl.col("games") > 0) | (pl.col("parties_created") > 0))
        .select("date", "app", "user_id", "games", "parties_created")
        .sort("date", "app", "user_id")
    )


# --------------------------------------------------------------------------------------------
# Aggregator Lambda


def test_aggregator_backfill_end_to_end(bucket, exports, capsys):
    log, ddb, cw = clients()
    event = {"mode": "backfill", "backfillStartDate": "2025-01-17"}
    summary = aggregator.handle(event, FakeContext(), env=ENV, now=NOW, dynamodb_client=ddb, cloudwatch_client=cw)
    expected = aggregate(str(exports["root"] / "exports"), mode="backfill", now=NOW)

    # The latest *completed FULL* export: not the older one, not the one in progress, not
    # the incremental ones.
    assert summary["exportId"] == exports["full"].export_id == expected.export.export_id
    assert summary["mode"] == "backfill"
    assert (summary["startDate"], summary["endDate"]) == ("2025-01-17", "2025-03-17")
    assert summary["itemsRead"] == exports["full"].item_count == expected.items_read
    assert summary["malformed"] == expected.to_dict()["malformed"] and summary["malformed"]
    assert summary["rowsWritten"] == expected.metrics.height == 60 * 4
    inside = expected.metrics.filter(pl.col("date").is_between(*WINDOW))
    assert summary["datumsPublished"] == inside.height * 4
    assert summary["datumsSkippedTooOld"] == (expected.metrics.height - inside.height) * 4
    assert "outside CloudWatch's two-week window" in summary["note"]
    assert summary["failures"] == []
    assert set(summary["timings"]) == {"scan", "aggregate", "publish", "write"}
    json.dumps(summary)  # JSON-serialisable as Lambda needs

    table = read_analytics_table(ANALYTICS)
    assert_frame_equal(table.select(METRICS), expected.metrics)
    assert_frame_equal(per_user_from_table(table), expected_per_user(expected))
    assert set(table["export_arn"]) == {expected.export.export_arn}
    assert_frame_equal(read_cloudwatch_metrics(start=WINDOW[0], end=WINDOW[1]), inside)
    assert read_cloudwatch_metrics(start="2025-01-17", end="2025-03-04").is_empty()
    check_limits(log)

    lines = json_lines(capsys)
    messages = [entry["message"] for entry in lines]
    assert [m for m in messages if m in GUIDE_LINES] == GUIDE_LINES
    progress = [i for i, m in enumerate(messages) if PROGRESS.match(m)]
    assert len(progress) == len(exports["full"].data_files)
    assert messages.index(GUIDE_LINES[0]) < progress[0] < progress[-1] < messages.index(GUIDE_LINES[1])
    assert messages[progress[-1]] == f"Processed {exports['full'].item_count} items so far..."
    assert all(entry["requestId"] == "req-0001" for entry in lines)
    done = lines[messages.index(GUIDE_LINES[-1])]
    assert done["rowsWritten"] == summary["rowsWritten"] and done["exportId"] == summary["exportId"]
    assert not any(entry["level"] == "WARNING" and "remaining time" in entry["message"] for entry in lines)


def test_aggregator_backfill_the_day_after_its_export_stops_at_the_exports_last_day(bucket, exports, capsys):
    # The export finished past UTC midnight, or the backfill is re-run next day on the same
    # export (docs/operations.md allows both): "yesterday" is a day the export does not hold.
    log, ddb, cw = clients()
    next_day = NOW + dt.timedelta(days=1)
    event = {"mode": "backfill", "backfillStartDate": "2025-01-17"}
    summary = aggregator.handle(event, FakeContext(), env=ENV, now=next_day, dynamodb_client=ddb, cloudwatch_client=cw)
    assert (summary["startDate"], summary["endDate"]) == ("2025-01-17", "2025-03-17")
    assert summary["rowsWritten"] == 60 * 4 and summary["failures"] == []
    table = read_analytics_table(ANALYTICS)
    assert table["date"].max() == dt.date(2025, 3, 17)  # 03-18 was neither written nor emptied
    warned = [e for e in json_lines(capsys) if e["level"] == "WARNING" and e["message"].startswith("backfill ends")]
    assert len(warned) == 1 and "2025-03-17" in warned[0]["message"] and warned[0]["requestId"] == "req-0001"


def test_aggregator_incremental_end_to_end(bucket, exports, capsys):
    summary = aggregator.handle({"mode": "incremental"}, FakeContext(), env=ENV, now=NOW)
    expected = aggregate(str(exports["root"] / "exports"), mode="incremental", now=NOW)
    # The latest completed INCREMENTAL export covering yesterday, not the newer full export
    # nor the incremental one still in progress.
    assert summary["exportId"] == exports["incremental"].export_id == expected.export.export_id
    assert (summary["startDate"], summary["endDate"]) == ("2025-03-17", "2025-03-17")
    assert summary["rowsWritten"] == expected.metrics.height > 0
    assert summary["datumsPublished"] == expected.metrics.height * 4
    assert summary["datumsSkippedTooOld"] == 0 and summary["failures"] == []

    table = read_analytics_table(ANALYTICS, start=DAY, end=DAY)
    assert_frame_equal(table.select(METRICS), expected.metrics)
    assert_frame_equal(per_user_from_table(table), expected_per_user(expected))
    assert set(table["mode"]) == {"incremental"}
    assert_frame_equal(read_cloudwatch_metrics(start=DAY, end=DAY), expected.metrics)
    messages = [entry["message"] for entry in json_lines(capsys)]
    assert [m for m in messages if m in GUIDE_LINES] == GUIDE_LINES


def test_a_bad_memory_setting_fails_only_the_backfill_routing_that_reads_it(bucket, exports):
    """Memory settings size a backfill's route; an incremental day never reads them."""
    env = {**ENV, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008MB", "DISTRIBUTED_MAP_MEMORY_MB": "2048MB"}
    summary = aggregator.handle({"mode": "incremental"}, FakeContext(), env=env, now=NOW)
    assert summary["startDate"] == "2025-03-17" and summary["failures"] == []


def test_aggregator_mode_defaults_to_incremental_and_reruns_are_identical(bucket):
    first = aggregator.handle({}, FakeContext(), env=ENV, now=NOW)
    before = read_analytics_table(ANALYTICS)
    # The scheduled run again (a retry): the ledger says the day came from this export.
    again = aggregator.handle(None, FakeContext(), env=ENV, now=NOW)
    assert first["mode"] == again["mode"] == "incremental"
    assert (first["status"], again["status"]) == ("aggregated", "skipped")
    assert again["exportId"] == first["exportId"] and "Already aggregated" in again["message"]
    # Asked for by date, the day is aggregated again, to the same result.
    forced = aggregator.handle({"date": DAY.isoformat()}, FakeContext(), env=ENV, now=NOW)
    assert forced["status"] == "aggregated"
    assert_frame_equal(read_analytics_table(ANALYTICS), before)
    assert_frame_equal(read_cloudwatch_metrics(start=DAY, end=DAY), before.select(METRICS))


def cloudwatch_value(metric: str, app: str | None, day: dt.date = DAY, stat: str = "Maximum") -> float | None:
    """The one value CloudWatch holds for ``metric`` (``App`` = ``app``, or no dimension) on ``day``."""
    dimensions = [{"Name": "App", "Value": app}] if app is not None else []
    response = boto3.client("cloudwatch").get_metric_data(
        MetricDataQueries=[
            {
                "Id": "m",
                "MetricStat": {
                    "Metric": {"Namespace": "BubblyClouds/Analytics", "MetricName": metric, "Dimensions": dimensions},
                    "Period": 86_400,
                    "Stat": stat,
                },
            }
        ],
        StartTime=midnight(day),
        EndTime=midnight(day + dt.timedelta(days=1)),
    )
    (result,) = response["MetricDataResults"]
    assert len(result["Values"]) <= 1
    return result["Values"][0] if result["Values"] else None


ENGAGEMENT = {"weekly_active_users": "WeeklyActiveUsers", "monthly_active_users": "MonthlyActiveUsers"}


def test_aggregator_publishes_wau_mau_after_an_incremental_day(bucket, exports, capsys):
    log, ddb, cw = clients()
    backfill = {"mode": "backfill", "backfillStartDate": "2025-01-17"}
    first = aggregator.handle(backfill, FakeContext(), env=ENV, now=NOW, dynamodb_client=ddb, cloudwatch_client=cw)
    assert "engagement" not in first  # backfills publish no WAU/MAU (their days are mostly too old)
    queries = len(log.of("Query"))
    summary = aggregator.handle(
        {"mode": "incremental"}, FakeContext(), env=ENV, now=NOW, dynamodb_client=ddb, cloudwatch_client=cw
    )
    assert summary["status"] == "aggregated" and summary["mode"] == "incremental"
    report = summary["engagement"]
    # The ledger's 28 days are whole (the backfill's, then this day's): everything is sent.
    assert report["status"] == "published" and report["date"] == DAY.isoformat()
    assert report["metrics"] == ["ActiveUsers", "GamesPlayed", "MonthlyActiveUsers", "Stickiness", "WeeklyActiveUsers"]
    # One Query on the ledger, one per day of the month (the handler's own ledger reads aside).
    assert report["queries"] == 29
    # The engagement's 28 (the last calls): each day of the window once.
    read = [q["ExpressionAttributeValues"][":d"]["S"] for q in log.of("Query")[queries:][-28:]]
    assert sorted(read) == [(DAY - dt.timedelta(days=i)).isoformat() for i in range(27, -1, -1)]

    full = aggregate(str(exports["root"] / "exports"), mode="backfill", now=NOW)
    day = aggregate(str(exports["root"] / "exports"), mode="incremental", now=NOW)
    expected = (
        engagement_metrics([day, full], start=DAY - dt.timedelta(days=27), end=DAY)
        .filter(pl.col("date") == DAY)
        .collect()
    )
    assert expected.height == report["apps"] > 0
    assert report["datumsPublished"] == 2 + 3 * expected.height
    for row in expected.iter_rows(named=True):
        for column, metric in ENGAGEMENT.items():
            assert cloudwatch_value(metric, row["app"]) == row[column] > 0
        assert cloudwatch_value("Stickiness", row["app"]) == pytest.approx(row["stickiness"])
    # The all-apps totals (no dimension): the anomaly alarms' series.
    totals = day.metrics.select(pl.col("active_users", "games_played").sum()).row(0)
    assert (cloudwatch_value("ActiveUsers", None), cloudwatch_value("GamesPlayed", None)) == totals
    check_limits(log)
    lines = json_lines(capsys)
    (line,) = [e for e in lines if e["message"].startswith("Engagement metrics")]
    assert line["message"] == "Engagement metrics published" and line["level"] == "INFO"
    messages = [e["message"] for e in lines]
    assert (
        messages.index("Writing records to Analytics Table...", len(messages) - 10)
        < messages.index("Engagement metrics published")
        < messages.index("Aggregator Lambda completed successfully", len(messages) - 10)
    )

    # Idempotent: the day again publishes the same values (a second, equal sample).
    again = aggregator.handle({"date": DAY.isoformat()}, FakeContext(), env=ENV, now=NOW)
    assert again["engagement"]["status"] == "published"
    for row in expected.iter_rows(named=True):
        assert cloudwatch_value("MonthlyActiveUsers", row["app"]) == row["monthly_active_users"]
        assert cloudwatch_value("MonthlyActiveUsers", row["app"], stat="Minimum") == row["monthly_active_users"]


def test_a_window_with_days_missing_from_the_ledger_is_not_published(bucket, exports, capsys):
    # Only the incremental day is in the table: its week and month would count the six and
    # 27 days before it as days without activity.
    summary = aggregator.handle({"mode": "incremental"}, FakeContext(), env=ENV, now=NOW)
    report = summary["engagement"]
    assert report["status"] == "incomplete" and len(report["missingDays"]) == 27
    assert report["metrics"] == ["ActiveUsers", "GamesPlayed"] and report["queries"] == 1
    assert "27 day(s) of the 28 ending 2025-03-17 are not in the ledger whole" in report["note"]
    table = read_analytics_table(ANALYTICS, start=DAY, end=DAY)
    assert all(cloudwatch_value("WeeklyActiveUsers", app) is None for app in table["app"])
    assert cloudwatch_value("ActiveUsers", None) == table["active_users"].sum() > 0
    (line,) = [e for e in json_lines(capsys) if e["message"].startswith("Engagement metrics")]
    assert line["level"] == "WARNING" and line["message"].startswith("Engagement metrics incomplete: ")


def test_an_engagement_failure_leaves_the_day_committed_and_fails_the_invocation(bucket, exports, capsys):
    _, ddb, cw = clients()
    backfill = {"mode": "backfill", "backfillStartDate": "2025-01-17"}
    aggregator.handle(backfill, FakeContext(), env=ENV, now=NOW, dynamodb_client=ddb, cloudwatch_client=cw)

    def refuse_engagement(call, kwargs, real):
        if any(not d["Dimensions"] or d["MetricName"] == "WeeklyActiveUsers" for d in kwargs["MetricData"]):
            raise client_error("AccessDenied", "PutMetricData")
        return real(**kwargs)

    faulty = Faulty(cw, put_metric_data=refuse_engagement)
    with pytest.raises(PublishError, match=r"^Engagement metrics \(WAU/MAU\) for 2025-03-17 not published") as info:
        aggregator.handle(
            {"mode": "incremental"}, FakeContext(), env=ENV, now=NOW, dynamodb_client=ddb, cloudwatch_client=faulty
        )
    assert info.value.report["engagement"]["status"] == "failed"
    assert "AccessDenied" in info.value.report["engagement"]["error"]
    # The day's rows and ledger entry are committed, from the incremental export.
    table = read_analytics_table(ANALYTICS, start=DAY, end=DAY)
    assert set(table["mode"]) == {"incremental"}
    assert info.value.report["exportId"] == exports["incremental"].export_id
    lines = json_lines(capsys)
    (error,) = [e for e in lines if e["level"] == "ERROR"]
    assert error["message"] == str(info.value) and error["report"]["engagement"]["status"] == "failed"
    assert "Aggregator Lambda completed successfully" not in [e["message"] for e in lines[-3:]]
    # Re-running the day, as the message says, publishes them.
    again = aggregator.handle({"date": DAY.isoformat()}, FakeContext(), env=ENV, now=NOW)
    assert again["engagement"]["status"] == "published"


def test_publish_engagement_respects_the_time_left_and_cloudwatch_s_window(aws):
    create_analytics_table()
    log, ddb, cw = clients()
    short = publish_engagement(
        ANALYTICS, day=DAY, now=NOW, dynamodb_client=ddb, cloudwatch_client=cw, time_left=lambda: 1.5
    )
    assert short["status"] == "failed" and short["error"].startswith("not started: 1.5s left")
    old = publish_engagement(ANALYTICS, day="2025-02-01", now=NOW, dynamodb_client=ddb, cloudwatch_client=cw)
    assert old["status"] == "skipped" and "outside CloudWatch's two-week window" in old["note"]
    absent = publish_engagement(ANALYTICS, day=DAY, now=NOW, dynamodb_client=ddb, cloudwatch_client=cw)
    assert absent["status"] == "skipped" and "not in the ledger" in absent["note"]
    assert len(log.of("Query")) == 1 and log.of("PutMetricData") == []


def test_aggregator_says_no_export_found(aws, exports, capsys):
    create_analytics_table()
    boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    boto3.client("s3").put_object(Bucket=BUCKET, Key="exports/README", Body=b"nothing here yet")
    with pytest.raises(ExportNotFoundError, match="^No export found in S3") as info:
        aggregator.handle({"mode": "backfill"}, FakeContext(), env=ENV, now=NOW)
    assert f"s3://{BUCKET}/exports/" in str(info.value)
    (error,) = [e for e in json_lines(capsys) if e["level"] == "ERROR"]
    assert error["message"].startswith("No export found in S3") and error["errorType"] == "ExportNotFoundError"


def test_aggregator_ignores_exports_in_progress(aws, tmp_path):
    running = write_full_export(
        tmp_path,
        generate_items(n_items=50, seed=1),
        export_time="2025-03-18T02:00:00Z",
        prefix="exports/backfill/x/",
    )
    in_progress(running)
    upload_tree(tmp_path, BUCKET, aws)
    create_analytics_table()
    with pytest.raises(ExportNotFoundError, match=r"No export found in S3.*1 export\(s\) still in progress"):
        aggregator.handle({"mode": "backfill"}, FakeContext(), env=ENV, now=NOW)


@pytest.mark.parametrize(
    ("env", "event", "error", "text"),
    [
        ({}, {}, ConfigurationError, "EXPORT_BUCKET environment variable is required"),
        (
            {"EXPORT_BUCKET": " "},
            {},
            ConfigurationError,
            "EXPORT_BUCKET environment variable is required",
        ),
        (
            {"EXPORT_BUCKET": BUCKET},
            {},
            ConfigurationError,
            "ANALYTICS_TABLE environment variable is required",
        ),
        (
            ENV,
            {"mode": "full"},
            InvalidArgumentError,
            "Invalid mode. Must be 'incremental' or 'backfill'",
        ),
        (
            ENV,
            {"mode": "backfill", "backfillStartDate": "2025/01/17"},
            InvalidDateError,
            "Invalid backfillStartDate format",
        ),
        (
            ENV,
            {"mode": "backfill", "backfillStartDate": "2025-02-30"},
            InvalidDateError,
            "Invalid backfillStartDate format",
        ),
    ],
)
def test_aggregator_error_texts(env, event, error, text, capsys):
    with pytest.raises(error) as info:
        aggregator.handle(event, FakeContext(), env=env, now=NOW)
    assert str(info.value).startswith(text)
    (logged,) = json_lines(capsys)[-1:]
    assert logged["level"] == "ERROR" and logged["message"] == str(info.value)


def test_aggregator_warns_when_lambda_time_runs_low(bucket, capsys):
    aggregator.handle({"mode": "incremental"}, FakeContext(remaining_ms=5_000), env=ENV, now=NOW)
    warnings = [e for e in json_lines(capsys) if e["level"] == "WARNING" and "remaining time is low" in e["message"]]
    assert len(warnings) == 1 and warnings[0]["remainingMillis"] == 5_000


def test_aggregator_does_not_start_a_day_it_cannot_finish(bucket, capsys):
    # 2.1 s left: less than a day's writes at the assumed pace plus the 2 s kept aside.
    with pytest.raises(PublishError, match="stopped before 2025-03-17 with too little time left"):
        aggregator.handle({"mode": "incremental"}, FakeContext(remaining_ms=2_100), env=ENV, now=NOW)
    assert scan_all() == {}  # not a row, not a ledger entry
    (error,) = [e for e in json_lines(capsys) if e["level"] == "ERROR"]
    assert "re-run from 2025-03-17" in error["message"]


def test_a_backfill_over_400_days(aws, tmp_path, capsys):
    """Every day lands in the table, CloudWatch gets only its window, no request over a limit."""
    now = dt.datetime(2026, 3, 1, 2, 30, tzinfo=dt.UTC)
    first, last = dt.date(2025, 1, 17), dt.date(2026, 2, 28)
    days = (last - first).days + 1
    assert days > 400
    items = generate_items(n_items=12_000, start=first, days=days, apps=("sudoku", "chess", "Sudoku"), seed=7)
    write_full_export(
        tmp_path,
        items,
        export_time="2026-03-01T02:05:00Z",
        prefix="exports/backfill/20260301T000000Z/",
    )
    upload_tree(tmp_path, BUCKET, aws)
    create_analytics_table()
    log, ddb, cw = clients()
    summary = aggregator.handle(
        {"mode": "backfill", "backfillStartDate": "2025-01-17"},
        FakeContext(),
        env=ENV,
        now=now,
        dynamodb_client=ddb,
        cloudwatch_client=cw,
    )
    assert summary["rowsWritten"] == days * 3 and summary["failures"] == []
    window = (dt.date(2026, 2, 16), last)
    in_window = (window[1] - window[0]).days + 1
    assert summary["datumsPublished"] == in_window * 3 * 4
    assert summary["datumsSkippedTooOld"] == (days - in_window) * 3 * 4

    check_limits(log)
    assert len(log.of("TransactWriteItems")) == days  # each day replaced by one transaction
    stamps = {d["Timestamp"] for call in log.of("PutMetricData") for d in call["MetricData"]}
    assert min(stamps) == midnight(window[0]) and max(stamps) == midnight(window[1])

    table = read_analytics_table(ANALYTICS)
    expected_days = pl.date_range(first, last, "1d", eager=True)
    assert table.group_by("app").agg(pl.col("date").sort())["date"].to_list() == [expected_days.to_list()] * 3
    expected = aggregate(str(tmp_path / "exports"), mode="backfill", now=now)
    assert_frame_equal(table.select(METRICS), expected.metrics)
    cloudwatch = read_cloudwatch_metrics(start=first, end=last)
    assert_frame_equal(cloudwatch, expected.metrics.filter(pl.col("date").is_between(*window)))
    assert "outside CloudWatch's two-week window" in summary["note"]
    capsys.readouterr()


def test_lambda_handler_entrypoint_with_the_wall_clock(aws, tmp_path, monkeypatch, capsys):
    today = dt.datetime.now(dt.UTC).date()
    yesterday = today - dt.timedelta(days=1)
    end = midnight(today)
    items = generate_items(n_items=300, start=yesterday, days=1, seed=8)
    write_incremental_export(
        tmp_path,
        generate_incremental_records(items, seed=8, window_end_micros=int(end.timestamp() * 1e6)),
        export_from=end - dt.timedelta(days=1),
        export_to=end,
        prefix=f"exports/incremental/{end:%Y%m%dT%H%M%SZ}/",
    )
    upload_tree(tmp_path, BUCKET, aws)
    create_analytics_table()
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    summary = aggregator.lambda_handler({"mode": "incremental"}, FakeContext())
    assert summary["startDate"] == yesterday.isoformat() and summary["failures"] == []
    assert read_analytics_table(ANALYTICS, start=yesterday, end=yesterday).height == summary["rowsWritten"] > 0
    assert summary["datumsPublished"] == summary["rowsWritten"] * 4
    assert json_lines(capsys)[-1]["message"] == "Aggregator Lambda completed successfully"


# --------------------------------------------------------------------------------------------
# Export Lambda


@pytest.fixture
def main_table(aws):
    arn = create_main_table()
    boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    return arn


def export_env(arn: str) -> dict[str, str]:
    return {"TABLE_NAME": arn, "EXPORT_BUCKET": BUCKET, "S3_PREFIX": "exports/"}


def test_export_incremental_request(main_table, capsys):
    log = RequestLog()
    client = log.attach(boto3.client("dynamodb"))
    result = export.handle({"mode": "incremental"}, FakeContext(), env=export_env(main_table), now=NOW, client=client)
    (sent,) = log.of("ExportTableToPointInTime")
    assert sent["TableArn"] == main_table
    assert sent["ExportType"] == "INCREMENTAL_EXPORT"
    assert sent["ExportFormat"] == "DYNAMODB_JSON"
    assert sent["IncrementalExportSpecification"] == {
        "ExportFromTime": dt.datetime(2025, 3, 17, tzinfo=dt.UTC),
        "ExportToTime": dt.datetime(2025, 3, 18, tzinfo=dt.UTC),
        "ExportViewType": "NEW_IMAGE",
    }
    assert sent["S3Bucket"] == BUCKET and sent["S3Prefix"] == "exports/incremental/20250318T000000Z"
    assert result["s3Prefix"] == "exports/incremental/20250318T000000Z/"
    assert result["exportStatus"] in {"IN_PROGRESS", "COMPLETED"}
    described = boto3.client("dynamodb").describe_export(ExportArn=result["exportArn"])["ExportDescription"]
    assert described["ExportType"] == "INCREMENTAL_EXPORT" and described["S3Bucket"] == BUCKET
    json.dumps(result)
    (started,) = [e for e in json_lines(capsys) if e["message"] == "Export started"]
    assert started["exportArn"] == result["exportArn"] and started["s3Prefix"] == result["s3Prefix"]


def test_export_backfill_request(main_table):
    log = RequestLog()
    client = log.attach(boto3.client("dynamodb"))
    event = {"mode": "backfill", "backfillStartDate": "2025-01-17"}
    result = export.handle(event, FakeContext(), env=export_env(main_table), now=NOW, client=client)
    (sent,) = log.of("ExportTableToPointInTime")
    assert sent["ExportType"] == "FULL_EXPORT" and sent["ExportFormat"] == "DYNAMODB_JSON"
    assert "IncrementalExportSpecification" not in sent
    assert sent["S3Prefix"] == "exports/backfill/20250318T000000Z"
    assert result["backfillStartDate"] == "2025-01-17"
    described = boto3.client("dynamodb").describe_export(ExportArn=result["exportArn"])["ExportDescription"]
    assert described["ExportType"] == "FULL_EXPORT"


def test_export_client_token_is_stable_for_the_same_day(main_table):
    log = RequestLog()
    client = log.attach(boto3.client("dynamodb"))
    env = export_env(main_table)
    for now in (NOW, NOW + dt.timedelta(minutes=7), NOW + dt.timedelta(days=1)):
        export.handle({"mode": "incremental"}, FakeContext(), env=env, now=now, client=client)
        export.handle(
            {"mode": "backfill", "backfillStartDate": "2025-01-17"},
            FakeContext(),
            env=env,
            now=now,
            client=client,
        )
    tokens = [p["ClientToken"] for p in log.of("ExportTableToPointInTime")]
    assert tokens[0] == tokens[2] and tokens[1] == tokens[3]  # same day: same token, per mode
    assert len(set(tokens)) == 4  # another day or another mode: another export
    prefixes = [p["S3Prefix"] for p in log.of("ExportTableToPointInTime")]
    assert prefixes[0] == prefixes[2]  # a repeat sends identical parameters, as DynamoDB requires


@pytest.mark.parametrize(
    ("env", "event", "error", "text"),
    [
        (
            {"EXPORT_BUCKET": BUCKET},
            {},
            ConfigurationError,
            "TABLE_NAME environment variable is required",
        ),
        (
            {"TABLE_NAME": "arn:x", "EXPORT_BUCKET": ""},
            {},
            ConfigurationError,
            "EXPORT_BUCKET environment variable is required",
        ),
        (
            {"TABLE_NAME": "arn:x", "EXPORT_BUCKET": BUCKET},
            {"mode": "daily"},
            InvalidArgumentError,
            "Invalid mode. Must be 'incremental' or 'backfill'",
        ),
        (
            {"TABLE_NAME": "arn:x", "EXPORT_BUCKET": BUCKET},
            {"mode": "backfill"},
            ConfigurationError,
            "backfillStartDate is required for backfill mode",
        ),
        (
            {"TABLE_NAME": "arn:x", "EXPORT_BUCKET": BUCKET},
            {"mode": "backfill", "backfillStartDate": "17-01-2025"},
            InvalidDateError,
            "Invalid backfillStartDate format",
        ),
    ],
)
def test_export_error_texts(env, event, error, text, capsys):
    with pytest.raises(error) as info:
        export.handle(event, FakeContext(), env=env, now=NOW, client=object())
    assert str(info.value).startswith(text)
    if error is ConfigurationError:
        assert str(info.value) == text
    (logged,) = json_lines(capsys)
    assert logged["level"] == "ERROR" and logged["message"] == str(info.value)


def test_export_lambda_handler_entrypoint(main_table, monkeypatch, capsys):
    for name, value in export_env(main_table).items():
        monkeypatch.setenv(name, value)
    result = export.lambda_handler({"mode": "incremental"}, FakeContext())
    today = dt.datetime.now(dt.UTC).date()
    assert result["exportToTime"] == f"{today}T00:00:00Z"
    assert result["exportArn"] and result["s3Prefix"] == f"exports/incremental/{today:%Y%m%d}T000000Z/"
    assert json_lines(capsys)[-1]["message"] == "Export started"


def test_handlers_leave_logging_as_they_found_it():
    import logging

    package = logging.getLogger("bubbly_metrics")
    before = (package.level, package.propagate, list(package.handlers))
    with pytest.raises(ConfigurationError):
        aggregator.handle({}, FakeContext(), env={})
    assert (package.level, package.propagate, list(package.handlers)) == before


def test_handler_modules_are_where_the_cdk_app_points():
    assert callable(export.lambda_handler) and callable(aggregator.lambda_handler)
    assert Path(export.__file__).name == "export.py" and Path(aggregator.__file__).name == "aggregator.py"


def test_the_export_lambda_cold_start_loads_no_polars():
    import subprocess
    import sys

    probe = (
        "import sys, bubbly_metrics.handlers.export\n"
        "print(sorted(m for m in ('polars', 's3fs', 'boto3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
