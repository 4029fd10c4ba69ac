"""Hostile input at the front doors (issue #25, items 4-6): dates, events and log lines.

Every refusal here happens before any AWS call: the ``no_aws`` fixture makes any boto3 or
s3fs request fail the test, and the handlers' injected clients blow up when touched.  A
refusal is one line (one ERROR log line, one exception) naming the field, with what came from
the event clipped to ~200 characters.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from typing import Any

import pytest

from bubbly_metrics import daily
from bubbly_metrics._text import CLIP, clip, printable
from bubbly_metrics.exceptions import BubblyMetricsError, ConfigurationError, InvalidArgumentError, InvalidDateError
from bubbly_metrics.handlers import aggregator, distributed, export
from bubbly_metrics.handlers._logging import MAX_LINE, JsonFormatter
from tests.aws_helpers import FakeContext

NOW = dt.datetime(2025, 3, 18, 2, 30, tzinfo=dt.UTC)
BUCKET = "bubbly-exports"
AGGREGATOR_ENV = {"EXPORT_BUCKET": BUCKET, "ANALYTICS_TABLE": "Analytics", "S3_PREFIX": "exports/"}
EXPORT_ENV = {
    "TABLE_NAME": "arn:aws:dynamodb:eu-west-2:123456789012:table/Main",
    "EXPORT_BUCKET": BUCKET,
    "S3_PREFIX": "exports/",
}
RUN = f"s3://{BUCKET}/distributed-runs/backfill-20250117-20250317-0123456789abcdef"
SUMMARY = "exports/backfill/20250318T000000Z/AWSDynamoDB/01768385930622-efd1a093/manifest-summary.json"


class Untouchable:
    """A client that fails the test on any use: the handler was to refuse before calling AWS."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"an AWS client was used ({name}) for an event that should have been refused")


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any boto3 (sync) or s3fs (aiobotocore) request fails the test."""
    import aiobotocore.client
    import botocore.client

    def refuse(self: Any, operation: str, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"AWS call {operation} made for an event that should have been refused")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", refuse)
    monkeypatch.setattr(aiobotocore.client.AioBaseClient, "_make_api_call", refuse)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sekrit-never-logged")


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def refused_by_aggregator(event: Any, capsys: pytest.CaptureFixture[str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(BubblyMetricsError) as info:
        aggregator.handle(
            event,
            FakeContext(),
            env=env or AGGREGATOR_ENV,
            now=NOW,
            dynamodb_client=Untouchable(),
            cloudwatch_client=Untouchable(),
        )
    return one_error_line(info.value, capsys)


def refused_by_export(event: Any, capsys: pytest.CaptureFixture[str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(BubblyMetricsError) as info:
        export.handle(
            event, FakeContext(), env=env or EXPORT_ENV, now=NOW, client=Untouchable(), cloudwatch_client=Untouchable()
        )
    return one_error_line(info.value, capsys)


def one_error_line(exc: BaseException, capsys: pytest.CaptureFixture[str]) -> str:
    message = str(exc)
    assert "\n" not in message and len(message) < 1000, message
    (logged,) = lines(capsys)
    assert logged["level"] == "ERROR" and logged["message"] == message
    assert "sekrit" not in json.dumps(logged)
    return message


# --- dates ------------------------------------------------------------------------------------

HOSTILE_STARTS = [
    ("0001-01-01", "Invalid backfillStartDate: 0001-01-01 is outside the years 2012-2100"),
    ("0205-01-17", "Invalid backfillStartDate: 0205-01-17 is outside the years 2012-2100"),
    ("9999-12-31", "Invalid backfillStartDate: 9999-12-31 is outside the years 2012-2100"),
    ("2024-12-31", "backfillStartDate 2024-12-31 is before the backfill floor 2025-01-17"),
    ("2025-03-20", "backfillStartDate 2025-03-20 is in the future (today is 2025-03-18, UTC)"),
    ("0000-01-01", "Invalid backfillStartDate format"),
    (20250117, "Invalid backfillStartDate format: expected YYYY-MM-DD, got 20250117"),
    (["2025-01-17"], "Invalid backfillStartDate format"),
]


@pytest.mark.parametrize(("start", "text"), HOSTILE_STARTS)
def test_the_export_lambda_refuses_hostile_starts(no_aws: None, start: Any, text: str, capsys: Any) -> None:
    assert refused_by_export({"mode": "backfill", "backfillStartDate": start}, capsys).startswith(text)


@pytest.mark.parametrize(("start", "text"), HOSTILE_STARTS)
def test_the_aggregator_refuses_hostile_starts(no_aws: None, start: Any, text: str, capsys: Any) -> None:
    assert refused_by_aggregator({"mode": "backfill", "backfillStartDate": start}, capsys).startswith(text)


@pytest.mark.parametrize("day", ["9999-12-31", "0205-01-17", "2025-03-19"])
def test_both_handlers_refuse_hostile_incremental_days(no_aws: None, day: str, capsys: Any) -> None:
    for refused in (refused_by_export, refused_by_aggregator):
        message = refused({"mode": "incremental", "date": day}, capsys)
        assert message.startswith(("Invalid date:", "date 2025-03-19 is in the future")), message


def test_a_range_past_the_maximum_needs_max_days(no_aws: None, capsys: Any) -> None:
    env = {**AGGREGATOR_ENV, "BACKFILL_FLOOR_DATE": "2012-01-01"}
    event = {"mode": "backfill", "backfillStartDate": "2012-06-01"}
    message = refused_by_aggregator(event, capsys, env)
    assert message.startswith("backfill 2012-06-01 → 2025-03-17 is 4673 days, more than the maximum of 800 (maxDays)")
    # Past the check with the override: the next thing it does is read S3 (refused by no_aws).
    with pytest.raises(AssertionError, match="AWS call"):
        aggregator.handle({**event, "maxDays": 5000}, FakeContext(), env=env, now=NOW)
    with pytest.raises(AssertionError, match="AWS call"):
        aggregator.handle(event, FakeContext(), env={**env, "BACKFILL_MAX_DAYS": "5000"}, now=NOW)


def test_the_floor_comes_from_the_environment(no_aws: None, capsys: Any) -> None:
    env = {**EXPORT_ENV, "BACKFILL_FLOOR_DATE": "2025-03-01"}
    message = refused_by_export({"mode": "backfill", "backfillStartDate": "2025-02-01"}, capsys, env)
    assert message.startswith("backfillStartDate 2025-02-01 is before the backfill floor 2025-03-01")
    for bad, text in (
        ({"BACKFILL_FLOOR_DATE": "0205-01-17"}, "Invalid BACKFILL_FLOOR_DATE: 0205-01-17 is outside"),
        ({"BACKFILL_MAX_DAYS": "lots"}, "BACKFILL_MAX_DAYS must be a number of days from 1 to 36500"),
        ({"BACKFILL_MAX_DAYS": "0"}, "BACKFILL_MAX_DAYS must be"),
    ):
        assert refused_by_export({"mode": "incremental"}, capsys, {**EXPORT_ENV, **bad}).startswith(text)


# --- events -----------------------------------------------------------------------------------


def s3_event(bucket: Any = BUCKET, key: Any = SUMMARY, **detail: Any) -> dict[str, Any]:
    """S3's EventBridge ``Object Created`` event (as tests/test_daily_pipeline.py has it), changed."""
    body: dict[str, Any] = {"bucket": {"name": bucket}, "object": {"key": key, "size": 1}, "reason": "PutObject"}
    body.update(detail)
    return {"version": "0", "detail-type": "Object Created", "source": "aws.s3", "detail": body}


