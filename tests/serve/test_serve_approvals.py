"""`spendwatch serve` revokes expired GPU-launch approvals by itself: its scheduler runs `approvals.expire_due`.

A real `spendwatch serve` subprocess, IAM on the moto server, the fake Slack. One approval applied five hours
ago for one hour (so past its expiry) and one applied now for four hours: the first sweep removes the first
one's inline policy (and keeps the approval tag, which the live one still needs) and leaves the second alone.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
from serve_helpers import ALICE, FakeSlack, ServeProcess, write_config

from spendwatch import approvals
from spendwatch.guardrails import APPROVAL_TAG
from spendwatch.store import Approvals, Store

AGENT = "arn:aws:iam::123456789012:role/gpu-agent"


def approve(store: Store, aws: str, *, hours: float, at: datetime) -> str:
    a = approvals.new_request(principal=AGENT, instance_type="g5.12xlarge", count=1, region="us-east-1",
                              hours=hours, reason="nightly fine-tune", requested_by="agent", now=at)
    Approvals(store).add(a)
    decided, line = approvals.decide(store, approvals.iam_per_account(endpoint_url=aws), a.id, approve=True,
                                     actor=f"slack:{ALICE}", now=at)
    assert decided is not None and decided.status == "approved", line
    return a.id


def test_serve_sweeps_expired_approvals(tmp_path: Path, aws: str) -> None:
    iam = boto3.client("iam", endpoint_url=aws, region_name="us-east-1")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "bedrock.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName="gpu-agent", AssumeRolePolicyDocument=json.dumps(trust),
                    Tags=[{"Key": "spendwatch:agent", "Value": "true"}])
    state = tmp_path / "state.db"
    now = datetime.now(UTC)
    with Store(state) as store:
        old = approve(store, aws, hours=1, at=now - timedelta(hours=5))
        live = approve(store, aws, hours=4, at=now)
    assert sorted(iam.list_role_policies(RoleName="gpu-agent")["PolicyNames"]) == sorted(
        [approvals.policy_name(old), approvals.policy_name(live)])

    data = tmp_path / "exports"
    data.mkdir()
    fake = FakeSlack().start()
    try:
        config = write_config(tmp_path / "serve.toml", data=data, state=state, slack_url=fake.base_url, aws=aws,
                              interval=3600)
        config.write_text(config.read_text().replace("shutdown_grace_s = 5", "shutdown_grace_s = 5\n"
                                                     "approval_sweep_s = 3600\nrun_on_start = false"))
        proc = ServeProcess(config, tmp_path / "home").start()
        try:
            expired = proc.wait_for("approvals.expired", timeout=60)
        finally:
            rc, _ = proc.terminate()
    finally:
        fake.stop()

    assert rc == 0
    assert expired[0]["approvals"] == [old] and expired[0]["principals"] == [AGENT]
    assert iam.list_role_policies(RoleName="gpu-agent")["PolicyNames"] == [approvals.policy_name(live)]
    tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName="gpu-agent")["Tags"]}
    assert tags[APPROVAL_TAG] == "granted"  # the live approval still needs it
    with Store(state) as store:
        records = Approvals(store)
        assert records.get(old).status == "expired"  # type: ignore[union-attr]
        assert records.get(live).status == "approved"  # type: ignore[union-attr]
        trail = [(e.action, e.outcome, e.actor) for e in store.audit_log(resource=AGENT)]
    assert ("approval.expire", "ok", "spendwatch:sweep") in trail
