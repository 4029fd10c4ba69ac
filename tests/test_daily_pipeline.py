"""No day lost (docs/rules.md#lambda-entrypoints): the daily pipeline end to end on moto's server, injected clock.

The Export Lambda starts exports in moto's DynamoDB; what AWS then writes to S3 (``_started``
first, ``manifest-summary.json`` last, in the real layout) is written by
``bubbly_metrics.synthetic`` and uploaded in that order; the completion event is the one S3
sends EventBridge for the summary.  moto ignores ``ClientToken``, so the tests hold DynamoDB's
documented idempotency in front of it (:func:`honour_client_tokens`).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path

import boto3
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from bubbly_metrics import aggregate
from bubbly_metrics.analytics_table import read_analytics_table
from bubbly_metrics.cli import main
from bubbly_metrics.exceptions import InvalidArgumentError
from bubbly_metrics.gaps import LATENESS_METRIC, find_gaps
from bubbly_metrics.handlers import aggregator, export
from bubbly_metrics.ledger import read_ledger
from bubbly_metrics.start_export import daily_export_folder
from bubbly_metrics.synthetic import (
    WrittenExport,
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
    create_analytics_table,
    create_main_table,
    midnight,
    scan_all,
)
from tests.conftest import upload_tree

DAY = dt.date(2025, 3, 17)
AT_0200 = dt.datetime(2025, 3, 18, 2, 0, 7, tzinfo=dt.UTC)
AT_0230 = dt.datetime(2025, 3, 18, 2, 30, tzinfo=dt.UTC)
METRICS = ["date", "app", "active_users", "games_played", "parties_created", "parties_joined"]


@pytest.fixture
def stack(aws):
    """What the CDK stack deploys, in moto: the main table (PITR on), the bucket, the Analytics Table."""
    arn = create_main_table()
    boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    create_analytics_table()
    return {
        "export": {"TABLE_NAME": arn, "EXPORT_BUCKET": BUCKET, "S3_PREFIX": "exports/", "ANALYTICS_TABLE": ANALYTICS},
        "aggregator": {"EXPORT_BUCKET": BUCKET, "ANALYTICS_TABLE": ANALYTICS, "S3_PREFIX": "exports/"},
    }


def honour_client_tokens(client, sent: list[dict]):
    """DynamoDB's idempotency (moto has none): a token seen before returns that export again.

    Every request is appended to ``sent``, whether it started an export or not.
    """
    seen: dict[str, dict] = {}

    def fault(call, kwargs, real):
        sent.append(kwargs)
        token = kwargs["ClientToken"]
        if token in seen:
            assert seen[token]["params"] == kwargs, "same token, other parameters: DynamoDB would refuse"
            return seen[token]["response"]
        response = real(**kwargs)
        seen[token] = {"params": kwargs, "response": response}
        return response

    return Faulty(client, export_table_to_point_in_time=fault)


def day_export(root: Path, day: dt.date, *, seed: int, n_items: int = 400) -> WrittenExport:
    """What AWS writes for the incremental export of ``day`` started by the Export Lambda."""
    end = midnight(day + dt.timedelta(days=1))
    items = generate_items(n_items=n_items, start=day, days=1, seed=seed)
    return write_incremental_export(
        root / day.isoformat(),
        generate_incremental_records(items, seed=seed, window_end_micros=int(end.timestamp() * 1e6)),
        export_from=end - dt.timedelta(days=1),
        export_to=end,
        prefix=daily_export_folder(day),
        n_files=2,
        seed=seed,
    )


def upload(written: WrittenExport, *, summary: bool) -> str:
    """Upload an export as AWS writes it: everything but the summary, or only the summary.

    Returns the summary's key (what the completion event names).
    """
    s3 = boto3.client("s3")
    key_of = lambda path: path.relative_to(written.root).as_posix()  # noqa: E731
    summary_files = {written.export_dir / "manifest-summary.json", written.export_dir / "manifest-summary.md5"}
    for path in sorted(written.root.rglob("*")):
        if path.is_file() and (path in summary_files) == summary:
            s3.upload_file(str(path), BUCKET, key_of(path))
    return key_of(written.export_dir / "manifest-summary.json")


def completion_event(key: str, bucket: str = BUCKET) -> dict:
    """The event S3 sends EventBridge when ``key`` is written (as AWS documents it)."""
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2025-03-18T03:12:44Z",
        "region": "eu-west-2",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {"key": key, "size": 721, "etag": "b1946ac92492d2347c6235b4d2611184", "sequencer": "00617F0"},
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "dynamodb.amazonaws.com",
            "source-ip-address": "10.0.138.1",
            "reason": "PutObject",
        },
    }


def clients():
    log = RequestLog()
    return log, log.attach(boto3.client("dynamodb")), log.attach(boto3.client("cloudwatch"))


def expected_metrics(*exports: WrittenExport) -> pl.DataFrame:
    """What an on-time run of each export's day writes, computed from the files, not the table."""
    frames = []
    for written in exports:
        result = aggregate(str(written.export_dir), mode="incremental", date=written_day(written), now=AT_0230)
        frames.append(result.metrics)
    return pl.concat(frames).sort("date", "app")


