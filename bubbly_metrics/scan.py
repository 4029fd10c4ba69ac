"""Scan an export's data files lazily into a narrow Polars frame of raw records.

Why not ``pl.scan_ndjson``: one syntactically broken line fails its whole scan, schema
inference silently drops attributes first seen late, and its JSON parser tokenises every
byte of the ``payload`` maps the metrics never read.  Instead each data file is streamed
through ISA-L gzip (faster than zlib; see docs/performance.md) and decoded, in bounded chunks,
on a small pool, keeping only the five attributes the metrics need: by the compiled simdjson
decoder (:mod:`bubbly_metrics._fastscan`, optional) straight into Arrow columns with the GIL
released, or by msgspec into typed structs (unknown fields skipped without being built).
msgspec is the reference: the compiled decoder takes only blocks whose every line is a plain
record or delete, and leaves any other block, and so every rule about bad lines, to msgspec.
The result is exposed as a real ``LazyFrame`` through Polars' IO-plugin interface, so
projections, filters and the streaming engine apply downstream exactly as with a native scan.

Bad input never aborts a scan and never costs more than the bad part: a broken line is
skipped (the rest of its file is kept), a truncated gzip keeps every complete line before the
cut, a corrupt gzip drops only its damaged member (whose inflated output cannot be trusted),
and each loss is counted by file and reason with the rest of the data: one row per file and
reason with ``read_error`` set and ``error_count`` saying how many lines (or damaged parts) it
stands for, never a row per bad line.

Memory is bounded whatever a file holds (docs/rules.md#faults-and-hostile-input): a line
longer than :data:`MAX_LINE_BYTES` is counted ``line_too_long`` and its bytes are dropped as
they are inflated, never gathered; unreadable lines are counts; and a batch of records ends at
:data:`~bubbly_metrics._readfile.BATCH_ROWS` records or that many KiB of lines, whichever
comes first.

The read side, one job a module: this module's public functions; :mod:`bubbly_metrics._rows`
(:class:`~bubbly_metrics._rows.ScanOptions`, the schema and read errors);
:mod:`bubbly_metrics._filepool` (files on a pool, in manifest order);
:mod:`bubbly_metrics._readfile` (one file: inflate, split lines, batch);
:mod:`bubbly_metrics._decoder` (which decoder) and :mod:`bubbly_metrics._decode` (msgspec).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import polars as pl

from bubbly_metrics import _filepool
from bubbly_metrics._decoder import decoder as decoder  # re-exported: which decoder reads data files
from bubbly_metrics._readfile import MAX_LINE_BYTES
from bubbly_metrics._rows import RAW_SCHEMA, ReadError, ScanOptions
from bubbly_metrics.exceptions import ExportIntegrityError
from bubbly_metrics.exports import DataFile, ExportInfo, find_export
from bubbly_metrics.manifests import count_mismatch

__all__ = ["MAX_LINE_BYTES", "RAW_SCHEMA", "ReadError", "map_files", "read_export", "scan_export"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def scan_export(
    source: str | ExportInfo,
    *,
    export_type: str | None = None,
    storage_options: dict[str, Any] | None = None,
    verify: bool = False,
    threads: int | None = None,
    on_file: Callable[[DataFile, int], None] | None = None,
    deletes: bool = False,
) -> pl.LazyFrame:
    """Lazily scan one export's records into a narrow :data:`RAW_SCHEMA` frame.

    Parameters
    ----------
    source
        An export location (local folder or ``s3://`` URI; the latest completed export of
        ``export_type`` there is used) or an :class:`~bubbly_metrics.ExportInfo`.
    export_type
        ``"full"`` or ``"incremental"`` when ``source`` holds several exports; ``None`` takes
        the latest completed export of either type.
    storage_options
        Passed through to the filesystem (s3fs for ``s3://``).
    verify
        Check each data file's ``md5Checksum`` and item count against the manifest while
        reading; a mismatch raises :class:`ExportIntegrityError` naming the file.
    threads
        Files read concurrently (default: the number of CPUs, at most 4).
    on_file
        Called as ``on_file(data_file, records_read)`` after each data file, in manifest
        order (progress reporting).
    deletes
        The *deletes view* of an incremental export: one row per deleted item (a line with
        ``Keys`` and no ``NewImage``) holding its ``OldImage`` (or, in a ``NEW_IMAGE`` export,
        which has no old images, only the keys), and no row for inserts and updates.  Metrics
        ignore deletes; reconciliation uses them to explain numbers published before the
        delete (:mod:`bubbly_metrics.reconciliation`).  Read by msgspec alone: the default view
        keeps the compiled decoder.  A FULL export is refused (it holds no deletes).

    Returns
    -------
    polars.LazyFrame
        One row per record (full export: each ``Item``; incremental: each ``NewImage`` —
        deletes contribute nothing), plus one row per unreadable part with ``read_error``.

    Raises
    ------
    InvalidArgumentError
        ``deletes=True`` on a FULL export.

    Examples
    --------
    >>> from bubbly_metrics import sample_export_location, scan_export
    >>> lf = scan_export(sample_export_location(), export_type="full")
    >>> lf.select("model_id", "owner").head(2).collect().columns
    ['model_id', 'owner']
    """
    export = find_export(source, export_type=export_type, storage_options=storage_options)
    options = ScanOptions.for_export(export, verify=verify, deletes=deletes)
    source_fn = functools.partial(_frames, export, options, threads, on_file)
    return _register(source_fn, export)


def read_export(
    source: str | ExportInfo,
    *,
    export_type: str | None = None,
    storage_options: dict[str, Any] | None = None,
    verify: bool = False,
    threads: int | None = None,
    on_file: Callable[[DataFile, int], None] | None = None,
    deletes: bool = False,
) -> pl.DataFrame:
    """Eager :func:`scan_export`: the same arguments, collected into a DataFrame."""
    return scan_export(
        source,
        export_type=export_type,
        storage_options=storage_options,
        verify=verify,
        threads=threads,
        on_file=on_file,
        deletes=deletes,
    ).collect()


def _frames(
    export: ExportInfo,
    options: ScanOptions,
    threads: int | None,
    on_file: Callable[[DataFile, int], None] | None,
    with_columns: list[str] | None,
    predicate: pl.Expr | None,
    n_rows: int | None,
    batch_size: int | None,
) -> Iterator[pl.DataFrame]:
    """The IO plugin's source: the export's frames, projected, filtered and cut as Polars asks."""
    wanted = None if with_columns is None else frozenset(with_columns)
    produced = 0
    options = dataclasses.replace(options, columns=wanted)
    for _, frames, _ in _map(export, _all_frames, options, threads=threads, on_file=on_file):
        for frame in frames:
            if predicate is not None:
                frame = frame.filter(predicate)
            if with_columns is not None:
                frame = frame.select(with_columns)
            if n_rows is not None:
                frame = frame.head(n_rows - produced)
            produced += frame.height
            yield frame
            if n_rows is not None and produced >= n_rows:
                return


def _all_frames(frames: list[Any]) -> list[Any]:
    return frames


def _register(source_fn: Any, export: ExportInfo) -> pl.LazyFrame:
    from polars.io.plugins import register_io_source

    return register_io_source(
        source_fn,
        schema=RAW_SCHEMA,
        explain_name="bubbly_metrics.scan_export",
        explain_detail=f"{export.export_type} export {export.export_id} at {export.location}",
    )


def map_files(
    export: ExportInfo,
    transform: Callable[[list[Any]], T],
    *,
    verify: bool = False,
    threads: int | None = None,
    processes: bool = False,
    on_file: Callable[[DataFile, int], None] | None = None,
    columns: frozenset[str] | None = None,
    per_batch: Callable[[pl.DataFrame], Any] | None = None,
    deletes: bool = False,
    files: list[DataFile] | None = None,
) -> Iterator[tuple[DataFile, T, int]]:
    """Read each data file of ``export`` on a pool; yield ``(data_file, transform(frames), deletes)``.

    ``deletes`` counts the file's lines that delete an item (incremental exports): they are read
    (and counted in ``on_file``'s records) but hold no record, so no frame has a row for them.

    Results come in manifest order with at most ``threads`` files in flight (default: the
    CPU count, at most 4), so memory is bounded by a few files whatever the export's size.
    ``transform`` runs where the file was read.  With ``processes=True`` the pool is worker
    processes (:mod:`bubbly_metrics._worker`; ``transform`` must then be picklable and should
    return something small, e.g. a per-file aggregate): decoding JSON into Python objects with
    msgspec holds the GIL, so threads only overlap decompression and Polars work, while
    processes use every core.  The compiled decoder releases the GIL, so threads suffice.
    Where processes cannot be started, threads do the work.  ``columns``
    limits which :data:`RAW_SCHEMA` columns are materialised (others are null).

    With ``per_batch``, each batch of at most :data:`~bubbly_metrics._readfile.BATCH_ROWS`
    records is passed to it as soon as it is decoded (where the file is read) and ``transform``
    receives the list of its results instead of frames: a file's records then never sit in
    memory all at once.

    With ``deletes=True`` (incremental exports only) the frames hold the file's deleted items
    instead of its records: see :func:`scan_export`.

    ``files`` reads only those data files of the export (a batch of a distributed run,
    :mod:`bubbly_metrics.distributed`); by default, every file its manifest lists.
    """
    if files is None:
        files = export.data_files()
        _check_listing(export, files, verify)
    options = ScanOptions.for_export(export, verify=verify, columns=columns, deletes=deletes)
    yield from _filepool.in_order(
        export,
        files,
        options,
        transform,
        workers=_workers(threads),
        processes=processes,
        on_file=on_file,
        per_batch=per_batch,
    )


def _map(
    export: ExportInfo,
    transform: Callable[[list[Any]], T],
    options: ScanOptions,
    *,
    threads: int | None,
    on_file: Callable[[DataFile, int], None] | None,
) -> Iterator[tuple[DataFile, T, int]]:
    """:func:`map_files` over every data file, with the options already decided."""
    files = export.data_files()
    _check_listing(export, files, options.verify)
    yield from _filepool.in_order(export, files, options, transform, workers=_workers(threads), on_file=on_file)


def _workers(threads: int | None) -> int:
    return max(1, threads if threads is not None else min(os.cpu_count() or 1, 4))


def _check_listing(export: ExportInfo, files: list[DataFile], verify: bool) -> None:
    """Check that the manifest's files hold the items its summary counts (stop on it when ``verify``)."""
    problem = count_mismatch(export, files)
    if problem is not None:
        if verify:
            raise ExportIntegrityError(problem)
        logger.warning("%s; reading the %d data file(s) it lists (verify stops on this)", problem, len(files))
