"""An export's manifests: its summary, the data files it lists, and their checks.

``manifest-summary.json`` describes an export (:class:`ExportInfo`); ``manifest-files.json``
lists its data files (:class:`DataFile`), each with its item count and MD5.  A manifest is
untrusted input (docs/rules.md#faults-and-hostile-input): it is read within bounds, and a data
file it lists must lie in its export's data folder.  :func:`verify_export` checks every data
file's checksum and the item counts against the summary (:func:`count_mismatch`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import posixpath
import stat
from dataclasses import dataclass, field
from typing import Any, Literal

from bubbly_metrics._text import clip
from bubbly_metrics._time import iso, midnight
from bubbly_metrics.exceptions import (
    ExportConfinementError,
    ExportIntegrityError,
    ExportLocationError,
    ExportNotFoundError,
    ExportWindowError,
    UnsupportedExportError,
)
from bubbly_metrics.locations import filesystem

__all__ = [
    "DataFile",
    "ExportInfo",
    "ExportType",
    "check_digest",
    "check_item_count",
    "count_mismatch",
    "verify_export",
]

ExportType = Literal["FULL", "INCREMENTAL"]


@dataclass(frozen=True)
class DataFile:
    """One data file of an export, as its manifest lists it."""

    key: str
    """``dataFileS3Key`` as written by AWS (relative to the bucket root)."""
    path: str
    """Where the file is on the export's filesystem."""
    item_count: int
    md5_checksum: str
    """Base64 MD5 of the compressed bytes."""


