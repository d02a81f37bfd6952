"""AWS quarantine and release, modelled on AWS's EC2 containment runbook.

Four actions, each declaring every API call it may make as an IAM action:

- `AwsQuarantine` isolates an EC2 instance: saves its interfaces' security groups, moves each interface to
  an all-access group and then to an empty isolation group (so tracked connections are cut), snapshots its
  volumes, detaches its instance profile and revokes the role's older sessions, puts Auto Scaling members in
  Standby, turns on termination protection, tags it; never terminates; stops it only when asked.
- `AwsRelease` undoes exactly what the stored quarantine record says was done, and nothing else.
- `AwsContainPrincipal` / `AwsReleasePrincipal` do the same for the identity that launched it: a deny-all
  inline policy bounded by token issue time, and the user's access keys deactivated.

boto3 is imported only in `AwsClients.build`; the actions take clients, so tests pass clients pointed at moto.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

from .base import PROTECTED_TAG, ActionSettings, QuarantineAction, Refused, ReleaseAction, Step, Target, now_utc

QUARANTINE_TAG = "spendwatch:quarantine"
BY_TAG = "spendwatch:quarantined-by"
AT_TAG = "spendwatch:quarantined-at"
BACKUP_TAG = "spendwatch:sg-backup:"
ALL_ACCESS_GROUP = "spendwatch-all-access"
ISOLATION_GROUP = "spendwatch-isolation"
MANAGED_TAG = "spendwatch:managed"
REVOKE_POLICY = "spendwatch-revoke-older-sessions-{instance}"
PRINCIPAL_POLICY = "spendwatch-contain-principal"
_TAG_VALUE_MAX = 256


@dataclass
class AwsClients:
    """The boto3 clients the AWS actions use, built once per command and passed in.

    Example::

        clients = AwsClients.build(region="us-east-1")                     # real AWS
        clients = AwsClients.build(region="us-east-1", endpoint_url=moto)  # tests
        clients = AwsClients.build(region="us-east-1", account="012345678901",
                                   assume_role="spendwatch-quarantine")   # the member account's quarantine role
    """

    ec2: Any
    iam: Any
    autoscaling: Any
    sts: Any

    @classmethod
    def build(
        cls,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        session: Any = None,
        account: str | None = None,
        assume_role: str | None = None,
        external_id: str | None = None,
    ) -> AwsClients:
        """Clients for one region. With `assume_role`, the role of that name in `account` is assumed first:
        the deployed Slack handler holds no write permissions itself and acts through each member account's
        quarantine role (deploy/terraform/aws/modules/member-account), whose trust requires `external_id` when the
        module was given one."""
        import boto3  # lazily: the core must not need the AWS SDK

        session = session or boto3.session.Session(region_name=region)
        region = region or session.region_name
        if not region:  # never guess a region for a quarantine
            raise ValueError("no AWS region: pass --region or set AWS_REGION / a profile region")
        kwargs: dict[str, Any] = {"region_name": region}
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        if assume_role:
            if not account:
                raise ValueError(f"assuming role {assume_role!r} needs the target account id")
            partition = session.get_partition_for_region(region)
            extra = {"ExternalId": external_id} if external_id else {}
            creds = session.client("sts", **kwargs).assume_role(
                RoleArn=f"arn:{partition}:iam::{account}:role/{assume_role}", RoleSessionName="spendwatch-quarantine",
                **extra,
            )["Credentials"]
            session = boto3.session.Session(
                aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"], region_name=region,
            )
        return cls(
            ec2=session.client("ec2", **kwargs),
            iam=session.client("iam", **kwargs),
            autoscaling=session.client("autoscaling", **kwargs),
            sts=session.client("sts", **kwargs),
        )

    def all(self) -> list[Any]:
        return [self.ec2, self.iam, self.autoscaling, self.sts]


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _tags(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


def _is_protected(tags: dict[str, str]) -> bool:
    return tags.get(PROTECTED_TAG, "").strip().lower() == "true"


def _iso(value: datetime) -> str:
    return value.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _ceil_iso(value: datetime) -> str:
    # Round up: a session issued in the same second as the quarantine must be revoked too.
    whole = value.replace(microsecond=0)
    return _iso(whole if whole == value else whole + timedelta(seconds=1))


def _revoke_document(issued_before: datetime) -> str:
    """The deny-all policy AWS's "Revoke active sessions" button (AWSRevokeOlderSessions) attaches."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Deny",
            "Action": ["*"],
            "Resource": ["*"],
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": _ceil_iso(issued_before)}},
        }],
    })


