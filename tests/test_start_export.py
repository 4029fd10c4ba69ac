"""Starting exports (the Export Lambda's library logic) against moto's DynamoDB (server mode)."""

from __future__ import annotations

import datetime as dt
import re

import boto3
import pytest

from bubbly_metrics.exceptions import (
    ConfigurationError,
    ExportStartError,
    ExportWaitError,
    InvalidArgumentError,
    InvalidDateError,
)
from bubbly_metrics.start_export import describe_export, plan_export, start_export, wait_for_export
from tests.aws_helpers import BUCKET, MAIN, RequestLog, create_main_table

NOW = dt.datetime(2025, 3, 18, 2, 0, 7, tzinfo=dt.UTC)
ARN = "arn:aws:dynamodb:eu-west-2:123456789012:table/bubblyclouds-main"


@pytest.fixture
def main_table(aws):
    arn = create_main_table()
    boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    return arn


def test_incremental_plan():
    plan = plan_export(table_arn=ARN, bucket=BUCKET, now=NOW)
    assert plan.params == {
        "TableArn": ARN,
        "ClientToken": plan.client_token,
        "S3Bucket": BUCKET,
        "S3Prefix": "exports/incremental/20250318T000000Z",
        "ExportFormat": "DYNAMODB_JSON",
        "ExportType": "INCREMENTAL_EXPORT",
        "IncrementalExportSpecification": {
            "ExportFromTime": dt.datetime(2025, 3, 17, tzinfo=dt.UTC),
            "ExportToTime": dt.datetime(2025, 3, 18, tzinfo=dt.UTC),
            "ExportViewType": "NEW_IMAGE",
        },
    }
    assert plan.s3_prefix == "exports/incremental/20250318T000000Z/"
    assert plan.to_dict()["s3Uri"] == f"s3://{BUCKET}/exports/incremental/20250318T000000Z/"


def test_backfill_plan():
    plan = plan_export(table_arn=ARN, bucket=BUCKET, mode="backfill", backfill_start="2025-01-17", now=NOW)
    assert plan.params["ExportType"] == "FULL_EXPORT"
    assert plan.params["ExportFormat"] == "DYNAMODB_JSON"
    assert "IncrementalExportSpecification" not in plan.params and "ExportTime" not in plan.params
    assert plan.s3_prefix == "exports/backfill/20250318T000000Z/"
    assert plan.to_dict()["backfillStartDate"] == "2025-01-17"


def test_client_token_is_stable_per_mode_and_window():
    token = plan_export(table_arn=ARN, bucket=BUCKET, now=NOW).client_token
    later = NOW + dt.timedelta(hours=3)
    assert plan_export(table_arn=ARN, bucket=BUCKET, now=later).client_token == token
    assert plan_export(table_arn=ARN, bucket=BUCKET, now=NOW + dt.timedelta(days=1)).client_token != token
    assert plan_export(table_arn=ARN, bucket=BUCKET, date="2025-03-17", now=later).client_token == token
    backfill = plan_export(table_arn=ARN, bucket=BUCKET, mode="backfill", backfill_start="2025-01-17", now=NOW)
    assert backfill.client_token != token
    # A full export does not depend on the backfill start: one export per day serves both.
    again = plan_export(table_arn=ARN, bucket=BUCKET, mode="backfill", backfill_start="2025-02-01", now=later)
    assert again.client_token == backfill.client_token
    # Other destinations are other exports.
    assert plan_export(table_arn=ARN, bucket="other-bucket", now=NOW).client_token != token
    assert plan_export(table_arn=ARN, bucket=BUCKET, prefix="x/", now=NOW).client_token != token


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("exports/", "exports/"),
        ("exports", "exports/"),
        ("", ""),
        ("/a/b", "a/b/"),
        (None, "exports/"),
    ],
)
def test_prefix_normalisation(prefix, expected):
    plan = plan_export(table_arn=ARN, bucket=BUCKET, prefix=prefix, now=NOW)
    assert plan.s3_prefix == f"{expected}incremental/20250318T000000Z/"


def test_plan_errors():
    with pytest.raises(InvalidArgumentError, match=r"^Invalid mode\. Must be 'incremental' or 'backfill'"):
        plan_export(table_arn=ARN, bucket=BUCKET, mode="full", now=NOW)
    with pytest.raises(ConfigurationError, match="^backfillStartDate is required for backfill mode$"):
        plan_export(table_arn=ARN, bucket=BUCKET, mode="backfill", now=NOW)
    with pytest.raises(InvalidDateError, match="^Invalid backfillStartDate format"):
        plan_export(table_arn=ARN, bucket=BUCKET, mode="backfill", backfill_start="17/01/2025", now=NOW)
    with pytest.raises(InvalidDateError, match="after end"):
        plan_export(table_arn=ARN, bucket=BUCKET, mode="backfill", backfill_start="2025-03-18", now=NOW)
    with pytest.raises(InvalidArgumentError, match="has not ended"):
        plan_export(table_arn=ARN, bucket=BUCKET, date="2025-03-18", now=NOW)
    with pytest.raises(InvalidArgumentError, match="ARN"):
        plan_export(table_arn="main", bucket=BUCKET, now=NOW)
    with pytest.raises(InvalidArgumentError, match="naive"):
        plan_export(table_arn=ARN, bucket=BUCKET, now=dt.datetime(2025, 3, 18))


