"""The Polars pipeline against the pure-Python reference (tests/reference.py) on generated exports.

Hypothesis generates main-table items — valid sessions, parties and members, noise kinds,
malformed records of every kind, timestamps in every accepted and rejected spelling, apps
that differ only in case, ids with ``-`` and ``_`` — writes them as real-layout exports
(optionally with broken lines, wrong-shape lines and a missing data file), and checks that
:func:`bubbly_metrics.aggregate` agrees with the reference on metrics, per-user breakdowns,
malformed counts (per reason and per file) and record outcomes, in both modes.
"""

from __future__ import annotations

import datetime as dt
import gzip
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import bubbly_metrics as bm
from bubbly_metrics.metrics import METRICS_SCHEMA
from bubbly_metrics.synthetic import (
    WrittenExport,
    generate_incremental_records,
    generate_items,
    write_full_export,
    write_incremental_export,
)
from tests import reference

NOW = dt.datetime(2025, 3, 13, 2, 30, tzinfo=dt.UTC)
START = dt.date(2025, 3, 8)
END = dt.date(2025, 3, 12)  # yesterday of NOW
DAY = 86_400
T_START = int(dt.datetime(2025, 3, 8, tzinfo=dt.UTC).timestamp())
T_END = int(dt.datetime(2025, 3, 13, tzinfo=dt.UTC).timestamp())  # exclusive
WINDOW_FROM = dt.datetime(2025, 3, 12, tzinfo=dt.UTC)
WINDOW_TO = dt.datetime(2025, 3, 13, tzinfo=dt.UTC)

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

# --- strategies ---------------------------------------------------------------------------

# Non-ASCII names too: string offsets in bytes and in characters disagree on them.
APPS = st.sampled_from(["sudoku", "Sudoku", "SUDOKU", "chess", "word_search", "数独", "é"])
USERS = st.sampled_from(["u1", "U1", "a-b", "a_b", "x-y-z", "Nano_id-42", "0", "ü-ß", "😀"])
IDS = st.text(alphabet="abcXYZ019-_é日", min_size=0, max_size=8)

# Seconds near the range, with its day boundaries (±1 s) drawn on purpose.
SECONDS = st.one_of(
    st.integers(T_START - 2 * DAY, T_END + 2 * DAY),
    st.sampled_from([T_START - 1, T_START, T_END - DAY - 1, T_END - DAY, T_END - 1, T_END]),
)

# Every test here runs on each route: the compiled decoder counting plain records in C++, the
# compiled decoder leaving every record to Polars, and msgspec alone.
pytestmark = pytest.mark.usefixtures("each_route")


def _n(value: str) -> dict[str, str]:
    return {"N": value}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


@st.composite
def iso_instants(draw: st.DrawFn) -> dict[str, str]:
    """A valid ISO-8601 S timestamp: any fraction (0-9 digits), 'Z' or a ±HH:MM offset."""
    ts = draw(SECONDS)
    offset = draw(st.sampled_from([None, 0, 330, -480, 840, -720, 45, -59]))
    digits = draw(st.text(alphabet="0123456789", min_size=0, max_size=9))
    local = reference.EPOCH + dt.timedelta(seconds=ts + (offset or 0) * 60)
    if offset is None:
        zone = "Z"
    else:
        sign = "+" if offset >= 0 else "-"
        zone = f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    return _s(local.strftime("%Y-%m-%dT%H:%M:%S") + ("." + digits if digits else "") + zone)


TIMESTAMPS = st.one_of(
    SECONDS.map(lambda s: _n(str(s))),
    st.tuples(SECONDS, st.text(alphabet="0123456789", min_size=1, max_size=6)).map(lambda t: _n(f"{t[0]}.{t[1]}")),
    SECONDS.map(lambda s: _n(str(s * 1000))),  # milliseconds by mistake: out of range
    st.sampled_from(
        [
            "-1.5",
            "-0.000001",
            "0",
            "9" * 25,
            "-" + "9" * 20,
            "253402300799",  # 9999-12-31T23:59:59Z, the last second with a date
            "253402300800",
            "-62135596800",  # 0001-01-01
            "-62135596801",
            "1E+3",
            "1.7416E9",
        ]
    ).map(_n),
    st.sampled_from(["", "abc", "1.2.3", "12abc", "--1", "1741600000x"]).map(_n),  # unparsable N
    iso_instants(),
    st.sampled_from(
        [
            "yesterday",
            "",
            "2025-03-10",
            "2025-03-10 10:00:00Z",
            "2025-03-10T10:00:00",
            "2025-03-10T10:00:00z",
            "2025-03-10T10:00Z",
            "2025-03-10T10:00:00+0100",
            "2025-03-10T10:00:00.1234567890Z",
            "2025-02-30T10:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-03-10T24:00:00Z",
            "1741600000",
        ]
    ).map(_s),
    st.sampled_from(
        [
            {"B": "MTIz"},
            {"NULL": True},
            {"BOOL": False},
            {"M": {"N": {"N": "1741600000"}}},
            {"L": [{"N": "1741600000"}]},
            {"NS": ["1741600000"]},
            {"SS": ["2025-03-10T10:00:00Z"]},
        ]
    ),
)

