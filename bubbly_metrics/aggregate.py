"""The whole job in one call: export location → daily per-app metrics.

Examples
--------
>>> import datetime as dt
>>> from bubbly_metrics import aggregate, sample_export_location
>>> result = aggregate(sample_export_location(), mode="backfill",
...                    now=dt.datetime(2025, 3, 18, 2, 30, tzinfo=dt.UTC))
>>> result.metrics.columns
['date', 'app', 'active_users', 'games_played', 'parties_created', 'parties_joined']
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from bubbly_metrics.dates import DateRange, resolve_range
from bubbly_metrics.exports import DataFile, ExportInfo, find_export
from bubbly_metrics.metrics import (
    COUNTED,
    IGNORED,
    MALFORMED,
    OUTSIDE,
    daily_metrics,
    malformed_counts,
    per_user,
    summarize_events,
)
from bubbly_metrics.records import to_events
from bubbly_metrics.scan import scan_export

__all__ = ["AggregateResult", "aggregate", "summarize_export"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AggregateResult:
    """Everything one aggregation run produced.

    ``metrics`` is the daily per-app table (SPEC §3); ``summary`` the compact table every
    view is derived from (see :func:`bubbly_metrics.metrics.summarize_events`).
    """

    export: ExportInfo
    mode: str
    date_range: DateRange
    summary: pl.DataFrame
    metrics: pl.DataFrame

    @property
    def per_user(self) -> pl.DataFrame:
        """Per ``(date, app, user_id)``: games, parties created, parties joined."""
        return per_user(self.summary).collect()

    def malformed(self, *, by_file: bool = False) -> pl.DataFrame:
        """Malformed records per reason (and per file), with one example's keys."""
        return malformed_counts(self.summary, by_file=by_file).collect()

    def _records(self, status: str) -> int:
        return int(self.summary.filter(pl.col("status") == status)["records"].sum())

    @property
    def items_read(self) -> int:
        """Records read from the export (unreadable lines included)."""
        return int(self.summary["records"].sum())

    @property
    def counts(self) -> dict[str, int]:
        """Records by outcome: counted, ignored (other kinds), malformed, outside the range."""
        return {s: self._records(s) for s in (COUNTED, IGNORED, MALFORMED, OUTSIDE)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able run summary (handlers return it; the CLI prints it on request)."""
        return {
            "exportId": self.export.export_id,
            "exportArn": self.export.export_arn,
            "mode": self.mode,
            "startDate": self.date_range.start.isoformat(),
            "endDate": self.date_range.end.isoformat(),
            "itemsRead": self.items_read,
            "records": self.counts,
            "malformed": {r["reason"]: r["records"] for r in self.malformed().iter_rows(named=True)},
            "rows": self.metrics.height,
        }


def summarize_export(
    export: ExportInfo,
    date_range: DateRange,
    *,
    verify: bool = False,
    threads: int | None = None,
    on_file: Callable[[DataFile, int], None] | None = None,
) -> pl.LazyFrame:
    """The lazy one-pass query behind :func:`aggregate` (collect it with the streaming engine)."""
    records = scan_export(export, verify=verify, threads=threads, on_file=on_file)
    return summarize_events(to_events(records), date_range)


def aggregate(
    source: str | ExportInfo,
    *,
    mode: str = "incremental",
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    date: str | dt.date | None = None,
    now: dt.datetime | None = None,
    storage_options: dict[str, Any] | None = None,
    verify: bool = False,
    threads: int | None = None,
    on_file: Callable[[DataFile, int], None] | None = None,
) -> AggregateResult:
    """Aggregate an export into daily per-app metrics.

    Parameters
    ----------
    source
        Export location (local folder or ``s3://`` URI) or an :class:`ExportInfo`.  For a
        location, the latest completed export of the mode's type is used: FULL for
        ``backfill``, INCREMENTAL for ``incremental`` (whose window must cover the day).
    mode
        ``"incremental"`` (one day: ``date`` or yesterday) or ``"backfill"`` (``start``,
        default 2025-01-17, to ``end``, default yesterday; output is dense).
    now
        The current time (UTC-aware); defaults to the wall clock.  Inject it for
        reproducible runs.
    storage_options, verify, threads, on_file
        As for :func:`~bubbly_metrics.scan_export`.

    Returns
    -------
    AggregateResult
    """
    date_range = resolve_range(mode=mode, start=start, end=end, date=date, now=now)
    export = find_export(
        source,
        export_type="full" if mode == "backfill" else "incremental",
        covering=date_range.start if mode == "incremental" else None,
        storage_options=storage_options,
    )
    logger.info("aggregating %s export %s for %s", export.export_type, export.export_id, date_range)
    summary = summarize_export(export, date_range, verify=verify, threads=threads, on_file=on_file).collect(
        engine="streaming"
    )
    metrics = daily_metrics(summary, date_range, dense=mode == "backfill").collect()
    return AggregateResult(export, mode, date_range, summary, metrics)
