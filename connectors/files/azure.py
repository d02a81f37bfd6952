"""Azure exports written by diagnostic settings and Cost Management to a storage account.

- Activity Log (`insights-activity-logs/resourceId=/SUBSCRIPTIONS/<sub>/.../PT1H.json`, JSON lines; older blobs
  one `{"records": [...]}` document) -> `activity`: `MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE` (a create is a
  launch, an update is `update`), `.../START/ACTION`, `POWEROFF/ACTION` and `DEALLOCATE/ACTION` (stop),
  `.../DELETE` (terminate). Only the closing record of an operation (`resultType` Success, Succeeded or
  Failure) is taken: its Start and Accept records would count the call twice. VM size, priority, tags and NICs
  come from `properties.requestbody`; NIC writes (`MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE`) give the NICs'
  private addresses, which the connector hands to the VMs that name the NIC, so flows and DNS join by address.
- VNet flow logs (`insights-logs-flowlogflowevent/flowLogResourceID=/.../PT1H.json`) -> `flows`. Each flow
  tuple `time,src,dst,srcport,dstport,proto,direction,state,encryption,packets_s2d,bytes_s2d,packets_d2s,
  bytes_d2s` gives up to two rows, one per direction that carried packets; a tuple with no packets (a flow's
  Begin) gives none and is counted. A denied tuple (state D) is a REJECT. `interface` is the record's MAC
  address; `resource` stays null (the log names the VNet, not the VM) and detection fills it from the VM's
  private addresses.
- Azure Monitor platform metrics (`insights-metrics-pt1m/.../PT1H.json`) -> `utilization`: `Percentage CPU`
  (the `average` of each minute) as cpu_util. Azure has no platform GPU metric.
- Cost exports (CSV or Parquet, actual or amortised cost) -> `spend`. Exports are daily: a day's cost is
  spread evenly over its 24 hours, so `spend` stays hourly like the other clouds (an estimate per hour; the
  day's total is exact). cost_usd is `costInUsd` where the export has it, else the billing-currency cost when
  that currency is USD; any other currency without a USD column is a problem.

Conventions (every Azure table): `account` is the subscription id in lower case; `resource` is the ARM resource
id in lower case (`/subscriptions/<sub>/resourcegroups/<rg>/providers/microsoft.compute/virtualmachines/<vm>`):
Azure ids are case-insensitive and its exports disagree on case. Principal types: a caller with an `@` is
human; an application (an `appid` claim without a user, or a GUID caller) is a role, or an agent when its
display name carries an agent marker; `Microsoft.*` callers are services.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import PurePath
from typing import Any, Final

import pyarrow as pa

from spendwatch.connectors.azure import catalog

from ._cloudjson import checked_time, entries, integer, json_field, number, parse_time, pick, table_rows
from ._common import STR, FileContext, FileResult, Launch, schema, time_problem
from .cloudtrail import agent_marker

CLOUD: Final = "azure"

VM_OPS: Final[dict[str, str]] = {
    "MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE": "launch",
    "MICROSOFT.COMPUTE/VIRTUALMACHINES/START/ACTION": "start",
    "MICROSOFT.COMPUTE/VIRTUALMACHINES/RESTART/ACTION": "start",
    "MICROSOFT.COMPUTE/VIRTUALMACHINES/POWEROFF/ACTION": "stop",
    "MICROSOFT.COMPUTE/VIRTUALMACHINES/DEALLOCATE/ACTION": "stop",
    "MICROSOFT.COMPUTE/VIRTUALMACHINES/DELETE": "terminate",
}
NIC_WRITE: Final = "MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE"
_DONE = frozenset({"success", "succeeded", "failure", "failed"})
_CLAIM_UPN = ("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
              "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", "upn", "unique_name")
_CLAIM_OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)

ACTIVITY_SCHEMA = schema("activity", {"event_id": STR})
FLOW_SCHEMA = schema("flows")
SPEND_SCHEMA = schema("spend")
UTIL_SCHEMA = schema("utilization")
METRICS: Final[dict[str, str]] = {"percentage cpu": "cpu_util"}


def principal_of(record: dict[str, Any]) -> tuple[str, str]:
    """(principal, principal_type) of an Activity Log record (see the module docstring)."""
    claims = (record.get("identity") or {}).get("claims") or {}
    caller = record.get("caller") or next((claims[c] for c in _CLAIM_UPN if claims.get(c)), None)
    app_name = claims.get("app_displayname") or claims.get("appDisplayName")
    appid = claims.get("appid")
    principal = str(caller or claims.get(_CLAIM_OID) or appid or "unknown")
    if agent_marker(str(app_name or ""), principal if "@" not in principal else principal.split("@")[0]):
        return principal, "agent"
    if principal.lower().startswith("microsoft."):
        return principal, "service"
    if "@" in principal and claims.get("idtyp") != "app":
        return principal, "human"
    return principal, "role"


def read_activity(rel: PurePath, raw: bytes, ctx: FileContext) -> FileResult:
    """Read one Activity Log blob."""
    result = FileResult()
    rows: list[dict[str, Any]] = []
    for line, record in entries(raw, ctx):
        try:
            rows.extend(_activity(record, line, ctx, result))
        except (TypeError, AttributeError, KeyError, ValueError) as exc:
            ctx.problem(f"activity record has fields of unexpected shape ({exc})", line=line)
    result.tables["activity"] = pa.Table.from_pylist(rows, schema=ACTIVITY_SCHEMA)
    return result


def _activity(record: dict[str, Any], line: int, ctx: FileContext, result: FileResult) -> list[dict[str, Any]]:
    op = str(record.get("operationName") or "").upper()
    if isinstance(record.get("operationName"), dict):  # the REST API's {value, localizedValue}
        op = str(record["operationName"].get("value") or "").upper()
    outcome = record.get("resultType") or record.get("status")
    if isinstance(outcome, dict):  # the REST API's {value, localizedValue}
        outcome = outcome.get("value")
    status = str(outcome or "").lower()
    if (op not in VM_OPS and op != NIC_WRITE) or status not in _DONE:
        result.counts["azure activity records ignored"] += 1
        return []
    resource = catalog.canonical(record.get("resourceId"))
    account = catalog.subscription_of(resource)
    if resource is None or account is None:
        ctx.problem(f"{op}: resourceId names no subscription", line=line)
        return []
    when = checked_time(record.get("time") or record.get("eventTimestamp"), "time", ctx, line)
    if when is None:
        return []
    props = record.get("properties") or {}
    failed = status in ("failure", "failed")
    request = json_field(props.get("requestbody") or props.get("requestBody"))
    response = json_field(props.get("responseBody"))
    if op == NIC_WRITE:
        if not failed:
            body = response or request
            configs = (body.get("properties") or {}).get("ipConfigurations") or []
            ips = [str(c["properties"]["privateIPAddress"]) for c in configs
                   if isinstance(c, dict) and (c.get("properties") or {}).get("privateIPAddress")]
            if ips:
                result.addresses[resource] = ips
        result.counts["azure nic writes"] += 1
        return []
    principal, ptype = principal_of(record)
    error = (str(props.get("statusCode") or record.get("resultSignature") or "Failure") if failed else None)
    signature = f"{record.get('resultSignature') or ''} {props.get('statusCode') or ''}".lower()
    action = VM_OPS[op]
    if action == "launch" and "created" not in signature and ("ok" in signature.split(".") or " ok" in signature):
        action = "update"  # a write to an existing VM (resize, tags): not a launch
    body = {**request, **response}
    vm_props = body.get("properties") or {}
    size = (vm_props.get("hardwareProfile") or {}).get("vmSize")
    known = catalog.lookup(size)
    region = str(body.get("location") or record.get("location") or "").replace(" ", "").lower() or None
    if region == "global":
        region = None
    base = {
        "time": when, "cloud": CLOUD, "account": account, "region": region, "principal": principal,
        "principal_type": ptype, "action": action, "resource": resource, "instance_type": size,
        "gpus": known.gpus if known else None, "vcpus": known.vcpus if known else None,
        "spot": (str(vm_props.get("priority") or "").lower() == "spot") if size else None,
        "source_ip": record.get("callerIpAddress"), "user_agent": None, "event_name": op, "error": error,
        "event_id": record.get("correlationId"),
    }
    if failed:
        return [base]
    if action in ("start", "stop", "terminate"):
        result.state_changes.append((when, resource, action))
    elif action == "launch":
        nics = [str(n["id"]).lower() for n in (vm_props.get("networkProfile") or {}).get("networkInterfaces") or []
                if isinstance(n, dict) and n.get("id")]
        tags = body.get("tags") if isinstance(body.get("tags"), dict) else {}
        result.launches.append(Launch(
            resource=resource, account=account, region=region, instance_type=size, spot=base["spot"],
            launched_at=when, launched_by=principal, launched_by_type=ptype, interfaces=nics, private_ips=[],
            tags={str(k): str(v) for k, v in tags.items()}, cloud=CLOUD, gpus=base["gpus"], vcpus=base["vcpus"],
        ))
    return [base]


def read_flows(rel: PurePath, raw: bytes, ctx: FileContext) -> FileResult:
    """Read one VNet flow log blob."""
    result = FileResult()
    rows: list[dict[str, Any]] = []
    for line, record in entries(raw, ctx):
        account = catalog.subscription_of(record.get("targetResourceID") or record.get("flowLogResourceID"))
        if account is None:
            ctx.problem("flow record names no subscription (targetResourceID / flowLogResourceID)", line=line)
            continue
        mac = record.get("macAddress")
        flows = (record.get("flowRecords") or {}).get("flows") or []
        for flow in flows if isinstance(flows, list) else []:
            for group in (flow or {}).get("flowGroups") or []:
                for i, tup in enumerate((group or {}).get("flowTuples") or []):
                    got = _tuple(str(tup), account, mac)
                    if got is None:
                        ctx.problem(f"flow tuple {i + 1} is malformed: {str(tup)[:60]!r}", line=line)
                    elif not got:
                        result.counts["azure flow tuples without packets"] += 1
                    rows.extend(got or [])
    result.tables["flows"] = pa.Table.from_pylist(rows, schema=FLOW_SCHEMA)
    return result


def _tuple(text: str, account: str, mac: Any) -> list[dict[str, Any]] | None:
    parts = text.split(",")
    if len(parts) < 8:
        return None
    when = _tuple_time(parts[0])
    src_port, dst_port, proto = integer(parts[3]), integer(parts[4]), integer(parts[5])
    if when is None or not parts[1] or not parts[2]:
        return None
    outbound = parts[6].upper() == "O"
    action = "REJECT" if parts[7].upper() == "D" else "ACCEPT"
    counts = [integer(p) or 0 for p in (parts[9:13] + ["0"] * 4)[:4]]
    base = {"start": when, "end": when, "cloud": CLOUD, "account": account, "region": None, "resource": None,
            "interface": str(mac) if mac else None, "protocol": proto, "action": action}
    rows = []
    if counts[0] or action == "REJECT":
        rows.append({**base, "src": parts[1], "dst": parts[2], "src_port": src_port, "dst_port": dst_port,
                     "packets": counts[0], "bytes": counts[1], "direction": "egress" if outbound else "ingress"})
    if counts[2]:
        rows.append({**base, "src": parts[2], "dst": parts[1], "src_port": dst_port, "dst_port": src_port,
                     "packets": counts[2], "bytes": counts[3], "direction": "ingress" if outbound else "egress"})
    return rows


def _tuple_time(value: str) -> datetime | None:
    """A flow tuple's time (epoch milliseconds; version 1 NSG logs wrote seconds), if plausible."""
    when = parse_time(integer(value) if value.isdigit() else value)
    return None if when is None or time_problem(when, "time") else when