# A payload that nests attributes named like the top-level ones: a reader must not see them.
NESTED_PAYLOAD = {
    "M": {
        "updatedAt": _n("1741600000"),
        "createdAt": _s("2025-03-10T10:00:00Z"),
        "owner": _s("user-nested"),
        "modelId": _s("session-nested-x"),
    }
}


@st.composite
def items(draw: st.DrawFn) -> dict[str, Any]:
    """One main-table item: a valid or malformed session/party/member, or a noise kind."""
    kind = draw(st.sampled_from(["session", "session", "party", "member", "noise"]))
    app, item_id, user = draw(APPS), draw(IDS), draw(USERS)
    model_id: Any
    owner: Any
    if kind == "member":
        model_id, owner = f"member-user-{user}", f"party-{app}-{item_id}"
    elif kind == "noise":
        model_id = draw(
            st.sampled_from(
                [
                    f"user-{user}",
                    f"invite-{app}-{item_id}",
                    f"sudoku-{item_id}",
                    f"sudoku-book-{item_id}",
                    f"Session-{app}-{item_id}",
                    f"sessions-{app}-{item_id}",
                    f"partyx-{app}-{item_id}",
                    "",
                    f"members-user-{user}",
                ]
            )
        )
        owner = f"user-{user}"
    else:
        model_id, owner = f"{kind}-{app}-{item_id}", f"user-{user}"
    if draw(st.integers(0, 5)) == 0:  # a malformed or untyped model id
        if kind == "member":
            choices = ["member-user-", "member-user", f"member-{user}", "member-"]
        else:
            choices = [f"{kind}-{app}", f"{kind}--{item_id}", kind, f"{kind}-"]
        model_id = draw(st.sampled_from([*choices, None, {"N": "5"}]))
    if draw(st.integers(0, 5)) == 0:  # a malformed or untyped owner
        if kind == "member":
            # Owners that are not party keys, three segments or not: the old rule read an app
            # out of "user-<uuid>" and "Party-...", inventing apps.
            choices = [
                f"party-{app}",
                f"party--{item_id}",
                "party",
                "party-x",
                "",
                f"user-{user}",
                f"user-{app}-{item_id}",
                f"Party-{app}-{item_id}",
                f"{app}-{app}-{item_id}",
            ]
        else:
            choices = [f"User-{user}", "user-", user, "", f"party-{app}-{item_id}"]
        owner = draw(st.sampled_from([*choices, None, {"N": "7"}]))
    item: dict[str, Any] = {}
    for name, value in (("modelId", model_id), ("owner", owner)):
        if isinstance(value, str):
            item[name] = _s(value)
        elif value is not None:
            item[name] = value
    for name in ("createdAt", "updatedAt"):
        if draw(st.integers(0, 7)) != 0:  # else: missing
            item[name] = draw(TIMESTAMPS)
    if draw(st.booleans()):
        item["expiresAt"] = draw(st.sampled_from([_n("1750000000"), _n("1750000000.5"), _s("never")]))
    if draw(st.booleans()):
        item["payload"] = NESTED_PAYLOAD
    # Attribute order in real exports is not stable.
    return dict(draw(st.permutations(list(item.items()))))


