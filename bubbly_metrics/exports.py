"""Finding DynamoDB exports and reading their manifests (SPEC §2.2, §2.3).

An export is found by its files, never by the naming of its prefix: ``_started`` marks an
export that began, ``manifest-summary.json`` one that completed.  The data files of an export
are exactly those listed in its ``manifest-files.json`` (incremental exports share one
``AWSDynamoDB/data/`` folder, so a folder listing would mix exports).

Examples
--------
>>> from bubbly_metrics import list_exports, sample_export_location
>>> [e.export_type for e in list_exports(sample_export_location())]  # oldest first
['INCREMENTAL', 'FULL']
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import posixpath
from dataclasses import dataclass, field
from typing import Any, Literal

from bubbly_metrics.exceptions import (
    ExportIntegrityError,
    ExportLocationError,
    ExportNotFoundError,
    ExportWindowError,
    InvalidArgumentError,
    UnsupportedExportError,
)
from bubbly_metrics.locations import filesystem, uri

__all__ = [
    "DataFile",
    "ExportInfo",
    "ExportType",
    "find_export",
    "list_exports",
    "verify_export",
]

logger = logging.getLogger(__name__)

ExportType = Literal["FULL", "INCREMENTAL"]
_TYPE_ALIASES: dict[str, ExportType] = {
    "full": "FULL",
    "full_export": "FULL",
    "backfill": "FULL",
    "incremental": "INCREMENTAL",
    "incremental_export": "INCREMENTAL",
}


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
            return f"{_iso(self.export_from)} → {_iso(self.export_to)}"
        return _iso(self.export_time) if self.export_time else "-"

    def covers_day(self, day: dt.date) -> bool:
        """True when an incremental window covers the whole UTC ``day``."""
        if self.export_from is None or self.export_to is None:
            return False
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
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
            text = fs.cat_file(manifest_path).decode()
        except FileNotFoundError as exc:
            raise ExportLocationError(
                f"manifest-files.json missing for export {self.export_id} at {self.location}"
            ) from exc
        resolve = _key_resolver(self.path, self._manifest_key or "")
        files = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                key = entry["dataFileS3Key"]
                files.append(
                    DataFile(
                        key=key,
                        path=resolve(key),
                        item_count=int(entry["itemCount"]),
                        md5_checksum=entry["md5Checksum"],
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise ExportLocationError(
                    f"manifest-files.json line {n} of export {self.export_id} is not a manifest entry: {line[:120]!r}"
                ) from exc
        return files

    def check_supported(self) -> None:
        """Raise :class:`UnsupportedExportError` unless this is a DynamoDB-JSON export."""
        if self.output_format and self.output_format != "DYNAMODB_JSON":
            raise UnsupportedExportError(
                f"export {self.export_id} at {self.location} is in {self.output_format} format; "
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
            "exportTime": _iso(self.export_time) if self.export_time else None,
            "exportFromTime": _iso(self.export_from) if self.export_from else None,
            "exportToTime": _iso(self.export_to) if self.export_to else None,
            "itemCount": self.item_count,
            "billedSizeBytes": self.billed_size_bytes,
            "outputFormat": self.output_format,
            "exportArn": self.export_arn,
            **({"problem": self.problem} if self.problem else {}),
        }


def _iso(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, name: str = "time") -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(dt.UTC)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not an ISO-8601 instant") from None


def _summary_fields(summary: Any) -> dict[str, Any]:
    """The :class:`ExportInfo` fields read from a ``manifest-summary.json``; ValueError if malformed."""
    if not isinstance(summary, dict):
        raise ValueError(f"it holds a JSON {type(summary).__name__}, not an object")
    count = summary.get("itemCount")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ValueError(f"itemCount {count!r} is not a count")
    return {
        "export_type": "INCREMENTAL" if summary.get("exportType") == "INCREMENTAL_EXPORT" else "FULL",
        "export_time": _parse_time(summary.get("exportTime"), "exportTime"),
        "export_from": _parse_time(summary.get("exportFromTime"), "exportFromTime"),
        "export_to": _parse_time(summary.get("exportToTime"), "exportToTime"),
        "item_count": count,
        "billed_size_bytes": summary.get("billedSizeBytes"),
        "output_format": summary.get("outputFormat"),
        "output_view": summary.get("outputView"),
        "export_arn": summary.get("exportArn"),
        "table_arn": summary.get("tableArn"),
        "_manifest_key": summary.get("manifestFilesS3Key"),
    }


def _key_resolver(export_path: str, manifest_key: str) -> Any:
    """Return a function mapping a manifest key to a path on the export's filesystem.

    Keys in manifests are relative to the bucket root and already include the export's
    prefix, so they are never prefixed again: the bucket root is the export folder minus the
    folder part of ``manifestFilesS3Key``.  When the export was copied elsewhere (a local
    folder, another prefix) that no longer lines up; then keys resolve from the folder that
    holds ``AWSDynamoDB/``.
    """
    key_dir = posixpath.dirname(manifest_key.rstrip("/"))
    if key_dir and (export_path == key_dir or export_path.endswith("/" + key_dir)):
        root = export_path[: len(export_path) - len(key_dir)]
        return lambda key: root + key
    base = export_path[: export_path.rfind("AWSDynamoDB/")]
    return lambda key: base + key[max(key.find("AWSDynamoDB/"), 0) :]


def _is_local(fs: Any) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols or "local" in protocols


def list_exports(location: str, *, storage_options: dict[str, Any] | None = None) -> list[ExportInfo]:
    """List every export under ``location``, oldest first.

    Parameters
    ----------
    location
        A local folder or ``s3://bucket/prefix``: a bucket prefix holding many exports, one
        export's prefix, or one ``AWSDynamoDB/<ExportId>/`` folder.
    storage_options
        Passed through to the filesystem (see :func:`bubbly_metrics.locations.filesystem`).

    Returns
    -------
    list of ExportInfo
        Completed and in-progress exports, sorted by the time they reflect.

    Raises
    ------
    ExportLocationError
        When the location does not exist or cannot be listed.
    """
    fs, root = filesystem(location, storage_options)
    try:
        if not fs.exists(root):
            raise ExportLocationError(f"export location {location!r} does not exist")
        # Local only: on S3 the check is a HEAD request that a role scoped to the prefix may not
        # be allowed to make.
        if _is_local(fs) and fs.isfile(root):
            raise ExportLocationError(
                f"export location {location!r} is a file: give the folder or s3:// prefix that holds exports"
            )
        paths = fs.find(root)
    except ExportLocationError:
        raise
    except PermissionError as exc:
        raise ExportLocationError(f"access denied listing {location!r}: {exc}") from exc
    except (OSError, ValueError) as exc:  # ValueError: s3fs refuses to list "s3://" itself
        raise ExportLocationError(f"cannot list export location {location!r}: {exc}") from exc
    exports: dict[str, dict[str, str]] = {}
    for path in paths:
        parent, name = posixpath.split(path)
        if (
            name in ("_started", "manifest-summary.json")
            and posixpath.basename(posixpath.dirname(parent)) == "AWSDynamoDB"
        ):
            exports.setdefault(parent, {})[name] = path
    found = []
    for export_path, files in exports.items():
        export_id = posixpath.basename(export_path)
        where = uri(fs, export_path)
        options = dict(storage_options or {})
        if "manifest-summary.json" not in files:
            found.append(ExportInfo(export_id, None, "IN_PROGRESS", where, path=export_path, storage_options=options))
            continue
        try:
            fields = _summary_fields(json.loads(fs.cat_file(files["manifest-summary.json"])))
        except ValueError as exc:  # not JSON, or not a summary (one bad export must not hide the others)
            problem = f"manifest-summary.json is unreadable: {exc}"
            logger.warning("export %s at %s: %s", export_id, where, problem)
            found.append(
                ExportInfo(
                    export_id, None, "UNREADABLE", where, path=export_path, storage_options=options, problem=problem
                )
            )
            continue
        found.append(
            ExportInfo(
                export_id=export_id,
                status="COMPLETED",
                location=where,
                path=export_path,
                storage_options=options,
                **fields,
            )
        )
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(found, key=lambda e: (e.as_of or epoch, e.export_id))


def normalize_export_type(export_type: str) -> ExportType:
    """Map ``full``/``backfill``/``incremental`` (any case) to ``FULL``/``INCREMENTAL``."""
    if isinstance(export_type, str):
        if export_type.upper() in ("FULL", "INCREMENTAL"):
            return export_type.upper()  # type: ignore[return-value]
        if export_type.lower() in _TYPE_ALIASES:
            return _TYPE_ALIASES[export_type.lower()]
    raise InvalidArgumentError(f"export_type must be 'full' or 'incremental', got {export_type!r}")


def find_export(
    location: str | ExportInfo,
    *,
    export_type: str | None = None,
    covering: dt.date | None = None,
    storage_options: dict[str, Any] | None = None,
) -> ExportInfo:
    """Return the latest completed export of ``export_type`` at ``location`` (SPEC §2.3).

    "Latest" is the greatest ``exportTime`` (full) or ``exportToTime`` (incremental).  With
    ``export_type=None`` the latest completed export of either type is returned.  With
    ``covering``, the chosen export must hold that UTC day (:meth:`ExportInfo.check_covers`):
    for incremental exports it is the latest one whose window covers the day, so a re-run of
    an older day reads that day's export even when newer ones have landed since.

    The location is listed afresh on every call: an export that completed since an earlier
    call in the same process is seen (see :func:`bubbly_metrics.locations.filesystem`).

    Raises
    ------
    ExportNotFoundError
        ``No export found in S3`` (with the location searched) when there is none.
    ExportWindowError
        When ``covering`` is given and no export of the type holds it (the message lists the
        windows there are).
    UnsupportedExportError
        When the chosen export is not in DynamoDB JSON (e.g. ION).
    """
    if isinstance(location, ExportInfo):
        location.check_supported()
        return location
    wanted = normalize_export_type(export_type) if export_type is not None else None
    exports = list_exports(location, storage_options=storage_options)
    candidates = [e for e in exports if e.status == "COMPLETED" and (wanted is None or e.export_type == wanted)]
    if not candidates:
        kind = f"completed {wanted} " if wanted else "completed "
        pending = sum(e.status == "IN_PROGRESS" for e in exports)
        unreadable = [e for e in exports if e.status == "UNREADABLE"]
        hints = [f"{pending} export(s) still in progress or failed"] if pending else []
        if unreadable:
            hints.append(f"{len(unreadable)} unreadable, e.g. {unreadable[-1].export_id}: {unreadable[-1].problem}")
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise ExportNotFoundError(f"No export found in S3: no {kind}export under {location}{hint}")
    if covering is not None and wanted == "INCREMENTAL":
        covers = [e for e in candidates if e.covers_day(covering)]
        if not covers:
            windows = "; ".join(f"{e.export_id} {e.window}" for e in candidates[-10:])
            more = f" (the latest 10 of {len(candidates)})" if len(candidates) > 10 else ""
            raise ExportWindowError(
                f"no completed incremental export under {location} covers {covering.isoformat()}; "
                f"the windows there{more}: {windows}; run an export for that day first"
            )
        candidates = covers
    chosen = candidates[-1]
    chosen.check_supported()
    if covering is not None:
        chosen.check_covers(covering)
    return chosen


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
            raise ExportIntegrityError(f"data file {f.key} listed in the manifest is missing ({f.path})") from exc
        check_digest(f, base64.b64encode(digest.digest()).decode())
    total = sum(f.item_count for f in files)
    if export.item_count is not None and total != export.item_count:
        raise ExportIntegrityError(
            f"export {export.export_id}: manifest-files.json lists {total} items but "
            f"manifest-summary.json says {export.item_count}"
        )
    return files


def check_digest(data_file: DataFile, actual: str) -> None:
    """Raise :class:`ExportIntegrityError` unless ``actual`` (base64 MD5) matches the manifest."""
    if actual != data_file.md5_checksum:
        raise ExportIntegrityError(
            f"checksum mismatch for data file {data_file.key}: manifest says "
            f"{data_file.md5_checksum}, file has {actual}"
        )
