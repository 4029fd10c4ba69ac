"""A synthetic table's history: one FULL export and the daily INCREMENTAL exports of the same table."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bubbly_metrics._time import midnight
from bubbly_metrics.dates import parse_date
from bubbly_metrics.exceptions import PARAM, InvalidArgumentError
from bubbly_metrics.synthetic.items import DEFAULT_APPS, _n, _s, generate_items
from bubbly_metrics.synthetic.layout import (
    WrittenExport,
    _check_apps,
    _check_sizes,
    _morning_after,
    _ts,
    _warn_if_exports_there,
    write_full_export,
    write_incremental_export,
)


@dataclass(frozen=True)
class WrittenHistory:
    """What :func:`write_history` wrote: a full export and the daily incremental exports."""

    root: Path
    full: WrittenExport
    daily: tuple[WrittenExport, ...]
    """One incremental export per day of ``daily_days``, except ``missing_day``, in day order."""
    days: tuple[dt.date, ...]
    """The days the daily incremental exports cover (``missing_day`` excluded)."""
    missing_day: dt.date | None


def _epoch(attribute: Any) -> float | None:
    """Epoch seconds of an N or ISO-S timestamp attribute; None when it is neither."""
    if not isinstance(attribute, dict):
        return None
    if isinstance(attribute.get("N"), str):
        try:
            return float(attribute["N"])
        except ValueError:
            return None
    if isinstance(attribute.get("S"), str):
        try:
            return dt.datetime.fromisoformat(attribute["S"].replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _day_of(ts: float) -> dt.date:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date()


def _midnight(day: dt.date) -> int:
    return int(midnight(day).timestamp())


def write_history(
    root: str | Path,
    *,
    n_items: int,
    start: str | dt.date = "2025-01-17",
    days: int = 60,
    daily_days: int = 14,
    missing_day: str | dt.date | None = None,
    late_app: str | None = None,
    late_app_from: str | dt.date | None = None,
    apps: Sequence[str] = DEFAULT_APPS,
    n_files: int = 4,
    seed: int = 0,
    malformed_fraction: float = 0.01,
    delete_fraction: float = 0.03,
    ttl_fraction: float = 0.03,
    export_time: str | dt.datetime | None = None,
) -> WrittenHistory:
    """Write a table's history: a FULL export and the daily INCREMENTAL exports of the same table.

    One simulated table evolves over ``days`` days from ``start``: items are written at their
    ``createdAt``; sessions whose ``updatedAt`` falls on a later day are first written with
    ``updatedAt = createdAt`` and updated past midnight; ``delete_fraction`` of the counted
    records are deleted one to six days after their last write; ``ttl_fraction`` get an
    ``expiresAt`` two to eight days after their last write and are deleted by TTL up to 36 hours
    later (lazily, as DynamoDB does: some are still there when the full export is taken);
    ``late_app`` first appears on ``late_app_from``.  The FULL export is the table at
    ``export_time`` (default: 02:00 UTC the morning after the last day); each of the last
    ``daily_days`` days has the INCREMENTAL export (``NEW_AND_OLD_IMAGES``) of its UTC day: every
    item changed that day once, in its final state (insert: ``NewImage``; update: ``OldImage`` and
    ``NewImage``; delete, TTL's included: ``OldImage``), except ``missing_day``, whose export
    never ran (no delete is scheduled that day, so that every delete is in some export).

    The exports agree with each other by construction, so reconciling what daily runs would
    have written from the incremental exports with a backfill from the full export finds only
    the real causes: re-dated sessions, deletes, TTL expiry, and the missing day.
    """
    _warn_if_exports_there(root)
    first = parse_date(start, name="start")
    _check_sizes(n_items=n_items, days=days, n_files=n_files)
    if not 1 <= daily_days <= days:
        raise InvalidArgumentError(f"{PARAM} must be between 1 and days ({days}), got {daily_days}", param="daily_days")
    _check_apps(apps, (late_app,) if late_app else ())
    end_ts = _midnight(first + dt.timedelta(days=days))
    taken = _ts(export_time) if export_time is not None else _morning_after(first, days)
    daily_first = first + dt.timedelta(days=days - daily_days)
    skip = parse_date(missing_day, name="missing_day") if missing_day is not None else None
    items = list(
        generate_items(
            n_items=n_items, start=first, days=days, apps=apps, seed=seed, malformed_fraction=malformed_fraction
        )
    )
    if late_app is not None:
        late = parse_date(late_app_from, name="late_app_from") if late_app_from is not None else daily_first
        items += _late_app_items(late_app, late, first, days=days, n_items=n_items, apps=len(apps), seed=seed)
    table = _Table(
        first=_midnight(first), end=end_ts, taken=taken.timestamp(), skip=skip, rng=random.Random(seed ^ 0x415)
    )
    events = table.events(items, ttl_fraction=ttl_fraction, delete_fraction=delete_fraction)
    full_items = [s for h in events.values() if (s := _state_at(h, table.taken)) is not None]
    full = write_full_export(root, full_items, export_time=taken, n_files=n_files, seed=seed)
    days_run = [daily_first + dt.timedelta(days=offset) for offset in range(daily_days)]
    daily = [
        _write_daily_export(root, events, day, seed=seed + offset + 1)
        for offset, day in enumerate(days_run)
        if day != skip
    ]
    return WrittenHistory(Path(root), full, tuple(daily), tuple(day for day in days_run if day != skip), skip)


def _write_daily_export(
    root: str | Path, events: dict[tuple[str, str], _History], day: dt.date, *, seed: int
) -> WrittenExport:
    """The INCREMENTAL export of one UTC day of the history."""
    lo, hi = _midnight(day), _midnight(day + dt.timedelta(days=1))
    return write_incremental_export(
        root,
        _changes_between(events, lo, hi),
        export_from=dt.datetime.fromtimestamp(lo, dt.UTC),
        export_to=dt.datetime.fromtimestamp(hi, dt.UTC),
        n_files=1,
        seed=seed,
    )


#: An item's history: (time, its state then, or None once deleted), in time order.
_History = list[tuple[float, dict[str, Any] | None]]


def _late_app_items(
    app: str, late: dt.date, first: dt.date, *, days: int, n_items: int, apps: int, seed: int
) -> list[dict[str, Any]]:
    """The items of an app first seen on ``late``: as many a day as each of the ``apps`` others has."""
    late_days = (first + dt.timedelta(days=days) - late).days
    if late_days < 1:
        raise ValueError(f"late_app_from {late} is after the last day")
    return list(
        generate_items(
            n_items=max(1, n_items * late_days // days // apps),
            start=late,
            days=late_days,
            apps=(app,),
            seed=seed + 1,
            malformed_fraction=0.0,
        )
    )


@dataclass
class _Table:
    """The simulated table of :func:`write_history`: when each item is written, updated and deleted.

    ``first`` and ``end`` bound the history (epoch seconds), ``taken`` is when the full export is
    taken, ``skip`` the day whose daily export never ran (no delete happens that day).
    """

    first: int
    end: int
    taken: float
    skip: dt.date | None
    rng: random.Random

    def events(
        self, items: list[dict[str, Any]], *, ttl_fraction: float, delete_fraction: float
    ) -> dict[tuple[str, str], _History]:
        """Each key's history (a table holds one item per key: the first item of a key wins)."""
        events: dict[tuple[str, str], _History] = {}
        for item in items:
            key = (item.get("modelId", {}).get("S", ""), item.get("owner", {}).get("S", ""))
            if key not in events:
                events[key] = self._history(item, key[0].split("-", 1)[0], ttl_fraction, delete_fraction)
        return events

    def _delete_day_ok(self, ts: float) -> bool:
        return ts < self.taken and (self.skip is None or _day_of(ts) != self.skip)

    def _history(self, item: dict[str, Any], kind: str, ttl_fraction: float, delete_fraction: float) -> _History:
        rng = self.rng
        created, updated = _epoch(item.get("createdAt")), _epoch(item.get("updatedAt"))
        in_range = created is not None and self.first <= created < self.end
        written = created if in_range else self.first + rng.randrange(self.end - self.first)
        assert written is not None
        redated = (
            kind == "session"
            and in_range
            and updated is not None
            and written < updated < self.end
            and _day_of(updated) > _day_of(written)
        )
        last = updated if redated and updated is not None else written
        counted = kind in ("session", "party", "member") and in_range
        r = rng.random()
        deleted_at: float | None = None
        if counted and r < ttl_fraction and kind != "member":
            expires = int(last) + rng.randrange(2 * 86_400, 8 * 86_400)
            item = {**item, "expiresAt": _n(expires)}
            gone = expires + rng.randrange(36 * 3600)
            if self.skip is not None and _day_of(gone) == self.skip:
                gone += 86_400
            deleted_at = gone if self._delete_day_ok(gone) else None
        elif counted and r < ttl_fraction + delete_fraction:
            item.pop("expiresAt", None)
            gone = int(last) + rng.randrange(86_400, 6 * 86_400)
            deleted_at = gone if self._delete_day_ok(gone) else None
        elif "expiresAt" in item and (_epoch(item["expiresAt"]) or 0) < self.taken:
            item.pop("expiresAt")  # only the planted TTL items expire inside the history
        history: _History = []
        if redated:
            history.append((written, {**item, "updatedAt": item["createdAt"]}))
            history.append((last, item))
        else:
            history.append((written, item))
        if deleted_at is not None:
            history.append((deleted_at, None))
        return history


def _state_at(history: _History, when: float) -> dict[str, Any] | None:
    """An item's state just before ``when`` (None: not written yet, or deleted)."""
    state = None
    for t, value in history:
        if t >= when:
            break
        state = value
    return state


def _changes_between(events: dict[tuple[str, str], _History], lo: float, hi: float) -> list[dict[str, Any]]:
    """The incremental-export records of ``[lo, hi)``: every item changed then, once, in its final state."""
    records = []
    for (model_id, owner), history in events.items():
        changed = [t for t, _ in history if lo <= t < hi]
        if not changed:
            continue
        before, after = _state_at(history, lo), _state_at(history, hi)
        if before is None and after is None:
            continue  # written and deleted the same day: nothing to export
        record: dict[str, Any] = {
            "Metadata": {"WriteTimestampMicros": _n(int(max(changed) * 1_000_000))},
            "Keys": {"modelId": _s(model_id), "owner": _s(owner)},
        }
        if before is not None:
            record["OldImage"] = before
        if after is not None:
            record["NewImage"] = after
        records.append(record)
    return records
