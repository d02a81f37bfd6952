"""Approving an agent's GPU launch from Slack, end to end: `spendwatch request` posts to the fake Slack Web API,
clicks arrive as signed interaction requests at the real endpoint over HTTP, and the exception is applied to and
revoked from IAM on the moto server. The clock is injected and moved by the test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from spendwatch import approvals
from spendwatch.cli import main
from spendwatch.guardrails import APPROVAL_TAG
from spendwatch.slack_app import SlackSettings, make_app, serve_http
from spendwatch.store import Approvals, Store
from tests.slack.conftest import block_actions, encode, send
from tests.slack.fake_slack import TOKEN, FakeSlack

SECRET = "approval-signing-secret-0123456789"
CHANNEL = "C0APPROVALS"
ALICE, CAROL, MALLORY, SECOPS = "U0ALICE", "U0CAROL", "U0MALLORY", "S0SECOPS"
T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
AGENT_ARN = "arn:aws:iam::123456789012:user/agent-7"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world(aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    fake = FakeSlack(groups={SECOPS: [CAROL]}).start()
    iam = boto3.client("iam", endpoint_url=aws, region_name="us-east-1")
    iam.create_user(UserName="agent-7", Tags=[{"Key": "spendwatch:agent", "Value": "true"}])
    store_path = tmp_path / "state.db"
    clock = Clock(T0)
    settings = SlackSettings(signing_secret=SECRET, bot_token=TOKEN, channel=CHANNEL,
                             allowed_users=frozenset({ALICE}), allowed_groups=frozenset({SECOPS}),
                             api_base_url=fake.base_url, aws_endpoint_url=aws)
    app = make_app(settings, store_path, now=clock)
    server = serve_http(app, "127.0.0.1", 0, background=True)
    for k, v in {"SLACK_BOT_TOKEN": TOKEN, "SPENDWATCH_SLACK_CHANNEL": CHANNEL,
                 "SPENDWATCH_SLACK_API_URL": fake.base_url}.items():
        monkeypatch.setenv(k, v)
    yield {"fake": fake, "iam": iam, "store": store_path, "clock": clock, "app": app, "server": server, "aws": aws}
    server.shutdown()
    server.server_close()
    app.close()
    fake.stop()


def request(world: dict[str, Any], capsys: pytest.CaptureFixture[str], hours: str = "4") -> Any:
    assert main(["request", "--principal", AGENT_ARN, "--instance-type", "g5.12xlarge", "--count", "2",
                 "--region", "us-east-1", "--hours", hours, "--reason", "fine-tune run 42", "--json",
                 "--requested-by", "agent-7", "--state", str(world["store"])]) == 0
    return json.loads(capsys.readouterr().out)


def click(world: dict[str, Any], action: str, approval: dict[str, Any], user: str) -> int:
    payload = block_actions(action, approval["id"], user=user, channel=approval["channel"], ts=approval["ts"])
    status, _, _ = send(world["server"].url, encode(payload), secret=SECRET)
    assert world["app"].wait_idle(20)
    return status


def iam_state(world: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    iam = world["iam"]
    tags = {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName="agent-7")["Tags"]}
    return iam.list_user_policies(UserName="agent-7")["PolicyNames"], tags


def stored(world: dict[str, Any], approval_id: str) -> Any:
    with Store(world["store"]) as store:
        return Approvals(store).get(approval_id)


def test_request_approve_and_expire(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    fake: FakeSlack = world["fake"]
    a = request(world, capsys)
    assert a["status"] == "pending" and a["projected_usd"] == round(5.672 * 2 * 4, 2)
    posted = fake.ok_calls("chat.postMessage")[-1].args
    text = json.dumps(posted)
    assert "agent-7" in text and "2 x `g5.12xlarge`" in text and "us-east-1" in text and "$45.38" in text
    assert "fine-tune run 42" in text and approvals.ACTION_APPROVE in text

    # An unauthorised approver is refused: nothing applied, audited, told ephemerally.
    assert click(world, approvals.ACTION_APPROVE, a, MALLORY) == 200
    assert stored(world, a["id"]).status == "pending"
    assert iam_state(world) == ([], {"spendwatch:agent": "true"})
    assert "not allowed" in fake.ok_calls("chat.postEphemeral")[-1].args["text"]

    # An allowed approver approves: tag and bounded inline policy are on the principal in moto.
    world["clock"].now = T0 + timedelta(minutes=5)
    assert click(world, approvals.ACTION_APPROVE, a, ALICE) == 200
    rec = stored(world, a["id"])
    assert rec.status == "approved" and rec.decided_by == f"slack:{ALICE}"
    policies, tags = iam_state(world)
    assert policies == [approvals.policy_name(a["id"])] and tags[APPROVAL_TAG] == "granted"
    assert tags[approvals.UNTIL_TAG] == "2026-11-20T14:05:00Z"
    doc = world["iam"].get_user_policy(UserName="agent-7", PolicyName=policies[0])["PolicyDocument"]
    allow = next(s for s in doc["Statement"] if s["Sid"] == "AllowApprovedLaunch")
    assert allow["Condition"]["DateLessThan"] == {"aws:CurrentTime": "2026-11-20T14:05:00Z"}
    assert allow["Condition"]["StringEquals"] == {"aws:RequestedRegion": "us-east-1"}
    assert allow["Condition"]["StringEqualsIfExists"] == {"ec2:InstanceType": "g5.12xlarge"}
    update = fake.ok_calls("chat.update")[-1].args
    assert "Approved" in json.dumps(update) and approvals.ACTION_APPROVE not in json.dumps(update)

    # A second click changes nothing.
    assert click(world, approvals.ACTION_APPROVE, a, CAROL) == 200
    assert stored(world, a["id"]).status == "approved"

    # Expiry: the sweep before the time leaves it; after, policy and tag are gone.
    with Store(world["store"]) as store:
        factory = approvals.iam_per_account(endpoint_url=world["aws"])
        assert approvals.expire_due(store, factory, now=T0 + timedelta(hours=4)) == []
        assert iam_state(world)[0] == policies
        done = approvals.expire_due(store, factory, now=T0 + timedelta(hours=4, minutes=5))
        assert [d.id for d in done] == [a["id"]]
        trail = [(e.action, e.outcome) for e in store.audit_log(resource=AGENT_ARN)]
    assert iam_state(world) == ([], {"spendwatch:agent": "true"})
    assert stored(world, a["id"]).status == "expired"
    assert trail == [("approval.request", "ok"), ("approval.approve", "refused"), ("approval.approve", "ok"),
                     ("approval.approve", "ignored"), ("approval.expire", "ok")]


def test_deny_applies_nothing_and_cli_lists(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    a = request(world, capsys, hours="2")
    assert click(world, approvals.ACTION_DENY, a, CAROL) == 200  # a member of the approvers' group
    assert stored(world, a["id"]).status == "denied"
    assert click(world, approvals.ACTION_APPROVE, a, ALICE) == 200  # decided already: not applied
    assert stored(world, a["id"]).status == "denied"
    assert iam_state(world) == ([], {"spendwatch:agent": "true"})
    assert main(["approvals", "list", "--json", "--state", str(world["store"])]) == 0
    assert [r["status"] for r in json.loads(capsys.readouterr().out)] == ["denied"]


def test_request_validation() -> None:
    with pytest.raises(approvals.RequestError):
        approvals.new_request(principal="agent-7", instance_type="g5.xlarge", count=1, region="us-east-1",
                              hours=1, reason="x", requested_by="me", now=T0)
    with pytest.raises(approvals.RequestError):
        approvals.new_request(principal=AGENT_ARN, instance_type="g5.xlarge", count=1, region="us-east-1",
                              hours=500, reason="x", requested_by="me", now=T0)
    assert approvals.principal_target("arn:aws:sts::123456789012:assumed-role/gpu-worker/sess") == (
        "123456789012", "role", "gpu-worker")
    assert main(["request", "--principal", "nope", "--instance-type", "g5.xlarge", "--region", "us-east-1",
                 "--hours", "1", "--reason", "x"]) == 2