def read_metrics(rel: PurePath, raw: bytes, ctx: FileContext) -> FileResult:
    """Read one Azure Monitor metrics blob."""
    result = FileResult()
    rows = []
    for line, record in entries(raw, ctx):
        metric = METRICS.get(str(record.get("metricName") or "").lower())
        if metric is None:
            result.counts["metric samples not used"] += 1
            continue
        resource = catalog.canonical(record.get("resourceId"))
        account = catalog.subscription_of(resource)
        value = number(record.get("average"))
        when = checked_time(record.get("time") or record.get("timeStamp"), "time", ctx, line)
        if when is None:
            continue
        if resource is None or account is None or value is None:
            ctx.problem("metric record has no resourceId with a subscription, or no numeric average", line=line)
            continue
        rows.append({"time": when, "cloud": CLOUD, "account": account, "region": None, "resource": resource,
                     "metric": metric, "device": None, "value": value})
    result.tables["utilization"] = pa.Table.from_pylist(rows, schema=UTIL_SCHEMA)
    return result


_PRICING = {"spot": "spot", "reservation": "savings", "savingsplan": "savings", "ondemand": "on_demand"}


def read_cost(rel: PurePath, raw: bytes, ctx: FileContext) -> FileResult:
    """Read one cost export (CSV or Parquet) into hourly `spend` (see the module docstring)."""
    rows = []
    for line, row in table_rows(raw, ctx):
        day = checked_time(pick(row, "Date", "UsageDateTime", "date"), "Date", ctx, line)
        if day is None:
            continue
        resource = catalog.canonical(pick(row, "ResourceId", "InstanceId", "resourceId"))
        account = str(pick(row, "SubscriptionId", "SubscriptionGuid") or "").lower() or \
            catalog.subscription_of(resource)
        usd = number(pick(row, "costInUsd", "CostInUSD"))
        if usd is None:
            currency = str(pick(row, "BillingCurrency", "billingCurrencyCode", "Currency") or "USD").upper()
            cost = number(pick(row, "CostInBillingCurrency", "PreTaxCost", "Cost"))
            if cost is not None and currency != "USD":
                ctx.problem(f"cost is in {currency} and the export has no costInUsd column", line=line)
                continue
            usd = cost
        if not account or usd is None:
            ctx.problem("cost row has no subscription or no numeric cost", line=line)
            continue
        quantity = number(pick(row, "Quantity", "UsageQuantity"))
        base = {
            "cloud": CLOUD, "account": account,
            "region": str(pick(row, "ResourceLocation", "resourceLocation") or "").replace(" ", "").lower() or None,
            "service": str(pick(row, "MeterCategory", "ConsumedService") or "unknown"),
            "usage_type": pick(row, "MeterName", "MeterSubCategory"), "resource": resource,
            "pricing": _PRICING.get(str(pick(row, "PricingModel") or "OnDemand").replace(" ", "").lower(), "other"),
        }
        start = day.replace(hour=0, minute=0, second=0, microsecond=0)
        for h in range(24):
            rows.append({**base, "hour": start + timedelta(hours=h), "cost_usd": usd / 24,
                         "usage_amount": quantity / 24 if quantity is not None else None})
    return FileResult(tables={"spend": pa.Table.from_pylist(rows, schema=SPEND_SCHEMA)})
