"""The compiled simdjson decoder (``bubbly_metrics._fastscan``) against the msgspec reference path.

The contract (``_decoder.FAST.decode``): on a block it takes, it gives exactly the columns, line
numbers and delete count msgspec gives, and msgspec finds nothing to report in that block; any
other block it declines (None), and msgspec decides.  Hypothesis draws plain records (which it
must take) and every kind of odd line (which it must decline or agree on).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from bubbly_metrics import _decode, _decoder, scan
from bubbly_metrics._rows import ScanOptions

pytestmark = pytest.mark.skipif(
    _decoder.FAST is None and os.environ.get("BUBBLY_METRICS_DECODER") == "msgspec",
    reason="BUBBLY_METRICS_DECODER=msgspec turns the compiled decoder off",
)

ALL = (1 << 7) - 1  # every column

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_install_built_the_compiled_decoder() -> None:
    # setup.py builds it on install when a C++ compiler is there (CI has one); without it the
    # package still works (msgspec), but this suite would not be testing the fast path.
    assert _decoder.FAST is not None, "bubbly_metrics._fastscan is not built: pip install -e . needs g++"
    assert scan.decoder() == "simdjson"


# --- strategies ---------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
DIGITS = st.from_regex(r"-?[0-9]{1,12}(\.[0-9]{1,3})?", fullmatch=True)
OTHER_TYPES = st.sampled_from([{"BOOL": True}, {"NULL": True}, {"M": {"a": {"S": "x"}}}, {"L": []}, {"SS": ["a"]}, {}])


# A DynamoDB attribute value as msgspec's ``_Value`` takes it: S/N strings or null, other types.
VALUE: st.SearchStrategy[Any] = st.one_of(
    TEXT.map(lambda s: {"S": s}),
    DIGITS.map(lambda n: {"N": n}),
    st.just({"S": None}),
    st.just({"N": None}),
    st.tuples(TEXT, DIGITS).map(lambda p: {"S": p[0], "N": p[1]}),
    OTHER_TYPES,
    TEXT.map(lambda s: {"S": s, "X": 1}),
)


PLAIN_IMAGE = st.fixed_dictionaries(
    {},
    optional={
        "modelId": st.one_of(
            st.sampled_from(["session-sudoku-1", "party-chess-2", "member-user-u1", "other"]).map(lambda s: {"S": s}),
            VALUE,
        ),
        "owner": st.one_of(st.sampled_from(["user-u1", "party-sudoku-9", "system"]).map(lambda s: {"S": s}), VALUE),
        "createdAt": VALUE,
        "updatedAt": VALUE,
        "expiresAt": VALUE,
        "payload": st.recursive(
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(-(2**53), 2**53),
                st.floats(allow_nan=False, allow_infinity=False),
                TEXT,
            ),
            lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
            max_leaves=8,
        ),
        "other": TEXT,
    },
)


@st.composite
def plain_lines(draw: st.DrawFn, incremental: bool) -> bytes:
    """A well-formed record line (or, incremental, a delete), as AWS or a user might spell it."""
    image = draw(PLAIN_IMAGE)
    record: dict[str, Any]
    if incremental:
        keys = {"modelId": {"S": "session-sudoku-1"}}
        record = draw(
            st.sampled_from(
                [
                    {"Keys": keys, "NewImage": image},
                    {"Keys": keys},
                    {"Keys": keys, "NewImage": None},
                    {"NewImage": image},
                ]
            )
        )
        if draw(st.booleans()):
            record = {**record, "OldImage": image}
    else:
        record = {"Item": image}
    text = json.dumps(
        record, ensure_ascii=draw(st.booleans()), separators=draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    )
    return text.encode() + draw(st.sampled_from([b"", b" ", b"\r", b"\t "]))


ODD_LINES = st.one_of(
    st.sampled_from(
        [
            b"",
            b"   ",
            b' {"Item":{}}',
            b'\xef\xbb\xbf{"Item":{}}',
            b'{"Item":{}} {"Item":{}}',
            b'{"Item":{}}}',
            b'{"Item":{"modelId":{"S":"a"}},"Item":{"modelId":{"S":"b"}}}',
            b'{"Item":{"modelId":{"S":"a"},"modelId":{"S":"b"}}}',
            b'{"Item":{"modelId":{"S":"a","S":"b"}}}',
            b'{"Item":{"owner":{"S":"u","present":false}}}',
            b'{"Item":{"modelId":null}}',
            b'{"Item":{"modelId":"session-x-1"}}',
            b'{"Item":{"createdAt":{"N":1739700000}}}',
            b'{"Item":{"createdAt":{"S":5}}}',
            b'{"Item":null}',
            b'{"Item":5}',
            b'{"Item":[]}',
            b'{"NewImage":5,"Item":{}}',
            b'{"Keys":{}}',
            b"{}",
            b"[]",
            b"5",
            b'"Item"',
            b'{"Item":{"payload":1e400}}',
            b'{"Item":{"payload":123456789012345678901234567890}}',
            b'{"Item":{"payload":tru}}',
            b'{"Item":{"payload":01}}',
            b'{"Item":{"payload":[1,]}}',
            b'{"Item":{"owner":{"S":"\\ud800"}}}',
            b'{"Item":{"owner":{"S":"\\udc00x"}}}',
            b'{"Item":{"owner":{"S":"a\tb"}}}',
            b'{"Item":{"owner":{"S":"\xff"}}}',
            b'{"Item":{"owner":{"S":"\\x41"}}}',
            b'{"Item":{"ow\\u006eer":{"S":"user-u1"}}}',
            b'{"Item":{"modelId":{"\\u0053":"session-a-1"}}}',
            b'{"Item":{}',
            b'{"Item":{"modelId":{"S":"session-a-1"}}} \x00',
        ]
    ),
    # Any prefix of a good line: what a cut-off write leaves.
    st.tuples(plain_lines(False), st.integers(0, 400)).map(lambda p: p[0][: p[1]]),
)


def _reference(block: bytes, incremental: bool) -> tuple[pl.DataFrame, dict[str, list[int]], int, int]:
    return _decode.decode_block(memoryview(block), 7, ScanOptions(incremental=incremental))


def _fast(block: bytes, incremental: bool) -> tuple[pl.DataFrame, int, int] | None:
    got = _decoder.FAST.decode([block], 7, incremental, False, ALL)
    if got is None:
        return None
    decoded, lines, deletes, rest = got
    assert rest == b""
    return pl.DataFrame(decoded), lines, deletes


def _assert_agree(block: bytes, incremental: bool) -> bool:
    """True when the compiled decoder took the block (and agreed with msgspec on it)."""
    fast = _fast(block, incremental)
    if fast is None:
        return False
    frame, lines, deletes = fast
    ref_frame, ref_errors, ref_lines, ref_deletes = _reference(block, incremental)
    assert ref_errors == {}, "the compiled decoder took a block msgspec reports lines of"
    assert (lines, deletes) == (ref_lines, ref_deletes)
    assert_frame_equal(frame, ref_frame.select(frame.columns))
    return True


# --- tests ----------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data(), incremental=st.booleans(), newline=st.booleans())
def test_plain_blocks_are_taken_and_equal_msgspec(data: st.DataObject, incremental: bool, newline: bool) -> None:
    lines = data.draw(st.lists(plain_lines(incremental), min_size=1, max_size=10))
    block = b"\n".join(lines) + (b"\n" if newline else b"")
    assert _assert_agree(block, incremental), block


@SETTINGS
@given(data=st.data(), incremental=st.booleans())
def test_any_block_is_declined_or_equal_to_msgspec(data: st.DataObject, incremental: bool) -> None:
    lines = data.draw(st.lists(st.one_of(plain_lines(incremental), ODD_LINES), min_size=1, max_size=8))
    _assert_agree(b"\n".join(lines) + b"\n", incremental)


@pytest.mark.parametrize(
    "line",
    [
        b'{"Item":{"payload":tru},"x":1}',  # invalid JSON inside the skipped payload
        b'{"Item":{"modelId":{"S":"a"},"modelId":{"S":"b"}}}',  # which one wins is msgspec's call
        b'{"Item":{"owner":{"S":"\xff"}}}',  # invalid UTF-8
        b'\xef\xbb\xbf{"Item":{}}',  # a BOM simdjson would skip
        b'{"Item":{}} {"Item":{}}',  # two documents on a line
        b"",  # a blank line
        b'{"Item":{"createdAt":{"N":1739700000}}}',  # N as a JSON number: the wrong shape
    ],
)
def test_odd_lines_are_left_to_msgspec(line: bytes) -> None:
    block = b'{"Item":{"modelId":{"S":"session-sudoku-1"}}}\n' + line + b"\n"
    assert _fast(block, False) is None


def test_pieces_are_cut_at_the_last_newline() -> None:
    lines = [
        json.dumps({"Item": {"modelId": {"S": f"session-app-{i}"}, "payload": {"S": "x" * i}}}).encode()
        for i in range(50)
    ]
    data = b"\n".join(lines) + b"\n" + lines[0][:17]
    pieces = [data[i : i + 97] for i in range(0, len(data), 97)]
    decoded, n, deletes, rest = _decoder.FAST.decode(pieces, 1, False, True, ALL)
    assert (n, deletes, rest) == (50, 0, lines[0][:17])
    frame = pl.DataFrame(decoded)
    assert frame["line"].to_list() == list(range(1, 51))
    assert frame["model_id"].to_list() == [f"session-app-{i}" for i in range(50)]
    # No newline yet: nothing is decoded and the pieces are kept as they are.
    assert _decoder.FAST.decode([b'{"Item":', b"{}"], 1, False, True, ALL) == (None, 0, 0, None)
    # At the end of the file the last line needs no newline.
    decoded, n, _, rest = _decoder.FAST.decode([b'{"Item":{}}\n{"Item":', b"{}}"], 1, False, False, ALL)
    assert (n, rest, len(decoded)) == (2, b"", 2)


def test_a_long_line_and_an_exported_block_is_spent() -> None:
    big = json.dumps({"Item": {"owner": {"S": "user-u1"}, "payload": {"S": "é" * 300_000}}}).encode()
    decoded, n, _, _ = _decoder.FAST.decode([big + b"\n" + big + b"\n"], 1, False, True, ALL)
    assert (n, len(decoded)) == (2, 2)
    assert pl.DataFrame(decoded)["owner"].to_list() == ["user-u1", "user-u1"]
    assert len(decoded) == 0
    with pytest.raises(ValueError, match="already exported"):
        decoded.__arrow_c_array__()


@SETTINGS
@given(data=st.data(), incremental=st.booleans(), complete=st.booleans())
def test_any_split_into_pieces_decodes_as_the_whole_block(
    data: st.DataObject, incremental: bool, complete: bool
) -> None:
    """Lines are parsed in place in their piece, or copied when they cross pieces or end near a
    piece's end: wherever the pieces are cut (inside a line, at its newline, in the last bytes
    simdjson reads past a line), the result is the whole block's."""
    lines = data.draw(st.lists(plain_lines(incremental), min_size=1, max_size=8))
    tail = data.draw(st.sampled_from([b"", b'{"Item":{"owner"', b"{"]))
    block = b"\n".join(lines) + b"\n" + tail
    cuts = sorted(data.draw(st.lists(st.integers(0, len(block)), max_size=6)))
    pieces = [block[a:b] for a, b in zip([0, *cuts], [*cuts, len(block)], strict=True)]
    whole = _decoder.FAST.decode([block], 3, incremental, complete, ALL)
    split = _decoder.FAST.decode(pieces, 3, incremental, complete, ALL)
    if whole is None or (not complete and tail):  # declined (an unfinished last line), either way
        assert split is None
        return
    assert split is not None
    assert split[1:] == whole[1:]
    assert_frame_equal(pl.DataFrame(split[0]), pl.DataFrame(whole[0]))


