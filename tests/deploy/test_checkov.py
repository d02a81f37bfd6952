"""checkov over deploy/terraform, from its own virtual environment (`make checkov` builds `.venv-checkov`).

Skipped when `.venv-checkov/bin/checkov` is missing, except under CI=true, where a missing checkov fails.
No failed check is allowed; every skip must carry a reason (`#checkov:skip=CKV_...:reason`).

checkov cannot see inside documents loaded with file()/jsondecode(), so its IAM checks pass on the modules
without reading the generated policies. The second test feeds it the generated documents directly and
compares what it flags with the explained list below: a new finding fails until someone explains it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .tfkit import GENERATED, ROOT, TF

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"

# What checkov says about the generated AWS documents as they are (Resource "*"), and why each is accepted.
EXPLAINED: dict[str, dict[str, str]] = {
    "quarantine": {
        "CKV_AWS_286": "privilege escalation: iam:PutRolePolicy (deny-all revoke policy, contain-principal) and "
                       "iam:PassRole (only to EC2) are what quarantine and release do; the role's boundary is "
                       "the same document and a Deny keeps it off spendwatch's own roles",
        "CKV_AWS_287": "credentials exposure: iam:UpdateAccessKey deactivates a contained user's keys",
        "CKV_AWS_289": "permissions management: Put/DeleteRolePolicy, Put/DeleteUserPolicy on the principal a "
                       "finding names, which is not known at deploy time",
        "CKV_AWS_290": "write access without constraints: containment acts on whichever instance a finding names",
        "CKV_AWS_355": "Resource \"*\": as above; the actions' targets are not known at deploy time",
    },
    # Nothing: every statement carries the aws:TagKeys condition, which checkov counts as a constraint (it
    # passes CKV_AWS_286/289/290/355 on it); the module also narrows Resource to this account's principals.
    "approvals": {},
    # The member account's approver role as modules/member-account builds it (approver_document, evaluated for
    # one account): the same statements on role/* and user/* there, plus the Deny on spendwatch's own roles.
    "approver": {},
    "read": {
        "CKV_AWS_287": "credentials exposure: sts:AssumeRole, narrowed by the module to the member read roles",
        "CKV_AWS_288": "data exfiltration: s3:GetObject, narrowed by the module to var.s3_bucket_arns' objects",
        "CKV_AWS_290": "write access: sts:AssumeRole counts as write; narrowed by the module to the read roles",
        "CKV_AWS_355": "Resource \"*\": the module narrows sts and S3; the other read calls support no "
                       "resource-level permissions",
    },
}


def _checkov_or_skip() -> Path:
    if not CHECKOV.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHECKOV} is missing: CI must run `make checkov` (or `make test`, which builds it)")
        pytest.skip("checkov is not installed: `make checkov` sets up .venv-checkov")
    return CHECKOV


def _inline(name: str, document: Path) -> str:
    body = document.read_text()
    return f'resource "aws_iam_policy" "{name}" {{\n  name   = "{name}"\n  policy = <<EOT\n{body}EOT\n}}\n'


def _member_approver_document(account: str = "111111111111") -> dict[str, Any]:
    """modules/member-account's `approver_document` for `account` (tests/deploy/test_terraform.py checks the HCL)."""
    declared = json.loads(GENERATED["approvals"].read_text())["Statement"]
    kinds = {"SpendwatchApprovalsApplyRole": "role", "SpendwatchApprovalsRevokeRole": "role",
             "SpendwatchApprovalsApplyUser": "user", "SpendwatchApprovalsRevokeUser": "user"}
    allowed = [{**s, "Resource": f"arn:aws:iam::{account}:{kinds[s['Sid']]}/*"} for s in declared]
    own = [f"arn:aws:iam::{account}:role/{name}" for name in ("spendwatch-read", "spendwatch-quarantine",
                                                               "spendwatch-approver")]
    deny = {"Sid": "NeverApproveSpendwatchRoles", "Effect": "Deny", "Resource": own,
            "Action": [a for s in declared for a in s["Action"] if "Role" in a]}
    return {"Version": "2012-10-17", "Statement": [*allowed, deny]}


def _inline_azure_role(name: str, document: Path) -> str:
    """The generated Azure role as a literal azurerm_role_definition, so checkov's role checks can read it."""
    role = json.loads(document.read_text())
    scope = '"/subscriptions/00000000-0000-0000-0000-000000000000"'
    return (f'resource "azurerm_role_definition" "{name}" {{\n  name = {json.dumps(role["Name"])}\n'
            f'  scope = {scope}\n  assignable_scopes = [{scope}]\n  permissions {{\n'
            f'    actions = {json.dumps(role["Actions"])}\n'
            f'    not_actions = {json.dumps(role["NotActions"])}\n  }}\n}}\n')


