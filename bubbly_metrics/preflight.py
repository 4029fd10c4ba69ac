"""Checks before long work: credentials, tables and buckets, before a byte of an export is read.

A backfill reads the whole export before it writes anything; finding out only then that the
credentials are missing or the Analytics Table's name has a typo wastes the whole scan.  These
checks are cheap calls (the credential chain, ``DescribeTable``, ``HeadBucket``) made first by
the CLI's ``aggregate --publish``, ``reconcile --analytics-table`` and ``export``; each failure
is one :class:`~bubbly_metrics.exceptions.PreflightError` whose message says what to fix.

Examples
--------
>>> from bubbly_metrics.preflight import ANALYTICS_KEYS, MAIN_KEYS
>>> ANALYTICS_KEYS, MAIN_KEYS
((('date', 'HASH'), ('app', 'RANGE')), (('modelId', 'HASH'), ('owner', 'RANGE')))
"""

from __future__ import annotations

from typing import Any

from bubbly_metrics import _aws as aws
from bubbly_metrics.exceptions import PreflightError

__all__ = ["ANALYTICS_KEYS", "MAIN_KEYS", "NO_CREDENTIALS", "check_bucket", "check_credentials", "check_table"]

NO_CREDENTIALS = "AWS credentials not found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
"""What every front door says when the AWS credential chain finds nothing."""

ANALYTICS_KEYS = (("date", "HASH"), ("app", "RANGE"))
"""The Analytics Table's key schema (docs/rules.md#analytics-table)."""
MAIN_KEYS = (("modelId", "HASH"), ("owner", "RANGE"))
"""The main table's key schema (docs/rules.md#records)."""


def check_credentials(session: Any = None) -> None:
    """Raise :class:`PreflightError` unless the standard AWS credential chain resolves.

    ``session`` is a ``boto3.session.Session`` (default: one from the environment).  Nothing is
    sent to AWS: whether the credentials are *accepted* shows in the next check's call.
    """
    if session is None:
        import boto3

        session = boto3.session.Session()
    try:
        credentials = session.get_credentials()
    except Exception as exc:  # a broken profile or config file: botocore raises its own errors
        raise PreflightError(f"AWS credentials cannot be loaded: {exc}") from None
    if credentials is None:
        raise PreflightError(f"{NO_CREDENTIALS} (checked before reading the export)")


def _client_error(exc: Exception) -> tuple[str, str] | None:
    import botocore.exceptions as bce

    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        return str(error.get("Code", "?")), str(error.get("Message", exc))
    return None


def check_table(
    table: str,
    *,
    keys: tuple[tuple[str, str], ...] = ANALYTICS_KEYS,
    what: str = "Analytics Table",
    client: Any = None,
) -> None:
    """Raise :class:`PreflightError` unless ``table`` exists with the key schema ``keys``.

    Parameters
    ----------
    table
        The table's name or ARN.
    keys
        ``((attribute, "HASH"), (attribute, "RANGE"))`` expected (:data:`ANALYTICS_KEYS`,
        :data:`MAIN_KEYS`).
    what
        How the message names the table.
    client
        A boto3 DynamoDB client; built from the environment when not given.
    """
    import botocore.exceptions as bce

    client = aws.client("dynamodb", client, region=aws.arn_region(table))
    try:
        description = client.describe_table(TableName=table)["Table"]
    except bce.NoCredentialsError:
        raise PreflightError(NO_CREDENTIALS) from None
    except bce.ClientError as exc:
        code, message = _client_error(exc) or ("?", str(exc))
        if code == "ResourceNotFoundException":
            raise PreflightError(f"{what} {table} does not exist (checked before reading the export)") from None
        raise PreflightError(f"{what} {table} cannot be described: {code}: {message}") from None
    except bce.BotoCoreError as exc:
        raise PreflightError(f"{what} {table} cannot be reached: {exc}") from None
    found = tuple((k["AttributeName"], k["KeyType"]) for k in description.get("KeySchema", []))
    if found != keys:
        show = ", ".join(f"{name} ({kind})" for name, kind in found) or "none"
        wanted = ", ".join(f"{name} ({kind})" for name, kind in keys)
        raise PreflightError(f"{what} {table} has keys {show}; expected {wanted}: is it the right table?")


def check_bucket(bucket: str, *, client: Any = None) -> None:
    """Raise :class:`PreflightError` unless ``bucket`` exists (HeadBucket).

    A 403 passes: the bucket exists, and HeadBucket needs ``s3:ListBucket``, which a role
    allowed only to write exports (``s3:PutObject``, all an export needs) does not have.
    """
    import botocore.exceptions as bce

    client = aws.client("s3", client)
    try:
        client.head_bucket(Bucket=bucket)
    except bce.NoCredentialsError:
        raise PreflightError(NO_CREDENTIALS) from None
    except bce.ClientError as exc:
        code, _ = _client_error(exc) or ("?", str(exc))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise PreflightError(f"bucket {bucket} does not exist") from None
        if code in ("403", "AccessDenied", "Forbidden"):
            return
        raise PreflightError(f"bucket {bucket} cannot be reached: {code}") from None
    except bce.BotoCoreError as exc:
        raise PreflightError(f"bucket {bucket} cannot be reached: {exc}") from None
