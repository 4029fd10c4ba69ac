"""Measure the distributed backfill's per-child throughput and the reduce (docs/scale.md).

    python bench/distributed.py [--items 1000000] [--files 16]

Writes a generated FULL export, plans it into batches of 4 data files, maps one batch on one
thread (one vCPU's work: items/s per vCPU), maps the rest, and times the reduce against the
user-days it merges.  Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

from bubbly_metrics.distributed import map_batch, plan_run, reduce_run
from bubbly_metrics.scan import decoder
from bubbly_metrics.synthetic import write_generated_export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        export = os.path.join(tmp, "export")
        write_generated_export(export, n_items=args.items, n_files=args.files, days=60, seed=1)
        now = dt.datetime(2025, 3, 19, 2, 30, tzinfo=dt.UTC)
        per_batch = 4 * args.items // args.files
        plan = plan_run(export, run=os.path.join(tmp, "run"), start="2025-01-17", now=now, items_per_batch=per_batch)
        timings = []
        for batch in plan.batches:
            t = time.perf_counter()
            map_batch(plan.run, batch, threads=1)
            timings.append((batch["items"], time.perf_counter() - t))
        t = time.perf_counter()
        result = reduce_run(plan.run)
        reduce_s = time.perf_counter() - t
        items = sum(n for n, _ in timings)
        map_s = sum(s for _, s in timings)
        print(
            json.dumps(
                {
                    "decoder": decoder(),
                    "items": items,
                    "batches": len(timings),
                    "itemsPerBatch": per_batch,
                    "mapSecondsTotalOneThread": round(map_s, 2),
                    "itemsPerSecondPerVcpu": round(items / map_s),
                    "slowestBatchSeconds": round(max(s for _, s in timings), 2),
                    "reduceSeconds": round(reduce_s, 2),
                    "userDays": result.activity.height,
                    "partialUserDays": sum(
                        json.loads(Path(plan.run, "partials", f"batch-{b['batch']:05d}.json").read_text())["userDays"]
                        for b in plan.batches
                    ),
                    "rows": result.metrics.height,
                }
            )
        )


if __name__ == "__main__":
    main()
