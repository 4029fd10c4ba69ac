"""``python -m bubbly_metrics``: the CLI (see :mod:`bubbly_metrics.cli`)."""

from bubbly_metrics.cli import main

raise SystemExit(main())
