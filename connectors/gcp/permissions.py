"""Every GCP API call the live connector makes, and the IAM permission it needs: the source of the role.

`CALLS` maps the client method to its permission; the connector looks each call up here before making it
(`permission()` raises for an undeclared call), so `spendwatch iam-policy gcp` never falls behind the code.
Reading the sinks' exports needs only `storage.objects.list` and `storage.objects.get` on their buckets.
The role lists every permission any configured source may use; a source left out of the configuration
never makes its calls.
"""

from __future__ import annotations

import json
from typing import Any

CALLS: dict[str, str] = {
    "InstancesClient.aggregated_list": "compute.instances.list",
    "MachineTypesClient.get": "compute.machineTypes.get",
    # Utilisation from Cloud Monitoring (google-cloud-monitoring), with `monitoring_api = true`.
    "MetricServiceClient.list_time_series": "monitoring.timeSeries.list",
    # Spend from the BigQuery billing export table (google-cloud-bigquery), with `billing_table`: the query job
    # runs in the table's project and reads the table.
    "Client.query_and_wait": "bigquery.jobs.create",
    "Client.query_and_wait/table": "bigquery.tables.getData",
    # The sinks' and exports' objects in Cloud Storage (google-cloud-storage).
    "Client.list_blobs": "storage.objects.list",
    "Blob.download_as_bytes": "storage.objects.get",
    "Blob.download_to_file": "storage.objects.get",  # the Parquet files of `[gcp.bigquery] export_uri`
}

# Granted on one bucket only, never in the reader role (which would then write to every bucket in its scope):
# `[gcp.bigquery] export_uri`'s EXPORT DATA writes its files there as the job's identity
# (deploy/terraform/gcp: `bigquery_export_bucket`, roles/storage.objectCreator on that bucket).
BUCKET_CALLS: dict[str, str] = {
    "Client.query_and_wait/export": "storage.objects.create",
}


class UndeclaredCall(RuntimeError):
    """The connector made a call `CALLS` does not declare: a programming error, never a gap."""


def permission(call: str) -> str:
    try:
        return CALLS[call] if call in CALLS else BUCKET_CALLS[call]
    except KeyError:
        raise UndeclaredCall(f"{call} is not declared in connectors/gcp/permissions.py") from None


def permissions() -> list[str]:
    """The IAM permissions the connector may use, sorted, each once."""
    return sorted(set(CALLS.values()))


def role() -> dict[str, Any]:
    """A least-privilege custom role (the body of `gcloud iam roles create --file`, as JSON)."""
    return {
        "title": "spendwatch reader",
        "description": "Read-only: instances, machine types, Monitoring time series, the billing export table, "
                       "and the log/billing export objects.",
        "stage": "GA",
        "includedPermissions": permissions(),
    }


def role_yaml() -> str:
    """The same role as the YAML `gcloud iam roles create spendwatchReader --organization=ORG --file=-` takes."""
    body = role()
    lines = [f"title: {json.dumps(body['title'])}", f"description: {json.dumps(body['description'])}",
             f"stage: {body['stage']}", "includedPermissions:"]
    lines += [f"- {p}" for p in body["includedPermissions"]]
    return "\n".join(lines) + "\n"
