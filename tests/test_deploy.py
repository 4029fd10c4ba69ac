"""The CDK app (deploy/): synthesised once, offline, and held to docs/rules.md#deploy and least privilege.

The template comes from ``deploy/app.py`` with ``deploy/cdk.json``'s context, as ``cdk synth``
would produce it, with ``placeholderCode`` so no bundle needs building (the bundle has its own
tests in ``test_bundle.py``).
"""

from __future__ import annotations

import json
import marshal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cdk_env import DEPLOY, LOG_DELIVERY, cdk_json_context, import_cdk

REGION = "eu-west-2"
ACCOUNT = "123456789012"
STACK = "BubblyAnalytics"
MAIN_TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/BubblyClouds-Main"
METRICS = ("ActiveUsers", "GamesPlayed", "PartiesCreated", "PartiesJoined")

# Every resource the stack may create: docs/rules.md#deploy's list plus the alarm, and what they imply
# (bucket policy for TLS-only, one role + policy + log group per function, one permission per
# schedule).  Anything else -- a custom resource, a second table, a log-retention Lambda --
# fails the count test.
EXPECTED_RESOURCES = {
    "AWS::S3::Bucket": 2,  # exports, and the export bucket's access logs
    "AWS::S3::BucketPolicy": 2,
    "AWS::DynamoDB::Table": 1,
    "AWS::Lambda::Function": 4,  # + the distributed backfill's Map and Reduce (tests/test_distributed.py)
    "AWS::Logs::LogGroup": 5,  # one per function, and the state machine's execution log
    "AWS::IAM::Role": 5,  # + the state machine's
    "AWS::IAM::Policy": 6,
    "AWS::StepFunctions::StateMachine": 1,
    # 02:00, 02:30, export completed (S3 -> EventBridge), lateness check
    "AWS::Events::Rule": 4,
    "AWS::Lambda::Permission": 4,
    "AWS::CloudWatch::Dashboard": 1,
    # Aggregator errors, days not aggregated, distributed backfill failed, and the anomaly
    # alarms on the all-apps ActiveUsers and GamesPlayed
    "AWS::CloudWatch::Alarm": 5,
}


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def cdk() -> Any:
    """``aws_cdk``, imported with jsii's cache out of $HOME and its warnings made errors."""
    return import_cdk()


def _context() -> dict[str, Any]:
    return {
        **cdk_json_context(),
        "mainTable": MAIN_TABLE_ARN,
        "stackName": STACK,
        "region": REGION,
        "account": ACCOUNT,
        "placeholderCode": "true",  # strings, as `-c key=value` passes them
    }


@pytest.fixture(scope="session")
def synthesised(cdk: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """Synthesise the app once per session; return the app and its output folder."""
    from deploy.app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out")
    return build_app(context=_context(), outdir=str(outdir)), outdir


@pytest.fixture(scope="session")
def synth(synthesised: tuple[Any, Path]) -> dict[str, Any]:
    """The synthesised template as a dict."""
    template: dict[str, Any] = json.loads((synthesised[1] / f"{STACK}.template.json").read_text())
    return template


@pytest.fixture(scope="session")
def template(synth: dict[str, Any]) -> Any:
    from aws_cdk.assertions import Template

    return Template.from_json(synth)


@pytest.fixture(scope="session")
def template_file(synth: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.json"
    path.write_text(json.dumps(synth))
    return path


# ---------------------------------------------------------------------------------------------
# helpers over the raw template


def resources(synth: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in synth["Resources"].items() if v["Type"] == type_}


def only(synth: dict[str, Any], type_: str, **props: Any) -> tuple[str, dict[str, Any]]:
    found = [
        (k, v)
        for k, v in resources(synth, type_).items()
        if all(v["Properties"].get(p) == want for p, want in props.items())
    ]
    assert len(found) == 1, f"expected one {type_} with {props}, found {[k for k, _ in found]}"
    return found[0]


def logical_id(synth: dict[str, Any], type_: str, **props: Any) -> str:
    return only(synth, type_, **props)[0]


def export_bucket_id(synth: dict[str, Any]) -> str:
    """The export bucket (the one sending events to EventBridge; the other holds its access logs)."""
    (found,) = [
        k for k, v in resources(synth, "AWS::S3::Bucket").items() if "NotificationConfiguration" in v["Properties"]
    ]
    return found


def access_log_bucket_id(synth: dict[str, Any]) -> str:
    (found,) = [k for k in resources(synth, "AWS::S3::Bucket") if k != export_bucket_id(synth)]
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements_by_role(synth: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Role logical id -> every statement of every policy attached to it (inline or not)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for policy in resources(synth, "AWS::IAM::Policy").values():
        for role in policy["Properties"]["Roles"]:
            out.setdefault(role["Ref"], []).extend(policy["Properties"]["PolicyDocument"]["Statement"])
    for role_id, role in resources(synth, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            out.setdefault(role_id, []).extend(policy["PolicyDocument"]["Statement"])
    return out


def role_of(synth: dict[str, Any], function_name: str) -> str:
    _, fn = only(synth, "AWS::Lambda::Function", FunctionName=function_name)
    role_id: str = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    return role_id


def actions_on(statements: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """action -> the resources it is allowed on (Allow statements only)."""
    out: dict[str, list[Any]] = {}
    for st in statements:
        assert st["Effect"] == "Allow"
        for action in as_list(st["Action"]):
            out.setdefault(action, []).extend(as_list(st["Resource"]))
    return out


def getatt(logical: str, attr: str = "Arn") -> dict[str, Any]:
    return {"Fn::GetAtt": [logical, attr]}


def objects_of(bucket_id: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [getatt(bucket_id), "/*"]]}


def under(bucket_id: str, pattern: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [getatt(bucket_id), f"/{pattern}"]]}


def resolve_join(value: Any, region: str = REGION) -> str:
    """Flatten a ``Fn::Join`` whose only tokens are ``Ref: AWS::Region`` and alarms' ARNs (``<Id.Arn>``)."""
    if isinstance(value, str):
        return value
    sep, parts = value["Fn::Join"]
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif "Fn::GetAtt" in part:
            logical, attribute = part["Fn::GetAtt"]
            assert attribute == "Arn", part
            out.append(f"<{logical}.Arn>")
        else:
            assert part == {"Ref": "AWS::Region"}, part
            out.append(region)
    return str(sep).join(out)


# ---------------------------------------------------------------------------------------------
# inventory


def test_exactly_the_spec_resources(synth: dict[str, Any]) -> None:
    counts: dict[str, int] = {}
    for res in synth["Resources"].values():
        counts[res["Type"]] = counts.get(res["Type"], 0) + 1
    assert counts == EXPECTED_RESOURCES


def test_main_table_is_referenced_never_created(synth: dict[str, Any]) -> None:
    (table,) = resources(synth, "AWS::DynamoDB::Table").values()
    assert table["Properties"]["TableName"] == f"{STACK}-AnalyticsTable"
    assert "BubblyClouds-Main" not in json.dumps(table)
    _, export = only(synth, "AWS::Lambda::Function", FunctionName=f"{STACK}-ExportLambda")
    assert export["Properties"]["Environment"]["Variables"]["TABLE_NAME"] == MAIN_TABLE_ARN


def test_no_cdk_telemetry_in_template(synth: dict[str, Any]) -> None:
    assert not resources(synth, "AWS::CDK::Metadata")
    assert not any(r["Type"].startswith("Custom::") for r in synth["Resources"].values())


def test_outputs_name_what_the_guide_uses(synth: dict[str, Any]) -> None:
    outputs = synth["Outputs"]
    assert outputs["ExportLambdaName"]["Value"] == {
        "Ref": logical_id(synth, "AWS::Lambda::Function", FunctionName=f"{STACK}-ExportLambda")
    }
    assert outputs["DashboardName"]["Value"] == f"{STACK}-AnalyticsDashboard"
    assert {"ExportBucketName", "AggregatorLambdaName", "AnalyticsTableName"} <= set(outputs)


# ---------------------------------------------------------------------------------------------
# export bucket


def test_bucket_expires_exports_after_one_day(template: Any) -> None:
    from aws_cdk.assertions import Match

    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LifecycleConfiguration": {
                "Rules": [
                    Match.object_like(
                        {
                            "Status": "Enabled",
                            "ExpirationInDays": 1,
                            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                        }
                    )
                ]
            }
        },
    )


