"""`spendwatch access gcp` through the real Resource Manager, IAM v2 (REST) and IAM admin (gRPC) clients against
local fakes (tests/fakes/gcp_iam.py): bindings on project, folder and organisation, predefined and custom roles
read from the IAM API, IAM conditions (CEL), deny policies, service accounts marked as agents."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from spendwatch.access.gcp import GcpAccessOptions, condition_verdict, make_clients, scan_access
from spendwatch.cli import main
from tests.fakes.gcp_iam import GcpIamWorld, serve_gcp_iam

NOW = datetime(2026, 11, 20, 10, tzinfo=UTC)
P = "ml-prod"
COMPUTE_ADMIN = ["compute.instances.create", "compute.instances.setMachineType",
                 "compute.instances.setMachineResources", "compute.instanceGroupManagers.create",
                 "compute.instanceTemplates.useReadOnly", "compute.instances.list"]


def sa(name: str) -> str:
    return f"serviceAccount:{name}@{P}.iam.gserviceaccount.com"


def bind(role: str, *members: str, condition: str | None = None, title: str = "cond") -> dict[str, Any]:
    b: dict[str, Any] = {"role": role, "members": list(members)}
    if condition:
        b["condition"] = {"title": title, "expression": condition}
    return b


@pytest.fixture
def world() -> GcpIamWorld:
    w = GcpIamWorld()
    w.projects[P] = {"number": "1234", "parent": "folders/456"}
    w.folders["folders/456"] = "organizations/789"
    w.roles = {
        "roles/compute.admin": COMPUTE_ADMIN,
        "roles/compute.viewer": ["compute.instances.list"],
        "roles/compute.serviceAgent": ["compute.instances.create", "compute.instances.list"],
        "roles/editor": [*COMPUTE_ADMIN, "serviceusage.quotas.update", "iam.serviceAccountKeys.create",
                         "apikeys.keys.create"],
        "roles/owner": [*COMPUTE_ADMIN, "serviceusage.quotas.update", "iam.serviceAccountKeys.create",
                        "consumerprocurement.orders.place"],
        "roles/aiplatform.user": ["aiplatform.customJobs.create"],
        f"projects/{P}/roles/quotaBumper": ["serviceusage.quotas.update"],
    }
    w.forbidden.add(f"projects/{P}/roles/secret")
    w.policies["projects/1234"] = [
        bind("roles/compute.admin", sa("lc-trainer"), sa("fenced-agent")),
        bind("roles/compute.admin", sa("batch"), condition='request.time < timestamp("2026-11-21T00:00:00Z")',
             title="until tomorrow"),
        bind("roles/compute.admin", sa("old-job"), condition='request.time < timestamp("2026-01-01T00:00:00Z")'),
        bind("roles/compute.admin", sa("dev-runner"), title="dev VMs only",
             condition=f'resource.name.startsWith("projects/{P}/zones/us-central1-a/instances/dev-")'),
        bind("roles/compute.viewer", sa("viewer"), "allUsers"),
        bind(f"projects/{P}/roles/quotaBumper", sa("quota-bot")),
        bind("roles/aiplatform.user", sa("claude-runner")),
        bind(f"projects/{P}/roles/secret", sa("mystery")),
        bind("roles/compute.serviceAgent", "serviceAccount:service-1234@compute-system.iam.gserviceaccount.com"),
        bind("roles/editor", "serviceAccount:1234-compute@developer.gserviceaccount.com"),
    ]
    w.policies["folders/456"] = [bind("roles/editor", "group:ml-team@example.com")]
    w.policies["organizations/789"] = [bind("roles/owner", "user:admin@example.com")]
    w.service_accounts[P] = [
        {"email": f"lc-trainer@{P}.iam.gserviceaccount.com", "display_name": "LangChain trainer"},
        {"email": f"fenced-agent@{P}.iam.gserviceaccount.com", "description": "fine-tuner; spendwatch:agent=true"},
        {"email": f"batch@{P}.iam.gserviceaccount.com", "display_name": "nightly batch"},
        {"email": f"unused@{P}.iam.gserviceaccount.com", "disabled": True},
    ]
    gpu_perms = [f"compute.googleapis.com/{p}" for p in (
        "instances.create", "instances.setMachineType", "instances.setMachineResources",
        "instanceGroupManagers.create")]
    w.deny["folders/456"] = [{"id": "agents-no-gpu", "displayName": "agents-no-gpu", "rules": [
        {"deniedPrincipals": [f"principal://iam.googleapis.com/projects/-/serviceAccounts/fenced-agent@{P}"
                              ".iam.gserviceaccount.com"], "deniedPermissions": gpu_perms}]}]
    w.deny[f"projects/{P}"] = [{"id": "quota-needs-tag", "rules": [
        {"deniedPrincipals": ["principalSet://goog/public:all"],
         "exceptionPrincipals": ["principalSet://goog/group/ml-team@example.com"],
         "deniedPermissions": ["serviceusage.googleapis.com/quotas.*"],
         "denialCondition": {"expression": "!resource.matchTag('789/quota-approved', 'yes')"}}]}]
    return w


@pytest.fixture
def endpoints(world: GcpIamWorld) -> Iterator[tuple[str, str]]:
    with serve_gcp_iam(world) as eps:
        yield eps


def scan(endpoints: tuple[str, str]) -> Any:
    clients = make_clients(GcpAccessOptions(endpoints[0], endpoints[1], anonymous=True))
    return scan_access(clients, P, now=lambda: NOW)


def by_name(report: Any) -> dict[str, Any]:
    return {r.identity.name.split("@")[0]: r for r in report.rows}


def test_who_can_launch_gpus_on_gcp(endpoints: tuple[str, str], world: GcpIamWorld) -> None:
    report = scan(endpoints)
    rows = by_name(report)
    assert report.account == P and report.gaps == [
        f"role projects/{P}/roles/secret not readable (PermissionDenied: iam.roles.get denied on "
        f"projects/{P}/roles/secret): its grants are conditional"]
    assert report.evaluated["levels"] == [f"projects/{P}", "folders/456", "organizations/789"]

    trainer = rows["lc-trainer"]
    assert (trainer.identity.principal_type, trainer.identity.why) == ("agent", "name contains 'langchain'")
    gpu = trainer.capabilities["gpu_launch"]
    assert gpu.decision == "allowed" and gpu.via == [f"projects/{P} roles/compute.admin"]
    assert gpu.routes["compute.instanceGroupManagers.create"].decision == "allowed"
    assert gpu.routes["aiplatform.customJobs.create"].decision == "denied"

    # The deny policy on the folder closes every Compute route of the marked agent.
    fenced = rows["fenced-agent"]
    assert fenced.identity.principal_type == "agent" and "spendwatch:agent=true" in fenced.identity.why
    assert fenced.capabilities["gpu_launch"].decision == "denied"
    assert fenced.capabilities["gpu_launch"].via == ["deny:agents-no-gpu#0 (folders/456)"]

    # IAM conditions: true now, false now, undecidable.
    assert rows["batch"].capabilities["gpu_launch"].decision == "allowed"
    assert rows["batch"].capabilities["gpu_launch"].via == [f"projects/{P} roles/compute.admin if 'until tomorrow'"]
    assert rows["old-job"].capabilities["gpu_launch"].decision == "denied"
    dev = rows["dev-runner"].capabilities["gpu_launch"]
    assert dev.decision == "conditional" and "'dev VMs only' needs resource.name" in dev.detail

    # Inherited grants name the level; humans are reported, not findings.
    team = rows["ml-team"]
    assert team.identity.principal_type == "human" and team.capabilities["gpu_launch"].via == [
        "folders/456 roles/editor"]
    assert team.capabilities["quota_increase"].decision == "allowed"  # the deny excepts this group
    admin = rows["admin"]
    assert admin.capabilities["marketplace"].decision == "allowed"
    assert admin.capabilities["quota_increase"].decision == "conditional"  # the tag-conditioned deny may apply

    quota = rows["quota-bot"].capabilities["quota_increase"]  # custom role, read from the IAM API
    assert quota.decision == "conditional" and "denial condition" in quota.detail
    assert rows["quota-bot"].capabilities["gpu_launch"].decision == "denied"
    claude = rows["claude-runner"]
    assert claude.identity.principal_type == "agent"
    assert claude.capabilities["gpu_launch"].open_routes == ["aiplatform.customJobs.create"]
    assert rows["mystery"].capabilities["gpu_launch"].decision == "conditional"
    assert rows["viewer"].capabilities["gpu_launch"].decision == "denied"
    assert rows["allUsers"].identity.principal_type == "public"
    assert rows["unused"].capabilities["gpu_launch"].decision == "denied" and "(disabled)" in rows[
        "unused"].identity.why
    agent_sa = rows["service-1234"]
    assert agent_sa.identity.why == "Google-managed service agent"
    assert agent_sa.capabilities["gpu_launch"].decision == "allowed"

    findings = {f.principal.split(":")[1].split("@")[0]: f.severity.label for f in report.findings}
    assert findings == {"lc-trainer": "high", "claude-runner": "high", "batch": "medium", "1234-compute": "medium"}


def test_unreadable_levels_are_gaps_not_an_all_clear(endpoints: tuple[str, str], world: GcpIamWorld) -> None:
    world.deny["organizations/789"] = world.deny.pop("folders/456")
    world.forbidden.add("organizations/789")
    report = scan(endpoints)
    rows = by_name(report)
    assert any(g.startswith("organizations/789: IAM policy not readable") for g in report.gaps)
    assert any(g.startswith("organizations/789: deny policies not readable") for g in report.gaps)
    assert "admin" not in rows  # its only grant is on the unreadable organisation: said by the gap
    # Without the organisation's deny policy the fenced agent is judged by its grants alone.
    assert rows["fenced-agent"].capabilities["gpu_launch"].decision == "allowed"

    world.forbidden.add("folders/456")  # the folder cannot even be read: nothing above it is known
    report = scan(endpoints)
    assert report.evaluated["levels"] == [f"projects/{P}", "folders/456"]
    assert any(g.startswith("folders/456: parent not readable") and "levels above it not evaluated" in g
               for g in report.gaps)


def test_cli_json_table_and_fail_on(endpoints: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["access", "gcp", "--project", P, "--endpoint", endpoints[0], "--iam-admin-target", endpoints[1]]
    assert main([*args, "--json", "--fail-on", "high"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert data["cloud"] == "gcp" and data["account"] == P
    assert set(data) >= {"gaps", "principals", "findings"}
    p = next(x for x in data["principals"] if x["name"].startswith("lc-trainer@"))
    assert p["capabilities"]["gpu_launch"]["decision"] == "allowed"
    assert p["arn"] == sa("lc-trainer")
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "FINDING [high]" in table and "lc-trainer@" in table and "levels: projects/ml-prod" in table
    assert main(["access", "gcp", "--endpoint", endpoints[0]]) == 2


@pytest.mark.parametrize(("expression", "expected"), [
    ('request.time < timestamp("2026-12-01T00:00:00Z")', "allowed"),
    ('request.time >= timestamp("2026-12-01T00:00:00Z")', "denied"),
    ('request.time.getHours("Europe/Berlin") >= 9 && request.time.getHours("Europe/Berlin") < 17', "allowed"),
    ('request.time.getDayOfWeek("UTC") == 0', "denied"),  # 2026-11-20 is a Friday
    ('resource.type == "compute.googleapis.com/Instance"', "allowed"),
    ('resource.type == "storage.googleapis.com/Bucket"', "denied"),
    ('resource.name.startsWith("projects/x/") || request.time < timestamp("2026-12-01T00:00:00Z")', "allowed"),
    ('resource.name.startsWith("projects/x/") && request.time > timestamp("2026-12-01T00:00:00Z")', "denied"),
    ('resource.name.startsWith("projects/x/")', "conditional"),
    ("resource.matchTag('789/env', 'prod')", "conditional"),
    ('request.time < timestamp("not a time")', "conditional"),
    ("request.time <", "conditional"),
])
def test_condition_forms(expression: str, expected: str) -> None:
    assert condition_verdict(expression, "compute.instances.create", NOW)[0] == expected


def test_the_generated_deny_policy_is_honoured(endpoints: tuple[str, str], world: GcpIamWorld) -> None:
    """`spendwatch guardrail gcp`'s deny policy on the organisation: service accounts are held back (conditional:
    the approval tag decides), the listed exception and the humans are not."""
    from spendwatch.guardrails import gcp_deny_policy

    batch = f"batch@{P}.iam.gserviceaccount.com"
    policy = gcp_deny_policy(org_id="789", exceptions=[batch])
    world.deny["organizations/789"] = [{"id": "spendwatch-sa-compute", "displayName": "spendwatch-sa-compute",
                                        "rules": [r["denyRule"] for r in policy["rules"]]}]
    report = scan(endpoints)
    rows = by_name(report)
    trainer = rows["lc-trainer"].capabilities["gpu_launch"]
    assert trainer.decision == "conditional" and "no spendwatch approval" not in trainer.detail
    assert "denial condition" in trainer.detail and "spendwatch-gpu-approval" in trainer.detail
    assert rows["1234-compute"].capabilities["gpu_launch"].decision == "conditional"  # the project's default SA
    assert rows["batch"].capabilities["gpu_launch"].decision == "allowed"  # the exception
    assert rows["ml-team"].capabilities["gpu_launch"].decision == "allowed"  # users and groups are not covered
    assert rows["claude-runner"].capabilities["gpu_launch"].decision == "allowed"  # Vertex AI is not in the policy
    findings = {f.principal.split(":")[1].split("@")[0] for f in report.findings}
    assert findings == {"claude-runner", "batch"}
