"""key-then-launch: a new access key is created and launches by its user follow."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from spendwatch.findings import Hit, Severity
from spendwatch.records import Tables

from ..features import Features
from ._acquisition import default_weights, launches, weight
from .base import Rule, RuleConfig, fmt_time, none_if_na


@dataclass(frozen=True)
class KeyThenLaunchConfig(RuleConfig):
    belief: float = 0.3  # launches by the key's user soon after the key was created
    belief_gpu: float = 0.45  # ... and they include GPU instances
    follow_hours: float = 48.0
    max_belief: float = 0.6
    principal_type_weights: dict[str, float] = field(default_factory=default_weights)


class KeyThenLaunchRule(Rule):
    """An access key was created (CreateAccessKey) and the user it belongs to launched instances within two
    days; more belief when they have GPUs.

    Catches: persistence then abuse with stolen credentials: an intruder mints a long-lived key for a user
    (often a dormant service user) and spends with it. The hit is about the launching principal; fusion
    attaches it to what that principal launched.
    Misses: keys created outside the window or in another account's trail, launches through an assumed role
    (the session hides the key), and the key's first use long after its creation. A person rotating their own
    key and then deploying looks the same, hence a weak belief.
    """

    id = "key-then-launch"
    title = "New access key followed by launches"
    severity = Severity.LOW
    technique = "T1098.001"
    family = "key"
    config_type = KeyThenLaunchConfig

    def hits(self, tables: Tables, features: Features) -> list[Hit]:
        cfg: KeyThenLaunchConfig = self.config  # type: ignore[assignment]
        act = tables.activity
        if not len(act):
            return []
        keys = act[(act["action"].str.lower() == "key_create").fillna(False) & act["error"].isna()]
        if not len(keys):
            return []
        runs = launches(act, ("launch", "launch_request", "start"))
        if not len(runs):
            return []
        target = keys["target"] if "target" in keys else pd.Series(pd.NA, index=keys.index, dtype="str")
        out: list[Hit] = []
        for (_, key), user in zip(keys.iterrows(), target, strict=True):  # key creations are rare: loop
            name = none_if_na(user)
            after = runs[(runs["cloud"] == key["cloud"]) & (runs["account"] == key["account"])
                         & (runs["time"] >= key["time"])
                         & (runs["time"] <= key["time"] + pd.Timedelta(hours=cfg.follow_hours))]
            if name:
                mine = after[after["principal"].str.endswith(f":user/{name}").fillna(False)
                             | (after["principal"] == name)]
            else:
                mine = after[after["principal"] == key["principal"]]
            for principal, grp in mine.groupby("principal", sort=True):
                ptype = none_if_na(grp["principal_type"].iloc[0])
                w = weight(ptype, cfg.principal_type_weights)
                gpus = float(grp["gpus_n"].sum())
                belief = min(cfg.max_belief, (cfg.belief_gpu if gpus > 0 else cfg.belief) * w)
                hours = (grp["time"].min() - key["time"]).total_seconds() / 3600
                evidence = (
                    f"{none_if_na(key['principal_type']) or 'unknown'} {key['principal']} created access key "
                    f"{none_if_na(key['resource']) or '?'} for {name or 'itself'} at {fmt_time(key['time'])}; "
                    f"{hours:.1f} h later {principal} launched {len(grp)} instance(s) ({int(gpus)} GPUs) in "
                    f"{', '.join(sorted(grp['region'].dropna().unique())) or '?'}"
                )
                out.append(Hit(
                    rule=self.id, cloud=str(key["cloud"]), account=str(key["account"]), resource=None,
                    principal=str(principal), principal_type=ptype, start=key["time"].to_pydatetime(),
                    end=grp["time"].max().to_pydatetime(), belief=round(belief, 4), evidence=evidence,
                    region=none_if_na(grp["region"].iloc[0]), family=self.family,
                    facts={"key": none_if_na(key["resource"]), "launches": len(grp), "gpus": int(gpus),
                           "hours_after_key": round(hours, 2)},
                ))
        return out
