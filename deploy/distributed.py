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

Context keys (besides ``deploy/stack.py``'s): ``distributedMaxConcurrency`` (1-10000, default
100), ``distributedMapMemoryMb`` (default 1769: one full vCPU, the unit the batches are sized
for; the Aggregator sizes batches from it).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import ArnFormat, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

MAP_HANDLER = "bubbly_metrics.handlers.distributed.map_handler"
REDUCE_HANDLER = "bubbly_metrics.handlers.distributed.reduce_handler"
RUNS_PREFIX = "distributed-runs/"  # = bubbly_metrics.distributed.RUNS_PREFIX (deploy/ does not import the package)
DEFAULT_MAX_CONCURRENCY = 100
DEFAULT_MAP_MEMORY_MB = 1769
# Lambda's maximum for both: a batch is planned for ~2 minutes (7x headroom for slow S3 or a
# cold start); the reduce merges and publishes the whole range, as the Aggregator does.
TIMEOUT_S = 900
_CONCURRENCY_RANGE = (1, 10_000)  # Distributed Map runs up to 10,000 children at once


def _context_int(scope: Construct, key: str, default: int, low: int, high: int) -> int:
    from deploy.stack import ConfigError

    value = scope.node.try_get_context(key)
    if value is None or value == "":
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise ConfigError(f"context {key} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"context {key} must be between {low} and {high}, got {number}")
    return number


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
    """Map and Reduce Lambdas and the Standard state machine that runs them (see module doc)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        code: lambda_.Code,
        runtime: lambda_.Runtime,
        bucket: s3.IBucket,
        exports_prefix: str,
        table_arn: str,
        table_name: str,
        aggregator: lambda_.Function,
        reduce_memory_mb: int,
        retention: logs.RetentionDays,
        metrics_namespace: str,
    ) -> None:
        super().__init__(scope, construct_id)
        max_concurrency = _context_int(self, "distributedMaxConcurrency", DEFAULT_MAX_CONCURRENCY, *_CONCURRENCY_RANGE)
        map_memory = _context_int(self, "distributedMapMemoryMb", DEFAULT_MAP_MEMORY_MB, 128, 10240)
        from deploy.nag import acknowledge, wildcard
        from deploy.stack import (
            EXPORT_READS_REASON,
            PUT_METRIC_DATA_REASON,
            RUNS_REASON,
            TABLE_WRITER_ACTIONS,
            exports_read_arn,
        )

        runs = bucket.arn_for_objects(f"{RUNS_PREFIX}*")
        exports_reads = exports_read_arn(bucket, exports_prefix)
        # The handlers refuse a run folder anywhere but s3://{EXPORT_BUCKET}/{RUNS_PREFIX}<name>.
        run_env = {"EXPORT_BUCKET": bucket.bucket_name, "RUNS_PREFIX": RUNS_PREFIX}

        def function(fn_id: str, handler: str, description: str, memory: int, env: dict[str, str]) -> lambda_.Function:
            group = logs.LogGroup(
                self,
                f"{fn_id}Logs",
                log_group_name=f"/aws/lambda/{name}-{fn_id}",
                retention=retention,
                removal_policy=RemovalPolicy.DESTROY,
            )
            role = iam.Role(self, f"{fn_id}Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
            group.grant_write(role)
            # Both read the export (its summary and manifest: s3fs lists the prefix) and the run.
            role.add_to_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn]))
            role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[exports_reads, runs]))
            acknowledge(role, wildcard(role, exports_reads), EXPORT_READS_REASON)
            acknowledge(role, wildcard(role, runs), RUNS_REASON)
            return lambda_.Function(
                self,
                fn_id,
                function_name=f"{name}-{fn_id}",
                description=description,
                runtime=runtime,
                architecture=lambda_.Architecture.ARM_64,
                handler=handler,
                code=code,
                memory_size=memory,
                timeout=Duration.seconds(TIMEOUT_S),
                role=role,
                log_group=group,
                environment=run_env | env,
            )

        map_fn = function("MapLambda", MAP_HANDLER, "Distributed backfill: one batch of data files", map_memory, {})
        # Partials of large batches go up in parts (s3fs: past 50 MB): PutObject covers the
        # multipart calls; AbortMultipartUpload cleans up after a failed one.
        map_fn.add_to_role_policy(
            iam.PolicyStatement(actions=["s3:PutObject", "s3:AbortMultipartUpload"], resources=[runs])
        )
        reduce_fn = function(
            "ReduceLambda",
            REDUCE_HANDLER,
            "Distributed backfill: merges the partials, writes the Analytics Table and metrics",
            reduce_memory_mb,
            {"ANALYTICS_TABLE": table_name},
        )
        reduce_fn.add_to_role_policy(iam.PolicyStatement(actions=list(TABLE_WRITER_ACTIONS), resources=[table_arn]))
        reduce_fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],  # no resource-level permissions: scoped by the namespace
                conditions={"StringEquals": {"cloudwatch:namespace": metrics_namespace}},
            )
        )
        assert reduce_fn.role is not None
        acknowledge(reduce_fn.role, wildcard(reduce_fn, "*"), PUT_METRIC_DATA_REASON)

        def retried(task: tasks.LambdaInvoke) -> tasks.LambdaInvoke:
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

        summarise = retried(
            tasks.LambdaInvoke(
                self,
                "SummariseBatch",
                lambda_function=map_fn,
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
            item_reader=_PlanReader(bucket=bucket, key=sfn.JsonPath.string_at("$.plan.Key"), objects=runs),
            item_selector={
                "run": sfn.JsonPath.string_at("$.run"),
                "batch": sfn.JsonPath.string_at("$$.Map.Item.Value"),
            },
            max_concurrency=max_concurrency,
            tolerated_failure_percentage=0,
            map_execution_type=sfn.StateMachineType.STANDARD,
            result_path=sfn.JsonPath.DISCARD,
        )
        batches.item_processor(summarise)
        reduce = retried(
            tasks.LambdaInvoke(
                self,
                "Reduce",
                lambda_function=reduce_fn,
                payload=sfn.TaskInput.from_object({"run": sfn.JsonPath.string_at("$.run")}),
                payload_response_only=True,
                retry_on_service_exceptions=False,
            )
        )
        # Execution logging: every state's start, end and failure (level ALL), without the
        # states' input and output (run URIs and lists of data files: volume, not insight).
        # /aws/vendedlogs/ is where AWS recommends Step Functions' log groups (one resource
        # policy covers them all, instead of one per group up to CloudWatch Logs' limit).
        machine_logs = logs.LogGroup(
            self,
            "StateMachineLogs",
            log_group_name=f"/aws/vendedlogs/states/{name}-DistributedBackfill",
            retention=retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=f"{name}-DistributedBackfill",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_chainable(batches.next(reduce)),
            comment="bubbly_metrics distributed backfill: map over batches of data files, then reduce",
            logs=sfn.LogOptions(destination=machine_logs, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        machine = self.state_machine
        acknowledge(machine, wildcard(machine, runs), "The ItemReader reads a run's plan.json: " + RUNS_REASON)
        for fn in (map_fn, reduce_fn):
            acknowledge(
                machine,
                wildcard(machine, f"{fn.function_arn}:*"),
                "CDK's LambdaInvoke grants the function and its versions and aliases (ARN:*); the "
                "state machine invokes the unqualified function, and no other version exists.",
            )
        acknowledge(
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
            acknowledge(
                machine,
                wildcard(machine, resource),
                "A Distributed Map runs each batch as a child execution of this state machine, named by "
                "the service: it may start, describe and stop its own executions, no others.",
            )
        acknowledge(
            machine,
            "AwsSolutions-SF2",
            "No X-Ray: the execution log (level ALL) and the Map and Reduce functions' JSON logs time "
            "every batch; tracing would add xray:* on Resource '*' and a cost per execution for no "
            "question those do not answer.",
        )
        # The Aggregator plans runs (writes under distributed-runs/) and starts executions.
        aggregator.add_to_role_policy(iam.PolicyStatement(actions=["s3:PutObject"], resources=[runs]))
        self.state_machine.grant_start_execution(aggregator)
        aggregator.add_to_role_policy(
            iam.PolicyStatement(actions=["states:DescribeExecution"], resources=[self._executions_arn(machine)])
        )
        assert aggregator.role is not None
        acknowledge(aggregator.role, wildcard(aggregator, runs), "The Aggregator plans runs: " + RUNS_REASON)
        acknowledge(
            aggregator.role,
            wildcard(aggregator, self._executions_arn(machine)),
            "The Aggregator describes the executions it started (a repeated request reports the one "
            "already running); their names are per run, the state machine is this one.",
        )
        aggregator.add_environment("DISTRIBUTED_STATE_MACHINE_ARN", self.state_machine.state_machine_arn)
        aggregator.add_environment("DISTRIBUTED_MAP_MEMORY_MB", str(map_memory))
        self.map_fn = map_fn
        self.reduce_fn = reduce_fn
        self.max_concurrency = max_concurrency

    def _executions_arn(self, machine: sfn.StateMachine) -> Any:
        return Stack.of(self).format_arn(
            service="states",
            resource="execution",
            resource_name=f"{machine.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
