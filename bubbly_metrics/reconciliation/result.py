"""The result of one reconciliation: what was compared, what differs, and why."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import polars as pl

from bubbly_metrics.dates import DateRange
from bubbly_metrics.exports import ExportInfo
from bubbly_metrics.metrics import METRIC_COLUMNS
from bubbly_metrics.pipeline import AggregateResult
from bubbly_metrics.reconciliation.causes import ADVICE, CAUSES
from bubbly_metrics.reconciliation.compare import DIFFERS, MATCH, OUTSIDE_WINDOW, TARGETS, compare_per_user

__all__ = ["DIFFERENCE_COLUMNS", "ReconcileResult"]

DIFFERENCE_COLUMNS = (
    "target",
    "date",
    "app",
    "metric",
    "expected",
    "actual",
    "difference",
    "relative_difference",
    "cause",
    "detail",
)


@dataclass(frozen=True)
class ReconcileResult:
    """Everything one reconciliation found (:func:`reconcile`).

    ``comparison`` holds every compared ``(target, date, app, metric)`` (status, evidence,
    cause); :attr:`differences` only those that differ.
    """

    aggregate: AggregateResult
    """The aggregation of the export: expected metrics, per-user data, malformed counts."""
    comparison: pl.DataFrame
    """:func:`classify_differences` output for every target compared."""
    evidence: pl.DataFrame
    """:func:`discrepancy_evidence` output (empty when not computed)."""
    table: pl.DataFrame | None = None
    """What the Analytics Table holds for the range (``None``: not compared)."""
    cloudwatch: pl.DataFrame | None = None
    """What CloudWatch holds inside its window (``None``: not compared)."""
    cloudwatch_window: tuple[dt.date, dt.date] | None = None
    """First and last day CloudWatch accepts at the reconciliation's ``now``."""
    deletes: pl.DataFrame | None = None
    """Deleted items read from the incremental export (``None``: none given)."""
    deletes_export: ExportInfo | None = None
    """The latest incremental export the deletes come from."""
    analytics_table: str | None = None
    """The Analytics Table's name, or what stood for it: ``snapshot PATH`` or ``daily runs (N days)``."""
    table_source: str = "analytics_table"
    """What ``table`` was read from: ``"analytics_table"``, ``"snapshot"`` or ``"daily_runs"``."""

    @property
    def export(self) -> ExportInfo:
        """The export the expected metrics come from."""
        return self.aggregate.export

    @property
    def date_range(self) -> DateRange:
        """The days reconciled."""
        return self.aggregate.date_range

    @property
    def expected(self) -> pl.DataFrame:
        """Expected daily metrics (``AggregateResult.metrics``)."""
        return self.aggregate.metrics

    @property
    def targets(self) -> list[str]:
        """The targets compared, in :data:`TARGETS` order."""
        compared = {
            "analytics_table": self.table is not None,
            "cloudwatch": self.cloudwatch is not None,
        }
        return [t for t in TARGETS if compared[t]]

    @property
    def differences(self) -> pl.DataFrame:
        """The ``(target, date, app, metric)`` that differ: values, ``cause`` and ``detail``."""
        return self.comparison.filter(pl.col("status") == DIFFERS).select(DIFFERENCE_COLUMNS)

    @property
    def outside_window(self) -> pl.DataFrame:
        """Values not compared with CloudWatch because their day is older than its window."""
        return self.comparison.filter(pl.col("status") == OUTSIDE_WINDOW).select(DIFFERENCE_COLUMNS)

    @property
    def differs(self) -> bool:
        """True when any compared value differs (the CLI exits 1)."""
        return bool(self.comparison.filter(pl.col("status") == DIFFERS).height)

    @property
    def user_differences(self) -> pl.DataFrame | None:
        """Per-user differences with the Analytics Table (:func:`compare_per_user`)."""
        if self.table is None or "games_per_user" not in self.table.columns:
            return None  # no table, or a snapshot without per-user data (Parquet)
        return compare_per_user(self.aggregate.per_user, self.table)

    def causes(self) -> pl.DataFrame:
        """Differing values per target and cause, with what each cause means and what to do.

        Days outside CloudWatch's window are listed too (they are not differences).
        """
        counted = (
            self.comparison.filter(pl.col("status") != MATCH)
            .group_by("target", "cause")
            .agg(pl.len().cast(pl.Int64).alias("values"))
        )
        advice = pl.DataFrame(
            [(c, *ADVICE[c]) for c in CAUSES],
            schema={"cause": pl.String, "meaning": pl.String, "action": pl.String},
            orient="row",
        ).with_row_index("_order")
        return counted.join(advice, on="cause", how="left").sort("target", "_order").drop("_order")

    def summary(self) -> dict[str, Any]:
        """Return a JSON-able summary: export, range, values compared and differing per target."""
        targets: dict[str, Any] = {}
        for target in self.targets:
            rows = self.comparison.filter(pl.col("target") == target)
            differing = rows.filter(pl.col("status") == DIFFERS)
            entry: dict[str, Any] = {
                "compared": rows.filter(pl.col("status") != OUTSIDE_WINDOW).height,
                "differing": differing.height,
                "causes": {
                    cause: n
                    for cause, n in sorted(
                        differing.group_by("cause").len().iter_rows(),
                        key=lambda r: CAUSES.index(r[0]),
                    )
                },
            }
            missing = differing.filter(pl.col("actual").is_null()).select("date", "app").unique()
            entry["rowsMissing"] = missing.height
            if target == "analytics_table" and self.table is not None:
                held = set(self.table["date"].to_list())
                days = pl.date_range(self.date_range.start, self.date_range.end, "1d", eager=True).to_list()
                expected_days = set(self.expected.filter(pl.sum_horizontal(METRIC_COLUMNS) > 0)["date"].to_list())
                entry["daysMissing"] = [d.isoformat() for d in days if d in expected_days and d not in held]
            if target == "cloudwatch" and self.cloudwatch_window is not None:
                first, last = self.cloudwatch_window
                entry["window"] = {"from": first.isoformat(), "to": last.isoformat()}
                entry["outsideWindow"] = rows.filter(pl.col("status") == OUTSIDE_WINDOW).height
            targets[target] = entry
        return {
            "exportId": self.export.export_id,
            "exportType": self.export.export_type,
            "mode": self.aggregate.mode,
            "startDate": self.date_range.start.isoformat(),
            "endDate": self.date_range.end.isoformat(),
            "analyticsTable": self.analytics_table,
            "deletesFrom": self.deletes_export.export_id if self.deletes_export else None,
            "targets": targets,
            "differing": sum(t["differing"] for t in targets.values()),
            "differs": self.differs,
        }

    def summary_line(self) -> str:
        """Return one line for humans: per target, values compared, differing, and causes."""
        if not self.targets:
            return f"{self.date_range}: nothing compared (no Analytics Table or CloudWatch given)"
        parts = []
        for target, entry in self.summary()["targets"].items():
            if entry["differing"]:
                causes = ", ".join(f"{c} {n}" for c, n in entry["causes"].items())
                text = f"{target}: {entry['differing']} of {entry['compared']} values differ"
                text += f" ({causes})"
            else:
                text = f"{target}: all {entry['compared']} values match"
            if entry.get("outsideWindow"):
                first = entry["window"]["from"]
                text += (
                    f"; {entry['outsideWindow']} values before {first} are outside CloudWatch's window (not compared)"
                )
            parts.append(text)
        return f"{self.date_range}: " + "; ".join(parts)

    def __repr__(self) -> str:
        return f"ReconcileResult(export {self.export.export_id} ({self.export.export_type}); {self.summary_line()})"

    def _repr_html_(self) -> str:
        from bubbly_metrics._display import html_card

        facts = {
            "export": f"{self.export.export_id} ({self.export.export_type})",
            "compared with": ", ".join(self.targets) or "nothing",
            "result": self.summary_line(),
        }
        return html_card("ReconcileResult", facts, self.differences, name="differences")

    def to_dict(self) -> dict[str, Any]:
        """:meth:`summary` plus the differing rows (JSON-able; dates as ISO strings)."""
        rows = self.differences.with_columns(pl.col("date").cast(pl.String)).to_dicts()
        return {**self.summary(), "differences": rows}
