"""Build the optional simdjson decoder (``bubbly_metrics._fastscan``); everything else is in pyproject.toml.

The simdjson sources come from the ``pysimdjson`` wheel, a build requirement that ships
``simdjson.h``/``simdjson.cpp`` (simdjson is Apache-2.0/MIT).  The extension is optional: if it
cannot be compiled, or ``BUBBLY_METRICS_BUILD_EXTENSION=0``, the package installs without it and
scans with msgspec.

It uses only Python's stable ABI (``Py_LIMITED_API`` 3.11, an ``abi3`` file): one build serves
every CPython >= 3.11.  The Lambda bundle does not build it here: ``deploy/build_bundle.py``
cross-builds it for Lambda's arm64 with ``scripts/build_fastscan.py`` (zig), the same source.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from setuptools import Extension, setup


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


#: The oldest CPython the stable-ABI build serves (the package's requires-python).
LIMITED_API = "0x030B0000"

setup(
    ext_modules=_extensions(),
    # A wheel holding the extension is tagged cp311-abi3, which is what the file is.
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
