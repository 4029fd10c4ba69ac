"""Read one data file: inflate it in bounded chunks, cut complete lines, decode them in blocks.

:class:`FileReader` streams a file through ISA-L gzip, holds inflated output until a block of
complete lines is ready, decodes the block (compiled decoder when it takes it, msgspec
otherwise) and gathers records into batches of at most :data:`BATCH_ROWS` records.  Every loss
is counted by reason (:class:`~bubbly_metrics.scan.ReadError`), never raised, and memory stays
bounded whatever the file holds (docs/rules.md#faults-and-hostile-input).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from isal import isal_zlib

from bubbly_metrics import _decoder
from bubbly_metrics._decode import decode_block
from bubbly_metrics._rows import RAW_SCHEMA, Errors, ReadError, ScanOptions, add_error, merge_errors
from bubbly_metrics._text import clip
from bubbly_metrics.exports import DataFile, _check_regular, _is_local

__all__ = ["BATCH_ROWS", "MAX_LINE_BYTES", "FileReader", "FileResult"]

logger = logging.getLogger("bubbly_metrics.scan")  # the read side logs as the scan

_CHUNK = 1 << 20  # compressed bytes fed to the decompressor at a time
_GZIP_ERRORS: tuple[type[BaseException], ...] = (isal_zlib.error, zlib.error, OSError)  # type: ignore[assignment]
# Decompressed bytes per decompress call.  Bounded output is what lets ISA-L release the GIL
# for the whole call, so threads overlap inflating (see docs/performance.md).
_OUT = 1 << 20
_LINES_BATCH = 2 << 20  # decompressed bytes decoded at a time (bounds memory per file; see docs/performance.md)

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

# Records per batch handed to ``per_batch`` (:func:`~bubbly_metrics.scan.map_files`): bigger
# batches pay each batch's fixed Polars cost fewer times, smaller ones hold fewer records at
# once.  The sizes were measured on the aggregate path, with each decoder (see docs/performance.md).
BATCH_ROWS = 65_536 if _decoder.FAST is not None else 32_768
"""Records per batch handed to ``per_batch`` (:func:`~bubbly_metrics.scan.map_files`)."""

# A batch also ends after this many bytes (64 MiB with the compiled decoder, 32 MiB with
# msgspec): of the records' decoded columns with the compiled decoder, of the lines decoded with
# msgspec.  Real batches end at BATCH_ROWS first; but records with huge keys (a 4 MB owner is
# valid JSON, and then a malformed record) would otherwise pile up BATCH_ROWS of them before the
# batch is summarised and freed.
_BATCH_BYTES = BATCH_ROWS * 1024

# Decoded blocks a batch holds before it ends: real batches hold a few dozen 2 MB blocks; a file
# of many tiny gzip members would otherwise pile up one small frame per member.
_MAX_BLOCKS = 1024

_LINE_REASONS = (ReadError.BROKEN_LINE, ReadError.UNEXPECTED_SHAPE, ReadError.LINE_TOO_LONG)


@dataclass
class FileResult:
    parts: list[Any]
    """The file's record frames, or what ``per_batch`` made of them (in file order)."""
    rows: int
    md5: str | None
    missing: bool = False
    deletes: int = 0
    """Incremental-export lines that delete an item (``Keys``, no ``NewImage``): read, not records."""


@dataclass
class _Mark:
    """Where a file's reading stood when its current gzip member began."""

    parts: int = 0
    blocks: int = 0
    batch_rows: int = 0
    batch_bytes: int = 0
    errors: Errors = field(default_factory=dict)
    line_no: int = 1
    rows: int = 0
    deletes: int = 0


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


def _error_frame(file: str, errors: Errors | list[tuple[int, str]]) -> pl.DataFrame:
    """One row per reason (in order of first line): its first line and how many it stands for.

    ``errors`` may also be a list of ``(line, reason)`` (a file-level loss: ``[(0, reason)]``).
    """
    if isinstance(errors, list):
        counted: Errors = {}
        for line, reason in errors:
            add_error(counted, line, reason)
        errors = counted
    rows = sorted(errors.items(), key=lambda e: e[1][1])
    n = len(rows)
    frame = {name: pl.Series([None] * n, dtype=dtype) for name, dtype in RAW_SCHEMA.items()}
    frame["file"] = pl.Series([file] * n, dtype=pl.String)
    frame["line"] = pl.Series([min(line, 0xFFFFFFFF) for _, (_, line) in rows], dtype=pl.UInt32)
    frame["read_error"] = pl.Series([reason for reason, _ in rows], dtype=pl.String)
    frame["error_count"] = pl.Series([count for _, (count, _) in rows], dtype=pl.Int64)
    return pl.DataFrame(frame)


