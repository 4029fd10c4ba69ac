"""Evidence: what in the export can explain a difference (re-dated sessions, expired and deleted records)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from bubbly_metrics.dates import parse_date
from bubbly_metrics.exceptions import InvalidArgumentError
from bubbly_metrics.exports import ExportInfo, find_export
from bubbly_metrics.reconciliation.compare import METRIC_ORDER
from bubbly_metrics.records import to_events
from bubbly_metrics.scan import RAW_SCHEMA, map_files

__all__ = ["EVIDENCE_COLUMNS", "EVIDENCE_SCHEMA", "discrepancy_evidence"]

EVIDENCE_COLUMNS = (
    "redated_out",
    "redated_in",
    "expired",
    "deleted_in_export",
    "deleted_not_in_export",
    "expired_not_in_export",
)
"""Counts of records that can explain a difference at ``(date, app, metric)``:

``redated_out``
    sessions created that day but dated a later day by ``updatedAt``;
``redated_in``
    sessions dated that day but created an earlier day;
``expired``
    records counted that day that were past their TTL at export time;
``deleted_in_export``
    records dated that day, deleted per the incremental export, still in this export;
``deleted_not_in_export``
    records dated that day, deleted per the incremental export, absent from this export;
``expired_not_in_export``
    the same for records deleted by TTL: their ``expiresAt`` had passed when the incremental
    export that holds their delete ended.

Session counts apply to ``active_users`` and ``games_played``; parties to
``parties_created``; members to ``parties_joined``.
"""

METRIC_OF_KIND = {
    "session": ["active_users", "games_played"],
    "party": ["parties_created"],
    "member": ["parties_joined"],
}
EVIDENCE_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "app": pl.String(),
    "metric": pl.String(),
    **{c: pl.Int64() for c in EVIDENCE_COLUMNS},
}


def empty_evidence() -> pl.DataFrame:
    return pl.DataFrame(schema=EVIDENCE_SCHEMA)


def _by_metric(counts: pl.DataFrame) -> pl.DataFrame:
    """(date, app, kind, evidence...) → (date, app, metric, evidence...)."""
    kinds = pl.DataFrame(
        [(kind, metric) for kind, metrics in METRIC_OF_KIND.items() for metric in metrics],
        schema={"kind": pl.String, "metric": pl.String},
        orient="row",
    )
    return counts.join(kinds, on="kind").drop("kind")


def _file_evidence(
    records: pl.DataFrame,
    *,
    first: dt.date,
    last: dt.date,
    as_of: int | None,
    deleted_keys: pl.DataFrame | None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-file evidence counts (date, app, kind, ...) and the keys of deleted items present."""
    lazy = records.lazy()
    events = to_events(lazy)
    # A session is dated by updatedAt; dating the same records by createdAt (the same
    # classification, fed createdAt instead) tells which sessions changed day.  to_events
    # keeps row order, so the two frames line up row by row.
    created = to_events(
        lazy.with_columns(
            pl.col("created_at").alias("updated_at"),
            pl.col("created_at_type").alias("updated_at_type"),
        )
    ).select(pl.col("date").alias("created_date"))
    frame = pl.concat([events.collect(), created.collect()], how="horizontal").filter(pl.col("kind").is_not_null())
    date, created_date = pl.col("date"), pl.col("created_date")
    redated = frame.filter(
        (pl.col("kind") == "session") & date.is_not_null() & created_date.is_not_null() & (created_date < date)
    )
    parts = [
        redated.filter(created_date.is_between(first, last))
        .group_by(created_date.alias("date"), "app", "kind")
        .agg(pl.len().cast(pl.Int64).alias("redated_out")),
        redated.filter(date.is_between(first, last))
        .group_by("date", "app", "kind")
        .agg(pl.len().cast(pl.Int64).alias("redated_in")),
    ]
    if as_of is not None:
        parts.append(
            frame.filter(date.is_between(first, last) & (pl.col("expires_at") < as_of))
            .group_by("date", "app", "kind")
            .agg(pl.len().cast(pl.Int64).alias("expired"))
        )
    counts = pl.concat(parts, how="diagonal")
    present = (
        frame.join(deleted_keys, on=["model_id", "owner"], how="semi").select("model_id", "owner")
        if deleted_keys is not None and deleted_keys.height
        else pl.DataFrame(schema={"model_id": pl.String, "owner": pl.String})
    )
    return counts, present


