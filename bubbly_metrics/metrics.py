"""Dated events → daily per-app metrics and per-user breakdowns.

The rules: docs/rules.md#metrics and docs/rules.md#modes-and-date-ranges.

One pass over the events yields two small tables from which everything else is derived:

- :func:`user_activity` — per ``(date, app, user_id)``: sessions (games), parties created
  and parties joined, for the days of the range.  The per-user breakdowns *are* this table,
  and the daily metrics are a group-by over it.
- :func:`record_outcomes` — what became of every record read: counted, ignored (other
  kinds), malformed (per reason and data file, with one example's keys) or outside the range.
  An incremental export's deletes hold no record; :func:`deleted_outcomes` accounts for them.

Both are sums over records, so tables of disjoint parts of an export (e.g. one per data file)
merge exactly (:func:`merge_activity`, :func:`merge_outcomes`): an export is aggregated one
file at a time and never held whole in memory.
"""

from __future__ import annotations

import polars as pl

from bubbly_metrics._text import CLIP
from bubbly_metrics.dates import DateRange

__all__ = [
    "METRIC_COLUMNS",
    "METRICS_SCHEMA",
    "METRIC_NAMES",
    "ActivityMerger",
    "daily_metrics",
    "deleted_outcomes",
    "plain_outcomes",
    "malformed_counts",
    "merge_activity",
    "merge_outcomes",
    "record_outcomes",
    "user_activity",
]

METRIC_COLUMNS = ("active_users", "games_played", "parties_created", "parties_joined")
METRICS_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "app": pl.String(),
    **{c: pl.Int64() for c in METRIC_COLUMNS},
}
"""Schema of the daily metrics table (:func:`daily_metrics`, ``AggregateResult.metrics``)."""
METRIC_NAMES = {
    "active_users": "ActiveUsers",
    "games_played": "GamesPlayed",
    "parties_created": "PartiesCreated",
    "parties_joined": "PartiesJoined",
}
"""Column name → CloudWatch metric name."""

COUNTED, IGNORED, MALFORMED, OUTSIDE, DELETED = "counted", "ignored", "malformed", "outside_range", "deleted"
STATUSES = (COUNTED, IGNORED, MALFORMED, OUTSIDE, DELETED)
"""What becomes of a record read: ``deleted`` is an incremental export's line deleting an item
(``Keys`` and no ``NewImage``), which counts toward nothing (docs/rules.md#export-layouts) but was read."""

_ACTIVITY_KEYS = ("date", "app", "user_id")
_ACTIVITY_SUMS = ("games", "parties_created", "parties_joined")
_OUTCOME_KEYS = ("status", "reason", "file")
_EXAMPLES = ("example_model_id", "example_owner")


def _counted(date_range: DateRange) -> pl.Expr:
    return pl.col("kind").is_not_null() & pl.col("date").is_between(date_range.start, date_range.end)


def user_activity(events: pl.LazyFrame | pl.DataFrame, date_range: DateRange) -> pl.LazyFrame:
    """Per ``(date, app, user_id)`` in ``date_range``: ``games``, ``parties_created``, ``parties_joined``.

    ``games > 0`` means the user was active that day.  Members are attributed to the user who
    joined (``member-user-{userId}``).
    """
    kind = pl.col("kind")
    return (
        events.lazy()
        .filter(_counted(date_range))
        .group_by(*_ACTIVITY_KEYS)
        .agg(
            (kind == "session").sum().cast(pl.Int64).alias("games"),
            (kind == "party").sum().cast(pl.Int64).alias("parties_created"),
            (kind == "member").sum().cast(pl.Int64).alias("parties_joined"),
        )
    )