BROKEN_LINES = st.sampled_from(
    [
        b'{"Item": {"modelId": {"S": "session-sudoku-x',
        b"not json at all",
        b'{"Item": }',
        b"}",
        b'{"NewImage": {"owner": {"S": "user-u1"},',
    ]
)
WRONG_SHAPE_LINES = st.sampled_from(
    [
        b'{"Item": 5}',
        b'{"NewImage": 5}',
        b"[1, 2]",
        b'"a string"',
        b'{"Item": {"modelId": "session-sudoku-x"}, "NewImage": {"modelId": "session-sudoku-x"}}',
        b'{"Item": {"updatedAt": {"N": 1741600000}}, "NewImage": {"updatedAt": {"N": 1741600000}}}',
    ]
)


@st.composite
def damage(draw: st.DrawFn) -> dict[str, Any]:
    """Lines to insert into data files, and whether to delete the first data file."""
    lines = draw(
        st.lists(
            st.tuples(st.integers(0, 2), st.integers(0, 60), st.one_of(BROKEN_LINES, WRONG_SHAPE_LINES)),
            max_size=3,
        )
    )
    return {"lines": lines, "missing_first_file": draw(st.integers(0, 9)) == 0}


# --- helpers ------------------------------------------------------------------------------


@contextmanager
def bucket() -> Iterator[Path]:
    # A fresh bucket root per example (hypothesis cannot reuse a function-scoped tmp_path).
    with tempfile.TemporaryDirectory(prefix="bubbly-diff-") as tmp:
        yield Path(tmp)


def apply_damage(written: WrittenExport, spec: dict[str, Any]) -> None:
    files = written.data_files
    for index, position, line in spec["lines"]:
        path = files[index % len(files)]
        lines = gzip.decompress(path.read_bytes()).split(b"\n")[:-1]
        lines.insert(position % (len(lines) + 1), line)
        path.write_bytes(gzip.compress(b"".join(x + b"\n" for x in lines), mtime=0))
    if spec["missing_first_file"]:
        files[0].unlink()


def incremental_records(pairs: list[tuple[dict[str, Any], str]]) -> list[dict[str, Any]]:
    """Inserts (Keys + NewImage), updates (+ OldImage), deletes (Keys + OldImage only)."""
    micros = int(WINDOW_TO.timestamp() * 1e6) - 1
    # An old image that would count on the target day if anything read it by mistake.
    ghost = {
        "modelId": _s("session-ghostapp-old"),
        "owner": _s("user-ghost"),
        "createdAt": _n(str(T_END - DAY + 60)),
        "updatedAt": _n(str(T_END - DAY + 60)),
    }
    records = []
    for item, op in pairs:
        record: dict[str, Any] = {
            "Metadata": {"WriteTimestampMicros": _n(str(micros))},
            "Keys": {k: item[k] for k in ("modelId", "owner") if k in item},
        }
        if op == "delete":
            record["OldImage"] = item
        else:
            if op == "update":
                record["OldImage"] = ghost
            record["NewImage"] = item
        records.append(record)
    return records


def metrics_frame(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=METRICS_SCHEMA, orient="row")


def per_user_frame(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "date": pl.Date,
            "app": pl.String,
            "user_id": pl.String,
            "games": pl.Int64,
            "parties_created": pl.Int64,
            "parties_joined": pl.Int64,
        },
        orient="row",
    )


def assert_matches_reference(result: bm.AggregateResult, expected: reference.Reference) -> None:
    assert_frame_equal(result.metrics, metrics_frame(expected.metrics))
    assert_frame_equal(result.per_user, per_user_frame(expected.per_user))
    by_file = result.malformed(by_file=True)
    assert {(r, f): n for r, f, n in by_file.select("reason", "file", "records").iter_rows()} == dict(
        expected.malformed_by_file
    )
    assert dict(result.malformed().select("reason", "records").iter_rows()) == dict(expected.malformed)
    assert result.counts == expected.counts
    assert result.items_read == sum(expected.counts.values())
    # Each example is the keys (never the payload) of one malformed record of that reason.
    for row in by_file.iter_rows(named=True):
        example = (row["example_model_id"], row["example_owner"])
        assert example in expected.examples[row["reason"]], (row["reason"], example)


def backfill_and_compare(root: Path, written: WrittenExport) -> bm.AggregateResult:
    result = bm.aggregate(str(root), mode="backfill", start=START, now=NOW)
    assert result.date_range == bm.DateRange(START, END)
    assert result.export.export_id == written.export_id
    expected = reference.aggregate(written.export_dir, root, start=START, end=END, dense=True)
    assert_matches_reference(result, expected)
    return result


