"""``python -m bubbly_metrics``: the CLI (see :mod:`bubbly_metrics.cli`)."""

# Guarded so that importing this module (as tools that start worker processes may) runs nothing.
if __name__ == "__main__":
    from bubbly_metrics.cli import main

    raise SystemExit(main())
