"""Causes of a difference, the advice for each, and the classification of a comparison."""

from __future__ import annotations

import polars as pl

from bubbly_metrics.exceptions import InvalidArgumentError
from bubbly_metrics.reconciliation.compare import COMPARISON_SCHEMA, KEYS, MATCH, OUTSIDE_WINDOW
from bubbly_metrics.reconciliation.evidence import EVIDENCE_COLUMNS, EVIDENCE_SCHEMA, METRIC_OF_KIND, empty_evidence

__all__ = ["ADVICE", "CAUSES", "Cause", "classify_differences"]


class Cause:
    """Likely causes of a difference (values of the ``cause`` column).

    A cause is given only where the data shows it; each comes with advice in :data:`ADVICE`.
    """

    REDATED = "redated"
    """Sessions moved between days by a later ``updatedAt`` (sessions are dated by it)."""
    TTL_EXPIRED = "ttl_expired"
    """Items past their TTL ``expiresAt``: deleted by TTL since the target was written, or still
    in the export (DynamoDB deletes expired items lazily)."""
    DELETED = "deleted"
    """Items deleted from the main table (an incremental export's deletes)."""
    MISSING_FROM_TABLE = "missing_from_table"
    """The Analytics Table has no item for a ``(date, app)`` with activity in the export."""
    MISSING_FROM_CLOUDWATCH = "missing_from_cloudwatch"
    """CloudWatch has no datum for a ``(date, app)`` with activity, inside its window."""
    NOT_IN_EXPORT = "not_in_export"
    """The target holds activity for a ``(date, app)`` the export has none for."""
    OUTSIDE_CLOUDWATCH_WINDOW = "outside_cloudwatch_window"
    """A day older than CloudWatch's two-week window: never sent there, so not compared."""
    UNEXPLAINED = "unexplained"
    """Nothing in the export explains the difference."""


CAUSES = (
    Cause.REDATED,
    Cause.TTL_EXPIRED,
    Cause.DELETED,
    Cause.MISSING_FROM_TABLE,
    Cause.MISSING_FROM_CLOUDWATCH,
    Cause.NOT_IN_EXPORT,
    Cause.OUTSIDE_CLOUDWATCH_WINDOW,
    Cause.UNEXPLAINED,
)

ADVICE: dict[str, tuple[str, str]] = {
    Cause.REDATED: (
        "sessions moved to a later day by a later updatedAt (a session counts on the day of its last update)",
        "expected after daily runs; re-run the backfill for these days if the table should follow the export",
    ),
    Cause.TTL_EXPIRED: (
        "records past their TTL (expiresAt): deleted by TTL after the run that counted them, or still in "
        "the export because DynamoDB deletes expired items lazily (~2 days)",
        "accept: the activity happened; exports taken at different times disagree about them",
    ),
    Cause.DELETED: (
        "records deleted from the main table between the run that wrote the target and this export",
        "accept, or re-run the backfill for these days if deleted records must not count",
    ),
    Cause.MISSING_FROM_TABLE: (
        "no Analytics Table item for a (date, app) with activity",
        "the run for that day failed or never ran: re-run "
        "`aggregate LOCATION --mode backfill --start D --end D --publish --analytics-table TABLE`",
    ),
    Cause.MISSING_FROM_CLOUDWATCH: (
        "no CloudWatch datum for a (date, app) with activity, inside CloudWatch's window",
        "re-publish those days while they are still within CloudWatch's two weeks",
    ),
    Cause.NOT_IN_EXPORT: (
        "the target holds activity for an app the export has none for that day",
        "check that the export and the table belong together; re-run the backfill to overwrite",
    ),
    Cause.OUTSIDE_CLOUDWATCH_WINDOW: (
        "older than CloudWatch's two-week window: never sent there (Analytics Table only)",
        "nothing: expected in a backfill, not a difference",
    ),
    Cause.UNEXPLAINED: (
        "no re-dated, expired or deleted record in the export explains it",
        "check which export wrote the target (provenance columns), compare per-user data, re-run the day",
    ),
}
"""Cause → (what it means, what to do)."""


