"""The Analytics Table: daily per-app items written from metrics, and read back (SPEC §5.1).

One item per ``(date, app)`` (partition key ``date``, sort key ``app``)::

    date, app                 S     the day (YYYY-MM-DD) and the app
    summary                   M     activeUsers, gamesPlayed, partiesCreated, partiesJoined (N)
    partiesJoined             N
    activeUserIds             SS    users with a session that day (omitted when empty)
    gamesPerUser              M     userId -> N
    partiesCreatedPerUser     M     userId -> N
    expiresAt                 N     epoch seconds, now + 455 days (the table's TTL attribute)
    exportArn, mode, aggregatedAt  S   provenance: which export, which mode, when
    parts                     N     how many items hold this (date, app) (1 unless split)

DynamoDB items are limited to 400 KB.  A day whose per-user data would not fit is split
losslessly: the first item (sort key ``app``) holds the summary and as many per-user entries
as fit; the rest go to items with sort key ``{app}#part-{n}`` holding the same attributes
for the remaining users (an app name never contains ``-``, so it never contains
``#part-``).  :func:`read_analytics_table` reassembles them.

Writes are idempotent overwrites.  Re-running a day replaces its items: items of that day
that the new run does not produce (an app no longer present, parts of a day that shrank) are
deleted.  A split ``(date, app)`` is replaced in one TransactWriteItems call (puts and stale
deletes together), so readers see the old version or the new one, never a mix; single items
go through BatchWriteItem (25 at a time), with ``UnprocessedItems`` and throttling retried
with exponential backoff.  Every item of a run carries the same ``aggregatedAt``, and the
reader refuses a ``(date, app)`` whose parts disagree rather than return it half-formed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from bubbly_metrics import _aws as aws
from bubbly_metrics._retry import Backoff, error_code, is_retryable
from bubbly_metrics.exceptions import AnalyticsTableError, InvalidArgumentError
from bubbly_metrics.metrics import METRIC_COLUMNS, METRICS_SCHEMA

__all__ = [
    "ITEM_BUDGET",
    "ITEM_LIMIT",
    "KEY_LIMIT",
    "TTL_DAYS",
    "build_items",
    "item_size",
    "per_user_from_table",
    "read_analytics_table",
    "storable",
    "table_from_items",
    "write_analytics_table",
]

logger = logging.getLogger(__name__)

TTL_DAYS = 455
"""Items expire (DynamoDB TTL on ``expiresAt``) this many days after they are written."""

ITEM_LIMIT = 400 * 1024
"""DynamoDB's maximum item size (attribute names included)."""

KEY_LIMIT = 1024
"""DynamoDB's limit on a sort key, in UTF-8 bytes.  A row whose app (with a part suffix) is
longer is reported and not sent: DynamoDB would reject the whole batch it is in."""

ITEM_BUDGET = 350_000
"""Bytes an item is filled to: well under :data:`ITEM_LIMIT`, so estimation error never matters."""

BATCH_LIMIT = 25  # BatchWriteItem: at most 25 put/delete requests per call
# TransactWriteItems: AWS allows 100 actions and 4 MB; moto still enforces 25 actions.  A
# split day needs one item per ~350 KB, so 25 actions cover ~250k active users per app-day.
TRANSACT_ITEMS = 25
TRANSACT_BYTES = 4_000_000
PART = "#part-"

_SUMMARY_KEYS = {
    "active_users": "activeUsers",
    "games_played": "gamesPlayed",
    "parties_created": "partiesCreated",
    "parties_joined": "partiesJoined",
}
_PER_USER_ATTRS = ("activeUserIds", "gamesPerUser", "partiesCreatedPerUser")

