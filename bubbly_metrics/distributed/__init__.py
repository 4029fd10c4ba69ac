"""A backfill past one machine: plan → map (batches of data files, in parallel) → reduce.

One Aggregator invocation has at most 15 minutes, 10 GB and 6 vCPUs.  An export larger than it
can read in that time is aggregated in three steps, each a plain function here, run the same
from the CLI (``plan``/``map``/``reduce``), the library and Lambda (a Step Functions
Distributed Map in the deployment, ``deploy/distributed.py``):

- :func:`plan_run` resolves the export and the days exactly as :func:`~bubbly_metrics.aggregate`
  would, and writes the run: ``run.json`` (what every step needs) and ``plan.json``, the data
  files of the export cut into batches of about ``items_per_batch`` items (from the manifest's
  item counts; a file is never split).  ``plan.json`` is a JSON array: the Distributed
  Map's ``ItemReader`` iterates it, one child per batch.
- :func:`map_batch` summarises one batch with the library's own per-file summaries
  (:func:`~bubbly_metrics.pipeline.summarize_export` over those files) and writes the
  partial: the per-(day, app, user) table and the record outcomes as Parquet, then a small
  ``batch-NNNNN.json`` that commits it.  Re-running a batch rewrites the same three objects.
- :func:`reduce_run` checks that every batch of the plan committed a partial for exactly its
  files (a lost batch would be a wrong number, never a smaller one), merges the partials
  exactly (:class:`~bubbly_metrics.metrics.ActivityMerger`,
  :func:`~bubbly_metrics.metrics.merge_outcomes`) and returns the same
  :class:`~bubbly_metrics.pipeline.AggregateResult` as ``aggregate()``, ready for
  :func:`~bubbly_metrics.publish.publish`.

Whether a backfill needs this at all is :func:`single_run_estimate`; the Aggregator Lambda asks
:func:`route_backfill` (with the request's :class:`~bubbly_metrics.daily.Routing`), which starts
the state machine when the answer is no (or when the request says ``"engine": "distributed"``).

The steps live in modules of one job each: :mod:`.sizing` (the estimate, the batch size),
:mod:`.plan` (the run's files, :class:`Plan`, :func:`plan_run`), :mod:`.batches`
(:func:`map_batch`, :func:`reduce_run`) and :mod:`.engine` (:func:`start_distributed`,
:func:`route_backfill`).

Examples
--------
>>> import datetime as dt, tempfile
>>> from bubbly_metrics import aggregate, sample_export_location
>>> from bubbly_metrics.distributed import map_batch, plan_run, reduce_run
>>> now = dt.datetime(2025, 3, 18, 2, 30, tzinfo=dt.UTC)
>>> run = tempfile.mkdtemp()
>>> plan = plan_run(sample_export_location(), run=run, now=now, items_per_batch=10)
>>> for batch in plan.batches:
...     _ = map_batch(run, batch)
>>> reduce_run(run).metrics.equals(aggregate(sample_export_location(), mode="backfill", now=now).metrics)
True
"""

from __future__ import annotations

from bubbly_metrics.daily import ENGINES
from bubbly_metrics.distributed.batches import ReducedRun, map_batch, reduce_run
from bubbly_metrics.distributed.engine import RUNS_PREFIX, DistributedStart, route_backfill, start_distributed
from bubbly_metrics.distributed.plan import PLAN_FILE, RUN_FILE, Plan, plan_run
from bubbly_metrics.distributed.sizing import (
    LAMBDA_MAX_VCPUS,
    MAP_TARGET_SECONDS,
    MB_PER_VCPU,
    SINGLE_ITEMS_PER_VCPU_SECOND,
    SINGLE_RUN_FIXED_SECONDS,
    SingleRunEstimate,
    default_items_per_batch,
    single_run_estimate,
)

__all__ = [
    "ENGINES",
    "LAMBDA_MAX_VCPUS",
    "MAP_TARGET_SECONDS",
    "MB_PER_VCPU",
    "PLAN_FILE",
    "RUNS_PREFIX",
    "RUN_FILE",
    "SINGLE_ITEMS_PER_VCPU_SECOND",
    "SINGLE_RUN_FIXED_SECONDS",
    "DistributedStart",
    "Plan",
    "ReducedRun",
    "SingleRunEstimate",
    "default_items_per_batch",
    "map_batch",
    "plan_run",
    "reduce_run",
    "route_backfill",
    "single_run_estimate",
    "start_distributed",
]