@dataclass(frozen=True)
class ExportInfo:
    """One export found at a location.

    ``status`` is ``"COMPLETED"`` when ``manifest-summary.json`` exists, ``"IN_PROGRESS"``
    when only ``_started`` does (AWS writes no summary for a failed export either), and
    ``"UNREADABLE"`` when its summary cannot be read (``problem`` says why): such an export is
    listed, never chosen.
    """

    export_id: str
    export_type: ExportType | None
    status: Literal["COMPLETED", "IN_PROGRESS", "UNREADABLE"]
    location: str
    """User-facing URI of the export's ``AWSDynamoDB/<ExportId>/`` folder."""
    export_time: dt.datetime | None = None
    export_from: dt.datetime | None = None
    export_to: dt.datetime | None = None
    item_count: int | None = None
    billed_size_bytes: int | None = None
    output_format: str | None = None
    output_view: str | None = None
    export_arn: str | None = None
    table_arn: str | None = None
    path: str = ""
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    problem: str | None = None
    """Why an ``UNREADABLE`` export cannot be used."""

    @property
    def as_of(self) -> dt.datetime | None:
        """The instant the export reflects: ``exportTime`` (full) or ``exportToTime``."""
        return self.export_time if self.export_type == "FULL" else self.export_to

    @property
    def window(self) -> str:
        """Human-readable export time (full) or window (incremental)."""
        if self.export_type == "INCREMENTAL" and self.export_from and self.export_to:
            return f"{iso(self.export_from)} → {iso(self.export_to)}"
        return iso(self.export_time) if self.export_time else "-"

    def covers_day(self, day: dt.date) -> bool:
        """True when an incremental window covers the whole UTC ``day``."""
        if self.export_from is None or self.export_to is None:
            return False
        start = midnight(day)
        return self.export_from <= start and self.export_to >= start + dt.timedelta(days=1)

    @property
    def last_day(self) -> dt.date | None:
        """A full export's last whole UTC day: the day before its ``exportTime`` (else None)."""
        if self.export_type != "FULL" or self.export_time is None:
            return None
        return (self.export_time - dt.timedelta(days=1)).date()

    def check_covers(self, day: dt.date) -> None:
        """Raise :class:`ExportWindowError` unless the export holds all of the UTC ``day``.

        An incremental export holds the days its window covers; a full export, every day that
        ended by its ``exportTime``.  Aggregating a day the export does not hold would report
        zeros that are not facts (and publishing them would overwrite real ones).
        """
        if self.export_type == "INCREMENTAL":
            if not self.covers_day(day):
                raise ExportWindowError(
                    f"incremental export {self.export_id} covers {self.window}, "
                    f"which does not include {day.isoformat()}; run an export for that day first"
                )
        elif (last := self.last_day) is not None and day > last:
            raise ExportWindowError(
                f"full export {self.export_id} reflects the table at {self.window}: it holds "
                f"no day after {last.isoformat()}, so {day.isoformat()} cannot be aggregated from it; "
                f"end the range by {last.isoformat()} or run a new full export first"
            )

    def data_files(self) -> list[DataFile]:
        """Read ``manifest-files.json`` and return the export's data files."""
        if self.status == "UNREADABLE":
            raise ExportLocationError(f"export {self.export_id} at {self.location}: {self.problem}")
        if self.status != "COMPLETED":
            raise ExportNotFoundError(
                f"export {self.export_id} at {self.location} has not completed (no manifest-summary.json)"
            )
        self.check_supported()
        fs, _ = filesystem(self.location, self.storage_options)
        manifest_path = posixpath.join(self.path, "manifest-files.json")
        try:
            raw = _read_capped(fs, manifest_path, MAX_FILES_MANIFEST_BYTES)
        except FileNotFoundError as exc:
            raise ExportLocationError(
                f"manifest-files.json missing for export {self.export_id} at {self.location}"
            ) from exc
        except PermissionError as exc:
            raise ExportLocationError(
                f"access denied reading manifest-files.json of export {self.export_id} at {self.location}"
            ) from exc
        except (OSError, ValueError) as exc:
            raise ExportLocationError(
                f"manifest-files.json of export {self.export_id} at {self.location} cannot be read: {clip(str(exc))}"
            ) from exc
        try:
            text = raw.decode()
        except UnicodeDecodeError as exc:
            raise ExportLocationError(
                f"manifest-files.json of export {self.export_id} at {self.location} is not UTF-8 "
                f"(byte {exc.start}); it is not an AWS manifest"
            ) from None
        resolve = _key_resolver(self)
        files = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                key, count, md5 = entry["dataFileS3Key"], entry["itemCount"], entry["md5Checksum"]
                if not isinstance(key, str) or not isinstance(md5, str) or len(md5) > 64:
                    raise TypeError("dataFileS3Key and md5Checksum (base64 of 16 bytes) must be strings")
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise TypeError(f"itemCount {clip(repr(count))} is not a count")
            except (ValueError, KeyError, TypeError, RecursionError) as exc:
                raise ExportLocationError(
                    f"manifest-files.json line {n} of export {self.export_id} is not a manifest entry: "
                    f"{clip(repr(line), 120)}"
                ) from exc
            files.append(DataFile(key=key, path=resolve(key, n), item_count=count, md5_checksum=md5))
        _check_listed_once(self, files)
        if _is_local(fs):
            for f in files:
                _check_regular(f)
        return files

    def check_supported(self) -> None:
        """Raise :class:`UnsupportedExportError` unless this is a DynamoDB-JSON export."""
        if self.output_format and self.output_format != "DYNAMODB_JSON":
            raise UnsupportedExportError(
                f"export {self.export_id} at {self.location} is in {clip(self.output_format)} format; "
                "only DYNAMODB_JSON exports are supported (re-export with ExportFormat=DYNAMODB_JSON)"
            )

    _manifest_key: str | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able summary (for logs, CLI ``--format json`` and handler results)."""
        return {
            "exportId": self.export_id,
            "exportType": self.export_type,
            "status": self.status,
            "location": self.location,
            "exportTime": iso(self.export_time) if self.export_time else None,
            "exportFromTime": iso(self.export_from) if self.export_from else None,
            "exportToTime": iso(self.export_to) if self.export_to else None,
            "itemCount": self.item_count,
            "billedSizeBytes": self.billed_size_bytes,
            "outputFormat": self.output_format,
            "exportArn": self.export_arn,
            **({"problem": self.problem} if self.problem else {}),
        }


def _parse_time(value: Any, name: str = "time") -> dt.datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} {clip(repr(value))} is not an ISO-8601 instant")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} {clip(repr(value))} is not an ISO-8601 instant") from None
    if parsed.tzinfo is None:  # AWS writes UTC with a 'Z': a local time here would be a guess
        raise ValueError(f"{name} {clip(repr(value))} has no time zone")
    if not _EXPORT_YEARS[0] <= parsed.year <= _EXPORT_YEARS[1]:
        raise ValueError(
            f"{name} {clip(repr(value))} is not a plausible export time (years {_EXPORT_YEARS[0]}-{_EXPORT_YEARS[1]})"
        )
    return parsed.astimezone(dt.UTC)


_TEXT_FIELDS = ("exportType", "outputFormat", "outputView", "exportArn", "tableArn", "manifestFilesS3Key")


def _summary_fields(summary: Any) -> dict[str, Any]:
    """The :class:`ExportInfo` fields read from a ``manifest-summary.json``; ValueError if malformed."""
    if not isinstance(summary, dict):
        raise ValueError(f"it holds a JSON {type(summary).__name__}, not an object")
    count = summary.get("itemCount")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ValueError(f"itemCount {clip(repr(count))} is not a count")
    billed = summary.get("billedSizeBytes")
    if billed is not None and (isinstance(billed, bool) or not isinstance(billed, int) or billed < 0):
        raise ValueError(f"billedSizeBytes {clip(repr(billed))} is not a size")
    for name in _TEXT_FIELDS:
        value = summary.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > 2048):
            raise ValueError(f"{name} {clip(repr(value))} is not a string of at most 2048 characters")
    if (kind := summary.get("exportType")) not in (None, "FULL_EXPORT", "INCREMENTAL_EXPORT"):
        raise ValueError(f"exportType {clip(repr(kind))} is neither FULL_EXPORT nor INCREMENTAL_EXPORT")
    return {
        "export_type": "INCREMENTAL" if summary.get("exportType") == "INCREMENTAL_EXPORT" else "FULL",
        "export_time": _parse_time(summary.get("exportTime"), "exportTime"),
        "export_from": _parse_time(summary.get("exportFromTime"), "exportFromTime"),
        "export_to": _parse_time(summary.get("exportToTime"), "exportToTime"),
        "item_count": count,
        "billed_size_bytes": billed,
        "output_format": summary.get("outputFormat"),
        "output_view": summary.get("outputView"),
        "export_arn": summary.get("exportArn"),
        "table_arn": summary.get("tableArn"),
        "_manifest_key": summary.get("manifestFilesS3Key"),
    }


# Bounds on what is read from a manifest.  A summary is about 1 KB; a files manifest about 200
# bytes per data file, and AWS writes data files of up to a few hundred MB, so 64 MiB lists
# some 300,000 files (tens of TB): far more than any real export, far less than memory.
MAX_SUMMARY_BYTES = 1 << 20
"""Largest ``manifest-summary.json`` read (1 MiB); a larger one makes its export ``UNREADABLE``."""
MAX_FILES_MANIFEST_BYTES = 64 << 20
"""Largest ``manifest-files.json`` read (64 MiB); a larger one refuses its export."""
MAX_KEY_BYTES = 1024
"""S3's limit on a key's length (UTF-8 bytes); a longer ``dataFileS3Key`` cannot be an object."""

# Export times outside these years are not real exports (DynamoDB exports began in 2020): they
# would only overflow date arithmetic later (year 1 minus a day, 9999 plus one).
_EXPORT_YEARS = (2000, 2199)


def _read_capped(fs: Any, path: str, limit: int) -> bytes:
    """The bytes of ``path``, refusing (ValueError) a file larger than ``limit`` without reading it all.

    A local manifest must be a regular file: opening a FIFO would wait forever.
    """
    if _is_local(fs) and not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError("it is not a regular file")
    with fs.open(path, "rb") as handle:
        data: bytes = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"it is larger than {limit:,} bytes, far more than any real manifest")
    return data


def _clean_segments(text: str) -> bool:
    """True when ``text`` is a relative S3 key or prefix with no empty, ``.`` or ``..`` segment."""
    if any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or c == "\\" for c in text):  # controls, C1 too
        return False
    segments = text.split("/")
    if text.endswith("/"):
        segments.pop()
    return all(segment not in ("", ".", "..") for segment in segments)


def _key_resolver(export: ExportInfo) -> Any:
    """Return ``resolve(key, line)``: the path on the export's filesystem of a data file's key.

    Keys in manifests are relative to the bucket root and already include the export's prefix
    (``manifestFilesS3Key`` shows it).  A data file belongs to its export only as
    ``{prefix}AWSDynamoDB/{ExportId}/data/{name}`` (full) or ``{prefix}AWSDynamoDB/data/{name}``
    (incremental, a folder shared by the exports of the prefix), with that same prefix
    (docs/rules.md#faults-and-hostile-input): any other key (``..``, an absolute path, another
    prefix or bucket, another folder) refuses the export.  The path is then built from the
    folder that holds the export's ``AWSDynamoDB/`` and the key's ``AWSDynamoDB/...`` part,
    never from the key as a whole: the same for an export read where AWS wrote it and for a
    copy (a local folder, another prefix).
    """
    export_id = export.export_id
    manifest_key = export._manifest_key
    own = f"AWSDynamoDB/{export_id}/manifest-files.json"
    if not isinstance(manifest_key, str) or not manifest_key.endswith(own):
        raise ExportConfinementError(
            f"export {export_id} at {export.location}: manifestFilesS3Key {clip(repr(manifest_key))} "
            f"is not {own} under a prefix; this is not an AWS export summary"
        )
    prefix = manifest_key[: -len(own)]
    if prefix and (prefix.startswith("/") or not prefix.endswith("/") or not _clean_segments(prefix)):
        raise ExportConfinementError(
            f"export {export_id} at {export.location}: manifestFilesS3Key {clip(repr(manifest_key))} "
            "has no clean prefix (absolute, '..', '.' or empty segments)"
        )
    data_dir = "AWSDynamoDB/data/" if export.export_type == "INCREMENTAL" else f"AWSDynamoDB/{export_id}/data/"
    expected = prefix + data_dir
    base = posixpath.dirname(posixpath.dirname(export.path))  # the folder holding AWSDynamoDB/

    def resolve(key: str, line: int) -> str:
        name = key[len(expected) :]
        if (
            not key.startswith(expected)
            or len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES
            or "/" in name
            or not _clean_segments(name)
        ):
            raise ExportConfinementError(
                f"export {export_id} at {export.location}: manifest-files.json line {line} lists data file "
                f"{clip(repr(key))}, which is not a file of the export's data folder {expected}; "
                "the export is refused (a manifest must not point outside its export)"
            )
        return posixpath.join(base, data_dir + name)

    return resolve


def _check_listed_once(export: ExportInfo, files: list[DataFile]) -> None:
    seen: set[str] = set()
    for f in files:
        if f.key in seen:
            raise ExportConfinementError(
                f"export {export.export_id} at {export.location}: manifest-files.json lists data file "
                f"{clip(repr(f.key))} more than once; the export is refused (its records would be counted twice)"
            )
        seen.add(f.key)


def _check_regular(data_file: DataFile) -> None:
    """Refuse a local data file that is not a regular file (a symlink, FIFO, device or folder).

    ``lstat``: a symlink is refused whatever it points to (``/dev/zero`` would be read forever, a
    FIFO would block).  A missing file is left to the scan, which counts it.
    """
    try:
        mode = os.lstat(data_file.path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ExportConfinementError(
            f"data file {clip(repr(data_file.key))} cannot be examined ({exc.strerror}); the export is refused"
        ) from exc
    if not stat.S_ISREG(mode):
        kind = "a symlink" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise ExportConfinementError(
            f"data file {clip(repr(data_file.key))} is {kind}; the export is refused (data files must be regular files)"
        )


def _is_local(fs: Any) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols or "local" in protocols


def verify_export(export: ExportInfo) -> list[DataFile]:
    """Check every data file's ``md5Checksum`` and the manifest's item-count sum.

    Returns the verified data files.  Raises :class:`ExportIntegrityError` naming the first
    file that does not match.
    """
    files = export.data_files()
    fs, _ = filesystem(export.location, export.storage_options)
    for f in files:
        digest = hashlib.md5()
        try:
            with fs.open(f.path, "rb") as handle:  # in chunks: data files can be large
                while chunk := handle.read(8 << 20):
                    digest.update(chunk)
        except FileNotFoundError as exc:
            raise ExportIntegrityError(
                f"data file {clip(f.key)} listed in the manifest is missing ({clip(f.path)})"
            ) from exc
        check_digest(f, base64.b64encode(digest.digest()).decode())
    check_item_count(export, files)
    return files


def check_digest(data_file: DataFile, actual: str) -> None:
    """Raise :class:`ExportIntegrityError` unless ``actual`` (base64 MD5) matches the manifest."""
    if actual != data_file.md5_checksum:
        raise ExportIntegrityError(
            f"checksum mismatch for data file {clip(data_file.key)}: manifest says "
            f"{data_file.md5_checksum}, file has {actual}"
        )


def count_mismatch(export: ExportInfo, files: list[DataFile]) -> str | None:
    """What is wrong when the item counts ``files`` list do not add up to the summary's ``itemCount``.

    ``None`` when they agree (or the summary has no count).  Data files missing from the
    listing would be missing from a result without a trace.
    """
    listed = sum(f.item_count for f in files)
    if export.item_count is None or listed == export.item_count:
        return None
    return (
        f"export {export.export_id}: manifest-files.json lists {listed} items "
        f"but manifest-summary.json says {export.item_count}"
    )


def check_item_count(export: ExportInfo, files: list[DataFile]) -> None:
    """Raise :class:`ExportIntegrityError` when :func:`count_mismatch` finds a problem."""
    if (problem := count_mismatch(export, files)) is not None:
        raise ExportIntegrityError(problem)