def backup_tags(enis: dict[str, list[str]]) -> dict[str, str]:
    """Each interface's groups as instance tags; a list longer than one tag value (256) continues in `#2`, ..."""
    tags: dict[str, str] = {}
    for eni, groups in enis.items():
        chunks: list[list[str]] = [[]]
        for group in groups:
            if len(" ".join([*chunks[-1], group])) > _TAG_VALUE_MAX:
                chunks.append([])
            chunks[-1].append(group)
        for i, chunk in enumerate(chunks):
            tags[BACKUP_TAG + eni + (f"#{i + 1}" if i else "")] = " ".join(chunk)
    return tags


def _caller_role(caller_arn: str) -> str | None:
    # arn:aws:sts::123456789012:assumed-role/ROLE/session
    rest = caller_arn.split(":", 5)[-1]
    return rest.split("/")[1] if rest.startswith("assumed-role/") else None


class _AwsMixin:
    clients: AwsClients
    resolved: Target | None

    def _resolve(self, target: Target) -> tuple[Target, dict[str, Any]]:
        ident = self.clients.sts.get_caller_identity()
        account = str(ident["Account"])
        if target.account and target.account != account:
            raise Refused(
                f"the AWS credentials are for account {account}, not {target.account}; "
                f"use credentials (or a profile) for {target.account}"
            )
        region = self.clients.ec2.meta.region_name
        if target.region and target.region != region:
            raise Refused(f"the AWS clients are for region {region}, not {target.region}")
        self.resolved = replace(target, cloud="aws", account=account, region=region)
        return self.resolved, ident

    def _instance(self, instance_id: str) -> dict[str, Any]:
        try:
            reservations = self.clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except Exception as exc:
            if _code(exc).startswith("InvalidInstanceID"):
                region = self.clients.ec2.meta.region_name
                raise Refused(f"no EC2 instance {instance_id} in {region} ({_code(exc)})") from exc
            raise
        instances = [i for r in reservations for i in r["Instances"]]
        if not instances:
            raise Refused(f"no EC2 instance {instance_id} in {self.clients.ec2.meta.region_name}")
        return dict(instances[0])

    def _asg_member(self, instance_id: str) -> dict[str, Any] | None:
        found = self.clients.autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])
        members = found.get("AutoScalingInstances", [])
        return dict(members[0]) if members else None


