"""What `spendwatch access gcp` and `spendwatch access azure` share: routes, verdicts, the report and its table.

Both clouds grant by binding a role (a list of permissions or actions) to an identity at a scope, so the
question is the same: for each capability (`gpu_launch`, `quota_increase`, `credentials`, `marketplace`), is
there a *route* (a set of permissions that are all needed for one way of doing it) whose every permission some
grant gives, unconditionally, and no deny takes away? The per-cloud modules find the grants and denies; this
module combines them into the report shape of `spendwatch access aws` (`spendwatch.access.aws.Capability`):

- a grant with no condition, or one that evaluates to true now: **allowed**; one whose condition cannot be
  evaluated statically: **conditional** (with the reason); no grant: **denied**;
- a deny that certainly applies wins; one that may apply (its condition or its principal match cannot be told)
  turns an allowed permission into conditional, never into denied;
- a route is as open as its most closed permission; a capability as open as its most open route.

A non-human identity with `gpu_launch` allowed is an `unrestricted-compute` finding, as on AWS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..findings import Finding, Severity, finding_id
from .aws import Capability

ORDER = {"allowed": 0, "conditional": 1, "denied": 2}
NON_HUMAN = frozenset({"agent", "service", "role", "public"})
CAPABILITY_NAMES = ("gpu_launch", "quota_increase", "credentials", "marketplace")


@dataclass(frozen=True)
class Grant:
    """A role binding or assignment that gives a permission: where, which role, and its condition's outcome."""

    ref: str  # "projects/p roles/compute.admin", "/subscriptions/s Contributor"
    decision: str  # allowed / conditional
    reason: str = ""  # why conditional


@dataclass(frozen=True)
class Deny:
    """A deny that covers a permission for an identity: certain (`decision` denied) or possible (conditional)."""

    ref: str
    decision: str  # denied / conditional
    reason: str = ""


@dataclass(frozen=True)
class PermissionVerdict:
    permission: str
    decision: str
    via: tuple[str, ...]
    reasons: tuple[str, ...] = ()


def judge_permission(permission: str, grants: Sequence[Grant], denies: Sequence[Deny]) -> PermissionVerdict:
    """Combine the grants and denies of one permission (see the module doc)."""
    certain_denies = [d for d in denies if d.decision == "denied"]
    if certain_denies:
        return PermissionVerdict(permission, "denied", tuple(d.ref for d in certain_denies))
    if not grants:
        return PermissionVerdict(permission, "denied", (f"no grant of {permission}",))
    best = min(grants, key=lambda g: ORDER[g.decision])
    open_grants = [g for g in grants if g.decision == best.decision]
    reasons = [g.reason for g in open_grants if g.reason]
    decision = best.decision
    if denies:  # each one possible only
        decision = "conditional"
        reasons += [f"{d.ref}: {d.reason}" for d in denies]
    return PermissionVerdict(permission, decision, tuple(g.ref for g in open_grants), tuple(dict.fromkeys(reasons)))


def capability(name: str, routes: Mapping[str, Sequence[PermissionVerdict]], detail_allowed: str = ""
               ) -> Capability:
    """The capability `name` from its routes (route name -> the verdicts of the permissions it needs)."""
    route_caps: dict[str, Capability] = {}
    for route, verdicts in routes.items():
        worst = max(verdicts, key=lambda v: ORDER[v.decision])
        reasons = [r for v in verdicts for r in v.reasons]
        if worst.decision == "denied":
            via = list(worst.via)
            detail = ""
        else:
            via = list(dict.fromkeys(ref for v in verdicts for ref in v.via))
            detail = detail_allowed
            if worst.decision == "conditional":
                detail += ("; " if detail else "") + "conditional: " + "; ".join(dict.fromkeys(reasons))
        route_caps[route] = Capability(route, worst.decision, via, detail)
    best = min(route_caps.values(), key=lambda c: ORDER[c.decision])
    return Capability(name, best.decision, best.via, best.detail, route_caps if len(route_caps) > 1 else {})


@dataclass
class Identity:
    """One identity as `spendwatch access` reports it, whatever the cloud."""

    id: str  # the member string (GCP) or principal object id (Azure)
    name: str
    kind: str  # user / group / serviceAccount / servicePrincipal / managedIdentity / ...
    principal_type: str  # human / agent / service / role / public
    why: str


