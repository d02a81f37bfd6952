"""GPU-launch approvals for principals in member accounts: spendwatch assumes the approver role in the principal's
account (session `spendwatch-approval`) and changes IAM there, never in its own account.

moto in server mode keeps one IAM per account: credentials from `sts.assume_role` on a role ARN in account B
act in B. Spendwatch's own credentials are moto's default account A. A role that cannot be assumed is shown by
a moto server of our own with IAM authorisation switched on (tests/access/test_guardrails.py's fixture): the
caller there is an IAM user whose policy does not allow sts:AssumeRole, so AssumeRole answers AccessDenied.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from spendwatch import approvals
from spendwatch.cli import main
from spendwatch.guardrails import APPROVAL_TAG, DEFAULT_APPROVER
from spendwatch.sinks.slack import make_client
from spendwatch.slack_app import SlackSettings, make_app, serve_http
from spendwatch.store import Approvals, Store
from tests.access.test_guardrails import enforce, enforcing_moto  # noqa: F401  (a fixture, used by name)
from tests.slack.conftest import block_actions, encode, send
from tests.slack.fake_slack import TOKEN, FakeSlack

OWN, MEMBER = "123456789012", "210987654321"  # moto's default account (spendwatch's), and a member account
ROLE = approvals.DEFAULT_APPROVER_ROLE
AGENT = f"arn:aws:iam::{MEMBER}:role/gpu-agent"
AGENT_USER = f"arn:aws:iam::{MEMBER}:user/agent-7"
SECRET = "member-approval-signing-secret-0123"
CHANNEL = "C0APPROVALS"
ALICE = "U0ALICE"
T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "bedrock.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
REFUSED = (f"principal in account {MEMBER}: set SPENDWATCH_AWS_APPROVER_ROLE_NAME "
           f"(role `spendwatch-approver` in that account")


def iam_in(endpoint: str, account: str) -> Any:
    """An IAM client acting in `account` (moto maps assumed-role credentials to the role's account)."""
    if account == OWN:
        return boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    creds = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/test-setup", RoleSessionName="test-setup")["Credentials"]
    return boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds["SessionToken"])


def principals(endpoint: str) -> dict[str, Any]:
    """In both accounts: a role `gpu-agent` and a user `agent-7` (same names, so a change in the wrong account
    would show); in the member account also the approver role, trusting spendwatch's Slack role."""
    clients = {account: iam_in(endpoint, account) for account in (OWN, MEMBER)}
    for iam in clients.values():
        iam.create_role(RoleName="gpu-agent", AssumeRolePolicyDocument=json.dumps(TRUST))
        iam.create_user(UserName="agent-7")
    caller = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {
        "AWS": f"arn:aws:iam::{OWN}:role/spendwatch-slack"}}]}
    clients[MEMBER].create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(caller))
    return clients


def state_of(iam: Any, arn: str) -> tuple[list[str], dict[str, str]]:
    """(inline policy names, tags) of a principal."""
    _, kind, name = approvals.principal_target(arn)
    if kind == "role":
        return (iam.list_role_policies(RoleName=name)["PolicyNames"],
                {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=name)["Tags"]})
    return (iam.list_user_policies(UserName=name)["PolicyNames"],
            {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName=name)["Tags"]})


def pending(store: Store, principal: str, *, hours: float = 4, at: datetime = T0) -> approvals.StoredApproval:
    a = approvals.new_request(principal=principal, instance_type="g5.12xlarge", count=1, region="us-east-1",
                              hours=hours, reason="fine-tune run 42", requested_by="agent", now=at)
    Approvals(store).add(a)
    return a


def trail(store: Store, principal: str) -> list[tuple[str, str, str]]:
    return [(e.action, e.outcome, e.description) for e in store.audit_log(resource=principal)]


# -- the approver role ------------------------------------------------------------------------------------------

