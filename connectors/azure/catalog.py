"""Azure VM sizes: vCPUs and GPUs of the GPU sizes (NC, ND, NV families), vCPUs of the rest from the name.

The Activity Log and the VM list name only `vmSize`; the resource SKUs API would say more but needs another
permission and is slow, and the GPU sizes are few. Lookups are case-insensitive (Azure itself is). Partial
GPUs (NVadsA10 v5 slices) count as one GPU: what matters to detection is "has a GPU". Plain data, no SDK.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class VmSize:
    name: str
    vcpus: int | None
    gpus: int
    gpu_model: str | None


_GPU_SIZES: dict[str, tuple[int, int, str]] = {
    "Standard_NC6s_v3": (6, 1, "V100"), "Standard_NC12s_v3": (12, 2, "V100"), "Standard_NC24s_v3": (24, 4, "V100"),
    "Standard_NC24rs_v3": (24, 4, "V100"),
    "Standard_NC4as_T4_v3": (4, 1, "T4"), "Standard_NC8as_T4_v3": (8, 1, "T4"),
    "Standard_NC16as_T4_v3": (16, 1, "T4"), "Standard_NC64as_T4_v3": (64, 4, "T4"),
    "Standard_NC24ads_A100_v4": (24, 1, "A100"), "Standard_NC48ads_A100_v4": (48, 2, "A100"),
    "Standard_NC96ads_A100_v4": (96, 4, "A100"),
    "Standard_NC40ads_H100_v5": (40, 1, "H100"), "Standard_NC80adis_H100_v5": (80, 2, "H100"),
    "Standard_ND40rs_v2": (40, 8, "V100"), "Standard_ND96asr_v4": (96, 8, "A100"),
    "Standard_ND96amsr_A100_v4": (96, 8, "A100"), "Standard_ND96isr_H100_v5": (96, 8, "H100"),
    "Standard_ND96isr_H200_v5": (96, 8, "H200"),
    "Standard_NV12s_v3": (12, 1, "M60"), "Standard_NV24s_v3": (24, 2, "M60"), "Standard_NV48s_v3": (48, 4, "M60"),
    "Standard_NV6ads_A10_v5": (6, 1, "A10"), "Standard_NV12ads_A10_v5": (12, 1, "A10"),
    "Standard_NV18ads_A10_v5": (18, 1, "A10"), "Standard_NV36ads_A10_v5": (36, 1, "A10"),
    "Standard_NV36adms_A10_v5": (36, 1, "A10"), "Standard_NV72ads_A10_v5": (72, 2, "A10"),
}
_BY_LOWER = {k.lower(): (k, *v) for k, v in _GPU_SIZES.items()}
# Standard_D4s_v5 -> 4, Standard_E16-8ds_v5 (constrained vCPU) -> 8, Standard_B2ms -> 2.
_VCPUS = re.compile(r"^(?:standard|basic)_[a-z]+?(\d+)(?:-(\d+))?", re.IGNORECASE)
_GPU_FAMILY = re.compile(r"^standard_n[cdv]\d", re.IGNORECASE)


def lookup(size: str | None) -> VmSize | None:
    """What the catalogue knows of a VM size; None for an unknown name."""
    if not size:
        return None
    known = _BY_LOWER.get(size.lower())
    if known is not None:
        name, vcpus, gpus, model = known
        return VmSize(name, vcpus, gpus, model)
    m = _VCPUS.match(size)
    if not m:
        return None
    vcpus = int(m.group(2) or m.group(1))
    # An N-series size missing from the table still has at least one GPU.
    return VmSize(size, vcpus, 1 if _GPU_FAMILY.match(size) else 0, None)


def subscription_of(resource_id: str | None) -> str | None:
    """The subscription id (lower case) in an ARM resource id, else None."""
    m = re.match(r"^/subscriptions/([^/]+)", resource_id or "", re.IGNORECASE)
    return m.group(1).lower() if m else None


def canonical(resource_id: str | None) -> str | None:
    """The canonical Azure resource: the ARM resource id in lower case, no trailing slash. Azure ids are
    case-insensitive and its exports disagree on case (the Activity Log and metrics upper-case them)."""
    if not resource_id:
        return None
    return resource_id.strip().rstrip("/").lower() or None


def vm_name(resource_id: str) -> str:
    return resource_id.rstrip("/").rsplit("/", 1)[-1]
