"""Inputs made to hurt (docs/rules.md#faults-and-hostile-input, issue #25): confinement, bounded memory, clean errors.

Each family gives a clean error or a counted skip: never a traceback, a hang, a read outside the
export, or memory past the documented bound.  Heavy measurements (11M bad lines, 512 MiB lines)
are in bench/hostile.py; the ones here are sized to run in a few seconds.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import bubbly_metrics as bm
from bubbly_metrics import _readfile
from bubbly_metrics._text import CLIP, clip
from bubbly_metrics.exceptions import ExportConfinementError, ExportLocationError, ExportNotFoundError
from bubbly_metrics.scan import MAX_LINE_BYTES, ReadError, read_export
from bubbly_metrics.synthetic import WrittenExport, write_full_export, write_incremental_export
from tests.conftest import upload_tree

EXPORT_TIME = "2025-03-13T02:00:00Z"
NOW = dt.datetime(2025, 3, 14, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parent.parent


def session(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "modelId": {"S": f"session-sudoku-{i:04d}"},
        "owner": {"S": f"user-u{i % 7}"},
        "updatedAt": {"N": str(1741600000 + i)},
        **extra,
    }


def line_of(item: dict[str, Any]) -> bytes:
    return json.dumps({"Item": item}, separators=(",", ":")).encode()


def export_of(tmp_path: Path, n: int = 20, **kwargs: Any) -> WrittenExport:
    return write_full_export(tmp_path, [session(i) for i in range(n)], export_time=EXPORT_TIME, n_files=2, **kwargs)


def manifest_path(written: WrittenExport) -> Path:
    return written.export_dir / "manifest-files.json"


def set_keys(written: WrittenExport, *keys: str) -> None:
    """Rewrite the files manifest so that its entries name ``keys`` (in order)."""
    path = manifest_path(written)
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    for entry, new in zip(entries, keys, strict=False):
        entry["dataFileS3Key"] = new
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def edit_summary(written: WrittenExport, **changes: Any) -> None:
    path = written.export_dir / "manifest-summary.json"
    summary = json.loads(path.read_text())
    summary.update(changes)
    path.write_text(json.dumps(summary))


def errors_of(frame: pl.DataFrame) -> list[tuple[int, str, int]]:
    return frame.filter(pl.col("read_error").is_not_null()).select("line", "read_error", "error_count").rows()


# --- confinement: every data file read belongs to the export --------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "../outside/x.json.gz",
        "AWSDynamoDB/{id}/data/../../../outside/x.json.gz",
        "AWSDynamoDB/{id}/data/./x.json.gz",
        "AWSDynamoDB/{id}/data//x.json.gz",
        "/etc/passwd",
        "other-prefix/AWSDynamoDB/{id}/data/x.json.gz",  # another prefix of the bucket
        "AWSDynamoDB/data/x.json.gz",  # the incremental exports' folder, from a full export
        "AWSDynamoDB/{id}/manifest-summary.json",  # in the export, not in its data folder
        "AWSDynamoDB/{id}/data/",  # a folder
        "AWSDynamoDB/{id}/data/sub/x.json.gz",
        "s3://other-bucket/AWSDynamoDB/{id}/data/x.json.gz",
        "AWSDynamoDB/{id}/data/x\\..\\..\\y.json.gz",
        "AWSDynamoDB/{id}/data/" + "x" * 2000,  # longer than any S3 key
    ],
)
def test_a_key_outside_the_exports_data_folder_refuses_the_export(tmp_path: Path, key: str) -> None:
    written = export_of(tmp_path)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.json.gz").write_bytes(gzip.compress(line_of(session(99)) + b"\n"))
    set_keys(written, key.format(id=written.export_id))
    with pytest.raises(ExportConfinementError, match="manifest-files.json line 1 lists data file") as excinfo:
        read_export(str(tmp_path))
    message = str(excinfo.value)
    assert "\n" not in message and len(message) < 2 * CLIP + 300
    assert clip(repr(key.format(id=written.export_id)))[:50] in message
    with pytest.raises(ExportConfinementError):  # verification reads the same list
        bm.verify_export(bm.find_export(str(tmp_path)))


def test_an_incremental_export_reads_only_the_shared_data_folder(tmp_path: Path) -> None:
    records = [{"Keys": {}, "NewImage": session(i)} for i in range(4)]
    written = write_incremental_export(
        tmp_path,
        records,
        export_from="2025-03-12T00:00:00Z",
        export_to="2025-03-13T00:00:00Z",
        n_files=1,
    )
    assert read_export(str(tmp_path)).height == 4
    set_keys(written, f"AWSDynamoDB/{written.export_id}/data/x.json.gz")  # a full export's folder
    with pytest.raises(ExportConfinementError, match="data folder AWSDynamoDB/data/"):
        read_export(str(tmp_path))


def test_a_data_file_listed_twice_refuses_the_export(tmp_path: Path) -> None:
    written = export_of(tmp_path)
    path = manifest_path(written)
    first = path.read_text().splitlines()[0]
    path.write_text(path.read_text() + first + "\n")
    with pytest.raises(ExportConfinementError, match="more than once"):
        read_export(str(tmp_path))


@pytest.mark.parametrize("manifest_key", ["", "manifest-files.json", "../AWSDynamoDB/{id}/manifest-files.json", 5])
def test_a_crafted_manifest_key_refuses_the_export(tmp_path: Path, manifest_key: object) -> None:
    written = export_of(tmp_path)
    if isinstance(manifest_key, str):
        manifest_key = manifest_key.format(id=written.export_id)
    edit_summary(written, manifestFilesS3Key=manifest_key)
    if not isinstance(manifest_key, str):  # not even a string: the summary is unreadable
        (listed,) = bm.list_exports(str(tmp_path))
        assert listed.status == "UNREADABLE" and "manifestFilesS3Key 5 is not a string" in (listed.problem or "")
        return
    with pytest.raises(ExportConfinementError, match="manifestFilesS3Key"):
        read_export(str(tmp_path))


@pytest.mark.parametrize("kind", ["symlink to /dev/zero", "symlink to a good file", "fifo", "folder"])
def test_a_data_file_that_is_not_a_regular_file_refuses_the_export(tmp_path: Path, kind: str) -> None:
    written = export_of(tmp_path)
    target = written.data_files[0]
    good = target.read_bytes()
    target.unlink()
    if kind == "symlink to /dev/zero":
        target.symlink_to("/dev/zero")
    elif kind == "symlink to a good file":
        (tmp_path / "elsewhere.json.gz").write_bytes(good)
        target.symlink_to(tmp_path / "elsewhere.json.gz")
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    with pytest.raises(ExportConfinementError, match="the export is refused"):
        read_export(str(tmp_path))


def test_a_file_swapped_for_a_symlink_after_listing_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    export_of(tmp_path)
    export = bm.find_export(str(tmp_path))
    files = export.data_files()
    Path(files[0].path).unlink()
    Path(files[0].path).symlink_to("/dev/zero")
    with pytest.raises(ExportConfinementError, match="is a symlink"):
        bm.scan.map_files(export, lambda frames: frames, files=files).__next__()


def test_on_s3_a_key_under_another_prefix_or_in_another_bucket_is_never_read(aws: str, tmp_path: Path) -> None:
    import boto3

    prefix = "exports/backfill/20250313T020000/"
    written = export_of(tmp_path, prefix=prefix)
    url = upload_tree(tmp_path, "victim", aws)
    s3 = boto3.client("s3", endpoint_url=aws, region_name="eu-west-2")
    s3.create_bucket(Bucket="other", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    stray = gzip.compress(line_of(session(99)) + b"\n")
    s3.put_object(Bucket="other", Key=f"{prefix}AWSDynamoDB/{written.export_id}/data/x.json.gz", Body=stray)
    s3.put_object(Bucket="victim", Key=f"secret/AWSDynamoDB/{written.export_id}/data/x.json.gz", Body=stray)
    assert read_export(url).height == 20
    summary_key = f"{prefix}AWSDynamoDB/{written.export_id}/manifest-summary.json"
    files_key = f"{prefix}AWSDynamoDB/{written.export_id}/manifest-files.json"
    good_summary = s3.get_object(Bucket="victim", Key=summary_key)["Body"].read()
    entries = [json.loads(line) for line in manifest_path(written).read_text().splitlines()]

    def listing(key: str) -> bytes:
        return "".join(
            json.dumps(e | ({"dataFileS3Key": key} if i == 0 else {})) + "\n" for i, e in enumerate(entries)
        ).encode()

    # Another prefix of the same bucket.
    s3.put_object(
        Bucket="victim", Key=files_key, Body=listing(f"secret/AWSDynamoDB/{written.export_id}/data/x.json.gz")
    )
    with pytest.raises(ExportConfinementError, match="secret/AWSDynamoDB"):
        read_export(url)
    # A summary whose manifestFilesS3Key holds the bucket's name (the old resolver then read
    # keys from the root of the S3 filesystem: "other/…" was the other bucket).
    crafted = json.loads(good_summary) | {"manifestFilesS3Key": f"victim/{files_key}"}
    s3.put_object(Bucket="victim", Key=summary_key, Body=json.dumps(crafted).encode())
    s3.put_object(
        Bucket="victim", Key=files_key, Body=listing(f"other/{prefix}AWSDynamoDB/{written.export_id}/data/x.json.gz")
    )
    with pytest.raises(ExportConfinementError, match="other/exports"):
        read_export(url)


# --- bounded memory: long lines, floods of bad lines, huge keys ------------------------------


def one_file_export(tmp_path: Path, raw: bytes, *, items: int) -> WrittenExport:
    """A full export whose single data file holds ``raw`` (gzip-compressed here) and claims ``items``."""
    written = write_full_export(tmp_path, [session(0)], export_time=EXPORT_TIME, n_files=1)
    path = written.data_files[0]
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    with path.open("wb") as out:
        for start in range(0, len(raw), 1 << 24):
            out.write(compressor.compress(raw[start : start + (1 << 24)]))
        out.write(compressor.flush())
    manifest = manifest_path(written)
    entry = json.loads(manifest.read_text())
    entry["itemCount"] = items
    manifest.write_text(json.dumps(entry) + "\n")
    edit_summary(written, itemCount=items)
    return written


@pytest.mark.usefixtures("each_decoder")
@pytest.mark.parametrize("newline", [True, False])
def test_a_line_longer_than_the_maximum_is_counted_and_the_rest_kept(tmp_path: Path, newline: bool) -> None:
    good = [line_of(session(i)) for i in range(3)]
    huge = b'{"Item":{"payload":{"S":"' + b"x" * (MAX_LINE_BYTES + 5) + b'"}}}'
    raw = b"\n".join([good[0], good[1], huge, good[2], huge]) + (b"\n" if newline else b"")
    one_file_export(tmp_path, raw, items=5)
    frame = read_export(str(tmp_path))
    assert frame.filter(pl.col("read_error").is_null())["model_id"].to_list() == [
        "session-sudoku-0000",
        "session-sudoku-0001",
        "session-sudoku-0002",
    ]
    assert frame.filter(pl.col("read_error").is_null())["line"].to_list() == [1, 2, 4]
    assert errors_of(frame) == [(3, ReadError.LINE_TOO_LONG, 2)]  # the lines were counted: no count mismatch


@pytest.mark.usefixtures("each_decoder")
def test_the_maximum_line_length_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A smaller maximum (still above the 1 MiB inflate chunk) so the edges are cheap to build.
    monkeypatch.setattr(_readfile, "MAX_LINE_BYTES", (2 << 20) + 12_345)
    limit = _readfile.MAX_LINE_BYTES
    head, tail = (
        b'{"Item":{"modelId":{"S":"session-sudoku-',
        b'"},"owner":{"S":"user-u"},"updatedAt":{"N":"1741600000"}}}',
    )

    def sized(n: int, tag: str) -> bytes:
        line = head + tag.encode() + b"-" + b"z" * (n - len(head) - len(tag) - 1 - len(tail)) + tail
        assert len(line) == n
        return line

    lines = [sized(limit, "a"), sized(limit + 1, "b"), sized(100, "c"), sized(limit - 1, "d"), sized(limit + 1, "e")]
    one_file_export(tmp_path, b"\n".join(lines), items=5)  # the last, too long, has no newline
    frame = read_export(str(tmp_path))
    kept = frame.filter(pl.col("read_error").is_null())
    assert [m.split("-")[2] for m in kept["model_id"].to_list()] == ["a", "c", "d"]
    assert kept["line"].to_list() == [1, 3, 4]
    assert errors_of(frame) == [(2, ReadError.LINE_TOO_LONG, 2)]


def test_a_long_line_across_gzip_members_and_truncation(tmp_path: Path) -> None:
    # A too-long line split over two gzip members, then a good line; then the stream is cut.
    good = line_of(session(1))
    part = b'{"Item":{"payload":{"S":"' + b"y" * (MAX_LINE_BYTES // 2 + 10)
    written = one_file_export(tmp_path, part, items=2)
    path = written.data_files[0]
    path.write_bytes(path.read_bytes() + gzip.compress(part + b'"}}}\n' + good + b"\n"))
    frame = read_export(str(tmp_path))
    assert frame.filter(pl.col("read_error").is_null())["line"].to_list() == [2]
    assert errors_of(frame) == [(1, ReadError.LINE_TOO_LONG, 1)]
    path.write_bytes(path.read_bytes()[:-8])
    frame = read_export(str(tmp_path))
    assert [r for _, r, _ in errors_of(frame)] == [ReadError.LINE_TOO_LONG, ReadError.TRUNCATED_GZIP]


def test_a_flood_of_bad_lines_is_one_row_per_reason(tmp_path: Path) -> None:
    n = 300_000
    raw = b"{}\n" * n + b"{\n" * 1000 + line_of(session(1)) + b"\n"
    one_file_export(tmp_path, raw, items=n + 1001)
    frame = read_export(str(tmp_path))
    assert frame.height == 3
    assert errors_of(frame) == [(1, ReadError.UNEXPECTED_SHAPE, n), (n + 1, ReadError.BROKEN_LINE, 1000)]
    result = bm.aggregate(str(tmp_path), mode="backfill", start="2025-03-10", now=NOW)
    assert result.to_dict()["malformed"] == {ReadError.UNEXPECTED_SHAPE: n, ReadError.BROKEN_LINE: 1000}
    assert result.items_read == n + 1001
    assert result.outcomes.height <= 4


def test_examples_from_an_export_are_clipped(tmp_path: Path) -> None:
    owner = "party-" + "\x1b[31m" + "o" * 1_000_000  # a member whose owner is no party key
    bad = {"modelId": {"S": "member-user-" + "m" * 1_000_000}, "owner": {"S": owner}, "createdAt": {"N": "1741600000"}}
    write_full_export(tmp_path, [session(1), bad], export_time=EXPORT_TIME, n_files=1)
    result = bm.aggregate(str(tmp_path), mode="backfill", start="2025-03-10", now=NOW)
    example = result.to_dict()["malformedExamples"]["bad_owner"]
    assert len(example["modelId"]) == CLIP + 1 and example["modelId"].endswith("…")
    assert len(example["owner"]) == CLIP + 1
    assert len(json.dumps(result.to_dict())) < 5_000


_RSS_CHILD = """
import resource, sys
import bubbly_metrics as bm
bm.read_export(sys.argv[1]).height if sys.argv[2] == "scan" else bm.aggregate(
    sys.argv[1], mode="backfill", start="2025-03-10", end="2025-03-12")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def peak_rss_mb(location: Path, how: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(location), how],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    return int(done.stdout.strip().splitlines()[-1])