def discrepancy_evidence(
    source: str | ExportInfo,
    *,
    start: str | dt.date,
    end: str | dt.date,
    deletes: pl.DataFrame | None = None,
    export_type: str | None = None,
    storage_options: dict[str, Any] | None = None,
    threads: int | None = None,
) -> pl.DataFrame:
    """Count the records of an export that can explain a difference, per ``(date, app, metric)``.

    Reads the export once more (file by file, memory bounded like
    :func:`~bubbly_metrics.aggregate`) looking for re-dated sessions and TTL-expired
    records, and dates the deleted records of ``deletes``.

    Parameters
    ----------
    source
        The export the expected metrics come from (location or :class:`ExportInfo`).
    start, end
        The days reconciled (inclusive).
    deletes
        Deleted items (:func:`read_deletes` output), or ``None``.
    export_type
        ``"full"`` or ``"incremental"`` when ``source`` is a location holding several.
    storage_options, threads
        As for :func:`~bubbly_metrics.scan_export`.

    Returns
    -------
    polars.DataFrame
        ``date``, ``app``, ``metric`` and the :data:`EVIDENCE_COLUMNS` counts, for rows
        with any evidence, sorted.
    """
    first, last = parse_date(start, name="start"), parse_date(end, name="end")
    if first > last:
        raise InvalidArgumentError(f"start {first} is after end {last}")
    export = find_export(source, export_type=export_type, storage_options=storage_options)
    as_of = int(export.as_of.timestamp()) if export.as_of is not None else None
    deleted = _deleted_events(deletes, first, last) if deletes is not None else None
    deleted_keys = deleted.select("model_id", "owner").unique() if deleted is not None else None

    def transform(frames: list[pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
        records = pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=RAW_SCHEMA)
        return _file_evidence(records, first=first, last=last, as_of=as_of, deleted_keys=deleted_keys)

    counts: list[pl.DataFrame] = []
    present: list[pl.DataFrame] = []
    for _, (file_counts, file_present), _ in map_files(export, transform, threads=threads):
        counts.append(file_counts)
        present.append(file_present)
    if deleted is not None and deleted.height:
        keys = pl.concat(present) if present else deleted.select("model_id", "owner").clear()
        in_export = keys.unique().with_columns(pl.lit(True).alias("_in_export"))
        present_ = pl.col("_in_export").fill_null(False)
        counts.append(
            deleted.join(in_export, on=["model_id", "owner"], how="left")
            .group_by("date", "app", "kind")
            .agg(
                present_.sum().cast(pl.Int64).alias("deleted_in_export"),
                (~present_ & ~pl.col("ttl")).sum().cast(pl.Int64).alias("deleted_not_in_export"),
                (~present_ & pl.col("ttl")).sum().cast(pl.Int64).alias("expired_not_in_export"),
            )
        )
    if not any(c.height for c in counts):
        return empty_evidence()
    merged = pl.concat([c for c in counts if c.height], how="diagonal")
    for column in EVIDENCE_COLUMNS:
        if column not in merged.columns:
            merged = merged.with_columns(pl.lit(0, pl.Int64).alias(column))
    totals = merged.group_by("date", "app", "kind").agg(
        pl.col(c).fill_null(0).sum().cast(pl.Int64) for c in EVIDENCE_COLUMNS
    )
    return (
        _by_metric(totals)
        .select(list(EVIDENCE_SCHEMA))
        .sort("date", "app", pl.col("metric").replace_strict(METRIC_ORDER, return_dtype=pl.Int8))
    )


def _deleted_events(deletes: pl.DataFrame, first: dt.date, last: dt.date) -> pl.DataFrame:
    """Date the deleted items in the range: date, app, kind, model_id, owner, ttl."""
    if isinstance(deletes, pl.LazyFrame):
        deletes = deletes.collect()
    if not isinstance(deletes, pl.DataFrame) or any(c not in deletes.columns for c in RAW_SCHEMA):
        raise InvalidArgumentError("deletes must be a frame of raw records, as read_deletes returns")
    # A delete written after the item's expiresAt is TTL's (AWS exports TTL deletes like any other).
    ttl = (
        (pl.col("expires_at").cast(pl.Float64, strict=False) <= pl.col("deleted_before")).fill_null(False)
        if "deleted_before" in deletes.columns
        else pl.lit(False)
    )
    # A deleted session also explains its createdAt day: a daily run counted it there before a
    # later update re-dated it (to_events keeps rows in order, so the frames line up row by row).
    lazy = deletes.lazy()
    created = to_events(
        lazy.with_columns(pl.col("created_at").alias("updated_at"), pl.col("created_at_type").alias("updated_at_type"))
    ).select(pl.col("date").alias("created_date"))
    events = pl.concat(
        [to_events(lazy).collect(), created.collect(), deletes.select(ttl.alias("ttl"))], how="horizontal"
    ).filter(pl.col("kind").is_not_null())
    columns = ["date", "app", "kind", "model_id", "owner", "ttl"]
    redated = events.filter(
        (pl.col("kind") == "session") & pl.col("created_date").is_not_null() & (pl.col("created_date") < pl.col("date"))
    ).with_columns(pl.col("created_date").alias("date"))
    return pl.concat([events.select(columns), redated.select(columns)]).filter(pl.col("date").is_between(first, last))
