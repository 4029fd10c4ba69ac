"""Reading the Analytics Table back: split rows reassembled, half-applied days read again."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import polars as pl

from bubbly_metrics._time import utc_now
from bubbly_metrics.analytics_table import _calls
from bubbly_metrics.analytics_table.items import _SUMMARY_KEYS, GENERATION, _base_app, _int, _key, part_key
from bubbly_metrics.exceptions import AnalyticsTableError, InvalidArgumentError
from bubbly_metrics.metrics import METRICS_SCHEMA

READ_ATTEMPTS = 3  # reads of a day that looks incomplete before it is reported
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
    when = utc_now(now)
    client = _calls.client(client)
    if first and last:
        days = [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
        raw = _calls.query_dates(client, table, days, keys_only=False, threads=threads)
    else:
        raw = list(_calls.scan(client, table))
    for attempt in range(READ_ATTEMPTS):
        try:
            return table_from_items(raw, start=first, end=last, now=when)
        except _IncompleteRowError as exc:
            # A read is not a snapshot across items: a day flipped, and its replaced parts
            # deleted, between reading its base item and its parts.  Read that day again.
            if attempt + 1 >= READ_ATTEMPTS:
                raise
            raw = [i for i in raw if i["date"]["S"] != exc.day] + _calls.query_date(
                client, table, exc.day, keys_only=False
            )
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
    the JSON of ``aws dynamodb scan`` (:func:`~bubbly_metrics.reconciliation.read_snapshot`), or
    the items a run would write (:func:`~bubbly_metrics.reconciliation.daily_runs_table`).  Split
    rows are reassembled; items outside ``start``..``end`` (inclusive) are left out.

    Returns
    -------
    polars.DataFrame
        :data:`TABLE_SCHEMA`, sorted by date and app.
    """
    when = utc_now(now)
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
