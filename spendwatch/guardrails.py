"""Guardrail policies that stop marked agents from acquiring accelerated compute without a human's approval.

Three documents, generated rather than hand-written so the list of accelerated families lives in one place:

- `scp()`: a service control policy for an organisation root, OU or account. SCPs only deny or limit, so it
  is three Deny statements: launches of accelerated instance types by principals tagged
  `spendwatch:agent=true` unless the principal also carries `spendwatch:gpu-approval=granted`; quota
  increases by agents (always: raising a quota is a person's decision, an approval is for one launch); and
  adding or removing `spendwatch:*` tags by anyone but the approver role, so an agent allowed to tag IAM
  principals cannot approve itself.
- `boundary()`: the same as a permissions boundary, for accounts without Organizations. A boundary caps what
  the identity policies can grant, so it opens with Allow * and then carries the same Denies; the agent tag
  condition is dropped (the boundary is attached to agents only, which marks them).
- `approval_policy()`: the bounded exception spendwatch puts inline on an approved principal (together with
  the approval tag that lifts the guardrail's Deny): it allows the approved instance type in the approved region
  until the expiry, and *denies* every other accelerated launch, in another region or after the expiry. IAM
  cannot compare a tag's value with aws:CurrentTime, so the expiry lives in this policy, where IAM enforces it
  by itself, and spendwatch's sweep (`spendwatch approvals expire`) removes tag and policy after it. The
  instance count cannot be expressed in IAM: it is recorded with the approval and shown, not enforced.

Instance families are listed one by one (`p4d.*`, `g5.*`, ...), not as `p*`/`g*`, so an unrelated future
family starting with the same letter is not caught and no GPU family is caught by accident; a new
accelerated family needs a new spendwatch release (the test suite checks the list against the catalogue).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from datetime import datetime
from typing import Any

AGENT_TAG = "spendwatch:agent"
APPROVAL_TAG = "spendwatch:gpu-approval"
APPROVAL_VALUE = "granted"
DEFAULT_APPROVER = "arn:aws:iam::*:role/spendwatch-approver"

# Every EC2 family with GPUs, Trainium/Inferentia/Gaudi accelerators, FPGAs or video transcoders.
ACCELERATED_FAMILIES: tuple[str, ...] = (
    "p2", "p3", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200", "p6e-gb200",
    "g3", "g3s", "g4ad", "g4dn", "g5", "g5g", "g6", "g6e", "g6f", "gr6", "gr6f",
    "trn1", "trn1n", "trn2", "inf1", "inf2", "dl1", "dl2q", "f1", "f2", "vt1",
)
INSTANCE_TYPE_PATTERNS: tuple[str, ...] = tuple(f"{f}.*" for f in ACCELERATED_FAMILIES)
# The calls whose authorisation carries ec2:InstanceType (per AWS's service authorisation reference, as
# parliament knows it). RequestSpotInstances and RequestSpotFleet do not carry it: a type condition on them
# would never match, so agents are refused those legacy spot APIs outright unless approved (a spot instance
# can still be launched through RunInstances with InstanceMarketOptions, which the first Deny covers).
LAUNCH_ACTIONS: tuple[str, ...] = ("ec2:RunInstances", "ec2:CreateFleet")
UNTYPED_LAUNCH_ACTIONS: tuple[str, ...] = ("ec2:RequestSpotInstances", "ec2:RequestSpotFleet")
QUOTA_ACTION = "servicequotas:RequestServiceQuotaIncrease"
TAG_ACTIONS: tuple[str, ...] = ("iam:TagUser", "iam:UntagUser", "iam:TagRole", "iam:UntagRole")


def is_guarded_type(instance_type: str) -> bool:
    """True when the guardrail's instance-type patterns catch `instance_type`."""
    return instance_type.split(".", 1)[0].lower() in ACCELERATED_FAMILIES


