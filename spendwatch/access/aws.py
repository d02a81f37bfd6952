"""`spendwatch access aws`: who in an AWS account can acquire compute or long-lived credentials, and how.

Reads every IAM user and role (their inline and attached policies, their groups' policies, permission
boundaries, tags and trust policies) and the Organizations SCPs above the account when readable, marks each
principal human / role / service / agent, and judges with `spendwatch.access.policy` whether it can:

- `gpu_launch`: acquiring an accelerated instance through any of `LAUNCH_ROUTES`: ec2:RunInstances and
  ec2:CreateFleet (each family of `guardrails.ACCELERATED_FAMILIES` is tried, so `ec2:InstanceType` conditions
  are honoured), the legacy spot APIs ec2:RequestSpotInstances / ec2:RequestSpotFleet (which do not name the
  type to IAM: open for one type means open for all), autoscaling:CreateAutoScalingGroup with a launch template
  (which also needs ec2:RunInstances) and SageMaker training jobs and notebook instances (`ml.*` types through
  `sagemaker:InstanceTypes`, plus iam:PassRole of an execution role). Each route's verdict is kept;
- `quota_increase`: servicequotas:RequestServiceQuotaIncrease;
- `credentials`: iam:CreateAccessKey, iam:CreateLoginProfile or iam:CreateServiceSpecificCredential;
- `marketplace`: aws-marketplace:Subscribe.

A non-human principal (agent, role, service) that can launch accelerated instances with no condition left
unresolved is a finding (`unrestricted-compute`: high for agents, medium otherwise). What static evaluation
cannot decide is shown as "conditional: <keys>"; SCPs that could not be read are a named gap, not an all clear.
Every AWS call is declared in `CALLS` with the IAM action it needs (`read_policy()` prints the policy).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..findings import Finding, Severity, finding_id
from ..guardrails import ACCELERATED_FAMILIES, AGENT_TAG
from .policy import Policy, Request, Verdict, evaluate

CALLS: dict[tuple[str, str], str] = {
    ("sts", "GetCallerIdentity"): "sts:GetCallerIdentity",
    ("iam", "ListUsers"): "iam:ListUsers",
    ("iam", "ListRoles"): "iam:ListRoles",
    ("iam", "GetUser"): "iam:GetUser",
    ("iam", "GetRole"): "iam:GetRole",
    ("iam", "ListUserTags"): "iam:ListUserTags",
    ("iam", "ListUserPolicies"): "iam:ListUserPolicies",
    ("iam", "GetUserPolicy"): "iam:GetUserPolicy",
    ("iam", "ListAttachedUserPolicies"): "iam:ListAttachedUserPolicies",
    ("iam", "ListGroupsForUser"): "iam:ListGroupsForUser",
    ("iam", "ListGroupPolicies"): "iam:ListGroupPolicies",
    ("iam", "GetGroupPolicy"): "iam:GetGroupPolicy",
    ("iam", "ListAttachedGroupPolicies"): "iam:ListAttachedGroupPolicies",
    ("iam", "ListRolePolicies"): "iam:ListRolePolicies",
    ("iam", "GetRolePolicy"): "iam:GetRolePolicy",
    ("iam", "ListAttachedRolePolicies"): "iam:ListAttachedRolePolicies",
    ("iam", "GetPolicy"): "iam:GetPolicy",
    ("iam", "GetPolicyVersion"): "iam:GetPolicyVersion",
    ("organizations", "ListParents"): "organizations:ListParents",
    ("organizations", "ListPoliciesForTarget"): "organizations:ListPoliciesForTarget",
    ("organizations", "DescribePolicy"): "organizations:DescribePolicy",
}

CAPABILITIES: dict[str, tuple[str, ...]] = {
    "gpu_launch": ("ec2:RunInstances",),  # and every other route of `LAUNCH_ROUTES`
    "quota_increase": ("servicequotas:RequestServiceQuotaIncrease",),
    "credentials": ("iam:CreateAccessKey", "iam:CreateLoginProfile", "iam:CreateServiceSpecificCredential"),
    "marketplace": ("aws-marketplace:Subscribe",),
}


@dataclass(frozen=True)
class Route:
    """One way to acquire accelerated compute: the call, the condition key that carries the instance type in its
    request context (None: the call does not tell IAM the type, so every type is reachable through it), the
    prefix of the probed types, and the dependent actions AWS also checks for the caller."""

    action: str
    type_key: str | None = "ec2:InstanceType"
    type_prefix: str = ""
    needs: tuple[tuple[str, str], ...] = ()  # (action, resource) that must be allowed as well


LAUNCH_ROUTES: tuple[Route, ...] = (
    Route("ec2:RunInstances"),
    Route("ec2:CreateFleet"),
    # The legacy spot APIs carry no ec2:InstanceType: a type condition on them never matches.
    Route("ec2:RequestSpotInstances", None),
    Route("ec2:RequestSpotFleet", None, needs=(("iam:PassRole", "arn:aws:iam::*:role/*"),)),
    # With a launch template, Auto Scaling checks the caller's ec2:RunInstances (AWS's "dependent action").
    Route("autoscaling:CreateAutoScalingGroup", None, needs=(("ec2:RunInstances", "arn:aws:ec2:*:*:instance/*"),)),
    # SageMaker launches ml.* instances under an execution role the caller passes.
    Route("sagemaker:CreateTrainingJob", "sagemaker:InstanceTypes", "ml.",
          needs=(("iam:PassRole", "arn:aws:iam::*:role/*"),)),
    Route("sagemaker:CreateNotebookInstance", "sagemaker:InstanceTypes", "ml.",
          needs=(("iam:PassRole", "arn:aws:iam::*:role/*"),)),
)
# A representative instance type per accelerated family: conditions match on the full type string.
PROBE_TYPES: tuple[str, ...] = tuple(f"{f}.48xlarge" for f in ACCELERATED_FAMILIES)
_ORDER = {"allowed": 0, "conditional": 1, "denied": 2}
AGENT_SERVICES = ("bedrock.amazonaws.com", "bedrock-agentcore.amazonaws.com", "q.amazonaws.com")


class UndeclaredCall(RuntimeError):
    """An AWS call missing from `CALLS`: a programming error."""


def read_policy() -> dict[str, Any]:
    """The least-privilege IAM policy `spendwatch access aws` needs (every call in `CALLS`)."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "SpendwatchAccessRead", "Effect": "Allow", "Action": sorted(set(CALLS.values())), "Resource": "*"}]}


