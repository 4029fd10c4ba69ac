"""Finding exports and reading their manifests (docs/rules.md#finding-exports), on a real AWS export."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

import pytest

import bubbly_metrics as bm
from bubbly_metrics.exceptions import (
    ExportIntegrityError,
    ExportLocationError,
    ExportNotFoundError,
    ExportWindowError,
    InvalidArgumentError,
    UnsupportedExportError,
)
from bubbly_metrics.synthetic import write_full_export, write_incremental_export

FULL = "01768385930622-efd1a093"
INC1 = "01768386924000-d339e52d"
INC2 = "01768388186000-4a2fc3ff"
UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def export_copy(real_export: Path, tmp_path: Path) -> Path:
    """A writable copy of the real export's bucket root."""
    root = tmp_path / "bucket"
    shutil.copytree(real_export, root)
    return root


def edit_summary(root: Path, export_id: str, **changes: object) -> None:
    path = root / "AWSDynamoDB" / export_id / "manifest-summary.json"
    summary = json.loads(path.read_text())
    summary.update(changes)
    path.write_text(json.dumps(summary))


# --- listing ------------------------------------------------------------------------------


def test_lists_the_real_export(real_export: Path) -> None:
    exports = bm.list_exports(str(real_export))
    got = [
        (
            e.export_id,
            e.export_type,
            e.status,
            e.export_time,
            e.export_from,
            e.export_to,
            e.item_count,
        )
        for e in exports
    ]
    assert got == [
        (FULL, "FULL", "COMPLETED", at("2026-01-14T10:18:50.622"), None, None, 3),
        (
            INC1,
            "INCREMENTAL",
            "COMPLETED",
            None,
            at("2026-01-14T10:20:00"),
            at("2026-01-14T10:35:00"),
            6,
        ),
        (
            INC2,
            "INCREMENTAL",
            "COMPLETED",
            None,
            at("2026-01-14T10:35:00"),
            at("2026-01-14T10:50:00"),
            5,
        ),
    ]
    full, inc1, inc2 = exports
    assert full.as_of == at("2026-01-14T10:18:50.622")
    assert inc2.as_of == at("2026-01-14T10:50:00")
    assert inc1.window == "2026-01-14T10:20:00Z → 2026-01-14T10:35:00Z"
    assert full.window == "2026-01-14T10:18:50Z"
    assert (full.output_format, inc1.output_format) == ("DYNAMODB_JSON", "DYNAMODB_JSON")
    assert inc1.output_view == "NEW_AND_OLD_IMAGES"
    assert full.export_arn == f"arn:aws:dynamodb:eu-north-1:123456789123:table/test/export/{FULL}"
    assert full.location == str(real_export / "AWSDynamoDB" / FULL)
    assert inc2.to_dict()["exportToTime"] == "2026-01-14T10:50:00Z"
    assert json.loads(json.dumps(inc2.to_dict()))["itemCount"] == 5


def test_data_files_come_from_the_manifest(real_export: Path) -> None:
    full, inc1, inc2 = bm.list_exports(str(real_export))
    files = full.data_files()
    assert [(Path(f.path).name, f.item_count) for f in files] == [
        ("zqp435kgma323mmasy7jmciuje.json.gz", 0),
        ("5mrfg3b44e3vhnfickkozoym6a.json.gz", 3),
        ("t7sisheiy44edlhcrjd5zqoudu.json.gz", 0),
        ("erajd3hco442njqter3ahrxn3e.json.gz", 0),
    ]
    assert files[1].key == f"AWSDynamoDB/{FULL}/data/5mrfg3b44e3vhnfickkozoym6a.json.gz"
    assert files[1].md5_checksum == "y+zg5fVeudb3R3DOQ+RKgA=="
    assert all(Path(f.path) == real_export / f.key for f in files)
    # Incremental exports write into the shared AWSDynamoDB/data/ folder: only the manifest
    # says which of its files belong to which export.
    shared = real_export / "AWSDynamoDB" / "data"
    inc1_files, inc2_files = inc1.data_files(), inc2.data_files()
    assert [f.key for f in inc1_files] == [
        "AWSDynamoDB/data/u2wov2dg246wzitouzsnk6jbd4.json.gz",
        "AWSDynamoDB/data/vortt3w45u2w7glaexsiwnz4li.json.gz",
        "AWSDynamoDB/data/auzjitnisa6dlortcics46chxq.json.gz",
        "AWSDynamoDB/data/z2grmkfehu6e5phyeuxxtu6xve.json.gz",
    ]
    assert [f.item_count for f in inc2_files] == [1, 2, 1, 1]
    assert all(Path(f.path).parent == shared and Path(f.path).is_file() for f in inc1_files + inc2_files)
    assert not {f.key for f in inc1_files} & {f.key for f in inc2_files}
    assert len(list(shared.iterdir())) == 8  # a folder listing would mix both exports


