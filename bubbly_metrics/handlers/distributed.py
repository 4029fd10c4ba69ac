"""The distributed backfill's Lambdas: one batch of data files (map), then all partials (reduce).

The state machine (``deploy/distributed.py``) runs :func:`map_handler` once per batch of the
run's ``plan.json`` (a Distributed Map) and :func:`reduce_handler` once after every batch
succeeded.  Both are thin over :mod:`bubbly_metrics.distributed`.

Map event: ``{"run": "s3://…/distributed-runs/<name>", "batch": {"batch": n, "files": [...], "items": n}}``.
Reduce event: ``{"run": "s3://…"}``; environment ``ANALYTICS_TABLE`` (the reduce publishes as
the Aggregator does: CloudWatch, then the Analytics Table).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from typing import Any

from bubbly_metrics.exceptions import InvalidArgumentError
from bubbly_metrics.handlers import RemainingTime, json_logging, log, publish_logged, require_env

logger = logging.getLogger(__name__)


def _run_of(event: Any) -> str:
    run = event.get("run") if isinstance(event, Mapping) else None
    if not isinstance(run, str) or not run:
        raise InvalidArgumentError(f"the event must name the run: {{'run': 's3://…'}}, got {event!r}")
    return run


def handle_map(event: Any, context: Any, *, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`map_handler` with storage options injectable."""
    from bubbly_metrics.distributed import map_batch

    with json_logging(context, errors=logger):
        run = _run_of(event)
        batch = event.get("batch")
        if not isinstance(batch, Mapping | int):
            raise InvalidArgumentError(f"the event must hold the batch of the plan, got {batch!r}")
        number = batch.get("batch") if isinstance(batch, Mapping) else batch
        log(logger, "Processing data files...", run=run, batch=number)
        progress = {"items": 0, "files": 0}

        def on_file(data_file: Any, records: int) -> None:
            progress["items"] += records
            progress["files"] += 1
            log(
                logger,
                f"Processed {progress['items']} items so far...",
                itemsRead=progress["items"],
                filesRead=progress["files"],
                dataFile=data_file.key,
            )

        report = map_batch(run, batch, storage_options=storage_options, on_file=on_file)
        log(logger, "Batch complete", **report)
        return report


def handle_reduce(
    event: Any,
    context: Any,
    *,
    env: Mapping[str, str] | None = None,
    now: dt.datetime | None = None,
    storage_options: dict[str, Any] | None = None,
    dynamodb_client: Any = None,
    cloudwatch_client: Any = None,
) -> dict[str, Any]:
    """:func:`reduce_handler` with its environment, clock and AWS clients injectable."""
    from bubbly_metrics.distributed import reduce_run

    env = os.environ if env is None else env
    with json_logging(context, errors=logger):
        table = require_env(env, "ANALYTICS_TABLE")
        run = _run_of(event)
        result = reduce_run(run, storage_options=storage_options)
        summary = result.to_dict() | {"run": run, "engine": "distributed"}
        log(logger, "Aggregation complete", **summary)
        summary |= publish_logged(
            result,
            logger=logger,
            table=table,
            now=now or dt.datetime.now(dt.UTC),
            dynamodb_client=dynamodb_client,
            cloudwatch_client=cloudwatch_client,
            remaining=RemainingTime(context, logger),  # a day it could not finish is not started
        )
        log(logger, "Aggregator Lambda completed successfully", **summary)
        return summary


def map_handler(event: Any, context: Any) -> dict[str, Any]:
    """Summarise one batch of a distributed run into its partial."""
    return handle_map(event, context)


def reduce_handler(event: Any, context: Any) -> dict[str, Any]:
    """Merge a distributed run's partials, publish them, and return the run's summary."""
    return handle_reduce(event, context)