def incremental_and_compare(root: Path, written: WrittenExport) -> bm.AggregateResult:
    result = bm.aggregate(str(root), mode="incremental", now=NOW)
    assert result.date_range == bm.DateRange(END, END)
    assert result.export.export_id == written.export_id
    expected = reference.aggregate(written.export_dir, root, start=END, end=END, dense=False)
    assert_matches_reference(result, expected)
    return result


# --- the reference itself (it must be right before it can judge) --------------------------


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        (_n("1741600000"), 1741600000),
        (_n("1741600000.999"), 1741600000),
        (_n("-1.5"), -2),
        (_n("1E+3"), 1000),
        (_s("2025-03-10T10:00:00Z"), 1741600800),
        (_s("2025-03-10T10:00:00.999999999Z"), 1741600800),
        (_s("2025-03-10T11:30:00+01:30"), 1741600800),
        (_s("2025-03-10T10:00:00"), None),
        (_s("2025-02-30T10:00:00Z"), None),
        (_n("abc"), None),
        ({"NULL": True}, None),
    ],
)
def test_reference_epoch_seconds(attribute: dict[str, Any], expected: int | None) -> None:
    assert reference.epoch_seconds(attribute) == expected


def test_reference_classifies_the_spec_table() -> None:
    def c(model_id: str, owner: str, **ts: dict[str, str]) -> tuple[Any, ...]:
        r = reference.classify({"modelId": _s(model_id), "owner": _s(owner), **ts}, "f")
        return (r.kind, r.app, r.user, r.date, r.reason)

    at = {"createdAt": _n("1741600000"), "updatedAt": _n("1741564800")}
    assert c("session-sudoku-a-b_c", "user-u-1", **at) == (
        "session",
        "sudoku",
        "u-1",
        dt.date(2025, 3, 10),
        None,
    )
    assert c("party-Sudoku-p", "user-u", **at) == (
        "party",
        "Sudoku",
        "u",
        dt.date(2025, 3, 10),
        None,
    )
    assert c("member-user-u_2", "party-chess-p-1", **at) == (
        "member",
        "chess",
        "u_2",
        dt.date(2025, 3, 10),
        None,
    )
    assert c("invite-sudoku-x", "user-u", **at)[4] is None
    assert c("session-sudoku", "user-u", **at)[4] == "bad_model_id"
    assert c("session-sudoku-x", "User-u", **at)[4] == "bad_owner"
    assert c("member-user-u", "party-chess", **at)[4] == "bad_owner"
    assert c("member-user-u", "user-17ba4276-56a9-4bd2", **at)[4] == "bad_owner"
    assert c("member-user-u", "Party-chess-p", **at)[4] == "bad_owner"
    assert c("member-user-u", "p1-chess-x", **at)[4] == "bad_owner"
    assert c("session-sudoku-x", "user-u")[4] == "missing_timestamp"
    assert c("session-sudoku-x", "user-u", updatedAt=_n(str(1741600000 * 1000)))[3:] == (None, None)


# --- properties ---------------------------------------------------------------------------


@SETTINGS
@given(items=st.lists(items(), max_size=40), n_files=st.integers(1, 3), spec=damage())
def test_backfill_matches_reference(items: list[dict[str, Any]], n_files: int, spec: dict[str, Any]) -> None:
    with bucket() as root:
        written = write_full_export(root, items, export_time=NOW - dt.timedelta(minutes=30), n_files=n_files)
        apply_damage(written, spec)
        result = backfill_and_compare(root, written)
        # Dense: every day of the range for every app that had any activity in it.
        assert result.metrics.height == 5 * result.metrics["app"].n_unique()


@SETTINGS
@given(
    pairs=st.lists(st.tuples(items(), st.sampled_from(["insert", "update", "delete"])), max_size=40),
    n_files=st.integers(1, 3),
    spec=damage(),
)
def test_incremental_matches_reference(
    pairs: list[tuple[dict[str, Any], str]], n_files: int, spec: dict[str, Any]
) -> None:
    with bucket() as root:
        written = write_incremental_export(
            root,
            incremental_records(pairs),
            export_from=WINDOW_FROM,
            export_to=WINDOW_TO,
            n_files=n_files,
        )
        apply_damage(written, spec)
        result = incremental_and_compare(root, written)
        assert "ghostapp" not in result.metrics["app"].to_list()
        assert (result.metrics["date"] == END).all()


