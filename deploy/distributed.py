"""The distributed backfill: a Step Functions Distributed Map over a run's batches, then a reduce.

The Aggregator plans the run (``bubbly_metrics.distributed.plan_run``: ``run.json`` and
``plan.json`` under ``s3://<bucket>/distributed-runs/<execution>/``) and starts this state
machine with ``{"run": "s3://…", "plan": {"Bucket": …, "Key": …}}``:

1. **Map** (Distributed, children STANDARD): ``ItemReader`` reads ``plan.json`` (a JSON array,
   one element per batch of data files, sized by the manifest's item counts); each child
   invokes the Map Lambda with ``{"run", "batch"}``.  ``MaxConcurrency`` is the context
   setting ``distributedMaxConcurrency`` (default 100); ``ToleratedFailurePercentage`` is 0 (a
   lost batch is a wrong number, so the run fails instead); throttling and Lambda service
   errors are retried with exponential backoff and full jitter, anything else twice (a batch is
   idempotent); results are discarded (the
   partials are in S3, and a Map's output is capped at 256 KB).
2. **Reduce**: the Reduce Lambda merges every partial and publishes, as the Aggregator does.

Why a plan rather than ``ItemReader`` ``JSONL`` over ``manifest-files.json`` with an
``ItemBatcher``: AWS supports both, but moto's interpreter, which executes this definition in
the tests, has neither (5.2.5: no ``ItemBatcher`` in its ASL grammar, ``InputType`` CSV/JSON
only); and the plan cuts batches by *item counts* where ``ItemBatcher`` counts files (or
bytes of the item list), so one plan object does what both would.  Runs expire with the
bucket's 1-day lifecycle rule, like exports.

Context keys (besides ``deploy/config.py``'s): ``distributedMaxConcurrency`` (1-10000, default
100), ``distributedMapMemoryMb`` (default 1769: one full vCPU, the unit the batches are sized
for; the Aggregator sizes batches from it).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import ArnFormat, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

# nag.acknowledge is looked up at call time: the tests build the stack without acknowledgments
# by replacing deploy.nag.acknowledge.
from deploy import nag
from deploy.config import context_int
from deploy.functions import FunctionBuilder
from deploy.nag import wildcard
from deploy.permissions import (
    EXPORT_READS_REASON,
    PUT_METRIC_DATA_REASON,
    RUNS_REASON,
    TABLE_WRITER_ACTIONS,
    exports_read_arn,
    publish_metrics,
)

MAP_HANDLER = "bubbly_metrics.handlers.distributed.map_handler"
REDUCE_HANDLER = "bubbly_metrics.handlers.distributed.reduce_handler"
RUNS_PREFIX = "distributed-runs/"  # = bubbly_metrics.distributed.RUNS_PREFIX (deploy/ does not import the package)
DEFAULT_MAX_CONCURRENCY = 100
DEFAULT_MAP_MEMORY_MB = 1769
# Lambda's maximum for both: a batch is planned for ~2 minutes (7x headroom for slow S3 or a
# cold start); the reduce merges and publishes the whole range, as the Aggregator does.
TIMEOUT_S = 900
_CONCURRENCY_RANGE = (1, 10_000)  # Distributed Map runs up to 10,000 children at once


class _NoFailureTolerated(sfn.DistributedMap):
    """A Distributed Map that states ``ToleratedFailurePercentage: 0``.

    0 is the service's default, and CDK leaves a 0 out of the definition; it is written here so
    that the rule (a lost batch is a wrong number: the run fails) is in the definition itself.
    """

    def to_state_json(self, query_language: sfn.QueryLanguage | None = None) -> Any:
        return {**super().to_state_json(query_language), "ToleratedFailurePercentage": 0}


class _PlanReader(sfn.S3JsonItemReader):
    """The Map's ItemReader (a run's ``plan.json``), allowed to read the runs prefix only.

    CDK's ``S3JsonItemReader`` grants ``s3:GetObject`` on the whole bucket (the key is only
    known at run time); the plan is always under ``distributed-runs/``.
    """

    def __init__(self, *, bucket: s3.IBucket, key: str, objects: str) -> None:
        super().__init__(bucket=bucket, key=key)
        self._objects = objects

    def provide_policy_statements(self) -> list[iam.PolicyStatement]:
        return [iam.PolicyStatement(actions=["s3:GetObject"], resources=[self._objects])]


class DistributedBackfill(Construct):
    """Map and Reduce Lambdas and the Standard state machine that runs them (see module doc).

    ``function`` is the stack's function builder; ``aggregator`` gets the rights to plan runs and
    start them, and the state machine's ARN.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        function: FunctionBuilder,
        bucket: s3.IBucket,
        exports_prefix: str,
        table: dynamodb.ITable,
        aggregator: lambda_.Function,
        reduce_memory_mb: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.max_concurrency = self._setting("distributedMaxConcurrency", DEFAULT_MAX_CONCURRENCY, *_CONCURRENCY_RANGE)
        map_memory = self._setting("distributedMapMemoryMb", DEFAULT_MAP_MEMORY_MB, 128, 10240)
        self._name = function.stack_name
        self._bucket = bucket
        self._runs = bucket.arn_for_objects(f"{RUNS_PREFIX}*")
        self.map_fn, self.reduce_fn = self._functions(function, exports_prefix, table, map_memory, reduce_memory_mb)
        self.state_machine = self._state_machine(self._definition(), function.retention)
        self._acknowledge_machine()
        self._let_aggregator_start(aggregator, map_memory)

    def _setting(self, key: str, default: int, low: int, high: int) -> int:
        """The integer context setting ``key``, ``default`` when it is not set."""
        value = self.node.try_get_context(key)
        if value is None or value == "":
            return default
        return context_int(value, key, low, high)

    def _functions(
        self,
        function: FunctionBuilder,
        exports_prefix: str,
        table: dynamodb.ITable,
        map_memory: int,
        reduce_memory: int,
    ) -> tuple[lambda_.Function, lambda_.Function]:
        """The Map Lambda (one batch) and the Reduce Lambda (merge, write, publish)."""
        bucket, runs = self._bucket, self._runs
        exports_reads = exports_read_arn(bucket, exports_prefix)
        # The handlers refuse a run folder anywhere but s3://{EXPORT_BUCKET}/{RUNS_PREFIX}<name>.
        run_env = {"EXPORT_BUCKET": bucket.bucket_name, "RUNS_PREFIX": RUNS_PREFIX}
        # Both read the export (its summary and manifest: s3fs lists the prefix) and the run.
        reads = [
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn]),
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[exports_reads, runs]),
        ]
        map_fn = function(
            self,
            "MapLambda",
            role_id="MapLambdaRole",
            statements=[
                *reads,
                # Partials of large batches go up in parts (s3fs: past 50 MB): PutObject covers
                # the multipart calls; AbortMultipartUpload cleans up after a failed one.
                iam.PolicyStatement(actions=["s3:PutObject", "s3:AbortMultipartUpload"], resources=[runs]),
            ],
            description="Distributed backfill: one batch of data files",
            handler=MAP_HANDLER,
            memory_mb=map_memory,
            timeout_s=TIMEOUT_S,
            environment=run_env,
        )
        reduce_fn = function(
            self,
            "ReduceLambda",
            role_id="ReduceLambdaRole",
            statements=[
                *reads,
                iam.PolicyStatement(actions=list(TABLE_WRITER_ACTIONS), resources=[table.table_arn]),
                publish_metrics(),
            ],
            description="Distributed backfill: merges the partials, writes the Analytics Table and metrics",
            handler=REDUCE_HANDLER,
            memory_mb=reduce_memory,
            timeout_s=TIMEOUT_S,
            environment=run_env | {"ANALYTICS_TABLE": table.table_name},
        )
        for fn in (map_fn, reduce_fn):
            role = fn.role
            assert role is not None
            nag.acknowledge(role, wildcard(role, exports_reads), EXPORT_READS_REASON)
            nag.acknowledge(role, wildcard(role, runs), RUNS_REASON)
            if fn is reduce_fn:
                nag.acknowledge(role, wildcard(role, "*"), PUT_METRIC_DATA_REASON)
        return map_fn, reduce_fn

    def _definition(self) -> sfn.IChainable:
        """The Distributed Map over the plan's batches, then the reduce."""
        summarise = _retried(
            tasks.LambdaInvoke(
                self,
                "SummariseBatch",
                lambda_function=self.map_fn,
                payload_response_only=True,
                retry_on_service_exceptions=False,
            )
        )
        # A batch is idempotent (it rewrites the same partial): any other failure -- a 5xx from
        # S3, a crashed sandbox, a timeout -- gets two more tries before it fails the run.
        summarise.add_retry(errors=["States.ALL"], interval=Duration.seconds(1), max_attempts=2, backoff_rate=2)
        batches = _NoFailureTolerated(
            self,
            "Batches",
            comment="One child per batch of data files of the run's plan.json",
            item_reader=_PlanReader(bucket=self._bucket, key=sfn.JsonPath.string_at("$.plan.Key"), objects=self._runs),
            item_selector={
                "run": sfn.JsonPath.string_at("$.run"),
                "batch": sfn.JsonPath.string_at("$$.Map.Item.Value"),
            },
            max_concurrency=self.max_concurrency,
            tolerated_failure_percentage=0,
            map_execution_type=sfn.StateMachineType.STANDARD,
            result_path=sfn.JsonPath.DISCARD,
        )
        batches.item_processor(summarise)
        reduce = _retried(
            tasks.LambdaInvoke(
                self,
                "Reduce",
                lambda_function=self.reduce_fn,
                payload=sfn.TaskInput.from_object({"run": sfn.JsonPath.string_at("$.run")}),
                payload_response_only=True,
                retry_on_service_exceptions=False,
            )
        )
        return batches.next(reduce)

    def _state_machine(self, definition: sfn.IChainable, retention: logs.RetentionDays) -> sfn.StateMachine:
        """The Standard state machine running ``definition``, with its execution log."""
        # Execution logging: every state's start, end and failure (level ALL), without the
        # states' input and output (run URIs and lists of data files: volume, not insight).
        # /aws/vendedlogs/ is where AWS recommends Step Functions' log groups (one resource
        # policy covers them all, instead of one per group up to CloudWatch Logs' limit).
        machine_logs = logs.LogGroup(
            self,
            "StateMachineLogs",
            log_group_name=f"/aws/vendedlogs/states/{self._name}-DistributedBackfill",
            retention=retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        return sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=f"{self._name}-DistributedBackfill",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            comment="bubbly_metrics distributed backfill: map over batches of data files, then reduce",
            logs=sfn.LogOptions(destination=machine_logs, level=sfn.LogLevel.ALL, include_execution_data=False),
        )

    def _acknowledge_machine(self) -> None:
        """The cdk-nag findings the state machine keeps, each with its reason."""
        machine = self.state_machine
        nag.acknowledge(
            machine, wildcard(machine, self._runs), "The ItemReader reads a run's plan.json: " + RUNS_REASON
        )
        for fn in (self.map_fn, self.reduce_fn):
            nag.acknowledge(
                machine,
                wildcard(machine, f"{fn.function_arn}:*"),
                "CDK's LambdaInvoke grants the function and its versions and aliases (ARN:*); the "
                "state machine invokes the unqualified function, and no other version exists.",
            )
        nag.acknowledge(
            machine,
            wildcard(machine, "*"),
            "Step Functions' log delivery (logs:CreateLogDelivery, GetLogDelivery, UpdateLogDelivery, "
            "DeleteLogDelivery, ListLogDeliveries, PutResourcePolicy, DescribeResourcePolicies, "
            "DescribeLogGroups) has no resource-level permissions: AWS requires Resource '*'.",
        )
        # How CDK's DistributedMap names them in its policy (the machine's name out of its ARN).
        own = Fn.select(6, Fn.split(":", machine.state_machine_arn))
        for resource_name in (f"{own}:*", f"{own}/*:*"):
            resource = Stack.of(self).format_arn(
                service="states",
                resource="execution",
                resource_name=resource_name,
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            nag.acknowledge(
                machine,
                wildcard(machine, resource),
                "A Distributed Map runs each batch as a child execution of this state machine, named by "
                "the service: it may start, describe and stop its own executions, no others.",
            )
        nag.acknowledge(
            machine,
            "AwsSolutions-SF2",
            "No X-Ray: the execution log (level ALL) and the Map and Reduce functions' JSON logs time "
            "every batch; tracing would add xray:* on Resource '*' and a cost per execution for no "
            "question those do not answer.",
        )

    def _let_aggregator_start(self, aggregator: lambda_.Function, map_memory: int) -> None:
        """The Aggregator plans runs (writes under distributed-runs/) and starts executions."""
        machine, runs = self.state_machine, self._runs
        aggregator.add_to_role_policy(iam.PolicyStatement(actions=["s3:PutObject"], resources=[runs]))
        machine.grant_start_execution(aggregator)
        aggregator.add_to_role_policy(
            iam.PolicyStatement(actions=["states:DescribeExecution"], resources=[self._executions_arn(machine)])
        )
        assert aggregator.role is not None
        nag.acknowledge(aggregator.role, wildcard(aggregator, runs), "The Aggregator plans runs: " + RUNS_REASON)
        nag.acknowledge(
            aggregator.role,
            wildcard(aggregator, self._executions_arn(machine)),
            "The Aggregator describes the executions it started (a repeated request reports the one "
            "already running); their names are per run, the state machine is this one.",
        )
        aggregator.add_environment("DISTRIBUTED_STATE_MACHINE_ARN", machine.state_machine_arn)
        aggregator.add_environment("DISTRIBUTED_MAP_MEMORY_MB", str(map_memory))

    def _executions_arn(self, machine: sfn.StateMachine) -> Any:
        return Stack.of(self).format_arn(
            service="states",
            resource="execution",
            resource_name=f"{machine.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )


def _retried(task: tasks.LambdaInvoke) -> tasks.LambdaInvoke:
    """``task``, retried on throttling and Lambda's own transient errors."""
    # Throttling (account concurrency used up by a wide map) and Lambda's own transient
    # errors: back off exponentially, with full jitter so thousands of children do not
    # retry in step.  Anything else is the batch's own error: the run fails, naming it.
    task.add_retry(
        errors=[
            "Lambda.TooManyRequestsException",
            "Lambda.ServiceException",
            "Lambda.AWSLambdaException",
            "Lambda.SdkClientException",
            "Lambda.ClientExecutionTimeoutException",
        ],
        interval=Duration.seconds(2),
        max_attempts=8,
        backoff_rate=2,
        max_delay=Duration.seconds(120),
        jitter_strategy=sfn.JitterType.FULL,
    )
    return task
