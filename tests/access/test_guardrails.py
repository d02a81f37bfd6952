"""The guardrail policies: linted by parliament, parsed as Terraform by python-hcl2, judged by moto's IAM
authorisation (an evaluator this project did not write) and by the project's static evaluator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import hcl2
import pytest
from botocore.exceptions import ClientError
from parliament import analyze_policy_string, enhance_finding

from spendwatch import guardrails
from spendwatch.access.policy import Policy, Request, evaluate
from spendwatch.catalog import aws_instance_types, is_accelerated
from spendwatch.cli import main

NOW = datetime(2026, 11, 20, 10, tzinfo=UTC)
ALLOW_ALL = Policy("admin", {"Version": "2012-10-17",
                             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
AGENT = {"spendwatch:agent": "true"}


def documents() -> dict[str, dict[str, Any]]:
    return {"scp": guardrails.scp(), "boundary": guardrails.boundary(),
            "approval": guardrails.approval_policy(instance_type="g5.12xlarge", region="us-east-1",
                                                    until=NOW + timedelta(hours=4))}


@pytest.mark.parametrize("name", ["scp", "boundary", "approval"])
def test_parliament_finds_nothing(name: str) -> None:
    policy = analyze_policy_string(json.dumps(documents()[name]), ignore_private_auditors=True)
    assert [(f.issue, enhance_finding(f).severity, f.detail) for f in policy.findings] == []


def test_parliament_would_catch_a_typo() -> None:  # the lint is live, not vacuous
    doc = guardrails.scp()
    doc["Statement"][0]["Action"] = ["ec2:RunInstance"]
    assert any(f.issue == "UNKNOWN_ACTION" for f in analyze_policy_string(json.dumps(doc)).findings)


def test_families_match_the_catalogue_exactly() -> None:
    for name in aws_instance_types():
        assert guardrails.is_guarded_type(name) == is_accelerated(name), name
    # `g*`/`p*` wildcards are avoided on purpose: these are not accelerated and must stay launchable.
    for name in ("m5.large", "c6i.4xlarge", "r5.large", "t3.micro", "i4i.large", "im4gn.large", "hpc7g.16xlarge"):
        assert not guardrails.is_guarded_type(name)


def test_terraform_parses_and_embeds_the_same_documents(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["guardrail", "aws", "--format", "terraform"]) == 0
    parsed = hcl2.loads(capsys.readouterr().out)
    # python-hcl2 8.x keeps the quotes of labels and strings
    resources = {k.strip('"'): {n.strip('"'): b for n, b in v.items()} for block in parsed["resource"]
                 for k, v in block.items()}
    scp = resources["aws_organizations_policy"]["spendwatch_gpu_guardrail"]
    assert scp["type"].strip('"') == "SERVICE_CONTROL_POLICY"
    content = scp["content"]
    body = content[content.index("{"): content.rindex("}") + 1]
    assert json.loads(body) == guardrails.scp()
    assert "aws_organizations_policy_attachment" in resources and "aws_iam_policy" in resources


def test_cli_explains_before_printing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["guardrail", "aws"]) == 0
    out = capsys.readouterr().out
    assert out.index("What it does") < out.index('"Version"') and "g5, g5g" in out
    assert main(["guardrail", "aws", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"scp", "boundary"}


# -- the project's static evaluator on the SCP's conditions (what moto cannot judge, see below) -------------

def launch(instance_type: str, tags: dict[str, str], *extra: Policy) -> str:
    req = Request("ec2:RunInstances", "arn:aws:ec2:us-east-1:1:instance/*", instance_type, tags, NOW)
    return evaluate(req, [ALLOW_ALL, *extra], scp_levels=[[Policy("guard", guardrails.scp()), ALLOW_ALL]]).decision


def test_scp_conditions_statically() -> None:
    assert launch("p4d.24xlarge", {}) == "allowed"  # a human: untouched
    assert launch("p4d.24xlarge", AGENT) == "denied"
    assert launch("g5.12xlarge", {"spendwatch:agent": "TRUE"}) == "denied"  # StringEqualsIgnoreCase
    assert launch("t3.micro", AGENT) == "allowed"  # not accelerated
    approved = {**AGENT, guardrails.APPROVAL_TAG: guardrails.APPROVAL_VALUE}
    assert launch("g5.12xlarge", approved) == "allowed"
    quota = Request("servicequotas:RequestServiceQuotaIncrease", "*", None, approved, NOW)
    assert evaluate(quota, [ALLOW_ALL], scp_levels=[[Policy("g", guardrails.scp())]]).decision == "denied"


# -- moto's IAM authorisation ---------------------------------------------------------------------------

@pytest.fixture
def enforcing_moto() -> Iterator[str]:
    """A moto server of our own (a subprocess: moto's auth switch is process-global and must not reach the
    shared server), with IAM authorisation switched on after set-up."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "INITIAL_NO_AUTH_ACTION_COUNT"}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def enforce(url: str) -> None:
    req = urllib.request.Request(url + "/moto-api/reset-auth", data=b"0", method="POST",
                                 headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(req).read()


def ec2_as(url: str, key: dict[str, str]) -> Any:
    return boto3.client("ec2", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
                        aws_secret_access_key=key["SecretAccessKey"], aws_session_token=key.get("SessionToken"))


def outcome(ec2: Any, instance_type: str) -> str:
    try:
        ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType=instance_type)
        return "allowed"
    except ClientError as exc:
        return exc.response["Error"]["Code"]


