"""miner-flow-shape: a long-lived, low-volume, steady connection of small packets to one external peer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spendwatch.findings import Hit, Severity
from spendwatch.records import Tables

from .. import intel
from ..features import Features
from .base import Rule, RuleConfig, fmt_bytes, fmt_time, none_if_na
from .pool_domain import match_pool_domain

# Remote ports of protocols whose steady trickles look like Stratum but are not: SSH, DNS/DoT, NTP, LDAP,
# databases and their replication, message brokers and MQTT, VPNs, BGP. Pools do not listen there.
NOT_STRATUM_PORTS: frozenset[int] = frozenset({
    22, 53, 123, 179, 389, 500, 636, 853, 1194, 1433, 1521, 1883, 2049, 3306, 4500, 5432, 5671, 5672, 6379,
    8883, 9042, 11211, 27017, 51820,
})


@dataclass(frozen=True)
class MinerFlowShapeConfig(RuleConfig):
    belief: float = 0.4  # the peer is unnamed in the account's DNS logs, or there are no DNS logs
    belief_unnamed: float = 0.45  # DNS logs exist and never named this peer: a pool by IP, a proxy, 3rd-party DNS
    belief_named: float = 0.3  # the peer answered for an ordinary (non-pool) name in the account's DNS logs
    not_stratum_ports: frozenset[int] = NOT_STRATUM_PORTS
    max_bin_cv: float = 0.75  # per-interval bytes this uneven are interactive (SSH-like) or batchy, not a miner
    interval_minutes: float = 10.0  # aggregation bins (VPC flow logs: 1 or 10 min)
    min_hours: float = 2.0
    min_presence: float = 0.8  # share of bins between first and last in which the peer appears
    min_bytes_per_packet: float = 80.0  # Stratum/JSON-RPC messages are ~100-150 bytes
    max_bytes_per_packet: float = 200.0
    min_bytes_per_minute: float = 500.0  # captured XMR sessions: ~1-6 KB/min
    max_bytes_per_minute: float = 12_000.0  # headroom over captures: busy pools send jobs more often
    max_bin_bytes_per_minute: float = 50_000.0  # any bin above this is bulk transfer: not a miner's trickle


class MinerFlowShapeRule(Rule):
    """A resource, as the client, kept a TCP connection with one public peer for hours: present in most
    intervals, small packets (~80-200 bytes), a steady trickle of ~0.5-12 KB/min and never a bulk burst.

    Catches: Stratum and XMRig JSON-RPC sessions (login, job, submit, keepalived every ~60 s): tiny, steady,
    persistent, whatever the port and whether the pool was reached by name or IP: Stratum over TLS on 443,
    xmrig-proxy or a VPS in front of the pool, pools by IP and third-party DNS all keep this shape. A peer that
    the account's DNS logs never named (while they exist) gets more belief (0.45): that is what a pool by IP,
    a proxy or a resolver outside the logs looks like; a peer named by an ordinary name gets less (0.3).
    Stays silent on: NTP and DNS (UDP, and their ports), SSH sessions (port 22 either way; the resource must be
    the client on an ephemeral port, and interactive traffic is uneven: per-interval CV above 0.75), database
    replication and brokers (their ports; bulk), monitoring agents (request bodies fill packets: far above 200
    bytes per packet) and package mirrors (bulk transfer, MTU-sized packets).
    Misses: miners behind a proxy that batches traffic, pools that send large jobs, short sessions, and a
    Stratum server listening on one of the excluded service ports.
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
            & (pairs["bin_cv"] <= cfg.max_bin_cv)
        ]
        if not len(sel):
            return []
        sel = sel.assign(naming=self.naming(sel, features))
        out: list[Hit] = []
        for (cloud, account, resource), grp in sel.groupby(["cloud", "account", "resource"], sort=True):
            grp = grp.sort_values("hours", ascending=False)
            top = grp.iloc[0]
            naming = str(top["naming"])
            belief = {"unnamed": cfg.belief_unnamed, "pool-named": cfg.belief_unnamed,
                      "named": cfg.belief_named}.get(naming, cfg.belief)
            said = {"unnamed": "; the account's DNS logs never named this peer (pool by IP, proxy or DNS outside "
                               "the logs)",
                    "pool-named": f"; the peer answered for the pool name {top['name']} in the account's DNS logs",
                    "named": f"; the peer answered for {top['name']} in the account's DNS logs"}.get(naming, "")
            port = f":{int(top['remote_port'])}" if pd.notna(top["remote_port"]) else ""
            more = f" (and {len(grp) - 1} more peer(s) like it)" if len(grp) > 1 else ""
            evidence = (
                f"{resource} kept a steady connection with {top['remote']}{port} for {top['hours']:.1f} h "
                f"({fmt_time(top['start'])} to {fmt_time(top['end'])}): present in {int(top['bins'])} of "
                f"{int(top['span_bins'])} {cfg.interval_minutes:.0f}-min intervals, "
                f"{top['bpm'] / 1000:.1f} KB/min at {top['bpp']:.0f} bytes/packet, busiest interval "
                f"{top['max_bin_bpm'] / 1000:.1f} KB/min, {fmt_bytes(float(top['bytes']))} in all; no bulk "
                f"transfer{said}{more}"
            )
            out.append(Hit(
                rule=self.id, cloud=str(cloud), account=str(account), resource=str(resource), principal=None,
                start=grp["start"].min().to_pydatetime(), end=grp["end"].max().to_pydatetime(),
                belief=belief, evidence=evidence, region=none_if_na(top["region"]), family=self.family,
                facts={"peers": [f"{r}" for r in grp["remote"].head(10)], "hours": round(float(top["hours"]), 2),
                       "naming": naming, "bin_cv": round(float(top["bin_cv"]), 3),
                       "bytes_per_minute": round(float(top["bpm"]), 1),
                       "bytes_per_packet": round(float(top["bpp"]), 1)},
            ))
        return out

    @staticmethod
    def naming(pairs: pd.DataFrame, features: Features) -> pd.Series:
        """Per candidate pair: "named" (an ordinary name resolved to the peer in the account's DNS logs, kept
        in `name`), "pool-named" (only pool names did, kept in `name`), "unnamed" (DNS logs exist for the account
        but never named it), or "no-dns" (no DNS records for the account at all)."""
        ans = features.dns_answers
        dns = features.tables.dns
        with_dns = set(zip(dns["cloud"], dns["account"], strict=True)) if len(dns) else set()
        names = pd.Series(ans["query"].unique(), dtype="str")
        is_pool = (match_pool_domain(names, intel.pool_domains()).notna().to_numpy()[
            pd.Index(names).get_indexer(ans["query"])] if len(ans) else np.zeros(0, dtype=bool))
        keys = pd.MultiIndex.from_arrays([pairs["cloud"], pairs["account"], pairs["remote"]])

        def first_name(answers: pd.DataFrame) -> pd.Series:
            if not len(answers):
                return pd.Series(np.nan, index=pairs.index, dtype="object")
            by_address = answers.drop_duplicates(["cloud", "account", "address"]).set_index(
                ["cloud", "account", "address"])["query"]
            return pd.Series(by_address.reindex(keys).to_numpy(), index=pairs.index)

        name, pool_name = first_name(ans[~is_pool]), first_name(ans[is_pool])
        has_dns = pd.Series([(c, a) in with_dns for c, a in zip(pairs["cloud"], pairs["account"], strict=True)],
                            index=pairs.index)
        pairs["name"] = name.where(name.notna(), pool_name)
        naming = np.where(name.notna(), "named", np.where(pool_name.notna(), "pool-named",
                                                          np.where(has_dns, "unnamed", "no-dns")))
        return pd.Series(naming, index=pairs.index)

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
        proto = fl["protocol"].to_numpy(dtype="float64")
        keep &= np.isnan(proto) | (proto == 6)  # Stratum is TCP; NTP, DNS and QUIC are not
        local = fl["local_port"].to_numpy(dtype="float64")
        remote = fl["remote_port"].to_numpy(dtype="float64")
        # the resource is the client: an ephemeral local port (a server's port means someone connected to it)
        keep &= np.isnan(local) | ((local >= 1024) & ((local > remote) | (local >= 32768)))
        keep &= ~np.isin(remote, np.fromiter(cfg.not_stratum_ports, dtype="float64"))
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
        bins = per_bin.groupby(level="pair").agg(["size", "max", "mean", "std"])
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
        out["bin_cv"] = (bins["std"] / bins["mean"]).fillna(0.0)
        first_rows = first_row[out.index.to_numpy()]
        for col in ("cloud", "account", "resource", "remote", "region", "remote_port"):
            out[col] = fl[col].to_numpy()[first_rows]
        return out.reset_index(drop=True)
