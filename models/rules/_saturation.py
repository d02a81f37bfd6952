"""Shared series logic for the saturation rules: sustained high runs, dips and their regularity.

Vectorised over all resources at once: one sorted frame, run ids by cumulative sum of breaks, groupby.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .base import RuleConfig, fmt_bytes, fmt_time


@dataclass(frozen=True)
class SaturationConfig(RuleConfig):
    belief: float = 0.3  # flat pegged series, no dips: the mining shape
    belief_unflat: float = 0.2  # pegged for long enough but with dips or jitter
    belief_training: float = 0.05  # regular dips and large ingress: the training shape
    against_training: float = 0.4  # mass on "legitimate" for the training shape
    threshold_pct: float = 95.0
    min_minutes: float = 30.0
    max_gap_minutes: float = 15.0  # a longer hole in the samples ends a run (we do not know what happened)
    flat_std_pct: float = 2.0  # std inside the run at or below this is "flat"
    dip_below_pct: float = 80.0  # a sample under this is a dip (evaluation, checkpoint, data stall)
    min_regular_dips: int = 3
    max_dip_interval_cv: float = 0.35  # dips this evenly spaced are a schedule (eval every N steps)
    training_ingress_bytes: float = 1e9  # a training job pulls data; a miner pulls kilobytes


SUMMARY_COLUMNS = ["cloud", "account", "resource", "start", "end", "minutes", "mean", "std", "devices",
                   "dips", "dip_interval_min", "dip_interval_cv", "series_minutes"]


def summarise(series: pd.DataFrame, cfg: SaturationConfig) -> pd.DataFrame:
    """Per resource with a high run of at least `min_minutes`: the longest run and the series' dips.

    `series` has cloud, account, resource, time, value (one sample per time) and devices, sorted by
    resource then time (as `Features.utilization` returns it).
    """
    if not len(series):
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    grp = series.groupby(["cloud", "account", "resource"], sort=False, observed=True).ngroup().to_numpy()
    t = series["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
    v = series["value"].to_numpy(dtype="float64")
    new_group = np.r_[True, grp[1:] != grp[:-1]]
    gap = np.r_[True, np.diff(t) > cfg.max_gap_minutes * 60e9]
    high = v >= cfg.threshold_pct
    run_break = new_group | gap | np.r_[True, high[1:] != high[:-1]]
    run_id = np.cumsum(run_break)
    frame = pd.DataFrame({"g": grp, "run": run_id, "t": t, "v": v, "high": high})
    runs = frame[frame["high"]].groupby("run").agg(g=("g", "first"), start=("t", "min"), end=("t", "max"),
                                                   mean=("v", "mean"), std=("v", "std"))
    runs["minutes"] = (runs["end"] - runs["start"]) / 60e9
    runs = runs[runs["minutes"] >= cfg.min_minutes]
    if not len(runs):
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    best = runs.sort_values("minutes").groupby("g").last()

    # Dips: a sample under dip_below that follows one at or above it (a series that starts low is warm-up).
    low = v < cfg.dip_below_pct
    dip_start = low & ~new_group & np.r_[False, ~low[:-1]]
    dips = pd.DataFrame({"g": grp[dip_start], "t": t[dip_start]})
    dips["interval"] = dips.groupby("g")["t"].diff() / 60e9
    dip_stats = dips.groupby("g").agg(dips=("t", "size"), dip_interval_min=("interval", "mean"),
                                      dip_interval_sd=("interval", "std"))
    span = frame.groupby("g")["t"].agg(["min", "max"])
    keys = series[["cloud", "account", "resource"]].drop_duplicates().reset_index(drop=True)
    devices = series.groupby(grp)["devices"].max() if "devices" in series else pd.Series(dtype="float64")

    out = best.join(dip_stats, how="left").join(span, how="left")
    out["dips"] = out["dips"].fillna(0).astype("int64")
    out["dip_interval_cv"] = out["dip_interval_sd"] / out["dip_interval_min"]
    out["series_minutes"] = (out["max"] - out["min"]) / 60e9
    out["devices"] = devices.reindex(out.index).fillna(1).to_numpy()
    out = out.join(keys, how="left")
    out["start"] = pd.to_datetime(out["start"], utc=True)
    out["end"] = pd.to_datetime(out["end"], utc=True)
    out["std"] = out["std"].fillna(0.0)
    return out.reset_index(drop=True)[SUMMARY_COLUMNS]


def regular_dips(row: pd.Series, cfg: SaturationConfig) -> bool:
    cv = row["dip_interval_cv"]
    return bool(row["dips"] >= cfg.min_regular_dips and pd.notna(cv) and cv <= cfg.max_dip_interval_cv)


def is_flat(row: pd.Series, cfg: SaturationConfig) -> bool:
    return bool(row["std"] <= cfg.flat_std_pct and row["dips"] == 0)


def describe(row: pd.Series, cfg: SaturationConfig, ingress: float, label: str) -> tuple[float, float, str, str]:
    """(belief, against, shape, evidence sentence) for one summary row; the shape is flat/training/uneven."""
    regular = regular_dips(row, cfg)
    big_ingress = ingress >= cfg.training_ingress_bytes
    if regular and big_ingress:
        belief, against, shape = cfg.belief_training, cfg.against_training, "training"
    elif is_flat(row, cfg) and big_ingress:  # flat, but pulling gigabytes: a data-loading job, not a miner
        belief, against, shape = cfg.belief_unflat, 0.0, "flat-ingress"
    elif is_flat(row, cfg):
        belief, against, shape = cfg.belief, 0.0, "flat"
    else:
        belief, against, shape = cfg.belief_unflat, 0.0, "uneven"
    devices = int(row["devices"])
    across = f" (mean of {devices} devices)" if devices > 1 else ""
    if row["dips"]:
        every = (f", about every {row['dip_interval_min']:.0f} min (cv {row['dip_interval_cv']:.2f})"
                 if pd.notna(row["dip_interval_min"]) else "")
        dips = f"{int(row['dips'])} dip(s) below {cfg.dip_below_pct:.0f} %{every}"
    else:
        dips = f"no dip below {cfg.dip_below_pct:.0f} %"
    verdict = {
        "flat": "flat, the shape of a miner",
        "training": f"regular dips and {fmt_bytes(ingress)} ingress, the shape of a training job",
        "uneven": "pegged but not flat",
        "flat-ingress": f"flat, but with {fmt_bytes(ingress)} ingress, the shape of a data-hungry job",
    }[shape]
    evidence = (
        f"{label} utilisation of {row['resource']}{across} stayed >= {cfg.threshold_pct:.0f} % for "
        f"{row['minutes'] / 60:.1f} h ({fmt_time(row['start'])} to {fmt_time(row['end'])}; mean "
        f"{row['mean']:.1f} %, std {row['std']:.1f}) with {dips} in {row['series_minutes'] / 60:.1f} h of "
        f"samples and {fmt_bytes(ingress)} received from public addresses: {verdict}"
    )
    return belief, against, shape, evidence
