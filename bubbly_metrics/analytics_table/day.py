"""Replacing one day of the Analytics Table: stage its parts, flip it in one transaction, delete what it replaced.

docs/operations.md ("All-or-nothing days") has the design, its limits and its residual windows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from bubbly_metrics.analytics_table._calls import Writer, condition_failed, query_pages, retrying
from bubbly_metrics.analytics_table.items import GENERATION, PART, _base_app, _int, _key, _n, part_key
from bubbly_metrics.exceptions import AnalyticsTableError
from bubbly_metrics.ledger import LEDGER_PARTITION

logger = logging.getLogger("bubbly_metrics.analytics_table")

Groups = list[list[dict[str, Any]]]


# TransactWriteItems: at most 100 actions and 4 MB per call (moto checks the 100 too).  A
# day's flip holds its base items, deletes of apps it no longer has, and its ledger entry.
TRANSACT_ITEMS = 100
ORPHAN_SECONDS = 3_600
"""Staged parts that no base item names are deleted once older than this (wall clock): a
writer stages a day's parts seconds before it flips the day, so older ones belong to a run
that died (a Lambda lives 15 minutes at most); younger ones may be a concurrent run's."""


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


@dataclass
class _Day:
    """What one day's write did."""

    status: str  # written | same (a concurrent run wrote the same export) | done (resume) | conflict | failed
    deleted: int = 0
    requests: int = 0
    detail: str = ""


def _ledger_key(day: str) -> dict[str, Any]:
    return {"date": {"S": LEDGER_PARTITION}, "app": {"S": day}}


def _get(writer: Writer, key: dict[str, Any], *, what: str) -> dict[str, Any] | None:
    """The item at ``key`` (consistent read), or ``None``."""
    response = retrying(
        lambda: writer.client.get_item(TableName=writer.table, Key=key, ConsistentRead=True),
        what=what,
        backoff=writer.backoff,
    )
    item: dict[str, Any] | None = response.get("Item")
    return item


