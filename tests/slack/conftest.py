"""Fixtures for the Slack tests: the fake Web API, a small moto world, and the endpoint served over real HTTP.

Interaction requests are built and signed exactly as Slack does: the body is `payload=<url-encoded JSON>`,
`X-Slack-Request-Timestamp` is Unix seconds and `X-Slack-Signature` is `v0=` + HMAC-SHA256 of
`v0:{timestamp}:{body}` with the app's signing secret (slack_sdk.signature computes it).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from slack_sdk.signature import SignatureVerifier

from spendwatch.actions.aws import AwsClients
from spendwatch.findings import Finding, Severity, finding_id
from spendwatch.sinks.slack import SlackAlerter, make_client
from spendwatch.slack_app import InteractionApp, SlackHTTPServer, SlackSettings, make_app, serve_http
from spendwatch.store import Store

from .fake_slack import TOKEN, FakeSlack

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0ALERTS"
ALICE = "U0ALICE"  # allowed by id
CAROL = "U0CAROL"  # allowed as a member of the security group
MALLORY = "U0MALLORY"  # a workspace member who may not act
SECOPS = "S0SECOPS"
ACCOUNT = "123456789012"  # moto's account
ROLE = "gpu-worker"  # the finding's principal is a session of this role
T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack(groups={SECOPS: [CAROL, "U0DAVE"]}).start()
    yield fake
    fake.stop()


@dataclass
class Instance:
    """One GPU instance on moto with two application security groups."""

    clients: AwsClients
    iid: str
    groups: list[str]

    def security_groups(self) -> dict[str, list[str]]:
        inst = self.clients.ec2.describe_instances(InstanceIds=[self.iid])["Reservations"][0]["Instances"][0]
        return {n["NetworkInterfaceId"]: sorted(g["GroupId"] for g in n["Groups"]) for n in inst["NetworkInterfaces"]}

    def tags(self) -> dict[str, str]:
        inst = self.clients.ec2.describe_instances(InstanceIds=[self.iid])["Reservations"][0]["Instances"][0]
        return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}

    def role_policies(self) -> list[str]:
        """Inline policies of the role that launched it (the finding's principal)."""
        return sorted(self.clients.iam.list_role_policies(RoleName=ROLE)["PolicyNames"])


@pytest.fixture
def instance(aws: str) -> Instance:
    clients = AwsClients.build(region="us-east-1", endpoint_url=aws)
    ec2 = clients.ec2
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    web = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    db = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
    iid = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="g5.xlarge",
                            NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet, "Groups": [web, db]}],
                            )["Instances"][0]["InstanceId"]
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    clients.iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))
    return Instance(clients, iid, sorted([web, db]))


def make_finding(resource: str, **kw: Any) -> Finding:
    base: dict[str, Any] = dict(
        id=finding_id(kw.get("cloud", "aws"), kw.get("account", ACCOUNT), resource), cloud="aws", account=ACCOUNT,
        region="us-east-1", resource=resource, principal=f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/agent-7",
        severity=Severity.CRITICAL, score=0.97, rules=["pool-domain", "gpu-saturation"],
        evidence=["queried gulf.moneroocean.stream 14 times", "GPU at 99% for 3 h with no training job"],
        first_seen=T0 - timedelta(hours=3), last_seen=T0, detected_at=T0, hourly_cost_usd=5.672,
        summary=f"Likely GPU mining on {resource}; $5.67/h", principal_type="agent", instance_type="g5.xlarge",
    )
    base.update(kw)
    return Finding(**base)


@dataclass
class Endpoint:
    """The served endpoint, with what a test needs to click its buttons as Slack would."""

    app: InteractionApp
    server: SlackHTTPServer
    fake: FakeSlack
    store_path: Path
    finding: Finding
    channel: str
    ts: str

    @property
    def url(self) -> str:
        return self.server.url

    def store(self) -> Store:
        return Store(self.store_path)

    def payload(self, action_id: str, *, user: str = ALICE, value: str | None = None) -> dict[str, Any]:
        return block_actions(action_id, value or self.finding.id, user=user, channel=self.channel, ts=self.ts)

    def send(self, body: bytes, **kw: Any) -> tuple[int, bytes, float]:
        return send(self.url, body, **kw)

    def click(self, action_id: str, *, user: str = ALICE, **kw: Any) -> tuple[int, bytes, float]:
        return self.send(encode(self.payload(action_id, user=user)), **kw)

    def message(self) -> dict[str, Any]:
        """The alert as the fake Slack holds it now (after every chat.update)."""
        return self.fake.messages[(self.channel, self.ts)]

    def button_ids(self) -> list[str]:
        return [e["action_id"] for b in self.message()["blocks"] if b["type"] == "actions" for e in b["elements"]]


