"""The arm64 bundle, executed before it ships: built for an aarch64 CPython and run under qemu.

Lambda runs the bundle on arm64, which this x86_64 machine cannot execute natively.  Debian's
arm64 CPython 3.11, unpacked into a sysroot by ``scripts/prepare_arm64_sysroot.sh`` (which also
installs ``qemu-user``), runs as ``qemu-aarch64 -L ROOT ROOT/usr/bin/python3.11``.  The bundle is
built exactly as for Lambda but for that 3.11 (``build(python_version="3.11")``): the same arm64
wheels and the same stable-ABI ``_fastscan.abi3.so``, byte for byte, as the 3.12 bundle ships.
Under emulation: both handlers import from the bundle alone, ``decoder()`` is the compiled one,
the Aggregator handler reads the shipped sample from moto's server on 127.0.0.1 and writes the
table the host writes, the compiled decoder agrees with msgspec on a few thousand generated
lines, and worker processes start (through ``BUBBLY_METRICS_WORKER_PYTHON``).

Needs root's one-off preparation and PyPI, and takes about a minute, so it has its own marker
and is not in the default run: ``scripts/prepare_arm64_sysroot.sh && pytest -m emulated``
(``.ci/run`` does both).  ``BUBBLY_METRICS_ARM64_ROOT`` points at another sysroot.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from polars.testing import assert_frame_equal

from bubbly_metrics import _decoder
from bubbly_metrics.analytics_table import per_user_from_table, read_analytics_table
from bubbly_metrics.handlers import aggregator
from bubbly_metrics.sample import SAMPLE_NOW, sample_export_location
from tests.aws_helpers import BUCKET, FakeContext, create_analytics_table
from tests.conftest import upload_tree

pytestmark = [pytest.mark.emulated]

PROJECT = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("BUBBLY_METRICS_ARM64_ROOT") or PROJECT / ".cache" / "arm64-root")
PREPARE = "scripts/prepare_arm64_sysroot.sh"
EVENT = {"mode": "backfill", "backfillStartDate": "2025-01-17"}
METRICS = ["date", "app", "active_users", "games_played", "parties_created", "parties_joined"]


@pytest.fixture(scope="module")
def arm64_python() -> list[str]:
    """The command that runs Debian's aarch64 CPython 3.11 under qemu."""
    qemu = shutil.which("qemu-aarch64")
    python = ROOT / "usr" / "bin" / "python3.11"
    if qemu is None or not python.is_file():
        pytest.fail(f"no qemu-aarch64 or no arm64 CPython at {python}: run {PREPARE} (as root) first")
    return [qemu, "-L", str(ROOT), str(python)]


@pytest.fixture(scope="module")
def builder() -> Any:
    from deploy import build_bundle

    return build_bundle


