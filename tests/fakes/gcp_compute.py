"""A fake of the Compute Engine REST API (the few shapes the GCP connector reads)."""

from __future__ import annotations

from typing import Any

from .http import Handler


def instance(name: str, zone: str, machine: str, *, gpus: int = 0, ip: str = "10.0.0.2") -> dict[str, Any]:
    return {
        "name": name, "id": "1234", "zone": f"https://www.googleapis.com/compute/v1/projects/p/zones/{zone}",
        "machineType": f"https://www.googleapis.com/compute/v1/projects/p/zones/{zone}/machineTypes/{machine}",
        "status": "RUNNING", "creationTimestamp": "2026-11-19T10:00:00.000-08:00",
        "labels": {"team": "ml"}, "networkInterfaces": [{"name": "nic0", "networkIP": ip}],
        "guestAccelerators": ([{"acceleratorType": f"projects/p/zones/{zone}/acceleratorTypes/nvidia-tesla-t4",
                                "acceleratorCount": gpus}] if gpus else []),
        "scheduling": {"provisioningModel": "SPOT", "preemptible": True} if gpus else {},
    }


def compute_handler(pages: dict[str, list[dict[str, list[dict[str, Any]]]]], *, denied: frozenset[str] = frozenset(),
                    throttle_once: frozenset[str] = frozenset(), deny_types: bool = False) -> Handler:
    """`pages[project]` is a list of pages, each {zone: [instances]}; projects in `denied` answer 403, those in
    `throttle_once` answer 429 (Retry-After: 0) the first time."""
    throttled: set[str] = set()
    types = {"a2-highgpu-1g": (12, 1), "n1-standard-4": (4, 0)}

    def handle(method: str, path: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        parts = path.strip("/").split("/")
        # compute/v1/projects/{p}/aggregated/instances  |  compute/v1/projects/{p}/zones/{z}/machineTypes/{t}
        project = parts[3] if len(parts) > 3 else ""
        if project in denied or (deny_types and "machineTypes" in parts):
            return 403, {"error": {"code": 403, "message": "Required 'compute.instances.list' permission",
                                   "status": "PERMISSION_DENIED"}}, {}
        if project in throttle_once and project not in throttled:
            throttled.add(project)
            return 429, {"error": {"code": 429, "message": "Rate exceeded", "status": "RESOURCE_EXHAUSTED"}}, \
                {"Retry-After": "0"}
        if parts[4:6] == ["aggregated", "instances"]:
            book = pages.get(project, [{}])
            page = int(query.get("pageToken") or 0)
            body: dict[str, Any] = {"items": {f"zones/{z}": {"instances": insts}
                                              for z, insts in book[page].items()}}
            if page + 1 < len(book):
                body["nextPageToken"] = str(page + 1)
            return 200, body, {}
        if len(parts) == 8 and parts[6] == "machineTypes":
            cpus, gpus = types.get(parts[7], (2, 0))
            acc = [{"guestAcceleratorType": "nvidia-tesla-a100", "guestAcceleratorCount": gpus}] if gpus else []
            return 200, {"name": parts[7], "guestCpus": cpus, "accelerators": acc}, {}
        return 404, {"error": {"code": 404, "message": f"no route {path}", "status": "NOT_FOUND"}}, {}

    return handle
