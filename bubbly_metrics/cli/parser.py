"""The CLI's argument parser: every command, its flags, help and examples."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from bubbly_metrics.cli.aggregate import cmd_aggregate, cmd_map, cmd_plan, cmd_reconcile, cmd_reduce
from bubbly_metrics.cli.common import PROG
from bubbly_metrics.cli.engagement import cmd_engagement
from bubbly_metrics.cli.exports import cmd_export, cmd_exports, cmd_gaps, cmd_sample

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
