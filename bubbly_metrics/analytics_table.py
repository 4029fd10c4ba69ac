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
    generation                S     the write that made the item (its parts carry the same)

DynamoDB items are limited to 400 KB.  A day whose per-user data would not fit is split
losslessly: the first item (sort key ``app``, the *base item*) holds the summary and as many
per-user entries as fit; the rest go to *parts*, items with sort key
``{app}#part-{generation}-{n}`` holding the same attributes for the remaining users (an app
name never contains ``-``, so it never contains ``#part-``).  :func:`read_analytics_table`
reassembles them.  Every item also carries ``generation``, the id of the write that made it.

Each day is replaced whole, with its ledger entry (:mod:`bubbly_metrics.ledger`), or not at
all: parts are staged first under the write's generation (no base item names them yet), then
one TransactWriteItems puts the day's base items, deletes the apps the day no longer has and
puts its ledger entry, each on condition that it is as it was read (so a concurrent writer is
noticed); the replaced generation's parts are deleted after.  The reader follows only the
parts of the generation a base item names, so it never returns a half-formed row, and re-reads
a day whose base items disagree (a Query may see a transaction half applied).  Tables written
before generations existed (parts ``{app}#part-{n}``, no ``generation``) are still read, and
replaced by the next write of each day.  docs/operations.md ("All-or-nothing days") has the
design, its limits and its residual windows.  Throttling, ``UnprocessedItems`` and transaction
conflicts are retried with exponential backoff.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from bubbly_metrics import _aws as aws
from bubbly_metrics._retry import Backoff, error_code, is_retryable
from bubbly_metrics.exceptions import AnalyticsTableError, InvalidArgumentError
from bubbly_metrics.metrics import METRIC_COLUMNS, METRICS_SCHEMA

__all__ = [
    "GENERATION",
    "ITEM_BUDGET",
    "ITEM_LIMIT",
    "KEY_LIMIT",
    "TTL_DAYS",
    "build_items",
    "item_size",
    "new_generation",
    "part_key",
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
# TransactWriteItems: at most 100 actions and 4 MB per call (moto checks the 100 too).  A
# day's flip holds its base items, deletes of apps it no longer has, and its ledger entry.
TRANSACT_ITEMS = 100
TRANSACT_BYTES = 4_000_000  # under 4 MiB: request overheads (table names, conditions) count too
PART = "#part-"
READ_ATTEMPTS = 3  # reads of a day that looks incomplete before it is reported
GENERATION = "generation"
SLIM_BASE = 2_000
"""Per-user bytes a base item keeps when the day's base items would not fit one transaction."""
ORPHAN_SECONDS = 3_600
"""Staged parts that no base item names are deleted once older than this (wall clock): a
writer stages a day's parts seconds before it flips the day, so older ones belong to a run
that died (a Lambda lives 15 minutes at most); younger ones may be a concurrent run's."""
MIN_REQUEST_SECONDS = 0.1
"""Time assumed per write request when budgeting (``time_left``) before any was measured."""
RESERVE_SECONDS = 2.0
"""Time kept aside when budgeting: a day is started only if it should end this long before time runs out."""

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
    base_budget: int | None = None
    generation: str | None = None
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
        limit = self.budget if len(self.items) > 1 or self.base_budget is None else self.base_budget
        if self.size + cost > limit:
            n = len(self.items)
            part = dict(self.fixed_part)
            part["app"] = {"S": part_key(self.fixed_base["app"]["S"], n, self.generation)}
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
    generation: str | None = None,
    base_budget: int | None = None,
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
        Bytes per item before spilling to a part item (tests lower it).
    generation
        The writing run's generation (:func:`new_generation`): stored on every item, and part
        items are keyed ``{app}#part-{generation}-{n}``.  ``None`` (a dry run, a reconciliation)
        keys them ``{app}#part-{n}`` as tables written before generations were.
    base_budget
        Bytes of per-user data the base item may hold before spilling (default ``budget``);
        a small value keeps base items small so that a day's base items fit in one
        transaction (:func:`write_analytics_table`).

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
    if generation:
        provenance[GENERATION] = {"S": generation}
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
        filling = _Filling(budget, base, {"date": {"S": day}, **provenance}, base_budget, generation)
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


def new_generation(now: dt.datetime | None = None) -> str:
    """A unique id for one write of the Analytics Table: its time and 32 random bits.

    It holds no ``-`` (part keys end ``-{n}``) and sorts by time.
    """
    return f"{_now(now).strftime('%Y%m%dT%H%M%SZ')}.{secrets.token_hex(4)}"


def part_key(app: str, n: int, generation: str | None) -> str:
    """The sort key of part ``n`` (from 1) of ``app``'s row, written by ``generation``.

    ``{app}#part-{generation}-{n}``; tables written before generations existed (and items
    built without one) use ``{app}#part-{n}``, which the reader still follows when the base
    item names no generation.
    """
    return f"{app}{PART}{generation}-{n}" if generation else f"{app}{PART}{n}"


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

    def transact(self, actions: list[dict[str, Any]], key: tuple[str, str]) -> Exception | None:
        """Send one TransactWriteItems; return ``None``, or the error it ended with (recorded).

        A failed condition is returned without being recorded as a failure: the caller
        decides what a concurrent writer means.  Every attempt carries the same
        ``ClientRequestToken``: DynamoDB applies a retried transaction that did succeed only
        once, and reports success (for 10 minutes).
        """
        from botocore.exceptions import BotoCoreError, ClientError

        token = secrets.token_hex(16)
        attempt = 0
        while True:
            attempt += 1
            self.requests["TransactWriteItems"] += 1
            try:
                self.client.transact_write_items(TransactItems=actions, ClientRequestToken=token)
                return None
            except (ClientError, BotoCoreError) as exc:
                if is_retryable(exc) and attempt < self.backoff.max_attempts:
                    self.backoff.wait(attempt)
                    continue
                if not _condition_failed(exc):
                    self.failures.append(
                        {
                            "target": "analytics_table",
                            "action": "put",
                            "items": len(actions),
                            "keys": [f"{key[0]}/{key[1]}"],
                            "error": f"{type(exc).__name__}: {exc} (after {attempt} attempt(s))",
                        }
                    )
                return exc


def _condition_failed(exc: BaseException) -> bool:
    if error_code(exc) != "TransactionCanceledException":
        return False
    reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
    return any(isinstance(r, dict) and r.get("Code") == "ConditionalCheckFailed" for r in reasons)


def _unchanged(current: dict[str, Any] | None) -> dict[str, Any]:
    """A condition that holds while the item is still as it was read (``None``: absent)."""
    if current is None:
        return {"ConditionExpression": "attribute_not_exists(#a)", "ExpressionAttributeNames": {"#a": "app"}}
    generation = current.get(GENERATION, {}).get("S")
    if generation is not None:
        return {
            "ConditionExpression": "#g = :g",
            "ExpressionAttributeNames": {"#g": GENERATION},
            "ExpressionAttributeValues": {":g": {"S": generation}},
        }
    # Written before generations: it changes from "no generation" to one when replaced.
    names = {"#a": "app", "#g": GENERATION}
    stamp = current.get("aggregatedAt", {}).get("S")
    if stamp is None:
        return {
            "ConditionExpression": "attribute_exists(#a) AND attribute_not_exists(#g)",
            "ExpressionAttributeNames": names,
        }
    return {
        "ConditionExpression": "attribute_exists(#a) AND attribute_not_exists(#g) AND #t = :t",
        "ExpressionAttributeNames": {**names, "#t": "aggregatedAt"},
        "ExpressionAttributeValues": {":t": {"S": stamp}},
    }


def _referenced_parts(day: str, base: dict[str, Any]) -> set[tuple[str, str]]:
    """Keys of the parts a base item names (its generation's, or the old ``{app}#part-{n}``)."""
    app = base["app"]["S"]
    generation = base.get(GENERATION, {}).get("S")
    return {(day, part_key(app, n, generation)) for n in range(1, _int(base.get("parts")) or 1)}


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


@dataclass
class _Pace:
    """Write requests' measured pace, to budget time before starting a day."""

    requests: int = 0
    seconds: float = 0.0

    def per_request(self) -> float:
        measured = self.seconds / self.requests if self.requests else 0.0
        return max(MIN_REQUEST_SECONDS, 2 * measured)  # conservative: twice what was seen


@dataclass
class _Day:
    """What one day's write did."""

    status: str  # written | same (a concurrent run wrote the same export) | done (resume) | conflict | failed
    deleted: int = 0
    requests: int = 0
    detail: str = ""


def _day_requests(groups: list[list[dict[str, Any]]]) -> int:
    """Write requests a day needs at most: reads, staging, the flip, deleting as many old parts."""
    parts = sum(len(g) - 1 for g in groups)
    return 3 + 2 * math.ceil(parts / BATCH_LIMIT)


def _read_day(writer: _Writer, day: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Read the day's ledger entry, then its items (keys, generation, stamps only).

    In that order: a flip in between then makes the ledger condition fail, not go unnoticed.
    """
    from bubbly_metrics.ledger import LEDGER_PARTITION

    key = {"date": {"S": LEDGER_PARTITION}, "app": {"S": day}}
    response = _retrying(
        lambda: writer.client.get_item(TableName=writer.table, Key=key, ConsistentRead=True),
        what=f"read the ledger entry of {day} in {writer.table}",
        backoff=writer.backoff,
    )
    kwargs: dict[str, Any] = {
        "TableName": writer.table,
        "KeyConditionExpression": "#d = :d",
        "ProjectionExpression": "#d, #a, #g, #t, #p, #s",
        "ExpressionAttributeNames": {
            "#d": "date",
            "#a": "app",
            "#g": GENERATION,
            "#t": "aggregatedAt",
            "#p": "parts",
            "#s": "stagedAt",
        },
        "ExpressionAttributeValues": {":d": {"S": day}},
        "ConsistentRead": True,
    }
    items: list[dict[str, Any]] = []
    while True:
        page = _retrying(
            lambda: writer.client.query(**kwargs), what=f"query {writer.table} for {day}", backoff=writer.backoff
        )
        items.extend(page.get("Items", []))
        if not page.get("LastEvaluatedKey"):
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return response.get("Item"), items


def _write_day(
    writer: _Writer,
    day: str,
    groups: list[list[dict[str, Any]]],
    ledger_item: dict[str, Any] | None,
    keep: set[str],
    resume: bool = False,
) -> _Day:
    """Replace one day: stage its parts, flip its base items and ledger entry in one transaction.

    ``ledger_item`` is the day's new ledger entry; ``None`` deletes the entry (the day's rows
    change, and an entry must describe them or be absent).  ``keep``: apps whose row could not
    be built (left as they are).
    """
    from bubbly_metrics.ledger import LEDGER_PARTITION

    table = writer.table
    before = sum(writer.requests.values())
    ledger_now, items = _read_day(writer, day)
    if resume and ledger_item is not None and ledger_now is not None and _source(ledger_now) == _source(ledger_item):
        return _Day("done", requests=sum(writer.requests.values()) - before)
    bases = {i["app"]["S"]: i for i in items if PART not in i["app"]["S"]}
    new_apps = {g[0]["app"]["S"] for g in groups}
    stale_bases = sorted(a for a in bases if a not in new_apps and a not in keep)

    # 1. Stage the parts under this run's generation: no base item names them yet, so no
    #    reader follows them, whatever happens next.
    staged = [dict(i, stagedAt=_n(int(time.time()))) for g in groups for i in g[1:]]
    if staged and writer.batch([{"PutRequest": {"Item": i}} for i in staged], action="put"):
        _unstage(writer, staged)
        return _Day("failed", requests=sum(writer.requests.values()) - before)

    # 2. The flip: every base item, the deletes of apps the day no longer has and the ledger
    #    entry, each conditional on being as read -- one isolated transaction.
    actions: list[dict[str, Any]] = [
        {"Put": {"TableName": table, "Item": g[0], **_unchanged(bases.get(g[0]["app"]["S"]))}} for g in groups
    ]
    actions += [
        {"Delete": {"TableName": table, "Key": {"date": {"S": day}, "app": {"S": a}}, **_unchanged(bases[a])}}
        for a in stale_bases
    ]
    ledger_key = {"date": {"S": LEDGER_PARTITION}, "app": {"S": day}}
    if ledger_item is not None:
        actions.append({"Put": {"TableName": table, "Item": ledger_item, **_unchanged(ledger_now)}})
    elif ledger_now is not None:
        actions.append({"Delete": {"TableName": table, "Key": ledger_key, **_unchanged(ledger_now)}})
    else:
        # Deleting the absent entry, on condition it is still absent: a concurrent run that
        # recorded the day is noticed (a ConditionCheck would need another IAM action).
        actions.append({"Delete": {"TableName": table, "Key": ledger_key, **_unchanged(None)}})
    chunks = [actions]
    if len(actions) > TRANSACT_ITEMS:
        # More apps in a day than one transaction holds: flipped in several, the ledger last.
        # Not atomic (docs/operations.md: a day of more than 99 apps); said so loudly.
        logger.warning("%s: %d base items and deletes exceed one transaction; flipped in parts", day, len(actions))
        chunks = [actions[i : i + TRANSACT_ITEMS - 1] for i in range(0, len(actions), TRANSACT_ITEMS - 1)]
    for chunk in chunks:
        error = writer.transact(chunk, (day, f"{len(groups)} row(s)"))
        if error is None:
            continue
        mine = _flipped_by(writer, day, groups, ledger_item)
        if mine is True:
            # It did commit (a response lost, the retry's conditions then failed on our own
            # flip): the day is ours, carry on with the deletes.
            writer.failures = [f for f in writer.failures if f.get("keys") != [f"{day}/{len(groups)} row(s)"]]
            continue
        if mine is False:  # never when unsure: staged parts a committed flip names must stay
            _unstage(writer, staged)
        used = sum(writer.requests.values()) - before
        if not _condition_failed(error):
            return _Day("failed", requests=used)
        return _conflict(writer, day, ledger_item, used)

    # 3. Delete what no base item names any more: the replaced generations' parts, and parts
    #    of runs that died before their flip (old enough not to be a concurrent run's).
    replaced: set[tuple[str, str]] = set()
    for base in bases.values():
        replaced |= _referenced_parts(day, base)
    now = time.time()
    for item in items:
        sort_key = item["app"]["S"]
        if PART not in sort_key or (_base_app(sort_key) in keep):
            continue
        staged_at = _int(item.get("stagedAt"))
        if staged_at is None or staged_at < now - ORPHAN_SECONDS:
            replaced.add((day, sort_key))
    existing = {_key(i) for i in items}
    ours = {_key(i) for i in staged}
    old = sorted((existing & replaced) - ours)
    failed = writer.batch(
        [{"DeleteRequest": {"Key": {"date": {"S": d}, "app": {"S": a}}}} for d, a in old], action="delete"
    )
    if failed:  # unreferenced: readers ignore them, the next write of the day deletes them
        logger.warning("%s: %d replaced part(s) not deleted yet", day, len(failed))
        writer.failures = [f for f in writer.failures if f.get("action") != "delete"]
    return _Day(
        "written",
        deleted=len(stale_bases) + len(old) - len(failed),
        requests=sum(writer.requests.values()) - before,
    )


def _flipped_by(
    writer: _Writer, day: str, groups: list[list[dict[str, Any]]], ledger_item: dict[str, Any] | None
) -> bool | None:
    """Whether the day now carries this write's generation (``None``: cannot tell)."""
    from bubbly_metrics.ledger import LEDGER_PARTITION

    if ledger_item is not None:
        key, generation = {"date": {"S": LEDGER_PARTITION}, "app": {"S": day}}, ledger_item.get(GENERATION)
    elif groups:
        key, generation = {"date": {"S": day}, "app": groups[0][0]["app"]}, groups[0][0].get(GENERATION)
    else:
        return False  # nothing was staged
    try:
        item = _retrying(
            lambda: writer.client.get_item(TableName=writer.table, Key=key, ConsistentRead=True),
            what=f"read {day} back",
            backoff=writer.backoff,
        ).get("Item")
    except AnalyticsTableError:
        return None
    return item is not None and generation is not None and item.get(GENERATION) == generation


def _unstage(writer: _Writer, staged: list[dict[str, Any]]) -> None:
    """Delete this run's staged parts of a day it did not flip (best effort: nobody names them)."""
    if staged:
        saved = list(writer.failures)
        keys = [{"DeleteRequest": {"Key": {"date": i["date"], "app": i["app"]}}} for i in staged]
        writer.batch(keys, action="delete")
        writer.failures = saved


def _source(item: dict[str, Any]) -> tuple[Any, ...]:
    """What a ledger entry says the day was made from: export, mode, partial or not."""
    return (
        *(item.get(a, {}).get("S") for a in ("exportId", "exportArn", "mode")),
        item.get("partial", {}).get("BOOL", False),
    )


def _conflict(writer: _Writer, day: str, ledger_item: dict[str, Any] | None, used: int) -> _Day:
    """A flip's condition failed: another run changed the day since it was read."""
    from bubbly_metrics.ledger import LEDGER_PARTITION

    key = {"date": {"S": LEDGER_PARTITION}, "app": {"S": day}}
    now = _retrying(
        lambda: writer.client.get_item(TableName=writer.table, Key=key, ConsistentRead=True),
        what=f"read the ledger entry of {day} in {writer.table}",
        backoff=writer.backoff,
    ).get("Item")

    if ledger_item is not None and now is not None and _source(now) == _source(ledger_item):
        # The same export, written whole by a concurrent run (an event delivered twice, the
        # safety net racing the completion event): the day is as this run would leave it.
        logger.info("%s: written from the same export by a concurrent run; left as it is", day)
        return _Day("same", requests=used)
    holder = now.get("exportId", {}).get("S", "?") if now is not None else "no ledger entry"
    detail = f"{day} was changed by another run while this one wrote it (now: {holder})"
    writer.failures.append({"target": "analytics_table", "action": "put", "items": 0, "keys": [day], "error": detail})
    return _Day("conflict", requests=used, detail=detail)


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
    ledger: Iterable[Any] | None = None,
    time_left: Callable[[], float | None] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Write daily metrics and per-user data to the Analytics Table, replacing those days.

    Each day is replaced atomically (docs/operations.md, "All-or-nothing days"): its parts
    are staged under this write's generation (:func:`new_generation`), then one
    TransactWriteItems puts its base items, deletes the apps it no longer has and puts (or
    deletes) its ledger entry, each conditional on being as read; then the replaced parts are
    deleted.  A reader sees the day before or after, never between.  A day changed by another
    run meanwhile is not written, and the write stops (:class:`ConcurrentWriteError`), unless
    that run wrote the same export (then the day is left as it wrote it).

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
        Retry policy for throttling, ``UnprocessedItems`` and transaction conflicts (default:
        10 attempts, 50 ms doubling to 5 s).
    budget
        Bytes per item before a ``(date, app)`` is split (see :data:`ITEM_BUDGET`).
    threads
        Unused (days are written one after the other); kept for callers.
    ledger
        :class:`~bubbly_metrics.ledger.LedgerEntry` of the days: each is written in its day's
        transaction.  Without it, each day's ledger entry is deleted in that transaction (the
        entry would no longer describe the day's rows).
    time_left
        Seconds left to the caller (``None``: no limit).  A day is started only if its
        requests, at twice the measured pace (at least :data:`MIN_REQUEST_SECONDS` each),
        should end :data:`RESERVE_SECONDS` before that; otherwise the write stops there
        (:class:`~bubbly_metrics.exceptions.OutOfTimeError`), the days before it written.
    resume
        Leave as they are the days whose ledger entry already names the export of ``ledger``
        (written whole by an earlier run of the same work, e.g. one that ran out of time).

    Returns
    -------
    dict
        JSON-able: ``rows`` / ``rowsWritten`` (``(date, app)`` pairs), ``items`` /
        ``itemsWritten``, ``splitRows``, ``staleItemsDeleted``, ``days`` / ``daysWritten``,
        ``generation``, ``requests`` per API and ``failures`` (empty on success).

    Raises
    ------
    AnalyticsTableError
        After doing everything it could, when a day was not written (the report is attached
        as ``.report``), or when the table cannot be read at all;
        :class:`~bubbly_metrics.exceptions.ConcurrentWriteError` and
        :class:`~bubbly_metrics.exceptions.OutOfTimeError` when it stopped early.
    """
    from bubbly_metrics.exceptions import ConcurrentWriteError, OutOfTimeError

    if not isinstance(table, str) or not table:
        raise InvalidArgumentError(f"table must name the Analytics Table, got {table!r}")
    when = _now(now)
    generation = new_generation(when)
    build = functools.partial(
        build_items, export_arn=export_arn, mode=mode, now=when, budget=budget, generation=generation
    )
    all_groups = build(metrics, per_user=per_user)
    client = _client(client)
    writer = _Writer(client, table, backoff or Backoff())
    groups, too_long = storable(all_groups)
    writer.failures.extend(too_long)
    keep = {(g[0]["date"]["S"], g[0]["app"]["S"]) for g in all_groups} - {_key(g[0]) for g in groups}
    by_day: dict[str, list[list[dict[str, Any]]]] = {}
    for group in groups:
        by_day.setdefault(group[0]["date"]["S"], []).append(group)
    days = {d.isoformat() for d in dates} if dates is not None else set()
    days |= {g[0]["date"]["S"] for g in all_groups}
    entries = {e.day.isoformat(): e for e in ledger} if ledger is not None else None
    expires = int((when + dt.timedelta(days=TTL_DAYS)).timestamp())

    pace = _Pace()
    outcomes: dict[str, _Day] = {}
    stopped: str | None = None
    for day in sorted(days):
        day_groups = by_day.get(day, [])
        if sum(item_size(g[0]) for g in day_groups) > TRANSACT_BYTES - 50_000 and per_user is not None:
            # The day's base items would not fit one transaction: keep per-user data in parts.
            day_groups = build(
                metrics.filter(pl.col("date").cast(pl.Date) == dt.date.fromisoformat(day)),
                per_user=per_user.filter(pl.col("date").cast(pl.Date) == dt.date.fromisoformat(day)),
                base_budget=SLIM_BASE,
            )
            day_groups = [g for g in day_groups if _key(g[0]) not in keep]
            by_day[day] = day_groups
        left = time_left() if time_left is not None else None
        needed = _day_requests(day_groups) * pace.per_request() + RESERVE_SECONDS
        if left is not None and left < needed:
            stopped = day
            break
        ledger_item = None
        if entries is not None and day in entries:
            ledger_item = entries[day].to_item(expires_at=expires, generation=generation)
        started = time.perf_counter()
        outcome = _write_day(writer, day, day_groups, ledger_item, {a for d, a in keep if d == day}, resume)
        pace.requests += outcome.requests
        pace.seconds += time.perf_counter() - started
        outcomes[day] = outcome
        if outcome.status == "conflict":
            stopped = day
            break

    written_days = {d for d, o in outcomes.items() if o.status in ("written", "same", "done")}
    all_groups = [g for d in sorted(by_day) for g in by_day[d]] + [g for g in all_groups if _key(g[0]) in keep]
    failed_rows = {_key(g[0]) for g in all_groups if g[0]["date"]["S"] not in written_days} | keep
    items_total = sum(len(g) for g in all_groups)
    items_failed = sum(len(g) for g in all_groups if _key(g[0]) in failed_rows)
    report: dict[str, Any] = {
        "table": table,
        "generation": generation,
        "rows": len(all_groups),
        "rowsWritten": len(all_groups) - len(failed_rows),
        "items": items_total,
        "itemsWritten": items_total - items_failed,
        "splitRows": sum(len(g) > 1 for g in all_groups),
        "staleItemsDeleted": sum(o.deleted for o in outcomes.values()),
        "days": len(days),
        "daysWritten": sorted(d for d, o in outcomes.items() if o.status == "written"),
        "daysWrittenByAnotherRun": sorted(d for d, o in outcomes.items() if o.status == "same"),
        "daysAlreadyDone": sorted(d for d, o in outcomes.items() if o.status == "done"),
        "requests": dict(writer.requests),
        "failures": writer.failures,
    }
    not_done = sorted(days - written_days)
    if stopped is not None and outcomes.get(stopped) is None:
        report["stoppedBefore"] = stopped
        report["daysLeft"] = [d for d in not_done if d >= stopped]
        message = (
            f"Analytics Table {table}: stopped before {stopped} with too little time left to write it "
            f"(~{_day_requests(by_day.get(stopped, [])) * pace.per_request():.1f}s needed); "
            f"{len(written_days)} day(s) written, {len(report['daysLeft'])} left ({stopped} onwards): "
            f"re-run from {stopped} to finish (each day is written whole or not at all)"
        )
        report["failures"] = [*writer.failures, {"target": "analytics_table", "error": message}]
        raise OutOfTimeError(message, report)
    if stopped is not None:
        report["daysLeft"] = [d for d in not_done if d >= stopped]
        raise ConcurrentWriteError(
            f"Analytics Table {table}: {outcomes[stopped].detail}; this run stopped there, "
            f"{len(written_days)} day(s) written, {len(report['daysLeft'])} left as they are "
            "(each whole, from one run); re-run once the other run has finished if its data is not wanted",
            report,
        )
    if writer.failures:
        raise AnalyticsTableError(
            f"Analytics Table {table}: {len(failed_rows)} of {len(all_groups)} (date, app) row(s) "
            "not written"
            + (f" ({_describe_keys(failed_rows)})" if failed_rows else "")
            + f"; first error: {writer.failures[0]['error']}. Days not written are left whole as they were; "
            "re-running the aggregation is safe.",
            report,
        )
    logger.info("wrote %d item(s) for %d (date, app) row(s) to %s", items_total, len(all_groups), table)
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


class _IncompleteRowError(AnalyticsTableError):
    def __init__(self, day: str, message: str) -> None:
        super().__init__(message)
        self.day = day


def _assemble(day: str, app: str, items: dict[str, dict[str, Any]], now: dt.datetime) -> dict[str, Any] | None:
    base = items.get(app)
    if base is None:
        return None  # parts left by a deletion in progress: not a row
    parts = _int(base.get("parts")) or 1
    stamp = base.get("aggregatedAt", {}).get("S")
    generation = base.get(GENERATION, {}).get("S")
    expires = _int(base.get("expiresAt"))
    chunks = [base]
    for n in range(1, parts):
        # Only the parts of the generation the base item names: others are staged by a run
        # that has not flipped the day (yet, or ever), or replaced and not deleted yet.
        part = items.get(part_key(app, n, generation))
        if part is None or part.get("aggregatedAt", {}).get("S") != stamp:
            if expires is not None and expires <= now.timestamp():
                # TTL deletes expired items lazily and in no particular order: a row past
                # its expiry that lost a part is on its way out, not damaged.
                return None
            found = "missing" if part is None else f"from run {part.get('aggregatedAt', {}).get('S')}"
            raise _IncompleteRowError(
                day,
                f"Analytics Table row {day}/{app} is incomplete: item {n} of {parts} "
                f"(run {stamp}) is {found}; "
                "re-run the aggregation for that day",
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
        raw = _query_dates(client, table, days, keys_only=False, threads=threads)
    else:
        raw = list(_scan(client, table))
    for attempt in range(READ_ATTEMPTS):
        try:
            return table_from_items(raw, start=first, end=last, now=when)
        except _IncompleteRowError as exc:
            # A read is not a snapshot across items: a day flipped, and its replaced parts
            # deleted, between reading its base item and its parts.  Read that day again.
            if attempt + 1 >= READ_ATTEMPTS:
                raise
            raw = [i for i in raw if i["date"]["S"] != exc.day] + _query_date(client, table, exc.day, keys_only=False)
    raise AssertionError("unreachable")  # pragma: no cover


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
    generations: dict[str, set[str | None]] = {}
    for (day, app), parts in by_row.items():
        if app in parts:
            generations.setdefault(day, set()).add(parts[app].get(GENERATION, {}).get("S"))
    for day, seen in sorted(generations.items()):
        if len(seen) > 1:
            # A day is replaced whole (one transaction flips all its base items), but a Query
            # or Scan may see a transaction half applied (read-committed): read it again.
            raise _IncompleteRowError(
                day,
                f"Analytics Table day {day} holds rows of {len(seen)} different writes "
                f"({', '.join(sorted(str(g) for g in seen))}); re-run the aggregation for that day",
            )
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
