"""What the stack is configured by: ``StackConfig``, read from CDK context, and its checks.

``deploy/app.py`` reads it with ``StackConfig.from_context(app.node)``; ``deploy/stack.py`` builds
the stack from it.  ``ConfigError`` is every wrong or missing context value.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import Environment
from aws_cdk import aws_logs as logs

from deploy.build_bundle import DEFAULT_OUT

# Aggregator sizing.  The scan streams the export: each data file is read in 8 MiB compressed
# chunks and decoded in 16 MiB batches, a few files at a time (one per vCPU, at most 4), and
# only the narrow per-(date, app, user) summary is kept -- never the export.  Memory is
# therefore ~2 files in flight (~100 MiB) + the runtime with Polars/boto3 loaded (~150 MiB) +
# the per-user summary, which grows with distinct (day, app, user) triples: a 455-day backfill
# at 10,000 daily users per app is ~4.5M rows, a few hundred MiB (measured peaks: see
# docs/performance.md).  3008 MiB leaves ample headroom for the "typical" 10 GB table of
# docs/operations.md, and it is the largest size every account can set without a quota
# request.  CPU is what the scan needs most: Lambda gives ~1.7 vCPU at 3008 MiB (1 vCPU at
# 1769 MiB), and the price per GB-second is flat, so more memory costs about the same for
# CPU-bound work while finishing sooner.  Timeout: the daily incremental run takes seconds; a
# backfill of a 10 GB table is a few minutes of scan (see docs/performance.md) plus a few
# hundred BatchWriteItem calls, so Lambda's maximum of 900 s leaves headroom, and a timed-out
# run wastes all its work (5 minutes was too tight for large tables).
DEFAULT_AGGREGATOR_MEMORY_MB = 3008
DEFAULT_AGGREGATOR_TIMEOUT_S = 900
DEFAULT_AGGREGATOR_RESERVED_CONCURRENCY = 5  # see StackConfig's aggregatorReservedConcurrency

_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,46}$")  # 47 + len("-AggregatorLambda") = 64
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_TABLE_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):dynamodb:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"table/(?P<name>[A-Za-z0-9_.-]{3,255})$"
)
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")
_R = logs.RetentionDays
RETENTION = {  # the retention periods CloudWatch Logs accepts, in days
    1: _R.ONE_DAY,
    3: _R.THREE_DAYS,
    5: _R.FIVE_DAYS,
    7: _R.ONE_WEEK,
    14: _R.TWO_WEEKS,
    30: _R.ONE_MONTH,
    60: _R.TWO_MONTHS,
    90: _R.THREE_MONTHS,
    120: _R.FOUR_MONTHS,
    150: _R.FIVE_MONTHS,
    180: _R.SIX_MONTHS,
    365: _R.ONE_YEAR,
    400: _R.THIRTEEN_MONTHS,
    545: _R.EIGHTEEN_MONTHS,
    731: _R.TWO_YEARS,
    1096: _R.THREE_YEARS,
    1827: _R.FIVE_YEARS,
    2192: _R.SIX_YEARS,
    2557: _R.SEVEN_YEARS,
    2922: _R.EIGHT_YEARS,
    3288: _R.NINE_YEARS,
    3653: _R.TEN_YEARS,
}


class ConfigError(ValueError):
    """CDK context is missing or invalid."""


def context_int(value: Any, key: str, low: int, high: int) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise ConfigError(f"context {key} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"context {key} must be between {low} and {high}, got {number}")
    return number


def _context_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise ConfigError(f"context {key} must be true or false, got {value!r}")


@dataclass(frozen=True)
class StackConfig:
    """Everything the stack is configured by; ``from_context`` reads it from CDK context.

    Context keys (``cdk deploy -c key=value``, or ``"context"`` in ``cdk.json``):

    ``mainTable`` (required)
        The main table's name or ARN.  It is referenced, never created.  An ARN fixes the
        region (and account, unless ``account`` is given).
    ``stackName`` (default ``BubblyAnalytics``)
        Also the prefix of ``<stackName>-ExportLambda``, ``-AggregatorLambda``,
        ``-AnalyticsTable`` and ``-AnalyticsDashboard``.
    ``region``, ``account``
        Default: from the ``mainTable`` ARN, else the CLI's ``CDK_DEFAULT_REGION`` /
        ``CDK_DEFAULT_ACCOUNT`` (your AWS profile).
    ``aggregatorMemoryMb`` (default 3008), ``aggregatorTimeoutSeconds`` (default 900)
        See the sizing note above ``DEFAULT_AGGREGATOR_MEMORY_MB``.
    ``s3Prefix`` (default ``exports/``), ``logRetentionDays`` (default 90)
    ``bundleDir`` (default ``deploy/.bundle/lambda``)
        The Lambda code built by ``deploy/build_bundle.py``.
    ``placeholderCode`` (default false)
        Use a tiny stub instead of the bundle, so the stack synthesises without building it
        (tests, reviews).  Never deploy it: its handlers only raise.
    ``alarmTopicArn`` (optional)
        An existing SNS topic notified when the Aggregator errors or a day is late.
    ``lookbackDays`` (default 7, 1-35)
        How many days the Export Lambda's daily run looks back for days missing from the
        ledger (each gets its incremental export).  Point-in-time recovery reaches 35 days.
    ``latenessHour`` (default 6, 3-23)
        The UTC hour by which yesterday must be aggregated; then the lateness check runs and
        the lateness alarm goes off if a day of the look-back is still not aggregated.
    ``aggregatorReservedConcurrency`` (default 5, 0-100)
        Concurrent Aggregator invocations at most (and always available to it).  It is the one
        event-driven function: each ``manifest-summary.json`` written under the prefix invokes it,
        so without a cap a burst of such objects fans out unbounded.  A day needs one invocation
        (a catch-up after an outage, one per missed day); throttled events are retried by Lambda
        for up to 6 hours, not lost.  0 reserves nothing (an account whose concurrency quota is
        below 110 cannot reserve any: AWS keeps 100 unreserved).
    ``backfillFloorDate``, ``backfillMaxDays`` (default: the package's, 2025-01-17 and 800)
        The earliest backfill start and the longest backfill range (days) the Export and
        Aggregator Lambdas accept (``BACKFILL_FLOOR_DATE``, ``BACKFILL_MAX_DAYS``); an event's
        ``maxDays`` still overrides the maximum for one invocation.
    """

    main_table: str
    stack_name: str = "BubblyAnalytics"
    region: str | None = None
    account: str | None = None
    aggregator_memory_mb: int = DEFAULT_AGGREGATOR_MEMORY_MB
    aggregator_timeout_seconds: int = DEFAULT_AGGREGATOR_TIMEOUT_S
    s3_prefix: str = "exports/"
    log_retention_days: int = 90
    bundle_dir: Path = DEFAULT_OUT["lambda"]
    placeholder_code: bool = False
    alarm_topic_arn: str | None = None
    lookback_days: int = 7
    lateness_hour: int = 6
    aggregator_reserved_concurrency: int = DEFAULT_AGGREGATOR_RESERVED_CONCURRENCY
    backfill_floor_date: str | None = None
    backfill_max_days: int | None = None

    def __post_init__(self) -> None:
        if not _STACK_NAME.match(self.stack_name):
            raise ConfigError(
                f"context stackName must start with a letter and contain only letters, digits "
                f"and '-', at most 47 characters (function names are limited to 64), "
                f"got {self.stack_name!r}"
            )
        arn = _TABLE_ARN.match(self.main_table)
        if arn is None and not _TABLE_NAME.match(self.main_table):
            raise ConfigError(f"context mainTable must be a DynamoDB table name or table ARN, got {self.main_table!r}")
        if arn and self.region and arn["region"] != self.region:
            raise ConfigError(
                f"mainTable is in {arn['region']} but the stack deploys to {self.region}: the "
                "Export Lambda starts exports in its own region; deploy the stack to the table's"
            )
        if self.s3_prefix.startswith("/") or (self.s3_prefix and not self.s3_prefix.endswith("/")):
            raise ConfigError(f"context s3Prefix must be '' or end with '/' (like 'exports/'), got {self.s3_prefix!r}")
        if self.log_retention_days not in RETENTION:
            raise ConfigError(
                f"context logRetentionDays must be one of {sorted(RETENTION)}, got {self.log_retention_days}"
            )
        if self.backfill_floor_date is not None and not _is_floor_date(self.backfill_floor_date):
            raise ConfigError(
                "context backfillFloorDate must be a date YYYY-MM-DD from 2012 to 2100, "
                f"got {self.backfill_floor_date!r}"
            )
        if self.alarm_topic_arn and not _TOPIC_ARN.match(self.alarm_topic_arn):
            raise ConfigError(f"context alarmTopicArn must be an SNS topic ARN, got {self.alarm_topic_arn!r}")

    @classmethod
    def from_context(
        cls, node: Any, *, default_region: str | None = None, default_account: str | None = None
    ) -> StackConfig:
        """Read the config from a construct node's context (``app.node``)."""

        def get(key: str) -> Any:
            value = node.try_get_context(key)
            return None if value is None or value == "" else value

        main_table = get("mainTable")
        if main_table is None:
            raise ConfigError(
                "context mainTable is required: the main table's name or ARN, e.g. "
                "cdk deploy -c mainTable=arn:aws:dynamodb:eu-west-2:123456789012:table/Main"
            )
        arn = _TABLE_ARN.match(str(main_table))
        kwargs: dict[str, Any] = {
            "main_table": str(main_table),
            "region": get("region") or (arn["region"] if arn else None) or default_region,
            "account": get("account") or (arn["account"] if arn else None) or default_account,
        }
        if get("stackName") is not None:
            kwargs["stack_name"] = str(get("stackName"))
        if get("aggregatorMemoryMb") is not None:
            kwargs["aggregator_memory_mb"] = context_int(get("aggregatorMemoryMb"), "aggregatorMemoryMb", 128, 10240)
        if get("aggregatorTimeoutSeconds") is not None:
            kwargs["aggregator_timeout_seconds"] = context_int(
                get("aggregatorTimeoutSeconds"), "aggregatorTimeoutSeconds", 1, 900
            )
        s3_prefix = node.try_get_context("s3Prefix")  # '' is a valid prefix: the bucket root
        if s3_prefix is not None:
            kwargs["s3_prefix"] = str(s3_prefix)
        if get("logRetentionDays") is not None:
            kwargs["log_retention_days"] = context_int(get("logRetentionDays"), "logRetentionDays", 1, 3653)
        if get("bundleDir") is not None:
            kwargs["bundle_dir"] = Path(str(get("bundleDir")))
        if get("placeholderCode") is not None:
            kwargs["placeholder_code"] = _context_bool(get("placeholderCode"), "placeholderCode")
        if get("alarmTopicArn") is not None:
            kwargs["alarm_topic_arn"] = str(get("alarmTopicArn"))
        if get("lookbackDays") is not None:
            kwargs["lookback_days"] = context_int(get("lookbackDays"), "lookbackDays", 1, 35)
        if get("latenessHour") is not None:
            # After the 02:00 export and the 02:30 run: an hour earlier would page on every slow export.
            kwargs["lateness_hour"] = context_int(get("latenessHour"), "latenessHour", 3, 23)
        if get("aggregatorReservedConcurrency") is not None:
            kwargs["aggregator_reserved_concurrency"] = context_int(
                get("aggregatorReservedConcurrency"), "aggregatorReservedConcurrency", 0, 100
            )
        if get("backfillFloorDate") is not None:
            kwargs["backfill_floor_date"] = str(get("backfillFloorDate"))
        if get("backfillMaxDays") is not None:
            kwargs["backfill_max_days"] = context_int(get("backfillMaxDays"), "backfillMaxDays", 1, 36_500)
        if kwargs["region"] is None:
            raise ConfigError(
                "no region: pass -c region=<region>, give mainTable as an ARN, or configure a "
                "default region for the AWS CLI profile"
            )
        return cls(**kwargs)

    @property
    def main_table_is_arn(self) -> bool:
        """Whether ``main_table`` is an ARN (else a name in the stack's region and account)."""
        return _TABLE_ARN.match(self.main_table) is not None

    @property
    def log_retention(self) -> logs.RetentionDays:
        """``log_retention_days`` as CloudWatch Logs' retention, for every log group of the stack."""
        return RETENTION[self.log_retention_days]

    @property
    def environment(self) -> Environment:
        return Environment(account=self.account, region=self.region)

    @property
    def date_bounds_env(self) -> dict[str, str]:
        """``BACKFILL_FLOOR_DATE`` / ``BACKFILL_MAX_DAYS`` for the functions, when configured."""
        env = {}
        if self.backfill_floor_date is not None:
            env["BACKFILL_FLOOR_DATE"] = self.backfill_floor_date
        if self.backfill_max_days is not None:
            env["BACKFILL_MAX_DAYS"] = str(self.backfill_max_days)
        return env


def _is_floor_date(text: str) -> bool:
    # As bubbly_metrics.dates checks it (deploy/ does not import the package).
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return False
    try:
        return 2012 <= dt.date.fromisoformat(text).year <= 2100
    except ValueError:
        return False
