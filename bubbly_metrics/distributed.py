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
:func:`route_backfill`, which starts the state machine when the answer is no (or when the
event says ``"engine": "distributed"``).

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

import datetime as dt
import hashlib
import json
import logging
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from bubbly_metrics.dates import DateRange, resolve_range
from bubbly_metrics.exceptions import ConfigurationError, ExportIntegrityError, InvalidArgumentError
from bubbly_metrics.exports import DataFile, ExportInfo, find_export
from bubbly_metrics.locations import filesystem
from bubbly_metrics.metrics import ActivityMerger, daily_metrics, merge_outcomes
from bubbly_metrics.pipeline import AggregateResult, export_for, run_days, summarize_export

__all__ = [
    "ENGINES",
    "LAMBDA_MAX_VCPUS",
    "MB_PER_VCPU",
    "SINGLE_ITEMS_PER_VCPU_SECOND",
    "Plan",
    "SingleRunEstimate",
    "default_items_per_batch",
    "map_batch",
    "plan_run",
    "reduce_run",
    "route_backfill",
    "single_run_estimate",
    "start_distributed",
]

logger = logging.getLogger(__name__)

ENGINES = ("single", "distributed")
"""Values of a backfill event's ``engine``: one Aggregator invocation, or the state machine."""

# Lambda gives CPU in proportion to memory: one full vCPU at 1,769 MB, at most 6 (10,240 MB).
MB_PER_VCPU = 1769
LAMBDA_MAX_VCPUS = 6

SINGLE_ITEMS_PER_VCPU_SECOND = 150_000
"""Items one vCPU reads and summarises per second, for planning: well under what a map child
does here (``bench/distributed.py``: 261k items/s pinned to one core of a loaded machine, 435k
unpinned; ``docs/scale.md``), for Lambda's slower cores, S3 reads and a margin of ~2x.
:func:`single_run_estimate` and :func:`default_items_per_batch` use it."""

SINGLE_RUN_FIXED_SECONDS = 60.0
"""What a single run spends besides the scan: start, the merge, CloudWatch and the table
writes of a long backfill (hundreds of BatchWriteItem calls)."""

MAP_TARGET_SECONDS = 120.0
"""A map child's planned scan time: long enough that its start (~1-2 s, importing Polars) is
noise, short enough that a retried batch costs little and thousands run side by side."""

RUN_FILE = "run.json"
PLAN_FILE = "plan.json"


# ---------------------------------------------------------------------------------------------
# sizing


