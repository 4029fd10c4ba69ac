"""cdk-nag findings the stack keeps, each acknowledged where it arises, with its reason.

``tests/test_deploy.py`` runs cdk-nag's AwsSolutions pack on the synthesised stack and
requires zero unacknowledged findings.  A finding stays only when it is what the code needs
(an export's object names are chosen by DynamoDB, PutMetricData has no resource-level
permissions, ...); :func:`acknowledge` records why, on the construct it is about, through the
CDK's own ``Validations`` API (cdk-nag v3 reads it; nothing here imports cdk-nag).

cdk-nag names each wildcard finding after the resource it allows (``AwsSolutions-IAM5[Resource::
<ExportBucket4E99310E.Arn>/exports/*]``); :func:`wildcard` builds that name from the CDK value,
so a renamed construct changes the acknowledgment with it.
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge cdk-nag's finding ``rule`` on ``scope`` and below; ``reason`` says why it stands.

    The id is the rule's, unprefixed (the CDK records it as ``Annotation::<rule>``): cdk-nag 3.0
    matches that form, both in ``validate_scope`` (the tests) and as the app's validation plugin
    (``cdk synth -c nag=true``), and not the ``AwsSolutions::<rule>`` its report suggests.
    """
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def wildcard(scope: IConstruct, resource: Any) -> str:
    """cdk-nag's id of the IAM5 finding for a statement allowing ``resource`` (a wildcard)."""
    return f"AwsSolutions-IAM5[Resource::{_render(Stack.of(scope).resolve(resource))}]"


def _render(value: Any) -> str:
    # As cdk-nag renders a resolved resource: joins flattened, {"Ref": X} as <X>,
    # {"Fn::GetAtt": [X, A]} as <X.A>, any other intrinsic as compact JSON.
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((name, arg),) = value.items()
        if name == "Fn::Join" and isinstance(arg, list) and arg[0] == "":
            return "".join(_render(part) for part in arg[1])
        if name == "Ref" and isinstance(arg, str):
            return f"<{arg}>"
        if name == "Fn::GetAtt" and isinstance(arg, list):
            return f"<{arg[0]}.{arg[1]}>"
    return json.dumps(value, separators=(",", ":"))
