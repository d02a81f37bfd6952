"""cpu-saturation: CPU pegged and flat on a host that is not a batch worker."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from spendwatch.findings import Severity

from ..features import KEY, Features
from ._saturation import SaturationConfig
from .gpu_saturation import GpuSaturationRule


@dataclass(frozen=True)
class CpuSaturationConfig(SaturationConfig):
    metric: str = "cpu_util"
    belief: float = 0.25
    belief_unflat: float = 0.15
    # A tag value (or instance name) containing one of these words marks a host whose job is to be busy.
    batch_words: tuple[str, ...] = ("batch", "worker", "workers", "train", "training", "hpc", "render", "ci",
                                    "build", "builder", "etl", "spark", "emr", "dataproc", "ml", "compute",
                                    "runner", "encode", "transcode")
    role_tag_keys: tuple[str, ...] = ("role", "workload", "purpose", "name", "service", "app", "component",
                                      "job", "team")


class CpuSaturationRule(GpuSaturationRule):
    """CPU utilisation at or above 95 % for at least 30 minutes on a host not tagged as a batch worker.

    Catches: Monero (RandomX is a CPU algorithm): an XMR miner pegs every core, also on a GPU box where the
    GPUs sit idle. Hosts whose tags or name say they are batch, CI, ETL, render or training workers are
    skipped (tag keys role/workload/purpose/Name/...; words in `batch_words`).
    Misses: throttled miners, miners on untagged batch fleets (the skip only trusts tags), hosts with no
    CPU metric. Weaker than the GPU rule (0.25 flat) because busy CPUs are common; training-shaped series
    (regular dips, large ingress) carry mass against abuse.
    """

    id = "cpu-saturation"
    title = "CPU pegged and flat on a non-batch host"
    severity = Severity.LOW
    technique = "T1496.001"
    family = "saturation"
    config_type = CpuSaturationConfig
    label = "CPU"

    def eligible(self, series: pd.DataFrame, features: Features) -> pd.DataFrame:
        cfg: CpuSaturationConfig = self.config  # type: ignore[assignment]
        inv = features.inventory
        if not len(series) or not len(inv):
            return series
        words = {w.lower() for w in cfg.batch_words}
        keys = {k.lower() for k in cfg.role_tag_keys}
        batch = set()
        for key, tags in inv["tag_map"].items():  # inventory is small: a loop is fine
            values = [v for k, v in tags.items() if k.lower() in keys]
            tokens = {tok for v in values for tok in re.split(r"[^a-z0-9]+", v.lower()) if tok}
            if tokens & words:
                batch.add(key)
        if not batch:
            return series
        idx = pd.MultiIndex.from_frame(series[KEY])
        return series[~idx.isin(list(batch))]