class AwsQuarantine(_AwsMixin, QuarantineAction):
    """Isolate an EC2 instance the way AWS's containment runbook does, reversibly.

    Steps, in order (each shown by the dry run, audited, and recorded for `release`):

    1. tag the instance `spendwatch:quarantine=<finding id or manual>`, who and when, and back up every
       interface's security groups in `spendwatch:sg-backup:<eni>` tags (and in the state database);
    2. Auto Scaling member: EnterStandby (desired capacity decremented where the minimum allows), so the group
       neither replaces it with a fresh copy nor kills it for failing health checks once isolated;
    3. turn on termination protection (not for spot), so evidence is not destroyed by the attacker;
    4. find or create, in its VPC, `spendwatch-all-access` (all traffic in and out) and `spendwatch-isolation`
       (no rules at all: the default egress rule is removed);
    5. each interface: move to the all-access group, then to the isolation group. Flows allowed by an
       all-traffic rule in both directions are untracked, and untracked flows stop as soon as the rule goes;
       moving straight to an empty group would leave established (tracked) connections, e.g. to a mining pool,
       running;
    6. snapshot every EBS volume, tagged with the finding id (forensics; release keeps them);
    7. disassociate the instance profile, then put an inline deny-all policy on its role(s) for sessions issued
       before now (what the console's "Revoke active sessions" does), so credentials already taken from the
       instance stop working. Note: this also stops other instances' current sessions of the same role
       until they refresh them;
    8. only with `stop=True` (CLI `--stop`): StopInstances. Refused for spot instances, never terminates.

    Refused (nothing changed): protected instances (tag `spendwatch:protected=true`, or the instance id or its
    Auto Scaling group in the allow-list), instances already quarantined, terminated ones, credentials of another
    account, and an instance whose role is the one spendwatch itself runs as.

    Example::

        spendwatch quarantine i-0abc123 --region us-east-1            # dry run: prints the plan
        spendwatch quarantine i-0abc123 --region us-east-1 --apply
    """

    name: ClassVar[str] = "aws.quarantine"
    cloud: ClassVar[str] = "aws"
    permissions: ClassVar[tuple[str, ...]] = (
        "sts:GetCallerIdentity",
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceAttribute",
        "ec2:DescribeIamInstanceProfileAssociations",
        "ec2:DescribeSecurityGroups",
        "ec2:CreateSecurityGroup",
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:AuthorizeSecurityGroupEgress",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupEgress",
        "ec2:CreateTags",
        "ec2:ModifyNetworkInterfaceAttribute",
        "ec2:ModifyInstanceAttribute",
        "ec2:CreateSnapshot",
        "ec2:DisassociateIamInstanceProfile",
        "ec2:StopInstances",
        "iam:GetInstanceProfile",
        "iam:PutRolePolicy",
        "autoscaling:DescribeAutoScalingInstances",
        "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:EnterStandby",
    )

    def __init__(self, *, clients: AwsClients, store: Any, actor: str, settings: ActionSettings | None = None,
                 stop: bool = False, now: Any = now_utc) -> None:
        super().__init__(store=store, actor=actor, settings=settings, now=now)
        self.clients = clients
        self.stop = stop

    def plan(self, target: Target) -> list[Step]:
        t, ident = self._resolve(target)
        ec2, iid = self.clients.ec2, t.resource
        inst = self._instance(iid)
        tags = _tags(inst.get("Tags"))
        asg = self._asg_member(iid)
        asg_name = asg["AutoScalingGroupName"] if asg else None
        if _is_protected(tags) or iid in self.settings.protected_ids or (asg_name in self.settings.protected_ids):
            why = (f"tag {PROTECTED_TAG}=true" if _is_protected(tags)
                   else "it is in the protected allow-list" if iid in self.settings.protected_ids
                   else f"its Auto Scaling group {asg_name} is in the protected allow-list")
            raise Refused(f"{iid} is protected ({why}); spendwatch never touches protected resources")
        stored = self.store.active_quarantine(cloud="aws", account=t.account or "", resource=iid)
        if QUARANTINE_TAG in tags or stored is not None:
            raise Refused(f"{iid} is already quarantined ({QUARANTINE_TAG}={tags.get(QUARANTINE_TAG, '?')}"
                          f"{'' if stored is None else f', record {stored.id}'}); release it first")
        state = inst["State"]["Name"]
        if state in ("shutting-down", "terminated"):
            raise Refused(f"{iid} is {state}; there is nothing left to quarantine")
        spot = inst.get("InstanceLifecycle") == "spot"
        if self.stop and spot:
            raise Refused(
                f"{iid} is a spot instance and --stop was asked: a one-time spot instance cannot be stopped "
                "(only terminated, which would destroy the evidence and which spendwatch never does), and stopping "
                "a persistent one hands it back to its spot request to relaunch. Run without --stop: isolation "
                "already cuts its network and credentials"
            )
        vpc = inst.get("VpcId")
        enis = {
            n["NetworkInterfaceId"]: sorted({g["GroupId"] for g in n.get("Groups", [])})
            for n in sorted(inst.get("NetworkInterfaces", []),
                            key=lambda n: n.get("Attachment", {}).get("DeviceIndex", 0))
        }
        if not vpc or not enis:
            raise Refused(f"{iid} has no VPC network interface (EC2-Classic?); spendwatch cannot isolate it")
        volumes = [m["Ebs"]["VolumeId"] for m in inst.get("BlockDeviceMappings", []) if "Ebs" in m]
        assoc = next(iter(ec2.describe_iam_instance_profile_associations(
            Filters=[{"Name": "instance-id", "Values": [iid]}, {"Name": "state", "Values": ["associated"]}],
        ).get("IamInstanceProfileAssociations", [])), None)
        roles: list[str] = []
        if assoc:
            profile_name = assoc["IamInstanceProfile"]["Arn"].rsplit("/", 1)[-1]
            profile = self.clients.iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]
            roles = [r["RoleName"] for r in profile.get("Roles", [])]
        own = _caller_role(ident["Arn"])
        if own and own in roles:
            raise Refused(
                f"spendwatch is running as role {own}, which is {iid}'s instance role: revoking that role's older "
                "sessions would cut spendwatch's own session half way. Run the quarantine from another identity"
            )
        protection = None
        if not spot:
            attr = ec2.describe_instance_attribute(InstanceId=iid, Attribute="disableApiTermination")
            protection = bool(attr.get("DisableApiTermination", {}).get("Value", False))

        when = self.now()
        marker = t.finding_id or "manual"
        self.record = {
            "instance": iid, "region": t.region, "vpc": vpc, "finding": t.finding_id, "caller": ident["Arn"],
            "enis": enis, "tags": [], "asg": None, "termination_protection": None, "groups": {}, "isolated": [],
            "snapshots": [], "profile": None, "revoked": [], "stopped": False,
        }
        rec = self.record
        steps: list[Step] = []

        new_tags = {QUARANTINE_TAG: marker, BY_TAG: self.actor[:_TAG_VALUE_MAX], AT_TAG: _iso(when),
                    **backup_tags(enis)}

        def tag() -> dict[str, Any]:
            ec2.create_tags(Resources=[iid], Tags=[{"Key": k, "Value": v} for k, v in new_tags.items()])
            rec["tags"] = list(new_tags)
            return {"tags": new_tags}

        backup = "; ".join(f"{eni}: {' '.join(g) or '(none)'}" for eni, g in enis.items())
        steps.append(Step("tag", f"tag {iid} {QUARANTINE_TAG}={marker}, {BY_TAG}, {AT_TAG}, and back up its "
                          f"security groups in {BACKUP_TAG}<eni> tags ({backup})", ("ec2:CreateTags",), tag))

        if asg and asg_name:
            if asg["LifecycleState"] == "InService":
                group = self.clients.autoscaling.describe_auto_scaling_groups(
                    AutoScalingGroupNames=[asg_name])["AutoScalingGroups"][0]
                decrement = group["DesiredCapacity"] > group["MinSize"]

                def standby(name: str = asg_name, decrement: bool = decrement) -> dict[str, Any]:
                    self.clients.autoscaling.enter_standby(
                        AutoScalingGroupName=name, InstanceIds=[iid], ShouldDecrementDesiredCapacity=decrement)
                    rec["asg"] = {"name": name, "decremented": decrement}
                    return {"group": name, "decremented": decrement}

                how = ("desired capacity lowered by one so no replacement is launched" if decrement else
                       "desired capacity is at the group's minimum, so the group will launch a replacement")
                steps.append(Step("asg-standby", f"put {iid} in Standby in Auto Scaling group {asg_name} ({how})",
                                  ("autoscaling:EnterStandby",), standby))
            else:
                steps.append(Step("asg-standby", f"{iid} is {asg['LifecycleState']} in Auto Scaling group "
                                  f"{asg_name}, not InService: left as it is"))

        if protection is False:
            def protect() -> dict[str, Any]:
                ec2.modify_instance_attribute(InstanceId=iid, DisableApiTermination={"Value": True})
                rec["termination_protection"] = {"before": False}
                return {}

            steps.append(Step("termination-protection", f"turn on termination protection for {iid}",
                              ("ec2:ModifyInstanceAttribute",), protect))

        existing = self._find_groups(vpc)

        def groups() -> dict[str, Any]:
            rec["groups"] = self._ensure_groups(vpc)
            return dict(rec["groups"])

        said = ", ".join(f"{name} ({existing[name]}, reused)" if name in existing else f"{name} (created)"
                         for name in (ALL_ACCESS_GROUP, ISOLATION_GROUP))
        steps.append(Step(
            "prepare-groups",
            f"in {vpc}: {said}; {ALL_ACCESS_GROUP} allows all traffic both ways, {ISOLATION_GROUP} has no rules "
            "(its default egress rule removed)",
            ("ec2:DescribeSecurityGroups", "ec2:CreateSecurityGroup", "ec2:AuthorizeSecurityGroupIngress",
             "ec2:AuthorizeSecurityGroupEgress", "ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress",
             "ec2:CreateTags"),
            groups,
        ))

        for eni, original in enis.items():
            def isolate(eni: str = eni) -> dict[str, Any]:
                g = rec["groups"]
                ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[g[ALL_ACCESS_GROUP]])
                rec["isolated"].append(eni)
                ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[g[ISOLATION_GROUP]])
                return {"interface": eni, "was": enis[eni]}

            steps.append(Step(
                "isolate-interface",
                f"{eni}: {' '.join(original) or '(no groups)'} -> {ALL_ACCESS_GROUP} -> {ISOLATION_GROUP} "
                "(cuts tracked connections)",
                ("ec2:ModifyNetworkInterfaceAttribute",), isolate,
            ))

        for volume in volumes:
            def snapshot(volume: str = volume) -> dict[str, Any]:
                snap = ec2.create_snapshot(
                    VolumeId=volume,
                    Description=f"spendwatch quarantine of {iid} ({marker})",
                    TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
                        {"Key": QUARANTINE_TAG, "Value": marker}, {"Key": "spendwatch:instance", "Value": iid},
                        {"Key": "spendwatch:finding", "Value": marker}, {"Key": BY_TAG, "Value": new_tags[BY_TAG]},
                    ]}],
                )
                rec["snapshots"].append(snap["SnapshotId"])
                return {"volume": volume, "snapshot": snap["SnapshotId"]}

            steps.append(Step("snapshot", f"snapshot {volume} (tagged spendwatch:finding={marker}; kept on release)",
                              ("ec2:CreateSnapshot", "ec2:CreateTags"), snapshot))

        if assoc:
            profile_arn = assoc["IamInstanceProfile"]["Arn"]

            def detach() -> dict[str, Any]:
                ec2.disassociate_iam_instance_profile(AssociationId=assoc["AssociationId"])
                rec["profile"] = {"arn": profile_arn, "association": assoc["AssociationId"]}
                return dict(rec["profile"])

            steps.append(Step("detach-profile", f"disassociate instance profile {profile_arn} from {iid}",
                              ("ec2:DisassociateIamInstanceProfile",), detach))
            policy = REVOKE_POLICY.format(instance=iid)
            for role in roles:
                def revoke(role: str = role) -> dict[str, Any]:
                    issued_before = self.now()
                    self.clients.iam.put_role_policy(RoleName=role, PolicyName=policy,
                                                     PolicyDocument=_revoke_document(issued_before))
                    rec["revoked"].append([role, policy])
                    return {"role": role, "policy": policy, "token_issued_before": _ceil_iso(issued_before)}

                steps.append(Step(
                    "revoke-role-sessions",
                    f"revoke older sessions of role {role}: inline policy {policy} denies everything to sessions "
                    "issued before now (also other instances' current sessions of this role, until they refresh)",
                    ("iam:PutRolePolicy",), revoke,
                ))

        if self.stop:
            def stop() -> dict[str, Any]:
                ec2.stop_instances(InstanceIds=[iid])
                rec["stopped"] = True
                return {}

            steps.append(Step("stop", f"stop {iid} (memory and instance-store evidence are lost; release starts it)",
                              ("ec2:StopInstances",), stop))
        return steps

    def _find_groups(self, vpc: str) -> dict[str, str]:
        found = self.clients.ec2.describe_security_groups(Filters=[
            {"Name": "vpc-id", "Values": [vpc]},
            {"Name": "group-name", "Values": [ALL_ACCESS_GROUP, ISOLATION_GROUP]},
        ])["SecurityGroups"]
        return {g["GroupName"]: g["GroupId"] for g in found}

    def _ensure_groups(self, vpc: str) -> dict[str, str]:
        """The two shared groups of this VPC, created if missing and put back in shape if edited since."""
        ec2 = self.clients.ec2
        everyone = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}]
        ids = self._find_groups(vpc)
        for name, purpose in ((ALL_ACCESS_GROUP, "all traffic, so flows become untracked before isolation"),
                              (ISOLATION_GROUP, "no rules: quarantined by spendwatch")):
            if name not in ids:
                ids[name] = ec2.create_security_group(
                    GroupName=name, Description=f"spendwatch quarantine: {purpose}", VpcId=vpc,
                    TagSpecifications=[{"ResourceType": "security-group",
                                        "Tags": [{"Key": MANAGED_TAG, "Value": "true"}]}],
                )["GroupId"]
        groups = {g["GroupId"]: g for g in ec2.describe_security_groups(GroupIds=list(ids.values()))["SecurityGroups"]}
        iso = groups[ids[ISOLATION_GROUP]]
        # The isolation group must stay empty whatever someone did to it since it was created.
        if iso.get("IpPermissions"):
            ec2.revoke_security_group_ingress(GroupId=iso["GroupId"], IpPermissions=iso["IpPermissions"])
        if iso.get("IpPermissionsEgress"):
            ec2.revoke_security_group_egress(GroupId=iso["GroupId"], IpPermissions=iso["IpPermissionsEgress"])
        allg = groups[ids[ALL_ACCESS_GROUP]]
        for authorize, have in ((ec2.authorize_security_group_ingress, allg.get("IpPermissions", [])),
                                (ec2.authorize_security_group_egress, allg.get("IpPermissionsEgress", []))):
            cidrs = {r.get("CidrIp") for p in have if p.get("IpProtocol") == "-1" for r in p.get("IpRanges", [])}
            cidrs |= {r.get("CidrIpv6") for p in have if p.get("IpProtocol") == "-1" for r in p.get("Ipv6Ranges", [])}
            missing: dict[str, Any] = {"IpProtocol": "-1"}
            if "0.0.0.0/0" not in cidrs:
                missing["IpRanges"] = everyone[0]["IpRanges"]
            if "::/0" not in cidrs:
                missing["Ipv6Ranges"] = everyone[0]["Ipv6Ranges"]
            if len(missing) > 1:
                authorize(GroupId=allg["GroupId"], IpPermissions=[missing])
        return {ALL_ACCESS_GROUP: ids[ALL_ACCESS_GROUP], ISOLATION_GROUP: ids[ISOLATION_GROUP]}


