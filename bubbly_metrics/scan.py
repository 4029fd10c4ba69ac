"""Scan an export's data files lazily into a narrow Polars frame of raw records.

Why not ``pl.scan_ndjson``: one syntactically broken line fails its whole scan, schema
inference silently drops attributes first seen late, and its JSON parser tokenises every
byte of the ``payload`` maps the metrics never read.  Instead each data file is streamed
through ISA-L gzip (about 4x zlib) and decoded, in bounded chunks, on a small pool, keeping
only the five attributes the metrics need: by the compiled simdjson decoder
(:mod:`bubbly_metrics._fastscan`, optional) straight into Arrow columns with the GIL released,
or by msgspec into typed structs (unknown fields skipped without being built).  msgspec is the
reference: the compiled decoder takes only blocks whose every line is a plain record or
delete, and leaves any other block, and so every rule about bad lines, to msgspec.  The
result is exposed as a real ``LazyFrame`` through Polars' IO-plugin interface, so
projections, filters and the streaming engine apply downstream exactly as with a native scan.

Bad input never aborts a scan and never costs more than the bad part: a broken line is
skipped (the rest of its file is kept), a truncated gzip keeps every complete line before the
cut, a corrupt gzip drops only its damaged member (whose inflated output cannot be trusted),
and each loss is counted by file and reason with the rest of the data: one row per file and
reason with ``read_error`` set and ``error_count`` saying how many lines (or damaged parts) it
stands for, never a row per bad line.

Memory is bounded whatever a file holds (SPEC §11): a line longer than :data:`MAX_LINE_BYTES`
is counted ``line_too_long`` and its bytes are dropped as they are inflated, never gathered;
unreadable lines are counts; and a batch of records ends at :data:`BATCH_ROWS` records or
:data:`_BATCH_BYTES` of lines, whichever comes first.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import itertools
import logging
import operator
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, TypeVar

import msgspec
import polars as pl
from isal import isal_zlib

from bubbly_metrics._text import clip
from bubbly_metrics.exceptions import ExportIntegrityError, InvalidArgumentError
from bubbly_metrics.exports import DataFile, ExportInfo, _check_regular, _is_local, check_digest, find_export
from bubbly_metrics.locations import filesystem

__all__ = ["MAX_LINE_BYTES", "RAW_SCHEMA", "ReadError", "map_files", "read_export", "scan_export"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20  # compressed bytes fed to the decompressor at a time
_GZIP_ERRORS: tuple[type[BaseException], ...] = (isal_zlib.error, zlib.error, OSError)  # type: ignore[assignment]
# Decompressed bytes per decompress call.  Bounded output is what lets ISA-L release the GIL
# for the whole call: 64 KB input slices with unbounded output ran 8 files in 0.71 s on two
# threads (0.92 s on one); 1 MB chunks capped at 1 MB out, in 0.29 s (0.55 s on one).
_OUT = 1 << 20
_LINES_BATCH = 2 << 20  # decompressed bytes decoded at a time (bounds memory per file; 8 MB cost +36 MB RSS, no speed)

MAX_LINE_BYTES = 8 << 20
"""The longest line read (8 MiB, newline excluded); a longer one is counted ``line_too_long``.

