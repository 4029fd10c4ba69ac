"""The deletes of incremental exports: each deleted item's ``OldImage``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from bubbly_metrics.dates import parse_date
from bubbly_metrics.exceptions import InvalidArgumentError
from bubbly_metrics.exports import ExportInfo, find_export, list_exports
from bubbly_metrics.scan import RAW_SCHEMA, scan_export

__all__ = ["DELETES_SCHEMA", "read_deletes"]


def incremental_exports(
    source: str | ExportInfo, *, since: dt.date | None, storage_options: dict[str, Any] | None
) -> list[ExportInfo]:
    """The completed incremental exports at ``source`` (or the one given), oldest window first."""
    if isinstance(source, ExportInfo):
        if source.export_type != "INCREMENTAL":
            raise InvalidArgumentError(
                f"export {source.export_id} is a {source.export_type} export; deletes come from INCREMENTAL exports"
            )
        return [find_export(source)]
    exports = [
        e
        for e in list_exports(source, storage_options=storage_options)
        if e.status == "COMPLETED"
        and e.export_type == "INCREMENTAL"
        and (since is None or e.export_to is None or e.export_to.date() > since)
    ]
    if not exports:  # the library's own "No export found in S3" error, with what is there
        return [find_export(source, export_type="incremental", storage_options=storage_options)]
    for export in exports:
        export.check_supported()
    return sorted(exports, key=lambda e: (e.export_to or dt.datetime.min.replace(tzinfo=dt.UTC), e.export_id))


DELETES_SCHEMA: dict[str, pl.DataType] = {**RAW_SCHEMA, "deleted_before": pl.Int64()}
"""Columns of :func:`read_deletes`: the raw record columns of each deleted item, and the end of
the window of the export holding its delete (epoch seconds)."""


def read_deletes(
    source: str | ExportInfo,
    *,
    since: str | dt.date | None = None,
    storage_options: dict[str, Any] | None = None,
) -> pl.DataFrame:
    """Read the deleted items of incremental exports: each delete's ``OldImage``.

    A delete is a record with ``Keys`` and ``OldImage`` and no ``NewImage`` (docs/rules.md#export-layouts);
    TTL's deletes are exported the same way.  Metrics ignore deletes (they count activity that
    happened); reconciliation uses them to explain why a number published earlier is higher
    than the export says now.

    Parameters
    ----------
    source
        A location (every completed incremental export there is read: the daily exports
        together hold every delete since the first) or one incremental :class:`ExportInfo`.
    since
        Skip exports whose window ended by this day (deletes before a range cannot explain
        numbers in it).
    storage_options
        Passed through to the filesystem (s3fs for ``s3://``).

    Returns
    -------
    polars.DataFrame
        :data:`DELETES_SCHEMA`: the :data:`~bubbly_metrics.scan.RAW_SCHEMA` rows (``file``,
        ``line``, ``model_id``, ``owner``, timestamps, ``expires_at``) of each deleted item,
        read by the deletes view of :func:`~bubbly_metrics.scan_export`, and
        ``deleted_before``.  Unreadable lines and damaged files are skipped with the scan's
        warnings: deletes only explain differences.

    Raises
    ------
    InvalidArgumentError
        When ``source`` is a full export (full exports hold no deletes).
    """
    first = parse_date(since, name="since") if since is not None else None
    frames = [
        scan_export(export, deletes=True)
        .filter(pl.col("read_error").is_null())
        .with_columns(
            pl.lit(int(export.export_to.timestamp()) if export.export_to else None, pl.Int64).alias("deleted_before")
        )
        for export in incremental_exports(source, since=first, storage_options=storage_options)
    ]
    return pl.concat(pl.collect_all(frames)) if frames else pl.DataFrame(schema=DELETES_SCHEMA)