GAMES_STRUCT = pl.List(pl.Struct({"user_id": pl.String, "games": pl.Int64}))
CREATED_STRUCT = pl.List(pl.Struct({"user_id": pl.String, "parties_created": pl.Int64}))
TABLE_SCHEMA: dict[str, pl.DataType] = {
    **METRICS_SCHEMA,
    "active_user_ids": pl.List(pl.String),
    "games_per_user": GAMES_STRUCT,
    "parties_created_per_user": CREATED_STRUCT,
    "parts": pl.Int64(),
    "export_arn": pl.String(),
    "mode": pl.String(),
    "aggregated_at": pl.String(),
    "expires_at": pl.Datetime("us", "UTC"),
}
"""Columns of :func:`read_analytics_table`: the metric columns of ``AggregateResult.metrics``,
the per-user data (sorted by user id), and provenance."""


# --------------------------------------------------------------------------------------------
# Sizes (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html)


def _num_size(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").split("E")[0].split("e")[0].strip("0") or "0"
    return (len(digits) + 1) // 2 + 1


def _value_size(value: dict[str, Any]) -> int:
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        return _num_size(v)
    if kind == "B":
        return (len(v) * 3) // 4 if isinstance(v, str) else len(v)
    if kind == "SS":
        return sum(len(e.encode()) for e in v)
    if kind == "NS":
        return sum(_num_size(e) for e in v)
    if kind == "BS":
        return sum(len(e) for e in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(x) for k, x in v.items())
    if kind == "L":
        return 3 + sum(1 + _value_size(x) for x in v)
    return 1  # BOOL, NULL


def item_size(item: dict[str, dict[str, Any]]) -> int:
    """Size of a DynamoDB-JSON item by DynamoDB's rules (names + values, map/list overheads)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


# --------------------------------------------------------------------------------------------
# Building items


def _n(value: int) -> dict[str, str]:
    return {"N": str(int(value))}


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now(now: dt.datetime | None) -> dt.datetime:
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise InvalidArgumentError(f"now must be timezone-aware (UTC), got naive {now!r}")
    return now.astimezone(dt.UTC)


def _check_frame(frame: Any, name: str, columns: Iterable[str]) -> pl.DataFrame:
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    if not isinstance(frame, pl.DataFrame):
        raise InvalidArgumentError(f"{name} must be a polars DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidArgumentError(f"{name} lacks column(s) {missing}; it has {frame.columns}")
    return frame


def _per_user_lists(per_user: pl.DataFrame) -> pl.DataFrame:
    """(date, app) → sorted user ids / games / parties created, from the per-user frame."""
    users = per_user.lazy().with_columns(pl.col("date").cast(pl.Date))
    games = (
        users.filter(pl.col("games") > 0)
        .sort("user_id")
        .group_by("date", "app")
        .agg(pl.col("user_id").alias("_g_users"), pl.col("games").cast(pl.Int64).alias("_g_values"))
    )
    created = (
        users.filter(pl.col("parties_created") > 0)
        .sort("user_id")
        .group_by("date", "app")
        .agg(
            pl.col("user_id").alias("_c_users"),
            pl.col("parties_created").cast(pl.Int64).alias("_c_values"),
        )
    )
    return games.join(created, on=["date", "app"], how="full", coalesce=True).collect()


@dataclass
class _Filling:
    """Items of one (date, app) being filled up to the byte budget."""

    budget: int
    fixed_base: dict[str, Any]
    fixed_part: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0

    def __post_init__(self) -> None:
        self._open(self.fixed_base)

    def _open(self, fixed: dict[str, Any]) -> None:
        item = dict(fixed)
        item["activeUserIds"] = {"SS": []}
        item["gamesPerUser"] = {"M": {}}
        item["partiesCreatedPerUser"] = {"M": {}}
        self.items.append(item)
        # Attribute names and empty-map overheads, counted whether or not they stay.
        self.size = item_size(fixed) + sum(len(a) for a in _PER_USER_ATTRS) + 6

    def _room(self, cost: int) -> dict[str, Any]:
        if self.size + cost > self.budget:
            n = len(self.items)
            part = dict(self.fixed_part)
            part["app"] = {"S": f"{self.fixed_base['app']['S']}{PART}{n}"}
            part["part"] = _n(n)
            self._open(part)
        self.size += cost
        return self.items[-1]

    def add_active(self, user: str) -> None:
        self._room(len(user.encode()))["activeUserIds"]["SS"].append(user)

    def add_count(self, attr: str, user: str, value: int) -> None:
        text = str(int(value))
        self._room(1 + len(user.encode()) + _num_size(text))[attr]["M"][user] = {"N": text}

    def finish(self) -> list[dict[str, Any]]:
        for i, item in enumerate(self.items):
            if not item["activeUserIds"]["SS"]:
                del item["activeUserIds"]  # DynamoDB has no empty sets
            if i > 0:
                for attr in ("gamesPerUser", "partiesCreatedPerUser"):
                    if not item[attr]["M"]:
                        del item[attr]
        self.items[0]["parts"] = _n(len(self.items))
        for item in self.items:
            size = item_size(item)
            if size > ITEM_LIMIT:
                key = f"{item['date']['S']} / {item['app']['S'][:80]}"
                raise AnalyticsTableError(
                    f"item {key} would be {size} bytes, over DynamoDB's {ITEM_LIMIT}-byte limit "
                    "even without per-user data (is the app name absurdly long?)"
                )
        return self.items


def build_items(
    metrics: pl.DataFrame,
    *,
    per_user: pl.DataFrame | None,
    export_arn: str | None = None,
    mode: str | None = None,
    now: dt.datetime | None = None,
    budget: int = ITEM_BUDGET,
) -> list[list[dict[str, Any]]]:
    """Build the Analytics Table items (DynamoDB JSON) of every ``(date, app)`` in ``metrics``.

    Parameters
    ----------
    metrics
        ``AggregateResult.metrics``: date, app and the four metric columns.
    per_user
        ``AggregateResult.per_user`` (date, app, user_id, games, parties_created, ...);
        ``None`` writes summaries only.
    export_arn, mode
        Provenance stored on every item.
    now
        Write time: ``aggregatedAt`` and ``expiresAt`` (now + 455 days).
    budget
        Bytes per item before spilling to a ``{app}#part-{n}`` item (tests lower it).

    Returns
    -------
    list of list of dict
        One list per ``(date, app)``: the base item first, then its parts (if split).
    """
    metrics = _check_frame(metrics, "metrics", ("date", "app", *METRIC_COLUMNS))
    if budget < 1_000 or budget > ITEM_LIMIT:
        raise InvalidArgumentError(f"budget must be between 1000 and {ITEM_LIMIT} bytes, got {budget}")
    now = _now(now)
    expires = int((now + dt.timedelta(days=TTL_DAYS)).timestamp())
    provenance: dict[str, Any] = {"expiresAt": _n(expires), "aggregatedAt": {"S": _iso(now)}}
    if export_arn:
        provenance["exportArn"] = {"S": export_arn}
    if mode:
        provenance["mode"] = {"S": mode}
    frame = metrics.with_columns(pl.col("date").cast(pl.Date))
    if per_user is not None:
        per_user = _check_frame(per_user, "per_user", ("date", "app", "user_id", "games", "parties_created"))
        frame = frame.join(_per_user_lists(per_user), on=["date", "app"], how="left")
    groups = []
    for row in frame.iter_rows(named=True):
        day = row["date"].isoformat()
        base = {
            "date": {"S": day},
            "app": {"S": row["app"]},
            "summary": {"M": {_SUMMARY_KEYS[c]: _n(row[c] or 0) for c in METRIC_COLUMNS}},
            "partiesJoined": _n(row["parties_joined"] or 0),
            **provenance,
        }
        filling = _Filling(budget, base, {"date": {"S": day}, **provenance})
        for user in row.get("_g_users") or ():
            filling.add_active(user)
        for user, games in zip(row.get("_g_users") or (), row.get("_g_values") or (), strict=True):
            filling.add_count("gamesPerUser", user, games)
        for user, created in zip(row.get("_c_users") or (), row.get("_c_values") or (), strict=True):
            filling.add_count("partiesCreatedPerUser", user, created)
        groups.append(filling.finish())
    return groups


# --------------------------------------------------------------------------------------------
# Writing


def _client(client: Any) -> Any:
    return aws.client("dynamodb", client)


def _key(item: dict[str, Any]) -> tuple[str, str]:
    return item["date"]["S"], item["app"]["S"]


def _base_app(sort_key: str) -> str:
    return sort_key.split(PART, 1)[0]


def storable(
    groups: list[list[dict[str, Any]]],
) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Split :func:`build_items` groups into those DynamoDB can store and failures for the rest.

    A row is refused whole when one of its sort keys (the app, or ``{app}#part-{n}``) is longer
    than :data:`KEY_LIMIT`.
    """
    kept, failures = [], []
    for group in groups:
        longest = max(len(item["app"]["S"].encode()) for item in group)
        if longest <= KEY_LIMIT:
            kept.append(group)
            continue
        day, app = _key(group[0])
        failures.append(
            {
                "target": "analytics_table",
                "action": "put",
                "items": len(group),
                "keys": [f"{day}/{_shorten(app)}"],
                "error": f"a sort key of {longest} bytes (app {_shorten(app)!r}): "
                f"DynamoDB allows {KEY_LIMIT}; not sent",
            }
        )
    return kept, failures


def _shorten(app: str) -> str:
    return app if len(app) <= 60 else f"{app[:40]}…({len(app)} characters)"


def _describe_keys(keys: Iterable[tuple[str, str]]) -> str:
    keys = sorted(keys)
    shown = ", ".join(f"{d}/{_shorten(a)}" for d, a in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


@dataclass
class _Writer:
    client: Any
    table: str
    backoff: Backoff
    requests: dict[str, int] = field(default_factory=lambda: {"BatchWriteItem": 0, "TransactWriteItems": 0})
    failures: list[dict[str, Any]] = field(default_factory=list)

    def batch(self, requests: list[dict[str, Any]], *, action: str) -> set[tuple[str, str]]:
        """Send put/delete requests 25 at a time; return the keys that could not be written."""
        failed: set[tuple[str, str]] = set()
        for i in range(0, len(requests), BATCH_LIMIT):
            failed |= self._batch(requests[i : i + BATCH_LIMIT], action=action)
        return failed

    def _batch(self, pending: list[dict[str, Any]], *, action: str) -> set[tuple[str, str]]:
        from botocore.exceptions import BotoCoreError, ClientError

        attempt = 0
        while True:
            attempt += 1
            self.requests["BatchWriteItem"] += 1
            try:
                response = self.client.batch_write_item(RequestItems={self.table: pending})
            except (ClientError, BotoCoreError) as exc:
                if is_retryable(exc) and attempt < self.backoff.max_attempts:
                    self.backoff.wait(attempt)
                    continue
                return self._failed(pending, action, f"{type(exc).__name__}: {exc}", attempt)
            pending = (response.get("UnprocessedItems") or {}).get(self.table) or []
            if not pending:
                return set()
            if attempt >= self.backoff.max_attempts:
                return self._failed(pending, action, "still in UnprocessedItems", attempt)
            # AWS: retry UnprocessedItems with exponential backoff, not at once.
            self.backoff.wait(attempt)

    def _failed(self, requests: list[dict[str, Any]], action: str, reason: str, attempts: int) -> set[tuple[str, str]]:
        keys = {_key(r["PutRequest"]["Item"] if "PutRequest" in r else r["DeleteRequest"]["Key"]) for r in requests}
        self.failures.append(
            {
                "target": "analytics_table",
                "action": action,
                "items": len(keys),
                "keys": [f"{d}/{a}" for d, a in sorted(keys)],
                "error": f"{reason} (after {attempts} attempt(s))",
            }
        )
        return keys

    def transact(self, actions: list[dict[str, Any]], key: tuple[str, str]) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        attempt = 0
        while True:
            attempt += 1
            self.requests["TransactWriteItems"] += 1
            try:
                self.client.transact_write_items(TransactItems=actions)
                return True
            except (ClientError, BotoCoreError) as exc:
                if is_retryable(exc) and attempt < self.backoff.max_attempts:
                    self.backoff.wait(attempt)
                    continue
                self.failures.append(
                    {
                        "target": "analytics_table",
                        "action": "put",
                        "items": len(actions),
                        "keys": [f"{key[0]}/{key[1]}"],
                        "error": f"{type(exc).__name__}: {exc} (after {attempt} attempt(s))",
                    }
                )
                return False


def _query_date(
    client: Any, table: str, day: str, *, keys_only: bool, backoff: Backoff | None = None
) -> list[dict[str, Any]]:
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "#d = :d",
        "ExpressionAttributeNames": {"#d": "date"},
        "ExpressionAttributeValues": {":d": {"S": day}},
        "ConsistentRead": True,
    }
    if keys_only:
        kwargs["ProjectionExpression"] = "#d, #a"
        kwargs["ExpressionAttributeNames"]["#a"] = "app"
    items: list[dict[str, Any]] = []
    while True:
        response = _retrying(lambda: client.query(**kwargs), what=f"query {table} for {day}", backoff=backoff)
        items.extend(response.get("Items", []))
        if not response.get("LastEvaluatedKey"):
            return items
        kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def _retrying(call: Any, *, what: str, backoff: Backoff | None = None) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    backoff = backoff or Backoff()
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except (ClientError, BotoCoreError) as exc:
            if is_retryable(exc) and attempt < backoff.max_attempts:
                backoff.wait(attempt)
                continue
            code = error_code(exc)
            hint = " (does the table exist, in this region?)" if code == "ResourceNotFoundException" else ""
            raise AnalyticsTableError(f"cannot {what}: {exc}{hint}") from exc


def _query_dates(
    client: Any,
    table: str,
    days: Iterable[str],
    *,
    keys_only: bool,
    threads: int,
    backoff: Backoff | None = None,
) -> list[dict[str, Any]]:
    days = sorted(set(days))
    if not days:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(days)))) as pool:
        chunks = pool.map(lambda d: _query_date(client, table, d, keys_only=keys_only, backoff=backoff), days)
        return [item for chunk in chunks for item in chunk]


