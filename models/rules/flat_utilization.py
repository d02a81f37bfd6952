"""flat-utilization: CPU or GPU held at one mid level, unnaturally flat, for many hours (throttled mining)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spendwatch.findings import Hit, Severity
from spendwatch.records import Tables

from ..features import Features
from .base import Rule, RuleConfig, fmt_time


@dataclass(frozen=True)
class FlatUtilizationConfig(RuleConfig):
    belief: float = 0.25
    metrics: tuple[str, ...] = ("gpu_util", "cpu_util")
    min_level_pct: float = 30.0  # below: idle-ish hosts, whose flatness says nothing
    max_level_pct: float = 95.0  # at or above: the saturation rules' business
    window_minutes: float = 60.0
    flat_std_pct: float = 0.6  # std of the samples inside one window (web hosts at their daily peak: ~1)
    step_pct: float = 1.5  # neighbouring windows' means differ by at most this
    max_range_pct: float = 2.0  # the whole plateau stays within this band
    min_hours: float = 8.0  # web traffic drifts over hours; a throttled miner does not
    min_samples: int = 4  # per window (5-minute metrics give 12 an hour)


class FlatUtilizationRule(Rule):
    """CPU or GPU utilisation held flat at one level between 30 and 95 % for at least eight hours: every hourly
    window's standard deviation within 0.6 points, neighbouring windows within 1.5 points, the whole plateau
    within a 2-point band (a web host at its daily peak has an hourly std near 1 and drifts 3 points).

    Catches: throttled miners (XMRig's max-threads hint or a duty-cycle limiter at 20-60 %, GPU miners with
    a power or intensity cap): they trade hash rate for staying under "pegged" alarms, but a capped hash loop
    is as flat as an uncapped one. Same family as the saturation rules (one fact: how the compute is used), so
    it adds nothing where a pegged hit already exists; weak alone (0.25), it matters beside network evidence.
    Misses: miners that vary their cap, plateaus under 30 % (indistinguishable from idle hosts with agents)
    or shorter than eight hours, and hosts without utilisation metrics. Legit steady services (an inference
    server at a constant load) can match: hence low belief.
    """

    id = "flat-utilization"
    title = "Utilisation held flat at a mid level for hours"
    severity = Severity.LOW
    technique = "T1496.001"
    family = "saturation"
    config_type = FlatUtilizationConfig

    def hits(self, tables: Tables, features: Features) -> list[Hit]:
        cfg: FlatUtilizationConfig = self.config  # type: ignore[assignment]
        out: list[Hit] = []
        for metric in cfg.metrics:
            out.extend(self._metric(features.utilization(metric), metric, cfg))
        return out

    def _metric(self, series: pd.DataFrame, metric: str, cfg: FlatUtilizationConfig) -> list[Hit]:
        if not len(series):
            return []
        grp = series.groupby(["cloud", "account", "resource"], sort=False, observed=True).ngroup().to_numpy()
        t = series["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
        win = t // int(cfg.window_minutes * 60e9)
        frame = pd.DataFrame({"g": grp, "w": win, "v": series["value"].to_numpy(dtype="float64")})
        stats = frame.groupby(["g", "w"], sort=True)["v"].agg(["mean", "std", "size"]).reset_index()
        flat = ((stats["std"].fillna(0) <= cfg.flat_std_pct) & (stats["size"] >= cfg.min_samples)
                & (stats["mean"] >= cfg.min_level_pct) & (stats["mean"] < cfg.max_level_pct)).to_numpy()
        g, w, m = stats["g"].to_numpy(), stats["w"].to_numpy(), stats["mean"].to_numpy()
        cont = np.r_[False, (g[1:] == g[:-1]) & (w[1:] == w[:-1] + 1) & (np.abs(np.diff(m)) <= cfg.step_pct)]
        cont &= flat & np.r_[False, flat[:-1]]
        run = np.cumsum(~cont)
        stats = stats.assign(run=run, flat=flat)
        runs = stats[stats["flat"]].groupby("run").agg(g=("g", "first"), w0=("w", "min"), w1=("w", "max"),
                                                        lo=("mean", "min"), hi=("mean", "max"),
                                                        level=("mean", "mean"), sd=("std", "mean"))
        runs["hours"] = (runs["w1"] - runs["w0"] + 1) * cfg.window_minutes / 60
        runs = runs[(runs["hours"] >= cfg.min_hours) & (runs["hi"] - runs["lo"] <= cfg.max_range_pct)]
        if not len(runs):
            return []
        best = runs.sort_values("hours").groupby("g").last()
        keys = series[["cloud", "account", "resource"]].drop_duplicates().reset_index(drop=True)
        label = "GPU" if metric.startswith("gpu") else "CPU"
        out = []
        step = int(cfg.window_minutes * 60e9)
        for gi, row in best.iterrows():  # one row per flat resource: few
            key = keys.iloc[int(gi)]  # type: ignore[call-overload]
            start = pd.Timestamp(int(row["w0"]) * step, tz="UTC")
            end = pd.Timestamp((int(row["w1"]) + 1) * step, tz="UTC")
            evidence = (
                f"{label} utilisation of {key['resource']} held at {row['level']:.1f} % (hourly means between "
                f"{row['lo']:.1f} and {row['hi']:.1f} %, within-hour std {row['sd']:.2f}) for {row['hours']:.0f} h "
                f"({fmt_time(start)} to {fmt_time(end)}): flat at a mid level, the shape of a throttled miner"
            )
            out.append(Hit(
                rule=self.id, cloud=str(key["cloud"]), account=str(key["account"]), resource=str(key["resource"]),
                principal=None, start=start.to_pydatetime(), end=end.to_pydatetime(), belief=cfg.belief,
                evidence=evidence, family=self.family,
                facts={"metric": metric, "level_pct": round(float(row["level"]), 2),
                       "hours": float(row["hours"]), "range_pct": round(float(row["hi"] - row["lo"]), 2)},
            ))
        return out
