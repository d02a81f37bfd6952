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
# SageMaker launches ml.<family> instances for these calls and names the types in sagemaker:InstanceTypes.
SAGEMAKER_ACTIONS: tuple[str, ...] = ("sagemaker:CreateTrainingJob", "sagemaker:CreateNotebookInstance",
                                     "sagemaker:CreateProcessingJob", "sagemaker:CreateHyperParameterTuningJob",
                                     "sagemaker:CreateEndpointConfig")
SAGEMAKER_TYPE_PATTERNS: tuple[str, ...] = tuple(f"ml.{f}.*" for f in ACCELERATED_FAMILIES)
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
            "Sid": "DenyAcceleratedSageMakerWithoutApproval",
            "Effect": "Deny",
            "Action": list(SAGEMAKER_ACTIONS),
            "Resource": "*",
            "Condition": {
                "ForAnyValue:StringLike": {"sagemaker:InstanceTypes": list(SAGEMAKER_TYPE_PATTERNS)},
                "StringNotEquals": {f"aws:PrincipalTag/{APPROVAL_TAG}": APPROVAL_VALUE},
                **agent,
            },
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
            {
                # The approval tag also lifts the guardrail's SageMaker Deny; an approval is for EC2 only.
                "Sid": "DenyAcceleratedSageMaker",
                "Effect": "Deny",
                "Action": list(SAGEMAKER_ACTIONS),
                "Resource": "*",
                "Condition": {"ForAnyValue:StringLike": {"sagemaker:InstanceTypes": list(SAGEMAKER_TYPE_PATTERNS)}},
            },
        ],
    }


EXPLAIN_SCP = f"""\
\
Service control policy "spendwatch-gpu-guardrail" (attach to the organisation root, an OU or an account).
What it does, once attached:
  1. Any IAM user or role tagged {AGENT_TAG}=true is refused ec2:RunInstances and ec2:CreateFleet for
     accelerated instance types, {len(ACCELERATED_FAMILIES)} families:
     {textwrap.fill(", ".join(ACCELERATED_FAMILIES), 100, subsequent_indent="     ")},
     unless it also carries the tag {APPROVAL_TAG}={APPROVAL_VALUE}. spendwatch sets that tag, with a bounded
     inline policy, when a person approves a request in Slack, and removes both when the approval expires.
     The legacy spot APIs (ec2:RequestSpotInstances, ec2:RequestSpotFleet) do not tell IAM the instance type,
     so agents without an approval are refused them for every type (RunInstances can still launch spot).
     Auto Scaling groups built from launch templates are covered through ec2:RunInstances, which AWS checks
     for the caller when the group is created or updated. SageMaker training, processing and tuning jobs,
     notebook instances and endpoint configurations on ml.<accelerated family> types are refused the same way.
  2. Agents are refused servicequotas:RequestServiceQuotaIncrease, approval or not.
  3. Nobody but the approver role may add or remove spendwatch:* tags, so an agent cannot approve itself.
What it does not do: it grants nothing (SCPs only limit); it does not touch principals without the agent tag
(humans, ordinary roles), non-accelerated launches, or the management account (SCPs never apply there). Tag
your agents first; an untagged agent is not guarded (`spendwatch access aws` lists the ones it recognises).
"""

EXPLAIN_BOUNDARY = f"""\
\
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
\
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


# -- GCP: an IAM deny policy ----------------------------------------------------------------------------------

GCP_APPROVAL_TAG_KEY = "spendwatch-gpu-approval"
GCP_APPROVAL_TAG_VALUE = "granted"
# Every way a service account acquires VM capacity that IAM can name (IAM cannot see the machine type).
GCP_DENIED_PERMISSIONS: tuple[str, ...] = (
    "compute.googleapis.com/instances.create",
    "compute.googleapis.com/instances.setMachineType",
    "compute.googleapis.com/instances.setMachineResources",
    "compute.googleapis.com/instanceGroupManagers.create",
    "compute.googleapis.com/instanceGroupManagers.update",
    "serviceusage.googleapis.com/quotas.update",
    "cloudquotas.googleapis.com/quotas.update",
)


def gcp_deny_policy(*, org_id: str, exceptions: Sequence[str] = ()) -> dict[str, Any]:
    """The IAM deny policy (v2 `Policy` body) for the organisation `org_id` (see EXPLAIN_GCP)."""
    return {
        "displayName": "spendwatch: service accounts need an approval to acquire compute",
        "rules": [{
            "description": "Deny VM creation, resizing and quota changes to service accounts unless the resource "
                           f"carries the tag {GCP_APPROVAL_TAG_KEY}={GCP_APPROVAL_TAG_VALUE}",
            "denyRule": {
                "deniedPrincipals": [
                    f"principalSet://cloudresourcemanager.googleapis.com/organizations/{org_id}/type/ServiceAccount"],
                "exceptionPrincipals": [f"principal://iam.googleapis.com/projects/-/serviceAccounts/{e}"
                                        for e in exceptions],
                "deniedPermissions": list(GCP_DENIED_PERMISSIONS),
                "denialCondition": {
                    "title": "no spendwatch approval",
                    "expression": f"!resource.matchTag('{org_id}/{GCP_APPROVAL_TAG_KEY}', '{GCP_APPROVAL_TAG_VALUE}')",
                },
            },
        }],
    }


EXPLAIN_GCP = f"""\
IAM deny policy "spendwatch-sa-compute" (attach it to the organisation; needs the tag key
{GCP_APPROVAL_TAG_KEY} with the value {GCP_APPROVAL_TAG_VALUE} created first).
What it does, once attached:
  Every service account of the organisation's projects (the identities agents run as) is refused creating
  VMs, resizing them (setMachineType, setMachineResources: attaching GPUs), creating or resizing managed
  instance groups, and changing quotas, unless the project (or the VM, tagged at creation) carries the tag
  {GCP_APPROVAL_TAG_KEY}={GCP_APPROVAL_TAG_VALUE}. A person approves by binding that tag value to the project
  for the approved time; grant roles/resourcemanager.tagUser on the tag value to approvers only, or an agent
  could tag its own VM. Service accounts listed as exceptions (`--exception`: CI, autoscalers you trust) are
  left alone.
