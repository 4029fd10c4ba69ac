"""Analytics Table items: built from metrics, measured, keyed and split into parts.

The layout of an item and the rule that splits a ``(date, app)`` row over several items are
described in :mod:`bubbly_metrics.analytics_table` (docs/rules.md#analytics-table).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from bubbly_metrics._time import iso, utc_now
from bubbly_metrics.exceptions import AnalyticsTableError, InvalidArgumentError
from bubbly_metrics.metrics import METRIC_COLUMNS

TTL_DAYS = 455
"""Items expire (DynamoDB TTL on ``expiresAt``) this many days after they are written."""

ITEM_LIMIT = 400 * 1024
"""DynamoDB's maximum item size (attribute names included)."""

KEY_LIMIT = 1024
"""DynamoDB's limit on a sort key, in UTF-8 bytes.  A row whose app (with a part suffix) is
longer is reported and not sent: DynamoDB would reject the whole batch it is in."""

ITEM_BUDGET = 350_000
"""Bytes an item is filled to: well under :data:`ITEM_LIMIT`, so estimation error never matters."""

PART = "#part-"
GENERATION = "generation"

_SUMMARY_KEYS = {
    "active_users": "activeUsers",
    "games_played": "gamesPlayed",
    "parties_created": "partiesCreated",
    "parties_joined": "partiesJoined",
}
_PER_USER_ATTRS = ("activeUserIds", "gamesPerUser", "partiesCreatedPerUser")


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
    now = utc_now(now)
    expires = int((now + dt.timedelta(days=TTL_DAYS)).timestamp())
    provenance: dict[str, Any] = {"expiresAt": _n(expires), "aggregatedAt": {"S": iso(now, timespec="microseconds")}}
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
# Keys


def _key(item: dict[str, Any]) -> tuple[str, str]:
    return item["date"]["S"], item["app"]["S"]


def _base_app(sort_key: str) -> str:
    return sort_key.split(PART, 1)[0]


def new_generation(now: dt.datetime | None = None) -> str:
    """A unique id for one write of the Analytics Table: its time and 32 random bits.

    It holds no ``-`` (part keys end ``-{n}``) and sorts by time.
    """
    return f"{utc_now(now).strftime('%Y%m%dT%H%M%SZ')}.{secrets.token_hex(4)}"


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


def _int(value: dict[str, Any] | None) -> int | None:
    return int(value["N"]) if value and "N" in value else None