def test_moto_enforces_the_guardrail_deny(enforcing_moto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What moto judges: identity policies (inline, attached, groups) with Allow/Deny and Action matching;
    it ignores Condition blocks (it passes no request context), permission boundaries and SCPs. So the
    guardrail's Deny statements are attached as an identity policy to the marked agents only, which is what
    the tag condition selects in AWS; the condition semantics are checked by the static evaluator above."""
    url = enforcing_moto
    for k, v in {"AWS_ACCESS_KEY_ID": "setup", "AWS_SECRET_ACCESS_KEY": "setup", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1")
    ec2_all = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["ec2:*", "sts:AssumeRole"], "Resource": "*"}]})
    guard = iam.create_policy(PolicyName="spendwatch-gpu-guardrail",
                              PolicyDocument=json.dumps(guardrails.scp()))["Policy"]["Arn"]
    keys = {}
    for user, tags in (("alice", []), ("agent-7", [{"Key": "spendwatch:agent", "Value": "true"}])):
        iam.create_user(UserName=user, Tags=tags)
        iam.put_user_policy(UserName=user, PolicyName="ec2", PolicyDocument=ec2_all)
        keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
    iam.attach_user_policy(UserName="agent-7", PolicyArn=guard)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                      "Principal": {"AWS": "arn:aws:iam::123456789012:user/alice"}}]}
    iam.create_role(RoleName="bedrock-agent", AssumeRolePolicyDocument=json.dumps(trust),
                    Tags=[{"Key": "spendwatch:agent", "Value": "true"}])
    iam.put_role_policy(RoleName="bedrock-agent", PolicyName="ec2", PolicyDocument=ec2_all)
    iam.attach_role_policy(RoleName="bedrock-agent", PolicyArn=guard)
    enforce(url)

    sts = boto3.client("sts", endpoint_url=url, region_name="us-east-1",
                       aws_access_key_id=keys["alice"]["AccessKeyId"],
                       aws_secret_access_key=keys["alice"]["SecretAccessKey"])
    creds = sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/bedrock-agent", RoleSessionName="agent-session")
    role_key = {k: creds["Credentials"][k] for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")}

    human, agent_user, agent_role = ec2_as(url, keys["alice"]), ec2_as(url, keys["agent-7"]), ec2_as(url, role_key)
    for instance_type in ("p4d.24xlarge", "g5.12xlarge"):
        assert outcome(human, instance_type) == "allowed"
        assert outcome(agent_user, instance_type) == "AccessDenied"
        assert outcome(agent_role, instance_type) == "AccessDenied"
    # The Deny names launch actions only: the agents keep everything else their policies grant.
    agent_user.describe_instances()
    agent_role.describe_instances()
    # moto's limit, pinned: it ignores the ec2:InstanceType condition, so it denies the agent's t3 too
    # (AWS would allow it; the static evaluator's test above says so).
    assert outcome(agent_user, "t3.micro") == "AccessDenied"
