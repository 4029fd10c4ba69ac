"""Start DynamoDB table exports to S3, as the Export Lambda and the CLI's ``export`` do.

``incremental`` exports the change window *yesterday 00:00 → today 00:00 UTC*
(``INCREMENTAL_EXPORT``, view ``NEW_IMAGE``); ``backfill`` exports the whole table
(``FULL_EXPORT``).  Both use ``ExportFormat=DYNAMODB_JSON`` and write under
``{prefix}{mode}/{timestamp}/`` in the export bucket (docs/rules.md#finding-exports) — though nothing downstream
depends on that naming: exports are found by their manifests.

Every request carries a deterministic ``ClientToken`` derived from the mode, the window and the
destination, and the S3 prefix is derived from the window too, so invoking the Lambda twice
for the same day (a retry, a double trigger) returns the export already running instead of
starting a second identical one.  (DynamoDB honours a token for 8 hours; a repeated token
with *different* parameters is an error, which is why nothing in the request depends on the
wall-clock minute.)

Examples
--------
>>> import datetime as dt
>>> plan = plan_export(table_arn="arn:aws:dynamodb:eu-west-2:123456789012:table/main",
...                    bucket="exports-bucket",
...                    now=dt.datetime(2025, 3, 18, 2, 0, tzinfo=dt.UTC))
>>> plan.s3_prefix
'exports/incremental/20250318T000000Z/'
>>> plan.params["IncrementalExportSpecification"]["ExportViewType"]
'NEW_IMAGE'
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bubbly_metrics import _aws as aws
from bubbly_metrics._time import iso, midnight, utc_now
from bubbly_metrics.dates import MODES, parse_date, resolve_range
from bubbly_metrics.exceptions import (
    ConfigurationError,
    ExportStartError,
    ExportWaitError,
    InvalidArgumentError,
)

__all__ = [
    "BACKFILL_REQUEST",
    "DEFAULT_S3_PREFIX",
    "ExportPlan",
    "daily_export_folder",
    "describe_export",
    "plan_export",
    "read_backfill_request",
    "start_export",
    "wait_for_export",
]

logger = logging.getLogger(__name__)

DEFAULT_S3_PREFIX = "exports/"
"""Where the Export Lambda writes exports in its bucket unless ``S3_PREFIX`` says otherwise."""

INVALID_MODE = "Invalid mode. Must be 'incremental' or 'backfill'"
BACKFILL_START_REQUIRED = "backfillStartDate is required for backfill mode"


@dataclass(frozen=True)
class ExportPlan:
    """A fully determined ``ExportTableToPointInTime`` request.

    ``params`` are the keyword arguments for boto3's ``export_table_to_point_in_time``;
    the other fields describe them for logs and results.
    """

    mode: str
    table_arn: str
    bucket: str
    s3_prefix: str
    """The export's folder, ``{prefix}{mode}/{timestamp}/`` (with the trailing ``/``)."""
    client_token: str
    export_type: str
    export_from: dt.datetime | None
    export_to: dt.datetime | None
    params: dict[str, Any]
    backfill_start: dt.date | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able description of the request."""
        out: dict[str, Any] = {
            "mode": self.mode,
            "exportType": self.export_type,
            "tableArn": self.table_arn,
            "s3Bucket": self.bucket,
            "s3Prefix": self.s3_prefix,
            "s3Uri": f"s3://{self.bucket}/{self.s3_prefix}",
            "clientToken": self.client_token,
        }
        if self.export_from is not None and self.export_to is not None:
            out["exportFromTime"] = iso(self.export_from)
            out["exportToTime"] = iso(self.export_to)
        if self.backfill_start is not None:
            out["backfillStartDate"] = self.backfill_start.isoformat()
        return out


BACKFILL_REQUEST = "backfill-request.json"
"""Written beside a full export the Export Lambda started for a backfill (in its folder,
``{prefix}backfill/{timestamp}/``): ``{"backfillStartDate", "exportArn", "requestedAt"}``.
When the export completes, the Aggregator backfills from that start (a full export alone does
not say which backfill it was started for)."""


def _folder(prefix: str, mode: str, stamp: dt.datetime) -> str:
    return f"{prefix}{mode}/{stamp:%Y%m%dT%H%M%SZ}/"


def daily_export_folder(day: dt.date, *, prefix: str | None = DEFAULT_S3_PREFIX) -> str:
    """The folder the incremental export of ``day`` is written to (what :func:`plan_export` sends).

    >>> daily_export_folder(dt.date(2025, 3, 17))
    'exports/incremental/20250318T000000Z/'
    """
    return _folder(normalize_prefix(prefix), "incremental", midnight(day) + dt.timedelta(days=1))


def normalize_prefix(prefix: str | None) -> str:
    """Return ``prefix`` ending in ``/`` (``""``, the bucket root, stays); no leading ``/``."""
    if prefix is None:
        return DEFAULT_S3_PREFIX
    if not isinstance(prefix, str):
        raise InvalidArgumentError(f"prefix must be a string, got {prefix!r}")
    prefix = prefix.lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def plan_export(
    *,
    table_arn: str,
    bucket: str,
    mode: str = "incremental",
    prefix: str | None = DEFAULT_S3_PREFIX,
    date: str | dt.date | None = None,
    backfill_start: str | dt.date | None = None,
    now: dt.datetime | None = None,
) -> ExportPlan:
    """Build the export request for ``mode`` without sending it.

    Parameters
    ----------
    table_arn
        ARN of the main table (exports are addressed by ARN).
    bucket
        The export bucket.
    mode
        ``"incremental"``: the 24-hour window ending at today's 00:00 UTC (or the window of
        ``date``).  ``"backfill"``: a full export of the table as it is now.
    prefix
        ``S3_PREFIX``: the export lands under ``{prefix}{mode}/{timestamp}/``.
    date
        Incremental only: export this UTC day instead of yesterday (PITR keeps 35 days).
    backfill_start
        Backfill only, required: the first day the backfill will aggregate (``YYYY-MM-DD``).
        A full export holds every day, so it only validates the request and is reported back.
    now
        The current time (UTC-aware); defaults to the wall clock.

    Returns
    -------
    ExportPlan

    Raises
    ------
    InvalidArgumentError
        ``Invalid mode. Must be 'incremental' or 'backfill'``.
    InvalidDateError
        ``Invalid backfillStartDate format``, or a start after yesterday.
    ConfigurationError
        ``backfillStartDate is required for backfill mode``.
    """
    if mode not in MODES:
        raise InvalidArgumentError(f"{INVALID_MODE} (got {mode!r})")
    if not isinstance(table_arn, str) or not table_arn.startswith("arn:"):
        raise InvalidArgumentError(f"table_arn must be a DynamoDB table ARN, got {table_arn!r}")
    if not isinstance(bucket, str) or not bucket:
        raise InvalidArgumentError(f"bucket must name the export bucket, got {bucket!r}")
    now = utc_now(now)
    prefix = normalize_prefix(prefix)
    today = midnight(now.date())
    export_from, export_to, stamp, export_type, start_day = _window(mode, date, backfill_start, now, today)
    folder = _folder(prefix, mode, stamp)
    token, params = _request(table_arn, bucket, mode, folder, export_type, export_from, export_to, stamp)
    return ExportPlan(
        mode=mode,
        table_arn=table_arn,
        bucket=bucket,
        s3_prefix=folder,
        client_token=token,
        export_type=export_type,
        export_from=export_from,
        export_to=export_to,
        params=params,
        backfill_start=start_day,
    )


def _window(
    mode: str, date: str | dt.date | None, backfill_start: str | dt.date | None, now: dt.datetime, today: dt.datetime
) -> tuple[dt.datetime | None, dt.datetime | None, dt.datetime, str, dt.date | None]:
    """What ``mode`` exports: the window (incremental), the folder's stamp, the type, the backfill's start."""
    if mode == "incremental":
        export_from, export_to = _incremental_window(date, now, today)
        return export_from, export_to, export_to, "INCREMENTAL_EXPORT", None
    start_day = _backfill_start(date, backfill_start, now)
    # A full export is "the table now"; its window is the day it is taken.  The backfill start
    # changes which days are aggregated, not what is exported, so two backfills on the same day
    # share one export.
    return None, None, today, "FULL_EXPORT", start_day


def _incremental_window(
    date: str | dt.date | None, now: dt.datetime, today: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """The 24 hours an incremental export covers: ``date`` (default: yesterday), a whole past day."""
    day = resolve_range(mode="incremental", date=date, now=now).start
    export_from, export_to = midnight(day), midnight(day) + dt.timedelta(days=1)
    if export_to > today:
        raise InvalidArgumentError(
            f"date {day} has not ended yet (now is {iso(now)}): an incremental export covers a whole past day"
        )
    return export_from, export_to


def _backfill_start(date: str | dt.date | None, backfill_start: str | dt.date | None, now: dt.datetime) -> dt.date:
    """A backfill's first day (required, not after yesterday); ``date`` belongs to incremental mode."""
    if date is not None:
        raise InvalidArgumentError("backfill mode exports the whole table: give backfill_start, not date")
    if backfill_start is None or backfill_start == "":
        raise ConfigurationError(BACKFILL_START_REQUIRED)
    start_day = parse_date(backfill_start, name="backfillStartDate")
    resolve_range(mode="backfill", start=start_day, now=now)  # rejects a start after yesterday
    return start_day


