"""Cost of WAU/MAU/stickiness and retention (bubbly_metrics.engagement) on a generated history.

Usage: python bench/engagement.py [--users 400000] [--apps 10] [--days 365] [--share 0.1] [--seed 0]

Generates the active ``(date, app, user_id)`` triples directly (each user belongs to one app and
is active on a day with probability ``--share``, users joining over the year so that cohorts
exist), then times each computation in a fresh process and reports its peak RSS above the
baseline after the input is built; and for the daily job (issue #28 item 3), what one day's
WAU/MAU costs from the Analytics Table: items, bytes, Query calls and read units of its last 28
days, and the seconds to assemble and compute them (network and boto3 parsing not included).
Prints one JSON line per measure.  The defaults give ~80k monthly users over 10 apps.
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


def daily(args: argparse.Namespace) -> dict[str, Any]:
    """The daily computation's inputs and costs: the last 28 days' Analytics Table items for July 1.

    The items are built by the library's writer (``build_items``, as a publish writes them) from
    the generated activity; read units are those of strongly consistent Query calls (4 KB each,
    summed over a day's items), one Query per day while a day's items fit a 1 MB page.
    """
    import polars as pl

    import bubbly_metrics as bm
    from bubbly_metrics.analytics_table import build_items, item_size, table_from_items
    from bubbly_metrics.dates import DateRange
    from bubbly_metrics.metrics import daily_metrics

    day = dt.date(2025, 1, 1) + dt.timedelta(days=min(args.days - 1, 181))
    first = day - dt.timedelta(days=27)
    window = build(args.users, args.apps, args.days, args.share, args.seed).filter(
        pl.col("date").is_between(first, day)
    )
    per_user = window.with_columns(
        pl.lit(1, pl.Int64).alias("games"),
        *(pl.lit(0, pl.Int64).alias(c) for c in ("parties_created", "parties_joined")),
    )
    metrics = daily_metrics(per_user, DateRange(first, day), dense=True).collect()
    items = [i for group in build_items(metrics, per_user=per_user, now=dt.datetime.now(dt.UTC)) for i in group]
    per_day: dict[str, int] = {}
    for item in items:
        per_day[item["date"]["S"]] = per_day.get(item["date"]["S"], 0) + item_size(item)
    began = time.perf_counter()
    frame = table_from_items(items)
    assembled = time.perf_counter() - began
    out = bm.engagement_metrics(frame, start=first, end=day).filter(pl.col("date") == day).collect()
    return {
        "measure": "daily_from_table",
        "day": day.isoformat(),
        "active_user_days_in_28": window.height,
        "mau_all_apps": int(out["monthly_active_users"].sum()),
        "items": len(items),
        "mb_read": round(sum(per_day.values()) / 2**20, 2),
        "largest_day_mb": round(max(per_day.values()) / 2**20, 2),
        "queries": sum(-(-size // 2**20) for size in per_day.values()),
        "read_units_strong": sum(-(-size // 4096) for size in per_day.values()),
        "assemble_seconds": round(assembled, 2),
        "compute_seconds": round(time.perf_counter() - began - assembled, 2),
    }


def measure(what: str, args: argparse.Namespace, queue: Any) -> None:
    import bubbly_metrics as bm

    if what == "daily_from_table":
        queue.put(daily(args))
        return
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
    parser.add_argument("--users", type=int, default=400_000)
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    context = mp.get_context("spawn")
    for what in ("engagement_metrics", "retention", "daily_from_table"):
        queue = context.Queue()
        proc = context.Process(target=measure, args=(what, args, queue))
        proc.start()
        print(json.dumps(queue.get()), flush=True)
        proc.join()


if __name__ == "__main__":
    main()
