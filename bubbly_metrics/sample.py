"""The small sample export shipped inside the package.

It holds a table's history in the real AWS layout: a FULL export of 60 days (2025-01-17 →
2025-03-17, about 5,000 items, five apps, noise kinds and malformed records) and the daily
INCREMENTAL exports the same table gave for its last 14 days (one day's never ran), so that
every front door can show its real job offline: ``aggregate`` a day or a backfill, and
``reconcile`` what the daily runs wrote against the backfill, finding re-dated sessions,
deletes, TTL expiry and the missing day.  It is written by :func:`write_sample`
(``python -m bubbly_metrics.sample``), so it can be regenerated and checked.
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


SAMPLE_DAILY_DAYS = 14
SAMPLE_MISSING_DAY = dt.date(2025, 3, 10)
"""The day whose daily export never ran: reconciling the sample finds it missing."""
SAMPLE_LATE_APP = ("trivia", dt.date(2025, 3, 12))
"""An app that first appears late in the sample's history, and the day it does."""


def write_sample(root: str | Path) -> None:
    """(Re)write the sample under ``root`` deterministically: a table's history.

    A FULL export of 60 days (2025-01-17 → 2025-03-17, taken 2025-03-18 02:00) and the daily
    INCREMENTAL exports of the same table for its last 14 days, except 2025-03-10's, which never
    ran (:func:`~bubbly_metrics.synthetic.write_history`): sessions updated past midnight,
    deleted records, items expired by TTL, an app arriving on 2025-03-12, malformed records.
    """
    from bubbly_metrics.synthetic import write_history

    root = Path(root)
    if (root / "AWSDynamoDB").exists():
        shutil.rmtree(root / "AWSDynamoDB")
    write_history(
        root,
        n_items=5000,
        start=SAMPLE_START,
        days=SAMPLE_DAYS,
        daily_days=SAMPLE_DAILY_DAYS,
        missing_day=SAMPLE_MISSING_DAY,
        late_app=SAMPLE_LATE_APP[0],
        late_app_from=SAMPLE_LATE_APP[1],
        seed=2025,
        malformed_fraction=0.02,
        export_time=SAMPLE_NOW - dt.timedelta(minutes=30),
    )


if __name__ == "__main__":
    write_sample(Path(__file__).parent / "sample")
