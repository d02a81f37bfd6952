"""Every Azure operation the live connector performs, and the RBAC action it needs: the source of the role.

`CALLS` maps the SDK operation to its action, `DATA_CALLS` the Blob storage operations to their data action;
the connector looks each call up before making it, so `spendwatch iam-policy azure` prints exactly what the
code uses. Listing and reading the export blobs need one data action (what the built-in Storage Blob Data
Reader grants), on the storage accounts the diagnostic settings and cost exports write to.
"""

from __future__ import annotations

import json
from typing import Any

CALLS: dict[str, str] = {
    "virtual_machines.list_all": "Microsoft.Compute/virtualMachines/read",
    "network_interfaces.list_all": "Microsoft.Network/networkInterfaces/read",
    # Percentage CPU per VM from Azure Monitor (azure-monitor-querymetrics), with `metrics_api = true`.
    "MetricsClient.query_resources": "Microsoft.Insights/Metrics/Read",
    # Daily cost per resource from Cost Management (azure-mgmt-costmanagement), with `cost_api = true`.
    "query.usage": "Microsoft.CostManagement/query/read",
}
DATA_CALLS: dict[str, str] = {
    "ContainerClient.list_blobs": "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
    "ContainerClient.download_blob": "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
}


class UndeclaredCall(RuntimeError):
    """The connector made a call `CALLS` does not declare: a programming error, never a gap."""


def permission(call: str) -> str:
    """The action or data action of a declared call; UndeclaredCall for any other."""
    try:
        return CALLS[call] if call in CALLS else DATA_CALLS[call]
    except KeyError:
        raise UndeclaredCall(f"{call} is not declared in connectors/azure/permissions.py") from None


def permissions() -> list[str]:
    """The control-plane actions the connector may use (data actions: `DATA_CALLS`), sorted, each once."""
    return sorted(set(CALLS.values()))


def role(scopes: list[str] | None = None) -> dict[str, Any]:
    """A least-privilege custom role definition (`az role definition create --role-definition @file`)."""
    return {
        "Name": "spendwatch reader",
        "IsCustom": True,
        "Description": "Read-only: virtual machines, network interfaces, their metrics and costs, and the export "
                       "blobs spendwatch scans.",
        "Actions": permissions(),
        "NotActions": [],
        "DataActions": sorted(set(DATA_CALLS.values())),
        "NotDataActions": [],
        "AssignableScopes": scopes or ["/subscriptions/<subscription-id>"],
    }


def role_json(scopes: list[str] | None = None) -> str:
    return json.dumps(role(scopes), indent=2)