def test_the_session_is_the_approver_role_in_the_principals_account(aws: str) -> None:
    session = approvals.approver_session(MEMBER, approver_role=ROLE, endpoint_url=aws)
    identity = session.client("sts", endpoint_url=aws, region_name="us-east-1").get_caller_identity()
    assert identity["Account"] == MEMBER
    assert identity["Arn"] == f"arn:aws:sts::{MEMBER}:assumed-role/{ROLE}/spendwatch-approval"
    # The guardrail lets only this role change the approval tags (its ArnNotLike on aws:PrincipalArn).
    assert f"arn:aws:iam::*:role/{ROLE}" == DEFAULT_APPROVER
    # Without a role: spendwatch's own credentials, for its own account only.
    own = approvals.approver_session(OWN, approver_role=None, endpoint_url=aws)
    assert own.client("sts", endpoint_url=aws, region_name="us-east-1").get_caller_identity()["Account"] == OWN
    with pytest.raises(approvals.ApproverAccessError, match=f"principal in account {MEMBER}: set "):
        approvals.account_iam(MEMBER, endpoint_url=aws)


@pytest.mark.parametrize("principal", [AGENT, AGENT_USER])
def test_approve_and_expire_change_the_member_account_only(aws: str, tmp_path: Path, principal: str) -> None:
    iam = principals(aws)
    factory = approvals.iam_per_account(ROLE, aws)
    with Store(tmp_path / "state.db") as store:
        a = pending(store, principal)
        decided, line = approvals.decide(store, factory, a.id, approve=True, actor="slack:U0ALICE", now=T0)
        assert decided is not None and decided.status == "approved", line
        policies, tags = state_of(iam[MEMBER], principal)
        assert policies == [approvals.policy_name(a.id)] and tags[APPROVAL_TAG] == "granted"
        assert tags[approvals.UNTIL_TAG] == "2026-11-20T14:00:00Z"
        assert state_of(iam[OWN], principal) == ([], {})  # the same name in spendwatch's account: untouched

        assert approvals.expire_due(store, factory, now=T0 + timedelta(hours=5)) == [decided]
        assert Approvals(store).get(a.id).status == "expired"  # type: ignore[union-attr]
        outcomes = [(action, outcome) for action, outcome, _ in trail(store, principal)]
    assert state_of(iam[MEMBER], principal) == ([], {})
    assert outcomes == [("approval.approve", "ok"), ("approval.expire", "ok")]


# -- refusals: nothing changes in either account ------------------------------------------------------------

def test_no_approver_role_refuses_a_member_principal(aws: str, tmp_path: Path) -> None:
    iam = principals(aws)
    with Store(tmp_path / "state.db") as store:
        a = pending(store, AGENT)
        decided, line = approvals.decide(store, approvals.iam_per_account(None, aws), a.id, approve=True,
                                         actor="slack:U0ALICE", now=T0)
        assert decided is not None and decided.status == "failed"
        assert REFUSED in line and "nothing is left applied" in line
        assert trail(store, AGENT) == [("approval.approve", "error", line)]
    for account in (OWN, MEMBER):
        assert state_of(iam[account], AGENT) == ([], {}), account


def test_an_approver_role_that_cannot_be_assumed_is_refused_naming_it(enforcing_moto: str, tmp_path: Path,  # noqa: F811
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    url = enforcing_moto
    for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
                       "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(key, value)
    iam = principals(url)
    # spendwatch runs as a user that may read its identity and change IAM here, but not assume roles.
    iam[OWN].create_user(UserName="spendwatch")
    iam[OWN].put_user_policy(UserName="spendwatch", PolicyName="no-assume", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["sts:GetCallerIdentity", "iam:*"], "Resource": "*"}]}))
    key = iam[OWN].create_access_key(UserName="spendwatch")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    role_arn = f"arn:aws:iam::{MEMBER}:role/{ROLE}"
    with Store(tmp_path / "state.db") as store:
        a = pending(store, AGENT)
        enforce(url)
        try:
            decided, line = approvals.decide(store, approvals.iam_per_account(ROLE, url), a.id, approve=True,
                                             actor="slack:U0ALICE", now=T0)
        finally:
            urllib.request.urlopen(urllib.request.Request(url + "/moto-api/reset-auth", data=b"inf", method="POST",
                                                          headers={"Content-Type": "text/plain"})).read()
        assert decided is not None and decided.status == "failed"
        assert f"cannot assume the approver role {role_arn}: AccessDenied" in line
        assert trail(store, AGENT) == [("approval.approve", "error", line)]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for account in (OWN, MEMBER):
        assert state_of(iam_in(url, account), AGENT) == ([], {}), account