def _request(
    table_arn: str,
    bucket: str,
    mode: str,
    folder: str,
    export_type: str,
    export_from: dt.datetime | None,
    export_to: dt.datetime | None,
    stamp: dt.datetime,
) -> tuple[str, dict[str, Any]]:
    """The deterministic ``ClientToken`` and the ExportTableToPointInTime parameters."""
    window = (
        f"{export_from:%Y%m%dT%H%M%SZ}-{export_to:%Y%m%dT%H%M%SZ}" if export_from and export_to else f"{stamp:%Y%m%d}"
    )
    digest = hashlib.sha256(f"{table_arn}|{bucket}|{folder}|{export_type}".encode()).hexdigest()[:12]
    token = f"bubbly-{mode}-{window}-{digest}"
    params: dict[str, Any] = {
        "TableArn": table_arn,
        "ClientToken": token,
        "S3Bucket": bucket,
        # AWS writes under "<S3Prefix>/AWSDynamoDB/...", adding the slash itself.
        "S3Prefix": folder.rstrip("/"),
        "ExportFormat": "DYNAMODB_JSON",
        "ExportType": export_type,
    }
    if export_type == "INCREMENTAL_EXPORT":
        params["IncrementalExportSpecification"] = {
            "ExportFromTime": export_from,
            "ExportToTime": export_to,
            "ExportViewType": "NEW_IMAGE",
        }
    return token, params


