"""Instance catalogue: vCPUs, GPUs and on-demand list price per instance type.

Used where the data itself does not say: CloudTrail names the instance type but not its GPUs, and billing
for the current hour lands hours late, so a finding's cost per hour falls back to the list price. Prices are
AWS on-demand Linux list prices in us-east-1 (USD per hour) as published when the table was written; they are
a fallback estimate, and a finding says which source its cost came from.
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


@cache
def aws_instance_types() -> dict[str, InstanceType]:
    text = resources.files("spendwatch.data").joinpath("aws_instance_types.csv").read_text()
    rows = csv.DictReader(text.splitlines())
    return {
        r["instance_type"]: InstanceType(
            r["instance_type"], int(r["vcpus"]), int(r["gpus"]), r["gpu_model"] or None,
            float(r["on_demand_usd_hour"]),
        )
        for r in rows
    }


def lookup(instance_type: str | None) -> InstanceType | None:
    if not instance_type:
        return None
    return aws_instance_types().get(instance_type)


GPU_FAMILIES = ("p2", "p3", "p4d", "p4de", "p5", "p5e", "p5en", "p6", "g3", "g4dn", "g4ad", "g5", "g5g", "g6",
                "g6e", "gr6", "trn1", "trn2", "inf1", "inf2", "dl1")


def is_accelerated(instance_type: str | None) -> bool:
    """True for instance types with GPUs or other accelerators, known to the table or by family."""
    if not instance_type:
        return False
    known = lookup(instance_type)
    if known is not None:
        return known.gpus > 0
    return instance_type.split(".", 1)[0] in GPU_FAMILIES
