"""A small AWS world on the moto server (fixture `aws`): a VPC with two application groups, a role behind an
instance profile, and GPU instances with one or two interfaces.

Instances are launched with per-interface groups (`NetworkInterfaces=[{"Groups": ...}]`): moto reports an
interface's groups as its own *plus* any instance-level groups given at launch (SecurityGroupIds), which real
EC2 does not do, so launching that way would make every interface look like it kept its old groups.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from spendwatch.actions.aws import AwsClients
from spendwatch.store import Store

ROLE = "gpu-worker"
PROFILE = "gpu-worker-profile"


@dataclass
class World:
    endpoint: str
    clients: AwsClients
    vpc: str
    subnet: str
    web: str
    db: str
    profile_arn: str
    calls: list[str] = field(default_factory=list)

    @property
    def ec2(self) -> Any:
        return self.clients.ec2

    @property
    def iam(self) -> Any:
        return self.clients.iam

    def launch(self, *, second_eni: bool = True, profile: bool = True, spot: bool = False,
               tags: dict[str, str] | None = None) -> str:
        kwargs: dict[str, Any] = {
            "ImageId": "ami-12345678", "MinCount": 1, "MaxCount": 1, "InstanceType": "g5.xlarge",
            "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": self.subnet, "Groups": [self.web, self.db]}],
        }
        if profile:
            kwargs["IamInstanceProfile"] = {"Name": PROFILE}
        if spot:
            kwargs["InstanceMarketOptions"] = {"MarketType": "spot"}
        if tags:
            kwargs["TagSpecifications"] = [{"ResourceType": "instance",
                                            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        iid = str(self.ec2.run_instances(**kwargs)["Instances"][0]["InstanceId"])
        if second_eni:
            eni = self.ec2.create_network_interface(SubnetId=self.subnet, Groups=[self.db])["NetworkInterface"]
            self.ec2.attach_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=iid,
                                              DeviceIndex=1)
        return iid

    def state(self, iid: str) -> dict[str, Any]:
        """Everything a quarantine may touch on one instance, as describe calls report it."""
        inst = self.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assoc = self.ec2.describe_iam_instance_profile_associations(
            Filters=[{"Name": "instance-id", "Values": [iid]}])["IamInstanceProfileAssociations"]
        groups = self.ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [self.vpc]}])
        return {
            "state": inst["State"]["Name"],
            "enis": {n["NetworkInterfaceId"]: sorted(g["GroupId"] for g in n["Groups"])
                     for n in inst["NetworkInterfaces"]},
            "tags": sorted((t["Key"], t["Value"]) for t in inst.get("Tags", [])),
            "profiles": sorted(a["IamInstanceProfile"]["Arn"] for a in assoc if a["State"] == "associated"),
            "role_policies": sorted(self.iam.list_role_policies(RoleName=ROLE)["PolicyNames"]),
            "termination_protection": self.ec2.describe_instance_attribute(
                InstanceId=iid, Attribute="disableApiTermination")["DisableApiTermination"]["Value"],
            # moto's account also owns the snapshots behind its sample AMIs: look only at this instance's.
            "snapshots": sorted(s["SnapshotId"] for s in self.ec2.describe_snapshots(
                OwnerIds=["self"], Filters=[{"Name": "tag:spendwatch:instance", "Values": [iid]}])["Snapshots"]),
            "groups": sorted((g["GroupId"], json.dumps([g["IpPermissions"], g["IpPermissionsEgress"]], sort_keys=True))
                             for g in groups["SecurityGroups"]),
        }

    def record_calls(self) -> list[str]:
        """Record every API call the clients make as its IAM action name (`ec2:ModifyNetworkInterfaceAttribute`)."""
        calls: list[str] = []

        def hook(model: Any, **_: Any) -> None:
            calls.append(f"{model.service_model.signing_name}:{model.name}")

        for client in self.clients.all():
            client.meta.events.register("before-call.*.*", hook)
        self.calls = calls
        return calls


@pytest.fixture
def world(aws: str) -> World:
    clients = AwsClients.build(region="us-east-1", endpoint_url=aws)
    ec2, iam = clients.ec2, clients.iam
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    web = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    db = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))
    profile_arn = iam.create_instance_profile(InstanceProfileName=PROFILE)["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName=PROFILE, RoleName=ROLE)
    return World(aws, clients, vpc, subnet, web, db, profile_arn)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "state.db") as s:
        yield s