def _client(client: Any, table: str | None = None) -> Any:
    return aws.client("dynamodb", client, region=aws.arn_region(table) if table else None)


def resolve_table_arn(table: str, *, client: Any = None) -> str:
    """Return ``table`` if it is an ARN, else look the table's ARN up with DescribeTable."""
    if not isinstance(table, str) or not table.strip():
        raise ConfigurationError(f"table must be the main table's ARN or name, got {table!r}")
    if table.startswith("arn:"):
        return table
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return str(_client(client).describe_table(TableName=table)["Table"]["TableArn"])
    except (ClientError, BotoCoreError) as exc:
        raise ExportStartError(f"cannot find the ARN of table {table!r}: {exc}") from exc


def start_export(
    *,
    table: str,
    bucket: str,
    mode: str = "incremental",
    prefix: str | None = DEFAULT_S3_PREFIX,
    date: str | dt.date | None = None,
    backfill_start: str | dt.date | None = None,
    now: dt.datetime | None = None,
    client: Any = None,
    s3_client: Any = None,
) -> dict[str, Any]:
    """Start an export of the main table (what the Export Lambda does).

    Parameters
    ----------
    table
        The main table's ARN (or its name, looked up with DescribeTable).
    bucket, mode, prefix, date, backfill_start, now
        As for :func:`plan_export`.
    client
        A boto3 DynamoDB client; built from the environment when not given.
    s3_client
        A boto3 S3 client (backfill only: it writes :data:`BACKFILL_REQUEST` beside the
        export); built from the environment when not given.

    Returns
    -------
    dict
        JSON-able: ``exportArn``, ``exportStatus``, ``s3Bucket``, ``s3Prefix``, ``s3Uri``,
        ``exportType``, ``mode``, ``clientToken``, the window (incremental) or
        ``backfillStartDate`` (backfill), ``startTime``.

    Raises
    ------
    ExportStartError
        When DynamoDB refuses the request (e.g. PITR disabled, access denied), with its reason.
    """
    plan_for = functools.partial(
        plan_export, bucket=bucket, mode=mode, prefix=prefix, date=date, backfill_start=backfill_start, now=now
    )
    if not (isinstance(table, str) and table.startswith("arn:")):
        # Check the request before DescribeTable: a bad date is a bad date, not an AWS error.
        plan_for(table_arn="arn:aws:dynamodb:::table/-")
    client = _client(client, table if isinstance(table, str) else None)
    plan = plan_for(table_arn=resolve_table_arn(table, client=client))
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = client.export_table_to_point_in_time(**plan.params)
    except (ClientError, BotoCoreError) as exc:
        raise ExportStartError(
            f"could not start the {plan.export_type} of {plan.table_arn} to s3://{plan.bucket}/{plan.s3_prefix}: {exc}"
        ) from exc
    description = response.get("ExportDescription", {})
    result = plan.to_dict()
    result["exportArn"] = description.get("ExportArn")
    result["exportStatus"] = description.get("ExportStatus")
    if description.get("StartTime"):
        result["startTime"] = iso(description["StartTime"])
    logger.info("started %s %s → %s", plan.export_type, result["exportArn"], result["s3Uri"])
    if plan.backfill_start is not None:
        result["backfillRequest"] = _write_backfill_request(plan, result, s3_client, now)
    return result


