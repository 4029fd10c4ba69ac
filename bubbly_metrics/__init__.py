"""Daily per-app product analytics from DynamoDB table exports, scanned lazily into Polars.

Two or three calls take a notebook from an export to a daily-metrics DataFrame::

    import bubbly_metrics as bm
    result = bm.aggregate("s3://bucket/exports/", mode="backfill", start="2025-01-17")
    result.metrics            # date, app, active_users, games_played, parties_created, ...
    bm.scan_export("s3://bucket/exports/", export_type="full")   # the LazyFrame underneath

``import bubbly_metrics`` is cheap: Polars, boto3 and s3fs load on first use.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

_EXPORTS = {
    "aggregate": "bubbly_metrics.pipeline",
    "AggregateResult": "bubbly_metrics.pipeline",
    "summarize_export": "bubbly_metrics.pipeline",
    "scan_export": "bubbly_metrics.scan",
    "read_export": "bubbly_metrics.scan",
    "RAW_SCHEMA": "bubbly_metrics.scan",
    "list_exports": "bubbly_metrics.exports",
    "exports_frame": "bubbly_metrics.exports",
    "find_export": "bubbly_metrics.exports",
    "verify_export": "bubbly_metrics.exports",
    "ExportInfo": "bubbly_metrics.exports",
    "DataFile": "bubbly_metrics.exports",
    "to_events": "bubbly_metrics.records",
    "daily_metrics": "bubbly_metrics.metrics",
    "user_activity": "bubbly_metrics.metrics",
    "record_outcomes": "bubbly_metrics.metrics",
    "malformed_counts": "bubbly_metrics.metrics",
    "resolve_range": "bubbly_metrics.dates",
    "parse_instant": "bubbly_metrics.dates",
    "source_or_sample": "bubbly_metrics.sample",
    "DateRange": "bubbly_metrics.dates",
    "reconcile": "bubbly_metrics.reconciliation",
    "ReconcileResult": "bubbly_metrics.reconciliation",
    "Snapshot": "bubbly_metrics.reconciliation",
    "DailyRuns": "bubbly_metrics.reconciliation",
    "sample_export_location": "bubbly_metrics.sample",
    "SAMPLE_NOW": "bubbly_metrics.sample",
    "BubblyMetricsError": "bubbly_metrics.exceptions",
    "active_user_days": "bubbly_metrics.engagement",
    "engagement_metrics": "bubbly_metrics.engagement",
    "engagement_from_table": "bubbly_metrics.engagement",
    "read_activity": "bubbly_metrics.engagement",
    "retention": "bubbly_metrics.engagement",
    "retention_curve": "bubbly_metrics.engagement",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from bubbly_metrics.dates import DateRange, parse_instant, resolve_range
    from bubbly_metrics.engagement import (
        active_user_days,
        engagement_from_table,
        engagement_metrics,
        retention,
        retention_curve,
    )
    from bubbly_metrics.exceptions import BubblyMetricsError
    from bubbly_metrics.exports import DataFile, ExportInfo, exports_frame, find_export, list_exports, verify_export
    from bubbly_metrics.metrics import daily_metrics, malformed_counts, record_outcomes, user_activity
    from bubbly_metrics.pipeline import AggregateResult, aggregate, summarize_export
    from bubbly_metrics.reconciliation import DailyRuns, ReconcileResult, Snapshot, reconcile
    from bubbly_metrics.records import to_events
    from bubbly_metrics.sample import SAMPLE_NOW, sample_export_location, source_or_sample
    from bubbly_metrics.scan import RAW_SCHEMA, read_export, scan_export


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bubbly_metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # The public names only: not the imports this module uses, nor submodules once loaded.
    return sorted([*__all__, "__version__"])
