"""Fusion: turn hits into findings with Dempster-Shafer evidence combination.

The frame of discernment is {abuse, legit}. Each hit is a simple support function: mass `belief` on
{abuse}, `against` on {legit}, the rest on the whole frame (don't know). Within one `family` only the
strongest hit counts (two rules reading the same fact are one piece of evidence). Across families the mass
functions combine with Dempster's rule, conflict (abuse from one, legit from another) normalised away:

    m(A) = (a1 a2 + a1 u2 + u1 a2) / (1 - K),   m(L) = (l1 l2 + l1 u2 + u1 l2) / (1 - K),
    m(U) = u1 u2 / (1 - K),                      K = a1 l2 + l1 a2

The score is belief(abuse) = m(A) after combining everything. With no `against` mass this is
1 - prod(1 - belief_i): independent weak indicators add up, as in DeCrypto (NordSec 2022).

Severity cut-offs (FusionConfig.cutoffs): score < 0.2 info, < 0.45 low, < 0.7 medium, < 0.88 high, else
critical. With the default beliefs: a pool port alone (0.35) is low; a saturation hit alone (<= 0.3) is low at
most; a pool domain alone (0.8) is high; pool domain + flat pegged GPU + first GPU launch by an agent
(0.8, 0.3, 0.4) gives 1 - 0.2 * 0.7 * 0.6 = 0.916, critical.

Findings below `min_severity` (default low) are dropped: info-level findings are weak single indicators
(e.g. a mild isolation-forest outlier) that would only be noise in an alert channel.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from spendwatch import catalog
from spendwatch.findings import Finding, Hit, Severity, finding_id

from .features import KEY, Features
from .rules.base import none_if_na

MINING_FAMILIES = frozenset({"pool-intel", "pool-port", "flow-shape", "saturation"})


@dataclass(frozen=True)
class FusionConfig:
    cutoffs: tuple[float, float, float, float] = (0.2, 0.45, 0.7, 0.88)  # info|low|medium|high|critical
    min_severity: Severity = Severity.LOW  # findings below this are not returned
    # hits about who launched or acquired, not what runs: they attach to every resource of the principal
    principal_families: frozenset[str] = frozenset({"launch", "burst", "recon", "key"})
    max_evidence: int = 12  # evidence lines in a principal incident (the rest are counted)
    cost_hours: int = 3  # hourly cost = mean of the resource's last N billed hours


@dataclass(frozen=True)
class Mass:
    """A mass function on {abuse, legit}: `abuse` + `legit` + `unknown` = 1."""

    abuse: float
    legit: float
    unknown: float
    conflict: float = 0.0  # total conflict normalised away on the way here (for the record)

    @classmethod
    def of(cls, hit: Hit) -> Mass:
        return cls(hit.belief, hit.against, max(0.0, 1.0 - hit.belief - hit.against))


def combine(a: Mass, b: Mass) -> Mass:
    """Dempster's rule of combination for two mass functions on {abuse, legit}."""
    conflict = a.abuse * b.legit + a.legit * b.abuse
    norm = 1.0 - conflict
    if norm <= 1e-12:  # total conflict: certain abuse against certain legit; keep it undecided
        return Mass(0.0, 0.0, 1.0, 1.0)
    abuse = (a.abuse * b.abuse + a.abuse * b.unknown + a.unknown * b.abuse) / norm
    legit = (a.legit * b.legit + a.legit * b.unknown + a.unknown * b.legit) / norm
    unknown = a.unknown * b.unknown / norm
    return Mass(abuse, legit, unknown, 1.0 - (1.0 - a.conflict) * (1.0 - b.conflict) * norm)


def strongest_per_family(hits: Iterable[Hit]) -> list[Hit]:
    """One hit per family: the highest belief (ties: the least `against`, then the latest)."""
    best: dict[str, Hit] = {}
    for hit in hits:
        cur = best.get(hit.family)
        if cur is None or (hit.belief, -hit.against, hit.end) > (cur.belief, -cur.against, cur.end):
            best[hit.family] = hit
    return list(best.values())