class AwsRelease(_AwsMixin, ReleaseAction):
    """Undo an `aws.quarantine`, exactly, from the record it left in the state database.

    Restores each interface's original security groups, re-associates the instance profile, deletes the
    revoke-older-sessions policies, restores termination protection, leaves Auto Scaling Standby, starts the
    instance if the quarantine stopped it, and removes the quarantine and backup tags. Snapshots are kept (they
    are evidence), and so are the shared spendwatch security groups (other quarantines may use them).
    Refuses an instance spendwatch did not quarantine. A release cut short can be run again: each step drops
    what it undid from the record.

    Example::

        spendwatch release i-0abc123 --region us-east-1 --apply
    """

    name: ClassVar[str] = "aws.release"
    cloud: ClassVar[str] = "aws"
    permissions: ClassVar[tuple[str, ...]] = (
        "sts:GetCallerIdentity",
        "ec2:DescribeInstances",
        "ec2:ModifyNetworkInterfaceAttribute",
        "ec2:ModifyInstanceAttribute",
        "ec2:AssociateIamInstanceProfile",
        "ec2:DeleteTags",
        "ec2:StartInstances",
        "iam:DeleteRolePolicy",
        "iam:PassRole",  # AssociateIamInstanceProfile passes the profile's role
        "autoscaling:DescribeAutoScalingInstances",
        "autoscaling:ExitStandby",
    )

    def __init__(self, *, clients: AwsClients, store: Any, actor: str, settings: ActionSettings | None = None,
                 now: Any = now_utc) -> None:
        super().__init__(store=store, actor=actor, settings=settings, now=now)
        self.clients = clients

    def plan(self, target: Target) -> list[Step]:
        t, _ = self._resolve(target)
        rec = self.load(t, account=t.account or "")
        if t.finding_id is None and rec.get("finding"):
            self.resolved = t = replace(t, finding_id=rec["finding"])
        ec2, iid = self.clients.ec2, t.resource
        self._instance(iid)
        steps: list[Step] = []

        if rec.get("stopped"):
            def start() -> dict[str, Any]:
                ec2.start_instances(InstanceIds=[iid])
                rec["stopped"] = False
                return {}

            steps.append(Step("start", f"start {iid} (the quarantine stopped it)", ("ec2:StartInstances",), start))

        for role, policy in list(rec.get("revoked", [])):
            def unrevoke(role: str = role, policy: str = policy) -> dict[str, Any]:
                try:
                    self.clients.iam.delete_role_policy(RoleName=role, PolicyName=policy)
                except Exception as exc:
                    if _code(exc) != "NoSuchEntity":  # already gone: nothing to undo
                        raise
                rec["revoked"].remove([role, policy])
                return {"role": role, "policy": policy}

            steps.append(Step("unrevoke-role-sessions", f"delete inline policy {policy} from role {role}",
                              ("iam:DeleteRolePolicy",), unrevoke))

        if rec.get("profile"):
            arn = rec["profile"]["arn"]

            def reassociate() -> dict[str, Any]:
                new = ec2.associate_iam_instance_profile(IamInstanceProfile={"Arn": arn}, InstanceId=iid)
                rec["profile"] = None
                return {"profile": arn, "association": new["IamInstanceProfileAssociation"]["AssociationId"]}

            steps.append(Step("reassociate-profile", f"associate instance profile {arn} with {iid} again",
                              ("ec2:AssociateIamInstanceProfile", "iam:PassRole"), reassociate))

        for eni in list(rec.get("isolated", [])):
            original = rec["enis"][eni]

            def restore(eni: str = eni, original: list[str] = original) -> dict[str, Any]:
                ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=original)
                rec["isolated"].remove(eni)
                return {"interface": eni, "groups": original}

            steps.append(Step("restore-interface", f"{eni}: back to {' '.join(original)}",
                              ("ec2:ModifyNetworkInterfaceAttribute",), restore))

        if rec.get("termination_protection"):
            before = bool(rec["termination_protection"]["before"])

            def unprotect() -> dict[str, Any]:
                ec2.modify_instance_attribute(InstanceId=iid, DisableApiTermination={"Value": before})
                rec["termination_protection"] = None
                return {"disable_api_termination": before}

            steps.append(Step("termination-protection", f"set termination protection of {iid} back to {before}",
                              ("ec2:ModifyInstanceAttribute",), unprotect))

        if rec.get("asg"):
            name = rec["asg"]["name"]
            member = self._asg_member(iid)
            if member and member["LifecycleState"] == "Standby":
                def leave() -> dict[str, Any]:
                    self.clients.autoscaling.exit_standby(AutoScalingGroupName=name, InstanceIds=[iid])
                    rec["asg"] = None
                    return {"group": name}

                steps.append(Step("asg-exit-standby", f"take {iid} out of Standby in Auto Scaling group {name} "
                                  "(desired capacity goes up by one)", ("autoscaling:ExitStandby",), leave))
            else:
                state = member["LifecycleState"] if member else "no longer a member"
                steps.append(Step("asg-exit-standby", f"{iid} is {state} in {name}, not Standby: left as it is"))

        if rec.get("tags"):
            keys = list(rec["tags"])

            def untag() -> dict[str, Any]:
                ec2.delete_tags(Resources=[iid], Tags=[{"Key": k} for k in keys])
                rec["tags"] = []
                return {"removed": keys}

            steps.append(Step("untag", f"remove tags {', '.join(keys)} from {iid}", ("ec2:DeleteTags",), untag))

        if rec.get("snapshots"):
            steps.append(Step("keep-snapshots", f"keep snapshots {', '.join(rec['snapshots'])} (evidence; delete them "
                              "yourself when the incident is closed)"))
        return steps