def record_outcomes(events: pl.LazyFrame | pl.DataFrame, date_range: DateRange) -> pl.LazyFrame:
    """How many records were counted, ignored, malformed (per reason and file) or outside the range.

    Columns ``status``, ``reason`` and ``file`` (set for malformed records), ``records``, and
    ``example_model_id``/``example_owner`` (one malformed example's keys, clipped to
    :data:`~bubbly_metrics._text.CLIP` characters; never payloads).  A read-error row counts as
    its ``error_count`` lines.
    """
    malformed = pl.col("reason").is_not_null()
    status = (
        pl.when(malformed)
        .then(pl.lit(MALFORMED))
        .when(pl.col("kind").is_null())
        .then(pl.lit(IGNORED))
        .when(_counted(date_range))
        .then(pl.lit(COUNTED))
        .otherwise(pl.lit(OUTSIDE))
    )
    return (
        events.lazy()
        .select(
            status.alias("status"),
            "reason",
            pl.when(malformed).then(pl.col("file")).alias("file"),
            pl.when(malformed).then(pl.col("model_id")).alias("example_model_id"),
            pl.when(malformed).then(pl.col("owner")).alias("example_owner"),
            "error_count",
        )
        .group_by(*_OUTCOME_KEYS)
        .agg(pl.col("error_count").fill_null(1).sum().cast(pl.Int64).alias("records"), _example())
        .with_columns(_clipped(pl.col(name)) for name in _EXAMPLES)
    )


def deleted_outcomes(deletes: int) -> pl.DataFrame:
    """A :func:`record_outcomes` table for ``deletes`` lines deleting an item (incremental exports)."""
    null = pl.lit(None, pl.String)
    return pl.select(
        pl.lit(DELETED).alias("status"),
        null.alias("reason"),
        null.alias("file"),
        pl.lit(deletes, pl.Int64).alias("records"),
        null.alias("example_model_id"),
        null.alias("example_owner"),
    )


def plain_outcomes(counted: int, outside: int, ignored: int) -> pl.DataFrame:
    """A :func:`record_outcomes` table of records counted, outside the range and ignored (none malformed).

    For records the compiled decoder counted itself (:data:`bubbly_metrics._decoder.COUNTING`);
    statuses with no record have no row, as in :func:`record_outcomes`.
    """
    rows = [(status, n) for status, n in ((COUNTED, counted), (OUTSIDE, outside), (IGNORED, ignored)) if n]
    null = pl.lit(None, pl.String)
    return pl.DataFrame(
        {"status": [s for s, _ in rows], "records": [n for _, n in rows]},
        schema={"status": pl.String, "records": pl.Int64},
    ).select(
        "status",
        null.alias("reason"),
        null.alias("file"),
        "records",
        null.alias("example_model_id"),
        null.alias("example_owner"),
    )


def _clipped(value: pl.Expr) -> pl.Expr:
    # An example is a record's keys as read: a hostile export can make them megabytes long.
    return pl.when(value.str.len_chars() > CLIP).then(value.str.slice(0, CLIP) + "…").otherwise(value)


def _example() -> pl.Expr:
    # Both keys from the same record: dropping nulls per column could pair one record's
    # modelId with another's owner, an example that exists nowhere in the export.
    has_keys = pl.col("example_model_id").is_not_null() | pl.col("example_owner").is_not_null()
    return pl.col(*_EXAMPLES).filter(has_keys).first()


