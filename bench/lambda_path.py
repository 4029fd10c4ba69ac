"""The Lambda path: what the Aggregator handler runs, from the built bundle alone.

Usage: python -S bench/lambda_path.py BUNDLE BUCKET_ROOT START END OUT.csv

``-S`` keeps site-packages (the development install) off ``sys.path``: everything is imported
from ``BUNDLE`` (``deploy/build_bundle.py --platform host``: the same wheels and the same
zig-built decoder source as the arm64 bundle, built for this machine).  It calls the library's
``aggregate`` as ``bubbly_metrics.handlers.aggregator`` does (no CLI, so none of the CLI's
allocator padding) and writes the metrics as the CLI's ``--format csv`` does, for comparison.
"""

from __future__ import annotations

import sys

bundle, root, start, end, out = sys.argv[1:6]
sys.path.insert(0, bundle)

from bubbly_metrics.pipeline import aggregate  # noqa: E402
from bubbly_metrics.scan import decoder  # noqa: E402

if decoder() != "simdjson":
    sys.exit(f"the bundle at {bundle} scans with {decoder()}, not the compiled decoder")
result = aggregate(root, mode="backfill", start=start, end=end)
with open(out, "w") as fh:
    fh.write(result.metrics.write_csv())
