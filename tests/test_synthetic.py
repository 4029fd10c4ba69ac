"""Synthetic exports have the real AWS layout (docs/rules.md#export-layouts), checked against a real export."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
from pathlib import Path

import pytest

import bubbly_metrics as bm
from bubbly_metrics.synthetic import (
    MALFORMED_SHAPES,
    generate_incremental_records,
    generate_items,
    write_full_export,
    write_incremental_export,
)

REAL_FULL = "01768385930622-efd1a093"
REAL_INC = "01768386924000-d339e52d"
PREFIX = "exports/incremental/20250313T020000/"


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def manifest(export_dir: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (export_dir / "manifest-files.json").read_text().splitlines() if x]


def summary(export_dir: Path) -> dict[str, object]:
    return json.loads((export_dir / "manifest-summary.json").read_text())


def check_layout(root: Path, export_dir: Path, *, summary_md5: bool = True) -> None:
    """Everything a real export guarantees about its files, checksums and counts."""
    names = sorted(p.name for p in export_dir.iterdir() if p.is_file())
    assert names == [
        "_started",
        "manifest-files.json",
        "manifest-files.md5",
        "manifest-summary.json",
        "manifest-summary.md5",
    ]
    assert (export_dir / "_started").read_bytes() == b""
    for name in ("manifest-files", "manifest-summary") if summary_md5 else ("manifest-files",):
        assert (export_dir / f"{name}.md5").read_text() == b64md5((export_dir / f"{name}.json").read_bytes())
    entries, head = manifest(export_dir), summary(export_dir)
    assert head["manifestFilesS3Key"] == (export_dir / "manifest-files.json").relative_to(root).as_posix()
    assert sum(e["itemCount"] for e in entries) == head["itemCount"]  # type: ignore[misc]
    for entry in entries:
        blob = (root / str(entry["dataFileS3Key"])).read_bytes()
        assert entry["md5Checksum"] == b64md5(blob)
        assert entry["etag"] != hashlib.md5(blob).hexdigest()  # a multipart ETag, not an MD5
        assert len(gzip.decompress(blob).splitlines()) == entry["itemCount"]


def test_full_export_layout_matches_the_real_one(real_export: Path, tmp_path: Path) -> None:
    items = generate_items(n_items=300, start="2025-03-01", days=3, seed=4)
    written = write_full_export(tmp_path, items, export_time="2025-03-04T02:00:00.250Z", prefix=PREFIX, n_files=4)
    assert written.export_dir == tmp_path / PREFIX / "AWSDynamoDB" / written.export_id
    check_layout(tmp_path, written.export_dir)
    real_dir = real_export / "AWSDynamoDB" / REAL_FULL
    # The checks hold on the real export too (its summary md5 was invalidated by redaction).
    check_layout(real_export, real_dir, summary_md5=False)
    ours, real = summary(written.export_dir), summary(real_dir)
    assert set(ours) == set(real)
    assert "exportType" not in ours and ours["version"] == "2020-06-30"
    assert ours["exportTime"] == "2025-03-04T02:00:00.250Z"
    assert ours["s3Prefix"] == PREFIX and ours["outputFormat"] == "DYNAMODB_JSON" and ours["itemCount"] == 300
    assert written.export_id.startswith("01741053600250-")  # epoch millis of the export time
    assert [set(e) for e in manifest(written.export_dir)] == [set(e) for e in manifest(real_dir)]
    for path in written.data_files:
        assert path.parent == written.export_dir / "data"
        assert path.name.endswith(".json.gz") and len(path.name) == len("zqp435kgma323mmasy7jmciuje.json.gz")
        for line in gzip.decompress(path.read_bytes()).splitlines():
            assert list(json.loads(line)) == ["Item"]


def test_incremental_export_uses_the_shared_data_folder(real_export: Path, tmp_path: Path) -> None:
    items = list(generate_items(n_items=200, start="2025-03-12", days=1, seed=5))
    window_end = dt.datetime(2025, 3, 13, tzinfo=dt.UTC)
    records = list(generate_incremental_records(items, seed=1, window_end_micros=int(window_end.timestamp() * 1e6)))
    first = write_incremental_export(
        tmp_path,
        records,
        export_from=window_end - dt.timedelta(days=1),
        export_to=window_end,
        prefix=PREFIX,
        seed=1,
    )
    second = write_incremental_export(
        tmp_path,
        records[:10],
        export_from=window_end,
        export_to=window_end + dt.timedelta(days=1),
        prefix=PREFIX,
        seed=2,
    )
    shared = tmp_path / PREFIX / "AWSDynamoDB" / "data"
    for written in (first, second):
        check_layout(tmp_path, written.export_dir)
        assert all(p.parent == shared for p in written.data_files)
        assert not (written.export_dir / "data").exists()
        assert all(
            str(e["dataFileS3Key"]).startswith(PREFIX + "AWSDynamoDB/data/") for e in manifest(written.export_dir)
        )
    assert len(list(shared.iterdir())) == len(first.data_files) + len(second.data_files)
    ours, real = summary(first.export_dir), summary(real_export / "AWSDynamoDB" / REAL_INC)
    assert set(ours) == set(real)
    assert (ours["version"], ours["exportType"], ours["outputView"]) == (
        "2023-08-01",
        "INCREMENTAL_EXPORT",
        "NEW_AND_OLD_IMAGES",
    )
    assert (ours["exportFromTime"], ours["exportToTime"]) == (
        "2025-03-12T00:00:00.000Z",
        "2025-03-13T00:00:00.000Z",
    )
    assert "exportTime" not in ours
    lines = [json.loads(x) for p in first.data_files for x in gzip.decompress(p.read_bytes()).splitlines()]
    assert len(lines) == 200
    shapes = {tuple(sorted(k for k in line if k != "Metadata")) for line in lines}
    assert shapes == {("Keys", "NewImage"), ("Keys", "NewImage", "OldImage"), ("Keys", "OldImage")}
    assert all(set(line["Keys"]) <= {"modelId", "owner"} for line in lines)
    assert all(int(line["Metadata"]["WriteTimestampMicros"]["N"]) < window_end.timestamp() * 1e6 for line in lines)


def test_empty_partitions_are_real_empty_gzips(real_export: Path, tmp_path: Path) -> None:
    item = {
        "modelId": {"S": "session-sudoku-a"},
        "owner": {"S": "user-u"},
        "updatedAt": {"N": "1741600000"},
    }
    written = write_full_export(tmp_path, [item], export_time="2025-03-13T02:00:00Z", n_files=4)
    entries = manifest(written.export_dir)
    assert sorted(e["itemCount"] for e in entries) == [0, 0, 0, 1]  # type: ignore[type-var]
    real_empty = (real_export / "AWSDynamoDB" / REAL_FULL / "data" / "zqp435kgma323mmasy7jmciuje.json.gz").read_bytes()
    for entry in entries:
        blob = (tmp_path / str(entry["dataFileS3Key"])).read_bytes()
        if entry["itemCount"] == 0:
            assert len(blob) == len(real_empty) == 20
            assert gzip.decompress(blob) == b""
    assert summary(written.export_dir)["itemCount"] == 1
    (export,) = bm.list_exports(str(tmp_path))
    assert len(bm.verify_export(export)) == 4
    assert bm.read_export(export, verify=True).height == 1


def test_no_items_gives_a_valid_empty_export(tmp_path: Path) -> None:
    written = write_full_export(tmp_path, [], export_time="2025-03-13T02:00:00Z", n_files=2)
    check_layout(tmp_path, written.export_dir)
    assert written.item_count == 0
    assert bm.read_export(str(tmp_path), verify=True).height == 0


def test_generate_items_is_deterministic_and_varied() -> None:
    a = list(generate_items(n_items=2000, start="2025-01-17", days=10, seed=1, malformed_fraction=0.05))
    b = list(generate_items(n_items=2000, start="2025-01-17", days=10, seed=1, malformed_fraction=0.05))
    assert a == b
    assert a != list(generate_items(n_items=2000, start="2025-01-17", days=10, seed=2, malformed_fraction=0.05))
    kinds = {item["modelId"]["S"].split("-")[0] for item in a if "S" in item.get("modelId", {})}
    assert {"session", "party", "member", "user", "invite", "sudoku"} <= kinds
    apps = {item["modelId"]["S"].split("-")[1] for item in a if item["modelId"]["S"].startswith("session-")}
    assert {"sudoku", "Sudoku"} <= apps
    stamps = [item.get("updatedAt", {}) for item in a]
    assert any("S" in s for s in stamps)  # ISO strings
    assert any("." in s.get("N", "") for s in stamps)  # fractional seconds
    assert any(len(s.get("N", "")) == 13 for s in stamps)  # milliseconds by mistake
    assert len(MALFORMED_SHAPES) == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_items": -1}, "n_items must be >= 0"),
        ({"n_items": 1, "days": 0}, "days must be >= 1"),
        ({"n_items": 1, "apps": ()}, "apps"),
    ],
)
def test_generate_items_validates_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        list(generate_items(**kwargs))  # type: ignore[arg-type]


def test_n_files_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_files must be >= 1, got 0"):
        write_full_export(tmp_path, [], export_time="2025-03-13T02:00:00Z", n_files=0)


def test_shipped_sample(tmp_path: Path) -> None:
    location = bm.sample_export_location()
    exports = bm.list_exports(location)
    # Oldest first by the time each reflects: the daily windows end at 00:00, the full export
    # was taken at 02:00 the morning after the last one.
    assert [e.status for e in exports] == ["COMPLETED"] * 14
    *daily, full = exports
    assert full.export_type == "FULL" and {e.export_type for e in daily} == {"INCREMENTAL"}
    for export in exports:
        check_layout(Path(location), Path(export.path))
        bm.verify_export(export)
    assert full.export_time == bm.SAMPLE_NOW - dt.timedelta(minutes=30)
    days = [e.export_from.date() for e in daily if e.export_from]
    assert days == [dt.date(2025, 3, 4) + dt.timedelta(days=i) for i in range(14) if i != 6]  # 2025-03-10 never ran
    assert all(e.covers_day(day) for e, day in zip(daily, days, strict=True))
    assert daily[-1].covers_day(bm.SAMPLE_NOW.date() - dt.timedelta(days=1))


def _lines(root: Path, export_dir: Path) -> list[dict]:
    found = []
    for entry in map(json.loads, (export_dir / "manifest-files.json").read_text().splitlines()):
        found += [
            json.loads(line) for line in gzip.decompress((root / entry["dataFileS3Key"]).read_bytes()).splitlines()
        ]
    return found


def test_shipped_sample_history_is_consistent(tmp_path: Path) -> None:
    # The daily exports replayed in order end where the full export is: every item's last daily
    # state is the full export's item, and every item deleted in a daily export is gone from it
    # (TTL's deletes included: the exports cannot tell them apart, and need not).
    root = Path(bm.sample_export_location())
    *daily, full = bm.list_exports(str(root))
    items = {(i["Item"]["modelId"]["S"], i["Item"]["owner"]["S"]): i["Item"] for i in _lines(root, Path(full.path))}
    last: dict[tuple[str, str], dict | None] = {}
    kinds = {"insert": 0, "update": 0, "delete": 0}
    for export in daily:
        for change in _lines(root, Path(export.path)):
            key = (change["Keys"]["modelId"]["S"], change["Keys"]["owner"]["S"])
            last[key] = change.get("NewImage")
            kinds[
                "update"
                if "OldImage" in change and "NewImage" in change
                else "delete"
                if "OldImage" in change
                else "insert"
            ] += 1
    assert all(kinds.values()), kinds
    deleted = [key for key, image in last.items() if image is None]
    assert deleted and not set(deleted) & set(items)
    # ... except where the last change was on 2025-03-10, the day whose export never ran.
    stale = {key for key, image in last.items() if image is not None and items[key] != image}
    missed = dt.datetime(2025, 3, 10, tzinfo=dt.UTC).timestamp()
    assert stale and all(missed <= float(items[key]["updatedAt"]["N"]) < missed + 86_400 for key in stale)
    # Sessions updated past midnight, TTL expiry and the late app are in there too.
    assert any(i.get("expiresAt") for k, i in items.items())
    assert {k[0].split("-")[1] for k in last if k[0].startswith("session-")} >= {"trivia", "chess"}


def test_shipped_sample_is_what_write_sample_writes(tmp_path: Path) -> None:
    from bubbly_metrics.sample import write_sample

    write_sample(tmp_path)
    shipped = Path(bm.sample_export_location())
    ours = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    theirs = {
        p.relative_to(shipped).as_posix(): p.read_bytes() for p in (shipped / "AWSDynamoDB").rglob("*") if p.is_file()
    }
    assert sorted(ours) == sorted(theirs)
    assert [k for k in ours if ours[k] != theirs[k]] == []
