"""stratum-port: connections from a resource to a public address on a mining-pool port."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spendwatch.findings import Hit, Severity
from spendwatch.records import Tables

from .. import intel
from ..features import KEY, Features
from .base import Rule, RuleConfig, fmt_bytes, fmt_time, none_if_na


@dataclass(frozen=True)
class StratumPortConfig(RuleConfig):
    belief: float = 0.35
    ports: frozenset[int] | None = None  # None: the `default=yes` ports of data/stratum_ports.csv
    extra_ports: frozenset[int] = field(default_factory=frozenset)
    include_rejected: bool = False  # a blocked attempt is not mining; count accepted flows only
    min_flows: int = 1
    max_examples: int = 3


class StratumPortRule(Rule):
    """A resource exchanged traffic with a public address on a port that mining pools listen on.

    Catches: miners pointed at a pool's usual Stratum port (3333, 4444, 14444, 5555-style ports; the list and
    each port's count of pool endpoints in the 2018 sMaSheD census are in data/stratum_ports.csv), whether
    the pool was reached by name or by IP. Flow logs are enough; no DNS needed.
    Only connections the resource opened count (its local port looks like a client's), so a web server
    answering a visitor whose source port happens to be 3333 does not fire.
    Misses: pools on 443 or 80 (common for pools, but flagging them would flag the web; off by default), a
    proxy on an ordinary port, and anything private-to-private (an internal service on 3333 never fires).
    Weak alone: a port number is a convention, not proof.
    """

    id = "stratum-port"
    title = "Traffic to a public address on a mining-pool port"
    severity = Severity.LOW
    technique = "T1496.001"
    family = "pool-port"
    config_type = StratumPortConfig

    def hits(self, tables: Tables, features: Features) -> list[Hit]:
        cfg: StratumPortConfig = self.config  # type: ignore[assignment]
        fl = features.flows
        if not len(fl):
            return []
        ports = (cfg.ports if cfg.ports is not None else intel.default_pool_ports()) | cfg.extra_ports
        mask = np.isin(fl["remote_port"].to_numpy(dtype="float64"), np.fromiter(ports, dtype="float64"))
        mask &= fl["remote_public"].to_numpy(dtype=bool)
        # Only connections the resource made as a client: a web server's reply to a client whose ephemeral
        # port happens to be 13333 is not a pool. The local end must look like a client port (>= 1024 and
        # above the remote's, or in the ephemeral range); unknown local ports are given the benefit.
        local = fl["local_port"].to_numpy(dtype="float64")
        remote = fl["remote_port"].to_numpy(dtype="float64")
        mask &= np.isnan(local) | ((local >= 1024) & ((local > remote) | (local >= 32768)))
        if not cfg.include_rejected:
            mask &= ~fl["rejected"].to_numpy(dtype=bool)
        sel = fl[mask]
        if not len(sel):
            return []
        sel = sel.assign(resource=sel["resource"].fillna(""), remote_port=sel["remote_port"].astype("int64"))
        census = intel.pool_ports()
        out: list[Hit] = []
        for (cloud, account, resource), grp in sel.groupby(KEY, sort=True):
            flows = int(grp["records"].sum())  # a row of a scan's aggregate stands for several records
            if flows < cfg.min_flows:
                continue
            peers = (grp.groupby(["remote", "remote_port"]).agg(size=("records", "sum"), sum=("bytes", "sum"))
                     .sort_values("size", ascending=False))
            port_list = sorted(grp["remote_port"].unique())
            port_text = ", ".join(
                f"{p} ({census[p].pool_endpoints_2018} pool endpoints in the 2018 census)"
                if p in census and census[p].pool_endpoints_2018 else str(p)
                for p in port_list[:4]
            )
            examples = ", ".join(f"{r}:{p} ({n} flows)" for (r, p), n in peers["size"].head(cfg.max_examples).items())
            who = resource or "an unattributed interface"
            evidence = (
                f"{who} had {flows} flow records ({fmt_bytes(float(grp['bytes'].sum()))}) with "
                f"{len(peers)} public address(es) on pool port(s) {port_text} between "
                f"{fmt_time(grp['start'].min())} and {fmt_time(grp['end'].max())}: {examples}"
            )
            out.append(Hit(
                rule=self.id, cloud=str(cloud), account=str(account), resource=resource or None, principal=None,
                start=grp["start"].min().to_pydatetime(), end=grp["end"].max().to_pydatetime(),
                belief=cfg.belief, evidence=evidence, region=none_if_na(grp["region"].iloc[0]),
                family=self.family,
                facts={"flows": flows, "ports": [int(p) for p in port_list],
                       "peers": [f"{r}:{p}" for r, p in peers.index[:10]]},
            ))
        return out
