"""pool-domain: DNS queries for curated server mining-pool names."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from spendwatch.findings import Hit, Severity
from spendwatch.records import Tables

from .. import intel
from ..features import Features
from .base import Rule, RuleConfig, fmt_time, none_if_na


@dataclass(frozen=True)
class PoolDomainConfig(RuleConfig):
    belief: float = 0.8
    extra_domains: frozenset[str] = field(default_factory=frozenset)  # site-specific pools to add
    ignore_domains: frozenset[str] = field(default_factory=frozenset)  # curated entries to drop
    match_answers: bool = True  # also match CNAME targets in `answers` (a proxy name pointing at a pool)
    max_examples: int = 3


def match_pool_domain(names: pd.Series, domains: frozenset[str]) -> pd.Series:
    """For each name, the pool domain it equals or sits under (label boundary), else missing.

    Vectorised by label depth: compare the whole name, then drop the first label and compare again, at most
    as many rounds as the deepest name has labels. `notnanopool.org` never matches `nanopool.org`.
    """
    current = names.astype("str").str.lower().str.rstrip(".")
    matched = pd.Series(pd.NA, index=names.index, dtype="str")
    depth = int(current.str.count(r"\.").max()) + 1 if len(current) and current.notna().any() else 0
    for _ in range(depth):
        hit = current.isin(domains) & matched.isna()
        matched = matched.mask(hit, current)
        current = current.str.partition(".")[2].where(current.str.contains(".", regex=False))
        if current.isna().all():
            break
    return matched


class PoolDomainRule(Rule):
    """A resource resolved a known server mining-pool name (equal to, or a subdomain of, a curated entry).

    Catches: miners that look pools up by name through the DNS the cloud logs (Route 53 Resolver query logs,
    Cloud DNS logging, Azure DNS analytics), including a CNAME chain that ends at a pool. Strong evidence:
    legitimate workloads have no reason to resolve a pool's stratum host.
    Misses: pools reached by IP, a private proxy or VPS in front of the pool, DNS-over-HTTPS or third-party
    resolvers the cloud does not log, and pools not in the curated list (data/pool_domains.txt). Crypto price
    APIs, exchanges and wallets are not pools and are not in the list.
    """

    id = "pool-domain"
    title = "DNS lookup of a mining-pool domain"
    severity = Severity.HIGH
    technique = "T1496.001"
    family = "pool-intel"
    config_type = PoolDomainConfig

    def hits(self, tables: Tables, features: Features) -> list[Hit]:
        cfg: PoolDomainConfig = self.config  # type: ignore[assignment]
        dns = features.dns
        if not len(dns):
            return []
        domains = (intel.pool_domains() | {d.lower() for d in cfg.extra_domains}) - set(cfg.ignore_domains)
        # Distinct names only: a miner asks for the same few names thousands of times.
        names = pd.Series(dns["query"].dropna().unique(), dtype="str")
        pool_of = dict(zip(names, match_pool_domain(names, frozenset(domains)), strict=True))
        matched = pd.Series(dns["query"].map(pool_of).to_numpy(dtype=object), index=dns.index, dtype="str")
        via = pd.Series(pd.NA, index=dns.index, dtype="str")
        if cfg.match_answers and dns["answers"].notna().any():
            ans = dns["answers"].dropna().str.split().explode().dropna()
            ans = ans[ans.str.contains(r"[a-z]", case=False)]
            if len(ans):
                uniq = pd.Series(ans.unique(), dtype="str")
                ans_pool = ans.map(dict(zip(uniq, match_pool_domain(uniq, frozenset(domains)), strict=True)))
                first = ans_pool.dropna().groupby(level=0).first()
                via = via.fillna(pd.Series(first, dtype="str").reindex(dns.index))
        pool = matched.fillna(via)
        sel = dns.assign(pool=pool, by_answer=matched.isna())[pool.notna()]
        if not len(sel):
            return []
        sel = sel.assign(resource=sel["resource"].fillna(""))
        out: list[Hit] = []
        for (cloud, account, resource), grp in sel.groupby(["cloud", "account", "resource"], sort=True):
            counts = grp.groupby(["query", "pool"]).size().sort_values(ascending=False)
            examples = ", ".join(f"{q} ({n}x)" for (q, _), n in counts.head(cfg.max_examples).items())
            pools = sorted(grp["pool"].unique())
            who = resource or "an unattributed resource"
            extra = " through a CNAME answer" if grp["by_answer"].all() else ""
            evidence = (
                f"{who} made {len(grp)} DNS queries{extra} for {counts.index.get_level_values(0).nunique()} "
                f"name(s) under {len(pools)} mining-pool domain(s) ({', '.join(pools[:5])}) between "
                f"{fmt_time(grp['time'].min())} and {fmt_time(grp['time'].max())}: {examples}"
            )
            out.append(Hit(
                rule=self.id, cloud=str(cloud), account=str(account), resource=resource or None, principal=None,
                start=grp["time"].min().to_pydatetime(), end=grp["time"].max().to_pydatetime(),
                belief=cfg.belief, evidence=evidence, region=none_if_na(grp["region"].iloc[0]),
                family=self.family,
                facts={"queries": len(grp), "pool_domains": pools,
                       "names": counts.index.get_level_values(0).unique().tolist()[:20]},
            ))
        return out
