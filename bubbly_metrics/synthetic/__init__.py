"""Synthetic main-table exports in the real AWS layout.

Tests, benchmarks, the ``sample`` CLI command and the sample export shipped in the package
all come from here.  What is written matches what AWS writes (docs/rules.md#export-layouts): a full export keeps
its data under ``AWSDynamoDB/<ExportId>/data/``, an incremental export writes into the shared
``AWSDynamoDB/data/`` folder, manifests carry per-file item counts and base64 MD5 checksums of
the gzip bytes, ``*.md5`` files hold the base64 MD5 of each manifest, and empty partitions are
real (20-byte) gzip files.

Examples
--------
>>> import tempfile
>>> from bubbly_metrics.synthetic import generate_items, write_full_export
>>> root = tempfile.mkdtemp()
>>> items = generate_items(n_items=500, start="2025-01-17", days=10, seed=1)
>>> export = write_full_export(root, items, n_files=2, export_time="2025-01-27T03:00:00Z")
>>> export.item_count
500
"""

from __future__ import annotations

from bubbly_metrics.synthetic.history import WrittenHistory, write_history
from bubbly_metrics.synthetic.items import DEFAULT_APPS, MALFORMED_SHAPES, generate_incremental_records, generate_items
from bubbly_metrics.synthetic.layout import (
    WrittenExport,
    write_full_export,
    write_generated_export,
    write_incremental_export,
    write_synthetic_export,
)

__all__ = [
    "DEFAULT_APPS",
    "MALFORMED_SHAPES",
    "WrittenExport",
    "WrittenHistory",
    "generate_items",
    "generate_incremental_records",
    "write_full_export",
    "write_generated_export",
    "write_history",
    "write_synthetic_export",
    "write_incremental_export",
]