def _statements(*, agent_condition: bool, approver_arn: str) -> list[dict[str, Any]]:
    agent = {"StringEqualsIgnoreCase": {f"aws:PrincipalTag/{AGENT_TAG}": "true"}} if agent_condition else {}
    return [
        {
            "Sid": "DenyAcceleratedLaunchWithoutApproval",
            "Effect": "Deny",
            "Action": list(LAUNCH_ACTIONS),
            "Resource": "*",
            "Condition": {
                "StringLike": {"ec2:InstanceType": list(INSTANCE_TYPE_PATTERNS)},
                "StringNotEquals": {f"aws:PrincipalTag/{APPROVAL_TAG}": APPROVAL_VALUE},
                **agent,
            },
        },
        {
            "Sid": "DenyLegacySpotRequestsWithoutApproval",
            "Effect": "Deny",
            "Action": list(UNTYPED_LAUNCH_ACTIONS),
            "Resource": "*",
            "Condition": {"StringNotEquals": {f"aws:PrincipalTag/{APPROVAL_TAG}": APPROVAL_VALUE}, **agent},
        },
        {
            "Sid": "DenyQuotaIncreaseToAgents",
            "Effect": "Deny",
            "Action": [QUOTA_ACTION],
            "Resource": "*",
            **({"Condition": agent} if agent else {}),
        },
        {
            "Sid": "OnlyApproverChangesSpendwatchTags",
            "Effect": "Deny",
            "Action": list(TAG_ACTIONS),
            "Resource": "*",
            "Condition": {
                "ForAnyValue:StringLike": {"aws:TagKeys": ["spendwatch:*"]},
                "ArnNotLike": {"aws:PrincipalArn": approver_arn},
            },
        },
    ]


def scp(*, approver_arn: str = DEFAULT_APPROVER) -> dict[str, Any]:
    """The service control policy (see the module doc)."""
    return {"Version": "2012-10-17", "Statement": _statements(agent_condition=True, approver_arn=approver_arn)}


def boundary(*, approver_arn: str = DEFAULT_APPROVER) -> dict[str, Any]:
    """The permissions-boundary variant, for agent users and roles (see the module doc)."""
    allow = {"Sid": "AllowWhatIdentityPoliciesGrant", "Effect": "Allow", "Action": "*", "Resource": "*"}
    return {"Version": "2012-10-17",
            "Statement": [allow, *_statements(agent_condition=False, approver_arn=approver_arn)]}


def iso_z(value: datetime) -> str:
    """UTC time as IAM writes it (`2026-11-20T14:00:00Z`)."""
    from datetime import UTC

    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def approval_policy(*, instance_type: str, region: str, until: datetime) -> dict[str, Any]:
    """The bounded exception put inline on an approved principal (see the module doc)."""
    end = iso_z(until)
    guarded = {"ec2:InstanceType": list(INSTANCE_TYPE_PATTERNS)}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowApprovedLaunch",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateTags"],
                "Resource": f"arn:aws:ec2:{region}:*:*",
                "Condition": {
                    "StringEquals": {"aws:RequestedRegion": region},
                    "StringEqualsIfExists": {"ec2:InstanceType": instance_type},
                    "DateLessThan": {"aws:CurrentTime": end},
                },
            },
            {
                "Sid": "DenyOtherAcceleratedTypes",
                "Effect": "Deny",
                "Action": list(LAUNCH_ACTIONS),
                "Resource": "*",
                "Condition": {"StringLike": guarded, "StringNotEquals": {"ec2:InstanceType": instance_type}},
            },
            {
                "Sid": "DenyOtherRegions",
                "Effect": "Deny",
                "Action": list(LAUNCH_ACTIONS),
                "Resource": "*",
                "Condition": {"StringLike": guarded, "StringNotEquals": {"aws:RequestedRegion": region}},
            },
            {
                "Sid": "DenyAfterExpiry",
                "Effect": "Deny",
                "Action": list(LAUNCH_ACTIONS),
                "Resource": "*",
                "Condition": {"StringLike": guarded, "DateGreaterThan": {"aws:CurrentTime": end}},
            },
        ],
    }


EXPLAIN_SCP = f"""\
Service control policy "spendwatch-gpu-guardrail" (attach to the organisation root, an OU or an account).
What it does, once attached:
  1. Any IAM user or role tagged {AGENT_TAG}=true is refused ec2:RunInstances and ec2:CreateFleet for
     accelerated instance types, {len(ACCELERATED_FAMILIES)} families:
     {textwrap.fill(", ".join(ACCELERATED_FAMILIES), 100, subsequent_indent="     ")},
     unless it also carries the tag {APPROVAL_TAG}={APPROVAL_VALUE}. spendwatch sets that tag, with a bounded
     inline policy, when a person approves a request in Slack, and removes both when the approval expires.
     The legacy spot APIs (ec2:RequestSpotInstances, ec2:RequestSpotFleet) do not tell IAM the instance type,
     so agents without an approval are refused them for every type (RunInstances can still launch spot).
  2. Agents are refused servicequotas:RequestServiceQuotaIncrease, approval or not.
  3. Nobody but the approver role may add or remove spendwatch:* tags, so an agent cannot approve itself.
What it does not do: it grants nothing (SCPs only limit); it does not touch principals without the agent tag
(humans, ordinary roles), non-accelerated launches, or the management account (SCPs never apply there). Tag
your agents first; an untagged agent is not guarded (`spendwatch access aws` lists the ones it recognises).
"""