def test_verify_passes_on_every_real_export(real_export: Path) -> None:
    for export in bm.list_exports(str(real_export)):
        files = bm.verify_export(export)
        assert sum(f.item_count for f in files) == export.item_count


@pytest.mark.parametrize(
    ("sub", "ids"),
    [
        ("", [FULL, INC1, INC2]),
        ("AWSDynamoDB", [FULL, INC1, INC2]),
        (f"AWSDynamoDB/{INC1}", [INC1]),
        (f"AWSDynamoDB/{INC1}/", [INC1]),
    ],
)
def test_any_level_of_location(real_export: Path, sub: str, ids: list[str]) -> None:
    location = str(real_export / sub) + ("/" if sub.endswith("/") else "")
    exports = bm.list_exports(location)
    assert [e.export_id for e in exports] == ids
    # Keys resolve from the bucket root even when the location is one export's folder.
    inc = next(e for e in exports if e.export_id == ids[-1])
    assert all(Path(f.path).is_file() for f in inc.data_files())


def test_prefixed_exports_found_at_every_level(tmp_path: Path) -> None:
    prefix = "exports/backfill/20250301T020000/"
    item = {
        "modelId": {"S": "session-sudoku-a"},
        "owner": {"S": "user-u"},
        "updatedAt": {"N": "1740787200"},
    }
    written = write_full_export(tmp_path, [item], export_time="2025-03-01T02:00:00Z", prefix=prefix, n_files=2)
    for location in (tmp_path, tmp_path / "exports", tmp_path / prefix, written.export_dir):
        (export,) = bm.list_exports(str(location))
        assert export.export_id == written.export_id
        assert [Path(f.path) for f in export.data_files()] == list(written.data_files)
        assert all(f.key.startswith(prefix + f"AWSDynamoDB/{written.export_id}/data/") for f in export.data_files())
        bm.verify_export(export)


# --- choosing the latest ------------------------------------------------------------------


def test_find_export_picks_the_latest_of_each_type(real_export: Path) -> None:
    assert bm.find_export(str(real_export), export_type="full").export_id == FULL
    assert bm.find_export(str(real_export), export_type="backfill").export_id == FULL
    assert bm.find_export(str(real_export), export_type="incremental").export_id == INC2
    assert bm.find_export(str(real_export), export_type="INCREMENTAL_EXPORT").export_id == INC2
    assert bm.find_export(str(real_export)).export_id == INC2


def test_find_export_rejects_unknown_type(real_export: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="export_type must be 'full' or 'incremental', got 'weekly'"):
        bm.find_export(str(real_export), export_type="weekly")


def test_latest_is_by_export_time_not_by_name(tmp_path: Path) -> None:
    # The earlier export is written under the later-sorting prefix.
    old = write_full_export(tmp_path, [], export_time="2025-03-01T02:00:00Z", prefix="z/", seed=1)
    new = write_full_export(tmp_path, [], export_time="2025-03-02T02:00:00Z", prefix="a/", seed=2)
    assert [e.export_id for e in bm.list_exports(str(tmp_path))] == [old.export_id, new.export_id]
    assert bm.find_export(str(tmp_path), export_type="full").export_id == new.export_id


def test_in_progress_export_is_listed_but_never_chosen(export_copy: Path) -> None:
    (export_copy / "AWSDynamoDB" / INC2 / "manifest-summary.json").unlink()
    # A newer export that has only started.
    started = export_copy / "AWSDynamoDB" / "01768399999999-0badf00d"
    started.mkdir()
    (started / "_started").write_bytes(b"")
    exports = {e.export_id: e for e in bm.list_exports(str(export_copy))}
    assert exports[INC2].status == "IN_PROGRESS"
    assert exports[INC2].export_type is None
    assert exports["01768399999999-0badf00d"].status == "IN_PROGRESS"
    assert [e.status for e in exports.values()].count("COMPLETED") == 2
    assert bm.find_export(str(export_copy), export_type="incremental").export_id == INC1
    assert bm.find_export(str(export_copy)).export_id == INC1
    with pytest.raises(ExportNotFoundError, match="has not completed"):
        exports[INC2].data_files()


