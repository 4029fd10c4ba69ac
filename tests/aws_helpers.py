"""Helpers for the tests of the outputs and handlers: moto tables, request logs, faults."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3

ANALYTICS = "bubbly-analytics"
MAIN = "bubblyclouds-main"
BUCKET = "bubbly-exports"


def create_analytics_table(name: str = ANALYTICS) -> Any:
    ddb = boto3.client("dynamodb")
    ddb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "date", "KeyType": "HASH"},
            {"AttributeName": "app", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "date", "AttributeType": "S"},
            {"AttributeName": "app", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return ddb


def create_main_table(name: str = MAIN) -> str:
    ddb = boto3.client("dynamodb")
    arn = ddb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "modelId", "KeyType": "HASH"},
            {"AttributeName": "owner", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "modelId", "AttributeType": "S"},
            {"AttributeName": "owner", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )["TableDescription"]["TableArn"]
    ddb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    return str(arn)


def scan_all(table: str = ANALYTICS) -> dict[tuple[str, str], dict[str, Any]]:
    ddb = boto3.client("dynamodb")
    items: dict[tuple[str, str], dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = ddb.scan(**kwargs)
        for item in page["Items"]:
            items[(item["date"]["S"], item["app"]["S"])] = item
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@dataclass
class RequestLog:
    """Every API call a client made: operation name, parameters and request body size."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    body_sizes: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-parameter-build.*.*", self._params)
        client.meta.events.register("before-send.*.*", self._send)
        return client

    def _params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        with self.lock:
            self.calls.append((model.name, _copy(params)))

    def _send(self, request: Any, **kwargs: Any) -> None:
        name = kwargs.get("event_name", "").rsplit(".", 1)[-1]
        body = request.body or b""
        with self.lock:
            self.body_sizes.append((name, len(body)))

    def of(self, operation: str) -> list[dict[str, Any]]:
        return [p for name, p in self.calls if name == operation]


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def client_error(code: str, operation: str, message: str = "injected") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


class Faulty:
    """Wraps a real (moto-backed) client; ``faults[operation]`` may intercept each call.

    A fault is ``fn(call_number, kwargs, real_method) -> response`` and may raise, change the
    request or the response; everything else goes to the real client untouched.
    """

    def __init__(self, client: Any, **faults: Callable[..., Any]) -> None:
        self._client = client
        self._faults = faults
        self.counts: dict[str, int] = {}
        self.meta = client.meta
        self.exceptions = client.exceptions

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)
        fault = self._faults.get(name)
        if fault is None:
            return real

        def call(**kwargs: Any) -> Any:
            self.counts[name] = self.counts.get(name, 0) + 1
            return fault(self.counts[name], kwargs, real)

        return call


def throttle_first(n: int, code: str = "ThrottlingException") -> Callable[..., Any]:
    def fault(call: int, kwargs: dict[str, Any], real: Any) -> Any:
        if call <= n:
            raise client_error(code, "call")
        return real(**kwargs)

    return fault


def always_fail(code: str = "AccessDeniedException") -> Callable[..., Any]:
    def fault(call: int, kwargs: dict[str, Any], real: Any) -> Any:
        raise client_error(code, "call", "injected permanent failure")

    return fault


def unprocess_half(rounds: int | None = None) -> Callable[..., Any]:
    """Make BatchWriteItem write half of each request (rounded up); the rest is unprocessed."""

    def fault(call: int, kwargs: dict[str, Any], real: Any) -> Any:
        if rounds is not None and call > rounds:
            return real(**kwargs)
        ((table, requests),) = kwargs["RequestItems"].items()
        half = (len(requests) + 1) // 2
        keep, drop = requests[:half], requests[half:]
        response = real(RequestItems={table: keep}) if keep else {"UnprocessedItems": {}}
        unprocessed = dict(response.get("UnprocessedItems") or {})
        unprocessed[table] = list(unprocessed.get(table, [])) + drop
        return {**response, "UnprocessedItems": unprocessed}

    return fault


