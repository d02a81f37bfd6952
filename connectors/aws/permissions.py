"""Every AWS API call the connector makes, and the IAM permission it needs: the source of the read policy.

`CALLS` maps (botocore service name, operation name) to the IAM action. `clients.Clients` refuses at run time
any call not in this table (a before-call hook raises `UndeclaredCall`), so the policy printed by
`spendwatch iam-policy aws` can never fall behind the code. A new call is one line here.

All of them are read-only. `sts:AssumeRole` is needed by the identity spendwatch runs as (on the read role's
ARN in each account); the rest by the read role. One policy covering both is printed, because most users run
spendwatch as a role in the management or a security account that also holds the read role.
"""

from __future__ import annotations

import json
from typing import Any

CALLS: dict[tuple[str, str], str] = {
    ("sts", "AssumeRole"): "sts:AssumeRole",
    ("organizations", "ListAccounts"): "organizations:ListAccounts",
    ("ec2", "DescribeRegions"): "ec2:DescribeRegions",
    ("ec2", "DescribeInstances"): "ec2:DescribeInstances",
    ("ec2", "DescribeInstanceTypes"): "ec2:DescribeInstanceTypes",
    ("ec2", "DescribeFlowLogs"): "ec2:DescribeFlowLogs",
    ("s3", "ListObjectsV2"): "s3:ListBucket",  # the IAM action of ListObjectsV2 is ListBucket
    ("s3", "GetObject"): "s3:GetObject",
    ("logs", "FilterLogEvents"): "logs:FilterLogEvents",
    ("cloudwatch", "ListMetrics"): "cloudwatch:ListMetrics",
    ("cloudwatch", "GetMetricData"): "cloudwatch:GetMetricData",
    ("ce", "GetCostAndUsage"): "ce:GetCostAndUsage",
}

# With [aws.athena] (flows reduced in Athena), the identity spendwatch runs as also makes these calls. They are
# kept out of CALLS and of the read policy: StartQueryExecution writes results to S3, so they are not read-only,
# and Athena needs more than the calls themselves (ATHENA_IMPLIED). `athena_policy()` is the extra policy.
ATHENA_CALLS: dict[tuple[str, str], str] = {
    ("athena", "StartQueryExecution"): "athena:StartQueryExecution",
    ("athena", "GetQueryExecution"): "athena:GetQueryExecution",
    ("athena", "GetQueryResults"): "athena:GetQueryResults",
    ("athena", "StopQueryExecution"): "athena:StopQueryExecution",
}
# What Athena does with the caller's permissions while it runs the query: reads the table's definition from
# Glue and its files from S3, and writes the results to the output location.
ATHENA_IMPLIED = ("glue:GetDatabase", "glue:GetTable", "glue:GetPartitions", "s3:GetBucketLocation",
                  "s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:AbortMultipartUpload")


class UndeclaredCall(RuntimeError):
    """The connector made an AWS call that `CALLS` does not declare: a programming error, never a gap."""


def permission(service: str, operation: str) -> str:
    try:
        return CALLS[(service, operation)] if (service, operation) in CALLS else ATHENA_CALLS[(service, operation)]
    except KeyError:
        raise UndeclaredCall(f"{service}.{operation} is not declared in connectors/aws/permissions.py") from None


def declared() -> list[str]:
    """The IAM actions the connector may use, sorted, each once."""
    return sorted(set(CALLS.values()))


def policy() -> dict[str, Any]:
    """The read-only IAM policy document covering exactly the declared calls, one statement per service.

    Resources are "*": S3 object and bucket ARNs depend on the user's buckets and the other calls do not
    support resource-level permissions; README's AWS set-up shows how to narrow the S3 statement.
    """
    by_service: dict[str, list[str]] = {}
    for action in declared():
        by_service.setdefault(action.split(":")[0], []).append(action)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": f"SpendwatchRead{service.title().replace('-', '')}", "Effect": "Allow", "Action": actions,
             "Resource": "*"}
            for service, actions in sorted(by_service.items())
        ],
    }


def athena_policy() -> dict[str, Any]:
    """The policy `[aws.athena]` adds to the read policy: the Athena calls and what Athena needs on the caller's
    behalf (ATHENA_IMPLIED). Resources are "*"; narrow them to the workgroup, the Glue database and table, the
    table's bucket (read) and the output location (write)."""
    actions = sorted({*ATHENA_CALLS.values(), *ATHENA_IMPLIED})
    by_service: dict[str, list[str]] = {}
    for action in actions:
        by_service.setdefault(action.split(":")[0], []).append(action)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": f"SpendwatchAthena{service.title()}", "Effect": "Allow", "Action": names, "Resource": "*"}
            for service, names in sorted(by_service.items())
        ],
    }


def policy_json() -> str:
    return json.dumps(policy(), indent=2)
