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

from aws_cdk import Duration, RemovalPolicy
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
        runs = bucket.arn_for_objects(f"{RUNS_PREFIX}*")

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
            role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects("*")]))
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
                environment=env,
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
        reduce_fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "dynamodb:BatchWriteItem",
                    "dynamodb:PutItem",
                    "dynamodb:DeleteItem",
                    "dynamodb:GetItem",
                    "dynamodb:Query",
                ],
                resources=[table_arn],
            )
        )
        reduce_fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],  # no resource-level permissions: scoped by the namespace
                conditions={"StringEquals": {"cloudwatch:namespace": metrics_namespace}},
            )
        )

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
            item_reader=sfn.S3JsonItemReader(bucket=bucket, key=sfn.JsonPath.string_at("$.plan.Key")),
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
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=f"{name}-DistributedBackfill",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_chainable(batches.next(reduce)),
            comment="bubbly_metrics distributed backfill: map over batches of data files, then reduce",
        )
        # The Aggregator plans runs (writes under distributed-runs/) and starts executions.
        aggregator.add_to_role_policy(iam.PolicyStatement(actions=["s3:PutObject"], resources=[runs]))
        self.state_machine.grant_start_execution(aggregator)
        aggregator.add_to_role_policy(
            iam.PolicyStatement(
                actions=["states:DescribeExecution"],
                resources=[self._executions_arn()],
            )
        )
        aggregator.add_environment("DISTRIBUTED_STATE_MACHINE_ARN", self.state_machine.state_machine_arn)
        aggregator.add_environment("DISTRIBUTED_MAP_MEMORY_MB", str(map_memory))
        self.map_fn = map_fn
        self.reduce_fn = reduce_fn
        self.max_concurrency = max_concurrency

    def _executions_arn(self) -> Any:
        from aws_cdk import ArnFormat, Stack

        return Stack.of(self).format_arn(
            service="states",
            resource="execution",
            resource_name=f"{self.state_machine.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
