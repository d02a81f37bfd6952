"""A simulated GCP organisation in GCP's native export formats, with its ground truth.

`simulate_gcp(out)` writes, under `out`:

    out/acme-gcp-logs/cloudaudit.googleapis.com/activity/YYYY/MM/DD/HH:00:00_HH:59:59_S0.json   audit logs
    out/acme-gcp-logs/compute.googleapis.com/vpc_flows/YYYY/MM/DD/HH:00:00_HH:59:59_S0.json    VPC flow logs
    out/acme-gcp-logs/dns.googleapis.com/dns_queries/YYYY/MM/DD/HH:00:00_HH:59:59_S0.json      Cloud DNS logs
    out/acme-gcp-billing/billing_export/gcp_billing_export_resource_v1_<id>-000000000000.json  billing rows
    out/acme-gcp-monitoring/timeseries/YYYY/MM/DD/HH.json                                      Monitoring series

(a Cloud Logging sink to Cloud Storage writes exactly the first three; the billing export is BigQuery's
detailed export extracted as JSON lines; Monitoring has no export sink, the series are what
`projects.timeSeries.list` returns). The organisation: a web project with n2 VMs (launched by Terraform's
service account before the window), an ML project where a person trains on A2 GPUs (regular evaluation dips,
datasets pulled in), and the incident: `ml-agent-runner@...`, an agent-like service account, launches two
A2 GPU VMs in a region the project never used and mines on them (flat 100 % GPUs, pool DNS look-ups, a
steady Stratum connection). Output is a pure function of the arguments (numpy Generator, no wall clock).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from spendwatch.connectors.gcp import catalog

from . import DEFAULT_END, TRUTH_FILE, Incident, Truth

WEB, ML = "acme-web-prod", "acme-ml-prod"
LOGS, BILLING, MONITORING = "acme-gcp-logs", "acme-gcp-billing", "acme-gcp-monitoring"
BILLING_ACCOUNT = "01A2B3-C4D5E6-F7A8B9"
TERRAFORM = f"terraform@{WEB}.iam.gserviceaccount.com"
SCIENTIST = "alice@acme.example"
AGENT = f"ml-agent-runner@{ML}.iam.gserviceaccount.com"
POOL = ("eth.2miners.com", 2020, "51.89.42.17")  # invented address standing in for the pool's
# Hourly list prices (USD) used for the billing rows; approximations, enough for a cost per hour.
PRICE = {"n2-standard-4": 0.194, "n2-standard-8": 0.388, "a2-highgpu-2g": 7.35, "a2-highgpu-4g": 14.69}
HOUR, MINUTE = 3600.0, 60.0


@dataclass
class Vm:
    name: str
    project: str
    zone: str
    machine: str
    ip: str
    launched: float
    launched_by: str
    workload: str  # web, train, gpu_miner
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        return catalog.instance_resource(self.project, self.zone, self.name)

    @property
    def region(self) -> str:
        return str(catalog.zone_region(self.zone))

    @property
    def gpus(self) -> int:
        known = catalog.lookup(self.machine)
        return known.gpus if known else 0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hour_key(ts: float) -> str:
    d = datetime.fromtimestamp(ts, UTC)
    return f"{d:%Y/%m/%d}/{d:%H}:00:00_{d:%H}:59:59_S0.json"


class _Sink:
    """Collects Cloud Logging entries per log and hour, then writes one JSON-lines object per hour."""

    def __init__(self) -> None:
        self.files: dict[str, list[tuple[float, str]]] = {}

    def add(self, log: str, ts: float, entry: dict[str, Any]) -> None:
        self.files.setdefault(f"{LOGS}/{log}/{_hour_key(ts)}", []).append((ts, json.dumps(entry)))

    def write(self, out: Path) -> int:
        for rel, lines in sorted(self.files.items()):
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(line + "\n" for _, line in sorted(lines, key=lambda x: x[0])))
        return len(self.files)


def _plan(rng: np.random.Generator, start: float, end: float, instances: int) -> list[Vm]:
    vms = [Vm(f"web-{i + 1}", WEB, "us-central1-a", "n2-standard-4", f"10.128.0.{10 + i}",
              start - 5 * 86400 + i * 600, TERRAFORM, "web", {"role": "web"})
           for i in range(max(2, instances // 8))]
    vms.append(Vm("notebook-1", ML, "us-central1-b", "n2-standard-8", "10.128.1.5", start - 7 * 86400, SCIENTIST,
                  "web", {"role": "notebook"}))
    vms.append(Vm("train-llm-1", ML, "us-central1-b", "a2-highgpu-2g", "10.128.1.20", start - 2 * 86400,
                  SCIENTIST, "train", {"job": "training"}))
    launch = start + (end - start) * 0.55 + float(rng.integers(0, 1800))
    vms += [Vm(f"worker-{i}", ML, "asia-southeast1-b", "a2-highgpu-4g", f"10.148.0.{30 + i}", launch + i * 40,
               AGENT, "gpu_miner") for i in range(2)]
    return vms


def _audit(sink: _Sink, vm: Vm, rng: np.random.Generator) -> None:
    ua = ("google-cloud-sdk gcloud/497.0.0 command/gcloud.compute.instances.create" if vm.launched_by == SCIENTIST
          else "Terraform/1.9.8 terraform-provider-google/6.9.0" if vm.launched_by == TERRAFORM
          else "google-api-python-client/2.151.0 ml-agent-runner/0.4 langgraph/0.2.39")
    entry: dict[str, Any] = {
        "insertId": f"{vm.name}-{int(vm.launched)}", "logName": f"projects/{vm.project}/logs/"
        "cloudaudit.googleapis.com%2Factivity",
        "operation": {"id": f"operation-{int(vm.launched)}", "producer": "compute.googleapis.com", "first": True},
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": {"principalEmail": vm.launched_by},
            "requestMetadata": {"callerIp": f"203.0.113.{int(rng.integers(2, 250))}", "callerSuppliedUserAgent": ua},
            "serviceName": "compute.googleapis.com", "methodName": "v1.compute.instances.insert",
            "resourceName": vm.resource,
            "request": {"@type": "type.googleapis.com/compute.instances.insert", "name": vm.name,
                        "machineType": f"projects/{vm.project}/zones/{vm.zone}/machineTypes/{vm.machine}",
                        "networkInterfaces": [{"network": f"projects/{vm.project}/global/networks/default",
                                               "networkIP": vm.ip}],
                        "labels": [{"key": k, "value": v} for k, v in vm.labels.items()],
                        "scheduling": {"provisioningModel": "STANDARD"}},
            "response": {"@type": "type.googleapis.com/operation", "status": "RUNNING"},
        },
        "resource": {"type": "gce_instance", "labels": {"project_id": vm.project, "zone": vm.zone,
                                                       "instance_id": str(abs(hash(vm.name)) % 10**18)}},
        "severity": "NOTICE", "timestamp": _iso(vm.launched), "receiveTimestamp": _iso(vm.launched + 1),
    }
    entry["resource"]["labels"]["instance_id"] = str(int(rng.integers(10**17, 10**18)))
    sink.add("cloudaudit.googleapis.com/activity", vm.launched, entry)
    closing = {k: v for k, v in entry.items() if k != "operation"}
    closing["operation"] = {"id": f"operation-{int(vm.launched)}", "producer": "compute.googleapis.com", "last": True}
    closing["insertId"] = entry["insertId"] + "-last"
    sink.add("cloudaudit.googleapis.com/activity", vm.launched + 20, closing)


def _flow(sink: _Sink, vm: Vm, ts: float, remote: str, rport: int, lport: int, sent: int, packets: int,
          outbound: bool) -> None:
    inst = {"project_id": vm.project, "zone": vm.zone, "region": vm.region, "vm_name": vm.name}
    src, dst = (vm.ip, remote) if outbound else (remote, vm.ip)
    sport, dport = (lport, rport) if outbound else (rport, lport)
    body: dict[str, object] = {
        "connection": {"src_ip": src, "dest_ip": dst, "src_port": sport, "dest_port": dport, "protocol": 6},
        "bytes_sent": str(sent), "packets_sent": str(packets), "start_time": _iso(ts),
        "end_time": _iso(ts + 300), "reporter": "SRC" if outbound else "DEST",
        ("src_instance" if outbound else "dest_instance"): inst,
    }
    sink.add("compute.googleapis.com/vpc_flows", ts, {
        "insertId": f"{vm.name}-{int(ts)}-{remote}-{int(outbound)}", "jsonPayload": body,
        "logName": f"projects/{vm.project}/logs/compute.googleapis.com%2Fvpc_flows",
        "resource": {"type": "gce_subnetwork", "labels": {"project_id": vm.project, "location": vm.zone,
                                                         "subnetwork_name": "default"}},
        "timestamp": _iso(ts + 300)})


def _dns(sink: _Sink, vm: Vm, ts: float, name: str, answer: str) -> None:
    sink.add("dns.googleapis.com/dns_queries", ts, {
        "insertId": f"dns-{vm.name}-{int(ts)}",
        "jsonPayload": {"queryName": name + ".", "queryType": "A", "responseCode": "NOERROR",
                        "rdata": f"{name}.\t300\tIN\ta\t{answer}", "sourceIP": vm.ip, "vmInstanceName": vm.name,
                        "vmProjectId": vm.project, "vmZoneName": vm.zone, "protocol": "UDP"},
        "logName": f"projects/{vm.project}/logs/dns.googleapis.com%2Fdns_queries",
        "resource": {"type": "dns_query", "labels": {"project_id": vm.project, "location": vm.region,
                                                    "source_type": "gce-vm", "target_type": "external"}},
        "timestamp": _iso(ts)})


def _series(vm: Vm, t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(cpu percent, gpu percent) per minute in `t` for a VM's workload."""
    n = len(t)
    if vm.workload == "gpu_miner":
        return np.clip(12 + rng.normal(0, 1, n), 0, 100), np.clip(99.6 + rng.normal(0, 0.2, n), 0, 100)
    if vm.workload == "train":
        gpu = np.clip(97 + rng.normal(0, 1.0, n), 0, 100)
        gpu[(t % 3600) < 300] = 35 + rng.normal(0, 3, int(((t % 3600) < 300).sum()))  # hourly evaluation
        return np.clip(45 + rng.normal(0, 5, n), 0, 100), gpu
    daily = 25 + 15 * np.sin(2 * np.pi * (t % 86400) / 86400)
    return np.clip(daily + rng.normal(0, 4, n), 0, 100), np.zeros(0)


