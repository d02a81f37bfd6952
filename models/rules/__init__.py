"""Detection rules: one module per rule, registered here by id (a plain dict, no discovery magic).

A new rule touches its module, one line below, its config field in models/config.py and its test
(tests/models/rules/test_<module>.py).
"""

from __future__ import annotations

from .base import Rule, RuleConfig
from .cpu_saturation import CpuSaturationConfig, CpuSaturationRule
from .flat_utilization import FlatUtilizationConfig, FlatUtilizationRule
from .gpu_saturation import GpuSaturationConfig, GpuSaturationRule
from .key_then_launch import KeyThenLaunchConfig, KeyThenLaunchRule
from .launch_burst import LaunchBurstConfig, LaunchBurstRule
from .miner_flow_shape import MinerFlowShapeConfig, MinerFlowShapeRule
from .new_gpu_launch import NewGpuLaunchConfig, NewGpuLaunchRule
from .pool_domain import PoolDomainConfig, PoolDomainRule
from .pool_endpoint import PoolEndpointConfig, PoolEndpointRule
from .quota_recon import QuotaReconConfig, QuotaReconRule
from .spend_spike import SpendSpikeConfig, SpendSpikeRule
from .stratum_port import StratumPortConfig, StratumPortRule

RULES: dict[str, type[Rule]] = {
    "pool-domain": PoolDomainRule,
    "pool-endpoint": PoolEndpointRule,
    "stratum-port": StratumPortRule,
    "miner-flow-shape": MinerFlowShapeRule,
    "gpu-saturation": GpuSaturationRule,
    "cpu-saturation": CpuSaturationRule,
    "flat-utilization": FlatUtilizationRule,
    "new-gpu-launch": NewGpuLaunchRule,
    "launch-burst": LaunchBurstRule,
    "quota-recon": QuotaReconRule,
    "key-then-launch": KeyThenLaunchRule,
    "spend-spike": SpendSpikeRule,
}

__all__ = [
    "RULES", "CpuSaturationConfig", "CpuSaturationRule", "FlatUtilizationConfig", "FlatUtilizationRule",
    "GpuSaturationConfig", "GpuSaturationRule", "KeyThenLaunchConfig", "KeyThenLaunchRule", "LaunchBurstConfig",
    "LaunchBurstRule", "MinerFlowShapeConfig", "MinerFlowShapeRule", "NewGpuLaunchConfig", "NewGpuLaunchRule",
    "PoolDomainConfig", "PoolDomainRule", "PoolEndpointConfig", "PoolEndpointRule", "QuotaReconConfig",
    "QuotaReconRule", "Rule", "RuleConfig", "SpendSpikeConfig", "SpendSpikeRule", "StratumPortConfig",
    "StratumPortRule",
]
