"""Reconcile an export against what was published: the Analytics Table and CloudWatch (docs/rules.md#notebooks).

After a backfill someone has to decide whether the published numbers are right.  This module
recomputes the expected daily metrics from an export (:func:`~bubbly_metrics.aggregate`),
reads back what the Analytics Table and CloudWatch hold, and lists every
``(date, app, metric)`` where they differ, with both values and the likely *cause* where the
export shows one (:class:`Cause`):

- sessions whose ``updatedAt`` moved them to a later day than their ``createdAt`` (a session
  counts on the day of its last update, so a table written by earlier daily runs still
  counts it on the earlier day);
- items in the export that were past their TTL (``expiresAt``) when it was taken — DynamoDB
  deletes expired items lazily, so exports taken at different times disagree about them;
- items deleted from the main table, as listed by an incremental export's deletes;
- days older than CloudWatch's two-week window (never sent there: not a difference);
- ``(date, app)`` rows missing from the table (or from CloudWatch), and rows the table holds
  for apps the export has no activity for.

Everything else is *unexplained*.  :func:`reconcile` does it all in one call and returns a
:class:`ReconcileResult`; the CLI's ``reconcile`` command and the backfill reconciliation
notebook both use it.  What stands for the Analytics Table is one argument: the table's name,
a :class:`Snapshot` of it, or :class:`DailyRuns` (what the daily runs wrote, replayed offline).

One module per job, each public piece re-exported here:

- :mod:`.compare`: :func:`compare_metrics` (pure, on frames) and :func:`compare_per_user`;
- :mod:`.evidence`: :func:`discrepancy_evidence`, what in the export could explain a difference;
- :mod:`.deletes`: :func:`read_deletes`, the deleted items of incremental exports;
- :mod:`.stand_ins`: what stands for the table: :func:`read_snapshot`, :func:`daily_runs_table`;
- :mod:`.causes`: :class:`Cause`, its advice, and :func:`classify_differences`;
- :mod:`.heatmap`: :func:`relative_difference_matrix`;
- :mod:`.result` and :mod:`.run`: :class:`ReconcileResult` and :func:`reconcile`.

The package is not called ``reconcile`` so that ``bubbly_metrics.reconcile`` stays the function.

Examples
--------
Comparing two metric frames needs no AWS at all:

>>> import datetime as dt
>>> import polars as pl
>>> expected = pl.DataFrame({"date": [dt.date(2025, 3, 1)], "app": ["chess"],
...                          "active_users": [2], "games_played": [3],
...                          "parties_created": [1], "parties_joined": [0]})
>>> actual = expected.with_columns(games_played=pl.lit(4))
>>> diff = compare_metrics(expected, actual, target="analytics_table")
>>> diff.filter(pl.col("status") == "differs").select("metric", "expected", "actual").rows()
[('games_played', 3, 4)]
"""

from __future__ import annotations

from bubbly_metrics.reconciliation.causes import ADVICE, CAUSES, Cause, classify_differences
from bubbly_metrics.reconciliation.compare import (
    COMPARISON_SCHEMA,
    STATUSES,
    TARGETS,
    compare_metrics,
    compare_per_user,
)
from bubbly_metrics.reconciliation.deletes import DELETES_SCHEMA, read_deletes
from bubbly_metrics.reconciliation.evidence import EVIDENCE_COLUMNS, EVIDENCE_SCHEMA, discrepancy_evidence
from bubbly_metrics.reconciliation.heatmap import relative_difference_matrix
from bubbly_metrics.reconciliation.result import DIFFERENCE_COLUMNS, ReconcileResult
from bubbly_metrics.reconciliation.run import reconcile
from bubbly_metrics.reconciliation.stand_ins import (
    DailyRuns,
    Snapshot,
    TableSource,
    daily_runs_table,
    read_snapshot,
    table_source,
)

__all__ = [
    "ADVICE",
    "CAUSES",
    "COMPARISON_SCHEMA",
    "DELETES_SCHEMA",
    "DIFFERENCE_COLUMNS",
    "EVIDENCE_COLUMNS",
    "EVIDENCE_SCHEMA",
    "STATUSES",
    "TARGETS",
    "Cause",
    "DailyRuns",
    "ReconcileResult",
    "Snapshot",
    "TableSource",
    "classify_differences",
    "compare_metrics",
    "compare_per_user",
    "daily_runs_table",
    "discrepancy_evidence",
    "read_deletes",
    "read_snapshot",
    "reconcile",
    "relative_difference_matrix",
    "table_source",
]
