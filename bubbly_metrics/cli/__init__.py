"""Command line: ``python -m bubbly_metrics <command>`` (also the ``bubbly-metrics`` script).

Thin over the library: each command parses arguments, calls library functions and formats
their results.  Results go to stdout, progress and notes to stderr; every error a user can
cause is one line on stderr and a non-zero exit (2 for a bad invocation, 1 for a failed run).

The package: :mod:`~bubbly_metrics.cli.parser` (every command's flags),
:mod:`~bubbly_metrics.cli.aggregate`, :mod:`~bubbly_metrics.cli.exports` and
:mod:`~bubbly_metrics.cli.engagement` (the commands, by family), :mod:`~bubbly_metrics.cli.output`
(formats, progress, warnings) and :mod:`~bubbly_metrics.cli.common` (errors, ``--now``, the
preflight, the flag each library parameter is); here, :func:`main`.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO

from bubbly_metrics._text import printable
from bubbly_metrics.cli.common import _CliError, _flag_message
from bubbly_metrics.cli.output import _Warnings
from bubbly_metrics.cli.parser import build_parser
from bubbly_metrics.dates import date_bounds
from bubbly_metrics.exceptions import BubblyMetricsError, InvalidArgumentError, InvalidDateError

__all__ = ["build_parser", "main"]


def _aws_error_message(exc: BaseException) -> str | None:
    """One line for AWS errors (credentials, access denied, missing resources)."""
    try:
        import botocore.exceptions as bce
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        from bubbly_metrics.preflight import NO_CREDENTIALS

        return NO_CREDENTIALS
    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {})
        return f"AWS error {err.get('Code', '?')}: {err.get('Message', exc)}"
    if isinstance(exc, bce.BotoCoreError):
        return f"AWS error: {exc}"
    return None


_M_TOP_PAD = -2  # glibc's mallopt parameter


def _tune_allocator() -> None:
    """Keep glibc's heaps from going back to the kernel after every batch of a scan.

    Each batch allocates and frees memory per thread (decompressed pieces, decoded columns),
    and glibc trims a heap as soon as its free top passes a small threshold, so the next batch
    faults the same pages in again.  Heaps are padded by 32 MB (``M_TOP_PAD``): fewer page
    faults and a shorter run for a little more memory (the figures: see docs/performance.md).
    (Setting it also stops glibc adapting its mmap and trim thresholds; measured, that changes
    nothing here.)  The CLI owns its process,
    so it sets this; the library, imported into other people's processes, does not.  A no-op
    off Linux or without glibc's ``mallopt``.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_TOP_PAD, 32 << 20)
    # Polars' jemalloc returns freed pages after 0.5 s / 1 s (polars/__init__.py appends this to
    # its defaults; Polars is not imported yet): 5 s keeps them between batches, for less CPU
    # (see docs/performance.md).
    os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:5000,muzzy_decay_ms:5000")


def main(argv: Sequence[str] | None = None, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 1 failed run or differences, 2 bad invocation)."""
    _tune_allocator()
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    package = logging.getLogger("bubbly_metrics")
    warnings = _Warnings(stderr)
    package.addHandler(warnings)
    try:
        return _main(argv, stdout, stderr)
    finally:
        package.removeHandler(warnings)


def _main(argv: Sequence[str] | None, stdout: IO[str], stderr: IO[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the one-line error or the help
        return int(exc.code or 0)
    func: Callable[[argparse.Namespace, IO[str], IO[str]], int] = args.func
    try:
        # --floor / --max-days bound every date range the command resolves (library defaults otherwise).
        with date_bounds(floor=getattr(args, "floor", None), max_days=getattr(args, "max_days", None)):
            return func(args, stdout, stderr)
    except _CliError as exc:
        _error(stderr, str(exc))
        return exc.code
    except (InvalidArgumentError, InvalidDateError) as exc:
        _error(stderr, _flag_message(exc))
        return 2
    except BubblyMetricsError as exc:
        _error(stderr, str(exc))
        return 1
    except KeyboardInterrupt:
        stderr.write("interrupted\n")
        return 130
    except Exception as exc:
        message = _aws_error_message(exc)
        if message is None:
            # Files the user named (an --output on a full disk, a folder that is a file) and
            # Polars' own I/O errors are the user's to fix: one line, not a traceback.
            import polars as pl

            if isinstance(exc, OSError | pl.exceptions.ComputeError):
                message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            else:
                raise
        _error(stderr, message)
        return 1


def _error(stderr: IO[str], message: str) -> None:
    """One ``error:`` line; what came from outside (a key, a record's id) cannot drive the terminal."""
    stderr.write(f"error: {printable(message)}\n")