class ActivityMerger:
    """Sums :func:`user_activity` tables of disjoint parts of an export, added one at a time.

    The per-user table is the one thing a run holds that grows with the export (about one row
    per user and day), so parts are kept in a compact form as they arrive: ``app`` and
    ``user_id`` interned as codes of one run-local :class:`polars.Categories` (freed with the
    result), counts as ``UInt16`` (``UInt32`` for a part whose counts need it).  They are
    summed at the end in buckets of users, so the group-by's hash tables only ever hold one
    bucket: far less memory than one streaming group-by over the parts as they came (see
    docs/performance.md).

    The result keeps the Categorical keys and UInt32 sums; ``AggregateResult.per_user`` gives
    plain strings and Int64.
    """

    BUCKET_ROWS = 250_000
    """Part rows per bucket summed at a time."""

    def __init__(self) -> None:
        self._dtype = pl.Categorical(pl.Categories.random())
        self._parts: list[pl.DataFrame] = []
        self._rows = 0

    def add(self, part: pl.DataFrame | pl.LazyFrame) -> None:
        """Add one part's :func:`user_activity` table."""
        frame = part.collect() if isinstance(part, pl.LazyFrame) else part
        # A part's counts nearly always fit 16 bits (a user's games in one day of one file);
        # the narrowest type that holds them saves 6 of a row's 24 bytes.
        peak = frame.select(pl.max_horizontal(pl.col(*_ACTIVITY_SUMS).max())).item() or 0
        counts = pl.UInt16 if peak <= 0xFFFF else pl.UInt32
        compact = frame.select(
            "date",
            pl.col("app", "user_id").cast(pl.String).cast(self._dtype),
            pl.col(*_ACTIVITY_SUMS).cast(counts),
        )
        self._parts.append(compact)
        self._rows += compact.height

    def result(self) -> pl.DataFrame:
        """The merged table (``app``/``user_id`` Categorical, sums UInt32); the parts are released."""
        parts, self._parts = self._parts, []
        buckets = max(1, -(-self._rows // self.BUCKET_ROWS))
        empty = pl.DataFrame(schema={"date": pl.Date, "app": self._dtype, "user_id": self._dtype})
        everything = pl.concat(
            [empty.lazy().with_columns(pl.lit(0, pl.UInt16).alias(c) for c in _ACTIVITY_SUMS)]
            + [p.lazy() for p in parts],
            how="vertical_relaxed",  # UInt16 and UInt32 parts
        )
        # Summed as Int64 and kept as UInt32 (a third less memory than Int64 for the largest
        # table of a run); the strict cast fails loudly should a count ever exceed it.
        sums = [pl.col(c).cast(pl.Int64).sum().cast(pl.UInt32).alias(c) for c in _ACTIVITY_SUMS]
        bucket = pl.col("user_id").to_physical() % buckets
        merged = [everything.filter(bucket == b).group_by(*_ACTIVITY_KEYS).agg(sums).collect() for b in range(buckets)]
        del parts, everything
        return pl.concat(merged, how="vertical") if len(merged) > 1 else merged[0]


def merge_activity(parts: list[pl.DataFrame] | list[pl.LazyFrame]) -> pl.DataFrame:
    """Merge :func:`user_activity` tables of disjoint parts of an export (see :class:`ActivityMerger`)."""
    if not parts:
        raise ValueError("nothing to merge: give at least one table")
    merger = ActivityMerger()
    for part in parts:
        merger.add(part)
    return merger.result()


def merge_outcomes(parts: list[pl.DataFrame] | list[pl.LazyFrame]) -> pl.DataFrame:
    """Merge :func:`record_outcomes` tables of disjoint parts of an export."""
    if not parts:
        raise ValueError("nothing to merge: give at least one table")
    lazy = pl.concat([p.lazy() for p in parts], how="vertical")
    # In order of first appearance: a reason's example is then its first file's (in the parts'
    # order), whichever other rows the parts hold (the decoder's counted ones, say).
    return lazy.group_by(*_OUTCOME_KEYS, maintain_order=True).agg(pl.col("records").sum(), _example()).collect()


def daily_metrics(activity: pl.LazyFrame | pl.DataFrame, date_range: DateRange, *, dense: bool) -> pl.LazyFrame:
    """Daily per-app metrics from :func:`user_activity`.

    With ``dense=True`` (backfill) every day of ``date_range`` × every app seen in it has a
    row, zeros where nothing happened.  Otherwise (incremental) only apps with activity.
    """
    metrics = (
        activity.lazy()
        .group_by("date", "app")
        .agg(
            (pl.col("games") > 0).sum().cast(pl.Int64).alias("active_users"),
            pl.col("games").cast(pl.Int64).sum().alias("games_played"),
            pl.col("parties_created").cast(pl.Int64).sum().alias("parties_created"),
            pl.col("parties_joined").cast(pl.Int64).sum().alias("parties_joined"),
        )
    )
    if dense:
        days = pl.LazyFrame({"date": pl.date_range(date_range.start, date_range.end, "1d", eager=True)})
        apps = metrics.select("app").unique()
        metrics = (
            days.join(apps, how="cross")
            .join(metrics, on=["date", "app"], how="left")
            .with_columns(pl.col(c).fill_null(0) for c in METRIC_COLUMNS)
        )
    return metrics.select("date", pl.col("app").cast(pl.String), *METRIC_COLUMNS).sort("date", "app")


def malformed_counts(outcomes: pl.LazyFrame | pl.DataFrame, *, by_file: bool = False) -> pl.LazyFrame:
    """Malformed records per reason (and per data file with ``by_file=True``), with one example."""
    keys = ["reason", "file"] if by_file else ["reason"]
    return (
        outcomes.lazy()
        .filter(pl.col("status") == MALFORMED)
        .group_by(keys, maintain_order=True)
        .agg(pl.col("records").sum(), _example())
        .sort(keys)
    )
