"""The CLI, in-process for every command and option, and once as a real subprocess."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import bubbly_metrics as bm
from bubbly_metrics.cli import main
from bubbly_metrics.sample import SAMPLE_NOW
from bubbly_metrics.synthetic import WrittenExport, generate_items, write_full_export
from tests.aws_helpers import ANALYTICS, create_analytics_table, scan_all
from tests.conftest import upload_tree


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def sample_copy(tmp_path: Path) -> Path:
    root = tmp_path / "bucket"
    shutil.copytree(bm.sample_export_location(), root)
    return root


# -- aggregate -----------------------------------------------------------------------------


def test_aggregate_without_location_runs_on_the_shipped_sample():
    code, out, err = run("aggregate", "--format", "csv")
    assert code == 0
    frame = pl.read_csv(io.StringIO(out), try_parse_dates=True)
    expected = bm.aggregate(bm.sample_export_location(), now=SAMPLE_NOW).metrics
    assert_frame_equal(frame, expected, check_dtypes=False)
    assert frame["date"].unique().to_list() == [dt.date(2025, 3, 17)]
    assert "shipped sample export" in err
    assert "INCREMENTAL export" in err


def test_aggregate_backfill_table_is_dense_and_matches_the_library():
    code, out, _ = run("aggregate", "--mode", "backfill", "--format", "json")
    assert code == 0
    frame = pl.DataFrame(json.loads(out))
    expected = bm.aggregate(bm.sample_export_location(), mode="backfill", now=SAMPLE_NOW).metrics
    assert frame.height == expected.height == 60 * expected["app"].n_unique()
    assert frame["games_played"].to_list() == expected["games_played"].to_list()


def test_aggregate_table_format_prints_every_row():
    code, out, _ = run("aggregate", "--mode", "backfill", "--start", "2025-03-10", "--end", "2025-03-12")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| 2025-03-1")]
    assert len(rows) == 3 * 5  # four apps, and trivia, which arrives 2025-03-12


def test_aggregate_explicit_location_date_and_output_file(sample_copy, tmp_path):
    out_path = tmp_path / "m.csv"
    code, out, _ = run(
        "aggregate",
        str(sample_copy),
        "--date",
        "2025-03-17",
        "--now",
        "2025-03-18T02:30:00Z",
        "--output",
        str(out_path),
        "--format",
        "csv",
    )
    assert code == 0 and out == ""
    assert pl.read_csv(out_path).height == 5


def test_aggregate_parquet_and_per_user(tmp_path):
    path = tmp_path / "users.parquet"
    code, _, _ = run("aggregate", "--per-user", "--format", "parquet", "--output", str(path))
    assert code == 0
    users = pl.read_parquet(path)
    assert users.columns == ["date", "app", "user_id", "games", "parties_created", "parties_joined"]
    expected = bm.aggregate(bm.sample_export_location(), now=SAMPLE_NOW)
    assert users["games"].sum() == expected.metrics["games_played"].sum()


def test_aggregate_verify_passes_on_a_good_export():
    code, _, _ = run("aggregate", "--verify", "--format", "csv")
    assert code == 0


def test_aggregate_progress_goes_to_stderr_when_asked():
    code, out, err = run("aggregate", "--progress", "--format", "csv")
    assert code == 0
    assert "data files" in err and "data files" not in out


def test_a_backfill_past_the_export_is_one_line_not_days_of_zeros():
    # The sample's full export was taken 2025-03-18T02:00Z: it holds no 2025-03-18.
    code, out, err = run("aggregate", "--mode", "backfill", "--end", "2025-03-18")
    assert code == 1 and out == ""
    assert "holds no day after 2025-03-17" in one_line_error(err)


def test_incremental_summary_accounts_for_every_line_read_deletes_included():
    import gzip
    import json
    import re

    export = bm.find_export(bm.sample_export_location(), export_type="incremental")
    lines = [
        json.loads(raw)
        for f in export.data_files()
        for raw in gzip.decompress(Path(f.path).read_bytes()).splitlines()
        if raw.strip()
    ]
    deletes = sum(1 for line in lines if "Keys" in line and "NewImage" not in line)
    assert deletes > 0
    code, _, err = run("aggregate", "--mode", "incremental", "--progress", "--format", "csv")
    assert code == 0
    progress = re.findall(r"read \d+/\d+ data files, ([\d,]+) records", err)[-1]
    summary = re.search(r"· ([\d,]+) records: .*, ([\d,]+) deletes$", err, re.MULTILINE)
    assert summary is not None, err
    # Progress counts lines as they are read; the summary says what became of each of them.
    assert progress == summary.group(1) == f"{len(lines):,}"
    assert summary.group(2) == f"{deletes:,}"
    result = bm.aggregate(bm.sample_export_location(), now=SAMPLE_NOW)
    assert result.counts["deleted"] == deletes
    assert result.items_read == len(lines) == sum(f.item_count for f in export.data_files())


def test_aggregate_date_reruns_an_older_day_from_its_own_export(tmp_path):
    from tests.test_exports import _daily_incrementals

    days = [dt.date(2025, 3, 10), dt.date(2025, 3, 11), dt.date(2025, 3, 12)]
    ids = _daily_incrementals(tmp_path, days)
    now = "2025-03-13T02:30:00Z"
    for day in days:
        code, out, err = run("aggregate", str(tmp_path), "--date", day.isoformat(), "--now", now, "--format", "csv")
        assert code == 0, err
        assert ids[day] in err
        expected = bm.aggregate(str(tmp_path), mode="incremental", date=day).metrics
        assert_frame_equal(pl.read_csv(io.StringIO(out), try_parse_dates=True), expected, check_dtypes=False)
    code, _, err = run("aggregate", str(tmp_path), "--date", "2025-03-13", "--now", now)
    assert code == 1
    line = one_line_error(err)
    # The nearest window (the day before's), not every window: a long history stays one short line.
    assert "covers 2025-03-13" in line and "3 window(s) there" in line and ids[days[-1]] in line
    assert len(line) < 400


# -- exports and sample --------------------------------------------------------------------------


def test_exports_lists_the_real_aws_export(real_export):
    code, out, _ = run("exports", str(real_export), "--verify", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["type"], r["items"]) for r in rows] == [("FULL", 3), ("INCREMENTAL", 6), ("INCREMENTAL", 5)]
    assert all(r["checksums"] == "ok (4 files)" for r in rows)
    assert rows[1]["time_or_window"] == "2026-01-14T10:20:00Z → 2026-01-14T10:35:00Z"


def test_sample_command_writes_an_export_the_library_reads(tmp_path):
    code, out, _ = run("sample", str(tmp_path / "s"), "--items", "300", "--days", "5", "--apps", "a,b", "--files", "2")
    assert code == 0 and "300 records" in out
    (export,) = bm.list_exports(str(tmp_path / "s"))
    assert export.item_count == 300 and export.export_type == "FULL"
    code, _, _ = run("sample", str(tmp_path / "s"), "--items", "50", "--incremental", "--start", "2025-02-01")
    assert code == 0
    assert [e.export_type for e in bm.list_exports(str(tmp_path / "s"))] == ["FULL", "INCREMENTAL"]


def test_every_command_has_help_with_an_example(capsys):
    for command in ("aggregate", "exports", "export", "reconcile", "sample"):
        assert main([command, "--help"]) == 0
        assert f"python -m bubbly_metrics {command} " in capsys.readouterr().out


# -- bad input: one line on stderr, non-zero exit, no traceback ----------------------------


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["aggregate", "/no/such/place"], 1, "does not exist"),
        (["aggregate", "--mode", "backfill", "--start", "2025-1-17"], 2, "Invalid --start format"),
        (["aggregate", "--mode", "backfill", "--end", "17/03/2025"], 2, "Invalid --end format"),
        (["aggregate", "--date", "2025-02-30"], 2, "Invalid --date format"),
        (["aggregate", "--mode", "backfill", "--start", "2025-03-10", "--end", "2025-03-01"], 2, "is after end"),
        (["aggregate", "--format", "xml"], 2, "invalid choice: 'xml'"),
        (["aggregate", "--mode", "sideways"], 2, "invalid choice: 'sideways'"),
        (["aggregate", "--publish"], 2, "--publish needs --analytics-table"),
        (["aggregate", "--dry-run"], 2, "go with --publish"),
        (["aggregate", "--format", "parquet"], 2, "needs --output"),
        (["aggregate", "--date", "2025-03-01"], 1, "covers 2025-03-01"),
        (["aggregate", "--now", "yesterday"], 2, "--now"),
        (["aggregate", "--start", "2025-01-17"], 2, "--start/--end are for --mode backfill"),
        (["bogus"], 2, "invalid choice: 'bogus'"),
        (["sample", "/tmp/x", "--items", "0"], 2, "--items must be at least 1"),
        (["sample", "/tmp/x", "--apps", "a-b"], 2, "cannot contain '-'"),
        (["sample", "/tmp/x", "--start", "9999-12-30", "--days", "5"], 2, "Invalid --start: 9999-12-30 is outside"),
        # Hostile dates (issue #25): one line naming the flag, for aggregate, export, reconcile and plan.
        (["aggregate", "--mode", "backfill", "--start", "0001-01-01"], 2, "Invalid --start: 0001-01-01 is outside"),
        (["aggregate", "--mode", "backfill", "--start", "0205-01-17"], 2, "Invalid --start: 0205-01-17 is outside"),
        (["aggregate", "--mode", "backfill", "--start", "9999-12-31"], 2, "Invalid --start: 9999-12-31 is outside"),
        (["aggregate", "--mode", "backfill", "--end", "9999-12-31"], 2, "Invalid --end: 9999-12-31 is outside"),
        (["aggregate", "--date", "2100-12-31"], 2, "date 2100-12-31 is in the future"),
        (["aggregate", "--mode", "backfill", "--start", "2025-01-01"], 2, "before the backfill floor 2025-01-17 (--"),
        (["aggregate", "--mode", "backfill", "--floor", "2012-01-01", "--start", "2012-01-01"], 2, "(--max-days)"),
        (["aggregate", "--mode", "backfill", "--floor", "0205-01-17"], 2, "Invalid --floor: 0205-01-17 is outside"),
        (["aggregate", "--mode", "backfill", "--max-days", "0"], 2, "--max-days (the longest backfill"),
        (["aggregate", "--mode", "backfill", "--max-days", "true"], 2, "argument --max-days: invalid int value"),
        (["aggregate", "--mode", "backfill", "--start", "2025-01-17\x1b[2J"], 2, "got '2025-01-17\\x1b[2J'"),
        (["export", "--table-arn", "t", "--bucket", "b", "--mode", "backfill", "--start", "0205-01-17"], 2, "--start:"),
        (["export", "--table-arn", "t", "--bucket", "b", "--mode", "backfill", "--floor", "2099-01-01"], 2, "future"),
        (["plan", "--run", "/tmp/never-written", "--start", "0205-01-17"], 2, "Invalid --start: 0205-01-17"),
        (["sample", "/etc/hostname"], 1, "NotADirectoryError"),
        (["aggregate", "s3://"], 1, "cannot list export location 's3://'"),
        (["exports", "s3://"], 1, "cannot list export location 's3://'"),
        (["aggregate", "--now", "0001-01-01T00:00:00Z"], 2, "has no day before it"),
        (["export", "--table-arn", "t", "--bucket", "b", "--start", "2025-01-17"], 2, "--start is for --mode backfill"),
        (["export", "--table-arn", "t", "--bucket", "b", "--poll", "-1"], 2, "--poll must be >= 0"),
        (["export", "--table-arn", "main", "--bucket", "b", "--date", "2025-1-1"], 2, "got '2025-1-1'"),
        (["aggregate", "-o", "/no/such/folder/out.csv"], 2, "folder /no/such/folder does not exist"),
        (["aggregate", "-o", "/tmp"], 2, "--output /tmp is a folder"),
        (["exports", ".", "-o", "/no/such/folder/x.csv"], 2, "does not exist"),
        (["aggregate", "/etc/hostname"], 1, "is a file: give the folder"),
    ],
)
def test_bad_invocations_are_one_clear_line(argv, code, needle, capsys):
    got, _, err = run(*argv)
    err = err or capsys.readouterr().err
    line = one_line_error(err)
    assert got == code
    assert needle in line


def test_location_with_no_exports(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run("aggregate", str(tmp_path / "empty"), "--mode", "backfill")
    assert code == 1
    assert one_line_error(err).startswith("error: No export found in the folder")


def test_only_an_in_progress_export(sample_copy):
    for summary in sample_copy.glob("AWSDynamoDB/*/manifest-summary.json"):
        summary.unlink()
    code, _, err = run("aggregate", str(sample_copy), "--mode", "backfill")
    assert code == 1
    assert "No export found in the folder" in one_line_error(err) and "in progress" in err


def test_ion_export_is_refused(sample_copy):
    for summary in sample_copy.glob("AWSDynamoDB/*/manifest-summary.json"):
        summary.write_text(summary.read_text().replace('"DYNAMODB_JSON"', '"ION"'))
    code, _, err = run("aggregate", str(sample_copy), "--mode", "backfill")
    assert code == 1
    assert "ION" in one_line_error(err)


def test_checksum_mismatch_under_verify_names_the_file(sample_copy):
    export = bm.find_export(str(sample_copy), export_type="full")
    victim = export.data_files()[1]
    path = Path(victim.path)
    data = gzip.decompress(path.read_bytes()).replace(b"session-", b"session_", 1)
    path.write_bytes(gzip.compress(data))
    code, _, err = run("aggregate", str(sample_copy), "--mode", "backfill", "--verify", "--now", "2025-03-18T02:30:00Z")
    assert code == 1
    line = one_line_error(err)
    assert "checksum mismatch" in line and victim.key in line
    code, _, err = run("exports", str(sample_copy), "--verify")
    assert code == 1 and victim.key in err


def test_corrupt_gzip_is_counted_not_fatal_and_fails_under_verify(sample_copy):
    export = bm.find_export(str(sample_copy), export_type="full")
    path = Path(export.data_files()[0].path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    code, out, err = run(
        "aggregate", str(sample_copy), "--mode", "backfill", "--now", "2025-03-18T02:30:00Z", "--format", "csv"
    )
    assert code == 0 and out
    # Damage to a whole file has no record to show: the file is the example.
    assert f"malformed truncated_gzip: 1 (in {export.data_files()[0].key})" in err
    assert "None" not in err
    code, _, err = run("aggregate", str(sample_copy), "--mode", "backfill", "--verify", "--now", "2025-03-18T02:30:00Z")
    assert code == 1 and "checksum mismatch" in err


def test_missing_aws_credentials_is_one_line(tmp_path, monkeypatch):
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # no credentials cached by earlier tests
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    # Never AWS itself: were credentials found after all, this endpoint refuses at once.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    code, _, err = run("aggregate", "--publish", "--analytics-table", "T")
    assert code == 1
    assert "credentials" in err.lower()
    assert "Traceback" not in err


# -- against moto's server -------------------------------------------------------------------


def test_publish_writes_the_table_like_the_lambda_and_dry_run_touches_nothing(aws):
    create_analytics_table()
    code, _, err = run("aggregate", "--mode", "backfill", "--publish", "--analytics-table", ANALYTICS, "--dry-run")
    assert code == 0 and "would write 300 rows" in err
    assert scan_all() == {}
    code, _, err = run("aggregate", "--mode", "backfill", "--publish", "--analytics-table", ANALYTICS)
    assert code == 0, err
    assert "wrote 300 rows" in err and "outside CloudWatch's two-week window" in err
    items = scan_all()
    expected = bm.aggregate(bm.sample_export_location(), mode="backfill", now=SAMPLE_NOW).metrics
    ledger = {k for k in items if k[0] == "#ledger"}  # one entry per day written (bubbly_metrics.ledger)
    assert len(items) - len(ledger) == expected.height and len(ledger) == expected["date"].n_unique()
    row = expected.row(100, named=True)
    item = items[(row["date"].isoformat(), row["app"])]
    assert int(item["summary"]["M"]["gamesPlayed"]["N"]) == row["games_played"]


def test_publish_to_a_table_that_does_not_exist_fails_with_one_line_per_failure(aws):
    code, _, err = run("aggregate", "--publish", "--analytics-table", "nope", "--no-cloudwatch")
    assert code == 1
    assert "Traceback" not in err
    assert "nope" in err


def test_aggregate_reads_s3_through_moto(aws, sample_copy):
    url = upload_tree(sample_copy, "cli-bucket", aws, prefix="exports/")
    code, out, _ = run("aggregate", url, "--now", "2025-03-18T02:30:00Z", "--format", "csv")
    assert code == 0
    local = bm.aggregate(bm.sample_export_location(), now=SAMPLE_NOW).metrics
    assert_frame_equal(pl.read_csv(io.StringIO(out), try_parse_dates=True), local, check_dtypes=False)
    code, out, _ = run("exports", url, "--format", "csv")
    assert code == 0 and out.count("COMPLETED") == 14  # the full export and 13 daily ones


def test_access_denied_bucket_is_one_line(aws):
    code, _, err = run("aggregate", "s3://no-such-bucket/exports/", "--mode", "backfill")
    assert code == 1
    assert "no-such-bucket" in one_line_error(err)


# -- once for real --------------------------------------------------------------------------------


def test_python_dash_m_subprocess(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bubbly_metrics",
            "aggregate",
            "--mode",
            "backfill",
            "--start",
            "2025-03-01",
            "--format",
            "csv",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    frame = pl.read_csv(io.StringIO(proc.stdout))
    assert frame.height == 17 * 5
    bad = subprocess.run(
        [sys.executable, "-m", "bubbly_metrics", "aggregate", "--date", "2025-1-1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == "error: Invalid --date format: expected YYYY-MM-DD, got '2025-1-1'"
    typo = subprocess.run(
        [sys.executable, "-m", "bubbly_metrics", "aggregate", "--mode", "backfill", "--start", "0205-01-17"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (typo.returncode, typo.stdout) == (2, "")
    assert typo.stderr.splitlines() == [
        "error: Invalid --start: 0205-01-17 is outside the years 2012-2100 (DynamoDB exists since 2012): "
        "check the year, e.g. 2025-01-17"
    ]


def test_generated_export_end_to_end(tmp_path):
    items = generate_items(n_items=2000, start="2025-02-01", days=10, seed=5)
    write_full_export(tmp_path, items, export_time="2025-02-11T02:00:00Z", n_files=3)
    code, out, _ = run(
        "aggregate",
        str(tmp_path),
        "--mode",
        "backfill",
        "--start",
        "2025-02-01",
        "--now",
        "2025-02-11T02:30:00Z",
        "--format",
        "csv",
    )
    assert code == 0
    assert pl.read_csv(io.StringIO(out)).height == 10 * 4


# -- reconcile against moto ------------------------------------------------------------------------


def test_reconcile_agrees_with_what_publish_wrote(aws):
    create_analytics_table()
    assert run("aggregate", "--mode", "backfill", "--publish", "--analytics-table", ANALYTICS)[0] == 0
    code, out, err = run(
        "reconcile",
        bm.sample_export_location(),
        "--analytics-table",
        ANALYTICS,
        "--cloudwatch",
        "--now",
        "2025-03-18T02:30:00Z",
        "--format",
        "csv",
    )
    assert code == 0, err
    summary = one_line_error(err)
    assert "analytics_table: all 1200 values match" in summary
    assert "outside CloudWatch's window" in summary
    assert pl.read_csv(io.StringIO(out)).height == 0


def test_reconcile_reports_every_planted_difference_exactly(aws, tmp_path):
    from tests import reconcile_scenario as sc

    create_analytics_table()
    sc.seed_outputs(sc.write_old_world(tmp_path / "old"))
    new = sc.write_new_world(tmp_path / "new")
    code, out, err = run(
        "reconcile",
        f"{new}/exports/",
        "--analytics-table",
        ANALYTICS,
        "--cloudwatch",
        "--incremental",
        f"{new}/exports/",
        "--start",
        sc.START,
        "--end",
        sc.END,
        "--now",
        sc.NOW.isoformat(),
        "--format",
        "json",
    )
    assert code == 1, err
    rows = json.loads(out)
    found = {(r["target"], dt.date.fromisoformat(r["date"]), r["app"], r["metric"], r["cause"]) for r in rows}
    expected = {("analytics_table", *x) for x in sc.TABLE_DIFFS} | {("cloudwatch", *x) for x in sc.CLOUDWATCH_DIFFS}
    assert found == expected
    assert all(r["expected"] != r["actual"] for r in rows)
    assert f"{len(sc.TABLE_DIFFS)} of" in err


def test_exports_and_reconcile_default_to_the_shipped_sample():
    code, out, err = run("exports")
    assert code == 0 and "listing the shipped sample" in err
    assert out.count("| INCREMENTAL |") >= 2 and out.count("| FULL ") == 1
    # With no location, reconcile compares the sample's daily runs with its backfill: offline,
    # and it finds differences (exit 1), each with a cause.
    code, out, err = run("reconcile", "--format", "csv")
    assert code == 1, err
    assert "using the shipped sample" in err
    rows = pl.read_csv(io.StringIO(out))
    assert rows.height and rows["cause"].null_count() == 0 and "unexplained" not in rows["cause"].to_list()


def test_reconcile_against_a_parquet_snapshot_of_the_table(tmp_path):
    # The Parquet `aggregate --format parquet` writes is a snapshot: the same numbers match.
    snapshot = tmp_path / "table.parquet"
    code, _, err = run("aggregate", "--mode", "backfill", "--format", "parquet", "--output", str(snapshot))
    assert code == 0, err
    code, out, err = run(
        "reconcile", bm.sample_export_location(), "--snapshot", str(snapshot), "--now", SAMPLE_NOW.isoformat()
    )
    assert code == 0, err
    assert "values match" in err
    # Change one value: that (date, app, metric) differs, and nothing else.
    frame = pl.read_parquet(snapshot)
    frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(pl.col("games_played") + 5).otherwise(pl.col("games_played"))
    ).write_parquet(snapshot)
    code, out, err = run(
        "reconcile",
        bm.sample_export_location(),
        "--snapshot",
        str(snapshot),
        "--now",
        SAMPLE_NOW.isoformat(),
        "--format",
        "csv",
    )
    assert code == 1
    rows = pl.read_csv(io.StringIO(out), try_parse_dates=True)
    row = frame.row(3, named=True)
    assert rows.select("date", "app", "metric", "difference").rows() == [(row["date"], row["app"], "games_played", 5)]


def test_reconcile_needs_something_to_compare_with():
    code, _, err = run("reconcile", bm.sample_export_location())
    assert code == 2
    assert "nothing to compare with" in one_line_error(err)


def test_reconcile_compares_with_one_stand_in_for_the_table():
    code, _, err = run("reconcile", "--snapshot", "s.json", "--daily-runs")
    assert code == 2
    assert one_line_error(err) == (
        "error: compare with one of --analytics-table, --snapshot or --daily-runs, not --snapshot and --daily-runs"
    )


def test_an_output_that_cannot_be_written_is_one_error_line():
    code, _, err = run("aggregate", "--format", "csv", "-o", "/dev/full")
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: cannot write --output /dev/full: [Errno 28]")
    assert "Traceback" not in err


def test_outputs_are_written_to_s3_in_every_format(aws, sample_copy, tmp_path):
    # --output s3://... through moto's server, as a user would: every format lands as an object
    # holding what the same run writes to a local file.  (csv, json and table went through a
    # local open() and failed; nothing wrote to S3 in the suite.)
    import boto3

    url = upload_tree(sample_copy, "out-bucket", aws, prefix="exports/")
    s3 = boto3.client("s3", endpoint_url=aws, region_name="eu-west-2")
    for fmt in ("csv", "json", "table", "parquet"):
        local = tmp_path / f"metrics.{fmt}"
        args = ("aggregate", url, "--now", "2025-03-18T02:30:00Z", "--mode", "backfill", "--format", fmt)
        assert run(*args, "--output", str(local))[0] == 0
        code, out, err = run(*args, "--output", f"s3://out-bucket/results/metrics.{fmt}")
        assert (code, out) == (0, ""), err
        body = s3.get_object(Bucket="out-bucket", Key=f"results/metrics.{fmt}")["Body"].read()
        assert (
            body == local.read_bytes()
            if fmt != "parquet"
            else pl.read_parquet(io.BytesIO(body)).equals(pl.read_parquet(local))
        )
    # A bucket that does not exist: the run's summary, then one error line naming the output.
    code, _, err = run("aggregate", url, "--now", "2025-03-18T02:30:00Z", "--output", "s3://no-such-bucket/m.csv")
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "error: cannot write --output s3://no-such-bucket/m.csv: The specified bucket does not exist"
    )


def _sessions_export(root: Path, *, items: int, n_files: int) -> WrittenExport:
    """A full export taken 2025-03-13 of ``items`` sessions of one user, dated 2025-03-10 on."""
    sessions = [
        {"modelId": {"S": f"session-sudoku-{i}"}, "owner": {"S": "user-u1"}, "updatedAt": {"N": str(1741600000 + i)}}
        for i in range(items)
    ]
    return write_full_export(root, sessions, export_time="2025-03-13T02:00:00Z", n_files=n_files)


def test_library_warnings_reach_stderr_once(tmp_path: Path) -> None:
    # A missing data file: the summary counts one malformed row; the warning says how many
    # items went with it.  Before, the CLI showed no warning at all (the package logger has a
    # NullHandler and the CLI added nothing).
    written = _sessions_export(tmp_path, items=300, n_files=3)
    gone = written.data_files[1]
    manifest = (written.export_dir / "manifest-files.json").read_text().splitlines()
    listed = {entry["dataFileS3Key"]: entry["itemCount"] for entry in map(json.loads, manifest)}
    gone.unlink()
    key = gone.relative_to(tmp_path).as_posix()
    code, _, err = run("aggregate", str(tmp_path), "--mode", "backfill", "--start", "2025-03-10", "--end", "2025-03-12")
    assert code == 0
    assert f"warning: {key}: listed in the manifest with {listed[key]} item(s) but missing" in err
    # Without an end, the range stops at the export's last day: said once, as a warning.
    code, _, err = run("aggregate", str(tmp_path), "--mode", "backfill", "--start", "2025-03-10")
    assert err.count("warning: backfill ends 2025-03-12") == 1
    # An unreadable export is named once (the library's warning), and `exports` exits 1.
    bad = tmp_path / "AWSDynamoDB" / "01741831200001-bad"
    bad.mkdir()
    (bad / "manifest-summary.json").write_text("nope")
    code, _, err = run("exports", str(tmp_path))
    assert code == 1
    assert [line for line in err.splitlines() if "01741831200001-bad" in line] == [
        f"warning: export 01741831200001-bad at {bad}: manifest-summary.json is unreadable: "
        "Expecting value: line 1 column 1 (char 0)"
    ]


def test_warnings_end_the_progress_line_and_verify_reports_damage_once(tmp_path: Path) -> None:
    written = _sessions_export(tmp_path, items=400, n_files=4)
    written.data_files[1].unlink()
    blob = written.data_files[2].read_bytes()
    written.data_files[2].write_bytes(blob[: len(blob) // 2])  # truncated
    args = ("aggregate", str(tmp_path), "--mode", "backfill", "--start", "2025-03-10", "--end", "2025-03-12")
    code, _, err = run(*args, "--progress")
    assert code == 0
    assert err.count("warning: ") == 2
    # Each warning starts a line of its own, never glued to the self-overwriting progress line.
    assert all(line.startswith("warning: ") for line in err.splitlines() if "warning: " in line)
    # Under --verify the damage is the error; no warning first that says the run carries on.
    code, _, err = run(*args, "--verify")
    assert code == 1
    assert "warning: " not in err
    assert one_line_error(err).startswith("error: data file")


def test_sample_daily_writes_a_history_that_reconciles_with_causes(tmp_path):
    out_dir = tmp_path / "history"
    code, out, err = run("sample", str(out_dir), "--items", "3000", "--days", "20", "--daily", "5", "--seed", "3")
    assert code == 0, err
    assert "and 5 daily incremental exports (2025-02-01 → 2025-02-05)" in out
    assert [e.export_type for e in bm.list_exports(str(out_dir))] == ["INCREMENTAL"] * 5 + ["FULL"]
    code, out, err = run("reconcile", str(out_dir), "--daily-runs", "--now", "2025-02-06T02:30:00Z", "--format", "csv")
    assert code == 1, err
    causes = set(pl.read_csv(io.StringIO(out))["cause"])
    assert "redated" in causes and "unexplained" not in causes
    code, _, err = run("sample", str(tmp_path / "x"), "--daily", "21", "--days", "20")
    assert code == 2 and "--daily must be between 1 and days (20), got 21" in one_line_error(err)


def test_reconcile_refuses_hostile_dates():
    code, out, err = run("reconcile", "--daily-runs", "--mode", "backfill", "--start", "9999-12-31")
    assert (code, out) == (2, "")
    assert err.splitlines()[-1].startswith("error: Invalid --start: 9999-12-31 is outside the years 2012-2100")


def test_control_characters_from_outside_are_escaped_on_the_terminal():
    from bubbly_metrics.cli.output import _write_malformed

    class Result:
        def malformed(self, by_file=False):
            if by_file:
                return pl.DataFrame({"reason": ["bad_owner"], "file": ["x"]})
            return pl.DataFrame(
                {
                    "reason": ["bad_owner"],
                    "records": [1],
                    "example_model_id": ["session-\x1b]0;pwned\x07-1"],
                    "example_owner": ["\r\x1b[2K" + "o" * 1_000_000],
                }
            )

    err = io.StringIO()
    _write_malformed(Result(), err)
    (line,) = err.getvalue().splitlines()
    assert "\x1b" not in line and "\r" not in line and "\\x1b]0;pwned\\x07" in line
    assert len(line) < 600  # a 1 MB owner is clipped to ~200 characters
    code, _, err_text = run("aggregate", "--date", "\x1b[31m\u202e")
    assert code == 2 and "\x1b" not in err_text and "\u202e" not in err_text and "\\x1b[31m" in err_text