def written_day(written: WrittenExport) -> dt.date:
    summary = json.loads((written.export_dir / "manifest-summary.json").read_text())
    return dt.date.fromisoformat(summary["exportFromTime"][:10])


def json_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------


def test_a_late_export_is_aggregated_on_completion_once(stack, tmp_path, capsys):
    # 02:00: the daily run starts yesterday's export (the ledger has nothing yet).
    started = export.handle({"mode": "incremental"}, FakeContext(), env=stack["export"], now=AT_0200)
    assert started["missing"] == [] or started["missing"][-1] == DAY.isoformat()
    assert started["s3Prefix"] == daily_export_folder(DAY) and started["exportArn"]
    written = day_export(tmp_path, DAY, seed=7)
    upload(written, summary=False)  # `_started` and data: the export is running

    # 02:30: the export has not completed.  The safety net succeeds, aggregates nothing, says why.
    log, ddb, cw = clients()
    waiting = aggregator.handle(
        {"mode": "incremental"}, FakeContext(), env=stack["aggregator"], now=AT_0230, dynamodb_client=ddb
    )
    assert waiting["status"] == "waiting" and waiting["exportId"] == written.export_id
    assert "will be aggregated when it completes" in waiting["message"]
    assert scan_all() == {} and log.of("BatchWriteItem") == log.of("TransactWriteItems") == []
    assert not [e for e in json_lines(capsys) if e["level"] == "ERROR"]

    # 03:12: the summary lands; its event aggregates exactly that day.
    key = upload(written, summary=True)
    log, ddb, cw = clients()
    later = AT_0230 + dt.timedelta(minutes=42)
    done = aggregator.handle(
        completion_event(key),
        FakeContext(),
        env=stack["aggregator"],
        now=later,
        dynamodb_client=ddb,
        cloudwatch_client=cw,
    )
    assert done["status"] == "aggregated" and done["exportId"] == written.export_id
    assert (done["startDate"], done["endDate"]) == (DAY.isoformat(), DAY.isoformat())
    table = read_analytics_table(ANALYTICS)
    assert_frame_equal(table.select(METRICS), expected_metrics(written))
    (entry,) = read_ledger(ANALYTICS).values()
    assert (entry.day, entry.export_id, entry.mode) == (DAY, written.export_id, "incremental")
    assert entry.apps == table.height and entry.totals["games_played"] == table["games_played"].sum()
    messages = [e["message"] for e in json_lines(capsys)]
    assert "Aggregator Lambda completed successfully" in messages

    # The same event again (EventBridge delivers at least once): nothing is read or written.
    before = scan_all()
    log, ddb, cw = clients()
    again = aggregator.handle(
        completion_event(key),
        FakeContext(),
        env=stack["aggregator"],
        now=later + dt.timedelta(minutes=1),
        dynamodb_client=ddb,
        cloudwatch_client=cw,
    )
    assert again["status"] == "skipped" and again["exportId"] == written.export_id
    assert scan_all() == before
    assert [name for name, _ in log.calls] == ["Query"]  # the ledger, and nothing else
    assert "Processing data files..." not in [e["message"] for e in json_lines(capsys)]

    # And the next safety-net run on that day finds it done.
    assert aggregator.handle({}, FakeContext(), env=stack["aggregator"], now=later)["status"] == "skipped"
    assert scan_all() == before


