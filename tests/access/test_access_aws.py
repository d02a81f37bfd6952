"""`spendwatch access aws` against a real moto server: IAM users, roles, groups, boundaries and SCPs."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from spendwatch import guardrails
from spendwatch.access.aws import LAUNCH_ROUTES, classify, make_clients, read_policy, scan_access
from spendwatch.cli import main

TRUST_EC2 = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def trust(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})


def allow(action: str | list[str], condition: dict[str, Any] | None = None, resource: str = "*") -> str:
    st: dict[str, Any] = {"Effect": "Allow", "Action": action, "Resource": resource}
    if condition:
        st["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [st]})


@pytest.fixture
def world(aws: str) -> dict[str, Any]:
    iam = boto3.client("iam", endpoint_url=aws, region_name="us-east-1")
    iam.create_user(UserName="alice")
    iam.put_user_policy(UserName="alice", PolicyName="admin", PolicyDocument=allow("*"))
    iam.create_group(GroupName="key-admins")
    iam.put_group_policy(GroupName="key-admins", PolicyName="keys", PolicyDocument=allow("iam:CreateAccessKey"))
    iam.create_user(UserName="bob")
    iam.add_user_to_group(GroupName="key-admins", UserName="bob")

    iam.create_role(RoleName="gpu-worker", AssumeRolePolicyDocument=trust("ec2.amazonaws.com"),
                    Tags=[{"Key": "spendwatch:agent", "Value": "true"}])
    ec2_all = iam.create_policy(PolicyName="ec2-all", PolicyDocument=allow("ec2:*"))["Policy"]["Arn"]
    iam.attach_role_policy(RoleName="gpu-worker", PolicyArn=ec2_all)

    iam.create_role(RoleName="research-runner", AssumeRolePolicyDocument=trust("bedrock.amazonaws.com"))
    iam.put_role_policy(RoleName="research-runner", PolicyName="small-only", PolicyDocument=allow(
        "ec2:RunInstances", {"StringLike": {"ec2:InstanceType": ["t3.*", "m5.*"]}}))

    iam.create_role(RoleName="batch", AssumeRolePolicyDocument=trust("batch.amazonaws.com"))
    iam.put_role_policy(RoleName="batch", PolicyName="office", PolicyDocument=allow(
        ["ec2:Run*", "servicequotas:*"], {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))

    boundary = iam.create_policy(PolicyName="spendwatch-agent-boundary",
                                 PolicyDocument=json.dumps(guardrails.boundary()))["Policy"]["Arn"]
    iam.create_role(RoleName="fenced-agent", AssumeRolePolicyDocument=trust("ec2.amazonaws.com"),
                    Tags=[{"Key": "agent", "Value": "true"}], PermissionsBoundary=boundary)
    iam.attach_role_policy(RoleName="fenced-agent", PolicyArn=ec2_all)

    iam.create_role(RoleName="AWSReservedSSO_Admin_0123456789abcdef", Path="/aws-reserved/sso.amazonaws.com/",
                    AssumeRolePolicyDocument=trust("ec2.amazonaws.com"))
    iam.put_role_policy(RoleName="AWSReservedSSO_Admin_0123456789abcdef", PolicyName="all",
                        PolicyDocument=allow("*"))
    iam.create_role(RoleName="ops-deployer", AssumeRolePolicyDocument=trust("codebuild.amazonaws.com"))
    # The type condition also binds Subscribe in the same statement (the key is absent there: no match) ...
    iam.put_role_policy(RoleName="ops-deployer", PolicyName="g5", PolicyDocument=allow(
        ["ec2:RunInstances", "aws-marketplace:Subscribe"], {"StringEquals": {"ec2:InstanceType": "g5.48xlarge"}}))
    iam.create_role(RoleName="buyer", AssumeRolePolicyDocument=trust("codebuild.amazonaws.com"))
    iam.put_role_policy(RoleName="buyer", PolicyName="market", PolicyDocument=allow("aws-marketplace:Subscribe"))
    return {"iam": iam}


def rows_by_name(report: Any) -> dict[str, Any]:
    return {r.principal.name: r for r in report.rows}


def test_access_reports_who_can_launch_gpus_and_honours_boundaries(world: dict[str, Any], aws: str) -> None:
    report = scan_access(make_clients(endpoint_url=aws))
    rows = rows_by_name(report)
    assert report.scp_levels is None and report.gaps and "SCPs not evaluated" in report.gaps[0]

    worker = rows["gpu-worker"]
    assert worker.principal.principal_type == "agent" and "spendwatch:agent" in worker.principal.why
    gpu = worker.capabilities["gpu_launch"]
    assert gpu.decision == "allowed" and gpu.detail == "every accelerated family"
    assert gpu.via == ["ec2-all#[0]"]

    fenced = rows["fenced-agent"]  # same ec2:* policy, but the guardrail boundary denies accelerated types
    assert fenced.principal.principal_type == "agent"
    assert fenced.capabilities["gpu_launch"].decision == "denied"
    assert any("DenyAcceleratedLaunchWithoutApproval" in v for v in fenced.capabilities["gpu_launch"].via)
    assert fenced.capabilities["quota_increase"].decision == "denied"

    runner = rows["research-runner"]  # trusted by Bedrock; InstanceType condition admits only t3/m5
    assert runner.principal.principal_type == "agent" and "bedrock" in runner.principal.why
    assert runner.capabilities["gpu_launch"].decision == "denied"

    batch = rows["batch"]  # a condition static evaluation cannot decide
    assert batch.principal.principal_type == "role"
    assert batch.capabilities["gpu_launch"].decision == "conditional"
    assert "conditional: aws:SourceIp" in batch.capabilities["gpu_launch"].detail
    assert batch.capabilities["quota_increase"].decision == "conditional"

    deployer = rows["ops-deployer"]  # StringEquals on one type: only g5 is reachable
    assert deployer.capabilities["gpu_launch"].decision == "allowed"
    assert deployer.capabilities["gpu_launch"].detail == "g5"
    assert deployer.capabilities["marketplace"].decision == "denied"  # ... so only the buyer may subscribe
    assert rows["buyer"].capabilities["marketplace"].decision == "allowed"

    assert rows["alice"].principal.principal_type == "human"
    assert rows["alice"].capabilities["credentials"].decision == "allowed"
    bob = rows["bob"]
    assert bob.capabilities["credentials"].decision == "allowed" and bob.capabilities["credentials"].via == [
        "group/key-admins:keys#[0]"]
    assert bob.capabilities["gpu_launch"].decision == "denied"
    sso = rows["AWSReservedSSO_Admin_0123456789abcdef"]
    assert sso.principal.principal_type == "human" and sso.capabilities["gpu_launch"].decision == "allowed"

    by_principal = {f.principal.rsplit("/", 1)[-1]: f for f in report.findings}
    assert set(by_principal) == {"gpu-worker", "ops-deployer"}  # humans are not findings; fenced-agent is denied
    assert by_principal["gpu-worker"].severity.label == "high"
    assert by_principal["ops-deployer"].severity.label == "medium"
    assert by_principal["gpu-worker"].rules == ["unrestricted-compute"]


def test_scps_are_evaluated_per_level(world: dict[str, Any], aws: str) -> None:
    org = boto3.client("organizations", endpoint_url=aws, region_name="us-east-1")
    org.create_organization(FeatureSet="ALL")
    account = boto3.client("sts", endpoint_url=aws, region_name="us-east-1").get_caller_identity()["Account"]
    deny = org.create_policy(Name="no-marketplace", Type="SERVICE_CONTROL_POLICY", Description="x", Content=json.dumps(
        {"Version": "2012-10-17", "Statement": [
            {"Effect": "Deny", "Action": "aws-marketplace:*", "Resource": "*"},
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]}))["Policy"]["PolicySummary"]["Id"]
    org.attach_policy(PolicyId=deny, TargetId=account)
    guard = org.create_policy(Name="gpu-guardrail", Type="SERVICE_CONTROL_POLICY", Description="x",
                              Content=json.dumps(guardrails.scp()))["Policy"]["PolicySummary"]["Id"]
    root = org.list_roots()["Roots"][0]["Id"]
    org.attach_policy(PolicyId=guard, TargetId=root)

    report = scan_access(make_clients(endpoint_url=aws))
    assert report.scp_levels is not None and len(report.scp_levels) >= 2 and not report.gaps
    rows = rows_by_name(report)
    deployer = rows["ops-deployer"]
    assert rows["buyer"].capabilities["marketplace"].decision == "denied"
    assert any("scp:no-marketplace" in v for v in rows["buyer"].capabilities["marketplace"].via)
    # The guardrail SCP at the root: the tagged agent is denied, the untagged role is not.
    assert rows["gpu-worker"].capabilities["gpu_launch"].decision == "denied"
    assert deployer.capabilities["gpu_launch"].decision == "allowed"
    assert {f.principal.rsplit("/", 1)[-1] for f in report.findings} == {"ops-deployer"}


def test_cli_json_and_fail_on(world: dict[str, Any], aws: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["access", "aws", "--endpoint-url", aws, "--json", "--fail-on", "high"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert data["findings"][0]["rules"] == ["unrestricted-compute"]
    assert {p["name"] for p in data["principals"]} >= {"alice", "gpu-worker", "fenced-agent"}
    assert main(["access", "aws", "--endpoint-url", aws]) == 0
    table = capsys.readouterr().out
    assert "gpu-worker" in table and "FINDING [high]" in table and "conditional: aws:SourceIp" in table


def test_classify() -> None:
    assert classify("role", "AWSServiceRoleForECS", "/aws-service-role/ecs.amazonaws.com/", {})[0] == "service"
    assert classify("user", "ci-bot", "/", {"Agent": "True"})[0] == "agent"
    assert classify("user", "langchain-runner", "/", {})[0] == "agent"
    assert classify("role", "saml-admins", "/", {}, {"Statement": [
        {"Effect": "Allow", "Principal": {"Federated": "arn:aws:iam::1:saml-provider/okta"},
         "Action": "sts:AssumeRoleWithSAML"}]})[0] == "human"
    assert classify("role", "app", "/", {}, TRUST_EC2)[0] == "role"


def test_read_policy_lists_every_declared_call() -> None:
    actions = read_policy()["Statement"][0]["Action"]
    assert "iam:ListRoles" in actions and "organizations:ListPoliciesForTarget" in actions
    assert all(a.split(":")[1].startswith(("List", "Get", "Describe")) for a in actions)


def test_every_launch_route_is_judged(world: dict[str, Any], aws: str) -> None:
    """CreateFleet, the legacy spot APIs, Auto Scaling (with its ec2:RunInstances dependency) and SageMaker."""
    iam = world["iam"]
    roles = {
        "spot-bidder": allow("ec2:RequestSpotInstances"),  # the call does not name the type: every type
        "fleet-g5": allow("ec2:CreateFleet", {"StringLike": {"ec2:InstanceType": "g5.*"}}),
        "asg-only": allow("autoscaling:CreateAutoScalingGroup"),  # no ec2:RunInstances: a template launch fails
        "asg-small": allow(["autoscaling:*", "ec2:RunInstances"], {"StringLikeIfExists": {
            "ec2:InstanceType": ["t3.*"]}}),
        "trainer": allow(["sagemaker:CreateTrainingJob", "iam:PassRole"]),
        "trainer-no-pass": allow("sagemaker:CreateTrainingJob"),
        "trainer-cpu": allow(["sagemaker:*", "iam:PassRole"], {
            "ForAllValues:StringLike": {"sagemaker:InstanceTypes": ["ml.m5.*", "ml.c5.*"]}}),
    }
    for name, doc in roles.items():
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust("codebuild.amazonaws.com"))
        iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=doc)
    iam.put_role_policy(RoleName="fenced-agent", PolicyName="sagemaker", PolicyDocument=allow(
        ["sagemaker:*", "iam:PassRole", "autoscaling:*"]))

    rows = rows_by_name(scan_access(make_clients(endpoint_url=aws)))

    def routes(name: str) -> dict[str, str]:
        return {k: c.decision for k, c in rows[name].capabilities["gpu_launch"].routes.items()}

    spot = rows["spot-bidder"].capabilities["gpu_launch"]
    assert spot.decision == "allowed" and spot.open_routes == ["ec2:RequestSpotInstances"]
    assert spot.detail.startswith("any instance type")
    assert routes("spot-bidder")["ec2:RunInstances"] == "denied"

    fleet = rows["fleet-g5"].capabilities["gpu_launch"]
    assert fleet.decision == "allowed" and fleet.open_routes == ["ec2:CreateFleet"] and fleet.detail == "g5"

    assert routes("asg-only")["autoscaling:CreateAutoScalingGroup"] == "denied"
    assert rows["asg-only"].capabilities["gpu_launch"].decision == "denied"
    assert rows["asg-small"].capabilities["gpu_launch"].decision == "denied"

    trainer = rows["trainer"].capabilities["gpu_launch"]
    assert trainer.decision == "allowed" and trainer.open_routes == ["sagemaker:CreateTrainingJob"]
    assert trainer.detail == "every accelerated family"
    assert rows["trainer-no-pass"].capabilities["gpu_launch"].decision == "denied"  # no execution role to pass
    assert rows["trainer-cpu"].capabilities["gpu_launch"].decision == "denied"

    # The guardrail boundary closes every route, SageMaker and the spot APIs included.
    fenced = routes("fenced-agent")
    assert set(fenced) == {r.action for r in LAUNCH_ROUTES} and set(fenced.values()) == {"denied"}
    worker = routes("gpu-worker")  # ec2:* alone: the EC2 routes, not SageMaker (no sagemaker:*, no PassRole)
    assert worker["ec2:RequestSpotFleet"] == "denied" and worker["sagemaker:CreateTrainingJob"] == "denied"
    assert all(worker[a] == "allowed" for a in ("ec2:RunInstances", "ec2:CreateFleet", "ec2:RequestSpotInstances"))
