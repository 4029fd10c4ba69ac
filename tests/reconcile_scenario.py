"""A backfill with deliberate, known discrepancies, for the reconcile and notebook tests.

Two worlds of the same main table, 2025-03-01 → 2025-03-17, apps ``sudoku`` and ``chess``:

- **new**: the FULL export the reconciliation reads (taken 2025-03-18 02:00), plus an
  INCREMENTAL export (2025-03-17 → 2025-03-18) holding one delete;
- **old**: what the runs that wrote the Analytics Table and CloudWatch saw.

Every day and app has the same base activity (2 users, 3 sessions, 1 party, 1 member, all at
midday: nothing crosses midnight).  The worlds differ only in the plants below, so every
difference a reconciliation finds is known in advance, with its cause (:data:`TABLE_DIFFS`,
:data:`CLOUDWATCH_DIFFS`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from bubbly_metrics.synthetic import write_full_export, write_incremental_export
from tests.aws_helpers import ANALYTICS

NOW = dt.datetime(2025, 3, 18, 2, 30, tzinfo=dt.UTC)
"""CloudWatch's window at NOW is 2025-03-05 → 2025-03-18."""
START, END = "2025-03-01", "2025-03-17"
APPS = ("sudoku", "chess")
EXPORT_TIME = "2025-03-18T02:00:00Z"
METRICS = ("active_users", "games_played", "parties_created", "parties_joined")


def ts(day: str, hour: int = 12, minute: int = 0) -> int:
    d = dt.date.fromisoformat(day)
    return int(dt.datetime(d.year, d.month, d.day, hour, minute, tzinfo=dt.UTC).timestamp())


def _item(model_id: str, owner: str, created: int, updated: int, expires: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "modelId": {"S": model_id},
        "owner": {"S": owner},
        "createdAt": {"N": str(created)},
        "updatedAt": {"N": str(updated)},
        "payload": {"M": {"note": {"S": "x"}}},
    }
    if expires is not None:
        item["expiresAt"] = {"N": str(expires)}
    return item


def session(app: str, sid: str, user: str, created: int, updated: int, expires: int | None = None) -> dict[str, Any]:
    return _item(f"session-{app}-{sid}", f"user-{user}", created, updated, expires)


def party(app: str, pid: str, user: str, created: int, expires: int | None = None) -> dict[str, Any]:
    return _item(f"party-{app}-{pid}", f"user-{user}", created, created, expires)


def member(app: str, pid: str, user: str, created: int) -> dict[str, Any]:
    return _item(f"member-user-{user}", f"party-{app}-{pid}", created, created)


def days(start: str = START, end: str = END) -> list[str]:
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def base_items() -> list[dict[str, Any]]:
    items = []
    for day in days():
        for app in APPS:
            tag = f"{app}-{day}"
            for k, user in enumerate(("u1", "u2", "u1")):
                items.append(session(app, f"s{k}-{tag}", user, ts(day), ts(day, 12, 30)))
            items.append(party(app, f"p-{tag}", "u1", ts(day, 13)))
            items.append(member(app, f"p-{tag}", "u2", ts(day, 13, 30)))
    return items


# A: a session started 03-10 23:30.  Old runs saw it updated at 23:45 (dated 03-10); by the new
#    export it was updated again after midnight, so it is dated 03-11.
LATE_OLD = session("sudoku", "late", "night-owl", ts("2025-03-10", 23, 30), ts("2025-03-10", 23, 45))
LATE_NEW = session("sudoku", "late", "night-owl", ts("2025-03-10", 23, 30), ts("2025-03-11", 0, 30))
# B: a party in the new export past its TTL at export time (DynamoDB had not deleted it yet).
EXPIRED = party("chess", "expired", "u1", ts("2025-03-12", 14), expires=ts("2025-03-15", 0))
# C: a member the old runs counted, deleted since (the incremental export holds the delete).
DELETED = member("sudoku", "p-sudoku-2025-03-08", "u3", ts("2025-03-08", 14))
# E: two parties the old runs counted that are simply gone (no delete, nothing explains it).
VANISHED = [party("sudoku", f"gone-{k}", "u1", ts("2025-03-06", 15)) for k in range(2)]
# F: activity for an app the new export has none of.
GHOST = session("ghost", "g1", "u9", ts("2025-03-09"), ts("2025-03-09", 12, 5))
# D: the table has no item for this (date, app) at all.
MISSING_ROW = (dt.date(2025, 3, 14), "chess")
# CloudWatch only: one value published wrong, and one (date, app) never published.
CW_WRONG = (dt.date(2025, 3, 16), "chess", "games_played", 8)
CW_MISSING_ROW = (dt.date(2025, 3, 15), "sudoku")


