"""The sources read through AWS APIs rather than S3 files: EC2 inventory, CloudWatch Logs (flow and Resolver
logs), CloudWatch metrics and Cost Explorer. Each takes clients and returns rows or export-like bytes; none
of them decides what is a gap (the caller does, from what they raise or return)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from spendwatch.records import conform, empty
from spendwatch.store import Watermark

CLOUD = "aws"
# The default VPC flow log format (version 2), used when DescribeFlowLogs gives none.
DEFAULT_FLOW_FORMAT = ("${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} "
                       "${protocol} ${packets} ${bytes} ${start} ${end} ${action} ${log-status}")
LOGS_LATE_MS = 30 * 60 * 1000  # CloudWatch Logs events may be ingested this late; re-listed, de-duplicated by id
METRICS_SETTLE = timedelta(minutes=10)  # the newest datapoints are still being aggregated: leave them
METRIC_PERIOD = 300
GPU_METRIC = "nvidia_smi_utilization_gpu"  # the CloudWatch agent's nvidia_gpu plugin, namespace CWAgent
CE_COST_PER_REQUEST = 0.01


# -- EC2 inventory ---------------------------------------------------------------------------------------

def instance_types(ec2: Any, names: Iterable[str], cache: dict[str, tuple[int | None, int | None]]) -> None:
    """(gpus, vcpus) per instance type into `cache`, 100 types per DescribeInstanceTypes call."""
    from botocore.exceptions import ClientError

    from spendwatch import catalog

    def ask(chunk: list[str]) -> None:
        for page in ec2.get_paginator("describe_instance_types").paginate(InstanceTypes=chunk):
            for it in page.get("InstanceTypes", []):
                gpus = sum(int(g.get("Count", 0)) for g in it.get("GpuInfo", {}).get("Gpus", [])) or 0
                cache[it["InstanceType"]] = (gpus, it.get("VCpuInfo", {}).get("DefaultVCpus"))

    wanted = sorted({n for n in names if n and n not in cache})
    for i in range(0, len(wanted), 100):
        chunk = wanted[i:i + 100]
        try:
            ask(chunk)
        except ClientError as exc:
            # One type the region does not offer (any more) fails the whole call: ask one by one.
            if exc.response.get("Error", {}).get("Code") != "InvalidInstanceType":
                raise
            for name in chunk:
                try:
                    ask([name])
                except ClientError as one:
                    if one.response.get("Error", {}).get("Code") != "InvalidInstanceType":
                        raise
        for name in chunk:
            if name not in cache:  # unknown to this region's API: spendwatch's own table of types
                known = catalog.lookup(name)
                cache[name] = (known.gpus, known.vcpus) if known else (None, None)


def inventory(ec2: Any, account: str, region: str, types: dict[str, tuple[int | None, int | None]]) -> pd.DataFrame:
    """Every instance DescribeInstances shows in one account and region, as `inventory` rows."""
    instances: list[dict[str, Any]] = []
    for page in ec2.get_paginator("describe_instances").paginate():
        for reservation in page.get("Reservations", []):
            for inst in reservation.get("Instances", []):
                instances.append({**inst, "_owner": reservation.get("OwnerId") or account})
    instance_types(ec2, (i.get("InstanceType", "") for i in instances), types)
    rows = []
    for inst in instances:
        gpus, vcpus = types.get(inst.get("InstanceType", ""), (None, None))
        enis = inst.get("NetworkInterfaces", [])
        ips = [a["PrivateIpAddress"] for n in enis for a in n.get("PrivateIpAddresses", [])
               if a.get("PrivateIpAddress")]
        if not ips and inst.get("PrivateIpAddress"):
            ips = [inst["PrivateIpAddress"]]
        rows.append({
            "resource": inst["InstanceId"], "cloud": CLOUD, "account": str(inst["_owner"]), "region": region,
            "instance_type": inst.get("InstanceType"), "gpus": gpus, "vcpus": vcpus,
            "spot": inst.get("InstanceLifecycle") == "spot", "state": inst.get("State", {}).get("Name"),
            "launched_at": inst.get("LaunchTime"), "launched_by": None, "launched_by_type": None,
            "tags": json.dumps({t["Key"]: t["Value"] for t in inst.get("Tags", [])}, sort_keys=True),
            "interfaces": " ".join(n["NetworkInterfaceId"] for n in enis) or None,
            "private_ips": " ".join(ips) or None, "protected": None,
        })
    return conform("inventory", pd.DataFrame(rows)) if rows else empty("inventory")


def merge_inventory(from_api: pd.DataFrame, from_trail: pd.DataFrame) -> pd.DataFrame:
    """One row per instance: what EC2 says now (state, interfaces), with who launched it from CloudTrail."""
    if not len(from_api) or not len(from_trail):
        return from_api if len(from_api) else from_trail
    key = ["cloud", "account", "resource"]
    api = from_api.drop_duplicates(key).set_index(key)
    trail = from_trail.drop_duplicates(key, keep="last").set_index(key)
    merged = api.combine_first(trail).reset_index()
    return conform("inventory", merged[[c for c in from_trail.columns if c in merged.columns]])


# -- CloudWatch Logs ---------------------------------------------------------------------------------------

def flow_log_groups(ec2: Any) -> list[tuple[str, str]]:
    """(log group, header line) of every flow log that delivers to CloudWatch Logs in this account and region."""
    out = []
    for page in ec2.get_paginator("describe_flow_logs").paginate():
        for fl in page.get("FlowLogs", []):
            if fl.get("LogDestinationType", "cloud-watch-logs") == "cloud-watch-logs" and fl.get("LogGroupName"):
                fmt = fl.get("LogFormat") or DEFAULT_FLOW_FORMAT
                header = " ".join(f.strip("${}") for f in fmt.split())
                out.append((fl["LogGroupName"], header))
    return sorted(set(out))


def log_events(logs: Any, group: str, mark: Watermark, *, now: datetime, initial_hours: int) -> \
        tuple[list[str], Watermark]:
    """Messages of `group` not read yet, and the watermark after them.

    `position` is the newest event time read (ms). Each run asks from LOGS_LATE_MS before it, so events
    ingested late are still found, and skips the event ids already read in that window.
    """
    now_ms = int(now.timestamp() * 1000)
    start = int(mark.position) - LOGS_LATE_MS if mark.position else now_ms - initial_hours * 3600 * 1000
    messages: list[str] = []
    seen: dict[str, int] = {}
    newest = int(mark.position) if mark.position else start
    pages = logs.get_paginator("filter_log_events").paginate(logGroupName=group, startTime=max(0, start),
                                                               endTime=now_ms)
    for page in pages:
        for event in page.get("events", []):
            ts, eid = int(event["timestamp"]), event["eventId"]
            seen[eid] = ts
            newest = max(newest, ts)
            if eid not in mark.seen:
                messages.append(event["message"].rstrip("\n"))
    keep = frozenset(eid for eid, ts in seen.items() if ts >= newest - LOGS_LATE_MS)
    return messages, Watermark(mark.cloud, mark.account, mark.region, mark.source, mark.scope, str(newest), keep)


# -- CloudWatch metrics ----------------------------------------------------------------------------------

def metric_window(mark: Watermark, now: datetime, initial_hours: int) -> tuple[datetime, datetime]:
    end = now - METRICS_SETTLE
    end = end.replace(second=0, microsecond=0) - timedelta(minutes=end.minute % 5)
    start = datetime.fromisoformat(mark.position) if mark.position else end - timedelta(hours=initial_hours)
    return start, end


def utilization(cw: Any, account: str, region: str, instances: list[str], start: datetime,
                end: datetime) -> pd.DataFrame:
    """CPUUtilization (AWS/EC2) and the CloudWatch agent's GPU utilisation for `instances`, 5-minute averages."""
    wanted = set(instances)
    queries: list[tuple[dict[str, Any], str, str, str | None]] = []  # query, metric, instance, device
    for iid in sorted(wanted):
        stat = {"Metric": {"Namespace": "AWS/EC2", "MetricName": "CPUUtilization",
                           "Dimensions": [{"Name": "InstanceId", "Value": iid}]},
                "Period": METRIC_PERIOD, "Stat": "Average"}
        queries.append((stat, "cpu_util", iid, None))
    for page in cw.get_paginator("list_metrics").paginate(Namespace="CWAgent", MetricName=GPU_METRIC):
        for metric in page.get("Metrics", []):
            dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
            if dims.get("InstanceId") in wanted:
                stat = {"Metric": metric, "Period": METRIC_PERIOD, "Stat": "Average"}
                queries.append((stat, "gpu_util", dims["InstanceId"], dims.get("index")))
    rows = []
    for i in range(0, len(queries), 500):  # GetMetricData takes at most 500 queries
        chunk = queries[i:i + 500]
        mdq = [{"Id": f"m{j}", "MetricStat": q, "ReturnData": True} for j, (q, _, _, _) in enumerate(chunk)]
        pages = cw.get_paginator("get_metric_data").paginate(MetricDataQueries=mdq, StartTime=start, EndTime=end)
        for page in pages:
            for result in page.get("MetricDataResults", []):
                _, metric, iid, device = chunk[int(result["Id"][1:])]
                for ts, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                    rows.append({"time": ts, "cloud": CLOUD, "account": account, "region": region,
                                 "resource": iid, "metric": metric, "device": device, "value": float(value)})
    return conform("utilization", pd.DataFrame(rows)) if rows else empty("utilization")


