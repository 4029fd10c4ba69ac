"""Writing the Analytics Table: the days of a write, one after the other, and its report.

Each day is replaced whole, with its ledger entry, or not at all
(:mod:`bubbly_metrics.analytics_table.day`); a day is started only if there is time to
finish it, and a day changed by another run stops the write.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from bubbly_metrics._retry import Backoff
from bubbly_metrics._time import utc_now
from bubbly_metrics.analytics_table import _calls
from bubbly_metrics.analytics_table._calls import BATCH_LIMIT, Writer
from bubbly_metrics.analytics_table.day import Groups, _Day, _write_day
from bubbly_metrics.analytics_table.items import (
    ITEM_BUDGET,
    TTL_DAYS,
    _describe_keys,
    _key,
    build_items,
    item_size,
    new_generation,
    storable,
)
from bubbly_metrics.exceptions import AnalyticsTableError, InvalidArgumentError

logger = logging.getLogger("bubbly_metrics.analytics_table")
TRANSACT_BYTES = 4_000_000  # under 4 MiB: request overheads (table names, conditions) count too
SLIM_BASE = 2_000
"""Per-user bytes a base item keeps when the day's base items would not fit one transaction."""
MIN_REQUEST_SECONDS = 0.1
"""Time assumed per write request when budgeting (``time_left``) before any was measured."""
RESERVE_SECONDS = 2.0
"""Time kept aside when budgeting: a day is started only if it should end this long before time runs out."""


@dataclass
class _Pace:
    """Write requests' measured pace, to budget time before starting a day."""

    requests: int = 0
    seconds: float = 0.0

    def per_request(self) -> float:
        measured = self.seconds / self.requests if self.requests else 0.0
        return max(MIN_REQUEST_SECONDS, 2 * measured)  # conservative: twice what was seen


def _day_requests(groups: Groups) -> int:
    """Write requests a day needs at most: reads, staging, the flip, deleting as many old parts."""
    parts = sum(len(g) - 1 for g in groups)
    return 3 + 2 * math.ceil(parts / BATCH_LIMIT)


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
    if not isinstance(table, str) or not table:
        raise InvalidArgumentError(f"table must name the Analytics Table, got {table!r}")
    when = utc_now(now)
    generation = new_generation(when)
    build = functools.partial(
        build_items, export_arn=export_arn, mode=mode, now=when, budget=budget, generation=generation
    )
    all_groups = build(metrics, per_user=per_user)
    writer = Writer(_calls.client(client), table, backoff or Backoff())
    run = _Run(
        writer, build, metrics, per_user, generation, expires=int((when + dt.timedelta(days=TTL_DAYS)).timestamp())
    )
    run.plan(all_groups, dates, ledger)
    run.write_days(time_left, resume)
    return run.finish()