class FileReader:
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
    in a few batches, not 100,000.

    With a ``per_batch`` that has ``count_days`` (the aggregate path's) and the compiled decoder
    counting (:data:`~bubbly_metrics._decoder.COUNTING`), records with a plain outcome are
    counted in the decoder instead of becoming rows; the file's counts (of intact gzip members
    only) become one more part, ``per_batch.from_counts(counts)``.

    One reader reads one file once: ``FileReader(data_file, options, per_batch).read(fs)``.
    """

    def __init__(
        self, data_file: DataFile, options: ScanOptions, per_batch: Callable[[pl.DataFrame], Any] | None = None
    ) -> None:
        self.data_file = data_file
        self.options = options
        self.per_batch = per_batch
        self.finish: Callable[[pl.DataFrame], Any] = per_batch if per_batch is not None else _same
        self.key = clip(data_file.key)  # for log lines (the frames keep the whole key)
        # The compiled decoder, unless it is off or this is the deletes view (msgspec alone).
        self.fast: Any = _decoder.FAST if not options.deletes else None
        self.wanted = _decoder.wanted(options.columns) if self.fast is not None else 0
        # Counting in the decoder (aggregate only: a ``per_batch`` that says which days it counts):
        # the file's counts of intact gzip members, and those of the member being read.
        days = getattr(per_batch, "count_days", None) if self.fast is not None and _decoder.COUNTING else None
        self.counts: Any = _decoder.FAST.counts(*days) if days is not None else None
        self.member_counts: Any = _decoder.FAST.counts(*days) if days is not None else None
        self.digest = hashlib.md5() if options.verify else None
        self.parts: list[Any] = []  # finished batches
        self.blocks: list[pl.DataFrame] = []  # decoded blocks of the batch in progress
        self.batch_rows = 0
        self.batch_bytes = 0  # what the batch in progress holds, in bytes (see _BATCH_BYTES)
        self.errors: Errors = {}
        self.pieces: list[bytes] = []  # decompressed output not decoded yet (joined once per block)
        self.pending = 0
        self.line_no = 1
        self.rows = 0
        self.deletes = 0
        self.error: str | None = None
        self.member = _Mark()  # the state when the current gzip member began (what corruption rolls back to)
        self.tail = 0  # bytes of the line in progress (after the last newline) held in ``pieces``
        self.skipping = False  # inside a line found too long: its bytes are dropped up to its newline
        self.building: Any = None  # the compiled decoder's columns of the batch in progress (a _fastscan.Block)
        self.decomp: Any = None
        self.in_member = False  # inside a gzip member whose end-of-stream marker is not seen yet

    # --- the file -----------------------------------------------------------------------------

    def read(self, fs: Any) -> FileResult:
        """Read the whole file from ``fs``; what could not be read is counted in the result."""
        data_file = self.data_file
        if _is_local(fs):
            _check_regular(data_file)  # a symlink to /dev/zero or a FIFO would be read forever
        try:
            handle = fs.open(data_file.path, "rb")
        except (FileNotFoundError, PermissionError) as exc:
            # One row stands for the file; the warning says how many items went with it.  Access
            # denied (s3fs: PermissionError) loses the file's records just as a 404 does.
            self.damaged(
                "%s: listed in the manifest with %d item(s) but %s; none of them are counted",
                data_file.key,
                data_file.item_count,
                "missing" if isinstance(exc, FileNotFoundError) else "not readable (access denied)",
            )
            frame = self.finish(_error_frame(data_file.key, [(0, ReadError.MISSING_FILE)]))
            return FileResult([frame], 0, None, missing=True)
        with handle:
            self.inflate(handle)
        return self.result()

    def damaged(self, message: str, *args: Any) -> None:
        # Under verify the caller raises on the same damage (map_files): no warning first that
        # says the run carries on.
        if not self.options.verify:
            logger.warning(message, *args)

    def result(self) -> FileResult:
        """Decode what is left, account the file's losses and return its parts."""
        self.flush(complete_lines_only=False)
        data_file, errors = self.data_file, self.errors
        if self.error:
            add_error(errors, self.line_no, self.error)
        elif self.rows != data_file.item_count:
            self.damaged("%s: %d record(s) read, the manifest says %d", self.key, self.rows, data_file.item_count)
            add_error(errors, self.line_no, ReadError.COUNT_MISMATCH)
        self.end_batch()
        if self.counts is not None:
            self.counts.merge(self.member_counts)
            self.parts.append(self.per_batch.from_counts(self.counts))  # type: ignore[union-attr]
        skipped = [errors[r] for r in _LINE_REASONS if r in errors]
        if skipped:  # one line per file, however many blocks they were in
            logger.warning(
                "%s: skipped %d unreadable line(s), first at line %d",
                self.key,
                sum(count for count, _ in skipped),
                min(line for _, line in skipped),
            )
        if errors:
            self.parts.append(self.finish(_error_frame(data_file.key, errors)))
        md5 = base64.b64encode(self.digest.digest()).decode() if self.digest is not None else None
        return FileResult(self.parts, self.rows, md5, deletes=self.deletes)

    # --- inflating ----------------------------------------------------------------------------

    def inflate(self, handle: Any) -> None:
        """Inflate the file chunk by chunk; a damaged stream drops what cannot be trusted."""
        self.decomp = isal_zlib.decompressobj(31)
        self.in_member = False
        seen_bytes = False
        while chunk := handle.read(_CHUNK):
            seen_bytes = True
            if self.digest is not None:
                self.digest.update(chunk)
            if self.error:
                continue  # keep hashing so verification reports the checksum too
            try:
                self.inflate_chunk(chunk)
            except _GZIP_ERRORS:
                self.drop_member()
        if not self.error and (self.in_member or not seen_bytes):
            # A stream cut before its end-of-stream marker (an empty file is not gzip at all):
            # the complete lines inflated so far are genuine, a partial last line is not.
            self.error = ReadError.TRUNCATED_GZIP
            self.flush(complete_lines_only=True)
            self.pieces, self.pending = [], 0
            self.damaged(
                "%s: truncated gzip after %d line(s); those were kept (the manifest lists %d)",
                self.key,
                self.rows,
                self.data_file.item_count,
            )

    def inflate_chunk(self, data: bytes) -> None:
        """Inflate one compressed chunk; decode whenever enough complete lines are held."""
        decomp = self.decomp
        while True:
            self.in_member = self.in_member or bool(data)
            out = decomp.decompress(data, _OUT)
            produced = len(out)
            if out := self.keep(out):
                self.pieces.append(out)
                self.pending += len(out)
            if decomp.eof:
                data = self.end_member()
                decomp = self.decomp
                if not data:
                    break
                continue
            if self.pending >= _LINES_BATCH:
                self.flush(complete_lines_only=True)
            data = decomp.unconsumed_tail
            if not data and produced < _OUT:
                break  # all input taken and no output held back

    def end_member(self) -> bytes:
        """A gzip member ended intact: mark where it did and start the next; return the data after it."""
        # The member's CRC checked out: its lines can be trusted.  Then start the next member
        # (concatenated members are legal gzip).
        self.flush(complete_lines_only=True)
        self.take_built()  # the decoder's columns so far are all from intact members
        if self.counts is not None:
            self.counts.merge(self.member_counts)  # and so are its counts
        self.member = _Mark(
            len(self.parts),
            len(self.blocks),
            self.batch_rows,
            self.batch_bytes,
            {r: list(e) for r, e in self.errors.items()},
            self.line_no,
            self.rows,
            self.deletes,
        )
        if len(self.blocks) >= _MAX_BLOCKS:  # many small members: bound the frames held
            self.end_batch()
        data: bytes = self.decomp.unused_data
        self.decomp = isal_zlib.decompressobj(31)
        self.in_member = False
        return data

    def drop_member(self) -> None:
        """The stream is corrupt: drop everything read since the current member began."""
        self.error = ReadError.CORRUPT_GZIP
        member = self.member
        dropped = self.rows - member.rows
        del self.parts[member.parts :], self.blocks[member.blocks :]
        self.building = None  # taken at every member's end: it holds this member's rows only
        if self.member_counts is not None:
            self.member_counts.clear()  # merged at every member's end: this member's counts only
        self.batch_rows, self.batch_bytes = member.batch_rows, member.batch_bytes
        self.errors = {r: list(e) for r, e in member.errors.items()}
        self.line_no, self.rows, self.deletes = member.line_no, member.rows, member.deletes
        self.pieces, self.pending, self.tail, self.skipping = [], 0, 0, False
        self.damaged(
            "%s: corrupt gzip; dropped the %d line(s) of the damaged member, kept %d",
            self.key,
            dropped,
            self.rows,
        )

    # --- splitting lines ----------------------------------------------------------------------

    def keep(self, out: bytes) -> bytes:
        """The part of inflated ``out`` to hold for decoding: all of it, unless a line is too long.

        Tracks the length of the line in progress (``tail``).  Real data costs two searches per
        1 MB of output, each ending within a line of its start or end.
        """
        if self.skipping:
            end = out.find(b"\n")
            if end < 0:
                return b""
            self.skipping = False
            out = out[end + 1 :]
        first = out.find(b"\n")
        if first < 0:
            if self.tail + len(out) > MAX_LINE_BYTES:
                self.too_long()
                self.skipping = True
                return b""
            self.tail += len(out)
            return out
        # A line that ends here, too long.  The lines after it end within ``out``: shorter than
        # _OUT, which is far below MAX_LINE_BYTES.
        if self.tail + first > MAX_LINE_BYTES:
            self.too_long()
            out = out[first + 1 :]
        self.tail = len(out) - out.rfind(b"\n") - 1
        return out

    def too_long(self) -> None:
        """The line in progress is longer than MAX_LINE_BYTES: count it and drop what is held of it."""
        self.flush(complete_lines_only=True)  # the complete lines before it are read as usual
        self.pieces, self.pending, self.tail = [], 0, 0
        add_error(self.errors, self.line_no, ReadError.LINE_TOO_LONG)
        self.advance(1, 0, 0, 0)

    # --- decoding -----------------------------------------------------------------------------

    def flush(self, *, complete_lines_only: bool) -> None:
        """Decode the lines held (only the complete ones, unless the file has ended)."""
        if not self.pieces:
            return
        if self.fast is not None and self.decode_fast(complete_lines_only):
            return
        self.take_built()
        pieces = self.pieces
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        cut = data.rfind(b"\n") + 1 if complete_lines_only else len(data)
        rest = data[cut:]
        self.pieces, self.pending = ([rest], len(rest)) if rest else ([], 0)
        if cut <= 0:
            return
        with memoryview(data)[:cut] as block:
            frame, bad, n, deleted = decode_block(block, self.line_no, self.options)
        if frame.height:  # a block of unreadable lines only is counted in ``errors``, not kept
            self.blocks.append(frame)
        merge_errors(self.errors, bad)
        self.advance(n, deleted, frame.height, cut)

    def decode_fast(self, complete_lines_only: bool) -> bool:
        """Decode the lines held with the compiled decoder; False if it declined the block.

        It parses the lines where they lie in the pieces (no join; only a line that crosses
        pieces is copied), with the GIL released, and appends the block's records to the
        batch's columns; it declines when some line is not a plain record or delete, and
        msgspec decides (:meth:`flush`).
        """
        building = self.building
        held, held_bytes = (len(building), building.nbytes()) if building is not None else (0, 0)
        got = self.fast.decode(
            self.pieces,
            self.line_no,
            self.options.incremental,
            complete_lines_only,
            self.wanted,
            building,
            self.member_counts,
        )
        if got is None:
            return False
        building, n, deleted, rest = got
        self.building = building
        if rest is not None:  # None: no complete line yet, the pieces wait for more
            self.pieces, self.pending = ([rest], len(rest)) if rest else ([], 0)
            # What the batch holds grew by the records' columns, not by the lines: a counted
            # record holds nothing (and a batch of a few leftover rows is not ended early).
            rows, nbytes = (len(building), building.nbytes()) if building is not None else (0, 0)
            self.advance(n, deleted, rows - held, nbytes - held_bytes)
        return True

    def advance(self, lines: int, deleted: int, records: int, decoded: int) -> None:
        """Count a decoded block's lines, deletes, records and bytes; a full batch goes to ``per_batch``."""
        self.line_no += lines
        self.rows += lines
        self.deletes += deleted
        self.batch_rows += records
        self.batch_bytes += decoded
        if self.per_batch is not None and (self.batch_rows >= BATCH_ROWS or self.batch_bytes >= _BATCH_BYTES):
            self.end_batch()

    # --- batches ------------------------------------------------------------------------------

    def take_built(self) -> None:
        """The compiled decoder's records so far join the batch's blocks (keeping line order)."""
        if self.building is not None and len(self.building):
            self.blocks.append(pl.DataFrame(self.building))
        self.building = None

    def end_batch(self) -> None:
        self.take_built()
        # The blocks of earlier (intact) members become a part of their own: corruption found
        # later in this member drops this member's part, never theirs.
        member, blocks, key = self.member, self.blocks, self.data_file.key
        trusted, mine = blocks[: member.blocks], blocks[member.blocks :]
        if trusted:
            self.parts.append(self.finish(_complete(trusted, key)))
            member.parts = len(self.parts)
        if mine:
            self.parts.append(self.finish(_complete(mine, key)))
        self.blocks, self.batch_rows, self.batch_bytes = [], 0, 0
        member.blocks = member.batch_rows = member.batch_bytes = 0
