"""Publish one aggregation run: CloudWatch metrics, then the Analytics Table.

See docs/rules.md#analytics-table, docs/rules.md#cloudwatch and docs/rules.md#lambda-entrypoints.
The Aggregator Lambda and the CLI's ``aggregate --publish`` / ``--dry-run`` both call
:func:`publish`.  The two outputs are isolated: a CloudWatch failure does not stop the table
writes, nor the reverse.  The run does all the work it can, then raises one
:class:`~bubbly_metrics.exceptions.PublishError` naming every failure, with the full report
attached — so Lambda records a failed invocation and the CLI exits non-zero, and re-running
is always safe (table writes are idempotent overwrites; CloudWatch is read with ``Maximum``).

Each day of the table is replaced whole, with its ledger entry, or not at all
(:func:`~bubbly_metrics.analytics_table.write_analytics_table`).  A run that could not read
every data file publishes nothing unless ``allow_partial`` is given (less never replaces more:
docs/rules.md#faults-and-hostile-input).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bubbly_metrics._retry import Backoff
from bubbly_metrics._time import utc_now
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

__all__ = ["STAGES", "PublishReport", "publish"]

logger = logging.getLogger(__name__)

STAGES = ("cloudwatch", "table")
"""Stages in the order they run; ``on_stage`` is called with each before it starts."""


@dataclasses.dataclass
class PublishReport:
    """What :func:`publish` did — or, with ``dry_run``, would do: the same fields either way.

    ``rows_written``, ``items_written`` and ``datums_published`` count what was written and
    sent, or in a dry run what would be.  :meth:`to_dict` gives the JSON-able report the
    handlers log and :class:`~bubbly_metrics.exceptions.PublishError` carries (camelCase keys).
    """

    dry_run: bool
    export_arn: str | None
    mode: str
    start_date: dt.date
    end_date: dt.date
    rows_written: int = 0
    items_written: int = 0
    datums_published: int = 0
    datums_skipped_too_old: int = 0
    datums_skipped_future: int = 0
    cloudwatch: dict[str, Any] | None = None
    """:func:`~bubbly_metrics.cloudwatch.publish_metrics`'s report; ``None`` when not published."""
    analytics_table: dict[str, Any] | None = None
    """The table stage's report (a dry run's plan: ``rows``, ``items``, ``splitRows``, ...)."""
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    """Seconds: ``publish`` (CloudWatch) and ``write`` (the table)."""
    unreadable_files: list[dict[str, str]] | None = None
    """``file`` and ``reason`` of each data file that could not be read (dry run, ``allow_partial``)."""
    ledger: dict[str, Any] | None = None
    """``days``, ``daysRecorded``, ``partial``: the ledger entries written with the rows (real runs)."""

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able camelCase keys (``unreadableFiles`` and ``ledger`` only when set)."""
        report: dict[str, Any] = {
            "dryRun": self.dry_run,
            "exportArn": self.export_arn,
            "mode": self.mode,
            "startDate": self.start_date.isoformat(),
            "endDate": self.end_date.isoformat(),
            "rowsWritten": self.rows_written,
            "itemsWritten": self.items_written,
            "datumsPublished": self.datums_published,
            "datumsSkippedTooOld": self.datums_skipped_too_old,
            "datumsSkippedFuture": self.datums_skipped_future,
            "cloudwatch": self.cloudwatch,
            "analyticsTable": self.analytics_table,
            "failures": list(self.failures),
            "timings": dict(self.timings),
        }
        if self.unreadable_files is not None:
            report["unreadableFiles"] = list(self.unreadable_files)
        if self.ledger is not None:
            report["ledger"] = self.ledger
        return report

    @classmethod
    def from_dict(cls, report: dict[str, Any]) -> PublishReport:
        """The inverse of :meth:`to_dict` (e.g. a :class:`~bubbly_metrics.exceptions.PublishError`'s ``report``)."""
        return cls(
            dry_run=report["dryRun"],
            export_arn=report["exportArn"],
            mode=report["mode"],
            start_date=dt.date.fromisoformat(report["startDate"]),
            end_date=dt.date.fromisoformat(report["endDate"]),
            rows_written=report["rowsWritten"],
            items_written=report["itemsWritten"],
            datums_published=report["datumsPublished"],
            datums_skipped_too_old=report["datumsSkippedTooOld"],
            datums_skipped_future=report["datumsSkippedFuture"],
            cloudwatch=report["cloudwatch"],
            analytics_table=report["analyticsTable"],
            failures=list(report["failures"]),
            timings=dict(report["timings"]),
            unreadable_files=report.get("unreadableFiles"),
            ledger=report.get("ledger"),
        )


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
) -> PublishReport:
    """Publish an aggregation's metrics to CloudWatch and write them to the Analytics Table.

    ``result`` is what :func:`bubbly_metrics.aggregate` returned; ``table`` the Analytics
    Table's name (``None`` skips the table); ``cloudwatch`` publishes the days inside
    CloudWatch's two-week window.  ``dry_run`` talks to no AWS service: the report says what
    would be written and sent.  ``now`` (UTC-aware; default: wall clock) sets CloudWatch's
    window, ``aggregatedAt`` and ``expiresAt``.  ``dynamodb_client`` and ``cloudwatch_client``
    are boto3 clients (built from the environment when not given); ``namespace`` and ``margin``
    as in :mod:`bubbly_metrics.cloudwatch`; ``backoff`` is the retry policy of both outputs for
    throttling and unprocessed items; ``budget`` the bytes per table item before a day is split
    (:data:`~bubbly_metrics.analytics_table.ITEM_BUDGET`).  ``on_stage`` is called with
    ``"cloudwatch"``, then ``"table"``, as each stage starts (handlers log the progress lines of
    docs/operations.md from it).

    ``allow_partial`` publishes although data files the manifest lists could not be read
    (``result.unreadable_files()``), marking their days' ledger entries ``partial``; without it
    such a run publishes nothing: it would replace more data with less.  ``time_left`` (seconds
    the caller has left, a Lambda's remaining time) keeps the table, written day by day, from
    starting a day that would not finish in time
    (:func:`~bubbly_metrics.analytics_table.write_analytics_table`).  ``resume`` leaves as they
    are the days the ledger already holds, whole, from this export (the automatic runs: a
    retried or redelivered event continues where time ran out).

    Returns a :class:`PublishReport`, with the same fields in a dry run.  Raises
    :class:`~bubbly_metrics.exceptions.IncompleteExportError` before anything is sent when data
    files could not be read and ``allow_partial`` is not given (the table and CloudWatch are
    left exactly as they were), and :class:`~bubbly_metrics.exceptions.PublishError` after both
    stages ran when either failed (``.report``: the report's ``to_dict()``, every failure listed).
    """
    now = _check_outputs(table, cloudwatch, now)
    days = result.date_range
    report = PublishReport(dry_run, result.export.export_arn, result.mode, days.start, days.end)
    unreadable = _check_files(result, report, allow_partial=allow_partial)
    # Each stage is a failure boundary: whatever goes wrong in one (throttling that outlasted
    # the retries, missing permissions, a missing table, no credentials) is recorded and the
    # other stage still runs.
    if cloudwatch:
        if on_stage is not None:
            on_stage("cloudwatch")
        _cloudwatch_stage(result, report, now, cloudwatch_client, namespace=namespace, margin=margin, backoff=backoff)
    if table is not None:
        if on_stage is not None:
            on_stage("table")
        write = {"client": dynamodb_client, "backoff": backoff, "time_left": time_left, "resume": resume}
        _table_stage(result, report, table, now, budget=budget, partial=bool(unreadable), **write)
    if report.failures:
        raise PublishError(_failure_message(report.failures), report.to_dict())
    return report


