"""Checks before long work (bubbly_metrics.preflight): one line, exit 1, before the export is read.

Each failing command runs in-process on a copy of the shipped sample with every file opening
under it recorded: a check that failed only after the scan (the old behaviour: "Unable to locate
credentials" after reading the whole export) would show opened files.  AWS is moto's server.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest
from fsspec.implementations.local import LocalFileSystem

import bubbly_metrics as bm
from bubbly_metrics.cli import main
from bubbly_metrics.exceptions import PreflightError
from bubbly_metrics.preflight import MAIN_KEYS, check_bucket, check_credentials, check_table
from tests.aws_helpers import ANALYTICS, BUCKET, MAIN, create_analytics_table, create_main_table


@pytest.fixture
def sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """A copy of the shipped sample, and the list every file opened under it is appended to."""
    root = tmp_path / "sample"
    shutil.copytree(bm.sample_export_location(), root)
    opened: list[str] = []
    original = LocalFileSystem._open

    def recording(self: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        if str(root) in str(path):
            opened.append(str(path))
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "_open", recording)
    return root, opened


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata lookups offline
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_publish_to_a_missing_table_fails_before_reading_the_export(aws, sample):
    root, opened = sample
    code, out, err = run("aggregate", str(root), "--mode", "backfill", "--publish", "--analytics-table", "nope")
    assert code == 1 and out == ""
    assert one_line(err) == "error: Analytics Table nope does not exist (checked before reading the export)"
    assert opened == []
    # The same run with the table there reads the export (the recorder sees it) and writes.
    create_analytics_table()
    code, _, err = run("aggregate", str(root), "--mode", "backfill", "--publish", "--analytics-table", ANALYTICS)
    assert code == 0, err
    assert any(path.endswith(".json.gz") for path in opened)


def test_publish_without_credentials_fails_before_reading_the_export(no_credentials, sample):
    root, opened = sample
    code, _, err = run("aggregate", str(root), "--mode", "backfill", "--publish", "--analytics-table", ANALYTICS)
    assert code == 1
    assert one_line(err).startswith("error: AWS credentials not found: set AWS_PROFILE")
    assert opened == []


def test_reconcile_against_a_table_with_the_wrong_keys_fails_before_reading(aws, sample):
    root, opened = sample
    create_main_table("not-analytics")
    code, _, err = run("reconcile", str(root), "--analytics-table", "not-analytics")
    assert code == 1
    assert one_line(err) == (
        "error: Analytics Table not-analytics has keys modelId (HASH), owner (RANGE); "
        "expected date (HASH), app (RANGE): is it the right table?"
    )
    assert opened == []


def test_reconcile_without_credentials_fails_before_reading(no_credentials, sample):
    root, opened = sample
    code, _, err = run("reconcile", str(root), "--cloudwatch")
    assert code == 1 and "AWS credentials not found" in one_line(err)
    assert opened == []


def test_export_checks_the_table_and_the_bucket_before_starting(aws):
    ddb = boto3.client("dynamodb")
    code, _, err = run("export", "--table-arn", MAIN, "--bucket", BUCKET, "--mode", "backfill")
    assert code == 1 and one_line(err) == f"error: main table {MAIN} does not exist (checked before reading the export)"
    arn = create_main_table()
    code, _, err = run("export", "--table-arn", arn, "--bucket", BUCKET, "--mode", "backfill")
    assert code == 1 and one_line(err) == f"error: bucket {BUCKET} does not exist"
    assert ddb.list_exports(TableArn=arn)["ExportSummaries"] == []  # nothing was started
    boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    code, _, err = run("export", "--table-arn", arn, "--bucket", BUCKET, "--mode", "backfill")
    assert code == 0, err
    assert len(ddb.list_exports(TableArn=arn)["ExportSummaries"]) == 1


def test_checks_as_library_calls(aws):
    check_credentials()
    create_analytics_table()
    check_table(ANALYTICS)
    with pytest.raises(PreflightError, match="main table bubbly-analytics has keys date"):
        check_table(ANALYTICS, keys=MAIN_KEYS, what="main table")
    with pytest.raises(PreflightError, match="bucket missing-bucket does not exist"):
        check_bucket("missing-bucket")
