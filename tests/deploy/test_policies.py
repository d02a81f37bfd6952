"""The IAM documents the Terraform modules load are exactly what the code declares.

The read policy is `connectors/aws/permissions.py`'s set, the quarantine policy the union of the AWS actions'
`permissions`, the GCP and Azure reader roles their connectors' sets, the GCP and Azure quarantine roles the
union of each cloud's actions' `permissions` (no wildcard anywhere on a quarantine identity); and the
committed files are not stale.
"""

from __future__ import annotations

import json
from importlib import import_module
from typing import Any

from spendwatch.actions import ACTIONS, Action

from .tfkit import GENERATED, TF, gen_policies

aws_permissions = import_module("spendwatch.connectors.aws.permissions")
gcp_permissions = import_module("spendwatch.connectors.gcp.permissions")
azure_permissions = import_module("spendwatch.connectors.azure.permissions")


def _load(key: str) -> Any:
    return json.loads(GENERATED[key].read_text())


def _allowed(document: dict[str, Any]) -> set[str]:
    actions: set[str] = set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow", statement
        assert "NotAction" not in statement and "NotResource" not in statement, statement
        listed = statement["Action"]
        actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def test_committed_files_are_what_the_generator_writes() -> None:
    gen = gen_policies()
    for rel, document in gen.documents().items():
        path = TF / rel
        assert path.exists(), f"{rel} missing: run `make terraform-policies`"
        assert path.read_text() == gen.render(document), f"{rel} is stale: run `make terraform-policies` and commit"
    assert gen.main(["--check"]) == 0


def test_generator_covers_every_generated_file() -> None:
    assert {TF / rel for rel in gen_policies().documents()} == set(GENERATED.values())


def test_read_policy_is_exactly_the_connectors_declared_calls() -> None:
    document = _load("read")
    assert _allowed(document) == set(aws_permissions.declared()) == set(aws_permissions.CALLS.values())
    assert document == aws_permissions.policy()  # what `spendwatch iam-policy aws` prints


def _aws_actions() -> list[type[Action]]:
    return [cls for cls in ACTIONS.values() if cls.cloud == "aws"]


def test_quarantine_policy_is_exactly_the_union_of_the_aws_actions_permissions() -> None:
    union = {p for cls in _aws_actions() for p in cls.permissions}
    assert union, "no AWS action declares permissions"
    assert _allowed(_load("quarantine")) == union


def test_quarantine_policy_has_no_wildcard_actions() -> None:
    for action in _allowed(_load("quarantine")):
        assert "*" not in action and "?" not in action, action
        service, _, name = action.partition(":")
        assert service and name, action


def test_quarantine_pass_role_only_to_ec2() -> None:
    (statement,) = [s for s in _load("quarantine")["Statement"] if "iam:PassRole" in s["Action"]]
    assert statement["Action"] == ["iam:PassRole"]
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}


def test_every_cloud_with_actions_has_a_generated_quarantine_document() -> None:
    # A new cloud's actions need their own generated identity document (and its wiring in deploy/terraform).
    documents = {"aws": "quarantine", "gcp": "gcp_quarantine", "azure": "azure_quarantine"}
    assert {cls.cloud for cls in ACTIONS.values()} == set(documents)
    for key in documents.values():
        assert GENERATED[key].is_file(), key


def _union(cloud: str) -> set[str]:
    union = {p for cls in ACTIONS.values() if cls.cloud == cloud for p in cls.permissions}
    assert union, f"no {cloud} action declares permissions"
    return union


def test_gcp_quarantine_role_is_exactly_the_gcp_actions_permissions() -> None:
    role = _load("gcp_quarantine")
    assert set(role) == {"title", "description", "stage", "includedPermissions"}
    assert role["includedPermissions"] == sorted(_union("gcp"))
    assert role["stage"] == "GA"
    for permission in role["includedPermissions"]:
        assert "*" not in permission and permission.count(".") == 2, permission
    # Release keeps what quarantine made (shared rules, evidence): nothing may delete.
    assert not [p for p in role["includedPermissions"] if p.endswith((".delete", ".setIamPolicy"))]


def test_azure_quarantine_role_is_exactly_the_azure_actions_operations() -> None:
    role = _load("azure_quarantine")
    assert role["Actions"] == sorted(_union("azure"))
    assert role["NotActions"] == [] and role["DataActions"] == [] and role["NotDataActions"] == []
    assert role["IsCustom"] is True and "AssignableScopes" not in role  # the module sets them
    for operation in role["Actions"]:
        assert "*" not in operation and operation.startswith("Microsoft."), operation
        assert not operation.endswith("/delete") and "Microsoft.Authorization" not in operation, operation
    # Polling the actions' long-running operations is declared (the ARM fake shows the SDK's reads).
    assert {"Microsoft.Compute/locations/operations/read", "Microsoft.Network/locations/operations/read"} <= set(
        role["Actions"])


def test_gcp_reader_role_is_exactly_the_connectors_permissions() -> None:
    role = _load("gcp_reader")
    assert role["includedPermissions"] == gcp_permissions.permissions() == sorted(set(gcp_permissions.CALLS.values()))
    assert role == gcp_permissions.role()


def test_azure_reader_role_is_exactly_the_connectors_actions() -> None:
    role = _load("azure_reader")
    assert role["Actions"] == azure_permissions.permissions() == sorted(set(azure_permissions.CALLS.values()))
    assert role["DataActions"] == sorted(set(azure_permissions.DATA_CALLS.values()))
    assert role["NotActions"] == [] and role["NotDataActions"] == []
    assert "AssignableScopes" not in role  # the module sets them from subscription_ids
    assert {k: v for k, v in azure_permissions.role().items() if k != "AssignableScopes"} == role


def test_approvals_policy_is_exactly_the_approvals_declared_permissions() -> None:
    from spendwatch import approvals

    document = _load("approvals")
    assert _allowed(document) == set(approvals.PERMISSIONS)
    assert document == gen_policies().approvals_policy()
    # Apply (put, tag) and revoke (delete, untag) apart, per principal kind, so the sweep gets only revoke.
    by_sid = {s["Sid"]: set(s["Action"]) for s in document["Statement"]}
    assert by_sid == {
        "SpendwatchApprovalsApplyRole": {"iam:PutRolePolicy", "iam:TagRole"},
        "SpendwatchApprovalsApplyUser": {"iam:PutUserPolicy", "iam:TagUser"},
        "SpendwatchApprovalsRevokeRole": {"iam:DeleteRolePolicy", "iam:UntagRole"},
        "SpendwatchApprovalsRevokeUser": {"iam:DeleteUserPolicy", "iam:UntagUser"},
    }


def test_approvals_policy_has_no_wildcard_actions_and_only_the_approval_tags() -> None:
    from spendwatch import approvals

    for statement in _load("approvals")["Statement"]:
        for action in statement["Action"]:
            assert "*" not in action and "?" not in action and action.startswith("iam:"), action
        # Tag changes are held to the two tags apply_exception writes and revoke_exception removes.
        assert statement["Condition"] == {"ForAllValues:StringEquals": {
            "aws:TagKeys": [approvals.APPROVAL_TAG, approvals.UNTIL_TAG]}}, statement