def fused_mass(hits: Iterable[Hit]) -> Mass:
    mass = Mass(0.0, 0.0, 1.0)
    for hit in strongest_per_family(hits):
        mass = combine(mass, Mass.of(hit))
    return mass


def score(hits: Iterable[Hit]) -> float:
    """Belief in abuse after family dedupe and Dempster combination."""
    return fused_mass(hits).abuse


def _by_strength(hits: Iterable[Hit]) -> list[str]:
    """Rule ids, strongest evidence first (then by id), each once: what a reader should see first."""
    return list(dict.fromkeys(h.rule for h in sorted(hits, key=lambda h: (-h.belief, h.rule))))


def severity_of(value: float, cutoffs: tuple[float, float, float, float] = FusionConfig.cutoffs) -> Severity:
    for level, cut in zip((Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH), cutoffs, strict=True):
        if value < cut:
            return level
    return Severity.CRITICAL


# ---- findings -------------------------------------------------------------------------------------------

def _short_principal(principal: str | None, ptype: str | None) -> str:
    if not principal:
        return "an unknown principal"
    kind = ""
    if ":role/" in principal or ":assumed-role/" in principal:
        kind = "role "
    elif ":user/" in principal:
        kind = "user "
    name = principal.rsplit("/", 1)[-1] if "/" in principal else principal
    if ptype and kind.strip() == ptype:
        kind = ""  # "role role deploy" says nothing twice
    return f"{ptype + ' ' if ptype else ''}{kind}{name}"


class _Context:
    """Lookups fusion needs from the tables: who launched what, where, and what it costs."""

    def __init__(self, features: Features, config: FusionConfig) -> None:
        self.features = features
        self.config = config
        tables = features.tables
        self.inventory = features.inventory
        act = tables.activity
        launches = act[act["action"].str.lower().isin(("launch", "start")).fillna(False) & act["resource"].notna()
                       & act["error"].isna()]
        self.launches = launches.sort_values("time").drop_duplicates(KEY, keep="first").set_index(KEY)
        # principal -> resources it launched, from inventory and activity
        by_principal: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        inv = tables.inventory
        for c, a, r, p in inv[["cloud", "account", "resource", "launched_by"]].dropna().itertuples(index=False):
            by_principal[(c, a, p)].add(r)
        for (c, a, r), p in self.launches["principal"].dropna().items():
            by_principal[(c, a, p)].add(r)
        self.by_principal = by_principal
        sp = tables.spend
        sp = sp[sp["resource"].notna()]
        self.hourly = (sp.groupby([*KEY, "hour"], observed=True)["cost_usd"].sum() if len(sp)
                       else pd.Series(dtype="float64"))
        self.billed = set(self.hourly.index.droplevel("hour")) if len(self.hourly) else set()

    def _lookup(self, frame: pd.DataFrame, key: tuple[str, str, str], col: str) -> str | None:
        if key in frame.index and col in frame.columns:
            return none_if_na(frame.loc[key, col])
        return None

    def who(self, key: tuple[str, str, str], hits: list[Hit]) -> tuple[str | None, str | None]:
        principal = self._lookup(self.inventory, key, "launched_by")
        ptype = self._lookup(self.inventory, key, "launched_by_type")
        if principal is None:
            principal = self._lookup(self.launches, key, "principal")
            ptype = self._lookup(self.launches, key, "principal_type")
        if principal is None:
            for hit in hits:
                if hit.principal:
                    return hit.principal, hit.principal_type
        if ptype is None and principal is not None:
            ptype = self._lookup(self.launches, key, "principal_type")
        return principal, ptype

    def where(self, key: tuple[str, str, str], hits: list[Hit]) -> tuple[str | None, str | None]:
        region = self._lookup(self.inventory, key, "region") or self._lookup(self.launches, key, "region")
        itype = (self._lookup(self.inventory, key, "instance_type")
                 or self._lookup(self.launches, key, "instance_type"))
        if region is None:
            region = next((h.region for h in hits if h.region), None)
        return region, itype

    def cost(self, key: tuple[str, str, str], itype: str | None) -> tuple[float | None, str]:
        if key in self.billed:
            hours = self.hourly.loc[key].sort_index().tail(self.config.cost_hours)
            return float(hours.mean()), f"mean of the last {len(hours)} billed hour(s)"
        known = catalog.lookup(itype)
        if known is not None:
            return known.on_demand_usd_hour, f"on-demand list price of {itype}; no billed hours yet"
        return None, "unknown: no billed hours and no list price"

    def accelerated(self, key: tuple[str, str, str], itype: str | None) -> bool:
        gpus = self._lookup(self.inventory, key, "gpus")
        return (gpus is not None and float(gpus) > 0) or catalog.is_accelerated(itype)