def _check_declared(model: Any, **_: Any) -> None:
    if (model.service_model.service_name, model.name) not in CALLS:
        raise UndeclaredCall(f"{model.service_model.service_name}:{model.name} is not declared in access.aws.CALLS")


def make_clients(*, endpoint_url: str | None = None, region: str = "us-east-1", session: Any = None
                 ) -> dict[str, Any]:
    """iam, organizations and sts clients with the declared-call check; `endpoint_url` for moto in tests."""
    import boto3

    base = session or boto3.session.Session(region_name=region)
    out = {}
    for service in ("iam", "organizations", "sts"):
        client = base.client(service, endpoint_url=endpoint_url, region_name=region)
        client.meta.events.register("before-call", _check_declared)
        out[service] = client
    return out


# -- classification --------------------------------------------------------------------------------------

def _trust_principals(trust: Any) -> tuple[set[str], set[str], set[str]]:
    """(services, federated, aws principals) allowed to assume a role by its trust policy."""
    if isinstance(trust, str):
        trust = json.loads(urllib.parse.unquote(trust))
    services: set[str] = set()
    federated: set[str] = set()
    aws: set[str] = set()
    for st in (trust or {}).get("Statement", []) if isinstance(trust, dict) else []:
        if not isinstance(st, dict) or st.get("Effect") != "Allow":
            continue
        principal = st.get("Principal") or {}
        if principal == "*":
            aws.add("*")
            continue
        for kind, bucket in (("Service", services), ("Federated", federated), ("AWS", aws)):
            value = principal.get(kind) if isinstance(principal, dict) else None
            bucket.update(str(v) for v in (value if isinstance(value, list) else [value] if value else []))
    return services, federated, aws


