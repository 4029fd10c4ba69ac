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
           zig-built decoder, built for this machine), without the CLI's allocator padding,
           on a CPython of Lambda's version (3.12) when this machine has one
- ours-rows  the CLI with ``BUBBLY_METRICS_COUNT=0``: the compiled decoder hands every record
           to Polars as a row, instead of counting plain records itself (the default)
- ours-msgspec  the CLI with ``BUBBLY_METRICS_DECODER=msgspec``: the pure-Python decoder, what
           runs where the decoder is not built (worker processes at this size: counted)
- duckdb   DuckDB at its best (bench/duckdb_metrics.py: early filters, ignore_errors, integer
           days, no insertion order, only the columns needed), same files, same result
- python   the plain gzip + json.loads loop (the tests' pure-Python reference)
- floor    decompress-only with ISA-L on every core (nothing can read the files faster): a
           tight loop with 1 MB output per call; floor-igzip (``python -m isal.igzip -d -c``
           per file) and floor-8mb (the earlier loop) beside it; the least CPU is the floor
- duckdb-lean  DuckDB's lean formulation (bench/duckdb_metrics.py --query lean); the DuckDB
           with the least CPU is the one ratios are taken against
- ours+alloc, lambda+env  with allocator settings (ALLOC_ENV, LAMBDA_ENV below); lambda-1cpu
           pinned to one core (taskset), for GB-seconds at 1 vCPU; --alloc runs each alone

Contenders run alternately in paired rounds (--rounds, medians), so that a shared machine does
not decide the result; CPU seconds (user + system of the process tree) are the primary figure.

All results must agree row for row, or the run fails.  Figures are ratios against
baselines measured in the same rounds, never absolute seconds; timings are never asserted in
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
from typing import Any

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
    min_wall: float = 0.0
    """The least wall time over the paired rounds: the least disturbed by others on a shared machine."""


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


def measure_once(name: str, cmd: list[str], env: dict[str, str] | None = None) -> Run:
    """Run ``cmd`` once (with ``env`` added) as a whole process; its wall, CPU and peak memory."""
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
    # and on Linux a child inherits the high-water mark of the process that forked it.)  The
    # CPU time (user + system) from wait4 includes every waited-for descendant.
    run = Run(name, wall, usage.ru_utime + usage.ru_stime, peak[0] / 1024, peak[1] / 1024)
    print(
        f"  {name:<14} {wall:7.2f} s wall  {run.cpu:7.2f} s cpu  {run.rss_mb:7.0f} MB rss  {run.pss_mb:7.0f} MB pss",
        flush=True,
    )
    return run


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def measure_paired(contenders: dict[str, tuple[list[str], dict[str, str] | None]], rounds: int) -> dict[str, Run]:
    """Run every contender once per round, alternately (the order rotates each round); medians.

    Paired so that a shared machine does not decide the result: a busy minute slows every
    contender of that round, not one contender's every run.  Each figure (wall, CPU, RSS, PSS)
    is its own median over the rounds.
    """
    names = list(contenders)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for r in range(rounds):
        print(f" round {r + 1}/{rounds}", flush=True)
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            cmd, env = contenders[name]
            runs[name].append(measure_once(name, cmd, env))
    return {
        name: Run(
            name,
            _median([x.wall for x in rs]),
            _median([x.cpu for x in rs]),
            _median([x.rss_mb for x in rs]),
            _median([x.pss_mb for x in rs]),
            min(x.wall for x in rs),
        )
        for name, rs in runs.items()
    }


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


def _builder() -> Any:
    """deploy/build_bundle.py, imported from the repository."""
    sys.path.insert(0, str(ROOT))
    try:
        from deploy import build_bundle
    finally:
        sys.path.remove(str(ROOT))
    return build_bundle


def lambda_python() -> str:
    """The interpreter the Lambda contenders run on: a CPython of Lambda's version if this
    machine has one (deploy/build_bundle.py's ``find_python``), else this one."""
    builder = _builder()
    found = builder.find_python(builder.PYTHON_VERSION)
    if found is None:
        version = builder.PYTHON_VERSION
        print(f"no CPython {version} (Lambda's) here: the Lambda path runs on {sys.executable}", flush=True)
    return found or sys.executable


def ensure_bundle(python: str) -> Path:
    """Build the bundle the Lambda contender imports from, for ``python`` (again when the package
    or the interpreter changed); return its folder."""
    out = CACHE / "bundle-host"
    marker = out / ".bubbly-bundle.json"
    built = marker.stat().st_mtime if marker.is_file() else 0.0
    sources = [p for p in (ROOT / "bubbly_metrics").rglob("*") if p.suffix in (".py", ".cpp")] + [
        ROOT / "deploy" / "build_bundle.py",
        ROOT / "scripts" / "build_fastscan.py",
        ROOT / "pyproject.toml",
        ROOT / "requirements" / "lock.txt",
    ]
    tag = _builder().cache_tag(python)
    for_python = marker.is_file() and json.loads(marker.read_text()).get("bytecode") == tag
    if not for_python or any(p.stat().st_mtime > built for p in sources):  # a stale bundle would time old code
        print(f"building the bundle for this machine and {python} under {out} ...", flush=True)
        cmd = [sys.executable, str(ROOT / "deploy" / "build_bundle.py"), "--platform", "host", "--out", str(out)]
        subprocess.run([*cmd, "--python", python], cwd=ROOT, check=True)
    return out


def read_csv(path: Path) -> list[tuple[str, ...]]:
    with open(path) as fh:
        return [tuple(row) for row in csv.reader(fh)]


# Allocator settings tried (issue #29, part 3): Polars' jemalloc returns freed pages after
# 500 ms / 1 s by default (polars/__init__.py sets ``_RJEM_MALLOC_CONF`` and appends ours);
# glibc's mmap threshold at 64 MiB keeps large buffers in the (padded) heap.  The CLI now sets
# the jemalloc decay itself; LAMBDA_ENV is what the Lambda path is measured with as "+env".
ALLOC_ENV = {"_RJEM_MALLOC_CONF": "dirty_decay_ms:5000,muzzy_decay_ms:5000", "MALLOC_MMAP_THRESHOLD_": str(64 << 20)}
LAMBDA_ENV = {"MALLOC_TOP_PAD_": str(32 << 20), **ALLOC_ENV}
LAMBDA_1VCPU_GB = 1.769  # memory that buys 1 vCPU
LAMBDA_6VCPU_GB = 10.24  # memory that buys 6 vCPUs
SCAN_WORKERS_MAX = 4  # bubbly_metrics.scan: min(os.cpu_count(), 4) decoder threads


@dataclass
class Bench:
    runs: dict[str, Run]
    gz_bytes: int


def bench(n_items: int, n_files: int, rounds: int, with_python: bool, skip: set[str], alloc: bool = False) -> Bench:
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

    def lambda_path(output: str) -> list[str]:
        script = str(HERE / "lambda_path.py")
        return [lambda_py, "-S", script, str(bundle), str(root), START, end, str(out / output)]

    def duckdb(query: str, output: str) -> list[str]:
        manifest = str(export_dir / "manifest-files.json")
        script = str(HERE / "duckdb_metrics.py")
        return [py, script, "--query", query, manifest, str(root), START, end, str(out / output)]

    # The bundle is built (once) only when a Lambda contender runs.
    needs_bundle = alloc or not {"lambda", "lambda+env", "lambda-1cpu", "lambda-1cpu+env"} <= skip
    lambda_py = lambda_python() if needs_bundle else py
    bundle = ensure_bundle(lambda_py) if needs_bundle else CACHE / "bundle-host"
    if needs_bundle:
        print(f"the Lambda path runs on {lambda_py}", flush=True)
    threads = str(os.cpu_count() or 2)
    floor = [py, str(HERE / "decompress_floor.py")]
    contenders: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "floor": ([*floor, threads, *files], None),
        "floor-igzip": ([*floor, "--igzip", threads, *files], None),
        "floor-8mb": ([*floor, "--8mb", threads, *files], None),
        "ours": (aggregate("ours.csv"), None),
        "ours+alloc": (aggregate("ours-alloc.csv"), ALLOC_ENV),
        "lambda": (lambda_path("lambda.csv"), None),
        "lambda+env": (lambda_path("lambda-env.csv"), LAMBDA_ENV),
        "lambda-1cpu": (["taskset", "-c", "0", *lambda_path("lambda-1cpu.csv")], None),
        "lambda-1cpu+env": (["taskset", "-c", "0", *lambda_path("lambda-1cpu-env.csv")], LAMBDA_ENV),
        "ours-rows": (aggregate("ours-rows.csv"), {"BUBBLY_METRICS_COUNT": "0"}),
        "ours-msgspec": (aggregate("ours-msgspec.csv"), {"BUBBLY_METRICS_DECODER": "msgspec"}),
        "duckdb": (duckdb("bench", "duckdb.csv"), None),
        "duckdb-lean": (duckdb("lean", "duckdb-lean.csv"), None),
    }
    if alloc:
        # Part 3 of issue #29: each allocator setting on its own, paired with the defaults.
        jemalloc = {"_RJEM_MALLOC_CONF": ALLOC_ENV["_RJEM_MALLOC_CONF"]}
        mmap = {"MALLOC_MMAP_THRESHOLD_": ALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]}
        pad = {"MALLOC_TOP_PAD_": str(32 << 20)}  # what the CLI sets with mallopt
        contenders = {
            "ours": contenders["ours"],
            "ours+jemalloc": (aggregate("ours-jemalloc.csv"), jemalloc),
            "ours+mmap": (aggregate("ours-mmap.csv"), mmap),
            "ours+alloc": contenders["ours+alloc"],
            "lambda": contenders["lambda"],
            "lambda+pad": (lambda_path("lambda-pad.csv"), pad),
            "lambda+jemalloc": (lambda_path("lambda-jemalloc.csv"), jemalloc),
            "lambda+pad+jemalloc": (lambda_path("lambda-pad-jemalloc.csv"), {**pad, **jemalloc}),
            "lambda+pad+alloc": (lambda_path("lambda-pad-alloc.csv"), {**pad, **ALLOC_ENV}),
        }
    for name in skip:
        contenders.pop(name, None)
    results = measure_paired(contenders, rounds)
    if with_python:
        cmd = [py, str(HERE / "plain_python.py"), str(export_dir), str(root), START, end, str(out / "python.csv")]
        results["python"] = measure_once("python", cmd)
    ours = read_csv(out / "ours.csv")
    compared = [name for name in results if name != "ours" and not name.startswith("floor")]
    for other in compared:
        path = out / f"{other.replace('+', '-')}.csv"
        if read_csv(path) != ours:
            sys.exit(f"RESULTS DIFFER: ours vs {other} ({out / 'ours.csv'} vs {path})")
    print(f"results agree: {len(ours) - 1} rows (days x apps), ours with {', '.join(compared)}")
    return Bench(results, gz)


