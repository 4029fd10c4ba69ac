"""Decode blocks of data-file lines with msgspec: the reference decoder.

msgspec decodes each line into typed structs, skipping every attribute the metrics do not
read (unknown fields are not built), and the five attributes become Polars columns.  The
compiled decoder (:mod:`bubbly_metrics._decoder`) takes only blocks whose every line is a plain
record or delete, and then gives exactly these columns (tests/test_fastscan.py); every rule
about bad lines is here.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Iterable
from operator import attrgetter
from typing import Any, NamedTuple

import msgspec
import polars as pl

from bubbly_metrics._decoder import built
from bubbly_metrics._rows import Errors, ReadError, ScanOptions, add_error

__all__ = ["Decoded", "decode_block"]


# Typed structs with gc=False: the decoder skips every other attribute (the payload is most
# of each line) and the GC never scans millions of these small objects.  gc=False alone made
# decoding several times faster (see docs/performance.md).
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


class Decoded(NamedTuple):
    """A decoded block."""

    frame: pl.DataFrame
    """Its record columns (``file`` and ``read_error`` come per file)."""
    errors: Errors
    """Its unreadable lines, by reason."""
    lines: int
    """Lines read."""
    deletes: int
    """Deletes among them (in the deletes view: the rows)."""


_IS_NONE = functools.partial(operator.is_, None)
_ITEM, _NEW_IMAGE = attrgetter("Item"), attrgetter("NewImage")


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


def _columns(
    images: list[_Image], first_line: int, lines: list[int] | None, columns: frozenset[str] | None
) -> pl.DataFrame:
    """The record columns of one decoded block (``file`` and ``read_error`` come per file)."""
    names = built(columns)

    def want(name: str) -> bool:
        return names is None or name in names

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


def decode_block(block: memoryview, first_line: int, options: ScanOptions) -> Decoded:
    """Decode a block of complete lines with msgspec; fall back to line by line when any line is bad.

    This is the reference path: the compiled decoder takes a block only when every line in it
    is a plain record or delete, and then gives exactly these columns (tests/test_fastscan.py).
    """
    try:
        records = (_CHANGES if options.deletes else _DECODER).decode_lines(block)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return _decode_tolerant(block, first_line, options)
    if not options.deletes:
        images = list(map(_NEW_IMAGE if options.incremental else _ITEM, records))
        if None not in images:
            return Decoded(_columns(images, first_line, None, options.columns), {}, len(records), 0)  # type: ignore[arg-type]
    return _sorted_lines(zip(itertools.count(first_line), records), {}, len(records), options)


def _decode_tolerant(block: memoryview, first_line: int, options: ScanOptions) -> Decoded:
    decoder = _CHANGES if options.deletes else _DECODER
    decoded: list[tuple[int, Any]] = []
    errors: Errors = {}
    raw_lines = bytes(block).split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    for k, raw in enumerate(raw_lines):
        if not raw.strip():
            continue
        try:
            decoded.append((first_line + k, decoder.decode(raw)))
        except (msgspec.ValidationError, RecursionError):  # too deep to read: no DynamoDB item is
            add_error(errors, first_line + k, ReadError.UNEXPECTED_SHAPE)
        except msgspec.DecodeError:
            add_error(errors, first_line + k, ReadError.BROKEN_LINE)
    return _sorted_lines(decoded, errors, sum(1 for raw in raw_lines if raw.strip()), options)


def _sorted_lines(decoded: Iterable[tuple[int, Any]], errors: Errors, lines: int, options: ScanOptions) -> Decoded:
    """Sort decoded lines (line number, record) into records, deletes and lines of the wrong shape.

    Deletes (``Keys``, no ``NewImage``) contribute nothing; any other line without the image it
    should carry is not a record of this export: it joins ``errors``.  In the deletes view the
    roles swap: each delete's old image (or its keys) is the row, and records are passed over.
    """
    if options.deletes:
        return _sorted_changes(decoded, errors, lines, options.columns)
    images: list[_Image] = []
    numbers: list[int] = []
    deletes = 0
    incremental = options.incremental
    for line, record in decoded:
        image = record.NewImage if incremental else record.Item
        if image is not None:
            images.append(image)
            numbers.append(line)
        elif incremental and len(record.Keys):
            deletes += 1
        else:
            add_error(errors, line, ReadError.UNEXPECTED_SHAPE)
    return Decoded(_columns(images, 0, numbers, options.columns), errors, lines, deletes)


def _sorted_changes(
    decoded: Iterable[tuple[int, Any]], errors: Errors, lines: int, columns: frozenset[str] | None
) -> Decoded:
    """The deletes view of :func:`_sorted_lines`: each delete's old image (or its keys) is a row."""
    images: list[_Image] = []
    numbers: list[int] = []
    deletes = 0
    for line, change in decoded:
        if len(change.NewImage):
            continue
        if change.Keys is None:
            add_error(errors, line, ReadError.UNEXPECTED_SHAPE)
            continue
        images.append(change.OldImage if change.OldImage is not None else change.Keys)
        numbers.append(line)
        deletes += 1
    return Decoded(_columns(images, 0, numbers, columns), errors, lines, deletes)