def test_no_export_found(tmp_path: Path, export_copy: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportNotFoundError, match="No export found in the folder") as excinfo:
        bm.find_export(str(empty), export_type="full")
    assert str(empty) in str(excinfo.value)
    # Only in-progress full exports: still none found, and the message says why.
    (export_copy / "AWSDynamoDB" / FULL / "manifest-summary.json").unlink()
    with pytest.raises(ExportNotFoundError, match=r"No export found in the folder.*1 export\(s\) still in progress"):
        bm.find_export(str(export_copy), export_type="full")
    with pytest.raises(ExportNotFoundError, match="No export found in the folder"):
        bm.aggregate(str(export_copy), mode="backfill", now=dt.datetime(2026, 1, 15, tzinfo=UTC))


def test_ion_export_is_refused(export_copy: Path) -> None:
    edit_summary(export_copy, FULL, outputFormat="ION")
    (export,) = [e for e in bm.list_exports(str(export_copy)) if e.export_id == FULL]
    assert export.output_format == "ION"  # listing it is fine ...
    with pytest.raises(UnsupportedExportError, match="ION format; only DYNAMODB_JSON"):
        bm.find_export(str(export_copy), export_type="full")  # ... reading it is not
    with pytest.raises(UnsupportedExportError, match=FULL):
        export.data_files()
    with pytest.raises(UnsupportedExportError):
        bm.scan_export(export)


# --- verification -------------------------------------------------------------------------


def test_checksum_mismatch_names_the_file(export_copy: Path) -> None:
    key = f"AWSDynamoDB/{FULL}/data/5mrfg3b44e3vhnfickkozoym6a.json.gz"
    path = export_copy / key
    # Same lines, different compressed bytes: the checksum is over the gzip bytes.
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=1))
    (export,) = [e for e in bm.list_exports(str(export_copy)) if e.export_id == FULL]
    with pytest.raises(ExportIntegrityError, match=f"checksum mismatch for data file {key}"):
        bm.verify_export(export)


def test_missing_data_file_fails_verification(export_copy: Path) -> None:
    key = "AWSDynamoDB/data/vortt3w45u2w7glaexsiwnz4li.json.gz"  # an empty partition of INC1
    (export_copy / key).unlink()
    export = bm.find_export(str(export_copy / "AWSDynamoDB" / INC1))
    with pytest.raises(ExportIntegrityError, match=f"data file {key} listed in the manifest is missing"):
        bm.verify_export(export)


def test_item_count_mismatch_fails_verification(export_copy: Path) -> None:
    edit_summary(export_copy, INC2, itemCount=7)
    export = bm.find_export(str(export_copy), export_type="incremental")
    with pytest.raises(ExportIntegrityError, match=f"export {INC2}: manifest-files.json lists 5 items but"):
        bm.verify_export(export)


# --- locations and windows ----------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda p: str(p / "nope"), lambda p: "", lambda p: "   "])
def test_missing_location(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ExportLocationError):
        bm.list_exports(make(tmp_path))


def test_missing_location_message(tmp_path: Path) -> None:
    where = str(tmp_path / "nope")
    with pytest.raises(ExportLocationError, match="does not exist") as excinfo:
        bm.find_export(where, export_type="full")
    assert where in str(excinfo.value)


def test_missing_files_manifest(export_copy: Path) -> None:
    (export_copy / "AWSDynamoDB" / FULL / "manifest-files.json").unlink()
    export = bm.find_export(str(export_copy), export_type="full")
    with pytest.raises(ExportLocationError, match=f"manifest-files.json missing for export {FULL}"):
        export.data_files()


def test_incremental_window_must_cover_the_day(real_export: Path) -> None:
    # The real windows are 15 minutes long: they cover no whole day.
    with pytest.raises(ExportWindowError, match="covers 2026-01-14") as excinfo:
        bm.find_export(str(real_export), export_type="incremental", covering=dt.date(2026, 1, 14))
    # The windows within the day are named (and every window is on the error).
    assert len(excinfo.value.windows) == 2
    assert f"{INC1} 2026-01-14T10:20:00Z → 2026-01-14T10:35:00Z" in str(excinfo.value)
    assert f"{INC2} 2026-01-14T10:35:00Z → 2026-01-14T10:50:00Z" in str(excinfo.value)
    with pytest.raises(ExportWindowError, match="covers 2026-01-13"):
        bm.aggregate(str(real_export), mode="incremental", now=dt.datetime(2026, 1, 14, 11, tzinfo=UTC))