def parse_principal(arn: str) -> tuple[str, str, str]:
    """(kind, name, account) of an IAM principal ARN as CloudTrail reports it.

    `arn:aws:iam::123:user/path/alice` -> ("user", "alice", "123"); `arn:aws:iam::123:role/x/r` and
    `arn:aws:sts::123:assumed-role/r/session` -> ("role", "r", "123"). Anything else raises `Refused`.
    """
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] not in ("iam", "sts"):
        raise Refused(f"{arn!r} is not an IAM principal ARN (arn:aws:iam::ACCOUNT:role/NAME or user/NAME)")
    account, resource = parts[4], parts[5]
    kind, _, rest = resource.partition("/")
    if resource == "root":
        raise Refused(f"{arn} is the account root: an IAM policy cannot contain it; secure the root credentials "
                      "and use a service control policy from the organisation")
    if kind == "assumed-role":
        return "role", rest.split("/")[0], account
    if kind in ("role", "user") and rest:
        return kind, rest.rsplit("/", 1)[-1], account
    raise Refused(f"{arn}: spendwatch contains IAM users and roles only ({kind or resource} is neither); "
                  "contain the user or role that created it")


class _PrincipalMixin(_AwsMixin):
    settings: ActionSettings

    def _principal(self, target: Target) -> tuple[Target, dict[str, Any], str, str, dict[str, Any]]:
        t, ident = self._resolve(target)
        kind, name, account = parse_principal(target.resource)
        if account != t.account:
            raise Refused(f"{target.resource} belongs to account {account}, but the credentials are for {t.account}")
        iam = self.clients.iam
        try:
            entity = (iam.get_role(RoleName=name)["Role"] if kind == "role" else iam.get_user(UserName=name)["User"])
        except Exception as exc:
            if _code(exc) == "NoSuchEntity":
                raise Refused(f"no IAM {kind} {name} in account {account}") from exc
            raise
        # Key the record on the canonical ARN, whichever form (assumed-role, path) the caller gave.
        self.resolved = t = replace(t, resource=entity["Arn"])
        return t, ident, kind, name, entity


