"""Planning a distributed run: its files (``run.json``, ``plan.json``) and the batches of data files."""

from __future__ import annotations

import datetime as dt
import json
import logging
import posixpath
from dataclasses import dataclass
from typing import Any

import polars as pl

from bubbly_metrics.dates import DateRange
from bubbly_metrics.distributed.sizing import MB_PER_VCPU, default_items_per_batch
from bubbly_metrics.exceptions import ExportIntegrityError, InvalidArgumentError
from bubbly_metrics.exports import DataFile, ExportInfo, find_export
from bubbly_metrics.locations import filesystem
from bubbly_metrics.manifests import check_item_count
from bubbly_metrics.pipeline import plan_days

__all__ = ["PLAN_FILE", "RUN_FILE", "Plan", "plan_run"]

logger = logging.getLogger(__package__)  # the engine's lines keep one logger name

RUN_FILE = "run.json"
PLAN_FILE = "plan.json"


# The run's files, for every step of the package (local folders and s3:// alike).


def run_path(run: str, name: str) -> str:
    """The file ``name`` of the run folder ``run``."""
    return run.rstrip("/") + "/" + name


def open_for_write(uri: str, storage_options: dict[str, Any] | None) -> Any:
    """``uri`` opened for writing bytes, its folder made first (a local run; S3 has none)."""
    fs, path = filesystem(uri, storage_options)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    return fs.open(path, "wb")


def write_bytes(uri: str, data: bytes, storage_options: dict[str, Any] | None) -> None:
    with open_for_write(uri, storage_options) as fh:
        fh.write(data)


def read_json(uri: str, storage_options: dict[str, Any] | None, what: str) -> Any:
    fs, path = filesystem(uri, storage_options)
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        raise InvalidArgumentError(f"{what} not found at {uri}: is this a run written by `plan`?") from None
    except ValueError as exc:
        raise InvalidArgumentError(f"{what} at {uri} is not valid JSON: {exc}") from None


def write_parquet(frame: pl.DataFrame, uri: str, storage_options: dict[str, Any] | None) -> None:
    with open_for_write(uri, storage_options) as fh:
        frame.write_parquet(fh)


def read_parquet(uri: str, storage_options: dict[str, Any] | None) -> pl.DataFrame:
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as fh:
        return pl.read_parquet(fh)


@dataclass(frozen=True)
class Plan:
    """A distributed run: where its files are, what it aggregates, and its batches."""

    run: str
    """The run's folder (local or ``s3://``): ``run.json``, ``plan.json``, the partials."""
    export_location: str
    export_id: str
    mode: str
    date_range: DateRange
    batches: list[dict[str, Any]]
    """``{"batch": n, "files": [dataFileS3Key, ...], "items": n}``, in manifest order."""

    @property
    def plan_uri(self) -> str:
        """``plan.json``: the Distributed Map's item list."""
        return run_path(self.run, PLAN_FILE)

    def to_dict(self) -> dict[str, Any]:
        """``run.json``'s content (also the CLI's and handler's summary)."""
        return {
            "run": self.run,
            "exportLocation": self.export_location,
            "exportId": self.export_id,
            "mode": self.mode,
            "startDate": self.date_range.start.isoformat(),
            "endDate": self.date_range.end.isoformat(),
            "batches": len(self.batches),
            "dataFiles": sum(len(b["files"]) for b in self.batches),
            "items": sum(int(b["items"]) for b in self.batches),
        }

    @classmethod
    def read(cls, run: str, *, storage_options: dict[str, Any] | None = None) -> Plan:
        """Read a run written by :func:`plan_run`."""
        meta = read_json(run_path(run, RUN_FILE), storage_options, "run.json")
        batches = read_json(run_path(run, PLAN_FILE), storage_options, "plan.json")
        try:
            return cls(
                run=run,
                export_location=meta["exportLocation"],
                export_id=meta["exportId"],
                mode=meta["mode"],
                date_range=DateRange(dt.date.fromisoformat(meta["startDate"]), dt.date.fromisoformat(meta["endDate"])),
                batches=list(batches),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"run.json at {run} is not a run's description: {exc!r}") from None

    def export(self, storage_options: dict[str, Any] | None = None) -> ExportInfo:
        """The export the run reads (found again at its location: nothing cached across steps)."""
        export = find_export(self.export_location, storage_options=storage_options)
        if export.export_id != self.export_id:
            raise ExportIntegrityError(
                f"run {self.run} was planned for export {self.export_id}, but {self.export_location} "
                f"holds {export.export_id}"
            )
        return export


def _cut(files: list[DataFile], items_per_batch: int) -> list[dict[str, Any]]:
    # Contiguous runs of the manifest, each closed once it holds items_per_batch items; a file
    # larger than that is a batch of its own (files are never split: the partial of a file is
    # its summary, exactly as the single run makes it).
    batches: list[dict[str, Any]] = []
    keys: list[str] = []
    items = 0
    for data_file in files:
        if keys and items + data_file.item_count > items_per_batch:
            batches.append({"batch": len(batches), "files": keys, "items": items})
            keys, items = [], 0
        keys.append(data_file.key)
        items += data_file.item_count
    if keys:
        batches.append({"batch": len(batches), "files": keys, "items": items})
    return batches


def plan_run(
    source: str | ExportInfo,
    *,
    run: str,
    mode: str = "backfill",
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    date: str | dt.date | None = None,
    now: dt.datetime | None = None,
    items_per_batch: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Plan:
    """Plan a distributed run of ``source`` into the folder ``run``; write ``run.json`` and ``plan.json``.

    ``source``, ``mode``, ``start``, ``end``, ``date`` and ``now`` mean what they mean for
    :func:`~bubbly_metrics.aggregate`, and the export and days are resolved by the same
    functions, so the result is the one ``aggregate()`` would give.  ``items_per_batch``
    (default: :func:`default_items_per_batch` at 1,769 MB) sizes the batches from the
    manifest's item counts.
    """
    if not isinstance(run, str) or not run.strip():
        raise InvalidArgumentError(f"run must be a folder or s3:// URI, got {run!r}")
    if items_per_batch is None:
        items_per_batch = default_items_per_batch(MB_PER_VCPU)
    if items_per_batch < 1:
        raise InvalidArgumentError(f"items_per_batch must be at least 1, got {items_per_batch}")
    days = plan_days(source, mode=mode, start=start, end=end, date=date, now=now, storage_options=storage_options)
    export, date_range = days.export, days.date_range
    files = export.data_files()
    check_item_count(export, files)  # a batch plan from an incomplete listing would leave files out
    listed = sum(f.item_count for f in files)
    plan = Plan(
        run=run.rstrip("/"),
        export_location=export.location,
        export_id=export.export_id,
        mode=mode,
        date_range=date_range,
        batches=_cut(files, items_per_batch),
    )
    # plan.json first: a run.json names a complete plan.
    write_bytes(plan.plan_uri, json.dumps(plan.batches).encode(), storage_options)
    write_bytes(run_path(plan.run, RUN_FILE), json.dumps(plan.to_dict(), indent=1).encode(), storage_options)
    logger.info(
        "planned %d batch(es) of %d data file(s), %d items, of export %s for %s at %s",
        len(plan.batches),
        len(files),
        listed,
        export.export_id,
        date_range,
        plan.run,
    )
    return plan
