"""The sources read through APIs (no S3): Organizations for scope, EC2 inventory, flow logs and Resolver logs in
CloudWatch Logs, GetMetricData, and Cost Explorer with its request cap; all against moto through boto3."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from moto_kit import ROLE, client, recorder

from spendwatch.connectors.aws import AwsConfig, permissions
from spendwatch.pipeline import scan_aws
from spendwatch.store import Store

FLOW_FORMAT = ("${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} "
               "${packets} ${bytes} ${start} ${end} ${action} ${log-status}")


def _world(endpoint: str) -> dict[str, Any]:
    org = client(endpoint, "organizations")
    org.create_organization(FeatureSet="ALL")
    acct = org.create_account(AccountName="ml", Email="ml@example.com")["CreateAccountStatus"]["AccountId"]
    ec2, logs, cw = (client(endpoint, s, acct) for s in ("ec2", "logs", "cloudwatch"))
    inst = ec2.run_instances(ImageId="ami-12c6146b", InstanceType="g5.xlarge", MinCount=1, MaxCount=1)["Instances"][0]
    iid, eni, ip = inst["InstanceId"], inst["NetworkInterfaces"][0]["NetworkInterfaceId"], inst["PrivateIpAddress"]
    logs.create_log_group(logGroupName="/vpc/flows")
    logs.create_log_stream(logGroupName="/vpc/flows", logStreamName=eni)
    ec2.create_flow_logs(ResourceIds=[inst["VpcId"]], ResourceType="VPC", TrafficType="ALL",
                         LogDestinationType="cloud-watch-logs", LogGroupName="/vpc/flows", LogFormat=FLOW_FORMAT,
                         DeliverLogsPermissionArn=f"arn:aws:iam::{acct}:role/flow-logs")
    now = datetime.now(UTC)
    sec = int(now.timestamp())
    logs.put_log_events(logGroupName="/vpc/flows", logStreamName=eni, logEvents=[
        {"timestamp": (sec - 60 * i) * 1000,
         "message": f"2 {acct} {eni} {ip} 198.51.100.7 40000 3333 6 10 840 {sec - 60 * i - 60} {sec - 60 * i} "
                    "ACCEPT OK"}
        for i in range(10, 0, -1)])
    logs.create_log_group(logGroupName="/r53/queries")
    logs.create_log_stream(logGroupName="/r53/queries", logStreamName="vpc")
    query = {"version": "1.100000", "account_id": acct, "region": "us-east-1", "vpc_id": inst["VpcId"],
             "query_timestamp": (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "query_name": "xmr.pool.minergate.com.", "query_type": "A", "query_class": "IN", "rcode": "NOERROR",
             "answers": [], "srcaddr": ip, "srcport": "5353", "transport": "UDP", "srcids": {"instance": iid}}
    logs.put_log_events(logGroupName="/r53/queries", logStreamName="vpc",
                        logEvents=[{"timestamp": (sec - 300) * 1000, "message": json.dumps(query)}])
    for i in range(6):
        t = now - timedelta(minutes=15 + 5 * i)
        cw.put_metric_data(Namespace="AWS/EC2", MetricData=[{
            "MetricName": "CPUUtilization", "Dimensions": [{"Name": "InstanceId", "Value": iid}],
            "Timestamp": t, "Value": 97.0}])
        cw.put_metric_data(Namespace="CWAgent", MetricData=[{
            "MetricName": "nvidia_smi_utilization_gpu", "Timestamp": t, "Value": 100.0,
            "Dimensions": [{"Name": "InstanceId", "Value": iid}, {"Name": "index", "Value": "0"}]}])
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    results = {"results": [{"ResultsByTime": [{
        "TimePeriod": {"Start": f"{hour:%Y-%m-%dT%H:%M:%SZ}", "End": f"{hour + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}"},
        "Groups": [{"Keys": [acct, "Amazon Elastic Compute Cloud - Compute"],
                    "Metrics": {"UnblendedCost": {"Amount": "12.5", "Unit": "USD"},
                                "UsageQuantity": {"Amount": "1", "Unit": "N/A"}}}]}]}]}
    urllib.request.urlopen(urllib.request.Request(  # moto answers GetCostAndUsage only with queued results
        f"{endpoint}/moto-api/static/ce/cost-and-usage-results", data=json.dumps(results).encode(), method="POST",
        headers={"Content-Type": "application/json"})).read()
    return {"account": acct, "instance": iid}


def test_api_sources_scope_and_cost_explorer(aws: str, tmp_path: Path) -> None:
    world = _world(aws)
    cfg = AwsConfig(role_name=ROLE, dns_log_groups=("/r53/queries",), cost_explorer_max_requests=3,
                    endpoint_url=aws, max_attempts=2)
    calls: list[str] = []
    with Store(tmp_path / "s.db") as store:
        result = scan_aws(cfg, store=store, keep_tables=True, hooks=[recorder(calls)])
        assert result.tables is not None
        t = result.tables
        assert world["account"] in set(t.inventory["account"])  # found through Organizations, not configured
        inv = t.inventory.set_index("resource").loc[world["instance"]]
        assert inv["gpus"] == 1 and inv["vcpus"] == 4
        # the 10 flow records, reduced while fetched (spendwatch.engine) to rows that keep their count
        assert result.report.tables["flows"] == t.flows["records"].sum() == 10 and set(t.flows["dst_port"]) == {3333}
        assert list(t.dns["query"]) == ["xmr.pool.minergate.com"]
        assert set(t.utilization["metric"]) == {"cpu_util", "gpu_util"}
        assert t.spend["cost_usd"].sum() == 12.5 and set(t.spend["service"]) == {"AmazonEC2"}
        assert "cost explorer: 1 GetCostAndUsage request(s), $0.01" in result.report.notes
        assert [g.source for g in result.report.gaps] == ["aws/*/*/cloudtrail"]  # the only source not set up
        again = scan_aws(cfg, store=store)
        assert {k: v for k, v in again.report.tables.items() if v} == {"inventory": 1}  # nothing new since
    made = {permissions.CALLS[tuple(c.split(":"))] for c in calls}  # type: ignore[index]
    # With the S3 sources (test_scan), every declared permission is used: none is granted for nothing.
    assert made | {"s3:ListBucket", "s3:GetObject"} == set(permissions.declared())


def test_cost_explorer_cap_is_a_gap(aws: str, tmp_path: Path) -> None:
    results = {"results": [{"ResultsByTime": [], "NextPageToken": "more"}] * 3}
    urllib.request.urlopen(urllib.request.Request(
        f"{aws}/moto-api/static/ce/cost-and-usage-results", data=json.dumps(results).encode(), method="POST",
        headers={"Content-Type": "application/json"})).read()
    cfg = AwsConfig(accounts=("123456789012",), regions=("us-east-1",), cost_explorer_max_requests=2,
                    endpoint_url=aws, metrics_api=False)
    with Store(tmp_path / "s.db") as store:
        result = scan_aws(cfg, store=store)
    gaps = {g.source: g.reason for g in result.report.gaps}
    assert "request cap (2 per run) reached" in gaps["aws/*/*/billing"]
    assert "cost explorer: 2 GetCostAndUsage request(s), $0.02" in result.report.notes
