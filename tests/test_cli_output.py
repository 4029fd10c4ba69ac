"""Where results go: the format follows ``--output``'s extension, and a clash is one line (subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.test_cli import one_line_error, run


def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bubbly_metrics", *argv], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_a_format_that_clashes_with_the_extension_is_refused_before_any_work(tmp_path: Path) -> None:
    proc = cli("aggregate", "--format", "csv", "-o", "metrics.parquet", cwd=tmp_path)
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert "--format csv does not match --output metrics.parquet (a .parquet file)" in line
    assert not (tmp_path / "metrics.parquet").exists()


@pytest.mark.parametrize(("name", "read"), [("m.parquet", pl.read_parquet), ("m.csv", pl.read_csv), ("m.json", None)])
def test_the_extension_chooses_the_format(tmp_path: Path, name: str, read: object) -> None:
    code, out, _err = run("aggregate", "-o", str(tmp_path / name))
    assert code == 0 and out == ""
    written = tmp_path / name
    if name.endswith(".parquet"):
        assert written.read_bytes()[:4] == b"PAR1"
        assert pl.read_parquet(written).height > 0
    elif name.endswith(".csv"):
        assert pl.read_csv(written).columns[:2] == ["date", "app"]
    else:
        assert pl.read_json(written).height > 0


def test_an_explicit_format_that_agrees_or_an_unknown_extension_is_fine(tmp_path: Path) -> None:
    assert run("aggregate", "--format", "csv", "-o", str(tmp_path / "m.csv"))[0] == 0
    code, _out, _err = run("aggregate", "-o", str(tmp_path / "m.txt"))
    assert code == 0 and (tmp_path / "m.txt").read_text().startswith("|")  # the table, as on a terminal


def test_the_samples_two_sudokus_are_explained_where_they_first_appear() -> None:
    code, out, err = run("aggregate")
    assert code == 0 and "| Sudoku" in out and "| sudoku" in out
    assert "'Sudoku' and 'sudoku' are two apps on purpose" in err


def test_a_sample_written_over_a_history_says_so(tmp_path: Path) -> None:
    first = cli("sample", "s", "--items", "200", "--days", "3", cwd=tmp_path)
    assert first.returncode == 0 and "warning" not in first.stderr
    again = cli("sample", "s", "--items", "200", "--days", "3", "--daily", "2", cwd=tmp_path)
    assert again.returncode == 0
    (line,) = [x for x in again.stderr.splitlines() if x.startswith("warning:")]
    assert "s already holds 1 export(s)" in line and "empty folder" in line


def test_a_backfill_starts_where_the_exports_activity_does(tmp_path: Path) -> None:
    made = cli("sample", "s", "--start", "2026-06-01", "--days", "10", "--items", "300", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    proc = cli("aggregate", "s", "--mode", "backfill", "--format", "csv", "--now", "2026-06-11T03:00:00Z", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    frame = pl.read_csv(proc.stdout.encode(), try_parse_dates=True)
    assert str(frame["date"].min()) == "2026-06-01"  # not 500 days of zeros from 2025-01-17
    assert "backfill from 2026-06-01, the first day the export holds activity" in proc.stderr
    explicit = cli(
        "aggregate", "s", "--mode", "backfill", "--start", "2026-05-25", "--format", "csv",
        "--now", "2026-06-11T03:00:00Z", cwd=tmp_path,
    )  # fmt: skip
    assert str(pl.read_csv(explicit.stdout.encode(), try_parse_dates=True)["date"].min()) == "2026-05-25"


def test_a_backfill_over_days_without_activity_says_so(tmp_path: Path) -> None:
    assert cli("sample", "s", "--start", "2026-06-01", "--days", "10", "--items", "300", cwd=tmp_path).returncode == 0
    proc = cli(
        "aggregate", "s", "--mode", "backfill", "--start", "2026-05-20", "--end", "2026-05-25",
        "--now", "2026-06-11T03:00:00Z", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("warning:")]
    assert "no activity in 2026-05-20 → 2026-05-25: every metric is zero" in line


@pytest.mark.parametrize(
    ("where", "mode", "needle"),
    [
        ("s", "incremental", "1 completed FULL export(s) there; full exports: a backfill (mode backfill) reads them"),
        ("data", "backfill", "this is a folder inside an export: give the folder that holds AWSDynamoDB/"),
    ],
)
def test_errors_that_point_the_way(tmp_path: Path, where: str, mode: str, needle: str) -> None:
    assert cli("sample", "s", "--items", "200", "--days", "3", cwd=tmp_path).returncode == 0
    location = "s" if where == "s" else str(next(tmp_path.glob("s/AWSDynamoDB/*/data")))
    proc = cli("aggregate", location, "--mode", mode, cwd=tmp_path)
    assert proc.returncode == 1
    line = one_line_error(proc.stderr)
    assert "No export found in the folder" in line and needle in line and "S3" not in line


def test_a_mistyped_s3_uri_is_named() -> None:
    code, _out, err = run("aggregate", "s3:/bucket/exports")
    assert code == 1
    assert one_line_error(err).endswith("does not exist; did you mean s3://bucket/exports?")