def test_a_three_day_outage_is_caught_up_by_the_next_daily_run(stack, tmp_path):
    days = [DAY - dt.timedelta(days=n) for n in (2, 1, 0)]  # 03-15, 03-16, 03-17
    env = {**stack["export"], "LOOKBACK_DAYS": "4"}
    # 03-14 was aggregated on time; then nothing ran for three days.
    before_outage = day_export(tmp_path, DAY - dt.timedelta(days=3), seed=14)
    upload(before_outage, summary=False)
    aggregator.handle(
        completion_event(upload(before_outage, summary=True)), FakeContext(), env=stack["aggregator"], now=AT_0200
    )
    assert sorted(read_ledger(ANALYTICS)) == [DAY - dt.timedelta(days=3)]

    log, sent = RequestLog(), []
    ddb = honour_client_tokens(log.attach(boto3.client("dynamodb")), sent)
    first = export.handle({"mode": "incremental"}, FakeContext(), env=env, now=AT_0200, client=ddb)
    assert first["missing"] == [d.isoformat() for d in days]
    assert len(sent) == 3
    windows = [p["IncrementalExportSpecification"]["ExportFromTime"].date() for p in sent]
    assert windows == days
    assert all(
        p["IncrementalExportSpecification"]["ExportToTime"] - p["IncrementalExportSpecification"]["ExportFromTime"]
        == dt.timedelta(days=1)
        for p in sent
    )
    assert len({p["ClientToken"] for p in sent}) == 3
    assert [r["s3Prefix"] for r in first["exportsStarted"]] == [daily_export_folder(d) for d in days]
    assert first["exportArn"] == first["exportsStarted"][-1]["exportArn"]  # yesterday's, as docs/operations.md logs

    # A second 02:00 run (a retry, a double trigger) asks for the same three exports: none new.
    second = export.handle(
        {"mode": "incremental"}, FakeContext(), env=env, now=AT_0200 + dt.timedelta(minutes=3), client=ddb
    )
    assert sent[3:] == sent[:3]  # the same tokens, with the same parameters
    assert [r["exportArn"] for r in second["exportsStarted"]] == [r["exportArn"] for r in first["exportsStarted"]]
    main_arn = stack["export"]["TABLE_NAME"]
    assert len(boto3.client("dynamodb").list_exports(TableArn=main_arn)["ExportSummaries"]) == 3

    # The three exports complete, in any order; each completion event aggregates its day.
    written = [day_export(tmp_path, d, seed=20 + i) for i, d in enumerate(days)]
    for w in reversed(written):
        upload(w, summary=False)
        key = upload(w, summary=True)
        result = aggregator.handle(completion_event(key), FakeContext(), env=stack["aggregator"], now=AT_0230)
        assert result["status"] == "aggregated"
    table = read_analytics_table(ANALYTICS, start=days[0], end=days[-1])
    assert_frame_equal(table.select(METRICS), expected_metrics(*written))
    assert sorted(read_ledger(ANALYTICS)) == [DAY - dt.timedelta(days=3), *days]
    assert set(table["mode"]) == {"incremental"}

    # Caught up: the next run finds nothing to export.
    log.calls.clear()
    third = export.handle({"mode": "incremental"}, FakeContext(), env=env, now=AT_0230, client=ddb)
    assert third["exportsStarted"] == [] and "Nothing to export" in third["message"]
    assert [name for name, _ in log.calls] == ["Query"] and len(sent) == 6


def test_gaps_reports_a_day_beyond_pitr_as_not_recoverable_by_export(stack, tmp_path):
    # The ledger holds 03-14 only; the operator asks about 2025-02-01 .. 03-17 on 03-18.
    written = day_export(tmp_path, DAY - dt.timedelta(days=3), seed=3)
    upload(written, summary=False)
    aggregator.handle(
        completion_event(upload(written, summary=True)), FakeContext(), env=stack["aggregator"], now=AT_0200
    )
    report = find_gaps(ANALYTICS, start="2025-02-01", end=DAY, now=AT_0200)
    statuses = {d.day: d.status for d in report.days}
    assert len(statuses) == 45 and statuses[DAY - dt.timedelta(days=3)] == "aggregated"
    # PITR reaches 35 days back from 02:00: 02-11 00:00 is out of reach, 02-12 00:00 is not.
    assert [d for d, s in statuses.items() if s == "unrecoverable"] == [
        dt.date(2025, 2, 1) + dt.timedelta(days=n) for n in range(11)
    ]
    assert statuses[dt.date(2025, 2, 12)] == "missing"

    out, err = io.StringIO(), io.StringIO()
    argv = ["gaps", "--analytics-table", ANALYTICS, "--start", "2025-02-01", "--end", "2025-03-17"]
    code = main([*argv, "--now", "2025-03-18T02:00:07Z"], stdout=out, stderr=err)
    assert code == 1 and err.getvalue() == ""
    lines = out.getvalue().splitlines()
    (feb01,) = [line for line in lines if line.startswith("2025-02-01")]
    assert "unrecoverable" in feb01 and "not recoverable by export" in feb01 and "full export" in feb01
    assert lines[-1] == "45 day(s) 2025-02-01 → 2025-03-17: 1 aggregated, 0 stale, 33 missing, 11 unrecoverable"

    # --fill starts the recoverable days' exports only; the unrecoverable ones stay reported.
    out, err = io.StringIO(), io.StringIO()
    fill = ["--fill", "--table-arn", stack["export"]["TABLE_NAME"], "--bucket", BUCKET, "--format", "json"]
    code = main([*argv, *fill, "--now", "2025-03-18T02:00:07Z"], stdout=out, stderr=err)
    assert code == 1
    printed = json.loads(out.getvalue())
    assert len(printed["exportsStarted"]) == 33 and printed["counts"]["unrecoverable"] == 11
    assert min(r["exportFromTime"] for r in printed["exportsStarted"]) == "2025-02-12T00:00:00Z"
    exports = boto3.client("dynamodb").list_exports(TableArn=stack["export"]["TABLE_NAME"])["ExportSummaries"]
    assert len(exports) == 33


