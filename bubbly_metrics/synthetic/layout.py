"""Synthetic exports in the real AWS layout (docs/rules.md#export-layouts): data files, manifests, checksums."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
import logging
import random
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bubbly_metrics._time import iso, midnight
from bubbly_metrics.dates import parse_date
from bubbly_metrics.exceptions import PARAM, InvalidArgumentError, InvalidDateError
from bubbly_metrics.synthetic.items import DEFAULT_APPS, generate_incremental_records, generate_items

logger = logging.getLogger("bubbly_metrics.synthetic")


DEFAULT_TABLE_ARN = "arn:aws:dynamodb:eu-west-2:123456789012:table/bubblyclouds-main"


@dataclass(frozen=True)
class WrittenExport:
    """What :func:`write_full_export` / :func:`write_incremental_export` wrote."""

    root: Path
    export_id: str
    export_dir: Path
    data_files: tuple[Path, ...]
    item_count: int


def _b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _export_id(rng: random.Random, when: dt.datetime) -> str:
    return f"{int(when.timestamp() * 1000):014d}-{''.join(rng.choices('0123456789abcdef', k=8))}"


def _ts(value: str | dt.datetime) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)


def _fmt(when: dt.datetime) -> str:
    return iso(when, timespec="milliseconds")


def _dumps(line: dict[str, Any]) -> bytes:
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def _gzip(lines: list[bytes], compresslevel: int) -> tuple[bytes, int, int]:
    raw = b"".join(lines)
    return gzip.compress(raw, compresslevel=compresslevel, mtime=0), len(lines), len(raw)


@dataclass(frozen=True)
class _Rendered:
    """Data files rendered elsewhere (in worker processes): (gzip bytes, items, raw size)."""

    blobs: list[tuple[bytes, int, int]]


def _write_export(
    root: str | Path,
    lines: Iterable[dict[str, Any]] | _Rendered,
    *,
    prefix: str,
    n_files: int,
    summary: dict[str, Any],
    incremental: bool,
    seed: int,
    compresslevel: int,
    when: dt.datetime,
) -> WrittenExport:
    if n_files < 1:
        raise ValueError(f"n_files must be >= 1, got {n_files}")
    rng = random.Random(seed ^ 0x5EED)
    root = Path(root)
    export_id = _export_id(rng, when)
    base = f"{prefix}AWSDynamoDB/"
    export_key = f"{base}{export_id}/"
    data_key = f"{base}data/" if incremental else f"{export_key}data/"
    export_dir = root / export_key
    (root / data_key).mkdir(parents=True, exist_ok=True)
    export_dir.mkdir(parents=True, exist_ok=True)
    (export_dir / "_started").write_bytes(b"")
    names = ["".join(rng.choices(string.ascii_lowercase + "234567", k=26)) for _ in range(n_files)]
    if isinstance(lines, _Rendered):
        blobs = lines.blobs
    else:
        buffers: list[list[bytes]] = [[] for _ in range(n_files)]
        for i, line in enumerate(lines):
            # Real exports spread items over partitions unevenly; round-robin with jitter.
            buffers[(i + rng.randrange(2)) % n_files].append(_dumps(line))
        blobs = [_gzip(buf, compresslevel) for buf in buffers]
    keys = [f"{data_key}{name}.json.gz" for name in names]
    total, billed = _write_data_files(root, export_dir, keys, blobs)
    data_files = [root / key for key in keys]
    table_arn = summary.pop("tableArn")
    full_summary = {
        "version": summary.pop("version"),
        "exportArn": f"{table_arn}/export/{export_id}",
        "startTime": _fmt(when),
        "endTime": _fmt(when + dt.timedelta(minutes=6)),
        "tableArn": table_arn,
        "tableId": "3d8c2b51-0000-4000-8000-000000000000",
        **summary,
        "s3Bucket": "bubblyclouds-exports",
        "s3Prefix": prefix or None,
        "s3SseAlgorithm": "AES256",
        "s3SseKmsKeyId": None,
        "manifestFilesS3Key": f"{export_key}manifest-files.json",
        "billedSizeBytes": billed,
        "itemCount": total,
        "outputFormat": "DYNAMODB_JSON",
    }
    if incremental:
        full_summary["outputView"] = "NEW_AND_OLD_IMAGES"
        full_summary["exportType"] = "INCREMENTAL_EXPORT"
    summary_bytes = json.dumps(full_summary, separators=(",", ":")).encode()
    (export_dir / "manifest-summary.json").write_bytes(summary_bytes)
    (export_dir / "manifest-summary.md5").write_text(_b64md5(summary_bytes))
    return WrittenExport(root, export_id, export_dir, tuple(data_files), total)


def _write_data_files(
    root: Path, export_dir: Path, keys: list[str], blobs: list[tuple[bytes, int, int]]
) -> tuple[int, int]:
    """Write the data files and ``manifest-files.json`` (+ ``.md5``); return (items, billed bytes)."""
    manifest_lines = []
    total = 0
    billed = 0
    for key, (blob, count, size) in zip(keys, blobs, strict=True):
        (root / key).write_bytes(blob)
        total += count
        billed += size
        manifest_lines.append(
            json.dumps(
                {
                    "itemCount": count,
                    "md5Checksum": _b64md5(blob),
                    "etag": hashlib.md5(blob).hexdigest() + "-1",
                    "dataFileS3Key": key,
                },
                separators=(",", ":"),
            )
        )
    manifest_files = ("\n".join(manifest_lines) + "\n").encode()
    (export_dir / "manifest-files.json").write_bytes(manifest_files)
    (export_dir / "manifest-files.md5").write_text(_b64md5(manifest_files))
    return total, billed


def write_full_export(
    root: str | Path,
    items: Iterable[dict[str, Any]] | _Rendered,
    *,
    export_time: str | dt.datetime,
    prefix: str = "",
    n_files: int = 4,
    table_arn: str = DEFAULT_TABLE_ARN,
    seed: int = 0,
    compresslevel: int = 6,
) -> WrittenExport:
    """Write ``items`` as a completed FULL export under ``root`` (the bucket root).

    ``prefix`` is the export's S3 prefix (e.g. ``"exports/backfill/20250301T020000/"``);
    manifest keys include it, as AWS writes them.
    """
    when = _ts(export_time)
    return _write_export(
        root,
        items if isinstance(items, _Rendered) else ({"Item": item} for item in items),
        prefix=prefix,
        n_files=n_files,
        # Real full-export summaries have version 2020-06-30 and usually no exportType.
        summary={"version": "2020-06-30", "tableArn": table_arn, "exportTime": _fmt(when)},
        incremental=False,
        seed=seed,
        compresslevel=compresslevel,
        when=when,
    )


def write_incremental_export(
    root: str | Path,
    records: Iterable[dict[str, Any]],
    *,
    export_from: str | dt.datetime,
    export_to: str | dt.datetime,
    prefix: str = "",
    n_files: int = 4,
    table_arn: str = DEFAULT_TABLE_ARN,
    seed: int = 0,
    compresslevel: int = 6,
) -> WrittenExport:
    """Write incremental ``records`` as a completed INCREMENTAL export under ``root``.

    Data files go to the shared ``AWSDynamoDB/data/`` folder, as AWS does.
    """
    start, end = _ts(export_from), _ts(export_to)
    return _write_export(
        root,
        records,
        prefix=prefix,
        n_files=n_files,
        summary={
            "version": "2023-08-01",
            "tableArn": table_arn,
            "exportFromTime": _fmt(start),
            "exportToTime": _fmt(end),
        },
        incremental=True,
        seed=seed,
        compresslevel=compresslevel,
        when=end + dt.timedelta(minutes=20),
    )


def _morning_after(start: dt.date, days: int) -> dt.datetime:
    """02:00 UTC the day after ``days`` days from ``start``: when the daily export would run."""
    return midnight(start + dt.timedelta(days=days)).replace(hour=2)


def _warn_if_exports_there(root: str | Path) -> None:
    """Warn when ``root`` already holds exports: a sample written there joins them, not replaces them."""
    if "://" in str(root):
        return
    held = list(Path(root).glob("AWSDynamoDB/*/manifest-summary.json"))
    if held:
        logger.warning(
            "%s already holds %d export(s): the new one was written beside them, and a backfill there reads "
            "the latest full export; write a sample into an empty folder to keep it apart",
            root,
            len(held),
        )


def _check_sizes(**sizes: int) -> None:
    """Refuse a size below 1; the error names its parameter."""
    for name, value in sizes.items():
        if value < 1:
            raise InvalidArgumentError(f"{PARAM} must be at least 1, got {value}", param=name)


def _check_apps(apps: Sequence[str], more_apps: Sequence[str] = ()) -> None:
    """Refuse app names a modelId cannot hold (``-`` separates the app)."""
    if not apps or any(not app or "-" in app for app in (*apps, *more_apps)):
        raise InvalidArgumentError(
            f"{PARAM} must be non-empty names; they cannot contain '-' (it separates the app), got {list(apps)}",
            param="apps",
        )


def write_synthetic_export(
    root: str | Path,
    *,
    n_items: int,
    start: str | dt.date = "2025-01-17",
    days: int = 60,
    apps: Sequence[str] = DEFAULT_APPS,
    n_files: int = 4,
    seed: int = 0,
    incremental: bool = False,
) -> WrittenExport:
    """Write a realistic export as the daily pipeline would find it.

    Full: ``n_items`` items over ``days`` days from ``start``, taken at 02:00 UTC the morning
    after.  Incremental: ``n_items`` items of the last day, in that day's window, with inserts,
    updates and deletes.  App names may not contain ``-`` (it separates the app in a modelId).
    """
    _warn_if_exports_there(root)
    first = parse_date(start, name="start")
    _check_sizes(n_items=n_items, days=days, n_files=n_files)
    _check_apps(apps)
    try:
        taken = _morning_after(first, days)
    except OverflowError:
        raise InvalidDateError(f"start {first} with {days} days runs past the year 9999") from None
    if not incremental:
        items = generate_items(n_items=n_items, start=first, days=days, apps=apps, seed=seed)
        return write_full_export(root, items, export_time=taken, n_files=n_files, seed=seed)
    end = taken.replace(hour=0)
    items = generate_items(n_items=n_items, start=end.date() - dt.timedelta(days=1), days=1, apps=apps, seed=seed)
    return write_incremental_export(
        root,
        generate_incremental_records(items, seed=seed, window_end_micros=int(end.timestamp() * 1e6)),
        export_from=end - dt.timedelta(days=1),
        export_to=end,
        n_files=n_files,
        seed=seed,
    )


def _render_generated_file(args: tuple[int, dict[str, Any], int]) -> tuple[bytes, int, int]:
    n_items, options, compresslevel = args
    items = generate_items(n_items=n_items, **options)
    return _gzip([_dumps({"Item": item}) for item in items], compresslevel)


def write_generated_export(
    root: str | Path,
    *,
    n_items: int,
    n_files: int = 16,
    start: str | dt.date = "2025-01-17",
    days: int = 60,
    apps: Sequence[str] = DEFAULT_APPS,
    seed: int = 0,
    export_time: str | dt.datetime | None = None,
    prefix: str = "",
    processes: int | None = None,
    compresslevel: int = 6,
) -> WrittenExport:
    """Generate and write a FULL export of ``n_items`` items, one worker process per file.

    Each data file is generated independently (its own seed, a shared user population), so
    large exports (millions of items) are written on every core.  ``export_time`` defaults to
    02:00 UTC the day after the last day of activity.
    """
    import concurrent.futures
    import multiprocessing

    if n_items < 0 or n_files < 1:
        raise ValueError(f"need n_items >= 0 and n_files >= 1, got {n_items} and {n_files}")
    start_date = dt.date.fromisoformat(str(start))
    export_time = export_time or _morning_after(start_date, days)
    n_users = max(20, n_items // 15)
    jobs = [
        (
            n_items // n_files + (1 if i < n_items % n_files else 0),
            {
                "start": start_date,
                "days": days,
                "apps": tuple(apps),
                "seed": seed * 10_007 + i,
                "n_users": n_users,
                "population_seed": seed,
            },
            compresslevel,
        )
        for i in range(n_files)
    ]
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=processes, mp_context=ctx) as pool:
        blobs = list(pool.map(_render_generated_file, jobs))
    return write_full_export(
        root,
        _Rendered(blobs),
        export_time=export_time,
        prefix=prefix,
        n_files=n_files,
        seed=seed,
        compresslevel=compresslevel,
    )
