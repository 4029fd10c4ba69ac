"""Command line: ``python -m bubbly_metrics <command>`` (also the ``bubbly-metrics`` script).

Thin over the library: each command parses arguments, calls library functions and formats
their results.  Results go to stdout, progress and notes to stderr; every error a user can
cause is one line on stderr and a non-zero exit (2 for a bad invocation, 1 for a failed run).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any, NoReturn

from bubbly_metrics._text import clip, printable
from bubbly_metrics.dates import date_bounds
from bubbly_metrics.exceptions import BubblyMetricsError, InvalidArgumentError, InvalidDateError

__all__ = ["main"]

PROG = "python -m bubbly_metrics"
FORMATS = ("table", "csv", "json", "parquet")

EXAMPLES = {
    "aggregate": f"""examples:
  {PROG} aggregate                                   # the shipped sample export, yesterday
  {PROG} aggregate --mode backfill                   # sample, every day since 2025-01-17
  {PROG} aggregate s3://my-bucket/exports/ --mode backfill --start 2025-01-17 --format csv
  {PROG} aggregate ./export --date 2025-03-17 --format json --output day.json
  {PROG} aggregate s3://my-bucket/exports/ --mode backfill --publish --analytics-table Stack-AnalyticsTable
  {PROG} aggregate s3://my-bucket/exports/ --mode backfill --publish --analytics-table T --dry-run""",
    "exports": f"""examples:
  {PROG} exports                                     # the shipped sample: a full export and daily ones
  {PROG} exports s3://my-bucket/exports/
  {PROG} exports ./export --verify""",
    "export": f"""examples:
  {PROG} export --table-arn arn:aws:dynamodb:eu-west-2:123456789012:table/main \\
      --bucket my-export-bucket --mode backfill --wait
  {PROG} export --table-arn main --bucket my-export-bucket --mode incremental --date 2025-03-17""",
    "reconcile": f"""examples:
  {PROG} reconcile                                   # the sample: its daily runs against its backfill
  {PROG} reconcile s3://my-bucket/exports/ --analytics-table Stack-AnalyticsTable --cloudwatch
  {PROG} reconcile s3://my-bucket/exports/ --snapshot table.json      # `aws dynamodb scan` output, offline
  {PROG} reconcile s3://my-bucket/exports/ --daily-runs --incremental s3://my-bucket/exports/incremental/
  {PROG} reconcile ./export --analytics-table T --start 2025-02-01 --end 2025-02-28 --format csv
  {PROG} reconcile s3://my-bucket/exports/ --cloudwatch --incremental s3://my-bucket/exports/incremental/

exit status: 0 when everything compared agrees, 1 when any value differs (days older than
CloudWatch's two-week window are reported but never count as differences).""",
    "sample": f"""examples:
  {PROG} sample ./my-sample --items 100000 --days 90
  {PROG} sample ./my-sample --incremental --apps sudoku,chess""",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _add_location(p: argparse.ArgumentParser, *, optional: bool) -> None:
    p.add_argument(
        "location",
        nargs="?" if optional else None,
        help="export location: a local folder or s3://bucket/prefix holding exports"
        + (" (default: the sample export shipped with the package)" if optional else ""),
    )


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="output format (default: from --output's extension, .csv/.json/.parquet; else table)",
    )
    p.add_argument("--output", "-o", metavar="PATH", help="write results to PATH instead of stdout")


def _add_publish(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--publish",
        action="store_true",
        help="write the Analytics Table and publish CloudWatch metrics, as the Aggregator Lambda does",
    )
    p.add_argument("--analytics-table", metavar="TABLE", help="the Analytics Table's name (needed by --publish)")
    p.add_argument(
        "--no-cloudwatch", dest="cloudwatch", action="store_false", help="with --publish: write the table only"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="with --publish: show what would be written and sent, touch nothing"
    )
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="with --publish: publish even if data files of the export could not be read (missing, truncated); "
        "without it such a run publishes nothing. The ledger marks the days partial",
    )


def _check_publish(args: argparse.Namespace) -> None:
    """The flags :func:`_add_publish` adds, as a whole: one line for what does not fit."""
    if (args.dry_run or args.analytics_table or not args.cloudwatch or args.allow_partial) and not args.publish:
        raise _CliError("--analytics-table, --no-cloudwatch, --dry-run and --allow-partial go with --publish", 2)
    if args.publish and not args.analytics_table:
        raise _CliError("--publish needs --analytics-table TABLE (the Analytics Table's name)", 2)


