"""What the Analytics Table holds, without the table: the daily runs replayed, or a snapshot."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import polars as pl

from bubbly_metrics._time import utc_now
from bubbly_metrics.dates import parse_date
from bubbly_metrics.exceptions import PARAM, ExportNotFoundError, InvalidArgumentError, placeholder
from bubbly_metrics.exports import ExportInfo
from bubbly_metrics.metrics import METRIC_COLUMNS
from bubbly_metrics.pipeline import aggregate
from bubbly_metrics.reconciliation.compare import metrics_frame
from bubbly_metrics.reconciliation.deletes import incremental_exports

__all__ = ["DailyRuns", "Snapshot", "TableSource", "daily_runs_table", "read_snapshot", "table_source"]


@dataclass(frozen=True)
class Snapshot:
    """A snapshot of the Analytics Table stands for it (``reconcile(..., analytics_table=Snapshot(path))``).

    ``source`` is a file (:func:`read_snapshot`: the Parquet of ``aggregate --format parquet`` or
    the JSON of ``aws dynamodb scan``), local or ``s3://``, or a frame shaped like
    :func:`~bubbly_metrics.analytics_table.read_analytics_table` output.
    """

    source: str | pl.DataFrame


@dataclass(frozen=True)
class DailyRuns:
    """What the daily runs wrote stands for the Analytics Table (``analytics_table=DailyRuns()``).

    The incremental exports at ``reconcile``'s ``incremental`` (default: its ``source``) are
    replayed day by day as the Aggregator Lambda runs them (:func:`daily_runs_table`), offline.
    Without ``start``, the range begins at the first day they cover; their deletes explain
    differences too.  It reconciles a backfill.
    """

    def location(self, source: str | ExportInfo, incremental: str | ExportInfo | None) -> str:
        """Where the incremental exports are: ``incremental``, else the reconciled ``source``."""
        runs_source = incremental if incremental is not None else source
        if not isinstance(runs_source, str):
            raise InvalidArgumentError("daily_runs needs a location holding the incremental exports (incremental=...)")
        return runs_source


TableSource = str | Snapshot | DailyRuns
"""What ``reconcile`` compares as the Analytics Table: its name, a :class:`Snapshot` or :class:`DailyRuns`."""


def daily_runs_table(
    source: str,
    *,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    storage_options: dict[str, Any] | None = None,
    threads: int | None = None,
) -> pl.DataFrame:
    """What the daily runs wrote to the Analytics Table, replayed from the incremental exports at ``source``.

    Each day from ``start`` to ``end`` that a completed incremental export covers is
    aggregated in incremental mode, exactly as the Aggregator Lambda runs it the morning after,
    and turned into the items the Lambda writes (:func:`~bubbly_metrics.analytics_table.build_items`,
    stamped with the export's ``exportToTime`` as the run's time).  A day no export covers has
    no row, as when its run never happened.  Offline, this is what a table written by daily
    runs holds, to reconcile a backfill against without AWS.

    Parameters
    ----------
    source
        A location holding incremental exports (local folder or ``s3://`` URI).
    start, end
        Inclusive days (default: the first and last day the exports there cover).
    storage_options, threads
        As for :func:`~bubbly_metrics.aggregate`.

    Returns
    -------
    polars.DataFrame
        :data:`~bubbly_metrics.analytics_table.TABLE_SCHEMA`, as
        :func:`~bubbly_metrics.analytics_table.read_analytics_table` returns the table.
    """
    from bubbly_metrics.analytics_table import build_items, table_from_items

    exports = incremental_exports(source, since=None, storage_options=storage_options)
    by_day: dict[dt.date, ExportInfo] = {}
    for export in exports:  # oldest first: the latest export covering a day wins, as find_export picks
        if export.export_from is None or export.export_to is None:
            continue
        day = export.export_from.date()
        while day < export.export_to.date():
            if export.covers_day(day):
                by_day[day] = export
            day += dt.timedelta(days=1)
    if not by_day:
        return table_from_items([])
    first = parse_date(start, name="start") if start is not None else min(by_day)
    last = parse_date(end, name="end") if end is not None else max(by_day)
    if first > last:
        raise InvalidArgumentError(f"start {first} is after end {last}")
    items: list[dict[str, Any]] = []
    for day, export in sorted(by_day.items()):
        if not first <= day <= last:
            continue
        run_at = export.export_to + dt.timedelta(hours=2) if export.export_to else None
        result = aggregate(export, mode="incremental", date=day, now=run_at, threads=threads)
        for group in build_items(
            result.metrics, per_user=result.per_user, export_arn=export.export_arn, mode="incremental", now=run_at
        ):
            items.extend(group)
    return table_from_items(items, now=utc_now())


def read_snapshot(path: str, *, storage_options: dict[str, Any] | None = None) -> pl.DataFrame:
    """Read a local (or ``s3://``) snapshot of the Analytics Table: Parquet or ``aws dynamodb scan`` JSON.

    Parameters
    ----------
    path
        Either the Parquet that ``aggregate --format parquet`` writes (``date``, ``app`` and the
        metric columns; the per-user data is not in it), or the JSON that
        ``aws dynamodb scan --table-name TABLE --output json`` prints (``{"Items": [...]}``, or
        a bare list of items; split rows are reassembled as the table reader does).
    storage_options
        Passed through to the filesystem (s3fs for ``s3://``).

    Returns
    -------
    polars.DataFrame
        Comparable with the export's metrics (:func:`compare_metrics`): ``date``, ``app``, the
        metric columns, and for JSON the per-user data and provenance of
        :func:`~bubbly_metrics.analytics_table.read_analytics_table`.

    Raises
    ------
    InvalidArgumentError
        When the file is neither, or lacks the columns; the message names the file.
    """
    import json

    from bubbly_metrics.analytics_table import table_from_items
    from bubbly_metrics.locations import filesystem

    if not isinstance(path, str) or not path:
        raise InvalidArgumentError(f"snapshot must be a file path, got {path!r}")
    fs, resolved = filesystem(path, storage_options)
    try:
        with fs.open(resolved, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise InvalidArgumentError(f"snapshot {path} does not exist") from None
    if data[:4] == b"PAR1":
        import io

        try:
            frame = pl.read_parquet(io.BytesIO(data))
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise InvalidArgumentError(f"snapshot {path} is not readable Parquet: {exc}".splitlines()[0]) from None
        missing = [c for c in ("date", "app", *METRIC_COLUMNS) if c not in frame.columns]
        if missing:
            raise InvalidArgumentError(
                f"snapshot {path} lacks column(s) {missing}: write it with `aggregate --format parquet` "
                "(without --per-user)"
            )
        return metrics_frame(frame, f"snapshot {path}")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgumentError(
            f"snapshot {path} is neither Parquet nor JSON ({exc}); give the Parquet of "
            "`aggregate --format parquet` or the JSON of `aws dynamodb scan`"
        ) from None
    items = document.get("Items") if isinstance(document, dict) else document
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("date"), dict) and isinstance(i.get("app"), dict) for i in items
    ):
        raise InvalidArgumentError(
            f"snapshot {path} is JSON but not Analytics Table items: expected the output of "
            '`aws dynamodb scan` ({"Items": [{"date": {"S": ...}, "app": {"S": ...}, ...}]})'
        )
    return table_from_items(items)


_SOURCE_PARAMS = ("analytics_table", "snapshot", "daily_runs")


def table_source(
    *, analytics_table: str | None = None, snapshot: str | pl.DataFrame | None = None, daily_runs: bool = False
) -> TableSource | None:
    """The one table source :func:`reconcile` takes, from the three ways a front door names it.

    A table's name, else ``Snapshot(snapshot)``, else ``DailyRuns()`` when ``daily_runs``;
    ``None`` when none is given.  Giving more than one is an ``InvalidArgumentError`` naming
    them (each front door names them its own way: ``message_for``).
    """
    values = (analytics_table, snapshot, daily_runs)
    given = [name for name, value in zip(_SOURCE_PARAMS, values, strict=True) if _given(value)]
    if len(given) > 1:
        one_of = ", ".join(placeholder(name) for name in _SOURCE_PARAMS[:2])
        raise InvalidArgumentError(
            f"compare with one of {one_of} or {placeholder('daily_runs')}, "
            f"not {' and '.join(placeholder(name) for name in given)}",
            also={name: name for name in _SOURCE_PARAMS},
        )
    if analytics_table is not None:
        return analytics_table
    if snapshot is not None:
        return Snapshot(snapshot)
    return DailyRuns() if daily_runs else None


def _given(value: object) -> bool:
    return value is not None and value is not False and not (isinstance(value, str) and not value)


def check_table_source(against: object, *, param: str = "analytics_table") -> None:
    """Refuse anything but a table's name, a :class:`Snapshot`, :class:`DailyRuns` or ``None``."""
    if against is None or isinstance(against, Snapshot | DailyRuns):
        return
    if not isinstance(against, str) or not against:
        raise InvalidArgumentError(
            f"{PARAM} must name a table, be Snapshot(PATH) or DailyRuns(), or be None, got {against!r}", param=param
        )


def load_stand_in(
    against: TableSource | None,
    source: str | ExportInfo,
    incremental: str | ExportInfo | None,
    *,
    end: str | dt.date | None,
    storage_options: dict[str, Any] | None,
    threads: int | None,
) -> tuple[pl.DataFrame | None, str | None, str | ExportInfo | None]:
    """What stands for the table: its frame, its name, and where the deletes that explain differences are.

    A live table has no frame yet (it is read for the range); the daily runs' deletes are in their exports.
    """
    if isinstance(against, DailyRuns):
        location = against.location(source, incremental)
        try:
            table = daily_runs_table(location, end=end, storage_options=storage_options, threads=threads)
        except ExportNotFoundError as exc:
            raise ExportNotFoundError(
                f"{exc}; daily_runs replays the daily incremental exports: point incremental= at them, "
                "or compare with a table or a snapshot instead"
            ) from None
        return table, f"daily runs ({table['date'].n_unique()} days)", location
    if isinstance(against, Snapshot):
        if isinstance(against.source, pl.DataFrame):
            frame = against.source
            frame = metrics_frame(frame, "snapshot") if "games_per_user" not in frame.columns else frame
            return frame, "snapshot", incremental
        frame = read_snapshot(against.source, storage_options=storage_options)
        return frame, f"snapshot {against.source}", incremental
    return None, against, incremental
