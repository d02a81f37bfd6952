"""new-gpu-launch: GPU instances launched by a first-time GPU launcher or in a region the account never used."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from spendwatch import catalog
from spendwatch.findings import Hit, Severity
from spendwatch.records import Tables

from ..features import Features
from .base import Rule, RuleConfig, fmt_time, none_if_na


def _default_weights() -> dict[str, float]:
    return {"agent": 1.6, "human": 1.0, "role": 1.0, "service": 0.8}


@dataclass(frozen=True)
class NewGpuLaunchConfig(RuleConfig):
    belief_new_principal: float = 0.25  # the principal never launched a GPU instance before
    belief_new_region: float = 0.2  # the account never did anything in this region before
    belief_principal_new_region: float = 0.15  # the principal launched before, but never in this region
    principal_type_weights: dict[str, float] = field(default_factory=_default_weights)
    max_belief: float = 0.6
    burst_minutes: float = 60.0  # launches this soon after the first one belong to the same first time
    min_history_hours: float = 24.0  # with less history before the launch we cannot call anything "new"
    launch_actions: tuple[str, ...] = ("launch", "start")


class NewGpuLaunchRule(Rule):
    """A GPU (accelerated) instance launched by a principal that never launched one before in the data, in a
    region where the account had no activity before, or in a region where the principal never launched before
    (0.15); agent principals weigh more.

    Catches: stolen keys and misbehaving AI agents that start GPU capacity, often in an unused region
    (MITRE T1578.002 Create Cloud Instance; T1535 Unused/Unsupported Cloud Regions). Uses the activity
    history inside the data, everything before the launch: a launch within `burst_minutes` of the
    principal's (or region's) first counts as part of the same first time, so all instances of a burst get
    the hit. Needs `min_history_hours` of account activity before the launch, else it says nothing.
    Misses: abuse by a principal that launches GPUs routinely in its usual region, instances started outside
    the control-plane log (e.g. by an autoscaling group the log attributes to a service), and everything when
    history is short. Belief: 1 - (1 - principal part)(1 - region part), times the principal-type weight,
    capped at `max_belief` (0.6).
    """

    id = "new-gpu-launch"
    title = "GPU launch by a first-time principal or in a new region"
    severity = Severity.LOW
    technique = "T1578.002"
    family = "launch"
    config_type = NewGpuLaunchConfig

    def hits(self, tables: Tables, features: Features) -> list[Hit]:
        cfg: NewGpuLaunchConfig = self.config  # type: ignore[assignment]
        act = tables.activity
        if not len(act):
            return []
        ok = act["error"].isna() & act["action"].str.lower().isin(cfg.launch_actions).fillna(False)
        launches = act[ok]
        if not len(launches):
            return []
        types = launches["instance_type"]
        accel_type = {t: catalog.is_accelerated(t) for t in types.dropna().unique()}
        accel = (launches["gpus"].fillna(0) > 0).to_numpy(dtype=bool) | types.map(accel_type).fillna(False) \
            .to_numpy(dtype=bool)
        gpu = launches[accel]
        if not len(gpu):
            return []
        burst = pd.Timedelta(minutes=cfg.burst_minutes)
        pkey = ["cloud", "account", "principal"]
        first_gpu = gpu.groupby(pkey)["time"].transform("min")
        new_principal = (gpu["time"] - first_gpu) <= burst
        prior_gpu = gpu.groupby(pkey)["time"].transform("size")
        region_first = act.groupby(["cloud", "account", "region"])["time"].min()
        rf = pd.Series(region_first.reindex(pd.MultiIndex.from_frame(gpu[["cloud", "account", "region"]]))
                       .to_numpy(), index=gpu.index)
        new_region = gpu["region"].notna() & ((gpu["time"] - rf) <= burst)
        # the principal's first launch (of any kind) in this region, against its first launch anywhere
        pr_first = launches.groupby([*pkey, "region"])["time"].min()
        prf = pd.Series(pr_first.reindex(pd.MultiIndex.from_frame(gpu[[*pkey, "region"]])).to_numpy(),
                        index=gpu.index)
        p_first = launches.groupby(pkey)["time"].min()
        pf = pd.Series(p_first.reindex(pd.MultiIndex.from_frame(gpu[pkey])).to_numpy(), index=gpu.index)
        new_p_region = (gpu["region"].notna() & ((gpu["time"] - prf) <= burst) & ((gpu["time"] - pf) > burst)
                        & ~new_region)
        account_first = act.groupby(["cloud", "account"])["time"].min()
        af = pd.Series(account_first.reindex(pd.MultiIndex.from_frame(gpu[["cloud", "account"]])).to_numpy(),
                       index=gpu.index)
        history = (gpu["time"] - af) >= pd.Timedelta(hours=cfg.min_history_hours)
        fire = history & (new_principal | new_region | new_p_region)
        if not fire.any():
            return []
        # Earlier launches of each principal (any kind) and regions seen, for the evidence sentence.
        all_launch = launches.groupby(pkey)["time"]
        out: list[Hit] = []
        for i in np.flatnonzero(fire.to_numpy()):
            row = gpu.iloc[i]
            idx = gpu.index[i]
            ptype = none_if_na(row["principal_type"]) or "unknown"
            weight = cfg.principal_type_weights.get(ptype.lower(), 1.0)
            p_part = cfg.belief_new_principal if new_principal.loc[idx] else 0.0
            r_part = cfg.belief_new_region if new_region.loc[idx] else (
                cfg.belief_principal_new_region if new_p_region.loc[idx] else 0.0)
            belief = min(cfg.max_belief, (1 - (1 - p_part) * (1 - r_part)) * weight)
            key = (row["cloud"], row["account"], row["principal"])
            earlier = all_launch.get_group(key)
            n_before = int((earlier < row["time"]).sum())
            history_days = (row["time"] - af.loc[idx]).total_seconds() / 86400
            itype = none_if_na(row["instance_type"]) or "an accelerated instance"
            gpus = row["gpus"]
            if pd.isna(gpus) and (known := catalog.lookup(none_if_na(row["instance_type"]))) is not None:
                gpus = known.gpus
            gpu_text = f" ({int(gpus)} GPUs)" if pd.notna(gpus) and gpus else ""
            reasons = []
            if new_principal.loc[idx]:
                before = (f"{n_before} earlier launch(es) by it, none with GPUs" if n_before
                          else "no earlier launch by it at all")
                reasons.append(f"its first GPU launch in {history_days:.1f} days of account activity ({before})")
            if new_region.loc[idx]:
                reasons.append(f"the account had no activity in {row['region']} before "
                               f"{fmt_time(rf.loc[idx])}")
            elif new_p_region.loc[idx]:
                reasons.append(f"its first launch in {row['region']}, where the account is active but it never "
                               f"launched before")
            resource = none_if_na(row["resource"])
            evidence = (
                f"{ptype} {row['principal']} launched {itype}{gpu_text}"
                f"{' ' + resource if resource else ''} in {none_if_na(row['region']) or 'an unknown region'} "
                f"at {fmt_time(row['time'])}: {'; '.join(reasons)}"
                f"{' (agent principals weigh more)' if weight > 1 else ''}"
            )
            out.append(Hit(
                rule=self.id, cloud=str(row["cloud"]), account=str(row["account"]), resource=resource,
                principal=str(row["principal"]), principal_type=none_if_na(row["principal_type"]),
                start=row["time"].to_pydatetime(), end=row["time"].to_pydatetime(), belief=round(belief, 4),
                evidence=evidence, region=none_if_na(row["region"]), family=self.family,
                facts={"new_principal": bool(new_principal.loc[idx]), "new_region": bool(new_region.loc[idx]),
                       "principal_new_region": bool(new_p_region.loc[idx]),
                       "instance_type": none_if_na(row["instance_type"]), "gpu_launches": int(prior_gpu.loc[idx])},
            ))
        return out
