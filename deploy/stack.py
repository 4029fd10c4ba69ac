"""The analytics stack: export bucket, Export and Aggregator Lambdas, Analytics Table, schedules,
dashboard and an alarm (SPEC §9).  Configuration comes from CDK context; see ``StackConfig``.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import (
    Annotations,
    CfnOutput,
    Duration,
    Environment,
    RemovalPolicy,
    Stack,
)
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from deploy.build_bundle import DEFAULT_OUT, LAMBDA_ARCH, PYTHON_VERSION, BundleError, read_manifest
from deploy.nag import acknowledge, wildcard

METRICS_NAMESPACE = "BubblyClouds/Analytics"
METRIC_NAMES = ("ActiveUsers", "GamesPlayed", "PartiesCreated", "PartiesJoined")
ENGAGEMENT_METRIC_NAMES = ("WeeklyActiveUsers", "MonthlyActiveUsers", "Stickiness")
"""Per-App metrics the Aggregator publishes after each daily run (bubbly_metrics.engagement)."""
ANOMALY_METRICS = ("ActiveUsers", "GamesPlayed")
"""Metrics whose all-apps total (no dimension) the anomaly alarms watch."""
ANOMALY_STD_DEVS = 3
"""Band width of the anomaly alarms, in standard deviations (docs/operations.md)."""
EXPORT_HANDLER = "bubbly_metrics.handlers.export.lambda_handler"
AGGREGATOR_HANDLER = "bubbly_metrics.handlers.aggregator.lambda_handler"
RUNTIME = {"3.12": lambda_.Runtime.PYTHON_3_12, "3.13": lambda_.Runtime.PYTHON_3_13}[PYTHON_VERSION]

# Aggregator sizing.  The scan streams the export: each data file is read in 8 MiB compressed
# chunks and decoded in 16 MiB batches, a few files at a time (one per vCPU, at most 4), and
# only the narrow per-(date, app, user) summary is kept -- never the export.  Memory is
# therefore ~2 files in flight (~100 MiB) + the runtime with Polars/boto3 loaded (~150 MiB) +
# the per-user summary, which grows with distinct (day, app, user) triples: a 455-day backfill
# at 10,000 daily users per app is ~4.5M rows, a few hundred MiB.  Measured: a 2M-item export
# (312 MB gzip, 1.2 GB JSON) peaks at ~180 MB RSS.  3008 MiB leaves >5x headroom for the guide's
# "typical" 10 GB table, and it is the largest size every account can set without a quota
# request.  CPU is what the scan needs most: Lambda gives ~1.7 vCPU at 3008 MiB (1 vCPU at
# 1769 MiB), and the price per GB-second is flat, so more memory costs about the same for
# CPU-bound work while finishing sooner.  Timeout: the daily incremental run takes seconds; a
# backfill of a 10 GB table (~2.5 GB gzip, ~8x the measured export) is a few minutes of scan
# plus a few hundred BatchWriteItem calls, so Lambda's maximum of 900 s is ~3x headroom, and a
# timed-out run wastes all its work (the guide's 5 minutes was too tight for large tables).
DEFAULT_AGGREGATOR_MEMORY_MB = 3008
DEFAULT_AGGREGATOR_TIMEOUT_S = 900
DEFAULT_AGGREGATOR_RESERVED_CONCURRENCY = 5  # see StackConfig's aggregatorReservedConcurrency
# The Export Lambda only starts an export (one API call, boto3 only): the smallest sizes do.
EXPORT_MEMORY_MB = 256
EXPORT_TIMEOUT_S = 60

# What the Aggregator and the Reduce do to the Analytics Table: GetItem reads a day's ledger
# entry (consistently) before its flip, the rest as below.
TABLE_WRITER_ACTIONS = (
    "dynamodb:BatchWriteItem",
    "dynamodb:PutItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:Query",
)

# Reasons for the cdk-nag findings the stack keeps (deploy/nag.py).
PUT_METRIC_DATA_REASON = (
    "cloudwatch:PutMetricData has no resource-level permissions (Resource must be '*'); the statement "
    "is scoped by its cloudwatch:namespace condition to BubblyClouds/Analytics."
)
EXPORT_READS_REASON = (
    "Reads exports, whose object names DynamoDB chooses, under the export prefix only; the prefix's "
    "own key is included because s3fs probes a location with HeadObject on it and needs a 404."
)
RUNS_REASON = (
    "A distributed run's objects are named per run (distributed-runs/<execution>/...): writes and "
    "reads are scoped to the runs prefix."
)
RUNTIME_REASON = (
    f"The runtime is the Python the Lambda bundle is built for (deploy/build_bundle.py, Python "
    f"{PYTHON_VERSION}, with compiled wheels for it); moving to a newer runtime means rebuilding and "
    "testing the bundle for it, done on purpose, not by a lint."
)


def exports_read_arn(bucket: s3.IBucket, prefix: str) -> str:
    """The objects a reader of exports may get: everything under the prefix, and its own key."""
    return bucket.arn_for_objects(f"{prefix.rstrip('/')}*")


_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,46}$")  # 47 + len("-AggregatorLambda") = 64
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_TABLE_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):dynamodb:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"table/(?P<name>[A-Za-z0-9_.-]{3,255})$"
)
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")
_R = logs.RetentionDays
_RETENTION = {  # the retention periods CloudWatch Logs accepts, in days
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


def _context_int(value: Any, key: str, low: int, high: int) -> int:
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
        if self.log_retention_days not in _RETENTION:
            raise ConfigError(
                f"context logRetentionDays must be one of {sorted(_RETENTION)}, got {self.log_retention_days}"
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
            kwargs["aggregator_memory_mb"] = _context_int(get("aggregatorMemoryMb"), "aggregatorMemoryMb", 128, 10240)
        if get("aggregatorTimeoutSeconds") is not None:
            kwargs["aggregator_timeout_seconds"] = _context_int(
                get("aggregatorTimeoutSeconds"), "aggregatorTimeoutSeconds", 1, 900
            )
        s3_prefix = node.try_get_context("s3Prefix")  # '' is a valid prefix: the bucket root
        if s3_prefix is not None:
            kwargs["s3_prefix"] = str(s3_prefix)
        if get("logRetentionDays") is not None:
            kwargs["log_retention_days"] = _context_int(get("logRetentionDays"), "logRetentionDays", 1, 3653)
        if get("bundleDir") is not None:
            kwargs["bundle_dir"] = Path(str(get("bundleDir")))
        if get("placeholderCode") is not None:
            kwargs["placeholder_code"] = _context_bool(get("placeholderCode"), "placeholderCode")
        if get("alarmTopicArn") is not None:
            kwargs["alarm_topic_arn"] = str(get("alarmTopicArn"))
        if get("lookbackDays") is not None:
            kwargs["lookback_days"] = _context_int(get("lookbackDays"), "lookbackDays", 1, 35)
        if get("latenessHour") is not None:
            # After the 02:00 export and the 02:30 run: an hour earlier would page on every slow export.
            kwargs["lateness_hour"] = _context_int(get("latenessHour"), "latenessHour", 3, 23)
        if get("aggregatorReservedConcurrency") is not None:
            kwargs["aggregator_reserved_concurrency"] = _context_int(
                get("aggregatorReservedConcurrency"), "aggregatorReservedConcurrency", 0, 100
            )
        if get("backfillFloorDate") is not None:
            kwargs["backfill_floor_date"] = str(get("backfillFloorDate"))
        if get("backfillMaxDays") is not None:
            kwargs["backfill_max_days"] = _context_int(get("backfillMaxDays"), "backfillMaxDays", 1, 36_500)
        if kwargs["region"] is None:
            raise ConfigError(
                "no region: pass -c region=<region>, give mainTable as an ARN, or configure a "
                "default region for the AWS CLI profile"
            )
        return cls(**kwargs)

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
    import datetime as dt

    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return False
    try:
        return 2012 <= dt.date.fromisoformat(text).year <= 2100
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Lambda code

_PLACEHOLDER_HANDLER = '''"""Placeholder: the stack was synthesised with placeholderCode=true."""


def lambda_handler(event, context):
    raise RuntimeError(
        "placeholder code deployed: build the bundle (python deploy/build_bundle.py) "
        "and deploy without placeholderCode"
    )
'''


def _placeholder_dir() -> Path:
    """A tiny package with both handler modules; same content every time (stable asset hash)."""
    root = Path(tempfile.gettempdir()) / "bubbly-metrics-placeholder-code"
    files = {
        "bubbly_metrics/__init__.py": "",
        "bubbly_metrics/handlers/__init__.py": "",
        "bubbly_metrics/handlers/export.py": _PLACEHOLDER_HANDLER,
        "bubbly_metrics/handlers/aggregator.py": _PLACEHOLDER_HANDLER,
        "bubbly_metrics/handlers/distributed.py": f"{_PLACEHOLDER_HANDLER}\n\nmap_handler = reduce_handler = lambda_handler\n",  # noqa: E501
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return root


def lambda_code(config: StackConfig) -> lambda_.Code:
    """The asset both functions run: the built bundle, or the placeholder."""
    if config.placeholder_code:
        return lambda_.Code.from_asset(str(_placeholder_dir()))
    bundle = config.bundle_dir.resolve()
    if not bundle.is_dir():
        raise ConfigError(
            f"Lambda bundle not found at {bundle}: build it with `python deploy/build_bundle.py` "
            "(or synthesise without it: -c placeholderCode=true, never for deployment)"
        )
    try:
        manifest = read_manifest(bundle)
    except BundleError as exc:
        raise ConfigError(str(exc)) from None
    if (manifest.get("target"), manifest.get("arch"), manifest.get("python_version")) != (
        "lambda",
        LAMBDA_ARCH,
        PYTHON_VERSION,
    ):
        raise ConfigError(
            f"{bundle} was built for {manifest.get('target')}/{manifest.get('arch')}/python "
            f"{manifest.get('python_version')}, not for Lambda (arm64, Python {PYTHON_VERSION}): "
            "rebuild with `python deploy/build_bundle.py` (default --platform lambda)"
        )
    return lambda_.Code.from_asset(str(bundle))


# ---------------------------------------------------------------------------------------------


class AnalyticsStack(Stack):
    """Daily per-app analytics from exports of the main table (SPEC §9)."""

    def __init__(self, scope: Construct, config: StackConfig, **kwargs: Any) -> None:
        super().__init__(
            scope,
            config.stack_name,
            stack_name=config.stack_name,
            env=config.environment,
            description="bubbly_metrics: daily per-app analytics from exports of the main table",
            **kwargs,
        )
        self.config = config
        name = config.stack_name
        prefix = config.s3_prefix
        retention = _RETENTION[config.log_retention_days]

        arn = _TABLE_ARN.match(config.main_table)
        main_table = (
            dynamodb.Table.from_table_arn(self, "MainTable", config.main_table)
            if arn
            else dynamodb.Table.from_table_name(self, "MainTable", config.main_table)
        )

        # Server access logs of the export bucket: who read or wrote which export or run, and
        # when.  Kept as long as the functions' logs; SSE-S3 (access logs cannot be delivered to
        # a bucket with SSE-KMS by default), delivered under a bucket policy for S3's logging
        # service (@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy), so ACLs stay disabled.
        access_logs = s3.Bucket(
            self,
            "ExportBucketAccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id=f"expire-access-logs-after-{config.log_retention_days}-days",
                    enabled=True,
                    expiration=Duration.days(config.log_retention_days),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,  # as the export bucket: not emptied by CloudFormation
        )

        # Exports are read once, within the hour for the daily run and within the day for a
        # backfill; after that they are only cost (a full export is the size of the table).
        # Lifecycle expiry runs at most ~a day after the object's age passes 1 day.
        bucket = s3.Bucket(
            self,
            "ExportBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=False,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-exports-after-1-day",
                    enabled=True,
                    expiration=Duration.days(1),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            # Retained on stack deletion: CloudFormation cannot delete a non-empty bucket, and
            # emptying it needs a custom-resource Lambda with broad S3 rights.  Whatever is left
            # expires within two days anyway.
            removal_policy=RemovalPolicy.RETAIN,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="export-bucket/",
        )
        # S3 -> EventBridge notifications, set on the CloudFormation bucket itself: the
        # construct's `event_bridge_enabled` adds a custom-resource Lambda to do the same.
        cfn_bucket = bucket.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        cfn_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            event_bridge_configuration=s3.CfnBucket.EventBridgeConfigurationProperty(event_bridge_enabled=True)
        )

        # On-demand: a backfill writes hundreds of items at once, some near DynamoDB's 400 KB
        # item limit (1 WCU per KB written), then nothing until the next daily run writes a
        # handful.  The seed system's provisioned 1 WCU would throttle a backfill for hours;
        # provisioning for the burst would pay for idle capacity 23.9 hours a day.
        table = dynamodb.Table(
            self,
            "AnalyticsTable",
            table_name=f"{name}-AnalyticsTable",
            partition_key=dynamodb.Attribute(name="date", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="app", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute="expiresAt",
            # Point-in-time recovery: once main-table items expire, this table is the only
            # record of those days; a bad run or a mistaken delete must be recoverable.
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=RemovalPolicy.RETAIN,
        )

        code = lambda_code(config)

        def log_group(fn_name: str) -> logs.LogGroup:
            # The name Lambda would use by default, so the guide's `aws logs tail
            # /aws/lambda/<STACK_NAME>-...` works; destroyed with the stack so that a later
            # deployment of the same stack name can create it again.
            return logs.LogGroup(
                self,
                f"{fn_name}Logs",
                log_group_name=f"/aws/lambda/{name}-{fn_name}",
                retention=retention,
                removal_policy=RemovalPolicy.DESTROY,
            )

        def role(construct_id: str, description: str, logs_group: logs.LogGroup) -> iam.Role:
            # Explicit roles without AWSLambdaBasicExecutionRole (logs:* on every log group):
            # each function may write to its own log group only.
            r = iam.Role(
                self,
                construct_id,
                assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                description=description,
            )
            logs_group.grant_write(r)
            return r

        # --- Export Lambda ---------------------------------------------------------------
        export_logs = log_group("ExportLambda")
        export_role = role("ExportRole", "Starts exports of the main table to the export bucket", export_logs)
        export_role.add_to_policy(
            iam.PolicyStatement(
                sid="ExportMainTable",
                actions=["dynamodb:ExportTableToPointInTime"],
                resources=[main_table.table_arn],
            )
        )
        # DynamoDB writes the export with the caller's permissions: AWS lists s3:AbortMultipartUpload,
        # s3:PutObject and s3:PutObjectAcl on the destination ("Requesting a table export in
        # DynamoDB", S3 permissions).  Everything an export writes is under the S3Prefix the
        # request names ({prefix}{mode}/{timestamp}/AWSDynamoDB/...), and so is the backfill
        # request written beside it: writes are scoped to the prefix, so this role cannot
        # overwrite a distributed run's plan or anything else in the bucket.  PutObjectAcl grants
        # nothing more with ACLs disabled (BucketOwnerEnforced); it is there because AWS lists it.
        exports_objects = bucket.arn_for_objects(f"{prefix}*")
        export_role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteExports",
                actions=["s3:PutObject", "s3:AbortMultipartUpload", "s3:PutObjectAcl"],
                resources=[exports_objects],
            )
        )
        acknowledge(
            export_role,
            wildcard(export_role, exports_objects),
            "DynamoDB names an export's objects itself (AWSDynamoDB/<ExportId>/...): the role may write "
            "under the export prefix only, not the bucket.",
        )
        # The daily run reads the ledger (one Query on its partition of the Analytics Table) to
        # find missing days; the lateness check publishes how many there are.
        export_role.add_to_policy(
            iam.PolicyStatement(sid="ReadLedger", actions=["dynamodb:Query"], resources=[table.table_arn])
        )
        export_role.add_to_policy(
            iam.PolicyStatement(
                sid="PublishLateness",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
            )
        )
        acknowledge(export_role, wildcard(export_role, "*"), PUT_METRIC_DATA_REASON)
        export_fn = lambda_.Function(
            self,
            "ExportLambda",
            function_name=f"{name}-ExportLambda",
            description="Starts a DynamoDB export of the main table (daily incremental, or full)",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler=EXPORT_HANDLER,
            code=code,
            memory_size=EXPORT_MEMORY_MB,
            timeout=Duration.seconds(EXPORT_TIMEOUT_S),
            role=export_role,
            log_group=export_logs,
            environment={
                "TABLE_NAME": main_table.table_arn,
                "EXPORT_BUCKET": bucket.bucket_name,
                "S3_PREFIX": prefix,
                "ANALYTICS_TABLE": table.table_name,
                "LOOKBACK_DAYS": str(config.lookback_days),
                **config.date_bounds_env,
            },
        )

        # --- Aggregator Lambda -----------------------------------------------------------
        aggregator_logs = log_group("AggregatorLambda")
        aggregator_role = role(
            "AggregatorRole",
            "Reads exports, writes the Analytics Table, publishes BubblyClouds/Analytics metrics",
            aggregator_logs,
        )
        aggregator_role.add_to_policy(
            iam.PolicyStatement(sid="ListExports", actions=["s3:ListBucket"], resources=[bucket.bucket_arn])
        )
        # Reads are scoped to the exports: "{prefix}*" (not "{prefix}/*") because s3fs probes a
        # location by HeadObject on the prefix itself (the key "exports"), which must answer 404,
        # not 403 (tests/test_deploy.py exercises both against moto's IAM).
        exports_reads = exports_read_arn(bucket, prefix)
        aggregator_role.add_to_policy(
            iam.PolicyStatement(sid="ReadExports", actions=["s3:GetObject"], resources=[exports_reads])
        )
        acknowledge(aggregator_role, wildcard(aggregator_role, exports_reads), EXPORT_READS_REASON)
        # Each day is one TransactWriteItems (IAM authorises its conditional Put/Delete actions
        # as PutItem/DeleteItem: there is no TransactWriteItems action), the parts of split rows
        # staged and cleaned with BatchWriteItem; GetItem and Query read the day's ledger entry
        # and items first.  No Scan, no UpdateItem, no ConditionCheckItem, no table management.
        writes = iam.PolicyStatement(
            sid="WriteAnalyticsTable", actions=list(TABLE_WRITER_ACTIONS), resources=[table.table_arn]
        )
        aggregator_role.add_to_policy(writes)
        # PutMetricData has no resource-level permissions (Resource must be "*"); the
        # namespace condition is how it is scoped.
        aggregator_role.add_to_policy(
            iam.PolicyStatement(
                sid="PublishAnalyticsMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
            )
        )
        acknowledge(aggregator_role, wildcard(aggregator_role, "*"), PUT_METRIC_DATA_REASON)
        aggregator_fn = lambda_.Function(
            self,
            "AggregatorLambda",
            function_name=f"{name}-AggregatorLambda",
            description="Aggregates the latest export into the Analytics Table and CloudWatch",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler=AGGREGATOR_HANDLER,
            code=code,
            memory_size=config.aggregator_memory_mb,
            timeout=Duration.seconds(config.aggregator_timeout_seconds),
            role=aggregator_role,
            log_group=aggregator_logs,
            # The one event-driven function (every manifest-summary.json invokes it): capped,
            # see StackConfig.  None: unreserved.
            reserved_concurrent_executions=config.aggregator_reserved_concurrency or None,
            environment={
                "EXPORT_BUCKET": bucket.bucket_name,
                "ANALYTICS_TABLE": table.table_name,
                "S3_PREFIX": prefix,
                **config.date_bounds_env,
                # Allocator settings for the scan (docs/performance.md): glibc heaps
                # padded as the CLI pads them, large buffers kept in the heap, Polars' jemalloc
                # keeping freed pages 5 s.  Paired, 2M items: CPU 8-14% lower (6 of 6 rounds), RSS +60-80 MB.
                "MALLOC_TOP_PAD_": str(32 << 20),
                "MALLOC_MMAP_THRESHOLD_": str(64 << 20),
                "_RJEM_MALLOC_CONF": "dirty_decay_ms:5000,muzzy_decay_ms:5000",
            },
        )

        # --- Distributed backfill (deploy/distributed.py, docs/scale.md) -------------------
        from deploy.distributed import DistributedBackfill

        self.distributed = DistributedBackfill(
            self, "DistributedBackfill", name=name, code=code, runtime=RUNTIME, bucket=bucket,
            exports_prefix=prefix, table_arn=table.table_arn, table_name=table.table_name, aggregator=aggregator_fn,
            reduce_memory_mb=config.aggregator_memory_mb, retention=retention, metrics_namespace=METRICS_NAMESPACE,
        )  # fmt: skip

        for fn in (export_fn, aggregator_fn, self.distributed.map_fn, self.distributed.reduce_fn):
            acknowledge(fn, "AwsSolutions-L1", RUNTIME_REASON)

        # --- Schedules (EventBridge cron is in UTC) ---------------------------------------
        incremental = events.RuleTargetInput.from_object({"mode": "incremental"})
        events.Rule(
            self,
            "ExportSchedule",
            rule_name=f"{name}-ExportSchedule",
            description="Daily incremental exports of yesterday and any missing day, 02:00 UTC",
            schedule=events.Schedule.cron(minute="0", hour="2"),
            targets=[targets.LambdaFunction(export_fn, event=incremental)],
        )
        events.Rule(
            self,
            "AggregatorSchedule",
            rule_name=f"{name}-AggregatorSchedule",
            description="Safety net: aggregates yesterday unless done or its export is still running, 02:30 UTC",
            schedule=events.Schedule.cron(minute="30", hour="2"),
            targets=[targets.LambdaFunction(aggregator_fn, event=incremental)],
        )
        # An export is aggregated when it completes: DynamoDB writes manifest-summary.json last.
        events.Rule(
            self,
            "ExportCompleted",
            rule_name=f"{name}-ExportCompleted",
            description="Aggregates an export when its manifest-summary.json is written",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [bucket.bucket_name]},
                    "object": {"key": events.Match.wildcard(f"{prefix}*AWSDynamoDB/*/manifest-summary.json")},
                },
            ),
            targets=[targets.LambdaFunction(aggregator_fn)],
        )
        events.Rule(
            self,
            "LatenessCheck",
            rule_name=f"{name}-LatenessCheck",
            description=f"Publishes how many recent days are not aggregated, {config.lateness_hour:02d}:00 UTC",
            schedule=events.Schedule.cron(minute="0", hour=str(config.lateness_hour)),
            targets=[
                targets.LambdaFunction(export_fn, event=events.RuleTargetInput.from_object({"check": "lateness"}))
            ],
        )

        # --- Dashboard ------------------------------------------------------------------
        # One SEARCH per metric: every App that ever published shows up without redeploying.
        # Datums are stamped at 00:00 UTC of their day, so a one-day period holds that day's
        # value.  Maximum, not Sum: CloudWatch cannot overwrite a datum, so a re-run (which the
        # guide says is safe) adds a second, equal sample that Sum would double.
        def widget(metric: str) -> cloudwatch.GraphWidget:
            return cloudwatch.GraphWidget(
                title=f"{metric} by App (daily)",
                width=12,
                height=6,
                left=[
                    cloudwatch.MathExpression(
                        expression=(f"SEARCH('{{{METRICS_NAMESPACE},App}} MetricName=\"{metric}\"', 'Maximum', 86400)"),
                        using_metrics={},
                        period=Duration.days(1),
                        label="",
                    )
                ],
                left_y_axis=cloudwatch.YAxisProps(min=0, show_units=False),
                legend_position=cloudwatch.LegendPosition.BOTTOM,
            )

        widgets: list[cloudwatch.IWidget] = [widget(m) for m in (*METRIC_NAMES, *ENGAGEMENT_METRIC_NAMES)]

        # --- Anomaly alarms ---------------------------------------------------------------
        # On the all-apps totals the Aggregator publishes with no dimension (one series, so an
        # App that appears after deployment is in it from its first day; an alarm cannot take a
        # SEARCH).  A datum a day: period one day, Maximum (a re-run adds an equal sample).  One
        # day outside the band alarms (1 of 1): each datapoint is a whole day, waiting for a
        # second would page a day late.  3 standard deviations, not the default 2: at 2 a
        # normal day falls outside about one time in twenty, i.e. a false page every few weeks;
        # what this is for (a day's data lost or counted twice, an outage, a bot surge) moves
        # the total far more.  Missing days are not breaching: the lateness alarm owns them.
        anomalies = []
        for metric_name in ANOMALY_METRICS:
            anomalies.append(
                cloudwatch.AnomalyDetectionAlarm(
                    self,
                    f"{metric_name}AnomalyAlarm",
                    alarm_name=f"{name}-{metric_name}OutsideBand",
                    alarm_description=(
                        f"Yesterday's {metric_name} over all apps is outside its expected band "
                        f"({ANOMALY_STD_DEVS} standard deviations). See docs/operations.md, "
                        '"When an anomaly alarm fires".'
                    ),
                    metric=cloudwatch.Metric(
                        namespace=METRICS_NAMESPACE,
                        metric_name=metric_name,
                        statistic="Maximum",
                        period=Duration.days(1),
                    ),
                    std_devs=ANOMALY_STD_DEVS,
                    evaluation_periods=1,
                    datapoints_to_alarm=1,
                    comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_LOWER_OR_GREATER_THAN_UPPER_THRESHOLD,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                )
            )
        widgets += [
            cloudwatch.AlarmWidget(
                alarm=each,
                title=f"{metric_name}, all apps, and its expected band",
                width=12,
                height=6,
                left_y_axis=cloudwatch.YAxisProps(min=0, show_units=False),
            )
            for metric_name, each in zip(ANOMALY_METRICS, anomalies, strict=True)
        ]
        cloudwatch.Dashboard(
            self,
            "AnalyticsDashboard",
            dashboard_name=f"{name}-AnalyticsDashboard",
            default_interval=Duration.days(90),
            widgets=[widgets[i : i + 2] for i in range(0, len(widgets), 2)],
        )

        # --- Alarms ---------------------------------------------------------------------
        # Each goes off on the first datum at or over 1; no data is not a breach.
        def alarm(construct_id: str, alarm_name: str, description: str, metric: cloudwatch.IMetric) -> cloudwatch.Alarm:
            return cloudwatch.Alarm(
                self,
                construct_id,
                alarm_name=f"{name}-{alarm_name}",
                alarm_description=description,
                metric=metric,
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )

        # Any failed Aggregator invocation (error, timeout, out of memory) -- including the
        # automatic retries of the scheduled run -- means a day may be missing.
        errors = alarm(
            "AggregatorErrorsAlarm",
            "AggregatorErrors",
            f"{name}-AggregatorLambda failed: a day of analytics may be missing. "
            f"Check /aws/lambda/{name}-AggregatorLambda and re-run the day.",
            aggregator_fn.metric_errors(period=Duration.minutes(5), statistic="Sum"),
        )
        # Lateness, not slowness: a slow export is aggregated when it completes, a missed day is
        # re-exported by the next daily run; what needs a person is a day still missing at the
        # lateness hour.  The check publishes one datum a day; between checks there is no data,
        # which is not a breach, so the alarm fires once per late check.
        lateness = alarm(
            "LatenessAlarm",
            "DaysNotAggregated",
            f"A day of analytics is still not aggregated at {config.lateness_hour:02d}:00 UTC. "
            f"List the days with `python -m bubbly_metrics gaps --analytics-table {name}-AnalyticsTable`; "
            f"see /aws/lambda/{name}-ExportLambda and -AggregatorLambda.",
            cloudwatch.Metric(
                namespace=METRICS_NAMESPACE,
                metric_name="DaysNotAggregated",
                statistic="Maximum",
                period=Duration.hours(1),
            ),
        )
        # A distributed backfill that failed (a batch past its retries, the reduce, a timeout)
        # wrote nothing: its days keep their old numbers, and days older than the look-back
        # are not watched by the lateness alarm.  (An execution aborted by hand pages no one.)
        machine = self.distributed.state_machine
        backfill_failed = alarm(
            "DistributedBackfillFailedAlarm",
            "DistributedBackfillFailed",
            f"A distributed backfill ({name}-DistributedBackfill) failed or timed out: nothing was written. "
            "See the execution's events, fix the cause, and start the backfill again "
            '({"mode": "backfill", "engine": "distributed"}); docs/scale.md.',
            cloudwatch.MathExpression(
                expression="failed + timedOut",
                using_metrics={
                    "failed": machine.metric_failed(period=Duration.minutes(5)),
                    "timedOut": machine.metric_timed_out(period=Duration.minutes(5)),
                },
                period=Duration.minutes(5),
            ),
        )
        if config.alarm_topic_arn:
            topic = sns.Topic.from_topic_arn(self, "AlarmTopic", config.alarm_topic_arn)
            for each in (errors, lateness, backfill_failed, *anomalies):
                each.add_alarm_action(cloudwatch_actions.SnsAction(topic))

        if config.placeholder_code:
            Annotations.of(self).add_warning_v2(
                "bubbly:placeholder-code",
                "Synthesised with placeholderCode=true: both Lambdas run a stub that only raises. "
                "Do not deploy this; build the bundle with `python deploy/build_bundle.py`.",
            )

        for key, value, description in (
            ("ExportBucketName", bucket.bucket_name, "Export bucket (exports expire after 1 day)"),
            ("ExportLambdaName", export_fn.function_name, "Export Lambda"),
            ("AggregatorLambdaName", aggregator_fn.function_name, "Aggregator Lambda"),
            ("AnalyticsTableName", table.table_name, "Analytics Table"),
            ("DashboardName", f"{name}-AnalyticsDashboard", "CloudWatch dashboard"),
        ):
            CfnOutput(self, key, value=value, description=description)

        self.main_table_arn = main_table.table_arn
        self.bucket = bucket
        self.table = table
        self.export_fn = export_fn
        self.aggregator_fn = aggregator_fn