def _summary(sev: Severity, families: set[str], resource: str | None, itype: str | None, region: str | None,
             who: str, cost: float | None, accelerated: bool, account: str) -> str:
    verb = {Severity.CRITICAL: "Likely", Severity.HIGH: "Likely", Severity.MEDIUM: "Possible"}.get(sev,
                                                                                               "Weak signs of")
    if families & MINING_FAMILIES:
        what = "GPU crypto-mining" if accelerated else "crypto-mining"
    elif "launch" in families:
        what = "unusual GPU launch"
    else:
        what = "anomalous behaviour"
    if verb == "Weak signs of":
        what = what.replace("unusual", "an unusual")
    place = ", ".join(x for x in (itype, region) if x)
    subject = f"{resource} ({place})" if resource and place else (resource or f"an unattributed resource in {account}")
    price = f"; ${cost:.2f}/h" if cost is not None else ""
    return f"{verb} {what} on {subject} launched by {who}{price}"


def fuse(hits: list[Hit], features: Features, *, now: datetime, config: FusionConfig | None = None) -> list[Finding]:
    """Group hits per resource (principal-level hits attach to their principal's resources), fuse, rate."""
    cfg = config or FusionConfig()
    ctx = _Context(features, cfg)
    groups: dict[tuple[str, str, str], list[Hit]] = defaultdict(list)
    principal_hits: dict[tuple[str, str, str], list[Hit]] = defaultdict(list)
    for hit in hits:
        if hit.resource:
            groups[(hit.cloud, hit.account, hit.resource)].append(hit)
        elif hit.principal and hit.family in cfg.principal_families:
            principal_hits[(hit.cloud, hit.account, hit.principal)].append(hit)
        else:
            groups[(hit.cloud, hit.account, "")].append(hit)  # unattributed: one incident per account
    # A principal incident: the principal-level hits plus every resource of the principal whose own evidence
    # is about acquisition and cost only (no mining family): a mass launch in regions without flow logs is one
    # incident of the principal, not nine weak ones. Resources with mining evidence keep their own findings
    # (with the principal's hits attached) and are listed as related.
    incidents: dict[tuple[str, str, str], tuple[list[Hit], list[tuple[str, str, str]], list[str]]] = {}
    for (cloud, account, principal), phits in principal_hits.items():
        targets = [(cloud, account, r) for r in sorted(ctx.by_principal.get((cloud, account, principal), ()))
                   if (cloud, account, r) in groups]
        for key in targets:
            # a hit that names the resources it is about (a burst) attaches to those only
            groups[key].extend(h for h in phits if "resources" not in h.facts or key[2] in h.facts["resources"])
        fold = [k for k in targets if not any(h.family in MINING_FAMILIES for h in groups[k])]
        if fold or not targets:
            incidents[(cloud, account, principal)] = (phits, fold, [k[2] for k in targets])
    folded = {k for _, fold, _ in incidents.values() for k in fold}

    findings: list[Finding] = []
    for key, ghits in groups.items():
        if key in folded:
            continue
        cloud, account, resource = key
        mass = fused_mass(ghits)
        sev = severity_of(mass.abuse, cfg.cutoffs)
        if sev < cfg.min_severity:
            continue
        principal, ptype = ctx.who(key, ghits)
        region, itype = ctx.where(key, ghits)
        cost, cost_source = ctx.cost(key, itype) if resource else (None, "")
        ordered = sorted(ghits, key=lambda h: (-h.belief, h.rule, h.start))
        evidence = [h.evidence for h in ordered]
        if cost is not None:
            evidence.append(f"Cost: ${cost:.2f}/h ({cost_source}).")
        families = {h.family for h in ghits}
        findings.append(Finding(
            id=finding_id(cloud, account, resource or "unattributed"),
            cloud=cloud, account=account, region=region, resource=resource or None, principal=principal,
            severity=sev, score=round(mass.abuse, 6), rules=_by_strength(ghits), evidence=evidence,
            first_seen=min(h.start for h in ghits), last_seen=max(h.end for h in ghits), detected_at=now,
            hourly_cost_usd=cost,
            summary=_summary(sev, families, resource or None, itype, region, _short_principal(principal, ptype),
                             cost, ctx.accelerated(key, itype), account),
            principal_type=ptype, instance_type=itype,
        ))
    for (cloud, account, principal), (phits, fold, related) in incidents.items():
        own = [h for k in fold for h in groups[k] if h.resource]
        allhits = [*phits, *own]
        mass = fused_mass(allhits)
        sev = severity_of(mass.abuse, cfg.cutoffs)
        if sev < cfg.min_severity:
            continue
        ptype = next((h.principal_type for h in allhits if h.principal_type), None)
        regions: dict[str, int] = defaultdict(int)
        costs = []
        for k in fold:
            region, itype = ctx.where(k, groups[k])
            if region:
                regions[region] += 1
            cost, _ = ctx.cost(k, itype)
            if cost is not None:
                costs.append(cost)
        if not regions:
            for h in phits:
                if h.region:
                    regions[h.region] += 1
        region_list = sorted(regions, key=lambda r: (-regions[r], r))
        who = _short_principal(principal, ptype)
        verb = {Severity.CRITICAL: "Likely abuse:", Severity.HIGH: "Likely abuse:"}.get(sev, "Unusual")
        # strongest hit per family first (what the score is made of), then the rest, capped
        lead = strongest_per_family(allhits)
        rest = sorted((h for h in allhits if h not in lead), key=lambda h: (-h.belief, h.rule, h.start))
        lines = [h.evidence for h in sorted(lead, key=lambda h: (-h.belief, h.start))]
        lines += [h.evidence for h in rest[:max(0, cfg.max_evidence - len(lines))]]
        if len(lead) + len(rest) > len(lines):
            lines.append(f"... and {len(lead) + len(rest) - len(lines)} more hit(s) of the same kinds.")
        hourly = round(sum(costs), 6) if costs else None
        if hourly is not None:
            lines.append(f"Cost: ${hourly:.2f}/h over {len(costs)} instance(s) of this incident.")
        where = f" in {', '.join(region_list[:4])}" if region_list else ""
        what = (f"launched {len(fold)} instance(s){where}" if fold
                else f"GPU launch activity{where} (no resource named)")
        price = f"; ${hourly:.2f}/h" if hourly is not None else ""
        findings.append(Finding(
            id=finding_id(cloud, account, f"principal:{principal}"),
            cloud=cloud, account=account, region=region_list[0] if region_list else None, resource=None,
            principal=principal, severity=sev, score=round(mass.abuse, 6), rules=_by_strength(allhits),
            evidence=lines, first_seen=min(h.start for h in allhits), last_seen=max(h.end for h in allhits),
            detected_at=now, hourly_cost_usd=hourly,
            summary=f"{verb} {who} {what}{price}",
            principal_type=ptype, related=sorted(related),
        ))
    # Link findings of the same principal so an alert can show the whole incident.
    by_who: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for f in findings:
        if f.principal and f.resource:
            by_who[(f.cloud, f.account, f.principal)].append(f.resource)
    for f in findings:
        if f.principal and f.resource:
            f.related = sorted(r for r in by_who[(f.cloud, f.account, f.principal)] if r != f.resource)
    findings.sort(key=lambda f: (-f.score, f.cloud, f.account, f.resource or "", f.principal or ""))
    return findings
