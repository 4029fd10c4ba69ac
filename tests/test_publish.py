"""publish(): both outputs, failure isolation and dry runs, against moto (server mode)."""

from __future__ import annotations

import datetime as dt

import boto3
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from bubbly_metrics import aggregate
from bubbly_metrics._retry import Backoff
from bubbly_metrics.analytics_table import read_analytics_table
from bubbly_metrics.cloudwatch import read_cloudwatch_metrics
from bubbly_metrics.exceptions import InvalidArgumentError, PublishError
from bubbly_metrics.publish import PublishReport, publish
from bubbly_metrics.synthetic import generate_items, write_full_export
from tests.aws_helpers import ANALYTICS, Faulty, always_fail, create_analytics_table, scan_all, without_generations

NOW = dt.datetime(2025, 3, 18, 2, 30, tzinfo=dt.UTC)
NO_WAIT = Backoff(max_attempts=3, sleep=lambda s: None)
METRICS = ["date", "app", "active_users", "games_played", "parties_created", "parties_joined"]
WINDOW = (dt.date(2025, 3, 5), dt.date(2025, 3, 17))


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    items = generate_items(n_items=4000, start="2025-01-17", days=60, seed=11)
    write_full_export(root, items, export_time="2025-03-18T02:00:00Z", n_files=2)
    return aggregate(str(root), mode="backfill", now=NOW)


class Refuse:
    """A client that fails the test if any AWS call is made."""

    def __getattr__(self, name):
        raise AssertionError(f"dry run called {name}")


def in_window(metrics: pl.DataFrame) -> pl.DataFrame:
    return metrics.filter(pl.col("date").is_between(*WINDOW))


def test_publish_writes_both_outputs(aws, result):
    create_analytics_table()
    stages: list[str] = []
    report = publish(result, table=ANALYTICS, now=NOW, backoff=NO_WAIT, on_stage=stages.append).to_dict()
    assert stages == ["cloudwatch", "table"]
    assert report["failures"] == []
    assert report["rowsWritten"] == result.metrics.height
    assert report["datumsPublished"] == in_window(result.metrics).height * 4
    assert report["datumsSkippedTooOld"] == (result.metrics.height - in_window(result.metrics).height) * 4
    assert report["exportArn"] == result.export.export_arn and report["mode"] == "backfill"
    assert set(report["timings"]) == {"publish", "write"}
    assert_frame_equal(read_analytics_table(ANALYTICS).select(METRICS), result.metrics)
    cloudwatch = read_cloudwatch_metrics(start=WINDOW[0], end=WINDOW[1])
    assert_frame_equal(cloudwatch, in_window(result.metrics))


def test_a_cloudwatch_failure_does_not_stop_the_table(aws, result):
    create_analytics_table()
    broken = Faulty(boto3.client("cloudwatch"), put_metric_data=always_fail("AccessDenied"))
    with pytest.raises(PublishError, match="CloudWatch: 1 failure") as info:
        publish(result, table=ANALYTICS, now=NOW, cloudwatch_client=broken, backoff=NO_WAIT)
    report = info.value.report
    assert report["rowsWritten"] == result.metrics.height and report["datumsPublished"] == 0
    assert [f["target"] for f in report["failures"]] == ["cloudwatch"]
    assert_frame_equal(read_analytics_table(ANALYTICS).select(METRICS), result.metrics)
    after_failure = without_generations(scan_all())
    # The re-run succeeds and leaves the table exactly as a clean run does.
    publish(result, table=ANALYTICS, now=NOW, backoff=NO_WAIT)
    # ... and only then are its days in the ledger: a failed run is not an aggregated day.
    assert not any(day == "#ledger" for day, _ in after_failure)
    after = scan_all()
    assert without_generations({k: v for k, v in after.items() if k[0] != "#ledger"}) == after_failure
    assert sorted(a for d, a in after if d == "#ledger") == sorted({str(d) for d in result.metrics["date"]})
    assert_frame_equal(read_cloudwatch_metrics(start=WINDOW[0], end=WINDOW[1]), in_window(result.metrics))


def test_a_table_failure_does_not_stop_cloudwatch(aws, result):
    # No Analytics Table exists: every table call fails.
    with pytest.raises(PublishError, match="Analytics Table: 1 failure") as info:
        publish(result, table=ANALYTICS, now=NOW, backoff=NO_WAIT)
    report = info.value.report
    assert report["datumsPublished"] == in_window(result.metrics).height * 4
    assert report["rowsWritten"] == 0
    assert "does the table exist" in report["failures"][0]["error"]
    assert_frame_equal(read_cloudwatch_metrics(start=WINDOW[0], end=WINDOW[1]), in_window(result.metrics))


