"""`spendwatch access azure`: who in an Azure subscription can acquire compute or long-lived credentials, and how.

Reads the role assignments that apply to the subscription (its own, its resource groups' and resources', and
those inherited from management groups), their role definitions (actions / notActions, wildcards included), the
user-assigned managed identities (to name and mark them), and the Azure Policy assignments with their
definitions and exemptions. For every principal it judges (`spendwatch.access.common`):

- `gpu_launch`: `Microsoft.Compute/virtualMachines/write` (create or resize a VM), scale sets, Azure Machine
  Learning computes, AKS agent pools and Batch pools;
- `quota_increase`: `Microsoft.Quota/quotas/write`, or a support ticket (`Microsoft.Support/supportTickets/write`,
  how vCPU quota increases are filed);
- `credentials`: storage account keys (list / regenerate) and federated credentials of managed identities
  (client secrets of app registrations live in Entra ID, outside ARM, and are not seen here);
- `marketplace`: signing Marketplace terms or creating SaaS resources.

A role assignment at the subscription, a management group or a resource group grants everywhere in it; one on a
single resource is conditional ("only on <resource>"). An assignment with an ABAC condition is conditional.

Azure Policy (the part that can stop a GPU size): each enforced assignment whose definition has effect `deny`
is evaluated against a VM or scale set request of every GPU size of `PROBE_SIZES`. The rule language is
evaluated for `type`, the size aliases (`Microsoft.Compute/virtualMachines/sku.name`, and the scale set's) and
`[parameters('...')]`; `allOf` / `anyOf` / `not`; `equals`, `notEquals`, `like`, `notLike`, `in`, `notIn`,
`contains`, `notContains`, `exists`. Anything else (tags, location, names: chosen by the caller; `count`;
other template functions) is undecided: the deny may apply, the grant is **conditional**. A policy denies a
grant only when its scope covers the grant's scope (a deny on one resource group leaves a subscription-wide
Contributor free elsewhere), no `notScopes` entry and no live exemption (`expiresOn` in the future) lifts it.
Policy set definitions (initiatives) are not evaluated (named in `evaluated`).

Marked: principal type User and Group are human; ServicePrincipal is service, a user-assigned managed
identity is service too (named), and either is agent when tagged `spendwatch:agent=true` / `agent=true` or its
name carries an agent marker. Not modelled: deny assignments, group membership, Entra ID roles, PIM
eligibility (only active assignments are listed), system-assigned identities' names (shown by object id).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..findings import Severity
from .common import (
    CAPABILITY_NAMES,
    Deny,
    Grant,
    Identity,
    PermissionVerdict,
    Report,
    Row,
    capability,
    judge_permission,
    render_table,
    sort_rows,
    unrestricted_findings,
)

CALLS: dict[str, str] = {
    "RoleAssignments.list_for_subscription": "Microsoft.Authorization/roleAssignments/read",
    "RoleDefinitions.get_by_id": "Microsoft.Authorization/roleDefinitions/read",
    "UserAssignedIdentities.list_by_subscription": "Microsoft.ManagedIdentity/userAssignedIdentities/read",
    "PolicyAssignments.list": "Microsoft.Authorization/policyAssignments/read",
    "PolicyDefinitions.get*": "Microsoft.Authorization/policyDefinitions/read",
    "policyExemptions (GET)": "Microsoft.Authorization/policyExemptions/read",
}
EXEMPTIONS_API = "2022-07-01-preview"

VM_WRITE = "Microsoft.Compute/virtualMachines/write"
VMSS_WRITE = "Microsoft.Compute/virtualMachineScaleSets/write"
ROUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "gpu_launch": {
        VM_WRITE: (VM_WRITE,),
        VMSS_WRITE: (VMSS_WRITE,),
        "Microsoft.MachineLearningServices/workspaces/computes/write": (
            "Microsoft.MachineLearningServices/workspaces/computes/write",),
        "Microsoft.ContainerService/managedClusters/agentPools/write": (
            "Microsoft.ContainerService/managedClusters/agentPools/write",),
        "Microsoft.Batch/batchAccounts/pools/write": ("Microsoft.Batch/batchAccounts/pools/write",),
    },
    "quota_increase": {"Microsoft.Quota/quotas/write": ("Microsoft.Quota/quotas/write",),
                       "Microsoft.Support/supportTickets/write": ("Microsoft.Support/supportTickets/write",)},
    "credentials": {
        "Microsoft.Storage/storageAccounts/listKeys/action": ("Microsoft.Storage/storageAccounts/listKeys/action",),
        "Microsoft.Storage/storageAccounts/regenerateKey/action": (
            "Microsoft.Storage/storageAccounts/regenerateKey/action",),
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write": (
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",),
    },
    "marketplace": {
        "Microsoft.MarketplaceOrdering/agreements/offers/plans/sign/action": (
            "Microsoft.MarketplaceOrdering/agreements/offers/plans/sign/action",),
        "Microsoft.SaaS/resources/write": ("Microsoft.SaaS/resources/write",),
    },
}
# One size per GPU family and generation: policies usually match on patterns like Standard_N*.
PROBE_SIZES: tuple[str, ...] = (
    "Standard_NC6s_v3", "Standard_NC4as_T4_v3", "Standard_NC24ads_A100_v4", "Standard_NC40ads_H100_v5",
    "Standard_ND40rs_v2", "Standard_ND96asr_v4", "Standard_ND96isr_H100_v5", "Standard_ND96isr_H200_v5",
    "Standard_NV12s_v3", "Standard_NV36ads_A10_v5", "Standard_NG32ads_V620_v1", "Standard_NP10s",
)
# The request a GPU VM / scale set creation presents to Azure Policy, as far as it is known statically.
_TYPED = {
    VM_WRITE: ("Microsoft.Compute/virtualMachines", ("microsoft.compute/virtualmachines/sku.name",
                                                     "microsoft.compute/virtualmachines/hardwareprofile.vmsize")),
    VMSS_WRITE: ("Microsoft.Compute/virtualMachineScaleSets", ("microsoft.compute/virtualmachinescalesets/sku.name",)),
}
AGENT_TAG_KEYS = ("spendwatch:agent", "agent")
GPU_DETAIL = "GPU VM sizes"


@dataclass(frozen=True)
class AzureAccessOptions:
    """`base_url`/`allow_http` for local fakes; `credential` defaults to DefaultAzureCredential."""

    credential: Any = None
    base_url: str | None = None
    allow_http: bool = False


@dataclass
class Clients:
    authorization: Any
    msi: Any
    policy: Any


def make_clients(subscription: str, options: AzureAccessOptions | None = None) -> Clients:
    from azure.mgmt.authorization import AuthorizationManagementClient
    from azure.mgmt.msi import ManagedServiceIdentityClient
    from azure.mgmt.resource.policy import PolicyClient

    from ..connectors.azure.inventory import AzureOptions, _client_kwargs

    options = options or AzureAccessOptions()
    credential = options.credential
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    kw = _client_kwargs(AzureOptions(credential, options.base_url, options.allow_http, retry_total=3))
    kw.pop("polling_interval", None)
    base = kw.pop("base_url", None)
    extra = {"base_url": base} if base else {}
    return Clients(AuthorizationManagementClient(credential, subscription, **extra, **kw),
                   ManagedServiceIdentityClient(credential, subscription, **extra, **kw),
                   PolicyClient(credential, subscription, **extra, **kw))


def _reason(exc: Exception) -> str:
    code = getattr(getattr(exc, "error", None), "code", None)
    return f"{code or type(exc).__name__}: {getattr(exc, 'message', None) or exc}".splitlines()[0][:200]


# -- role definitions -------------------------------------------------------------------------------------

def action_match(pattern: str, action: str) -> bool:
    """Azure RBAC wildcard match (`*` anywhere, case-insensitive)."""
    regex = "".join(".*" if c == "*" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, action, re.IGNORECASE) is not None


def role_grants(permissions: Iterable[dict[str, list[str]]], action: str) -> bool:
    """Whether a role's permission blocks grant `action` (an action minus the same block's notActions)."""
    for block in permissions:
        if any(action_match(a, action) for a in block.get("actions") or []) and not any(
                action_match(n, action) for n in block.get("not_actions") or []):
            return True
    return False


# -- Azure Policy -----------------------------------------------------------------------------------------

_PARAM = re.compile(r"^\[parameters\('([^']+)'\)\]$", re.IGNORECASE)


class Undecided(Exception):
    """Part of a policy rule that static evaluation cannot decide (its text says which)."""


@dataclass
class PolicyRule:
    """An enforced Deny policy assignment with its rule and parameters."""

    ref: str
    scope: str
    not_scopes: list[str]
    rule: dict[str, Any]
    params: dict[str, Any]
    exemptions: list[str] = field(default_factory=list)  # scopes of live exemptions

    def resolve(self, value: Any) -> Any:
        if isinstance(value, str):
            m = _PARAM.match(value.strip())
            if m:
                if m.group(1) not in self.params:
                    raise Undecided(f"parameter {m.group(1)} has no value")
                return self.params[m.group(1)]
            if value.startswith("[") and not value.startswith("[["):
                raise Undecided(f"expression {value[:60]}")
        return value

    def holds(self, cond: Any, fields: dict[str, str]) -> bool:
        """Three-valued via Undecided: True / False, or raises Undecided."""
        if not isinstance(cond, dict):
            raise Undecided("malformed condition")
        if "allOf" in cond:
            return _all_any(cond["allOf"], fields, self, want_all=True)
        if "anyOf" in cond:
            return _all_any(cond["anyOf"], fields, self, want_all=False)
        if "not" in cond:
            return not self.holds(cond["not"], fields)
        if "field" in cond:
            name = str(self.resolve(cond["field"])).lower()
            actual: Any = fields.get(name)
            if name not in fields and not _other_types_alias(name, fields):
                raise Undecided(f"field {cond['field']}")
        elif "value" in cond:
            actual = self.resolve(cond["value"])
        else:
            raise Undecided(f"condition {sorted(cond)}")
        ops = [k for k in cond if k not in ("field", "value")]
        if len(ops) != 1:
            raise Undecided(f"operators {ops}")
        return _compare(ops[0], actual, self.resolve(cond[ops[0]]))


def _other_types_alias(name: str, fields: dict[str, str]) -> bool:
    """An alias of another resource type (`Microsoft.Compute/virtualMachineScaleSets/sku.name` asked of a VM):
    absent from the request, which Azure Policy evaluates as a missing value."""
    if name.count("/") < 2 or not name.startswith("microsoft."):
        return False
    return not name.startswith(fields.get("type", "").lower() + "/")


def _all_any(conds: Any, fields: dict[str, str], rule: PolicyRule, *, want_all: bool) -> bool:
    undecided: Undecided | None = None
    for c in conds if isinstance(conds, list) else []:
        try:
            hit = rule.holds(c, fields)
        except Undecided as exc:
            undecided = undecided or exc
            continue
        if hit != want_all:
            return hit
    if undecided:
        raise undecided
    return want_all


def _like(pattern: str, value: str) -> bool:
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), value, re.IGNORECASE) is not None


def _compare(op: str, actual: Any, expected: Any) -> bool:
    low = op.lower()
    text = str(actual).lower() if actual is not None else None
    if low == "exists":
        return (actual is not None) == (str(expected).lower() == "true")
    if text is None:
        return low.startswith("not")
    if low in ("equals", "notequals"):
        hit = text == str(expected).lower()
    elif low in ("like", "notlike"):
        hit = _like(str(expected), text)
    elif low in ("in", "notin"):
        if not isinstance(expected, list):
            raise Undecided(f"{op} needs a list")
        hit = text in {str(e).lower() for e in expected}
    elif low in ("contains", "notcontains"):
        hit = str(expected).lower() in text
    else:
        raise Undecided(f"operator {op}")
    return not hit if low.startswith("not") else hit


def _covers(outer: str, inner: str) -> bool:
    o, i = outer.rstrip("/").lower(), inner.rstrip("/").lower()
    return i == o or i.startswith(o + "/")


def policy_verdict(rules: Iterable[PolicyRule], permission: str, scope: str) -> tuple[str | None, str, str]:
    """(denied | conditional | None, ref, reason): whether Azure Policy stops `permission` for a GPU size
    at `scope` (None when no enforced deny covers it, or some GPU size gets through)."""
    if permission not in _TYPED:
        return None, "", ""
    rtype, size_fields = _TYPED[permission]
    worst: tuple[str | None, str, str] = (None, "", "")
    for rule in rules:
        if not _covers(rule.scope, scope) or any(_covers(n, scope) for n in rule.not_scopes):
            continue
        if any(_covers(scope, e) or _covers(e, scope) for e in rule.exemptions):
            continue
        outcomes = []
        for size in PROBE_SIZES:
            fields = {"type": rtype, **dict.fromkeys(size_fields, size)}
            try:
                outcomes.append("denied" if rule.holds(rule.rule.get("if"), fields) else None)
            except Undecided as exc:
                outcomes.append(f"conditional:{exc}")
        if all(o == "denied" for o in outcomes):
            return "denied", rule.ref, ""
        undecided = [o for o in outcomes if o and o.startswith("conditional:")]
        if undecided and all(o is not None for o in outcomes):
            worst = ("conditional", rule.ref, f"{rule.ref} may deny ({undecided[0].split(':', 1)[1]})")
    return worst


def read_policies(clients: Clients, subscription: str, now: datetime, gaps: list[str],
                  evaluated: dict[str, list[str]]) -> list[PolicyRule]:
    """Enforced Deny assignments that apply in the subscription, with their live exemptions."""
    out: list[PolicyRule] = []
    try:
        assignments = list(clients.policy.policy_assignments.list())
    except Exception as exc:
        gaps.append(f"Azure Policy assignments not readable ({_reason(exc)}): a policy denying GPU sizes is not seen")
        return out
    exemptions = _exemptions(clients, subscription, now, gaps)
    skipped = []
    for a in assignments:
        ref = f"policy:{a.display_name or a.name}"
        if (a.enforcement_mode or "Default") != "Default":
            skipped.append(f"{ref} (not enforced)")
            continue
        definition_id = a.policy_definition_id or ""
        if "/policysetdefinitions/" in definition_id.lower():
            skipped.append(f"{ref} (initiative, not evaluated)")
            continue
        try:
            definition = _definition(clients, definition_id)
        except Exception as exc:
            gaps.append(f"{ref}: definition {definition_id} not readable ({_reason(exc)})")
            continue
        params = {k: _field(v, "default_value", "defaultValue") for k, v in (definition.parameters or {}).items()}
        params = {k: v for k, v in params.items() if v is not None}
        params |= {k: _field(v, "value", "value") for k, v in (a.parameters or {}).items()}
        rule = PolicyRule(ref, a.scope or f"/subscriptions/{subscription}", list(a.not_scopes or []),
                          definition.policy_rule or {}, params, exemptions.get((a.id or "").lower(), []))
        try:
            effect = str(rule.resolve(((definition.policy_rule or {}).get("then") or {}).get("effect", ""))).lower()
        except Undecided:
            effect = "?"
        if effect != "deny":
            skipped.append(f"{ref} (effect {effect})")
            continue
        out.append(rule)
    evaluated["policies"] = [r.ref for r in out]
    evaluated["policies_skipped"] = skipped
    return out


def _field(obj: Any, attr: str, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, attr, None)


def _definition(clients: Clients, definition_id: str) -> Any:
    name = definition_id.rstrip("/").rsplit("/", 1)[-1]
    m = re.search(r"/managementGroups/([^/]+)/", definition_id, re.IGNORECASE)
    if m:
        return clients.policy.policy_definitions.get_at_management_group(name, m.group(1))
    if definition_id.lower().startswith("/subscriptions/"):
        return clients.policy.policy_definitions.get(name)
    return clients.policy.policy_definitions.get_built_in(name)


def _exemptions(clients: Clients, subscription: str, now: datetime, gaps: list[str]) -> dict[str, list[str]]:
    """Live exemptions by (lower-cased) policy assignment id. The policy SDK has no exemptions operations, so
    this GET goes through the same client's pipeline (`send_request`)."""
    from azure.core.rest import HttpRequest

    url = (f"/subscriptions/{subscription}/providers/Microsoft.Authorization/policyExemptions"
           f"?api-version={EXEMPTIONS_API}")
    out: dict[str, list[str]] = {}
    try:
        while url:
            resp = clients.policy.send_request(HttpRequest("GET", url))
            resp.raise_for_status()
            body = resp.json()
            for e in body.get("value", []):
                props = e.get("properties") or {}
                expires = props.get("expiresOn")
                if expires and datetime.fromisoformat(expires.replace("Z", "+00:00")) <= now:
                    continue
                scope = e.get("id", "").split("/providers/Microsoft.Authorization/policyExemptions/")[0]
                out.setdefault(str(props.get("policyAssignmentId", "")).lower(), []).append(scope)
            url = body.get("nextLink") or ""
    except Exception as exc:
        gaps.append(f"policy exemptions not readable ({_reason(exc)}): a GPU deny may be lifted where one exists")
    return out