def _end_date() -> str:
    import datetime as dt

    return (dt.date.fromisoformat(START) + dt.timedelta(days=DAYS - 1)).isoformat()


def _best(results: dict[str, Run], prefix: str) -> Run:
    """The contender named ``prefix`` or ``prefix-*`` with the least CPU."""
    return min((r for n, r in results.items() if n == prefix or n.startswith(prefix + "-")), key=lambda r: r.cpu)


def table(b: Bench) -> str:
    results = b.runs
    duck, floor = _best(results, "duckdb"), _best(results, "floor")
    lines = [
        f"best DuckDB (least CPU): {duck.name}; floor (least CPU): {floor.name}",
        "",
        "| contender | CPU s | wall s | peak RSS MB | peak PSS MB | CPU / best DuckDB | CPU / floor "
        "| RSS / best DuckDB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r.cpu:.2f} | {r.wall:.2f} | {r.rss_mb:.0f} | {r.pss_mb:.0f} "
            f"| {r.cpu / duck.cpu:.2f} | {r.cpu / floor.cpu:.2f} | {r.rss_mb / duck.rss_mb:.2f} |"
        )
    return "\n".join(lines)


def alloc_table(b: Bench) -> str:
    lines = ["| contender | CPU s | wall s | peak RSS MB | CPU / its default |", "|---|---:|---:|---:|---:|"]
    for name, r in b.runs.items():
        base = b.runs[name.split("+")[0]]
        lines.append(f"| {name} | {r.cpu:.2f} | {r.wall:.2f} | {r.rss_mb:.0f} | {r.cpu / base.cpu:.3f} |")
    return "\n".join(lines)