@dataclass
class Row:
    identity: Identity
    capabilities: dict[str, Capability]

    def to_json(self) -> dict[str, Any]:
        i = self.identity
        return {"arn": i.id, "name": i.name, "kind": i.kind, "principal_type": i.principal_type, "why": i.why,
                "boundary": None, "capabilities": {k: c.to_json() for k, c in self.capabilities.items()}}


@dataclass
class Report:
    """The same JSON shape as `spendwatch access aws` (`cloud`, `account`, `gaps`, `principals`, `findings`),
    plus `evaluated`: what else was read (GCP ancestors and deny policies, Azure Policy assignments)."""

    cloud: str
    account: str
    rows: list[Row]
    evaluated: dict[str, list[str]] = field(default_factory=dict)
    gaps: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"cloud": self.cloud, "account": self.account, "evaluated": self.evaluated, "gaps": self.gaps,
                "principals": [r.to_json() for r in self.rows], "findings": [f.to_json() for f in self.findings]}


def sort_rows(rows: list[Row]) -> None:
    order = {"public": 0, "agent": 1, "role": 2, "service": 3, "human": 4}
    rows.sort(key=lambda r: (r.capabilities["gpu_launch"].decision != "allowed",
                             order.get(r.identity.principal_type, 9), r.identity.name))


def unrestricted_findings(cloud: str, account: str, rows: Iterable[Row], now: datetime, *,
                          exempt: Iterable[str] = ()) -> list[Finding]:
    """`unrestricted-compute`: a non-human identity that can acquire accelerated compute with no condition.
    High for agents and public access, medium for other non-human identities; `exempt` ids are skipped (the
    cloud's own service agents, listed in the table)."""
    skip = set(exempt)
    out = []
    for row in rows:
        i, cap = row.identity, row.capabilities["gpu_launch"]
        if i.principal_type not in NON_HUMAN or cap.decision != "allowed" or i.id in skip:
            continue
        high = i.principal_type in ("agent", "public")
        routes = cap.open_routes or [cap.name]
        out.append(Finding(
            id=finding_id(cloud, account, f"access:{i.id}"), cloud=cloud, account=account, region=None,
            resource=None, principal=i.id, severity=Severity.HIGH if high else Severity.MEDIUM,
            score=0.8 if high else 0.5, rules=["unrestricted-compute"],
            evidence=[f"{i.principal_type} ({i.why}) holds {', '.join(routes)} with no condition"
                      + (f" ({cap.detail})" if cap.detail else ""), f"through {'; '.join(cap.via)}"],
            first_seen=now, last_seen=now, detected_at=now, hourly_cost_usd=None,
            summary=f"{i.principal_type.capitalize()} {i.name} can launch GPU instances without any approval",
            principal_type=i.principal_type,
        ))
    return out


_MARK = {"allowed": "YES", "conditional": "cond", "denied": "-"}


def render_table(report: Report, out: Any, title: str) -> None:
    out.write(f"{title}: {len(report.rows)} identities\n")
    for what, items in report.evaluated.items():
        out.write(f"{what}: {', '.join(items) if items else 'none'}\n")
    head = f"{'identity':48} {'type':8} " + " ".join(f"{c:14}" for c in CAPABILITY_NAMES)
    out.write(head + "\n" + "-" * len(head) + "\n")
    for row in report.rows:
        i = row.identity
        out.write(f"{i.name[:48]:48} {i.principal_type:8} "
                  + " ".join(f"{_MARK[row.capabilities[c].decision]:14}" for c in CAPABILITY_NAMES) + "\n")
        for c in CAPABILITY_NAMES:
            cap = row.capabilities[c]
            if cap.decision != "denied":
                out.write(f"    {c}: {cap.detail + ' ' if cap.detail else ''}via {'; '.join(cap.via)}\n")
                if cap.routes:
                    out.write(f"      through: {', '.join(cap.open_routes)}\n")
    for gap in report.gaps:
        out.write(f"gap: {gap}\n")
    for f in report.findings:
        out.write(f"FINDING [{f.severity.label}] unrestricted-compute: {f.summary}\n")