def simulate_gcp(out: Path, *, seed: int = 7, days: float = 2.0, instances: int = 40,
                 end: datetime | None = None, write_truth: bool = True) -> Truth:
    """Write a simulated GCP organisation under `out` and return its ground truth (see the module doc).

    `instances` scales the web fleet (one web VM per eight, at least two). `write_truth=False` leaves
    TRUTH.json out (the multicloud simulator writes one truth for all clouds).
    """
    if days <= 0:
        raise ValueError("days must be positive")
    end = DEFAULT_END if end is None else end
    out = Path(out)
    rng = np.random.default_rng([seed, 101])
    t_end = end.timestamp()
    t_start = t_end - days * 86400
    vms = _plan(rng, t_start, t_end, instances)
    sink = _Sink()
    billing: list[dict[str, object]] = []
    series: dict[str, list[dict[str, object]]] = {}
    flows = 0
    for vm in vms:
        _audit(sink, vm, rng)
        begin = max(vm.launched, t_start)
        minutes = np.arange(np.ceil(begin / MINUTE) * MINUTE, t_end, MINUTE)
        cpu, gpu = _series(vm, minutes, rng)
        for metric, values, factor in (("compute.googleapis.com/instance/cpu/utilization", cpu, 0.01),
                                       ("agent.googleapis.com/gpu/utilization", gpu, 1.0)):
            if not len(values):
                continue
            for h0 in np.unique(minutes // HOUR):
                sel = (minutes // HOUR) == h0
                labels = {"instance_name": vm.name} | ({"gpu_number": "0"} if "gpu" in metric else {})
                series.setdefault(datetime.fromtimestamp(h0 * HOUR, UTC).strftime("%Y/%m/%d/%H"), []).append({
                    "metric": {"type": metric, "labels": labels},
                    "resource": {"type": "gce_instance", "labels": {"project_id": vm.project, "zone": vm.zone,
                                                                    "instance_id": str(10**17 + len(vm.name))}},
                    "metricKind": "GAUGE", "valueType": "DOUBLE",
                    "points": [{"interval": {"startTime": _iso(m), "endTime": _iso(m)},
                                "value": {"doubleValue": round(float(v) * factor, 4)}}
                               for m, v in zip(minutes[sel][::-1], values[sel][::-1], strict=True)],
                })
        for ts in np.arange(np.ceil(begin / 300) * 300, t_end, 300.0):
            ts = float(ts)
            if vm.workload == "web":
                for _ in range(2):
                    client = f"{int(rng.integers(24, 200))}.{int(rng.integers(0, 255))}.{int(rng.integers(0, 255))}.9"
                    port = int(rng.integers(32768, 60999))
                    _flow(sink, vm, ts, client, port, 443, int(rng.integers(2000, 40000)), 30, False)
                    _flow(sink, vm, ts, client, port, 443, int(rng.integers(20000, 400000)), 60, True)
                    flows += 2
            elif vm.workload == "train":
                _flow(sink, vm, ts, "142.250.4.128", 443, 51000, int(rng.integers(200_000_000, 400_000_000)), 150000,
                      False)
                flows += 1
                if ts % 3600 == 0:
                    _dns(sink, vm, ts, "storage.googleapis.com", "142.250.4.128")
            else:
                _flow(sink, vm, ts, POOL[2], POOL[1], 40112, 2400 + int(rng.integers(0, 600)), 20, True)
                _flow(sink, vm, ts, POOL[2], POOL[1], 40112, 2700 + int(rng.integers(0, 600)), 20, False)
                flows += 2
                if ts % 1800 == 0:
                    _dns(sink, vm, ts, POOL[0], POOL[2])
        for h in np.arange(np.ceil(begin / HOUR) * HOUR, t_end, HOUR):
            price = PRICE[vm.machine]
            billing.append({
                "billing_account_id": BILLING_ACCOUNT, "service": {"id": "6F81-5844-456A",
                                                                   "description": "Compute Engine"},
                "sku": {"id": "sku", "description": ("A2 Instance Core running in Americas" if not vm.gpus
                                                     else "Nvidia Tesla A100 GPU running in Americas")},
                "usage_start_time": _iso(float(h)), "usage_end_time": _iso(float(h) + HOUR),
                "project": {"id": vm.project, "name": vm.project},
                "resource": {"name": vm.name, "global_name": f"//compute.googleapis.com/projects/{vm.project}/"
                             f"zones/{vm.zone}/instances/{10**17 + len(vm.name)}"},
                "location": {"location": vm.region, "region": vm.region, "zone": vm.zone},
                "cost": round(price, 6), "currency": "USD", "currency_conversion_rate": 1.0,
                "usage": {"amount": 3600, "unit": "seconds"}, "credits": [], "cost_type": "regular",
            })
    sink.write(out)
    path = out / BILLING / "billing_export" / "gcp_billing_export_resource_v1_01A2B3_C4D5E6_F7A8B9-000000000000.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in billing))
    for hour, items in sorted(series.items()):
        p = out / MONITORING / "timeseries" / f"{hour}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(s) + "\n" for s in items))
    miners = [vm for vm in vms if vm.workload == "gpu_miner"]
    incident = Incident(name="gcp-agent-gpu-miner", kind="gpu_miner", cloud="gcp", account=ML,
                        region=miners[0].region, resources=tuple(vm.resource for vm in miners), principal=AGENT,
                        started=datetime.fromtimestamp(miners[0].launched, UTC))
    truth = Truth(root=out, start=datetime.fromtimestamp(t_start, UTC), end=end, accounts=(WEB, ML),
                  incidents=(incident,), legit_gpu=tuple(vm.resource for vm in vms if vm.workload == "train"),
                  instances=len(vms), flow_records=flows)
    if write_truth:
        (out / TRUTH_FILE).write_text(truth.to_json())
    return truth
