"""GCP machine types and accelerators: vCPUs and GPUs where the data names only a machine type.

Audit logs name `machineType` and `guestAccelerators` but not how many GPUs an accelerator-optimised type
(A2, A3, G2) carries; the live connector asks the MachineTypes API instead and uses this table only when that
call is not allowed. Only the GPU families are listed; any other type's vCPUs come from its name
(`n2-standard-8` -> 8, `custom-4-16384` -> 4). Plain data: no SDK import, safe for the files connector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class MachineType:
    name: str
    vcpus: int | None
    gpus: int
    gpu_model: str | None


# machine type -> (vCPUs, GPUs, GPU model). From cloud.google.com/compute/docs/accelerator-optimized-machines.
_GPU_TYPES: dict[str, tuple[int, int, str]] = {
    **{f"a2-highgpu-{n}g": (12 * n, n, "nvidia-tesla-a100") for n in (1, 2, 4, 8)},
    "a2-megagpu-16g": (96, 16, "nvidia-tesla-a100"),
    **{f"a2-ultragpu-{n}g": (12 * n, n, "nvidia-a100-80gb") for n in (1, 2, 4, 8)},
    **{f"a3-highgpu-{n}g": (26 * n, n, "nvidia-h100-80gb") for n in (1, 2, 4, 8)},
    "a3-megagpu-8g": (208, 8, "nvidia-h100-mega-80gb"),
    "a3-edgegpu-8g": (208, 8, "nvidia-h100-80gb"),
    "a3-ultragpu-8g": (224, 8, "nvidia-h200-141gb"),
    "a4-highgpu-8g": (224, 8, "nvidia-b200"),
    **{f"g2-standard-{v}": (v, 1, "nvidia-l4") for v in (4, 8, 12, 16, 32)},
    "g2-standard-24": (24, 2, "nvidia-l4"),
    "g2-standard-48": (48, 4, "nvidia-l4"),
    "g2-standard-96": (96, 8, "nvidia-l4"),
}
# Shared-core types named without a vCPU count.
_SHARED = {"e2-micro": 2, "e2-small": 2, "e2-medium": 2, "f1-micro": 1, "g1-small": 1}
_VCPUS = re.compile(r"^(?:[a-z0-9]+-)?(?:standard|highmem|highcpu|megamem|ultramem|hypermem|custom|highgpu|"
                    r"ultragpu|megagpu|edgegpu)-(\d+)")


def short_name(machine_type: str | None) -> str | None:
    """`zones/us-central1-a/machineTypes/a2-highgpu-1g` or its full URL -> `a2-highgpu-1g`."""
    if not machine_type:
        return None
    return machine_type.rstrip("/").rsplit("/", 1)[-1] or None


def lookup(machine_type: str | None) -> MachineType | None:
    """What the catalogue knows of a machine type (short name or URL); None when it knows nothing."""
    name = short_name(machine_type)
    if name is None:
        return None
    if name in _GPU_TYPES:
        vcpus, gpus, model = _GPU_TYPES[name]
        return MachineType(name, vcpus, gpus, model)
    if name in _SHARED:
        return MachineType(name, _SHARED[name], 0, None)
    m = _VCPUS.match(name)
    return MachineType(name, int(m.group(1)), 0, None) if m else None


def accelerators(items: object) -> tuple[int, str | None]:
    """(GPU count, model) from `guestAccelerators`: [{acceleratorType: .../nvidia-tesla-t4, acceleratorCount}]."""
    total, model = 0, None
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        try:
            total += int(item.get("acceleratorCount") or 0)
        except (TypeError, ValueError):
            continue
        model = model or short_name(str(item.get("acceleratorType") or "")) or None
    return total, model


def zone_region(zone: str | None) -> str | None:
    """`us-central1-a` -> `us-central1`; a region passes through unchanged."""
    if not zone:
        return None
    zone = zone.rstrip("/").rsplit("/", 1)[-1]
    return zone.rsplit("-", 1)[0] if re.match(r"^[a-z]+-[a-z]+\d+-[a-z]$", zone) else zone


def instance_resource(project: str, zone: str, name: str) -> str:
    """The canonical GCP resource: the instance's relative resource name, as audit logs write it."""
    return f"projects/{project}/zones/{zone}/instances/{name}"
