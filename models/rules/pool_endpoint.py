"""pool-endpoint: connections to the addresses that mining-pool names resolved to in the account's own DNS logs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from spendwatch.findings import Hit, Severity
from spendwatch.records import Tables

from .. import intel
from ..features import KEY, Features
from .base import Rule, RuleConfig, fmt_bytes, fmt_time, none_if_na
from .pool_domain import match_pool_domain


@dataclass(frozen=True)
class PoolEndpointConfig(RuleConfig):
    belief: float = 0.7
    extra_domains: frozenset[str] = field(default_factory=frozenset)  # site-specific pools to add
    ignore_domains: frozenset[str] = field(default_factory=frozenset)  # curated entries to drop
    skip_cdn: bool = True  # addresses in data/cdn_ranges.txt are never pool evidence by themselves
    include_rejected: bool = False
    max_examples: int = 3


class PoolEndpointRule(Rule):
    """A resource exchanged traffic with an address that a curated pool name resolved to in the same account's
    DNS logs (the `answers` of a Route 53 Resolver / Cloud DNS query for, say, `gulf.moneroocean.stream`).

    Catches: a miner whose own lookups the logs never see (third-party DNS, DNS-over-HTTPS, a hard-coded
    address) while another host of the account, or the same host earlier, resolved the pool through the logged
    resolver; and it confirms a pool-domain hit with actual traffic. It never resolves pool names itself (Falco
    ships its pool-connection rule disabled because resolving names and matching CDN addresses misfired).
    Not evidence by itself: an address that also answered a non-pool name in the account's DNS logs (a shared
    CDN or hosting address), and any address in a published CDN range (data/cdn_ranges.txt).
    Misses: pools no host of the account ever resolved through a logged resolver, pools by IP, and proxies.
    Same family as pool-domain (pool-intel): a lookup and the connection it led to are one piece of evidence.
    """

    id = "pool-endpoint"
    title = "Connection to an address a mining-pool name resolved to"
    severity = Severity.HIGH
    technique = "T1496.001"
    family = "pool-intel"
    config_type = PoolEndpointConfig

    def pool_addresses(self, features: Features) -> pd.DataFrame:
        """(cloud, account, address, pool) for addresses that only pool names resolved to in that account."""
        cfg: PoolEndpointConfig = self.config  # type: ignore[assignment]
        ans = features.dns_answers
        if not len(ans):
            return pd.DataFrame(columns=["cloud", "account", "address", "pool"])
        domains = (intel.pool_domains() | {d.lower() for d in cfg.extra_domains}) - set(cfg.ignore_domains)
        names = pd.Series(ans["query"].unique(), dtype="str")
        pool_of = dict(zip(names, match_pool_domain(names, frozenset(domains)), strict=True))
        ans = ans.assign(pool=ans["query"].map(pool_of))
        # An address that any non-pool name also resolved to (anywhere in the data) is shared: not evidence.
        shared = set(ans.loc[ans["pool"].isna(), "address"])
        hits = ans[ans["pool"].notna() & ~ans["address"].isin(shared)]
        if cfg.skip_cdn and len(hits):
            hits = hits[~intel.in_cdn(hits["address"])]
        return hits.drop_duplicates(["cloud", "account", "address"])[["cloud", "account", "address", "pool",
                                                                      "query"]]

    def hits(self, tables: Tables, features: Features) -> list[Hit]:
        cfg: PoolEndpointConfig = self.config  # type: ignore[assignment]
        fl = features.flows
        if not len(fl):
            return []
        pools = self.pool_addresses(features)
        if not len(pools):
            return []
        mask = fl["remote"].isin(pools["address"]).to_numpy(dtype=bool, copy=True)  # cheap pre-filter first
        if not cfg.include_rejected:
            mask &= ~fl["rejected"].to_numpy(dtype=bool)
        if not mask.any():
            return []
        sel = fl[mask].merge(pools.rename(columns={"address": "remote"}), on=["cloud", "account", "remote"])
        if not len(sel):
            return []
        sel = sel.assign(resource=sel["resource"].fillna(""))
        out: list[Hit] = []
        for (cloud, account, resource), grp in sel.groupby(KEY, sort=True):
            flows = int(grp["records"].sum())  # a row of a scan's aggregate stands for several records
            peers = grp.groupby(["remote", "pool", "query"]).agg(size=("records", "sum"), sum=("bytes", "sum")
                                                                 ).sort_values("size", ascending=False)
            examples = ", ".join(f"{r} ({q}, {n} flows)" for (r, _p, q), n in
                                 peers["size"].head(cfg.max_examples).items())
            port_list = sorted({int(p) for p in grp["remote_port"].dropna()})
            who = resource or "an unattributed interface"
            evidence = (
                f"{who} had {flows} flow records ({fmt_bytes(float(grp['bytes'].sum()))}) with "
                f"{len(peers)} address(es) that only mining-pool names resolved to in this account's DNS logs "
                f"(port(s) {', '.join(map(str, port_list[:4])) or '?'}) between {fmt_time(grp['start'].min())} "
                f"and {fmt_time(grp['end'].max())}: {examples}"
            )
            out.append(Hit(
                rule=self.id, cloud=str(cloud), account=str(account), resource=resource or None, principal=None,
                start=grp["start"].min().to_pydatetime(), end=grp["end"].max().to_pydatetime(),
                belief=cfg.belief, evidence=evidence, region=none_if_na(grp["region"].iloc[0]),
                family=self.family,
                facts={"flows": flows, "addresses": sorted(grp["remote"].unique().tolist())[:10],
                       "pools": sorted(grp["pool"].unique().tolist()), "ports": port_list[:10],
                       "bytes": float(np.asarray(grp["bytes"]).sum())},
            ))
        return out
