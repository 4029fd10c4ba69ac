"""The analytics stack: export bucket, Export and Aggregator Lambdas, Analytics Table, schedules,
dashboard and alarms (docs/rules.md#deploy).  Configuration comes from CDK context; see
``deploy/config.py``'s ``StackConfig``.

``AnalyticsStack`` is wiring only, one method a part: storage (bucket, table), the Export and
Aggregator functions (``deploy/functions.py`` builds every function), the distributed backfill
(``deploy/distributed.py``), schedules, the dashboard and the alarms.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Annotations, CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from deploy.config import StackConfig
from deploy.distributed import DistributedBackfill
from deploy.functions import FunctionBuilder, lambda_code
from deploy.nag import acknowledge, wildcard
from deploy.permissions import (
    EXPORT_READS_REASON,
    METRICS_NAMESPACE,
    PUT_METRIC_DATA_REASON,
    TABLE_WRITER_ACTIONS,
    exports_read_arn,
    publish_metrics,
)

# = bubbly_metrics.metrics.METRIC_NAMES (deploy/ does not import the package: it loads Polars).
METRIC_NAMES = ("ActiveUsers", "GamesPlayed", "PartiesCreated", "PartiesJoined")
ENGAGEMENT_METRIC_NAMES = ("WeeklyActiveUsers", "MonthlyActiveUsers", "Stickiness")
"""Per-App metrics the Aggregator publishes after each daily run (bubbly_metrics.engagement)."""
ANOMALY_METRICS = ("ActiveUsers", "GamesPlayed")
"""Metrics whose all-apps total (no dimension) the anomaly alarms watch."""
ANOMALY_STD_DEVS = 3
"""Band width of the anomaly alarms, in standard deviations (docs/operations.md)."""
EXPORT_HANDLER = "bubbly_metrics.handlers.export.lambda_handler"
AGGREGATOR_HANDLER = "bubbly_metrics.handlers.aggregator.lambda_handler"
# The Export Lambda only starts an export (one API call, boto3 only): the smallest sizes do.
# The Aggregator's sizes are configured (deploy/config.py: the sizing note).
EXPORT_MEMORY_MB = 256
EXPORT_TIMEOUT_S = 60


class AnalyticsStack(Stack):
    """Daily per-app analytics from exports of the main table (docs/rules.md#deploy)."""

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
        self._function = FunctionBuilder(config.stack_name, lambda_code(config), config.log_retention)
        main_table = (
            dynamodb.Table.from_table_arn(self, "MainTable", config.main_table)
            if config.main_table_is_arn
            else dynamodb.Table.from_table_name(self, "MainTable", config.main_table)
        )
        self.main_table_arn = main_table.table_arn
        self.bucket = self._export_bucket()
        self.table = self._analytics_table()
        self.export_fn = self._export_function(main_table)
        self.aggregator_fn = self._aggregator_function()
        self.distributed = self._distributed_backfill()
        self._schedules()
        anomalies = self._anomaly_alarms()
        self._dashboard(anomalies)
        self._alarms(anomalies)
        if config.placeholder_code:
            Annotations.of(self).add_warning_v2(
                "bubbly:placeholder-code",
                "Synthesised with placeholderCode=true: both Lambdas run a stub that only raises. "
                "Do not deploy this; build the bundle with `python deploy/build_bundle.py`.",
            )
        self._outputs()

    # --- Storage ----------------------------------------------------------------------------

    def _access_log_bucket(self) -> s3.Bucket:
        """The bucket the export bucket's server access logs go to."""
        config = self.config
        # Server access logs of the export bucket: who read or wrote which export or run, and
        # when.  Kept as long as the functions' logs; SSE-S3 (access logs cannot be delivered to
        # a bucket with SSE-KMS by default), delivered under a bucket policy for S3's logging
        # service (@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy), so ACLs stay disabled.
        return s3.Bucket(
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

    def _export_bucket(self) -> s3.Bucket:
        """The bucket exports (and distributed runs) are written to; it sends events to EventBridge."""
        access_logs = self._access_log_bucket()
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
        return bucket

    def _analytics_table(self) -> dynamodb.Table:
        """The Analytics Table (docs/rules.md#analytics-table)."""
        # On-demand: a backfill writes hundreds of items at once, some near DynamoDB's 400 KB
        # item limit (1 WCU per KB written), then nothing until the next daily run writes a
        # handful.  The seed system's provisioned 1 WCU would throttle a backfill for hours;
        # provisioning for the burst would pay for idle capacity 23.9 hours a day.
        return dynamodb.Table(
            self,
            "AnalyticsTable",
            table_name=f"{self.config.stack_name}-AnalyticsTable",
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

    # --- Export and Aggregator Lambdas ------------------------------------------------------

    def _export_function(self, main_table: dynamodb.ITable) -> lambda_.Function:
        """The Export Lambda: starts the daily incremental exports (or a full one), checks lateness."""
        config, bucket, prefix = self.config, self.bucket, self.config.s3_prefix
        # DynamoDB writes the export with the caller's permissions: AWS lists s3:AbortMultipartUpload,
        # s3:PutObject and s3:PutObjectAcl on the destination ("Requesting a table export in
        # DynamoDB", S3 permissions).  Everything an export writes is under the S3Prefix the
        # request names ({prefix}{mode}/{timestamp}/AWSDynamoDB/...), and so is the backfill
        # request written beside it: writes are scoped to the prefix, so this role cannot
        # overwrite a distributed run's plan or anything else in the bucket.  PutObjectAcl grants
        # nothing more with ACLs disabled (BucketOwnerEnforced); it is there because AWS lists it.
        exports_objects = bucket.arn_for_objects(f"{prefix}*")
        export_fn = self._function(
            self,
            "ExportLambda",
            role_id="ExportRole",
            role_description="Starts exports of the main table to the export bucket",
            statements=[
                iam.PolicyStatement(
                    sid="ExportMainTable",
                    actions=["dynamodb:ExportTableToPointInTime"],
                    resources=[main_table.table_arn],
                ),
                iam.PolicyStatement(
                    sid="WriteExports",
                    actions=["s3:PutObject", "s3:AbortMultipartUpload", "s3:PutObjectAcl"],
                    resources=[exports_objects],
                ),
                # The daily run reads the ledger (one Query on its partition of the Analytics
                # Table) to find missing days; the lateness check publishes how many there are.
                iam.PolicyStatement(sid="ReadLedger", actions=["dynamodb:Query"], resources=[self.table.table_arn]),
                publish_metrics("PublishLateness"),
            ],
            description="Starts a DynamoDB export of the main table (daily incremental, or full)",
            handler=EXPORT_HANDLER,
            memory_mb=EXPORT_MEMORY_MB,
            timeout_s=EXPORT_TIMEOUT_S,
            environment={
                "TABLE_NAME": main_table.table_arn,
                "EXPORT_BUCKET": bucket.bucket_name,
                "S3_PREFIX": prefix,
                "ANALYTICS_TABLE": self.table.table_name,
                "LOOKBACK_DAYS": str(config.lookback_days),
                **config.date_bounds_env,
            },
        )
        role = export_fn.role
        assert role is not None
        acknowledge(
            role,
            wildcard(role, exports_objects),
            "DynamoDB names an export's objects itself (AWSDynamoDB/<ExportId>/...): the role may write "
            "under the export prefix only, not the bucket.",
        )
        acknowledge(role, wildcard(role, "*"), PUT_METRIC_DATA_REASON)
        return export_fn

    def _aggregator_function(self) -> lambda_.Function:
        """The Aggregator Lambda: aggregates an export into the Analytics Table and CloudWatch."""
        config, bucket, prefix = self.config, self.bucket, self.config.s3_prefix
        # Reads are scoped to the exports: "{prefix}*" (not "{prefix}/*") because s3fs probes a
        # location by HeadObject on the prefix itself (the key "exports"), which must answer 404,
        # not 403 (tests/test_deploy.py exercises both against moto's IAM).
        exports_reads = exports_read_arn(bucket, prefix)
        aggregator_fn = self._function(
            self,
            "AggregatorLambda",
            role_id="AggregatorRole",
            role_description="Reads exports, writes the Analytics Table, publishes BubblyClouds/Analytics metrics",
            statements=[
                iam.PolicyStatement(sid="ListExports", actions=["s3:ListBucket"], resources=[bucket.bucket_arn]),
                iam.PolicyStatement(sid="ReadExports", actions=["s3:GetObject"], resources=[exports_reads]),
                # Each day is one TransactWriteItems (IAM authorises its conditional Put/Delete
                # actions as PutItem/DeleteItem: there is no TransactWriteItems action), the
                # parts of split rows staged and cleaned with BatchWriteItem; GetItem and Query
                # read the day's ledger entry and items first.  No Scan, no UpdateItem, no
                # ConditionCheckItem, no table management.
                iam.PolicyStatement(
                    sid="WriteAnalyticsTable", actions=list(TABLE_WRITER_ACTIONS), resources=[self.table.table_arn]
                ),
                publish_metrics("PublishAnalyticsMetrics"),
            ],
            description="Aggregates the latest export into the Analytics Table and CloudWatch",
            handler=AGGREGATOR_HANDLER,
            memory_mb=config.aggregator_memory_mb,
            timeout_s=config.aggregator_timeout_seconds,
            # The one event-driven function (every manifest-summary.json invokes it): capped,
            # see StackConfig.  None: unreserved.
            reserved_concurrency=config.aggregator_reserved_concurrency or None,
            environment={
                "EXPORT_BUCKET": bucket.bucket_name,
                "ANALYTICS_TABLE": self.table.table_name,
                "S3_PREFIX": prefix,
                **config.date_bounds_env,
                # Allocator settings for the scan (docs/performance.md has the measurements):
                # glibc heaps padded as the CLI pads them, large buffers kept in the heap,
                # Polars' jemalloc keeping freed pages 5 s.
                "MALLOC_TOP_PAD_": str(32 << 20),
                "MALLOC_MMAP_THRESHOLD_": str(64 << 20),
                "_RJEM_MALLOC_CONF": "dirty_decay_ms:5000,muzzy_decay_ms:5000",
            },
        )
        role = aggregator_fn.role
        assert role is not None
        acknowledge(role, wildcard(role, exports_reads), EXPORT_READS_REASON)
        acknowledge(role, wildcard(role, "*"), PUT_METRIC_DATA_REASON)
        return aggregator_fn

    def _distributed_backfill(self) -> DistributedBackfill:
        """The distributed backfill's Map and Reduce Lambdas and state machine (docs/scale.md)."""
        return DistributedBackfill(
            self,
            "DistributedBackfill",
            function=self._function,
            bucket=self.bucket,
            exports_prefix=self.config.s3_prefix,
            table=self.table,
            aggregator=self.aggregator_fn,
            reduce_memory_mb=self.config.aggregator_memory_mb,
        )

    # --- Schedules (EventBridge cron is in UTC) ---------------------------------------------

    def _schedules(self) -> None:
        """The daily export, the Aggregator's safety net, export completion and the lateness check."""
        name, config, bucket, prefix = self.config.stack_name, self.config, self.bucket, self.config.s3_prefix
        export_fn, aggregator_fn = self.export_fn, self.aggregator_fn
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

    # --- Anomaly alarms, dashboard and alarms ------------------------------------------------

    def _anomaly_alarms(self) -> list[cloudwatch.AnomalyDetectionAlarm]:
        """One anomaly-detection alarm per ``ANOMALY_METRICS``, on its all-apps total."""
        name = self.config.stack_name
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
        return anomalies

    def _dashboard(self, anomalies: list[cloudwatch.AnomalyDetectionAlarm]) -> None:
        """The dashboard: every metric by App, and each anomaly alarm with its band."""
        name = self.config.stack_name
        # One SEARCH per metric: every App that ever published shows up without redeploying.
        # Datums are stamped at 00:00 UTC of their day, so a one-day period holds that day's
        # value.  Maximum, not Sum: CloudWatch cannot overwrite a datum, so a re-run (which
        # docs/operations.md says is safe) adds a second, equal sample that Sum would double.
        widgets: list[cloudwatch.IWidget] = [_by_app(m) for m in (*METRIC_NAMES, *ENGAGEMENT_METRIC_NAMES)]
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

    def _alarms(self, anomalies: list[cloudwatch.AnomalyDetectionAlarm]) -> None:
        """Aggregator errors, days not aggregated, a failed distributed backfill; all to the topic."""
        name, config, aggregator_fn = self.config.stack_name, self.config, self.aggregator_fn
        alarm = self._alarm
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

    def _alarm(
        self, construct_id: str, alarm_name: str, description: str, metric: cloudwatch.IMetric
    ) -> cloudwatch.Alarm:
        """An alarm on the first datum at or over 1; no data is not a breach."""
        return cloudwatch.Alarm(
            self,
            construct_id,
            alarm_name=f"{self.config.stack_name}-{alarm_name}",
            alarm_description=description,
            metric=metric,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    # --- Outputs ------------------------------------------------------------------------------

    def _outputs(self) -> None:
        name, bucket, table = self.config.stack_name, self.bucket, self.table
        export_fn, aggregator_fn = self.export_fn, self.aggregator_fn
        for key, value, description in (
            ("ExportBucketName", bucket.bucket_name, "Export bucket (exports expire after 1 day)"),
            ("ExportLambdaName", export_fn.function_name, "Export Lambda"),
            ("AggregatorLambdaName", aggregator_fn.function_name, "Aggregator Lambda"),
            ("AnalyticsTableName", table.table_name, "Analytics Table"),
            ("DashboardName", f"{name}-AnalyticsDashboard", "CloudWatch dashboard"),
        ):
            CfnOutput(self, key, value=value, description=description)


def _by_app(metric: str) -> cloudwatch.GraphWidget:
    """The dashboard's graph of ``metric`` for every App (one SEARCH), a datum a day."""
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
