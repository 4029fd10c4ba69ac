"""Scanning exports into the raw-record LazyFrame (docs/rules.md#export-layouts): real files, bad input, S3."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import bubbly_metrics as bm
from bubbly_metrics.exceptions import ExportIntegrityError
from bubbly_metrics.scan import RAW_SCHEMA, ReadError, read_export, scan_export
from bubbly_metrics.synthetic import (
    WrittenExport,
    generate_items,
    write_full_export,
    write_incremental_export,
)
from tests.conftest import upload_tree

FULL = "01768385930622-efd1a093"
INC1 = "01768386924000-d339e52d"
INC2 = "01768388186000-4a2fc3ff"
EXPORT_TIME = "2025-03-13T02:00:00Z"
PREFIX = "exports/backfill/20250301T020000/"

# Every test here runs with the compiled decoder and with msgspec alone.
pytestmark = pytest.mark.usefixtures("each_decoder")


def errors(frame: pl.DataFrame) -> list[tuple[str, int, str]]:
    """(file, line, reason) of every unreadable-part row."""
    return frame.filter(pl.col("read_error").is_not_null()).select("file", "line", "read_error").rows()


def counted(frame: pl.DataFrame) -> list[tuple[int, str, int]]:
    """(first line, reason, lines) of every unreadable-part row: one per file and reason."""
    return frame.filter(pl.col("read_error").is_not_null()).select("line", "read_error", "error_count").rows()


def records(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("read_error").is_null())


def key(written: WrittenExport, path: Path) -> str:
    return path.relative_to(written.root).as_posix()


def lines_of(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).split(b"\n")[:-1]


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(gzip.compress(b"".join(x + b"\n" for x in lines), mtime=0))


def session(i: int) -> dict[str, Any]:
    return {
        "modelId": {"S": f"session-sudoku-{i:04d}"},
        "owner": {"S": f"user-u{i % 7}"},
        "updatedAt": {"N": str(1741600000 + i)},
        "payload": {"M": {"board": {"S": "x" * 50}}},
    }


@pytest.fixture
def one_file(tmp_path: Path) -> WrittenExport:
    """A full export whose single data file holds 100 sessions, session-sudoku-0000 … 0099."""
    return write_full_export(tmp_path, [session(i) for i in range(100)], export_time=EXPORT_TIME, n_files=1)


# --- the real export ----------------------------------------------------------------------


def test_real_full_export(real_export: Path) -> None:
    frame = read_export(str(real_export), export_type="full")
    assert frame.schema == pl.Schema(RAW_SCHEMA)
    assert frame.select("file", "line").rows() == [
        (f"AWSDynamoDB/{FULL}/data/5mrfg3b44e3vhnfickkozoym6a.json.gz", n) for n in (1, 2, 3)
    ]
    # A test table with pk/sk keys: none of the attributes the metrics read are there.
    assert frame.drop("file", "line").null_count().row(0) == (3,) * 9


def test_real_incremental_exports_read_new_images_only(real_export: Path) -> None:
    exports = {e.export_id: e for e in bm.list_exports(str(real_export))}
    inserts = read_export(exports[INC1])
    assert inserts.height == 6
    assert errors(inserts) == []
    # 1 insert, 2 updates, 2 deletes: deletes carry no NewImage and contribute nothing.
    latest = read_export(str(real_export), export_type="incremental")
    assert sorted(latest.select("file", "line").rows()) == [
        ("AWSDynamoDB/data/ipce3huava4gbixww55o55lpze.json.gz", 1),
        ("AWSDynamoDB/data/unx44ti5ru22xkgzcr7wlucsl4.json.gz", 1),
        ("AWSDynamoDB/data/vv6znehhmq4x3hfgpshdp2m5ta.json.gz", 2),
    ]


def test_deletes_view_reads_each_deleted_items_old_image(real_export: Path) -> None:
    # The same real export: its 2 deletes (OldImage only) are the rows, its insert and updates
    # are not; the lines are exactly those the default view leaves out.
    deletes = read_export(str(real_export), export_type="incremental", deletes=True)
    assert errors(deletes) == []
    expected = []
    manifest = real_export / "AWSDynamoDB" / INC2 / "manifest-files.json"
    for entry in map(json.loads, manifest.read_text().splitlines()):
        lines = gzip.decompress((real_export / entry["dataFileS3Key"]).read_bytes()).splitlines()
        for number, line in enumerate(lines, 1):
            change = json.loads(line)
            if "NewImage" not in change:
                assert set(change) == {"Metadata", "Keys", "OldImage"}
                expected.append((entry["dataFileS3Key"], number))
    assert len(expected) == 2
    assert sorted(deletes.select("file", "line").rows()) == sorted(expected)
    records = read_export(str(real_export), export_type="incremental")
    assert not set(deletes.select("file", "line").rows()) & set(records.select("file", "line").rows())
    with pytest.raises(bm.BubblyMetricsError, match="deletes come from INCREMENTAL exports"):
        scan_export(str(real_export), export_type="full", deletes=True)


def test_deletes_view_values_and_keys_only_deletes(tmp_path: Path) -> None:
    old = {
        "modelId": {"S": "session-chess-s1"},
        "owner": {"S": "user-u1"},
        "createdAt": {"N": "1741600000"},
        "updatedAt": {"N": "1741690000"},
        "expiresAt": {"N": "1741700000"},
        "payload": {"M": {"updatedAt": {"N": "1"}}},
    }
    keys = {"modelId": {"S": "party-chess-p1"}, "owner": {"S": "user-u2"}}
    write_incremental_export(
        tmp_path,
        [
            {"Keys": {k: old[k] for k in ("modelId", "owner")}, "OldImage": old},
            {"Keys": keys, "NewImage": {**keys, "createdAt": {"N": "1741600000"}}},
            {"Keys": keys},  # a NEW_IMAGE export's delete: no OldImage, only the keys
            {"Item": old},  # not a change record at all
        ],
        export_from="2025-03-10T00:00:00Z",
        export_to="2025-03-11T00:00:00Z",
        n_files=1,
    )
    deletes = read_export(str(tmp_path), deletes=True)
    rows = deletes.filter(pl.col("read_error").is_null())
    assert rows.select("line", "model_id", "owner", "created_at", "updated_at", "expires_at").rows() == [
        (1, "session-chess-s1", "user-u1", "1741600000", "1741690000", "1741700000"),
        (3, "party-chess-p1", "user-u2", None, None, None),
    ]
    assert [e[1:] for e in errors(deletes)] == [(4, ReadError.UNEXPECTED_SHAPE)]


def test_real_export_verifies_while_scanning(real_export: Path) -> None:
    for export in bm.list_exports(str(real_export)):
        assert read_export(export, verify=True).height == {FULL: 3, INC1: 6, INC2: 3}[export.export_id]


def test_attribute_values_and_types(tmp_path: Path) -> None:
    item = {
        "modelId": {"S": "session-sudoku-a"},
        "owner": {"S": "user-u"},
        "createdAt": {"S": "2025-03-10T10:00:00.000Z"},
        "updatedAt": {"N": "1741600000.5"},
        "expiresAt": {"N": "1749376000"},
        # Nested attributes named like top-level ones must not be picked up.
        "payload": {"M": {"owner": {"S": "user-nested"}, "updatedAt": {"N": "1"}}},
    }
    odd = {"modelId": {"N": "5"}, "owner": {"NULL": True}, "createdAt": {"B": "MTIz"}}
    write_full_export(tmp_path, [item, odd], export_time=EXPORT_TIME, n_files=1)
    frame = read_export(str(tmp_path)).sort("line")
    row = frame.row(0, named=True)
    assert {k: row[k] for k in RAW_SCHEMA if k not in ("file", "line")} == {
        "model_id": "session-sudoku-a",
        "owner": "user-u",
        "created_at": "2025-03-10T10:00:00.000Z",
        "created_at_type": "S",
        "updated_at": "1741600000.5",
        "updated_at_type": "N",
        "expires_at": "1749376000",
        "read_error": None,
        "error_count": None,
    }
    assert frame.row(1, named=True) | {"file": None} == {
        "file": None,
        "line": 2,
        "model_id": None,
        "owner": None,
        "created_at": None,
        "created_at_type": "?",
        "updated_at": None,
        "updated_at_type": None,
        "expires_at": None,
        "read_error": None,
        "error_count": None,
    }


# --- the LazyFrame ------------------------------------------------------------------------


def test_lazy_projection_filter_and_head(tmp_path: Path) -> None:
    write_full_export(tmp_path, [session(i) for i in range(300)], export_time=EXPORT_TIME, n_files=3)
    lf = scan_export(str(tmp_path))
    assert isinstance(lf, pl.LazyFrame)
    assert lf.collect_schema() == pl.Schema(RAW_SCHEMA)
    everything = lf.collect()
    assert everything.height == 300
    projected = lf.select("model_id", "line").collect()
    assert projected.columns == ["model_id", "line"]
    assert_frame_equal(projected, everything.select("model_id", "line"))
    filtered = lf.filter(pl.col("model_id") == "session-sudoku-0042").select("owner", "updated_at").collect()
    assert filtered.rows() == [("user-u0", "1741600042")]
    assert lf.head(7).collect().height == 7
    assert lf.select("model_id").head(1).collect().height == 1
    assert lf.select(pl.len()).collect().item() == 300
    streamed = lf.collect(engine="streaming")
    assert_frame_equal(streamed.sort("model_id"), everything.sort("model_id"))
    assert sorted(everything["model_id"]) == [f"session-sudoku-{i:04d}" for i in range(300)]


def test_on_file_reports_each_file_in_manifest_order(tmp_path: Path) -> None:
    written = write_full_export(tmp_path, [session(i) for i in range(50)], export_time=EXPORT_TIME, n_files=4)
    seen: list[tuple[str, int]] = []
    read_export(str(tmp_path), on_file=lambda f, n: seen.append((f.key, n)), threads=2)
    manifest = [json.loads(x) for x in (written.export_dir / "manifest-files.json").read_text().splitlines()]
    assert seen == [(m["dataFileS3Key"], m["itemCount"]) for m in manifest]
    assert sum(n for _, n in seen) == 50


def test_thread_count_does_not_change_the_result(tmp_path: Path) -> None:
    write_full_export(tmp_path, generate_items(n_items=400, seed=3), export_time=EXPORT_TIME, n_files=5)
    one = read_export(str(tmp_path), threads=1)
    many = read_export(str(tmp_path), threads=4)
    assert_frame_equal(one, many)


# --- bad input never aborts a scan --------------------------------------------------------


def test_broken_line_keeps_the_rest_of_the_file(one_file: WrittenExport) -> None:
    path = one_file.data_files[0]
    lines = lines_of(path)
    lines[49] = lines[49][: len(lines[49]) // 2]  # line 50 cut in half: not JSON
    write_lines(path, lines)
    frame = read_export(str(one_file.root))
    assert errors(frame) == [(key(one_file, path), 50, ReadError.BROKEN_LINE)]
    kept = records(frame)
    assert kept.height == 99
    assert kept["line"].to_list() == [n for n in range(1, 101) if n != 50]
    assert "session-sudoku-0049" not in kept["model_id"].to_list()
    assert kept.filter(pl.col("line") == 100)["model_id"].item() == "session-sudoku-0099"


def test_wrong_shape_line(one_file: WrittenExport) -> None:
    path = one_file.data_files[0]
    lines = lines_of(path)
    lines[9] = b'{"Item": 5}'
    lines[19] = b'{"Item": {"modelId": "session-sudoku-x"}}'  # not a type-descriptor map
    lines[29] = b"[1, 2, 3]"
    write_lines(path, lines)
    frame = read_export(str(one_file.root))
    # One row for the file's three: its first line and how many (never a row per bad line).
    assert errors(frame) == [(key(one_file, path), 10, ReadError.UNEXPECTED_SHAPE)]
    assert counted(frame) == [(10, ReadError.UNEXPECTED_SHAPE, 3)]
    assert records(frame).height == 97


def test_a_line_nested_too_deep_to_read_is_a_wrong_shape(one_file: WrittenExport) -> None:
    # Python's recursion limit stops msgspec (the compiled decoder declines such blocks); no
    # DynamoDB item nests that deep.  It was a RecursionError that aborted the scan.
    path = one_file.data_files[0]
    lines = lines_of(path)
    lines[4] = b'{"Item":{"modelId":{"S":"session-sudoku-x"},"payload":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    write_lines(path, lines)
    frame = read_export(str(one_file.root))
    assert errors(frame) == [(key(one_file, path), 5, ReadError.UNEXPECTED_SHAPE)]
    assert records(frame).height == 99


def test_a_projected_scan_mixing_both_decoders_in_one_batch(tmp_path: Path) -> None:
    # More than one 2 MB block, an odd line in a later one: with the compiled decoder, one
    # batch holds its blocks and msgspec's block for that line, and their columns must match.
    items = [session(i) | {"payload": {"S": "x" * 300}} for i in range(12_000)]
    written = write_full_export(tmp_path, items, export_time=EXPORT_TIME, n_files=1)
    path = written.data_files[0]
    lines = lines_of(path)
    assert sum(map(len, lines)) > 2 * (2 << 20)
    lines[9_000] = b'{"Item": {"modelId": "session-sudoku-x"}}'
    write_lines(path, lines)
    lf = scan_export(str(written.root))
    for column in ("created_at", "updated_at_type", "model_id"):
        frame = lf.select(column, "read_error").collect()
        assert frame.height == 12_000
        assert frame["read_error"].to_list().count(ReadError.UNEXPECTED_SHAPE) == 1


def test_full_export_line_without_item_is_counted(one_file: WrittenExport) -> None:
    path = one_file.data_files[0]
    lines = lines_of(path)
    lines[4] = b"{}"
    lines[5] = b'{"Keys": {"modelId": {"S": "session-sudoku-0005"}}}'
    write_lines(path, lines)
    frame = read_export(str(one_file.root))
    assert records(frame).height == 98
    assert counted(frame) == [(5, ReadError.UNEXPECTED_SHAPE, 2)]


def test_broken_lines_in_an_incremental_export(tmp_path: Path) -> None:
    records_in = [{"Keys": {}, "NewImage": session(i)} for i in range(20)]
    written = write_incremental_export(
        tmp_path,
        records_in,
        export_from="2025-03-12T00:00:00Z",
        export_to="2025-03-13T00:00:00Z",
        n_files=1,
    )
    path = written.data_files[0]
    lines = lines_of(path)
    lines[0] = b'{"Metadata": {'
    lines[1] = b'{"NewImage": 5}'
    lines[2] = b'{"Keys": {}, "OldImage": {}}'  # a delete: not an error, not a record
    write_lines(path, lines)
    frame = read_export(str(tmp_path))
    assert errors(frame) == [
        (key(written, path), 1, ReadError.BROKEN_LINE),
        (key(written, path), 2, ReadError.UNEXPECTED_SHAPE),
    ]
    assert records(frame)["line"].to_list() == list(range(4, 21))


def test_truncated_gzip_keeps_complete_lines_before_the_cut(one_file: WrittenExport) -> None:
    path = one_file.data_files[0]
    blob = path.read_bytes()
    cut = blob[: len(blob) * 6 // 10]
    path.write_bytes(cut)
    complete = _decompress_prefix(cut)
    n_complete = complete.count(b"\n")
    assert 10 < n_complete < 100
    frame = read_export(str(one_file.root))
    assert errors(frame) == [(key(one_file, path), n_complete + 1, ReadError.TRUNCATED_GZIP)]
    assert records(frame)["model_id"].to_list() == [f"session-sudoku-{i:04d}" for i in range(n_complete)]


def _decompress_prefix(blob: bytes) -> bytes:
    """What zlib can decompress from a truncated gzip, up to its last complete line."""
    import zlib

    data = zlib.decompressobj(31).decompress(blob)
    return data[: data.rfind(b"\n") + 1]


def test_truncated_gzip_does_not_touch_other_files(tmp_path: Path) -> None:
    written = write_full_export(tmp_path, [session(i) for i in range(200)], export_time=EXPORT_TIME, n_files=2)
    intact = read_export(str(tmp_path))
    damaged, other = written.data_files
    damaged.write_bytes(damaged.read_bytes()[:30])  # not even one line decompresses
    frame = read_export(str(tmp_path))
    assert errors(frame) == [(key(written, damaged), 1, ReadError.TRUNCATED_GZIP)]
    assert_frame_equal(records(frame), intact.filter(pl.col("file") == key(written, other)))


def test_corrupt_second_gzip_member_keeps_the_first(tmp_path: Path) -> None:
    # Concatenated gzip members are legal gzip; damage in the second keeps the first intact.
    written = write_full_export(tmp_path, [session(i) for i in range(60)], export_time=EXPORT_TIME, n_files=1)
    path = written.data_files[0]
    lines = lines_of(path)
    first = gzip.compress(b"".join(x + b"\n" for x in lines[:40]), mtime=0)
    second = bytearray(gzip.compress(b"".join(x + b"\n" for x in lines[40:]), mtime=0))
    second[12:24] = b"\xff" * 12  # inside the deflate data
    path.write_bytes(first + bytes(second))
    frame = read_export(str(tmp_path))
    assert errors(frame) == [(key(written, path), 41, ReadError.CORRUPT_GZIP)]
    assert records(frame)["model_id"].to_list() == [f"session-sudoku-{i:04d}" for i in range(40)]


def test_corrupt_gzip_drops_the_damaged_member_and_never_keeps_garbage(tmp_path: Path) -> None:
    rng = random.Random(5)
    items = [session(i) | {"payload": {"S": "".join(rng.choices("abcdef0123", k=300))}} for i in range(2000)]
    written = write_full_export(tmp_path, items, export_time=EXPORT_TIME, n_files=1)
    path = written.data_files[0]
    blob = bytearray(path.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 64] = bytes(b ^ 0xFF for b in blob[middle : middle + 64])
    path.write_bytes(bytes(blob))
    frame = read_export(str(tmp_path))
    # Damage is often detected only at the member's CRC, after garbage was inflated: nothing
    # of the damaged member may reach the metrics, and the loss is one counted row.
    assert records(frame).height == 0
    assert [e[1:] for e in errors(frame)] == [(1, ReadError.CORRUPT_GZIP)]


def test_single_bit_flips_never_yield_altered_records(tmp_path: Path) -> None:
    items = [session(i) for i in range(300)]
    written = write_full_export(tmp_path, items, export_time=EXPORT_TIME, n_files=1)
    path = written.data_files[0]
    original = path.read_bytes()
    expected = {f"session-sudoku-{i:04d}" for i in range(300)}
    rng = random.Random(11)
    for _ in range(25):
        blob = bytearray(original)
        at = rng.randrange(20, len(blob) - 8)  # the deflate body, not the header or trailer
        blob[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(blob))
        got = records(read_export(str(tmp_path)))
        assert set(got["model_id"].to_list()) <= expected
        assert got.filter(pl.col("updated_at").str.contains(r"\D")).height == 0


def test_an_empty_file_is_a_truncated_gzip_and_a_short_one_a_count_mismatch(tmp_path: Path) -> None:
    written = write_full_export(tmp_path, [session(i) for i in range(50)], export_time=EXPORT_TIME, n_files=2)
    empty, short = written.data_files
    empty.write_bytes(b"")
    lines = lines_of(short)
    write_lines(short, lines[:-3])
    frame = read_export(str(tmp_path))
    reasons = {e[2] for e in errors(frame)}
    assert reasons == {ReadError.TRUNCATED_GZIP, ReadError.COUNT_MISMATCH}


def test_missing_data_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    written = write_full_export(tmp_path, [session(i) for i in range(100)], export_time=EXPORT_TIME, n_files=2)
    intact = read_export(str(tmp_path))
    gone, other = written.data_files
    gone.unlink()
    with caplog.at_level("WARNING", logger="bubbly_metrics.scan"):
        frame = read_export(str(tmp_path))
    lost = 100 - intact.filter(pl.col("file") == key(written, other)).height
    assert f"{key(written, gone)}: listed in the manifest with {lost} item(s) but missing" in caplog.text
    assert errors(frame) == [(key(written, gone), 0, ReadError.MISSING_FILE)]
    assert_frame_equal(records(frame), intact.filter(pl.col("file") == key(written, other)))
    result = bm.aggregate(
        str(tmp_path),
        mode="backfill",
        start="2025-03-10",
        now=dt.datetime(2025, 3, 11, tzinfo=dt.UTC),
    )
    assert result.malformed(by_file=True).select("reason", "file", "records").rows() == [
        (ReadError.MISSING_FILE, key(written, gone), 1)
    ]


def test_losses_are_counted_by_file_and_reason(tmp_path: Path) -> None:
    written = write_full_export(tmp_path, [session(i) for i in range(90)], export_time=EXPORT_TIME, n_files=3)
    a, b, c = written.data_files
    lines = lines_of(a)
    lines[0], lines[1] = b"{", b"nope"
    write_lines(a, lines)
    lines = lines_of(b)
    lines[3] = b'{"Item": 5}'
    write_lines(b, lines)
    c.write_bytes(c.read_bytes()[:-8])  # lose the 8-byte gzip trailer: every line is there
    result = bm.aggregate(
        str(tmp_path),
        mode="backfill",
        start="2025-03-10",
        now=dt.datetime(2025, 3, 11, tzinfo=dt.UTC),
    )
    assert result.malformed(by_file=True).select("reason", "file", "records").sort("file", "reason").rows() == sorted(
        [
            (ReadError.BROKEN_LINE, key(written, a), 2),
            (ReadError.UNEXPECTED_SHAPE, key(written, b), 1),
            (ReadError.TRUNCATED_GZIP, key(written, c), 1),
        ],
        key=lambda r: (r[1], r[0]),
    )
    assert result.counts["counted"] == 90 - 3  # c lost only its trailer: all its lines count
    assert int(result.metrics["games_played"].sum()) == 87


# --- verify=True --------------------------------------------------------------------------


def test_verify_raises_on_checksum_mismatch(one_file: WrittenExport) -> None:
    path = one_file.data_files[0]
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=7))
    assert read_export(str(one_file.root)).height == 100  # same lines: fine without verify
    with pytest.raises(ExportIntegrityError, match=f"checksum mismatch for data file {key(one_file, path)}"):
        read_export(str(one_file.root), verify=True)


def test_verify_raises_on_item_count_mismatch(one_file: WrittenExport) -> None:
    manifest = one_file.export_dir / "manifest-files.json"
    entry = json.loads(manifest.read_text())
    entry["itemCount"] = 101
    manifest.write_text(json.dumps(entry) + "\n")
    # First the manifest against its summary ...
    with pytest.raises(
        ExportIntegrityError, match="manifest-files.json lists 101 items but manifest-summary.json says 100"
    ):
        read_export(str(one_file.root), verify=True)
    # ... then, with both saying 101, the file against the manifest.
    summary_path = one_file.export_dir / "manifest-summary.json"
    summary = json.loads(summary_path.read_text())
    summary["itemCount"] = 101
    summary_path.write_text(json.dumps(summary))
    name = key(one_file, one_file.data_files[0])
    with pytest.raises(
        ExportIntegrityError,
        match=f"data file {name} holds 100 records but its manifest says 101",
    ):
        read_export(str(one_file.root), verify=True)
    # Without verify the shortfall is counted, not fatal.
    frame = read_export(str(one_file.root))
    assert [e[2] for e in errors(frame)] == [ReadError.COUNT_MISMATCH]


def test_verify_raises_on_missing_data_file(tmp_path: Path) -> None:
    written = write_full_export(tmp_path, [session(i) for i in range(10)], export_time=EXPORT_TIME, n_files=2)
    written.data_files[1].unlink()
    with pytest.raises(ExportIntegrityError, match=key(written, written.data_files[1])):
        read_export(str(tmp_path), verify=True)


def test_verify_raises_on_missing_empty_partition(tmp_path: Path) -> None:
    written = write_full_export(tmp_path, [session(1)], export_time=EXPORT_TIME, n_files=3)
    empty = next(p for p in written.data_files if gzip.decompress(p.read_bytes()) == b"")
    empty.unlink()
    with pytest.raises(ExportIntegrityError, match=key(written, empty)):
        read_export(str(tmp_path), verify=True)


# --- the same bytes on S3 -----------------------------------------------------------------


def test_real_export_local_and_s3_identical(aws: str, real_export: Path) -> None:
    url = upload_tree(real_export, "real", aws)
    for export_type in ("full", "incremental"):
        local = read_export(str(real_export), export_type=export_type, verify=True)
        remote = read_export(url, export_type=export_type, verify=True)
        assert_frame_equal(remote, local)
    (exports,) = {tuple(e.export_id for e in bm.list_exports(u)) for u in (url, str(real_export))}
    assert exports == (FULL, INC1, INC2)
    # One export's folder on S3: incremental keys still resolve to the shared data folder.
    one = bm.list_exports(f"{url}AWSDynamoDB/{INC2}/")
    assert [e.export_id for e in one] == [INC2]
    assert_frame_equal(read_export(one[0]), read_export(str(real_export), export_type="incremental"))


def test_real_export_copied_under_another_prefix(aws: str, real_export: Path) -> None:
    # Manifest keys say AWSDynamoDB/...; the copy lives under mirror/2026/: keys still resolve.
    url = upload_tree(real_export, "mirror", aws, prefix="mirror/2026/")
    assert_frame_equal(
        read_export(url, export_type="incremental", verify=True),
        read_export(str(real_export), export_type="incremental"),
    )


def test_prefixed_synthetic_export_local_and_s3_identical(aws: str, tmp_path: Path) -> None:
    items = list(generate_items(n_items=600, start="2025-02-25", days=5, seed=9, malformed_fraction=0.05))
    write_full_export(tmp_path, items, export_time="2025-03-02T02:00:00Z", prefix=PREFIX, n_files=3)
    url = upload_tree(tmp_path, "bubbly-exports", aws)
    local = read_export(str(tmp_path / PREFIX), verify=True)
    assert local.height == 600
    for location in (url, f"{url}exports/", f"{url}{PREFIX}", f"{url}{PREFIX.rstrip('/')}"):
        assert_frame_equal(read_export(location, verify=True), local)
    now = dt.datetime(2025, 3, 2, tzinfo=dt.UTC)
    on_s3 = bm.aggregate(f"{url}{PREFIX}", mode="backfill", start="2025-02-25", now=now)
    on_disk = bm.aggregate(str(tmp_path), mode="backfill", start="2025-02-25", now=now)
    assert_frame_equal(on_s3.metrics, on_disk.metrics)
    assert_frame_equal(on_s3.per_user, on_disk.per_user)
    assert on_s3.metrics.height == 5 * 4  # 5 days x 4 apps


def test_unreadable_lines_are_one_warning_per_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Bad lines in different 2 MB blocks (and one that has no Item at all): one warning for the file.
    items = [session(i) | {"payload": {"S": "x" * 300}} for i in range(12_000)]
    written = write_full_export(tmp_path, items, export_time=EXPORT_TIME, n_files=1)
    path = written.data_files[0]
    lines = lines_of(path)
    lines[100], lines[7_000], lines[11_000] = b"{broken", b'{"Item": 5}', b'{"Keys": {}}'
    write_lines(path, lines)
    with caplog.at_level("WARNING", logger="bubbly_metrics.scan"):
        frame = read_export(str(written.root))
    assert counted(frame) == [(101, ReadError.BROKEN_LINE, 1), (7_001, ReadError.UNEXPECTED_SHAPE, 2)]
    assert [r.getMessage() for r in caplog.records] == [
        f"{key(written, path)}: skipped 3 unreadable line(s), first at line 101"
    ]
