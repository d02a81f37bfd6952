"""launch-burst: a principal launches far more instances, vCPUs or GPUs than it ever did, or fans out across regions."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spendwatch.findings import Hit, Severity
from spendwatch.records import Tables

from ..features import Features
from ._acquisition import default_weights, launches, weight
from .base import Rule, RuleConfig, fmt_time, none_if_na


@dataclass(frozen=True)
class LaunchBurstConfig(RuleConfig):
    belief_burst: float = 0.35  # GPUs (or vCPUs/count with GPUs among them) far above the principal's history
    belief_burst_cpu: float = 0.2  # a burst without any GPU: CI fleets and batch scale-ups look like this
    belief_fanout: float = 0.35  # launches or spot/fleet requests in many regions at once
    max_belief: float = 0.6
    window_minutes: float = 60.0
    ratio: float = 3.0  # this many times the principal's largest earlier window
    min_gpus: int = 8
    min_vcpus: int = 128
    min_count: int = 8
    min_instances: int = 3  # a GPU or vCPU burst is several instances: one big training box is not a burst
    min_regions: int = 3
    principal_type_weights: dict[str, float] = field(default_factory=default_weights)
    launch_actions: tuple[str, ...] = ("launch", "launch_request", "start")


class LaunchBurstRule(Rule):
    """In one hour a principal launched (or requested, through RequestSpotInstances / CreateFleet) far more
    than in any earlier hour of its history: at least 8 GPUs, 128 vCPUs or 8 instances, and three times its
    previous largest hour; or it spread launches over three or more regions at once (spot and fleet fan-out).

    Catches: stolen keys and runaway agents grabbing capacity wherever quota allows, including in regions
    with no flow logs, where billing and the control-plane log are the only witnesses. One principal-level
    hit (no resource) that fusion attaches to every instance the principal launched, and that turns a mass
    launch into one incident of the principal.
    Misses: slow ramps (each hour within 3x of the last), bursts of a principal with no earlier launches in
    the data (new-gpu-launch and key-then-launch speak for first-timers), and launches outside the log.
    Agents weigh 1.3, services 0.8. CI fleets scale up the same way every day, so their history absorbs it;
    a burst with no GPU at all counts less (0.2).
    """

    id = "launch-burst"
    title = "Launch burst or regional fan-out by a principal"
    severity = Severity.LOW
    technique = "T1578.002"
    family = "burst"
    config_type = LaunchBurstConfig

    def hits(self, tables: Tables, features: Features) -> list[Hit]:
        cfg: LaunchBurstConfig = self.config  # type: ignore[assignment]
        rows = launches(tables.activity, cfg.launch_actions)
        if not len(rows):
            return []
        out: list[Hit] = []
        window = np.int64(cfg.window_minutes * 60e9)
        for (cloud, account, principal), grp in rows.groupby(["cloud", "account", "principal"], sort=True):
            t = grp["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
            end = np.searchsorted(t, t + window, side="left")  # window i = rows [i, end[i])
            csum = {c: np.r_[0.0, np.cumsum(grp[c].to_numpy(dtype="float64"))] for c in ("gpus_n", "vcpus_n")}
            idx = np.arange(len(t))
            count = (end - idx).astype("float64")
            gpus = csum["gpus_n"][end] - csum["gpus_n"][idx]
            vcpus = csum["vcpus_n"][end] - csum["vcpus_n"][idx]
            # history: the largest earlier window that ended before this one began
            before = np.searchsorted(t + window, t, side="right")  # windows j < before[i] end by t[i]
            hist = {}
            for name, arr in (("count", count), ("gpus", gpus), ("vcpus", vcpus)):
                running = np.maximum.accumulate(arr)
                hist[name] = np.where(before > 0, running[np.maximum(before - 1, 0)], np.nan)
            has_history = before > 0
            burst = has_history & (
                ((gpus >= cfg.min_gpus) & (gpus >= cfg.ratio * np.maximum(hist["gpus"], 1))
                 & (count >= cfg.min_instances))
                | ((vcpus >= cfg.min_vcpus) & (vcpus >= cfg.ratio * np.maximum(hist["vcpus"], 1))
                   & (count >= cfg.min_instances))
                | ((count >= cfg.min_count) & (count >= cfg.ratio * np.maximum(hist["count"], 1))))
            regions = grp["region"].to_numpy(dtype=object)
            n_regions = np.array([len({r for r in regions[i:end[i]] if isinstance(r, str)}) for i in idx])
            fanout = n_regions >= cfg.min_regions
            fire = burst | fanout
            if not fire.any():
                continue
            score = np.where(fire, gpus * 1000 + vcpus + count, -1)
            i = int(np.argmax(score))
            part = grp.iloc[i:end[i]]
            ptype = none_if_na(part["principal_type"].iloc[0])
            w = weight(ptype, cfg.principal_type_weights)
            burst_b = (cfg.belief_burst if gpus[i] > 0 else cfg.belief_burst_cpu) if burst[i] else 0.0
            b = 1 - (1 - burst_b) * (1 - (cfg.belief_fanout if fanout[i] else 0.0))
            belief = min(cfg.max_belief, b * w)
            resources = sorted(r for r in part["resource"].dropna().unique())
            region_list = sorted(r for r in part["region"].dropna().unique())
            spot = int(part["spot"].fillna(False).astype(bool).sum())
            reasons = []
            if burst[i] and has_history[i]:
                reasons.append(f"its largest earlier hour had {hist['count'][i]:.0f} launch(es), "
                               f"{hist['vcpus'][i]:.0f} vCPUs, {hist['gpus'][i]:.0f} GPUs")
            if fanout[i]:
                reasons.append(f"spread over {n_regions[i]} regions at once")
            evidence = (
                f"{ptype or 'unknown'} {principal} launched or requested {int(count[i])} instance(s) "
                f"({int(vcpus[i])} vCPUs, {int(gpus[i])} GPUs, {spot} spot) within {cfg.window_minutes:.0f} min from "
                f"{fmt_time(part['time'].iloc[0])} in {', '.join(region_list) or '?'}: {'; '.join(reasons)}"
                f"{' (agent principals weigh more)' if w > 1 else ''}"
            )
            out.append(Hit(
                rule=self.id, cloud=str(cloud), account=str(account), resource=None, principal=str(principal),
                principal_type=ptype, start=part["time"].min().to_pydatetime(),
                end=part["time"].max().to_pydatetime(), belief=round(belief, 4), evidence=evidence,
                region=region_list[0] if region_list else None, family=self.family,
                facts={"count": int(count[i]), "vcpus": int(vcpus[i]), "gpus": int(gpus[i]), "regions": region_list,
                       "burst": bool(burst[i]), "fanout": bool(fanout[i]), "resources": resources[:50]},
            ))
        return out
