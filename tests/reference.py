"""A deliberately simple pure-Python reference for docs/rules.md#records, #metrics, #modes-and-date-ranges.

It shares no code with the library (only the ISO pattern and reason names, which are part of
the contract): it reads an export's manifests, opens each listed data file with :mod:`gzip`,
``json.loads`` every line, classifies records with plain string operations, dates them with
:mod:`datetime` and counts with dicts and sets.  Slow and obvious on purpose, so that the
Polars pipeline can be checked against it on generated exports (tests/test_differential.py).

Gzip damage (truncated or corrupt streams) is not modelled here: which lines survive it
depends on how a decompressor is fed, so tests/test_scan.py checks it on fixed inputs.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from bubbly_metrics.records import ISO_PATTERN

KINDS = ("session", "party", "member")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

BAD_MODEL_ID = "bad_model_id"
BAD_OWNER = "bad_owner"
MISSING_TIMESTAMP = "missing_timestamp"
BAD_TIMESTAMP = "bad_timestamp"
BROKEN_LINE = "broken_json_line"
UNEXPECTED_SHAPE = "unexpected_json_shape"
MISSING_FILE = "missing_data_file"
COUNT_MISMATCH = "item_count_mismatch"
LINE_TOO_LONG = "line_too_long"
MAX_LINE_BYTES = 8 << 20  # the documented maximum (docs/limits.md)

_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?", re.ASCII)
_ISO_PARTS = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?(?:Z|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
# The five attributes the metrics read; each must be a type-descriptor map when present.
_READ_ATTRIBUTES = ("modelId", "owner", "createdAt", "updatedAt", "expiresAt")


@dataclass
class Record:
    """One record after classification (docs/rules.md#records)."""

    file: str
    kind: str | None = None
    model_id: str | None = None
    owner: str | None = None
    app: str | None = None
    user: str | None = None
    ts: int | None = None
    date: dt.date | None = None
    reason: str | None = None
    deleted: bool = False
    """An incremental line deleting an item (``Keys``, no ``NewImage``): read, counts nothing."""


@dataclass
class Reference:
    """What the reference computed for one export and date range."""

    metrics: list[tuple[dt.date, str, int, int, int, int]]
    per_user: list[tuple[dt.date, str, str, int, int, int]]
    malformed: Counter[str]
    malformed_by_file: Counter[tuple[str, str]]
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, set[tuple[str | None, str | None]]] = field(default_factory=dict)
    """(modelId, owner) of every malformed record, by reason."""


# --- timestamps ---------------------------------------------------------------------------


def epoch_seconds(attribute: Any) -> int | None:
    """Whole epoch seconds (floored) of an N or ISO-S timestamp; None when unparsable."""
    if not isinstance(attribute, dict):
        return None
    if isinstance(attribute.get("N"), str):
        text = attribute["N"]
        if not _NUMBER.fullmatch(text):
            return None
        return int(Decimal(text).to_integral_value(rounding=ROUND_FLOOR))
    if isinstance(attribute.get("S"), str):
        text = attribute["S"]
        if not re.fullmatch(ISO_PATTERN, text, re.ASCII):
            return None
        m = _ISO_PARTS.fullmatch(text)
        assert m is not None, text
        year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
        sign, off_h, off_m = m.groups()[6:]
        offset = dt.timedelta(0)
        if sign is not None:
            offset = dt.timedelta(hours=int(off_h), minutes=int(off_m)) * (1 if sign == "+" else -1)
        try:
            when = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.timezone(offset))
        except ValueError:
            return None
        # The fraction is dropped: whole seconds, floored (offsets are whole minutes).
        return (when - EPOCH) // dt.timedelta(seconds=1)
    return None


def utc_date(ts: int) -> dt.date | None:
    """The UTC date of epoch seconds ``ts``, or None when it has no calendar date."""
    try:
        return (EPOCH + dt.timedelta(seconds=ts)).date()
    except OverflowError:
        return None


# --- records ------------------------------------------------------------------------------


def _string(attribute: Any) -> str | None:
    if isinstance(attribute, dict) and isinstance(attribute.get("S"), str):
        return attribute["S"]
    return None


def classify(image: dict[str, Any], file: str) -> Record:
    """Classify one item image: kind, app, user, date, or the reason it is malformed."""
    model_id = _string(image.get("modelId"))
    owner = _string(image.get("owner"))
    if model_id is None:
        return Record(file)
    kind = model_id.split("-")[0]
    if kind not in KINDS:
        return Record(file)
    record = classify_event(image, file, kind, model_id, owner)
    record.model_id, record.owner = model_id, owner
    return record


def classify_event(image: dict[str, Any], file: str, kind: str, model_id: str, owner: str | None) -> Record:
    """Classify a session/party/member record (see :func:`classify`)."""
    # First failing check decides: the app (model id, or owner for members), then the user
    # (owner for sessions/parties, model id for members), then the timestamp.
    keyed = owner if kind == "member" else model_id
    segments = keyed.split("-", 2) if keyed is not None else []
    if len(segments) < 3 or segments[1] == "":
        return Record(file, reason=BAD_OWNER if kind == "member" else BAD_MODEL_ID)
    if kind == "member" and segments[0] != "party":  # a member belongs to a party key, nothing else
        return Record(file, reason=BAD_OWNER)
    app = segments[1]
    if kind == "member":
        if not model_id.startswith("member-user-") or model_id == "member-user-":
            return Record(file, reason=BAD_MODEL_ID)
        user = model_id[len("member-user-") :]
    else:
        if owner is None or not owner.startswith("user-") or owner == "user-":
            return Record(file, reason=BAD_OWNER)
        user = owner[len("user-") :]
    dating = image.get("updatedAt" if kind == "session" else "createdAt")
    if dating is None:
        return Record(file, reason=MISSING_TIMESTAMP)
    ts = epoch_seconds(dating)
    if ts is None:
        return Record(file, reason=BAD_TIMESTAMP)
    return Record(file, kind=kind, app=app, user=user, ts=ts, date=utc_date(ts))


