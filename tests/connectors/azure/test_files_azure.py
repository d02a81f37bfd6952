"""Azure export formats through the files connector's walk: kinds, canonical rows, conventions, problems."""

from __future__ import annotations

import json
from pathlib import Path

from spendwatch.connectors.files import read_directory
from spendwatch.connectors.files.azure import principal_of
from spendwatch.report import RunReport

SUB = "5B1C7E2A-9D4F-4E3B-8A61-2F0C9D7E4B18"
VM_ID = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/gpu-1"
NIC_ID = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/gpu-1-nic"
VM = VM_ID.lower()


def _rec(op: str, rid: str, result: str, status: str, body: dict, caller: str = "bob@acme.example") -> dict:
    return {"time": "2026-11-19T10:00:00.1234567Z", "resourceId": rid.upper(), "operationName": op,
            "category": "Administrative", "resultType": result, "caller": caller, "identity": {"claims": {}},
            "properties": {"statusCode": status, "responseBody": json.dumps(body)}}


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_principals() -> None:
    assert principal_of({"caller": "bob@acme.example"}) == ("bob@acme.example", "human")
    app = {"identity": {"claims": {"appid": "a1", "idtyp": "app", "app_displayname": "infra-agent-bot"}}}
    assert principal_of(app) == ("a1", "agent")
    assert principal_of({"caller": "c0ffee00-1a2b-4c3d-9e8f-000000000042"})[1] == "role"


def test_activity_flows_metrics_cost(tmp_path: Path) -> None:
    vm_body = {"location": "eastus", "tags": {"workload": "training"}, "properties": {
        "hardwareProfile": {"vmSize": "Standard_NC24ads_A100_v4"}, "priority": "Spot",
        "networkProfile": {"networkInterfaces": [{"id": NIC_ID}]}}}
    nic_body = {"properties": {"ipConfigurations": [{"properties": {"privateIPAddress": "10.1.1.4"}}]}}
    lines = [_rec("MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE", NIC_ID, "Success", "Created", nic_body),
             _rec("MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE", VM_ID, "Start", "", vm_body),
             _rec("MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE", VM_ID, "Success", "Created", vm_body),
             _rec("MICROSOFT.COMPUTE/VIRTUALMACHINES/DEALLOCATE/ACTION", VM_ID, "Failure", "Forbidden", {})]
    _write(tmp_path, f"logs/insights-activity-logs/resourceId=/SUBSCRIPTIONS/{SUB}/y=2026/m=11/d=19/h=10/m=00/"
           "PT1H.json", "".join(json.dumps(x) + "\n" for x in lines) + "{broken\n")
    tuples = ["1795082400000,10.1.1.4,94.130.165.87,40112,3333,6,O,C,NX,20,2400,18,2700",
              "1795082400000,10.1.1.4,94.130.165.87,40113,3333,6,O,B,NX,0,0,0,0", "garbage"]
    flow = {"records": [{"time": "2026-11-19T10:00:00Z", "macAddress": "002248A1C001", "category": "FlowLogFlowEvent",
                         "targetResourceID": f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/"
                                             "virtualNetworks/vnet",
                         "flowRecords": {"flows": [{"flowGroups": [{"flowTuples": tuples}]}]}}]}
    _write(tmp_path, "logs/insights-logs-flowlogflowevent/flowLogResourceID=/X/y=2026/PT1H.json", json.dumps(flow))
    metric = {"average": 99.5, "resourceId": VM_ID.upper(), "time": "2026-11-19T10:00:00.0000000Z",
              "metricName": "Percentage CPU", "timeGrain": "PT1M"}
    other = dict(metric, metricName="Network In Total")
    _write(tmp_path, "logs/insights-metrics-pt1m/resourceId=/X/PT1H.json",
           json.dumps(metric) + "\n" + json.dumps(other) + "\n")
    _write(tmp_path, "cost/export.csv",
           "date,subscriptionId,ResourceId,meterCategory,costInBillingCurrency,billingCurrencyCode,quantity,"
           "PricingModel\n"
           f"11/19/2026,{SUB},{VM_ID},Virtual Machines,48.0,USD,24,Spot\n"
           f"11/19/2026,{SUB},{VM_ID},Virtual Machines,40.0,EUR,24,OnDemand\n")
    report = RunReport()
    t = read_directory(tmp_path, report)
    assert report.kinds() == {"azure-activity-log": 1, "azure-vnet-flow-logs": 1, "azure-metrics": 1,
                              "azure-cost-export": 1}
    assert t.activity["action"].tolist() == ["launch", "stop"]  # Start records are not a second call
    launch = t.activity.iloc[0]
    assert (launch["cloud"], launch["account"], launch["resource"], launch["region"]) == \
        ("azure", SUB.lower(), VM, "eastus")
    assert (launch["principal_type"], launch["gpus"], launch["vcpus"], launch["spot"]) == ("human", 1, 24, True)
    assert t.activity.iloc[1]["error"] == "Forbidden"
    inv = t.inventory.iloc[0]
    assert (inv["resource"], inv["private_ips"], inv["state"]) == (VM, "10.1.1.4", "running")
    assert sorted(zip(t.flows["direction"], t.flows["bytes"], strict=True)) == [("egress", 2400), ("ingress", 2700)]
    assert t.flows["resource"].isna().all() and set(t.flows["interface"]) == {"002248A1C001"}
    assert t.utilization[["resource", "metric", "value"]].values.tolist() == [[VM, "cpu_util", 99.5]]
    assert len(t.spend) == 24 and round(t.spend["cost_usd"].sum(), 6) == 48.0
    assert set(t.spend["pricing"]) == {"spot"}
    reasons = sorted(p.reason for p in report.problems)
    assert len(reasons) == 3, reasons  # the broken activity line, the garbage tuple, the EUR row
    assert any("EUR" in r for r in reasons) and any("not valid JSON" in r for r in reasons)
