"""The approval sweep in every way spendwatch runs without its own scheduler of scans:

- `serve --once` (the cloud's scheduled job) sweeps once after its scan;
- `serve --no-schedule` (the Slack service half) runs no scan but keeps the sweep on its interval;
- the AWS Lambda scan handler sweeps after its scan, like `--once`.

Each starts with two approvals on a role on the moto server, one past its expiry and one live: the expired
one's inline policy goes, the live one's stays (and so does the approval tag it still needs), and the expiry
is audited as the sweep's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from serve_helpers import ALICE, CHANNEL, SECRET, TOKEN, FakeSlack, ServeProcess

from spendwatch import approvals
from spendwatch.guardrails import APPROVAL_TAG
from spendwatch.lambda_handlers import scan_handler
from spendwatch.store import Approvals, Store
from tests.store.postgres_server import fresh_schema

AGENT = "arn:aws:iam::123456789012:role/gpu-agent"


def two_approvals(state: Path | str, aws: str) -> tuple[str, str]:
    """A role with an expired approval (applied 5 h ago for 1 h) and a live one (now, for 4 h)."""
    iam = boto3.client("iam", endpoint_url=aws, region_name="us-east-1")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "bedrock.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName="gpu-agent", AssumeRolePolicyDocument=json.dumps(trust),
                    Tags=[{"Key": "spendwatch:agent", "Value": "true"}])
    now = datetime.now(UTC)
    ids = []
    with Store(state) as store:
        for hours, at in ((1.0, now - timedelta(hours=5)), (4.0, now)):
            a = approvals.new_request(principal=AGENT, instance_type="g5.12xlarge", count=1, region="us-east-1",
                                      hours=hours, reason="nightly fine-tune", requested_by="agent", now=at)
            Approvals(store).add(a)
            decided, line = approvals.decide(store, approvals.iam_per_account(endpoint_url=aws), a.id, approve=True,
                                             actor=f"slack:{ALICE}", now=at)
            assert decided is not None and decided.status == "approved", line
            ids.append(a.id)
    return ids[0], ids[1]


def assert_swept(state: Path | str, aws: str, old: str, live: str) -> None:
    iam = boto3.client("iam", endpoint_url=aws, region_name="us-east-1")
    assert iam.list_role_policies(RoleName="gpu-agent")["PolicyNames"] == [approvals.policy_name(live)]
    tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName="gpu-agent")["Tags"]}
    assert tags[APPROVAL_TAG] == "granted"  # the live approval still needs it
    with Store(state) as store:
        assert Approvals(store).get(old).status == "expired"  # type: ignore[union-attr]
        assert Approvals(store).get(live).status == "approved"  # type: ignore[union-attr]
        trail = [(e.action, e.outcome, e.actor) for e in store.audit_log(resource=AGENT)]
    assert trail.count(("approval.expire", "ok", "spendwatch:sweep")) == 1


class NoScheduleProcess(ServeProcess):
    """`spendwatch serve --no-schedule`, the state's URL in the environment (as the deployments pass it)."""

    def start_with(self, env: dict[str, str]) -> NoScheduleProcess:
        full = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
                "SPENDWATCH_HOME": str(self.home), "PYTHONUNBUFFERED": "1", **env}
        self.proc = subprocess.Popen([sys.executable, "-m", "spendwatch", "serve", "--no-schedule", "--config",
                                      str(self.config)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     env=full, text=True)
        self._lock = threading.Lock()
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        return self


def config_text(*, data: Path, slack_url: str, aws: str, extra: str = "") -> str:
    return f"""
[serve]
data = "{data}"
port = 0
shutdown_grace_s = 5
{extra}
[slack]
channel = "{CHANNEL}"
allowed_users = ["{ALICE}"]
api_url = "{slack_url}"
aws_endpoint_url = "{aws}"
"""


def events_of(stderr: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def test_serve_once_sweeps_after_its_scan(tmp_path: Path, aws: str) -> None:
    state = tmp_path / "state.db"
    old, live = two_approvals(state, aws)
    (tmp_path / "exports").mkdir()
    fake = FakeSlack().start()
    try:
        config = tmp_path / "serve.toml"
        config.write_text(config_text(data=tmp_path / "exports", slack_url=fake.base_url, aws=aws))
        env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
               "SPENDWATCH_HOME": str(tmp_path / "home"), "SPENDWATCH_STATE": str(state)}
        done = subprocess.run([sys.executable, "-m", "spendwatch", "serve", "--once", "--config", str(config)],
                              capture_output=True, text=True, env=env, timeout=300, check=False)
    finally:
        fake.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    names = [e.get("event") for e in events_of(done.stderr)]
    assert "scan.end" in names and "approvals.expired" in names
    assert names.index("scan.end") < names.index("approvals.expired")  # after its scan, not instead of it
    [expired] = [e for e in events_of(done.stderr) if e.get("event") == "approvals.expired"]
    assert expired["approvals"] == [old]
    assert_swept(state, aws, old, live)


def test_serve_no_schedule_keeps_the_sweep_and_runs_no_scan(tmp_path: Path, aws: str, postgres_url: str) -> None:
    fake = FakeSlack().start()
    try:
        with fresh_schema(postgres_url) as url:
            old, live = two_approvals(url, aws)
            config = tmp_path / "serve.toml"
            config.write_text(config_text(data=tmp_path / "no-data-needed", slack_url=fake.base_url, aws=aws,
                                          extra="approval_sweep_s = 3600"))
            proc = NoScheduleProcess(config, tmp_path / "home").start_with({"SPENDWATCH_DATABASE_URL": url})
            try:
                expired = proc.wait_for("approvals.expired", timeout=60)
                started = proc.wait_for("serve.started")[0]
                with urllib.request.urlopen(f"http://127.0.0.1:{started['port']}/healthz", timeout=10) as resp:
                    health = json.loads(resp.read())
            finally:
                rc, _ = proc.terminate()
            assert rc == 0
            assert started["scheduled"] is False and started["approval_sweep_s"] == 3600
            assert health["status"] == "ok" and health["scheduled"] is False
            assert expired[0]["approvals"] == [old]
            assert_swept(url, aws, old, live)
            assert not [e for e in proc.events if str(e.get("event", "")).startswith(("scan.", "model."))]
            with Store(url) as store:
                assert store.runs() == []  # nothing scanned
    finally:
        fake.stop()


def test_lambda_scan_handler_sweeps_after_its_scan(tmp_path: Path, aws: str) -> None:
    state = tmp_path / "state.db"
    old, live = two_approvals(state, aws)
    (tmp_path / "exports").mkdir()
    ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=aws)
    ssm.put_parameter(Name="/spendwatch/slack-bot-token", Value=TOKEN, Type="SecureString")
    fake = FakeSlack().start()
    try:
        env = {"SPENDWATCH_CONFIG_TOML": config_text(data=tmp_path / "exports", slack_url=fake.base_url, aws=aws),
               "SPENDWATCH_STATE": str(state), "SLACK_SIGNING_SECRET": SECRET,
               "SLACK_BOT_TOKEN_SSM_PARAMETER": "/spendwatch/slack-bot-token"}
        context = SimpleNamespace(function_name="spendwatch-scan", aws_request_id="req-1")
        out = scan_handler({}, context, environ=env, ssm=ssm)
        again = scan_handler({}, context, environ=env, ssm=ssm)
    finally:
        fake.stop()
    assert out["status"] == "ok" and out["approvals_expired"] == 1
    assert again["approvals_expired"] == 0  # revoked once, not again
    assert_swept(state, aws, old, live)


def test_the_database_url_is_not_read_when_spendwatch_state_wins(aws: str) -> None:
    from spendwatch.lambda_handlers import resolve_secrets

    ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=aws)
    ssm.put_parameter(Name="/spendwatch/slack-bot-token", Value=TOKEN, Type="SecureString")
    env = {"SPENDWATCH_DATABASE_URL_SSM_PARAMETER": "/spendwatch/database-url",  # never filled
           "SLACK_BOT_TOKEN_SSM_PARAMETER": "/spendwatch/slack-bot-token"}
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        resolve_secrets(env, ssm=ssm)
    resolved = resolve_secrets({**env, "SPENDWATCH_STATE": "/mnt/efs/state.db"}, ssm=ssm)
    assert resolved["SLACK_BOT_TOKEN"] == TOKEN and "SPENDWATCH_DATABASE_URL" not in resolved
