"""The Analytics Table: daily per-app items written from metrics, and read back (docs/rules.md#analytics-table).

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

The package's modules, one job each: :mod:`~bubbly_metrics.analytics_table.items` (building,
sizing and keying items), :mod:`~bubbly_metrics.analytics_table.day` (one day's
transaction), :mod:`~bubbly_metrics.analytics_table.writer` (a write's days and report),
:mod:`~bubbly_metrics.analytics_table.reader` (reassembling rows) and ``_calls`` (the DynamoDB
requests, retried).
"""

from bubbly_metrics.analytics_table.items import (
    GENERATION,
    ITEM_BUDGET,
    ITEM_LIMIT,
    KEY_LIMIT,
    TTL_DAYS,
    build_items,
    item_size,
    new_generation,
    part_key,
    storable,
)
from bubbly_metrics.analytics_table.reader import (
    TABLE_SCHEMA,
    per_user_from_table,
    read_analytics_table,
    table_from_items,
)
from bubbly_metrics.analytics_table.writer import write_analytics_table

__all__ = [
    "GENERATION",
    "ITEM_BUDGET",
    "ITEM_LIMIT",
    "KEY_LIMIT",
    "TABLE_SCHEMA",
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