def block_actions(action_id: str, value: str, *, user: str, channel: str, ts: str) -> dict[str, Any]:
    """A block_actions payload shaped like Slack's for a button click on a message."""
    return {
        "type": "block_actions", "api_app_id": "A0SPENDWATCH", "token": "legacy-verification-token",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T0EXAMPLE"},
        "team": {"id": "T0EXAMPLE", "domain": "example"},
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
        "channel": {"id": channel, "name": "spend-alerts"},
        "message": {"type": "message", "ts": ts, "text": "alert", "blocks": []},
        "trigger_id": f"1337.{time.monotonic_ns()}", "response_url": "https://hooks.slack.com/actions/T0/1/x",
        "actions": [{"type": "button", "action_id": action_id, "block_id": "sw_actions", "value": value,
                     "action_ts": f"{time.time():.6f}", "text": {"type": "plain_text", "text": action_id}}],
    }


def encode(payload: dict[str, Any]) -> bytes:
    return ("payload=" + quote(json.dumps(payload, separators=(",", ":")))).encode()


def signed_headers(body: bytes, *, secret: str = SECRET, ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    try:
        signature = SignatureVerifier(secret).generate_signature(timestamp=str(ts), body=body)
    except UnicodeDecodeError:  # slack_sdk only signs text; sign other bytes by Slack's recipe directly
        mac = hmac.new(secret.encode(), b"v0:%d:" % ts + body, hashlib.sha256)
        signature = "v0=" + mac.hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": str(signature),
            "Content-Type": "application/x-www-form-urlencoded"}


def send(url: str, body: bytes, *, headers: dict[str, str] | None = None, secret: str = SECRET,
         ts: int | None = None, method: str = "POST", path: str | None = None) -> tuple[int, bytes, float]:
    """One HTTP request; signed with `secret` at `ts` unless `headers` are given. Returns (status, body, seconds)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    hdrs = signed_headers(body, secret=secret, ts=ts) if headers is None else headers
    started = time.perf_counter()
    try:
        conn.putrequest(method, path or parts.path, skip_accept_encoding=True)
        for k, v in {**hdrs, "Content-Length": str(len(body))}.items():
            conn.putheader(k, v)
        conn.endheaders()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused before the body was read
            conn.send(body)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data, time.perf_counter() - started
    finally:
        conn.close()


@pytest.fixture
def served(tmp_path: Path, fake_slack: FakeSlack) -> Iterator[Any]:
    """`served(finding, **settings)`: post the finding's alert to the fake Slack and return a function that builds
    endpoints for it (several may share one state file, like processes would); all are stopped afterwards."""
    made: list[Endpoint] = []

    def post(finding: Finding, **overrides: Any) -> Any:
        store_path = tmp_path / "state.db"
        settings = SlackSettings(signing_secret=SECRET, bot_token=TOKEN, channel=CHANNEL,
                                 allowed_users=frozenset({ALICE}), allowed_groups=frozenset({SECOPS}),
                                 api_base_url=fake_slack.base_url, **overrides)
        with Store(store_path) as store:
            store.upsert([finding], now=T0)
            posted = SlackAlerter(make_client(TOKEN, base_url=fake_slack.base_url), channel=CHANNEL,
                                  store=store).notify(finding)

        def build(**kw: Any) -> Endpoint:
            app = make_app(settings, store_path, **kw)
            server = serve_http(app, "127.0.0.1", 0, background=True)
            ep = Endpoint(app, server, fake_slack, store_path, finding, posted.channel, posted.ts)
            made.append(ep)
            return ep

        return build

    yield post
    for ep in made:
        ep.server.shutdown()
        ep.server.server_close()
        ep.app.close()


@pytest.fixture
def endpoint_factory(served: Any, instance: Instance, aws: str) -> Any:
    """Endpoints for an alert about the moto GPU instance (AWS actions against moto)."""
    return served(make_finding(instance.iid), aws_endpoint_url=aws)


@pytest.fixture
def endpoint(endpoint_factory: Any) -> Endpoint:
    return endpoint_factory()
