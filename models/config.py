"""DetectionConfig: every threshold of every detector and of fusion, with defaults, all overridable."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from spendwatch.findings import Severity

from .fusion import FusionConfig
from .iforest import IForestConfig
from .rules import (
    CpuSaturationConfig,
    FlatUtilizationConfig,
    GpuSaturationConfig,
    KeyThenLaunchConfig,
    LaunchBurstConfig,
    MinerFlowShapeConfig,
    NewGpuLaunchConfig,
    PoolDomainConfig,
    PoolEndpointConfig,
    QuotaReconConfig,
    RuleConfig,
    SpendSpikeConfig,
    StratumPortConfig,
)


@dataclass(frozen=True)
class DetectionConfig:
    """One field per rule (named after its id, dashes as underscores), the isolation forest and fusion.

    Override in code with `dataclasses.replace` or, from a config file's nested dict, `with_overrides`:
    `DetectionConfig().with_overrides({"gpu_saturation": {"min_minutes": 60}, "disabled": ["cpu-saturation"]})`.
    """

    pool_domain: PoolDomainConfig = field(default_factory=PoolDomainConfig)
    stratum_port: StratumPortConfig = field(default_factory=StratumPortConfig)
    gpu_saturation: GpuSaturationConfig = field(default_factory=GpuSaturationConfig)
    cpu_saturation: CpuSaturationConfig = field(default_factory=CpuSaturationConfig)
    new_gpu_launch: NewGpuLaunchConfig = field(default_factory=NewGpuLaunchConfig)
    miner_flow_shape: MinerFlowShapeConfig = field(default_factory=MinerFlowShapeConfig)
    pool_endpoint: PoolEndpointConfig = field(default_factory=PoolEndpointConfig)
    flat_utilization: FlatUtilizationConfig = field(default_factory=FlatUtilizationConfig)
    launch_burst: LaunchBurstConfig = field(default_factory=LaunchBurstConfig)
    quota_recon: QuotaReconConfig = field(default_factory=QuotaReconConfig)
    key_then_launch: KeyThenLaunchConfig = field(default_factory=KeyThenLaunchConfig)
    spend_spike: SpendSpikeConfig = field(default_factory=SpendSpikeConfig)
    iforest: IForestConfig = field(default_factory=IForestConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    disabled: frozenset[str] = frozenset()  # rule ids (or "iforest") to skip

    def rule_config(self, rule_id: str) -> RuleConfig:
        value = getattr(self, rule_id.replace("-", "_"))
        assert isinstance(value, RuleConfig), rule_id
        return value

    def with_overrides(self, overrides: dict[str, Any]) -> DetectionConfig:
        """A copy with nested overrides applied; unknown keys raise `ValueError` naming the key."""
        changes: dict[str, Any] = {}
        for name, value in overrides.items():
            if name not in {f.name for f in dataclasses.fields(self)}:
                raise ValueError(f"detection config: unknown section {name!r}")
            current = getattr(self, name)
            if name == "disabled":
                changes[name] = frozenset(value)
            elif isinstance(value, dict):
                known = {f.name: f for f in dataclasses.fields(current)}
                unknown = set(value) - set(known)
                if unknown:
                    raise ValueError(f"detection config: unknown key(s) {sorted(unknown)} in {name!r}")
                fixed = {}
                for key, val in value.items():
                    old = getattr(current, key)
                    if isinstance(old, frozenset):
                        val = frozenset(val)
                    elif isinstance(old, tuple):
                        val = tuple(val)
                    elif isinstance(old, Severity):
                        val = Severity.parse(val)
                    fixed[key] = val
                try:  # a section that checks its values (IForestConfig) names the key; say where it came from
                    changes[name] = dataclasses.replace(current, **fixed)
                except ValueError as exc:
                    raise ValueError(f"detection config: {exc}") from exc
            else:
                changes[name] = value
        return dataclasses.replace(self, **changes)