# -- Cost Explorer -----------------------------------------------------------------------------------------

_CE_SERVICES = {"Amazon Elastic Compute Cloud - Compute": "AmazonEC2", "EC2 - Other": "AmazonEC2",
                "Amazon Simple Storage Service": "AmazonS3"}


def cost_explorer(ce: Any, mark: Watermark, *, now: datetime, granularity: str, initial_hours: int,
                  max_requests: int) -> tuple[pd.DataFrame, Watermark, int, str | None]:
    """Spend per account and service from GetCostAndUsage since the watermark, at most `max_requests` calls.

    Returns rows, the new watermark (moved only when the whole window was read), the number of requests
    made (each costs $0.01), and a reason when the cap stopped it early.
    """
    hourly = granularity == "HOURLY"
    end = now.replace(minute=0, second=0, microsecond=0) if hourly else \
        now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = datetime.fromisoformat(mark.position) if mark.position else end - timedelta(hours=initial_hours)
    if not hourly:
        start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    fmt = "%Y-%m-%dT%H:%M:%SZ" if hourly else "%Y-%m-%d"
    rows: list[dict[str, Any]] = []
    requests, token, stopped = 0, None, None
    if start >= end:
        return empty("spend"), mark, 0, None
    while True:
        if requests >= max_requests:
            stopped = (f"Cost Explorer request cap ({max_requests} per run) reached; spend from "
                       f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC not fully read")
            break
        kwargs: dict[str, Any] = {
            "TimePeriod": {"Start": start.strftime(fmt), "End": end.strftime(fmt)}, "Granularity": granularity,
            "Metrics": ["UnblendedCost", "UsageQuantity"],
            "GroupBy": [{"Type": "DIMENSION", "Key": "LINKED_ACCOUNT"}, {"Type": "DIMENSION", "Key": "SERVICE"}],
        }
        if token:
            kwargs["NextPageToken"] = token
        resp = ce.get_cost_and_usage(**kwargs)
        requests += 1
        for period in resp.get("ResultsByTime", []):
            hour = period["TimePeriod"]["Start"]
            for group in period.get("Groups", []):
                keys = group.get("Keys", [])
                metrics = group.get("Metrics", {})
                rows.append({
                    "hour": hour, "cloud": CLOUD, "account": keys[0] if keys else None,
                    "service": _CE_SERVICES.get(keys[1], keys[1]) if len(keys) > 1 else "unknown",
                    "cost_usd": float(metrics.get("UnblendedCost", {}).get("Amount", 0) or 0),
                    "usage_amount": float(metrics.get("UsageQuantity", {}).get("Amount", 0) or 0),
                })
        token = resp.get("NextPageToken")
        if not token:
            break
    new = mark if stopped else Watermark(mark.cloud, mark.account, mark.region, mark.source, mark.scope,
                                         end.astimezone(UTC).isoformat())
    frame = conform("spend", pd.DataFrame(rows)) if rows else empty("spend")
    return frame, new, requests, stopped