def classify_differences(comparison: pl.DataFrame, evidence: pl.DataFrame | None = None) -> pl.DataFrame:
    """Attach evidence counts and a likely ``cause`` (and a readable ``detail``) to a comparison.

    Parameters
    ----------
    comparison
        :func:`compare_metrics` output (possibly several targets concatenated).
    evidence
        :func:`discrepancy_evidence` output, or ``None`` (then only missing rows, rows not
        in the export and days outside CloudWatch's window are classified).

    Returns
    -------
    polars.DataFrame
        ``comparison`` plus the :data:`EVIDENCE_COLUMNS`, ``cause`` (a :class:`Cause`
        value; null where values match) and ``detail``.

    Notes
    -----
    The first rule that applies wins:

    1. outside CloudWatch's window → ``outside_cloudwatch_window`` (not a difference);
    2. the target holds nothing where activity was expected → ``missing_from_table`` /
       ``missing_from_cloudwatch``;
    3. the target holds **more** than expected: sessions created that day were re-dated
       later (``redated``), or records dated that day were deleted before the export, by
       TTL (``ttl_expired``, when TTL deleted more of them than anything else did) or
       otherwise (``deleted``);
    4. the target holds **less**: sessions created earlier were re-dated into that day
       (``redated``), records were past their TTL at export time (``ttl_expired``), or
       deleted records are still in the export (``deleted``);
    5. the export has nothing for that ``(date, app)`` → ``not_in_export``;
    6. otherwise ``unexplained``.
    """
    missing = [c for c in COMPARISON_SCHEMA if c not in comparison.columns]
    if missing:
        raise InvalidArgumentError(f"comparison lacks column(s) {missing}: pass compare_metrics output")
    evidence = empty_evidence() if evidence is None else evidence
    frame = comparison.select(list(COMPARISON_SCHEMA)).join(
        evidence.select(list(EVIDENCE_SCHEMA)).cast(EVIDENCE_SCHEMA),  # type: ignore[arg-type]
        on=list(KEYS),
        how="left",
    )
    frame = frame.with_columns(pl.col(c).fill_null(0) for c in EVIDENCE_COLUMNS)
    return frame.with_columns(_cause().alias("cause")).with_columns(_detail().alias("detail"))


_MORE, _LESS = pl.col("difference") > 0, pl.col("difference") < 0


def _cause() -> pl.Expr:
    """The first rule of :func:`classify_differences` that applies."""
    status, metric = pl.col("status"), pl.col("metric")
    sessions = metric.is_in(METRIC_OF_KIND["session"])
    more, less = _MORE, _LESS
    missing_cause = (
        pl.when(pl.col("target") == "cloudwatch")
        .then(pl.lit(Cause.MISSING_FROM_CLOUDWATCH))
        .otherwise(pl.lit(Cause.MISSING_FROM_TABLE))
    )
    cause = (
        pl.when(status == OUTSIDE_WINDOW)
        .then(pl.lit(Cause.OUTSIDE_CLOUDWATCH_WINDOW))
        .when(status == MATCH)
        .then(pl.lit(None, pl.String))
        .when(pl.col("actual").is_null() & less)
        .then(missing_cause)
        .when(more & sessions & (pl.col("redated_out") > 0))
        .then(pl.lit(Cause.REDATED))
        .when(more & (pl.col("expired_not_in_export") > pl.col("deleted_not_in_export")))
        .then(pl.lit(Cause.TTL_EXPIRED))
        .when(more & (pl.col("deleted_not_in_export") > 0))
        .then(pl.lit(Cause.DELETED))
        .when(less & sessions & (pl.col("redated_in") > 0))
        .then(pl.lit(Cause.REDATED))
        .when(less & (pl.col("expired") > 0))
        .then(pl.lit(Cause.TTL_EXPIRED))
        .when(less & (pl.col("deleted_in_export") > 0))
        .then(pl.lit(Cause.DELETED))
        .when(pl.col("expected").is_null())
        .then(pl.lit(Cause.NOT_IN_EXPORT))
        .otherwise(pl.lit(Cause.UNEXPLAINED))
    )
    return cause


def _detail() -> pl.Expr:
    """The evidence behind each cause, readable."""
    more = _MORE
    c = pl.col("cause")
    detail = (
        pl.when(c == Cause.REDATED)
        .then(
            pl.when(more)
            .then(pl.format("{} session(s) created this day are dated later by updatedAt", "redated_out"))
            .otherwise(pl.format("{} session(s) created earlier are dated this day by updatedAt", "redated_in"))
        )
        .when(c == Cause.TTL_EXPIRED)
        .then(
            pl.when(more)
            .then(pl.format("{} record(s) deleted by TTL before the export", "expired_not_in_export"))
            .otherwise(pl.format("{} record(s) past their TTL at export time", "expired"))
        )
        .when(c == Cause.DELETED)
        .then(
            pl.when(more)
            .then(pl.format("{} record(s) deleted before the export", "deleted_not_in_export"))
            .otherwise(pl.format("{} deleted record(s) still in the export", "deleted_in_export"))
        )
        .when(c == Cause.MISSING_FROM_TABLE)
        .then(pl.lit("no Analytics Table item for this (date, app)"))
        .when(c == Cause.MISSING_FROM_CLOUDWATCH)
        .then(pl.lit("no CloudWatch datum for this (date, app)"))
        .when(c == Cause.NOT_IN_EXPORT)
        .then(pl.lit("the export has no activity for this (date, app)"))
        .when(c == Cause.OUTSIDE_CLOUDWATCH_WINDOW)
        .then(pl.lit("older than CloudWatch's two-week window: not sent, not compared"))
        .when(c == Cause.UNEXPLAINED)
        .then(pl.lit("nothing in the export explains it"))
    )
    return detail