class AwsContainPrincipal(_PrincipalMixin, QuarantineAction):
    """Contain the IAM role or user that launched the abuse.

    Puts inline policy `spendwatch-contain-principal` on it: deny everything to sessions issued before now
    (`DateLessThan aws:TokenIssueTime`, as the console's "Revoke active sessions" does). For a user it also
    deactivates every active access key: requests signed with long-term keys carry no token issue time, so
    the policy alone would not stop them. New sessions of a role still work: remove whoever may assume it
    from its trust policy if the abuse goes on. Refused for protected principals (tag
    `spendwatch:protected=true`, or the ARN or name in the allow-list), the account root, service-linked
    roles, and the identity spendwatch itself runs as.

    Example::

        spendwatch quarantine i-0abc123 --principal --apply          # the principal of the stored finding
        spendwatch quarantine arn:aws:iam::123456789012:user/ci-bot --apply
    """

    name: ClassVar[str] = "aws.contain-principal"
    cloud: ClassVar[str] = "aws"
    sets_finding_status: ClassVar[bool] = False
    permissions: ClassVar[tuple[str, ...]] = (
        "sts:GetCallerIdentity",
        "iam:GetRole",
        "iam:GetUser",
        "iam:ListRoleTags",
        "iam:ListUserTags",
        "iam:GetRolePolicy",
        "iam:GetUserPolicy",
        "iam:PutRolePolicy",
        "iam:PutUserPolicy",
        "iam:ListAccessKeys",
        "iam:UpdateAccessKey",
    )

    def __init__(self, *, clients: AwsClients, store: Any, actor: str, settings: ActionSettings | None = None,
                 linked_to: str | None = None, now: Any = now_utc) -> None:
        super().__init__(store=store, actor=actor, settings=settings, now=now)
        self.clients = clients
        self.linked_to = linked_to

    def plan(self, target: Target) -> list[Step]:
        _, ident, kind, name, entity = self._principal(target)
        iam = self.clients.iam
        tags = _tags(iam.list_role_tags(RoleName=name)["Tags"] if kind == "role"
                     else iam.list_user_tags(UserName=name)["Tags"])
        allow = self.settings.protected_ids
        if _is_protected(tags) or entity["Arn"] in allow or name in allow or target.resource in allow:
            raise Refused(f"{entity['Arn']} is protected; spendwatch never touches protected principals")
        if kind == "role" and entity.get("Path", "").startswith("/aws-service-role/"):
            raise Refused(f"{entity['Arn']} is a service-linked role; AWS does not allow inline policies on it")
        caller_kind, caller_name = "role", _caller_role(ident["Arn"])
        if caller_name is None:
            caller_kind, caller_name = "user", ident["Arn"].rsplit("/", 1)[-1]
        if (kind, name) == (caller_kind, caller_name):
            raise Refused(f"{entity['Arn']} is the identity spendwatch runs as; containing it would lock spendwatch "
                          "out half way. Run from another identity")
        try:
            (iam.get_role_policy(RoleName=name, PolicyName=PRINCIPAL_POLICY) if kind == "role"
             else iam.get_user_policy(UserName=name, PolicyName=PRINCIPAL_POLICY))
            raise Refused(f"{entity['Arn']} already has {PRINCIPAL_POLICY}; release it first")
        except Refused:
            raise
        except Exception as exc:
            if _code(exc) != "NoSuchEntity":
                raise
        self.record = {"principal": entity["Arn"], "kind": kind, "name": name, "policy": None, "keys": [],
                       "linked_to": self.linked_to, "caller": ident["Arn"]}
        rec = self.record

        def deny() -> dict[str, Any]:
            issued_before = self.now()
            doc = _revoke_document(issued_before)
            if kind == "role":
                iam.put_role_policy(RoleName=name, PolicyName=PRINCIPAL_POLICY, PolicyDocument=doc)
            else:
                iam.put_user_policy(UserName=name, PolicyName=PRINCIPAL_POLICY, PolicyDocument=doc)
            rec["policy"] = PRINCIPAL_POLICY
            return {"policy": PRINCIPAL_POLICY, "token_issued_before": _ceil_iso(issued_before)}

        steps = [Step(
            "deny-older-sessions",
            f"put inline policy {PRINCIPAL_POLICY} on {kind} {name}: deny everything to sessions issued before now",
            ("iam:PutRolePolicy",) if kind == "role" else ("iam:PutUserPolicy",), deny,
        )]
        if kind == "user":
            keys = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
            for key in (k["AccessKeyId"] for k in keys if k["Status"] == "Active"):
                def deactivate(key: str = key) -> dict[str, Any]:
                    iam.update_access_key(UserName=name, AccessKeyId=key, Status="Inactive")
                    rec["keys"].append(key)
                    return {"access_key": key}

                steps.append(Step("deactivate-key", f"deactivate access key {key} of user {name}",
                                  ("iam:UpdateAccessKey",), deactivate))
        return steps