def test_gaps_marks_days_older_than_a_later_full_export_stale(aws, stack, tmp_path):
    early = day_export(tmp_path, dt.date(2025, 3, 1), seed=1)
    upload(early, summary=False)
    aggregator.handle(
        completion_event(upload(early, summary=True)), FakeContext(), env=stack["aggregator"], now=AT_0200
    )
    # A backfill from 03-10 on a full export taken 03-18: 03-01 is older than what it holds.
    full = write_full_export(
        tmp_path / "full",
        generate_items(n_items=500, start="2025-03-01", days=17, seed=2),
        export_time="2025-03-18T02:05:00Z",
        prefix="exports/backfill/20250318T000000Z/",
    )
    upload_tree(tmp_path / "full", BUCKET, aws)
    aggregator.handle(
        {"mode": "backfill", "backfillStartDate": "2025-03-10"}, FakeContext(), env=stack["aggregator"], now=AT_0230
    )
    report = find_gaps(ANALYTICS, start="2025-03-01", end="2025-03-17", now=AT_0230)
    stale = report.with_status("stale")
    assert [d.day for d in stale] == [dt.date(2025, 3, 1)] and full.export_id in stale[0].note
    assert len(report.with_status("aggregated")) == 8 and len(report.missing) == 8


def test_a_full_export_completion_runs_the_backfill_it_was_started_for(stack, tmp_path):
    started = export.handle(
        {"mode": "backfill", "backfillStartDate": "2025-03-10"}, FakeContext(), env=stack["export"], now=AT_0200
    )
    assert started["backfillRequest"] == f"s3://{BUCKET}/exports/backfill/20250318T000000Z/backfill-request.json"
    full = write_full_export(
        tmp_path,
        generate_items(n_items=500, start="2025-03-01", days=17, seed=2),
        export_time="2025-03-18T02:05:00Z",
        prefix="exports/backfill/20250318T000000Z/",
    )
    upload(full, summary=False)
    summary_key = upload(full, summary=True)
    result = aggregator.handle(completion_event(summary_key), FakeContext(), env=stack["aggregator"], now=AT_0230)
    assert result["status"] == "aggregated" and result["mode"] == "backfill"
    assert (result["startDate"], result["endDate"]) == ("2025-03-10", "2025-03-17")
    ledger = read_ledger(ANALYTICS)
    assert sorted(ledger) == [dt.date(2025, 3, 10) + dt.timedelta(days=n) for n in range(8)]
    assert {e.export_type for e in ledger.values()} == {"FULL"}
    again = aggregator.handle(completion_event(summary_key), FakeContext(), env=stack["aggregator"], now=AT_0230)
    assert again["status"] == "skipped"

    # A full export nobody asked to backfill from is left alone: a backfill rewrites history.
    boto3.client("s3").delete_object(Bucket=BUCKET, Key="exports/backfill/20250318T000000Z/backfill-request.json")
    ignored = aggregator.handle(completion_event(summary_key), FakeContext(), env=stack["aggregator"], now=AT_0230)
    assert ignored["status"] == "ignored" and "backfill-request.json" in ignored["message"]


