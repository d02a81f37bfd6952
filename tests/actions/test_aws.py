"""AWS quarantine and release against a real moto server, through the real boto3 clients."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spendwatch.actions import ACTIONS, ActionSettings, Target, execute
from spendwatch.actions.aws import (
    ALL_ACCESS_GROUP,
    BACKUP_TAG,
    ISOLATION_GROUP,
    QUARANTINE_TAG,
    REVOKE_POLICY,
    AwsQuarantine,
    AwsRelease,
)
from spendwatch.findings import Finding, Severity, finding_id
from spendwatch.store import Store

from .conftest import ROLE, World

ACTOR = "test:alice"


def quarantine(world: World, store: Store, iid: str, *, apply: bool = True, **kwargs: Any) -> Any:
    finding = kwargs.pop("finding", None)
    settings = kwargs.pop("settings", None)
    action = AwsQuarantine(clients=world.clients, store=store, actor=ACTOR, settings=settings, **kwargs)
    return execute(action, Target("aws", iid, finding_id=finding), apply=apply)


def release(world: World, store: Store, iid: str, *, apply: bool = True) -> Any:
    return execute(AwsRelease(clients=world.clients, store=store, actor=ACTOR), Target("aws", iid), apply=apply)


def stored_finding(store: Store, iid: str) -> Finding:
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    f = Finding(
        id=finding_id("aws", "123456789012", iid), cloud="aws", account="123456789012", region="us-east-1",
        resource=iid, principal=f"arn:aws:sts::123456789012:assumed-role/{ROLE}/agent-7", severity=Severity.CRITICAL,
        score=0.97, rules=["pool-domain"], evidence=["resolved pool.example"], first_seen=now - timedelta(hours=2),
        last_seen=now, detected_at=now, hourly_cost_usd=12.5, summary="miner",
    )
    store.upsert([f], now=now)
    return f


def test_dry_run_changes_nothing_and_is_audited(world: World, store: Store) -> None:
    iid = world.launch()
    before = world.state(iid)
    outcome = quarantine(world, store, iid, apply=False, stop=True)
    assert outcome.status == "planned" and outcome.dry_run
    names = [s.name for s in outcome.steps]
    assert names[:1] == ["tag"] and names.count("isolate-interface") == 2 and "snapshot" in names
    assert {"detach-profile", "revoke-role-sessions", "stop", "prepare-groups"} <= set(names)
    assert all(s.outcome == "planned" for s in outcome.steps)
    assert world.state(iid) == before  # not even the shared groups were created
    assert store.quarantines() == []
    audit = store.audit_log(resource=iid)
    assert audit and all(e.dry_run for e in audit) and {e.outcome for e in audit} == {"planned"}


def test_quarantine_isolates_snapshots_detaches_and_release_restores_exactly(world: World, store: Store) -> None:
    iid = world.launch()
    finding = stored_finding(store, iid)
    before = world.state(iid)
    original = before["enis"]
    assert len(original) == 2 and all(original.values())

    outcome = quarantine(world, store, iid, finding=finding.id)
    assert outcome.status == "applied", outcome.message
    after = world.state(iid)

    # Network: every interface only in the isolation group, which has no rules in either direction.
    groups = {g["GroupName"]: g for g in world.ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [world.vpc]}])["SecurityGroups"]}
    isolation, all_access = groups[ISOLATION_GROUP], groups[ALL_ACCESS_GROUP]
    assert after["enis"] == {eni: [isolation["GroupId"]] for eni in original}
    assert isolation["IpPermissions"] == [] and isolation["IpPermissionsEgress"] == []
    assert any(p["IpProtocol"] == "-1" and {"CidrIp": "0.0.0.0/0"} in p["IpRanges"]
               for p in all_access["IpPermissions"])
    assert any(p["IpProtocol"] == "-1" for p in all_access["IpPermissionsEgress"])

    # Tags: the marker, who and when, and a backup of each interface's groups.
    tags = dict(after["tags"])
    assert tags[QUARANTINE_TAG] == finding.id and tags["spendwatch:quarantined-by"] == ACTOR
    assert {eni: sorted(tags[BACKUP_TAG + eni].split()) for eni in original} == original

    # Snapshots of every volume, tagged with the finding id.
    snaps = world.ec2.describe_snapshots(Filters=[{"Name": "tag:spendwatch:finding", "Values": [finding.id]}])
    inst = world.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    volumes = {m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"]}
    assert volumes and {s["VolumeId"] for s in snaps["Snapshots"]} == volumes

    # Credentials: profile detached, older sessions of its role denied (moto stores the policy; it does not
    # evaluate aws:TokenIssueTime, so what we can check is the document).
    assert after["profiles"] == []
    doc = world.iam.get_role_policy(RoleName=ROLE, PolicyName=REVOKE_POLICY.format(instance=iid))["PolicyDocument"]
    statement = doc["Statement"][0]
    assert statement["Effect"] == "Deny" and statement["Action"] == ["*"] and statement["Resource"] == ["*"]
    issued_before = datetime.fromisoformat(statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"])
    assert abs((issued_before - datetime.now(UTC)).total_seconds()) < 60
    assert after["termination_protection"] is True and after["state"] == "running"  # never terminated, not stopped

    # Store: an active record, the finding marked quarantined, every step audited.
    stored = store.active_quarantine(cloud="aws", account="123456789012", resource=iid)
    assert stored is not None and stored.state == "active" and stored.record["enis"] == original
    assert store.get(finding.id).status == "quarantined"  # type: ignore[union-attr]
    applied = [e for e in store.audit_log(resource=iid) if not e.dry_run]
    assert {e.step for e in applied if e.outcome == "ok"} >= {"tag", "isolate-interface", "snapshot", "detach-profile"}
    assert all(e.actor == ACTOR for e in applied)

    # Release: exactly the original state back; the snapshots and the shared groups are kept.
    back = release(world, store, iid)
    assert back.status == "applied", back.message
    restored = world.state(iid)
    for key in ("enis", "tags", "profiles", "role_policies", "termination_protection", "state"):
        assert restored[key] == before[key], key
    assert set(restored["snapshots"]) == set(after["snapshots"]) and len(restored["snapshots"]) == len(volumes)
    assert restored["groups"] == after["groups"]
    assert store.active_quarantine(cloud="aws", account="123456789012", resource=iid) is None
    assert store.get(finding.id).status == "open"  # type: ignore[union-attr]
    assert store.quarantines()[0].state == "released" and store.quarantines()[0].released_by == ACTOR


def test_api_calls_stay_within_declared_permissions(world: World, store: Store) -> None:
    iid = world.launch()
    calls = world.record_calls()
    assert quarantine(world, store, iid, stop=True).status == "applied"
    made = set(calls)
    assert made <= set(AwsQuarantine.permissions), made - set(AwsQuarantine.permissions)
    calls.clear()
    assert release(world, store, iid).status == "applied"
    assert set(calls) <= set(AwsRelease.permissions), set(calls) - set(AwsRelease.permissions)


def test_every_step_permission_is_declared_by_its_action(world: World, store: Store) -> None:
    iid = world.launch()
    for outcome in (quarantine(world, store, iid, apply=False, stop=True),):
        declared = set(ACTIONS[outcome.action].permissions)
        for step in outcome.steps:
            assert set(step.permissions) <= declared, step


def test_auto_scaling_member_goes_to_standby_and_back(world: World, store: Store) -> None:
    world.ec2.create_launch_template(LaunchTemplateName="miner-lt",
                                     LaunchTemplateData={"ImageId": "ami-12345678", "InstanceType": "g5.xlarge"})
    asg = world.clients.autoscaling
    asg.create_auto_scaling_group(AutoScalingGroupName="gpu-pool", LaunchTemplate={"LaunchTemplateName": "miner-lt"},
                                  MinSize=0, MaxSize=3, DesiredCapacity=1, VPCZoneIdentifier=world.subnet)
    iid = asg.describe_auto_scaling_instances()["AutoScalingInstances"][0]["InstanceId"]

    def member() -> tuple[str, int]:
        state = asg.describe_auto_scaling_instances(InstanceIds=[iid])["AutoScalingInstances"][0]["LifecycleState"]
        desired = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["gpu-pool"])["AutoScalingGroups"][0]
        return state, desired["DesiredCapacity"]

    assert member() == ("InService", 1)
    outcome = quarantine(world, store, iid)
    assert outcome.status == "applied", outcome.message
    assert member() == ("Standby", 0)  # desired lowered, so the group launches no fresh copy
    assert release(world, store, iid).status == "applied"
    assert member() == ("InService", 1)


def test_protected_instances_are_never_touched(world: World, store: Store) -> None:
    tagged = world.launch(tags={"spendwatch:protected": "true"})
    listed = world.launch()
    before = {i: world.state(i) for i in (tagged, listed)}
    settings = ActionSettings(protected_ids=frozenset({listed}))
    for iid, why in ((tagged, "tag spendwatch:protected=true"), (listed, "allow-list")):
        outcome = quarantine(world, store, iid, settings=settings)
        assert outcome.status == "refused" and "protected" in outcome.message and why in outcome.message
        assert world.state(iid) == before[iid]
    assert store.quarantines() == []
    assert [e.outcome for e in store.audit_log(resource=tagged)] == ["refused"]


def test_blast_radius_refuses_the_sixth_and_counts_across_processes(world: World, tmp_path: Any) -> None:
    ids = [world.launch(second_eni=False, profile=False) for _ in range(6)]
    for iid in ids[:5]:
        with Store(tmp_path / "state.db") as store:  # a fresh connection each time, like separate CLI runs
            assert quarantine(world, store, iid).status == "applied"
    before = world.state(ids[5])
    with Store(tmp_path / "state.db") as store:
        dry = quarantine(world, store, ids[5], apply=False)
        assert dry.status == "planned" and "limit of 5" in dry.message
        outcome = quarantine(world, store, ids[5])
        assert outcome.status == "refused" and "blast-radius limit" in outcome.message
        assert world.state(ids[5]) == before
        assert len(store.quarantines()) == 5
        assert quarantine(world, store, ids[5], settings=ActionSettings(max_per_hour=6)).status == "applied"


def test_release_refuses_what_spendwatch_did_not_quarantine(world: World, store: Store) -> None:
    iid = world.launch()
    # Even a hand-made quarantine tag is not ours to undo: only a stored record is.
    world.ec2.create_tags(Resources=[iid], Tags=[{"Key": QUARANTINE_TAG, "Value": "manual"}])
    before = world.state(iid)
    outcome = release(world, store, iid)
    assert outcome.status == "refused" and "no active quarantine" in outcome.message
    assert world.state(iid) == before


def test_quarantining_twice_is_refused(world: World, store: Store) -> None:
    iid = world.launch()
    assert quarantine(world, store, iid).status == "applied"
    again = quarantine(world, store, iid)
    assert again.status == "refused" and "already quarantined" in again.message
    assert len(store.quarantines()) == 1


def test_stop_only_when_asked_refused_for_spot_and_undone_by_release(world: World, store: Store) -> None:
    spot = world.launch(spot=True)
    refused = quarantine(world, store, spot, stop=True)
    assert refused.status == "refused" and "spot instance" in refused.message and "without --stop" in refused.message
    assert world.state(spot)["tags"] == []

    iid = world.launch()
    assert quarantine(world, store, iid, stop=True).status == "applied"
    assert world.state(iid)["state"] == "stopped"
    assert release(world, store, iid).status == "applied"
    assert world.state(iid)["state"] in ("pending", "running")


def test_spot_instance_is_isolated_without_termination_protection(world: World, store: Store) -> None:
    iid = world.launch(spot=True, second_eni=False)
    outcome = quarantine(world, store, iid)
    assert outcome.status == "applied"
    assert "termination-protection" not in [s.name for s in outcome.steps]
    assert release(world, store, iid).status == "applied"


class _FailingIam:
    """The IAM client with PutRolePolicy denied, as in an account whose SCP forbids it."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def put_role_policy(self, **_: Any) -> Any:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied by SCP"}}, "PutRolePolicy")