def test_a_detached_frame_keeps_no_block_alive() -> None:
    """A few strings taken from a block keep all of it; :func:`detached` copies them out."""
    import gc

    from bubbly_metrics._rows import detached

    lines = (
        json.dumps({"Item": {"modelId": {"S": f"session-sudoku-{i:020d}"}, "owner": {"S": f"user-u{i:020d}"}}})
        for i in range(1000)
    )
    block = ("\n".join(lines) + "\n").encode()
    gc.collect()
    before = _decoder.FAST.live_exports()
    records = pl.DataFrame(_decoder.FAST.decode([block], 1, False, False, ALL)[0])
    kept, copied = (
        records[[3, 500]].select("model_id", "owner"),
        detached(records[[3, 500]].select("model_id", "owner")),
    )
    del records
    gc.collect()
    # ``kept`` views the block's strings (Polars gathers string views without compacting them;
    # a Polars that compacted would make this +0, and ``detached`` a plain copy).
    assert _decoder.FAST.live_exports() == before + 1
    del kept
    gc.collect()
    assert _decoder.FAST.live_exports() == before
    assert copied.rows() == [
        ("session-sudoku-" + "3".zfill(20), "user-u" + "3".zfill(20)),
        ("session-sudoku-" + "500".zfill(20), "user-u" + "500".zfill(20)),
    ]