def test_the_lateness_check_publishes_days_not_aggregated(stack):
    at_six = dt.datetime(2025, 3, 18, 6, 0, tzinfo=dt.UTC)
    result = export.handle({"check": "lateness"}, FakeContext(), env=stack["export"], now=at_six)
    assert result["value"] == 7 and result["notAggregated"][-1] == DAY.isoformat()
    stats = boto3.client("cloudwatch").get_metric_statistics(
        Namespace="BubblyClouds/Analytics",
        MetricName=LATENESS_METRIC,
        StartTime=at_six - dt.timedelta(hours=1),
        EndTime=at_six + dt.timedelta(hours=1),
        Period=3600,
        Statistics=["Maximum"],
    )
    assert [p["Maximum"] for p in stats["Datapoints"]] == [7.0]


@pytest.mark.parametrize(
    ("event", "text"),
    [
        ({"source": "aws.s3", "detail-type": "Object Deleted", "detail": {}}, "must be 'Object Created'"),
        (completion_event("exports/x/AWSDynamoDB/1/manifest-summary.json", bucket="other"), "not a manifest"),
        (completion_event("exports/x/AWSDynamoDB/1/manifest-files.json"), "not a manifest-summary.json"),
        (completion_event("elsewhere/AWSDynamoDB/1/manifest-summary.json"), "under s3://bubbly-exports/exports/"),
    ],
)
def test_events_that_are_not_an_export_completing_are_refused_by_name(stack, event, text, capsys):
    with pytest.raises(InvalidArgumentError, match=text.replace(".", r"\.")):
        aggregator.handle(event, FakeContext(), env=stack["aggregator"], now=AT_0230)
    assert scan_all() == {}


def test_an_unknown_check_starts_nothing(stack):
    log = RequestLog()
    ddb = log.attach(boto3.client("dynamodb"))
    with pytest.raises(InvalidArgumentError, match="Invalid check. Must be 'lateness'"):
        export.handle({"check": "latenes"}, FakeContext(), env=stack["export"], now=AT_0200, client=ddb)
    assert log.calls == []


def test_without_the_ledger_the_daily_run_still_exports_yesterday_then_fails(stack, capsys):
    from bubbly_metrics.exceptions import AnalyticsTableError

    env = {**stack["export"], "ANALYTICS_TABLE": "no-such-table"}
    log = RequestLog()
    ddb = log.attach(boto3.client("dynamodb"))
    with pytest.raises(AnalyticsTableError, match="cannot read the ledger of no-such-table"):
        export.handle({"mode": "incremental"}, FakeContext(), env=env, now=AT_0200, client=ddb)
    (sent,) = log.of("ExportTableToPointInTime")
    assert sent["S3Prefix"] == daily_export_folder(DAY).rstrip("/")
    lines = json_lines(capsys)
    assert [e["message"] for e in lines].count("Export started") == 1 and lines[-1]["level"] == "ERROR"


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["--fill"], "--fill needs --table-arn and --bucket"),
        (["--lookback", "36"], "lookback must be a number of days from 1 to 35, got 36"),
        (["--start", "2025-3-1"], "Invalid --start format"),
        (["--end", "2025-03-18", "--now", "2025-03-18T02:00:00Z"], "end 2025-03-18 has not ended yet"),
    ],
)
def test_gaps_cli_refuses_bad_input_in_one_line(argv, text):
    out, err = io.StringIO(), io.StringIO()
    assert main(["gaps", "--analytics-table", "t", *argv], stdout=out, stderr=err) == 2
    assert out.getvalue() == "" and err.getvalue().startswith("error: ") and text in err.getvalue()
    assert err.getvalue().count("\n") == 1


def seed_ledger(days: list[dt.date]) -> None:
    """Ledger entries for days aggregated earlier (as record_days writes them)."""
    from bubbly_metrics.ledger import LedgerEntry

    ddb = boto3.client("dynamodb")
    for day in days:
        entry = LedgerEntry(
            day=day,
            export_arn=f"arn:aws:dynamodb:eu-west-2:123456789012:table/x/export/{day}",
            export_id=str(day),
            export_type="INCREMENTAL",
            export_as_of=midnight(day + dt.timedelta(days=1)),
            mode="incremental",
            aggregated_at=midnight(day + dt.timedelta(days=1)) + dt.timedelta(hours=2, minutes=40),
            apps=0,
            totals={"active_users": 0, "games_played": 0, "parties_created": 0, "parties_joined": 0},
        )
        ddb.put_item(TableName=ANALYTICS, Item=entry.to_item(expires_at=2_000_000_000))


