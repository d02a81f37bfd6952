"""`spendwatch access azure` through the real azure-mgmt-authorization, -msi and -resource-policy clients against a
local ARM fake (tests/fakes/azure_authz.py): role assignments at subscription, resource group and resource
scope, role definitions with wildcards and notActions, managed identities marked as agents, and Azure Policy
(deny GPU sizes on a resource group, a tag-gated deny that cannot be decided, exemptions, DoNotEnforce)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from spendwatch import guardrails
from spendwatch.access.azure import AzureAccessOptions, make_clients, scan_access
from spendwatch.cli import main
from tests.fakes.azure_authz import AuthzWorld, serve_authz

SUB = "00000000-0000-0000-0000-0000000000a1"
NOW = datetime(2026, 11, 20, 10, tzinfo=UTC)
S = f"/subscriptions/{SUB}"


class _Token:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("fake", 4102444800)


def rg(name: str) -> str:
    return f"{S}/resourceGroups/{name}"


@pytest.fixture
def world() -> AuthzWorld:
    w = AuthzWorld(SUB)
    contributor = w.role("b24988ac", "Contributor", ["*"], ["Microsoft.Authorization/*/Write",
                                                            "Microsoft.Authorization/*/Delete"])
    vm_contrib = w.role("9980e02c", "Virtual Machine Contributor", ["Microsoft.Compute/virtualMachines/*",
                                                                    "Microsoft.Network/networkInterfaces/*"])
    reader = w.role("acdd72a7", "Reader", ["*/read"])
    no_gpu = w.role("c0ffee01", "Compute operator (no create)", ["Microsoft.Compute/*"],
                    ["Microsoft.Compute/virtualMachines/write", "Microsoft.Compute/virtualMachineScaleSets/write"])
    keys = w.role("81a9662b", "Storage Account Key Operator", ["Microsoft.Storage/storageAccounts/listkeys/action",
                                                                "Microsoft.Storage/storageAccounts/regeneratekey/action"])
    quota = w.role("c0ffee02", "Quota requester", ["Microsoft.Quota/*"])
    secret = f"{S}/providers/Microsoft.Authorization/roleDefinitions/hidden"
    w.forbidden.add(secret)

    w.identity("langchain-runner", "p-lc")
    w.identity("batch-pool", "p-batch", {"spendwatch:agent": "true"})
    w.identity("research-bot", "p-research", {"Agent": "True"})
    w.identity("quota-helper", "p-quota")
    w.assign("p-lc", "ServicePrincipal", contributor, S)
    w.assign("p-batch", "ServicePrincipal", vm_contrib, rg("gpu-sandbox"))
    w.assign("p-research", "ServicePrincipal", vm_contrib, rg("ml-research"))
    w.assign("p-quota", "ServicePrincipal", quota, S)
    w.assign("u-alice", "User", contributor, S)
    w.assign("sp-keys", "ServicePrincipal", keys, rg("data"))
    w.assign("g-ops", "Group", vm_contrib, S, condition="@Resource[Microsoft.Compute/virtualMachines:name] "
                                                          "StringStartsWith 'ops-'")
    w.assign("sp-reader", "ServicePrincipal", reader, S)
    w.assign("sp-one-vm", "ServicePrincipal", contributor,
             f"{rg('prod')}/providers/Microsoft.Compute/virtualMachines/web-1")
    w.assign("sp-no-create", "ServicePrincipal", no_gpu, S)
    w.assign("sp-hidden", "ServicePrincipal", secret, S)

    deny_def = w.policy_definition("spendwatch-deny-gpu", guardrails.azure_policy_rule(),
                                   guardrails.azure_policy_parameters())
    w.sandbox_assignment = w.policy_assignment("deny-gpu-sandbox", deny_def, rg("gpu-sandbox"))  # type: ignore
    tag_def = w.policy_definition("gpu-needs-tag", {
        "if": {"allOf": [{"field": "type", "equals": "Microsoft.Compute/virtualMachines"},
                         {"field": "Microsoft.Compute/virtualMachines/sku.name", "like": "Standard_N*"},
                         {"field": "tags['approved']", "notEquals": "yes"}]},
        "then": {"effect": "deny"}})
    w.policy_assignment("gpu-needs-tag", tag_def, rg("ml-research"))
    allowed_skus = w.policy_definition("cccc23c7-8427-4f53-ad12-b6a63eb452b3", {
        "if": {"allOf": [{"field": "type", "equals": "Microsoft.Compute/virtualMachines"},
                         {"not": {"field": "Microsoft.Compute/virtualMachines/sku.name",
                                  "in": "[parameters('listOfAllowedSKUs')]"}}]},
        "then": {"effect": "Deny"}}, {"listOfAllowedSKUs": {"type": "Array"}}, built_in=True)
    w.policy_assignment("allowed-skus", allowed_skus, S, parameters={"listOfAllowedSKUs": ["Standard_D4s_v5"]},
                        enforcement="DoNotEnforce")
    w.exemption("old-approval", w.sandbox_assignment, rg("gpu-sandbox"), "2026-11-19T00:00:00Z")  # type: ignore
    return w


@pytest.fixture
def url(world: AuthzWorld) -> Iterator[str]:
    with serve_authz(world) as base:
        yield base


def scan(url: str) -> Any:
    clients = make_clients(SUB, AzureAccessOptions(_Token(), url, allow_http=True))
    return scan_access(clients, SUB, now=lambda: NOW)


def rows_by_name(report: Any) -> dict[str, Any]:
    return {r.identity.name: r for r in report.rows}


def test_who_can_launch_gpus_on_azure(url: str, world: AuthzWorld) -> None:
    report = scan(url)
    rows = rows_by_name(report)
    assert report.gaps and "roleDefinitions/hidden not readable (AuthorizationFailed" in report.gaps[0]
    assert report.evaluated["policies"] == ["policy:deny-gpu-sandbox", "policy:gpu-needs-tag"]
    assert report.evaluated["policies_skipped"] == ["policy:allowed-skus (not enforced)"]

    lc = rows["langchain-runner"]
    assert (lc.identity.kind, lc.identity.principal_type) == ("managedIdentity", "agent")
    gpu = lc.capabilities["gpu_launch"]
    assert gpu.decision == "allowed" and gpu.via == ["subscription Contributor"]
    assert gpu.routes["Microsoft.Compute/virtualMachineScaleSets/write"].decision == "allowed"
    assert lc.capabilities["quota_increase"].decision == "allowed"  # Contributor's "*"

    batch = rows["batch-pool"]  # tagged agent; VM Contributor on the sandbox, where the policy denies GPU sizes
    assert batch.identity.principal_type == "agent" and batch.identity.why == "tag spendwatch:agent=true"
    assert batch.capabilities["gpu_launch"].decision == "denied"
    assert batch.capabilities["gpu_launch"].via == ["policy:deny-gpu-sandbox"]  # the expired exemption is ignored

    research = rows["research-bot"].capabilities["gpu_launch"]  # the tag-gated deny cannot be decided
    assert research.decision == "conditional" and "field tags['approved']" in research.detail

    alice = rows["u-alice"]
    assert alice.identity.principal_type == "human"
    assert alice.capabilities["gpu_launch"].decision == "allowed"  # the sandbox policy does not cover her scope
    creds = rows["sp-keys"].capabilities["credentials"]  # listkeys vs listKeys: names are case-insensitive
    assert creds.decision == "allowed" and creds.via == ["rg/data Storage Account Key Operator"]

    assert rows["g-ops"].capabilities["gpu_launch"].decision == "conditional"
    one_vm = rows["sp-one-vm"].capabilities["gpu_launch"]
    assert one_vm.decision == "conditional" and "only on rg/prod/" in one_vm.detail
    assert rows["sp-reader"].capabilities["gpu_launch"].decision == "denied"
    assert rows["sp-no-create"].capabilities["gpu_launch"].decision == "denied"  # notActions honoured
    assert rows["sp-no-create"].identity.principal_type == "service"
    assert rows["sp-hidden"].capabilities["gpu_launch"].decision == "conditional"
    assert rows["quota-helper"].capabilities["quota_increase"].decision == "allowed"
    assert rows["quota-helper"].capabilities["gpu_launch"].decision == "denied"

    assert {f.principal: f.severity.label for f in report.findings} == {"p-lc": "high"}


def test_a_live_exemption_is_an_approval(url: str, world: AuthzWorld) -> None:
    world.exemption("approval-42", world.sandbox_assignment, rg("gpu-sandbox"), "2026-11-20T14:00:00Z")  # type: ignore
    rows = rows_by_name(scan(url))
    assert rows["batch-pool"].capabilities["gpu_launch"].decision == "allowed"


def test_unreadable_policies_are_a_gap(url: str, world: AuthzWorld) -> None:
    world.forbidden.add(f"{S}/providers/Microsoft.Authorization/policyAssignments")
    report = scan(url)
    assert any(g.startswith("Azure Policy assignments not readable") for g in report.gaps)
    assert rows_by_name(report)["batch-pool"].capabilities["gpu_launch"].decision == "allowed"


def test_cli(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["access", "azure", "--subscription", SUB, "--endpoint", url, "--json", "--fail-on", "high"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert data["cloud"] == "azure" and data["account"] == SUB and data["findings"][0]["principal"] == "p-lc"
    assert main(["access", "azure", "--subscription", SUB, "--endpoint", url]) == 0
    out = capsys.readouterr().out
    assert "langchain-runner" in out and "policies: policy:deny-gpu-sandbox" in out
    assert main(["access", "azure"]) == 2
