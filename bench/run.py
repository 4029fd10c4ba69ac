"""Benchmark: bubbly_metrics against real baselines, measured in one run.

    python bench/run.py            # 2M items / 16 files (generated once, cached in bench/.cache)
    python bench/run.py --large    # 10M items / 80 files, and the 2M set for the memory-growth ratio

Each contender runs as a whole process (interpreter start and imports included); wall time,
CPU time (user + system, worker processes included) comes from ``os.wait4``; peak RSS and peak
PSS are sums over the process tree, sampled every 100 ms:

- ours     ``python -m bubbly_metrics aggregate EXPORT --mode backfill`` over the whole range,
           with the compiled simdjson decoder (threads in one process)
- lambda   the Lambda path: the library's ``aggregate`` as the Aggregator handler calls it,
           imported from the bundle alone (``python -S``; ``deploy/build_bundle.py --platform
           host``, built once into bench/.cache/bundle-host: the arm64 bundle's wheels and its
           zig-built decoder, built for this machine), without the CLI's allocator padding
- ours-msgspec  the CLI with ``BUBBLY_METRICS_DECODER=msgspec``: the pure-Python decoder, what
           runs where the decoder is not built (worker processes at this size: counted)
- duckdb   DuckDB at its best (bench/duckdb_metrics.py: early filters, ignore_errors, integer
           days, no insertion order, only the columns needed), same files, same result
- python   the plain gzip + json.loads loop (the tests' pure-Python reference)
- floor    decompress-only with ISA-L on every core (nothing can read the files faster)

All results must agree row for row, or the run fails.  Figures are ratios against
baselines measured in the same run, never absolute seconds; timings are never asserted in
unit tests.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache"
START = "2025-01-17"
DAYS = 60


@dataclass
class Run:
    name: str
    wall: float
    cpu: float
    rss_mb: float
    """Peak RSS of the process tree (the contender and any worker processes it starts)."""
    pss_mb: float
    """Peak PSS of the process tree: like RSS, but a page shared by several processes (the
    Polars library mapped by the main process and a worker) is split between them, not counted
    in full by each."""


def _tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                children.setdefault(int(fh.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
        except (OSError, IndexError):
            continue
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(children.get(pid, []))
    return pids


def _tree_pss_kb(root: int) -> int:
    """Sum of PSS over ``root`` and its descendants, from /proc/<pid>/smaps_rollup."""
    total = 0
    for pid in _tree_pids(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                total += next((int(line.split()[1]) for line in fh if line.startswith("Pss:")), 0)
        except OSError:
            continue
    return total


def _tree_rss_kb(root: int) -> int:
    """Sum of RSS over ``root`` and its descendants, from /proc/<pid>/stat (cheap to read)."""
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))  # ppid
        rss[int(entry)] = int(fields[21]) * page_kb  # rss, in pages
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def _sample_peak(pid: int, stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], _tree_rss_kb(pid))
        peak[1] = max(peak[1], _tree_pss_kb(pid))
        stop.wait(0.1)


def measure(name: str, cmd: list[str], repeat: int, env: dict[str, str] | None = None) -> Run:
    """Run ``cmd`` ``repeat`` times (with ``env`` added); keep the median wall time's run."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env={**os.environ, **(env or {})}
        )
        stop, peak = threading.Event(), [0, 0]
        sampler = threading.Thread(target=_sample_peak, args=(proc.pid, stop, peak), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
        err = proc.stderr.read().decode() if proc.stderr else ""
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            sys.exit(f"{name} failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
        # The sampled sum over the process tree counts worker processes.  (ru_maxrss would not,
        # and on Linux a child inherits the high-water mark of the process that forked it.)
        runs.append(Run(name, wall, usage.ru_utime + usage.ru_stime, peak[0] / 1024, peak[1] / 1024))
        print(
            f"  {name:<12} {wall:7.2f} s wall  {runs[-1].cpu:7.2f} s cpu  {runs[-1].rss_mb:7.0f} MB rss"
            f"  {runs[-1].pss_mb:7.0f} MB pss",
            flush=True,
        )
    runs.sort(key=lambda r: r.wall)
    return runs[len(runs) // 2]


def ensure_export(n_items: int, n_files: int) -> Path:
    """Generate (once) a full export with the project's generator; return its bucket root."""
    root = CACHE / f"export-{n_items}-{n_files}"
    if (root / ".complete").exists():
        return root
    print(f"generating {n_items:,} items in {n_files} files under {root} ...", flush=True)
    t0 = time.perf_counter()
    # In a child process, so this one never grows to the export's size while timing others.
    code = (
        "from bubbly_metrics.synthetic import write_generated_export; "
        f"write_generated_export({str(root)!r}, n_items={n_items}, n_files={n_files}, start={START!r}, "
        f"days={DAYS}, seed=7)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    (root / ".complete").write_text("")
    print(f"  generated in {time.perf_counter() - t0:.0f} s", flush=True)
    return root


def ensure_bundle() -> Path:
    """Build (once) the bundle the Lambda contender imports from; return its folder."""
    out = CACHE / "bundle-host"
    if not (out / ".bubbly-bundle.json").is_file():
        print(f"building the bundle for this machine under {out} ...", flush=True)
        cmd = [sys.executable, str(ROOT / "deploy" / "build_bundle.py"), "--platform", "host", "--out", str(out)]
        subprocess.run(cmd, cwd=ROOT, check=True)
    return out


def read_csv(path: Path) -> list[tuple[str, ...]]:
    with open(path) as fh:
        return [tuple(row) for row in csv.reader(fh)]


def bench(n_items: int, n_files: int, repeat: int, with_python: bool) -> dict[str, Run]:
    root = ensure_export(n_items, n_files)
    export_dir = next((root / "AWSDynamoDB").glob("0*"))
    files = [str(root / json.loads(line)["dataFileS3Key"]) for line in (export_dir / "manifest-files.json").open()]
    gz = sum(os.path.getsize(f) for f in files)
    print(f"\n{n_items:,} items, {len(files)} files, {gz / 1e6:.0f} MB gzip", flush=True)
    end = _end_date()
    out = CACHE / "out"
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    decoder = subprocess.run(
        [py, "-c", "from bubbly_metrics.scan import decoder; print(decoder())"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"ours decodes with {decoder}" + ("" if decoder == "simdjson" else " (the compiled decoder is not built)"))

    def aggregate(output: str) -> list[str]:
        return [
            py,
            "-m",
            "bubbly_metrics",
            "aggregate",
            str(root),
            "--mode",
            "backfill",
            "--start",
            START,
            "--end",
            end,
            "--format",
            "csv",
            "--output",
            str(out / output),
            "--no-progress",
        ]

    bundle = ensure_bundle()
    contenders = {
        "floor": [py, str(HERE / "decompress_floor.py"), str(os.cpu_count() or 2), *files],
        "ours": aggregate("ours.csv"),
        "lambda": [py, "-S", str(HERE / "lambda_path.py"), str(bundle), str(root), START, end, str(out / "lambda.csv")],
        "ours-msgspec": aggregate("ours-msgspec.csv"),
        "duckdb": [
            py,
            str(HERE / "duckdb_metrics.py"),
            str(export_dir / "manifest-files.json"),
            str(root),
            START,
            end,
            str(out / "duckdb.csv"),
        ],
    }
    if with_python:
        contenders["python"] = [
            py,
            str(HERE / "plain_python.py"),
            str(export_dir),
            str(root),
            START,
            end,
            str(out / "python.csv"),
        ]
    results = {}
    for name, cmd in contenders.items():
        env = {"BUBBLY_METRICS_DECODER": "msgspec"} if name == "ours-msgspec" else None
        results[name] = measure(name, cmd, 1 if name == "python" else repeat, env)
    ours = read_csv(out / "ours.csv")
    for other in ("lambda", "ours-msgspec", "duckdb", "python"):
        if other in results and read_csv(out / f"{other}.csv") != ours:
            sys.exit(f"RESULTS DIFFER: ours vs {other} ({out / 'ours.csv'} vs {out / (other + '.csv')})")
    print(
        f"results agree: {len(ours) - 1} rows (days x apps)"
        + (" with lambda, ours-msgspec, duckdb and python" if with_python else " with lambda, ours-msgspec and duckdb")
    )
    return results


def _end_date() -> str:
    import datetime as dt

    return (dt.date.fromisoformat(START) + dt.timedelta(days=DAYS - 1)).isoformat()


def table(results: dict[str, Run]) -> str:
    duck = results["duckdb"]
    lines = [
        "| contender | wall s | CPU s | peak RSS MB | peak PSS MB | wall / duckdb | RSS / duckdb |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("ours", "lambda", "ours-msgspec", "duckdb", "python", "floor"):
        if name in results:
            r = results[name]
            lines.append(
                f"| {name} | {r.wall:.2f} | {r.cpu:.2f} | {r.rss_mb:.0f} | {r.pss_mb:.0f} "
                f"| {r.wall / duck.wall:.2f} | {r.rss_mb / duck.rss_mb:.2f} |"
            )
    return "\n".join(lines)


def targets(results: dict[str, Run]) -> str:
    """The issue's targets, from one run's ratios."""
    ours, lam, duck, floor = (results[name] for name in ("ours", "lambda", "duckdb", "floor"))
    return "\n".join(
        [
            f"lambda/duckdb wall {lam.wall / duck.wall:.2f} (target <= 0.6)",
            f"ours/duckdb wall {ours.wall / duck.wall:.2f} (target <= 0.5)   "
            f"ours/floor wall {ours.wall / floor.wall:.2f} (target <= 2.0)",
            f"peak RSS / duckdb's: ours {ours.rss_mb / duck.rss_mb:.2f}, lambda {lam.rss_mb / duck.rss_mb:.2f} "
            f"(target <= 1; PSS ours {ours.pss_mb / duck.pss_mb:.2f}, lambda {lam.pss_mb / duck.pss_mb:.2f})",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--large", action="store_true", help="also run 10M items / 80 files")
    parser.add_argument("--repeat", type=int, default=3, help="runs per fast contender (median kept)")
    parser.add_argument("--no-python", action="store_true", help="skip the slow plain-Python baseline")
    args = parser.parse_args()
    results = bench(args.items, args.files, args.repeat, not args.no_python)
    print("\n" + table(results))
    ours, duck = results["ours"], results["duckdb"]
    print("\n" + targets(results))
    if "python" in results:
        print(f"plain python/ours wall {results['python'].wall / ours.wall:.1f}x (target >= 5)")
    if args.large:
        big = bench(args.items * 5, args.files * 5, 1, False)
        print("\n" + table(big))
        print("\n" + targets(big))
        print(
            f"\npeak RSS growth {args.items * 5:,} vs {args.items:,} items: "
            f"{big['ours'].rss_mb / ours.rss_mb:.2f}x (target <= 1.5; PSS {big['ours'].pss_mb / ours.pss_mb:.2f}x; "
            f"duckdb {big['duckdb'].rss_mb / duck.rss_mb:.2f}x)"
        )


if __name__ == "__main__":
    main()
