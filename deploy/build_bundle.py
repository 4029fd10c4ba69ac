"""Build the Lambda code bundle for both functions, reproducibly, from ``pyproject.toml``.

Usage (from the repository root)::

    python deploy/build_bundle.py                         # for Lambda -> deploy/.bundle/lambda
    python deploy/build_bundle.py --platform host --smoke # for this machine, then import both
                                                          # handlers from it in a clean process
    python deploy/build_bundle.py --python-version 3.11 --out DIR  # arm64 for Debian's CPython
                                                          # 3.11 under qemu (the emulated test)

What it does:

1. Builds a wheel of the project from a copy of its sources (so no ``build/`` directory is left in,
   or reused from, the work tree: a stale ``build/lib`` can ship deleted modules).
2. ``pip install --target`` of that wheel and its **runtime** dependencies only (never the test
   extras) for the Lambda platform: CPython 3.12 on arm64, binary wheels only.
3. Adds the compiled decoder (``bubbly_metrics/_fastscan.abi3.so``), cross-built for the target
   (aarch64-linux-gnu, glibc 2.17) by ``scripts/build_fastscan.py`` with zig: the stable-ABI file
   that tests/test_emulated_bundle.py runs under qemu is byte for byte the file Lambda runs.
4. Strips what the runtime never loads (see ``strip_bundle``), checks every native library is
   built for the target architecture.
5. Compiles every module to bytecode for the target's CPython (``compile_bytecode``), with an
   interpreter of that version found on this machine (``find_python``): ``/var/task`` is
   read-only, so without it every cold start compiles each module it imports.  Then measures
   the unzipped size and fails above the limit.
6. Writes ``.bubbly-bundle.json`` at the bundle's root: target, platform, Python, exact package
   versions, the decoder's SHA-256, size and a content digest.  The CDK stack reads it and
   refuses a bundle that was not built for Lambda.  Two builds of the same inputs give the same
   digest (and so the same CDK asset hash, so ``cdk deploy`` does not re-upload an unchanged
   bundle).

Exact versions come from the repository's lock, ``requirements/lock.txt`` (pip's ``-c``, also
applied to the isolated build of the project's own wheel); ``--constraint FILE`` uses another,
e.g. the versions listed in a previous bundle's manifest.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import os
import platform as _platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEPLOY_DIR = Path(__file__).resolve().parent
PROJECT_DIR = DEPLOY_DIR.parent
#: The versions CI installs and the bundle ships (scripts/lock.sh refreshes it).
LOCK = PROJECT_DIR / "requirements" / "lock.txt"
DEFAULT_OUT = {"lambda": DEPLOY_DIR / ".bundle" / "lambda", "host": DEPLOY_DIR / ".bundle" / "host"}

MANIFEST_NAME = ".bubbly-bundle.json"

#: The Lambda runtime the bundle is built for; the stack uses the same version.
PYTHON_VERSION = "3.12"
LAMBDA_ARCH = "aarch64"
#: Lambda's python3.12 runtime runs on Amazon Linux 2023 (glibc 2.34).  pip does not expand a
#: ``manylinux_2_X`` tag to older ones, so a wheel published only as, say, ``manylinux_2_28``
#: would be invisible with ``manylinux2014`` alone and pip would silently pick an *older* release
#: of that package.  Every tag up to glibc 2.34 is offered; pip still prefers the best match.
LAMBDA_PLATFORMS = ["manylinux2014_aarch64"] + [f"manylinux_2_{minor}_{LAMBDA_ARCH}" for minor in range(17, 35)]

MIB = 1024 * 1024
#: Lambda's limit on the unzipped code (function + layers) is 250 MiB (262,144,000 bytes).
LAMBDA_UNZIPPED_LIMIT = 250 * MIB
#: Fail well before the hard limit: a dependency bump that adds 10 MiB should fail here, in
#: the build, not as an opaque ``CREATE_FAILED`` half-way through a deployment.
DEFAULT_MAX_MIB = 240

# ELF e_machine values, to check native libraries were built for the target.
_ELF_MACHINE = {"x86_64": 62, "aarch64": 183, "arm64": 183}
#: zig's target triple for the compiled decoder, per architecture: glibc 2.17 (manylinux2014).
DECODER_TARGETS = {"aarch64": "aarch64-linux-gnu.2.17", "x86_64": "x86_64-linux-gnu.2.17"}
DECODER_PATH = "bubbly_metrics/_fastscan.abi3.so"


class BundleError(RuntimeError):
    """The bundle could not be built, or does not fit Lambda."""


@dataclass
class BundleReport:
    """What a build produced."""

    out: Path
    target: str
    python_version: str | None
    size_bytes: int
    packages: dict[str, str]
    removed: dict[str, int] = field(default_factory=dict)
    #: The bytecode's tag (``"cpython-312"``), or None when no interpreter of the target's
    #: version was found to compile it (``compile_bytecode``).
    bytecode: str | None = None
    digest: str = ""
    seconds: float = 0.0

    @property
    def size_mib(self) -> float:
        return self.size_bytes / MIB


# ---------------------------------------------------------------------------------------------
# building


def copy_sources(dest: Path, project: Path = PROJECT_DIR) -> Path:
    """Copy what setuptools needs to build the wheel (pyproject, readme, package) to ``dest``."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE", "LICENSE.txt", "LICENSE.md"):
        if (project / name).is_file():
            shutil.copy2(project / name, dest / name)
    shutil.copytree(
        project / "bubbly_metrics",
        dest / "bubbly_metrics",
        # *.so: the compiled decoder an editable install builds in place, for this machine.
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", ".ipynb_checkpoints"),
    )
    return dest


