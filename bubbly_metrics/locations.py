"""Export locations: one code path for local folders and ``s3://`` URIs (fsspec / s3fs)."""

from __future__ import annotations

from typing import Any

from bubbly_metrics.exceptions import ExportLocationError

__all__ = ["filesystem", "uri"]


def filesystem(location: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """Return ``(fs, path)`` for ``location``: an fsspec filesystem and the path within it.

    ``storage_options`` are passed through to the filesystem (for S3: s3fs arguments such as
    ``{"endpoint_url": ..., "key": ..., "secret": ..., "client_kwargs": {"region_name": ...}}``).
    Without them, s3fs reads credentials, region and ``AWS_ENDPOINT_URL`` from the standard AWS
    environment, like boto3.

    S3 listings are never cached (``use_listings_cache=False`` unless the caller says otherwise):
    fsspec keeps one filesystem instance per set of options for the life of the process, and its
    listing cache never expires, so a warm Lambda container or a notebook kernel would go on
    seeing the bucket as it was at its first listing (an export that completed since stays
    invisible, and opening its files fails in ``_ls_from_cache``).  Every call sees the bucket
    as it is.
    """
    import fsspec

    if not isinstance(location, str) or not location.strip():
        raise ExportLocationError(f"export location must be a non-empty path or s3:// URI, got {location!r}")
    options = dict(storage_options or {})
    if location.startswith("s3://"):
        _default_s3_options(options)
        options.setdefault("use_listings_cache", False)
    try:
        fs, path = fsspec.core.url_to_fs(location, **options)
    except (ValueError, ImportError) as exc:
        raise ExportLocationError(f"cannot open export location {location!r}: {exc}") from exc
    return fs, path.rstrip("/") or "/"


def _default_s3_options(options: dict[str, Any]) -> None:
    # s3fs does not read AWS_ENDPOINT_URL by itself in every version; boto3 does.  Honour it so
    # that moto, LocalStack and VPC endpoints work the same for listing and reading.
    import os

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "endpoint_url" not in options:
        options["endpoint_url"] = endpoint


def uri(fs: Any, path: str) -> str:
    """Return a user-facing URI for ``path`` on ``fs`` (``s3://bucket/key`` or a local path)."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return path
    return f"{protocol}://{path}"
