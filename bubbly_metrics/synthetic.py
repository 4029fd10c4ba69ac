"""Synthetic main-table exports in the real AWS layout.

Tests, benchmarks, the ``sample`` CLI command and the sample export shipped in the package
all come from here.  What is written matches what AWS writes (docs/rules.md#export-layouts): a full export keeps
its data under ``AWSDynamoDB/<ExportId>/data/``, an incremental export writes into the shared
``AWSDynamoDB/data/`` folder, manifests carry per-file item counts and base64 MD5 checksums of
the gzip bytes, ``*.md5`` files hold the base64 MD5 of each manifest, and empty partitions are
real (20-byte) gzip files.

Examples
--------
>>> import tempfile
>>> from bubbly_metrics.synthetic import generate_items, write_full_export
>>> root = tempfile.mkdtemp()
>>> items = generate_items(n_items=500, start="2025-01-17", days=10, seed=1)
>>> export = write_full_export(root, items, n_files=2, export_time="2025-01-27T03:00:00Z")
>>> export.item_count
500
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
import logging
import random
import string
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bubbly_metrics._time import iso, midnight
from bubbly_metrics.dates import parse_date
from bubbly_metrics.exceptions import InvalidArgumentError, InvalidDateError

__all__ = [
    "DEFAULT_APPS",
    "WrittenExport",
    "WrittenHistory",
    "generate_items",
    "generate_incremental_records",
    "write_full_export",
    "write_generated_export",
    "write_history",
    "write_synthetic_export",
    "write_incremental_export",
]

#: ``Sudoku`` beside ``sudoku`` on purpose: apps are case-sensitive as stored, so a table holding
#: both has two apps, and every output shows them apart (a real table can hold such a pair).
DEFAULT_APPS: tuple[str, ...] = ("sudoku", "chess", "wordsearch", "Sudoku")
logger = logging.getLogger(__name__)

DEFAULT_TABLE_ARN = "arn:aws:dynamodb:eu-west-2:123456789012:table/bubblyclouds-main"
_ALPHABET = string.ascii_letters + string.digits + "_-"

# Relative weights of record kinds in a realistic table.  Sessions dominate; the noise kinds
# (users, invites, puzzles, books) are real rows the metrics must ignore.
_KIND_WEIGHTS = {
    "session": 52,
    "party": 7,
    "member": 11,
    "user": 8,
    "invite": 6,
    "puzzle": 10,
    "book": 6,
}

# Malformed shapes the library must count and skip (docs/rules.md#records), with their expected reason.
MALFORMED_SHAPES: tuple[str, ...] = (
    "model_id_two_segments",
    "model_id_empty_app",
    "owner_without_user_prefix",
    "owner_empty_user",
    "member_owner_two_segments",
    "member_owner_not_a_party",
    "timestamp_missing",
    "timestamp_garbage_string",
    "timestamp_wrong_type",
    "timestamp_null",
)


@dataclass(frozen=True)
class WrittenExport:
    """What :func:`write_full_export` / :func:`write_incremental_export` wrote."""

    root: Path
    export_id: str
    export_dir: Path
    data_files: tuple[Path, ...]
    item_count: int


def _nanoid(rng: random.Random, n: int = 12) -> str:
    return "".join(rng.choices(_ALPHABET, k=n))


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float | int | str) -> dict[str, str]:
    return {"N": str(value)}


def _payload(rng: random.Random, kind: str) -> dict[str, Any]:
    """Return a nested ``M`` payload of realistic size (most of each line's bytes).

    Payloads deliberately contain nested attributes named like the top-level ones
    (``updatedAt``, ``owner``, ``modelId``): a reader that does not respect nesting would
    pick them up.
    """
    board = "".join(rng.choices("0123456789", k=81))
    fields: dict[str, Any] = {
        "board": _s(board),
        "difficulty": _s(rng.choice(["easy", "medium", "hard", "expert"])),
        "moves": {"L": [_n(rng.randrange(1000)) for _ in range(rng.randrange(4, 16))]},
        "settings": {
            "M": {
                "sound": {"BOOL": rng.random() < 0.5},
                "theme": _s(rng.choice(["light", "dark", "sepia"])),
                "hints": _n(rng.randrange(5)),
                "lastOpened": {"M": {"updatedAt": _n(rng.randrange(1_600_000_000, 1_800_000_000))}},
            }
        },
        "tags": {"SS": sorted({_nanoid(rng, 6) for _ in range(3)})},
        "note": {"NULL": True},
    }
    if kind in ("party", "invite"):
        fields["invitee"] = {"M": {"owner": _s("user-" + _nanoid(rng)), "modelId": _s("x-y-z")}}
    return {"M": fields}


def _iso(ts: int) -> str:
    return iso(dt.datetime.fromtimestamp(ts, dt.UTC), timespec="milliseconds")


def generate_items(
    *,
    n_items: int,
    start: str | dt.date = "2025-01-17",
    days: int = 60,
    apps: Sequence[str] = DEFAULT_APPS,
    n_users: int | None = None,
    seed: int = 0,
    malformed_fraction: float = 0.01,
    iso_fraction: float = 0.01,
    population_seed: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield ``n_items`` main-table items as DynamoDB-JSON attribute maps.

    The mix is realistic: sessions, parties and members spread over ``days`` days from
    ``start`` and over ``apps`` with a skewed user population; noise kinds the metrics ignore;
    timestamps mostly as N epoch seconds (some fractional, a few in milliseconds by mistake),
    ``iso_fraction`` as ISO-8601 strings; and ``malformed_fraction`` malformed records of
    every shape in :data:`MALFORMED_SHAPES`.

    Parameters
    ----------
    n_items
        Number of items to yield.
    start, days
        The UTC date range activity falls in.
    apps
        App names; the first is the busiest.
    n_users
        Size of the user population (default: ``max(20, n_items // 15)``).
    seed
        Random seed: the same arguments give the same items.
    population_seed
        Seed of the user population (default: ``seed``).  Calls with different ``seed`` but
        the same ``population_seed`` and ``n_users`` draw from the same users, which is how
        :func:`write_generated_export` generates data files in parallel.
    malformed_fraction, iso_fraction
        Share of malformed records and of ISO-string timestamps.
    """
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if not apps:
        raise ValueError("apps must name at least one app")
    rng = random.Random(seed)
    start_date = dt.date.fromisoformat(str(start))
    t0 = int(dt.datetime(start_date.year, start_date.month, start_date.day, tzinfo=dt.UTC).timestamp())
    span = days * 86_400
    # Without population_seed the users come from the main stream, as before that option
    # existed: the same seed keeps giving the same items (the shipped sample depends on it).
    pop_rng = rng if population_seed is None else random.Random(population_seed)
    users = [_nanoid(pop_rng) for _ in range(n_users or max(20, n_items // 15))]
    # Zipf-ish activity: a few heavy players, a long tail.
    user_weights = [1.0 / (i + 1) ** 0.8 for i in range(len(users))]
    app_weights = [1.0 / (i + 1) for i in range(len(apps))]
    kinds = list(_KIND_WEIGHTS)
    kind_weights = list(_KIND_WEIGHTS.values())
    parties: list[tuple[str, str]] = []
    batch = 4096
    user_pool = rng.choices(users, weights=user_weights, k=batch)
    for i in range(n_items):
        if i % batch == 0 and i:
            user_pool = rng.choices(users, weights=user_weights, k=batch)
        user = user_pool[i % batch]
        app = rng.choices(apps, weights=app_weights)[0]
        kind = rng.choices(kinds, weights=kind_weights)[0]
        created = t0 + rng.randrange(span)
        updated = min(created + rng.randrange(3 * 3600), t0 + span - 1)
        item = _keys(rng, kind, app, user, parties)
        _stamp(rng, item, created, updated, iso_fraction)
        if rng.random() < 0.3:
            item["expiresAt"] = _n(updated + 90 * 86_400)
        item["payload"] = _payload(rng, kind)
        if rng.random() < malformed_fraction:
            _make_malformed(item, rng.choice(MALFORMED_SHAPES), app, user)
        # Attribute order in real exports is not stable; do not let readers rely on it.
        keys = list(item)
        rng.shuffle(keys)
        yield {k: item[k] for k in keys}


def _keys(rng: random.Random, kind: str, app: str, user: str, parties: list[tuple[str, str]]) -> dict[str, Any]:
    """A new item's keys for its kind; a party joins ``parties``, a member joins one of them."""
    if kind == "session":
        return {"modelId": _s(f"session-{app}-{_nanoid(rng)}"), "owner": _s(f"user-{user}")}
    if kind == "party":
        pid = _nanoid(rng)
        parties.append((app, pid))
        return {"modelId": _s(f"party-{app}-{pid}"), "owner": _s(f"user-{user}")}
    if kind == "member":
        papp, pid = parties[rng.randrange(len(parties))] if parties else (app, _nanoid(rng))
        return {"modelId": _s(f"member-user-{user}"), "owner": _s(f"party-{papp}-{pid}")}
    if kind == "user":
        return {"modelId": _s(f"user-{user}"), "owner": _s(f"user-{user}")}
    if kind == "invite":
        return {"modelId": _s(f"invite-{app}-{_nanoid(rng)}"), "owner": _s(f"user-{user}")}
    if kind == "puzzle":
        return {"modelId": _s(f"sudoku-{_nanoid(rng)}"), "owner": _s("system")}
    return {"modelId": _s(f"sudoku-book-{_nanoid(rng)}"), "owner": _s("system")}


def _stamp(rng: random.Random, item: dict[str, Any], created: int, updated: int, iso_fraction: float) -> None:
    """Set ``createdAt``/``updatedAt``: mostly N epoch seconds, some fractional, ISO strings or milliseconds."""
    r = rng.random()
    if r < iso_fraction:
        item["createdAt"] = _s(_iso(created))
        item["updatedAt"] = _s(_iso(updated))
    elif r < iso_fraction + 0.02:
        item["createdAt"] = _n(f"{created}.{rng.randrange(1000):03d}")
        item["updatedAt"] = _n(f"{updated}.{rng.randrange(1000):03d}")
    elif r < iso_fraction + 0.025:
        item["createdAt"] = _n(created * 1000)  # milliseconds by mistake: out of range
        item["updatedAt"] = _n(updated * 1000)
    else:
        item["createdAt"] = _n(created)
        item["updatedAt"] = _n(updated)


def _make_malformed(item: dict[str, Any], shape: str, app: str, user: str) -> None:
    if shape == "model_id_two_segments":
        item["modelId"] = _s(f"session-{app}")
    elif shape == "model_id_empty_app":
        item["modelId"] = _s("party--abc")
    elif shape == "owner_without_user_prefix":
        item["modelId"] = _s(f"session-{app}-x1")
        item["owner"] = _s(f"User-{user}")
    elif shape == "owner_empty_user":
        item["modelId"] = _s(f"party-{app}-x2")
        item["owner"] = _s("user-")
    elif shape == "member_owner_two_segments":
        item["modelId"] = _s(f"member-user-{user}")
        item["owner"] = _s(f"party-{app}")
    elif shape == "member_owner_not_a_party":
        # A user key as a member's owner: it has three segments, but its second is no app.
        item["modelId"] = _s(f"member-user-{user}")
        item["owner"] = _s(f"user-{uuid.uuid5(uuid.NAMESPACE_URL, user)}")
    else:
        item["modelId"] = _s(f"session-{app}-x3")
        item["owner"] = _s(f"user-{user}")
        if shape == "timestamp_missing":
            item.pop("updatedAt", None)
        elif shape == "timestamp_garbage_string":
            item["updatedAt"] = _s("yesterday")
        elif shape == "timestamp_wrong_type":
            item["updatedAt"] = {"B": "MTIz"}
        else:
            item["updatedAt"] = {"NULL": True}


def generate_incremental_records(
    items: Iterable[dict[str, Any]],
    *,
    seed: int = 0,
    update_fraction: float = 0.2,
    delete_fraction: float = 0.1,
    window_end_micros: int = 0,
) -> Iterator[dict[str, Any]]:
    """Turn items into incremental-export records (inserts, updates and deletes).

    Inserts are ``Keys`` + ``NewImage``; updates add an ``OldImage`` (the item before the
    change); deletes carry ``Keys`` + ``OldImage`` only, exactly as AWS writes them.
    """
    rng = random.Random(seed)
    for item in items:
        keys = {k: item[k] for k in ("modelId", "owner") if k in item}
        record: dict[str, Any] = {
            "Metadata": {"WriteTimestampMicros": _n(window_end_micros - rng.randrange(86_400_000_000))},
            "Keys": keys,
        }
        r = rng.random()
        if r < delete_fraction:
            record["OldImage"] = item
        elif r < delete_fraction + update_fraction:
            old = dict(item)
            old["payload"] = {"M": {"stale": _s("yes")}}
            record["OldImage"] = old
            record["NewImage"] = item
        else:
            record["NewImage"] = item
        yield record


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
            raise InvalidArgumentError(f"{{param}} must be at least 1, got {value}", param=name)


def _check_apps(apps: Sequence[str], more_apps: Sequence[str] = ()) -> None:
    """Refuse app names a modelId cannot hold (``-`` separates the app)."""
    if not apps or any(not app or "-" in app for app in (*apps, *more_apps)):
        raise InvalidArgumentError(
            f"{{param}} must be non-empty names; they cannot contain '-' (it separates the app), got {list(apps)}",
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


# --------------------------------------------------------------------------------------------
# A table's history: one full export and the daily incremental exports of the same table


@dataclass(frozen=True)
class WrittenHistory:
    """What :func:`write_history` wrote: a full export and the daily incremental exports."""

    root: Path
    full: WrittenExport
    daily: tuple[WrittenExport, ...]
    """One incremental export per day of ``daily_days``, except ``missing_day``, in day order."""
    days: tuple[dt.date, ...]
    """The days the daily incremental exports cover (``missing_day`` excluded)."""
    missing_day: dt.date | None


def _epoch(attribute: Any) -> float | None:
    """Epoch seconds of an N or ISO-S timestamp attribute; None when it is neither."""
    if not isinstance(attribute, dict):
        return None
    if isinstance(attribute.get("N"), str):
        try:
            return float(attribute["N"])
        except ValueError:
            return None
    if isinstance(attribute.get("S"), str):
        try:
            return dt.datetime.fromisoformat(attribute["S"].replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _day_of(ts: float) -> dt.date:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date()


def _midnight(day: dt.date) -> int:
    return int(midnight(day).timestamp())


def write_history(
    root: str | Path,
    *,
    n_items: int,
    start: str | dt.date = "2025-01-17",
    days: int = 60,
    daily_days: int = 14,
    missing_day: str | dt.date | None = None,
    late_app: str | None = None,
    late_app_from: str | dt.date | None = None,
    apps: Sequence[str] = DEFAULT_APPS,
    n_files: int = 4,
    seed: int = 0,
    malformed_fraction: float = 0.01,
    delete_fraction: float = 0.03,
    ttl_fraction: float = 0.03,
    export_time: str | dt.datetime | None = None,
) -> WrittenHistory:
    """Write a table's history: a FULL export and the daily INCREMENTAL exports of the same table.

    One simulated table evolves over ``days`` days from ``start``: items are written at their
    ``createdAt``; sessions whose ``updatedAt`` falls on a later day are first written with
    ``updatedAt = createdAt`` and updated past midnight; ``delete_fraction`` of the counted
    records are deleted one to six days after their last write; ``ttl_fraction`` get an
    ``expiresAt`` two to eight days after their last write and are deleted by TTL up to 36 hours
    later (lazily, as DynamoDB does: some are still there when the full export is taken);
    ``late_app`` first appears on ``late_app_from``.  The FULL export is the table at
    ``export_time`` (default: 02:00 UTC the morning after the last day); each of the last
    ``daily_days`` days has the INCREMENTAL export (``NEW_AND_OLD_IMAGES``) of its UTC day: every
    item changed that day once, in its final state (insert: ``NewImage``; update: ``OldImage`` and
    ``NewImage``; delete, TTL's included: ``OldImage``), except ``missing_day``, whose export
    never ran (no delete is scheduled that day, so that every delete is in some export).

    The exports agree with each other by construction, so reconciling what daily runs would
    have written from the incremental exports with a backfill from the full export finds only
    the real causes: re-dated sessions, deletes, TTL expiry, and the missing day.
    """
    _warn_if_exports_there(root)
    first = parse_date(start, name="start")
    _check_sizes(n_items=n_items, days=days, n_files=n_files)
    if not 1 <= daily_days <= days:
        raise InvalidArgumentError(
            f"{{param}} must be between 1 and days ({days}), got {daily_days}", param="daily_days"
        )
    _check_apps(apps, (late_app,) if late_app else ())
    end_ts = _midnight(first + dt.timedelta(days=days))
    taken = _ts(export_time) if export_time is not None else _morning_after(first, days)
    daily_first = first + dt.timedelta(days=days - daily_days)
    skip = parse_date(missing_day, name="missing_day") if missing_day is not None else None
    items = list(
        generate_items(
            n_items=n_items, start=first, days=days, apps=apps, seed=seed, malformed_fraction=malformed_fraction
        )
    )
    if late_app is not None:
        late = parse_date(late_app_from, name="late_app_from") if late_app_from is not None else daily_first
        items += _late_app_items(late_app, late, first, days=days, n_items=n_items, apps=len(apps), seed=seed)
    table = _Table(
        first=_midnight(first), end=end_ts, taken=taken.timestamp(), skip=skip, rng=random.Random(seed ^ 0x415)
    )
    events = table.events(items, ttl_fraction=ttl_fraction, delete_fraction=delete_fraction)
    full_items = [s for h in events.values() if (s := _state_at(h, table.taken)) is not None]
    full = write_full_export(root, full_items, export_time=taken, n_files=n_files, seed=seed)
    days_run = [daily_first + dt.timedelta(days=offset) for offset in range(daily_days)]
    daily = [
        _write_daily_export(root, events, day, seed=seed + offset + 1)
        for offset, day in enumerate(days_run)
        if day != skip
    ]
    return WrittenHistory(Path(root), full, tuple(daily), tuple(day for day in days_run if day != skip), skip)


def _write_daily_export(
    root: str | Path, events: dict[tuple[str, str], _History], day: dt.date, *, seed: int
) -> WrittenExport:
    """The INCREMENTAL export of one UTC day of the history."""
    lo, hi = _midnight(day), _midnight(day + dt.timedelta(days=1))
    return write_incremental_export(
        root,
        _changes_between(events, lo, hi),
        export_from=dt.datetime.fromtimestamp(lo, dt.UTC),
        export_to=dt.datetime.fromtimestamp(hi, dt.UTC),
        n_files=1,
        seed=seed,
    )


#: An item's history: (time, its state then, or None once deleted), in time order.
_History = list[tuple[float, dict[str, Any] | None]]


def _late_app_items(
    app: str, late: dt.date, first: dt.date, *, days: int, n_items: int, apps: int, seed: int
) -> list[dict[str, Any]]:
    """The items of an app first seen on ``late``: as many a day as each of the ``apps`` others has."""
    late_days = (first + dt.timedelta(days=days) - late).days
    if late_days < 1:
        raise ValueError(f"late_app_from {late} is after the last day")
    return list(
        generate_items(
            n_items=max(1, n_items * late_days // days // apps),
            start=late,
            days=late_days,
            apps=(app,),
            seed=seed + 1,
            malformed_fraction=0.0,
        )
    )


@dataclass
class _Table:
    """The simulated table of :func:`write_history`: when each item is written, updated and deleted.

    ``first`` and ``end`` bound the history (epoch seconds), ``taken`` is when the full export is
    taken, ``skip`` the day whose daily export never ran (no delete happens that day).
    """

    first: int
    end: int
    taken: float
    skip: dt.date | None
    rng: random.Random

    def events(
        self, items: list[dict[str, Any]], *, ttl_fraction: float, delete_fraction: float
    ) -> dict[tuple[str, str], _History]:
        """Each key's history (a table holds one item per key: the first item of a key wins)."""
        events: dict[tuple[str, str], _History] = {}
        for item in items:
            key = (item.get("modelId", {}).get("S", ""), item.get("owner", {}).get("S", ""))
            if key not in events:
                events[key] = self._history(item, key[0].split("-", 1)[0], ttl_fraction, delete_fraction)
        return events

    def _delete_day_ok(self, ts: float) -> bool:
        return ts < self.taken and (self.skip is None or _day_of(ts) != self.skip)

    def _history(self, item: dict[str, Any], kind: str, ttl_fraction: float, delete_fraction: float) -> _History:
        rng = self.rng
        created, updated = _epoch(item.get("createdAt")), _epoch(item.get("updatedAt"))
        in_range = created is not None and self.first <= created < self.end
        written = created if in_range else self.first + rng.randrange(self.end - self.first)
        assert written is not None
        redated = (
            kind == "session"
            and in_range
            and updated is not None
            and written < updated < self.end
            and _day_of(updated) > _day_of(written)
        )
        last = updated if redated and updated is not None else written
        counted = kind in ("session", "party", "member") and in_range
        r = rng.random()
        deleted_at: float | None = None
        if counted and r < ttl_fraction and kind != "member":
            expires = int(last) + rng.randrange(2 * 86_400, 8 * 86_400)
            item = {**item, "expiresAt": _n(expires)}
            gone = expires + rng.randrange(36 * 3600)
            if self.skip is not None and _day_of(gone) == self.skip:
                gone += 86_400
            deleted_at = gone if self._delete_day_ok(gone) else None
        elif counted and r < ttl_fraction + delete_fraction:
            item.pop("expiresAt", None)
            gone = int(last) + rng.randrange(86_400, 6 * 86_400)
            deleted_at = gone if self._delete_day_ok(gone) else None
        elif "expiresAt" in item and (_epoch(item["expiresAt"]) or 0) < self.taken:
            item.pop("expiresAt")  # only the planted TTL items expire inside the history
        history: _History = []
        if redated:
            history.append((written, {**item, "updatedAt": item["createdAt"]}))
            history.append((last, item))
        else:
            history.append((written, item))
        if deleted_at is not None:
            history.append((deleted_at, None))
        return history


def _state_at(history: _History, when: float) -> dict[str, Any] | None:
    """An item's state just before ``when`` (None: not written yet, or deleted)."""
    state = None
    for t, value in history:
        if t >= when:
            break
        state = value
    return state


def _changes_between(events: dict[tuple[str, str], _History], lo: float, hi: float) -> list[dict[str, Any]]:
    """The incremental-export records of ``[lo, hi)``: every item changed then, once, in its final state."""
    records = []
    for (model_id, owner), history in events.items():
        changed = [t for t, _ in history if lo <= t < hi]
        if not changed:
            continue
        before, after = _state_at(history, lo), _state_at(history, hi)
        if before is None and after is None:
            continue  # written and deleted the same day: nothing to export
        record: dict[str, Any] = {
            "Metadata": {"WriteTimestampMicros": _n(int(max(changed) * 1_000_000))},
            "Keys": {"modelId": _s(model_id), "owner": _s(owner)},
        }
        if before is not None:
            record["OldImage"] = before
        if after is not None:
            record["NewImage"] = after
        records.append(record)
    return records
