"""`spendwatch access gcp`: who in a GCP project can acquire compute or long-lived credentials, and how.

Reads the IAM policies of the project and of every folder and the organisation above it (Resource Manager),
the roles they bind (the IAM API's roles.get, which answers for predefined roles too, so permission lists are
never guessed), the project's service accounts (to name and mark them) and the IAM deny policies attached at
each level. For every member it judges (`spendwatch.access.common`):

- `gpu_launch`: `compute.instances.create` (IAM cannot restrict the machine type or the GPUs of the new VM:
  only an organisation policy can, see `spendwatch guardrail gcp`), resizing a stopped VM to an
  accelerator-optimised type (`compute.instances.setMachineType`) or attaching GPUs to it
  (`compute.instances.setMachineResources`), managed instance groups (`compute.instanceGroupManagers.create`
  with `compute.instanceTemplates.useReadOnly`), GKE node pools, Vertex AI custom jobs and Workbench instances;
- `quota_increase`: `serviceusage.quotas.update` or `cloudquotas.quotas.update` (GPU quotas are raised so);
- `credentials`: service account keys, API keys, HMAC keys;
- `marketplace`: `consumerprocurement.orders.place`.

IAM conditions are CEL, evaluated with cel-python against what is known statically: `request.time` (now),
`resource.service` and, for the Compute calls, `resource.type`. Anything else (`resource.name` of a VM that does
not exist yet, `resource.matchTag`, `api.getAttribute`) leaves the expression undecided: the grant is
**conditional**, never denied. CEL's `&&`/`||` absorb an undecided side when the other decides, so
`request.time < timestamp(...) || resource.name.startsWith(...)` after the date is decided by the name (undecided).
Deny policies: a rule denies when its principals match the member (users, groups, service accounts,
`principalSet://goog/public:all`, the service accounts of a project/folder/organisation) and its permissions
match (`compute.googleapis.com/instances.create`, `*` wildcards), unless an exception matches; a rule with a
denial condition (resource tags) may deny: conditional.

Marked: `user:`/`group:`/`domain:` are human; service accounts are service, or agent when their id, display
name or description carries an agent marker (the CloudTrail reader's list) or `spendwatch:agent=true`, or when
they are the Vertex AI Agent Engine service agent; Google-managed service agents (`service-N@...`,
`N@cloudservices...`) are service and are not findings (Google acts through them on someone's request);
workload identity federation (`principal://`, `principalSet://`) is role; `allUsers` and
`allAuthenticatedUsers` are public. Not modelled: group membership (a user's grants through a group are shown on
the group), impersonation (`iam.serviceAccounts.actAs` / `getAccessToken`: a user who can act as an
unrestricted service account is as unrestricted), organisation policies, VPC Service Controls.
Every call is declared in `CALLS` with the permission it needs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.parse
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
    "ProjectsClient.get_project": "resourcemanager.projects.get",
    "ProjectsClient.get_iam_policy": "resourcemanager.projects.getIamPolicy",
    "FoldersClient.get_folder": "resourcemanager.folders.get",
    "FoldersClient.get_iam_policy": "resourcemanager.folders.getIamPolicy",
    "OrganizationsClient.get_iam_policy": "resourcemanager.organizations.getIamPolicy",
    "IAMClient.get_role": "iam.roles.get",
    "IAMClient.list_service_accounts": "iam.serviceAccounts.list",
    "PoliciesClient.list_policies": "iam.denypolicies.list",
    "PoliciesClient.get_policy": "iam.denypolicies.get",
}

# capability -> route -> the permissions that route needs (all of them).
ROUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "gpu_launch": {
        "compute.instances.create": ("compute.instances.create",),
        "compute.instances.setMachineType": ("compute.instances.setMachineType",),
        "compute.instances.setMachineResources": ("compute.instances.setMachineResources",),
        "compute.instanceGroupManagers.create": ("compute.instanceGroupManagers.create",
                                                 "compute.instanceTemplates.useReadOnly"),
        "container.nodePools.create": ("container.nodePools.create",),
        "aiplatform.customJobs.create": ("aiplatform.customJobs.create",),
        "notebooks.instances.create": ("notebooks.instances.create",),
    },
    "quota_increase": {"serviceusage.quotas.update": ("serviceusage.quotas.update",),
                       "cloudquotas.quotas.update": ("cloudquotas.quotas.update",)},
    "credentials": {"iam.serviceAccountKeys.create": ("iam.serviceAccountKeys.create",),
                    "apikeys.keys.create": ("apikeys.keys.create",),
                    "storage.hmacKeys.create": ("storage.hmacKeys.create",)},
    "marketplace": {"consumerprocurement.orders.place": ("consumerprocurement.orders.place",)},
}
# resource.type of the resource a permission acts on, where it is fixed (IAM conditions may test it).
RESOURCE_TYPES = {"compute.instances": "compute.googleapis.com/Instance",
                  "compute.instanceGroupManagers": "compute.googleapis.com/InstanceGroupManager",
                  "compute.instanceTemplates": "compute.googleapis.com/InstanceTemplate"}
GPU_DETAIL = "any machine type and GPUs (IAM cannot restrict them)"
AGENT_SERVICE_AGENT = re.compile(r"@gcp-sa-aiplatform-re\.iam\.gserviceaccount\.com$")
GOOGLE_SERVICE_AGENT = re.compile(
    r"^(service-\d+@.*\.iam\.gserviceaccount\.com|\d+@cloudservices\.gserviceaccount\.com|"
    r"service-\d+@.*gserviceaccount\.com)$")
AGENT_TAGS = ("spendwatch:agent=true", "agent=true")


@dataclass(frozen=True)
class GcpAccessOptions:
    """`endpoint`: Resource Manager and IAM v2 REST endpoint (http://127.0.0.1:PORT for local fakes);
    `iam_admin_target`: host:port of the IAM admin gRPC API over a plain channel (local fakes only)."""

    endpoint: str | None = None
    iam_admin_target: str | None = None
    anonymous: bool = False


@dataclass
class Clients:
    projects: Any
    folders: Any
    organizations: Any
    iam_admin: Any
    deny: Any


def make_clients(options: GcpAccessOptions | None = None) -> Clients:
    """The SDK clients (REST for Resource Manager and IAM v2; the IAM admin API is gRPC only)."""
    from google.api_core.client_options import ClientOptions
    from google.cloud import iam_admin_v1, iam_v2, resourcemanager_v3

    options = options or GcpAccessOptions()
    kw: dict[str, Any] = {"transport": "rest"}
    creds: dict[str, Any] = {}
    if options.anonymous:
        from google.auth.credentials import AnonymousCredentials

        creds["credentials"] = AnonymousCredentials()
    if options.endpoint:
        kw["client_options"] = ClientOptions(api_endpoint=options.endpoint)
    if options.iam_admin_target:
        import grpc
        from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport

        transport = IAMGrpcTransport(channel=grpc.insecure_channel(options.iam_admin_target))
        iam_admin = iam_admin_v1.IAMClient(transport=transport)
    else:
        iam_admin = iam_admin_v1.IAMClient(**creds)
    return Clients(resourcemanager_v3.ProjectsClient(**kw, **creds), resourcemanager_v3.FoldersClient(**kw, **creds),
                   resourcemanager_v3.OrganizationsClient(**kw, **creds), iam_admin,
                   iam_v2.PoliciesClient(**kw, **creds))


def read_policy() -> dict[str, Any]:
    """A custom role definition with exactly the permissions `spendwatch access gcp` needs."""
    return {"title": "spendwatch access reader", "stage": "GA",
            "includedPermissions": sorted(set(CALLS.values()))}


# -- IAM conditions ----------------------------------------------------------------------------------------

def condition_verdict(expression: str, permission: str, now: datetime) -> tuple[str, str]:
    """("allowed" | "denied" | "conditional", reason) of an IAM condition for `permission` at `now`.

    "denied" here means the condition is false (the binding does not grant); an expression cel-python cannot
    parse or decide is conditional, with its message."""
    import celpy
    from celpy import celtypes

    service = permission.split(".", 1)[0] + ".googleapis.com"
    resource = {celtypes.StringType("service"): celtypes.StringType(service)}
    rtype = RESOURCE_TYPES.get(permission.rsplit(".", 1)[0])
    if rtype:
        resource[celtypes.StringType("type")] = celtypes.StringType(rtype)
    activation = {"request": celtypes.MapType({celtypes.StringType("time"): celtypes.TimestampType(now)}),
                  "resource": celtypes.MapType(resource)}
    try:
        env = celpy.Environment()
        result = env.program(env.compile(expression)).evaluate(activation)
    except Exception as exc:  # celpy raises CELParseError / CELEvalError and lets some others through
        return "conditional", _cel_reason(exc)
    if isinstance(result, Exception):
        return "conditional", _cel_reason(result)
    if isinstance(result, bool | celtypes.BoolType):
        return ("allowed" if bool(result) else "denied"), ""
    return "conditional", f"condition is not a boolean ({type(result).__name__})"


def _cel_reason(exc: Exception) -> str:
    text = str(exc.args[0] if exc.args else exc)
    m = re.search(r"no such member in mapping: '(\w+)'", text)
    if m:
        return f"needs resource.{m.group(1)}"
    m = re.search(r"undeclared reference to '(\w+)'", text)
    if m:
        return f"needs {m.group(1)}()"
    return text.splitlines()[0][:120] if text else type(exc).__name__


# -- reading ----------------------------------------------------------------------------------------------

@dataclass
class Level:
    """One node of the resource hierarchy with its IAM policy (None when unreadable) and deny policies."""

    name: str  # projects/123, folders/456, organizations/789
    display: str
    bindings: list[dict[str, Any]] | None = None
    deny_rules: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _error_reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"


def _bindings(policy: Any) -> list[dict[str, Any]]:
    out = []
    for b in policy.bindings:
        cond = b.condition if b.condition and b.condition.expression else None
        out.append({"role": b.role, "members": list(b.members),
                    "condition": {"title": cond.title, "expression": cond.expression} if cond else None})
    return out


def _iam_policy(client: Any, resource: str) -> Any:
    from google.iam.v1 import iam_policy_pb2, options_pb2

    # Version 3: conditional bindings come back with their conditions (version 1 would hide them).
    return client.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(
        resource=resource, options=options_pb2.GetPolicyOptions(requested_policy_version=3)))


def read_hierarchy(clients: Clients, project: str, gaps: list[str]) -> tuple[Any, list[Level]]:
    """The project and its ancestors, project first, each with its IAM policy and deny rules."""
    proj = clients.projects.get_project(name=f"projects/{project}")
    levels = [Level(proj.name, f"projects/{proj.project_id}")]
    parent = proj.parent
    while parent:
        if parent.startswith("folders/"):
            levels.append(Level(parent, parent))
            try:
                parent = clients.folders.get_folder(name=parent).parent
            except Exception as exc:
                gaps.append(f"{parent}: parent not readable ({_error_reason(exc)}): levels above it not evaluated")
                break
        else:
            levels.append(Level(parent, parent))
            break
    for level in levels:
        kind = level.name.split("/", 1)[0]
        client = {"projects": clients.projects, "folders": clients.folders,
                  "organizations": clients.organizations}[kind]
        try:
            level.bindings = _bindings(_iam_policy(client, level.name))
        except Exception as exc:
            gaps.append(f"{level.display}: IAM policy not readable ({_error_reason(exc)}): "
                        "its grants are missing from the results")
        level.deny_rules = _deny_rules(clients, level, proj.project_id, gaps)
    return proj, levels


def _deny_rules(clients: Clients, level: Level, project_id: str, gaps: list[str]) -> list[tuple[str, dict[str, Any]]]:
    name = level.name if not level.name.startswith("projects/") else f"projects/{project_id}"
    attachment = urllib.parse.quote(f"cloudresourcemanager.googleapis.com/{name}", safe="")
    out = []
    try:
        for summary in clients.deny.list_policies(parent=f"policies/{attachment}/denypolicies"):
            policy = clients.deny.get_policy(name=summary.name)  # the list omits the rules
            label = policy.display_name or policy.name.rsplit("/", 1)[-1]
            for i, rule in enumerate(policy.rules):
                d = rule.deny_rule
                out.append((f"deny:{label}#{i} ({level.display})", {
                    "principals": list(d.denied_principals), "exceptions": list(d.exception_principals),
                    "permissions": list(d.denied_permissions), "exception_permissions": list(d.exception_permissions),
                    "condition": d.denial_condition.expression if d.denial_condition else ""}))
    except Exception as exc:
        gaps.append(f"{level.display}: deny policies not readable ({_error_reason(exc)}): a deny there is not seen")
    return out


class _Roles:
    """Permissions of roles, read once per run; an unreadable role is None (its grants are conditional)."""

    def __init__(self, iam_admin: Any, gaps: list[str]) -> None:
        self.iam_admin, self.gaps = iam_admin, gaps
        self.cache: dict[str, frozenset[str] | None] = {}

    def permissions(self, role: str) -> frozenset[str] | None:
        if role not in self.cache:
            try:
                self.cache[role] = frozenset(self.iam_admin.get_role(request={"name": role}).included_permissions)
            except Exception as exc:
                self.gaps.append(f"role {role} not readable ({_error_reason(exc)}): its grants are conditional")
                self.cache[role] = None
        return self.cache[role]


def service_accounts(clients: Clients, project: str, gaps: list[str]) -> dict[str, Any]:
    try:
        return {sa.email.lower(): sa for sa in clients.iam_admin.list_service_accounts(
            request={"name": f"projects/{project}"})}
    except Exception as exc:
        gaps.append(f"service accounts of {project} not listed ({_error_reason(exc)}): agents are recognised by "
                    "their e-mail only")
        return {}


# -- classification -----------------------------------------------------------------------------------------

def classify(member: str, sa: Any = None) -> tuple[str, str, str, str]:
    """(kind, name, principal_type, why) of an IAM member string."""
    from ..connectors.files.cloudtrail import agent_marker

    kind, _, value = member.partition(":")
    if member in ("allUsers", "allAuthenticatedUsers"):
        return member, member, "public", "anyone" if member == "allUsers" else "any Google account"
    if kind in ("user", "group", "domain"):
        return kind, value, "human", {"user": "Google account", "group": "Google group",
                                      "domain": "everyone in the domain"}[kind]
    if kind == "serviceAccount":
        email = value.lower()
        display = getattr(sa, "display_name", "") or ""
        description = getattr(sa, "description", "") or ""
        texts = " ".join((display, description)).lower()
        if AGENT_SERVICE_AGENT.search(email):
            return kind, value, "agent", "Vertex AI Agent Engine service agent"
        tag = next((t for t in AGENT_TAGS if t in texts.replace(" ", "")), None)
        if tag:
            return kind, value, "agent", f"description says {tag}"
        marker = agent_marker(email.split("@", 1)[0], display)
        if marker:
            return kind, value, "agent", f"name contains '{marker}'"
        if GOOGLE_SERVICE_AGENT.match(email):
            return kind, value, "service", "Google-managed service agent"
        if email.endswith("-compute@developer.gserviceaccount.com"):
            return kind, value, "service", "Compute Engine default service account"
        return kind, value, "service", "service account"
    if member.startswith(("principal://", "principalSet://")):
        return "federated", member, "role", "workload or workforce identity federation"
    if kind == "deleted":
        return "deleted", value, "service" if "serviceaccount" in value.lower() else "human", "deleted identity"
    return kind or member, value or member, "role", f"member kind {kind or member}"


def _deny_principals(member: str, project: Any, ancestors: Iterable[str]) -> tuple[set[str], set[str]]:
    """(identifiers that certainly name `member` in a deny policy, patterns of principal sets it may belong to).

    A service account of the scanned project is certainly in the service-account set of the project and of each
    ancestor; one of another project may be in any such set (its project's place is not read)."""
    kind, _, value = member.partition(":")
    certain = {"principalSet://goog/public:all"}
    maybe: set[str] = set()
    sa_set = "principalSet://cloudresourcemanager.googleapis.com/{}/type/ServiceAccount"
    if kind == "user":
        certain.add(f"principal://goog/subject/{value}")
    elif kind == "group":
        certain.add(f"principalSet://goog/group/{value}")
    elif kind == "serviceAccount":
        certain.add(f"principal://iam.googleapis.com/projects/-/serviceAccounts/{value}")
        number = project.name.split("/", 1)[1]
        own = (f"@{project.project_id}.iam.gserviceaccount.com", f"{number}-compute@developer.gserviceaccount.com",
               f"{project.project_id}@appspot.gserviceaccount.com")
        if value.lower().endswith(own):
            certain |= {sa_set.format(n) for n in (project.name, f"projects/{project.project_id}", *ancestors)}
        else:
            maybe.add(sa_set.format("*"))
    elif kind == "domain":
        maybe.add("principalSet://goog/cloudIdentityCustomerId/*")
    return certain, maybe


def deny_permission(permission: str) -> str:
    """`compute.instances.create` -> `compute.googleapis.com/instances.create` (the deny policies' format)."""
    service, _, rest = permission.partition(".")
    return f"{service}.googleapis.com/{rest}"


def _glob(pattern: str, value: str) -> bool:
    regex = "".join(".*" if c == "*" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE) is not None


def _principal_match(patterns: Iterable[str], certain: set[str], maybe: set[str]) -> str | None:
    """"certain", "maybe" or None: whether a deny rule's principal list covers the member."""
    patterns = list(patterns)
    if any(p in certain for p in patterns):
        return "certain"
    if any(_glob(m, p) for p in patterns for m in maybe):
        return "maybe"
    return None


# -- judging ----------------------------------------------------------------------------------------------

def judge_member(member: str, levels: list[Level], roles: _Roles, project: Any, now: datetime
                 ) -> dict[str, Any]:
    """Every capability of one member."""
    certain, maybe = _deny_principals(member, project, [lv.name for lv in levels[1:]])
    out = {}
    for cap in CAPABILITY_NAMES:
        routes: dict[str, list[PermissionVerdict]] = {}
        for route, permissions in ROUTES[cap].items():
            routes[route] = [_permission(member, p, levels, roles, now, certain, maybe) for p in permissions]
        out[cap] = capability(cap, routes, GPU_DETAIL if cap == "gpu_launch" else "")
    return out


def _permission(member: str, permission: str, levels: list[Level], roles: _Roles, now: datetime,
                certain: set[str], maybe: set[str]) -> PermissionVerdict:
    grants: list[Grant] = []
    for level in levels:
        for b in level.bindings or []:
            if member not in b["members"]:
                continue
            perms = roles.permissions(b["role"])
            ref = f"{level.display} {b['role']}"
            if perms is None:
                grants.append(Grant(ref, "conditional", f"role {b['role']} not readable"))
                continue
            if permission not in perms:
                continue
            cond = b["condition"]
            if cond is None:
                grants.append(Grant(ref, "allowed"))
                continue
            decision, reason = condition_verdict(cond["expression"], permission, now)
            if decision != "denied":
                title = cond.get("title") or "condition"
                grants.append(Grant(f"{ref} if '{title}'", decision, f"'{title}' {reason}" if reason else ""))
    denies: list[Deny] = []
    wanted = deny_permission(permission)
    for level in levels:
        for ref, rule in level.deny_rules:
            if not any(_glob(p, wanted) for p in rule["permissions"]):
                continue
            if any(_glob(p, wanted) for p in rule["exception_permissions"]):
                continue
            who = _principal_match(rule["principals"], certain, maybe)
            excepted = _principal_match(rule["exceptions"], certain, maybe)
            if who is None or excepted == "certain":
                continue
            if excepted == "maybe":
                who = "maybe"
            if rule["condition"]:
                denies.append(Deny(ref, "conditional", f"denial condition {rule['condition'][:80]!r}"))
            elif who == "certain":
                denies.append(Deny(ref, "denied"))
            else:
                denies.append(Deny(ref, "conditional", "may cover this identity"))
    return judge_permission(permission, grants, denies)


def scan_access(clients: Clients, project: str, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
                ) -> Report:
    """Read the project's hierarchy, roles and service accounts and judge every member (see the module doc)."""
    at = now()
    gaps: list[str] = []
    proj, levels = read_hierarchy(clients, project, gaps)
    roles = _Roles(clients.iam_admin, gaps)
    accounts = service_accounts(clients, proj.project_id, gaps)
    members = dict.fromkeys(m for lv in levels for b in lv.bindings or [] for m in b["members"])
    for email in accounts:
        members.setdefault(f"serviceAccount:{email}", None)
    rows = []
    for member in members:
        sa = accounts.get(member.partition(":")[2].lower()) if member.startswith("serviceAccount:") else None
        kind, name, ptype, why = classify(member, sa)
        if sa is not None and getattr(sa, "disabled", False):
            why += " (disabled)"
        rows.append(Row(Identity(member, name, kind, ptype, why), judge_member(member, levels, roles, proj, at)))
    sort_rows(rows)
    exempt = [r.identity.id for r in rows if r.identity.why == "Google-managed service agent"]
    evaluated = {"levels": [lv.display for lv in levels],
                 "deny_rules": [ref for lv in levels for ref, _ in lv.deny_rules]}
    return Report("gcp", proj.project_id, rows, evaluated, gaps,
                  unrestricted_findings("gcp", proj.project_id, rows, at, exempt=exempt))


# -- CLI ----------------------------------------------------------------------------------------------------

def cmd_access_gcp(args: argparse.Namespace) -> int:
    from google.api_core.exceptions import GoogleAPICallError

    if not args.project:
        print("spendwatch: error: access gcp needs --project", file=sys.stderr)
        return 2
    clients = make_clients(GcpAccessOptions(args.endpoint, args.iam_admin_target, anonymous=bool(args.endpoint)))
    try:
        report = scan_access(clients, args.project)
    except GoogleAPICallError as exc:
        print(f"spendwatch: error: reading project {args.project}: {_error_reason(exc)}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render_table(report, sys.stdout, f"GCP project {report.account}")
    if args.fail_on and any(f.severity >= Severity.parse(args.fail_on) for f in report.findings):
        return 3
    return 0