# -- the sweep keeps trying ----------------------------------------------------------------------------------

def expired_approval(state: Path, aws: str) -> approvals.StoredApproval:
    """A one-hour approval of the member account's agent, applied through the approver role two hours ago."""
    then = datetime.now(UTC) - timedelta(hours=2)
    with Store(state) as store:
        a = pending(store, AGENT, hours=1, at=then)
        decided, line = approvals.decide(store, approvals.iam_per_account(ROLE, aws), a.id, approve=True,
                                         actor="slack:U0ALICE", now=then)
        assert decided is not None and decided.status == "approved", line
    return a

def test_a_failed_expiry_stays_approved_until_a_sweep_can_revoke_it(
        aws: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    iam = principals(aws)
    state = tmp_path / "state.db"
    a = expired_approval(state, aws)
    for name in ("SLACK_BOT_TOKEN", "SPENDWATCH_SLACK_CHANNEL", approvals.APPROVER_ROLE_ENV):
        monkeypatch.delenv(name, raising=False)

    # No approver role: the revocation fails, is reported and audited; the approval and its policy stay.
    for _ in range(2):
        assert main(["approvals", "expire", "--state", str(state), "--endpoint-url", aws]) == 1
        err = capsys.readouterr().err
        assert f"{a.id} ({AGENT}): revocation failed, retried next sweep: ApproverAccessError: {REFUSED}" in err
    assert state_of(iam[MEMBER], AGENT)[0] == [approvals.policy_name(a.id)]
    with Store(state) as store:
        assert Approvals(store).get(a.id).status == "approved"  # type: ignore[union-attr]

    # The role from the environment (the option's default): revoked in the member account.
    monkeypatch.setenv(approvals.APPROVER_ROLE_ENV, ROLE)
    assert main(["approvals", "expire", "--state", str(state), "--endpoint-url", aws, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [a.id]
    assert state_of(iam[MEMBER], AGENT) == ([], {})
    with Store(state) as store:
        assert Approvals(store).get(a.id).status == "expired"  # type: ignore[union-attr]
        outcomes = [(action, outcome) for action, outcome, _ in trail(store, AGENT)]
    assert outcomes == [("approval.approve", "ok"), ("approval.expire", "error"), ("approval.expire", "error"),
                        ("approval.expire", "ok")]


def test_the_lambda_scan_handlers_sweep_uses_the_approver_role(aws: str, tmp_path: Path) -> None:
    from spendwatch.lambda_handlers import scan_handler

    iam = principals(aws)
    state = tmp_path / "state.db"
    a = expired_approval(state, aws)
    (tmp_path / "exports").mkdir()
    fake = FakeSlack().start()
    config = f"""
[serve]
data = "{tmp_path / 'exports'}"
[slack]
channel = "{CHANNEL}"
allowed_users = ["{ALICE}"]
api_url = "{fake.base_url}"
aws_endpoint_url = "{aws}"
"""
    env = {"SPENDWATCH_CONFIG_TOML": config, "SPENDWATCH_STATE": str(state), "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_BOT_TOKEN": TOKEN}
    context = SimpleNamespace(function_name="spendwatch-scan", aws_request_id="req-1")
    try:
        without = scan_handler({}, context, environ=env)
        assert without["approvals_expired"] == 0  # own credentials cannot reach the member account: retried
        assert state_of(iam[MEMBER], AGENT)[0] == [approvals.policy_name(a.id)]
        with_role = scan_handler({}, context, environ={**env, approvals.APPROVER_ROLE_ENV: ROLE})
    finally:
        fake.stop()
    assert with_role["approvals_expired"] == 1
    assert state_of(iam[MEMBER], AGENT) == ([], {})
    with Store(state) as store:
        expiries = [(outcome, text) for action, outcome, text in trail(store, AGENT) if action == "approval.expire"]
    assert [outcome for outcome, _ in expiries] == ["error", "ok"] and REFUSED in expiries[0][1]


# -- through the Slack endpoint ----------------------------------------------------------------------------------

@pytest.fixture
def slack(aws: str, tmp_path: Path) -> Iterator[Any]:
    """Starts the signed Slack endpoint (with the fake Slack Web API) for an approver role setting."""
    fake = FakeSlack().start()
    started: list[Any] = []

    def start(approver_role: str | None) -> SimpleNamespace:
        settings = SlackSettings(signing_secret=SECRET, bot_token=TOKEN, channel=CHANNEL,
                                 allowed_users=frozenset({ALICE}), api_base_url=fake.base_url,
                                 aws_endpoint_url=aws, approver_role=approver_role)
        store_path = tmp_path / f"state-{len(started)}.db"
        app = make_app(settings, store_path, now=lambda: T0)
        server = serve_http(app, "127.0.0.1", 0, background=True)
        started.append((app, server))
        return SimpleNamespace(app=app, server=server, store=store_path, fake=fake)

    yield start
    for app, server in started:
        server.shutdown()
        server.server_close()
        app.close()
    fake.stop()


def click_approve(world: SimpleNamespace, principal: str) -> approvals.StoredApproval:
    """Post a request for `principal` to the fake Slack and click Approve on it as an allowed approver."""
    with Store(world.store) as store:
        a = approvals.post_request(store, make_client(TOKEN, base_url=world.fake.base_url), CHANNEL,
                                   pending_request(principal), now=T0)
    payload = block_actions(approvals.ACTION_APPROVE, a.id, user=ALICE, channel=str(a.channel), ts=str(a.ts))
    status, _, _ = send(world.server.url, encode(payload), secret=SECRET)
    assert status == 200 and world.app.wait_idle(20)
    with Store(world.store) as store:
        decided = Approvals(store).get(a.id)
    assert decided is not None
    return decided


def pending_request(principal: str) -> approvals.StoredApproval:
    return approvals.new_request(principal=principal, instance_type="g5.12xlarge", count=2, region="us-east-1",
                                 hours=4, reason="fine-tune run 42", requested_by="agent", now=T0)


def test_slack_approve_of_a_member_principal_lands_in_its_account(slack: Any, aws: str) -> None:
    iam = principals(aws)
    world = slack(ROLE)
    decided = click_approve(world, AGENT)
    assert decided.status == "approved" and decided.decided_by == f"slack:{ALICE}"
    policies, tags = state_of(iam[MEMBER], AGENT)
    assert policies == [approvals.policy_name(decided.id)] and tags[APPROVAL_TAG] == "granted"
    assert state_of(iam[OWN], AGENT) == ([], {})
    update = json.dumps(world.fake.ok_calls("chat.update")[-1].args)
    assert "Approved" in update and approvals.ACTION_APPROVE not in update


def test_slack_without_an_approver_role_says_what_to_set(slack: Any, aws: str) -> None:
    iam = principals(aws)
    world = slack(None)
    decided = click_approve(world, AGENT)
    assert decided.status == "failed"
    update = json.dumps(world.fake.ok_calls("chat.update")[-1].args)
    assert "Approval failed" in update and REFUSED in update
    assert approvals.ACTION_APPROVE not in update  # decided: no buttons left
    for account in (OWN, MEMBER):
        assert state_of(iam[account], AGENT) == ([], {}), account
    with Store(world.store) as store:
        assert [(action, outcome) for action, outcome, _ in trail(store, AGENT)] == [
            ("approval.request", "ok"), ("approval.approve", "error")]