def _shape_ok(line: Any, image_key: str) -> bool:
    """True for a DynamoDB-JSON record line: an object whose images are attribute maps.

    A full-export line must hold an ``Item``; an incremental line without ``NewImage`` must
    hold ``Keys``: it is a delete (it contributes nothing, but is not an error).
    """
    if not isinstance(line, dict):
        return False
    if line.get(image_key) is None and (image_key == "Item" or "Keys" not in line):
        return False
    for key in ("Item", "NewImage"):
        image = line.get(key)
        if image is None:
            continue
        if not isinstance(image, dict):
            return False
        for name in _READ_ATTRIBUTES:
            value = image.get(name)
            if value is None:
                continue
            if not isinstance(value, dict):
                return False
            if any(t in value and not isinstance(value[t], str | None) for t in ("S", "N")):
                return False
    return True


def read_records(export_dir: Path, bucket_root: Path) -> list[Record]:
    """Every record of the export at ``export_dir`` (an ``AWSDynamoDB/<ExportId>`` folder).

    Data files are the ones its ``manifest-files.json`` lists, resolved from the bucket root.
    Full exports contribute each ``Item``, incremental exports each ``NewImage``.
    """
    summary = json.loads((export_dir / "manifest-summary.json").read_text())
    image_key = "NewImage" if summary.get("exportType") == "INCREMENTAL_EXPORT" else "Item"
    records = []
    for manifest_line in (export_dir / "manifest-files.json").read_text().splitlines():
        if not manifest_line.strip():
            continue
        entry = json.loads(manifest_line)
        key = entry["dataFileS3Key"]
        path = bucket_root / key
        if not path.exists():
            records.append(Record(key, reason=MISSING_FILE))
            continue
        lines = 0
        for raw in gzip.decompress(path.read_bytes()).decode().split("\n"):
            if not raw.strip():
                continue
            lines += 1
            if len(raw) * 4 > MAX_LINE_BYTES and len(raw.encode()) > MAX_LINE_BYTES:
                records.append(Record(key, reason=LINE_TOO_LONG))
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                records.append(Record(key, reason=BROKEN_LINE))
                continue
            if not _shape_ok(line, image_key):
                records.append(Record(key, reason=UNEXPECTED_SHAPE))
                continue
            if line.get(image_key) is not None:
                records.append(classify(line[image_key], key))
            else:
                records.append(Record(key, deleted=True))
        if lines != int(entry["itemCount"]):  # a file that disagrees with its manifest is reported
            records.append(Record(key, reason=COUNT_MISMATCH))
    return records


# --- metrics ------------------------------------------------------------------------------


def aggregate(export_dir: Path, bucket_root: Path, *, start: dt.date, end: dt.date, dense: bool) -> Reference:
    """Daily per-app metrics, per-user breakdowns and malformed counts for one export."""
    records = read_records(export_dir, bucket_root)
    users: dict[tuple[dt.date, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    active: dict[tuple[dt.date, str], set[str]] = defaultdict(set)
    totals: dict[tuple[dt.date, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    counts = {"counted": 0, "ignored": 0, "malformed": 0, "outside_range": 0, "deleted": 0}
    malformed: Counter[str] = Counter()
    malformed_by_file: Counter[tuple[str, str]] = Counter()
    examples: dict[str, set[tuple[str | None, str | None]]] = defaultdict(set)
    column = {"session": 0, "party": 1, "member": 2}
    for r in records:
        if r.deleted:
            counts["deleted"] += 1
        elif r.reason is not None:
            counts["malformed"] += 1
            malformed[r.reason] += 1
            malformed_by_file[(r.reason, r.file)] += 1
            examples[r.reason].add((r.model_id, r.owner))
        elif r.kind is None:
            counts["ignored"] += 1
        elif r.date is None or not start <= r.date <= end:
            counts["outside_range"] += 1
        else:
            assert r.app is not None and r.user is not None
            counts["counted"] += 1
            users[(r.date, r.app, r.user)][column[r.kind]] += 1
            totals[(r.date, r.app)][column[r.kind]] += 1
            if r.kind == "session":
                active[(r.date, r.app)].add(r.user)
    keys = set(totals)
    if dense:
        apps = {app for _, app in totals}
        days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
        keys = {(day, app) for day in days for app in apps}
    metrics = []
    for day, app in sorted(keys):
        games, created, joined = totals.get((day, app), [0, 0, 0])
        metrics.append((day, app, len(active.get((day, app), ())), games, created, joined))
    per_user = [(d, a, u, v[0], v[1], v[2]) for (d, a, u), v in sorted(users.items())]
    return Reference(metrics, per_user, malformed, malformed_by_file, counts, dict(examples))
