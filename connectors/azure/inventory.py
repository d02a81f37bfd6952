"""Live Azure inventory: every VM of the given subscriptions, with its size's GPUs and its NICs' addresses.

`virtual_machines.list_all` per subscription (the SDK's pager follows `nextLink`), then
`network_interfaces.list_all` for the private addresses that flow logs are joined on. GPUs come from the
VM-size catalogue (`catalog.py`). Conventions are the files connector's: account = subscription id (lower
case), resource = the lower-cased ARM id.

Throttling (429, with Retry-After) and 5xx are retried by azure-core's RetryPolicy, which honours
Retry-After. A subscription that answers 403 (or 401/404) is a gap in the run report; the others are still
scanned. Losing only the NIC list is a smaller gap of its own (flows then cannot be tied to VMs there).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from spendwatch.records import conform, empty
from spendwatch.report import RunReport

from . import catalog
from .permissions import permission


@dataclass(frozen=True)
class AzureOptions:
    """`base_url` and `allow_http` are for tests against local fakes; `credential` defaults to
    DefaultAzureCredential."""

    credential: Any = None
    base_url: str | None = None
    allow_http: bool = False
    retry_total: int = 6
    retry_backoff_factor: float = 0.8
    connection_verify: str | None = None  # a CA bundle to trust (private endpoints, local fakes over TLS)


def _client_kwargs(options: AzureOptions) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"retry_total": options.retry_total,
                              "retry_backoff_factor": options.retry_backoff_factor, "polling_interval": 0}
    if options.base_url:
        kwargs["base_url"] = options.base_url
    if options.connection_verify:
        kwargs["connection_verify"] = options.connection_verify
    if options.allow_http:
        from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

        class _PlainHttp(ARMChallengeAuthenticationPolicy):
            """Bearer auth that lets a token travel over http: for local fakes only."""

            def on_request(self, request: Any) -> None:
                request.context["enforce_https"] = False
                super().on_request(request)

        kwargs["authentication_policy"] = _PlainHttp(options.credential, "https://management.azure.com/.default")
    return kwargs


def _gap_reason(exc: Exception) -> str | None:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

    status = getattr(exc, "status_code", None)
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        code = getattr(getattr(exc, "error", None), "code", None) or "AuthorizationFailed"
        return f"access denied: {code}"
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        return "not found (subscription missing or not registered for the provider)"
    if isinstance(exc, HttpResponseError):
        return None
    return None


def list_inventory(subscriptions: Iterable[str], report: RunReport,
                   options: AzureOptions | None = None) -> pd.DataFrame:
    """The canonical inventory of `subscriptions`; unreadable ones are gaps named `azure/<sub>/inventory`."""
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.network import NetworkManagementClient

    options = options or AzureOptions()
    credential = options.credential
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
        options = replace(options, credential=credential)
    kwargs = _client_kwargs(options)
    rows: list[dict[str, Any]] = []
    for sub in subscriptions:
        account = sub.lower()
        permission("virtual_machines.list_all")
        try:
            compute = ComputeManagementClient(credential, sub, **kwargs)
            vms = list(compute.virtual_machines.list_all())
        except HttpResponseError as exc:
            reason = _gap_reason(exc)
            if reason is None:
                raise
            report.gap(f"azure/{account}/inventory", reason)
            continue
        addresses: dict[str, list[str]] = {}
        permission("network_interfaces.list_all")
        try:
            network = NetworkManagementClient(credential, sub, **kwargs)
            for nic in network.network_interfaces.list_all():
                addresses[str(nic.id).lower()] = [c.private_ip_address for c in nic.ip_configurations or []
                                                  if c.private_ip_address]
        except HttpResponseError as exc:
            reason = _gap_reason(exc)
            if reason is None:
                raise
            report.gap(f"azure/{account}/network-interfaces", reason)
        rows.extend(_row(account, vm, addresses) for vm in vms)
    if not rows:
        return empty("inventory")
    return conform("inventory", pd.DataFrame(rows))


def _row(account: str, vm: Any, addresses: dict[str, list[str]]) -> dict[str, Any]:
    size = vm.hardware_profile.vm_size if vm.hardware_profile else None
    known = catalog.lookup(size)
    nics = [str(n.id).lower() for n in (vm.network_profile.network_interfaces if vm.network_profile else []) or []]
    ips = [ip for n in nics for ip in addresses.get(n, [])]
    return {
        "resource": catalog.canonical(vm.id), "cloud": "azure", "account": account,
        "region": (vm.location or "").lower() or None, "instance_type": size,
        "gpus": known.gpus if known else None, "vcpus": known.vcpus if known else None,
        "spot": str(getattr(vm.priority, "value", vm.priority) or "").lower() == "spot",  # str-enum or str
        "state": (vm.provisioning_state or "").lower() or None,
        "launched_at": pd.Timestamp(vm.time_created) if getattr(vm, "time_created", None) else None,
        "tags": json.dumps(vm.tags or {}, sort_keys=True),
        "interfaces": " ".join(nics) or None, "private_ips": " ".join(ips) or None, "protected": None,
    }