def _add_bounds(p: argparse.ArgumentParser) -> None:
    from bubbly_metrics.dates import BACKFILL_FLOOR, MAX_BACKFILL_DAYS

    p.add_argument(
        "--floor",
        metavar="YYYY-MM-DD",
        help=f"backfill: the earliest --start accepted (default: {BACKFILL_FLOOR}, when BubblyClouds' history starts)",
    )
    p.add_argument(
        "--max-days",
        type=int,
        metavar="N",
        help=f"backfill: the longest range accepted, in days (default: {MAX_BACKFILL_DAYS}); a longer one needs this",
    )


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr (default: only when stderr is a terminal)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI's argument parser."""
    parser = _Parser(prog=PROG, description="Daily per-app analytics from DynamoDB table exports.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    agg = sub.add_parser(
        "aggregate",
        help="aggregate an export into daily per-app metrics",
        description="Aggregate the latest matching export at LOCATION into daily per-app metrics.",
        epilog=EXAMPLES["aggregate"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_location(agg, optional=True)
    agg.add_argument(
        "--mode",
        default="incremental",
        choices=("incremental", "backfill"),
        help="incremental: one day from the latest incremental export (default); "
        "backfill: a dense range of days from the latest full export",
    )
    agg.add_argument("--date", help="incremental: the day to aggregate, YYYY-MM-DD (default: yesterday, UTC)")
    agg.add_argument("--start", help="backfill: first day, YYYY-MM-DD (default: 2025-01-17)")
    agg.add_argument("--end", help="backfill: last day, YYYY-MM-DD (default: yesterday, UTC)")
    agg.add_argument("--now", help="pretend the current time is this ISO-8601 instant (reproducible runs)")
    _add_bounds(agg)
    agg.add_argument("--per-user", action="store_true", help="output the per-user breakdown instead of the metrics")
    agg.add_argument("--verify", action="store_true", help="check data-file checksums and item counts while reading")
    _add_publish(agg)
    _add_output(agg)
    _add_progress(agg)
    agg.set_defaults(func=cmd_aggregate)

    exp = sub.add_parser(
        "exports",
        help="list the exports at a location",
        description="List every export found under LOCATION (completed, in progress and unreadable: the last "
        "are named on stderr, with why, and make the exit status 1).",
        epilog=EXAMPLES["exports"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_location(exp, optional=True)
    exp.add_argument("--verify", action="store_true", help="verify data-file checksums of completed exports")
    _add_output(exp)
    exp.set_defaults(func=cmd_exports)

    start = sub.add_parser(
        "export",
        help="start a DynamoDB export to S3, as the Export Lambda does",
        description="Start an export of the main table to S3 exactly as the Export Lambda does "
        "(same request, prefix and idempotency token); optionally wait for it to finish.",
        epilog=EXAMPLES["export"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    start.add_argument("--table-arn", required=True, metavar="ARN", help="the main table's ARN (or name)")
    start.add_argument("--bucket", required=True, help="the export bucket")
    start.add_argument("--prefix", default="exports/", help="S3 prefix (default: exports/)")
    start.add_argument(
        "--mode",
        default="incremental",
        choices=("incremental", "backfill"),
        help="incremental: yesterday's changes (default); backfill: a full export",
    )
    start.add_argument("--date", help="incremental: the day to export, YYYY-MM-DD (default: yesterday, UTC)")
    start.add_argument("--start", help="backfill: the backfillStartDate to record, YYYY-MM-DD (default: --floor)")
    _add_bounds(start)
    start.add_argument("--wait", action="store_true", help="poll until the export is COMPLETED or FAILED")
    start.add_argument("--poll", type=float, default=30.0, metavar="SECONDS", help="--wait polling interval")
    start.add_argument("--now", help="pretend the current time is this ISO-8601 instant")
    _add_progress(start)
    start.set_defaults(func=cmd_export)

    rec = sub.add_parser(
        "reconcile",
        help="diff an export's metrics against the Analytics Table and CloudWatch",
        description="Aggregate the export at LOCATION and compare every (date, app, metric) with what the "
        "Analytics Table and/or CloudWatch hold: a summary line on stderr, then the differing rows "
        "with both values and their likely cause.",
        epilog=EXAMPLES["reconcile"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_location(rec, optional=True)
    rec.add_argument("--analytics-table", metavar="TABLE", help="the Analytics Table to compare with")
    rec.add_argument(
        "--snapshot",
        metavar="PATH",
        help="compare with a local snapshot of the Analytics Table instead: the Parquet of "
        "`aggregate --format parquet`, or the JSON of `aws dynamodb scan`",
    )
    rec.add_argument(
        "--daily-runs",
        action="store_true",
        help="compare with what the daily runs wrote: the incremental exports at --incremental (default: "
        "LOCATION) aggregated day by day as the Lambda does (the default with no location)",
    )
    rec.add_argument("--cloudwatch", action="store_true", help="also compare with CloudWatch (inside its window)")
    rec.add_argument(
        "--mode",
        default="backfill",
        choices=("incremental", "backfill"),
        help="backfill: a range of days from the latest full export (default); incremental: one day",
    )
    rec.add_argument("--date", help="incremental: the day, YYYY-MM-DD (default: yesterday, UTC)")
    rec.add_argument("--start", help="backfill: first day, YYYY-MM-DD (default: 2025-01-17)")
    rec.add_argument("--end", help="backfill: last day, YYYY-MM-DD (default: yesterday, UTC)")
    _add_bounds(rec)
    rec.add_argument(
        "--incremental", metavar="LOCATION", help="where incremental exports are: their deletes may explain differences"
    )
    rec.add_argument(
        "--no-explain",
        dest="explain",
        action="store_false",
        help="skip the second pass over the export that classifies causes",
    )
    rec.add_argument("--now", help="pretend the current time is this ISO-8601 instant")
    rec.add_argument("--verify", action="store_true", help="check data-file checksums and item counts while reading")
    _add_output(rec)
    _add_progress(rec)
    rec.set_defaults(func=cmd_reconcile)

    smp = sub.add_parser(
        "sample",
        help="write a realistic synthetic export",
        description="Write a synthetic export in the real AWS layout under OUT (a bucket root).",
        epilog=EXAMPLES["sample"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    smp.add_argument("out", help="folder to write into (created if missing)")
    smp.add_argument("--items", type=int, default=5000, help="number of items (default: 5000)")
    smp.add_argument("--days", type=int, default=60, help="days of activity (default: 60)")
    smp.add_argument("--start", default="2025-01-17", help="first day, YYYY-MM-DD (default: 2025-01-17)")
    smp.add_argument("--apps", default="sudoku,chess,wordsearch,Sudoku", help="comma-separated app names")
    smp.add_argument("--files", type=int, default=4, help="data files (default: 4)")
    smp.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    smp.add_argument(
        "--incremental",
        action="store_true",
        help="write an incremental export of the last day instead of a full export",
    )
    smp.add_argument(
        "--daily",
        type=int,
        metavar="N",
        help="write a table's history: the full export and the daily incremental exports of its last N days "
        "(sessions updated past midnight, deletes, TTL expiry), as the shipped sample",
    )
    smp.set_defaults(func=cmd_sample)
    _add_gaps(sub)
    _add_distributed(sub)
    _add_engagement(sub)
    return parser


# -- output -------------------------------------------------------------------------------


#: The format an ``--output`` file's extension names.
_EXTENSION_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def _output_format(args: argparse.Namespace) -> str:
    """``--format``, else the one ``--output``'s extension names, else table; a clash is an error."""
    named = _EXTENSION_FORMATS.get(PurePosixPath(args.output or "").suffix.lower())
    if args.format is None:
        return named or "table"
    if named is not None and named != args.format:
        raise _CliError(
            f"--format {args.format} does not match --output {args.output} (a .{named} file): "
            "drop --format or change the extension",
            2,
        )
    return str(args.format)


def _check_output(args: argparse.Namespace) -> None:
    """Refuse ``--format``/``--output`` that cannot be written, before any work is done."""
    args.format = _output_format(args)
    if args.format == "parquet" and not args.output:
        raise _CliError("--format parquet needs --output PATH (parquet is binary)", 2)
    if args.output and "://" not in args.output:  # a local path (an s3:// one is checked by writing it)
        path = Path(args.output).expanduser()
        if path.is_dir():
            raise _CliError(f"--output {args.output} is a folder: give a file path", 2)
        if not path.parent.is_dir():
            raise _CliError(f"--output {args.output}: folder {path.parent} does not exist", 2)


def _emit(frame: Any, args: argparse.Namespace, *, stdout: IO[str]) -> None:
    _check_output(args)
    try:
        _write(frame, args, stdout)
    except OSError as exc:  # a full disk, a missing bucket, access denied (s3fs raises OSErrors)
        raise _CliError(f"cannot write --output {args.output}: {exc}", 1) from None


def _write(frame: Any, args: argparse.Namespace, stdout: IO[str]) -> None:
    import polars as pl

    fmt = args.format
    if fmt == "parquet":
        with _open_output(args.output, "wb") as fh:
            frame.write_parquet(fh)
        return
    if fmt == "csv":
        text = frame.write_csv()
    elif fmt == "json":
        text = frame.write_json() + "\n"
    else:
        with pl.Config(
            tbl_rows=-1,
            tbl_cols=-1,
            tbl_hide_dataframe_shape=True,
            tbl_hide_column_data_types=True,
            tbl_formatting="ASCII_MARKDOWN",
            fmt_str_lengths=80,
            tbl_width_chars=200,
            thousands_separator=False,
        ):
            text = str(frame) + "\n"
    if args.output:
        with _open_output(args.output, "w") as fh:
            fh.write(text)
    else:
        stdout.write(text)


def _open_output(output: str, mode: str) -> Any:
    """Open ``--output`` for writing: a local path or ``s3://`` (fsspec, as exports are read)."""
    from bubbly_metrics.locations import filesystem

    fs, path = filesystem(output)
    return fs.open(path, mode) if "b" in mode else fs.open(path, mode, encoding="utf-8")


class _Progress:
    """Progress on stderr: a self-overwriting line on a terminal, nothing otherwise."""

    def __init__(self, enabled: bool | None, stderr: IO[str], total_files: int) -> None:
        self.enabled = stderr.isatty() if enabled is None else enabled
        self.stderr = stderr
        self.total = total_files
        self.files = 0
        self.records = 0
        self.open = False
        """A progress line is on screen without its newline (a warning ends it first)."""
        for handler in logging.getLogger("bubbly_metrics").handlers:
            if isinstance(handler, _Warnings) and handler.stream is stderr:
                handler.progress = self

    def file_done(self, _data_file: Any, records: int) -> None:
        self.files += 1
        self.records += records
        if self.enabled:
            self.stderr.write(f"\rread {self.files}/{self.total} data files, {self.records:,} records")
            self.stderr.flush()
            self.open = True

    def end_line(self) -> None:
        if self.open:
            self.stderr.write("\n")
            self.open = False

    def close(self) -> None:
        self.end_line()


# -- commands ---------------------------------------------------------------------------


def _parse_now(value: str | None) -> dt.datetime | None:
    """``--now`` as a UTC instant (a bad one is a bad invocation: :func:`_main` says so)."""
    from bubbly_metrics.dates import parse_instant

    return parse_instant(value, name="now")


def _say_sample(stderr: IO[str], now: dt.datetime | None) -> None:
    """The line that says a command runs on the shipped sample, and why it has two sudokus."""
    as_of = f" (as of {now:%Y-%m-%d %H:%M} UTC)" if now is not None else ""
    stderr.write(
        f"no export location given: using the shipped sample export{as_of}; "
        "its apps 'Sudoku' and 'sudoku' are two apps on purpose: app names are case-sensitive, as stored\n"
    )


def cmd_aggregate(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    """Run ``aggregate``."""
    from bubbly_metrics.pipeline import aggregate
    from bubbly_metrics.sample import source_or_sample

    now = _parse_now(args.now)
    _check_publish(args)
    _check_output(args)
    if args.mode == "incremental" and (args.start or args.end):
        raise _CliError("--start/--end are for --mode backfill; use --date for one day", 2)
    if args.mode == "backfill" and args.date:
        raise _CliError("--date is for --mode incremental; use --start/--end for a backfill", 2)
    if args.publish and not args.dry_run:
        _preflight(table=args.analytics_table)
    location, now = source_or_sample(args.location, now)
    date_range, export = _range_and_export(args, location, now)
    if args.location is None:
        _say_sample(stderr, now)
    progress = _Progress(args.progress, stderr, len(export.data_files()))
    try:
        result = aggregate(
            export,
            mode=args.mode,
            start=args.start,
            end=date_range.end if args.mode == "backfill" else None,  # where run_days put it
            date=args.date,
            now=now,
            verify=args.verify,
            on_file=progress.file_done,
        )
    finally:
        progress.close()
    if args.mode == "backfill" and args.start is None and result.date_range.start > date_range.start:
        stderr.write(
            f"backfill from {result.date_range.start}, the first day the export holds activity "
            "(--start chooses another)\n"
        )
    _write_summary(
        result,
        f"{export.export_type} export {export.export_id} ({export.window})",
        stderr,
        deletes=export.export_type == "INCREMENTAL",
    )
    _emit(result.per_user if args.per_user else result.metrics, args, stdout=stdout)
    if args.publish:
        return _publish(result, args, now, stderr)
    return 0


def _preflight(*, table: str | None = None, main_table: str | None = None, bucket: str | None = None) -> None:
    """Check credentials, the tables and the bucket a command will use, before it reads anything."""
    from bubbly_metrics.preflight import MAIN_KEYS, check_bucket, check_credentials, check_table

    check_credentials()
    if table:
        check_table(table)
    if main_table:
        check_table(main_table, keys=MAIN_KEYS, what="main table")
    if bucket:
        check_bucket(bucket)


def _publish(result: Any, args: argparse.Namespace, now: dt.datetime | None, stderr: IO[str]) -> int:
    from bubbly_metrics.exceptions import PublishError
    from bubbly_metrics.publish import publish

    try:
        report = publish(
            result,
            table=args.analytics_table,
            cloudwatch=args.cloudwatch,
            dry_run=args.dry_run,
            now=now,
            allow_partial=args.allow_partial,
        )
        failed = False
    except PublishError as exc:
        report, failed = exc.report, True
    verb = "would write" if args.dry_run else "wrote"
    table = report.get("analyticsTable") or {}
    rows = table.get("rows", report.get("rowsWritten", 0)) if args.dry_run else report.get("rowsWritten", 0)
    items = table.get("items", report.get("itemsWritten", 0)) if args.dry_run else report.get("itemsWritten", 0)
    stderr.write(f"{verb} {rows:,} rows ({items:,} items) to {args.analytics_table}\n")
    if args.cloudwatch:
        sent = "would send" if args.dry_run else "published"
        datums = report.get("datums", 0) if args.dry_run else report.get("datumsPublished", 0)
        stderr.write(
            f"{sent} {datums:,} CloudWatch datums; {report.get('datumsSkippedTooOld', 0):,} skipped: days outside "
            "CloudWatch's two-week window are stored in the Analytics Table only\n"
        )
        skipped_future = report.get("datumsSkippedFuture", 0)
        if skipped_future:
            stderr.write(f"  {skipped_future:,} datums skipped: days in the future\n")
    for failure in report.get("failures", []):
        detail = failure.get("error") or failure.get("message") or failure
        stderr.write(f"error: {failure.get('target', '?')}: {printable(clip(str(detail), 1000))}\n")
    return 1 if failed else 0


def _write_summary(result: Any, source: str, stderr: IO[str], *, deletes: bool = False) -> None:
    """What a run read from ``source``: its days, its records by fate, and each malformed reason."""
    counts = result.counts
    stderr.write(
        f"{source} · {result.date_range} · {result.items_read:,} records: {counts['counted']:,} counted, "
        f"{counts['ignored']:,} other kinds, {counts['malformed']:,} malformed, "
        f"{counts['outside_range']:,} outside the range" + (f", {counts['deleted']:,} deletes\n" if deletes else "\n")
    )
    _write_malformed(result, stderr)


def _write_malformed(result: Any, stderr: IO[str]) -> None:
    """One line per malformed reason, with an example: a record's keys, or the damaged file."""
    by_file = result.malformed(by_file=True)
    for row in result.malformed().iter_rows(named=True):
        if row["example_model_id"] is None and row["example_owner"] is None:
            files = sorted(f for f in by_file.filter(by_file["reason"] == row["reason"])["file"].to_list() if f)
            more = f" and {len(files) - 1} more file(s)" if len(files) > 1 else ""
            where = f"in {files[0]}{more}" if files else ""
        else:
            where = f"e.g. {clip(row['example_model_id'])} / {clip(row['example_owner'])}"
        line = f"  malformed {row['reason']}: {row['records']:,}" + (f" ({where})" if where else "")
        stderr.write(printable(line) + "\n")


def _range_and_export(args: argparse.Namespace, location: str, now: dt.datetime | None) -> tuple[Any, Any]:
    """The run's days and the export it reads."""
    from bubbly_metrics.dates import resolve_range
    from bubbly_metrics.pipeline import export_for, run_days

    date_range = resolve_range(mode=args.mode, start=args.start, end=args.end, date=args.date, now=now)
    export = export_for(location, mode=args.mode, day=date_range.start)
    return run_days(export, mode=args.mode, date_range=date_range, end_given=args.end is not None), export


#: The flag that gives each library parameter an error may name (its ``param``).
_FLAGS = {
    "start": "--start",
    "backfillStartDate": "--start",  # plan_export's name for its backfill_start (export --start)
    "end": "--end",
    "date": "--date",
    "now": "--now",
    "floor": "--floor",
    "max_days": "--max-days",
    "n_items": "--items",
    "n_files": "--files",
    "days": "--days",
    "daily_days": "--daily",
    "apps": "--apps",
    "week_days": "--week-days",
    "month_days": "--month-days",
    "history_days": "--history-days",
}


def _flag_message(exc: BubblyMetricsError) -> str:
    """The library names its parameters (as the Lambda payload does); the CLI names its flags."""
    return exc.message_for(_FLAGS)


def cmd_exports(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    """Run ``exports``."""
    import polars as pl

    from bubbly_metrics.exports import list_exports, verify_export
    from bubbly_metrics.sample import source_or_sample

    _check_output(args)
    location, _ = source_or_sample(args.location)
    if args.location is None:
        stderr.write("no export location given: listing the shipped sample\n")
    exports = list_exports(location)
    if not exports:
        raise _CliError(f"No export found in S3: nothing under {location} looks like a DynamoDB export")
    rows = []
    bad = 0
    for e in exports:
        row = {
            "export_id": e.export_id,
            "type": e.export_type or "-",
            "status": e.status,
            "time_or_window": e.window,
            "items": e.item_count,
            "billed_bytes": e.billed_size_bytes,
            "format": e.output_format or "-",
        }
        if e.status == "UNREADABLE":  # the library's warning has named it on stderr, with where it is
            bad += 1
        if args.verify:
            if e.status != "COMPLETED":
                row["checksums"] = "-"
            else:
                try:
                    files = verify_export(e)
                    row["checksums"] = f"ok ({len(files)} files)"
                except BubblyMetricsError as exc:
                    bad += 1
                    row["checksums"] = "FAILED"
                    stderr.write(f"{e.export_id}: {exc}\n")
        rows.append(row)
    _emit(pl.DataFrame(rows), args, stdout=stdout)
    return 1 if bad else 0


def cmd_reconcile(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    """Run ``reconcile``."""
    from bubbly_metrics.reconcile import reconcile
    from bubbly_metrics.sample import source_or_sample

    tables = [f for f, v in (("--analytics-table", args.analytics_table), ("--snapshot", args.snapshot)) if v]
    if args.daily_runs:
        tables.append("--daily-runs")
    if len(tables) > 1:
        raise _CliError(
            f"compare with one of --analytics-table, --snapshot or --daily-runs, not {' and '.join(tables)}", 2
        )
    daily_runs = args.daily_runs or (args.location is None and not tables and not args.cloudwatch)
    if not tables and not args.cloudwatch and not daily_runs:
        raise _CliError(
            "nothing to compare with: give --analytics-table TABLE, --snapshot PATH, --daily-runs and/or --cloudwatch",
            2,
        )
    if daily_runs and args.mode != "backfill":
        raise _CliError("--daily-runs reconciles a backfill (--mode backfill)", 2)
    _check_output(args)
    now = _parse_now(args.now)
    if args.analytics_table or args.cloudwatch:
        _preflight(table=args.analytics_table)
    location, now = source_or_sample(args.location, now)
    if args.location is None:
        _say_sample(stderr, now)
    _, export = _range_and_export(args, location, now)
    progress = _Progress(args.progress, stderr, len(export.data_files()))
    try:
        result = reconcile(
            export,
            analytics_table=args.analytics_table,
            snapshot=args.snapshot,
            daily_runs=daily_runs,
            cloudwatch=args.cloudwatch,
            incremental=args.incremental or (location if daily_runs else None),
            mode=args.mode,
            start=args.start,
            end=args.end,
            date=args.date,
            now=now,
            explain=args.explain,
            verify=args.verify,
            on_file=progress.file_done,
        )
    finally:
        progress.close()
    stderr.write(result.summary_line() + "\n")
    _emit(result.differences, args, stdout=stdout)
    return 1 if result.differs else 0


def cmd_export(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    """Run ``export``."""
    import json

    from bubbly_metrics.dates import current_bounds
    from bubbly_metrics.start_export import plan_export, start_export, wait_for_export

    now = _parse_now(args.now)
    if args.mode == "incremental" and args.start:
        raise _CliError("--start is for --mode backfill; use --date for an incremental export", 2)
    if args.mode == "backfill" and args.date:
        raise _CliError("--date is for --mode incremental; a backfill exports the whole table", 2)
    if args.poll < 0:
        raise _CliError(f"--poll must be >= 0 seconds, got {args.poll}", 2)
    request = {
        "bucket": args.bucket,
        "mode": args.mode,
        "prefix": args.prefix,
        "date": args.date,
        "backfill_start": args.start or (current_bounds().floor if args.mode == "backfill" else None),
        "now": now,
    }
    # The request is checked before AWS is (a bad date is a bad invocation, not an AWS error):
    # start_export checks it again, after the preflight, as it would for any caller.
    plan_export(table_arn="arn:aws:dynamodb:::table/-", **request)
    _preflight(main_table=args.table_arn, bucket=args.bucket)
    started = start_export(table=args.table_arn, **request)
    # start_export's result always holds these keys (exportStatus may be None, as AWS gave it).
    stderr.write(f"export {started['exportStatus']}: {started['exportArn']} → {started['s3Uri']}\n")
    if not args.wait:
        stdout.write(json.dumps(started, indent=2, default=str) + "\n")
        return 0
    show = stderr.isatty() if args.progress is None else args.progress
    begun = dt.datetime.now(dt.UTC)

    def progress(description: dict[str, Any]) -> None:
        if show:
            waited = (dt.datetime.now(dt.UTC) - begun).total_seconds()
            status = description.get("exportStatus", "?")
            stderr.write(f"\r{status} after {waited:,.0f} s")
            stderr.flush()

    try:
        final = wait_for_export(started["exportArn"], poll=args.poll, on_progress=progress)
    finally:
        if show:
            stderr.write("\n")
    location = started["s3Uri"]
    stderr.write(
        f"export COMPLETED under {location}; aggregate it with: {PROG} aggregate {location} --mode {args.mode}\n"
    )
    stdout.write(json.dumps({**started, **{k: v for k, v in final.items() if v is not None}}, indent=2) + "\n")
    return 0


def cmd_sample(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    """Run ``sample``."""
    from bubbly_metrics.synthetic import write_history, write_synthetic_export

    common = {
        "n_items": args.items,
        "start": args.start,
        "days": args.days,
        "apps": [a for a in args.apps.split(",") if a],
        "n_files": args.files,
        "seed": args.seed,
    }
    if args.daily is not None and args.incremental:
        raise _CliError("--daily writes a full export and daily incremental ones: leave out --incremental", 2)
    if args.daily is not None:
        history = write_history(args.out, daily_days=args.daily, **common)
        stdout.write(
            f"wrote full export {history.full.export_id} ({history.full.item_count:,} records) and "
            f"{len(history.daily)} daily incremental exports ({history.days[0]} → {history.days[-1]}) "
            f"under {args.out}\n"
        )
        return 0
    written = write_synthetic_export(args.out, incremental=args.incremental, **common)
    stdout.write(
        f"wrote export {written.export_id} ({written.item_count:,} records, "
        f"{len(written.data_files)} data files) under {args.out}\n"
    )
    return 0


# -- distributed backfill: plan, map, reduce (bubbly_metrics.distributed, docs/scale.md) ----

_DISTRIBUTED_EXAMPLES = f"""examples:
  {PROG} plan s3://my-bucket/exports/ --run ./run --start 2025-01-17 --items-per-batch 500000
  {PROG} map ./run --batch 0 --batch 1           # a few batches on a laptop (default: all)
  {PROG} reduce ./run --format csv                # same output as aggregate
  {PROG} reduce s3://my-bucket/distributed-runs/<name> --publish --analytics-table Stack-AnalyticsTable"""


def _add_distributed(sub: Any) -> None:
    pln = sub.add_parser(
        "plan",
        help="plan a distributed backfill: the export's data files cut into batches",
        description="Resolve the export and days as aggregate does and write RUN/run.json and RUN/plan.json "
        "(batches of data files sized by their item counts) for map and reduce.",
        epilog=_DISTRIBUTED_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_location(pln, optional=True)
    pln.add_argument("--run", required=True, metavar="RUN", help="the run's folder (local or s3://), created")
    pln.add_argument("--mode", default="backfill", choices=("incremental", "backfill"), help="default: backfill")
    pln.add_argument("--date", help="incremental: the day, YYYY-MM-DD (default: yesterday, UTC)")
    pln.add_argument("--start", help="backfill: first day, YYYY-MM-DD (default: 2025-01-17)")
    pln.add_argument("--end", help="backfill: last day, YYYY-MM-DD (default: the last day the export holds)")
    pln.add_argument("--now", help="pretend the current time is this ISO-8601 instant")
    _add_bounds(pln)
    pln.add_argument("--items-per-batch", type=int, metavar="N", help="items per batch (default: ~2 min of one vCPU)")
    pln.set_defaults(func=cmd_plan)

    mp = sub.add_parser(
        "map",
        help="summarise batches of a planned run into partials",
        description="Summarise batches of RUN's plan (default: every one) into Parquet partials under RUN/partials/.",
        epilog=_DISTRIBUTED_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mp.add_argument("run", metavar="RUN", help="the run's folder, as given to plan")
    mp.add_argument("--batch", type=int, action="append", metavar="N", help="a batch number (repeatable)")
    mp.add_argument("--verify", action="store_true", help="check data-file checksums and item counts while reading")
    mp.set_defaults(func=cmd_map)

    red = sub.add_parser(
        "reduce",
        help="merge a run's partials into daily metrics (and publish them)",
        description="Merge every partial of RUN into the result aggregate would give; output it like aggregate, "
        "and with --publish write the Analytics Table and CloudWatch. Fails naming any batch without a partial.",
        epilog=_DISTRIBUTED_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    red.add_argument("run", metavar="RUN", help="the run's folder, as given to plan")
    red.add_argument("--per-user", action="store_true", help="output the per-user breakdown instead of the metrics")
    _add_publish(red)
    red.add_argument("--now", help="pretend the current time is this ISO-8601 instant")
    _add_output(red)
    red.set_defaults(func=cmd_reduce)


def cmd_plan(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    """Run ``plan``."""
    import json

    from bubbly_metrics.distributed import plan_run
    from bubbly_metrics.sample import source_or_sample

    location, now = source_or_sample(args.location, _parse_now(args.now))
    plan = plan_run(
        location,
        run=args.run,
        mode=args.mode,
        start=args.start,
        end=args.end,
        date=args.date,
        now=now,
        items_per_batch=args.items_per_batch,
    )
    summary = plan.to_dict()
    stderr.write(
        f"planned {summary['batches']} batch(es) of {summary['dataFiles']} data file(s), {summary['items']:,} items, "
        f"export {plan.export_id} · {plan.date_range}\n"
    )
    stdout.write(json.dumps(summary) + "\n")
    return 0


def cmd_map(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    """Run ``map``."""
    import json

    from bubbly_metrics.distributed import Plan, map_batch

    batches = args.batch if args.batch else range(len(Plan.read(args.run).batches))
    for number in batches:
        report = map_batch(args.run, number, verify=args.verify)
        stdout.write(json.dumps(report) + "\n")
    return 0


def cmd_reduce(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    """Run ``reduce``."""
    from bubbly_metrics.distributed import reduce_run

    _check_publish(args)
    _check_output(args)
    if args.publish and not args.dry_run:
        _preflight(table=args.analytics_table)
    result = reduce_run(args.run)
    _write_summary(result, f"run {args.run} · export {result.export.export_id}", stderr)
    _emit(result.per_user if args.per_user else result.metrics, args, stdout=stdout)
    if args.publish:
        return _publish(result, args, _parse_now(args.now), stderr)
    return 0


# -- entry point --------------------------------------------------------------------------


def _aws_error_message(exc: BaseException) -> str | None:
    """One line for AWS errors (credentials, access denied, missing resources)."""
    try:
        import botocore.exceptions as bce
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return "AWS credentials not found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {})
        return f"AWS error {err.get('Code', '?')}: {err.get('Message', exc)}"
    if isinstance(exc, bce.BotoCoreError):
        return f"AWS error: {exc}"
    return None


_M_TOP_PAD = -2  # glibc's mallopt parameter


def _tune_allocator() -> None:
    """Keep glibc's heaps from going back to the kernel after every batch of a scan.

    Each batch allocates and frees memory per thread (decompressed pieces, decoded columns),
    and glibc trims a heap as soon as its free top passes a small threshold, so the next batch
    faults the same pages in again.  Heaps are padded by 32 MB (``M_TOP_PAD``): fewer page
    faults and a shorter run for a little more memory (the figures: see docs/performance.md).
    (Setting it also stops glibc adapting its mmap and trim thresholds; measured, that changes
    nothing here.)  The CLI owns its process,
    so it sets this; the library, imported into other people's processes, does not.  A no-op
    off Linux or without glibc's ``mallopt``.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_TOP_PAD, 32 << 20)
    # Polars' jemalloc returns freed pages after 0.5 s / 1 s (polars/__init__.py appends this to
    # its defaults; Polars is not imported yet): 5 s keeps them between batches, for less CPU
    # (see docs/performance.md).
    os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:5000,muzzy_decay_ms:5000")


class _Warnings(logging.Handler):
    """The library's warnings (skipped lines, damaged files, a capped range...) as ``warning: ...`` lines.

    Not ``bubbly_metrics.publish``'s: the CLI reports a publish's failures itself, from its report.
    """

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(logging.WARNING)
        self.stream = stream
        self.progress: _Progress | None = None  # the command's progress line, ended before a warning
        self.addFilter(lambda record: record.name != "bubbly_metrics.publish")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.progress is not None:
                self.progress.end_line()
            self.stream.write(f"warning: {printable(record.getMessage())}\n")
        except Exception:
            self.handleError(record)


# -- gaps (the ledger of aggregated days; bubbly_metrics.gaps) --------------------------------


def _add_gaps(sub: Any) -> None:
    gaps = sub.add_parser(
        "gaps",
        help="list days missing from the Analytics Table's ledger (and start their exports)",
        description="List the days of a range that the ledger of the Analytics Table lacks (missing: an "
        "incremental export can bring them back; unrecoverable: older than point-in-time recovery, backfill "
        "them from a full export) or holds from an export older than a later full export (stale).  Exit "
        "status 1 when any day is not plainly aggregated (after --fill: stale or unrecoverable ones).",
        epilog=f"""examples:
  {PROG} gaps --analytics-table BubblyAnalytics-AnalyticsTable
  {PROG} gaps --analytics-table BubblyAnalytics-AnalyticsTable --start 2025-02-01 --end 2025-03-17
  {PROG} gaps --analytics-table BubblyAnalytics-AnalyticsTable --fill \\
      --table-arn arn:aws:dynamodb:eu-west-2:123456789012:table/Main --bucket my-export-bucket""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gaps.add_argument("--analytics-table", required=True, metavar="TABLE", help="the Analytics Table's name")
    gaps.add_argument("--start", help="first day, YYYY-MM-DD (default: --lookback days ending at --end)")
    gaps.add_argument("--end", help="last day, YYYY-MM-DD (default: yesterday, UTC)")
    gaps.add_argument("--lookback", type=int, default=7, metavar="DAYS", help="days before --end (1-35, default 7)")
    gaps.add_argument("--fill", action="store_true", help="start one incremental export per missing day")
    gaps.add_argument("--table-arn", metavar="ARN", help="--fill: the main table's ARN (or name)")
    gaps.add_argument("--bucket", help="--fill: the export bucket")
    gaps.add_argument("--prefix", default="exports/", help="--fill: S3 prefix (default: exports/)")
    gaps.add_argument("--format", default="table", choices=("table", "json"), help="output format (default: table)")
    gaps.add_argument("--now", help="pretend the current time is this ISO-8601 instant")
    gaps.set_defaults(func=cmd_gaps)


def cmd_gaps(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    """Run ``gaps``."""
    import json

    from bubbly_metrics.gaps import catch_up, find_gaps

    if args.fill and not (args.table_arn and args.bucket):
        raise _CliError("--fill needs --table-arn and --bucket (where the exports go)", 2)
    report = find_gaps(
        args.analytics_table, start=args.start, end=args.end, lookback=args.lookback, now=_parse_now(args.now)
    )
    started = []
    if args.fill:
        started = catch_up(report, table=args.table_arn, bucket=args.bucket, prefix=args.prefix)
        for result in started:
            stderr.write(
                f"export started for {result['exportFromTime'][:10]}: {result['exportArn']} → {result['s3Uri']}\n"
            )
    if args.format == "json":
        stdout.write(json.dumps({**report.to_dict(), "exportsStarted": started}, indent=2) + "\n")
    else:
        for day in report.days:
            if day.status != "aggregated":
                stdout.write(f"{day.day}  {day.status:<13}  {day.note}\n")
        counts = report.to_dict()["counts"]
        stdout.write(
            f"{len(report.days)} day(s) {report.start} → {report.end}: "
            + ", ".join(f"{n} {status}" for status, n in counts.items())
            + "\n"
        )
    unresolved = report.with_status("stale", "unrecoverable") + ([] if args.fill else report.with_status("missing"))
    return 1 if unresolved else 0


# -- engagement (WAU, MAU, stickiness, retention; bubbly_metrics.engagement) -------------------


def _add_engagement(sub: Any) -> None:
    eng = sub.add_parser(
        "engagement",
        help="weekly and monthly active users, stickiness and cohort retention per app",
        description="Distinct users active in the trailing --week-days and --month-days days ending each day "
        "(WAU, MAU), stickiness (DAU / MAU), or with --retention the day-N retention of each cohort of new "
        "users, from the latest full export at LOCATION (as `aggregate --mode backfill` reads it) or from the "
        "Analytics Table.  Windows reaching before the first day read are lower bounds: left empty unless "
        "--partial-windows; cohorts in the first --history-days days are left out (their users may not be new).",
        epilog=f"""examples:
  {PROG} engagement                                  # the shipped sample, every day it holds
  {PROG} engagement --retention                      # the sample's day-1/7/30 retention by cohort
  {PROG} engagement s3://my-bucket/exports/ --start 2025-01-17 --format csv -o engagement.csv
  {PROG} engagement s3://my-bucket/exports/backfill/ --incremental s3://my-bucket/exports/incremental/
  {PROG} engagement --analytics-table Stack-AnalyticsTable --start 2025-02-01 --end 2025-03-17
  {PROG} engagement --retention --days 1,3,14 --history-days 14 --format json""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_location(eng, optional=True)
    eng.add_argument("--start", help="first day read, YYYY-MM-DD (default: --floor)")
    eng.add_argument("--end", help="last day, YYYY-MM-DD (default: yesterday, UTC; for an export, its last day)")
    eng.add_argument("--now", help="pretend the current time is this ISO-8601 instant (reproducible runs)")
    eng.add_argument(
        "--incremental",
        metavar="LOCATION",
        help="days after the full export's last one (to --end) from the incremental exports at LOCATION, "
        "aggregated day by day as the daily runs do",
    )
    eng.add_argument(
        "--analytics-table", metavar="TABLE", help="read the Analytics Table's per-user items instead of an export"
    )
    eng.add_argument("--retention", action="store_true", help="output cohort retention instead of WAU/MAU")
    eng.add_argument("--days", default="1,7,30", metavar="N,N,...", help="--retention: the day Ns (default: 1,7,30)")
    eng.add_argument(
        "--history-days",
        type=int,
        default=28,
        metavar="DAYS",
        help="--retention: report cohorts with at least DAYS days of data before them (default: 28)",
    )
    eng.add_argument("--week-days", type=int, default=7, metavar="DAYS", help="weekly window (default: 7)")
    eng.add_argument("--month-days", type=int, default=28, metavar="DAYS", help="monthly window (default: 28)")
    eng.add_argument(
        "--partial-windows",
        action="store_true",
        help="give the (lower-bound) counts of windows that begin before the first day read, instead of nothing",
    )
    eng.add_argument("--verify", action="store_true", help="check data-file checksums and item counts while reading")
    _add_bounds(eng)
    _add_output(eng)
    _add_progress(eng)
    eng.set_defaults(func=cmd_engagement, mode="backfill", date=None)


def cmd_engagement(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    """Run ``engagement``."""
    import polars as pl

    from bubbly_metrics.engagement import ACTIVE_SCHEMA, engagement_metrics, retention

    if (args.location or args.incremental) and args.analytics_table:
        raise _CliError("give an export LOCATION (and --incremental) or --analytics-table, not both", 2)
    _check_output(args)
    now = _parse_now(args.now)
    days = _day_ns(args.days)

    def query(source: Any, **options: Any) -> Any:
        if args.retention:
            return retention(source, days=days, history_days=args.history_days, **options)
        return engagement_metrics(
            source,
            week_days=args.week_days,
            month_days=args.month_days,
            partial_windows=args.partial_windows,
            **options,
        )

    query(pl.LazyFrame(schema=ACTIVE_SCHEMA))  # the library checks its arguments: on an empty frame, before reading
    if args.analytics_table:
        source, date_range = _engagement_from_table(args, now, stderr)
    else:
        source, date_range = _engagement_from_export(args, now, stderr)
    _emit(query(source, start=date_range.start, end=date_range.end).collect(), args, stdout=stdout)
    return 0


def _day_ns(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise _CliError(f"--days must be comma-separated whole numbers of days, got {text!r}", 2) from None


def _engagement_from_export(args: argparse.Namespace, now: dt.datetime | None, stderr: IO[str]) -> tuple[Any, Any]:
    from bubbly_metrics.engagement import read_activity
    from bubbly_metrics.pipeline import export_for
    from bubbly_metrics.sample import source_or_sample

    location, now = source_or_sample(args.location, now)
    if args.location is None:
        _say_sample(stderr, now)
    export = export_for(location, mode="backfill")
    progress = _Progress(args.progress, stderr, len(export.data_files()))
    try:
        parts, date_range = read_activity(
            location,
            incremental=args.incremental,
            start=args.start,
            end=args.end,
            now=now,
            verify=args.verify,
            on_file=progress.file_done,
        )
    finally:
        progress.close()
    full = parts[0].date_range
    stderr.write(f"{export.export_type} export {export.export_id} ({export.window}) · {full}\n")
    if len(parts) > 1:
        days = parts[1]["date"].n_unique()
        stderr.write(
            f"daily runs of the incremental exports at {args.incremental}: {full.end + dt.timedelta(days=1)} → "
            f"{date_range.end} ({days} day(s) with activity)\n"
        )
    elif args.incremental:
        stderr.write("the full export holds every day asked for: no incremental export read\n")
    return parts, date_range


def _engagement_from_table(args: argparse.Namespace, now: dt.datetime | None, stderr: IO[str]) -> tuple[Any, Any]:
    from bubbly_metrics.analytics_table import read_analytics_table
    from bubbly_metrics.dates import resolve_range

    date_range = resolve_range(mode="backfill", start=args.start, end=args.end, now=now)
    _preflight(table=args.analytics_table)
    frame = read_analytics_table(args.analytics_table, start=date_range.start, end=date_range.end, now=now)
    stderr.write(f"Analytics Table {args.analytics_table} · {date_range} · {frame.height:,} rows\n")
    if frame.is_empty():
        raise _CliError(f"Analytics Table {args.analytics_table} holds no rows for {date_range}", 1)
    held = frame["date"].min()
    assert isinstance(held, dt.date)
    if held != date_range.start:  # TTL-expired, or before the first run: not days without players
        stderr.write(
            f"warning: the table holds nothing before {held}: days before it count as days without activity "
            f"(give --start {held} to start there)\n"
        )
    return frame, date_range


def main(argv: Sequence[str] | None = None, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 1 failed run or differences, 2 bad invocation)."""
    _tune_allocator()
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    package = logging.getLogger("bubbly_metrics")
    warnings = _Warnings(stderr)
    package.addHandler(warnings)
    try:
        return _main(argv, stdout, stderr)
    finally:
        package.removeHandler(warnings)


def _main(argv: Sequence[str] | None, stdout: IO[str], stderr: IO[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the one-line error or the help
        return int(exc.code or 0)
    func: Callable[[argparse.Namespace, IO[str], IO[str]], int] = args.func
    try:
        # --floor / --max-days bound every date range the command resolves (library defaults otherwise).
        with date_bounds(floor=getattr(args, "floor", None), max_days=getattr(args, "max_days", None)):
            return func(args, stdout, stderr)
    except _CliError as exc:
        _error(stderr, str(exc))
        return exc.code
    except (InvalidArgumentError, InvalidDateError) as exc:
        _error(stderr, _flag_message(exc))
        return 2
    except BubblyMetricsError as exc:
        _error(stderr, str(exc))
        return 1
    except KeyboardInterrupt:
        stderr.write("interrupted\n")
        return 130
    except Exception as exc:
        message = _aws_error_message(exc)
        if message is None:
            # Files the user named (an --output on a full disk, a folder that is a file) and
            # Polars' own I/O errors are the user's to fix: one line, not a traceback.
            import polars as pl

            if isinstance(exc, OSError | pl.exceptions.ComputeError):
                message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            else:
                raise
        _error(stderr, message)
        return 1


def _error(stderr: IO[str], message: str) -> None:
    """One ``error:`` line; what came from outside (a key, a record's id) cannot drive the terminal."""
    stderr.write(f"error: {printable(message)}\n")