@pytest.mark.parametrize(
    ("event", "text"),
    [
        ([{"mode": "backfill"}], "the event must be a JSON object"),
        ("backfill", "the event must be a JSON object"),
        ({"mode": 5}, "Invalid mode. Must be 'incremental' or 'backfill' (got 5)"),
        ({"mode": ["backfill"]}, "Invalid mode. Must be 'incremental' or 'backfill'"),
        ({"mode": "backfill", "backfillStartdate": "2025-01-17"}, "unknown field(s) in the event: 'backfillStartdate'"),
        ({"mode": "backfill", "backfillStartDate": "2025-01-17", "maxDays": True}, "maxDays must be a positive"),
        ({"mode": "backfill", "backfillStartDate": "2025-01-17", "maxDays": 0}, "maxDays must be a positive"),
        ({"mode": "backfill", "backfillStartDate": "2025-01-17", "maxDays": "900"}, "maxDays must be a positive"),
        ({"mode": "backfill", "itemsPerBatch": True}, "itemsPerBatch must be a positive whole number, got True"),
        ({"mode": "backfill", "engine": "fast"}, "Invalid engine. Must be 'single' or 'distributed'"),
        (s3_event() | {"detail": {"bucket": "b", "object": {"key": SUMMARY}}}, "bucket a str"),
        (s3_event(object=[{"key": SUMMARY}]), "key a list"),
        (s3_event(key=7), "detail.object.key strings"),
        (s3_event(key=""), "detail.object.key strings"),
        (s3_event() | {"detail": "everything"}, "must be 'Object Created' with detail.bucket.name"),
        (s3_event(bucket="Not_A_Bucket!"), "detail.bucket.name is not an S3 bucket name"),
        (
            s3_event(key="exports/manifest-summary.json"),
            "not a manifest-summary.json under s3://bubbly-exports/exports/",
        ),
        (s3_event(key="exports/AWSDynamoDB/manifest-summary.json"), "in an AWSDynamoDB/<ExportId>/ folder"),
        (s3_event(key="exports/x/AWSDynamoDB/../manifest-summary.json"), "not a manifest-summary.json"),
        (s3_event(key="exports/x/AWSDynamoDB/id/../../manifest-summary.json"), "not a manifest-summary.json"),
        (s3_event(bucket="someone-elses-bucket"), "the event is for s3://someone-elses-bucket/"),
        (s3_event(key=SUMMARY.replace("exports/", "elsewhere/", 1)), "under s3://bubbly-exports/exports/"),
        (s3_event(key="exports/" + "k" * 1100 + "/AWSDynamoDB/1/manifest-summary.json"), "longer than S3's 1024"),
        (s3_event(key="exports/" + "é" * 600), "is 1208 bytes, longer than S3's 1024"),  # 608 characters
        (s3_event(key="exports/\ud800/AWSDynamoDB/1/manifest-summary.json"), "is not valid UTF-8"),
    ],
)
def test_the_aggregator_refuses_hostile_events(no_aws: None, event: Any, text: str, capsys: Any) -> None:
    assert text in refused_by_aggregator(event, capsys)


