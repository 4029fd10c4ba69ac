"""Cross-build the compiled decoder (``bubbly_metrics._fastscan``) for Lambda, from any machine.

Usage (from the repository root)::

    python scripts/build_fastscan.py                       # aarch64-linux-gnu.2.17 -> prints the .so's path
    python scripts/build_fastscan.py --target x86_64-linux-gnu.2.17 --out DIR

``ziglang`` (PyPI: the zig toolchain, a complete cross C/C++ compiler with its own libc headers
and libc++) compiles ``bubbly_metrics/_fastscan.cpp`` and simdjson for the target with a glibc
floor of 2.17 (manylinux2014, which Lambda's runtimes satisfy).  libc++ is linked statically
and a version script exports only ``PyInit__fastscan``, so the file needs nothing but glibc and
the interpreter.  Only Python's stable ABI is used (``Py_LIMITED_API`` 3.11), so the one
``_fastscan.abi3.so`` loads in every CPython >= 3.11: the emulated bundle test runs under
Debian's 3.11 the very file Lambda's 3.12 runs.  On arm64, simdjson picks its NEON kernel.

The simdjson sources come from the ``pysimdjson`` wheel, as for the host build (``setup.py``);
the Python headers from this interpreter (the limited API is the same for every version).
Results are cached under ``.cache/fastscan/`` by a digest of every input (sources, headers,
zig version, flags), and zig's own cache under ``.cache/zig/``: a second build is instant.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
SOURCE = PROJECT_DIR / "bubbly_metrics" / "_fastscan.cpp"
CACHE = PROJECT_DIR / ".cache"
#: The build requirement setup.py takes simdjson from (pyproject.toml's build-system).
PYSIMDJSON = "pysimdjson==7.0.2"
DEFAULT_TARGET = "aarch64-linux-gnu.2.17"
FILENAME = "_fastscan.abi3.so"
LIMITED_API = "0x030B0000"  # as in setup.py
FLAGS = [
    "-std=c++17",
    "-O3",
    "-g0",
    "-DNDEBUG",
    f"-DPy_LIMITED_API={LIMITED_API}",
    "-fPIC",
    "-shared",
    "-fvisibility=hidden",
]
VERSION_SCRIPT = "{ global: PyInit__fastscan; local: *; };\n"


class CrossBuildError(RuntimeError):
    """The decoder could not be cross-built."""


def simdjson_sources(cache: Path = CACHE) -> Path:
    """The folder holding ``simdjson.h`` and ``simdjson.cpp``, unpacked from the pysimdjson wheel."""
    folder = cache / "simdjson" / PYSIMDJSON.replace("==", "-")
    if (folder / "simdjson.h").is_file() and (folder / "simdjson.cpp").is_file():
        return folder
    with tempfile.TemporaryDirectory(prefix="bubbly-simdjson-") as tmp:
        # Any one of its wheels carries the same sources; this one exists for certain.
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        cmd += ["--python-version", "3.11", "--platform", "manylinux2014_x86_64", "--dest", tmp, PYSIMDJSON]
        _run(cmd, "downloading the simdjson sources")
        (wheel,) = Path(tmp).glob("pysimdjson-*.whl")
        staging = Path(tmp) / "out"
        staging.mkdir()
        with zipfile.ZipFile(wheel) as zf:
            for name in ("simdjson.h", "simdjson.cpp"):
                (staging / name).write_bytes(zf.read(f"simdjson/{name}"))
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.move(str(staging), folder)
    return folder


def _zig_version() -> str:
    try:
        return _run([sys.executable, "-m", "ziglang", "version"], "running zig").strip()
    except CrossBuildError as exc:
        raise CrossBuildError(f"{exc}\nthe cross-build needs the ziglang package: pip install -e '.[deploy]'") from None


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise CrossBuildError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


def build(target: str = DEFAULT_TARGET, out: Path | None = None, *, source: Path = SOURCE, cache: Path = CACHE) -> Path:
    """Build ``_fastscan.abi3.so`` for ``target`` (a zig target triple) from ``source``; return its path.

    The file is built once per set of inputs into ``cache`` and copied to ``out`` if given.
    """
    simdjson = simdjson_sources(cache)
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").is_file():
        raise CrossBuildError(f"no Python.h in {include}: install this Python's headers (python3-dev)")
    zig = _zig_version()
    digest = hashlib.sha256()
    for part in (target, zig, " ".join(FLAGS), VERSION_SCRIPT):
        digest.update(part.encode() + b"\0")
    for path in (source, simdjson / "simdjson.h", simdjson / "simdjson.cpp", *sorted(include.glob("**/*.h"))):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    built = cache / "fastscan" / f"{target}-{digest.hexdigest()[:16]}" / FILENAME
    if not built.is_file():
        built.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bubbly-fastscan-", dir=built.parent) as tmp:
            script = Path(tmp) / "exports.map"
            script.write_text(VERSION_SCRIPT)
            partial = Path(tmp) / FILENAME
            cmd = [sys.executable, "-m", "ziglang", "c++", "-target", target, *FLAGS]
            cmd += [f"-I{include}", f"-I{simdjson}", f"-Wl,--version-script={script}", "-s"]
            cmd += [str(source), str(simdjson / "simdjson.cpp"), "-o", str(partial)]
            env = {**os.environ, "ZIG_GLOBAL_CACHE_DIR": str(cache / "zig"), "ZIG_LOCAL_CACHE_DIR": str(cache / "zig")}
            _run(cmd, f"compiling the decoder for {target}", env=env)
            partial.replace(built)
    if out is None:
        return built
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built, out / FILENAME)
    return out / FILENAME


def main(argv: list[str] | None = None) -> int:
    """Command line: build, print the path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default=DEFAULT_TARGET, help=f"zig target triple (default: {DEFAULT_TARGET})")
    parser.add_argument("--out", type=Path, help="copy the built file into this folder")
    args = parser.parse_args(argv)
    try:
        print(build(args.target, args.out))
    except CrossBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
