"""Instance catalogue: vCPUs, GPUs and on-demand list price per instance type, for AWS, GCP and Azure.

Used where the data itself does not say: CloudTrail names the instance type but not its GPUs, and billing
for the current hour lands hours late, so a finding's cost per hour falls back to the list price. Prices are
on-demand Linux list prices (USD per hour) in one reference region per cloud (AWS us-east-1, GCP us-central1,
Azure eastus) as published when the tables were written (`data/PROVENANCE.md` cites each source and date);
they are a fallback estimate, and a finding says which source its cost came from.

The three clouds' names never collide (`g5.xlarge`, `a2-highgpu-1g`, `Standard_NC24ads_A100_v4`), so one
`lookup` serves them all; Azure names are matched without regard to case, as Azure does.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    gpus: int
    gpu_model: str | None
    on_demand_usd_hour: float


def _table(file: str) -> dict[str, InstanceType]:
    text = resources.files("spendwatch.data").joinpath(file).read_text()
    rows = csv.DictReader(text.splitlines())
    return {
        r["instance_type"]: InstanceType(
            r["instance_type"], int(r["vcpus"]), int(r["gpus"]), r["gpu_model"] or None,
            float(r["on_demand_usd_hour"]),
        )
        for r in rows
    }


@cache
def aws_instance_types() -> dict[str, InstanceType]:
    return _table("aws_instance_types.csv")


@cache
def gcp_machine_types() -> dict[str, InstanceType]:
    return _table("gcp_machine_types.csv")


@cache
def azure_vm_sizes() -> dict[str, InstanceType]:
    """By lower-cased size name."""
    return {name.lower(): t for name, t in _table("azure_vm_sizes.csv").items()}


def lookup(instance_type: str | None) -> InstanceType | None:
    if not instance_type:
        return None
    return aws_instance_types().get(instance_type) or gcp_machine_types().get(instance_type) or \
        azure_vm_sizes().get(instance_type.lower())


GPU_FAMILIES = ("p2", "p3", "p4d", "p4de", "p5", "p5e", "p5en", "p6", "g3", "g4dn", "g4ad", "g5", "g5g", "g6",
                "g6e", "gr6", "trn1", "trn2", "inf1", "inf2", "dl1")


def is_accelerated(instance_type: str | None) -> bool:
    """True for instance types with GPUs or other accelerators, known to the tables or by family (AWS), or
    to the GCP machine-type and Azure VM-size catalogues of the connectors."""
    if not instance_type:
        return False
    known = lookup(instance_type)
    if known is not None:
        return known.gpus > 0
    if instance_type.split(".", 1)[0] in GPU_FAMILIES:
        return True
    from spendwatch.connectors.azure import catalog as azure
    from spendwatch.connectors.gcp import catalog as gcp

    other = gcp.lookup(instance_type) if not instance_type.lower().startswith(("standard_", "basic_")) else \
        azure.lookup(instance_type)
    return other is not None and other.gpus > 0
