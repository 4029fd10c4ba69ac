"""Helpers for the tests of the outputs and handlers: moto tables, request logs, faults."""

from __future__ import annotations

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
