"""Cost of WAU/MAU/stickiness and retention (bubbly_metrics.engagement) on a generated history.

Usage: python bench/engagement.py [--users 100000] [--apps 10] [--days 365] [--share 0.1] [--seed 0]

Generates the active ``(date, app, user_id)`` triples directly (each user belongs to one app and
is active on a day with probability ``--share``, users joining over the year so that cohorts
exist), then times each computation in a fresh process and reports its peak RSS above the
baseline after the input is built.  Prints one JSON line per measure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import resource
import time
from typing import Any


def build(users: int, apps: int, days: int, share: float, seed: int) -> Any:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    app = rng.integers(0, apps, users)
    joined = rng.integers(0, days, users)
    lifetime = rng.geometric(1 / 60, users)
    users_of_day, days_of_row = [], []
    for day in range(days):
        alive = np.flatnonzero((joined <= day) & (day < joined + lifetime))
        picked = alive[(rng.random(alive.size) < share) | (joined[alive] == day)]
        users_of_day.append(picked)
        days_of_row.append(np.full(picked.size, day, dtype=np.int32))
    user = np.concatenate(users_of_day)
    frame = pl.DataFrame({"day": np.concatenate(days_of_row), "user": user, "app": app[user]})
    return frame.select(
        (pl.lit(dt.date(2025, 1, 1)) + pl.duration(days=pl.col("day"))).cast(pl.Date).alias("date"),
        pl.format("app{}", pl.col("app")).alias("app"),
        pl.format("user-{}", pl.col("user")).alias("user_id"),
    )


def measure(what: str, args: argparse.Namespace, queue: Any) -> None:
    import bubbly_metrics as bm

    active = build(args.users, args.apps, args.days, args.share, args.seed)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    out = {"engagement_metrics": bm.engagement_metrics, "retention": bm.retention}[what](active).collect()
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put(
        {
            "measure": what,
            "active_user_days": active.height,
            "users": active.select("user_id").n_unique(),
            "apps": args.apps,
            "days": args.days,
            "rows_out": out.height,
            "seconds": round(seconds, 2),
            "peak_rss_over_input_mb": round((peak - base) / 1024, 1),
            "input_mb": round(active.estimated_size() / 2**20, 1),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    context = mp.get_context("spawn")
    for what in ("engagement_metrics", "retention"):
        queue = context.Queue()
        proc = context.Process(target=measure, args=(what, args, queue))
        proc.start()
        print(json.dumps(queue.get()), flush=True)
        proc.join()


if __name__ == "__main__":
    main()