def test_incremental_deletes_and_records_keep_their_line_numbers() -> None:
    block = b"\n".join(
        [
            b'{"Keys":{"modelId":{"S":"a"}}}',
            b'{"Keys":{"modelId":{"S":"b"}},"NewImage":{"modelId":{"S":"session-x-1"}}}',
            b'{"Keys":{"modelId":{"S":"c"}},"NewImage":null}',
            b'{"NewImage":{"owner":{"S":"user-u"}}}',
        ]
    )
    frame, lines, deletes = _fast(block, True)  # type: ignore[misc]
    assert (lines, deletes) == (4, 2)
    assert frame["line"].to_list() == [8, 10]
    assert _assert_agree(block, True)


def test_only_the_wanted_columns_are_built() -> None:
    block = (
        b'{"Item":{"modelId":{"S":"session-a-1"},"owner":{"S":"user-u"},"createdAt":{"S":"x"},"expiresAt":{"N":"5"}}}\n'
    )
    full = pl.DataFrame(_decoder.FAST.decode([block], 1, False, True, ALL)[0])
    names = ("owner", "created_at_type", "expires_at")
    mask = sum(1 << _decoder.FAST.COLUMNS.index(name) for name in names)
    part = pl.DataFrame(_decoder.FAST.decode([block], 1, False, True, mask)[0])
    assert part.columns == ["line", *names]
    assert_frame_equal(part, full.select(part.columns))


