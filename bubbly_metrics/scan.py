"""Scan an export's data files lazily into a narrow Polars frame of raw records.

Why not ``pl.scan_ndjson``: one syntactically broken line fails its whole scan, schema
inference silently drops attributes first seen late, and its JSON parser tokenises every
byte of the ``payload`` maps the metrics never read.  Instead each data file is streamed
through ISA-L gzip (about 4x zlib) and decoded by msgspec into typed structs that keep only
the five attributes the metrics need (unknown fields are skipped without being built), in
bounded chunks, on a small thread pool.  The result is exposed as a real ``LazyFrame``
through Polars' IO-plugin interface, so projections, filters and the streaming engine apply
downstream exactly as with a native scan.

Bad input never aborts a scan and never costs more than the bad part: a broken line is
skipped (the rest of its file is kept), a truncated or corrupt gzip keeps every complete
line before the damage, and each loss becomes a row with ``read_error`` set, so it is
counted by file and reason with the rest of the data.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec
import polars as pl
from isal import isal_zlib

from bubbly_metrics.exceptions import ExportIntegrityError
from bubbly_metrics.exports import DataFile, ExportInfo, find_export
from bubbly_metrics.locations import filesystem

__all__ = ["RAW_SCHEMA", "ReadError", "read_export", "scan_export"]

logger = logging.getLogger(__name__)

_CHUNK = 8 << 20  # compressed bytes fed to the decompressor at a time
_LINES_BATCH = 16 << 20  # decompressed bytes decoded at a time (bounds memory per file)


class ReadError:
    """Reasons a part of a data file could not be read (values of ``read_error``)."""

    BROKEN_LINE = "broken_json_line"
    """A line that is not valid JSON; the other lines of its file are kept."""
    UNEXPECTED_SHAPE = "unexpected_json_shape"
    """Valid JSON but not a DynamoDB-JSON record (e.g. ``{"Item": 5}``)."""
    TRUNCATED_GZIP = "truncated_gzip"
    """The gzip stream ends early; complete lines before the end were kept."""
    CORRUPT_GZIP = "corrupt_gzip"
    """The gzip stream is damaged; complete lines before the damage were kept."""
    MISSING_FILE = "missing_data_file"
    """A data file listed in the manifest does not exist."""


# Typed structs with gc=False: the decoder skips every other attribute (the payload is most
# of each line) and the GC never scans millions of these small objects.  gc=False alone made
# decoding ~3x faster (measured: 0.54 s -> 0.15 s on an 80 MB file).
class _Value(msgspec.Struct, gc=False):
    S: str | None = None
    N: str | None = None


class _Image(msgspec.Struct, gc=False):
    modelId: _Value | None = None
    owner: _Value | None = None
    createdAt: _Value | None = None
    updatedAt: _Value | None = None
    expiresAt: _Value | None = None


class _Line(msgspec.Struct, gc=False):
    Item: _Image | None = None
    NewImage: _Image | None = None


_DECODER = msgspec.json.Decoder(_Line)

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
}
"""Columns of :func:`scan_export`.

