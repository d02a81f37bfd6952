"""gpu-saturation: GPU utilisation pegged and flat for a sustained period."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pandas as pd

from spendwatch.findings import Hit, Severity
from spendwatch.records import Tables

from ..features import Features
from ._saturation import SaturationConfig, describe, summarise
from .base import Rule


@dataclass(frozen=True)
class GpuSaturationConfig(SaturationConfig):
    metric: str = "gpu_util"


class GpuSaturationRule(Rule):
    """GPU utilisation at or above 95 % for at least 30 minutes, judged by its shape.

    Catches: GPU coins (KawPow, Etchash, kHeavyHash...) peg every GPU flat at ~100 % for hours. A flat series
    with no dips gets the rule's full belief (0.3); one with dips or jitter less (0.2).
    Misses and limits: throttled miners (20-60 %), CPU coins on a GPU box (see cpu-saturation), and anything
    where the cloud reports no GPU metric. Never strong alone: training also pegs GPUs. A series with
    regularly spaced dips (evaluation, checkpoints) on a resource that pulled >= 1 GB from the internet is
    training-shaped: the hit then carries mass against abuse (0.4) and almost none for it.
    """

    id = "gpu-saturation"
    title = "GPU pegged and flat"
    severity = Severity.LOW
    technique = "T1496.001"
    family = "saturation"
    config_type: ClassVar[type[SaturationConfig]] = GpuSaturationConfig
    label = "GPU"

    def hits(self, tables: Tables, features: Features) -> list[Hit]:
        cfg: GpuSaturationConfig = self.config  # type: ignore[assignment]
        series = features.utilization(cfg.metric)
        series = self.eligible(series, features)
        summary = summarise(series, cfg)
        ingress = features.ingress_bytes
        out = []
        for _, row in summary.iterrows():  # one row per pegged resource: few
            key = (row["cloud"], row["account"], row["resource"])
            received = float(ingress.get(key, 0.0))
            belief, against, shape, evidence = describe(row, cfg, received, self.label)
            out.append(Hit(
                rule=self.id, cloud=str(row["cloud"]), account=str(row["account"]), resource=str(row["resource"]),
                principal=None, start=row["start"].to_pydatetime(), end=row["end"].to_pydatetime(),
                belief=belief, against=against, evidence=evidence, family=self.family,
                facts={"shape": shape, "minutes": round(float(row["minutes"]), 1),
                       "mean_pct": round(float(row["mean"]), 2), "std_pct": round(float(row["std"]), 2),
                       "dips": int(row["dips"]), "ingress_bytes": received},
            ))
        return out

    def eligible(self, series: pd.DataFrame, features: Features) -> pd.DataFrame:
        """Which resources' series the rule looks at; every one for GPUs."""
        return series