def test_a_256_mib_line_without_newline_stays_within_the_memory_bound(tmp_path: Path) -> None:
    # 255 KB of gzip: the old scan held the whole line (861 MB peak).  Now the line is dropped as
    # it is inflated: the peak is the interpreter, Polars and one maximum line.
    one_file_export(tmp_path / "long", b'{"Item":{"payload":{"S":"' + b"x" * (256 << 20), items=1)
    one_file_export(tmp_path / "plain", b"\n".join(line_of(session(i)) for i in range(1000)) + b"\n", items=1000)
    baseline = peak_rss_mb(tmp_path / "plain", "aggregate")
    hostile = peak_rss_mb(tmp_path / "long", "aggregate")
    assert hostile < baseline + 3 * (MAX_LINE_BYTES >> 20) + 32, (hostile, baseline)


# --- hostile manifests and summaries: clean errors, and one never hides the others -----------


def two_exports(tmp_path: Path) -> tuple[WrittenExport, WrittenExport]:
    """An older good full export and a newer one (the one made hostile by the tests)."""
    old = write_full_export(tmp_path, [session(i) for i in range(5)], export_time="2025-03-12T02:00:00Z", n_files=1)
    new = write_full_export(tmp_path, [session(i) for i in range(6)], export_time=EXPORT_TIME, n_files=1, seed=1)
    assert bm.find_export(str(tmp_path)).export_id == new.export_id
    return old, new


