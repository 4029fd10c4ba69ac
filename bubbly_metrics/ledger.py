"""The ledger of aggregated days: which export each day of the Analytics Table came from.

Every publish that writes days to the Analytics Table records one ledger entry per day of its
range, including days with no activity at all, so "aggregated, zero activity" and "never
aggregated" differ.  An entry is written in the same transaction as its day's rows
(:func:`bubbly_metrics.analytics_table.write_analytics_table`), so it is true or absent, never
stale: it names the ``generation`` the day's rows carry.  The daily pipeline reads it to skip an
export it already aggregated, to find missing days (:mod:`bubbly_metrics.gaps`) and to tell how
late it is.  An entry marked ``partial`` was written by a run allowed to publish without every
data file (``allow_partial``): it says what is in the table, but the day is not "aggregated".

The ledger lives **in the Analytics Table**, in its own partition::

    date = "#ledger"          S   the partition (no day starts with '#')
    app  = "YYYY-MM-DD"       S   the day (sort key, so a range of days is one Query)
    exportArn, exportId       S   the export the day was read from
    exportType                S   FULL | INCREMENTAL
    exportAsOf                S   the instant that export reflects (exportTime / exportToTime)
    mode                      S   incremental | backfill
    aggregatedAt              S   when (the run's ``now``, as on the day's items)
    apps                      N   (date, app) rows written for the day (a backfill's are dense)
    generation                S   the write that put the day's rows (they carry the same)
    partial, unreadableFiles  BOOL, N   only when the run lacked data files (allow_partial)
    activeUsers, gamesPlayed, partiesCreated, partiesJoined   N   sums over the day's apps
    expiresAt                 N   the same TTL as the day's items

Why there and not in a table beside it: an entry describes items of the same table and must
live and die with them (the same TTL, point-in-time recovery, backups and removal policy); the
Aggregator already writes that table, so no new permission or resource is needed; and
``gaps --analytics-table T`` needs nothing else.  One Query on the partition reads the whole
ledger (455 days at most, ~150 KB).  Readers of the day partitions never see it
(:func:`~bubbly_metrics.analytics_table.read_analytics_table` skips partitions starting with
``#``).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bubbly_metrics import _aws as aws
from bubbly_metrics._retry import Backoff, RetriesExhausted
from bubbly_metrics._time import iso
from bubbly_metrics.dates import parse_date
from bubbly_metrics.exceptions import AnalyticsTableError, InvalidArgumentError

if TYPE_CHECKING:  # pragma: no cover
    from bubbly_metrics.pipeline import AggregateResult

__all__ = ["LEDGER_PARTITION", "LedgerEntry", "ledger_entries", "read_ledger"]

logger = logging.getLogger(__name__)

LEDGER_PARTITION = "#ledger"
"""The Analytics Table partition (``date`` value) that holds the ledger."""

_TOTALS = {
    "active_users": "activeUsers",
    "games_played": "gamesPlayed",
    "parties_created": "partiesCreated",
    "parties_joined": "partiesJoined",
}


def _instant(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


@dataclass(frozen=True)
class LedgerEntry:
    """One aggregated day: where it came from, when, and what it held."""

    day: dt.date
    export_arn: str | None
    export_id: str
    export_type: str | None
    export_as_of: dt.datetime | None
    """The instant the export reflects (a full export's ``exportTime``, an incremental's end)."""
    mode: str
    aggregated_at: dt.datetime
    apps: int
    """``(date, app)`` rows written (an incremental day without activity: 0; a backfill writes dense rows)."""
    totals: dict[str, int]
    """``active_users``, ``games_played``, ``parties_created``, ``parties_joined`` over all apps."""
    generation: str | None = None
    """The write that put the day's rows and this entry (their ``generation`` attribute)."""
    partial: bool = False
    """Written by a run allowed to publish although data files could not be read
    (``allow_partial``): the day is in the table but not complete, and is not "aggregated"."""
    unreadable_files: int = 0
    """Data files of the export that run could not read."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (CLI ``gaps --format json``, handler results)."""
        return {
            "date": self.day.isoformat(),
            "exportArn": self.export_arn,
            "exportId": self.export_id,
            "exportType": self.export_type,
            "exportAsOf": iso(self.export_as_of) if self.export_as_of else None,
            "mode": self.mode,
            "aggregatedAt": iso(self.aggregated_at),
            "apps": self.apps,
            **{_TOTALS[k]: v for k, v in self.totals.items()},
            "generation": self.generation,
            "partial": self.partial,
            "unreadableFiles": self.unreadable_files,
        }

    def to_item(self, *, expires_at: int, generation: str | None = None) -> dict[str, Any]:
        """The DynamoDB item (low-level attribute values); ``generation`` overrides the entry's."""
        item: dict[str, Any] = {
            "date": {"S": LEDGER_PARTITION},
            "app": {"S": self.day.isoformat()},
            "exportId": {"S": self.export_id},
            "mode": {"S": self.mode},
            "aggregatedAt": {"S": iso(self.aggregated_at)},
            "apps": {"N": str(self.apps)},
            "expiresAt": {"N": str(expires_at)},
            **{_TOTALS[k]: {"N": str(v)} for k, v in self.totals.items()},
        }
        if self.export_arn:
            item["exportArn"] = {"S": self.export_arn}
        if self.export_type:
            item["exportType"] = {"S": self.export_type}
        if self.export_as_of:
            item["exportAsOf"] = {"S": iso(self.export_as_of)}
        if generation or self.generation:
            item["generation"] = {"S": generation or self.generation}
        if self.partial:
            item["partial"] = {"BOOL": True}
            item["unreadableFiles"] = {"N": str(self.unreadable_files)}
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> LedgerEntry:
        """Read an entry back from its DynamoDB item."""

        def s(name: str) -> str | None:
            value = item.get(name, {}).get("S")
            return str(value) if value is not None else None

        def n(name: str) -> int:
            return int(item.get(name, {}).get("N", "0"))

        aggregated = _instant(s("aggregatedAt"))
        if aggregated is None:
            raise AnalyticsTableError(f"ledger entry {s('app')} has no aggregatedAt: {item!r}")
        return cls(
            day=dt.date.fromisoformat(str(s("app"))),
            export_arn=s("exportArn"),
            export_id=s("exportId") or "",
            export_type=s("exportType"),
            export_as_of=_instant(s("exportAsOf")),
            mode=s("mode") or "",
            aggregated_at=aggregated,
            apps=n("apps"),
            totals={k: n(v) for k, v in _TOTALS.items()},
            generation=s("generation"),
            partial=bool(item.get("partial", {}).get("BOOL", False)),
            unreadable_files=n("unreadableFiles"),
        )


