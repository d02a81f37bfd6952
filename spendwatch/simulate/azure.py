"""A simulated Azure tenant in Azure's native export formats, with its ground truth.

`simulate_azure(out)` writes what diagnostic settings and a Cost Management export put in a storage account:

    out/acmelogs/insights-activity-logs/resourceId=/SUBSCRIPTIONS/<SUB>/y=YYYY/m=MM/d=DD/h=HH/m=00/PT1H.json
    out/acmelogs/insights-logs-flowlogflowevent/flowLogResourceID=/SUBSCRIPTIONS/<SUB>/RESOURCEGROUPS/
        NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_EASTUS/FLOWLOGS/
        VNETFLOWLOG/y=YYYY/m=MM/d=DD/h=HH/m=00/macAddress=<MAC>/PT1H.json
    out/acmelogs/insights-metrics-pt1m/resourceId=/SUBSCRIPTIONS/<SUB>/RESOURCEGROUPS/<RG>/PROVIDERS/
        MICROSOFT.COMPUTE/VIRTUALMACHINES/<VM>/y=YYYY/m=MM/d=DD/h=HH/m=00/PT1H.json
    out/acmecost/exports/daily/acme-actual/YYYYMMDD-YYYYMMDD/acme-actual_<guid>.csv

The tenant: web VMs (D4s v5, created by the deployment pipeline before the window), a person's A100 training
VM (NC24ads A100 v4) and the incident: one web VM starts mining Monero (a CPU coin) half-way through: its
Percentage CPU goes flat at 100 % and it keeps a steady Stratum connection to a pool on port 3333. Output is a
pure function of the arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from . import DEFAULT_END, TRUTH_FILE, Incident, Truth

SUB = "5b1c7e2a-9d4f-4e3b-8a61-2f0c9d7e4b18"
ACCOUNT = "acmelogs"
COST = "acmecost"
DEPLOYER = "c0ffee00-1a2b-4c3d-9e8f-000000000042"  # the pipeline's service principal (object id)
SCIENTIST = "bob@acme.example"
POOL = ("pool.supportxmr.com", 3333, "94.130.165.87")  # invented stand-in address, as the AWS simulator's
PRICE = {"Standard_D4s_v5": 0.192, "Standard_NC24ads_A100_v4": 3.673}
HOUR, MINUTE = 3600.0, 60.0
FLOW_LOG = (f"/SUBSCRIPTIONS/{SUB.upper()}/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/"
            "NETWORKWATCHERS/NETWORKWATCHER_EASTUS/FLOWLOGS/VNETFLOWLOG")


@dataclass
class Vm:
    name: str
    group: str
    size: str
    ip: str
    mac: str
    created: float
    created_by: str
    workload: str  # web, train, cpu_miner
    miner_from: float | None = None

    @property
    def resource_id(self) -> str:
        return f"/subscriptions/{SUB}/resourceGroups/{self.group}/providers/Microsoft.Compute/virtualMachines/" \
            f"{self.name}"

    @property
    def nic_id(self) -> str:
        return f"/subscriptions/{SUB}/resourceGroups/{self.group}/providers/Microsoft.Network/networkInterfaces/" \
            f"{self.name}-nic"

    @property
    def resource(self) -> str:
        """The canonical resource the readers give it: the ARM id in lower case."""
        return self.resource_id.lower()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _hive(ts: float) -> str:
    d = datetime.fromtimestamp(ts, UTC)
    return f"y={d:%Y}/m={d:%m}/d={d:%d}/h={d:%H}/m=00"


def _claims(caller: str) -> dict[str, str]:
    if "@" in caller:
        return {"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": caller, "idtyp": "user",
                "http://schemas.microsoft.com/identity/claims/objectidentifier": "7d3e1c55-0000-4000-8000-00000000b0b0"}
    return {"appid": "4a9f0d1e-0000-4000-8000-0000000000aa", "idtyp": "app",
            "http://schemas.microsoft.com/identity/claims/objectidentifier": caller}


def _record(op: str, resource_id: str, ts: float, caller: str, result: str, props: dict[str, object]) -> dict:
    return {"time": _iso(ts), "resourceId": resource_id.upper(), "operationName": op, "category": "Administrative",
            "resultType": result, "resultSignature": f"{result}.{props.get('statusCode', '')}".rstrip("."),
            "callerIpAddress": "203.0.113.77", "correlationId": f"{int(ts):x}-{resource_id[-12:]}",
            "identity": {"claims": _claims(caller)}, "level": "Information", "location": "eastus",
            "caller": caller, "properties": {"eventCategory": "Administrative", **props}}


def _activity(vm: Vm) -> list[tuple[float, dict]]:
    nic_body = {"location": "eastus", "properties": {"ipConfigurations": [
        {"name": "ipconfig1", "properties": {"privateIPAddress": vm.ip, "privateIPAllocationMethod": "Dynamic"}}]}}
    tags = {"role": "web"} if vm.workload != "train" else {"workload": "training"}
    vm_body = {"location": "eastus", "tags": tags, "properties": {
        "hardwareProfile": {"vmSize": vm.size}, "priority": "Regular",
        "networkProfile": {"networkInterfaces": [{"id": vm.nic_id}]}}}
    t = vm.created
    return [
        (t - 60, _record("MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE", vm.nic_id, t - 60, vm.created_by, "Start",
                         {"requestbody": json.dumps(nic_body)})),
        (t - 50, _record("MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE", vm.nic_id, t - 50, vm.created_by, "Success",
                         {"statusCode": "Created", "responseBody": json.dumps(nic_body)})),
        (t, _record("MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE", vm.resource_id, t, vm.created_by, "Start",
                    {"requestbody": json.dumps(vm_body)})),
        (t + 90, _record("MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE", vm.resource_id, t + 90, vm.created_by,
                         "Success", {"statusCode": "Created", "responseBody": json.dumps(vm_body)})),
    ]


def simulate_azure(out: Path, *, seed: int = 7, days: float = 2.0, instances: int = 40,
                   end: datetime | None = None, write_truth: bool = True) -> Truth:
    """Write a simulated Azure tenant under `out` and return its ground truth (see the module docstring).

    `instances` scales the web fleet (one VM per eight, at least two); `write_truth=False` leaves TRUTH.json out.
    """
    if days <= 0:
        raise ValueError("days must be positive")
    end = DEFAULT_END if end is None else end
    out = Path(out)
    rng = np.random.default_rng([seed, 202])
    t_end = end.timestamp()
    t_start = t_end - days * 86400
    vms = [Vm(f"web-{i + 1}", "rg-web", "Standard_D4s_v5", f"10.1.0.{4 + i}", f"002248A1B{i:03X}",
              t_start - 6 * 86400 + i * 300, DEPLOYER, "web") for i in range(max(2, instances // 8))]
    vms.append(Vm("gpu-train-1", "rg-ml", "Standard_NC24ads_A100_v4", "10.1.1.4", "002248A1C001",
                  t_start - 86400, SCIENTIST, "train"))
    miner = vms[0]
    miner.workload = "cpu_miner"
    miner.miner_from = t_start + (t_end - t_start) * 0.5 + float(rng.integers(0, 1800))
    activity: dict[str, list[tuple[float, dict]]] = {}
    flows: dict[str, list[str]] = {}
    metrics: dict[str, list[str]] = {}
    cost: list[str] = ["Date,SubscriptionId,SubscriptionName,ResourceGroup,ResourceId,ResourceLocation,"
                       "MeterCategory,MeterSubCategory,MeterName,Quantity,UnitPrice,CostInBillingCurrency,"
                       "BillingCurrency,costInUsd,PricingModel"]
    n_flows = 0
    for vm in vms:
        for ts, rec in _activity(vm):
            activity.setdefault(_hive(ts), []).append((ts, rec))
        begin = max(vm.created + 120, t_start)
        minutes = np.arange(np.ceil(begin / MINUTE) * MINUTE, t_end, MINUTE)
        if vm.workload == "train":
            cpu = np.clip(55 + rng.normal(0, 6, len(minutes)), 0, 100)
        else:
            cpu = np.clip(22 + 12 * np.sin(2 * np.pi * (minutes % 86400) / 86400) + rng.normal(0, 4, len(minutes)),
                          0, 100)
            if vm.miner_from is not None:
                on = minutes >= vm.miner_from
                cpu[on] = np.clip(99.7 + rng.normal(0, 0.15, int(on.sum())), 0, 100)
        prefix = f"{ACCOUNT}/insights-metrics-pt1m/resourceId={vm.resource_id.upper()}"
        for m, v in zip(minutes, cpu, strict=True):
            metrics.setdefault(f"{prefix}/{_hive(float(m))}/PT1H.json", []).append(json.dumps({
                "count": 4, "total": round(float(v) * 4, 3), "minimum": round(float(v) - 0.5, 3),
                "maximum": round(float(v) + 0.5, 3), "average": round(float(v), 3),
                "resourceId": vm.resource_id.upper(), "time": _iso(float(m)), "metricName": "Percentage CPU",
                "timeGrain": "PT1M"}))
        for ts in np.arange(np.ceil(begin / 300) * 300, t_end, 300.0):
            ts = float(ts)
            ms = int(ts * 1000)
            tuples = []
            if vm.workload in ("web", "cpu_miner"):
                for _ in range(2):
                    client = f"{int(rng.integers(24, 200))}.{int(rng.integers(0, 255))}.{int(rng.integers(0, 255))}.8"
                    tuples.append(f"{ms},{client},{vm.ip},{int(rng.integers(32768, 60999))},443,6,I,C,NX,"
                                  f"30,{int(rng.integers(2000, 40000))},60,{int(rng.integers(20000, 400000))}")
            if vm.workload == "train":
                tuples.append(f"{ms},{vm.ip},20.60.1.5,51000,443,6,O,C,NX,90000,5400000,150000,"
                              f"{int(rng.integers(200_000_000, 400_000_000))}")
            if vm.miner_from is not None and ts >= vm.miner_from:
                tuples.append(f"{ms},{vm.ip},{POOL[2]},40112,{POOL[1]},6,O,C,NX,20,{2400 + int(rng.integers(0, 600))},"
                              f"20,{2700 + int(rng.integers(0, 600))}")
            n_flows += len(tuples)
            key = f"{ACCOUNT}/insights-logs-flowlogflowevent/flowLogResourceID={FLOW_LOG}/{_hive(ts)}/" \
                  f"macAddress={vm.mac}/PT1H.json"
            flows.setdefault(key, []).append(json.dumps({
                "time": _iso(ts), "flowLogVersion": 4, "flowLogGUID": "66aa66aa-0000-4000-8000-000000000001",
                "macAddress": vm.mac, "category": "FlowLogFlowEvent", "flowLogResourceID": FLOW_LOG,
                "targetResourceID": f"/subscriptions/{SUB}/resourceGroups/rg-net/providers/Microsoft.Network/"
                                    "virtualNetworks/vnet-eastus",
                "operationName": "FlowLogFlowEvent",
                "flowRecords": {"flows": [{"aclID": "00000000-0000-0000-0000-000000000000", "flowGroups": [
                    {"rule": "DefaultRule_AllowInternetOutBound", "flowTuples": tuples}]}]}}))
        for day in np.arange(np.floor(begin / 86400) * 86400, t_end, 86400.0):
            hours = min(24.0, (t_end - max(begin, float(day))) / HOUR)
            d = datetime.fromtimestamp(float(day), UTC).strftime("%m/%d/%Y")
            usd = round(PRICE[vm.size] * hours, 4)
            cost.append(f"{d},{SUB},acme-prod,{vm.group},{vm.resource_id},EastUS,Virtual Machines,"
                        f"{'NCadsA100v4 Series' if vm.workload == 'train' else 'Dsv5 Series'},{vm.size},"
                        f"{hours:.2f},{PRICE[vm.size]},{usd},USD,{usd},OnDemand")
    for hive, recs in sorted(activity.items()):
        p = out / ACCOUNT / "insights-activity-logs" / f"resourceId=/SUBSCRIPTIONS/{SUB.upper()}" / hive / "PT1H.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(r) + "\n" for _, r in sorted(recs, key=lambda x: x[0])))
    for rel, lines in sorted({**flows, **metrics}.items()):
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if "flowlogflowevent" in rel:
            p.write_text(json.dumps({"records": [json.loads(x) for x in lines]}))
        else:
            p.write_text("".join(x + "\n" for x in lines))
    first, last = datetime.fromtimestamp(t_start, UTC), end
    p = out / COST / "exports" / "daily" / "acme-actual" / f"{first:%Y%m%d}-{last:%Y%m%d}" / "acme-actual_0001.csv"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(cost) + "\n")
    assert miner.miner_from is not None
    incident = Incident(name="azure-web-cpu-miner", kind="cpu_miner", cloud="azure", account=SUB, region="eastus",
                        resources=(miner.resource,), principal=DEPLOYER,
                        started=datetime.fromtimestamp(miner.miner_from, UTC))
    truth = Truth(root=out, start=first, end=end, accounts=(SUB,), incidents=(incident,),
                  legit_gpu=tuple(vm.resource for vm in vms if vm.workload == "train"), instances=len(vms),
                  flow_records=n_flows)
    if write_truth:
        (out / TRUTH_FILE).write_text(truth.to_json())
    return truth