def lambda_figures(b: Bench) -> list[tuple[str, float]]:
    """GB-seconds per GB of gzip for the Lambda path, at 1 vCPU (measured) and 6 (modelled)."""
    results, gz_gb = b.runs, b.gz_bytes / 1e9
    if "lambda-1cpu" not in results or "lambda" not in results:
        return []
    one, two = results["lambda-1cpu"], results["lambda"]
    figures = [
        ("1 vCPU, pinned to one core: median wall x 1.769 GB", one.wall * LAMBDA_1VCPU_GB / gz_gb),
        ("1 vCPU, pinned: least wall x 1.769 GB", one.min_wall * LAMBDA_1VCPU_GB / gz_gb),
        ("1 vCPU, a dedicated core (CPU s x 1.769 GB)", one.cpu * LAMBDA_1VCPU_GB / gz_gb),
    ]
    # 6 vCPU is MODELLED, not measured: the single-core CPU spread over n cores at the parallel
    # efficiency measured on this machine's 2 cores, either from the least-disturbed 2-core wall
    # (single-core CPU / (2 x wall): idle cores and serial phases included) or, as a bound, from
    # CPU alone (single-core CPU / 2-core CPU: cores never idle, only the per-item CPU rise).
    for eff, how in ((one.cpu / (2 * two.min_wall), "from 2-core wall"), (one.cpu / two.cpu, "bound, CPU only")):
        for cores in (SCAN_WORKERS_MAX, 6):
            wall = one.cpu / (cores * eff)
            label = f"6 vCPU MODELLED, {cores} cores busy, efficiency {eff:.2f} ({how})"
            figures.append((label, wall * LAMBDA_6VCPU_GB / gz_gb))
    return figures


