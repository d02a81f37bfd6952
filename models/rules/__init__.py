"""Detection rules: one module per rule, registered here by id (a plain dict, no discovery magic).

A new rule touches its module, one line below and its test (tests/models/rules/test_<module>.py).
"""

from __future__ import annotations

from .base import Rule, RuleConfig
from .cpu_saturation import CpuSaturationConfig, CpuSaturationRule
from .gpu_saturation import GpuSaturationConfig, GpuSaturationRule
from .miner_flow_shape import MinerFlowShapeConfig, MinerFlowShapeRule
from .new_gpu_launch import NewGpuLaunchConfig, NewGpuLaunchRule
from .pool_domain import PoolDomainConfig, PoolDomainRule
from .stratum_port import StratumPortConfig, StratumPortRule

RULES: dict[str, type[Rule]] = {
    "pool-domain": PoolDomainRule,
    "stratum-port": StratumPortRule,
    "gpu-saturation": GpuSaturationRule,
    "cpu-saturation": CpuSaturationRule,
    "new-gpu-launch": NewGpuLaunchRule,
    "miner-flow-shape": MinerFlowShapeRule,
}

__all__ = [
    "RULES", "CpuSaturationConfig", "CpuSaturationRule", "GpuSaturationConfig", "GpuSaturationRule",
    "MinerFlowShapeConfig", "MinerFlowShapeRule", "NewGpuLaunchConfig", "NewGpuLaunchRule", "PoolDomainConfig",
    "PoolDomainRule", "Rule", "RuleConfig", "StratumPortConfig", "StratumPortRule",
]