# -- the steps ------------------------------------------------------------------------------------


def _check_outputs(table: str | None, cloudwatch: bool, now: dt.datetime | None) -> dt.datetime:
    """At least one output, a table name that is one, and an aware ``now``."""
    if table is None and not cloudwatch:
        raise InvalidArgumentError("nothing to publish: give table= and/or cloudwatch=True")
    if table is not None and (not isinstance(table, str) or not table):
        raise InvalidArgumentError(f"table must name the Analytics Table, got {table!r}")
    return utc_now(now)


def _check_files(result: AggregateResult, report: PublishReport, *, allow_partial: bool) -> list[tuple[str, str]]:
    """The data files that could not be read; refuses to publish less than all of them unless allowed."""
    unreadable = result.unreadable_files()
    if unreadable:
        report.unreadable_files = [{"file": f, "reason": r} for f, r in unreadable]
        if not (allow_partial or report.dry_run):
            raise IncompleteExportError(_incomplete_message(result, unreadable))
        logger.warning(
            "publishing although %d data file(s) could not be read (allow_partial): %s",
            len(unreadable),
            _describe_files(unreadable),
        )
    return unreadable


def _failure_from(exc: Exception, target: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    if isinstance(exc, OutputError) and exc.report:
        report = dict(exc.report)
        failures = list(report.get("failures") or [])  # type: ignore[call-overload]
        return report, failures or [{"target": target, "error": str(exc)}]
    return None, [{"target": target, "error": f"{type(exc).__name__}: {exc}"}]


def _cloudwatch_stage(
    result: AggregateResult,
    report: PublishReport,
    now: dt.datetime,
    client: Any,
    *,
    namespace: str,
    margin: dt.timedelta,
    backoff: Backoff | None,
) -> None:
    """Publish (or plan) the datums; a failure is recorded in ``report``, not raised."""
    started = time.perf_counter()
    stage: dict[str, Any] | None
    try:
        stage = publish_metrics(
            result.metrics,
            now=now,
            client=client,
            namespace=namespace,
            margin=margin,
            backoff=backoff,
            dry_run=report.dry_run,
        )
    except Exception as exc:
        stage, failures = _failure_from(exc, "cloudwatch")
        report.failures.extend(failures)
        logger.warning("CloudWatch publish failed: %s", exc)
    report.timings["publish"] = round(time.perf_counter() - started, 3)
    if stage is not None:
        report.cloudwatch = stage
        report.datums_published = stage["datums"] if report.dry_run else stage["datumsPublished"]
        report.datums_skipped_too_old = stage["datumsSkippedTooOld"]
        report.datums_skipped_future = stage["datumsSkippedFuture"]


def _table_stage(
    result: AggregateResult,
    report: PublishReport,
    table: str,
    now: dt.datetime,
    *,
    budget: int,
    partial: bool,
    **write: Any,
) -> None:
    """Write (or plan) the Analytics Table's days; a failure is recorded in ``report``, not raised."""
    started = time.perf_counter()
    stage: dict[str, Any] | None
    try:
        if report.dry_run:
            stage = _plan_table(result, table=table, now=now, budget=budget)
        else:
            stage = _write_table(result, report, table=table, now=now, budget=budget, partial=partial, **write)
    except Exception as exc:
        stage, failures = _failure_from(exc, "analytics_table")
        report.failures.extend(failures)
        logger.warning("Analytics Table write failed: %s", exc)
    report.timings["write"] = round(time.perf_counter() - started, 3)
    if stage is not None:
        report.analytics_table = stage
        if report.dry_run:
            report.rows_written, report.items_written = stage["rows"], stage["items"]
        else:
            report.rows_written, report.items_written = stage["rowsWritten"], stage["itemsWritten"]


def _plan_table(result: AggregateResult, *, table: str, now: dt.datetime, budget: int) -> dict[str, Any]:
    """A dry run's table stage: the items that would be written, and how they split."""
    groups = build_items(
        result.metrics,
        per_user=result.per_user,
        export_arn=result.export.export_arn,
        mode=result.mode,
        now=now,
        budget=budget,
    )
    return {
        "table": table,
        "rows": len(groups),
        "items": sum(len(g) for g in groups),
        "splitRows": sum(len(g) > 1 for g in groups),
        "largestItemBytes": max((item_size(i) for g in groups for i in g), default=0),
        "failures": storable(groups)[1],
    }


def _write_table(
    result: AggregateResult,
    report: PublishReport,
    *,
    table: str,
    now: dt.datetime,
    budget: int,
    partial: bool,
    client: Any,
    backoff: Backoff | None,
    time_left: Callable[[], float | None] | None,
    resume: bool,
) -> dict[str, Any]:
    """Write the days with their ledger entries; ``report.ledger`` says how many were recorded."""
    from bubbly_metrics.ledger import ledger_entries

    # The ledger entry of a day goes in with its rows.  When CloudWatch failed, the days'
    # entries are removed instead: the daily pipeline then runs them again.
    cloudwatch_failed = any(f.get("target") == "cloudwatch" for f in report.failures)
    entries = None if cloudwatch_failed else ledger_entries(result, now=now, partial=partial)
    days = result.date_range
    stage = write_analytics_table(
        result.metrics,
        per_user=result.per_user,
        table=table,
        export_arn=result.export.export_arn,
        mode=result.mode,
        dates=[days.start + dt.timedelta(days=i) for i in range(days.days)],
        now=now,
        client=client,
        backoff=backoff,
        budget=budget,
        ledger=entries,
        time_left=time_left,
        resume=resume,
    )
    report.ledger = {
        "days": days.days,
        "daysRecorded": 0 if entries is None else len(stage["daysWritten"]),
        "partial": partial,
    }
    return stage


def _failure_message(failures: list[dict[str, Any]]) -> str:
    """One line naming each output's failures (the first of each)."""
    parts = []
    for target, label in (
        ("cloudwatch", "CloudWatch"),
        ("analytics_table", "Analytics Table"),
        ("ledger", "ledger"),
    ):
        mine = [f for f in failures if f.get("target") == target]
        if mine:
            parts.append(f"{label}: {len(mine)} failure(s), first: {mine[0]['error']}")
    return "publishing failed — " + "; ".join(parts) + " (everything else was done; re-running is safe)"


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