def test_window_covering_the_day_is_accepted(tmp_path: Path) -> None:
    written = write_incremental_export(
        tmp_path,
        [],
        export_from="2025-03-12T00:00:00Z",
        export_to="2025-03-13T00:00:00Z",
        n_files=1,
    )
    export = bm.find_export(str(tmp_path), export_type="incremental", covering=dt.date(2025, 3, 12))
    assert export.export_id == written.export_id
    assert export.covers_day(dt.date(2025, 3, 12))
    assert not export.covers_day(dt.date(2025, 3, 11))
    assert not export.covers_day(dt.date(2025, 3, 13))
    with pytest.raises(ExportWindowError, match="covers 2025-03-13"):
        bm.find_export(str(tmp_path), export_type="incremental", covering=dt.date(2025, 3, 13))
    result = bm.aggregate(str(tmp_path), mode="incremental", now=dt.datetime(2025, 3, 13, 2, 30, tzinfo=UTC))
    assert result.export.export_id == written.export_id
    assert result.metrics.height == 0


def test_a_full_export_holds_only_the_days_that_ended_before_it_was_taken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from bubbly_metrics.synthetic import generate_items

    items = generate_items(n_items=300, start="2025-03-10", days=5, seed=1)
    write_full_export(tmp_path, items, export_time="2025-03-15T02:00:00Z", n_files=1)
    export = bm.find_export(str(tmp_path), export_type="full")
    assert export.last_day == dt.date(2025, 3, 14)  # it ended at 03-15 00:00, before the export
    export.check_covers(dt.date(2025, 3, 14))
    with pytest.raises(ExportWindowError, match="no day after 2025-03-14"):
        export.check_covers(dt.date(2025, 3, 15))
    late = dt.datetime(2025, 3, 20, 2, 30, tzinfo=UTC)
    # Asked for days it does not hold: one clear error, never days of zeros (which publishing
    # would write over real numbers).
    with pytest.raises(ExportWindowError, match="end the range by 2025-03-14 or run a new full export"):
        bm.aggregate(str(tmp_path), mode="backfill", start="2025-03-10", end="2025-03-19", now=late)
    # Without an end ("yesterday"), as the Lambda runs it: the range stops at the export's last
    # day, with a warning, so a run past UTC midnight or a re-run next day still does the work.
    with caplog.at_level("WARNING", logger="bubbly_metrics"):
        result = bm.aggregate(export, mode="backfill", start="2025-03-10", now=late)
    assert str(result.date_range) == "2025-03-10 → 2025-03-14"
    assert result.metrics["date"].max() == dt.date(2025, 3, 14) and result.counts["counted"] > 0
    assert "backfill ends 2025-03-14, the last day full export" in caplog.text
    with pytest.raises(ExportWindowError):  # a start after the export's last day leaves nothing to do
        bm.aggregate(export, mode="backfill", start="2025-03-16", now=late)
    with pytest.raises(InvalidArgumentError, match="incremental mode reads INCREMENTAL exports; export .* is FULL"):
        bm.aggregate(export, mode="incremental", now=late)


