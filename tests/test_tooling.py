"""Strict tooling is part of the suite: ruff (lint and format) and mypy on the package and the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["bubbly_metrics", "tests", "bench", "deploy"]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_lint_passes() -> None:
    proc = _run("ruff", "check", *PATHS, "notebooks")  # notebooks: lint only (their parameter cells align comments)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_applied() -> None:
    proc = _run("ruff", "format", "--check", *PATHS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_passes_on_the_package() -> None:
    proc = _run("mypy", "--cache-dir", str(ROOT / ".mypy_cache"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_passes_on_the_tests() -> None:
    proc = _run("mypy", "--cache-dir", str(ROOT / ".mypy_cache"), "tests")
    assert proc.returncode == 0, proc.stdout + proc.stderr
