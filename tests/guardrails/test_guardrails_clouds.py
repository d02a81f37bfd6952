"""`spendwatch guardrail gcp|azure`: the documents parse into the clouds' own SDK types, the Terraform parses with
python-hcl2 and embeds the same documents, and the Azure rule denies exactly the GPU sizes."""

from __future__ import annotations

import json
from typing import Any

import hcl2
import pytest

from spendwatch import guardrails
from spendwatch.access.azure import PolicyRule, Undecided
from spendwatch.cli import main

ORG = "123456789012"
EXCEPTION = "ci-runner@build-proj.iam.gserviceaccount.com"


def resources(text: str) -> dict[str, dict[str, Any]]:
    parsed = hcl2.loads(text)  # python-hcl2 8.x keeps the quotes of labels and strings
    return {k.strip('"'): {n.strip('"'): b for n, b in v.items()} for block in parsed["resource"]
            for k, v in block.items()}


def unquote(value: Any) -> Any:
    if isinstance(value, str):
        return json.loads(value) if value.startswith('"') else value
    if isinstance(value, list):
        return [unquote(v) for v in value]
    return value


def heredoc_json(value: str) -> Any:
    return json.loads(value[value.index("{"): value.rindex("}") + 1])


def test_gcp_deny_policy_is_a_valid_iam_v2_policy() -> None:
    from google.cloud import iam_v2

    doc = guardrails.gcp_deny_policy(org_id=ORG, exceptions=[EXCEPTION])
    policy = iam_v2.Policy.from_json(json.dumps(doc))  # the SDK's own schema: an unknown field fails
    rule = policy.rules[0].deny_rule
    assert list(rule.denied_principals) == [
        f"principalSet://cloudresourcemanager.googleapis.com/organizations/{ORG}/type/ServiceAccount"]
    assert list(rule.exception_principals) == [f"principal://iam.googleapis.com/projects/-/serviceAccounts/{EXCEPTION}"]
    assert "compute.googleapis.com/instances.create" in rule.denied_permissions
    assert all(p.count("/") == 1 and ".googleapis.com/" in p for p in rule.denied_permissions)
    with pytest.raises(Exception, match="deniedPrincipal"):  # the check is live
        iam_v2.Policy.from_json(json.dumps({"rules": [{"denyRule": {"deniedPrincipal": ["x"]}}]}))


def test_gcp_denial_condition_is_cel() -> None:
    import celpy

    expr = guardrails.gcp_deny_policy(org_id=ORG)["rules"][0]["denyRule"]["denialCondition"]["expression"]
    celpy.Environment().compile(expr)  # parses as CEL
    assert expr == f"!resource.matchTag('{ORG}/spendwatch-gpu-approval', 'granted')"


def test_gcp_terraform_parses_and_matches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["guardrail", "gcp", "--format", "terraform", "--org-id", ORG, "--exception", EXCEPTION]) == 0
    res = resources(capsys.readouterr().out)
    deny = res["google_iam_deny_policy"]["spendwatch_sa_compute"]
    rule = deny["rules"][0]["deny_rule"][0]
    doc = guardrails.gcp_deny_policy(org_id=ORG, exceptions=[EXCEPTION])["rules"][0]["denyRule"]
    assert unquote(rule["denied_permissions"]) == doc["deniedPermissions"]
    assert unquote(rule["denied_principals"]) == doc["deniedPrincipals"]
    assert unquote(rule["exception_principals"]) == doc["exceptionPrincipals"]
    assert unquote(rule["denial_condition"][0]["expression"]) == doc["denialCondition"]["expression"]
    assert "google_tags_tag_key" in res and "google_tags_tag_value" in res


def test_gcp_cli_explains_and_needs_the_org(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["guardrail", "gcp"]) == 2
    assert main(["guardrail", "gcp", "--org-id", ORG]) == 0
    out = capsys.readouterr().out
    assert out.index("What it does") < out.index('"denyRule"') and "IAM cannot see the machine type" in out
    assert main(["guardrail", "gcp", "--org-id", ORG, "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"deny_policy"}


def _azure_denies(size: str, rtype: str = "Microsoft.Compute/virtualMachines") -> bool:
    rule = PolicyRule("t", "/", [], guardrails.azure_policy_rule(), {"effect": "Deny"})
    alias = f"{rtype.lower()}/sku.name"
    return rule.holds(rule.rule["if"], {"type": rtype, alias: size})


@pytest.mark.parametrize("size", ["Standard_NC24ads_A100_v4", "standard_nd96isr_h100_v5", "Standard_NV36ads_A10_v5",
                                  "Standard_NC4as_T4_v3", "Standard_NG32ads_V620_v1", "Standard_NP10s"])
def test_azure_rule_denies_gpu_sizes(size: str) -> None:
    assert _azure_denies(size) and _azure_denies(size, "Microsoft.Compute/virtualMachineScaleSets")


@pytest.mark.parametrize("size", ["Standard_D4s_v5", "Standard_E16-8ds_v5", "Standard_B2ms", "Standard_F8s_v2",
                                  "Standard_M128s", "Standard_HB120rs_v3", "Standard_L8s_v3"])
def test_azure_rule_leaves_other_sizes(size: str) -> None:
    assert not _azure_denies(size)


def test_azure_rule_is_well_formed() -> None:
    from azure.mgmt.resource.policy import models

    definition = models.PolicyDefinition(guardrails.azure_policy_definition())  # the SDK's model of the body
    assert definition.mode == "Indexed" and definition.policy_type == "Custom"
    assert definition.parameters is not None and definition.parameters["effect"].default_value == "Deny"
    rule = definition.policy_rule
    assert rule["then"]["effect"] == "[parameters('effect')]"
    likes = [c["like"] for branch in rule["if"]["anyOf"] for c in branch["allOf"][1]["anyOf"]]
    assert likes and all(p.count("*") == 1 for p in likes)  # Azure's `like` takes one wildcard
    with pytest.raises(Undecided):  # an unresolved parameter is undecided, never a silent "no"
        PolicyRule("t", "/", [], {"if": {"field": "type", "equals": "[parameters('missing')]"}}, {}).holds(
            {"field": "type", "equals": "[parameters('missing')]"}, {"type": "x"})


def test_azure_terraform_parses_and_matches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["guardrail", "azure", "--format", "terraform"]) == 0
    res = resources(capsys.readouterr().out)
    definition = res["azurerm_policy_definition"]["spendwatch_deny_gpu_sizes"]
    assert heredoc_json(definition["policy_rule"]) == guardrails.azure_policy_rule()
    assert heredoc_json(definition["parameters"]) == guardrails.azure_policy_parameters()
    assignment = res["azurerm_subscription_policy_assignment"]["spendwatch_deny_gpu_sizes"]
    assert "azurerm_policy_definition.spendwatch_deny_gpu_sizes.id" in assignment["policy_definition_id"]
    assert heredoc_json(assignment["parameters"]) == {"effect": {"value": "Deny"}}


def test_azure_cli_explains(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["guardrail", "azure"]) == 0
    out = capsys.readouterr().out
    assert out.index("What it does") < out.index('"policyRule"') and "policy exemption" in out