@pytest.mark.parametrize(
    ("summary", "problem"),
    [
        ("{not json", "unreadable: Expecting property name"),
        ("[1, 2]", "holds a JSON list, not an object"),
        (None, "exportTime 'not-a-time' is not an ISO-8601 instant"),
        ({"itemCount": "lots"}, "itemCount 'lots' is not a count"),
    ],
)
def test_an_unreadable_summary_is_listed_and_skipped_never_fatal(
    export_copy: Path, summary: object, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from bubbly_metrics.cli import main

    path = export_copy / "AWSDynamoDB" / FULL / "manifest-summary.json"
    if summary is None:
        edit_summary(export_copy, FULL, exportTime="not-a-time")
    elif isinstance(summary, dict):
        edit_summary(export_copy, FULL, **summary)
    else:
        path.write_text(str(summary))
    listed = {e.export_id: e for e in bm.list_exports(str(export_copy))}
    assert listed[FULL].status == "UNREADABLE" and problem in (listed[FULL].problem or "")
    # The other exports are still found; the broken one is never chosen.
    assert bm.find_export(str(export_copy), export_type="incremental").export_id == INC2
    with pytest.raises(ExportNotFoundError, match=f"1 unreadable, e.g. {FULL}"):
        bm.find_export(str(export_copy), export_type="full")
    code = main(["exports", str(export_copy)])
    out, err = capsys.readouterr()
    assert code == 1 and f"{FULL}: manifest-summary.json is unreadable" in err and "UNREADABLE" in out


def test_a_files_manifest_that_disagrees_with_the_summary_is_reported(
    export_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (export_copy / "AWSDynamoDB" / FULL / "manifest-files.json").write_text("")
    with caplog.at_level("WARNING", logger="bubbly_metrics"):
        frame = bm.read_export(str(export_copy), export_type="full")
    assert frame.height == 0
    assert f"export {FULL}: manifest-files.json lists 0 items but manifest-summary.json says 3" in caplog.text
    with pytest.raises(ExportIntegrityError, match="lists 0 items but manifest-summary.json says 3"):
        bm.read_export(str(export_copy), export_type="full", verify=True)


# --- a bucket that changes under a long-lived process (moto's server) -----------------------


def _daily_incrementals(root: Path, days: list[dt.date]) -> dict[dt.date, str]:
    """One incremental export per day (24-hour window, as the Export Lambda writes them)."""
    from bubbly_metrics.synthetic import generate_incremental_records, generate_items

    ids = {}
    for n, day in enumerate(days):
        start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = start + dt.timedelta(days=1)
        items = generate_items(n_items=300, start=day, days=1, seed=100 + n, malformed_fraction=0.03)
        records = generate_incremental_records(items, seed=n, window_end_micros=int(end.timestamp() * 1e6))
        written = write_incremental_export(
            root,
            records,
            export_from=start,
            export_to=end,
            prefix=f"exports/incremental/{end:%Y%m%dT%H%M%SZ}/",
            n_files=2,
            seed=n,
        )
        ids[day] = written.export_id
    return ids


def test_rerunning_an_older_day_reads_the_export_that_holds_it(aws: str, tmp_path: Path) -> None:
    from tests import reference
    from tests.conftest import upload_tree
    from tests.test_differential import assert_matches_reference

    days = [dt.date(2025, 3, 10), dt.date(2025, 3, 11), dt.date(2025, 3, 12)]
    ids = _daily_incrementals(tmp_path, days)
    url = upload_tree(tmp_path, "exports-bucket", aws)
    now = dt.datetime(2025, 3, 13, 2, 30, tzinfo=UTC)  # the third export is the latest
    for day in days:
        result = bm.aggregate(url + "exports/", mode="incremental", date=day, now=now)
        assert result.export.export_id == ids[day]
        export_dir = next(tmp_path.rglob(f"AWSDynamoDB/{ids[day]}"))
        expected = reference.aggregate(export_dir, tmp_path, start=day, end=day, dense=False)
        assert result.metrics.height > 0
        assert_matches_reference(result, expected)
    with pytest.raises(ExportWindowError) as excinfo:
        bm.aggregate(url + "exports/", mode="incremental", date=dt.date(2025, 3, 9), now=now)
    message = str(excinfo.value)
    assert "covers 2025-03-09" in message and f"{ids[days[0]]} " in message  # the nearest window
    for day in days:  # every window that is there is on the error
        assert any(w.startswith(f"{ids[day]} {day.isoformat()}T00:00:00Z → ") for w in excinfo.value.windows)


def test_a_long_lived_process_sees_an_export_complete(aws: str, tmp_path: Path) -> None:
    """List while in progress, let the summary land, list and aggregate again in one process."""
    import boto3

    from tests.conftest import upload_tree

    day = dt.date(2025, 3, 12)
    export_id = _daily_incrementals(tmp_path, [day])[day]
    summary = next(tmp_path.rglob(f"{export_id}/manifest-summary.json"))
    summary_bytes = summary.read_bytes()
    summary.unlink()  # AWS writes the summary last: until then the export is in progress
    url = upload_tree(tmp_path, "exports-bucket", aws)
    now = dt.datetime(2025, 3, 13, 2, 30, tzinfo=UTC)

    (listed,) = bm.list_exports(url)
    assert (listed.export_id, listed.status) == (export_id, "IN_PROGRESS")
    with pytest.raises(ExportNotFoundError, match="1 export"):
        bm.aggregate(url, mode="incremental", now=now)

    key = summary.relative_to(tmp_path).as_posix()
    boto3.client("s3").put_object(Bucket="exports-bucket", Key=key, Body=summary_bytes)

    (listed,) = bm.list_exports(url)
    assert (listed.export_id, listed.status) == (export_id, "COMPLETED")
    result = bm.aggregate(url, mode="incremental", now=now)
    assert result.export.export_id == export_id
    assert result.items_read == 300
    assert bm.verify_export(result.export)  # its data files are read, not refused from a cached listing