def test_both_failing_are_both_reported(aws, result):
    create_analytics_table()
    cloudwatch = Faulty(boto3.client("cloudwatch"), put_metric_data=always_fail("InternalFailure"))
    dynamodb = Faulty(boto3.client("dynamodb"), transact_write_items=always_fail("AccessDeniedException"))
    with pytest.raises(PublishError) as info:
        publish(
            result,
            table=ANALYTICS,
            now=NOW,
            cloudwatch_client=cloudwatch,
            dynamodb_client=dynamodb,
            backoff=NO_WAIT,
        )
    message = str(info.value)
    assert "CloudWatch" in message and "Analytics Table" in message and "re-running is safe" in message
    assert {f["target"] for f in info.value.report["failures"]} == {"cloudwatch", "analytics_table"}
    assert cloudwatch.counts["put_metric_data"] == 3  # InternalFailure is retried
    assert dynamodb.counts["transact_write_items"] == result.date_range.days  # AccessDenied is not: a try a day
    assert scan_all() == {}  # and no day is half written


def test_an_unexpected_error_in_one_stage_is_isolated(aws, result):
    create_analytics_table()

    class NoCredentials:
        def put_metric_data(self, **kwargs):
            from botocore.exceptions import NoCredentialsError

            raise NoCredentialsError()

    with pytest.raises(PublishError, match="Unable to locate credentials"):
        publish(result, table=ANALYTICS, now=NOW, cloudwatch_client=NoCredentials(), backoff=NO_WAIT)
    assert read_analytics_table(ANALYTICS).height == result.metrics.height


def test_dry_run_touches_nothing(result):
    report = publish(
        result,
        table=ANALYTICS,
        now=NOW,
        dry_run=True,
        dynamodb_client=Refuse(),
        cloudwatch_client=Refuse(),
    ).to_dict()
    assert report["dryRun"] is True
    # What would be written and sent, under the keys a real run uses for what it wrote and sent.
    assert report["rowsWritten"] == report["itemsWritten"] == result.metrics.height
    assert report["datumsPublished"] == in_window(result.metrics).height * 4
    assert report["analyticsTable"]["largestItemBytes"] > 0


def test_a_dry_run_reports_the_fields_a_real_run_does(aws, result):
    create_analytics_table()
    dry = publish(result, table=ANALYTICS, now=NOW, dry_run=True)
    real = publish(result, table=ANALYTICS, now=NOW, backoff=NO_WAIT)
    assert dry.dry_run and not real.dry_run
    assert (dry.rows_written, dry.items_written, dry.datums_published) == (
        real.rows_written,
        real.items_written,
        real.datums_published,
    )
    assert set(dry.to_dict()) == set(real.to_dict()) - {"ledger"}  # a dry run records no ledger entries
    assert PublishReport.from_dict(real.to_dict()) == real and PublishReport.from_dict(dry.to_dict()) == dry


def test_only_one_output(aws, result):
    report = publish(result, table=None, now=NOW, backoff=NO_WAIT).to_dict()
    assert report["analyticsTable"] is None and report["datumsPublished"] > 0
    create_analytics_table()
    report = publish(result, table=ANALYTICS, cloudwatch=False, now=NOW, backoff=NO_WAIT).to_dict()
    assert report["cloudwatch"] is None and report["rowsWritten"] == result.metrics.height
    with pytest.raises(InvalidArgumentError, match="nothing to publish"):
        publish(result, table=None, cloudwatch=False)


def test_what_is_retried():
    from botocore.exceptions import EndpointConnectionError

    from bubbly_metrics._retry import Backoff, is_retryable
    from tests.aws_helpers import client_error

    assert is_retryable(client_error("Throttling", "PutMetricData"))
    assert is_retryable(client_error("ProvisionedThroughputExceededException", "BatchWriteItem"))
    assert not is_retryable(client_error("AccessDeniedException", "BatchWriteItem"))
    assert not is_retryable(client_error("ValidationException", "BatchWriteItem"))
    # botocore retries connection errors itself; multiplying its attempts would stall for minutes.
    assert not is_retryable(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))
    delays = [Backoff(base_delay=1, max_delay=8).delay(n) for n in range(1, 7)]
    assert all(0.5 <= d <= 1 for d in delays[:1]) and all(4 <= d <= 8 for d in delays[3:])
    with pytest.raises(InvalidArgumentError, match="max_attempts"):
        Backoff(max_attempts=0)
