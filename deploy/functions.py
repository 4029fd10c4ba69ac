"""The stack's Lambda functions: their code (the built bundle, or a placeholder) and the one builder.

Every function of the stack -- Export, Aggregator, and the distributed backfill's Map and
Reduce -- is made by :class:`FunctionBuilder`: its own log group (the name Lambda would use),
its own role that may write to that log group only, the bundle's runtime on arm64.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from deploy import nag
from deploy.build_bundle import LAMBDA_ARCH, PYTHON_VERSION, BundleError, read_manifest
from deploy.config import ConfigError, StackConfig

RUNTIME = {"3.12": lambda_.Runtime.PYTHON_3_12, "3.13": lambda_.Runtime.PYTHON_3_13}[PYTHON_VERSION]
RUNTIME_REASON = (
    f"The runtime is the Python the Lambda bundle is built for (deploy/build_bundle.py, Python "
    f"{PYTHON_VERSION}, with compiled wheels for it); moving to a newer runtime means rebuilding and "
    "testing the bundle for it, done on purpose, not by a lint."
)

_PLACEHOLDER_HANDLER = '''"""Placeholder: the stack was synthesised with placeholderCode=true."""


def lambda_handler(event, context):
    raise RuntimeError(
        "placeholder code deployed: build the bundle (python deploy/build_bundle.py) "
        "and deploy without placeholderCode"
    )
'''


def _placeholder_dir() -> Path:
    """A tiny package with every handler module; same content every time (stable asset hash)."""
    root = Path(tempfile.gettempdir()) / "bubbly-metrics-placeholder-code"
    files = {
        "bubbly_metrics/__init__.py": "",
        "bubbly_metrics/handlers/__init__.py": "",
        "bubbly_metrics/handlers/export.py": _PLACEHOLDER_HANDLER,
        "bubbly_metrics/handlers/aggregator.py": _PLACEHOLDER_HANDLER,
        "bubbly_metrics/handlers/distributed.py": f"{_PLACEHOLDER_HANDLER}\n\nmap_handler = reduce_handler = lambda_handler\n",  # noqa: E501
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return root


def lambda_code(config: StackConfig) -> lambda_.Code:
    """The asset every function runs: the built bundle, or the placeholder."""
    if config.placeholder_code:
        return lambda_.Code.from_asset(str(_placeholder_dir()))
    bundle = config.bundle_dir.resolve()
    if not bundle.is_dir():
        raise ConfigError(
            f"Lambda bundle not found at {bundle}: build it with `python deploy/build_bundle.py` "
            "(or synthesise without it: -c placeholderCode=true, never for deployment)"
        )
    try:
        manifest = read_manifest(bundle)
    except BundleError as exc:
        raise ConfigError(str(exc)) from None
    if (manifest.get("target"), manifest.get("arch"), manifest.get("python_version")) != (
        "lambda",
        LAMBDA_ARCH,
        PYTHON_VERSION,
    ):
        raise ConfigError(
            f"{bundle} was built for {manifest.get('target')}/{manifest.get('arch')}/python "
            f"{manifest.get('python_version')}, not for Lambda (arm64, Python {PYTHON_VERSION}): "
            "rebuild with `python deploy/build_bundle.py` (default --platform lambda)"
        )
    return lambda_.Code.from_asset(str(bundle))


@dataclass(frozen=True)
class FunctionBuilder:
    """Builds every Lambda function of the stack; what they share is fixed here.

    ``stack_name`` prefixes the function and log group names, ``code`` is ``lambda_code``'s asset,
    ``retention`` that of every function's log group.
    """

    stack_name: str
    code: lambda_.Code
    retention: logs.RetentionDays

    def __call__(
        self,
        scope: Construct,
        fn_id: str,
        *,
        handler: str,
        description: str,
        memory_mb: int,
        timeout_s: int,
        environment: dict[str, str],
        role_id: str,
        role_description: str | None = None,
        statements: Sequence[iam.PolicyStatement] = (),
        reserved_concurrency: int | None = None,
    ) -> lambda_.Function:
        """The function ``<stack_name>-<fn_id>`` under ``scope``; ``statements`` go to its role.

        ``None`` for ``reserved_concurrency`` reserves nothing.
        """
        # The name Lambda would use by default, so docs/operations.md's `aws logs tail
        # /aws/lambda/<STACK_NAME>-...` works; destroyed with the stack so that a later
        # deployment of the same stack name can create it again.
        group = logs.LogGroup(
            scope,
            f"{fn_id}Logs",
            log_group_name=f"/aws/lambda/{self.stack_name}-{fn_id}",
            retention=self.retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        # Explicit roles without AWSLambdaBasicExecutionRole (logs:* on every log group):
        # each function may write to its own log group only.
        role = iam.Role(
            scope,
            role_id,
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=role_description,
        )
        group.grant_write(role)
        for statement in statements:
            role.add_to_policy(statement)
        function = lambda_.Function(
            scope,
            fn_id,
            function_name=f"{self.stack_name}-{fn_id}",
            description=description,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler=handler,
            code=self.code,
            memory_size=memory_mb,
            timeout=Duration.seconds(timeout_s),
            role=role,
            log_group=group,
            reserved_concurrent_executions=reserved_concurrency,
            environment=environment,
        )
        # Looked up at call time: the tests build the stack without acknowledgments by
        # replacing deploy.nag.acknowledge.
        nag.acknowledge(function, "AwsSolutions-L1", RUNTIME_REASON)
        return function
