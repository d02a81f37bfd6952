"""The Lambda handlers, run locally on events shaped like the real ones: an EventBridge scheduled event, and a
Function URL (payload 2.0) event carrying a signed Slack click that is acked at once and finished lazily."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
from serve_helpers import ALICE, CHANNEL, SECRET, TOKEN, FakeSlack, moto_instance
from slack.conftest import block_actions, encode, signed_headers

from spendwatch.lambda_handlers import LAZY_TOKEN_HEADER, SlackLambda, scan_handler
from spendwatch.simulate import simulate
from spendwatch.sinks.slack import SlackAlerter, make_client
from spendwatch.slack_app import PATH, SlackSettings
from spendwatch.store import Store

CONTEXT = SimpleNamespace(function_name="spendwatch-slack", aws_request_id="req-1",
                          invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:spendwatch-slack")


def function_url_event(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": PATH, "rawQueryString": "",
        "headers": {k.lower(): v for k, v in {**headers, "host": "abc.lambda-url.us-east-1.on.aws"}.items()},
        "requestContext": {"accountId": "anonymous", "apiId": "abc", "domainName": "abc.lambda-url.us-east-1.on.aws",
                           "http": {"method": "POST", "path": PATH, "protocol": "HTTP/1.1", "sourceIp": "3.3.3.3",
                                    "userAgent": "Slackbot 1.0"}, "requestId": "r1", "stage": "$default",
                           "timeEpoch": int(time.time() * 1000)},
        "body": base64.b64encode(body).decode(), "isBase64Encoded": True,
    }


def test_scheduled_scan_handler(tmp_path: Path, aws: str) -> None:
    simulate(tmp_path / "data", days=1, instances=16)
    ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=aws)
    ssm.put_parameter(Name="/spendwatch/slack-bot-token", Value=TOKEN, Type="SecureString")
    fake = FakeSlack().start()
    try:
        env = {"SPENDWATCH_CONFIG_TOML": f"""
[serve]
data = "{tmp_path / 'data'}"
alert_min_severity = "high"
[slack]
channel = "{CHANNEL}"
api_url = "{fake.base_url}"
""", "SPENDWATCH_STATE": str(tmp_path / "state.db"), "SLACK_SIGNING_SECRET": SECRET,
               "SLACK_BOT_TOKEN_SSM_PARAMETER": "/spendwatch/slack-bot-token"}
        event = {"version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
                 "source": "aws.scheduler", "account": "123456789012", "time": "2026-11-20T12:00:00Z",
                 "region": "us-east-1", "resources": ["arn:aws:scheduler:us-east-1:123456789012:schedule/default/sw"],
                 "detail": "{}"}
        out = scan_handler(event, CONTEXT, environ=env, ssm=ssm)
        assert out["status"] == "ok" and out["findings"] == 3 and out["alerted"] == 3
        assert len([c for c in fake.ok_calls("chat.postMessage") if not c.args.get("thread_ts")]) == 3
        assert scan_handler(event, CONTEXT, environ=env, ssm=ssm)["alerted"] == 0  # nothing new: nothing posted
    finally:
        fake.stop()


class LocalLambda:
    """`lambda.invoke(InvocationType="Event")` done as Lambda does it: the handler runs elsewhere, later."""

    def __init__(self) -> None:
        self.handler: Any = None
        self.threads: list[threading.Thread] = []
        self.results: list[dict[str, Any]] = []

    def invoke(self, FunctionName: str, InvocationType: str, Payload: str) -> dict[str, Any]:
        assert InvocationType == "Event" and FunctionName == CONTEXT.invoked_function_arn
        t = threading.Thread(target=lambda: self.results.append(self.handler(json.loads(Payload), CONTEXT)))
        t.start()
        self.threads.append(t)
        return {"StatusCode": 202}


def test_slack_function_url_handler_acks_fast_and_quarantines_lazily(tmp_path: Path, aws: str) -> None:
    clients, iid, finding = moto_instance(aws)
    state = tmp_path / "state.db"
    fake = FakeSlack().start()
    try:
        with Store(state) as store:
            store.upsert([finding], now=finding.detected_at)
            posted = SlackAlerter(make_client(TOKEN, base_url=fake.base_url), channel=CHANNEL,
                                  store=store).notify(finding)
        settings = SlackSettings(signing_secret=SECRET, bot_token=TOKEN, channel=CHANNEL,
                                 allowed_users=frozenset({ALICE}), api_base_url=fake.base_url, aws_endpoint_url=aws)
        local = LocalLambda()
        lam = SlackLambda(settings, state, lambda_client=local)
        local.handler = lam.handle
        body = encode(block_actions("sw_quarantine", finding.id, user=ALICE, channel=posted.channel, ts=posted.ts))
        event = function_url_event(body, signed_headers(body))

        # Forged lazy invocations (a replay with bolt's lazy header, with or without a made-up token) are refused.
        forged = json.loads(json.dumps(event))
        forged["headers"].update({"x-slack-bolt-lazy-only": "1", "x-slack-bolt-lazy-function-name": "work_quarantine"})
        assert lam.handle(forged, CONTEXT)["statusCode"] == 401
        forged["headers"][LAZY_TOKEN_HEADER] = "0" * 64
        assert lam.handle(forged, CONTEXT)["statusCode"] == 401

        t0 = time.perf_counter()
        resp = lam.handle(json.loads(json.dumps(event)), CONTEXT)
        acked = time.perf_counter() - t0
        assert resp["statusCode"] == 200 and acked < 3, (resp, acked)
        assert local.threads, "no lazy invocation was started"
        for t in local.threads:
            t.join(30)
        assert local.results and all(r["statusCode"] == 200 for r in local.results)
        with Store(state) as store:
            active = store.active_quarantine(cloud="aws", account=finding.account, resource=iid)
        assert active is not None and active.actor == f"slack:{ALICE}"
        inst = clients.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert any(t["Key"].startswith("spendwatch") for t in inst.get("Tags", []))
        assert lam.handle(json.loads(json.dumps(event)), CONTEXT)["statusCode"] == 401  # the same click, replayed
        bad = function_url_event(body, signed_headers(body, secret="wrong"))
        assert lam.handle(bad, CONTEXT)["statusCode"] == 401
        lam.app.close()
    finally:
        fake.stop()
