"""Build the optional simdjson decoder (``bubbly_metrics._fastscan``); everything else is in pyproject.toml.

The simdjson sources come from the ``pysimdjson`` wheel, a build requirement that ships
``simdjson.h``/``simdjson.cpp`` (simdjson is Apache-2.0/MIT).  The extension is optional: if it
cannot be compiled, or ``BUBBLY_METRICS_BUILD_EXTENSION=0``, the package installs without it and
scans with msgspec.

Compiling simdjson takes 1-3 minutes of one core, so the build says so before it starts (shown by
``pip install -v``) and keeps the result under ``.cache/fastscan-host/``, keyed by a digest of
the sources, flags, compiler and platform: reinstalling (``pip install -e .`` again) reuses it
instead of compiling an unchanged extension again.

It uses only Python's stable ABI (``Py_LIMITED_API`` 3.11, an ``abi3`` file): one build serves
every CPython >= 3.11.  The Lambda bundle does not build it here: ``deploy/build_bundle.py``
cross-builds it for Lambda's arm64 with ``scripts/build_fastscan.py`` (zig), the same source.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CACHE = Path(__file__).resolve().parent / ".cache" / "fastscan-host"


def _extensions() -> list[Extension]:
    if os.environ.get("BUBBLY_METRICS_BUILD_EXTENSION", "1") == "0":
        return []
    spec = importlib.util.find_spec("simdjson")
    if spec is None or not spec.submodule_search_locations:
        return []
    simdjson_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (simdjson_dir / "simdjson.h").is_file():
        return []
    return [
        Extension(
            "bubbly_metrics._fastscan",
            sources=["bubbly_metrics/_fastscan.cpp", str(simdjson_dir / "simdjson.cpp")],
            include_dirs=[str(simdjson_dir)],
            language="c++",
            extra_compile_args=["-std=c++17", "-O3", "-fvisibility=hidden"],
            define_macros=[("Py_LIMITED_API", LIMITED_API)],
            py_limited_api=True,
            optional=True,
        )
    ]


def _compiler_version(command: list[str]) -> str:
    try:
        return subprocess.run([command[0], "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""


class _CachedBuildExt(build_ext):
    """``build_ext`` that announces the compile, times it, and reuses an identical earlier build."""

    def build_extension(self, ext: Extension) -> None:
        target = Path(self.get_ext_fullpath(ext.name))
        digest = hashlib.sha256()
        for source in ext.sources:
            digest.update(Path(source).read_bytes())
        for header in ext.include_dirs:
            for name in sorted(Path(header).glob("*.h")):
                digest.update(name.read_bytes())
        digest.update(repr((ext.extra_compile_args, ext.define_macros, sysconfig.get_platform())).encode())
        digest.update(_compiler_version(getattr(self.compiler, "compiler_so", None) or ["c++"]).encode())
        cached = CACHE / f"{digest.hexdigest()[:24]}-{target.name}"
        if cached.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            # A fresh modification time (not the cached file's): an editable install copies the
            # built file into the source tree only when it is newer than the one there, so an
            # older time would leave the decoder of another source (e.g. before a revert) in place.
            shutil.copy(cached, target)
            print(f"bubbly_metrics: reusing the compiled decoder from {cached}", file=sys.stderr, flush=True)
            return
        print(
            "bubbly_metrics: compiling the optional C++ decoder (simdjson; 1-3 min of one core; "
            "BUBBLY_METRICS_BUILD_EXTENSION=0 skips it, and the scan then decodes with msgspec)",
            file=sys.stderr,
            flush=True,
        )
        started = time.monotonic()
        super().build_extension(ext)
        print(f"bubbly_metrics: decoder compiled in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        try:
            CACHE.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(".partial")
            shutil.copy2(target, partial)
            partial.replace(cached)
        except OSError:
            pass  # a read-only source tree just does not cache


#: The oldest CPython the stable-ABI build serves (the package's requires-python).
LIMITED_API = "0x030B0000"

setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": _CachedBuildExt},
    # A wheel holding the extension is tagged cp311-abi3, which is what the file is.
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
