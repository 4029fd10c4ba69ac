"""Analytics Table writer and reader against moto's DynamoDB (server mode)."""

from __future__ import annotations

import datetime as dt
import random
import string

import boto3
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from bubbly_metrics._retry import Backoff
from bubbly_metrics.analytics_table import (
    ITEM_LIMIT,
    TTL_DAYS,
    build_items,
    item_size,
    part_key,
    per_user_from_table,
    read_analytics_table,
    storable,
    write_analytics_table,
)
from bubbly_metrics.exceptions import AnalyticsTableError, InvalidArgumentError
from bubbly_metrics.pipeline import aggregate
from bubbly_metrics.synthetic import generate_items, write_full_export
from tests.aws_helpers import (
    ANALYTICS,
    Faulty,
    RequestLog,
    always_fail,
    client_error,
    create_analytics_table,
    dynamodb_item_size,
    scan_all,
    throttle_first,
    unprocess_half,
    without_generations,
)

NOW = dt.datetime(2025, 3, 18, 2, 30, tzinfo=dt.UTC)
ARN = "arn:aws:dynamodb:eu-west-2:123456789012:table/bubblyclouds-main/export/01742257200000-f9052a71"
NO_WAIT = Backoff(max_attempts=6, sleep=lambda s: None)
SMALL = 20_000  # a byte budget that splits a 2,000-user day into several items, cheaply
TINY = 1_000  # the smallest budget: splits most rows of the small backfill
METRICS = ["date", "app", "active_users", "games_played", "parties_created", "parties_joined"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    items = list(generate_items(n_items=6000, start="2025-01-17", days=60, seed=3))
    # A rarely used app: most of its days have no sessions (zero rows in the dense backfill).
    items += generate_items(n_items=30, start="2025-01-17", days=60, apps=("tiny",), seed=4)
    write_full_export(root, items, export_time="2025-03-18T02:00:00Z", n_files=2)
    return aggregate(str(root), mode="backfill", now=NOW)


def write(result, **kwargs):
    options = {
        "table": ANALYTICS,
        "export_arn": ARN,
        "mode": "backfill",
        "now": NOW,
        "backoff": NO_WAIT,
    }
    options.update(kwargs)
    return write_analytics_table(result.metrics, per_user=result.per_user, **options)


def expected_per_user(result):
    return (
        result.per_user.filter((pl.col("games") > 0) | (pl.col("parties_created") > 0))
        .select("date", "app", "user_id", "games", "parties_created")
        .sort("date", "app", "user_id")
    )


def big_day(n_users: int, *, day=dt.date(2025, 3, 17), app="sudoku", seed=0):
    rng = random.Random(seed)
    users = sorted({"".join(rng.choices(string.ascii_letters + string.digits + "_-", k=21)) for _ in range(n_users)})
    games = [rng.randint(1, 40) for _ in users]
    created = [rng.choice([0, 0, 0, 1, 2]) for _ in users]
    per_user = pl.DataFrame(
        {
            "date": [day] * len(users),
            "app": [app] * len(users),
            "user_id": users,
            "games": games,
            "parties_created": created,
            "parties_joined": [0] * len(users),
        },
        schema_overrides={
            "games": pl.Int64,
            "parties_created": pl.Int64,
            "parties_joined": pl.Int64,
        },
    )
    metrics = pl.DataFrame(
        {
            "date": [day],
            "app": [app],
            "active_users": [len(users)],
            "games_played": [sum(games)],
            "parties_created": [sum(created)],
            "parties_joined": [1234],
        }
    )
    return metrics, per_user


def test_item_shape_follows_the_spec(result):
    groups = build_items(result.metrics, per_user=result.per_user, export_arn=ARN, mode="backfill", now=NOW)
    assert len(groups) == result.metrics.height and all(len(g) == 1 for g in groups)
    by_key = {(g[0]["date"]["S"], g[0]["app"]["S"]): g[0] for g in groups}
    row = result.metrics.filter(pl.col("active_users") > 2).row(0, named=True)
    item = by_key[(row["date"].isoformat(), row["app"])]
    assert item["summary"]["M"] == {
        "activeUsers": {"N": str(row["active_users"])},
        "gamesPlayed": {"N": str(row["games_played"])},
        "partiesCreated": {"N": str(row["parties_created"])},
        "partiesJoined": {"N": str(row["parties_joined"])},
    }
    assert item["partiesJoined"] == {"N": str(row["parties_joined"])}
    users = result.per_user.filter((pl.col("date") == row["date"]) & (pl.col("app") == row["app"]))
    active = users.filter(pl.col("games") > 0)
    assert sorted(item["activeUserIds"]["SS"]) == sorted(active["user_id"].to_list())
    assert item["gamesPerUser"]["M"] == {u: {"N": str(g)} for u, g in active.select("user_id", "games").iter_rows()}
    creators = users.filter(pl.col("parties_created") > 0)
    assert item["partiesCreatedPerUser"]["M"] == {
        u: {"N": str(c)} for u, c in creators.select("user_id", "parties_created").iter_rows()
    }
    assert int(item["expiresAt"]["N"]) == int((NOW + dt.timedelta(days=TTL_DAYS)).timestamp())
    assert item["exportArn"] == {"S": ARN}
    assert item["mode"] == {"S": "backfill"}
    assert item["aggregatedAt"]["S"].startswith("2025-03-18T02:30:00")
    assert item["parts"] == {"N": "1"}


def test_empty_sets_are_omitted(result):
    groups = build_items(result.metrics, per_user=result.per_user, now=NOW)
    quiet = [g[0] for g in groups if g[0]["summary"]["M"]["activeUsers"]["N"] == "0"]
    assert quiet, "the dense backfill has days without sessions"
    for item in quiet:
        assert "activeUserIds" not in item  # DynamoDB rejects empty sets
        assert item["gamesPerUser"] == {"M": {}}
    for group in groups:
        for item in group:
            for value in item.values():
                assert value != {"SS": []}


def test_round_trip_matches_the_library(aws, result):
    create_analytics_table()
    report = write(result)
    assert report["rowsWritten"] == result.metrics.height
    assert report["failures"] == []
    table = read_analytics_table(ANALYTICS)
    assert_frame_equal(table.select(METRICS), result.metrics)
    assert_frame_equal(per_user_from_table(table), expected_per_user(result))
    assert set(table["export_arn"]) == {ARN} and set(table["mode"]) == {"backfill"}
    # A date-range read (one Query per day) returns exactly those days.
    window = read_analytics_table(ANALYTICS, start="2025-02-01", end="2025-02-03")
    assert_frame_equal(
        window.select(METRICS),
        result.metrics.filter(pl.col("date").is_between(dt.date(2025, 2, 1), dt.date(2025, 2, 3))),
    )


def test_each_day_is_one_transaction_within_limits(aws, result):
    log = RequestLog()
    client = log.attach(create_analytics_table())
    report = write(result, client=client, budget=SMALL)
    transactions = log.of("TransactWriteItems")
    assert len(transactions) == report["requests"]["TransactWriteItems"] == result.date_range.days
    for transaction in transactions:
        actions = transaction["TransactItems"]
        assert len(actions) <= 100
        assert len({a[next(iter(a))].get("Item", a[next(iter(a))].get("Key"))["date"]["S"] for a in actions}) <= 2
    bases = [a["Put"]["Item"] for t in transactions for a in t["TransactItems"] if "Put" in a]
    assert len(bases) == result.metrics.height
    batches = log.of("BatchWriteItem")
    assert report["requests"]["BatchWriteItem"] == len(batches)
    assert all(sum(len(v) for v in b["RequestItems"].values()) <= 25 for b in batches)
    staged = sum(len(v) for b in batches for v in b["RequestItems"].values())
    assert staged == report["items"] - result.metrics.height


def test_a_day_with_30000_active_users_is_stored_and_read_back_exactly(aws):
    metrics, per_user = big_day(30_000)
    log = RequestLog()
    client = log.attach(create_analytics_table())
    report = write_analytics_table(metrics, per_user=per_user, table=ANALYTICS, now=NOW, client=client, backoff=NO_WAIT)
    assert report["splitRows"] == 1 and report["items"] > 1
    sent = [a["Put"]["Item"] for t in log.of("TransactWriteItems") for a in t["TransactItems"] if "Put" in a]
    sent += [r["PutRequest"]["Item"] for b in log.of("BatchWriteItem") for r in b["RequestItems"][ANALYTICS]]
    assert len(sent) == report["items"]
    for item in sent:
        assert dynamodb_item_size(item) <= ITEM_LIMIT
        assert item_size(item) <= ITEM_LIMIT
    generation = report["generation"]
    assert {i["app"]["S"] for i in sent} == {"sudoku"} | {
        part_key("sudoku", n, generation) for n in range(1, len(sent))
    }
    assert {i["generation"]["S"] for i in sent} == {generation}
    table = read_analytics_table(ANALYTICS, start="2025-03-17", end="2025-03-17")
    assert table.height == 1
    assert_frame_equal(table.select(METRICS), metrics, check_dtypes=False)
    assert table["active_user_ids"][0].to_list() == per_user["user_id"].to_list()
    expected = per_user.filter((pl.col("games") > 0) | (pl.col("parties_created") > 0)).select(
        "date", "app", "user_id", "games", "parties_created"
    )
    assert_frame_equal(per_user_from_table(table), expected)


def test_rewriting_a_day_replaces_it_and_removes_stale_parts(aws):
    create_analytics_table()
    big, big_users = big_day(2_000)
    other, other_users = big_day(50, app="chess")
    write_analytics_table(
        pl.concat([big, other]),
        per_user=pl.concat([big_users, other_users]),
        table=ANALYTICS,
        now=NOW,
        backoff=NO_WAIT,
        budget=SMALL,
    )
    keys_before = set(scan_all())
    assert any(a.startswith("sudoku#part-") for _, a in keys_before)
    # A neighbouring day that must not be touched.
    side, side_users = big_day(10, day=dt.date(2025, 3, 16))
    write_analytics_table(side, per_user=side_users, table=ANALYTICS, now=NOW, backoff=NO_WAIT, budget=SMALL)

    small, small_users = big_day(100, seed=9)
    report = write_analytics_table(
        small,
        per_user=small_users,
        table=ANALYTICS,
        now=NOW + dt.timedelta(days=1),
        backoff=NO_WAIT,
        budget=SMALL,
    )
    # chess is no longer in the result for that day, and sudoku no longer needs parts.
    assert report["staleItemsDeleted"] == len(keys_before) - 1
    assert set(scan_all()) == {("2025-03-17", "sudoku"), ("2025-03-16", "sudoku")}
    table = read_analytics_table(ANALYTICS)
    assert table.filter(pl.col("date") == dt.date(2025, 3, 17))["active_users"].to_list() == [100]
    assert table.filter(pl.col("date") == dt.date(2025, 3, 16))["active_users"].to_list() == [10]

    # And back to a large day: the split version replaces the single item atomically.
    write_analytics_table(big, per_user=big_users, table=ANALYTICS, now=NOW, backoff=NO_WAIT, budget=SMALL)
    day = read_analytics_table(ANALYTICS, start="2025-03-17", end="2025-03-17")
    assert day["active_users"].to_list() == [2_000]
    assert len(day["active_user_ids"][0]) == 2_000


def test_an_empty_result_for_a_replaced_day_empties_it(aws, result):
    create_analytics_table()
    write(result)
    day = dt.date(2025, 2, 2)
    empty = result.metrics.clear()
    write_analytics_table(empty, per_user=result.per_user.clear(), table=ANALYTICS, dates=[day], now=NOW)
    left = read_analytics_table(ANALYTICS)
    assert day not in set(left["date"])
    assert left.height == result.metrics.filter(pl.col("date") != day).height


def test_rewrite_with_same_inputs_is_identical(aws, result):
    create_analytics_table()
    write(result, budget=SMALL)
    first = scan_all()
    write(result, budget=SMALL)
    second = scan_all()
    assert without_generations(second) == without_generations(first)
    assert {i["generation"]["S"] for i in second.values()} != {i["generation"]["S"] for i in first.values()}


def test_throttling_and_unprocessed_items_are_retried(aws, result):
    real = create_analytics_table()
    write(result, budget=TINY)
    clean = without_generations(scan_all())
    boto3.client("dynamodb").delete_table(TableName=ANALYTICS)
    create_analytics_table()
    flaky = Faulty(
        real,
        batch_write_item=_chain(
            throttle_first(2, "ProvisionedThroughputExceededException"), 2, unprocess_half(rounds=8)
        ),
        transact_write_items=throttle_first(2, "ThrottlingException"),
    )
    sleeps: list[float] = []
    report = write(result, client=flaky, backoff=Backoff(max_attempts=10, sleep=sleeps.append), budget=TINY)
    assert report["failures"] == [] and report["rowsWritten"] == result.metrics.height
    assert flaky.counts["transact_write_items"] == result.date_range.days + 2
    assert without_generations(scan_all()) == clean
    assert len(sleeps) >= 3
    assert sleeps == [s for s in sleeps if s > 0]


def _chain(first, n_first, second):
    """``first`` handles the first ``n_first`` calls, ``second`` the rest (numbered from 1)."""

    def combined(call, kwargs, real):
        if call <= n_first:
            return first(call, kwargs, real)
        return second(call - n_first, kwargs, real)

    return combined


def test_items_that_stay_unprocessed_are_reported_not_lost(aws, result):
    real = create_analytics_table()
    stuck = Faulty(real, batch_write_item=lambda call, kwargs, real: {"UnprocessedItems": kwargs["RequestItems"]})
    with pytest.raises(AnalyticsTableError, match="not written") as info:
        write(result, client=stuck, backoff=Backoff(max_attempts=3, sleep=lambda s: None), budget=TINY)
    report = info.value.report
    # Days whose parts could not be staged are not written at all; the others are whole.
    written_days = set(report["daysWritten"])
    assert written_days and len(written_days) < result.date_range.days
    assert {d for d, _ in scan_all()} == written_days
    table = read_analytics_table(ANALYTICS)
    expected = result.metrics.filter(pl.col("date").cast(pl.String).is_in(sorted(written_days)))
    assert_frame_equal(table.select(METRICS), expected)
    assert report["rowsWritten"] == expected.height


def test_a_split_row_retries_transaction_conflicts(aws):
    metrics, per_user = big_day(2_000)
    real = create_analytics_table()

    def conflict_once(call, kwargs, method):
        if call == 1:
            error = client_error("TransactionCanceledException", "TransactWriteItems")
            error.response["CancellationReasons"] = [{"Code": "TransactionConflict"}]
            raise error
        return method(**kwargs)

    flaky = Faulty(real, transact_write_items=conflict_once)
    report = write_analytics_table(
        metrics,
        per_user=per_user,
        table=ANALYTICS,
        now=NOW,
        client=flaky,
        backoff=NO_WAIT,
        budget=SMALL,
    )
    assert flaky.counts["transact_write_items"] == 2
    assert report["failures"] == []
    assert read_analytics_table(ANALYTICS)["active_users"].to_list() == [2_000]


def test_a_failed_split_row_keeps_its_previous_version(aws):
    create_analytics_table()
    old, old_users = big_day(2_000, seed=1)
    write_analytics_table(old, per_user=old_users, table=ANALYTICS, now=NOW, backoff=NO_WAIT, budget=SMALL)
    before = scan_all()
    new, new_users = big_day(1_900, seed=2)
    broken = Faulty(boto3.client("dynamodb"), transact_write_items=always_fail("ValidationException"))
    with pytest.raises(AnalyticsTableError, match="2025-03-17/sudoku"):
        write_analytics_table(
            new,
            per_user=new_users,
            table=ANALYTICS,
            now=NOW,
            client=broken,
            backoff=NO_WAIT,
            budget=SMALL,
        )
    assert scan_all() == before


def test_the_reader_refuses_an_incomplete_split_row(aws):
    create_analytics_table()
    metrics, per_user = big_day(2_000)
    report = write_analytics_table(metrics, per_user=per_user, table=ANALYTICS, now=NOW, backoff=NO_WAIT, budget=SMALL)
    boto3.client("dynamodb").delete_item(
        TableName=ANALYTICS,
        Key={"date": {"S": "2025-03-17"}, "app": {"S": part_key("sudoku", 1, report["generation"])}},
    )
    with pytest.raises(AnalyticsTableError, match="2025-03-17/sudoku is incomplete"):
        read_analytics_table(ANALYTICS, now=NOW)
    # Past its expiresAt, a row losing parts is TTL at work: left out, not an error.
    expired = NOW + dt.timedelta(days=TTL_DAYS, seconds=1)
    assert read_analytics_table(ANALYTICS, now=expired).is_empty()


def test_a_missing_table_is_a_clear_error(aws, result):
    with pytest.raises(AnalyticsTableError, match="does the table exist"):
        write(result)
    with pytest.raises(AnalyticsTableError, match="does the table exist"):
        read_analytics_table(ANALYTICS)


def test_arguments_are_validated(result):
    with pytest.raises(InvalidArgumentError, match="table"):
        write_analytics_table(result.metrics, per_user=result.per_user, table="")
    with pytest.raises(InvalidArgumentError, match="lacks column"):
        build_items(result.metrics.drop("games_played"), per_user=None)
    with pytest.raises(InvalidArgumentError, match="naive"):
        build_items(result.metrics, per_user=None, now=dt.datetime(2025, 1, 1))
    with pytest.raises(InvalidArgumentError, match="after end"):
        read_analytics_table(ANALYTICS, start="2025-02-02", end="2025-02-01")


def test_a_row_too_big_for_one_transaction_is_still_written_whole(aws):
    metrics, per_user = big_day(2_000)
    log = RequestLog()
    client = log.attach(create_analytics_table())
    report = write_analytics_table(metrics, per_user=per_user, table=ANALYTICS, now=NOW, client=client, budget=1_000)
    assert report["items"] > 100  # more than one transaction may hold
    (flip,) = log.of("TransactWriteItems")  # parts staged beforehand; the flip is one transaction
    assert len(flip["TransactItems"]) == 2  # the base item, and the (absent) ledger entry's delete
    assert all(len(b["RequestItems"][ANALYTICS]) <= 25 for b in log.of("BatchWriteItem"))
    table = read_analytics_table(ANALYTICS)
    assert table["parts"].to_list() == [report["items"]]
    assert table["active_user_ids"][0].to_list() == per_user["user_id"].to_list()


def test_transactions_stay_within_limits(aws):
    metrics, per_user = big_day(2_000)
    log = RequestLog()
    client = log.attach(create_analytics_table())
    write_analytics_table(metrics, per_user=per_user, table=ANALYTICS, now=NOW, client=client, budget=SMALL)
    (transaction,) = log.of("TransactWriteItems")
    puts = [a["Put"]["Item"] for a in transaction["TransactItems"] if "Put" in a]
    assert 1 < len(transaction["TransactItems"]) <= 100
    assert sum(dynamodb_item_size(i) for i in puts) <= 4_000_000


def test_an_app_too_long_for_a_sort_key_is_reported_and_the_rest_written(aws):
    long_app = "x" * 1100  # a modelId may hold 2048 bytes; a sort key only 1024
    day = dt.date(2025, 3, 17)
    metrics = pl.DataFrame(
        {"date": [day, day], "app": ["sudoku", long_app], **{c: [3, 4] for c in METRICS[2:]}},
        schema_overrides={c: pl.Int64 for c in METRICS[2:]},
    )
    create_analytics_table()
    kept, refused = storable(build_items(metrics, per_user=None, now=NOW))  # what a dry run reports
    assert [g[0]["app"]["S"] for g in kept] == ["sudoku"] and len(refused) == 1
    with pytest.raises(AnalyticsTableError, match="a sort key of 1100 bytes") as raised:
        write_analytics_table(metrics, per_user=None, table=ANALYTICS, now=NOW, backoff=NO_WAIT)
    message = str(raised.value)
    assert "1 of 2 (date, app) row(s) not written" in message and long_app not in message
    assert set(scan_all(ANALYTICS)) == {("2025-03-17", "sudoku")}


def test_a_table_written_before_generations_is_read_and_replaced_whole(aws):
    # Items as the library wrote them before: parts keyed {app}#part-{n}, no generation.
    ddb = create_analytics_table()
    old, old_users = big_day(2_000, seed=1)
    legacy = [i for g in build_items(old, per_user=old_users, now=NOW, budget=SMALL) for i in g]
    assert "generation" not in legacy[0] and legacy[1]["app"]["S"] == "sudoku#part-1"
    for i in range(0, len(legacy), 25):
        ddb.batch_write_item(RequestItems={ANALYTICS: [{"PutRequest": {"Item": it}} for it in legacy[i : i + 25]]})
    day = read_analytics_table(ANALYTICS)
    assert day["active_users"].to_list() == [2_000] and len(day["active_user_ids"][0]) == 2_000

    new, new_users = big_day(1_500, seed=2)
    report = write_analytics_table(new, per_user=new_users, table=ANALYTICS, now=NOW, backoff=NO_WAIT, budget=SMALL)
    assert report["staleItemsDeleted"] == len(legacy) - 1  # every legacy part; the base was replaced
    items = scan_all()
    assert {i["generation"]["S"] for i in items.values()} == {report["generation"]}
    assert read_analytics_table(ANALYTICS)["active_users"].to_list() == [1_500]


def test_a_day_of_more_apps_than_one_transaction_holds_is_written_in_several(aws):
    # Not atomic (docs/operations.md says so); written whole when nothing fails.
    day = dt.date(2025, 3, 17)
    apps = [f"app{i:03d}" for i in range(120)]
    metrics = pl.DataFrame(
        {"date": [day] * 120, "app": apps, **{c: [1] * 120 for c in METRICS[2:]}},
        schema_overrides={c: pl.Int64 for c in METRICS[2:]},
    )
    log = RequestLog()
    client = log.attach(create_analytics_table())
    write_analytics_table(metrics, per_user=None, table=ANALYTICS, now=NOW, client=client, backoff=NO_WAIT)
    assert [len(t["TransactItems"]) for t in log.of("TransactWriteItems")] == [99, 22]
    assert read_analytics_table(ANALYTICS)["app"].to_list() == apps
