"""A fake of the Azure Resource Manager endpoints the Azure connector reads (VMs and NICs)."""

from __future__ import annotations

from typing import Any

from .http import Handler


def vm(sub: str, name: str, size: str, nic: str) -> dict[str, Any]:
    return {"id": f"/subscriptions/{sub}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/{name}",
            "name": name, "location": "eastus", "tags": {"workload": "training"},
            "properties": {"hardwareProfile": {"vmSize": size}, "priority": "Spot", "provisioningState": "Succeeded",
                           "timeCreated": "2026-11-19T10:00:00Z",
                           "networkProfile": {"networkInterfaces": [{"id": nic}]}}}


def nic(nic_id: str, ip: str) -> dict[str, Any]:
    return {"id": nic_id, "name": nic_id.rsplit("/", 1)[-1],
            "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {"privateIPAddress": ip}}]}}


def arm_handler(base: dict[str, str], vm_pages: dict[str, list[list[dict[str, Any]]]],
                nics: dict[str, list[dict[str, Any]]], *, denied: frozenset[str] = frozenset(),
                throttle_once: frozenset[str] = frozenset()) -> Handler:
    """`vm_pages[sub]` is a list of pages of VMs; `base["url"]` (set once the server runs) builds nextLinks."""
    throttled: set[str] = set()

    def handle(method: str, path: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        parts = path.strip("/").split("/")
        sub = parts[1] if len(parts) > 1 else ""
        if sub in denied:
            return 403, {"error": {"code": "AuthorizationFailed", "message": "does not have authorization"}}, {}
        if sub in throttle_once and sub not in throttled:
            throttled.add(sub)
            return 429, {"error": {"code": "TooManyRequests", "message": "throttled"}}, {"Retry-After": "0"}
        if path.endswith("/Microsoft.Compute/virtualMachines"):
            book = vm_pages.get(sub, [[]])
            page = int(query.get("$skiptoken") or 0)
            body: dict[str, Any] = {"value": book[page]}
            if page + 1 < len(book):
                body["nextLink"] = f"{base['url']}{path}?api-version={query.get('api-version')}&$skiptoken={page + 1}"
            return 200, body, {}
        if path.endswith("/Microsoft.Network/networkInterfaces"):
            return 200, {"value": nics.get(sub, [])}, {}
        return 404, {"error": {"code": "NotFound", "message": path}}, {}

    return handle