def _write_backfill_request(
    plan: ExportPlan, result: dict[str, Any], s3_client: Any, now: dt.datetime | None
) -> str | None:
    # Best effort: without it the export is still there, and docs/operations.md's step 3 (invoking the
    # Aggregator with the backfill's start) still works; the Aggregator then says so.
    import json

    from botocore.exceptions import BotoCoreError, ClientError

    key = f"{plan.s3_prefix}{BACKFILL_REQUEST}"
    body = {
        "backfillStartDate": plan.backfill_start.isoformat() if plan.backfill_start else None,
        "exportArn": result.get("exportArn"),
        "requestedAt": iso(now or dt.datetime.now(dt.UTC)),
    }
    try:
        aws.client("s3", s3_client).put_object(
            Bucket=plan.bucket, Key=key, Body=json.dumps(body).encode(), ContentType="application/json"
        )
    except (ClientError, BotoCoreError) as exc:
        logger.warning("could not write s3://%s/%s (the backfill's start): %s", plan.bucket, key, exc)
        return None
    return f"s3://{plan.bucket}/{key}"


def read_backfill_request(bucket: str, folder: str, *, s3_client: Any = None) -> dict[str, Any] | None:
    """The :data:`BACKFILL_REQUEST` in ``folder`` of ``bucket`` (``None`` when there is none)."""
    import json

    from botocore.exceptions import ClientError

    key = f"{folder.rstrip('/')}/{BACKFILL_REQUEST}" if folder.strip("/") else BACKFILL_REQUEST
    try:
        body = aws.client("s3", s3_client).get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    try:
        request = json.loads(body)
    except ValueError:
        raise InvalidArgumentError(f"s3://{bucket}/{key} is not JSON: {body[:120]!r}") from None
    return request if isinstance(request, dict) else None


def describe_export(export_arn: str, *, client: Any = None) -> dict[str, Any]:
    """DescribeExport as a JSON-able dict (status, type, counts, where, failure reason)."""
    if not isinstance(export_arn, str) or not export_arn.startswith("arn:"):
        raise InvalidArgumentError(f"export_arn must be an export ARN, got {export_arn!r}")
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        d = _client(client).describe_export(ExportArn=export_arn)["ExportDescription"]
    except (ClientError, BotoCoreError) as exc:
        raise ExportWaitError(f"cannot describe export {export_arn}: {exc}") from exc
    out: dict[str, Any] = {
        "exportArn": d.get("ExportArn", export_arn),
        "exportStatus": d.get("ExportStatus"),
        "exportType": d.get("ExportType"),
        "s3Bucket": d.get("S3Bucket"),
        "s3Prefix": d.get("S3Prefix"),
        "itemCount": d.get("ItemCount"),
        "billedSizeBytes": d.get("BilledSizeBytes"),
        "failureCode": d.get("FailureCode"),
        "failureMessage": d.get("FailureMessage"),
    }
    for key, name in (("StartTime", "startTime"), ("EndTime", "endTime")):
        if isinstance(d.get(key), dt.datetime):
            out[name] = iso(d[key])
    return out


def wait_for_export(
    export_arn: str,
    *,
    client: Any = None,
    poll: float = 30.0,
    timeout: float | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll DescribeExport until the export is COMPLETED (returned) or FAILED (raised).

    Parameters
    ----------
    export_arn
        The ``exportArn`` returned by :func:`start_export`.
    client
        A boto3 DynamoDB client; built from the environment when not given.
    poll
        Seconds between DescribeExport calls.
    timeout
        Give up after this many seconds (``None``: wait as long as it takes).
    on_progress
        Called with each :func:`describe_export` result (e.g. to show the status).
    sleep
        Called between polls; inject a no-op in tests.

    Returns
    -------
    dict
        The final :func:`describe_export` result.

    Raises
    ------
    ExportWaitError
        When the export FAILED (with DynamoDB's failure code and message) or ``timeout``
        passed while it was still in progress.
    """
    if poll < 0:
        raise InvalidArgumentError(f"poll must be >= 0 seconds, got {poll}")
    client = _client(client)
    waited = 0.0
    while True:
        info = describe_export(export_arn, client=client)
        if on_progress is not None:
            on_progress(info)
        status = info["exportStatus"]
        if status == "COMPLETED":
            return info
        if status == "FAILED":
            raise ExportWaitError(
                f"export {export_arn} FAILED: {info.get('failureCode')}: {info.get('failureMessage')}"
            )
        if timeout is not None and waited + poll > timeout:
            raise ExportWaitError(
                f"export {export_arn} is still {status} after {waited:.0f}s; "
                "it continues in the background — wait again later"
            )
        sleep(poll)
        waited += poll
