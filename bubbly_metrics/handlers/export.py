"""Export Lambda: start a DynamoDB export of the main table to the export bucket.

Environment: ``TABLE_NAME`` (the main table's ARN; a name is looked up), ``EXPORT_BUCKET``,
``S3_PREFIX`` (default ``exports/``).  Event: ``{"mode": "incremental"|"backfill",
"backfillStartDate": "YYYY-MM-DD"}``; incremental exports yesterday 00:00 → today 00:00 UTC
(or the optional ``"date"``), backfill exports the whole table.  Returns the export ARN,
status and S3 prefix (see :func:`bubbly_metrics.start_export.start_export`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from typing import Any

from bubbly_metrics.handlers import json_logging, log, parse_event, require_env
from bubbly_metrics.start_export import DEFAULT_S3_PREFIX, start_export

logger = logging.getLogger(__name__)


def handle(
    event: Any,
    context: Any,
    *,
    env: Mapping[str, str] | None = None,
    now: dt.datetime | None = None,
    client: Any = None,
) -> dict[str, Any]:
    """:func:`lambda_handler` with its environment, clock and DynamoDB client injectable."""
    env = os.environ if env is None else env
    with json_logging(context):
        try:
            table = require_env(env, "TABLE_NAME")
            bucket = require_env(env, "EXPORT_BUCKET")
            prefix = env.get("S3_PREFIX", DEFAULT_S3_PREFIX)
            request = parse_event(event)
            result = start_export(
                table=table,
                bucket=bucket,
                mode=request["mode"],
                prefix=prefix,
                date=request["date"],
                backfill_start=request["backfillStartDate"],
                now=now,
                client=client,
            )
        except Exception as exc:
            log(logger, str(exc), level=logging.ERROR, errorType=type(exc).__name__, event=event)
            raise
        log(logger, "Export started", **result)
        return result


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Start the export the event asks for; return its ARN, status and S3 prefix."""
    return handle(event, context)
