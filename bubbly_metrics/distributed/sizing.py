"""Sizing a backfill: can one Aggregator invocation finish it, and how large is a map batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bubbly_metrics.exports import ExportInfo

__all__ = [
    "LAMBDA_MAX_VCPUS",
    "MAP_TARGET_SECONDS",
    "MB_PER_VCPU",
    "SINGLE_ITEMS_PER_VCPU_SECOND",
    "SINGLE_RUN_FIXED_SECONDS",
    "SingleRunEstimate",
    "default_items_per_batch",
    "single_run_estimate",
]

# Lambda gives CPU in proportion to memory: one full vCPU at 1,769 MB, at most 6 (10,240 MB).
MB_PER_VCPU = 1769
LAMBDA_MAX_VCPUS = 6

SINGLE_ITEMS_PER_VCPU_SECOND = 150_000
"""Items one vCPU reads and summarises per second, for planning: well under what a map child
does here (``bench/distributed.py``; the figures are in docs/performance.md and docs/scale.md),
for Lambda's slower cores, S3 reads and a margin of ~2x.
:func:`single_run_estimate` and :func:`default_items_per_batch` use it."""

SINGLE_RUN_FIXED_SECONDS = 60.0
"""What a single run spends besides the scan: start, the merge, CloudWatch and the table
writes of a long backfill (hundreds of BatchWriteItem calls)."""

MAP_TARGET_SECONDS = 120.0
"""A map child's planned scan time: long enough that its start (importing Polars: see
docs/performance.md) is noise, short enough that a retried batch costs little and thousands run side by side."""


@dataclass(frozen=True)
class SingleRunEstimate:
    """Can one Aggregator invocation finish this export in its timeout?  (``fits``)."""

    items: int
    memory_mb: int
    vcpus: float
    seconds: float
    """Estimated duration: ``items / (SINGLE_ITEMS_PER_VCPU_SECOND × vcpus) + SINGLE_RUN_FIXED_SECONDS``."""
    timeout_seconds: float

    @property
    def fits(self) -> bool:
        """True when the estimate is within the timeout (the rate already carries a 2x margin)."""
        return self.seconds <= self.timeout_seconds

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (handler logs and results)."""
        return {
            "items": self.items,
            "memoryMb": self.memory_mb,
            "vcpus": round(self.vcpus, 2),
            "estimatedSeconds": round(self.seconds, 1),
            "timeoutSeconds": round(self.timeout_seconds, 1),
            "fits": self.fits,
        }


def _vcpus(memory_mb: int) -> float:
    return min(max(memory_mb, 128) / MB_PER_VCPU, LAMBDA_MAX_VCPUS)


def single_run_estimate(export: ExportInfo, *, memory_mb: int, timeout_seconds: float) -> SingleRunEstimate:
    """Estimate one Aggregator invocation over ``export`` with ``memory_mb`` and ``timeout_seconds``.

    The scan is CPU-bound and Lambda's CPU is proportional to memory (one vCPU per 1,769 MB, at
    most 6), so the duration is the manifest's item count over
    :data:`SINGLE_ITEMS_PER_VCPU_SECOND` × vCPUs, plus :data:`SINGLE_RUN_FIXED_SECONDS`.  At the
    stack's default 3,008 MB (1.7 vCPU) and 900 s that is about 215M items; past it,
    :func:`~bubbly_metrics.distributed.route_backfill` starts the distributed run.
    """
    items = export.item_count if export.item_count is not None else sum(f.item_count for f in export.data_files())
    vcpus = _vcpus(memory_mb)
    seconds = items / (SINGLE_ITEMS_PER_VCPU_SECOND * vcpus) + SINGLE_RUN_FIXED_SECONDS
    return SingleRunEstimate(int(items), int(memory_mb), vcpus, seconds, float(timeout_seconds))


def default_items_per_batch(memory_mb: int) -> int:
    """Items per map child so that it reads for about :data:`MAP_TARGET_SECONDS` at ``memory_mb``."""
    return max(1, int(SINGLE_ITEMS_PER_VCPU_SECOND * _vcpus(memory_mb) * MAP_TARGET_SECONDS))