def write_analytics_table(
    metrics: pl.DataFrame,
    *,
    per_user: pl.DataFrame | None,
    table: str,
    export_arn: str | None = None,
    mode: str | None = None,
    dates: Iterable[dt.date] | None = None,
    now: dt.datetime | None = None,
    client: Any = None,
    backoff: Backoff | None = None,
    budget: int = ITEM_BUDGET,
    threads: int = 8,
) -> dict[str, Any]:
    """Write daily metrics and per-user data to the Analytics Table, replacing those days.

    Parameters
    ----------
    metrics, per_user
        ``AggregateResult.metrics`` and ``AggregateResult.per_user``.
    table
        The Analytics Table's name.
    export_arn, mode
        Provenance stored on every item.
    dates
        The days this write replaces (default: the days in ``metrics``).  Items of these days
        that this write does not produce are deleted, so a re-run leaves exactly its result.
        Pass the run's whole date range so that a day that became empty is emptied too.
    now
        Write time (``aggregatedAt``; ``expiresAt`` = now + 455 days); default: wall clock.
    client
        A boto3 DynamoDB client; built from the environment when not given.
    backoff
        Retry policy for throttling and ``UnprocessedItems`` (default: 10 attempts, 50 ms
        doubling to 5 s).
    budget
        Bytes per item before a ``(date, app)`` is split (see :data:`ITEM_BUDGET`).
    threads
        Concurrent Query calls when listing the items that already exist.

    Returns
    -------
    dict
        JSON-able: ``rows`` / ``rowsWritten`` (``(date, app)`` pairs), ``items`` /
        ``itemsWritten``, ``splitRows``, ``staleItemsDeleted``, ``requests`` per API and
        ``failures`` (empty on success).

    Raises
    ------
    AnalyticsTableError
        After doing everything it could, when any item was not written or deleted (the
        report is attached as ``.report``), or when the table cannot be read at all.
    """
    if not isinstance(table, str) or not table:
        raise InvalidArgumentError(f"table must name the Analytics Table, got {table!r}")
    groups = build_items(metrics, per_user=per_user, export_arn=export_arn, mode=mode, now=now, budget=budget)
    client = _client(client)
    writer = _Writer(client, table, backoff or Backoff())
    days = {d.isoformat() for d in dates} if dates is not None else {g[0]["date"]["S"] for g in groups}
    days |= {g[0]["date"]["S"] for g in groups}
    existing = {
        _key(item)
        for item in _query_dates(client, table, days, keys_only=True, threads=threads, backoff=writer.backoff)
    }
    produced = {_key(item) for group in groups for item in group}
    stale = existing - produced
    stale_by_row: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for day, sort_key in stale:
        stale_by_row.setdefault((day, _base_app(sort_key)), []).append((day, sort_key))

    all_groups, (groups, too_long) = groups, storable(groups)
    writer.failures.extend(too_long)
    failed_rows: set[tuple[str, str]] = {_key(g[0]) for g in all_groups} - {_key(g[0]) for g in groups}
    deleted_in_transactions = 0
    singles = []
    for group in groups:
        if len(group) == 1:
            singles.append(group[0])
            continue
        row = _key(group[0])
        deletes = sorted(stale_by_row.pop(row, []))
        actions: list[dict[str, Any]] = [{"Put": {"TableName": table, "Item": item}} for item in group]
        actions += [{"Delete": {"TableName": table, "Key": {"date": {"S": d}, "app": {"S": a}}}} for d, a in deletes]
        if len(actions) <= TRANSACT_ITEMS and sum(item_size(i) for i in group) <= TRANSACT_BYTES:
            if writer.transact(actions, row):
                deleted_in_transactions += len(deletes)
            else:
                failed_rows.add(row)
            continue
        # Too big for one transaction: parts first, base last, so the base never names parts
        # that are not there yet.  Between the two, readers see a (date, app) whose parts
        # disagree and say so instead of returning a mix.
        logger.warning("%s/%s needs %d items: written without a transaction", row[0], row[1], len(group))
        if writer.batch([{"PutRequest": {"Item": i}} for i in group[1:]], action="put"):
            failed_rows.add(row)
            continue
        if writer.batch([{"PutRequest": {"Item": group[0]}}], action="put"):
            failed_rows.add(row)
            continue
        stale_by_row[row] = deletes
    failed_rows |= writer.batch([{"PutRequest": {"Item": i}} for i in singles], action="put")

    # Stale items last: bases before parts (a part without its base is ignored by readers),
    # and never the stale parts of a row whose new version failed to land.
    remaining = [k for row, keys in stale_by_row.items() if row not in failed_rows for k in keys]
    remaining.sort(key=lambda k: (PART in k[1], k))
    delete_requests = [{"DeleteRequest": {"Key": {"date": {"S": d}, "app": {"S": a}}}} for d, a in remaining]
    failed_deletes = writer.batch(delete_requests, action="delete")

    groups = all_groups
    items_total = sum(len(g) for g in groups)
    items_failed = sum(len(g) for g in groups if _key(g[0]) in failed_rows)
    report: dict[str, Any] = {
        "table": table,
        "rows": len(groups),
        "rowsWritten": len(groups) - len(failed_rows),
        "items": items_total,
        "itemsWritten": items_total - items_failed,
        "splitRows": sum(len(g) > 1 for g in groups),
        "staleItemsDeleted": deleted_in_transactions + len(remaining) - len(failed_deletes),
        "requests": dict(writer.requests),
        "failures": writer.failures,
    }
    if writer.failures:
        raise AnalyticsTableError(
            f"Analytics Table {table}: {len(failed_rows)} of {len(groups)} (date, app) row(s) "
            "not written"
            + (f" ({_describe_keys(failed_rows)})" if failed_rows else "")
            + (f"; {len(failed_deletes)} stale item(s) not deleted" if failed_deletes else "")
            + f"; first error: {writer.failures[0]['error']}. Re-running the aggregation is safe.",
            report,
        )
    logger.info("wrote %d item(s) for %d (date, app) row(s) to %s", items_total, len(groups), table)
    return report


