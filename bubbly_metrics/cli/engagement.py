"""The ``engagement`` command: WAU, MAU, stickiness and retention from an export or the Analytics Table."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import IO, Any

from bubbly_metrics.cli.common import _CliError, _parse_now, _preflight
from bubbly_metrics.cli.output import _check_output, _emit, _Progress, _say_sample


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