@pytest.mark.parametrize(
    ("event", "text"),
    [
        ({"check": "lateness", "mode": "backfill"}, "Invalid check. Must be 'lateness', alone"),
        ({"check": ["lateness"]}, "Invalid check"),
        ({"mode": "backfill", "backfillStartDate": "2025-01-17", "detail": {}}, "unknown field(s) in the event"),
        (s3_event(), "unknown field(s) in the event"),  # the Export Lambda takes no S3 events
    ],
)
def test_the_export_lambda_refuses_hostile_events(no_aws: None, event: Any, text: str, capsys: Any) -> None:
    assert text in refused_by_export(event, capsys)


def map_event(**changes: Any) -> dict[str, Any]:
    return {"run": RUN, "batch": {"batch": 0, "files": ["exports/x/AWSDynamoDB/data/a.json.gz"], "items": 5}} | changes


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (map_event(run=f"s3://other-bucket/distributed-runs/{RUN.rsplit('/', 1)[1]}"), "must name a run"),
        (map_event(run=RUN.replace("distributed-runs/", "exports/")), "must name a run"),
        (map_event(run=f"s3://{BUCKET}/distributed-runs/../exports"), "must name a run"),
        (map_event(run=f"s3://{BUCKET}/distributed-runs/a/b"), "must name a run"),
        (map_event(run=f"s3://{BUCKET}/distributed-runs/"), "must name a run"),
        (map_event(run="/tmp/run"), "must name a run"),
        (map_event(run=["s3://x"]), "must name a run"),
        (map_event(batch=True), "the event's batch must be"),
        (map_event(batch=-1), "the event's batch must be"),
        (map_event(batch={"batch": True, "files": ["k"], "items": 1}), "the event's batch must be"),
        (map_event(batch={"batch": 0, "files": "k", "items": 1}), "the event's batch must be"),
        (map_event(batch={"batch": 0, "files": [], "items": 1}), "the event's batch must be"),
        (map_event(batch={"batch": 0, "files": ["k"], "items": False}), "the event's batch must be"),
        (map_event(batch={"batch": 0, "files": [7], "items": 1}), "a batch's data file must be a non-empty string"),
        (map_event(batch={"batch": 0, "files": ["k" * 1025], "items": 1}), "longer than S3's 1024"),
        (map_event(extra=1), "unknown field(s) in the event: 'extra'"),
        ([RUN], "the event must be a JSON object"),
    ],
)
def test_the_map_lambda_refuses_hostile_events(no_aws: None, event: Any, text: str, capsys: Any) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        distributed.handle_map(event, FakeContext(), env={"EXPORT_BUCKET": BUCKET})
    assert text in one_error_line(info.value, capsys)


