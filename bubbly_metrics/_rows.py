"""What the read side passes around: the options of a scan, its rows and its read errors.

:class:`ScanOptions` is built once per scan (:func:`~bubbly_metrics.scan.map_files`) and
passed down to every file read, on a thread or in a worker process (it pickles).
:data:`RAW_SCHEMA` and :class:`ReadError` describe the rows a scan yields; ``Errors`` counts a
file's unreadable lines (and damaged parts) by reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from bubbly_metrics.exceptions import InvalidArgumentError

if TYPE_CHECKING:
    from bubbly_metrics.exports import ExportInfo

__all__ = ["RAW_SCHEMA", "Errors", "ReadError", "ScanOptions", "add_error", "detached", "merge_errors"]


class ReadError:
    """Reasons a part of a data file could not be read (values of ``read_error``)."""

    BROKEN_LINE = "broken_json_line"
    """A line that is not valid JSON; the other lines of its file are kept."""
    UNEXPECTED_SHAPE = "unexpected_json_shape"
    """Valid JSON but not a DynamoDB-JSON record (e.g. ``{"Item": 5}``, or nested deeper than
    Python's recursion limit lets it be read, far deeper than DynamoDB's 32 levels)."""
    TRUNCATED_GZIP = "truncated_gzip"
    """The gzip stream ends early; complete lines before the end were kept."""
    CORRUPT_GZIP = "corrupt_gzip"
    """The gzip stream is damaged; the lines of the damaged member were dropped (they cannot be
    trusted: damage is often detected only at the member's CRC), earlier members kept."""
    LINE_TOO_LONG = "line_too_long"
    """A line longer than :data:`~bubbly_metrics.scan.MAX_LINE_BYTES` (no real export's);
    skipped without being read, the other lines of its file are kept."""
    MISSING_FILE = "missing_data_file"
    """A data file listed in the manifest does not exist."""
    COUNT_MISMATCH = "item_count_mismatch"
    """The file holds a different number of records than its manifest's ``itemCount``."""


RAW_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String(),
    "line": pl.UInt32(),
    "model_id": pl.String(),
    "owner": pl.String(),
    "created_at": pl.String(),
    "created_at_type": pl.String(),
    "updated_at": pl.String(),
    "updated_at_type": pl.String(),
    "expires_at": pl.String(),
    "read_error": pl.String(),
    "error_count": pl.Int64(),
}
"""Columns of :func:`~bubbly_metrics.scan_export`.

``*_at`` hold the raw attribute value (N as its decimal string, S as the string) and
``*_at_type`` its DynamoDB type: ``"N"``, ``"S"``, ``"?"`` for any other type, null when the
attribute is absent.  ``file``/``line`` locate each record; ``read_error`` is set (and the
record columns null) on rows that stand for data that could not be read: one row per file and
reason, ``line`` its first line and ``error_count`` how many lines (or damaged parts) it stands
for (null on records, which stand for one each).
"""


@dataclass(frozen=True)
class ScanOptions:
    """How each data file of one scan is read: the same for every file, decided once."""

    incremental: bool = False
    """The export is INCREMENTAL: records are ``NewImage``\\ s (and deletes are counted), not ``Item``\\ s."""
    verify: bool = False
    """Hash each file for its manifest checksum; damage is raised by the caller, not logged."""
    columns: frozenset[str] | None = None
    """The :data:`RAW_SCHEMA` columns to materialise (others are null); None: all."""
    deletes: bool = False
    """The deletes view (incremental exports): rows are deleted items instead of records."""

    @classmethod
    def for_export(
        cls,
        export: ExportInfo,
        *,
        verify: bool = False,
        columns: frozenset[str] | None = None,
        deletes: bool = False,
    ) -> ScanOptions:
        """The options for reading ``export``; the deletes view of a FULL export is refused."""
        incremental = export.export_type == "INCREMENTAL"
        if deletes and not incremental:
            raise InvalidArgumentError(
                f"export {export.export_id} is a {export.export_type} export; deletes come from INCREMENTAL exports"
            )
        return cls(incremental=incremental, verify=verify, columns=columns, deletes=deletes)


Errors = dict[str, list[int]]
"""Unreadable lines (and damaged parts) of a block or file: reason -> ``[count, first line]``."""


def add_error(errors: Errors, line: int, reason: str, count: int = 1) -> None:
    entry = errors.get(reason)
    if entry is None:
        errors[reason] = [count, line]
    else:
        entry[0] += count
        entry[1] = min(entry[1], line)


def merge_errors(into: Errors, errors: Errors) -> None:
    for reason, (count, line) in errors.items():
        add_error(into, line, reason, count)


def detached(frame: pl.DataFrame) -> pl.DataFrame:
    """A copy of a small ``frame`` that shares no memory with the records it was computed from.

    Strings taken from records (a group's first, a filter's survivors) are views into the
    decoded block they came from, and keep the whole block alive: what a run keeps of every
    file until its end is detached first.  For small frames (their values go through Python).
    """
    return pl.DataFrame(frame.rows(), schema=frame.schema, orient="row")