@pytest.mark.parametrize(
    ("summary", "problem"),
    [
        (b'{"itemCount": 3, "bad": "\xff\xfe"}', "unreadable"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
        (b'{"itemCount": 1e999}', "itemCount inf is not a count"),
        (b'{"itemCount": -1}', "itemCount -1 is not a count"),
        (b'{"itemCount": true}', "itemCount True is not a count"),
        (b'{"itemCount": "3"}', "itemCount '3' is not a count"),
        (b'{"exportTime": "0001-01-01T00:00:00Z"}', "not a plausible export time"),
        (b'{"exportTime": "9999-12-31T23:59:59Z"}', "not a plausible export time"),
        (b'{"exportTime": "2025-03-13T02:00:00"}', "has no time zone"),
        (b'{"exportTime": "soon"}', "is not an ISO-8601 instant"),
        (b'{"exportTime": 1741831200}', "is not an ISO-8601 instant"),
        (b'{"exportTime": "' + b"9" * 1_000_000 + b'"}', "more characters"),
        (b'{"exportArn": {"a": 1}}', "exportArn {'a': 1} is not a string"),
        (b'{"exportType": "PARTIAL_EXPORT"}', "neither FULL_EXPORT nor INCREMENTAL_EXPORT"),
        (b'{"pad": "' + b" " * (2 << 20) + b'"}', "larger than 1,048,576 bytes"),
    ],
)
def test_a_hostile_summary_never_hides_the_good_exports(tmp_path: Path, summary: bytes, problem: str) -> None:
    old, new = two_exports(tmp_path)
    path = new.export_dir / "manifest-summary.json"
    if summary.startswith(b"{") and b"\xff" not in summary and len(summary) < 1000:
        summary = json.dumps(json.loads(path.read_text()) | json.loads(summary)).encode()
    path.write_bytes(summary)
    listed = {e.export_id: e for e in bm.list_exports(str(tmp_path))}
    assert listed[new.export_id].status == "UNREADABLE"
    assert problem in (listed[new.export_id].problem or ""), listed[new.export_id].problem
    assert len(listed[new.export_id].problem or "") < 2 * CLIP + 200
    assert bm.find_export(str(tmp_path), export_type="full").export_id == old.export_id
    assert bm.aggregate(str(tmp_path), mode="backfill", start="2025-03-10", end="2025-03-11").export.export_id == (
        old.export_id
    )


def test_an_unreadable_summary_file_never_hides_the_good_exports(tmp_path: Path) -> None:
    old, new = two_exports(tmp_path)
    path = new.export_dir / "manifest-summary.json"
    path.unlink()
    path.mkdir()  # listed by name, but reading it fails
    (path / "x").write_text("{}")
    assert bm.find_export(str(tmp_path), export_type="full").export_id == old.export_id


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        (b"\xff\xfe not utf-8\n", "is not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000 + b"\n", "line 1 of export .* is not a manifest entry"),
        (b'{"itemCount": 1e999, "md5Checksum": "x", "dataFileS3Key": "k"}\n', "line 1 .* not a manifest entry"),
        (b'{"itemCount": true, "md5Checksum": "x", "dataFileS3Key": "k"}\n', "not a manifest entry"),
        (b'{"itemCount": -1, "md5Checksum": "x", "dataFileS3Key": "k"}\n', "not a manifest entry"),
        (b'{"itemCount": "1", "md5Checksum": "x", "dataFileS3Key": "k"}\n', "not a manifest entry"),
        (b'{"itemCount": 1, "md5Checksum": "x", "dataFileS3Key": ["k"]}\n', "not a manifest entry"),
        (b'{"itemCount": 1, "md5Checksum": "' + b"x" * 5_000_000 + b'"\n', "more characters"),
    ],
)
def test_a_hostile_files_manifest_is_one_clean_error(tmp_path: Path, manifest: bytes, problem: str) -> None:
    written = export_of(tmp_path)
    manifest_path(written).write_bytes(manifest)
    with pytest.raises(ExportLocationError, match=problem) as excinfo:
        read_export(str(tmp_path))
    assert len(str(excinfo.value)) < 2 * CLIP + 300