# --------------------------------------------------------------------------------------------
# Reading


def _scan(client: Any, table: str) -> Iterator[dict[str, Any]]:
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        response = _retrying(lambda: client.scan(**kwargs), what=f"scan {table}")
        yield from response.get("Items", [])
        if not response.get("LastEvaluatedKey"):
            return
        kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def _int(value: dict[str, Any] | None) -> int | None:
    return int(value["N"]) if value and "N" in value else None


def _assemble(day: str, app: str, items: dict[str, dict[str, Any]], now: dt.datetime) -> dict[str, Any] | None:
    base = items.get(app)
    if base is None:
        return None  # parts left by a deletion in progress: not a row
    parts = _int(base.get("parts")) or 1
    stamp = base.get("aggregatedAt", {}).get("S")
    expires = _int(base.get("expiresAt"))
    chunks = [base]
    for n in range(1, parts):
        part = items.get(f"{app}{PART}{n}")
        if part is None or part.get("aggregatedAt", {}).get("S") != stamp:
            if expires is not None and expires <= now.timestamp():
                # TTL deletes expired items lazily and in no particular order: a row past
                # its expiry that lost a part is on its way out, not damaged.
                return None
            found = "missing" if part is None else f"from run {part.get('aggregatedAt', {}).get('S')}"
            raise AnalyticsTableError(
                f"Analytics Table row {day}/{app} is incomplete: item {n} of {parts} "
                f"(run {stamp}) is {found}; "
                "re-run the aggregation for that day"
            )
        chunks.append(part)
    active: list[str] = []
    games: dict[str, int] = {}
    created: dict[str, int] = {}
    for chunk in chunks:
        active.extend(chunk.get("activeUserIds", {}).get("SS", []))
        games.update({u: int(v["N"]) for u, v in chunk.get("gamesPerUser", {}).get("M", {}).items()})
        created.update({u: int(v["N"]) for u, v in chunk.get("partiesCreatedPerUser", {}).get("M", {}).items()})
    summary = base.get("summary", {}).get("M")
    joined = _int(base.get("partiesJoined"))
    if summary:
        values = {c: _int(summary.get(k)) for c, k in _SUMMARY_KEYS.items()}
    else:  # an item without a summary: derive what the per-user data says
        values = {
            "active_users": len(active),
            "games_played": sum(games.values()),
            "parties_created": sum(created.values()),
            "parties_joined": joined,
        }
    if values["parties_joined"] is None:
        values["parties_joined"] = joined
    return {
        "date": dt.date.fromisoformat(day),
        "app": app,
        **values,
        "active_user_ids": sorted(active),
        "games_per_user": [{"user_id": u, "games": games[u]} for u in sorted(games)],
        "parties_created_per_user": [{"user_id": u, "parties_created": created[u]} for u in sorted(created)],
        "parts": parts,
        "export_arn": base.get("exportArn", {}).get("S"),
        "mode": base.get("mode", {}).get("S"),
        "aggregated_at": stamp,
        "expires_at": dt.datetime.fromtimestamp(expires, dt.UTC) if expires is not None else None,
    }


