"""Read an export's data files on a pool of threads or worker processes, results in manifest order.

At most ``workers`` files are in flight, so memory is bounded by a few files whatever the
export's size.  Each file is read where it is scheduled (:func:`read_one`: a thread here, or a
worker process of :mod:`bubbly_metrics._worker`, which pickles its arguments: the
:class:`~bubbly_metrics._rows.ScanOptions` included).
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import polars as pl

from bubbly_metrics._readfile import FileReader, FileResult
from bubbly_metrics._rows import ScanOptions
from bubbly_metrics._text import clip
from bubbly_metrics.exceptions import ExportIntegrityError
from bubbly_metrics.exports import DataFile, ExportInfo, check_digest
from bubbly_metrics.locations import filesystem

__all__ = ["in_order", "read_one"]

logger = logging.getLogger("bubbly_metrics.scan")  # the read side logs as the scan

T = TypeVar("T")


def read_one(
    location: str,
    storage_options: dict[str, Any],
    data_file: DataFile,
    options: ScanOptions,
    transform: Callable[[list[Any]], T],
    per_batch: Callable[[pl.DataFrame], Any] | None,
) -> tuple[FileResult, T]:
    """Read one data file and ``transform`` its parts, where it was scheduled."""
    # Top-level (picklable), so it runs the same on a worker thread or in a worker process.
    fs, _ = filesystem(location, storage_options)
    result = FileReader(data_file, options, per_batch).read(fs)
    value = transform(result.parts)
    result.parts = []  # consumed by transform; never shipped back from a worker process
    return result, value


@contextlib.contextmanager
def _pool(workers: int, processes: bool) -> Iterator[Any]:
    if processes:
        from bubbly_metrics._worker import ProcessPool

        try:
            # This process only waits for and merges results meanwhile: one lane runs here.
            pool = ProcessPool(workers - 1, local=1)
        except OSError as exc:
            logger.info("worker processes unavailable (%s); reading on threads", exc)
        else:
            with pool:
                yield pool
            return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bubbly-scan") as threads:
        yield threads


def in_order(
    export: ExportInfo,
    files: list[DataFile],
    options: ScanOptions,
    transform: Callable[[list[Any]], T],
    *,
    workers: int,
    processes: bool = False,
    on_file: Callable[[DataFile, int], None] | None = None,
    per_batch: Callable[[pl.DataFrame], Any] | None = None,
) -> Iterator[tuple[DataFile, T, int]]:
    """Read ``files`` on a pool of ``workers``; yield ``(data_file, transform(parts), deletes)`` in order.

    Under ``options.verify`` a damaged file raises :class:`ExportIntegrityError` naming it.
    """
    with _pool(workers, processes) as pool:

        def submit(data_file: DataFile) -> Future[tuple[FileResult, T]]:
            return pool.submit(
                read_one, export.location, export.storage_options, data_file, options, transform, per_batch
            )

        # A finished future holds its file's result: drop each one as soon as it is consumed.
        pending = deque(submit(f) for f in files[:workers])
        try:
            for index, data_file in enumerate(files):
                result, value = pending.popleft().result()
                if index + workers < len(files):
                    pending.append(submit(files[index + workers]))
                if options.verify:
                    _verify_result(data_file, result)
                if on_file is not None:
                    on_file(data_file, result.rows)
                deleted = result.deletes
                del result
                yield data_file, value, deleted
        finally:
            for future in pending:
                future.cancel()


def _verify_result(data_file: DataFile, result: FileResult) -> None:
    if result.missing:
        raise ExportIntegrityError(
            f"data file {clip(data_file.key)} listed in the manifest is missing ({clip(data_file.path)})"
        )
    if result.md5 is not None:
        check_digest(data_file, result.md5)
    if result.rows != data_file.item_count:
        raise ExportIntegrityError(
            f"data file {clip(data_file.key)} holds {result.rows} records but its manifest says {data_file.item_count}"
        )