def test_a_failed_step_leaves_a_record_that_release_undoes(world: World, store: Store) -> None:
    iid = world.launch()
    before = world.state(iid)
    world.clients.iam = _FailingIam(world.clients.iam)
    outcome = quarantine(world, store, iid)
    assert outcome.status == "partial" and "revoke-role-sessions" in outcome.message
    assert "spendwatch release" in outcome.message
    assert [s.outcome for s in outcome.steps][-1] == "failed"
    stored = store.active_quarantine(cloud="aws", account="123456789012", resource=iid)
    assert stored is not None and stored.state == "partial" and stored.record["revoked"] == []
    assert world.state(iid)["profiles"] == []  # the steps before the failure did run
    back = release(world, store, iid)
    assert back.status == "applied", back.message
    restored = world.state(iid)
    for key in ("enis", "tags", "profiles", "role_policies", "termination_protection"):
        assert restored[key] == before[key], key


def test_wrong_account_is_refused(world: World, store: Store) -> None:
    iid = world.launch()
    action = AwsQuarantine(clients=world.clients, store=store, actor=ACTOR)
    outcome = execute(action, Target("aws", iid, account="999999999999"), apply=True)
    assert outcome.status == "refused" and "not 999999999999" in outcome.message


def test_unknown_instance_is_refused(world: World, store: Store) -> None:
    outcome = quarantine(world, store, "i-0123456789abcdef0")
    assert outcome.status == "refused" and "no EC2 instance" in outcome.message


