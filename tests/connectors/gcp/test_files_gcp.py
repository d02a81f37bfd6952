"""GCP export formats through the files connector's walk: kinds, canonical rows, conventions, problems."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from spendwatch.connectors.files import read_directory
from spendwatch.connectors.files.gcp import principal_type
from spendwatch.report import RunReport

PROJECT = "acme-ml-prod"
VM = f"projects/{PROJECT}/zones/asia-southeast1-b/instances/worker-0"


def _audit(method: str, email: str, ts: str, **extra: object) -> dict:
    return {"insertId": f"{method}-{ts}", "logName": f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Factivity",
            "protoPayload": {"methodName": method, "resourceName": VM,
                             "authenticationInfo": {"principalEmail": email},
                             "requestMetadata": {"callerIp": "203.0.113.5", "callerSuppliedUserAgent": "gcloud"},
                             **extra},
            "resource": {"type": "gce_instance", "labels": {"project_id": PROJECT, "zone": "asia-southeast1-b"}},
            "timestamp": ts}


def _write(root: Path, rel: str, lines: list[dict]) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_principal_types() -> None:
    assert principal_type("alice@acme.example", "gcloud") == "human"
    assert principal_type(f"ml-agent-runner@{PROJECT}.iam.gserviceaccount.com", None) == "agent"
    assert principal_type(f"terraform@{PROJECT}.iam.gserviceaccount.com", "Terraform/1.9") == "role"
    assert principal_type("service-1234@compute-system.iam.gserviceaccount.com", None) == "service"
    assert principal_type("alice@acme.example", "langgraph/0.2 agent") == "agent"


def test_audit_flows_dns_and_billing(tmp_path: Path) -> None:
    insert = _audit("beta.compute.instances.insert", f"ml-agent-runner@{PROJECT}.iam.gserviceaccount.com",
                    "2026-11-19T10:00:00.123456Z",
                    request={"machineType": "zones/asia-southeast1-b/machineTypes/n1-standard-8",
                             "guestAccelerators": [{"acceleratorType": "nvidia-tesla-t4", "acceleratorCount": 2}],
                             "scheduling": {"provisioningModel": "SPOT"}, "labels": [{"key": "team", "value": "x"}]})
    insert["operation"] = {"id": "op-1", "first": True}
    closing = dict(insert, operation={"id": "op-1", "last": True}, insertId="last")
    denied = _audit("v1.compute.instances.insert", "bob@acme.example", "2026-11-19T10:05:00Z",
                    status={"code": 7, "message": "PERMISSION_DENIED"})
    stop = _audit("v1.compute.instances.stop", "alice@acme.example", "2026-11-19T12:00:00Z")
    _write(tmp_path, "b/cloudaudit.googleapis.com/activity/2026/11/19/10:00:00_10:59:59_S0.json",
           [insert, closing, denied, stop, {"logName": "x", "protoPayload": {}} | {"timestamp": "bad"}])
    flow = {"logName": f"projects/{PROJECT}/logs/compute.googleapis.com%2Fvpc_flows",
            "timestamp": "2026-11-19T11:00:00Z",
            "jsonPayload": {"connection": {"src_ip": "10.148.0.30", "dest_ip": "51.89.42.17", "src_port": 40112,
                                           "dest_port": 4444, "protocol": 6},
                            "bytes_sent": "2400", "packets_sent": "20", "start_time": "2026-11-19T11:00:00Z",
                            "end_time": "2026-11-19T11:05:00Z", "reporter": "SRC",
                            "src_instance": {"project_id": PROJECT, "zone": "asia-southeast1-b",
                                             "region": "asia-southeast1", "vm_name": "worker-0"}},
            "resource": {"type": "gce_subnetwork", "labels": {"project_id": PROJECT}}}
    _write(tmp_path, "b/compute.googleapis.com/vpc_flows/2026/11/19/11:00:00_11:59:59_S0.json", [flow])
    dns = {"logName": f"projects/{PROJECT}/logs/dns.googleapis.com%2Fdns_queries",
           "timestamp": "2026-11-19T11:00:01Z",
           "jsonPayload": {"queryName": "ETH.2miners.com.", "queryType": "A", "responseCode": "NOERROR",
                           "rdata": "eth.2miners.com.\t300\tIN\ta\t51.89.42.17\n"
                                    "eth.2miners.com.\t300\tIN\ta\t51.89.42.18",
                           "sourceIP": "10.148.0.30", "vmInstanceName": "worker-0", "vmProjectId": PROJECT,
                           "vmZoneName": "asia-southeast1-b"},
           "resource": {"type": "dns_query", "labels": {"project_id": PROJECT}}}
    _write(tmp_path, "b/dns.googleapis.com/dns_queries/2026/11/19/11:00:00_11:59:59_S0.json", [dns])
    (tmp_path / "billing").mkdir()
    (tmp_path / "billing" / "flat.csv").write_text(
        "billing_account_id,usage_start_time,project_id,service_description,sku_description,resource_name,"
        "resource_global_name,location_region,location_zone,cost,currency,currency_conversion_rate,usage_amount\n"
        f"X,2026-11-19 11:00:00 UTC,{PROJECT},Compute Engine,Nvidia Tesla T4 GPU running in APAC,worker-0,"
        f"//compute.googleapis.com/projects/{PROJECT}/zones/asia-southeast1-b/instances/1,asia-southeast1,"
        "asia-southeast1-b,1.70,EUR,0.85,3600\n"
        f"X,2026-11-19 11:00:00 UTC,{PROJECT},Compute Engine,Spot Preemptible core,worker-0,,asia-southeast1,"
        "asia-southeast1-b,0.5,EUR,,3600\n")
    pq.write_table(pa.table({"billing_account_id": ["X"], "usage_start_time": ["2026-11-19T12:00:00Z"],
                             "project": [{"id": PROJECT}], "cost": [2.5], "sku": [{"description": "A2 core"}],
                             "service": [{"description": "Cloud Storage"}]}),
                   tmp_path / "billing" / "export.parquet")
    report = RunReport()
    t = read_directory(tmp_path, report)
    assert report.kinds() == {"gcp-audit-logs": 1, "gcp-vpc-flow-logs": 1, "gcp-dns-logs": 1,
                              "gcp-billing-export": 2}
    act = t.activity.set_index("action")
    assert sorted(t.activity["action"]) == ["launch", "launch", "stop"]  # closing entry left out
    launch = t.activity[t.activity["error"].isna() & (t.activity["action"] == "launch")].iloc[0]
    assert (launch["cloud"], launch["account"], launch["resource"], launch["region"]) == \
        ("gcp", PROJECT, VM, "asia-southeast1")
    assert (launch["principal_type"], launch["gpus"], launch["vcpus"], launch["spot"]) == ("agent", 2, 8, True)
    assert act.loc["stop", "principal_type"] == "human"
    assert t.activity["error"].dropna().tolist() == ["PERMISSION_DENIED"]
    inv = t.inventory.iloc[0]
    assert (inv["resource"], inv["cloud"], inv["gpus"], inv["state"]) == (VM, "gcp", 2, "stopped")
    f = t.flows.iloc[0]
    assert (f["resource"], f["direction"], f["dst_port"], f["bytes"]) == (VM, "egress", 4444, 2400)
    d = t.dns.iloc[0]
    assert (d["query"], d["resource"], d["answers"]) == ("eth.2miners.com", VM, "51.89.42.17 51.89.42.18")
    assert sorted(t.spend["cost_usd"].round(2)) == [2.0, 2.5]
    assert t.spend.set_index("cost_usd").loc[2.0, "resource"] == VM
    # the EUR row without a conversion rate is a problem (counted, never dropped silently); the entry of an
    # unrelated log is only counted as ignored
    reasons = [p.reason for p in report.problems]
    assert any("currency_conversion_rate" in r for r in reasons), reasons
    assert len(report.problems) == 1 + sum("timestamp" in r for r in reasons)
