"""CDK entry point: ``cdk synth`` / ``cdk deploy`` run this (see ``cdk.json``).

All configuration is CDK context (``-c key=value``); ``deploy/config.py``'s ``StackConfig``
lists the keys.  ``mainTable`` is required::

    cd deploy && cdk deploy -c mainTable=arn:aws:dynamodb:eu-west-2:123456789012:table/Main

``-c nag=true`` also runs cdk-nag's AwsSolutions checks during synthesis (``pip install
cdk-nag``, in the ``test`` extra): an unacknowledged finding stops it, as in the test suite.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

# cdk runs `python3 app.py` from deploy/: make `deploy.*` importable as in the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aws_cdk as cdk  # noqa: E402

from deploy.config import ConfigError, StackConfig  # noqa: E402
from deploy.stack import AnalyticsStack  # noqa: E402


def build_app(context: dict[str, Any] | None = None, outdir: str | None = None) -> cdk.App:
    """Build and synthesise the app; ``ConfigError`` if the context is wrong.

    The CDK CLI passes context and the output folder through the environment; tests pass them
    here (``App`` reads the environment of the jsii kernel, which started before a test could
    set it).
    """
    app = cdk.App(context=context, outdir=outdir)
    config = StackConfig.from_context(
        app.node,
        default_region=os.environ.get("CDK_DEFAULT_REGION"),
        default_account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
    )
    AnalyticsStack(app, config)
    if str(app.node.try_get_context("nag") or "").strip().lower() in ("true", "1", "yes"):
        from cdk_nag import AwsSolutionsChecks

        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()
    return app


def main() -> None:
    try:
        build_app()
    except ConfigError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
