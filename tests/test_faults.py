"""All-or-nothing publish under faults (issue #24), against moto's server.

A fault-injecting hook sits between the code and moto (botocore's ``before-call`` event on the
DynamoDB client): it numbers every write request and kills the publishing run at write ``n``,
for every ``n`` a clean publish makes.  In-process the kill is an exception no code catches
(``Killed`` is a ``BaseException``: no ``except Exception``, no cleanup runs after it, nothing
more is sent -- what a dead process leaves); a few points are also killed for real
(``SIGKILL`` of a subprocess) to show the two leave the same table.  After each kill:

- every day is wholly the old export's or wholly the new one's: its base items carry one
  generation, the ledger entry names that generation and the export whose rows are there,
  and the day reads back equal to that export's day;
- the reader accepts the whole table;
- a re-run completes it (the table then equals a clean publish of the new export).

Then two publishes of the same days race (threads, a random delay before each transaction
widening the window) 10 times, including a row split into more parts than one transaction
holds; and a data file expires mid-run.

What moto cannot show: it does not isolate concurrent transactions (it applies one action at
a time, unlocked).  The suite's server fixture makes every moto write hold one lock and a
failed transaction restore only its own items (``tests.aws_helpers.isolate_transactions``),
which is what DynamoDB guarantees (a transaction is serialisable with every other write to
its items); Query and Scan stay unlocked, read-committed as in DynamoDB.  So the races test
the protocol *given* DynamoDB's isolation; that DynamoDB provides it is documented, not tested.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import boto3
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from bubbly_metrics import analytics_table
from bubbly_metrics._retry import Backoff
from bubbly_metrics.analytics_table import ITEM_BUDGET, part_key, read_analytics_table, table_from_items
from bubbly_metrics.cloudwatch import read_cloudwatch_metrics
from bubbly_metrics.exceptions import IncompleteExportError, PublishError
from bubbly_metrics.ledger import read_ledger
from bubbly_metrics.pipeline import aggregate
from bubbly_metrics.publish import publish
from bubbly_metrics.synthetic import generate_items, write_full_export
from tests.aws_helpers import ANALYTICS, BUCKET, create_analytics_table, scan_all
from tests.conftest import upload_tree

START, END = dt.date(2025, 3, 1), dt.date(2025, 3, 4)
DAYS = [(START + dt.timedelta(days=i)).isoformat() for i in range(4)]
OLD_NOW = dt.datetime(2025, 3, 5, 3, 0, tzinfo=dt.UTC)
NEW_NOW = dt.datetime(2025, 3, 6, 3, 0, tzinfo=dt.UTC)
SPLIT = 1_000  # the smallest item budget: most rows are split into parts
WRITES = frozenset({"BatchWriteItem", "TransactWriteItems", "PutItem", "DeleteItem", "UpdateItem"})
NO_WAIT = Backoff(max_attempts=6, sleep=lambda s: None)


class Killed(BaseException):
    """The run died here: nothing catches it, nothing after it is sent."""


def _export(root: Path, *, seed: int, export_time: str, n_items: int = 2_000, days: int = 4, apps=None) -> Path:
    extra = {"apps": apps} if apps else {}
    items = generate_items(n_items=n_items, start=START, days=days, seed=seed, **extra)
    write_full_export(root, items, export_time=export_time, n_files=2, seed=seed)
    return root


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """An older and a newer full export of the same four days, with different data."""
    old = _export(tmp_path_factory.mktemp("old"), seed=1, export_time="2025-03-05T02:00:00Z")
    new = _export(tmp_path_factory.mktemp("new"), seed=2, export_time="2025-03-06T02:00:00Z")
    run = {"mode": "backfill", "start": START, "end": END}
    return aggregate(str(old), now=OLD_NOW, **run), aggregate(str(new), now=NEW_NOW, **run)


def _client(kill_at: int | None = None, *, delay: float = 0.0):
    """A DynamoDB client whose write number ``kill_at`` kills the run; ``counts`` numbers them."""
    client = boto3.client("dynamodb")
    counts = {"writes": 0}

    def hook(model, **_):
        if model.name in WRITES:
            counts["writes"] += 1
            if counts["writes"] == kill_at:
                raise Killed(f"killed before write {kill_at} ({model.name})")
            if delay and model.name == "TransactWriteItems":
                time.sleep(random.uniform(0, delay))

    client.meta.events.register("before-call.dynamodb.*", hook)
    client.counts = counts  # type: ignore[attr-defined]
    return client


def _publish(result, *, now, budget, client=None):
    return publish(
        result,
        table=ANALYTICS,
        cloudwatch=False,
        now=now,
        dynamodb_client=client or boto3.client("dynamodb"),
        backoff=NO_WAIT,
        budget=budget,
    ).to_dict()


def _by_day(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return {day: frame.filter(pl.col("date") == dt.date.fromisoformat(day)) for day in DAYS}


def _fresh_table(snapshot: dict | None = None) -> None:
    """An Analytics Table holding exactly ``snapshot`` (a ``scan_all()``), or empty."""
    ddb = boto3.client("dynamodb")
    if ANALYTICS in ddb.list_tables()["TableNames"]:
        ddb.delete_table(TableName=ANALYTICS)
    create_analytics_table()
    items = list((snapshot or {}).values())
    for i in range(0, len(items), 25):
        ddb.batch_write_item(RequestItems={ANALYTICS: [{"PutRequest": {"Item": it}} for it in items[i : i + 25]]})


def check_days(old_days: dict[str, pl.DataFrame] | None, new_days: dict[str, pl.DataFrame], new_id: str) -> list[str]:
    """Assert every day is wholly old or wholly new, rows and ledger agreeing; return which."""
    raw = scan_all()
    table = table_from_items(raw.values())  # the reader accepts the whole table (read_analytics_table's check)
    states = []
    for day in DAYS:
        bases = [item for (d, a), item in raw.items() if d == day and "#part-" not in a]
        generations = {b.get("generation", {}).get("S") for b in bases}
        entry = raw.get(("#ledger", day))
        got = table.filter(pl.col("date") == dt.date.fromisoformat(day))
        if entry is None:
            # No ledger entry: the day must hold what it held before a ledgered publish.
            assert old_days is None and not bases, f"{day}: rows without a ledger entry"
            states.append("old")
            continue
        assert generations == {entry["generation"]["S"]}, f"{day}: rows of {generations}, ledger {entry}"
        state = "new" if entry["exportId"]["S"] == new_id else "old"
        expected = new_days[day] if state == "new" else (old_days or {})[day]
        assert_frame_equal(got, expected)
        states.append(state)
    return states


SCENARIOS = {
    "empty table, split rows": (False, SPLIT),
    "older backfill, whole rows": (True, ITEM_BUDGET),
    "older backfill, split rows": (True, SPLIT),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_killed_at_every_write_every_day_is_whole_and_a_rerun_completes(aws, exports, scenario, monkeypatch):
    with_old, budget = SCENARIOS[scenario]
    old, new = exports
    new_id = new.export.export_id
    _fresh_table()
    before = None
    if with_old:
        _publish(old, now=OLD_NOW, budget=budget)
        before = scan_all()
    old_days = _by_day(read_analytics_table(ANALYTICS)) if with_old else None
    counter = _client()
    _publish(new, now=NEW_NOW, budget=budget, client=counter)
    new_days = _by_day(read_analytics_table(ANALYTICS))
    total = counter.counts["writes"]
    assert check_days(old_days, new_days, new_id) == ["new"] * 4
    assert total >= len(DAYS)  # per day: the flip (and staging and deleting parts, if split)

    seen: set[tuple[str, ...]] = set()
    for n in range(1, total + 1):
        _fresh_table(before)
        with pytest.raises(Killed):
            _publish(new, now=NEW_NOW, budget=budget, client=_client(kill_at=n))
        # Every day whole; the ledger (what a redelivered event checks) names the new export
        # exactly for the days whose rows are new.
        states = check_days(old_days, new_days, new_id)
        seen.add(tuple(states))
        _publish(new, now=NEW_NOW, budget=budget)
        assert check_days(old_days, new_days, new_id) == ["new"] * 4, f"re-run after a kill at write {n}"
        # What the killed run had staged and not flipped is left, named by no base item, for
        # one day at most; a write of that day an hour later deletes it.
        orphans = _unnamed_parts()
        assert len({(d, g) for d, g, _ in orphans}) <= 1, orphans
    print(f"{scenario}: {total} kill points, day states seen: {sorted(seen)}")
    # The kills did land between days: some runs left some days new and the rest old.
    assert len(seen) >= 3, seen
    monkeypatch.setattr(analytics_table.day, "ORPHAN_SECONDS", -1)
    _publish(new, now=NEW_NOW, budget=budget)
    assert _unnamed_parts() == []


def _unnamed_parts() -> list[tuple[str, str, str]]:
    """(day, generation, key) of every part item no base item names."""
    raw = scan_all()
    named = set()
    for (day, key), item in raw.items():
        if "#part-" not in key and day != "#ledger":
            generation = item.get("generation", {}).get("S")
            named |= {(day, part_key(key, n, generation)) for n in range(1, int(item["parts"]["N"]))}
    return sorted(
        (day, item.get("generation", {}).get("S", ""), key)
        for (day, key), item in raw.items()
        if "#part-" in key and (day, key) not in named
    )


SCRIPT = textwrap.dedent(
    """
    import datetime as dt, os, signal, sys
    import boto3
    from bubbly_metrics.pipeline import aggregate
    from bubbly_metrics.publish import publish

    root, kill_at, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    result = aggregate(root, mode="backfill", start="2025-03-01", end="2025-03-04",
                       now=dt.datetime(2025, 3, 6, 3, 0, tzinfo=dt.UTC))
    client = boto3.client("dynamodb")
    writes = 0

    def hook(model, **_):
        global writes
        if model.name in {"BatchWriteItem", "TransactWriteItems"}:
            writes += 1
            if writes == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    client.meta.events.register("before-call.dynamodb.*", hook)
    publish(result, table=sys.argv[4], cloudwatch=False, now=dt.datetime(2025, 3, 6, 3, 0, tzinfo=dt.UTC),
            dynamodb_client=client, budget=budget)
    """
)


def test_a_real_sigkill_leaves_what_the_in_process_kill_leaves(aws, exports, tmp_path):
    old, new = exports
    new_root = tmp_path / "new"
    _export(new_root, seed=2, export_time="2025-03-06T02:00:00Z")
    _fresh_table()
    _publish(old, now=OLD_NOW, budget=SPLIT)
    before = scan_all()
    old_days = _by_day(read_analytics_table(ANALYTICS))
    _fresh_table()
    _publish(new, now=NEW_NOW, budget=SPLIT)
    new_days = _by_day(read_analytics_table(ANALYTICS))
    for kill_at in (4, 7):  # the 2nd day's flip, and a write within the 3rd day
        _fresh_table(before)
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(new_root), str(kill_at), str(SPLIT), ANALYTICS],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        assert proc.returncode == -9, proc.stderr[-2000:]
        states = check_days(old_days, new_days, new.export.export_id)
        assert "old" in states and "new" in states, states
        # The same point killed in-process leaves the same days.
        _fresh_table(before)
        with pytest.raises(Killed):
            _publish(new, now=NEW_NOW, budget=SPLIT, client=_client(kill_at=kill_at))
        assert check_days(old_days, new_days, new.export.export_id) == states


@pytest.fixture(scope="module")
def big_rows(exports):
    """Two runs (of two exports) of one day with a row too big for one transaction (> 100 parts at SPLIT).

    Built as the aggregation's per-user table directly: generating an export that large takes
    longer than the races themselves.
    """
    from bubbly_metrics.dates import DateRange
    from bubbly_metrics.metrics import daily_metrics

    results = []
    for seed, base in zip((5, 6), exports, strict=True):
        rng = random.Random(seed)
        users = [f"user{seed}x{i:05d}" for i in range(3_500)] + [f"chess{i:03d}" for i in range(40)]
        activity = pl.DataFrame(
            {
                "date": [START] * len(users),
                "app": ["sudoku"] * 3_500 + ["chess"] * 40,
                "user_id": users,
                "games": [rng.randint(1, 30) for _ in users],
                "parties_created": [rng.choice([0, 0, 1, 2]) for _ in users],
                "parties_joined": [rng.choice([0, 1]) for _ in users],
            }
        )
        date_range = DateRange(START, START)
        metrics = daily_metrics(activity, date_range, dense=True).collect()
        results.append(dataclasses.replace(base, date_range=date_range, activity=activity, metrics=metrics))
    return results


def _race(first, second) -> list[str]:
    """Publish ``first`` and ``second`` at once (threads); how each ended."""
    clients = [_client(delay=0.05), _client(delay=0.05)]
    barrier = threading.Barrier(2)
    results: list[str] = []

    def run(result, client, now):
        barrier.wait()
        try:
            report = _publish(result, now=now, budget=SPLIT, client=client)
            results.append("same-export" if report["analyticsTable"]["daysWrittenByAnotherRun"] else "wrote")
        except PublishError as exc:
            results.append("stopped" if "changed by another run" in str(exc) else repr(exc))
        except Exception as exc:  # reported by the test, not lost in the thread
            results.append(repr(exc))

    threads = [
        threading.Thread(target=run, args=(first, clients[0], NEW_NOW)),
        threading.Thread(target=run, args=(second, clients[1], NEW_NOW + dt.timedelta(seconds=1))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_publishes_of_the_same_days_race_safely(aws, exports, big_rows):
    big_a, big_b = big_rows
    old, new = exports
    create_analytics_table()
    parts = max(int(g) for g in _parts_of(big_b))
    assert parts > 100, parts  # one row is split past what one transaction could hold
    # The same export delivered twice (a completion event and the safety net), and two
    # different exports; a row of > 100 parts in the first three races.
    pairs = [(big_a, big_a), (big_a, big_b), (big_b, big_a)]
    pairs += [(old, old), (old, new), (new, new), (new, old), (old, new), (new, new), (old, old)]
    outcomes: list[str] = []
    for first, second in pairs:
        results = _race(first, second)
        assert all(r in ("wrote", "same-export", "stopped") for r in results), results
        outcomes.append("+".join(sorted(results)))
        # Never a half-formed row, never a ledger day that is not in the table.
        table = read_analytics_table(ANALYTICS, start=first.date_range.start, end=first.date_range.end)
        ledger = read_ledger(ANALYTICS, start=first.date_range.start, end=first.date_range.end)
        for i in range(first.date_range.days):
            day = first.date_range.start + dt.timedelta(days=i)
            entry = ledger[day].to_dict()
            bases = _base_items(day.isoformat())
            assert {it["generation"]["S"] for it in bases} == {entry["generation"]}
            winner = first if entry["exportId"] == first.export.export_id else second
            assert entry["exportId"] == winner.export.export_id
            got = table.filter(pl.col("date") == day)
            want = winner.metrics.filter(pl.col("date") == day)
            assert_frame_equal(got.select(want.columns), want)
            assert got["active_user_ids"].list.len().to_list() == want["active_users"].to_list()
            assert (
                got["games_per_user"]
                .list.eval(pl.element().struct.field("games").sum())
                .explode()
                .fill_null(0)
                .to_list()
                == want["games_played"].to_list()
            )
    print("race outcomes:", outcomes)
    # Both ways of ending were seen: a run finding its day written by a concurrent run.
    assert any("stopped" in o or "same-export" in o for o in outcomes), outcomes


def _base_items(day: str) -> list[dict]:
    page = boto3.client("dynamodb").query(
        TableName=ANALYTICS,
        KeyConditionExpression="#d = :d",
        ProjectionExpression="#d, #a, generation",
        ExpressionAttributeNames={"#d": "date", "#a": "app"},
        ExpressionAttributeValues={":d": {"S": day}},
        ConsistentRead=True,
    )
    assert "LastEvaluatedKey" not in page
    return [item for item in page["Items"] if "#part-" not in item["app"]["S"]]


def _parts_of(result) -> list[str]:
    from bubbly_metrics.analytics_table import build_items

    return [g[0]["parts"]["N"] for g in build_items(result.metrics, per_user=result.per_user, budget=SPLIT)]


def test_a_data_file_expiring_mid_run_leaves_table_and_cloudwatch_as_they_were(aws, exports, tmp_path):
    from bubbly_metrics.cli import main

    old, _ = exports
    create_analytics_table()
    now = dt.datetime(2025, 3, 5, 3, 0, tzinfo=dt.UTC)
    publish(old, table=ANALYTICS, now=now, backoff=NO_WAIT)
    before = scan_all()
    cloudwatch_before = read_cloudwatch_metrics(start=START, end=END)
    assert cloudwatch_before.height > 0

    root = _export(tmp_path / "bucket", seed=3, export_time="2025-03-05T02:00:00Z")
    location = upload_tree(root, BUCKET, aws)
    s3 = boto3.client("s3")
    data = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"] if o["Key"].endswith(".json.gz"))
    assert len(data) == 2
    # The run has found the export (its manifest lists both files); then the bucket's one-day
    # expiry removes one before it is read.  (Removed *while* being read, s3fs raises from the
    # read: the run fails before publishing anything, with s3fs's message.)
    from bubbly_metrics.exports import find_export

    export = find_export(location, export_type="FULL")
    expired = [data[1]]
    s3.delete_object(Bucket=BUCKET, Key=expired[0])
    result = aggregate(export, mode="backfill", start=START, end=END, now=now)
    assert [f for f, _ in result.unreadable_files()] == [expired[0]]
    with pytest.raises(IncompleteExportError, match="could not be read") as raised:
        publish(result, table=ANALYTICS, now=now, backoff=NO_WAIT)
    assert expired[0] in str(raised.value) and "Nothing was published" in str(raised.value)
    assert scan_all() == before
    assert_frame_equal(read_cloudwatch_metrics(start=START, end=END), cloudwatch_before)

    # The CLI says so in one line and exits non-zero; --allow-partial publishes, marked partial.
    args = ["aggregate", location, "--mode", "backfill", "--start", str(START), "--end", str(END)]
    args += ["--publish", "--analytics-table", ANALYTICS, "--no-cloudwatch"]
    from io import StringIO

    out, err = StringIO(), StringIO()
    assert main(args, stdout=out, stderr=err) != 0
    assert expired[0] in err.getvalue() and "--allow-partial" in err.getvalue()
    assert scan_all() == before
    assert main([*args, "--allow-partial"], stdout=StringIO(), stderr=StringIO()) == 0
    ledger = read_ledger(ANALYTICS)
    assert all(e.partial and e.unreadable_files == 1 for e in ledger.values())
    # A partial day is not "aggregated": gaps lists it, so the daily run exports it again.
    from bubbly_metrics.gaps import find_gaps

    gaps = find_gaps(ANALYTICS, start=START, end=END, now=now)
    assert [d.status for d in gaps.days] == ["missing"] * 4
    assert "published partially" in gaps.days[0].note


def test_a_publish_short_of_time_stops_before_a_day_and_the_next_run_finishes(aws, exports):
    old, new = exports
    create_analytics_table()
    _publish(old, now=OLD_NOW, budget=SPLIT)
    old_days = _by_day(read_analytics_table(ANALYTICS))
    _fresh_table()
    _publish(new, now=NEW_NOW, budget=SPLIT)
    new_days = _by_day(read_analytics_table(ANALYTICS))
    _fresh_table()
    _publish(old, now=OLD_NOW, budget=SPLIT)

    budgets = iter([60.0, 60.0, 1.5, 60.0])  # seconds left as each day is about to start
    client = _client()
    with pytest.raises(PublishError, match="stopped before 2025-03-03 with too little time left") as raised:
        publish(
            new,
            table=ANALYTICS,
            cloudwatch=False,
            now=NEW_NOW,
            dynamodb_client=client,
            backoff=NO_WAIT,
            budget=SPLIT,
            time_left=lambda: next(budgets),
        )
    assert "re-run from 2025-03-03" in str(raised.value)
    table = raised.value.report["analyticsTable"]
    assert table["daysWritten"] == DAYS[:2] and table["daysLeft"] == DAYS[2:]
    assert check_days(old_days, new_days, new.export.export_id) == ["new", "new", "old", "old"]
    # The next automatic run of the same export (resume) writes only what is left.
    report = _publish_resumed(new)
    assert report["analyticsTable"]["daysAlreadyDone"] == DAYS[:2]
    assert report["analyticsTable"]["daysWritten"] == DAYS[2:]
    assert check_days(old_days, new_days, new.export.export_id) == ["new"] * 4


def _publish_resumed(result):
    return publish(
        result,
        table=ANALYTICS,
        cloudwatch=False,
        now=NEW_NOW,
        dynamodb_client=boto3.client("dynamodb"),
        backoff=NO_WAIT,
        budget=SPLIT,
        resume=True,
    ).to_dict()


def test_a_data_file_denied_to_the_reader_makes_the_run_incomplete(exports, tmp_path, monkeypatch):
    from fsspec.implementations.local import LocalFileSystem

    root = _export(tmp_path / "bucket", seed=4, export_time="2025-03-05T02:00:00Z")
    denied = sorted(root.rglob("*.json.gz"))[0]
    real_open = LocalFileSystem._open

    def open_(self, path, *args, **kwargs):
        if Path(path) == denied:
            raise PermissionError(f"Access Denied: {path}")  # what s3fs raises on a 403
        return real_open(self, path, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "_open", open_)
    result = aggregate(str(root), mode="backfill", start=START, end=END, now=OLD_NOW)
    ((file, reason),) = result.unreadable_files()
    assert file.endswith(denied.name) and reason == "missing_data_file"
    with pytest.raises(IncompleteExportError, match=denied.name):
        publish(result, table=ANALYTICS, now=OLD_NOW, dynamodb_client=object(), cloudwatch_client=object())


def test_a_flip_whose_response_is_lost_is_not_undone(aws, exports):
    # The transaction commits, the response is lost (a 500 after the write, a reset): the retry
    # finds its conditions failed -- on this run's own flip.  (DynamoDB would answer the retry
    # from its ClientRequestToken; moto does not.)  The staged parts must stay.
    from tests.aws_helpers import Faulty, client_error

    _, new = exports
    _fresh_table()

    def lost(call, kwargs, real):
        response = real(**kwargs)
        if call == 2:
            raise client_error("InternalServerError", "TransactWriteItems")
        return response

    flaky = Faulty(boto3.client("dynamodb"), transact_write_items=lost)
    report = _publish(new, now=NEW_NOW, budget=SPLIT, client=flaky)
    assert report["failures"] == [] and flaky.counts["transact_write_items"] == len(DAYS) + 1
    assert_frame_equal(read_analytics_table(ANALYTICS).select(new.metrics.columns), new.metrics)
    assert check_days(None, _by_day(read_analytics_table(ANALYTICS)), new.export.export_id) == ["new"] * 4
