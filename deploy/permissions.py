"""What the stack's functions may do, where the stack and the distributed backfill share it.

The Analytics Table's writer actions (the Aggregator and the Reduce), the read scope of the
exports, the one way to allow ``cloudwatch:PutMetricData``, and the reasons for the cdk-nag
findings these keep (``deploy/nag.py``).
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3

from bubbly_metrics._aws import NAMESPACE as METRICS_NAMESPACE  # the one definition (no Polars loaded)

# What the Aggregator and the Reduce do to the Analytics Table: GetItem reads a day's ledger
# entry (consistently) before its flip, the rest as below.
TABLE_WRITER_ACTIONS = (
    "dynamodb:BatchWriteItem",
    "dynamodb:PutItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:Query",
)

# Reasons for the cdk-nag findings the stack keeps (deploy/nag.py).
PUT_METRIC_DATA_REASON = (
    "cloudwatch:PutMetricData has no resource-level permissions (Resource must be '*'); the statement "
    "is scoped by its cloudwatch:namespace condition to BubblyClouds/Analytics."
)
EXPORT_READS_REASON = (
    "Reads exports, whose object names DynamoDB chooses, under the export prefix only; the prefix's "
    "own key is included because s3fs probes a location with HeadObject on it and needs a 404."
)
RUNS_REASON = (
    "A distributed run's objects are named per run (distributed-runs/<execution>/...): writes and "
    "reads are scoped to the runs prefix."
)


def exports_read_arn(bucket: s3.IBucket, prefix: str) -> str:
    """The objects a reader of exports may get: everything under the prefix, and its own key."""
    return bucket.arn_for_objects(f"{prefix.rstrip('/')}*")


def publish_metrics(sid: str | None = None) -> iam.PolicyStatement:
    """``cloudwatch:PutMetricData`` in the stack's namespace only.

    PutMetricData has no resource-level permissions (Resource must be "*"); the namespace
    condition is how it is scoped.  Acknowledge the finding with ``PUT_METRIC_DATA_REASON``.
    """
    return iam.PolicyStatement(
        sid=sid,
        actions=["cloudwatch:PutMetricData"],
        resources=["*"],
        conditions={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
    )
