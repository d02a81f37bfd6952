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

# With [aws.athena] (flows and/or CUR reduced in Athena), the identity spendwatch runs as also makes these calls.
# They are kept out of CALLS and of the read policy: StartQueryExecution writes results to S3, so they are not
# read-only, and Athena needs more than the calls themselves (ATHENA_IMPLIED). `athena_policy()` is the extra policy.
ATHENA_CALLS: dict[tuple[str, str], str] = {
    ("athena", "StartQueryExecution"): "athena:StartQueryExecution",
    ("athena", "GetQueryExecution"): "athena:GetQueryExecution",
    ("athena", "GetQueryResults"): "athena:GetQueryResults",
    ("athena", "StopQueryExecution"): "athena:StopQueryExecution",
}
# What Athena does with the caller's permissions while it runs the query, by what it touches: the tables'
# definitions in Glue, the tables' files in S3 (read: the flow log table's bucket, and with `cur_table` the CUR 2.0
# export's bucket; GetPartitions for its billing_period partitions), and the output location (results written,
# then read).
ATHENA_CATALOG = ("glue:GetDatabase", "glue:GetTable", "glue:GetPartitions")
ATHENA_TABLE_READ = ("s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket")
ATHENA_RESULTS = ("s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:AbortMultipartUpload")
ATHENA_IMPLIED = tuple(sorted({*ATHENA_CATALOG, *ATHENA_TABLE_READ, *ATHENA_RESULTS}))


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
    behalf, one statement per thing touched, so each can be narrowed (the Terraform module does, by Sid): the
    workgroup (SpendwatchAthenaQueries), the Glue catalog, databases and tables (SpendwatchAthenaCatalog), the
    tables' buckets, flow logs' and CUR's (SpendwatchAthenaTableRead) and the output location
    (SpendwatchAthenaResults)."""
    groups = {"SpendwatchAthenaQueries": ATHENA_CALLS.values(), "SpendwatchAthenaCatalog": ATHENA_CATALOG,
              "SpendwatchAthenaTableRead": ATHENA_TABLE_READ, "SpendwatchAthenaResults": ATHENA_RESULTS}
    return {
        "Version": "2012-10-17",
        "Statement": [{"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": "*"}
                      for sid, actions in groups.items()],
    }


def policy_json() -> str:
    return json.dumps(policy(), indent=2)