EXPLAIN_BOUNDARY = f"""\
Permissions boundary "spendwatch-agent-boundary" (set it as the boundary of each agent user or role; use it
where the account is not in an organisation you control). A boundary caps what identity policies can grant:
  - Allow * : the agent keeps whatever its own policies grant ...
  - ... except accelerated launches (and legacy spot requests) without the {APPROVAL_TAG}={APPROVAL_VALUE}
    tag, quota increases and changes to spendwatch:* tags (the SCP's Deny statements, without the
    agent-tag condition: being given this boundary is what marks the principal).
Protect the boundary itself: the agent must not hold iam:DeleteUserPermissionsBoundary /
iam:DeleteRolePermissionsBoundary or iam:PutRolePolicy on itself (not yet checked by `spendwatch access`).
"""


def _heredoc(doc: dict[str, Any]) -> str:
    # `${` starts an interpolation in HCL strings and heredocs; IAM variables such as ${aws:username} need `$${`.
    return "<<-EOT\n" + json.dumps(doc, indent=2).replace("${", "$${") + "\nEOT"


def terraform(*, approver_arn: str = DEFAULT_APPROVER) -> str:
    """Terraform (HCL) for both policies and the SCP's attachment; JSON documents as heredocs."""
    return f"""\
# Generated by `spendwatch guardrail aws --format terraform`. Read the explanation printed with
# `spendwatch guardrail aws` before applying.

variable "scp_target_id" {{
  description = "Organisation root (r-...), OU (ou-...) or account id the guardrail SCP is attached to"
  type        = string
}}

resource "aws_organizations_policy" "spendwatch_gpu_guardrail" {{
  name        = "spendwatch-gpu-guardrail"
  description = "Deny accelerated launches and quota increases to spendwatch:agent principals without approval"
  type        = "SERVICE_CONTROL_POLICY"
  content     = {_heredoc(scp(approver_arn=approver_arn))}
}}

resource "aws_organizations_policy_attachment" "spendwatch_gpu_guardrail" {{
  policy_id = aws_organizations_policy.spendwatch_gpu_guardrail.id
  target_id = var.scp_target_id
}}

resource "aws_iam_policy" "spendwatch_agent_boundary" {{
  name        = "spendwatch-agent-boundary"
  description = "Permissions boundary for agent identities: no accelerated launches without approval"
  policy      = {_heredoc(boundary(approver_arn=approver_arn))}
}}
"""


def cmd_guardrail(args: argparse.Namespace) -> int:
    docs = {"scp": scp(approver_arn=args.approver_arn), "boundary": boundary(approver_arn=args.approver_arn)}
    if args.format == "terraform":
        sys.stdout.write(terraform(approver_arn=args.approver_arn))
        return 0
    if args.json:
        json.dump(docs, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for title, explain, key in (("SCP", EXPLAIN_SCP, "scp"), ("Permissions boundary", EXPLAIN_BOUNDARY, "boundary")):
        print(f"== {title} ==\n{explain}")
        print(json.dumps(docs[key], indent=2), end="\n\n")
    return 0


def add_commands(sub: Any) -> None:
    """`spendwatch guardrail aws`."""
    p = sub.add_parser("guardrail", help="print guardrail policies that stop agents launching GPUs unapproved")
    p.add_argument("cloud", choices=("aws",))
    p.add_argument("--format", choices=("json", "terraform"), default="json",
                   help="json (explained, default) or terraform")
    p.add_argument("--json", action="store_true", help="only the two policy documents, as one JSON object")
    p.add_argument("--approver-arn", default=DEFAULT_APPROVER,
                   help=f"the role allowed to set spendwatch:* tags (default {DEFAULT_APPROVER})")
    p.set_defaults(func=cmd_guardrail)


__all__: Sequence[str] = ("add_commands", "approval_policy", "boundary", "scp", "terraform")
