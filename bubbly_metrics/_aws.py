"""boto3 clients from the standard AWS environment, the same way everywhere in the package.

Light on purpose (no Polars): the Export Lambda imports it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

NAMESPACE = "BubblyClouds/Analytics"
"""The package's CloudWatch namespace: the daily metrics (:mod:`bubbly_metrics.cloudwatch`) and
the lateness metric (:mod:`bubbly_metrics.gaps`)."""


def client(service: str, given: Any = None, *, region: str | None = None) -> Any:
    """``given`` if not None, else a boto3 client for ``service``.

    The region is the one boto3 finds (``AWS_DEFAULT_REGION``, the profile), else
    ``AWS_REGION`` (which other AWS SDKs and the Lambda runtime set, and boto3 alone ignores),
    else ``region`` (e.g. the region of a table ARN).
    """
    if given is not None:
        return given
    import boto3

    found = boto3.session.Session().region_name
    return boto3.client(service, region_name=None if found else os.environ.get("AWS_REGION") or region)


def arn_region(arn: str) -> str | None:
    """The region field of an ARN (``arn:aws:dynamodb:eu-west-2:…``), if it has one."""
    parts = arn.split(":")
    return parts[3] or None if len(parts) > 3 and parts[0] == "arn" else None


def pages(
    call: Callable[..., Any],
    kwargs: dict[str, Any],
    *,
    token: str = "LastEvaluatedKey",
    start: str = "ExclusiveStartKey",
) -> Iterator[dict[str, Any]]:
    """Every page of a paginated AWS call: ``call(**kwargs)``, then again from each page's ``token``.

    DynamoDB's Query/Scan by default; CloudWatch's ``NextToken`` with
    ``token=start="NextToken"``.  ``call`` may wrap the client's method (to retry it);
    ``kwargs`` is not modified.
    """
    kwargs = dict(kwargs)
    while True:
        page = dict(call(**kwargs))
        yield page
        if not page.get(token):
            return
        kwargs[start] = page[token]
