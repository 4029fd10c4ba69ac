"""Starting the distributed backfill's state machine, and the Aggregator's choice to (:func:`route_backfill`)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bubbly_metrics.daily import ENGINES, RUNS_PREFIX, STATE_MACHINE_ENV
from bubbly_metrics.dates import DateRange, resolve_range
from bubbly_metrics.distributed.plan import Plan, plan_run, run_path
from bubbly_metrics.distributed.sizing import MB_PER_VCPU, default_items_per_batch, single_run_estimate
from bubbly_metrics.exceptions import ConfigurationError, InvalidArgumentError
from bubbly_metrics.exports import ExportInfo
from bubbly_metrics.pipeline import export_for, plan_days

if TYPE_CHECKING:
    from bubbly_metrics.daily import DailyConfig, Routing

__all__ = ["RUNS_PREFIX", "DistributedStart", "route_backfill", "start_distributed"]

logger = logging.getLogger(__package__)  # the engine's lines keep one logger name


def _execution_name(export_id: str, date_range: DateRange, token: str) -> str:
    # Deterministic per request: a Lambda retry of the same event (same request id) starts no
    # second execution; names are at most 80 characters of [A-Za-z0-9-_].
    digest = hashlib.sha256(f"{export_id}|{date_range.start}|{date_range.end}|{token}".encode()).hexdigest()[:16]
    return f"backfill-{date_range.start:%Y%m%d}-{date_range.end:%Y%m%d}-{digest}"


@dataclass(frozen=True)
class DistributedStart:
    """A distributed run started (or found running) on the state machine: the execution and its plan."""

    execution_arn: str
    execution_name: str
    status: str
    """``RUNNING`` when started now, else what Step Functions says of the execution of that name."""
    plan: Plan

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``engine``, ``executionArn``, ``executionName``, ``status`` and the plan's summary."""
        started = {
            "engine": "distributed",
            "executionArn": self.execution_arn,
            "executionName": self.execution_name,
            "status": self.status,
        }
        return started | self.plan.to_dict()


def start_distributed(
    source: str | ExportInfo,
    *,
    state_machine_arn: str,
    runs: str,
    token: str,
    mode: str = "backfill",
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    now: dt.datetime | None = None,
    items_per_batch: int | None = None,
    storage_options: dict[str, Any] | None = None,
    stepfunctions_client: Any = None,
) -> DistributedStart:
    """Plan a run under ``runs`` (an ``s3://`` folder) and start the state machine on it.

    ``token`` makes the execution's name (with the export and days): the same token starts the
    same execution once, so a retried event is safe (Step Functions answers a repeated
    StartExecution of a running execution with the same ARN; a finished one is reported as is).
    """
    if not runs.startswith("s3://"):
        raise InvalidArgumentError(f"a distributed run needs an s3:// runs folder, got {runs!r}")
    days = plan_days(source, mode=mode, start=start, end=end, now=now, storage_options=storage_options)
    export, date_range = days.export, days.date_range
    name = _execution_name(export.export_id, date_range, token)
    plan = plan_run(
        export,
        run=run_path(runs, name),
        mode=mode,
        start=date_range.start,
        end=date_range.end,
        now=now,
        items_per_batch=items_per_batch,
        storage_options=storage_options,
    )
    bucket, _, key = plan.plan_uri.removeprefix("s3://").partition("/")
    if stepfunctions_client is None:
        import boto3

        stepfunctions_client = boto3.client("stepfunctions")
    execution_input = json.dumps({"run": plan.run, "plan": {"Bucket": bucket, "Key": key}})
    try:
        response = stepfunctions_client.start_execution(
            stateMachineArn=state_machine_arn, name=name, input=execution_input
        )
        arn, status = response["executionArn"], "RUNNING"
    except Exception as exc:  # botocore's modelled error, without importing botocore here
        if type(exc).__name__ != "ExecutionAlreadyExists":
            raise
        arn = state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"
        status = stepfunctions_client.describe_execution(executionArn=arn)["status"]
    return DistributedStart(arn, name, status, plan)


def route_backfill(
    routing: Routing,
    *,
    config: DailyConfig,
    location: str,
    remaining_ms: int | None,
    token: str,
    stepfunctions_client: Any = None,
) -> DistributedStart | None:
    """The Aggregator's choice for one request: ``None`` to aggregate here, else the started run.

    ``engine`` ``"single"`` always aggregates here and ``"distributed"`` always starts the state
    machine (``config.state_machine_arn``).  Without ``engine``, a backfill whose export one
    invocation cannot finish in its remaining time (:func:`single_run_estimate` at
    ``config.memory_mb``) goes distributed when the state machine is deployed; an incremental
    run is always single.  The request's optional ``itemsPerBatch`` overrides the batch size
    (default: :func:`default_items_per_batch` at the map function's memory, ``config.map_memory_mb``).
    """
    engine, mode = routing.engine, routing.mode
    if engine not in (None, *ENGINES):
        raise InvalidArgumentError(f"Invalid engine. Must be 'single' or 'distributed' (got {engine!r})")
    if mode != "backfill":
        if engine == "distributed":
            raise InvalidArgumentError("engine 'distributed' is for backfills: use mode 'backfill'")
        return None
    if engine == "single":
        return None
    arn = config.state_machine_arn
    resolve_range(mode=mode, start=routing.start, now=config.now)  # a bad date fails before any S3 call
    if engine is None:
        export = export_for(location, mode=mode, storage_options=config.storage_options)
        if _fits_here(export, config, remaining_ms):
            return None
        source: str | ExportInfo = export
    else:
        if not arn:
            raise ConfigurationError(f"{STATE_MACHINE_ENV} environment variable is required for engine 'distributed'")
        source = location
    map_memory = int(config.map_memory_mb or MB_PER_VCPU)
    per_batch = routing.items_per_batch
    if per_batch is not None and (isinstance(per_batch, bool) or not isinstance(per_batch, int) or per_batch < 1):
        raise InvalidArgumentError(f"itemsPerBatch must be a positive integer, got {per_batch!r}")
    return start_distributed(
        source,
        state_machine_arn=arn,
        runs=f"s3://{config.bucket}/{RUNS_PREFIX}",
        token=token,
        mode=mode,
        start=routing.start,
        now=config.now,
        items_per_batch=per_batch or default_items_per_batch(map_memory),
        storage_options=config.storage_options,
        stepfunctions_client=stepfunctions_client,
    )


def _fits_here(export: ExportInfo, config: DailyConfig, remaining_ms: int | None) -> bool:
    """Whether this invocation aggregates ``export`` itself.

    It does when it can in the time left, or when it must (no state machine is deployed: said
    in a warning).
    """
    timeout = remaining_ms / 1000 if remaining_ms is not None else float("inf")
    estimate = single_run_estimate(export, memory_mb=int(config.memory_mb or MB_PER_VCPU), timeout_seconds=timeout)
    if estimate.fits:
        return True
    if not config.state_machine_arn:
        logger.warning(
            "export %s is estimated at %.0f s, past the %.0f s left, and no %s is set: aggregating here",
            export.export_id,
            estimate.seconds,
            timeout,
            STATE_MACHINE_ENV,
            extra={"fields": estimate.to_dict()},
        )
        return True
    logger.info("backfill goes distributed: %s", estimate.to_dict(), extra={"fields": estimate.to_dict()})
    return False