def _read_day(writer: Writer, day: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Read the day's ledger entry, then its items (keys, generation, stamps only).

    In that order: a flip in between then makes the ledger condition fail, not go unnoticed.
    """
    entry = _get(writer, _ledger_key(day), what=f"read the ledger entry of {day} in {writer.table}")
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
    items = query_pages(writer.client, kwargs, what=f"query {writer.table} for {day}", backoff=writer.backoff)
    return entry, items


@dataclass
class _DayWrite:
    """One day being replaced: what it writes, and what was read of it first."""

    writer: Writer
    day: str
    groups: Groups
    ledger_item: dict[str, Any] | None
    """The day's new ledger entry; ``None`` deletes the entry (the day's rows change, and an
    entry must describe them or be absent)."""
    keep: set[str]
    """Apps whose row could not be built (left as they are)."""
    before: int = 0
    ledger_now: dict[str, Any] | None = None
    items: list[dict[str, Any]] = field(default_factory=list)
    bases: dict[str, dict[str, Any]] = field(default_factory=dict)
    staged: list[dict[str, Any]] = field(default_factory=list)

    def used(self) -> int:
        """Requests sent for this day so far."""
        return sum(self.writer.requests.values()) - self.before

    def stage(self) -> bool:
        """Stage the parts under this run's generation; ``False`` (and unstaged) when that failed.

        No base item names them yet, so no reader follows them, whatever happens next.
        """
        self.staged = [dict(i, stagedAt=_n(int(time.time()))) for g in self.groups for i in g[1:]]
        if self.staged and self.writer.batch([{"PutRequest": {"Item": i}} for i in self.staged], action="put"):
            _unstage(self.writer, self.staged)
            return False
        return True

    def flip_actions(self, stale_bases: list[str]) -> list[dict[str, Any]]:
        """The flip: base items, deletes of apps gone and the ledger entry, each conditional on being as read."""
        table, day, ledger_now = self.writer.table, self.day, self.ledger_now
        actions: list[dict[str, Any]] = [
            {"Put": {"TableName": table, "Item": g[0], **_unchanged(self.bases.get(g[0]["app"]["S"]))}}
            for g in self.groups
        ]
        actions += [
            {"Delete": {"TableName": table, "Key": {"date": {"S": day}, "app": {"S": a}}, **_unchanged(self.bases[a])}}
            for a in stale_bases
        ]
        ledger_key = _ledger_key(day)
        if self.ledger_item is not None:
            actions.append({"Put": {"TableName": table, "Item": self.ledger_item, **_unchanged(ledger_now)}})
        elif ledger_now is not None:
            actions.append({"Delete": {"TableName": table, "Key": ledger_key, **_unchanged(ledger_now)}})
        else:
            # Deleting the absent entry, on condition it is still absent: a concurrent run that
            # recorded the day is noticed (a ConditionCheck would need another IAM action).
            actions.append({"Delete": {"TableName": table, "Key": ledger_key, **_unchanged(None)}})
        return actions

    def flip(self, actions: list[dict[str, Any]]) -> _Day | None:
        """Send the flip (one transaction, unless the day has too many apps); ``None`` once done."""
        writer, day, groups = self.writer, self.day, self.groups
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
            mine = _flipped_by(writer, day, groups, self.ledger_item)
            if mine is True:
                # It did commit (a response lost, the retry's conditions then failed on our own
                # flip): the day is ours, carry on with the deletes.
                writer.failures = [f for f in writer.failures if f.get("keys") != [f"{day}/{len(groups)} row(s)"]]
                continue
            if mine is False:  # never when unsure: staged parts a committed flip names must stay
                _unstage(writer, self.staged)
            if not condition_failed(error):
                return _Day("failed", requests=self.used())
            return _conflict(writer, day, self.ledger_item, self.used())
        return None

    def delete_replaced(self) -> tuple[list[tuple[str, str]], set[tuple[str, str]]]:
        """Delete what no base item names any more; return the keys tried and those not deleted.

        That is the replaced generations' parts, and parts of runs that died before their flip
        (old enough not to be a concurrent run's).
        """
        day, writer = self.day, self.writer
        replaced: set[tuple[str, str]] = set()
        for base in self.bases.values():
            replaced |= _referenced_parts(day, base)
        now = time.time()
        for item in self.items:
            sort_key = item["app"]["S"]
            if PART not in sort_key or (_base_app(sort_key) in self.keep):
                continue
            staged_at = _int(item.get("stagedAt"))
            if staged_at is None or staged_at < now - ORPHAN_SECONDS:
                replaced.add((day, sort_key))
        existing = {_key(i) for i in self.items}
        ours = {_key(i) for i in self.staged}
        old = sorted((existing & replaced) - ours)
        failed = writer.batch(
            [{"DeleteRequest": {"Key": {"date": {"S": d}, "app": {"S": a}}}} for d, a in old], action="delete"
        )
        if failed:  # unreferenced: readers ignore them, the next write of the day deletes them
            logger.warning("%s: %d replaced part(s) not deleted yet", day, len(failed))
            writer.failures = [f for f in writer.failures if f.get("action") != "delete"]
        return old, failed


def _write_day(
    writer: Writer,
    day: str,
    groups: Groups,
    ledger_item: dict[str, Any] | None,
    keep: set[str],
    resume: bool = False,
) -> _Day:
    """Replace one day: stage its parts, flip its base items and ledger entry in one transaction.

    ``ledger_item`` is the day's new ledger entry; ``None`` deletes the entry (the day's rows
    change, and an entry must describe them or be absent).  ``keep``: apps whose row could not
    be built (left as they are).
    """
    write = _DayWrite(writer, day, groups, ledger_item, keep, before=sum(writer.requests.values()))
    write.ledger_now, write.items = _read_day(writer, day)
    ledger_now = write.ledger_now
    if resume and ledger_item is not None and ledger_now is not None and _source(ledger_now) == _source(ledger_item):
        return _Day("done", requests=write.used())
    write.bases = {i["app"]["S"]: i for i in write.items if PART not in i["app"]["S"]}
    new_apps = {g[0]["app"]["S"] for g in groups}
    stale_bases = sorted(a for a in write.bases if a not in new_apps and a not in keep)
    if not write.stage():  # 1. stage the parts
        return _Day("failed", requests=write.used())
    outcome = write.flip(write.flip_actions(stale_bases))  # 2. flip the day
    if outcome is not None:
        return outcome
    old, failed = write.delete_replaced()  # 3. delete what no base item names
    return _Day("written", deleted=len(stale_bases) + len(old) - len(failed), requests=write.used())


def _flipped_by(writer: Writer, day: str, groups: Groups, ledger_item: dict[str, Any] | None) -> bool | None:
    """Whether the day now carries this write's generation (``None``: cannot tell)."""
    if ledger_item is not None:
        key, generation = _ledger_key(day), ledger_item.get(GENERATION)
    elif groups:
        key, generation = {"date": {"S": day}, "app": groups[0][0]["app"]}, groups[0][0].get(GENERATION)
    else:
        return False  # nothing was staged
    try:
        item = _get(writer, key, what=f"read {day} back")
    except AnalyticsTableError:
        return None
    return item is not None and generation is not None and item.get(GENERATION) == generation


def _unstage(writer: Writer, staged: list[dict[str, Any]]) -> None:
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


def _conflict(writer: Writer, day: str, ledger_item: dict[str, Any] | None, used: int) -> _Day:
    """A flip's condition failed: another run changed the day since it was read."""
    now = _get(writer, _ledger_key(day), what=f"read the ledger entry of {day} in {writer.table}")
    if ledger_item is not None and now is not None and _source(now) == _source(ledger_item):
        # The same export, written whole by a concurrent run (an event delivered twice, the
        # safety net racing the completion event): the day is as this run would leave it.
        logger.info("%s: written from the same export by a concurrent run; left as it is", day)
        return _Day("same", requests=used)
    holder = now.get("exportId", {}).get("S", "?") if now is not None else "no ledger entry"
    detail = f"{day} was changed by another run while this one wrote it (now: {holder})"
    writer.failures.append({"target": "analytics_table", "action": "put", "items": 0, "keys": [day], "error": detail})
    return _Day("conflict", requests=used, detail=detail)
