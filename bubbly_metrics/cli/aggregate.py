"""Commands that aggregate an export: ``aggregate``, ``reconcile``, and the distributed ``plan``/``map``/``reduce``."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import IO, Any

from bubbly_metrics._text import clip, printable
from bubbly_metrics.cli.common import _check_publish, _CliError, _parse_now, _preflight
from bubbly_metrics.cli.output import _check_output, _emit, _Progress, _say_sample, _write_summary


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


def _publish(result: Any, args: argparse.Namespace, now: dt.datetime | None, stderr: IO[str]) -> int:
    from bubbly_metrics.exceptions import PublishError
    from bubbly_metrics.publish import PublishReport, publish

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
        report, failed = PublishReport.from_dict(exc.report), True
    verb = "would write" if args.dry_run else "wrote"
    rows, items = report.rows_written, report.items_written
    stderr.write(f"{verb} {rows:,} rows ({items:,} items) to {args.analytics_table}\n")
    if args.cloudwatch:
        sent = "would send" if args.dry_run else "published"
        stderr.write(
            f"{sent} {report.datums_published:,} CloudWatch datums; {report.datums_skipped_too_old:,} skipped: days "
            "outside CloudWatch's two-week window are stored in the Analytics Table only\n"
        )
        if report.datums_skipped_future:
            stderr.write(f"  {report.datums_skipped_future:,} datums skipped: days in the future\n")
    for failure in report.failures:
        detail = failure.get("error") or failure.get("message") or failure
        stderr.write(f"error: {failure.get('target', '?')}: {printable(clip(str(detail), 1000))}\n")
    return 1 if failed else 0


def _range_and_export(args: argparse.Namespace, location: str, now: dt.datetime | None) -> tuple[Any, Any]:
    """The run's days and the export it reads."""
    from bubbly_metrics.pipeline import plan_days

    plan = plan_days(location, mode=args.mode, start=args.start, end=args.end, date=args.date, now=now)
    return plan.date_range, plan.export


def cmd_reconcile(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    """Run ``reconcile``."""
    from bubbly_metrics.reconciliation import reconcile, table_source
    from bubbly_metrics.sample import source_or_sample

    given = bool(args.analytics_table or args.snapshot)
    daily_runs = args.daily_runs or (args.location is None and not given and not args.cloudwatch)
    source = table_source(analytics_table=args.analytics_table, snapshot=args.snapshot, daily_runs=daily_runs)
    if not given and not args.cloudwatch and not daily_runs:
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
            analytics_table=source,
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