def test_a_files_manifest_larger_than_the_bound_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bubbly_metrics import manifests

    monkeypatch.setattr(manifests, "MAX_FILES_MANIFEST_BYTES", 1000)
    written = export_of(tmp_path)
    manifest_path(written).write_bytes(b"\n" * 1001)
    with pytest.raises(ExportLocationError, match="larger than 1,000 bytes"):
        read_export(str(tmp_path))


def test_no_good_export_is_a_clean_not_found(tmp_path: Path) -> None:
    _, new = two_exports(tmp_path)
    for written in bm.list_exports(str(tmp_path)):
        (Path(written.location) / "manifest-summary.json").write_bytes(b"[" * 100_000)
    with pytest.raises(ExportNotFoundError, match="2 unreadable"):
        bm.find_export(str(tmp_path))
    assert new.export_id


@pytest.mark.parametrize("name", ["manifest-summary.json", "manifest-files.json"])
def test_a_manifest_that_is_a_fifo_never_hangs(tmp_path: Path, name: str) -> None:
    old, new = two_exports(tmp_path)
    path = new.export_dir / name
    path.unlink()
    os.mkfifo(path)
    if name == "manifest-summary.json":
        listed = {e.export_id: e for e in bm.list_exports(str(tmp_path))}
        assert "not a regular file" in (listed[new.export_id].problem or "")
        assert bm.find_export(str(tmp_path)).export_id == old.export_id
    else:
        with pytest.raises(ExportLocationError, match="not a regular file"):
            read_export(str(tmp_path))