def test_start_sends_the_plan_and_returns_what_dynamodb_says(main_table):
    log = RequestLog()
    client = log.attach(boto3.client("dynamodb"))
    result = start_export(table=main_table, bucket=BUCKET, now=NOW, client=client)
    (sent,) = log.of("ExportTableToPointInTime")
    assert sent == plan_export(table_arn=main_table, bucket=BUCKET, now=NOW).params
    assert result["exportArn"].startswith("arn:aws:dynamodb:")
    assert result["exportStatus"] in {"IN_PROGRESS", "COMPLETED"}
    assert result["s3Prefix"] == "exports/incremental/20250318T000000Z/"
    assert result["exportFromTime"] == "2025-03-17T00:00:00Z" and result["exportToTime"] == "2025-03-18T00:00:00Z"


def test_a_table_name_is_resolved_to_its_arn(main_table):
    log = RequestLog()
    client = log.attach(boto3.client("dynamodb"))
    result = start_export(
        table=MAIN,
        bucket=BUCKET,
        mode="backfill",
        backfill_start="2025-01-17",
        now=NOW,
        client=client,
    )
    assert result["tableArn"] == main_table
    assert log.of("ExportTableToPointInTime")[0]["TableArn"] == main_table


def test_a_bad_request_is_refused_before_any_aws_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # No region, no endpoint, no credentials: a bad date must still be a bad date.
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(InvalidDateError, match="got '2025-1-1'"):
        start_export(table="main", bucket=BUCKET, mode="incremental", date="2025-1-1", now=NOW)


def test_the_region_comes_from_aws_region_or_the_table_arn(monkeypatch: pytest.MonkeyPatch) -> None:
    from bubbly_metrics import _aws

    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    assert _aws.client("dynamodb", region=_aws.arn_region(ARN)).meta.region_name == "eu-west-2"
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # what Lambda and the other SDKs set
    assert _aws.client("dynamodb", region="eu-west-2").meta.region_name == "us-east-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")  # boto3's own setting wins
    assert _aws.client("cloudwatch").meta.region_name == "ap-south-1"
    assert _aws.arn_region("main") is None and _aws.arn_region("arn:aws:s3:::bucket") is None


def test_refusals_become_export_start_errors(aws):
    with pytest.raises(ExportStartError, match="cannot find the ARN of table 'missing'"):
        start_export(table="missing", bucket=BUCKET, now=NOW)
    boto3.client("dynamodb").create_table(
        TableName="no-pitr",
        KeySchema=[{"AttributeName": "modelId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "modelId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(ExportStartError, match="could not start the INCREMENTAL_EXPORT"):
        start_export(table="no-pitr", bucket=BUCKET, now=NOW)


def test_wait_for_export_polls_until_completed(main_table):
    started = start_export(table=main_table, bucket=BUCKET, mode="backfill", backfill_start="2025-01-17", now=NOW)
    seen: list[str] = []
    final = wait_for_export(started["exportArn"], poll=0.05, on_progress=lambda d: seen.append(d["exportStatus"]))
    assert final["exportStatus"] == "COMPLETED" and seen[-1] == "COMPLETED"
    assert describe_export(started["exportArn"])["exportArn"] == started["exportArn"]


def test_wait_for_export_raises_on_failure(aws):
    arn = create_main_table()  # no bucket: moto's export fails with S3NoSuchBucket
    started = start_export(table=arn, bucket="no-such-bucket", now=NOW)
    with pytest.raises(ExportWaitError, match="FAILED: S3NoSuchBucket"):
        wait_for_export(started["exportArn"], poll=0.05)


def test_wait_for_export_times_out():
    class InProgress:
        calls = 0

        def describe_export(self, ExportArn):
            self.calls += 1
            return {"ExportDescription": {"ExportArn": ExportArn, "ExportStatus": "IN_PROGRESS"}}

    client = InProgress()
    slept: list[float] = []
    with pytest.raises(ExportWaitError, match="still IN_PROGRESS after 60s"):
        wait_for_export(f"{ARN}/export/x", client=client, poll=30, timeout=60, sleep=slept.append)
    assert slept == [30, 30] and client.calls == 3


def test_docstring_examples_run():
    import doctest

    import bubbly_metrics.start_export as module

    assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"mode": "backfill", "backfill_start": "0205-01-17"}, "Invalid backfillStartDate: 0205-01-17 is outside"),
        ({"mode": "backfill", "backfill_start": "9999-12-31"}, "Invalid backfillStartDate: 9999-12-31 is outside"),
        ({"mode": "backfill", "backfill_start": "2024-12-01"}, "before the backfill floor 2025-01-17"),
        ({"mode": "backfill", "backfill_start": "2025-03-19"}, "backfillStartDate 2025-03-19 is in the future"),
        ({"mode": "incremental", "date": "9999-12-31"}, "Invalid date: 9999-12-31 is outside"),
    ],
)
def test_hostile_dates_are_refused_before_any_request(kwargs, text):
    now = dt.datetime(2025, 3, 18, 2, 0, tzinfo=dt.UTC)
    with pytest.raises(InvalidDateError, match=re.escape(text)):
        plan_export(table_arn="arn:aws:dynamodb:eu-west-2:123456789012:table/main", bucket="b", now=now, **kwargs)