def test_bucket_encrypted_and_private(template: Any) -> None:
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        },
    )


def test_bucket_policy_denies_anything_but_tls(synth: dict[str, Any]) -> None:
    bucket_id = export_bucket_id(synth)
    (policy,) = [
        p for p in resources(synth, "AWS::S3::BucketPolicy").values() if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == {"AWS": "*"}
    assert statement["Action"] == "s3:*"  # a Deny: the broader the safer
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert statement["Resource"] == [
        getatt(bucket_id),
        {"Fn::Join": ["", [getatt(bucket_id), "/*"]]},
    ]


# ---------------------------------------------------------------------------------------------
# Analytics Table


def test_analytics_table_keys_ttl_and_billing(synth: dict[str, Any]) -> None:
    table_id, table = only(synth, "AWS::DynamoDB::Table")
    props = table["Properties"]
    assert props["KeySchema"] == [
        {"AttributeName": "date", "KeyType": "HASH"},
        {"AttributeName": "app", "KeyType": "RANGE"},
    ]
    assert sorted(props["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == [
        {"AttributeName": "app", "AttributeType": "S"},
        {"AttributeName": "date", "AttributeType": "S"},
    ]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert "ProvisionedThroughput" not in props
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert "GlobalSecondaryIndexes" not in props and "LocalSecondaryIndexes" not in props
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    assert table_id


# ---------------------------------------------------------------------------------------------
# Lambdas


@pytest.mark.parametrize(
    ("name", "handler", "memory", "timeout"),
    [
        ("ExportLambda", "bubbly_metrics.handlers.export.lambda_handler", 256, 60),
        ("AggregatorLambda", "bubbly_metrics.handlers.aggregator.lambda_handler", 3008, 900),
    ],
)
def test_lambda_runtime_architecture_and_sizing(
    synth: dict[str, Any], name: str, handler: str, memory: int, timeout: int
) -> None:
    _, fn = only(synth, "AWS::Lambda::Function", FunctionName=f"{STACK}-{name}")
    props = fn["Properties"]
    assert props["Runtime"] in ("python3.12", "python3.13")
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == handler
    assert props["MemorySize"] == memory
    assert props["Timeout"] == timeout
    assert "Layers" not in props and "VpcConfig" not in props


def test_export_lambda_environment(synth: dict[str, Any]) -> None:
    bucket_id = export_bucket_id(synth)
    _, fn = only(synth, "AWS::Lambda::Function", FunctionName=f"{STACK}-ExportLambda")
    assert fn["Properties"]["Environment"]["Variables"] == {
        "TABLE_NAME": MAIN_TABLE_ARN,
        "EXPORT_BUCKET": {"Ref": bucket_id},
        "S3_PREFIX": "exports/",
        "ANALYTICS_TABLE": {"Ref": logical_id(synth, "AWS::DynamoDB::Table")},
        "LOOKBACK_DAYS": "7",
    }


def test_aggregator_lambda_environment(synth: dict[str, Any]) -> None:
    bucket_id = export_bucket_id(synth)
    table_id = logical_id(synth, "AWS::DynamoDB::Table")
    _, fn = only(synth, "AWS::Lambda::Function", FunctionName=f"{STACK}-AggregatorLambda")
    assert fn["Properties"]["Environment"]["Variables"] == {
        "EXPORT_BUCKET": {"Ref": bucket_id},
        "ANALYTICS_TABLE": {"Ref": table_id},
        "S3_PREFIX": "exports/",
        "DISTRIBUTED_STATE_MACHINE_ARN": {"Ref": logical_id(synth, "AWS::StepFunctions::StateMachine")},
        "DISTRIBUTED_MAP_MEMORY_MB": "1769",
        "MALLOC_TOP_PAD_": str(32 << 20),
        "MALLOC_MMAP_THRESHOLD_": str(64 << 20),
        "_RJEM_MALLOC_CONF": "dirty_decay_ms:5000,muzzy_decay_ms:5000",
    }


def test_both_lambdas_run_the_same_code_asset(synth: dict[str, Any]) -> None:
    codes = [fn["Properties"]["Code"] for fn in resources(synth, "AWS::Lambda::Function").values()]
    assert codes[0] == codes[1]
    assert codes[0]["S3Key"].endswith(".zip")


@pytest.mark.parametrize("name", ["ExportLambda", "AggregatorLambda"])
def test_log_groups_named_for_the_guide_with_retention(synth: dict[str, Any], name: str) -> None:
    group_id, group = only(synth, "AWS::Logs::LogGroup", LogGroupName=f"/aws/lambda/{STACK}-{name}")
    assert group["Properties"]["RetentionInDays"] == 90
    _, fn = only(synth, "AWS::Lambda::Function", FunctionName=f"{STACK}-{name}")
    assert fn["Properties"]["LoggingConfig"] == {"LogGroup": {"Ref": group_id}}


# ---------------------------------------------------------------------------------------------
# schedules


@pytest.mark.parametrize(
    ("name", "cron"),
    [("ExportLambda", "cron(0 2 * * ? *)"), ("AggregatorLambda", "cron(30 2 * * ? *)")],
)
def test_daily_schedules_in_utc_with_incremental_input(synth: dict[str, Any], name: str, cron: str) -> None:
    fn_id = logical_id(synth, "AWS::Lambda::Function", FunctionName=f"{STACK}-{name}")
    rule_id, rule = only(synth, "AWS::Events::Rule", ScheduleExpression=cron)
    assert rule["Properties"]["State"] == "ENABLED"
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == getatt(fn_id)
    assert json.loads(target["Input"]) == {"mode": "incremental"}
    (permission,) = [
        p
        for p in resources(synth, "AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == getatt(fn_id) and p["Properties"]["SourceArn"] == getatt(rule_id)
    ]
    assert permission["Properties"]["Principal"] == "events.amazonaws.com"
    assert permission["Properties"]["SourceArn"] == getatt(rule_id)
    assert permission["Properties"]["Action"] == "lambda:InvokeFunction"


# ---------------------------------------------------------------------------------------------
# dashboard and alarm


def test_dashboard_has_a_search_widget_per_metric_by_app(synth: dict[str, Any]) -> None:
    _, dashboard = only(synth, "AWS::CloudWatch::Dashboard", DashboardName=f"{STACK}-AnalyticsDashboard")
    body = json.loads(resolve_join(dashboard["Properties"]["DashboardBody"]))
    expressions, alarms = {}, {}
    for widget in body["widgets"]:
        props = widget["properties"]
        assert props["region"] == REGION
        if "annotations" in props:  # the anomaly alarms, with their bands
            (alarm,) = props["annotations"]["alarms"]
            alarms[props["title"]] = alarm
            continue
        (line,) = props["metrics"]
        (query,) = line
        expressions[props["title"]] = query
    engagement = ("WeeklyActiveUsers", "MonthlyActiveUsers", "Stickiness")
    assert len(expressions) == 7
    for metric in (*METRICS, *engagement):
        (query,) = [q for title, q in expressions.items() if title.startswith(f"{metric} ")]
        assert query["expression"] == (
            f"SEARCH('{{BubblyClouds/Analytics,App}} MetricName=\"{metric}\"', 'Maximum', 86400)"
        )
        assert query["period"] == 86400
    assert sorted(alarms) == [
        "ActiveUsers, all apps, and its expected band",
        "GamesPlayed, all apps, and its expected band",
    ]
    # The metric names are the ones the library publishes.
    from bubbly_metrics.engagement import ENGAGEMENT_METRIC_NAMES, TOTAL_METRIC_NAMES

    assert set(engagement) == set(ENGAGEMENT_METRIC_NAMES.values())
    assert [t.split(",")[0] for t in sorted(alarms)] == sorted(TOTAL_METRIC_NAMES.values())
    for title, arn in alarms.items():
        logical = logical_id(synth, "AWS::CloudWatch::Alarm", AlarmName=f"{STACK}-{title.split(',')[0]}OutsideBand")
        assert arn == f"<{logical}.Arn>"


@pytest.mark.parametrize("metric", ["ActiveUsers", "GamesPlayed"])
def test_anomaly_alarm_on_the_all_apps_total(synth: dict[str, Any], metric: str) -> None:
    _, alarm = only(synth, "AWS::CloudWatch::Alarm", AlarmName=f"{STACK}-{metric}OutsideBand")
    props = alarm["Properties"]
    queries = {q["Id"]: q for q in props["Metrics"]}
    (band_id,) = [i for i, q in queries.items() if "Expression" in q]
    (metric_id,) = [i for i, q in queries.items() if "MetricStat" in q]
    assert queries[band_id]["Expression"] == f"ANOMALY_DETECTION_BAND({metric_id}, 3)"
    assert props["ThresholdMetricId"] == band_id and "Threshold" not in props
    stat = queries[metric_id]["MetricStat"]
    # No dimension: the total over every app, including apps that appear after deployment.
    assert stat["Metric"] == {"Namespace": "BubblyClouds/Analytics", "MetricName": metric}
    assert (stat["Stat"], stat["Period"]) == ("Maximum", 86400)
    assert props["ComparisonOperator"] == "LessThanLowerOrGreaterThanUpperThreshold"
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"]) == (1, 1)
    assert props["TreatMissingData"] == "notBreaching"
    assert "docs/operations.md" in props["AlarmDescription"]


def test_alarm_on_aggregator_errors(synth: dict[str, Any]) -> None:
    fn_id = logical_id(synth, "AWS::Lambda::Function", FunctionName=f"{STACK}-AggregatorLambda")
    _, alarm = only(synth, "AWS::CloudWatch::Alarm", AlarmName=f"{STACK}-AggregatorErrors")
    props = alarm["Properties"]
    assert props["AlarmName"] == f"{STACK}-AggregatorErrors"
    assert (props["Namespace"], props["MetricName"], props["Statistic"]) == (
        "AWS/Lambda",
        "Errors",
        "Sum",
    )
    assert props["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": fn_id}}]
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert props["Threshold"] == 1
    assert props["EvaluationPeriods"] == 1
    assert props["TreatMissingData"] == "notBreaching"


# ---------------------------------------------------------------------------------------------
# the daily pipeline: aggregate on completion, lateness (issue #14)


def event_matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge's matching for the pattern forms the stack uses (values, wildcard), on plain data."""
    import fnmatch

    for key, want in pattern.items():
        if key not in event:
            return False
        if isinstance(want, dict):
            if not isinstance(event[key], dict) or not event_matches(want, event[key]):
                return False
            continue
        ok = False
        for option in want:
            if isinstance(option, dict) and "wildcard" in option:
                ok = ok or fnmatch.fnmatchcase(event[key], option["wildcard"].replace("[", "[[]"))
            else:
                ok = ok or event[key] == option
        if not ok:
            return False
    return True


def test_bucket_sends_events_to_eventbridge_without_a_custom_resource(synth: dict[str, Any]) -> None:
    bucket = synth["Resources"][export_bucket_id(synth)]
    assert bucket["Properties"]["NotificationConfiguration"] == {
        "EventBridgeConfiguration": {"EventBridgeEnabled": True}
    }
    assert not [r for r in synth["Resources"].values() if r["Type"].startswith("Custom::")]


def test_export_completion_rule_matches_only_manifest_summaries_under_the_prefix(synth: dict[str, Any]) -> None:
    bucket_id = export_bucket_id(synth)
    fn_id = logical_id(synth, "AWS::Lambda::Function", FunctionName=f"{STACK}-AggregatorLambda")
    rule_id, rule = only(synth, "AWS::Events::Rule", Name=f"{STACK}-ExportCompleted")
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.s3"] and pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["bucket"] == {"name": [{"Ref": bucket_id}]}
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == getatt(fn_id) and "Input" not in target  # the event itself
    (permission,) = [
        p
        for p in resources(synth, "AWS::Lambda::Permission").values()
        if p["Properties"]["SourceArn"] == getatt(rule_id)
    ]
    assert permission["Properties"]["FunctionName"] == getatt(fn_id)

    concrete = {**pattern, "detail": {**pattern["detail"], "bucket": {"name": ["the-bucket"]}}}

    def event(key: str, kind: str = "Object Created", bucket: str = "the-bucket") -> dict[str, Any]:
        return {"source": "aws.s3", "detail-type": kind, "detail": {"bucket": {"name": bucket}, "object": {"key": key}}}

    summary = "exports/incremental/20250318T000000Z/AWSDynamoDB/01742257200000-293d679c/manifest-summary.json"
    assert event_matches(concrete, event(summary))
    assert event_matches(concrete, event("exports/backfill/x/AWSDynamoDB/0174-a/manifest-summary.json"))
    for other in (
        summary.replace("manifest-summary.json", "manifest-files.json"),
        summary.replace("manifest-summary.json", "manifest-summary.md5"),
        summary.replace("manifest-summary.json", "_started"),
        "exports/incremental/20250318T000000Z/AWSDynamoDB/data/abc.json.gz",
        "exports/backfill/20250318T000000Z/backfill-request.json",
        "elsewhere/AWSDynamoDB/0174-a/manifest-summary.json",
        "exports/x/AWSDynamoDB/0174-a/manifest-summary.json.bak",
    ):
        assert not event_matches(concrete, event(other)), other
    assert not event_matches(concrete, event(summary, kind="Object Deleted"))
    assert not event_matches(concrete, event(summary, bucket="another-bucket"))


def test_alarm_on_a_failed_distributed_backfill(synth: dict[str, Any]) -> None:
    machine = logical_id(synth, "AWS::StepFunctions::StateMachine")
    _, alarm = only(synth, "AWS::CloudWatch::Alarm", AlarmName=f"{STACK}-DistributedBackfillFailed")
    props = alarm["Properties"]
    queries = {q["Id"]: q for q in props["Metrics"]}
    assert queries.pop("expr_1")["Expression"] == "failed + timedOut"
    assert {q["Id"]: q["MetricStat"]["Metric"]["MetricName"] for q in queries.values()} == {
        "failed": "ExecutionsFailed",
        "timedOut": "ExecutionsTimedOut",
    }
    for query in queries.values():
        stat = query["MetricStat"]
        assert stat["Metric"]["Namespace"] == "AWS/States" and stat["Stat"] == "Sum" and stat["Period"] == 300
        assert stat["Metric"]["Dimensions"] == [{"Name": "StateMachineArn", "Value": {"Ref": machine}}]
    assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert props["TreatMissingData"] == "notBreaching"


def test_lateness_check_and_alarm(synth: dict[str, Any]) -> None:
    fn_id = logical_id(synth, "AWS::Lambda::Function", FunctionName=f"{STACK}-ExportLambda")
    _, rule = only(synth, "AWS::Events::Rule", ScheduleExpression="cron(0 6 * * ? *)")
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == getatt(fn_id) and json.loads(target["Input"]) == {"check": "lateness"}
    _, alarm = only(synth, "AWS::CloudWatch::Alarm", AlarmName=f"{STACK}-DaysNotAggregated")
    props = alarm["Properties"]
    assert (props["Namespace"], props["MetricName"], props["Statistic"]) == (
        "BubblyClouds/Analytics",
        "DaysNotAggregated",
        "Maximum",
    )
    assert "Dimensions" not in props and props["Period"] == 3600
    assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert props["TreatMissingData"] == "notBreaching"
    # The metric name is the one the library publishes.
    from bubbly_metrics.gaps import LATENESS_METRIC, NAMESPACE

    assert (props["Namespace"], props["MetricName"]) == (NAMESPACE, LATENESS_METRIC)


# ---------------------------------------------------------------------------------------------
# IAM: least privilege


def test_no_wildcard_actions_anywhere(synth: dict[str, Any]) -> None:
    machine_role = only(synth, "AWS::StepFunctions::StateMachine")[1]["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    for role_id, statements in statements_by_role(synth).items():
        for st in statements:
            assert st["Effect"] == "Allow", role_id
            for action in as_list(st["Action"]):
                assert "*" not in action, f"{role_id} allows {action}"
            if "*" in as_list(st["Resource"]):
                # The only resource wildcards: PutMetricData and log delivery have no
                # resource-level permissions.
                if role_id == machine_role:
                    assert set(as_list(st["Action"])) == LOG_DELIVERY, st
                    continue
                assert as_list(st["Action"]) == ["cloudwatch:PutMetricData"], st
                assert st["Condition"] == {"StringEquals": {"cloudwatch:namespace": "BubblyClouds/Analytics"}}


def test_roles_trust_lambda_only_and_carry_no_managed_policies(synth: dict[str, Any]) -> None:
    machine_role = only(synth, "AWS::StepFunctions::StateMachine")[1]["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    for role_id, role in resources(synth, "AWS::IAM::Role").items():
        (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        if role_id == machine_role:  # the distributed backfill's state machine (tests/test_distributed.py)
            assert statement["Principal"] == {"Service": "states.amazonaws.com"}
            continue
        assert statement == {
            "Action": "sts:AssumeRole",
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
        }
        assert "ManagedPolicyArns" not in role["Properties"]  # no AWSLambdaBasicExecutionRole


def test_export_role_exports_main_table_and_writes_bucket_only(synth: dict[str, Any]) -> None:
    bucket_id = export_bucket_id(synth)
    logs_id = logical_id(synth, "AWS::Logs::LogGroup", LogGroupName=f"/aws/lambda/{STACK}-ExportLambda")
    allowed = actions_on(statements_by_role(synth)[role_of(synth, f"{STACK}-ExportLambda")])
    assert allowed == {
        "dynamodb:ExportTableToPointInTime": [MAIN_TABLE_ARN],
        # The ledger (a partition of the Analytics Table), read by the daily run to find gaps.
        "dynamodb:Query": [getatt(logical_id(synth, "AWS::DynamoDB::Table"))],
        # The lateness metric, in the package's namespace only (test_no_wildcard_actions_anywhere).
        "cloudwatch:PutMetricData": ["*"],
        # Under the export prefix only: it cannot overwrite a run's plan or anything else.
        "s3:PutObject": [under(bucket_id, "exports/*")],
        "s3:AbortMultipartUpload": [under(bucket_id, "exports/*")],
        # AWS lists PutObjectAcl among the export's S3 permissions; ACLs are disabled on the
        # bucket (BucketOwnerEnforced), so it adds nothing.
        "s3:PutObjectAcl": [under(bucket_id, "exports/*")],
        "logs:CreateLogStream": [getatt(logs_id)],
        "logs:PutLogEvents": [getatt(logs_id)],
    }


def test_aggregator_role_reads_bucket_writes_table_publishes_namespace(
    synth: dict[str, Any],
) -> None:
    bucket_id = export_bucket_id(synth)
    table_id = logical_id(synth, "AWS::DynamoDB::Table")
    logs_id = logical_id(synth, "AWS::Logs::LogGroup", LogGroupName=f"/aws/lambda/{STACK}-AggregatorLambda")
    statements = statements_by_role(synth)[role_of(synth, f"{STACK}-AggregatorLambda")]
    allowed = actions_on(statements)
    table_actions = {a for a in allowed if a.startswith("dynamodb:")}
    assert "dynamodb:BatchWriteItem" in table_actions
    # A writer that reads the day it replaces (GetItem of the ledger entry, Query of its items);
    # never Scan, UpdateTable, DeleteTable, ...
    assert table_actions == {
        "dynamodb:BatchWriteItem",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "dynamodb:GetItem",
        "dynamodb:Query",
    }
    for action in table_actions:
        assert allowed[action] == [getatt(table_id)], action
    assert allowed["s3:ListBucket"] == [getatt(bucket_id)]
    # The exports, and the prefix's own key (s3fs probes it: test_aggregator_s3_permissions_...).
    assert allowed["s3:GetObject"] == [under(bucket_id, "exports*")]
    assert allowed["cloudwatch:PutMetricData"] == ["*"]
    assert allowed["logs:CreateLogStream"] == allowed["logs:PutLogEvents"] == [getatt(logs_id)]
    # The distributed backfill: it plans runs and starts them (tests/test_distributed.py).
    assert allowed["s3:PutObject"] == [{"Fn::Join": ["", [getatt(bucket_id), "/distributed-runs/*"]]}]
    assert allowed["states:StartExecution"] == [{"Ref": logical_id(synth, "AWS::StepFunctions::StateMachine")}]
    assert set(allowed) == table_actions | {
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "states:StartExecution",
        "states:DescribeExecution",
        "cloudwatch:PutMetricData",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    (metrics,) = [st for st in statements if "cloudwatch:PutMetricData" in as_list(st["Action"])]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "BubblyClouds/Analytics"}}


def test_main_table_arn_appears_only_in_export_lambda(synth: dict[str, Any]) -> None:
    holders = [k for k, v in synth["Resources"].items() if MAIN_TABLE_ARN in json.dumps(v)]
    export_id = logical_id(synth, "AWS::Lambda::Function", FunctionName=f"{STACK}-ExportLambda")
    export_policy = [
        k
        for k, v in resources(synth, "AWS::IAM::Policy").items()
        if v["Properties"]["Roles"] == [{"Ref": role_of(synth, f"{STACK}-ExportLambda")}]
    ]
    assert sorted(holders) == sorted([export_id, *export_policy])


# ---------------------------------------------------------------------------------------------
# IAM, exercised: the aggregator's S3 statements, as synthesised, attached to a moto IAM user
# with IAM enforcement on, and the library reading an export with that user's credentials.
# (moto evaluates S3 requests against the bucket/object ARN; for DynamoDB and CloudWatch it only
# checks Resource "*", so those statements are held to the template assertions above.)


def _render(value: Any, names: dict[str, str]) -> Any:
    """Replace ``GetAtt <bucket>.Arn`` by the bucket's ARN and flatten ``Fn::Join``."""
    if isinstance(value, list):
        return [_render(v, names) for v in value]
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return f"arn:aws:s3:::{names[value['Fn::GetAtt'][0]]}"
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return str(sep).join(_render(p, names) for p in parts)
    return value


def _s3_statements(synth: dict[str, Any], bucket: str) -> list[dict[str, Any]]:
    names = {export_bucket_id(synth): bucket}
    statements = statements_by_role(synth)[role_of(synth, f"{STACK}-AggregatorLambda")]
    return [
        {**st, "Resource": _render(st["Resource"], names)}
        for st in statements
        if all(a.startswith("s3:") for a in as_list(st["Action"]))
    ]


#: The IAM action real S3 checks for each S3 operation the library calls (AWS's "Actions,
#: resources, and condition keys for Amazon S3" and each operation's API page: "To use HEAD,
#: you must have the s3:GetObject permission"; ListObjectsV2 and HeadBucket need
#: s3:ListBucket).  ``s3:HeadObject``/``s3:ListObjectsV2`` are not IAM actions at all: IAM's
#: policy editor rejects them.
REAL_S3_ACTION = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
}


def _as_moto_checks(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same grants, spelt so that moto enforces what real S3 enforces.

    moto up to 5.2.5 mapped each S3 request to its IAM action as real S3 does.  5.2.6 asks IAM
    for ``s3:<OperationName>`` instead (its routing rewrite dropped the S3 action map), so the
    synthesised policy, which real S3 accepts for HeadObject and ListObjectsV2, is refused
    there.  Each statement here also names the operations its real actions authorise, and no
    other: removing ``s3:ListBucket`` still removes every listing, as it does on AWS.
    """
    spelt = []
    for st in statements:
        actions = as_list(st["Action"])
        aliases = [f"s3:{op}" for op, action in REAL_S3_ACTION.items() if action in actions]
        spelt.append({**st, "Action": sorted({*actions, *aliases})})
    return spelt


@pytest.mark.parametrize(
    "variant",
    [
        "as synthesised",
        # Why GetObject is on exports* and not exports/*: s3fs probes the location with
        # HeadObject on the key "exports", which must answer 404, not 403.
        "GetObject on exports/* only",
        "no ListBucket",
        # And nothing outside the prefix is readable (the same export, copied elsewhere).
        "the export elsewhere in the bucket",
    ],
)
def test_aggregator_s3_permissions_suffice_and_are_needed(synth: dict[str, Any], aws: str, variant: str) -> None:
    import boto3
    from moto.core.authorization import enable_iam_authentication

    import bubbly_metrics as bm
    from tests.conftest import upload_tree

    bucket = "bubbly-exports"
    prefix = "elsewhere/" if variant == "the export elsewhere in the bucket" else "exports/"
    upload_tree(Path(bm.sample_export_location()), bucket, aws, prefix=prefix)
    statements = _s3_statements(synth, bucket)
    if variant == "GetObject on exports/* only":
        for st in statements:
            if "s3:GetObject" in as_list(st["Action"]):
                st["Resource"] = f"arn:aws:s3:::{bucket}/exports/*"
    elif variant == "no ListBucket":
        statements = [st for st in statements if "s3:ListBucket" not in as_list(st["Action"])]
    iam = boto3.client("iam", endpoint_url=aws, region_name=REGION)
    iam.create_user(UserName="aggregator")
    iam.put_user_policy(
        UserName="aggregator",
        PolicyName="s3",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": _as_moto_checks(statements)}),
    )
    key = iam.create_access_key(UserName="aggregator")["AccessKey"]
    options = {
        "endpoint_url": aws,
        "key": key["AccessKeyId"],
        "secret": key["SecretAccessKey"],
        "client_kwargs": {"region_name": REGION},
    }
    location = f"s3://{bucket}/{prefix}"
    with enable_iam_authentication():
        if variant == "as synthesised":
            result = bm.aggregate(
                location,
                mode="backfill",
                start="2025-01-17",
                now=bm.SAMPLE_NOW,
                storage_options=options,
            )
            assert result.items_read > 0
        else:
            with pytest.raises(bm.BubblyMetricsError, match="(?i)access denied|forbidden"):
                bm.aggregate(
                    location,
                    mode="backfill",
                    start="2025-01-17",
                    now=bm.SAMPLE_NOW,
                    storage_options=options,
                )


# ---------------------------------------------------------------------------------------------
# cdk-nag: AwsSolutions on the synthesised stack, every remaining finding acknowledged with why
# (deploy/nag.py).  Before issue #25 it reported 22 findings.


def _findings(stack: Any) -> list[tuple[str, str]]:
    from cdk_nag import AwsSolutionsChecks

    report = AwsSolutionsChecks().validate_scope(stack)
    found = [(v.rule_name, str(r.construct_path)) for v in report.violations for r in v.violating_resources]
    assert report.success == (not found)
    return found


def _acknowledged(stack: Any) -> dict[tuple[str, str], str]:
    """(rule, construct path) -> reason, of every acknowledgment in the stack."""
    out = {}
    for construct in stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == "aws:cdk:acknowledged-rules":
                for rule, reason in entry.data.items():
                    out[(rule.removeprefix("Annotation::"), construct.node.path)] = reason
    return out


def test_cdk_nag_aws_solutions_finds_nothing_unacknowledged(synthesised: tuple[Any, Path]) -> None:
    assert _findings(synthesised[0].node.find_child(STACK)) == []


def test_every_acknowledgment_has_a_reason_and_a_finding(synthesised: tuple[Any, Path]) -> None:
    """Each acknowledgment is needed (the stack built without them has its finding) and says why."""
    import aws_cdk as core

    import deploy.config
    import deploy.nag
    import deploy.stack

    acknowledged = _acknowledged(synthesised[0].node.find_child(STACK))
    assert acknowledged and all(len(reason) > 60 for reason in acknowledged.values())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deploy.nag, "acknowledge", lambda *args: None)
        patch.setattr(deploy.stack, "acknowledge", lambda *args: None)
        app = core.App(context=_context())
        bare = deploy.stack.AnalyticsStack(app, deploy.config.StackConfig.from_context(app.node))
        findings = _findings(bare)
    for rule, path in acknowledged:
        assert any(r == rule and p.startswith(path) for r, p in findings), f"{rule} on {path} acknowledges nothing"
    for rule, path in findings:
        assert any(r == rule and path.startswith(p) for r, p in acknowledged), (rule, path)
    # What stays: object names chosen by DynamoDB or per run, PutMetricData's Resource "*",
    # Step Functions' own log delivery and child executions, the bundle's runtime, no X-Ray.
    # No finding on the export role's writes to the
    # whole bucket, the state machine reading the whole bucket, access logs or
    # execution logs: those were fixed, not acknowledged.
    rules = {rule.split("[")[0] for rule, _ in findings}
    assert rules == {"AwsSolutions-IAM5", "AwsSolutions-L1", "AwsSolutions-SF2"}
    assert not any(f"{export_bucket_id_from(bare)}.Arn>/*]" in rule for rule, _ in findings)


def test_cdk_synth_can_run_the_checks_itself(cdk: Any, tmp_path: Path) -> None:
    """``cdk synth -c nag=true`` runs the same pack as a validation plugin: it passes, and a finding stops it."""
    import deploy.nag
    import deploy.stack
    from deploy.app import build_app

    build_app(context={**_context(), "nag": "true"}, outdir=str(tmp_path / "acknowledged"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deploy.nag, "acknowledge", lambda *args: None)
        patch.setattr(deploy.stack, "acknowledge", lambda *args: None)
        with pytest.raises(RuntimeError, match="ValidationFailed"):
            build_app(context={**_context(), "nag": "true"}, outdir=str(tmp_path))
    report = json.loads((tmp_path / "validation-report.json").read_text())
    (nag,) = [r for r in report["pluginReports"] if r["pluginName"] == "AwsSolutions"]
    assert nag["conclusion"] == "failure"


def export_bucket_id_from(stack: Any) -> str:
    bucket = stack.node.find_child("ExportBucket").node.default_child
    return str(stack.resolve(bucket.logical_id))


def test_export_bucket_logs_access_to_its_own_bucket(synth: dict[str, Any]) -> None:
    logs = access_log_bucket_id(synth)
    bucket = synth["Resources"][export_bucket_id(synth)]["Properties"]
    assert bucket["LoggingConfiguration"] == {"DestinationBucketName": {"Ref": logs}, "LogFilePrefix": "export-bucket/"}
    props = synth["Resources"][logs]["Properties"]
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == 90 and rule["Status"] == "Enabled"
    (policy,) = [
        p for p in resources(synth, "AWS::S3::BucketPolicy").values() if p["Properties"]["Bucket"] == {"Ref": logs}
    ]
    writers = [st for st in policy["Properties"]["PolicyDocument"]["Statement"] if st["Effect"] == "Allow"]
    (writer,) = writers  # S3's logging service, for the export bucket of this account only
    assert writer["Principal"] == {"Service": "logging.s3.amazonaws.com"} and writer["Action"] == "s3:PutObject"
    assert writer["Condition"]["ArnLike"]["aws:SourceArn"] == getatt(export_bucket_id(synth))
    assert writer["Condition"]["StringEquals"]["aws:SourceAccount"] == ACCOUNT


def test_the_aggregator_has_reserved_concurrency(synth: dict[str, Any]) -> None:
    _, fn = only(synth, "AWS::Lambda::Function", FunctionName=f"{STACK}-AggregatorLambda")
    assert fn["Properties"]["ReservedConcurrentExecutions"] == 5


def test_the_state_machine_logs_every_execution_event(synth: dict[str, Any]) -> None:
    _, machine = only(synth, "AWS::StepFunctions::StateMachine")
    group_id, group = only(
        synth, "AWS::Logs::LogGroup", LogGroupName=f"/aws/vendedlogs/states/{STACK}-DistributedBackfill"
    )
    assert group["Properties"]["RetentionInDays"] == 90
    assert machine["Properties"]["LoggingConfiguration"] == {
        "Destinations": [{"CloudWatchLogsLogGroup": {"LogGroupArn": getatt(group_id)}}],
        "IncludeExecutionData": False,
        "Level": "ALL",
    }


# ---------------------------------------------------------------------------------------------
# cfn-lint


# W3005 ("dependency already enforced by a GetAtt"): the CDK always adds an explicit DependsOn
# from a Function to its role *and* the role's default policy.  The policy dependency matters
# (the function must not run before it may log); the role one is redundant, harmless, and not
# ours to remove.  Nothing else is ignored.
CFN_LINT_IGNORED = ["W3005"]


def test_template_passes_cfn_lint(template_file: Path) -> None:
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(template_file, config=ManualArgs(regions=[REGION], ignore_checks=CFN_LINT_IGNORED))
    assert [f"{m.rule.id} {m.message} at {'/'.join(map(str, m.path))}" for m in matches] == []


def test_cfn_lint_would_catch_a_broken_template(template_file: Path, tmp_path: Path) -> None:
    """Guard against a lint call that silently checks nothing."""
    from cfnlint.api import ManualArgs, lint_file

    broken = json.loads(template_file.read_text())
    fn = next(v for v in broken["Resources"].values() if v["Type"] == "AWS::Lambda::Function")
    fn["Properties"]["Runtime"] = "python2.7"  # deprecated runtime: an error in cfn-lint
    fn["Properties"]["MemorySize"] = 20000  # above Lambda's maximum
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    matches = lint_file(path, config=ManualArgs(regions=[REGION], ignore_checks=CFN_LINT_IGNORED))
    assert matches


# ---------------------------------------------------------------------------------------------
# configuration (constructs only, no second synthesis)


class FakeNode:
    def __init__(self, context: dict[str, Any]) -> None:
        self.context = context

    def try_get_context(self, key: str) -> Any:
        return self.context.get(key)


@pytest.fixture(scope="module")
def stack_module(cdk: Any) -> Any:
    from deploy import stack

    return stack


@pytest.fixture(scope="module")
def config_module(cdk: Any) -> Any:
    from deploy import config

    return config


def test_config_main_table_is_required(config_module: Any) -> None:
    with pytest.raises(config_module.ConfigError, match="context mainTable is required"):
        config_module.StackConfig.from_context(FakeNode({"region": REGION}))


def test_config_from_table_arn_takes_region_and_account(config_module: Any) -> None:
    config = config_module.StackConfig.from_context(FakeNode({"mainTable": MAIN_TABLE_ARN}))
    assert (config.region, config.account) == (REGION, ACCOUNT)


def test_config_rejects_an_arn_in_another_region(config_module: Any) -> None:
    with pytest.raises(
        config_module.ConfigError,
        match="mainTable is in eu-west-2 but the stack deploys to us-east-1",
    ):
        config_module.StackConfig.from_context(FakeNode({"mainTable": MAIN_TABLE_ARN, "region": "us-east-1"}))


def test_config_needs_a_region_for_a_table_name(config_module: Any) -> None:
    with pytest.raises(config_module.ConfigError, match="no region"):
        config_module.StackConfig.from_context(FakeNode({"mainTable": "Main"}))


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"stackName": "1bad"}, "stackName must start with a letter"),
        ({"stackName": "x" * 48}, "at most 47 characters"),
        (
            {"mainTable": "no spaces allowed"},
            "mainTable must be a DynamoDB table name or table ARN",
        ),
        ({"aggregatorMemoryMb": "lots"}, "aggregatorMemoryMb must be an integer"),
        ({"aggregatorMemoryMb": "20000"}, "aggregatorMemoryMb must be between 128 and 10240"),
        ({"aggregatorTimeoutSeconds": "901"}, "aggregatorTimeoutSeconds must be between 1 and 900"),
        ({"logRetentionDays": "10"}, "logRetentionDays must be one of"),
        ({"s3Prefix": "exports"}, "s3Prefix must be '' or end with '/'"),
        ({"placeholderCode": "maybe"}, "placeholderCode must be true or false"),
        ({"alarmTopicArn": "my-topic"}, "alarmTopicArn must be an SNS topic ARN"),
        ({"lookbackDays": "36"}, "lookbackDays must be between 1 and 35"),
        ({"latenessHour": "2"}, "latenessHour must be between 3 and 23"),
        ({"aggregatorReservedConcurrency": "101"}, "aggregatorReservedConcurrency must be between 0 and 100"),
        ({"backfillFloorDate": "0205-01-17"}, "backfillFloorDate must be a date YYYY-MM-DD from 2012 to 2100"),
        ({"backfillFloorDate": "2025-1-17"}, "backfillFloorDate must be a date"),
        ({"backfillMaxDays": "0"}, "backfillMaxDays must be between 1 and 36500"),
    ],
)
def test_config_errors_name_the_context_key(config_module: Any, context: dict[str, Any], message: str) -> None:
    with pytest.raises(config_module.ConfigError, match=message):
        config_module.StackConfig.from_context(FakeNode({"mainTable": "Main", "region": REGION, **context}))


def _stack(stack_module: Any, **overrides: Any) -> Any:
    """A stack built (not synthesised) in a fresh App: constructs are cheap, synthesis is not."""
    import aws_cdk as cdk

    from deploy.config import StackConfig

    app = cdk.App(context=cdk_json_context())
    config = StackConfig(
        **{
            "main_table": "Main",
            "region": REGION,
            "account": ACCOUNT,
            "placeholder_code": True,
            **overrides,
        }
    )
    return stack_module.AnalyticsStack(app, config)


def test_memory_and_timeout_come_from_context(stack_module: Any, config_module: Any) -> None:
    config = config_module.StackConfig.from_context(
        FakeNode(
            {
                "mainTable": "Main",
                "region": REGION,
                "aggregatorMemoryMb": "4096",
                "aggregatorTimeoutSeconds": "600",
                "placeholderCode": "true",
            }
        )
    )
    import aws_cdk

    stack = stack_module.AnalyticsStack(aws_cdk.App(context=cdk_json_context()), config)
    cfn = stack.aggregator_fn.node.default_child
    assert (cfn.memory_size, cfn.timeout) == (4096, 600)


def test_date_bounds_and_reserved_concurrency_come_from_context(stack_module: Any, config_module: Any) -> None:
    context = {"mainTable": "Main", "region": REGION, "placeholderCode": "true"}
    bounds = {"backfillFloorDate": "2024-06-01", "backfillMaxDays": "1000", "aggregatorReservedConcurrency": "0"}
    config = config_module.StackConfig.from_context(FakeNode({**context, **bounds}))
    import aws_cdk

    stack = stack_module.AnalyticsStack(aws_cdk.App(context=cdk_json_context()), config)
    template = aws_cdk.assertions.Template.from_stack(stack).to_json()
    functions = {r["Properties"]["FunctionName"]: r["Properties"] for r in template["Resources"].values()
                 if r["Type"] == "AWS::Lambda::Function"}  # fmt: skip
    for name in ("BubblyAnalytics-ExportLambda", "BubblyAnalytics-AggregatorLambda"):
        variables = functions[name]["Environment"]["Variables"]
        assert (variables["BACKFILL_FLOOR_DATE"], variables["BACKFILL_MAX_DAYS"]) == ("2024-06-01", "1000")
    # 0: nothing reserved (an account whose quota leaves nothing to reserve can still deploy).
    assert "ReservedConcurrentExecutions" not in functions["BubblyAnalytics-AggregatorLambda"]


def test_main_table_by_name_becomes_an_arn_in_the_stack_region(stack_module: Any) -> None:
    stack = _stack(stack_module, stack_name="Other")
    assert stack.resolve(stack.main_table_arn) == f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/Main"


def test_missing_bundle_is_a_clear_error(stack_module: Any, config_module: Any, tmp_path: Path) -> None:
    with pytest.raises(config_module.ConfigError, match=r"Lambda bundle not found at .*build_bundle\.py"):
        _stack(stack_module, placeholder_code=False, bundle_dir=tmp_path / "nope")


def test_a_bundle_not_built_for_lambda_is_refused(stack_module: Any, config_module: Any, tmp_path: Path) -> None:
    from deploy.build_bundle import MANIFEST_NAME

    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"target": "host", "arch": "x86_64", "python_version": None}))
    with pytest.raises(config_module.ConfigError, match="not for Lambda"):
        _stack(stack_module, placeholder_code=False, bundle_dir=tmp_path)


def test_cdk_json_runs_the_app_with_telemetry_off() -> None:
    cdk_json = json.loads((DEPLOY / "cdk.json").read_text())
    assert cdk_json["app"] == "python3 app.py"
    assert cdk_json["versionReporting"] is False
    assert cdk_json["context"]["cli-telemetry"] is False
    assert cdk_json["context"]["@aws-cdk/core:enableAdditionalMetadataCollection"] is False
    assert "mainTable" not in cdk_json["context"]  # every deployment names its own table


# ---------------------------------------------------------------------------------------------
# the bundle builder's checks, offline (the real build is in test_bundle.py)


@pytest.fixture
def builder() -> Iterator[Any]:
    from deploy import build_bundle

    yield build_bundle


def _fake_elf(path: Path, machine: int) -> None:
    header = bytearray(20)
    header[:4] = b"\x7fELF"
    header[4], header[5] = 2, 1  # 64-bit, little endian
    header[18:20] = machine.to_bytes(2, "little")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(header) + b"\0" * 100)


def test_builder_rejects_native_code_for_another_arch(builder: Any, tmp_path: Path) -> None:
    _fake_elf(tmp_path / "pkg" / "ok.so", 183)
    builder.check_native_arch(tmp_path, "aarch64")
    _fake_elf(tmp_path / "pkg" / "libs" / "wrong.so.1", 62)
    with pytest.raises(builder.BundleError, match=r"not built for aarch64: pkg/libs/wrong\.so\.1"):
        builder.check_native_arch(tmp_path, "aarch64")


def test_builder_size_budget(builder: Any, tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(b"\0" * (2 * builder.MIB))
    assert builder.check_size(tmp_path, max_mib=3) == 2 * builder.MIB
    with pytest.raises(builder.BundleError, match=r"2\.0 MiB unzipped, over the 1 MiB budget"):
        builder.check_size(tmp_path, max_mib=1)
    with pytest.raises(ValueError, match="above Lambda's limit"):
        builder.check_size(tmp_path, max_mib=251)
    assert builder.DEFAULT_MAX_MIB * builder.MIB < builder.LAMBDA_UNZIPPED_LIMIT


def test_builder_compiles_bytecode_named_for_lambda_and_the_same_every_time(builder: Any, tmp_path: Path) -> None:
    for tree in ("a", "b"):
        (tmp_path / tree / "pkg").mkdir(parents=True)
        (tmp_path / tree / "pkg" / "mod.py").write_text("def f():\n    return {'x', 'y', 'z'}\n")
        (tmp_path / tree / "pkg" / "template.py").write_text("def f(:\n")  # not Python: skipped, with a warning
        assert builder.compile_bytecode(tmp_path / tree, sys.executable) == sys.implementation.cache_tag
    tag = sys.implementation.cache_tag
    pyc = [(tmp_path / tree / "pkg" / "__pycache__" / f"mod.{tag}.pyc").read_bytes() for tree in ("a", "b")]
    assert pyc[0] == pyc[1]  # built in two folders, the same bytes (the bundle's digest depends on it)
    assert int.from_bytes(pyc[0][4:8], "little") == 0b01  # unchecked-hash: no source times compared
    code = marshal.loads(pyc[0][16:])
    assert code.co_filename == "/var/task/pkg/mod.py"
    assert not (tmp_path / "a" / "pkg" / "__pycache__" / f"template.{tag}.pyc").exists()


def test_builder_finds_an_interpreter_of_the_wanted_version_or_none(builder: Any) -> None:
    this = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert builder.find_python(this) == sys.executable
    assert builder.find_python("2.1") is None
    assert builder.find_python(this, preferred="/nonexistent/python") == sys.executable


def test_builder_strips_what_lambda_never_loads(builder: Any, tmp_path: Path) -> None:
    files = {
        "bin/jp.py": "#!/build/host/python\n",
        "fsspec/__init__.py": "",
        "fsspec/tests/test_x.py": "",
        "polars/__init__.pyi": "",
        "wrapt-stubs/__init__.pyi": "",
        "six.py": "",
        "six/__pycache__/six.cpython-311.pyc": "",
        "bubbly_metrics-0.1.0.dist-info/direct_url.json": '{"url": "file:///work/main"}',
        "bubbly_metrics-0.1.0.dist-info/METADATA": "Name: bubbly-metrics\nVersion: 0.1.0\n\n",
        "bubbly_metrics-0.1.0.dist-info/RECORD": (
            "bubbly_metrics-0.1.0.dist-info/direct_url.json,sha256=x,30\n"
            "bubbly_metrics-0.1.0.dist-info/METADATA,sha256=y,40\n"
            "bubbly_metrics-0.1.0.dist-info/RECORD,,\n"
            "../../bin/bubbly-metrics,sha256=z,10\n"
        ),
        "botocore/__init__.py": "",
        "boto3/__init__.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    removed = builder.strip_bundle(tmp_path)
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == [
        "boto3/__init__.py",
        "botocore/__init__.py",
        "bubbly_metrics-0.1.0.dist-info/METADATA",
        "bubbly_metrics-0.1.0.dist-info/RECORD",
        "fsspec/__init__.py",
        "six.py",
    ]
    assert set(removed) == {
        "bin/ (console scripts)",
        "tests directories",
        "type stubs (*.pyi, *-stubs)",
        "__pycache__",
        "direct_url.json (build path)",
    }
    assert (tmp_path / "bubbly_metrics-0.1.0.dist-info/RECORD").read_text() == (
        "bubbly_metrics-0.1.0.dist-info/METADATA,sha256=y,40\nbubbly_metrics-0.1.0.dist-info/RECORD,,\n"
    )
    assert builder.installed_packages(tmp_path) == {"bubbly-metrics": "0.1.0"}


def test_builder_will_not_wipe_a_folder_it_did_not_build(builder: Any, tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(builder.BundleError, match="refusing to wipe"):
        builder._prepare_out(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_builder_digest_depends_on_content_not_on_the_manifest(builder: Any, tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    first = builder.content_digest(tmp_path)
    (tmp_path / builder.MANIFEST_NAME).write_text("{}")
    assert builder.content_digest(tmp_path) == first
    (tmp_path / "a.py").write_text("x = 2\n")
    assert builder.content_digest(tmp_path) != first
