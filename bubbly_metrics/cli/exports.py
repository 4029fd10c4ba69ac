"""Commands about exports: ``exports`` (list), ``export`` (start one), ``sample`` (write one) and ``gaps``."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import IO, Any

from bubbly_metrics.cli.common import PROG, _CliError, _parse_now, _preflight
from bubbly_metrics.cli.output import _check_output, _emit
from bubbly_metrics.exceptions import BubblyMetricsError


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