def classify(kind: str, name: str, path: str, tags: dict[str, str], trust: Any = None) -> tuple[str, str]:
    """(principal_type, why) for an IAM user or role: agent / human / service / role.

    Agent wins (an agent holding a person's or a service's credentials is still an agent): the
    `spendwatch:agent=true` or `agent=true` tag, an agent marker in the name (the same markers as CloudTrail's
    `principal_type`), or a trust policy that lets an agent service (Bedrock agents, Amazon Q) assume the role.
    Then human: IAM users, Identity Center (`AWSReservedSSO_*`) roles and roles trusted through SAML/OIDC
    federation; service: service-linked roles (`/aws-service-role/`); any other role: role.
    """
    from ..connectors.files.cloudtrail import SSO_ROLE_PREFIX, agent_marker

    low = {k.lower(): v.strip().lower() for k, v in tags.items()}
    for key in (AGENT_TAG, "agent"):
        if low.get(key) in ("true", "yes", "1"):
            return "agent", f"tag {key}={tags_value(tags, key)}"
    marker = agent_marker(name)
    if marker:
        return "agent", f"name contains '{marker}'"
    services, federated, _ = _trust_principals(trust) if kind == "role" else (set(), set(), set())
    agent_svc = sorted(s for s in services if s in AGENT_SERVICES or "bedrock" in s)
    if agent_svc:
        return "agent", f"trusted by {', '.join(agent_svc)}"
    if kind == "user":
        return "human", "IAM user"
    if name.startswith(SSO_ROLE_PREFIX) or path.startswith("/aws-reserved/sso.amazonaws.com/"):
        return "human", "Identity Center role"
    if path.startswith("/aws-service-role/"):
        return "service", "service-linked role"
    if federated:
        return "human", f"federated through {', '.join(sorted(federated))}"
    return "role", "role"


def tags_value(tags: dict[str, str], key: str) -> str:
    return next((v for k, v in tags.items() if k.lower() == key), "")


# -- reading IAM -------------------------------------------------------------------------------------------

@dataclass
class Principal:
    """One IAM user or role and the policies that bear on it."""

    arn: str
    name: str
    kind: str  # user / role
    principal_type: str
    why: str
    tags: dict[str, str]
    identity: list[Policy]
    boundary: Policy | None = None
    boundary_arn: str | None = None


@dataclass
class Capability:
    name: str
    decision: str
    via: list[str]
    detail: str = ""  # "p4d, p5, g5 ..." for gpu_launch; the conditions that stop static evaluation
    routes: dict[str, Capability] = field(default_factory=dict)  # gpu_launch: per acquiring call

    @property
    def open_routes(self) -> list[str]:
        return [name for name, c in self.routes.items() if c.decision == self.decision != "denied"]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"decision": self.decision, "via": self.via, "detail": self.detail}
        if self.routes:
            out["routes"] = {k: c.to_json() for k, c in self.routes.items()}
        return out


@dataclass
class AccessRow:
    principal: Principal
    capabilities: dict[str, Capability]

    def to_json(self) -> dict[str, Any]:
        p = self.principal
        return {"arn": p.arn, "name": p.name, "kind": p.kind, "principal_type": p.principal_type, "why": p.why,
                "boundary": p.boundary_arn, "capabilities": {k: c.to_json() for k, c in self.capabilities.items()}}


@dataclass
class AccessReport:
    account: str
    rows: list[AccessRow]
    scp_levels: list[list[Policy]] | None
    gaps: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"cloud": "aws", "account": self.account,
                "scps": None if self.scp_levels is None else [[p.name for p in lvl] for lvl in self.scp_levels],
                "gaps": self.gaps, "principals": [r.to_json() for r in self.rows],
                "findings": [f.to_json() for f in self.findings]}


def _pages(client: Any, op: str, key: str, **kw: Any) -> list[Any]:
    return [item for page in client.get_paginator(op).paginate(**kw) for item in page.get(key, [])]