def test_worker_processes_count_hostile_lines_as_threads_do(tmp_path: Path) -> None:
    huge = b'{"Item":{"payload":{"S":"' + b"x" * (MAX_LINE_BYTES + 1)
    raw = b"{}\n" * 50_000 + huge + b"\n" + line_of(session(1)) + b"\n" + b"{\n" * 10
    one_file_export(tmp_path, raw, items=50_012)
    threads = bm.aggregate(str(tmp_path), mode="backfill", start="2025-03-10", now=NOW, processes=False)
    procs = bm.aggregate(str(tmp_path), mode="backfill", start="2025-03-10", now=NOW, processes=True)
    expected = {ReadError.UNEXPECTED_SHAPE: 50_000, ReadError.LINE_TOO_LONG: 1, ReadError.BROKEN_LINE: 10}
    assert threads.to_dict()["malformed"] == procs.to_dict()["malformed"] == expected
    assert threads.counts == procs.counts and threads.counts["counted"] == 1


def test_a_refused_export_is_refused_from_a_worker_process_too(tmp_path: Path) -> None:
    written = export_of(tmp_path)
    export = bm.find_export(str(tmp_path))
    files = export.data_files()
    Path(files[1].path).unlink()
    Path(files[1].path).symlink_to("/dev/zero")
    with pytest.raises(ExportConfinementError, match=f"{written.export_id}/data/.* is a symlink"):
        list(bm.scan.map_files(export, len, files=files, processes=True, threads=2))