def ledger_entries(result: AggregateResult, *, now: dt.datetime, partial: bool = False) -> list[LedgerEntry]:
    """One entry per day of ``result.date_range`` (days without rows have ``apps == 0``).

    ``partial``: the run could not read every data file and was allowed to publish anyway;
    the entries say so (and how many files), and are not "aggregated" for the daily pipeline.
    """
    unreadable = len(result.unreadable_files()) if partial else 0
    import polars as pl

    per_day = {
        row["date"]: row
        for row in result.metrics.group_by("date")
        .agg(pl.len().alias("apps"), *(pl.col(c).sum() for c in _TOTALS))
        .iter_rows(named=True)
    }
    export = result.export
    entries = []
    for i in range(result.date_range.days):
        day = result.date_range.start + dt.timedelta(days=i)
        row = per_day.get(day)
        entries.append(
            LedgerEntry(
                day=day,
                export_arn=export.export_arn,
                export_id=export.export_id,
                export_type=export.export_type,
                export_as_of=export.as_of,
                mode=result.mode,
                aggregated_at=now,
                apps=int(row["apps"]) if row else 0,
                totals={c: int(row[c]) if row else 0 for c in _TOTALS},
                partial=partial,
                unreadable_files=unreadable,
            )
        )
    return entries


def _query(client: Any, kwargs: dict[str, Any], table: str) -> dict[str, Any]:
    # Not analytics_table's helper: that package loads Polars, which the Export Lambda never needs.
    try:
        return dict(Backoff().call(lambda: client.query(**kwargs)))
    except RetriesExhausted as exhausted:
        raise AnalyticsTableError(f"cannot read the ledger of {table}: {exhausted.error}") from exhausted.error


def read_ledger(
    table: str,
    *,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    client: Any = None,
) -> dict[dt.date, LedgerEntry]:
    """Read the ledger (optionally only ``start``..``end``, inclusive): day -> entry.

    One consistent Query on the ledger's partition (paginated past 1 MB, which ~6,000 days
    would need).  A day's entry expires with the day's items (same TTL).
    """
    if not isinstance(table, str) or not table:
        raise InvalidArgumentError(f"table must name the Analytics Table, got {table!r}")
    first = parse_date(start, name="start").isoformat() if start is not None else "0000-00-00"
    last = parse_date(end, name="end").isoformat() if end is not None else "9999-99-99"
    if first > last:
        raise InvalidArgumentError(f"start {first} is after end {last}")
    client = aws.client("dynamodb", client)
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "#d = :p AND #a BETWEEN :first AND :last",
        "ExpressionAttributeNames": {"#d": "date", "#a": "app"},
        "ExpressionAttributeValues": {":p": {"S": LEDGER_PARTITION}, ":first": {"S": first}, ":last": {"S": last}},
        "ConsistentRead": True,
    }
    entries: dict[dt.date, LedgerEntry] = {}
    for page in aws.pages(lambda **kw: _query(client, kw, table), kwargs):
        for item in page.get("Items", []):
            entry = LedgerEntry.from_item(item)
            entries[entry.day] = entry
    return entries