def _doc(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(urllib.parse.unquote(value))
    return value if isinstance(value, dict) else {}


class _ManagedPolicies:
    """Default versions of managed policies, fetched once per run."""

    def __init__(self, iam: Any) -> None:
        self.iam = iam
        self._cache: dict[str, Policy] = {}

    def get(self, arn: str, name: str | None = None) -> Policy:
        if arn not in self._cache:
            meta = self.iam.get_policy(PolicyArn=arn)["Policy"]
            version = self.iam.get_policy_version(PolicyArn=arn, VersionId=meta["DefaultVersionId"])
            self._cache[arn] = Policy(name or meta["PolicyName"], _doc(version["PolicyVersion"]["Document"]))
        return self._cache[arn]


def _user(iam: Any, managed: _ManagedPolicies, user: dict[str, Any]) -> Principal:
    name = user["UserName"]
    full = iam.get_user(UserName=name)["User"]
    tags = {t["Key"]: t["Value"] for t in _pages(iam, "list_user_tags", "Tags", UserName=name)}
    policies = [Policy(f"user/{name}:{p}", _doc(iam.get_user_policy(UserName=name, PolicyName=p)["PolicyDocument"]))
                for p in _pages(iam, "list_user_policies", "PolicyNames", UserName=name)]
    policies += [managed.get(a["PolicyArn"], a["PolicyName"])
                 for a in _pages(iam, "list_attached_user_policies", "AttachedPolicies", UserName=name)]
    for group in _pages(iam, "list_groups_for_user", "Groups", UserName=name):
        g = group["GroupName"]
        policies += [Policy(f"group/{g}:{p}", _doc(iam.get_group_policy(GroupName=g, PolicyName=p)["PolicyDocument"]))
                     for p in _pages(iam, "list_group_policies", "PolicyNames", GroupName=g)]
        policies += [managed.get(a["PolicyArn"], a["PolicyName"])
                     for a in _pages(iam, "list_attached_group_policies", "AttachedPolicies", GroupName=g)]
    kind, why = classify("user", name, user.get("Path", "/"), tags)
    boundary_arn = (full.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
    return Principal(user["Arn"], name, "user", kind, why, tags, policies,
                     managed.get(boundary_arn) if boundary_arn else None, boundary_arn)


def _role(iam: Any, managed: _ManagedPolicies, role: dict[str, Any]) -> Principal:
    name = role["RoleName"]
    full = iam.get_role(RoleName=name)["Role"]  # ListRoles omits tags and the boundary
    tags = {t["Key"]: t["Value"] for t in full.get("Tags", [])}
    policies = [Policy(f"role/{name}:{p}", _doc(iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"]))
                for p in _pages(iam, "list_role_policies", "PolicyNames", RoleName=name)]
    policies += [managed.get(a["PolicyArn"], a["PolicyName"])
                 for a in _pages(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=name)]
    kind, why = classify("role", name, role.get("Path", "/"), tags, full.get("AssumeRolePolicyDocument"))
    boundary_arn = (full.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
    return Principal(role["Arn"], name, "role", kind, why, tags, policies,
                     managed.get(boundary_arn) if boundary_arn else None, boundary_arn)


def read_scps(org: Any, account: str) -> list[list[Policy]]:
    """The SCPs attached at each level from the root down to the account (each level must allow a call)."""
    chain = [account]
    target = account
    while True:
        parents = org.list_parents(ChildId=target)["Parents"]
        if not parents:
            break
        target = parents[0]["Id"]
        chain.append(target)
        if parents[0]["Type"] == "ROOT":
            break
    levels = []
    for target in reversed(chain):
        level = []
        for summary in _pages(org, "list_policies_for_target", "Policies", TargetId=target,
                              Filter="SERVICE_CONTROL_POLICY"):
            content = org.describe_policy(PolicyId=summary["Id"])["Policy"]["Content"]
            level.append(Policy(f"{summary['Name']}@{target}", _doc(content)))
        levels.append(level)
    return levels


# -- judging -----------------------------------------------------------------------------------------------

def _refs(verdict: Verdict) -> list[str]:
    refs = [str(r) for r in verdict.allowed_by] if verdict.decision != "denied" else \
        [str(r) for r in verdict.denied_by] or [f"not allowed by {', '.join(verdict.missing) or 'any policy'}"]
    return list(dict.fromkeys(refs))


def _worst(verdicts: Sequence[Verdict]) -> Verdict:
    """A call with dependent actions is only as open as its most closed part."""
    return max(verdicts, key=lambda v: _ORDER[v.decision])


def _route(p: Principal, route: Route, scp_levels: Sequence[Sequence[Policy]] | None, now: datetime
           ) -> Capability:
    """Whether `p` can acquire accelerated instances through one route, and for which families."""

    def ask(action: str, resource: str, instance_type: str | None, type_key: str | None) -> Verdict:
        req = Request(action, resource, instance_type, p.tags, now, type_key=type_key or "")
        return evaluate(req, p.identity, p.boundary, scp_levels)

    def verdict(probe: str) -> Verdict:
        typed = route.type_key is not None
        main = ask(route.action, "arn:aws:ec2:*:*:instance/*" if route.action.startswith("ec2:") else "*",
                   route.type_prefix + probe if typed else None, route.type_key)
        deps = [ask(action, resource, probe if action == "ec2:RunInstances" else None, "ec2:InstanceType")
                for action, resource in route.needs]
        return _worst([main, *deps])

    verdicts = {t: verdict(t) for t in PROBE_TYPES}
    families = {d: [t.split(".")[0] for t, v in verdicts.items() if v.decision == d] for d in
                ("allowed", "conditional")}
    best = "allowed" if families["allowed"] else "conditional" if families["conditional"] else "denied"
    pick = next((v for v in verdicts.values() if v.decision == best), next(iter(verdicts.values())))
    keys = sorted({k for v in verdicts.values() if v.decision == "conditional" for k in v.unknown_keys})
    detail = ", ".join(families[best]) if best != "denied" else ""
    if best == "allowed" and len(families["allowed"]) == len(PROBE_TYPES):
        detail = "every accelerated family" if route.type_key else "any instance type (the call does not name it)"
    if keys:
        detail += ("; " if detail else "") + f"conditional: {', '.join(keys)}"
    return Capability(route.action, best, _refs(pick), detail)


def judge(p: Principal, scp_levels: Sequence[Sequence[Policy]] | None, now: datetime) -> dict[str, Capability]:
    """Every capability of `p` (see the module doc). `gpu_launch` is the most open of `LAUNCH_ROUTES`, each
    route kept in `Capability.routes`; RunInstances is reported first when routes are equally open."""
    out: dict[str, Capability] = {}
    routes = {r.action: _route(p, r, scp_levels, now) for r in LAUNCH_ROUTES}
    best = min(routes.values(), key=lambda c: _ORDER[c.decision])  # stable: RunInstances first among equals
    out["gpu_launch"] = Capability("gpu_launch", best.decision, best.via, best.detail, routes)

    def ask(action: str) -> Verdict:
        return evaluate(Request(action, "*", None, p.tags, now), p.identity, p.boundary, scp_levels)

    for cap, actions in CAPABILITIES.items():
        if cap == "gpu_launch":
            continue
        results = [(a, ask(a)) for a in actions]
        _, verdict = min(results, key=lambda r: _ORDER[r[1].decision])
        able = [a for a, v in results if v.decision == verdict.decision and v.decision != "denied"]
        detail = ", ".join(able)
        if verdict.decision == "conditional":
            detail += f"; conditional: {', '.join(verdict.unknown_keys) or 'resource-scoped'}"
        out[cap] = Capability(cap, verdict.decision, _refs(verdict), detail)
    return out


def unrestricted_findings(account: str, rows: Iterable[AccessRow], now: datetime) -> list[Finding]:
    """`unrestricted-compute` findings: non-human principals that can launch accelerated instances outright."""
    out = []
    for row in rows:
        p, cap = row.principal, row.capabilities["gpu_launch"]
        if p.principal_type == "human" or cap.decision != "allowed":
            continue
        severity = Severity.HIGH if p.principal_type == "agent" else Severity.MEDIUM
        out.append(Finding(
            id=finding_id("aws", account, f"access:{p.arn}"), cloud="aws", account=account, region=None,
            resource=None, principal=p.arn, severity=severity, score=0.8 if severity == Severity.HIGH else 0.5,
            rules=["unrestricted-compute"],
            evidence=[f"{p.principal_type} ({p.why}) can call {', '.join(cap.open_routes)} for {cap.detail} "
                      "with no condition", f"through {'; '.join(cap.via)}"],
            first_seen=now, last_seen=now, detected_at=now, hourly_cost_usd=None,
            summary=f"{p.principal_type.capitalize()} {p.name} can launch GPU instances without any approval",
            principal_type=p.principal_type,
        ))
    return out


def scan_access(clients: dict[str, Any], *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
                ) -> AccessReport:
    """Read the account's IAM (and SCPs when readable) and judge every principal."""
    from botocore.exceptions import ClientError

    at = now()
    iam, org = clients["iam"], clients["organizations"]
    account = clients["sts"].get_caller_identity()["Account"]
    gaps: list[str] = []
    scp_levels: list[list[Policy]] | None
    try:
        scp_levels = read_scps(org, account)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "Error")
        scp_levels = None
        gaps.append(f"SCPs not evaluated ({code}): results ignore any SCP above this account")
    managed = _ManagedPolicies(iam)
    principals = [_user(iam, managed, u) for u in _pages(iam, "list_users", "Users")]
    principals += [_role(iam, managed, r) for r in _pages(iam, "list_roles", "Roles")]
    rows = [AccessRow(p, judge(p, scp_levels, at)) for p in principals]
    order = {"agent": 0, "role": 1, "service": 2, "human": 3}
    rows.sort(key=lambda r: (r.capabilities["gpu_launch"].decision != "allowed",
                             order.get(r.principal.principal_type, 9), r.principal.name))
    return AccessReport(account, rows, scp_levels, gaps, unrestricted_findings(account, rows, at))


# -- output and CLI ----------------------------------------------------------------------------------------

_MARK = {"allowed": "YES", "conditional": "cond", "denied": "-"}


def render_table(report: AccessReport, out: Any) -> None:
    cols = ("gpu_launch", "quota_increase", "credentials", "marketplace")
    out.write(f"AWS account {report.account}: {len(report.rows)} principals"
              f" (SCP levels read: {'none' if report.scp_levels is None else len(report.scp_levels)})\n")
    head = f"{'principal':40} {'type':8} " + " ".join(f"{c:14}" for c in cols)
    out.write(head + "\n" + "-" * len(head) + "\n")
    for row in report.rows:
        p = row.principal
        out.write(f"{p.name[:40]:40} {p.principal_type:8} "
                  + " ".join(f"{_MARK[row.capabilities[c].decision]:14}" for c in cols) + "\n")
        for c in cols:
            cap = row.capabilities[c]
            if cap.decision != "denied":
                out.write(f"    {c}: {cap.detail} via {'; '.join(cap.via)}\n")
                if cap.routes:
                    out.write(f"      through: {', '.join(cap.open_routes)}\n")
    for gap in report.gaps:
        out.write(f"gap: {gap}\n")
    for f in report.findings:
        out.write(f"FINDING [{f.severity.label}] unrestricted-compute: {f.summary}\n")


def cmd_access(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    clients = make_clients(endpoint_url=args.endpoint_url, region=args.region)
    try:
        report = scan_access(clients)
    except (ClientError, BotoCoreError) as exc:
        print(f"spendwatch: error: reading IAM: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render_table(report, sys.stdout)
    if args.fail_on and any(f.severity >= Severity.parse(args.fail_on) for f in report.findings):
        return 3
    return 0


def cmd_access_any(args: argparse.Namespace) -> int:
    """Dispatch `spendwatch access CLOUD` (the GCP and Azure modules load their SDKs only when asked)."""
    if args.cloud == "gcp":
        from .gcp import cmd_access_gcp

        return cmd_access_gcp(args)
    if args.cloud == "azure":
        from .azure import cmd_access_azure

        return cmd_access_azure(args)
    return cmd_access(args)


def add_commands(sub: Any) -> None:
    """`spendwatch access aws|gcp|azure`."""
    p = sub.add_parser("access", help="who can launch GPU instances, raise quotas or mint long-lived keys")
    p.add_argument("cloud", choices=("aws", "gcp", "azure"))
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.add_argument("--region", default="us-east-1", help="aws: region of the API calls")
    p.add_argument("--project", help="gcp: the project id to judge (its folders and organisation are read too)")
    p.add_argument("--subscription", help="azure: the subscription id to judge")
    p.add_argument("--endpoint-url", help=argparse.SUPPRESS)  # moto in tests
    p.add_argument("--endpoint", help=argparse.SUPPRESS)  # gcp/azure local fakes in tests
    p.add_argument("--iam-admin-target", help=argparse.SUPPRESS)  # gcp IAM admin gRPC fake in tests
    p.add_argument("--fail-on", choices=("info", "low", "medium", "high", "critical"), metavar="SEVERITY",
                   help="exit 3 when an unrestricted-compute finding at or above SEVERITY is seen")
    p.set_defaults(func=cmd_access_any)