def targets(b: Bench) -> str:
    """The issue's targets (#29), from one run's paired medians."""
    results = b.runs
    ours, duck, floor = results["ours"], _best(results, "duckdb"), _best(results, "floor")

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    duck_ok, floor_ok, rss_ok = (
        ours.cpu <= 0.4 * duck.cpu,
        ours.cpu <= 1.6 * floor.cpu,
        ours.rss_mb <= 0.8 * duck.rss_mb,
    )
    lines = [
        f"compiled path CPU / floor {ours.cpu / floor.cpu:.2f} (target <= 1.6): {mark(floor_ok)}",
        f"compiled path CPU / best DuckDB {ours.cpu / duck.cpu:.2f} (target <= 0.4): {mark(duck_ok)}",
        f"compiled path peak RSS / best DuckDB's {ours.rss_mb / duck.rss_mb:.2f} (target <= 0.8): {mark(rss_ok)}",
    ]
    figures = lambda_figures(b)
    for label, value in figures:
        lines.append(f"Lambda path GB-s per GB of gzip, {label}: {value:.1f}")
    if figures:
        dedicated = figures[2][1]
        lines.append(f"Lambda path <= 18 GB-s per GB of gzip at 1 vCPU (dedicated core): {mark(dedicated <= 18)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--large", action="store_true", help="also run 10M items / 80 files")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds (medians kept)")
    parser.add_argument("--python", action="store_true", help="also run the slow plain-Python baseline once")
    parser.add_argument("--skip", default="", help="contenders to leave out, comma-separated")
    parser.add_argument("--alloc", action="store_true", help="only the allocator settings, each on its own")
    args = parser.parse_args()
    skip = {name for name in args.skip.split(",") if name}
    small = bench(args.items, args.files, args.rounds, args.python, skip, args.alloc)
    if args.alloc:
        print("\n" + alloc_table(small))
        return
    print("\n" + table(small))
    print("\n" + targets(small))
    if "python" in small.runs:
        print(f"plain python / ours wall {small.runs['python'].wall / small.runs['ours'].wall:.1f}x (target >= 5)")
    if args.large:
        big = bench(args.items * 5, args.files * 5, args.rounds, False, skip)
        print("\n" + table(big))
        print("\n" + targets(big))
        print(
            f"\npeak RSS growth {args.items * 5:,} vs {args.items:,} items: "
            f"{big.runs['ours'].rss_mb / small.runs['ours'].rss_mb:.2f}x"
        )


if __name__ == "__main__":
    main()