@pytest.mark.usefixtures("each_decoder")
def test_hostile_lines_agree_with_the_reference(tmp_path: Path) -> None:
    from bubbly_metrics.synthetic import generate_items
    from tests import reference
    from tests.test_differential import assert_matches_reference

    items = list(generate_items(n_items=400, start="2025-03-10", days=3, seed=5, malformed_fraction=0.05))
    written = write_full_export(tmp_path, items, export_time=EXPORT_TIME, n_files=2)
    path = written.data_files[0]
    lines = gzip.decompress(path.read_bytes()).split(b"\n")[:-1]
    huge = b'{"Item":{"modelId":{"S":"session-sudoku-x"},"payload":{"S":"' + b"x" * MAX_LINE_BYTES + b'"}}}'
    lines[3:3] = [huge, b"{}", b"{", huge]
    path.write_bytes(gzip.compress(b"".join(x + b"\n" for x in lines), compresslevel=1))
    result = bm.aggregate(str(tmp_path), mode="backfill", start="2025-03-10", end="2025-03-12")
    expected = reference.aggregate(
        written.export_dir, tmp_path, start=result.date_range.start, end=result.date_range.end, dense=True
    )
    assert expected.malformed[ReadError.LINE_TOO_LONG] == 2
    assert_matches_reference(result, expected)


