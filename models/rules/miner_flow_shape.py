"""miner-flow-shape: a long-lived, low-volume, steady connection of small packets to one external peer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spendwatch.findings import Hit, Severity
from spendwatch.records import Tables

from ..features import Features
from .base import Rule, RuleConfig, fmt_bytes, fmt_time, none_if_na


@dataclass(frozen=True)
class MinerFlowShapeConfig(RuleConfig):
    belief: float = 0.4
    interval_minutes: float = 10.0  # aggregation bins (VPC flow logs: 1 or 10 min)
    min_hours: float = 2.0
    min_presence: float = 0.8  # share of bins between first and last in which the peer appears
    min_bytes_per_packet: float = 80.0  # Stratum/JSON-RPC messages are ~100-150 bytes
    max_bytes_per_packet: float = 200.0
    min_bytes_per_minute: float = 500.0  # captured XMR sessions: ~1-6 KB/min
    max_bytes_per_minute: float = 12_000.0  # headroom over captures: busy pools send jobs more often
    max_bin_bytes_per_minute: float = 50_000.0  # any bin above this is bulk transfer: not a miner's trickle


class MinerFlowShapeRule(Rule):
    """A resource kept a connection with one public peer for hours: present in most intervals, small packets
    (~80-200 bytes), a trickle of ~0.5-12 KB/min and never a bulk burst.

    Catches: Stratum and XMRig JSON-RPC sessions (login, job, submit, keepalived every ~60 s): tiny, steady,
    persistent, whatever the port and whether the pool was reached by name or IP, TLS included.
    Misses: miners behind a proxy that batches traffic, pools that send large jobs, and short sessions.
    May also match other steady trickles (telemetry agents, MQTT, VPN keepalives), hence a modest belief
    (0.4); it never fires on bulk transfer such as training-data ingress (bytes per packet near the MTU,
    megabytes per minute). Basic version: a later issue deepens it (per-connection timing, periodicity).
    """

    id = "miner-flow-shape"
    title = "Steady low-volume connection shaped like a mining session"
    severity = Severity.LOW
    technique = "T1496.001"
    family = "flow-shape"
    config_type = MinerFlowShapeConfig

    def hits(self, tables: Tables, features: Features) -> list[Hit]:
        cfg: MinerFlowShapeConfig = self.config  # type: ignore[assignment]
        if not len(features.flows):
            return []
        pairs = self.pair_stats(features, cfg)
        if not len(pairs):
            return []
        sel = pairs[
            (pairs["hours"] >= cfg.min_hours)
            & (pairs["presence"] >= cfg.min_presence)
            & pairs["bpp"].between(cfg.min_bytes_per_packet, cfg.max_bytes_per_packet)
            & pairs["bpm"].between(cfg.min_bytes_per_minute, cfg.max_bytes_per_minute)
            & (pairs["max_bin_bpm"] <= cfg.max_bin_bytes_per_minute)
        ]
        out: list[Hit] = []
        for (cloud, account, resource), grp in sel.groupby(["cloud", "account", "resource"], sort=True):
            grp = grp.sort_values("hours", ascending=False)
            top = grp.iloc[0]
            port = f":{int(top['remote_port'])}" if pd.notna(top["remote_port"]) else ""
            more = f" (and {len(grp) - 1} more peer(s) like it)" if len(grp) > 1 else ""
            evidence = (
                f"{resource} kept a steady connection with {top['remote']}{port} for {top['hours']:.1f} h "
                f"({fmt_time(top['start'])} to {fmt_time(top['end'])}): present in {int(top['bins'])} of "
                f"{int(top['span_bins'])} {cfg.interval_minutes:.0f}-min intervals, "
                f"{top['bpm'] / 1000:.1f} KB/min at {top['bpp']:.0f} bytes/packet, busiest interval "
                f"{top['max_bin_bpm'] / 1000:.1f} KB/min, {fmt_bytes(float(top['bytes']))} in all; no bulk "
                f"transfer{more}"
            )
            out.append(Hit(
                rule=self.id, cloud=str(cloud), account=str(account), resource=str(resource), principal=None,
                start=grp["start"].min().to_pydatetime(), end=grp["end"].max().to_pydatetime(),
                belief=cfg.belief, evidence=evidence, region=none_if_na(top["region"]), family=self.family,
                facts={"peers": [f"{r}" for r in grp["remote"].head(10)], "hours": round(float(top["hours"]), 2),
                       "bytes_per_minute": round(float(top["bpm"]), 1),
                       "bytes_per_packet": round(float(top["bpp"]), 1)},
            ))
        return out

    @staticmethod
    def pair_stats(features: Features, cfg: MinerFlowShapeConfig) -> pd.DataFrame:
        """Per (resource, public peer) that could qualify: span, presence in bins, volume, packet size, peak.

        Two passes so millions of rows stay cheap: totals and span per pair with sorted reductions on integer
        codes first, then bins only for the few pairs whose totals already fit the shape.
        """
        fl = features.flows
        codes, first_row = features.flow_pairs
        keep = fl["remote_public"].to_numpy(dtype=bool) & fl["resource"].notna().to_numpy(dtype=bool)
        keep &= ~fl["rejected"].to_numpy(dtype=bool)
        rows = np.flatnonzero(keep)
        if not len(rows):
            return pd.DataFrame()
        code = codes[rows]
        order = np.argsort(code, kind="stable")
        rows, code = rows[order], code[order]
        start = fl["start"].to_numpy(dtype="datetime64[ns]").astype("int64")[rows]
        end = fl["end"].to_numpy(dtype="datetime64[ns]").astype("int64")[rows]
        bytes_ = fl["bytes"].to_numpy(dtype="float64")[rows]
        packets = fl["packets"].to_numpy(dtype="float64")[rows]
        bounds = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
        pair = code[bounds]
        total_bytes = np.add.reduceat(bytes_, bounds)
        total_packets = np.add.reduceat(packets, bounds)
        first = np.minimum.reduceat(start, bounds)
        last = np.maximum.reduceat(end, bounds)
        minutes = np.maximum((last - first) / 60e9, cfg.interval_minutes)
        bpp = total_bytes / np.maximum(total_packets, 1)
        bpm = total_bytes / minutes
        ok = ((minutes >= cfg.min_hours * 60) & (bpp >= cfg.min_bytes_per_packet)
              & (bpp <= cfg.max_bytes_per_packet) & (bpm >= cfg.min_bytes_per_minute)
              & (bpm <= cfg.max_bytes_per_minute))
        if not ok.any():
            return pd.DataFrame()
        # Second pass, candidates only: which interval bins each pair appears in, and the busiest one.
        cand = pd.DataFrame({"pair": code, "bin": start // int(cfg.interval_minutes * 60e9), "bytes": bytes_})
        cand = cand[np.isin(code, pair[ok])]
        per_bin = cand.groupby(["pair", "bin"], sort=False)["bytes"].sum()
        bins = per_bin.groupby(level="pair").agg(["size", "max"])
        bin_span = cand.groupby("pair")["bin"].agg(["min", "max"])
        out = pd.DataFrame({
            "pair": pair[ok], "bytes": total_bytes[ok], "packets": total_packets[ok],
            "start": pd.to_datetime(first[ok], utc=True), "end": pd.to_datetime(last[ok], utc=True),
            "hours": minutes[ok] / 60, "bpp": bpp[ok], "bpm": bpm[ok],
        }).set_index("pair")
        out["bins"] = bins["size"]
        out["span_bins"] = bin_span["max"] - bin_span["min"] + 1
        out["presence"] = out["bins"] / out["span_bins"]
        out["max_bin_bpm"] = bins["max"] / cfg.interval_minutes
        first_rows = first_row[out.index.to_numpy()]
        for col in ("cloud", "account", "resource", "remote", "region", "remote_port"):
            out[col] = fl[col].to_numpy()[first_rows]
        return out.reset_index(drop=True)