@pytest.fixture(scope="module")
def bundle(builder: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    sources = builder.copy_sources(tmp_path_factory.mktemp("sources") / "project")
    report = builder.build(
        tmp_path_factory.mktemp("bundle") / "arm64-py311", target="lambda", python_version="3.11", project=sources
    )
    print(f"\narm64/3.11 bundle: {report.size_mib:.1f} MiB, built in {report.seconds:.1f} s", file=sys.stderr)
    out: Path = report.out
    return out


def run_arm64(
    command: list[str],
    bundle: Path,
    script: str,
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Run ``script`` under emulation with only the bundle importable (``-S``); return its stdout."""
    proc = subprocess.run(
        [*command, "-S", "-c", script, str(bundle), *args],
        capture_output=True,
        text=True,
        env={**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}, **(env or {})},
        timeout=600,
        cwd=cwd,
    )
    assert proc.returncode == 0, f"emulated run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc.stdout


# --------------------------------------------------------------------------------------------


def test_the_interpreter_is_arm64(arm64_python: list[str], bundle: Path) -> None:
    out = run_arm64(arm64_python, bundle, "import platform, sys; print(platform.machine(), sys.version_info[:2])")
    assert out.split()[0] == "aarch64"


def test_the_bundle_ships_the_decoder_it_was_tested_with(builder: Any, bundle: Path) -> None:
    manifest = builder.read_manifest(bundle)
    assert (manifest["arch"], manifest["python_version"]) == ("aarch64", "3.11")
    shipped = builder.cross_build_decoder("aarch64")  # what the 3.12 bundle for Lambda gets
    tested = bundle / builder.DECODER_PATH
    assert tested.read_bytes() == shipped.read_bytes()
    assert manifest["decoder_sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()


def test_handlers_import_under_emulation_with_the_compiled_decoder(
    builder: Any, arm64_python: list[str], bundle: Path
) -> None:
    # smoke_import fails unless both handlers (and every heavy dependency) come from the bundle
    # and scan.decoder() is "simdjson".
    loaded = builder.smoke_import(bundle, arm64_python)
    assert {"bubbly_metrics.handlers.export", "bubbly_metrics.handlers.aggregator"} <= set(loaded)
    assert loaded["bubbly_metrics._fastscan"] == str(bundle / builder.DECODER_PATH)


_AGGREGATE = """
import datetime as dt, json, sys
sys.path.insert(0, sys.argv[1])
from bubbly_metrics.handlers import aggregator

class Context:
    aws_request_id = "req-arm64"
    function_name = "emulated-AggregatorLambda"
    def get_remaining_time_in_millis(self):
        return 600_000

event, env, now, out = json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], sys.argv[5]
summary = aggregator.handle(event, Context(), env=env, now=dt.datetime.fromisoformat(now))
with open(out, "w") as f:
    json.dump(summary, f)
"""


def test_aggregator_under_emulation_writes_the_hosts_table(
    aws: str, arm64_python: list[str], bundle: Path, tmp_path: Path
) -> None:
    upload_tree(Path(sample_export_location()), BUCKET, aws, prefix="exports/")
    create_analytics_table("AnalyticsArm64")
    create_analytics_table("AnalyticsHost")
    env = {"EXPORT_BUCKET": BUCKET, "S3_PREFIX": "exports/"}

    out = tmp_path / "summary.json"
    arm_env = {**env, "ANALYTICS_TABLE": "AnalyticsArm64"}
    logs = run_arm64(
        arm64_python, bundle, _AGGREGATE, json.dumps(EVENT), json.dumps(arm_env), SAMPLE_NOW.isoformat(), str(out)
    )
    emulated = json.loads(out.read_text())
    host = aggregator.handle(EVENT, FakeContext(), env={**env, "ANALYTICS_TABLE": "AnalyticsHost"}, now=SAMPLE_NOW)

    # It read the sample from moto over HTTP with the compiled decoder, and wrote something.
    assert "(decoder: simdjson)" in logs, logs[-2000:]
    assert emulated["failures"] == [] and emulated["rowsWritten"] > 0
    same = ("exportId", "startDate", "endDate", "itemsRead", "malformed", "rowsWritten", "datumsPublished")
    assert {k: emulated[k] for k in same} == {k: host[k] for k in same}

    arm_table = read_analytics_table("AnalyticsArm64")
    host_table = read_analytics_table("AnalyticsHost")
    assert arm_table.height == host["rowsWritten"]
    assert_frame_equal(arm_table.select(METRICS), host_table.select(METRICS))
    assert_frame_equal(per_user_from_table(arm_table), per_user_from_table(host_table))


# --- the decoder's differential test, under emulation ----------------------------------------

# Lines the compiled decoder must decline or agree on (a few of tests/test_fastscan.py's).
ODD_LINES = [
    b"",
    b"   ",
    b'\xef\xbb\xbf{"Item":{}}',
    b'{"Item":{}} {"Item":{}}',
    b'{"Item":{"modelId":{"S":"a"},"modelId":{"S":"b"}}}',
    b'{"Item":{"modelId":null}}',
    b'{"Item":{"createdAt":{"N":1739700000}}}',
    b'{"Item":null}',
    b'{"Item":{"payload":1e400}}',
    b'{"Item":{"payload":[1,]}}',
    b'{"Item":{"owner":{"S":"\\ud800"}}}',
    b'{"Item":{"owner":{"S":"\xff"}}}',
    b'{"Item":{"ow\\u006eer":{"S":"user-u1"}}}',
    b'{"Item":{}',
]
TEXTS = ["", "a", "user-u1", "party-sudoku-9", "session-sudoku-1", "member-user-u7", "ünï", "\u2603", 'q"uote', "x\\y"]


def _value(rng: random.Random) -> Any:
    kind = rng.randrange(7)
    if kind == 0:
        return {"S": rng.choice(TEXTS)}
    if kind == 1:
        return {"N": str(rng.randrange(-(10**12), 10**12)) + rng.choice(["", ".5"])}
    if kind == 2:
        return {"S": None}
    if kind == 3:
        return {"S": rng.choice(TEXTS), "N": "1"}
    if kind == 4:
        return rng.choice([{"BOOL": True}, {"NULL": True}, {"M": {"a": {"S": "x"}}}, {"L": []}, {}])
    return {"S": f"{rng.choice(['session', 'party', 'member', 'user'])}-{rng.choice(TEXTS)}-{rng.randrange(99)}"}


def _payload(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(6 if depth < 3 else 4)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([rng.randrange(-(2**53), 2**53), rng.uniform(-1e9, 1e9)])
    if kind in (2, 3):
        return rng.choice(TEXTS)
    if kind == 4:
        return [_payload(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(TEXTS): _payload(rng, depth + 1) for _ in range(rng.randrange(4))}


def _plain_line(rng: random.Random, incremental: bool) -> bytes:
    image = {
        name: _value(rng) for name in ("modelId", "owner", "createdAt", "updatedAt", "expiresAt") if rng.random() < 0.8
    }
    if rng.random() < 0.5:
        image["payload"] = _payload(rng)
    record: dict[str, Any]
    if incremental:
        keys = {"modelId": {"S": "session-sudoku-1"}}
        record = rng.choice([{"Keys": keys, "NewImage": image}, {"Keys": keys}, {"Keys": keys, "NewImage": None}])
        if rng.random() < 0.3:
            record["OldImage"] = image
    else:
        record = {"Item": image}
    text = json.dumps(record, ensure_ascii=rng.random() < 0.5, separators=rng.choice([(",", ":"), (", ", ": ")]))
    return text.encode() + rng.choice([b"", b" ", b"\r"])


def generated_blocks(seed: int = 15, lines: int = 4000) -> list[tuple[bytes, bool]]:
    """Seeded blocks of 1-20 lines: mostly plain (taken), one in five with an odd line (declined or equal)."""
    rng = random.Random(seed)
    blocks, total = [], 0
    while total < lines:
        incremental = rng.random() < 0.3
        count = rng.randrange(1, 21)
        block = [_plain_line(rng, incremental) for _ in range(count)]
        if rng.random() < 0.2:
            block[rng.randrange(count)] = rng.choice(ODD_LINES + [_plain_line(rng, False)[: rng.randrange(60)]])
        blocks.append((b"\n".join(block) + b"\n", incremental))
        total += count
    return blocks


_DIFFERENTIAL = """
import base64, json, sys
sys.path.insert(0, sys.argv[1])
import polars as pl
from polars.testing import assert_frame_equal
from bubbly_metrics import _decode, _decoder, scan
from bubbly_metrics._rows import ScanOptions
assert scan.decoder() == "simdjson", scan.decoder()
ALL = (1 << 7) - 1
taken = declined = 0
with open(sys.argv[2]) as f:
    blocks = json.load(f)
for encoded, incremental in blocks:
    block = base64.b64decode(encoded)
    got = _decoder.FAST.decode([block], 7, incremental, False, ALL)
    if got is None:
        declined += 1
        continue
    decoded, lines, deletes, rest = got
    assert rest == b""
    frame = pl.DataFrame(decoded)
    options = ScanOptions(incremental=incremental)
    ref_frame, ref_errors, ref_lines, ref_deletes = _decode.decode_block(memoryview(block), 7, options)
    assert ref_errors == {}, ("taken, but msgspec reports lines of", block)
    assert (lines, deletes) == (ref_lines, ref_deletes), block
    assert_frame_equal(frame, ref_frame.select(frame.columns))
    taken += 1
print(json.dumps({"taken": taken, "declined": declined}))
"""


def _host_counts(blocks: list[tuple[bytes, bool]]) -> dict[str, int]:
    assert _decoder.FAST is not None, "the host's compiled decoder is not built"
    taken = sum(_decoder.FAST.decode([block], 7, inc, False, (1 << 7) - 1) is not None for block, inc in blocks)
    return {"taken": taken, "declined": len(blocks) - taken}


def test_the_compiled_decoder_agrees_with_msgspec_under_emulation(
    arm64_python: list[str], bundle: Path, tmp_path: Path
) -> None:
    blocks = generated_blocks()
    assert sum(block.count(b"\n") for block, _ in blocks) >= 4000
    path = tmp_path / "blocks.json"
    path.write_text(json.dumps([[base64.b64encode(block).decode(), inc] for block, inc in blocks]))
    counts = json.loads(run_arm64(arm64_python, bundle, _DIFFERENTIAL, str(path)).splitlines()[-1])
    # Every taken block was checked against msgspec under emulation; the NEON kernel takes and
    # declines exactly the blocks the host's kernel does.
    assert counts == _host_counts(blocks)
    assert counts["taken"] > 0.7 * len(blocks) and counts["declined"] > 0


_WORKERS = """
import json, platform, sys
sys.path.insert(0, sys.argv[1])
from bubbly_metrics._worker import ProcessPool
from bubbly_metrics import scan
with ProcessPool(2) as pool:
    machines = [pool.submit(platform.machine).result(timeout=300) for _ in range(2)]
    decoders = [pool.submit(scan.decoder).result(timeout=300) for _ in range(2)]
print(json.dumps({"machines": machines, "decoders": decoders}))
"""


def test_worker_processes_start_under_emulation(arm64_python: list[str], bundle: Path) -> None:
    # A worker is started from inside the emulated process: with the interpreter command
    # configured, it is another emulated arm64 interpreter with the bundle on its path.  (This
    # runs from the repository root: a worker that put its working directory first on sys.path
    # imported the source tree's bubbly_metrics, whose host-built decoder cannot load on arm64,
    # and fell back to msgspec.)
    out = run_arm64(
        arm64_python, bundle, _WORKERS, env={"BUBBLY_METRICS_WORKER_PYTHON": " ".join(arm64_python)}, cwd=PROJECT
    )
    assert json.loads(out.splitlines()[-1]) == {"machines": ["aarch64"] * 2, "decoders": ["simdjson"] * 2}