``*_at`` hold the raw attribute value (N as its decimal string, S as the string) and
``*_at_type`` its DynamoDB type: ``"N"``, ``"S"``, ``"?"`` for any other type, null when the
attribute is absent.  ``file``/``line`` locate each record; ``read_error`` is set (and the
record columns null) on rows that stand for data that could not be read.
"""


@dataclass
class _FileResult:
    frames: list[pl.DataFrame]
    rows: int
    md5: str | None


def _type_of(v: _Value | None) -> str | None:
    if v is None:
        return None
    if v.N is not None:
        return "N"
    if v.S is not None:
        return "S"
    return "?"


def _value_of(v: _Value | None) -> str | None:
    if v is None:
        return None
    return v.N if v.N is not None else v.S


def _columns(images: list[_Image], first_line: int, lines: list[int] | None, file: str) -> pl.DataFrame:
    n = len(images)
    mid = [i.modelId.S if i.modelId is not None else None for i in images]
    own = [i.owner.S if i.owner is not None else None for i in images]
    ca = [i.createdAt for i in images]
    ua = [i.updatedAt for i in images]
    ea = [i.expiresAt for i in images]
    line_no = pl.Series("line", lines, dtype=pl.UInt32) if lines is not None else pl.int_range(
        first_line, first_line + n, dtype=pl.UInt32, eager=True
    ).alias("line")
    return pl.DataFrame(
        {
            "file": pl.Series([file], dtype=pl.String).new_from_index(0, n) if n else pl.Series([], dtype=pl.String),
            "line": line_no,
            "model_id": pl.Series(mid, dtype=pl.String),
            "owner": pl.Series(own, dtype=pl.String),
            "created_at": pl.Series([_value_of(v) for v in ca], dtype=pl.String),
            "created_at_type": pl.Series([_type_of(v) for v in ca], dtype=pl.String),
            "updated_at": pl.Series([_value_of(v) for v in ua], dtype=pl.String),
            "updated_at_type": pl.Series([_type_of(v) for v in ua], dtype=pl.String),
            "expires_at": pl.Series([_value_of(v) for v in ea], dtype=pl.String),
            "read_error": pl.Series([None] * n, dtype=pl.String),
        }
    )


def _error_frame(file: str, errors: list[tuple[int, str]]) -> pl.DataFrame:
    n = len(errors)
    frame = {name: pl.Series([None] * n, dtype=dtype) for name, dtype in RAW_SCHEMA.items()}
    frame["file"] = pl.Series([file] * n, dtype=pl.String)
    frame["line"] = pl.Series([e[0] for e in errors], dtype=pl.UInt32)
    frame["read_error"] = pl.Series([e[1] for e in errors], dtype=pl.String)
    return pl.DataFrame(frame)


def _decode_block(block: bytes, first_line: int, file: str, incremental: bool) -> tuple[pl.DataFrame, int]:
    """Decode a block of complete lines; fall back to line by line when any line is bad."""
    try:
        records = _DECODER.decode_lines(block)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _decode_tolerant(block, first_line, file, incremental)
    images = [r.NewImage if incremental else r.Item for r in records]
    if incremental or any(i is None for i in images):
        # Deletes (no NewImage) contribute nothing; a full-export line without Item is not a
        # record either.  Keep line numbers of what remains.
        kept = [(first_line + k, i) for k, i in enumerate(images) if i is not None]
        return _columns([i for _, i in kept], 0, [n for n, _ in kept], file), len(records)
    return _columns(images, first_line, None, file), len(records)  # type: ignore[arg-type]


def _decode_tolerant(block: bytes, first_line: int, file: str, incremental: bool) -> tuple[pl.DataFrame, int]:
    images: list[_Image] = []
    numbers: list[int] = []
    errors: list[tuple[int, str]] = []
    raw_lines = block.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    for k, raw in enumerate(raw_lines):
        if not raw.strip():
            continue
        try:
            record = _DECODER.decode(raw)
        except msgspec.ValidationError:
            errors.append((first_line + k, ReadError.UNEXPECTED_SHAPE))
            continue
        except msgspec.DecodeError:
            errors.append((first_line + k, ReadError.BROKEN_LINE))
            continue
        image = record.NewImage if incremental else record.Item
        if image is not None:
            images.append(image)
            numbers.append(first_line + k)
    if errors:
        logger.warning("%s: skipped %d unreadable line(s), first at line %d", file, len(errors), errors[0][0])
    frame = _columns(images, 0, numbers, file)
    if errors:
        frame = pl.concat([frame, _error_frame(file, errors)])
    return frame, len(raw_lines)


def _read_file(fs: Any, data_file: DataFile, incremental: bool, verify: bool) -> _FileResult:
    """Stream one data file: decompress in chunks, decode complete lines in bounded blocks."""
    frames: list[pl.DataFrame] = []
    digest = hashlib.md5() if verify else None
    pending = b""
    line_no = 1
    rows = 0
    error: str | None = None

    def flush(final: bool) -> None:
        nonlocal pending, line_no, rows
        if final:
            block, pending = pending, b""
        else:
            cut = pending.rfind(b"\n")
            if cut < 0:
                return
            block, pending = pending[: cut + 1], pending[cut + 1 :]
        if not block.strip():
            return
        frame, n = _decode_block(block, line_no, data_file.key, incremental)
        line_no += n
        rows += n
        frames.append(frame)

    try:
        handle = fs.open(data_file.path, "rb")
    except FileNotFoundError:
        return _FileResult([_error_frame(data_file.key, [(0, ReadError.MISSING_FILE)])], 0, None)
    with handle:
        decomp = isal_zlib.decompressobj(31)
        in_member = False  # inside a gzip member whose end-of-stream marker is not seen yet
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            if digest is not None:
                digest.update(chunk)
            if error:
                continue  # keep hashing so verification reports the checksum too
            data = chunk
            try:
                while data:
                    in_member = True
                    pending += decomp.decompress(data)
                    data = b""
                    if decomp.eof:
                        # Concatenated gzip members are legal gzip: start the next member.
                        data = decomp.unused_data
                        decomp = isal_zlib.decompressobj(31)
                        in_member = False
            except (isal_zlib.error, zlib.error, OSError):
                error = ReadError.CORRUPT_GZIP
                continue
            if len(pending) >= _LINES_BATCH:
                flush(final=False)
        if in_member and not error:
            error = ReadError.TRUNCATED_GZIP
    if error:
        # Complete lines before the damage are good data; the partial last line is not.
        cut = pending.rfind(b"\n")
        pending = pending[: cut + 1] if cut >= 0 else b""
    flush(final=True)
    if error:
        logger.warning("%s: %s after %d line(s); the lines before it were kept", data_file.key, error, rows)
        frames.append(_error_frame(data_file.key, [(line_no, error)]))
    md5 = base64.b64encode(digest.digest()).decode() if digest is not None else None
    return _FileResult(frames, rows, md5)


def scan_export(
    source: str | ExportInfo,
    *,
    export_type: str | None = None,
    storage_options: dict[str, Any] | None = None,
    verify: bool = False,
    threads: int | None = None,
    on_file: Callable[[DataFile, int], None] | None = None,
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

    Returns
    -------
    polars.LazyFrame
        One row per record (full export: each ``Item``; incremental: each ``NewImage`` —
        deletes contribute nothing), plus one row per unreadable part with ``read_error``.

    Examples
    --------
    >>> from bubbly_metrics import sample_export_location, scan_export
    >>> lf = scan_export(sample_export_location(), export_type="full")
    >>> lf.select("model_id", "owner").head(2).collect().columns
    ['model_id', 'owner']
    """
    export = find_export(source, export_type=export_type, storage_options=storage_options)
    files = export.data_files()
    incremental = export.export_type == "INCREMENTAL"
    workers = max(1, threads if threads is not None else min(os.cpu_count() or 1, 4))

    def source_fn(
        with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, batch_size: int | None
    ) -> Iterator[pl.DataFrame]:
        fs, _ = filesystem(export.location, export.storage_options)
        produced = 0
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bubbly-scan") as pool:
            # At most `workers` files in flight: memory stays bounded whatever the export size.
            futures = [pool.submit(_read_file, fs, f, incremental, verify) for f in files[:workers]]
            for index, data_file in enumerate(files):
                result = futures[index].result()
                nxt = index + workers
                if nxt < len(files):
                    futures.append(pool.submit(_read_file, fs, files[nxt], incremental, verify))
                if verify:
                    _verify_result(data_file, result)
                if on_file is not None:
                    on_file(data_file, result.rows)
                for frame in result.frames:
                    if predicate is not None:
                        frame = frame.filter(predicate)
                    if with_columns is not None:
                        frame = frame.select(with_columns)
                    if n_rows is not None:
                        frame = frame.head(n_rows - produced)
                    produced += frame.height
                    yield frame
                    if n_rows is not None and produced >= n_rows:
                        for f in futures[index + 1 :]:
                            f.cancel()
                        return

    return _register(source_fn, export)


def _register(source_fn: Any, export: ExportInfo) -> pl.LazyFrame:
    from polars.io.plugins import register_io_source

    return register_io_source(
        source_fn,
        schema=RAW_SCHEMA,
        explain_name="bubbly_metrics.scan_export",
        explain_detail=f"{export.export_type} export {export.export_id} at {export.location}",
    )


def _verify_result(data_file: DataFile, result: _FileResult) -> None:
    if result.md5 is not None and result.md5 != data_file.md5_checksum:
        raise ExportIntegrityError(
            f"checksum mismatch for data file {data_file.key}: manifest says "
            f"{data_file.md5_checksum}, file has {result.md5}"
        )
    if result.rows != data_file.item_count:
        raise ExportIntegrityError(
            f"data file {data_file.key} holds {result.rows} records but its manifest says {data_file.item_count}"
        )


def read_export(source: str | ExportInfo, **kwargs: Any) -> pl.DataFrame:
    """Eager :func:`scan_export`: the same arguments, collected into a DataFrame."""
    return scan_export(source, **kwargs).collect()
