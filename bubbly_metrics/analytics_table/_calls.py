"""The Analytics Table's DynamoDB requests, retried with backoff: reads, batched writes, transactions."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bubbly_metrics import _aws as aws
from bubbly_metrics._retry import Backoff, RetriesExhausted, error_code
from bubbly_metrics.analytics_table.items import _key
from bubbly_metrics.exceptions import AnalyticsTableError

BATCH_LIMIT = 25  # BatchWriteItem: at most 25 put/delete requests per call


def client(given: Any) -> Any:
    """``given``, or a DynamoDB client from the environment."""
    return aws.client("dynamodb", given)


def retrying(call: Any, *, what: str, backoff: Backoff | None = None) -> Any:
    """``call()``, retried; a failure for good is an :class:`AnalyticsTableError` ("cannot {what}: ...")."""
    try:
        return (backoff or Backoff()).call(call)
    except RetriesExhausted as exhausted:
        exc = exhausted.error
        hint = " (does the table exist, in this region?)" if error_code(exc) == "ResourceNotFoundException" else ""
        raise AnalyticsTableError(f"cannot {what}: {exc}{hint}") from exc


def query_pages(
    client: Any, kwargs: dict[str, Any], *, what: str, backoff: Backoff | None = None
) -> list[dict[str, Any]]:
    """The items of every page of a Query, each page retried."""
    pages = aws.pages(lambda **kw: retrying(lambda: client.query(**kw), what=what, backoff=backoff), kwargs)
    return [item for page in pages for item in page.get("Items", [])]


def scan(client: Any, table: str) -> Iterator[dict[str, Any]]:
    """Every item of ``table`` (consistent read), each page retried."""
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    for page in aws.pages(lambda **kw: retrying(lambda: client.scan(**kw), what=f"scan {table}"), kwargs):
        yield from page.get("Items", [])


def query_date(
    client: Any, table: str, day: str, *, keys_only: bool, backoff: Backoff | None = None
) -> list[dict[str, Any]]:
    """The items of ``day``'s partition (only their keys with ``keys_only``)."""
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
    return query_pages(client, kwargs, what=f"query {table} for {day}", backoff=backoff)


def query_dates(
    client: Any,
    table: str,
    days: Iterable[str],
    *,
    keys_only: bool,
    threads: int,
    backoff: Backoff | None = None,
) -> list[dict[str, Any]]:
    """The items of every day of ``days``, ``threads`` Queries at a time."""
    days = sorted(set(days))
    if not days:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(days)))) as pool:
        chunks = pool.map(lambda d: query_date(client, table, d, keys_only=keys_only, backoff=backoff), days)
        return [item for chunk in chunks for item in chunk]


def condition_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is a transaction cancelled by a failed condition (a concurrent writer)."""
    if error_code(exc) != "TransactionCanceledException":
        return False
    reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
    return any(isinstance(r, dict) and r.get("Code") == "ConditionalCheckFailed" for r in reasons)


@dataclass
class Writer:
    """Write requests to one table: counted per API, failures recorded for the report."""

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
        # One count of attempts for errors and UnprocessedItems alike.
        attempt = 0

        def count() -> None:
            nonlocal attempt
            attempt += 1
            self.requests["BatchWriteItem"] += 1

        while True:
            try:
                response = self.backoff.call(
                    functools.partial(self.client.batch_write_item, RequestItems={self.table: pending}),
                    on_attempt=count,
                    after=attempt,
                )
            except RetriesExhausted as exhausted:
                exc = exhausted.error
                return self._failed(pending, action, f"{type(exc).__name__}: {exc}", exhausted.attempts)
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
        token = secrets.token_hex(16)

        def count() -> None:
            self.requests["TransactWriteItems"] += 1

        try:
            self.backoff.call(
                lambda: self.client.transact_write_items(TransactItems=actions, ClientRequestToken=token),
                on_attempt=count,
            )
            return None
        except RetriesExhausted as exhausted:
            exc = exhausted.error
            if not condition_failed(exc):
                self.failures.append(
                    {
                        "target": "analytics_table",
                        "action": "put",
                        "items": len(actions),
                        "keys": [f"{key[0]}/{key[1]}"],
                        "error": f"{type(exc).__name__}: {exc} (after {exhausted.attempts} attempt(s))",
                    }
                )
            return exc
