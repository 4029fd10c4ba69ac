"""Environment for importing aws_cdk in tests: offline, quiet, nothing written to ``$HOME``.

``import aws_cdk`` starts one Node.js process (the jsii kernel) per Python process, and that
process keeps the environment it was started with; so ``jsii_environment()`` must be active at
the first import.  Both deploy test modules go through ``import_cdk()``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"

#: Step Functions' execution logging: CloudWatch Logs' log-delivery actions, which have no
#: resource-level permissions (the state machine's role, as the CDK grants them).
LOG_DELIVERY = {
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}

#: Where jsii unpacks aws-cdk-lib (~180 MB): a gitignored folder of this checkout, reused across
#: runs, instead of ``~/.cache/aws/jsii``.
JSII_CACHE = ROOT / ".pytest_cache" / "jsii-runtime-package-cache"
#: ``$HOME`` of the jsii kernel only: aws-cdk-lib keeps asset fingerprints in
#: ``~/.cdk/cache/fingerprints`` (Node's ``os.homedir()``, no switch to turn it off).
CDK_HOME = ROOT / ".pytest_cache" / "cdk-home"


def jsii_environment() -> dict[str, str]:
    env = {
        "JSII_RUNTIME_PACKAGE_CACHE_ROOT": os.environ.get("JSII_RUNTIME_PACKAGE_CACHE_ROOT", str(JSII_CACHE)),
        "HOME": str(CDK_HOME),
        # Using a deprecated CDK API throws instead of printing to stderr: the CDK's own
        # "warnings as errors", like pytest's filterwarnings=error.
        "JSII_DEPRECATED": "fail",
        # jsii prints a banner when Node is end-of-life for it (Node 20 is, since 2026-10-30);
        # silenced for 20 only, so a different unsupported version still shows.
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        # The CDK CLI's version check; no CLI runs here, set for anything that shells out to it.
        "CDK_DISABLE_VERSION_CHECK": "1",
    }
    return env


def import_cdk() -> Any:
    """Import aws_cdk with ``jsii_environment()`` in force; returns the module."""
    import sys

    if "aws_cdk" not in sys.modules:
        saved = {k: os.environ.get(k) for k in jsii_environment()}
        os.environ.update(jsii_environment())
        try:
            import aws_cdk  # noqa: F401  (starts the jsii kernel with this environment)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    import aws_cdk

    return aws_cdk


def cdk_json_context() -> dict[str, Any]:
    """The ``context`` of ``deploy/cdk.json``, as the CDK CLI would pass it to the app."""
    cdk_json = json.loads((DEPLOY / "cdk.json").read_text())
    context = dict(cdk_json["context"])
    # The CLI turns cdk.json's top-level "versionReporting": false into this context key.
    context["aws:cdk:version-reporting"] = cdk_json.get("versionReporting", True)
    return context
