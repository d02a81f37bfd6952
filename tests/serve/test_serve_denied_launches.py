"""`spendwatch serve` turns the launches the guardrail denied into approval requests after each scan.

A real `spendwatch serve` subprocess scanning a data directory with a CloudTrail file (an agent's three denied
g5.12xlarge launches, a human's denied launch, a successful launch, the agent's denied m5.large), the fake
Slack, IAM on the moto server. Exactly one request is posted however many scans see the file; a signed Approve
click on serve's own endpoint applies the exception to the agent's role on moto.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import boto3
import pytest
from serve_helpers import ALICE, FakeSlack, ServeProcess, write_config
from slack.conftest import block_actions, encode, send

from spendwatch import approvals
from spendwatch.config import ConfigError
from spendwatch.guardrails import AGENT_TAG, APPROVAL_TAG
from spendwatch.serve import ServeSettings
from spendwatch.store import Approvals, Store

ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/gpu-agent"
FIXTURE = Path(__file__).parents[1] / "fixtures" / "aws" / "cloudtrail_denied_launches.json"
TRAIL_KEY = (f"AWSLogs/o-abc123def4/{ACCOUNT}/CloudTrail/us-east-1/2026/11/20/"
             f"{ACCOUNT}_CloudTrail_us-east-1_20261120T1005Z_AbCdEf012345.json.gz")


def approval_posts(fake: FakeSlack) -> list[dict[str, object]]:
    return [c.args for c in fake.ok_calls("chat.postMessage") if approvals.ACTION_APPROVE in json.dumps(c.args)]


def test_serve_requests_denied_launches_once_and_applies_the_approval(tmp_path: Path, aws: str) -> None:
    iam = boto3.client("iam", endpoint_url=aws, region_name="us-east-1")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "bedrock.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName="gpu-agent", AssumeRolePolicyDocument=json.dumps(trust),
                    Tags=[{"Key": AGENT_TAG, "Value": "true"}])
    data, state = tmp_path / "exports", tmp_path / "state.db"
    trail = data / TRAIL_KEY
    trail.parent.mkdir(parents=True)
    trail.write_bytes(gzip.compress(FIXTURE.read_bytes(), mtime=0))
    fake = FakeSlack().start()
    try:
        config = write_config(tmp_path / "serve.toml", data=data, state=state, slack_url=fake.base_url, aws=aws,
                              interval=1)
        config.write_text(config.read_text().replace("shutdown_grace_s = 5", "shutdown_grace_s = 5\n"
                                                     "denied_launch_hours = 2\ncharts = false"))
        proc = ServeProcess(config, tmp_path / "home").start()
        try:
            port = proc.port
            [requested] = proc.wait_for("approvals.requested", timeout=120)
            ends = len(proc.of("scan.end"))
            proc.wait_for("scan.end", ends + 2, timeout=120)  # two more scans of the same file
            assert len(proc.of("approvals.requested")) == 1 and len(approval_posts(fake)) == 1

            [approval_id] = requested["posted"]
            with Store(state) as store:
                a = Approvals(store).get(approval_id)
            assert a is not None and a.channel and a.ts
            assert (a.principal, a.instance_type, a.count, a.region, a.hours, a.status) == (
                ROLE_ARN, "g5.12xlarge", 2, "us-east-1", 2.0, "pending")
            assert a.projected_usd == round(5.672 * 2 * 2, 2)
            assert requested["skipped"] == {"not an agent (human)": 1, "not an accelerated instance type": 1}
            text = json.dumps(approval_posts(fake)[0])
            assert "Seen in CloudTrail: denied by the guardrail" in text and "3 attempts" in text

            body = encode(block_actions(approvals.ACTION_APPROVE, approval_id, user=ALICE, channel=a.channel,
                                        ts=a.ts))
            status, _, _ = send(f"http://127.0.0.1:{port}/slack/events", body)
            assert status == 200
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with Store(state) as store:
                    a = Approvals(store).get(approval_id)
                if a is not None and a.status != "pending":
                    break
                time.sleep(0.1)
            ends = len(proc.of("scan.end"))
            proc.wait_for("scan.end", ends + 1, timeout=120)  # a scan after the approval asks nothing new
        finally:
            rc, _ = proc.terminate()
    finally:
        fake.stop()

    assert rc == 0
    assert a is not None and a.status == "approved" and a.decided_by == f"slack:{ALICE}", a
    assert iam.list_role_policies(RoleName="gpu-agent")["PolicyNames"] == [approvals.policy_name(approval_id)]
    tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName="gpu-agent")["Tags"]}
    assert tags[APPROVAL_TAG] == "granted"
    assert len(approval_posts(fake)) == 1 and len(proc.of("approvals.requested")) == 1
    assert not proc.of("approvals.from_activity_failed")
    with Store(state) as store:
        trail_log = [(e.action, e.outcome, e.actor) for e in store.audit_log(resource=ROLE_ARN)]
    assert trail_log == [("approval.request", "ok", "cloudtrail:agent"), ("approval.approve", "ok", f"slack:{ALICE}")]


def test_denied_launch_hours_is_checked_at_start_up(tmp_path: Path) -> None:
    base = {"serve": {"data": str(tmp_path)}}
    assert ServeSettings.from_dict(base, environ={}).denied_launch_hours == 4.0
    assert ServeSettings.from_dict({"serve": {**base["serve"], "denied_launch_hours": 8}},
                                   environ={}).denied_launch_hours == 8
    for bad in (0, 100, "4"):
        with pytest.raises(ConfigError, match="denied_launch_hours"):
            ServeSettings.from_dict({"serve": {**base["serve"], "denied_launch_hours": bad}}, environ={})