class AwsReleasePrincipal(_PrincipalMixin, ReleaseAction):
    """Undo an `aws.contain-principal`: delete its inline policy and reactivate exactly the keys it deactivated.

    Example::

        spendwatch release arn:aws:iam::123456789012:user/ci-bot --apply
    """

    name: ClassVar[str] = "aws.release-principal"
    cloud: ClassVar[str] = "aws"
    sets_finding_status: ClassVar[bool] = False
    permissions: ClassVar[tuple[str, ...]] = (
        "sts:GetCallerIdentity",
        "iam:GetRole",
        "iam:GetUser",
        "iam:DeleteRolePolicy",
        "iam:DeleteUserPolicy",
        "iam:UpdateAccessKey",
    )

    def __init__(self, *, clients: AwsClients, store: Any, actor: str, settings: ActionSettings | None = None,
                 now: Any = now_utc) -> None:
        super().__init__(store=store, actor=actor, settings=settings, now=now)
        self.clients = clients

    def plan(self, target: Target) -> list[Step]:
        t, _, kind, name, _ = self._principal(target)
        rec = self.load(t, account=t.account or "")
        iam = self.clients.iam
        steps: list[Step] = []
        if rec.get("policy"):
            def undeny() -> dict[str, Any]:
                try:
                    if kind == "role":
                        iam.delete_role_policy(RoleName=name, PolicyName=PRINCIPAL_POLICY)
                    else:
                        iam.delete_user_policy(UserName=name, PolicyName=PRINCIPAL_POLICY)
                except Exception as exc:
                    if _code(exc) != "NoSuchEntity":
                        raise
                rec["policy"] = None
                return {"policy": PRINCIPAL_POLICY}

            steps.append(Step("undeny", f"delete inline policy {PRINCIPAL_POLICY} from {kind} {name}",
                              ("iam:DeleteRolePolicy",) if kind == "role" else ("iam:DeleteUserPolicy",), undeny))
        for key in list(rec.get("keys", [])):
            def reactivate(key: str = key) -> dict[str, Any]:
                iam.update_access_key(UserName=name, AccessKeyId=key, Status="Active")
                rec["keys"].remove(key)
                return {"access_key": key}

            steps.append(Step("reactivate-key", f"reactivate access key {key} of user {name}",
                              ("iam:UpdateAccessKey",), reactivate))
        return steps