def test_the_reduce_lambda_refuses_runs_outside_its_prefix(no_aws: None, capsys: Any) -> None:
    env = {"EXPORT_BUCKET": BUCKET, "ANALYTICS_TABLE": "Analytics"}
    for event in ({"run": "s3://other/distributed-runs/x"}, {"run": RUN, "batch": 1}, {}):
        with pytest.raises(InvalidArgumentError) as info:
            distributed.handle_reduce(
                event, FakeContext(), env=env, now=NOW, dynamodb_client=Untouchable(), cloudwatch_client=Untouchable()
            )
        one_error_line(info.value, capsys)
    with pytest.raises(ConfigurationError, match="EXPORT_BUCKET environment variable is required"):
        distributed.handle_map(map_event(), FakeContext(), env={})


def test_a_run_under_the_configured_prefix_is_followed(no_aws: None) -> None:
    # Past the checks, reading the plan is the first AWS call.
    with pytest.raises(AssertionError, match="AWS call"):
        distributed.handle_map(map_event(), FakeContext(), env={"EXPORT_BUCKET": BUCKET})


# --- logs -------------------------------------------------------------------------------------


def test_a_megabyte_field_makes_a_bounded_error_line(no_aws: None, capsys: Any) -> None:
    huge = "x" * 1_000_000
    for refused, event in (
        (refused_by_export, {"mode": huge}),
        (refused_by_aggregator, {"mode": "backfill", "backfillStartDate": huge}),
        (refused_by_aggregator, s3_event(key=huge)),
        (refused_by_export, {huge: 1}),
    ):
        message = refused(event, capsys)
        assert len(message) < 2 * CLIP + 300, len(message)
    with pytest.raises(InvalidArgumentError):
        export.handle({"mode": huge}, FakeContext(), env=EXPORT_ENV, now=NOW, client=Untouchable())
    out = capsys.readouterr().out
    assert len(out) < 3_000  # the error line names the event in a bounded summary, not whole


