"""How the CLI writes: results in a format to stdout or ``--output``, progress, notes and warnings on stderr."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path, PurePosixPath
from typing import IO, Any

from bubbly_metrics._text import clip, printable
from bubbly_metrics.cli.common import _CliError

#: The format an ``--output`` file's extension names.
_EXTENSION_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def _output_format(args: argparse.Namespace) -> str:
    """``--format``, else the one ``--output``'s extension names, else table; a clash is an error."""
    named = _EXTENSION_FORMATS.get(PurePosixPath(args.output or "").suffix.lower())
    if args.format is None:
        return named or "table"
    if named is not None and named != args.format:
        raise _CliError(
            f"--format {args.format} does not match --output {args.output} (a .{named} file): "
            "drop --format or change the extension",
            2,
        )
    return str(args.format)


def _check_output(args: argparse.Namespace) -> None:
    """Refuse ``--format``/``--output`` that cannot be written, before any work is done."""
    args.format = _output_format(args)
    if args.format == "parquet" and not args.output:
        raise _CliError("--format parquet needs --output PATH (parquet is binary)", 2)
    if args.output and "://" not in args.output:  # a local path (an s3:// one is checked by writing it)
        path = Path(args.output).expanduser()
        if path.is_dir():
            raise _CliError(f"--output {args.output} is a folder: give a file path", 2)
        if not path.parent.is_dir():
            raise _CliError(f"--output {args.output}: folder {path.parent} does not exist", 2)


def _emit(frame: Any, args: argparse.Namespace, *, stdout: IO[str]) -> None:
    _check_output(args)
    try:
        _write(frame, args, stdout)
    except OSError as exc:  # a full disk, a missing bucket, access denied (s3fs raises OSErrors)
        raise _CliError(f"cannot write --output {args.output}: {exc}", 1) from None


def _write(frame: Any, args: argparse.Namespace, stdout: IO[str]) -> None:
    import polars as pl

    fmt = args.format
    if fmt == "parquet":
        with _open_output(args.output, "wb") as fh:
            frame.write_parquet(fh)
        return
    if fmt == "csv":
        text = frame.write_csv()
    elif fmt == "json":
        text = frame.write_json() + "\n"
    else:
        with pl.Config(
            tbl_rows=-1,
            tbl_cols=-1,
            tbl_hide_dataframe_shape=True,
            tbl_hide_column_data_types=True,
            tbl_formatting="ASCII_MARKDOWN",
            fmt_str_lengths=80,
            tbl_width_chars=200,
            thousands_separator=False,
        ):
            text = str(frame) + "\n"
    if args.output:
        with _open_output(args.output, "w") as fh:
            fh.write(text)
    else:
        stdout.write(text)


def _open_output(output: str, mode: str) -> Any:
    """Open ``--output`` for writing: a local path or ``s3://`` (fsspec, as exports are read)."""
    from bubbly_metrics.locations import filesystem

    fs, path = filesystem(output)
    return fs.open(path, mode) if "b" in mode else fs.open(path, mode, encoding="utf-8")


class _Progress:
    """Progress on stderr: a self-overwriting line on a terminal, nothing otherwise."""

    def __init__(self, enabled: bool | None, stderr: IO[str], total_files: int) -> None:
        self.enabled = stderr.isatty() if enabled is None else enabled
        self.stderr = stderr
        self.total = total_files
        self.files = 0
        self.records = 0
        self.open = False
        """A progress line is on screen without its newline (a warning ends it first)."""
        for handler in logging.getLogger("bubbly_metrics").handlers:
            if isinstance(handler, _Warnings) and handler.stream is stderr:
                handler.progress = self

    def file_done(self, _data_file: Any, records: int) -> None:
        self.files += 1
        self.records += records
        if self.enabled:
            self.stderr.write(f"\rread {self.files}/{self.total} data files, {self.records:,} records")
            self.stderr.flush()
            self.open = True

    def end_line(self) -> None:
        if self.open:
            self.stderr.write("\n")
            self.open = False

    def close(self) -> None:
        self.end_line()


def _say_sample(stderr: IO[str], now: dt.datetime | None) -> None:
    """The line that says a command runs on the shipped sample, and why it has two sudokus."""
    as_of = f" (as of {now:%Y-%m-%d %H:%M} UTC)" if now is not None else ""
    stderr.write(
        f"no export location given: using the shipped sample export{as_of}; "
        "its apps 'Sudoku' and 'sudoku' are two apps on purpose: app names are case-sensitive, as stored\n"
    )


def _write_summary(result: Any, source: str, stderr: IO[str], *, deletes: bool = False) -> None:
    """What a run read from ``source``: its days, its records by fate, and each malformed reason."""
    counts = result.counts
    stderr.write(
        f"{source} · {result.date_range} · {result.items_read:,} records: {counts['counted']:,} counted, "
        f"{counts['ignored']:,} other kinds, {counts['malformed']:,} malformed, "
        f"{counts['outside_range']:,} outside the range" + (f", {counts['deleted']:,} deletes\n" if deletes else "\n")
    )
    _write_malformed(result, stderr)


def _write_malformed(result: Any, stderr: IO[str]) -> None:
    """One line per malformed reason, with an example: a record's keys, or the damaged file."""
    by_file = result.malformed(by_file=True)
    for row in result.malformed().iter_rows(named=True):
        if row["example_model_id"] is None and row["example_owner"] is None:
            files = sorted(f for f in by_file.filter(by_file["reason"] == row["reason"])["file"].to_list() if f)
            more = f" and {len(files) - 1} more file(s)" if len(files) > 1 else ""
            where = f"in {files[0]}{more}" if files else ""
        else:
            where = f"e.g. {clip(row['example_model_id'])} / {clip(row['example_owner'])}"
        line = f"  malformed {row['reason']}: {row['records']:,}" + (f" ({where})" if where else "")
        stderr.write(printable(line) + "\n")


class _Warnings(logging.Handler):
    """The library's warnings (skipped lines, damaged files, a capped range...) as ``warning: ...`` lines.

    Not ``bubbly_metrics.publish``'s: the CLI reports a publish's failures itself, from its report.
    """

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(logging.WARNING)
        self.stream = stream
        self.progress: _Progress | None = None  # the command's progress line, ended before a warning
        self.addFilter(lambda record: record.name != "bubbly_metrics.publish")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.progress is not None:
                self.progress.end_line()
            self.stream.write(f"warning: {printable(record.getMessage())}\n")
        except Exception:
            self.handleError(record)