@pytest.mark.usefixtures("each_decoder")
@pytest.mark.parametrize("batch_rows", [10, 7, 1_000])
def test_many_gzip_members_share_batches_and_corruption_drops_only_its_member(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int
) -> None:
    # Batches that end inside a member and batches that hold many members: a corrupt member
    # still drops exactly its own lines, and every earlier member's are counted.
    monkeypatch.setattr(_readfile, "BATCH_ROWS", batch_rows)
    written = write_full_export(tmp_path, [session(0)], export_time=EXPORT_TIME, n_files=1)
    members = [gzip.compress(b"".join(line_of(session(7 * m + k)) + b"\n" for k in range(7))) for m in range(50)]
    bad = bytearray(members[30])
    bad[-8] ^= 0xFF  # its CRC: found only at the member's end, after its lines were inflated
    members[30] = bytes(bad)
    written.data_files[0].write_bytes(b"".join(members))
    manifest = manifest_path(written)
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"itemCount": 350}) + "\n")
    edit_summary(written, itemCount=350)
    result = bm.aggregate(str(tmp_path), mode="backfill", start="2025-03-10", now=NOW)
    assert result.counts["counted"] == 30 * 7
    assert result.to_dict()["malformed"] == {ReadError.CORRUPT_GZIP: 1}
    frame = read_export(str(tmp_path))
    kept = frame.filter(pl.col("read_error").is_null())
    assert kept["line"].to_list() == list(range(1, 211))
    assert errors_of(frame) == [(211, ReadError.CORRUPT_GZIP, 1)]


def test_a_file_of_many_one_line_members_is_summarised_in_a_few_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = _readfile._complete

    def counting(blocks: list[Any], file: str) -> Any:
        calls.append(len(blocks))
        return original(blocks, file)

    monkeypatch.setattr(_readfile, "_complete", counting)
    written = write_full_export(tmp_path, [session(0)], export_time=EXPORT_TIME, n_files=1)
    written.data_files[0].write_bytes(b"".join(gzip.compress(line_of(session(i)) + b"\n") for i in range(5_000)))
    manifest = manifest_path(written)
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"itemCount": 5_000}) + "\n")
    edit_summary(written, itemCount=5_000)
    result = bm.aggregate(str(tmp_path), mode="backfill", start="2025-03-10", now=NOW)
    assert result.counts["counted"] == 5_000
    assert len(calls) <= 5_000 // _readfile._MAX_BLOCKS + 1
