"""The Lambda bundle, really built: arm64 for Lambda (size, contents, reproducibility) and the
same tree for this machine, from which both handlers are imported in a clean interpreter.

Needs PyPI (pip downloads the wheels; its cache makes later runs faster) and takes tens of
seconds, so it carries the ``bundle`` marker: ``pytest -m "not bundle"`` skips it.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cdk_env import import_cdk

pytestmark = [pytest.mark.bundle]

RUNTIME_DISTRIBUTIONS = {"bubbly-metrics", "polars", "s3fs", "boto3", "botocore", "isal", "msgspec"}
# Test and deploy extras must never reach the bundle.
NOT_RUNTIME = {
    "pytest",
    "hypothesis",
    "moto",
    "cfn-lint",
    "aws-cdk-lib",
    "constructs",
    "jsii",
    "ruff",
    "mypy",
    "ipykernel",
}


@pytest.fixture(scope="module")
def builder() -> Any:
    from deploy import build_bundle

    return build_bundle


@pytest.fixture(scope="module")
def sources(builder: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One snapshot of the project for every build here, so builds compare like with like
    even while the work tree is being edited."""
    path: Path = builder.copy_sources(tmp_path_factory.mktemp("sources") / "project")
    return path


@pytest.fixture(scope="module")
def lambda_bundle(builder: Any, sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    report = builder.build(tmp_path_factory.mktemp("bundle") / "lambda", target="lambda", project=sources)
    print(
        f"\narm64 bundle: {report.size_mib:.1f} MiB unzipped, built in {report.seconds:.1f} s",
        file=sys.stderr,
    )
    return report


@pytest.fixture(scope="module")
def host_bundle(builder: Any, sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return builder.build(tmp_path_factory.mktemp("bundle") / "host", target="host", project=sources)


def test_lambda_bundle_fits_with_margin(builder: Any, lambda_bundle: Any) -> None:
    assert lambda_bundle.size_bytes <= builder.DEFAULT_MAX_MIB * builder.MIB < builder.LAMBDA_UNZIPPED_LIMIT
    assert builder.check_size(lambda_bundle.out) == builder.bundle_size(lambda_bundle.out)
    manifest = builder.read_manifest(lambda_bundle.out)
    assert manifest["size_bytes"] == lambda_bundle.size_bytes
    assert (manifest["target"], manifest["arch"], manifest["python_version"]) == (
        "lambda",
        "aarch64",
        "3.12",
    )


def test_lambda_bundle_holds_the_cross_built_decoder(builder: Any, lambda_bundle: Any) -> None:
    # The compiled decoder, for arm64 (check_native_arch checked every ELF file), the one file
    # tests/test_emulated_bundle.py runs under qemu: stable ABI, glibc 2.17, only PyInit exported.
    decoder = lambda_bundle.out / builder.DECODER_PATH
    data = decoder.read_bytes()
    assert data[:4] == b"\x7fELF" and int.from_bytes(data[18:20], "little") == 183  # EM_AARCH64
    assert data == builder.cross_build_decoder("aarch64").read_bytes()
    manifest = builder.read_manifest(lambda_bundle.out)
    assert manifest["decoder_sha256"] == hashlib.sha256(data).hexdigest()
    record = next(lambda_bundle.out.glob("bubbly_metrics-*.dist-info/RECORD")).read_text()
    assert f"{builder.DECODER_PATH},sha256=" in record


def test_lambda_bundle_holds_runtime_dependencies_only(lambda_bundle: Any) -> None:
    names = {name.lower() for name in lambda_bundle.packages}
    assert names >= RUNTIME_DISTRIBUTIONS
    assert not names & NOT_RUNTIME
    out = lambda_bundle.out
    assert (out / "bubbly_metrics" / "handlers" / "export.py").is_file()
    assert (out / "bubbly_metrics" / "handlers" / "aggregator.py").is_file()
    assert (out / "bubbly_metrics" / "sample").is_dir()  # package data the CLI's default uses


def test_lambda_bundle_native_code_is_arm64_for_cpython_312(builder: Any, lambda_bundle: Any) -> None:
    builder.check_native_arch(lambda_bundle.out, "aarch64")
    extensions = [p.name for p in lambda_bundle.out.rglob("*.so")]
    assert extensions
    # abi3 or cp312 extension modules only: nothing built for the build machine's 3.11.
    assert not [n for n in extensions if "cpython-" in n and "cpython-312" not in n]
    assert not [n for n in extensions if "x86_64" in n]


def test_lambda_bundle_is_stripped(lambda_bundle: Any) -> None:
    out: Path = lambda_bundle.out
    assert not (out / "bin").exists()
    # Bytecode for the runtime only (test_lambda_bundle_carries_bytecode_for_the_runtime).
    assert not [p for p in out.rglob("*.pyc") if p.parent.name != "__pycache__" or ".cpython-312." not in p.name]
    assert not list(out.rglob("*.pyi"))
    assert not [p for p in out.glob("*/**/tests") if p.is_dir()]
    assert not list(out.glob("*.dist-info/direct_url.json"))
    assert (out / "boto3").is_dir() and (out / "botocore").is_dir()  # kept on purpose


def test_lambda_bundle_carries_bytecode_for_the_runtime(builder: Any, lambda_bundle: Any) -> None:
    if builder.find_python("3.12") is None:
        pytest.skip("no CPython 3.12 on this machine: the bundle is built without bytecode")
    out: Path = lambda_bundle.out
    assert lambda_bundle.bytecode == "cpython-312"
    assert builder.read_manifest(out)["bytecode"] == "cpython-312"
    sources = sorted(out.rglob("*.py"))
    assert len(sources) > 500
    missing = [s for s in sources if not (s.parent / "__pycache__" / f"{s.stem}.cpython-312.pyc").is_file()]
    assert not missing, f"{len(missing)} module(s) without bytecode, e.g. {missing[:3]}"
    pyc = (out / "bubbly_metrics" / "__pycache__" / "pipeline.cpython-312.pyc").read_bytes()
    assert int.from_bytes(pyc[2:4], "little") == 0x0A0D  # a .pyc's magic ends in \r\n
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, source not checked (unchecked-hash)


def test_host_bundle_imports_from_bytecode(builder: Any, host_bundle: Any) -> None:
    # smoke_import (test_handlers_import_from_the_host_build) fails when any module of the
    # bundle is compiled from source while its bytecode is for the interpreter; here, that it is.
    assert host_bundle.bytecode == sys.implementation.cache_tag
    pyc = host_bundle.out / "bubbly_metrics" / "__pycache__" / f"scan.{sys.implementation.cache_tag}.pyc"
    builder.smoke_import(host_bundle.out)
    kept = pyc.read_bytes()
    pyc.unlink()  # one module without bytecode: the check must see it
    try:
        with pytest.raises(builder.BundleError, match=r"1 module\(s\) compiled from source.*scan\.py"):
            builder.smoke_import(host_bundle.out)
    finally:
        pyc.write_bytes(kept)


def test_lambda_bundle_is_reproducible(builder: Any, sources: Path, lambda_bundle: Any, tmp_path: Path) -> None:
    again = builder.build(tmp_path / "again", target="lambda", project=sources)
    assert again.packages == lambda_bundle.packages
    assert again.digest == lambda_bundle.digest


def test_stack_accepts_the_lambda_bundle_and_refuses_the_host_one(lambda_bundle: Any, host_bundle: Any) -> None:
    import_cdk()
    from deploy.config import ConfigError, StackConfig
    from deploy.functions import lambda_code

    def config(bundle: Path) -> Any:
        return StackConfig(main_table="Main", region="eu-west-2", bundle_dir=bundle)

    assert lambda_code(config(lambda_bundle.out)) is not None
    with pytest.raises(ConfigError, match="not for Lambda"):
        lambda_code(config(host_bundle.out))


def test_handlers_import_from_the_host_build(builder: Any, host_bundle: Any) -> None:
    loaded = builder.smoke_import(host_bundle.out)
    root = str(host_bundle.out)
    assert set(loaded) >= {
        "bubbly_metrics.handlers.export",
        "bubbly_metrics.handlers.aggregator",
        "polars",
        "s3fs",
    }
    assert all(path.startswith(root) for path in loaded.values())


def test_host_build_has_the_same_distributions(lambda_bundle: Any, host_bundle: Any) -> None:
    assert host_bundle.packages == lambda_bundle.packages
