"""Finding DynamoDB exports: listing a location's exports and choosing one (docs/rules.md#finding-exports).

An export is found by its files, never by the naming of its prefix: ``_started`` marks an
export that began, ``manifest-summary.json`` one that completed.  The data files of an export
are exactly those listed in its ``manifest-files.json`` (incremental exports share one
``AWSDynamoDB/data/`` folder, so a folder listing would mix exports; docs/rules.md#export-layouts).
Reading the manifests and checking data files is :mod:`bubbly_metrics.manifests`; its public
names are importable from here too.

Examples
--------
>>> from bubbly_metrics import list_exports, sample_export_location
>>> [e.export_type for e in list_exports(sample_export_location())][-3:]  # oldest first
['INCREMENTAL', 'INCREMENTAL', 'FULL']
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import posixpath
from typing import Any

from bubbly_metrics._text import clip
from bubbly_metrics._time import midnight
from bubbly_metrics.exceptions import (
    ExportLocationError,
    ExportNotFoundError,
    ExportWindowError,
    InvalidArgumentError,
)
from bubbly_metrics.locations import filesystem, uri
from bubbly_metrics.manifests import (
    MAX_SUMMARY_BYTES,
    DataFile,
    ExportInfo,
    ExportType,
    _check_regular,  # noqa: F401  (scan imports it from here)
    _is_local,
    _read_capped,
    _summary_fields,
    check_digest,
    check_item_count,
    count_mismatch,
    verify_export,
)

__all__ = [
    "DataFile",
    "ExportInfo",
    "ExportType",
    "check_digest",
    "check_item_count",
    "count_mismatch",
    "exports_frame",
    "find_export",
    "list_exports",
    "verify_export",
]

logger = logging.getLogger(__name__)

_TYPE_ALIASES: dict[str, ExportType] = {
    "full": "FULL",
    "full_export": "FULL",
    "backfill": "FULL",
    "incremental": "INCREMENTAL",
    "incremental_export": "INCREMENTAL",
}


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
            raise ExportLocationError(f"export location {location!r} does not exist{_typo_hint(location)}")
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
            fields = _summary_fields(json.loads(_read_capped(fs, files["manifest-summary.json"], MAX_SUMMARY_BYTES)))
        except (ValueError, RecursionError, OSError) as exc:
            # Not JSON (or not UTF-8, or nested past the parser's depth), not a summary, or not
            # readable: one bad export must not hide the others.
            reason = "nested too deep" if isinstance(exc, RecursionError) else clip(str(exc))
            problem = f"manifest-summary.json is unreadable: {reason}"
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


def exports_frame(location: str, *, storage_options: dict[str, Any] | None = None) -> Any:
    """:func:`list_exports` as a Polars DataFrame, one row per export, oldest first.

    Columns: ``export_id``, ``export_type``, ``status``, ``as_of`` (the instant it reflects,
    UTC), ``window`` (text), ``item_count``, ``billed_size_bytes``, ``location``, ``problem``
    (why an export is ``UNREADABLE``).

    >>> import bubbly_metrics as bm
    >>> bm.exports_frame(bm.sample_export_location()).select("export_type", "status").row(-1)
    ('FULL', 'COMPLETED')
    """
    import polars as pl

    exports = list_exports(location, storage_options=storage_options)
    return pl.DataFrame(
        {
            "export_id": [e.export_id for e in exports],
            "export_type": [e.export_type for e in exports],
            "status": [e.status for e in exports],
            "as_of": [e.as_of for e in exports],
            "window": [e.window for e in exports],
            "item_count": [e.item_count for e in exports],
            "billed_size_bytes": [e.billed_size_bytes for e in exports],
            "location": [e.location for e in exports],
            "problem": [e.problem for e in exports],
        },
        schema={
            "export_id": pl.String,
            "export_type": pl.String,
            "status": pl.String,
            "as_of": pl.Datetime("us", "UTC"),
            "window": pl.String,
            "item_count": pl.Int64,
            "billed_size_bytes": pl.Int64,
            "location": pl.String,
            "problem": pl.String,
        },
    )


def _typo_hint(location: str) -> str:
    """``: did you mean s3://...?`` for a location that looks like a mistyped S3 URI."""
    text = str(location)
    for bad in ("s3:/", "s3:", "S3://", "s3//", "s3:\\\\"):
        if text.startswith(bad) and not text.startswith("s3://"):
            return f"; did you mean s3://{clip(text[len(bad) :].lstrip('/'), 100)}?"
    return ""


def _where(location: str) -> str:
    """Where a search happened, for "No export found in ...": docs/operations.md's "S3", or the folder."""
    return "S3" if str(location).startswith("s3://") else "the folder"


def _nothing_found_hint(location: str, wanted: str | None, exports: list[ExportInfo]) -> str:
    """What to do next when no completed export of the wanted type is at ``location``."""
    hints = []
    other = [e for e in exports if e.status == "COMPLETED" and wanted is not None and e.export_type != wanted]
    if other:
        reads = (
            "full exports: a backfill (mode backfill)"
            if other[-1].export_type == "FULL"
            else ("incremental exports: a daily run (mode incremental)")
        )
        hints.append(f"{len(other)} completed {other[-1].export_type} export(s) there; {reads} reads them")
    pending = sum(e.status == "IN_PROGRESS" for e in exports)
    if pending:
        hints.append(f"{pending} export(s) still in progress or failed")
    unreadable = [e for e in exports if e.status == "UNREADABLE"]
    if unreadable:
        hints.append(f"{len(unreadable)} unreadable, e.g. {unreadable[-1].export_id}: {unreadable[-1].problem}")
    tail = posixpath.basename(str(location).rstrip("/"))
    if not exports and tail in ("data", "AWSDynamoDB"):
        hints.append("this is a folder inside an export: give the folder that holds AWSDynamoDB/")
    return f" ({'; '.join(hints)})" if hints else ""


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
    """Return the latest completed export of ``export_type`` at ``location`` (docs/rules.md#finding-exports).

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
        hint = _nothing_found_hint(location, wanted, exports)
        raise ExportNotFoundError(
            f"No export found in {_where(location)}: no {kind}export under {clip(location, 120)}{hint}"
        )
    if covering is not None and wanted == "INCREMENTAL":
        covers = [e for e in candidates if e.covers_day(covering)]
        if not covers:
            # The nearest windows before and after the day, not all of them: a long history would
            # make a line of thousands of characters.  Every window is on the error's `windows`.
            before = [e for e in candidates if e.export_to is not None and e.export_to.date() <= covering]
            after = [e for e in candidates if e.export_from is not None and e.export_from.date() > covering]
            start = midnight(covering)
            touching = [e for e in before if e.export_from is not None and e.export_to is not None and
                        e.export_from.date() <= covering and e.export_to > start]  # fmt: skip
            near = touching[-2:] or [*before[-1:], *after[:1]]  # windows within the day, else either side
            nearest = "; ".join(f"{e.export_id} {e.window}" for e in near)
            raise ExportWindowError(
                f"no completed incremental export under {clip(location, 120)} covers {covering.isoformat()} "
                f"({len(candidates)} window(s) there; nearest: {nearest}); run an export for that day first",
                windows=tuple(f"{e.export_id} {e.window}" for e in candidates),
            )
        candidates = covers
    chosen = candidates[-1]
    chosen.check_supported()
    if covering is not None:
        chosen.check_covers(covering)
    return chosen