def _merge(results: list[bm.AggregateResult]) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Merge per-partition results: per-user rows add up; metrics follow from them."""
    per_user = (
        pl.concat([r.per_user for r in results])
        .group_by("date", "app", "user_id")
        .agg(pl.col("games", "parties_created", "parties_joined").sum())
        .sort("date", "app", "user_id")
    )
    additive = (
        pl.concat([r.metrics for r in results])
        .group_by("date", "app")
        .agg(pl.col("games_played", "parties_created", "parties_joined").sum())
    )
    active = per_user.group_by("date", "app").agg((pl.col("games") > 0).sum().cast(pl.Int64).alias("active_users"))
    metrics = (
        additive.join(active, on=["date", "app"], how="left")
        .with_columns(pl.col("active_users").fill_null(0))
        .select("date", "app", "active_users", "games_played", "parties_created", "parties_joined")
        .sort("date", "app")
    )
    malformed: dict[str, int] = {}
    for r in results:
        for reason, n in r.malformed().select("reason", "records").iter_rows():
            malformed[reason] = malformed.get(reason, 0) + n
    return metrics, per_user, malformed


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(items=st.lists(items(), max_size=40), cuts=st.lists(st.integers(0, 40), max_size=3))
def test_partitions_merged_equal_all(items: list[dict[str, Any]], cuts: list[int]) -> None:
    bounds = [0, *sorted(c % (len(items) + 1) for c in cuts), len(items)]
    parts = [items[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    when = NOW - dt.timedelta(minutes=30)
    with bucket() as root:
        write_full_export(root / "one", items, export_time=when, n_files=1)
        write_full_export(root / "spread", items, export_time=when, n_files=5)
        for i, part in enumerate(parts):
            write_full_export(root / f"part{i}", part, export_time=when, n_files=1)

        def run(name: str) -> bm.AggregateResult:
            return bm.aggregate(str(root / name), mode="backfill", start=START, now=NOW)

        whole, spread = run("one"), run("spread")
        assert_frame_equal(whole.metrics, spread.metrics)
        assert_frame_equal(whole.per_user, spread.per_user)
        assert_frame_equal(
            whole.malformed().select("reason", "records"),
            spread.malformed().select("reason", "records"),
        )
        assert whole.counts == spread.counts

        metrics, per_user, malformed = _merge([run(f"part{i}") for i in range(len(parts))])
        assert_frame_equal(whole.metrics, metrics)
        assert_frame_equal(whole.per_user, per_user)
        assert dict(whole.malformed().select("reason", "records").iter_rows()) == malformed


# --- realistic exports --------------------------------------------------------------------


def test_generated_export_matches_reference_both_modes(tmp_path: Path) -> None:
    full = write_full_export(
        tmp_path,
        generate_items(n_items=3000, start=START, days=5, seed=11, malformed_fraction=0.05, iso_fraction=0.05),
        export_time=NOW - dt.timedelta(minutes=30),
        n_files=3,
    )
    result = backfill_and_compare(tmp_path, full)
    assert result.counts["counted"] > 1500
    assert set(result.malformed()["reason"]) == {
        "bad_model_id",
        "bad_owner",
        "bad_timestamp",
        "missing_timestamp",
    }
    day_items = generate_items(n_items=800, start=END, days=1, seed=12, malformed_fraction=0.05)
    records = generate_incremental_records(day_items, seed=3, window_end_micros=int(WINDOW_TO.timestamp() * 1e6))
    inc = write_incremental_export(tmp_path, records, export_from=WINDOW_FROM, export_to=WINDOW_TO, n_files=2)
    incremental_and_compare(tmp_path, inc)


def test_shipped_sample_matches_reference() -> None:
    root = Path(bm.sample_export_location())
    exports = {e.export_type: e for e in bm.list_exports(str(root))}
    cases: tuple[tuple[str, Literal["FULL", "INCREMENTAL"], bool], ...] = (
        ("backfill", "FULL", True),
        ("incremental", "INCREMENTAL", False),
    )
    for mode, export_type, dense in cases:
        result = bm.aggregate(str(root), mode=mode, now=bm.SAMPLE_NOW)
        start, end = result.date_range.start, result.date_range.end
        expected = reference.aggregate(Path(exports[export_type].path), root, start=start, end=end, dense=dense)
        assert_matches_reference(result, expected)