A DynamoDB item is at most 400 KB, counted as UTF-8 names and values, 1 byte per list element,
1 byte for a BOOL or NULL.  Its DynamoDB JSON is larger: the costliest values are list
elements (``{"S":""},`` is 9 bytes for 1 counted; ``{"BOOL":false},`` 15 for 2) and control
characters in strings (``\\u0001``: 6 for 1), so an item's line is at most about 9 x 400 KB =
3.6 MB, and an incremental line holding an old and a new image about twice that.  8 MiB is
above both; a longer line is no real export's, and is skipped without being held (its bytes
are dropped as they are inflated), so a line costs at most this much memory per file read.
"""


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
    """A line longer than :data:`MAX_LINE_BYTES` (no real export's); skipped without being read,
    the other lines of its file are kept."""
    MISSING_FILE = "missing_data_file"
    """A data file listed in the manifest does not exist."""
    COUNT_MISMATCH = "item_count_mismatch"
    """The file holds a different number of records than its manifest's ``itemCount``."""


# Typed structs with gc=False: the decoder skips every other attribute (the payload is most
# of each line) and the GC never scans millions of these small objects.  gc=False alone made
# decoding ~3x faster (measured: 0.54 s -> 0.15 s on an 80 MB file).
class _Value(msgspec.Struct, gc=False, frozen=True):
    S: str | None = None
    N: str | None = None
    # Not a DynamoDB type descriptor (those are upper case): False only on the shared
    # default below, which tells "attribute absent" from "present with another type".
    present: bool = True


_ABSENT = _Value(present=False)


class _Image(msgspec.Struct, gc=False):
    # Defaults instead of None let columns be built with C-level attrgetter maps.
    modelId: _Value = _ABSENT
    owner: _Value = _ABSENT
    createdAt: _Value = _ABSENT
    updatedAt: _Value = _ABSENT
    expiresAt: _Value = _ABSENT


class _Line(msgspec.Struct, gc=False):
    Item: _Image | None = None
    NewImage: _Image | None = None
    # Only its presence matters (an incremental line with Keys but no NewImage is a delete);
    # Raw keeps it undecoded.  (msgspec rejects ``Raw | None``: an empty Raw stands for absent.)
    Keys: msgspec.Raw = msgspec.Raw()


_DECODER = msgspec.json.Decoder(_Line)


class _Change(msgspec.Struct, gc=False):
    # The deletes view only (scan_export(deletes=True)): a delete is Keys without NewImage, and
    # its row is the OldImage (NEW_AND_OLD_IMAGES exports) or, without one (NEW_IMAGE), its Keys.
    Keys: _Image | None = None
    OldImage: _Image | None = None
    NewImage: msgspec.Raw = msgspec.Raw()


_CHANGES = msgspec.json.Decoder(_Change)

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
"""Columns of :func:`scan_export`.

``*_at`` hold the raw attribute value (N as its decimal string, S as the string) and
``*_at_type`` its DynamoDB type: ``"N"``, ``"S"``, ``"?"`` for any other type, null when the
attribute is absent.  ``file``/``line`` locate each record; ``read_error`` is set (and the
record columns null) on rows that stand for data that could not be read: one row per file and
reason, ``line`` its first line and ``error_count`` how many lines (or damaged parts) it stands
for (null on records, which stand for one each).
"""


@dataclass
class _FileResult:
    parts: list[Any]
    """The file's record frames, or what ``per_batch`` made of them (in file order)."""
    rows: int
    md5: str | None
    missing: bool = False
    deletes: int = 0
    """Incremental-export lines that delete an item (``Keys``, no ``NewImage``): read, not records."""


_IS_NONE = functools.partial(operator.is_, None)


def _timestamp(images: list[_Image], attr: str) -> tuple[pl.Series, pl.Series]:
    """Value and DynamoDB type of a timestamp attribute, as two String columns.

    Nearly every real timestamp is N, so only the N values are gathered for every row (with
    C-level maps); the few rows without one are looked at again for an S value or another type.
    """
    values = list(map(attrgetter(f"{attr}.N"), images))
    kinds: list[str | None] = ["N"] * len(values)
    get = attrgetter(attr)
    for i in itertools.compress(range(len(values)), map(_IS_NONE, values)):
        value = get(images[i])
        values[i] = value.S
        kinds[i] = "S" if value.S is not None else "?" if value.present else None
    return pl.Series(values, dtype=pl.String), pl.Series(kinds, dtype=pl.String)


@functools.lru_cache(maxsize=16)
def _built(columns: frozenset[str] | None) -> frozenset[str] | None:
    """The columns a decoder builds for ``columns`` (None: all).

    A timestamp's value and type are built as a pair, by both decoders alike: one batch can
    hold blocks from both, and its frames must have the same columns.
    """
    if columns is None:
        return None
    pairs = [frozenset({name, f"{name}_type"}) for name in ("created_at", "updated_at")]
    return columns.union(*(pair for pair in pairs if pair & columns))


def _columns(
    images: list[_Image], first_line: int, lines: list[int] | None, columns: frozenset[str] | None
) -> pl.DataFrame:
    """The record columns of one decoded block (``file`` and ``read_error`` come per file)."""
    built = _built(columns)

    def want(name: str) -> bool:
        return built is None or name in built

    def strings(getter: str) -> pl.Series:
        return pl.Series(list(map(attrgetter(getter), images)), dtype=pl.String)

    out: dict[str, pl.Series] = {
        "line": pl.Series(lines if lines is not None else range(first_line, first_line + len(images)), dtype=pl.UInt32),
    }
    if want("model_id"):
        out["model_id"] = strings("modelId.S")
    if want("owner"):
        out["owner"] = strings("owner.S")
    for attr, name in (("createdAt", "created_at"), ("updatedAt", "updated_at")):
        if want(name):
            out[name], out[f"{name}_type"] = _timestamp(images, attr)
    if want("expires_at"):
        out["expires_at"] = strings("expiresAt.N")
    return pl.DataFrame(out)


def _complete(blocks: list[pl.DataFrame], file: str) -> pl.DataFrame:
    """Return one file's record blocks as one :data:`RAW_SCHEMA` frame.

    Constant and skipped columns are added once per file: per block, they cost more than the
    decoding they accompany.
    """
    frame = pl.concat(blocks, how="vertical") if len(blocks) != 1 else blocks[0]
    return frame.select(
        pl.col(name)
        if name in frame.columns and name != "file"
        else pl.lit(file if name == "file" else None, dtype).alias(name)
        for name, dtype in RAW_SCHEMA.items()
    )


def _same(frame: pl.DataFrame) -> pl.DataFrame:
    return frame


_Errors = dict[str, list[int]]
"""Unreadable lines (and damaged parts) of a block or file: reason -> ``[count, first line]``."""


def _add_error(errors: _Errors, line: int, reason: str, count: int = 1) -> None:
    entry = errors.get(reason)
    if entry is None:
        errors[reason] = [count, line]
    else:
        entry[0] += count
        entry[1] = min(entry[1], line)


def _merge_errors(into: _Errors, errors: _Errors) -> None:
    for reason, (count, line) in errors.items():
        _add_error(into, line, reason, count)


def _error_frame(file: str, errors: _Errors | list[tuple[int, str]]) -> pl.DataFrame:
    """One row per reason (in order of first line): its first line and how many it stands for.

    ``errors`` may also be a list of ``(line, reason)`` (a file-level loss: ``[(0, reason)]``).
    """
    if isinstance(errors, list):
        counted: _Errors = {}
        for line, reason in errors:
            _add_error(counted, line, reason)
        errors = counted
    rows = sorted(errors.items(), key=lambda e: e[1][1])
    n = len(rows)
    frame = {name: pl.Series([None] * n, dtype=dtype) for name, dtype in RAW_SCHEMA.items()}
    frame["file"] = pl.Series([file] * n, dtype=pl.String)
    frame["line"] = pl.Series([min(line, 0xFFFFFFFF) for _, (_, line) in rows], dtype=pl.UInt32)
    frame["read_error"] = pl.Series([reason for reason, _ in rows], dtype=pl.String)
    frame["error_count"] = pl.Series([count for _, (count, _) in rows], dtype=pl.Int64)
    return pl.DataFrame(frame)


_ITEM, _NEW_IMAGE = attrgetter("Item"), attrgetter("NewImage")
_LINE_REASONS = (ReadError.BROKEN_LINE, ReadError.UNEXPECTED_SHAPE, ReadError.LINE_TOO_LONG)

# Decoded blocks a batch holds before it ends: real batches hold a few dozen 2 MB blocks; a file
# of many tiny gzip members would otherwise pile up one small frame per member.
_MAX_BLOCKS = 1024


@dataclass
class _Mark:
    """Where a file's reading stood when its current gzip member began."""

    parts: int = 0
    blocks: int = 0
    batch_rows: int = 0
    batch_bytes: int = 0
    errors: _Errors = field(default_factory=dict)
    line_no: int = 1
    rows: int = 0
    deletes: int = 0


_Decoded = tuple[pl.DataFrame, _Errors, int, int]
"""A decoded block: its record columns, its unreadable lines (by reason), lines read, deletes."""


def _fast_decoder() -> Any:
    """The compiled simdjson decoder (:mod:`bubbly_metrics._fastscan`), or None.

    It is optional (built on install when a C++ compiler is there; not in the Lambda bundle);
    ``BUBBLY_METRICS_DECODER=msgspec`` turns it off (benchmarks, and tests of the fallback).
    """
    if os.environ.get("BUBBLY_METRICS_DECODER", "") == "msgspec":
        return None
    try:
        from bubbly_metrics import _fastscan  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _fastscan


_FAST = _fast_decoder()


# Records per batch handed to ``per_batch`` (:func:`map_files`): bigger batches pay each
# batch's fixed Polars cost fewer times, smaller ones hold fewer records at once.  Measured on
# the aggregate path at 2M items: with the compiled decoder (threads, one process), 64k
# against 32k took wall 3.20 -> 2.79 s for peak RSS 247 -> 280 MB; with msgspec in worker
# processes (each its own Polars), 32k against whole files took a worker's peak 175 -> ~150 MB
# for 84 -> 110 ms of Polars per 125k records, and 16k saved nothing more.
BATCH_ROWS = 65_536 if _FAST is not None else 32_768
"""Records per batch handed to ``per_batch`` (:func:`map_files`)."""

# A batch also ends after this many bytes of lines (64 MiB with the compiled decoder, 32 MiB with
# msgspec).  Real records are ~600 bytes, so real batches end at BATCH_ROWS first; but records
# with huge keys (a 4 MB owner is valid JSON, and then a malformed record) would otherwise pile
# up BATCH_ROWS of them before the batch is summarised and freed.
_BATCH_BYTES = BATCH_ROWS * 1024


def decoder() -> str:
    """Which decoder reads data files: ``"simdjson"`` (compiled, with the GIL released) or ``"msgspec"``."""
    return "simdjson" if _FAST is not None else "msgspec"


@functools.lru_cache(maxsize=16)
def _wanted(columns: frozenset[str] | None) -> int:
    """The compiled decoder's bit mask of the columns to build (:func:`_built`; ``line`` always is)."""
    built = _built(columns)
    return sum(1 << i for i, name in enumerate(_FAST.COLUMNS) if built is None or name in built)


def _decode_block(
    block: memoryview, first_line: int, incremental: bool, columns: frozenset[str] | None, deletes: bool = False
) -> _Decoded:
    """Decode a block of complete lines with msgspec; fall back to line by line when any line is bad.

    This is the reference path: the compiled decoder takes a block only when every line in it
    is a plain record or delete, and then gives exactly these columns (tests/test_fastscan.py).
    """
    try:
        records = (_CHANGES if deletes else _DECODER).decode_lines(block)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return _decode_tolerant(block, first_line, incremental, columns, deletes)
    if not deletes:
        images = list(map(_NEW_IMAGE if incremental else _ITEM, records))
        if None not in images:
            return _columns(images, first_line, None, columns), {}, len(records), 0  # type: ignore[arg-type]
    return _sorted_lines(zip(itertools.count(first_line), records), {}, len(records), incremental, columns, deletes)


def _decode_tolerant(
    block: memoryview, first_line: int, incremental: bool, columns: frozenset[str] | None, deletes: bool = False
) -> _Decoded:
    decoder = _CHANGES if deletes else _DECODER
    decoded: list[tuple[int, Any]] = []
    errors: _Errors = {}
    raw_lines = bytes(block).split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    for k, raw in enumerate(raw_lines):
        if not raw.strip():
            continue
        try:
            decoded.append((first_line + k, decoder.decode(raw)))
        except (msgspec.ValidationError, RecursionError):  # too deep to read: no DynamoDB item is
            _add_error(errors, first_line + k, ReadError.UNEXPECTED_SHAPE)
        except msgspec.DecodeError:
            _add_error(errors, first_line + k, ReadError.BROKEN_LINE)
    return _sorted_lines(decoded, errors, sum(1 for raw in raw_lines if raw.strip()), incremental, columns, deletes)


def _sorted_lines(
    decoded: Iterable[tuple[int, Any]],
    errors: _Errors,
    lines: int,
    incremental: bool,
    columns: frozenset[str] | None,
    deletes_view: bool = False,
) -> _Decoded:
    """Sort decoded lines (line number, record) into records, deletes and lines of the wrong shape.

    Deletes (``Keys``, no ``NewImage``) contribute nothing; any other line without the image it
    should carry is not a record of this export: it joins ``errors``.  In the deletes view the
    roles swap: each delete's old image (or its keys) is the row, and records are passed over.
    """
    images: list[_Image] = []
    numbers: list[int] = []
    deletes = 0
    if deletes_view:
        for line, change in decoded:
            if len(change.NewImage):
                continue
            if change.Keys is None:
                _add_error(errors, line, ReadError.UNEXPECTED_SHAPE)
                continue
            images.append(change.OldImage if change.OldImage is not None else change.Keys)
            numbers.append(line)
            deletes += 1
        return _columns(images, 0, numbers, columns), errors, lines, deletes
    for line, record in decoded:
        image = record.NewImage if incremental else record.Item
        if image is not None:
            images.append(image)
            numbers.append(line)
        elif incremental and len(record.Keys):
            deletes += 1
        else:
            _add_error(errors, line, ReadError.UNEXPECTED_SHAPE)
    return _columns(images, 0, numbers, columns), errors, lines, deletes


def _read_file(
    fs: Any,
    data_file: DataFile,
    incremental: bool,
    verify: bool,
    columns: frozenset[str] | None = None,
    per_batch: Callable[[pl.DataFrame], Any] | None = None,
    deletes_view: bool = False,
) -> _FileResult:
    """Stream one data file: decompress in chunks, decode complete lines in bounded blocks.

    Without ``per_batch`` the parts are the file's :data:`RAW_SCHEMA` frames (usually one).
    With it, every :data:`BATCH_ROWS` records (and the rows of unreadable parts) become a frame
    that is handed to ``per_batch`` straight away and only its result is kept, so a file's
    records are never all in memory at once.

    Damage is handled by what can still be trusted.  A *truncated* stream keeps every complete
    line before the cut: what was inflated is genuine.  A *corrupt* stream is often detected
    only at its member's CRC, after garbage was already inflated, so every line of the damaged
    gzip member is dropped (earlier, intact members are kept: a batch that ends inside a
    member is cut at the member's start, so no part mixes trusted and untrusted lines).  A file
    whose record count differs from its manifest's ``itemCount`` is reported too.

    Members do not end batches: a file of 100,000 one-line members (legal gzip) is summarised
    in a few batches, not 100,000 (it took 970 MB and ten minutes when each member was one).
    """
    finish: Callable[[pl.DataFrame], Any] = per_batch if per_batch is not None else _same
    key = clip(data_file.key)  # for log lines (the frames keep the whole key)

    def damaged(message: str, *args: Any) -> None:
        # Under verify the caller raises on the same damage (_verify_result): no warning first
        # that says the run carries on.
        if not verify:
            logger.warning(message, *args)

    parts: list[Any] = []  # finished batches
    blocks: list[pl.DataFrame] = []  # decoded blocks of the batch in progress
    batch_rows = 0
    batch_bytes = 0  # bytes of lines decoded into the batch in progress
    errors: _Errors = {}
    digest = hashlib.md5() if verify else None
    pieces: list[bytes] = []  # decompressed output not decoded yet (joined once per block)
    pending = 0
    line_no = 1
    rows = 0
    deletes = 0
    error: str | None = None
    member = _Mark()  # the state when the current gzip member began (what corruption rolls back to)
    tail = 0  # bytes of the line in progress (after the last newline) held in ``pieces``
    skipping = False  # inside a line found too long: its bytes are dropped up to its newline
    building: Any = None  # the compiled decoder's columns of the batch in progress (a _fastscan.Block)

    def flush(*, complete_lines_only: bool) -> None:
        nonlocal pieces, pending, building
        if not pieces:
            return
        if _FAST is not None and not deletes_view:
            # The compiled decoder copies the pieces itself (no join), parses with the GIL
            # released, and appends the block's records to the batch's columns; None: it
            # declined (some line is not a plain record or delete) and msgspec decides below.
            held = len(building) if building is not None else 0
            got = _FAST.decode(pieces, line_no, incremental, complete_lines_only, _wanted(columns), building)
            if got is not None:
                building, n, deleted, rest = got
                if rest is not None:  # None: no complete line yet, the pieces wait for more
                    decoded = pending - len(rest)
                    pieces, pending = ([rest], len(rest)) if rest else ([], 0)
                    advance(n, deleted, (len(building) if building is not None else 0) - held, decoded)
                return
        take_built()
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        cut = data.rfind(b"\n") + 1 if complete_lines_only else len(data)
        rest = data[cut:]
        pieces, pending = ([rest], len(rest)) if rest else ([], 0)
        if cut <= 0:
            return
        with memoryview(data)[:cut] as block:
            frame, bad, n, deleted = _decode_block(block, line_no, incremental, columns, deletes_view)
        if frame.height:  # a block of unreadable lines only is counted in ``errors``, not kept
            blocks.append(frame)
        _merge_errors(errors, bad)
        advance(n, deleted, frame.height, cut)

    def advance(lines: int, deleted: int, records: int, decoded: int) -> None:
        """Count a decoded block's lines, deletes, records and bytes; a full batch goes to ``per_batch``."""
        nonlocal line_no, rows, deletes, batch_rows, batch_bytes
        line_no += lines
        rows += lines
        deletes += deleted
        batch_rows += records
        batch_bytes += decoded
        if per_batch is not None and (batch_rows >= BATCH_ROWS or batch_bytes >= _BATCH_BYTES):
            end_batch()

    def take_built() -> None:
        """The compiled decoder's records so far join the batch's blocks (keeping line order)."""
        nonlocal building
        if building is not None and len(building):
            blocks.append(pl.DataFrame(building))
        building = None

    def end_batch() -> None:
        nonlocal blocks, batch_rows, batch_bytes
        take_built()
        # The blocks of earlier (intact) members become a part of their own: corruption found
        # later in this member drops this member's part, never theirs.
        trusted, mine = blocks[: member.blocks], blocks[member.blocks :]
        if trusted:
            parts.append(finish(_complete(trusted, data_file.key)))
            member.parts = len(parts)
        if mine:
            parts.append(finish(_complete(mine, data_file.key)))
        blocks, batch_rows, batch_bytes = [], 0, 0
        member.blocks = member.batch_rows = member.batch_bytes = 0

    def too_long() -> None:
        """The line in progress is longer than MAX_LINE_BYTES: count it and drop what is held of it."""
        nonlocal pieces, pending, tail
        flush(complete_lines_only=True)  # the complete lines before it are read as usual
        pieces, pending, tail = [], 0, 0
        _add_error(errors, line_no, ReadError.LINE_TOO_LONG)
        advance(1, 0, 0, 0)

    def keep(out: bytes) -> bytes:
        """The part of inflated ``out`` to hold for decoding: all of it, unless a line is too long.

        Tracks the length of the line in progress (``tail``).  Real data costs two searches per
        1 MB of output, each ending within a line of its start or end.
        """
        nonlocal tail, skipping
        if skipping:
            end = out.find(b"\n")
            if end < 0:
                return b""
            skipping = False
            out = out[end + 1 :]
        first = out.find(b"\n")
        if first < 0:
            if tail + len(out) > MAX_LINE_BYTES:
                too_long()
                skipping = True
                return b""
            tail += len(out)
            return out
        # A line that ends here, too long.  The lines after it end within ``out``: shorter than
        # _OUT, which is far below MAX_LINE_BYTES.
        if tail + first > MAX_LINE_BYTES:
            too_long()
            out = out[first + 1 :]
        tail = len(out) - out.rfind(b"\n") - 1
        return out

    if _is_local(fs):
        _check_regular(data_file)  # a symlink to /dev/zero or a FIFO would be read forever
    try:
        handle = fs.open(data_file.path, "rb")
    except (FileNotFoundError, PermissionError) as exc:
        # One row stands for the file; the warning says how many items went with it.  Access
        # denied (s3fs: PermissionError) loses the file's records just as a 404 does.
        damaged(
            "%s: listed in the manifest with %d item(s) but %s; none of them are counted",
            data_file.key,
            data_file.item_count,
            "missing" if isinstance(exc, FileNotFoundError) else "not readable (access denied)",
        )
        return _FileResult([finish(_error_frame(data_file.key, [(0, ReadError.MISSING_FILE)]))], 0, None, missing=True)
    with handle:
        decomp = isal_zlib.decompressobj(31)
        in_member = False  # inside a gzip member whose end-of-stream marker is not seen yet
        seen_bytes = False
        while chunk := handle.read(_CHUNK):
            seen_bytes = True
            if digest is not None:
                digest.update(chunk)
            if error:
                continue  # keep hashing so verification reports the checksum too
            data = chunk
            try:
                while True:
                    in_member = in_member or bool(data)
                    out = decomp.decompress(data, _OUT)
                    produced = len(out)
                    if out := keep(out):
                        pieces.append(out)
                        pending += len(out)
                    if decomp.eof:
                        # The member's CRC checked out: its lines can be trusted.  Then
                        # start the next member (concatenated members are legal gzip).
                        flush(complete_lines_only=True)
                        take_built()  # the decoder's columns so far are all from intact members
                        member = _Mark(
                            len(parts),
                            len(blocks),
                            batch_rows,
                            batch_bytes,
                            {r: list(e) for r, e in errors.items()},
                            line_no,
                            rows,
                            deletes,
                        )
                        if len(blocks) >= _MAX_BLOCKS:  # many small members: bound the frames held
                            end_batch()
                        data = decomp.unused_data
                        decomp = isal_zlib.decompressobj(31)
                        in_member = False
                        if not data:
                            break
                        continue
                    if pending >= _LINES_BATCH:
                        flush(complete_lines_only=True)
                    data = decomp.unconsumed_tail
                    if not data and produced < _OUT:
                        break  # all input taken and no output held back
            except _GZIP_ERRORS:
                error = ReadError.CORRUPT_GZIP
                dropped = rows - member.rows
                del parts[member.parts :], blocks[member.blocks :]
                building = None  # taken at every member's end: it holds this member's rows only
                batch_rows, batch_bytes = member.batch_rows, member.batch_bytes
                errors = {r: list(e) for r, e in member.errors.items()}
                line_no, rows, deletes = member.line_no, member.rows, member.deletes
                pieces, pending, tail, skipping = [], 0, 0, False
                damaged(
                    "%s: corrupt gzip; dropped the %d line(s) of the damaged member, kept %d",
                    key,
                    dropped,
                    rows,
                )
                continue
        if not error and (in_member or not seen_bytes):
            # A stream cut before its end-of-stream marker (an empty file is not gzip at all):
            # the complete lines inflated so far are genuine, a partial last line is not.
            error = ReadError.TRUNCATED_GZIP
            flush(complete_lines_only=True)
            pieces, pending = [], 0
            damaged(
                "%s: truncated gzip after %d line(s); those were kept (the manifest lists %d)",
                key,
                rows,
                data_file.item_count,
            )
    flush(complete_lines_only=False)
    if error:
        _add_error(errors, line_no, error)
    elif rows != data_file.item_count:
        damaged("%s: %d record(s) read, the manifest says %d", key, rows, data_file.item_count)
        _add_error(errors, line_no, ReadError.COUNT_MISMATCH)
    end_batch()
    skipped = [errors[r] for r in _LINE_REASONS if r in errors]
    if skipped:  # one line per file, however many blocks they were in
        logger.warning(
            "%s: skipped %d unreadable line(s), first at line %d",
            key,
            sum(count for count, _ in skipped),
            min(line for _, line in skipped),
        )
    if errors:
        parts.append(finish(_error_frame(data_file.key, errors)))
    md5 = base64.b64encode(digest.digest()).decode() if digest is not None else None
    return _FileResult(parts, rows, md5, deletes=deletes)


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
    if deletes and export.export_type != "INCREMENTAL":
        raise InvalidArgumentError(
            f"export {export.export_id} is a {export.export_type} export; deletes come from INCREMENTAL exports"
        )

    def source_fn(
        with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, batch_size: int | None
    ) -> Iterator[pl.DataFrame]:
        wanted = None if with_columns is None else frozenset(with_columns)
        produced = 0
        for _, frames, _ in map_files(
            export,
            lambda frames: frames,
            verify=verify,
            threads=threads,
            on_file=on_file,
            columns=wanted,
            deletes=deletes,
        ):
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

    return _register(source_fn, export)


T = TypeVar("T")


def _work(
    location: str,
    storage_options: dict[str, Any],
    data_file: DataFile,
    incremental: bool,
    verify: bool,
    columns: frozenset[str] | None,
    transform: Callable[[list[Any]], T],
    per_batch: Callable[[pl.DataFrame], Any] | None,
    deletes: bool = False,
) -> tuple[_FileResult, T]:
    # Top-level (picklable), so it runs the same on a worker thread or in a worker process.
    fs, _ = filesystem(location, storage_options)
    result = _read_file(fs, data_file, incremental, verify, columns, per_batch, deletes)
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

    With ``per_batch``, each batch of at most :data:`BATCH_ROWS` records is passed to it as
    soon as it is decoded (where the file is read) and ``transform`` receives the list of its
    results instead of frames: a file's records then never sit in memory all at once.

    With ``deletes=True`` (incremental exports only) the frames hold the file's deleted items
    instead of its records: see :func:`scan_export`.

    ``files`` reads only those data files of the export (a batch of a distributed run,
    :mod:`bubbly_metrics.distributed`); by default, every file its manifest lists.
    """
    subset = files is not None
    files = export.data_files() if files is None else files
    listed = sum(f.item_count for f in files)
    if not subset and export.item_count is not None and listed != export.item_count:
        # Data files missing from the listing would be missing from the result without a trace.
        problem = (
            f"export {export.export_id}: manifest-files.json lists {listed} items "
            f"but manifest-summary.json says {export.item_count}"
        )
        if verify:
            raise ExportIntegrityError(problem)
        logger.warning("%s; reading the %d data file(s) it lists (verify stops on this)", problem, len(files))
    incremental = export.export_type == "INCREMENTAL"
    if deletes and not incremental:
        raise InvalidArgumentError(
            f"export {export.export_id} is a {export.export_type} export; deletes come from INCREMENTAL exports"
        )
    workers = max(1, threads if threads is not None else min(os.cpu_count() or 1, 4))
    with _pool(workers, processes) as pool:

        def submit(data_file: DataFile) -> Future[tuple[_FileResult, T]]:
            return pool.submit(
                _work,
                export.location,
                export.storage_options,
                data_file,
                incremental,
                verify,
                columns,
                transform,
                per_batch,
                deletes,
            )

        # A finished future holds its file's result: drop each one as soon as it is consumed.
        pending = deque(submit(f) for f in files[:workers])
        try:
            for index, data_file in enumerate(files):
                result, value = pending.popleft().result()
                if index + workers < len(files):
                    pending.append(submit(files[index + workers]))
                if verify:
                    _verify_result(data_file, result)
                if on_file is not None:
                    on_file(data_file, result.rows)
                deleted = result.deletes
                del result
                yield data_file, value, deleted
        finally:
            for future in pending:
                future.cancel()


def _register(source_fn: Any, export: ExportInfo) -> pl.LazyFrame:
    from polars.io.plugins import register_io_source

    return register_io_source(
        source_fn,
        schema=RAW_SCHEMA,
        explain_name="bubbly_metrics.scan_export",
        explain_detail=f"{export.export_type} export {export.export_id} at {export.location}",
    )


def _verify_result(data_file: DataFile, result: _FileResult) -> None:
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


def read_export(source: str | ExportInfo, **kwargs: Any) -> pl.DataFrame:
    """Eager :func:`scan_export`: the same arguments, collected into a DataFrame."""
    return scan_export(source, **kwargs).collect()