@dataclass
class FakeContext:
    """The parts of a Lambda context the handlers use."""

    remaining_ms: int = 300_000
    aws_request_id: str = "req-0001"
    function_name: str = "test-AggregatorLambda"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def dynamodb_item_size(item: dict[str, Any]) -> int:
    """Independent size oracle from the DynamoDB developer guide's item-size rules."""

    def value(v: dict[str, Any]) -> int:
        ((t, x),) = v.items()
        if t == "S":
            return len(x.encode("utf-8"))
        if t == "N":
            return len(x) + 1  # docs: ~1 byte per two significant digits + 1; this bounds it
        if t == "SS":
            return sum(len(e.encode("utf-8")) for e in x)
        if t == "M":
            return 3 + sum(1 + len(k.encode("utf-8")) + value(e) for k, e in x.items())
        if t == "L":
            return 3 + sum(1 + value(e) for e in x)
        return 1

    return sum(len(k.encode("utf-8")) + value(v) for k, v in item.items())


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


_WRITES = threading.RLock()


def isolate_transactions() -> Callable[[], None]:
    """Make moto's DynamoDB transactions isolated, as DynamoDB's are; return an undo.

    moto 5 applies a TransactWriteItems one action at a time with no lock, and to roll back
    it deep-copies every table the call touches first -- a copy of the whole table per call
    (seconds per call on a table of a few MB), and a rollback that also undoes other
    clients' writes made meanwhile.  DynamoDB serialises a transaction with every other
    write to its items.  Here every write (transaction or not) holds one lock, and a rollback
    restores only the items the transaction named.  Reads take no lock: like DynamoDB's
    Query and Scan (read-committed), they may see part of a transaction being applied.
    """
    import copy

    from moto.dynamodb import models

    backend = models.DynamoDBBackend
    names = ("transact_write_items", "put_item", "delete_item", "update_item")
    saved = {name: getattr(backend, name) for name in names}

    class _NoCopy:
        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value

    def locked(name: str) -> Callable[..., Any]:
        real = saved[name]

        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            with _WRITES:
                return real(self, *args, **kwargs)

        return call

    def transact(self: Any, transact_items: list[dict[str, Any]]) -> None:
        with _WRITES:
            touched = []
            for entry in transact_items:
                op_type, op = next(iter(entry.items()))
                try:
                    table = self.get_table(op["TableName"])
                    if op_type == "Put":
                        names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
                        key = {n: op["Item"][n] for n in names}
                    else:
                        key = op["Key"]
                    old = self.get_item(op["TableName"], key)
                    touched.append((op["TableName"], key, copy.deepcopy(old.to_json()["Attributes"]) if old else None))
                except Exception:  # moto reports what is wrong with the action itself
                    continue
            real_copy = models.copy
            models.copy = _NoCopy  # type: ignore[assignment]
            try:
                return saved["transact_write_items"](self, transact_items)  # type: ignore[no-any-return]
            except Exception:
                for table_name, key, old_item in touched:
                    if old_item is None:
                        with contextlib.suppress(Exception):
                            saved["delete_item"](self, table_name, key)
                    else:
                        saved["put_item"](self, table_name, old_item)
                raise
            finally:
                models.copy = real_copy

    backend.transact_write_items = transact  # type: ignore[method-assign]
    for name in ("put_item", "delete_item", "update_item"):
        setattr(backend, name, locked(name))

    def undo() -> None:
        for name, method in saved.items():
            setattr(backend, name, method)

    return undo


def without_generations(items: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """``scan_all()`` with each write's own id taken out (generation, part keys, stagedAt).

    Two writes of the same result differ only there; compare what they hold.
    """
    import re

    def key(sort_key: str) -> str:
        return re.sub(r"#part-[^-]+-(\d+)$", r"#part-\1", sort_key)

    out = {}
    for (day, sort_key), item in items.items():
        item = {k: v for k, v in item.items() if k not in ("generation", "stagedAt")}
        item["app"] = {"S": key(sort_key)}
        out[(day, key(sort_key))] = item
    return out