def test_a_lone_surrogate_still_writes_the_line(no_aws: None, capsys: Any) -> None:
    event = {"mode": "backfill", "backfillStartDate": "\ud800"}
    message = refused_by_aggregator(event, capsys)
    assert message.startswith("Invalid backfillStartDate format")
    refused_by_export({"mode": "\ud800"}, capsys)
    key = "exports/x/AWSDynamoDB/\udfff/manifest-summary.json"
    assert "not valid UTF-8" in refused_by_aggregator(s3_event(key=key), capsys)


def test_the_json_formatter_writes_any_record() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("req-1"))
    log = logging.getLogger("bubbly_metrics.tests.hostile")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("lone \ud800 surrogate", extra={"fields": {"key": "\udfff", "ok": "é"}})
        log.warning("huge", extra={"fields": {"field": "y" * 1_000_000, "list": list(range(100_000))}})
        log.warning("%s and %s", "one")  # arguments that do not fit the format
        nested: list[Any] = []
        for _ in range(5_000):
            nested = [nested]
        log.warning("deep", extra={"fields": {"nested": nested}})
    finally:
        log.removeHandler(handler)
    written = stream.getvalue().splitlines()
    assert len(written) == 4
    entries = [json.loads(line) for line in written]
    assert entries[0]["message"] == "lone \ud800 surrogate" and entries[0]["key"] == "\udfff"
    assert entries[0]["ok"] == "é"
    assert len(written[1]) <= MAX_LINE and entries[1]["field"].startswith("y" * CLIP + "…")
    assert entries[2]["message"].startswith("%s and %s")
    assert all(len(line) <= MAX_LINE for line in written)


def test_clip_and_printable() -> None:
    import doctest

    from bubbly_metrics import _text

    assert doctest.testmod(_text).failed == 0
    assert clip("é" * 300) == "é" * 200 + "… (100 more characters)"
    assert clip({"a": 1}) == "{'a': 1}"
    nested: list[Any] = []
    for _ in range(100_000):
        nested = [nested]
    assert "nested too deep" in clip(nested)
    assert printable("a\x1b]0;title\x07b\r\n\x9b\u202e\ud800") == "a\\x1b]0;title\\x07b\\r\\n\\x9b\\u202e\\ud800"
    assert printable("plain é ü 日本") == "plain é ü 日本"


def test_handler_results_and_errors_do_not_carry_the_environment(no_aws: None, capsys: Any) -> None:
    # The secret is in the process environment (no_aws); a failing handler logs a bounded
    # summary of its event and its own message, nothing of the environment.
    with pytest.raises(InvalidDateError):
        export.handle({"mode": "backfill", "backfillStartDate": "0205-01-17"}, FakeContext(), env=EXPORT_ENV, now=NOW)
    assert "sekrit" not in capsys.readouterr().out


@pytest.mark.parametrize("start", ["0205-01-17", "9999-12-31", "2024-01-01", 20250117])
def test_a_hostile_backfill_request_beside_an_export_is_refused(
    no_aws: None, monkeypatch: pytest.MonkeyPatch, start: Any, capsys: Any
) -> None:
    """The backfill-request.json beside a completed full export is a file in the bucket: bounded too."""
    from types import SimpleNamespace

    full = SimpleNamespace(export_type="FULL", export_id="01768385930622-efd1a093", last_day=dt.date(2025, 3, 17))
    monkeypatch.setattr(daily, "find_export", lambda *args, **kwargs: full)
    monkeypatch.setattr(daily, "read_backfill_request", lambda *args, **kwargs: {"backfillStartDate": start})
    with pytest.raises(InvalidDateError) as info:  # the ledger (Untouchable) is never read
        aggregator.handle(s3_event(), FakeContext(), env=AGGREGATOR_ENV, now=NOW, dynamodb_client=Untouchable())
    message = str(info.value)
    assert [e["message"] for e in lines(capsys)] == ["Export completed", message]
    assert message.startswith(("Invalid backfillStartDate", "backfillStartDate 2024-01-01 is before the backfill"))
