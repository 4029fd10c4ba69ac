"""The CLI's ``engagement`` command, in-process: the library's frames, in every format, from both sources."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import bubbly_metrics as bm
from bubbly_metrics.cli import main
from bubbly_metrics.publish import publish
from tests.aws_helpers import ANALYTICS, create_analytics_table


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def sample() -> bm.AggregateResult:
    return bm.aggregate(bm.sample_export_location(), mode="backfill", now=bm.SAMPLE_NOW)


def test_help_has_examples(capsys):
    assert main(["engagement", "--help"]) == 0
    assert "python -m bubbly_metrics engagement " in capsys.readouterr().out


def test_without_location_runs_on_the_shipped_sample(sample):
    code, out, err = run("engagement", "--format", "csv")
    assert code == 0, err
    assert "shipped sample" in err and "2025-01-17 → 2025-03-17" in err
    got = pl.read_csv(io.StringIO(out), schema=bm.engagement_metrics(sample).collect_schema())
    assert_frame_equal(got, bm.engagement_metrics(sample).collect())


def test_table_format_is_readable():
    code, out, _ = run("engagement")
    assert code == 0
    assert out.splitlines()[0].split("|")[1:-1] == [
        " date       ",
        " app        ",
        " active_users ",
        " weekly_active_users ",
        " monthly_active_users ",
        " stickiness ",
    ]


def test_retention_and_options(sample, tmp_path: Path):
    path = tmp_path / "retention.parquet"
    code, _, err = run(
        "engagement", "--retention", "--days", "1,3", "--history-days", "14", "-o", str(path), "--format", "parquet"
    )
    assert code == 0, err
    assert_frame_equal(pl.read_parquet(path), bm.retention(sample, days=[1, 3], history_days=14).collect())
    code, out, err = run(
        "engagement", "--week-days", "3", "--month-days", "10", "--partial-windows", "--format", "json"
    )
    assert code == 0, err
    want = bm.engagement_metrics(sample, week_days=3, month_days=10, partial_windows=True).collect()
    assert_frame_equal(pl.read_json(io.StringIO(out), schema=want.schema), want)


def test_start_and_end_bound_the_days_read(sample):
    code, out, err = run("engagement", "--start", "2025-02-01", "--end", "2025-02-28", "--format", "csv")
    assert code == 0, err
    want = bm.engagement_metrics(sample, start="2025-02-01", end="2025-02-28").collect()
    got = pl.read_csv(io.StringIO(out), schema=want.schema)
    assert_frame_equal(got, want)
    # Windows reach no further back than --start: February 28 is the first whole 28-day window.
    assert got.filter(pl.col("monthly_active_users").is_not_null())["date"].unique().to_list() == [dt.date(2025, 2, 28)]


def test_from_the_analytics_table(aws, sample):
    create_analytics_table()
    publish(sample, table=ANALYTICS, cloudwatch=False, now=bm.SAMPLE_NOW)
    code, out, err = run(
        "engagement",
        "--analytics-table",
        ANALYTICS,
        "--end",
        "2025-03-17",
        "--now",
        "2025-03-18T02:30:00Z",
        "--format",
        "csv",
    )
    assert code == 0, err
    assert f"Analytics Table {ANALYTICS}" in err
    want = bm.engagement_metrics(sample).collect()
    assert_frame_equal(pl.read_csv(io.StringIO(out), schema=want.schema), want)
    code, out, err = run(
        "engagement", "--analytics-table", ANALYTICS, "--retention", "--format", "csv", "--now", "2025-03-18T02:30:00Z"
    )
    assert code == 0, err
    want = bm.retention(sample).collect()
    assert_frame_equal(pl.read_csv(io.StringIO(out), schema=want.schema), want)
    assert "warning" not in err


def test_a_table_holding_later_days_only(aws):
    # Its first days expired (TTL), or the deployment is younger than the range asked for.
    create_analytics_table("Late")
    late = bm.aggregate(bm.sample_export_location(), mode="backfill", start="2025-02-01", now=bm.SAMPLE_NOW)
    publish(late, table="Late", cloudwatch=False, now=bm.SAMPLE_NOW)
    code, _, err = run("engagement", "--analytics-table", "Late", "--start", "2025-01-17", "--end", "2025-03-17")
    assert code == 0 and "warning: the table holds nothing before 2025-02-01" in err
    code, _, err = run("engagement", "--analytics-table", "Late", "--start", "2025-01-17", "--end", "2025-01-31")
    assert code == 1 and err.splitlines()[-1] == "error: Analytics Table Late holds no rows for 2025-01-17 → 2025-01-31"


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["--week-days", "0"], 2, "--week-days must be"),
        (["--month-days", "-3"], 2, "--month-days must be"),
        (["--retention", "--history-days", "-1"], 2, "--history-days must be"),
        (["--retention", "--days", "1,x"], 2, "--days must be comma-separated"),
        (["--retention", "--days", "0,7"], 2, "--days must be a list"),
        (["--start", "2025-1-17"], 2, "Invalid --start format"),
        (["--start", "2025-03-10", "--end", "2025-03-01"], 2, "is after end"),
        (["--start", "2025-01-01"], 2, "--floor"),
        (["--analytics-table", "T", "--start", "2025-02-01", "--floor", "2025-03-01"], 2, "--floor"),
        (["--format", "parquet"], 2, "needs --output"),
        (["/no/such/place"], 1, "does not exist"),
        ([".", "--analytics-table", "T"], 2, "not both"),
    ],
)
def test_bad_input_is_one_line(argv, code, needle):
    got, out, err = run("engagement", *argv)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("no export", "FULL"))]
    assert got == code and out == ""
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_a_full_export_then_its_incremental_exports(tmp_path: Path):
    from bubbly_metrics.engagement import read_activity
    from bubbly_metrics.synthetic import write_history

    write_history(tmp_path, n_items=3000, days=60, daily_days=14, export_time="2025-03-04T02:00:00Z")
    code, out, err = run(
        "engagement", str(tmp_path), "--incremental", str(tmp_path), "--now", "2025-03-18T02:30:00Z", "--format", "csv"
    )
    assert code == 0, err
    assert "2025-01-17 → 2025-03-03" in err and "incremental exports at" in err and "2025-03-04 → 2025-03-17" in err
    parts, days = read_activity(str(tmp_path), incremental=str(tmp_path), now=bm.SAMPLE_NOW)
    assert (days.start, days.end) == (dt.date(2025, 1, 17), dt.date(2025, 3, 17)) and len(parts) == 2
    want = bm.engagement_metrics(parts, start=days.start, end=days.end).collect()
    assert_frame_equal(pl.read_csv(io.StringIO(out), schema=want.schema), want)
    assert want["date"].max() == dt.date(2025, 3, 17)
    # Without --incremental, the full export's days only.
    code, out, err = run("engagement", str(tmp_path), "--now", "2025-03-18T02:30:00Z", "--format", "csv")
    assert code == 0 and pl.read_csv(io.StringIO(out), try_parse_dates=True)["date"].max() == dt.date(2025, 3, 3)
