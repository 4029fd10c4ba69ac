"""Publish one aggregation run: CloudWatch metrics, then the Analytics Table (SPEC §5, §6).

The Aggregator Lambda and the CLI's ``aggregate --publish`` / ``--dry-run`` both call
:func:`publish`.  The two outputs are isolated: a CloudWatch failure does not stop the table
writes, nor the reverse.  The run does all the work it can, then raises one
:class:`~bubbly_metrics.exceptions.PublishError` naming every failure, with the full report
attached — so Lambda records a failed invocation and the CLI exits non-zero, and re-running
is always safe (table writes are idempotent overwrites; CloudWatch is read with ``Maximum``).

Each day of the table is replaced whole, with its ledger entry, or not at all
(:func:`~bubbly_metrics.analytics_table.write_analytics_table`).  A run that could not read
every data file publishes nothing unless ``allow_partial`` is given (SPEC §11: less never
replaces more).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bubbly_metrics._retry import Backoff
from bubbly_metrics.analytics_table import (
    ITEM_BUDGET,
    build_items,
    item_size,
    storable,
    write_analytics_table,
)
from bubbly_metrics.cloudwatch import DEFAULT_MARGIN, NAMESPACE, publish_metrics
from bubbly_metrics.exceptions import IncompleteExportError, InvalidArgumentError, OutputError, PublishError

if TYPE_CHECKING:  # pragma: no cover
    from bubbly_metrics.pipeline import AggregateResult

__all__ = ["STAGES", "publish"]

logger = logging.getLogger(__name__)

STAGES = ("cloudwatch", "table")
"""Stages in the order they run; ``on_stage`` is called with each before it starts."""


def _failure_from(exc: Exception, target: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    if isinstance(exc, OutputError) and exc.report:
        report = dict(exc.report)
        failures = list(report.get("failures") or [])  # type: ignore[call-overload]
        return report, failures or [{"target": target, "error": str(exc)}]
    return None, [{"target": target, "error": f"{type(exc).__name__}: {exc}"}]


def publish(
    result: AggregateResult,
    *,
    table: str | None,
    cloudwatch: bool = True,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    dynamodb_client: Any = None,
    cloudwatch_client: Any = None,
    namespace: str = NAMESPACE,
    margin: dt.timedelta = DEFAULT_MARGIN,
    backoff: Backoff | None = None,
    budget: int = ITEM_BUDGET,
    on_stage: Callable[[str], None] | None = None,
    allow_partial: bool = False,
    time_left: Callable[[], float | None] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Publish an aggregation's metrics to CloudWatch and write them to the Analytics Table.

    Parameters
    ----------
    result
        What :func:`bubbly_metrics.aggregate` returned.
    table
        The Analytics Table's name; ``None`` skips the table.
    cloudwatch
        Publish to CloudWatch (days inside its two-week window only).
    dry_run
        Talk to no AWS service: report what would be written and sent.
    now
        The current time (UTC-aware; default: wall clock): CloudWatch's window,
        ``aggregatedAt`` and ``expiresAt``.
    dynamodb_client, cloudwatch_client
        boto3 clients; built from the environment when not given.
    namespace, margin
        CloudWatch namespace and window margin (see :mod:`bubbly_metrics.cloudwatch`).
    backoff
        Retry policy for throttling and unprocessed items, for both outputs.
    budget
        Bytes per Analytics Table item before a day is split (see
        :data:`bubbly_metrics.analytics_table.ITEM_BUDGET`).
    on_stage
        Called with ``"cloudwatch"`` and then ``"table"`` as each stage starts (handlers log
        the guide's progress lines from it).
    allow_partial
        Publish although data files the manifest lists could not be read
        (``result.unreadable_files()``).  Without it such a run publishes nothing: it would
        replace more data with less.  With it, the ledger entries are marked ``partial``.
    time_left
        Seconds the caller has left (a Lambda's remaining time); the table is written day by
        day, and a day that would not finish in time is not started
        (:func:`~bubbly_metrics.analytics_table.write_analytics_table`).
    resume
        Leave as they are the days the ledger already holds, whole, from this export (the
        automatic runs: a retried or redelivered event continues where time ran out).

    Returns
    -------
    dict
        JSON-able report: ``dryRun``, the run (``exportArn``, ``mode``, ``startDate``,
        ``endDate``), ``rowsWritten``, ``itemsWritten``, ``datumsPublished``,
        ``datumsSkippedTooOld``, ``datumsSkippedFuture``, per-output details under
        ``cloudwatch`` and ``analyticsTable``, the days recorded in the ledger under ``ledger``
        (each day's entry is written with its rows), ``failures`` (empty) and ``timings``
        (seconds); ``unreadableFiles`` when data files could not be read (a dry run, or
        ``allow_partial``).
        With ``dry_run``, ``rows``/``items``/``datums`` say what would be written and sent.

    Raises
    ------
    IncompleteExportError
        Before anything is sent, when data files could not be read and ``allow_partial`` is
        not given: the table and CloudWatch are left exactly as they were.
    PublishError
        After both stages ran, when either failed; ``.report`` is the report above with
        every failure listed.
    """
    if table is None and not cloudwatch:
        raise InvalidArgumentError("nothing to publish: give table= and/or cloudwatch=True")
    if table is not None and (not isinstance(table, str) or not table):
        raise InvalidArgumentError(f"table must name the Analytics Table, got {table!r}")
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise InvalidArgumentError(f"now must be timezone-aware (UTC), got naive {now!r}")
    export_arn = result.export.export_arn
    report: dict[str, Any] = {
        "dryRun": dry_run,
        "exportArn": export_arn,
        "mode": result.mode,
        "startDate": result.date_range.start.isoformat(),
        "endDate": result.date_range.end.isoformat(),
        "rowsWritten": 0,
        "itemsWritten": 0,
        "datumsPublished": 0,
        "datumsSkippedTooOld": 0,
        "datumsSkippedFuture": 0,
        "cloudwatch": None,
        "analyticsTable": None,
        "failures": [],
        "timings": {},
    }
    metrics = result.metrics
    unreadable = result.unreadable_files()
    if unreadable:
        report["unreadableFiles"] = [{"file": f, "reason": r} for f, r in unreadable]
        if not (allow_partial or dry_run):
            raise IncompleteExportError(_incomplete_message(result, unreadable))
        logger.warning(
            "publishing although %d data file(s) could not be read (allow_partial): %s",
            len(unreadable),
            _describe_files(unreadable),
        )

    # Each stage is a failure boundary: whatever goes wrong in one (throttling that outlasted
    # the retries, missing permissions, a missing table, no credentials) is recorded and the
    # other stage still runs.
    if cloudwatch:
        if on_stage is not None:
            on_stage("cloudwatch")
        started = time.perf_counter()
        stage: dict[str, Any] | None
        try:
            stage = publish_metrics(
                metrics,
                now=now,
                client=cloudwatch_client,
                namespace=namespace,
                margin=margin,
                backoff=backoff,
                dry_run=dry_run,
            )
        except Exception as exc:
            stage, failures = _failure_from(exc, "cloudwatch")
            report["failures"].extend(failures)
            logger.warning("CloudWatch publish failed: %s", exc)
        report["timings"]["publish"] = round(time.perf_counter() - started, 3)
        if stage is not None:
            report["cloudwatch"] = stage
            report["datumsPublished"] = stage["datumsPublished"]
            report["datumsSkippedTooOld"] = stage["datumsSkippedTooOld"]
            report["datumsSkippedFuture"] = stage["datumsSkippedFuture"]
            if dry_run:
                report["datums"] = stage["datums"]

    if table is not None:
        if on_stage is not None:
            on_stage("table")
        started = time.perf_counter()
        try:
            per_user = result.per_user
            if dry_run:
                groups = build_items(
                    metrics,
                    per_user=per_user,
                    export_arn=export_arn,
                    mode=result.mode,
                    now=now,
                    budget=budget,
                )
                stage = {
                    "table": table,
                    "rows": len(groups),
                    "items": sum(len(g) for g in groups),
                    "splitRows": sum(len(g) > 1 for g in groups),
                    "largestItemBytes": max((item_size(i) for g in groups for i in g), default=0),
                    "failures": storable(groups)[1],
                }
            else:
                from bubbly_metrics.ledger import ledger_entries

                # The ledger entry of a day goes in with its rows.  When CloudWatch failed, the
                # days' entries are removed instead: the daily pipeline then runs them again.
                cloudwatch_failed = any(f.get("target") == "cloudwatch" for f in report["failures"])
                entries = None if cloudwatch_failed else ledger_entries(result, now=now, partial=bool(unreadable))
                stage = write_analytics_table(
                    metrics,
                    per_user=per_user,
                    table=table,
                    export_arn=export_arn,
                    mode=result.mode,
                    dates=[result.date_range.start + dt.timedelta(days=i) for i in range(result.date_range.days)],
                    now=now,
                    client=dynamodb_client,
                    backoff=backoff,
                    budget=budget,
                    ledger=entries,
                    time_left=time_left,
                    resume=resume,
                )
                report["ledger"] = {
                    "days": result.date_range.days,
                    "daysRecorded": 0 if entries is None else len(stage["daysWritten"]),
                    "partial": bool(unreadable),
                }
        except Exception as exc:
            stage, failures = _failure_from(exc, "analytics_table")
            report["failures"].extend(failures)
            logger.warning("Analytics Table write failed: %s", exc)
        report["timings"]["write"] = round(time.perf_counter() - started, 3)
        if stage is not None:
            report["analyticsTable"] = stage
            if dry_run:
                report["rows"], report["items"] = stage["rows"], stage["items"]
            else:
                report["rowsWritten"], report["itemsWritten"] = (
                    stage["rowsWritten"],
                    stage["itemsWritten"],
                )

    if report["failures"]:
        parts = []
        for target, label in (
            ("cloudwatch", "CloudWatch"),
            ("analytics_table", "Analytics Table"),
            ("ledger", "ledger"),
        ):
            mine = [f for f in report["failures"] if f.get("target") == target]
            if mine:
                parts.append(f"{label}: {len(mine)} failure(s), first: {mine[0]['error']}")
        raise PublishError(
            "publishing failed — " + "; ".join(parts) + " (everything else was done; re-running is safe)",
            report,
        )
    return report


def _describe_files(unreadable: list[tuple[str, str]]) -> str:
    shown = ", ".join(f"{f} ({r})" for f, r in unreadable[:5])
    return shown + (f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")


def _incomplete_message(result: AggregateResult, unreadable: list[tuple[str, str]]) -> str:
    return (
        f"export {result.export.export_id}: {len(unreadable)} data file(s) listed in its manifest could not be "
        f"read: {_describe_files(unreadable)}. Nothing was published (the Analytics Table, its ledger and "
        "CloudWatch are as they were): the run would replace more data with less. Export again (a new export "
        'of the same days), or publish what was read with --allow-partial (CLI) / "allowPartial": true '
        "(Lambda event); its ledger entries are then marked partial"
    )
