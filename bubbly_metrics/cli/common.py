"""What every CLI command shares: the one-line error, ``--now``, the preflight and the flags errors name."""

from __future__ import annotations

import argparse
import datetime as dt

from bubbly_metrics.exceptions import BubblyMetricsError

PROG = "python -m bubbly_metrics"


class _CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _check_publish(args: argparse.Namespace) -> None:
    """The flags :func:`_add_publish` adds, as a whole: one line for what does not fit."""
    if (args.dry_run or args.analytics_table or not args.cloudwatch or args.allow_partial) and not args.publish:
        raise _CliError("--analytics-table, --no-cloudwatch, --dry-run and --allow-partial go with --publish", 2)
    if args.publish and not args.analytics_table:
        raise _CliError("--publish needs --analytics-table TABLE (the Analytics Table's name)", 2)


def _parse_now(value: str | None) -> dt.datetime | None:
    """``--now`` as a UTC instant (a bad one is a bad invocation: :func:`_main` says so)."""
    from bubbly_metrics.dates import parse_instant

    return parse_instant(value, name="now")


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
    "analytics_table": "--analytics-table",
    "snapshot": "--snapshot",
    "daily_runs": "--daily-runs",
}


def _flag_message(exc: BubblyMetricsError) -> str:
    """The library names its parameters (as the Lambda payload does); the CLI names its flags."""
    return exc.message_for(_FLAGS)