@dataclass(frozen=True)
class SingleRunEstimate:
    """Can one Aggregator invocation finish this export in its timeout?  (``fits``)."""

    items: int
    memory_mb: int
    vcpus: float
    seconds: float
    """Estimated duration: ``items / (SINGLE_ITEMS_PER_VCPU_SECOND × vcpus) + SINGLE_RUN_FIXED_SECONDS``."""
    timeout_seconds: float

    @property
    def fits(self) -> bool:
        """True when the estimate is within the timeout (the rate already carries a 2x margin)."""
        return self.seconds <= self.timeout_seconds

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (handler logs and results)."""
        return {
            "items": self.items,
            "memoryMb": self.memory_mb,
            "vcpus": round(self.vcpus, 2),
            "estimatedSeconds": round(self.seconds, 1),
            "timeoutSeconds": round(self.timeout_seconds, 1),
            "fits": self.fits,
        }


def _vcpus(memory_mb: int) -> float:
    return min(max(memory_mb, 128) / MB_PER_VCPU, LAMBDA_MAX_VCPUS)


def single_run_estimate(export: ExportInfo, *, memory_mb: int, timeout_seconds: float) -> SingleRunEstimate:
    """Estimate one Aggregator invocation over ``export`` with ``memory_mb`` and ``timeout_seconds``.

    The scan is CPU-bound and Lambda's CPU is proportional to memory (one vCPU per 1,769 MB, at
    most 6), so the duration is the manifest's item count over
    :data:`SINGLE_ITEMS_PER_VCPU_SECOND` × vCPUs, plus :data:`SINGLE_RUN_FIXED_SECONDS`.  At the
    stack's default 3,008 MB (1.7 vCPU) and 900 s that is about 215M items (some 35 GB of
    gzip); past it, :func:`route_backfill` starts the distributed run.
    """
    items = export.item_count if export.item_count is not None else sum(f.item_count for f in export.data_files())
    vcpus = _vcpus(memory_mb)
    seconds = items / (SINGLE_ITEMS_PER_VCPU_SECOND * vcpus) + SINGLE_RUN_FIXED_SECONDS
    return SingleRunEstimate(int(items), int(memory_mb), vcpus, seconds, float(timeout_seconds))


def default_items_per_batch(memory_mb: int) -> int:
    """Items per map child so that it reads for about :data:`MAP_TARGET_SECONDS` at ``memory_mb``."""
    return max(1, int(SINGLE_ITEMS_PER_VCPU_SECOND * _vcpus(memory_mb) * MAP_TARGET_SECONDS))


# ---------------------------------------------------------------------------------------------
# run files


def _join(run: str, name: str) -> str:
    return run.rstrip("/") + "/" + name


def _open_for_write(uri: str, storage_options: dict[str, Any] | None) -> Any:
    """``uri`` opened for writing bytes, its folder made first (a local run; S3 has none)."""
    fs, path = filesystem(uri, storage_options)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    return fs.open(path, "wb")


def _write_bytes(uri: str, data: bytes, storage_options: dict[str, Any] | None) -> None:
    with _open_for_write(uri, storage_options) as fh:
        fh.write(data)


def _read_json(uri: str, storage_options: dict[str, Any] | None, what: str) -> Any:
    fs, path = filesystem(uri, storage_options)
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        raise InvalidArgumentError(f"{what} not found at {uri}: is this a run written by `plan`?") from None
    except ValueError as exc:
        raise InvalidArgumentError(f"{what} at {uri} is not valid JSON: {exc}") from None


def _write_parquet(frame: pl.DataFrame, uri: str, storage_options: dict[str, Any] | None) -> None:
    with _open_for_write(uri, storage_options) as fh:
        frame.write_parquet(fh)


def _read_parquet(uri: str, storage_options: dict[str, Any] | None) -> pl.DataFrame:
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as fh:
        return pl.read_parquet(fh)


@dataclass(frozen=True)
class Plan:
    """A distributed run: where its files are, what it aggregates, and its batches."""

    run: str
    """The run's folder (local or ``s3://``): ``run.json``, ``plan.json``, the partials."""
    export_location: str
    export_id: str
    mode: str
    date_range: DateRange
    batches: list[dict[str, Any]]
    """``{"batch": n, "files": [dataFileS3Key, ...], "items": n}``, in manifest order."""

    @property
    def plan_uri(self) -> str:
        """``plan.json``: the Distributed Map's item list."""
        return _join(self.run, PLAN_FILE)

    def to_dict(self) -> dict[str, Any]:
        """``run.json``'s content (also the CLI's and handler's summary)."""
        return {
            "run": self.run,
            "exportLocation": self.export_location,
            "exportId": self.export_id,
            "mode": self.mode,
            "startDate": self.date_range.start.isoformat(),
            "endDate": self.date_range.end.isoformat(),
            "batches": len(self.batches),
            "dataFiles": sum(len(b["files"]) for b in self.batches),
            "items": sum(int(b["items"]) for b in self.batches),
        }

    @classmethod
    def read(cls, run: str, *, storage_options: dict[str, Any] | None = None) -> Plan:
        """Read a run written by :func:`plan_run`."""
        meta = _read_json(_join(run, RUN_FILE), storage_options, "run.json")
        batches = _read_json(_join(run, PLAN_FILE), storage_options, "plan.json")
        try:
            return cls(
                run=run,
                export_location=meta["exportLocation"],
                export_id=meta["exportId"],
                mode=meta["mode"],
                date_range=DateRange(dt.date.fromisoformat(meta["startDate"]), dt.date.fromisoformat(meta["endDate"])),
                batches=list(batches),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"run.json at {run} is not a run's description: {exc!r}") from None

    def export(self, storage_options: dict[str, Any] | None = None) -> ExportInfo:
        """The export the run reads (found again at its location: nothing cached across steps)."""
        export = find_export(self.export_location, storage_options=storage_options)
        if export.export_id != self.export_id:
            raise ExportIntegrityError(
                f"run {self.run} was planned for export {self.export_id}, but {self.export_location} "
                f"holds {export.export_id}"
            )
        return export


def _cut(files: list[DataFile], items_per_batch: int) -> list[dict[str, Any]]:
    # Contiguous runs of the manifest, each closed once it holds items_per_batch items; a file
    # larger than that is a batch of its own (files are never split: the partial of a file is
    # its summary, exactly as the single run makes it).
    batches: list[dict[str, Any]] = []
    keys: list[str] = []
    items = 0
    for data_file in files:
        if keys and items + data_file.item_count > items_per_batch:
            batches.append({"batch": len(batches), "files": keys, "items": items})
            keys, items = [], 0
        keys.append(data_file.key)
        items += data_file.item_count
    if keys:
        batches.append({"batch": len(batches), "files": keys, "items": items})
    return batches


