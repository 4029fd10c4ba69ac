"""Benchmark: the Aggregator Lambda handler on a 1M-item export, against moto's server.

    python bench/handler_timing.py                    # 1,000,000 items, 16 files, backfill
    python bench/handler_timing.py --items 200000     # smaller

The export is generated once with ``bubbly_metrics.synthetic.write_generated_export`` (real
layout) and cached under ``bench/.cache/``.  moto runs as a *separate process* (so its CPU time
does not share the handler's interpreter), the export is uploaded to its S3, and
``bubbly_metrics.handlers.aggregator.handle`` is invoked as Lambda would, twice (a first run
and an idempotent re-run).  The handler's own split is reported:

- scan      reading, decompressing and decoding data files (until the last file is done;
            per-file summarising overlaps with it),
- aggregate merging per-file tables and building the daily metrics,
- publish   CloudWatch PutMetricData (only days inside the two-week window),
- write     Analytics Table: listing existing items, BatchWriteItem / TransactWriteItems.

Figures depend on the machine and on what else runs on it; moto is much slower than the
real services for large requests.  Nothing here is asserted by tests.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache"
START = dt.date(2025, 1, 17)
DAYS = 60
PREFIX = "exports/backfill/20250318T000000Z/"
BUCKET = "bubbly-exports"
TABLE = "bubbly-analytics"


def ensure_export(n_items: int, n_files: int) -> Path:
    root = CACHE / f"handler-export-{n_items}-{n_files}"
    if (root / ".complete").exists():
        return root
    sys.path.insert(0, str(ROOT))
    from bubbly_metrics.synthetic import write_generated_export

    print(f"generating {n_items:,} items in {n_files} files under {root} ...", flush=True)
    t0 = time.perf_counter()
    write_generated_export(root, n_items=n_items, n_files=n_files, start=START, days=DAYS, seed=7, prefix=PREFIX)
    (root / ".complete").write_text("")
    print(f"  generated in {time.perf_counter() - t0:.0f} s", flush=True)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/moto-api/").close()
                break
            except OSError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Context:
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=16)
    args = parser.parse_args()
    root = ensure_export(args.items, args.files)
    gz = sum(p.stat().st_size for p in root.rglob("*.json.gz"))
    print(f"{args.items:,} items, {args.files} files, {gz / 1e6:.0f} MB gzip", flush=True)

    with moto_server() as endpoint:
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="eu-west-2",
            AWS_ENDPOINT_URL=endpoint,
        )
        sys.path.insert(0, str(ROOT))
        import boto3

        from bubbly_metrics.handlers import aggregator
        from tests.aws_helpers import create_analytics_table

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        t0 = time.perf_counter()
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".complete"):
            s3.upload_file(str(path), BUCKET, path.relative_to(root).as_posix())
        print(f"uploaded to moto S3 in {time.perf_counter() - t0:.1f} s", flush=True)
        create_analytics_table(TABLE)
        env = {"EXPORT_BUCKET": BUCKET, "ANALYTICS_TABLE": TABLE, "S3_PREFIX": "exports/"}
        now = dt.datetime.combine(START + dt.timedelta(days=DAYS), dt.time(2, 30), dt.UTC)
        event = {"mode": "backfill", "backfillStartDate": START.isoformat()}
        results = []
        for run in ("first run", "re-run"):
            logs = io.StringIO()
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(logs):
                summary = aggregator.handle(event, Context(), env=env, now=now)
            wall = time.perf_counter() - t0
            t = summary["timings"]
            print(
                f"{run:>9}: {wall:6.2f} s wall = scan {t['scan']:.2f}"
                f" + aggregate {t['aggregate']:.2f}"
                f" + publish {t['publish']:.2f} + write {t['write']:.2f}"
                f"  ({summary['itemsRead']:,} items, {summary['rowsWritten']} rows,"
                f" {summary['datumsPublished']} datums, {summary['datumsSkippedTooOld']} too old)",
                flush=True,
            )
            results.append({"run": run, "wall": round(wall, 2), **t})
        print(json.dumps({"items": args.items, "files": args.files, "runs": results}))


if __name__ == "__main__":
    main()
