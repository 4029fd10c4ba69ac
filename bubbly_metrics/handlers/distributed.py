"""The distributed backfill's Lambdas: one batch of data files (map), then all partials (reduce).

The state machine (``deploy/distributed.py``) runs :func:`map_handler` once per batch of the
run's ``plan.json`` (a Distributed Map) and :func:`reduce_handler` once after every batch
succeeded.  Both are thin over :mod:`bubbly_metrics.distributed`.

Map event: ``{"run": "s3://…/distributed-runs/<name>", "batch": {"batch": n, "files": [...], "items": n}}``.
Reduce event: ``{"run": "s3://…"}``; environment ``ANALYTICS_TABLE`` (the reduce publishes as
the Aggregator does: CloudWatch, then the Analytics Table).

Both need ``EXPORT_BUCKET`` (and take ``RUNS_PREFIX``, default ``distributed-runs/``): a run is
only ever a folder ``s3://{EXPORT_BUCKET}/{RUNS_PREFIX}<name>``, and a batch has integer
numbers (not booleans) and S3 keys for files.  Anything else is refused in one line before
anything is read or written.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

from bubbly_metrics._log import log
from bubbly_metrics._text import clip
from bubbly_metrics.daily import RUNS_PREFIX
from bubbly_metrics.daily_outputs import FileProgress, publish_logged
from bubbly_metrics.exceptions import InvalidArgumentError
from bubbly_metrics.handlers._events import check_key, require_env
from bubbly_metrics.handlers._logging import RemainingTime, json_logging

logger = logging.getLogger(__name__)

_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,79}")  # a Step Functions execution name
MAX_FILES = 100_000
"""Data files one batch may name (a manifest's data files number a few thousand at most)."""


def _run_of(event: Any, env: Mapping[str, str], fields: tuple[str, ...]) -> str:
    """The event's run folder, if it is one under the configured bucket's runs prefix."""
    if not isinstance(event, Mapping):
        kind = type(event).__name__
        raise InvalidArgumentError(f"the event must be a JSON object, got a {kind}: {clip(repr(event))}")
    unknown = [k for k in event if k not in fields]
    if unknown:
        raise InvalidArgumentError(
            f"unknown field(s) in the event: {clip(', '.join(clip(repr(k), 40) for k in unknown[:5]))}; "
            f"the fields are {', '.join(fields)}"
        )
    bucket = require_env(env, "EXPORT_BUCKET")
    runs = (env.get("RUNS_PREFIX") or RUNS_PREFIX).strip("/") + "/"
    folder = f"s3://{bucket}/{runs}"
    run = event.get("run")
    name = run[len(folder) :].rstrip("/") if isinstance(run, str) and run.startswith(folder) else ""
    if not _RUN_NAME.fullmatch(name):
        raise InvalidArgumentError(f"the event must name a run {folder}<name>, got run {clip(repr(run))}")
    return f"{folder}{name}"


def _batch_of(event: Mapping[str, Any]) -> Mapping[str, Any] | int:
    """The event's batch: its number, or the plan's element (number, S3 keys of files, items)."""
    batch = event.get("batch")
    if isinstance(batch, int) and not isinstance(batch, bool) and batch >= 0:
        return batch
    if isinstance(batch, Mapping):
        number, files, items = batch.get("batch"), batch.get("files"), batch.get("items", 0)
        if (
            isinstance(number, int)
            and not isinstance(number, bool)
            and number >= 0
            and isinstance(items, int)
            and not isinstance(items, bool)
            and items >= 0
            and isinstance(files, list)
            and 0 < len(files) <= MAX_FILES
        ):
            for key in files:
                check_key(key, "a batch's data file")
            return batch
    raise InvalidArgumentError(
        "the event's batch must be a batch number or a plan element "
        f'{{"batch": n, "files": ["key", ...], "items": n}} with whole numbers, got {clip(repr(batch))}'
    )


def handle_map(
    event: Any,
    context: Any,
    *,
    env: Mapping[str, str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`map_handler` with its environment and storage options injectable."""
    from bubbly_metrics.distributed import map_batch

    env = os.environ if env is None else env
    with json_logging(context, errors=logger):
        run = _run_of(event, env, ("run", "batch"))
        batch = _batch_of(event)
        number = batch.get("batch") if isinstance(batch, Mapping) else batch
        log(logger, "Processing data files...", run=run, batch=number)
        report = map_batch(run, batch, storage_options=storage_options, on_file=FileProgress(logger))
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
    from dataclasses import replace

    from bubbly_metrics.distributed import ReducedRun, reduce_run

    env = os.environ if env is None else env
    with json_logging(context, errors=logger):
        table = require_env(env, "ANALYTICS_TABLE")
        run = _run_of(event, env, ("run",))
        reduced = ReducedRun(run, reduce_run(run, storage_options=storage_options))
        log(logger, "Aggregation complete", **reduced.to_dict())
        published = publish_logged(
            reduced.result,
            logger=logger,
            table=table,
            now=now or dt.datetime.now(dt.UTC),
            dynamodb_client=dynamodb_client,
            cloudwatch_client=cloudwatch_client,
            remaining=RemainingTime(context, logger),  # a day it could not finish is not started
        )
        summary = replace(reduced, published=published).to_dict()
        log(logger, "Aggregator Lambda completed successfully", **summary)
        return summary


def map_handler(event: Any, context: Any) -> dict[str, Any]:
    """Summarise one batch of a distributed run into its partial."""
    return handle_map(event, context)


def reduce_handler(event: Any, context: Any) -> dict[str, Any]:
    """Merge a distributed run's partials, publish them, and return the run's summary."""
    return handle_reduce(event, context)