# -- principals and assignments ----------------------------------------------------------------------------

@dataclass
class Assignment:
    principal_id: str
    principal_type: str
    scope: str
    role_id: str
    condition: str | None


def classify(principal_type: str, name: str | None, tags: dict[str, str] | None) -> tuple[str, str, str]:
    """(kind, principal_type, why) for an assignment's principal."""
    from ..connectors.files.cloudtrail import agent_marker

    low = {k.lower(): str(v).strip().lower() for k, v in (tags or {}).items()}
    if principal_type in ("User", "Group", "ForeignGroup"):
        return principal_type.lower(), "human", f"Entra ID {principal_type.lower()}"
    kind = "managedIdentity" if tags is not None else "servicePrincipal"
    for key in AGENT_TAG_KEYS:
        if low.get(key) in ("true", "yes", "1"):
            return kind, "agent", f"tag {key}={low[key]}"
    marker = agent_marker(name or "")
    if marker:
        return kind, "agent", f"name contains '{marker}'"
    if kind == "managedIdentity":
        return kind, "service", "user-assigned managed identity"
    return kind, "service", f"{principal_type or 'unknown'} (service principal or system-assigned identity)"


def scan_access(clients: Clients, subscription: str, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
                ) -> Report:
    """Read the subscription's role assignments, roles, identities and policies; judge every principal."""
    at = now()
    gaps: list[str] = []
    evaluated: dict[str, list[str]] = {}
    assignments = [Assignment(a.principal_id, a.principal_type or "", a.scope or "", a.role_definition_id,
                              a.condition) for a in clients.authorization.role_assignments.list_for_subscription()]
    roles: dict[str, tuple[str, list[dict[str, list[str]]]] | None] = {}
    for rid in {a.role_id for a in assignments}:
        try:
            d = clients.authorization.role_definitions.get_by_id(rid)
            roles[rid] = (d.role_name or rid, [{"actions": list(p.actions or []),
                                                "not_actions": list(p.not_actions or [])}
                                               for p in d.permissions or []])
        except Exception as exc:
            gaps.append(f"role definition {rid} not readable ({_reason(exc)}): its grants are conditional")
            roles[rid] = None
    identities: dict[str, Any] = {}
    try:
        identities = {i.principal_id: i for i in clients.msi.user_assigned_identities.list_by_subscription()
                      if i.principal_id}
    except Exception as exc:
        gaps.append(f"managed identities not listed ({_reason(exc)}): they show by object id and agents by none")
    policies = read_policies(clients, subscription, at, gaps, evaluated)

    by_principal: dict[str, list[Assignment]] = {}
    for a in assignments:
        by_principal.setdefault(a.principal_id, []).append(a)
    rows = []
    for pid, mine in by_principal.items():
        ident = identities.get(pid)
        name = ident.name if ident is not None else pid
        kind, ptype, why = classify(mine[0].principal_type, ident.name if ident else None,
                                    dict(ident.tags or {}) if ident is not None else None)
        caps = {}
        for cap in CAPABILITY_NAMES:
            routes = {route: [_permission(p, mine, roles, policies) for p in perms]
                      for route, perms in ROUTES[cap].items()}
            caps[cap] = capability(cap, routes, GPU_DETAIL if cap == "gpu_launch" else "")
        rows.append(Row(Identity(pid, name, kind, ptype, why), caps))
    sort_rows(rows)
    return Report("azure", subscription, rows, evaluated, gaps,
                  unrestricted_findings("azure", subscription, rows, at))