def _pip(python: str, *args: str, env: dict[str, str]) -> None:
    cmd = [python, "-m", "pip", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise BundleError(f"pip failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def _prepare_out(out: Path) -> None:
    """Empty ``out`` -- but only if it is empty already or is a bundle this script built."""
    if out.exists():
        if any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
            raise BundleError(
                f"refusing to wipe {out}: it is not empty and holds no {MANIFEST_NAME} "
                "(not a bundle built by this script); pass an empty or new --out directory"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)


def build(
    out: Path | None = None,
    *,
    target: str = "lambda",
    python: str | None = None,
    constraint: Path | None = LOCK,
    max_mib: float = DEFAULT_MAX_MIB,
    project: Path = PROJECT_DIR,
    python_version: str = PYTHON_VERSION,
) -> BundleReport:
    """Build the bundle into ``out`` and return what was built.

    ``target="lambda"`` builds for CPython 3.12 on manylinux aarch64 whatever this machine is;
    ``target="host"`` builds for the interpreter ``python`` (default: this one) on this machine,
    for the smoke test that imports the handlers from a tree built exactly the same way.
    ``python_version`` (lambda only) builds the same arm64 tree for another CPython, e.g.
    ``"3.11"`` for Debian's under qemu (tests/test_emulated_bundle.py); the stack refuses any
    bundle not built for its own 3.12.  ``project`` is the source tree (default: this repository).
    Both targets get the compiled decoder, cross-built for their architecture.
    """
    if target not in DEFAULT_OUT:
        raise ValueError(f"target must be 'lambda' or 'host', got {target!r}")
    started = time.monotonic()
    out = (out or DEFAULT_OUT[target]).resolve()
    python = python or sys.executable
    env = {
        **os.environ,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        # Fixed timestamps inside the project wheel: nothing in the bundle depends on when it
        # was built.
        "SOURCE_DATE_EPOCH": "315532800",
        "PYTHONDONTWRITEBYTECODE": "1",
        # The wheel is pure Python: the compiled decoder is cross-built for the target and
        # added below (a wheel build would compile it for this machine).
        "BUBBLY_METRICS_BUILD_EXTENSION": "0",
    }
    if constraint is not None:
        env["PIP_CONSTRAINT"] = str(Path(constraint).resolve())
    arch = LAMBDA_ARCH if target == "lambda" else _host_arch(python)
    decoder = cross_build_decoder(arch, project)
    _prepare_out(out)
    with tempfile.TemporaryDirectory(prefix="bubbly-bundle-") as tmp:
        src = copy_sources(Path(tmp) / "src", project)
        wheels = Path(tmp) / "wheels"
        _pip(python, "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(src), env=env)
        (wheel,) = wheels.glob("bubbly_metrics-*.whl")
        # --no-compile: pip would compile with *this* interpreter (e.g. 3.11), useless to 3.12;
        # compile_bytecode compiles for the target once the tree is stripped.
        args = ["install", "--quiet", "--no-compile", "--target", str(out)]
        if target == "lambda":
            args += [
                "--only-binary=:all:",
                "--implementation",
                "cp",
                "--python-version",
                python_version,
            ]
            for tag in LAMBDA_PLATFORMS:
                args += ["--platform", tag]
        _pip(python, *args, str(wheel), env=env)

    add_decoder(out, decoder)
    removed = strip_bundle(out)
    check_native_arch(out, arch)
    compiler = find_python(python_version, python) if target == "lambda" else python
    bytecode = compile_bytecode(out, compiler) if compiler is not None else None
    if bytecode is None:
        print(
            f"warning: no CPython {python_version} found to compile the bundle's bytecode: it ships "
            "without .pyc files, and each cold start compiles every module it imports",
            file=sys.stderr,
        )
    size = bundle_size(out)
    report = BundleReport(
        out=out,
        target=target,
        python_version=python_version if target == "lambda" else None,
        size_bytes=size,
        packages=installed_packages(out),
        removed=removed,
        bytecode=bytecode,
    )
    report.digest = content_digest(out)
    _write_manifest(report, arch)
    report.seconds = time.monotonic() - started
    check_size(out, max_mib)
    return report


def cache_tag(python: str) -> str | None:
    """The bytecode tag of interpreter ``python`` (``"cpython-312"``); None if it does not run."""
    try:
        proc = subprocess.run(
            [python, "-c", "import sys; print(sys.implementation.cache_tag)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    tag = proc.stdout.strip()
    return tag if proc.returncode == 0 and tag else None


def find_python(version: str, preferred: str | None = None) -> str | None:
    """A CPython ``version`` (``"3.12"``) on this machine, to compile the bundle's bytecode; or None.

    Tried in order: ``preferred``, this interpreter, ``python3.12`` on ``PATH`` (a pyenv shim
    for a version not selected fails, and is passed over), then pyenv's installed versions.
    """
    candidates = [preferred, sys.executable, shutil.which(f"python{version}")]
    versions = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates += sorted((str(p) for p in versions.glob(f"{version}.*/bin/python{version}")), reverse=True)
    wanted = "cpython-" + version.replace(".", "")
    for candidate in candidates:
        if candidate and cache_tag(candidate) == wanted:
            return candidate
    return None


#: Where Lambda unpacks the bundle: the path the bytecode names its sources by.
LAMBDA_TASK_ROOT = "/var/task"


def compile_bytecode(root: Path, python: str) -> str:
    """Compile every module under ``root`` with ``python``; return the files' tag (``cpython-312``).

    Lambda's ``/var/task`` is read-only, so a bundle without bytecode is compiled anew, in
    memory, at every cold start: importing the aggregate path took 0.42 CPU s from source
    and 0.15 from bytecode, and the whole Lambda path at 2M items 3.48-3.52 CPU s instead of
    3.75-3.89 (host bundle, one core; docs/performance.md).

    - ``unchecked-hash``: the files are used without comparing the sources' modification
      times, which a zip does not keep exactly; the bundle is never edited in place.
    - A file that does not compile for the target (not valid Python there) is left without
      bytecode, with a warning: pip's own ``--compile`` skips such files too.
    - The sources are named as they lie under ``/var/task`` (``-s``/``-p``), not by this build's
      temporary folder, and files are compiled one at a time with a fixed hash seed: two
      builds write the same bytes (the bundle's digest, and so the CDK asset hash, depend on it).
    """
    proc = subprocess.run(
        [
            python,
            "-m",
            "compileall",
            "-q",
            "-j",
            "1",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(root),
            "-p",
            LAMBDA_TASK_ROOT,
            str(root),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    output = proc.stdout + proc.stderr
    failed = re.findall(r"^\*\*\* Error compiling '(.*)'", output, flags=re.MULTILINE)
    if proc.returncode != 0 and not failed:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise BundleError(f"compiling the bundle's bytecode with {python} failed (exit {proc.returncode}):\n{tail}")
    if failed:  # a file that is not valid Python for the target (a template, say): never imported
        names = ", ".join(os.path.relpath(f, root) for f in failed[:3])
        print(
            f"warning: {len(failed)} file(s) are not valid Python for {python}, left without bytecode: {names}",
            file=sys.stderr,
        )
    tag = cache_tag(python)
    if tag is None:
        raise BundleError(f"{python} compiled the bundle's bytecode but does not say its cache tag")
    return tag


def cross_build_decoder(arch: str, project: Path = PROJECT_DIR) -> Path:
    """The compiled decoder built for ``arch`` from ``project``'s source (cached; see the script)."""
    if arch not in DECODER_TARGETS:
        raise BundleError(f"no decoder build for {arch}: known {', '.join(sorted(DECODER_TARGETS))}")
    script = PROJECT_DIR / "scripts" / "build_fastscan.py"
    spec = importlib.util.spec_from_file_location("_bubbly_build_fastscan", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        built: Path = module.build(DECODER_TARGETS[arch], source=project / "bubbly_metrics" / "_fastscan.cpp")
    except module.CrossBuildError as exc:
        raise BundleError(str(exc)) from None
    return built


def add_decoder(root: Path, built: Path) -> None:
    """Put the decoder into the installed package and list it in the distribution's ``RECORD``."""
    dest = root / DECODER_PATH
    shutil.copyfile(built, dest)
    data = dest.read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    (record,) = root.glob("bubbly_metrics-*.dist-info/RECORD")
    with record.open("a", encoding="utf-8") as f:
        f.write(f"{DECODER_PATH},sha256={digest},{len(data)}\n")


def _host_arch(python: str) -> str:
    if Path(python).resolve() == Path(sys.executable).resolve():
        return _platform.machine()
    return subprocess.run(
        [python, "-c", "import platform; print(platform.machine())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


# ---------------------------------------------------------------------------------------------
# stripping


def strip_bundle(root: Path) -> dict[str, int]:
    """Delete what the Lambda runtime never loads; return bytes removed per reason.

    Removed:

    - ``bin/``: console scripts pip generates with this build machine's interpreter in the
      shebang; nothing runs them on Lambda.
    - ``__pycache__``/``*.pyc``: none with ``--no-compile``; any that appear would be for the
      build interpreter, not 3.12 (``compile_bytecode`` compiles for the target after this).
    - ``tests`` directories inside third-party packages (e.g. ``fsspec/tests``): test suites,
      never imported at run time.
    - ``*.pyi`` stubs and ``*-stubs`` packages: type information for checkers only.
    - ``direct_url.json`` in ``*.dist-info``: records the absolute path the project was
      installed from, which differs per clone and would make the bundle (and the CDK asset
      hash) depend on where it was built.  ``RECORD`` files are pruned to match.

    Kept, deliberately:

    - **boto3 and botocore**, although the Lambda runtime ships its own: s3fs pins aiobotocore,
      which pins botocore to a narrow window (see ``pyproject.toml``) and patches its internals.
      The runtime's copy is a different version, changes when AWS updates the runtime, and
      boto3 must match botocore.  Bundling them (~24 MiB) makes the deployed code exactly what
      the tests ran against.
    - ``*.dist-info``: small, and ``importlib.metadata`` lookups (package versions checked by
      polars, aiobotocore, fsspec) need them.
    - Native libraries as shipped in the wheels (not ``strip``-ped): the bundle fits with room
      to spare, the files stay byte-identical to PyPI's (checkable against ``RECORD``), and Rust
      panics in Polars keep readable backtraces.  Stripping symbols from
      ``_polars_runtime*.so`` (~45 MiB of ``.symtab``/``.strtab``) is the next lever if the
      bundle ever approaches the limit.
    """
    removed: dict[str, int] = {}

    def drop(path: Path, reason: str) -> None:
        if not path.exists() and not path.is_symlink():
            return
        if path.is_dir() and not path.is_symlink():
            removed[reason] = removed.get(reason, 0) + bundle_size(path)
            shutil.rmtree(path)
        else:
            removed[reason] = removed.get(reason, 0) + path.lstat().st_size
            path.unlink()

    drop(root / "bin", "bin/ (console scripts)")
    for path in sorted(root.rglob("__pycache__"), reverse=True):
        drop(path, "__pycache__")
    for path in sorted(root.rglob("*.pyc")):
        drop(path, "__pycache__")
    for path in sorted(root.glob("*/**/tests"), reverse=True):
        if path.is_dir() and not path.relative_to(root).parts[0].startswith("bubbly_metrics"):
            drop(path, "tests directories")
    for path in sorted(root.glob("*-stubs")):
        drop(path, "type stubs (*.pyi, *-stubs)")
    for path in sorted(root.rglob("*.pyi")):
        drop(path, "type stubs (*.pyi, *-stubs)")
    for path in sorted(root.glob("*.dist-info/direct_url.json")):
        drop(path, "direct_url.json (build path)")
    _prune_records(root)
    return removed


def _prune_records(root: Path) -> None:
    """Drop the lines of removed files from each ``RECORD``, so it lists what is there.

    (``RECORD`` also holds the hash of ``direct_url.json``, whose content -- the wheel's
    temporary path -- differs per build.)
    """
    top = root.resolve()
    for record in sorted(root.glob("*.dist-info/RECORD")):
        lines = record.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = []
        for line in lines:
            rel = line.rsplit(",", 2)[0]
            target = (root / rel).resolve()
            if target == record.resolve() or (target.is_relative_to(top) and target.exists()):
                kept.append(line)
        if kept != lines:
            record.write_text("".join(kept), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# checks and measurements


def bundle_size(root: Path) -> int:
    """Unzipped size as Lambda counts it: the bytes of every regular file."""
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def check_size(root: Path, max_mib: float = DEFAULT_MAX_MIB) -> int:
    """Return the bundle's unzipped size; ``BundleError`` if it is over ``max_mib``."""
    if max_mib * MIB > LAMBDA_UNZIPPED_LIMIT:
        raise ValueError(f"max_mib={max_mib:g} is above Lambda's limit of {LAMBDA_UNZIPPED_LIMIT // MIB} MiB")
    size = bundle_size(root)
    if size > max_mib * MIB:
        raise BundleError(
            f"bundle is {size / MIB:.1f} MiB unzipped, over the {max_mib:g} MiB budget "
            f"(Lambda's hard limit is {LAMBDA_UNZIPPED_LIMIT // MIB} MiB for code and layers). "
            f"Largest: {_largest(root)}. Drop a dependency or strip more in deploy/build_bundle.py."
        )
    return size


def check_native_arch(root: Path, arch: str) -> None:
    """Fail if any ELF file in the bundle is built for another machine than ``arch``."""
    want = _ELF_MACHINE.get(arch)
    if want is None:
        return
    wrong = []
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        with path.open("rb") as f:
            head = f.read(20)
        if len(head) == 20 and head[:4] == b"\x7fELF":
            machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
            if machine != want:
                wrong.append(f"{path.relative_to(root)} (e_machine={machine})")
    if wrong:
        raise BundleError(f"native files not built for {arch}: " + ", ".join(sorted(wrong)[:10]))


def installed_packages(root: Path) -> dict[str, str]:
    """``{distribution name: version}`` from the ``*.dist-info`` directories."""
    packages = {}
    for meta in sorted(root.glob("*.dist-info/METADATA")):
        name = version = None
        for line in meta.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("Name: "):
                name = line[6:].strip()
            elif line.startswith("Version: "):
                version = line[9:].strip()
            elif not line:
                break
        if name and version:
            packages[name] = version
    return dict(sorted(packages.items(), key=lambda kv: kv[0].lower()))


def content_digest(root: Path) -> str:
    """SHA-256 over sorted relative paths and file contents (the manifest itself excluded)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        rel = path.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def _largest(root: Path, n: int = 5) -> str:
    sizes = {}
    for child in root.iterdir():
        sizes[child.name] = bundle_size(child) if child.is_dir() else child.stat().st_size
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{name} {size / MIB:.1f} MiB" for name, size in top)


def _write_manifest(report: BundleReport, arch: str) -> None:
    manifest = {
        "target": report.target,
        "arch": arch,
        "python_version": report.python_version,
        "decoder_sha256": hashlib.sha256((report.out / DECODER_PATH).read_bytes()).hexdigest(),
        "platforms": LAMBDA_PLATFORMS if report.target == "lambda" else None,
        "size_bytes": report.size_bytes,
        "content_sha256": report.digest,
        "packages": report.packages,
        "removed_bytes": report.removed,
        "bytecode": report.bytecode,
    }
    (report.out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(bundle: Path) -> dict[str, Any]:
    """The manifest of a built bundle (``BundleError`` if there is none)."""
    path = bundle / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{bundle} has no {MANIFEST_NAME}: build it with deploy/build_bundle.py")
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


# ---------------------------------------------------------------------------------------------
# smoke test

_SMOKE = """
import importlib, json, sys
bundle = sys.argv[1]
sys.path.insert(0, bundle)
compiled = []  # modules of the bundle compiled from source (the import system's compile())
def hook(event, args):
    if event == "compile" and isinstance(args[1], str) and args[1].startswith(bundle):
        compiled.append(args[1])
sys.addaudithook(hook)
out = {}
for name in ("bubbly_metrics.handlers.export", "bubbly_metrics.handlers.aggregator"):
    module = importlib.import_module(name)
    assert callable(module.lambda_handler), name
    out[name] = module.__file__
for name in ("polars", "s3fs", "boto3", "botocore", "isal", "msgspec", "bubbly_metrics._fastscan"):
    out[name] = importlib.import_module(name).__file__
from bubbly_metrics.scan import decoder
assert decoder() == "simdjson", f"the bundle scans with {decoder()}, not the compiled decoder"
outside = {k: v for k, v in out.items() if not v.startswith(bundle)}
assert not outside, f"imported from outside the bundle: {outside}"
with open(bundle + "/.bubbly-bundle.json") as f:
    tag = json.load(f).get("bytecode")
if tag == sys.implementation.cache_tag:
    assert not compiled, f"{len(compiled)} module(s) compiled from source despite the {tag} bytecode: {compiled[:3]}"
print(json.dumps(out))
"""


def smoke_import(bundle: Path, python: str | list[str] | None = None) -> dict[str, str]:
    """Import both handlers (and the heavy deps) from ``bundle`` in a clean interpreter.

    ``-S`` keeps site-packages (and so the development install) off ``sys.path``: everything
    must come from the bundle, and the scan must use the compiled decoder.  When the bundle's
    bytecode is for this interpreter, no module of the bundle may be compiled from source
    (an audit hook sees every ``compile``).  ``python`` is an
    interpreter or a command (``["qemu-aarch64", "-L", ROOT, ROOT + "/usr/bin/python3.11"]``).
    Returns ``{module: file it was loaded from}``.
    """
    command = [python or sys.executable] if not isinstance(python, list) else python
    proc = subprocess.run(
        [*command, "-S", "-c", _SMOKE, str(bundle.resolve())],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
    )
    if proc.returncode != 0:
        raise BundleError(f"importing the handlers from {bundle} failed:\n{proc.stderr.strip()}")
    loaded: dict[str, str] = json.loads(proc.stdout)
    return loaded


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--platform",
        choices=["lambda", "host"],
        default="lambda",
        help="lambda: CPython 3.12 manylinux aarch64 (default); host: this machine (smoke tests)",
    )
    parser.add_argument("--out", type=Path, help="bundle directory (default deploy/.bundle/<platform>)")
    parser.add_argument("--python", help="host mode: interpreter to build for (default: this one)")
    parser.add_argument(
        "--python-version",
        default=PYTHON_VERSION,
        help=f"lambda mode: CPython to build for (default {PYTHON_VERSION}, Lambda's; the stack refuses others)",
    )
    parser.add_argument(
        "--constraint", type=Path, default=LOCK, help="pip constraints file pinning versions (default: %(default)s)"
    )
    parser.add_argument("--max-mib", type=float, default=DEFAULT_MAX_MIB, help="size budget in MiB")
    parser.add_argument("--smoke", action="store_true", help="host mode: import the handlers after")
    args = parser.parse_args(argv)
    if args.smoke and args.platform != "host":
        parser.error("--smoke needs --platform host (this machine cannot run the arm64 bundle)")
    try:
        report = build(
            args.out,
            target=args.platform,
            python=args.python,
            constraint=args.constraint,
            max_mib=args.max_mib,
            python_version=args.python_version,
        )
        print(
            f"bundle {report.out}: {report.size_mib:.1f} MiB unzipped "
            f"({report.size_bytes:,} bytes; budget {args.max_mib:g} MiB, Lambda limit "
            f"{LAMBDA_UNZIPPED_LIMIT // MIB} MiB), {len(report.packages)} distributions, "
            f"built in {report.seconds:.1f} s"
        )
        for reason, size in report.removed.items():
            print(f"  stripped {reason}: {size / 1024:.0f} KiB")
        print(f"  largest: {_largest(report.out)}")
        print(f"  bytecode: {report.bytecode or 'none (see the warning above)'}")
        print(f"  sha256 {report.digest}")
        if args.smoke:
            loaded = smoke_import(report.out, args.python)
            print(f"  smoke: imported {len(loaded)} modules from the bundle")
    except BundleError as exc:
        print(f"build_bundle: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
