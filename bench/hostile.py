"""Peak memory on hostile data files against a normal one (docs/rules.md#faults-and-hostile-input, issue #25).

    python bench/hostile.py                       # the library of this checkout
    python bench/hostile.py --root /path/to/other # another checkout's library (before/after)

Each case is a one-file full export under bench/.cache/hostile/ (generated once); each is read
by ``bm.aggregate`` in a fresh process (the path the Lambda and the CLI take), whose peak RSS
(``ru_maxrss``: the largest of the process and any worker process it started) and wall time
are printed.  A process is stopped past ``--limit-mb`` of address
space growth (RLIMIT_AS), so an old, unbounded library fails a case instead of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "hostile"
EXPORT_TIME = "2025-03-13T02:00:00Z"


def _session(i: int, owner: str | None = None) -> bytes:
    item = {
        "modelId": {"S": f"session-sudoku-{i:07d}"},
        "owner": {"S": owner if owner is not None else f"user-u{i % 977}"},
        "updatedAt": {"N": str(1741600000 + i % 86400)},
        "payload": {"M": {"board": {"S": "x" * 400}}},
    }
    return json.dumps({"Item": item}, separators=(",", ":")).encode()


def _cases() -> dict[str, tuple[Iterator[bytes], int]]:
    """name -> (raw chunks of the data file, lines it holds)."""

    def repeat(unit: bytes, times: int, chunk: int = 1 << 22) -> Iterator[bytes]:
        per = max(1, chunk // len(unit))
        while times > 0:
            n = min(per, times)
            yield unit * n
            times -= n

    def long_line(size: int) -> Iterator[bytes]:
        yield b'{"Item":{"payload":{"S":"'
        yield from repeat(b"x", size)

    def normal(n: int) -> Iterator[bytes]:
        for start in range(0, n, 10_000):
            yield b"".join(_session(i) + b"\n" for i in range(start, min(n, start + 10_000)))

    def huge_owners(n: int, size: int) -> Iterator[bytes]:
        for i in range(n):
            yield _session(i, owner="u" * size) + b"\n"  # valid JSON, malformed records

    def dense_lines(n: int, size: int) -> Iterator[bytes]:
        # Lines just under the maximum, every other byte a JSON token (a huge list of zeros):
        # the most a JSON parser's internal buffers take for a line that is still read.
        head = b'{"Item":{"modelId":{"S":"session-sudoku-x"},"payload":[0'
        body = b",0" * ((size - len(head) - 3) // 2)
        for _ in range(n):
            yield head + body + b"]}}\n"

    return {
        "normal-200k": (normal(200_000), 200_000),
        "100k-gzip-members": (iter([]), 100_000),  # written by _write: one record per gzip member
        "20x8MiB-dense-lines": (dense_lines(20, (8 << 20) - 1), 20),
        "11M-empty-objects": (repeat(b"{}\n", 11_000_000), 11_000_000),
        "11M-broken-lines": (repeat(b"{\n", 11_000_000), 11_000_000),
        "256MiB-line": (long_line(256 << 20), 1),
        "512MiB-line": (long_line(512 << 20), 1),
        "400x4MB-owners": (huge_owners(400, 4 << 20), 400),
    }


def _write(name: str, chunks: Iterator[bytes], lines: int) -> Path:
    root = CACHE / name
    if (root / ".complete").exists():
        return root
    from bubbly_metrics.synthetic import write_full_export

    item = {"modelId": {"S": "session-sudoku-0"}, "owner": {"S": "user-u"}, "updatedAt": {"N": "1741600000"}}
    written = write_full_export(root, [item], export_time=EXPORT_TIME, n_files=1)
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    with written.data_files[0].open("wb") as out:
        if name.endswith("gzip-members"):  # concatenated members are legal gzip: one line in each
            for i in range(lines):
                member = zlib.compressobj(1, zlib.DEFLATED, 31)
                out.write(member.compress(_session(i) + b"\n") + member.flush())
        for chunk in chunks:
            out.write(compressor.compress(chunk))
        out.write(compressor.flush())
    manifest = written.export_dir / "manifest-files.json"
    entry = json.loads(manifest.read_text()) | {"itemCount": lines}
    manifest.write_text(json.dumps(entry) + "\n")
    summary = written.export_dir / "manifest-summary.json"
    summary.write_text(json.dumps(json.loads(summary.read_text()) | {"itemCount": lines}))
    (root / ".complete").write_text("")
    return root


_CHILD = """
import resource, sys, time
t0 = time.perf_counter()
import bubbly_metrics as bm
r = bm.aggregate(sys.argv[1], mode="backfill", start="2025-03-10", end="2025-03-12")
peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(time.perf_counter() - t0, peak // 1024, r.to_dict()["malformed"])
"""


def _measure(location: Path, package_root: Path, limit_mb: int) -> str:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))

    env = {**os.environ, "PYTHONPATH": str(package_root)}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(location)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        preexec_fn=limit,  # noqa: PLW1509 - a resource limit, set before exec
        timeout=900,
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"FAILED after {time.perf_counter() - t0:.1f} s (exit {done.returncode}): {tail[:160]}"
    seconds, rss, malformed = done.stdout.strip().split(" ", 2)
    return f"peak RSS {int(rss):>5} MB   {float(seconds):6.1f} s   malformed {malformed}"


def main() -> None:
    """Generate the cases once, then measure each in a fresh process."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=HERE.parent, help="checkout whose bubbly_metrics is measured")
    parser.add_argument("--limit-mb", type=int, default=6144, help="address-space limit of each run (MB)")
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    args = parser.parse_args()
    for name, (chunks, lines) in _cases().items():
        if args.cases and name not in args.cases:
            continue
        location = _write(name, chunks, lines)
        size = sum(p.stat().st_size for p in location.rglob("*.json.gz")) / 1e6
        print(f"{name:<18} ({size:7.2f} MB gzip)  {_measure(location, args.root, args.limit_mb)}", flush=True)


if __name__ == "__main__":
    main()