def _short_scope(scope: str) -> str:
    parts = scope.strip("/").split("/")
    if len(parts) >= 4 and parts[2].lower() == "resourcegroups":
        return f"rg/{parts[3]}" + (f"/{'/'.join(parts[6:])}" if len(parts) > 4 else "")
    if len(parts) == 2 and parts[0].lower() == "subscriptions":
        return "subscription"
    if "managementGroups" in scope:
        return f"mg/{parts[-1]}"
    return scope


def _on_one_resource(scope: str) -> bool:
    """An assignment on a single resource (below a resource group): it cannot create new resources."""
    _, _, below = scope.lower().partition("/resourcegroups/")
    return "/providers/" in below


def _permission(permission: str, assignments: list[Assignment],
                roles: dict[str, tuple[str, list[dict[str, list[str]]]] | None],
                policies: list[PolicyRule]) -> PermissionVerdict:
    grants: list[Grant] = []
    policy_denies: list[str] = []
    for a in assignments:
        role = roles.get(a.role_id)
        where = _short_scope(a.scope)
        if role is None:
            grants.append(Grant(f"{where} {a.role_id.rsplit('/', 1)[-1]}", "conditional", "role not readable"))
            continue
        name, perms = role
        if not role_grants(perms, permission):
            continue
        ref = f"{where} {name}"
        decision, reason = "allowed", ""
        if a.condition:
            decision, reason = "conditional", f"assignment condition {a.condition[:60]!r}"
        elif _on_one_resource(a.scope):
            decision, reason = "conditional", f"only on {where}"
        verdict, pref, preason = policy_verdict(policies, permission, a.scope)
        if verdict == "denied":
            policy_denies.append(pref)
            continue
        if verdict == "conditional":
            decision, reason = "conditional", preason
        grants.append(Grant(ref, decision, reason))
    if not grants and policy_denies:
        return judge_permission(permission, [], [Deny(r, "denied") for r in dict.fromkeys(policy_denies)])
    return judge_permission(permission, grants, [])


# -- CLI ----------------------------------------------------------------------------------------------------

def cmd_access_azure(args: argparse.Namespace) -> int:
    from azure.core.exceptions import AzureError

    if not args.subscription:
        print("spendwatch: error: access azure needs --subscription", file=sys.stderr)
        return 2
    options = AzureAccessOptions(base_url=args.endpoint, allow_http=bool(args.endpoint))
    if args.endpoint:
        from azure.core.credentials import AccessToken

        class _Fake:
            def get_token(self, *scopes: str, **kw: Any) -> AccessToken:
                return AccessToken("local-fake", 4102444800)

        options = AzureAccessOptions(_Fake(), args.endpoint, True)
    try:
        report = scan_access(make_clients(args.subscription, options), args.subscription)
    except AzureError as exc:
        print(f"spendwatch: error: reading subscription {args.subscription}: {_reason(exc)}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render_table(report, sys.stdout, f"Azure subscription {report.account}")
    if args.fail_on and any(f.severity >= Severity.parse(args.fail_on) for f in report.findings):
        return 3
    return 0
