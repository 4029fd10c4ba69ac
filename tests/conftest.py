"""Shared fixtures: the real AWS export, synthetic exports, and moto's server on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

REAL_EXPORT = Path(__file__).resolve().parent / "fixtures" / "real-aws-export"


@pytest.fixture(scope="session")
def real_export() -> Path:
    """The bucket root of a real export written by AWS (1 full + 2 incremental)."""
    if not REAL_EXPORT.is_dir():
        pytest.fail(f"real AWS export fixture missing at {REAL_EXPORT}")
    return REAL_EXPORT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Start moto in server mode on 127.0.0.1 on a free port; yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    from tests.aws_helpers import isolate_transactions

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # DynamoDB's transactions are isolated and cost no more on a big table; moto's are neither.
    undo = isolate_transactions()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        undo()
        server.stop()


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point every AWS client (boto3, s3fs) at the moto server with fake credentials.

    Resets moto's state afterwards so tests do not see each other's buckets and tables.
    """
    import urllib.request

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "eu-west-2",
        "AWS_REGION": "eu-west-2",
        "AWS_ENDPOINT_URL": moto_server,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import boto3

    # boto3's default session caches credentials: start and end each test with a fresh one.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    yield moto_server
    req = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(req).close()
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def upload_tree(root: Path, bucket: str, endpoint: str, prefix: str = "") -> str:
    """Upload every file under ``root`` to ``s3://bucket/prefix`` (keys relative to root)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-2")
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    for path in sorted(root.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, prefix + path.relative_to(root).as_posix())
    return f"s3://{bucket}/{prefix}"


@pytest.fixture(params=["counting", "simdjson", "msgspec"])
def each_route(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on every route of the aggregate path: the compiled decoder counting plain records
    in C++ (the default), the compiled decoder leaving every record to Polars, and msgspec alone."""
    from bubbly_metrics import _decoder

    if request.param != "msgspec" and _decoder.FAST is None:
        pytest.skip("the compiled decoder is not built or is turned off")
    if request.param == "msgspec":
        monkeypatch.setattr(_decoder, "FAST", None)
        monkeypatch.setenv("BUBBLY_METRICS_DECODER", "msgspec")  # for worker processes
    monkeypatch.setattr(_decoder, "COUNTING", request.param == "counting")
    return str(request.param)


@pytest.fixture(params=["simdjson", "msgspec"])
def each_decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the compiled decoder, then with msgspec alone (what the Lambda bundle runs)."""
    import os

    from bubbly_metrics import _decoder

    if request.param == "msgspec":
        monkeypatch.setattr(_decoder, "FAST", None)
        monkeypatch.setenv("BUBBLY_METRICS_DECODER", "msgspec")  # for worker processes
    elif _decoder.FAST is None:
        pytest.skip("BUBBLY_METRICS_DECODER=msgspec") if os.environ.get(
            "BUBBLY_METRICS_DECODER"
        ) == "msgspec" else pytest.fail("bubbly_metrics._fastscan is not built: pip install -e . needs g++")
    return str(request.param)
