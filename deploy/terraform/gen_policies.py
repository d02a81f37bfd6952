"""Write the Terraform modules' IAM documents from the code's own declarations, so they cannot drift.

The modules load these files with `file()` / `jsondecode()`; nothing in a `.tf` file lists a permission by
hand. Run `make terraform-policies` (or this script) after changing a connector's `permissions.py` or an
action's `permissions`, and commit the result; `tests/deploy/test_policies.py` fails while they are stale.

- aws/policies/read.json        `connectors.aws.permissions.policy()` verbatim (`spendwatch iam-policy aws`)
- aws/policies/quarantine.json  one Allow statement per service: the union of every AWS action's `permissions`
- aws/policies/approvals.json   `spendwatch.approvals.PERMISSIONS` (GPU-launch exceptions), one statement per
                                principal kind and step (apply, revoke); the module narrows the resources
- aws/policies/athena.json      `connectors.aws.permissions.athena_policy()` (`[aws.athena]`), one statement per
                                thing Athena touches; the module narrows the resources
- gcp/roles/reader.json         `connectors.gcp.permissions.role()`
- gcp/roles/quarantine.json     a custom role: the union of every GCP action's `permissions`
- azure/roles/reader.json       `connectors.azure.permissions.role()` without AssignableScopes (the module sets them)
- azure/roles/quarantine.json   a custom role definition: the union of every Azure action's `permissions`

`--check` writes nothing and exits 1 when a file differs from what the code declares.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import import_module
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def quarantine_actions(cloud: str = "aws") -> list[str]:
    """Every permission the registered actions of `cloud` declare (quarantine and release alike), sorted."""
    from spendwatch.actions import ACTIONS

    return sorted({p for cls in ACTIONS.values() if cls.cloud == cloud for p in cls.permissions})


def _action_names(cloud: str) -> str:
    from spendwatch.actions import ACTIONS

    return ", ".join(sorted(name for name, cls in ACTIONS.items() if cls.cloud == cloud))


def gcp_quarantine_role() -> dict[str, Any]:
    """The GCP custom role the Slack service's account holds: exactly the GCP actions' permissions."""
    return {
        "title": "spendwatch quarantine",
        "description": f"Quarantine and release Compute Engine instances ({_action_names('gcp')}): firewall "
                       "rules on a network tag, tags, labels, snapshots, stop/start.",
        "stage": "GA",
        "includedPermissions": quarantine_actions("gcp"),
    }


def azure_quarantine_role() -> dict[str, Any]:
    """The Azure custom role the Slack app's identity holds: exactly the Azure actions' operations."""
    return {
        "Name": "spendwatch quarantine",
        "IsCustom": True,
        "Description": f"Quarantine and release virtual machines ({_action_names('azure')}): a deny-all network "
                       "security group on their NICs, tags, snapshots, deallocate/start.",
        "Actions": quarantine_actions("azure"),
        "NotActions": [],
        "DataActions": [],
        "NotDataActions": [],
    }


def quarantine_policy() -> dict[str, Any]:
    """Exactly the AWS actions' declared permissions, one Allow statement per service (iam:PassRole alone, only
    to EC2). Resource "*": the actions act on whichever instance or principal a finding names; the module adds
    Deny statements that keep the role off spendwatch's own roles."""
    by_service: dict[str, list[str]] = {}
    for action in quarantine_actions():
        if action != "iam:PassRole":
            by_service.setdefault(action.split(":")[0], []).append(action)
    statements: list[dict[str, Any]] = [
        {"Sid": f"SpendwatchQuarantine{service.title().replace('-', '')}", "Effect": "Allow",
         "Action": actions, "Resource": "*"}
        for service, actions in sorted(by_service.items())
    ]
    if "iam:PassRole" in quarantine_actions():
        # Release re-attaches the instance profile it detached: a role passed to EC2, never to anything else.
        statements.append({
            "Sid": "SpendwatchQuarantinePassRoleToEc2", "Effect": "Allow", "Action": ["iam:PassRole"], "Resource": "*",
            "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        })
    return {"Version": "2012-10-17", "Statement": statements}


def approvals_policy() -> dict[str, Any]:
    """Exactly `spendwatch.approvals.PERMISSIONS`, split so the module can grant each role only what it does:
    `SpendwatchApprovalsApply<Kind>` (put the policy, tag: the Slack function on Approve) and
    `SpendwatchApprovalsRevoke<Kind>` (delete, untag: the sweep, and the Slack function's rollback), for
    Kind Role and User. Tag changes are held to the two tags `apply_exception` writes (aws:TagKeys; a request
    without tag keys, Put/DeletePolicy, passes ForAllValues). Resource "*": the module narrows it to this
    account's roles and users: the functions' own (by default), or the approver role's in each member account
    (modules/member-account, `approvals.approver_session`)."""
    from spendwatch import approvals

    tag_keys = [approvals.APPROVAL_TAG, approvals.UNTIL_TAG]
    groups: dict[str, list[str]] = {}
    for action in sorted(approvals.PERMISSIONS):
        name = action.split(":", 1)[1]
        kind = "Role" if name.endswith(("Role", "RolePolicy")) else "User"
        step = "Revoke" if name.startswith(("Delete", "Untag")) else "Apply"
        groups.setdefault(f"SpendwatchApprovals{step}{kind}", []).append(action)
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": "*",
         "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": tag_keys}}}
        for sid, actions in sorted(groups.items())
    ]}


def documents() -> dict[str, Any]:
    # import_module: the packages re-export a `permissions` function that shadows the submodule.
    aws = import_module("spendwatch.connectors.aws.permissions")
    gcp = import_module("spendwatch.connectors.gcp.permissions")
    azure = import_module("spendwatch.connectors.azure.permissions")

    azure_role = azure.role()
    azure_role.pop("AssignableScopes")
    return {
        "aws/policies/read.json": aws.policy(),
        "aws/policies/quarantine.json": quarantine_policy(),
        "aws/policies/approvals.json": approvals_policy(),
        "aws/policies/athena.json": aws.athena_policy(),
        "gcp/roles/reader.json": gcp.role(),
        "gcp/roles/quarantine.json": gcp_quarantine_role(),
        "azure/roles/reader.json": azure_role,
        "azure/roles/quarantine.json": azure_quarantine_role(),
    }


def render(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for rel, document in documents().items():
        path = HERE / rel
        text = render(document)
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote deploy/terraform/{rel}")
    if args.check and stale:
        print("stale (run `make terraform-policies`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