What it does not do: IAM cannot see the machine type or the GPUs of a request, so this covers every VM a
service account creates, not only GPU ones (list the CPU-only workloads as exceptions); users and groups are
not affected; Google-managed service agents (which act on someone's request) are outside the principal set.
`spendwatch access gcp` reads deny policies: a denied agent shows as conditional (the tag decides).
"""


def gcp_terraform(*, org_id: str, exceptions: Sequence[str] = ()) -> str:
    rule = gcp_deny_policy(org_id=org_id, exceptions=exceptions)["rules"][0]["denyRule"]
    cond = rule["denialCondition"]
    exc = ", ".join(json.dumps(e) for e in rule["exceptionPrincipals"])
    return f"""\
# Generated by `spendwatch guardrail gcp --format terraform`. Read the explanation printed with
# `spendwatch guardrail gcp` before applying.

resource "google_tags_tag_key" "spendwatch_gpu_approval" {{
  parent      = "organizations/{org_id}"
  short_name  = "{GCP_APPROVAL_TAG_KEY}"
  description = "Set by a person to approve compute acquisition by service accounts (spendwatch)"
}}

resource "google_tags_tag_value" "spendwatch_gpu_approval_granted" {{
  parent     = google_tags_tag_key.spendwatch_gpu_approval.id
  short_name = "{GCP_APPROVAL_TAG_VALUE}"
}}

resource "google_iam_deny_policy" "spendwatch_sa_compute" {{
  parent       = urlencode("cloudresourcemanager.googleapis.com/organizations/{org_id}")
  name         = "spendwatch-sa-compute"
  display_name = "spendwatch: service accounts need an approval to acquire compute"
  rules {{
    description = "Deny VM creation, resizing and quota changes to service accounts without the approval tag"
    deny_rule {{
      denied_principals    = {json.dumps(rule["deniedPrincipals"])}
      exception_principals = [{exc}]
      denied_permissions   = {json.dumps(rule["deniedPermissions"])}
      denial_condition {{
        title      = "{cond["title"]}"
        expression = {json.dumps(cond["expression"])}
      }}
    }}
  }}
  depends_on = [google_tags_tag_value.spendwatch_gpu_approval_granted]
}}
"""


# -- Azure: a policy definition denying GPU sizes -----------------------------------------------------------

AZURE_GPU_SIZE_PATTERNS: tuple[str, ...] = ("Standard_NC*", "Standard_ND*", "Standard_NG*", "Standard_NV*",
                                            "Standard_NP*")
_AZURE_SIZE_ALIASES = (("Microsoft.Compute/virtualMachines", "Microsoft.Compute/virtualMachines/sku.name"),
                       ("Microsoft.Compute/virtualMachineScaleSets",
                        "Microsoft.Compute/virtualMachineScaleSets/sku.name"))


def azure_policy_rule() -> dict[str, Any]:
    """The policy rule: VMs and scale sets of an N-series (GPU/FPGA) size get the `effect` parameter."""
    return {
        "if": {"anyOf": [
            {"allOf": [{"field": "type", "equals": rtype},
                       {"anyOf": [{"field": alias, "like": p} for p in AZURE_GPU_SIZE_PATTERNS]}]}
            for rtype, alias in _AZURE_SIZE_ALIASES]},
        "then": {"effect": "[parameters('effect')]"},
    }


def azure_policy_parameters() -> dict[str, Any]:
    return {"effect": {"type": "String", "defaultValue": "Deny", "allowedValues": ["Deny", "Audit", "Disabled"],
                       "metadata": {"displayName": "Effect",
                                    "description": "Deny blocks GPU sizes; Audit only reports them"}}}


def azure_policy_definition() -> dict[str, Any]:
    """The policy definition's properties (the body of a PUT policyDefinitions request)."""
    return {"properties": {
        "displayName": "spendwatch: deny GPU VM sizes without an approval",
        "policyType": "Custom", "mode": "Indexed",
        "description": "Denies N-series VM and scale set sizes. Approval: a policy exemption with expiresOn.",
        "metadata": {"category": "Compute", "generatedBy": "spendwatch"},
        "parameters": azure_policy_parameters(),
        "policyRule": azure_policy_rule(),
    }}


EXPLAIN_AZURE = f"""\
Azure Policy definition "spendwatch-deny-gpu-sizes" (assign it to a subscription or management group).
What it does, once assigned with effect Deny:
  Creating or resizing a VM or a scale set to an N-series size ({", ".join(AZURE_GPU_SIZE_PATTERNS)}: every
  GPU and FPGA size) is refused, whoever asks. A person approves with a policy exemption on the resource group
  that has an expiresOn: Azure lifts the deny there until that time by itself. Creating exemptions needs
  Microsoft.Authorization/policyExemptions/write, which Contributor does not have, so an agent with Contributor
  cannot approve itself. Why not "unless tagged approved": the tags of a new VM are chosen by whoever creates
  it, so a tag condition would let any agent approve itself.
What it does not do: it is not per identity (Azure Policy judges resources, not callers): scope it to the
subscriptions or resource groups agents work in; it does not cover Azure Machine Learning computes, AKS node
pools or Batch pools (their sizes sit in other aliases); effect Audit only reports.
`spendwatch access azure` evaluates it: an identity whose grants all fall under it is denied GPU sizes.
"""


def azure_terraform() -> str:
    definition = azure_policy_definition()["properties"]
    return f"""\
# Generated by `spendwatch guardrail azure --format terraform`. Read the explanation printed with
# `spendwatch guardrail azure` before applying.

variable "subscription_id" {{
  description = "Subscription the GPU-size guardrail is assigned to"
  type        = string
}}

resource "azurerm_policy_definition" "spendwatch_deny_gpu_sizes" {{
  name         = "spendwatch-deny-gpu-sizes"
  policy_type  = "Custom"
  mode         = "Indexed"
  display_name = "{definition["displayName"]}"
  description  = "{definition["description"]}"
  metadata     = {_heredoc(definition["metadata"])}
  parameters   = {_heredoc(definition["parameters"])}
  policy_rule  = {_heredoc(definition["policyRule"])}
}}

resource "azurerm_subscription_policy_assignment" "spendwatch_deny_gpu_sizes" {{
  name                 = "spendwatch-deny-gpu-sizes"
  subscription_id      = "/subscriptions/${{var.subscription_id}}"
  policy_definition_id = azurerm_policy_definition.spendwatch_deny_gpu_sizes.id
  parameters           = {_heredoc({"effect": {"value": "Deny"}})}
}}
"""


def cmd_guardrail(args: argparse.Namespace) -> int:
    if args.cloud == "gcp":
        if not args.org_id:
            print("spendwatch: error: guardrail gcp needs --org-id", file=sys.stderr)
            return 2
        return _emit(args, {"deny_policy": gcp_deny_policy(org_id=args.org_id, exceptions=args.exception)},
                     gcp_terraform(org_id=args.org_id, exceptions=args.exception),
                     [("IAM deny policy", EXPLAIN_GCP, "deny_policy")])
    if args.cloud == "azure":
        return _emit(args, {"policy_definition": azure_policy_definition()}, azure_terraform(),
                     [("Azure Policy definition", EXPLAIN_AZURE, "policy_definition")])
    return _cmd_guardrail_aws(args)


def _emit(args: argparse.Namespace, docs: dict[str, Any], hcl: str, explained: list[tuple[str, str, str]]) -> int:
    if args.format == "terraform":
        sys.stdout.write(hcl)
    elif args.json:
        json.dump(docs, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for title, explain, key in explained:
            print(f"== {title} ==\n{explain}")
            print(json.dumps(docs[key], indent=2), end="\n\n")
    return 0


def _cmd_guardrail_aws(args: argparse.Namespace) -> int:
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
    """`spendwatch guardrail aws|gcp|azure`."""
    p = sub.add_parser("guardrail", help="print guardrail policies that stop agents launching GPUs unapproved")
    p.add_argument("cloud", choices=("aws", "gcp", "azure"))
    p.add_argument("--format", choices=("json", "terraform"), default="json",
                   help="json (explained, default) or terraform")
    p.add_argument("--json", action="store_true", help="only the two policy documents, as one JSON object")
    p.add_argument("--approver-arn", default=DEFAULT_APPROVER,
                   help=f"the role allowed to set spendwatch:* tags (default {DEFAULT_APPROVER})")
    p.add_argument("--org-id", help="gcp: the organisation id the deny policy is attached to")
    p.add_argument("--exception", action="append", default=[], metavar="SA_EMAIL",
                   help="gcp: a service account the deny policy leaves alone (repeatable)")
    p.set_defaults(func=cmd_guardrail)


__all__: Sequence[str] = ("add_commands", "approval_policy", "azure_policy_definition", "azure_terraform",
                          "boundary", "gcp_deny_policy", "gcp_terraform", "scp", "terraform")