def new_items() -> list[dict[str, Any]]:
    return [*base_items(), LATE_NEW, EXPIRED]


def old_items() -> list[dict[str, Any]]:
    return [*base_items(), LATE_OLD, DELETED, *VANISHED, GHOST]


def d(day: str) -> dt.date:
    return dt.date.fromisoformat(day)


TABLE_DIFFS: set[tuple[dt.date, str, str, str]] = {
    (d("2025-03-10"), "sudoku", "active_users", "redated"),
    (d("2025-03-10"), "sudoku", "games_played", "redated"),
    (d("2025-03-11"), "sudoku", "active_users", "redated"),
    (d("2025-03-11"), "sudoku", "games_played", "redated"),
    (d("2025-03-12"), "chess", "parties_created", "ttl_expired"),
    (d("2025-03-08"), "sudoku", "parties_joined", "deleted"),
    (d("2025-03-06"), "sudoku", "parties_created", "unexplained"),
    (d("2025-03-09"), "ghost", "active_users", "not_in_export"),
    (d("2025-03-09"), "ghost", "games_played", "not_in_export"),
    *((MISSING_ROW[0], MISSING_ROW[1], m, "missing_from_table") for m in METRICS),
}
"""(date, app, metric, cause) of every difference with the Analytics Table."""

CLOUDWATCH_DIFFS: set[tuple[dt.date, str, str, str]] = {
    *(x for x in TABLE_DIFFS if x[3] != "missing_from_table" and x[0] >= d("2025-03-05")),
    (CW_WRONG[0], CW_WRONG[1], CW_WRONG[2], "unexplained"),
    *((CW_MISSING_ROW[0], CW_MISSING_ROW[1], m, "missing_from_cloudwatch") for m in METRICS),
}
"""(date, app, metric, cause) of every difference with CloudWatch (inside its window)."""

OUTSIDE_WINDOW = 4 * len(APPS) * len(METRICS)
"""Values of 03-01 → 03-04 (older than CloudWatch's window at NOW): not compared."""


def write_new_world(root: Path) -> Path:
    """Write the new FULL export and the INCREMENTAL export with the delete under ``root``."""
    write_full_export(root, new_items(), export_time=EXPORT_TIME, prefix="exports/", n_files=2, seed=11)
    other = session("chess", "s-inc", "u2", ts("2025-03-17", 9), ts("2025-03-17", 9, 30))
    micros = ts("2025-03-17", 20) * 1_000_000
    records = [
        {
            "Metadata": {"WriteTimestampMicros": {"N": str(micros)}},
            "Keys": _keys(DELETED),
            "OldImage": DELETED,
        },
        {
            "Metadata": {"WriteTimestampMicros": {"N": str(micros)}},
            "Keys": _keys(other),
            "NewImage": other,
        },
        {
            "Metadata": {"WriteTimestampMicros": {"N": str(micros)}},
            "Keys": _keys(LATE_NEW),
            "OldImage": LATE_OLD,
            "NewImage": LATE_NEW,
        },
    ]
    write_incremental_export(
        root,
        records,
        export_from="2025-03-17T00:00:00Z",
        export_to="2025-03-18T00:00:00Z",
        prefix="exports/",
        n_files=1,
        seed=12,
    )
    return root


def write_old_world(root: Path) -> Path:
    write_full_export(root, old_items(), export_time="2025-03-18T01:00:00Z", n_files=1, seed=13)
    return root


def _keys(item: dict[str, Any]) -> dict[str, Any]:
    return {"modelId": item["modelId"], "owner": item["owner"]}


def seed_outputs(old_root: Path, *, table: str = ANALYTICS) -> None:
    """Write the old world's results to the Analytics Table and CloudWatch, with the plants.

    Uses the library's own writers, against whatever AWS endpoint the environment names.
    """
    from bubbly_metrics.analytics_table import write_analytics_table
    from bubbly_metrics.cloudwatch import publish_metrics
    from bubbly_metrics.pipeline import aggregate

    old = aggregate(str(old_root), mode="backfill", start=START, end=END, now=NOW)
    date, app = pl.col("date"), pl.col("app")
    not_missing = ~((date == MISSING_ROW[0]) & (app == MISSING_ROW[1]))
    write_analytics_table(
        old.metrics.filter(not_missing),
        per_user=old.per_user.filter(not_missing),
        table=table,
        export_arn=old.export.export_arn,
        mode="backfill",
        now=NOW,
    )
    day, wrong_app, metric, value = CW_WRONG
    published = old.metrics.filter(~((date == CW_MISSING_ROW[0]) & (app == CW_MISSING_ROW[1]))).with_columns(
        pl.when((date == day) & (app == wrong_app)).then(value).otherwise(pl.col(metric)).alias(metric)
    )
    publish_metrics(published, now=NOW)
