"""Approving an agent's GPU launch from Slack: request, decide, apply a bounded exception, revoke it on expiry.

The flow, each step audited (`store.write_audit`, action `approval.*`):

1. `spendwatch request --principal ARN --instance-type g5.12xlarge --count 2 --region us-east-1 --hours 4
   --reason "..."` records a pending request and posts it to Slack: who asks, what, where, and the projected
   cost (catalogue list price x count x hours), with Approve and Deny buttons.
2. A click arrives at the signed interaction endpoint (`spendwatch.slack_app`, same signature, replay and
   authorisation checks as the quarantine buttons). Only the configured approvers (users or user groups) may
   decide; anyone else is refused, audited, and nothing is applied.
3. Approve applies the exception to the principal in IAM: the tag `spendwatch:gpu-approval=granted` (which
   lifts the guardrail's Deny, see `spendwatch.guardrails`), a `spendwatch:gpu-approval-until` tag for people
   reading IAM, and the inline policy `spendwatch-gpu-approval-<id>` (`guardrails.approval_policy`): the
   instance type, the region and the expiry, bounded by IAM itself. The count is recorded, not enforceable in
   IAM. A request can be decided once (compare-and-set in the store), so a double click applies nothing twice.
4. `expire_due` (run by `spendwatch approvals expire`, or a scheduler) removes the policy and the tags when the
   expiry passes. The clock is injected, so tests move it.

Accounts: IAM is changed in the principal's own account (`principal_target(...)[0]`). With an approver role
set (`--approver-role`, env `SPENDWATCH_AWS_APPROVER_ROLE_NAME`; deploy/terraform/aws/modules/member-account
creates it as `spendwatch-approver`), spendwatch assumes `arn:<partition>:iam::<account>:role/<name>` (session
`spendwatch-approval`) for every principal, its own account's included. Without one it uses its own
credentials, and a principal in another account than theirs is refused before anything changes
(`ApproverAccessError`), as is a role that cannot be assumed: the decision fails, audited, nothing applied.

What this does not do: it does not launch anything for the agent, and it cannot stop launches by a principal
the guardrail does not cover (untagged, or where the guardrail is not attached). Apply the guardrail first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .catalog import lookup
from .guardrails import APPROVAL_TAG, APPROVAL_VALUE, approval_policy, iso_z
from .store import Approvals, Store, StoredApproval

ACTION_APPROVE = "sw_gpu_approve"
ACTION_DENY = "sw_gpu_deny"
UNTIL_TAG = "spendwatch:gpu-approval-until"
MAX_HOURS = 72.0
MAX_COUNT = 64
# IAM actions spendwatch needs to apply and revoke exceptions (the approver role).
PERMISSIONS = ("iam:TagUser", "iam:UntagUser", "iam:TagRole", "iam:UntagRole", "iam:PutUserPolicy",
               "iam:DeleteUserPolicy", "iam:PutRolePolicy", "iam:DeleteRolePolicy")
# The role spendwatch assumes in a principal's account to change its IAM (modules/member-account creates it);
# guardrails.DEFAULT_APPROVER, the only principal the guardrail lets change the approval tags, names it too.
APPROVER_ROLE_ENV = "SPENDWATCH_AWS_APPROVER_ROLE_NAME"
DEFAULT_APPROVER_ROLE = "spendwatch-approver"
SESSION_NAME = "spendwatch-approval"
_ARN = re.compile(r"arn:aws[\w-]*:(iam|sts)::(\d{12}):(user|role|assumed-role)/(.+)")
_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9]+")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")


class RequestError(ValueError):
    """A request that cannot be made (bad ARN, unknown instance type shape, bounds exceeded)."""


class ApproverAccessError(RuntimeError):
    """spendwatch cannot reach IAM in a principal's account: no approver role set for another account, or the
    role could not be assumed. Raised before anything is changed."""


def principal_target(arn: str) -> tuple[str, str, str]:
    """(account, "user"|"role", name) for an IAM user/role ARN or an assumed-role session ARN (its role)."""
    m = _ARN.fullmatch(arn.strip())
    if not m:
        raise RequestError(f"not an IAM user or role ARN: {arn!r}")
    _, account, kind, rest = m.groups()
    name = rest.rsplit("/", 1)[-1] if kind != "assumed-role" else rest.split("/", 1)[0]
    return account, "user" if kind == "user" else "role", name


def policy_name(approval_id: str) -> str:
    return f"spendwatch-gpu-approval-{approval_id}"


def projected_cost(instance_type: str, count: int, hours: float) -> tuple[float | None, float | None]:
    """(hourly list price of one instance, projected total) from the catalogue; None when unknown."""
    known = lookup(instance_type)
    if known is None:
        return None, None
    return known.on_demand_usd_hour, round(known.on_demand_usd_hour * count * hours, 2)


def new_request(*, principal: str, instance_type: str, count: int, region: str, hours: float, reason: str,
                requested_by: str, now: datetime) -> StoredApproval:
    """A validated pending request (not stored yet)."""
    principal_target(principal)
    if not _INSTANCE_TYPE.fullmatch(instance_type):
        raise RequestError(f"not an instance type: {instance_type!r}")
    if not _REGION.fullmatch(region):
        raise RequestError(f"not a region: {region!r}")
    if not 0 < hours <= MAX_HOURS:
        raise RequestError(f"--hours must be in (0, {MAX_HOURS:g}]")
    if not 0 < count <= MAX_COUNT:
        raise RequestError(f"--count must be in 1..{MAX_COUNT}")
    if not reason.strip():
        raise RequestError("--reason is required: it is what the approver reads")
    _, total = projected_cost(instance_type, count, hours)
    return StoredApproval(
        id=f"apr-{secrets.token_hex(6)}", principal=principal, instance_type=instance_type, count=count,
        region=region, hours=hours, reason=reason.strip()[:500], requested_by=requested_by,
        requested_at=now.astimezone(UTC).isoformat(), projected_usd=total, status="pending", decided_by=None,
        decided_at=None, expires_at=None, channel=None, ts=None,
    )


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message(a: StoredApproval, outcome: str | None = None) -> dict[str, Any]:
    """Block Kit message for a request; with `outcome`, the decided form (no buttons)."""
    hourly, total = projected_cost(a.instance_type, a.count, a.hours)
    cost = (f"${total:,.2f} (list price ${hourly:,.2f}/h x {a.count} x {a.hours:g} h)" if total is not None
            else "unknown (instance type not in spendwatch's price list)")
    text = (f"GPU launch approval requested by {a.requested_by}: {a.count} x {a.instance_type} in {a.region} "
            f"for {a.hours:g} h, projected {cost}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            f":rotating_light: *GPU launch approval requested* (`{a.id}`)\n"
            f"*Who:* `{_esc(a.principal)}` (asked by {_esc(a.requested_by)})\n"
            f"*What:* {a.count} x `{_esc(a.instance_type)}` for {a.hours:g} h\n*Where:* `{_esc(a.region)}`\n"
            f"*Projected cost:* {cost}\n*Reason:* {_esc(a.reason)}")}},
    ]
    if outcome:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": outcome}]})
    else:
        blocks.append({"type": "actions", "block_id": "sw_approval", "elements": [
            {"type": "button", "action_id": ACTION_APPROVE, "style": "primary", "value": a.id,
             "text": {"type": "plain_text", "text": f"Approve {a.hours:g} h"},
             "confirm": {"title": {"type": "plain_text", "text": "Approve this launch?"},
                         "text": {"type": "mrkdwn", "text": f"Lets `{_esc(a.principal)}` launch "
                                  f"{a.instance_type} in {a.region} for {a.hours:g} h."},
                         "confirm": {"type": "plain_text", "text": "Approve"},
                         "deny": {"type": "plain_text", "text": "Cancel"}}},
            {"type": "button", "action_id": ACTION_DENY, "style": "danger", "value": a.id,
             "text": {"type": "plain_text", "text": "Deny"}},
        ]})
    return {"text": text, "blocks": blocks}


def audit(store: Store, a: StoredApproval, *, at: datetime, actor: str, action: str, outcome: str,
          description: str, detail: dict[str, Any] | None = None) -> None:
    account, _, _ = principal_target(a.principal)
    store.write_audit(at=at, actor=actor, action=action, cloud="aws", account=account, region=a.region,
                      resource=a.principal, finding_id=None, step=a.id, description=description, outcome=outcome,
                      dry_run=False, detail=json.dumps({"approval": a.id, **(detail or {})}, sort_keys=True))


def post_request(store: Store, client: Any, channel: str, a: StoredApproval, *, now: datetime) -> StoredApproval:
    """Store the request, post it to Slack, remember where; audited."""
    records = Approvals(store)
    records.add(a)
    audit(store, a, at=now, actor=a.requested_by, action="approval.request", outcome="ok",
          description=f"requested {a.count} x {a.instance_type} in {a.region} for {a.hours:g} h: {a.reason}",
          detail={"projected_usd": a.projected_usd})
    body = message(a)
    resp = client.chat_postMessage(channel=channel, text=body["text"], blocks=body["blocks"])
    records.set_message(a.id, channel=str(resp["channel"]), ts=str(resp["ts"]))
    return records.get(a.id) or a


# -- applying and revoking in IAM ------------------------------------------------------------------------

def apply_exception(iam: Any, a: StoredApproval, until: datetime) -> None:
    """Tag the principal and put the bounded inline policy (see the module doc)."""
    _, kind, name = principal_target(a.principal)
    doc = json.dumps(approval_policy(instance_type=a.instance_type, region=a.region, until=until))
    tags = [{"Key": APPROVAL_TAG, "Value": APPROVAL_VALUE}, {"Key": UNTIL_TAG, "Value": iso_z(until)}]
    if kind == "user":
        iam.put_user_policy(UserName=name, PolicyName=policy_name(a.id), PolicyDocument=doc)
        iam.tag_user(UserName=name, Tags=tags)
    else:
        iam.put_role_policy(RoleName=name, PolicyName=policy_name(a.id), PolicyDocument=doc)
        iam.tag_role(RoleName=name, Tags=tags)


def revoke_exception(iam: Any, a: StoredApproval, *, keep_tag: bool = False) -> None:
    """Remove the inline policy and (unless another approval of the principal is still live) the tags.

    Missing pieces are fine (removed by hand already): revocation is idempotent."""
    from botocore.exceptions import ClientError

    _, kind, name = principal_target(a.principal)
    try:
        if kind == "user":
            iam.delete_user_policy(UserName=name, PolicyName=policy_name(a.id))
        else:
            iam.delete_role_policy(RoleName=name, PolicyName=policy_name(a.id))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchEntity":
            raise
    if keep_tag:
        return
    if kind == "user":
        iam.untag_user(UserName=name, TagKeys=[APPROVAL_TAG, UNTIL_TAG])
    else:
        iam.untag_role(RoleName=name, TagKeys=[APPROVAL_TAG, UNTIL_TAG])


def decide(store: Store, iam_factory: Callable[[str], Any], approval_id: str, *, approve: bool, actor: str,
           now: datetime) -> tuple[StoredApproval | None, str]:
    """Approve or deny a pending request (the caller has checked the actor may). Returns (request, outcome line).

    `iam_factory(account)` gives the IAM client for the principal's account (`iam_per_account`). The pending ->
    approved transition is taken before IAM is touched, so two clicks cannot both apply; if the client cannot
    be had (`ApproverAccessError`) or applying fails, the request is marked `failed` and what was applied is
    rolled back."""
    records = Approvals(store)
    a = records.get(approval_id)
    if a is None:
        return None, f"no approval request `{approval_id[:64]}`"
    if a.status != "pending":
        audit(store, a, at=now, actor=actor, action="approval.approve" if approve else "approval.deny",
              outcome="ignored", description=f"already {a.status}")
        return a, f"already {a.status}" + (f" by {a.decided_by}" if a.decided_by else "")
    if not approve:
        if not records.transition(a.id, from_status="pending", to_status="denied", by=actor, now=now):
            return records.get(a.id), "decided by another click"
        line = f":no_entry: *Denied* by {actor} at {now:%H:%M}Z"
        audit(store, a, at=now, actor=actor, action="approval.deny", outcome="ok", description=line)
        return records.get(a.id), line
    until = now + timedelta(hours=a.hours)
    if not records.transition(a.id, from_status="pending", to_status="approved", by=actor, now=now,
                              expires_at=until):
        return records.get(a.id), "decided by another click"
    iam = None
    try:
        iam = iam_factory(principal_target(a.principal)[0])
        apply_exception(iam, a, until)
    except Exception as exc:
        records.transition(a.id, from_status="approved", to_status="failed", by=actor, now=now)
        if iam is not None:  # None: no client for the account, so nothing was applied
            with contextlib.suppress(Exception):  # best effort; the audit line says what to check
                revoke_exception(iam, a, keep_tag=_other_live(records, a))
        line = f":x: *Approval failed* ({type(exc).__name__}: {exc}); nothing is left applied"
        audit(store, a, at=now, actor=actor, action="approval.approve", outcome="error", description=line)
        return records.get(a.id), line
    line = (f":white_check_mark: *Approved* by {actor} at {now:%H:%M}Z until {iso_z(until)}: "
            f"`{policy_name(a.id)}` and tag {APPROVAL_TAG}={APPROVAL_VALUE} applied")
    audit(store, a, at=now, actor=actor, action="approval.approve", outcome="ok", description=line,
          detail={"expires_at": iso_z(until), "policy": policy_name(a.id)})
    return records.get(a.id), line


def _other_live(records: Approvals, a: StoredApproval) -> bool:
    return any(o.principal == a.principal and o.id != a.id for o in records.all(status="approved"))


def expire_due(store: Store, iam_factory: Callable[[str], Any], *, now: datetime, actor: str = "spendwatch:sweep",
               client: Any = None, on_error: Callable[[StoredApproval, str], None] | None = None
               ) -> list[StoredApproval]:
    """Revoke every approved exception whose expiry has passed; returns those revoked. Audited; a failure (no
    client for the principal's account included) is audited, passed to `on_error` (approval, description) and
    retried on the next sweep: the request stays `approved` while its policy may still be there."""
    records = Approvals(store)
    clients: dict[str, Any] = {}  # one client per account and sweep; a failed account is tried again per approval
    done = []
    for a in records.due(now):
        account = principal_target(a.principal)[0]
        try:
            if account not in clients:
                clients[account] = iam_factory(account)
            revoke_exception(clients[account], a, keep_tag=_other_live(records, a))
        except Exception as exc:
            line = f"revocation failed, retried next sweep: {type(exc).__name__}: {exc}"
            audit(store, a, at=now, actor=actor, action="approval.expire", outcome="error", description=line)
            if on_error is not None:
                on_error(a, line)
            continue
        if records.transition(a.id, from_status="approved", to_status="expired", by=None, now=now):
            line = f":hourglass: *Expired* at {now:%H:%M}Z: policy and tag removed"
            audit(store, a, at=now, actor=actor, action="approval.expire", outcome="ok", description=line)
            done.append(a)
            if client is not None and a.channel and a.ts:
                body = message(a, outcome=line)
                with contextlib.suppress(Exception):  # the revocation stands; Slack is only told
                    client.chat_update(channel=a.channel, ts=a.ts, text=body["text"], blocks=body["blocks"])
    return done


def approver_session(account: str, *, approver_role: str | None, endpoint_url: str | None = None,
                     region: str = "us-east-1", session: Any = None) -> Any:
    """A boto3 session that may change IAM in `account`, the principal's account.

    With `approver_role`, that role in `account` is assumed (session `spendwatch-approval`), as the quarantine
    assumes its role (`actions.aws.AwsClients.build`); without one, spendwatch's own credentials, refused for a
    principal in another account than theirs. The partition comes from the caller's identity (GetCallerIdentity),
    which IAM's global endpoint region cannot tell. Raises `ApproverAccessError` naming the account or role."""
    import boto3  # lazily: the core must not need the AWS SDK
    from botocore.exceptions import ClientError

    session = session or boto3.session.Session(region_name=region)
    sts = session.client("sts", region_name=region, endpoint_url=endpoint_url)
    ident = sts.get_caller_identity()
    own, partition = str(ident["Account"]), str(ident["Arn"]).split(":")[1]
    if not approver_role:
        if account != own:
            raise ApproverAccessError(
                f"principal in account {account}: set {APPROVER_ROLE_ENV} (role `{DEFAULT_APPROVER_ROLE}` in that "
                f"account, from deploy/terraform/aws/modules/member-account); spendwatch's own credentials are "
                f"for account {own}")
        return session
    role_arn = f"arn:{partition}:iam::{account}:role/{approver_role}"
    try:
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=SESSION_NAME)["Credentials"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise ApproverAccessError(f"cannot assume the approver role {role_arn}: {error.get('Code', 'error')}: "
                                  f"{error.get('Message', exc)}") from exc
    return boto3.session.Session(aws_access_key_id=creds["AccessKeyId"],
                                 aws_secret_access_key=creds["SecretAccessKey"],
                                 aws_session_token=creds["SessionToken"], region_name=region)


def account_iam(account: str, *, approver_role: str | None = None, endpoint_url: str | None = None,
                region: str = "us-east-1") -> Any:
    """The IAM client for principals of `account` (see `approver_session`)."""
    session = approver_session(account, approver_role=approver_role, endpoint_url=endpoint_url, region=region)
    return session.client("iam", region_name=region, endpoint_url=endpoint_url)


def iam_per_account(approver_role: str | None = None, endpoint_url: str | None = None) -> Callable[[str], Any]:
    """What `decide` and `expire_due` take: account -> IAM client, through the approver role when set."""
    return lambda account: account_iam(account, approver_role=approver_role, endpoint_url=endpoint_url)


# -- CLI ---------------------------------------------------------------------------------------------------

def _slack_client() -> tuple[Any, str]:
    from .sinks.slack import make_client

    token, channel = os.environ.get("SLACK_BOT_TOKEN", ""), os.environ.get("SPENDWATCH_SLACK_CHANNEL", "")
    if not token or not channel:
        raise RequestError("set SLACK_BOT_TOKEN and SPENDWATCH_SLACK_CHANNEL to post approval requests")
    return make_client(token, base_url=os.environ.get("SPENDWATCH_SLACK_API_URL") or None), channel


def _state(arg: str | None) -> Store:
    """The state of `--state` (a file or a postgresql:// URL), resolved as every command does."""
    from .cli import _open_store

    store: Store = _open_store(arg)
    return store


def cmd_request(args: argparse.Namespace) -> int:
    import getpass

    now = datetime.now(UTC)
    try:
        a = new_request(principal=args.principal, instance_type=args.instance_type, count=args.count,
                        region=args.region, hours=args.hours, reason=args.reason,
                        requested_by=args.requested_by or f"cli:{getpass.getuser()}", now=now)
        client, channel = _slack_client()
    except RequestError as exc:
        print(f"spendwatch: error: {exc}", file=sys.stderr)
        return 2
    with _state(args.state) as store:
        try:
            a = post_request(store, client, channel, a, now=now)
        except Exception as exc:
            print(f"spendwatch: error: posting to Slack: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(a.to_json()) if args.json else f"requested {a.id}: waiting for approval in Slack")
    return 0


def cmd_approvals(args: argparse.Namespace) -> int:
    if args.what == "from-activity":  # denied launches seen in CloudTrail (spendwatch.denied_launches)
        from .denied_launches import cmd_from_activity

        return cmd_from_activity(args)
    with _state(args.state) as store:
        if args.what == "expire":
            client = None
            with contextlib.suppress(RequestError):  # no Slack configured: revoke anyway, tell nobody
                client, _ = _slack_client()
            failed: list[str] = []

            def report(a: StoredApproval, line: str) -> None:
                failed.append(a.id)
                print(f"spendwatch: error: {a.id} ({a.principal}): {line}", file=sys.stderr)

            done = expire_due(store, iam_per_account(args.approver_role, args.endpoint_url), now=datetime.now(UTC),
                              client=client, on_error=report)
            print(json.dumps([a.id for a in done]) if args.json else f"{len(done)} approval(s) expired")
            return 1 if failed else 0
        rows = Approvals(store).all()
    if args.json:
        print(json.dumps([a.to_json() for a in rows], indent=2))
    else:
        for a in rows:
            print(f"{a.id}  {a.status:9} {a.count} x {a.instance_type} {a.region} {a.hours:g} h  {a.principal}"
                  f"  until {a.expires_at or '-'}")
    return 0


def add_commands(sub: Any) -> None:
    """`spendwatch request` and `spendwatch approvals list|expire|from-activity`."""
    from .cli import STATE_HELP
    r = sub.add_parser("request", help="ask for approval (in Slack) to launch accelerated instances")
    r.add_argument("--principal", required=True, help="ARN of the IAM user or role that will launch")
    r.add_argument("--instance-type", required=True)
    r.add_argument("--count", type=int, default=1)
    r.add_argument("--region", required=True)
    r.add_argument("--hours", type=float, required=True, help=f"length of the exception (at most {MAX_HOURS:g})")
    r.add_argument("--reason", required=True)
    r.add_argument("--requested-by", help="who asks (default cli:<login>)")
    r.add_argument("--state", metavar="PATH|URL", help=STATE_HELP)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_request)
    a = sub.add_parser("approvals", help="list approval requests, revoke the expired ones, or request the "
                       "launches the guardrail denied (from-activity)")
    a.add_argument("what", choices=("list", "expire", "from-activity"))
    a.add_argument("--state", metavar="PATH|URL", help=STATE_HELP)
    a.add_argument("--json", action="store_true")
    a.add_argument("--approver-role", metavar="NAME", default=os.environ.get(APPROVER_ROLE_ENV) or None,
                   help="(expire) role assumed in each principal's account to change its IAM (default "
                   f"${APPROVER_ROLE_ENV}; unset: spendwatch's own credentials, this account only)")
    a.add_argument("--endpoint-url", help=argparse.SUPPRESS)
    from .denied_launches import add_arguments as add_from_activity_arguments

    add_from_activity_arguments(a)
    a.set_defaults(func=cmd_approvals)