def read_analytics_table(
    table: str,
    *,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    client: Any = None,
    threads: int = 8,
    now: dt.datetime | None = None,
) -> pl.DataFrame:
    """Read the Analytics Table back into a Polars frame, reassembling split items.

    Parameters
    ----------
    table
        The Analytics Table's name.
    start, end
        Inclusive range of days to read (one Query per day).  Without both, the whole table
        is scanned (``start`` or ``end`` alone bounds the scan's result).
    client
        A boto3 DynamoDB client; built from the environment when not given.
    threads
        Concurrent Query calls.
    now
        The current time (default: wall clock).  A split row past its ``expiresAt`` whose
        parts TTL has started deleting is left out instead of reported as incomplete.

    Returns
    -------
    polars.DataFrame
        :data:`TABLE_SCHEMA`: ``date``, ``app``, ``active_users``, ``games_played``,
        ``parties_created``, ``parties_joined`` (as in ``AggregateResult.metrics``), then
        ``active_user_ids``, ``games_per_user``, ``parties_created_per_user`` (sorted by user
        id), ``parts`` and provenance; sorted by date and app.

    Raises
    ------
    AnalyticsTableError
        When the table cannot be read, or a split row is incomplete.
    """
    from bubbly_metrics.dates import parse_date

    if not isinstance(table, str) or not table:
        raise InvalidArgumentError(f"table must name the Analytics Table, got {table!r}")
    first = parse_date(start, name="start") if start is not None else None
    last = parse_date(end, name="end") if end is not None else None
    if first and last and first > last:
        raise InvalidArgumentError(f"start {first} is after end {last}")
    when = _now(now)
    client = _client(client)
    if first and last:
        days = [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
        raw: Iterable[dict[str, Any]] = _query_dates(client, table, days, keys_only=False, threads=threads)
    else:
        raw = _scan(client, table)
    return table_from_items(raw, start=first, end=last, now=when)


def table_from_items(
    items: Iterable[dict[str, Any]],
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
    now: dt.datetime | None = None,
) -> pl.DataFrame:
    """Analytics Table items (DynamoDB JSON, as a Query, a Scan or :func:`build_items` gives them) as a frame.

    What :func:`read_analytics_table` does with the items it reads, for items from elsewhere:
    the JSON of ``aws dynamodb scan`` (:func:`~bubbly_metrics.reconcile.read_snapshot`), or
    the items a run would write (:func:`~bubbly_metrics.reconcile.daily_runs_table`).  Split
    rows are reassembled; items outside ``start``..``end`` (inclusive) are left out.

    Returns
    -------
    polars.DataFrame
        :data:`TABLE_SCHEMA`, sorted by date and app.
    """
    when = _now(now)
    by_row: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for item in items:
        day, sort_key = _key(item)
        if day.startswith("#"):  # not a day: the ledger's partition (bubbly_metrics.ledger)
            continue
        if (start and day < start.isoformat()) or (end and day > end.isoformat()):
            continue
        by_row.setdefault((day, _base_app(sort_key)), {})[sort_key] = item
    rows = [r for (day, app), parts in sorted(by_row.items()) if (r := _assemble(day, app, parts, when)) is not None]
    return pl.DataFrame(rows, schema=TABLE_SCHEMA) if rows else pl.DataFrame(schema=TABLE_SCHEMA)


def per_user_from_table(frame: pl.DataFrame) -> pl.DataFrame:
    """Explode :func:`read_analytics_table` output to one row per ``(date, app, user_id)``.

    Columns ``date``, ``app``, ``user_id``, ``games``, ``parties_created`` — comparable with
    ``AggregateResult.per_user`` (the table stores no per-user parties joined).
    """
    games = frame.select("date", "app", "games_per_user").explode("games_per_user").drop_nulls("games_per_user")
    created = (
        frame.select("date", "app", "parties_created_per_user")
        .explode("parties_created_per_user")
        .drop_nulls("parties_created_per_user")
    )
    return (
        games.unnest("games_per_user")
        .join(
            created.unnest("parties_created_per_user"),
            on=["date", "app", "user_id"],
            how="full",
            coalesce=True,
        )
        .with_columns(pl.col("games").fill_null(0), pl.col("parties_created").fill_null(0))
        .select("date", "app", "user_id", "games", "parties_created")
        .sort("date", "app", "user_id")
    )