def _parse(stdout: str) -> dict[str, Any]:
    decoder, at = json.JSONDecoder(), 0
    merged: dict[str, list[dict[str, Any]]] = {"passed_checks": [], "failed_checks": [], "skipped_checks": []}
    parsing_errors = 0
    while stdout[at:].strip():  # one JSON document per framework (only terraform here), one after the other
        at += len(stdout[at:]) - len(stdout[at:].lstrip())
        document, at = decoder.raw_decode(stdout, at)
        for report in document if isinstance(document, list) else [document]:
            assert report.get("check_type") == "terraform", report.get("check_type")
            for key in merged:
                merged[key] += report["results"].get(key, [])
            parsing_errors += report["summary"]["parsing_errors"]
    return {"results": merged, "parsing_errors": parsing_errors}


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """checkov over deploy/terraform and over the generated policies inlined, the two runs side by side
    (each takes 10-20 s, mostly start-up). One run with two -d scans the first directory twice (3.3.30)."""
    checkov = _checkov_or_skip()
    inlined = tmp_path_factory.mktemp("policies")
    approver = inlined / "approver.json"
    approver.write_text(json.dumps(_member_approver_document(), indent=2) + "\n")
    documents = (_inline("quarantine", GENERATED["quarantine"]) + _inline("read", GENERATED["read"])
                 + _inline("approvals", GENERATED["approvals"]) + _inline("approver", approver)
                 + _inline_azure_role("azure_quarantine", GENERATED["azure_quarantine"]))
    (inlined / "main.tf").write_text(documents)
    runs = [
        subprocess.Popen(
            [str(checkov), "-d", str(directory), "--config-file", str(TF / ".checkov.yaml"), "--output", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
        )
        for directory in (TF, inlined)
    ]
    reports = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode in (0, 1), stderr[-3000:]
        reports.append(_parse(stdout))
    modules, policies = reports
    for key in modules["results"]:
        modules["results"][key] += policies["results"][key]
    modules["parsing_errors"] += policies["parsing_errors"]
    return modules, inlined


def _in(check: dict[str, Any], directory: Path) -> bool:
    return Path(check["file_abs_path"]).resolve().is_relative_to(directory.resolve())


def test_checkov_passes_with_every_skip_explained(scan: tuple[dict[str, Any], Path]) -> None:
    report, _ = scan
    results = report["results"]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in results["failed_checks"] if _in(c, TF)]
    assert not failed, "checkov failed:\n" + "\n".join(failed)
    assert report["parsing_errors"] == 0
    assert len([c for c in results["passed_checks"] if _in(c, TF)]) > 100
    for check in results["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) > 20, f"{check['check_id']} on {check['resource']} is skipped without a reason"


def test_checkov_on_the_generated_policies_flags_only_what_is_explained(scan: tuple[dict[str, Any], Path]) -> None:
    report, inlined = scan
    flagged: dict[str, set[str]] = {"quarantine": set(), "read": set(), "approvals": set(), "approver": set(),
                                    "azure_quarantine": set()}
    for check in report["results"]["failed_checks"]:
        if _in(check, inlined):
            flagged[check["resource"].split(".")[-1]].add(check["check_id"])
    assert flagged["quarantine"], "checkov no longer reads the inlined policy: this test checks nothing"
    approvals_passed = {c["check_id"] for c in report["results"]["passed_checks"]
                        if _in(c, inlined) and c["resource"].endswith(".approvals")}
    assert {"CKV_AWS_286", "CKV_AWS_289", "CKV_AWS_355"} <= approvals_passed, approvals_passed
    approver_passed = {c["check_id"] for c in report["results"]["passed_checks"]
                       if _in(c, inlined) and c["resource"].endswith(".approver")}
    assert {"CKV_AWS_286", "CKV_AWS_289", "CKV_AWS_355"} <= approver_passed, approver_passed
    for name, explained in EXPLAINED.items():
        unexplained = flagged[name] - set(explained)
        assert not unexplained, f"checkov flags the {name} policy for {sorted(unexplained)}: fix it or explain it here"


def test_checkov_passes_the_generated_azure_quarantine_role(scan: tuple[dict[str, Any], Path]) -> None:
    # CKV_AZURE_39 refuses a custom role with "*" actions (a subscription owner in disguise). GCP custom roles
    # have no checkov check; tests/deploy/test_policies.py checks both roles for wildcards itself.
    report, inlined = scan

    def checked(kind: str) -> set[str]:
        return {c["check_id"] for c in report["results"][kind] if _in(c, inlined)
                and c["resource"].endswith(".azure_quarantine")}
    assert "CKV_AZURE_39" in checked("passed_checks") and not checked("failed_checks")