@dataclass
class _Run:
    """One write of the table: its days, written one after the other, and what each did."""

    writer: Writer
    build: Callable[..., Groups]
    metrics: pl.DataFrame
    per_user: pl.DataFrame | None
    generation: str
    expires: int
    by_day: dict[str, Groups] = field(default_factory=dict)
    refused: Groups = field(default_factory=list)
    """Rows DynamoDB cannot store (:func:`storable`): reported, not sent."""
    keep: set[tuple[str, str]] = field(default_factory=set)
    """Their keys: left as they are in the table."""
    days: set[str] = field(default_factory=set)
    entries: dict[str, Any] | None = None
    pace: _Pace = field(default_factory=_Pace)
    outcomes: dict[str, _Day] = field(default_factory=dict)
    stopped: str | None = None

    def plan(self, all_groups: Groups, dates: Iterable[dt.date] | None, ledger: Iterable[Any] | None) -> None:
        """Group the rows by day; the days are those of ``dates`` and of the rows."""
        groups, too_long = storable(all_groups)
        self.writer.failures.extend(too_long)
        self.keep = {(g[0]["date"]["S"], g[0]["app"]["S"]) for g in all_groups} - {_key(g[0]) for g in groups}
        self.refused = [g for g in all_groups if _key(g[0]) in self.keep]
        for group in groups:
            self.by_day.setdefault(group[0]["date"]["S"], []).append(group)
        self.days = {d.isoformat() for d in dates} if dates is not None else set()
        self.days |= {g[0]["date"]["S"] for g in all_groups}
        self.entries = {e.day.isoformat(): e for e in ledger} if ledger is not None else None

    def day_groups(self, day: str) -> Groups:
        """The day's rows; rebuilt with slim base items if they would not fit one transaction."""
        day_groups = self.by_day.get(day, [])
        if sum(item_size(g[0]) for g in day_groups) > TRANSACT_BYTES - 50_000 and self.per_user is not None:
            # The day's base items would not fit one transaction: keep per-user data in parts.
            date = dt.date.fromisoformat(day)
            day_groups = self.build(
                self.metrics.filter(pl.col("date").cast(pl.Date) == date),
                per_user=self.per_user.filter(pl.col("date").cast(pl.Date) == date),
                base_budget=SLIM_BASE,
            )
            day_groups = [g for g in day_groups if _key(g[0]) not in self.keep]
            self.by_day[day] = day_groups
        return day_groups

    def write_days(self, time_left: Callable[[], float | None] | None, resume: bool) -> None:
        """Write the days in order; stop before a day there is no time for, or at a conflict."""
        for day in sorted(self.days):
            day_groups = self.day_groups(day)
            left = time_left() if time_left is not None else None
            needed = _day_requests(day_groups) * self.pace.per_request() + RESERVE_SECONDS
            if left is not None and left < needed:
                self.stopped = day
                return
            ledger_item = None
            if self.entries is not None and day in self.entries:
                ledger_item = self.entries[day].to_item(expires_at=self.expires, generation=self.generation)
            started = time.perf_counter()
            keep = {a for d, a in self.keep if d == day}
            outcome = _write_day(self.writer, day, day_groups, ledger_item, keep, resume)
            self.pace.requests += outcome.requests
            self.pace.seconds += time.perf_counter() - started
            self.outcomes[day] = outcome
            if outcome.status == "conflict":
                self.stopped = day
                return

    def finish(self) -> dict[str, Any]:
        """The report; raised with the error when a day was not written."""
        from bubbly_metrics.exceptions import ConcurrentWriteError, OutOfTimeError

        writer, outcomes, stopped, table = self.writer, self.outcomes, self.stopped, self.writer.table
        written_days = {d for d, o in outcomes.items() if o.status in ("written", "same", "done")}
        all_groups = [g for d in sorted(self.by_day) for g in self.by_day[d]] + self.refused
        failed_rows = {_key(g[0]) for g in all_groups if g[0]["date"]["S"] not in written_days} | self.keep
        items_total = sum(len(g) for g in all_groups)
        report = self.report(all_groups, failed_rows)
        not_done = sorted(self.days - written_days)
        if stopped is not None and outcomes.get(stopped) is None:
            report["stoppedBefore"] = stopped
            report["daysLeft"] = [d for d in not_done if d >= stopped]
            message = (
                f"Analytics Table {table}: stopped before {stopped} with too little time left to write it "
                f"(~{_day_requests(self.by_day.get(stopped, [])) * self.pace.per_request():.1f}s needed); "
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

    def report(self, all_groups: Groups, failed_rows: set[tuple[str, str]]) -> dict[str, Any]:
        """What :func:`write_analytics_table` returns (and attaches to its errors)."""
        outcomes = self.outcomes
        items_total = sum(len(g) for g in all_groups)
        items_failed = sum(len(g) for g in all_groups if _key(g[0]) in failed_rows)
        return {
            "table": self.writer.table,
            "generation": self.generation,
            "rows": len(all_groups),
            "rowsWritten": len(all_groups) - len(failed_rows),
            "items": items_total,
            "itemsWritten": items_total - items_failed,
            "splitRows": sum(len(g) > 1 for g in all_groups),
            "staleItemsDeleted": sum(o.deleted for o in outcomes.values()),
            "days": len(self.days),
            "daysWritten": sorted(d for d, o in outcomes.items() if o.status == "written"),
            "daysWrittenByAnotherRun": sorted(d for d, o in outcomes.items() if o.status == "same"),
            "daysAlreadyDone": sorted(d for d, o in outcomes.items() if o.status == "done"),
            "requests": dict(self.writer.requests),
            "failures": self.writer.failures,
        }