def test_blocks_append_to_a_batch_and_a_declined_block_leaves_it_as_it_was() -> None:
    def line(owner: str | None) -> bytes:
        image = {"modelId": {"S": "session-a-1"}} | ({"owner": {"S": owner}} if owner else {})
        return json.dumps({"Item": image}).encode() + b"\n"

    a = line("user-a") + line(None) + line("user-b-with-a-long-name")
    declined = line("user-c") * 9 + b'{"Item":{"owner":{"S":"x"}}, oops\n'
    c = line(None) * 9 + line("user-d")
    batch, n, _, _ = _decoder.FAST.decode([a], 1, False, True, ALL)
    assert _decoder.FAST.decode([declined], 4, False, True, ALL, batch) is None
    assert len(batch) == 3  # the declined block's 9 good lines were taken out again
    same, n, _, rest = _decoder.FAST.decode([c], 4, False, True, ALL, batch)
    assert same is batch and (n, rest, len(batch)) == (10, b"", 13)
    # _fast numbers lines from 7: a's are 1-3 here, c's 4-13.
    first, second = _fast(a, False)[0], _fast(c, False)[0]  # type: ignore[index]
    expected = pl.concat([first.with_columns(pl.col("line") - 6), second.with_columns(pl.col("line") - 3)])
    assert_frame_equal(pl.DataFrame(batch), expected)
    assert pl.DataFrame(_decoder.FAST.decode([a], 1, False, True, ALL)[0])["owner"].null_count() == 1


