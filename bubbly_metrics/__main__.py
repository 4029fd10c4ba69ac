"""``python -m bubbly_metrics``: the CLI (see :mod:`bubbly_metrics.cli`)."""

# Guarded: worker processes started with "spawn" import the parent's __main__ module.
if __name__ == "__main__":
    from bubbly_metrics.cli import main

    raise SystemExit(main())
