"""quota-recon: a principal looks up compute quotas across many regions or asks for more, then launches GPUs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from spendwatch.findings import Hit, Severity
from spendwatch.records import Tables

from ..features import Features
from ._acquisition import default_weights, launches, weight
from .base import Rule, RuleConfig, fmt_time, none_if_na


@dataclass(frozen=True)
class QuotaReconConfig(RuleConfig):
    belief_recon: float = 0.3  # quota look-ups in min_regions regions within window_hours
    belief_request: float = 0.3  # a quota increase request
    belief_followed: float = 0.25  # ... followed by a GPU launch attempt within follow_hours
    max_belief: float = 0.6
    window_hours: float = 2.0
    min_regions: int = 3
    follow_hours: float = 24.0
    principal_type_weights: dict[str, float] = field(default_factory=default_weights)


class QuotaReconRule(Rule):
    """A principal looked up service quotas (GetServiceQuota, ListServiceQuotas, ...) in three or more regions
    within two hours, or requested a quota increase; more belief when a GPU launch attempt (successful or
    refused) by the same principal follows within a day.

    Catches: the agent (or stolen-key) pattern of finding where capacity is before grabbing it: vCPU quota
    look-ups across regions, RequestServiceQuotaIncrease for G/P instance quotas, then launches where the
    quota allows. A principal-level hit that fusion attaches to the instances the principal launched.
    Misses: reconnaissance through DescribeInstanceTypeOfferings or the console's quota page (not logged as
    quota calls), look-ups spread over days, and capacity planning by people, which looks the same (hence
    weak beliefs; agents weigh 1.3).
    """

    id = "quota-recon"
    title = "Quota reconnaissance or increase request before GPU launches"
    severity = Severity.LOW
    technique = "T1580"
    family = "recon"
    config_type = QuotaReconConfig

    def hits(self, tables: Tables, features: Features) -> list[Hit]:
        cfg: QuotaReconConfig = self.config  # type: ignore[assignment]
        act = tables.activity
        if not len(act):
            return []
        action = act["action"].str.lower()
        quota = act[action.isin(("quota_lookup", "quota_request")).fillna(False)]
        if not len(quota):
            return []
        gpu_launch = launches(act, ("launch", "launch_request", "start"), include_failed=True)
        gpu_launch = gpu_launch[gpu_launch["gpus_n"] > 0]
        window = np.int64(cfg.window_hours * 3600e9)
        out: list[Hit] = []
        for (cloud, account, principal), grp in quota.groupby(["cloud", "account", "principal"], sort=True):
            grp = grp.sort_values("time")
            looks = grp[grp["action"].str.lower() == "quota_lookup"]
            requests = grp[grp["action"].str.lower() == "quota_request"]
            t = looks["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
            regions = looks["region"].to_numpy(dtype=object)
            end = np.searchsorted(t, t + window, side="left")
            spread = max((len({r for r in regions[i:end[i]] if isinstance(r, str)}) for i in range(len(t))),
                         default=0)
            recon = spread >= cfg.min_regions
            if not recon and not len(requests):
                continue
            last = grp["time"].max()
            mine = gpu_launch[(gpu_launch["cloud"] == cloud) & (gpu_launch["account"] == account)
                              & (gpu_launch["principal"] == principal) & (gpu_launch["time"] >= grp["time"].min())
                              & (gpu_launch["time"] <= last + pd.Timedelta(hours=cfg.follow_hours))]
            ptype = none_if_na(grp["principal_type"].iloc[0])
            w = weight(ptype, cfg.principal_type_weights)
            b = 1 - ((1 - (cfg.belief_recon if recon else 0.0)) * (1 - (cfg.belief_request if len(requests) else 0.0))
                     * (1 - (cfg.belief_followed if len(mine) else 0.0)))
            belief = min(cfg.max_belief, b * w)
            parts = []
            if recon:
                parts.append(f"{len(looks)} quota look-up(s) across {spread} regions within {cfg.window_hours:g} h "
                             f"({', '.join(sorted({r for r in regions if isinstance(r, str)})[:6])})")
            if len(requests):
                codes = ", ".join(sorted(requests["resource"].dropna().astype(str).unique())[:3])
                parts.append(f"{len(requests)} quota increase request(s) ({codes or '?'})")
            if len(mine):
                refused = int(mine["error"].notna().sum())
                parts.append(f"then {len(mine)} GPU launch attempt(s) from {fmt_time(mine['time'].min())}"
                             f"{f', {refused} refused' if refused else ''}")
            evidence = (f"{ptype or 'unknown'} {principal} made {'; '.join(parts)} (from {fmt_time(grp['time'].min())})"
                        f"{' (agent principals weigh more)' if w > 1 else ''}")
            out.append(Hit(
                rule=self.id, cloud=str(cloud), account=str(account), resource=None, principal=str(principal),
                principal_type=ptype, start=grp["time"].min().to_pydatetime(),
                end=max(last, mine["time"].max() if len(mine) else last).to_pydatetime(), belief=round(belief, 4),
                evidence=evidence, region=none_if_na(grp["region"].iloc[0]), family=self.family,
                facts={"lookups": len(looks), "regions": int(spread), "requests": len(requests),
                       "gpu_launches_after": len(mine)},
            ))
        return out