def s3_requests(caplog) -> list[str]:
    """The S3 requests moto's server answered (its access log): ``METHOD path``, query dropped."""
    out = []
    for record in caplog.records:
        if record.name == "werkzeug" and f"/{BUCKET}" in record.getMessage():
            method, path = re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage()).split('"')[1].split()[:2]
            out.append(f"{method} {path.split('?')[0]}{'?list' if 'list-type' in path else ''}")
    return out


def test_what_a_daily_run_costs(stack, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="werkzeug")
    calls: dict[str, dict[str, int]] = {}
    s3_seen: dict[str, list[str]] = {}

    def count(step: str, log: RequestLog) -> None:
        calls[step] = {}
        for name, _ in log.calls:
            calls[step][name] = calls[step].get(name, 0) + 1
        calls[step]["S3"] = len(s3_requests(caplog))
        s3_seen[step] = s3_requests(caplog)
        caplog.clear()

    seed_ledger([DAY - dt.timedelta(days=n) for n in range(1, 7)])  # the six days before: on time
    caplog.clear()
    log, ddb, cw = clients()
    export.handle({"mode": "incremental"}, FakeContext(), env=stack["export"], now=AT_0200, client=ddb)
    count("02:00 daily export", log)
    written = day_export(tmp_path, DAY, seed=9)
    upload(written, summary=False)
    key = upload(written, summary=True)
    caplog.clear()
    log, ddb, cw = clients()
    aggregator.handle(
        completion_event(key),
        FakeContext(),
        env=stack["aggregator"],
        now=AT_0230,
        dynamodb_client=ddb,
        cloudwatch_client=cw,
    )
    count("completion event", log)
    log, ddb, cw = clients()
    aggregator.handle({}, FakeContext(), env=stack["aggregator"], now=AT_0230, dynamodb_client=ddb)
    count("02:30 safety net", log)
    log, ddb, cw = clients()
    export.handle(
        {"check": "lateness"}, FakeContext(), env=stack["export"], now=AT_0230, client=ddb, cloudwatch_client=cw
    )
    count("lateness check", log)
    # DynamoDB and CloudWatch, exactly (docs/operations.md quotes these).
    assert calls["02:00 daily export"] == {"Query": 1, "ExportTableToPointInTime": 1, "S3": 0}
    s3 = {step: calls[step].pop("S3") for step in ("completion event", "02:30 safety net")}
    # Ledger check; the day's ledger entry and existing items; one transaction replacing the
    # day's items and its ledger entry together; one PutMetricData.  Then WAU/MAU: the ledger of
    # the 28 days, and the days of the whole windows (here a week: 7; with a whole month, 28)
    # read from the table; one PutMetricData.
    assert calls["completion event"] == {"Query": 2 + 1 + 7, "GetItem": 1, "TransactWriteItems": 1, "PutMetricData": 2}
    assert calls["02:30 safety net"] == {"Query": 1}  # the ledger: already aggregated
    assert calls["lateness check"] == {"Query": 1, "PutMetricData": 1, "S3": 0}
    # S3 (s3fs): a listing of the export's folder, its two manifests, each data file once; every
    # GET of a data file is one of the export's files, never a second read.
    files = len(written.data_files)
    gets = [r for r in s3_seen["completion event"] if r.startswith("GET") and "/data/" in r]
    assert len(gets) == len(set(gets)) == files
    assert s3["completion event"] <= 7 + 2 * files
    assert s3["02:30 safety net"] <= 5  # the prefix's listing and the one completed summary


def test_a_day_without_activity_is_aggregated_not_missing(stack, tmp_path):
    end = midnight(DAY + dt.timedelta(days=1))
    quiet = write_incremental_export(
        tmp_path,
        [],  # nothing changed all day: AWS still writes the manifests (and empty data files)
        export_from=end - dt.timedelta(days=1),
        export_to=end,
        prefix=daily_export_folder(DAY),
        n_files=1,
    )
    upload(quiet, summary=False)
    result = aggregator.handle(
        completion_event(upload(quiet, summary=True)), FakeContext(), env=stack["aggregator"], now=AT_0230
    )
    assert result["status"] == "aggregated" and result["rowsWritten"] == 0
    assert read_analytics_table(ANALYTICS).is_empty()  # no day items at all ...
    entry = read_ledger(ANALYTICS)[DAY]  # ... but the day is in the ledger, with zeros
    assert entry.apps == 0 and set(entry.totals.values()) == {0} and entry.export_id == quiet.export_id
    report = find_gaps(ANALYTICS, lookback=2, now=AT_0230)
    assert [(d.day, d.status) for d in report.days] == [(DAY - dt.timedelta(days=1), "missing"), (DAY, "aggregated")]
