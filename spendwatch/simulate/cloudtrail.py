"""CloudTrail: the organisation trail's log files, as delivered to S3 (formats.md §2).

Holds every RunInstances (with the full responseElements a reader needs to map interfaces and private
addresses to instances), TerminateInstances for CI runners and finished training jobs, the agent's Service
Quotas look-ups and failed launch, one benign CreateAccessKey, and read-only background calls that a reader
should pass over. One file per account, region and five minutes that had events.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np

from .common import FileWriter, day_path, det_uuid, hex_id, ip_text, iso, key_time
from .org import DAY, HOUR, ID_CHARS, ORG_ID, PAYER, Instance, Org, Principal

ALNUM = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
QUOTA_NAMES = {
    "L-1216C47A": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
    "L-DB2E81BA": "Running On-Demand G and VT instances",
    "L-417A185B": "Running On-Demand P instances",
    "L-3819A6DF": "All G and VT Spot Instance Requests",
}
TEAMS = {"012345678901": "platform", "234567890123": "ml", "345678901234": "data", PAYER: "it"}
VCPU_MESSAGE = ("You have requested more vCPU capacity than your current vCPU limit of 0 allows for the instance "
                "bucket that the specified instance type belongs to. Please visit "
                "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.")


class TrailSim:
    def __init__(self, org: Org, rng: np.random.Generator) -> None:
        self.org = org
        self.rng = rng
        self.events: list[tuple[float, str, str, dict[str, object]]] = []  # (time, account, region, event)

    # -- building blocks -------------------------------------------------------------------------------------
    def identity(self, p: Principal, t: float) -> dict[str, object]:
        role_id = p.principal_id.split(":")[0]
        return {
            "type": "AssumedRole",
            "principalId": p.principal_id,
            "arn": f"arn:aws:sts::{p.account}:assumed-role/{p.name}/{p.session}",
            "accountId": p.account,
            "accessKeyId": p.access_key,
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "principalId": role_id, "arn": p.arn, "accountId": p.account,
                                  "userName": p.name},
                "attributes": {"creationDate": iso(t - 60 * float(self.rng.integers(1, 50))),
                               "mfaAuthenticated": "true" if p.human else "false"},
            },
        }

    def event(self, p: Principal, t: float, region: str, source: str, name: str, request: object,
              response: object, *, read_only: bool = False, error: tuple[str, str] | None = None) -> None:
        ev: dict[str, object] = {
            "eventVersion": "1.10",
            "userIdentity": self.identity(p, t),
            "eventTime": iso(t),
            "eventSource": source,
            "eventName": name,
            "awsRegion": region,
            "sourceIPAddress": p.source_ip,
            "userAgent": p.user_agent,
        }
        if error:
            ev["errorCode"], ev["errorMessage"] = error
        ev.update({
            "requestParameters": request,
            "responseElements": None if error else response,
            "requestID": det_uuid(self.rng),
            "eventID": det_uuid(self.rng),
            "readOnly": read_only,
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": p.account,
            "eventCategory": "Management",
            "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
                           "clientProvidedHostHeader": f"{source.split('.')[0]}.{region}.amazonaws.com"},
        })
        self.events.append((t, p.account, region, ev))

    def _instance_item(self, inst: Instance, t: float) -> dict[str, object]:
        vpc = inst.vpc
        sg = hex_id(self.rng, "sg-")
        dns = f"ip-{ip_text(inst.ip).replace('.', '-')}." + (
            "ec2.internal" if inst.region == "us-east-1" else f"{inst.region}.compute.internal")
        tags = [{"key": "Name", "value": inst.name}, {"key": "team", "value": TEAMS[inst.account]}]
        sg_name = inst.name.rsplit("-", 1)[0] + "-sg"
        if inst.workload == "gpu_miner" and inst.principal == "agent":  # the agent used the default VPC's default SG
            tags = [{"key": "Name", "value": inst.name}, {"key": "created-by", "value": "bedrock-agent-ops"}]
            sg_name = "default"
        item: dict[str, object] = {
            "instanceId": inst.id,
            "imageId": inst.ami,
            "instanceState": {"code": 0, "name": "pending"},
            "privateDnsName": dns,
            "amiLaunchIndex": 0,
            "productCodes": {},
            "instanceType": inst.itype,
            "launchTime": int(t * 1000),
            "placement": {"availabilityZone": vpc.azs[inst.az], "tenancy": "default"},
            "monitoring": {"state": "disabled"},
            "subnetId": vpc.subnets[inst.az],
            "vpcId": vpc.vpc_id,
            "privateIpAddress": ip_text(inst.ip),
            "stateReason": {"code": "pending", "message": "pending"},
            "architecture": "x86_64",
            "rootDeviceType": "ebs",
            "rootDeviceName": "/dev/xvda",
            "blockDeviceMapping": {},
            "virtualizationType": "hvm",
            "hypervisor": "xen",
            "tagSet": {"items": tags},
            "groupSet": {"items": [{"groupId": sg, "groupName": sg_name}]},
            "sourceDestCheck": True,
            "networkInterfaceSet": {"items": [{
                "networkInterfaceId": inst.eni,
                "subnetId": vpc.subnets[inst.az],
                "vpcId": vpc.vpc_id,
                "ownerId": inst.account,
                "status": "in-use",
                "macAddress": ":".join(f"{int(x):02x}" for x in self.rng.integers(0, 256, 6)),
                "privateIpAddress": ip_text(inst.ip),
                "privateDnsName": dns,
                "sourceDestCheck": True,
                "interfaceType": "interface",
                "groupSet": {"items": [{"groupId": sg, "groupName": sg_name}]},
                "attachment": {"attachmentId": hex_id(self.rng, "eni-attach-"), "deviceIndex": 0,
                               "networkCardIndex": 0, "status": "attaching", "attachTime": int(t * 1000),
                               "deleteOnTermination": True},
                "privateIpAddressesSet": {"item": [{"privateIpAddress": ip_text(inst.ip), "privateDnsName": dns,
                                                    "primary": True}]},
                "ipv6AddressesSet": {},
                "tagSet": {},
            }]},
            "ebsOptimized": True,
            "enaSupport": True,
            "cpuOptions": {"coreCount": max(1, inst.vcpus // 2), "threadsPerCore": 2},
            "capacityReservationSpecification": {"capacityReservationPreference": "open"},
            "enclaveOptions": {"enabled": False},
            "metadataOptions": {"state": "pending", "httpTokens": "required", "httpPutResponseHopLimit": 2,
                                "httpEndpoint": "enabled"},
            "maintenanceOptions": {"autoRecovery": "default"},
        }
        if inst.spot:
            item["instanceLifecycle"] = "spot"
            item["spotInstanceRequestId"] = hex_id(self.rng, "sir-", 8)
        return item

    def run_instances(self, insts: list[Instance], t: float) -> None:
        first = insts[0]
        p = self.org.principals[first.principal]
        request: dict[str, object] = {
            "instancesSet": {"items": [{"imageId": first.ami, "minCount": len(insts), "maxCount": len(insts)}]},
            "instanceType": first.itype,
            "blockDeviceMapping": {},
            "monitoring": {"enabled": False},
            "disableApiTermination": False,
            "disableApiStop": False,
            "clientToken": det_uuid(self.rng),
            "subnetId": first.vpc.subnets[first.az],
        }
        if first.spot:
            request["instanceMarketOptions"] = {"marketType": "spot",
                                                "spotOptions": {"spotInstanceType": "one-time"}}
        response = {
            "requestId": det_uuid(self.rng),
            "reservationId": hex_id(self.rng, "r-"),
            "ownerId": first.account,
            "groupSet": {},
            "instancesSet": {"items": [self._instance_item(i, t) for i in insts]},
        }
        self.event(p, t, first.region, "ec2.amazonaws.com", "RunInstances", request, response)

    def terminate(self, inst: Instance, t: float) -> None:
        p = self.org.principals[inst.principal]
        items = {"items": [{"instanceId": inst.id}]}
        response = {"requestId": det_uuid(self.rng), "instancesSet": {"items": [{
            "instanceId": inst.id, "currentState": {"code": 32, "name": "shutting-down"},
            "previousState": {"code": 16, "name": "running"}}]}}
        self.event(p, t, inst.region, "ec2.amazonaws.com", "TerminateInstances", {"instancesSet": items}, response)

    # -- the story -----------------------------------------------------------------------------------------
    def run(self) -> None:
        org = self.org
        # GPU-miner instances start together, one RunInstances per (principal, time, region)
        groups: dict[tuple[str, float, str], list[Instance]] = {}
        for inst in org.instances:
            if inst.workload != "gpu_miner":
                self.run_instances([inst], inst.launched)
            else:
                groups.setdefault((inst.principal, inst.launched, inst.region), []).append(inst)
            if inst.terminated is not None and inst.terminated < org.end:
                self.terminate(inst, inst.terminated - self.rng.uniform(5, 40))
        for group in groups.values():
            self.run_instances(group, group[0].launched)
        ami = next((i.ami for i in org.instances if i.workload == "gpu_miner"), "ami-0123456789abcdef0")

        for call in org.agent_events:
            agent = org.principals[call.principal]
            if call.name == "RunInstances":
                request = {"instancesSet": {"items": [{"imageId": ami, "minCount": call.count,
                                                       "maxCount": call.count}]},
                           "instanceType": call.itype, "clientToken": det_uuid(self.rng)}
                self.event(agent, call.time, call.region, "ec2.amazonaws.com", call.name, request, None,
                           error=(call.error, VCPU_MESSAGE))
                continue
            quota, region = call.quota, call.region
            if call.name == "RequestServiceQuotaIncrease":
                ask: dict[str, object] = {"serviceCode": "ec2", "quotaCode": quota, "desiredValue": call.desired}
                increase = {"requestedQuota": {"id": det_uuid(self.rng).replace("-", "")[:32], "serviceCode": "ec2",
                                               "quotaCode": quota, "quotaName": QUOTA_NAMES[quota],
                                               "desiredValue": call.desired, "status": "PENDING",
                                               "requester": agent.arn}}
                self.event(agent, call.time, region, "servicequotas.amazonaws.com", call.name, ask, increase)
                continue
            request = ({"serviceCode": "ec2"} if call.name == "ListServiceQuotas"
                       else {"serviceCode": "ec2", "quotaCode": quota})
            response: object = None  # list calls are logged without their (large) response
            if call.name != "ListServiceQuotas":
                value = 0.0 if region == "us-east-1" else 64.0
                response = {"quota": {"serviceCode": "ec2",
                                      "serviceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
                                      "quotaArn": f"arn:aws:servicequotas:{region}:{agent.account}:ec2/{quota}",
                                      "quotaCode": quota, "quotaName": QUOTA_NAMES[quota], "value": value,
                                      "unit": "None", "adjustable": True, "globalQuota": False}}
            self.event(agent, call.time, region, "servicequotas.amazonaws.com", call.name, request, response,
                       read_only=True)

        # one benign key creation, by a human admin in the management account, for a backup service user
        admin = org.principals["mgmt-admin"]
        t = org.start + self.rng.uniform(0.2, 0.5) * (org.end - org.start)
        key_id = "AKIA" + "".join(self.rng.choice(ID_CHARS, 16))
        created = datetime.fromtimestamp(t, UTC).strftime("%b %d, %Y, %I:%M:%S %p").replace(" 0", " ")
        self.event(admin, t, "us-east-1", "iam.amazonaws.com", "CreateAccessKey", {"userName": "backup-exporter"},
                   {"accessKey": {"accessKeyId": key_id, "status": "Active", "userName": "backup-exporter",
                                  "createDate": created}})
        self.background()

    def background(self) -> None:
        """Read-only calls a reader maps to nothing; the agent role's routine ops work is among them."""
        org = self.org
        who = [("deploy", "us-east-1"), ("platform-admin", "eu-west-1"), ("ml-training", "us-east-1"),
               ("agent", "us-east-1"), ("batch", "eu-west-1"), ("ci", "us-east-1"), ("mgmt-admin", "us-east-1")]
        calls = [("ec2.amazonaws.com", "DescribeInstances"), ("ec2.amazonaws.com", "DescribeInstanceStatus"),
                 ("ec2.amazonaws.com", "DescribeVolumes"), ("monitoring.amazonaws.com", "GetMetricData"),
                 ("s3.amazonaws.com", "ListBuckets")]
        t0 = org.start - 7 * DAY
        for key, region in who:
            p = org.principals[key]
            n = self.rng.poisson(0.5 * (org.end - t0) / HOUR)
            for t in np.sort(self.rng.uniform(t0, org.end, n)).tolist():
                source, name = calls[int(self.rng.integers(0, len(calls)))]
                if p.account == PAYER:
                    source, name = "organizations.amazonaws.com", "ListAccounts"
                self.event(p, t, region, source, name, {"maxResults": 100} if "Describe" in name else None, None,
                           read_only=True)

    def write(self, writer: FileWriter, bucket: str) -> int:
        files: dict[tuple[str, str, int], list[tuple[float, dict[str, object]]]] = {}
        for t, acct, region, ev in self.events:
            files.setdefault((acct, region, int(t // 300)), []).append((t, ev))
        for (acct, region, slot) in sorted(files):
            evs = sorted(files[(acct, region, slot)], key=lambda x: x[0])
            ts = (slot + 1) * 300.0
            suffix = "".join(ALNUM[self.rng.integers(0, len(ALNUM), 16)])
            name = f"{acct}_CloudTrail_{region}_{key_time(ts)}_{suffix}.json.gz"
            rel = f"{bucket}/AWSLogs/{ORG_ID}/{acct}/CloudTrail/{region}/{day_path(ts)}/{name}"
            body = json.dumps({"Records": [e for _, e in evs]}, separators=(",", ":"))
            writer.write_gz(rel, body, level=6)
        return len(self.events)
