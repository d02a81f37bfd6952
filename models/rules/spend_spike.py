"""spend-spike: an account's, service's or resource's hourly spend far above its own recent baseline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spendwatch.findings import Hit, Severity
from spendwatch.records import Tables

from ..features import Features
from .base import Rule, RuleConfig, fmt_time, none_if_na


@dataclass(frozen=True)
class SpendSpikeConfig(RuleConfig):
    belief: float = 0.3  # a resource that drove its account's or service's spike
    belief_resource: float = 0.2  # a resource far above its own baseline
    baseline_hours: int = 72  # rolling window of earlier hours the baseline (median) is taken over
    min_baseline_hours: int = 6  # fewer earlier billed hours: no baseline, no verdict
    ratio: float = 3.0
    min_increase_usd: float = 3.0  # per hour, above the baseline: cents never page anyone
    min_hours: int = 2  # consecutive spiking hours
    max_resources: int = 50  # drivers reported per spike
    min_driver_usd: float = 0.25  # per hour: volumes, requests and other small lines do not drive a spike


def _spikes(hourly: pd.Series, cfg: SpendSpikeConfig) -> pd.DataFrame:
    """Per series (all index levels but `hour`): hours at or above ratio x baseline that last min_hours."""
    levels = [n for n in hourly.index.names if n != "hour"]
    frame = hourly.rename("cost").reset_index().sort_values([*levels, "hour"])
    grouped = frame.groupby(levels, sort=False)["cost"]
    frame["baseline"] = grouped.transform(
        lambda s: s.shift(1).rolling(cfg.baseline_hours, min_periods=cfg.min_baseline_hours).median())
    hot = ((frame["cost"] >= cfg.ratio * frame["baseline"])
           & (frame["cost"] - frame["baseline"] >= cfg.min_increase_usd)).to_numpy(dtype=bool)
    key = frame.groupby(levels, sort=False).ngroup().to_numpy()
    brk = np.r_[True, (key[1:] != key[:-1]) | (hot[1:] != hot[:-1])]
    run = np.cumsum(brk)
    frame["run"] = run
    frame["hot"] = hot
    size = frame.groupby("run")["hot"].transform("size")
    frame = frame[frame["hot"] & (size >= cfg.min_hours)]
    if not len(frame):
        return frame
    # the first hour of each spiking run carries the baseline it rose from
    first = frame.groupby("run").agg(**{c: (c, "first") for c in levels}, start=("hour", "min"), end=("hour", "max"),
                                     baseline=("baseline", "first"), peak=("cost", "max"), mean=("cost", "mean"))
    return first.reset_index(drop=True)


class SpendSpikeRule(Rule):
    """Hourly billed spend of an account, of one service in an account, or of one resource at or above three
    times its own median over the previous 72 hours (and at least $3/h more) for two hours running.

    Catches: what only the bill shows: instances in regions without flow logs or metrics, capacity bought
    through fleets or spot, services the other rules do not read. Account and service spikes name the
    resources that drove them (new in the spike, or themselves three times up) with a hit each, so fusion
    joins them to their other evidence and to the principal who launched them.
    Misses: the first hours of an incident (billing exports land hours late), spend of accounts with less
    than six billed hours of history, slow ramps, and anything cheap. A planned launch of a big job also
    spikes the bill: a weak signal alone (0.3).
    """

    id = "spend-spike"
    title = "Hourly spend far above its own baseline"
    severity = Severity.LOW
    technique = "T1496"
    family = "spend"
    config_type = SpendSpikeConfig

    def hits(self, tables: Tables, features: Features) -> list[Hit]:
        cfg: SpendSpikeConfig = self.config  # type: ignore[assignment]
        sp = tables.spend
        if not len(sp):
            return []
        sp = sp[sp["cost_usd"].notna()]
        acct = sp.groupby(["cloud", "account", "hour"], observed=True)["cost_usd"].sum()
        svc = sp.groupby(["cloud", "account", "service", "hour"], observed=True)["cost_usd"].sum()
        res_sp = sp[sp["resource"].notna()]
        res = res_sp.groupby(["cloud", "account", "resource", "hour"], observed=True)["cost_usd"].sum()
        if not len(res):
            return []
        first_billed = res.reset_index().groupby(["cloud", "account", "resource"])["hour"].min()
        regions = res_sp.drop_duplicates(["cloud", "account", "resource"]).set_index(
            ["cloud", "account", "resource"])["region"]
        best: dict[tuple[str, str, str], Hit] = {}

        def add(hit: Hit) -> None:
            key = (hit.cloud, hit.account, hit.resource or "")
            if key not in best or hit.belief > best[key].belief:
                best[key] = hit

        for level, series in (("account", acct), ("service", svc)):
            for _, spike in _spikes(series, cfg).iterrows():  # spikes are few
                cloud, account = spike["cloud"], spike["account"]
                scope = (f"{'service ' + str(spike['service']) + ' in ' if level == 'service' else ''}"
                         f"account {account}")
                in_spike = res.loc[(cloud, account)] if (cloud, account) in res.index.droplevel([2, 3]) else None
                if in_spike is None:
                    continue
                window = in_spike[(in_spike.index.get_level_values("hour") >= spike["start"])
                                  & (in_spike.index.get_level_values("hour") <= spike["end"])]
                per_res = window.groupby(level="resource").mean().sort_values(ascending=False)
                drivers = []
                for resource, cost in per_res.items():
                    if cost < cfg.min_driver_usd:
                        break  # sorted by cost: the rest are smaller
                    first = first_billed.get((cloud, account, resource))
                    before = in_spike.loc[resource]
                    before = before[before.index < spike["start"]]
                    new = first is not None and first >= spike["start"] - pd.Timedelta(hours=1)
                    grew = len(before) > 0 and cost >= cfg.ratio * float(before.median())
                    if new or grew:
                        # A resource that joined a running spike is evidence from its own first billed hour on.
                        since = max(spike["start"], first) if new and first is not None else spike["start"]
                        drivers.append((str(resource), float(cost), new, since))
                for resource, cost, new, since in drivers[:cfg.max_resources]:
                    evidence = (
                        f"hourly spend of {scope} rose from a baseline of ${spike['baseline']:.2f}/h (median of "
                        f"up to {cfg.baseline_hours} earlier hours) to ${spike['mean']:.2f}/h (peak "
                        f"${spike['peak']:.2f}) from {fmt_time(spike['start'])} to {fmt_time(spike['end'])}; "
                        f"{resource} {'first billed in the spike' if new else 'grew'} at ${cost:.2f}/h, one of "
                        f"{len(drivers)} resource(s) that drove it"
                    )
                    add(Hit(
                        rule=self.id, cloud=str(cloud), account=str(account), resource=resource, principal=None,
                        start=since.to_pydatetime(),
                        end=(spike["end"] + pd.Timedelta(hours=1)).to_pydatetime(), belief=cfg.belief,
                        evidence=evidence, region=none_if_na(regions.get((cloud, account, resource))),
                        family=self.family,
                        facts={"level": level, "baseline_usd_h": round(float(spike["baseline"]), 4),
                               "spike_usd_h": round(float(spike["mean"]), 4), "resource_usd_h": round(cost, 4),
                               "drivers": len(drivers)},
                    ))
        for _, spike in _spikes(res, cfg).iterrows():
            evidence = (
                f"hourly spend of {spike['resource']} rose from its own baseline of ${spike['baseline']:.2f}/h to "
                f"${spike['mean']:.2f}/h (peak ${spike['peak']:.2f}) from {fmt_time(spike['start'])} to "
                f"{fmt_time(spike['end'])}"
            )
            add(Hit(
                rule=self.id, cloud=str(spike["cloud"]), account=str(spike["account"]),
                resource=str(spike["resource"]), principal=None, start=spike["start"].to_pydatetime(),
                end=(spike["end"] + pd.Timedelta(hours=1)).to_pydatetime(), belief=cfg.belief_resource,
                evidence=evidence, family=self.family,
                region=none_if_na(regions.get((spike["cloud"], spike["account"], spike["resource"]))),
                facts={"level": "resource", "baseline_usd_h": round(float(spike["baseline"]), 4),
                       "spike_usd_h": round(float(spike["mean"]), 4)},
            ))
        return list(best.values())
