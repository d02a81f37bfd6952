"""cpu-saturation: CPU pegged and flat on a host that is not a batch worker."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from spendwatch import catalog
from spendwatch.findings import Hit, Severity
from spendwatch.records import Tables

from ..features import KEY, Features
from ._saturation import SaturationConfig
from .base import none_if_na
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
    belief_gpu_idle: float = 0.35  # pegged CPU on a GPU instance whose GPUs idle: RandomX on a GPU box
    belief_gpu_busy: float = 0.3  # pegged CPU on a GPU instance whose GPUs are busy too (CPU miner beside a job)
    gpu_idle_pct: float = 20.0  # GPU mean below this during the CPU run is "idle"


class CpuSaturationRule(GpuSaturationRule):
    """CPU utilisation at or above 95 % for at least 30 minutes on a host not tagged as a batch worker.

    Catches: Monero (RandomX is a CPU algorithm): an XMR miner pegs every core, also on a GPU box where the
    GPUs sit idle. Hosts whose tags or name say they are batch, CI, ETL, render or training workers are
    skipped (tag keys role/workload/purpose/Name/...; words in `batch_words`).
    On a GPU instance the batch-tag skip does not apply (GPU boxes are paid for their GPUs; a training tag
    does not explain a flat pegged CPU): with its GPUs idle during the run the hit gets 0.35, busy 0.3 (a CPU
    miner beside a GPU job). Never above low alone.
    Misses: throttled miners (see flat-utilization), miners on untagged batch fleets (the skip only trusts
    tags), hosts with no CPU metric. Weaker than the GPU rule (0.25 flat) because busy CPUs are common;
    training-shaped series (regular dips, large ingress) carry mass against abuse.
    """

    id = "cpu-saturation"
    title = "CPU pegged and flat on a non-batch host"
    severity = Severity.LOW
    technique = "T1496.001"
    family = "saturation"
    config_type = CpuSaturationConfig
    label = "CPU"

    def hits(self, tables: Tables, features: Features) -> list[Hit]:
        cfg: CpuSaturationConfig = self.config  # type: ignore[assignment]
        out = super().hits(tables, features)
        accelerated = self.accelerated(features)
        gpu = features.utilization("gpu_util")
        for hit in out:
            key = (hit.cloud, hit.account, hit.resource)
            if key not in accelerated or hit.facts.get("shape") == "training":
                continue
            series = gpu[(gpu["resource"] == hit.resource) & (gpu["time"] >= hit.start) & (gpu["time"] <= hit.end)] \
                if len(gpu) else gpu
            gpu_mean = float(series["value"].mean()) if len(series) else 0.0
            idle = gpu_mean < cfg.gpu_idle_pct
            hit.belief = max(hit.belief, cfg.belief_gpu_idle if idle else cfg.belief_gpu_busy)
            state = "idle" if idle else "busy"
            hit.evidence += (f"; on a GPU instance whose GPUs were {state} meanwhile (mean {gpu_mean:.0f} %"
                             f"{', no GPU samples' if not len(series) else ''}): a CPU miner's shape")
            hit.facts["gpu_mean_pct"] = round(gpu_mean, 1)
        return out

    @staticmethod
    def accelerated(features: Features) -> set[tuple[str, str, str]]:
        """(cloud, account, resource) of GPU/accelerator instances, from inventory counts or the catalogue."""
        inv = features.inventory
        if not len(inv):
            return set()
        types = inv["instance_type"]
        flags = (inv["gpus"].fillna(0) > 0).to_numpy(dtype=bool) | np.array(
            [catalog.is_accelerated(none_if_na(t)) for t in types], dtype=bool)
        return set(inv.index[flags])

    def eligible(self, series: pd.DataFrame, features: Features) -> pd.DataFrame:
        cfg: CpuSaturationConfig = self.config  # type: ignore[assignment]
        inv = features.inventory
        if not len(series) or not len(inv):
            return series
        words = {w.lower() for w in cfg.batch_words}
        keys = {k.lower() for k in cfg.role_tag_keys}
        batch = set()
        gpu_hosts = self.accelerated(features)
        for key, tags in inv["tag_map"].items():  # inventory is small: a loop is fine
            if key in gpu_hosts:
                continue
            values = [v for k, v in tags.items() if k.lower() in keys]
            tokens = {tok for v in values for tok in re.split(r"[^a-z0-9]+", v.lower()) if tok}
            if tokens & words:
                batch.add(key)
        if not batch:
            return series
        idx = pd.MultiIndex.from_frame(series[KEY])
        return series[~idx.isin(list(batch))]