def test_isolation_group_is_emptied_if_someone_added_rules(world: World, store: Store) -> None:
    first, second = world.launch(second_eni=False), world.launch(second_eni=False)
    assert quarantine(world, store, first).status == "applied"
    iso = world.ec2.describe_security_groups(Filters=[
        {"Name": "group-name", "Values": [ISOLATION_GROUP]}, {"Name": "vpc-id", "Values": [world.vpc]}])
    gid = iso["SecurityGroups"][0]["GroupId"]
    world.ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    assert quarantine(world, store, second).status == "applied"
    group = world.ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
    assert group["IpPermissions"] == [] and group["IpPermissionsEgress"] == []
    assert json.loads(json.dumps(world.state(second)["enis"])) == {
        eni: [gid] for eni in world.state(second)["enis"]}


def test_clients_can_act_through_the_member_accounts_quarantine_role(aws: str) -> None:
    """The deployed Slack handler holds no write permissions: it assumes the quarantine role in the finding's
    account (deploy/terraform/aws/modules/member-account) and acts as that role."""
    from spendwatch.actions.aws import AwsClients

    clients = AwsClients.build(region="us-east-1", endpoint_url=aws, account="234567890123",
                               assume_role="spendwatch-quarantine")
    identity = clients.sts.get_caller_identity()
    assert identity["Account"] == "234567890123"
    assert ":assumed-role/spendwatch-quarantine/spendwatch-quarantine" in identity["Arn"]
    with pytest.raises(ValueError, match="account"):
        AwsClients.build(region="us-east-1", endpoint_url=aws, assume_role="spendwatch-quarantine")


def test_the_quarantine_role_is_assumed_with_the_external_id_its_trust_requires(aws: str) -> None:
    # modules/member-account puts `sts:ExternalId` in the quarantine role's trust when given external_id: the
    # Slack handler must send it (SPENDWATCH_AWS_EXTERNAL_ID), or every quarantine in a member account is denied.
    import boto3

    from spendwatch.actions.aws import AwsClients

    sent: list[dict[str, Any]] = []
    session = boto3.session.Session(region_name="us-east-1")
    session.events.register("provide-client-params.sts.AssumeRole", lambda params, **_: sent.append(dict(params)))
    for external_id in ("acme-7f3a", None):
        AwsClients.build(region="us-east-1", endpoint_url=aws, session=session, account="234567890123",
                         assume_role="spendwatch-quarantine", external_id=external_id)
    assert [s.get("ExternalId") for s in sent] == ["acme-7f3a", None]
    assert {s["RoleArn"] for s in sent} == {"arn:aws:iam::234567890123:role/spendwatch-quarantine"}
