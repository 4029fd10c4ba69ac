"""Start-up of worker processes (kept free of heavy imports: it runs before Polars loads)."""

from __future__ import annotations

import os


def init_worker() -> None:
    """Give each worker process one Polars thread: the pool already uses every core."""
    os.environ["POLARS_MAX_THREADS"] = "1"