def plan_run(
    source: str | ExportInfo,
    *,
    run: str,
    mode: str = "backfill",
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    date: str | dt.date | None = None,
    now: dt.datetime | None = None,
    items_per_batch: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Plan:
    """Plan a distributed run of ``source`` into the folder ``run``; write ``run.json`` and ``plan.json``.

    ``source``, ``mode``, ``start``, ``end``, ``date`` and ``now`` mean what they mean for
    :func:`~bubbly_metrics.aggregate`, and the export and days are resolved by the same
    functions, so the result is the one ``aggregate()`` would give.  ``items_per_batch``
    (default: :func:`default_items_per_batch` at 1,769 MB) sizes the batches from the
    manifest's item counts.
    """
    if not isinstance(run, str) or not run.strip():
        raise InvalidArgumentError(f"run must be a folder or s3:// URI, got {run!r}")
    if items_per_batch is None:
        items_per_batch = default_items_per_batch(MB_PER_VCPU)
    if items_per_batch < 1:
        raise InvalidArgumentError(f"items_per_batch must be at least 1, got {items_per_batch}")
    date_range = resolve_range(mode=mode, start=start, end=end, date=date, now=now)
    export = export_for(source, mode=mode, storage_options=storage_options)
    date_range = run_days(export, mode=mode, date_range=date_range, end_given=end is not None)
    files = export.data_files()
    listed = sum(f.item_count for f in files)
    if export.item_count is not None and listed != export.item_count:
        # A batch plan from an incomplete listing would silently leave files out.
        raise ExportIntegrityError(
            f"export {export.export_id}: manifest-files.json lists {listed} items "
            f"but manifest-summary.json says {export.item_count}"
        )
    plan = Plan(
        run=run.rstrip("/"),
        export_location=export.location,
        export_id=export.export_id,
        mode=mode,
        date_range=date_range,
        batches=_cut(files, items_per_batch),
    )
    # plan.json first: a run.json names a complete plan.
    _write_bytes(plan.plan_uri, json.dumps(plan.batches).encode(), storage_options)
    _write_bytes(_join(plan.run, RUN_FILE), json.dumps(plan.to_dict(), indent=1).encode(), storage_options)
    logger.info(
        "planned %d batch(es) of %d data file(s), %d items, of export %s for %s at %s",
        len(plan.batches),
        len(files),
        listed,
        export.export_id,
        date_range,
        plan.run,
    )
    return plan


# ---------------------------------------------------------------------------------------------
# map


def _partial(run: str, batch: int, part: str) -> str:
    return _join(run, f"partials/batch-{batch:05d}.{part}")


def map_batch(
    run: str,
    batch: Mapping[str, Any] | int,
    *,
    storage_options: dict[str, Any] | None = None,
    verify: bool = False,
    threads: int | None = None,
    on_file: Callable[[DataFile, int], None] | None = None,
) -> dict[str, Any]:
    """Summarise one batch of the run's plan and write its partial; return what it wrote.

    ``batch`` is an element of ``plan.json`` (what the Distributed Map passes) or its number.
    The partial is ``partials/batch-NNNNN.activity.parquet`` (per ``(date, app, user_id)``:
    games, parties created, parties joined), ``.outcomes.parquet`` (records by outcome,
    malformed ones per reason and file with an example's keys), and last ``.json``, which
    commits it and names the files it covers.  Running a batch twice writes the same partial.
    """
    plan = Plan.read(run, storage_options=storage_options)
    if isinstance(batch, int):
        if not 0 <= batch < len(plan.batches):
            raise InvalidArgumentError(f"batch {batch} is not in run {run}, which has {len(plan.batches)} batch(es)")
        batch = plan.batches[batch]
    try:
        number, keys = int(batch["batch"]), [str(k) for k in batch["files"]]
    except (KeyError, TypeError, ValueError):
        raise InvalidArgumentError(f"not a batch of a plan: {batch!r}") from None
    if not 0 <= number < len(plan.batches) or plan.batches[number]["files"] != keys:
        raise InvalidArgumentError(f"batch {number} given does not match batch {number} of run {run}'s plan")
    export = plan.export(storage_options)
    by_key = {f.key: f for f in export.data_files()}
    files = [by_key[k] for k in keys if k in by_key]
    if len(files) != len(keys):
        missing = sorted(set(keys) - set(by_key))
        raise ExportIntegrityError(f"batch {number} names data files not in export {export.export_id}: {missing[:5]}")
    activity, outcomes = summarize_export(
        export, plan.date_range, verify=verify, threads=threads, processes=False, on_file=on_file, files=files
    )
    # Strings, not the run-local Categorical codes: a partial is read by another process.
    activity = activity.with_columns(pl.col("app", "user_id").cast(pl.String))
    _write_parquet(activity, _partial(plan.run, number, "activity.parquet"), storage_options)
    _write_parquet(outcomes, _partial(plan.run, number, "outcomes.parquet"), storage_options)
    report = {
        "run": plan.run,
        "batch": number,
        "files": keys,
        "items": int(outcomes["records"].sum()),
        "userDays": activity.height,
        "digest": _digest(keys),
    }
    _write_bytes(_partial(plan.run, number, "json"), json.dumps(report).encode(), storage_options)
    logger.info(
        "batch %d: %d data file(s), %d records, %d user-days", number, len(keys), report["items"], activity.height
    )
    return {k: v for k, v in report.items() if k != "files"} | {"dataFiles": len(keys)}


def _digest(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# reduce


def reduce_run(run: str, *, storage_options: dict[str, Any] | None = None) -> AggregateResult:
    """Merge every partial of ``run`` into the :class:`AggregateResult` ``aggregate()`` gives.

    Fails, naming them, when a batch of the plan has no committed partial or one for other
    files, or when the plan no longer covers the export's manifest: a partial missing from the
    sum would make every number of its days too small, silently.
    """
    plan = Plan.read(run, storage_options=storage_options)
    export = plan.export(storage_options)
    planned = [k for b in plan.batches for k in b["files"]]
    listed = [f.key for f in export.data_files()]
    if sorted(planned) != sorted(listed) or len(set(planned)) != len(planned):
        raise ExportIntegrityError(
            f"run {plan.run}: its plan covers {len(planned)} data file(s) but export {export.export_id} "
            f"lists {len(listed)}; plan the run again"
        )
    lost: list[int] = []
    for b in plan.batches:
        fs, path = filesystem(_partial(plan.run, int(b["batch"]), "json"), storage_options)
        try:
            committed = json.loads(fs.cat_file(path))
        except FileNotFoundError:
            lost.append(int(b["batch"]))
            continue
        if committed.get("files") != b["files"]:
            lost.append(int(b["batch"]))
    if lost:
        shown = ", ".join(str(n) for n in lost[:20]) + (" …" if len(lost) > 20 else "")
        raise ExportIntegrityError(
            f"run {plan.run}: {len(lost)} of {len(plan.batches)} batch(es) have no partial ({shown}); "
            f"run their map again (`map {plan.run} --batch N`), then reduce"
        )
    if not plan.batches:  # an export without data files: the single run's empty tables
        activity, outcomes = summarize_export(export, plan.date_range, files=[])
    else:
        merger = ActivityMerger()
        parts = []
        for b in plan.batches:
            merger.add(_read_parquet(_partial(plan.run, int(b["batch"]), "activity.parquet"), storage_options))
            parts.append(_read_parquet(_partial(plan.run, int(b["batch"]), "outcomes.parquet"), storage_options))
        activity, outcomes = merger.result(), merge_outcomes(parts)
    metrics = daily_metrics(activity, plan.date_range, dense=plan.mode == "backfill").collect()
    logger.info("reduced %d batch(es) of run %s: %d user-days", len(plan.batches), plan.run, activity.height)
    return AggregateResult(export, plan.mode, plan.date_range, activity, outcomes, metrics)


# ---------------------------------------------------------------------------------------------
# starting the state machine (the Aggregator Lambda's route)

STATE_MACHINE_ENV = "DISTRIBUTED_STATE_MACHINE_ARN"
"""The Aggregator's environment variable naming the state machine (set by the stack)."""
MAP_MEMORY_ENV = "DISTRIBUTED_MAP_MEMORY_MB"
"""The map function's memory, which sizes the batches (set by the stack)."""
RUNS_PREFIX = "distributed-runs/"
"""Where runs live in the export bucket: outside ``S3_PREFIX``'s exports, under its 1-day expiry."""


def _execution_name(export_id: str, date_range: DateRange, token: str) -> str:
    # Deterministic per request: a Lambda retry of the same event (same request id) starts no
    # second execution; names are at most 80 characters of [A-Za-z0-9-_].
    digest = hashlib.sha256(f"{export_id}|{date_range.start}|{date_range.end}|{token}".encode()).hexdigest()[:16]
    return f"backfill-{date_range.start:%Y%m%d}-{date_range.end:%Y%m%d}-{digest}"


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
) -> dict[str, Any]:
    """Plan a run under ``runs`` (an ``s3://`` folder) and start the state machine on it.

    ``token`` makes the execution's name (with the export and days): the same token starts the
    same execution once, so a retried event is safe (Step Functions answers a repeated
    StartExecution of a running execution with the same ARN; a finished one is reported as is).
    """
    if not runs.startswith("s3://"):
        raise InvalidArgumentError(f"a distributed run needs an s3:// runs folder, got {runs!r}")
    date_range = resolve_range(mode=mode, start=start, end=end, now=now)
    export = export_for(source, mode=mode, storage_options=storage_options)
    date_range = run_days(export, mode=mode, date_range=date_range, end_given=end is not None)
    name = _execution_name(export.export_id, date_range, token)
    plan = plan_run(
        export,
        run=_join(runs, name),
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
    return {"engine": "distributed", "executionArn": arn, "executionName": name, "status": status} | plan.to_dict()


def route_backfill(
    event: Any,
    *,
    env: Mapping[str, str],
    location: str,
    bucket: str,
    remaining_ms: int | None,
    token: str,
    now: dt.datetime | None = None,
    storage_options: dict[str, Any] | None = None,
    stepfunctions_client: Any = None,
) -> dict[str, Any] | None:
    """The Aggregator's choice for one event: ``None`` to aggregate here, else the started run.

    ``{"engine": "single"}`` always aggregates here and ``{"engine": "distributed"}`` always
    starts the state machine (named by ``DISTRIBUTED_STATE_MACHINE_ARN``).  Without ``engine``,
    a backfill whose export one invocation cannot finish in its remaining time
    (:func:`single_run_estimate`, with ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``) goes distributed
    when the state machine is deployed; an incremental run is always single.  The event's
    optional ``itemsPerBatch`` overrides the batch size (default: :func:`default_items_per_batch`
    at the map function's memory, ``DISTRIBUTED_MAP_MEMORY_MB``).
    """
    engine = event.get("engine") if isinstance(event, Mapping) else None
    if engine not in (None, *ENGINES):
        raise InvalidArgumentError(f"Invalid engine. Must be 'single' or 'distributed' (got {engine!r})")
    mode = (event.get("mode") if isinstance(event, Mapping) else None) or "incremental"
    if mode != "backfill":
        if engine == "distributed":
            raise InvalidArgumentError("engine 'distributed' is for backfills: use mode 'backfill'")
        return None
    if engine == "single":
        return None
    arn = (env.get(STATE_MACHINE_ENV) or "").strip()
    start = event.get("backfillStartDate") or None
    resolve_range(mode=mode, start=start, now=now)  # a bad date fails before any S3 call
    if engine is None:
        export = export_for(location, mode=mode, storage_options=storage_options)
        memory = int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or MB_PER_VCPU)
        timeout = remaining_ms / 1000 if remaining_ms is not None else float("inf")
        estimate = single_run_estimate(export, memory_mb=memory, timeout_seconds=timeout)
        if estimate.fits:
            return None
        if not arn:
            logger.warning(
                "export %s is estimated at %.0f s, past the %.0f s left, and no %s is set: aggregating here",
                export.export_id,
                estimate.seconds,
                timeout,
                STATE_MACHINE_ENV,
                extra={"fields": estimate.to_dict()},
            )
            return None
        logger.info("backfill goes distributed: %s", estimate.to_dict(), extra={"fields": estimate.to_dict()})
        source: str | ExportInfo = export
    else:
        if not arn:
            raise ConfigurationError(f"{STATE_MACHINE_ENV} environment variable is required for engine 'distributed'")
        source = location
    map_memory = int(env.get(MAP_MEMORY_ENV) or MB_PER_VCPU)
    per_batch = event.get("itemsPerBatch")
    if per_batch is not None and (isinstance(per_batch, bool) or not isinstance(per_batch, int) or per_batch < 1):
        raise InvalidArgumentError(f"itemsPerBatch must be a positive integer, got {per_batch!r}")
    return start_distributed(
        source,
        state_machine_arn=arn,
        runs=f"s3://{bucket}/{RUNS_PREFIX}",
        token=token,
        mode=mode,
        start=start,
        now=now,
        items_per_batch=per_batch or default_items_per_batch(map_memory),
        storage_options=storage_options,
        stepfunctions_client=stepfunctions_client,
    )
