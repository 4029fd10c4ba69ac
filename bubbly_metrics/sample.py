"""The small sample export shipped inside the package.

It holds a FULL export of 60 days (2025-01-17 → 2025-03-17, about 5,000 items, four apps,
noise kinds and malformed records) and an INCREMENTAL export of the last day, in the real
AWS layout.  It is written by :func:`write_sample` (``python -m bubbly_metrics.sample``), so
it can be regenerated and checked.
"""

from __future__ import annotations

import datetime as dt
import shutil
from importlib import resources
from pathlib import Path

__all__ = ["SAMPLE_NOW", "sample_export_location", "source_or_sample", "write_sample"]

SAMPLE_START = dt.date(2025, 1, 17)
SAMPLE_DAYS = 60
SAMPLE_NOW = dt.datetime(2025, 3, 18, 2, 30, tzinfo=dt.UTC)
"""The sample's "now": the morning after its last day, when the daily run would aggregate it."""


def sample_export_location() -> str:
    """Return the local path of the shipped sample export (a bucket root with two exports)."""
    return str(resources.files("bubbly_metrics") / "sample")


def source_or_sample(location: str | None, now: dt.datetime | None = None) -> tuple[str, dt.datetime | None]:
    """``(location, now)`` for a run: no location means the shipped sample, seen from its "now".

    The CLI and the notebooks use this so that, with nothing configured, they show the sample's
    last day instead of an empty "yesterday".
    """
    if location is None:
        return sample_export_location(), now or SAMPLE_NOW
    return location, now


def write_sample(root: str | Path) -> None:
    """(Re)write the sample export under ``root`` deterministically."""
    from bubbly_metrics.synthetic import (
        generate_incremental_records,
        generate_items,
        write_full_export,
        write_incremental_export,
    )

    root = Path(root)
    if (root / "AWSDynamoDB").exists():
        shutil.rmtree(root / "AWSDynamoDB")
    last_day = SAMPLE_START + dt.timedelta(days=SAMPLE_DAYS - 1)
    items = generate_items(n_items=5000, start=SAMPLE_START, days=SAMPLE_DAYS, seed=2025, malformed_fraction=0.02)
    write_full_export(root, items, n_files=4, export_time=SAMPLE_NOW - dt.timedelta(minutes=30), seed=1)
    day_items = generate_items(n_items=400, start=last_day, days=1, seed=2026, malformed_fraction=0.02)
    window_end = dt.datetime(SAMPLE_NOW.year, SAMPLE_NOW.month, SAMPLE_NOW.day, tzinfo=dt.UTC)
    write_incremental_export(
        root,
        generate_incremental_records(day_items, seed=7, window_end_micros=int(window_end.timestamp() * 1e6)),
        export_from=window_end - dt.timedelta(days=1),
        export_to=window_end,
        n_files=2,
        seed=2,
    )


if __name__ == "__main__":
    write_sample(Path(__file__).parent / "sample")