def _nested(depth: int) -> bytes:
    """A record whose payload nests ``depth`` levels of JSON arrays."""
    return b'{"Item":{"modelId":{"S":"session-a-1"},"payload":' + b"[" * depth + b"]" * depth + b"}}"


def test_deep_lines_are_left_to_msgspec_even_after_the_parser_grew() -> None:
    # Python's recursion limit caps how deep msgspec reads (about 1000); simdjson's own limit is
    # higher, so the decoder keeps to 128 (DynamoDB items nest about 70 deep at most).
    big = json.dumps({"Item": {"payload": {"S": "x" * 200_000}}}).encode() + b"\n"
    assert _decoder.FAST.decode([big], 1, False, True, ALL) is not None  # grows the parser's capacity
    assert _assert_agree(_nested(100) + b"\n", False)
    assert _fast(_nested(200) + b"\n", False) is None
    assert _fast(_nested(1010) + b"\n", False) is None


def test_a_timestamp_value_and_its_type_are_built_together() -> None:
    # One batch may hold blocks of both decoders: their frames must have the same columns.
    assert _decoder.wanted(frozenset({"created_at"})) == _decoder.wanted(frozenset({"created_at", "created_at_type"}))
    assert _decoder.wanted(frozenset({"updated_at_type"})) == _decoder.wanted(
        frozenset({"updated_at", "updated_at_type"})
    )


def test_a_run_logs_which_decoder_read_it(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import bubbly_metrics as bm

    with caplog.at_level("INFO", logger="bubbly_metrics.pipeline"):
        bm.aggregate(bm.sample_export_location(), mode="backfill", end="2025-03-17")
        monkeypatch.setattr(_decoder, "FAST", None)
        bm.aggregate(bm.sample_export_location(), mode="backfill", end="2025-03-17")
    decoders = [m.split("decoder: ")[1].rstrip(")") for m in caplog.messages if "decoder: " in m]
    assert decoders == ["simdjson", "msgspec"]


@pytest.mark.parametrize(
    ("env", "counting", "decoder", "warned"),
    [
        ({"BUBBLY_METRICS_COUNT": "0"}, False, "simdjson", False),
        ({"BUBBLY_METRICS_COUNT": " Off "}, False, "simdjson", False),
        ({"BUBBLY_METRICS_COUNT": "false"}, False, "simdjson", False),
        ({"BUBBLY_METRICS_COUNT": "yes"}, True, "simdjson", False),
        ({"BUBBLY_METRICS_COUNT": "maybe"}, True, "simdjson", True),
        ({"BUBBLY_METRICS_DECODER": "MSGSPEC"}, False, "msgspec", False),
        ({"BUBBLY_METRICS_DECODER": "fast"}, True, "simdjson", True),
    ],
)
def test_the_switches_take_common_spellings_and_warn_on_others(
    env: dict[str, str], counting: bool, decoder: str, warned: bool
) -> None:
    # Read once, at import: a fresh interpreter sees what a user's environment does.
    script = (
        "import logging; logging.basicConfig(format='%(message)s')\n"
        "from bubbly_metrics import _decoder; print(_decoder.COUNTING, _decoder.decoder())"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("BUBBLY_METRICS_COUNT", "BUBBLY_METRICS_DECODER")}
    command = [sys.executable, "-c", script]
    proc = subprocess.run(command, env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(counting), decoder]
    name, value = next(iter(env.items()))
    warning = f"{name}={value!r} is not one of"
    assert (warning in proc.stderr) is warned, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == (1 if warned else 0), proc.stderr
