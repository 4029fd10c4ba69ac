"""The daily pipeline's progress and outputs, with the operator's log lines (docs/operations.md).

:class:`FileProgress` logs a line after each data file read; :func:`publish_logged` publishes
a run (CloudWatch, then the Analytics Table) as the Aggregator and the Reduce Lambdas do, with
a line as each stage starts; :func:`engagement_logged` then publishes an incremental day's
engagement metrics (WAU/MAU) from the table.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any

from bubbly_metrics._log import log
from bubbly_metrics.exceptions import PublishError

if TYPE_CHECKING:
    from bubbly_metrics.daily import TimeLeft

__all__ = ["FileProgress", "engagement_logged", "publish_logged"]


class FileProgress:
    """An ``on_file`` callback: counts the data files and items read, with a line after each file.

    The line is ``Processed N items so far...`` (``itemsRead``, ``filesRead``, ``dataFile``);
    with ``remaining``, the time left is checked after it (stage ``the scan``).
    """

    def __init__(self, logger: logging.Logger, remaining: TimeLeft | None = None) -> None:
        self.logger = logger
        self.remaining = remaining
        self.items = 0
        self.files = 0
        self.last: float | None = None
        """``time.perf_counter()`` when the last file was read (``None``: none yet)."""

    def __call__(self, data_file: Any, records: int) -> None:
        """Count ``records`` more items from ``data_file`` and log the line."""
        self.items += records
        self.files += 1
        self.last = time.perf_counter()
        log(
            self.logger,
            f"Processed {self.items} items so far...",
            itemsRead=self.items,
            filesRead=self.files,
            dataFile=data_file.key,
        )
        if self.remaining is not None:
            self.remaining.check("the scan")


_STAGE_LINES = {
    "cloudwatch": "Publishing metrics to CloudWatch...",
    "table": "Writing records to Analytics Table...",
}


def publish_logged(
    result: Any,
    *,
    logger: logging.Logger,
    table: str,
    now: dt.datetime,
    dynamodb_client: Any = None,
    cloudwatch_client: Any = None,
    remaining: TimeLeft | None = None,
    allow_partial: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """:func:`~bubbly_metrics.publish.publish` ``result`` with the operator's stage lines.

    The table is written day by day within ``remaining`` time (a day that would not finish is
    not started); ``allow_partial`` publishes although data files could not be read; ``resume``
    leaves the days the ledger holds from this export as they are.

    Logs ``Publishing metrics to CloudWatch...`` and ``Writing records to Analytics Table...``
    as each stage starts (checking ``remaining`` time first) and returns the summary fields a
    handler reports: ``analyticsTable``, ``rowsWritten``, ``itemsWritten``, ``datumsPublished``,
    ``datumsSkippedTooOld``, ``datumsSkippedFuture``, ``cloudwatchWindow``, ``failures``,
    ``timings`` (publish's) and ``note`` when CloudWatch left one.  A
    :class:`~bubbly_metrics.exceptions.PublishError` (raised after doing everything it could)
    carries its report; the handlers' ``json_logging`` logs it.
    """
    from bubbly_metrics.publish import publish

    def on_stage(stage: str) -> None:
        if remaining is not None:
            remaining.check(stage)
        log(logger, _STAGE_LINES[stage])

    report = publish(
        result,
        table=table,
        now=now,
        dynamodb_client=dynamodb_client,
        cloudwatch_client=cloudwatch_client,
        on_stage=on_stage,
        allow_partial=allow_partial,
        resume=resume,
        time_left=remaining.seconds if remaining is not None else None,
    ).to_dict()
    cloudwatch = report.get("cloudwatch") or {}
    fields: dict[str, Any] = {
        "analyticsTable": table,
        **{
            key: report[key]
            for key in (
                "rowsWritten",
                "itemsWritten",
                "datumsPublished",
                "datumsSkippedTooOld",
                "datumsSkippedFuture",
                "failures",
            )
        },
        "cloudwatchWindow": cloudwatch.get("window"),
        "timings": report["timings"],
    }
    if cloudwatch.get("note"):
        fields["note"] = cloudwatch["note"]
    return fields


def engagement_logged(
    day: dt.date,
    *,
    summary: dict[str, Any],
    logger: logging.Logger,
    table: str,
    now: dt.datetime,
    dynamodb_client: Any = None,
    cloudwatch_client: Any = None,
    remaining: TimeLeft | None = None,
) -> dict[str, Any]:
    """:func:`~bubbly_metrics.engagement.publish_engagement` for ``day``, once its rows are committed.

    Logs one line (``Engagement metrics published``, or a warning naming the ledger's missing
    days) and returns the report for the handler's summary.  When it failed, the day's rows
    stay committed, but the invocation ends unsuccessful, as every output failure does
    (docs/rules.md#lambda-entrypoints): a :class:`~bubbly_metrics.exceptions.PublishError`
    carrying ``summary`` with the report under ``engagement`` (the handlers' ``json_logging``
    logs it, as the one line).  Re-running the day (``{"mode": "incremental", "date": ...}``)
    publishes them again, with the same values.
    """
    from bubbly_metrics.engagement import publish_engagement

    report = publish_engagement(
        table,
        day=day,
        now=now,
        dynamodb_client=dynamodb_client,
        cloudwatch_client=cloudwatch_client,
        time_left=remaining.seconds if remaining is not None else None,
    )
    if report["status"] == "failed":
        raise PublishError(
            f"Engagement metrics (WAU/MAU) for {day} not published: {report['error']} — the day's rows are "
            f'committed; re-run the day ({{"mode": "incremental", "date": "{day}"}}) to publish them',
            {**summary, "engagement": report},
        )
    level = logging.WARNING if report["status"] == "incomplete" else logging.INFO
    log(
        logger,
        f"Engagement metrics {report['status']}" + (f": {report['note']}" if report.get("note") else ""),
        level=level,
        engagement=report,
    )
    return report
