"""GCP exports: Cloud Logging entries routed to Cloud Storage, the billing export, Monitoring time series.

Cloud Logging sinks write one JSON `LogEntry` per line under `<bucket>/<log-id>/YYYY/MM/DD/HH:00:00_HH:59:59_S0.json`;
`read_logging` takes every entry and goes by its `logName`:

- Cloud Audit Logs (`cloudaudit.googleapis.com/activity`): `compute.instances.insert` (v1 and beta), `bulkInsert`,
  `start`, `stop`, `suspend`, `delete` -> `activity` (launch / start / stop / terminate) and launches for
  `inventory`; `CreateServiceAccountKey` -> key_create. An operation's closing entry (`operation.last` without
  `operation.first`) repeats the first one and is left out. A failed call keeps its `error` (the status code).
- VPC Flow Logs (`compute.googleapis.com/vpc_flows`) -> `flows`, one row per entry, from the reporter's side:
  reporter SRC is the source VM's egress, DEST the destination VM's ingress.
- Cloud DNS query logs (`dns.googleapis.com/dns_queries`) -> `dns`.
Any other log is read and its entries counted as ignored.

Conventions (the same in every GCP table, so detection joins them): `account` is the project id; `resource`
is the instance's relative resource name `projects/<project>/zones/<zone>/instances/<name>` (what audit logs
call resourceName); `region` is the zone's region. Principals are `authenticationInfo.principalEmail`: a user
is human; a service account (`*.gserviceaccount.com`) is an agent when its name or the caller's user agent
carries an agent marker (the same list as CloudTrail's), a service when Google manages it (service agents,
`service-<n>@...`, `...@cloudservices...`), else a role.

`read_billing` takes the BigQuery detailed (resource-level) billing export as JSON lines, CSV or Parquet
-> `spend`; `read_monitoring` takes Cloud Monitoring `TimeSeries` objects as JSON lines (what
`projects.timeSeries.list` returns, saved by a scheduled job) -> `utilization`.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any, Final

import pyarrow as pa

from spendwatch.connectors.gcp import catalog

from ._cloudjson import checked_time, entries, integer, number, pick, table_rows
from ._common import STR, FileContext, FileResult, Launch, schema
from .cloudtrail import agent_marker

CLOUD: Final = "gcp"

INSTANCE_ACTIONS: Final[dict[str, str]] = {
    "insert": "launch", "bulkInsert": "launch", "start": "start", "startWithEncryptionKey": "start",
    "resume": "start", "stop": "stop", "suspend": "stop", "delete": "terminate",
}
_METHOD = re.compile(r"^(?:v1|beta|alpha)\.compute\.instances\.(\w+)$|^compute\.instances\.(\w+)$")
_RESOURCE = re.compile(r"projects/([^/]+)/zones/([^/]+)/instances/([^/]+)")
# Google-managed identities: service agents and the Google APIs service agent.
_GOOGLE_MANAGED = re.compile(r"^service-\d+@|@gcp-sa-[\w-]+\.iam\.gserviceaccount\.com$|"
                             r"@cloudservices\.gserviceaccount\.com$|@[\w-]+\.google\.com\.iam\.gserviceaccount\.com$")

ACTIVITY_SCHEMA = schema("activity", {"event_id": STR})
FLOW_SCHEMA = schema("flows")
DNS_SCHEMA = schema("dns")
SPEND_SCHEMA = schema("spend")
UTIL_SCHEMA = schema("utilization")

# Monitoring metric type -> (canonical metric, factor to percent).
METRICS: Final[dict[str, tuple[str, float]]] = {
    "compute.googleapis.com/instance/cpu/utilization": ("cpu_util", 100.0),
    "agent.googleapis.com/cpu/utilization": ("cpu_util", 1.0),
    "agent.googleapis.com/gpu/utilization": ("gpu_util", 1.0),
    "agent.googleapis.com/gpu/memory/bytes_used": ("gpu_mem", 1.0),
}


def principal_type(email: str, user_agent: str | None) -> str:
    """human / role / service / agent for an audit log's principalEmail (see the module docstring)."""
    local = email.split("@", 1)[0]
    if email.endswith("gserviceaccount.com"):
        if agent_marker(local, user_agent):
            return "agent"
        return "service" if _GOOGLE_MANAGED.search(email) else "role"
    if agent_marker(user_agent):  # a person's credentials driven by an agent
        return "agent"
    return "human" if "@" in email else "role"


def read_logging(rel: PurePath, raw: bytes, ctx: FileContext) -> FileResult:
    """Read one file of Cloud Logging entries (audit, VPC flow or Cloud DNS logs, or others, ignored)."""
    result = FileResult()
    rows: dict[str, list[dict[str, Any]]] = {"activity": [], "flows": [], "dns": []}
    for line, entry in entries(raw, ctx):
        log = str(entry.get("logName") or "").replace("%2F", "/").replace("%2f", "/")
        try:
            if "cloudaudit.googleapis.com" in log:
                rows["activity"].extend(_audit(entry, line, ctx, result))
            elif log.endswith("vpc_flows"):
                row = _flow(entry, line, ctx)
                if row is not None:
                    rows["flows"].append(row)
            elif log.endswith("dns_queries"):
                row = _dns(entry, line, ctx)
                if row is not None:
                    rows["dns"].append(row)
            else:
                result.counts["gcp log entries ignored"] += 1
        except (TypeError, AttributeError, KeyError, ValueError) as exc:
            ctx.problem(f"log entry has fields of unexpected shape ({exc})", line=line)
    schemas = {"activity": ACTIVITY_SCHEMA, "flows": FLOW_SCHEMA, "dns": DNS_SCHEMA}
    for name, got in rows.items():
        if got:
            result.tables[name] = pa.Table.from_pylist(got, schema=schemas[name])
    return result


def _audit(entry: dict[str, Any], line: int, ctx: FileContext, result: FileResult) -> list[dict[str, Any]]:
    proto = entry.get("protoPayload") or {}
    method = str(proto.get("methodName") or "")
    m = _METHOD.match(method)
    verb = (m.group(1) or m.group(2)) if m else None
    key_create = method.endswith("CreateServiceAccountKey")
    if verb not in INSTANCE_ACTIONS and not key_create:
        result.counts["gcp audit entries ignored"] += 1
        return []
    operation = entry.get("operation") or {}
    if operation.get("last") and not operation.get("first"):
        result.counts["gcp audit entries ignored"] += 1  # the closing entry of an operation already taken
        return []
    when = checked_time(entry.get("timestamp"), "timestamp", ctx, line)
    if when is None:
        return []
    labels = (entry.get("resource") or {}).get("labels") or {}
    name = str(proto.get("resourceName") or "")
    found = _RESOURCE.search(name)
    project = found.group(1) if found else labels.get("project_id")
    if not project:
        ctx.problem(f"{method}: neither resourceName nor resource.labels names the project", line=line)
        return []
    email = str((proto.get("authenticationInfo") or {}).get("principalEmail") or "")
    meta = proto.get("requestMetadata") or {}
    user_agent = meta.get("callerSuppliedUserAgent")
    status = proto.get("status") or {}
    error = str(status.get("message") or status.get("code")) if status.get("code") else None
    ptype = principal_type(email, user_agent) if email else "role"
    zone = found.group(2) if found else labels.get("zone")
    resource = catalog.instance_resource(project, zone, found.group(3)) if found and zone else (name or None)
    base: dict[str, Any] = {
        "time": when, "cloud": CLOUD, "account": project, "region": catalog.zone_region(zone),
        "principal": email or "unknown", "principal_type": ptype, "source_ip": meta.get("callerIp"),
        "user_agent": user_agent, "event_name": method, "error": error, "event_id": entry.get("insertId"),
        "resource": resource,
    }
    if key_create:
        return [{**base, "action": "key_create", "resource": name or None}]
    action = INSTANCE_ACTIONS[str(verb)]
    if action != "launch":
        if error is None and resource:
            result.state_changes.append((when, resource, action))
        return [{**base, "action": action}]
    request = proto.get("request") or {}
    if verb == "bulkInsert":
        request = {**(request.get("instanceProperties") or {}), **request}
    machine = catalog.short_name(request.get("machineType"))
    known = catalog.lookup(machine)
    extra_gpus, _ = catalog.accelerators(request.get("guestAccelerators"))
    gpus = (known.gpus if known else 0) + extra_gpus
    scheduling = request.get("scheduling") or {}
    spot = bool(scheduling.get("preemptible")) or str(scheduling.get("provisioningModel", "")).upper() == "SPOT"
    row = {**base, "action": "launch", "instance_type": machine, "gpus": gpus if (known or extra_gpus) else None,
           "vcpus": known.vcpus if known else None, "spot": spot}
    if error is None and resource and found:
        nics = [n for n in request.get("networkInterfaces") or [] if isinstance(n, dict)]
        result.launches.append(Launch(
            resource=resource, account=project, region=base["region"], instance_type=machine, spot=spot,
            launched_at=when, launched_by=base["principal"], launched_by_type=ptype,
            interfaces=[], private_ips=[str(n["networkIP"]) for n in nics if n.get("networkIP")],
            tags=_labels(request.get("labels")), cloud=CLOUD, gpus=row["gpus"], vcpus=row["vcpus"],
        ))
    return [row]


def _labels(value: Any) -> dict[str, str]:
    """Audit logs write labels as [{key, value}]; the API as {key: value}."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, list):
        return {str(i.get("key")): str(i.get("value")) for i in value if isinstance(i, dict) and i.get("key")}
    return {}


def _vm(side: Any) -> tuple[str | None, str | None, str | None]:
    """(resource, project, region) of a flow's src_instance / dest_instance."""
    if not isinstance(side, dict) or not side.get("vm_name"):
        return None, None, None
    project, zone = side.get("project_id"), side.get("zone")
    resource = catalog.instance_resource(project, zone, side["vm_name"]) if project and zone else None
    return resource, project, side.get("region") or catalog.zone_region(zone)


def _flow(entry: dict[str, Any], line: int, ctx: FileContext) -> dict[str, Any] | None:
    body = entry.get("jsonPayload") or {}
    conn = body.get("connection") or {}
    if not conn.get("src_ip") or not conn.get("dest_ip"):
        ctx.problem("flow entry has no connection.src_ip / dest_ip", line=line)
        return None
    start = checked_time(body.get("start_time") or entry.get("timestamp"), "start_time", ctx, line)
    end = checked_time(body.get("end_time") or body.get("start_time") or entry.get("timestamp"), "end_time", ctx,
                       line)
    if start is None or end is None:
        return None
    reporter = str(body.get("reporter") or "").upper()
    side = body.get("dest_instance") if reporter == "DEST" else body.get("src_instance")
    resource, project, region = _vm(side)
    labels = (entry.get("resource") or {}).get("labels") or {}
    project = project or labels.get("project_id")
    if not project:
        ctx.problem("flow entry names no project (reporter instance or resource.labels.project_id)", line=line)
        return None
    return {
        "start": start, "end": end, "cloud": CLOUD, "account": project,
        "region": region or labels.get("location"), "resource": resource,
        "interface": labels.get("subnetwork_name"),
        "src": conn["src_ip"], "dst": conn["dest_ip"], "src_port": integer(conn.get("src_port")),
        "dst_port": integer(conn.get("dest_port")), "protocol": integer(conn.get("protocol")),
        "packets": integer(body.get("packets_sent")), "bytes": integer(body.get("bytes_sent")),
        "action": "ACCEPT",  # VPC Flow Logs record accepted traffic only
        "direction": {"SRC": "egress", "DEST": "ingress"}.get(reporter),
    }


def _rdata(text: Any) -> str | None:
    """Cloud DNS `rdata`: answer records `name<TAB>ttl<TAB>IN<TAB>type<TAB>value`, newline separated."""
    if not isinstance(text, str) or not text.strip():
        return None
    values = [rec.split("\t")[-1].strip().rstrip(".") if "\t" in rec else rec.split()[-1].rstrip(".")
              for rec in text.strip().splitlines() if rec.strip()]
    return " ".join(v for v in values if v) or None


def _dns(entry: dict[str, Any], line: int, ctx: FileContext) -> dict[str, Any] | None:
    body = entry.get("jsonPayload") or {}
    name = body.get("queryName")
    if not isinstance(name, str) or not name.strip():
        ctx.problem("DNS entry has no jsonPayload.queryName", line=line)
        return None
    when = checked_time(entry.get("timestamp"), "timestamp", ctx, line)
    if when is None:
        return None
    labels = (entry.get("resource") or {}).get("labels") or {}
    project = body.get("vmProjectId") or labels.get("project_id")
    if not project:
        ctx.problem("DNS entry names no project", line=line)
        return None
    zone, vm = body.get("vmZoneName"), body.get("vmInstanceName")
    if isinstance(vm, str) and "." in vm:  # some entries write "<project>.<name>"
        vm = vm.rsplit(".", 1)[-1]
    resource = catalog.instance_resource(project, zone, vm) if zone and vm else None
    return {
        "time": when, "cloud": CLOUD, "account": project,
        "region": catalog.zone_region(zone) or labels.get("location"), "resource": resource,
        "query": name.strip().lower().rstrip("."), "qtype": body.get("queryType"),
        "answers": _rdata(body.get("rdata")), "resolver": "cloud-dns", "src": body.get("sourceIP"),
        "rcode": body.get("responseCode"),
    }


def read_billing(rel: PurePath, raw: bytes, ctx: FileContext, *, summed: str | None = None) -> FileResult:
    """Read BigQuery detailed billing export rows (JSON lines, CSV or Parquet) into `spend`.

    cost_usd is `cost` plus `credits` when the currency is USD, else `cost / currency_conversion_rate`
    (the export's rate is currency units per USD). A row of an instance (its `resource.global_name` names
    `/instances/`, or a Compute Engine SKU for cores, RAM or GPUs) gets the canonical instance resource.
    `summed` names a field holding how many export rows each row sums (the hourly sums of
    `spendwatch.connectors.gcp.billing`): a rejected row then counts, and says, that many lost.
    """
    rows = []
    for line, row in table_rows(raw, ctx):
        weight = _weight(row.get(summed)) if summed else 1
        note = f" (a sum of {weight:,} export rows)" if weight > 1 else ""
        when = checked_time(pick(row, "usage_start_time"), "usage_start_time", ctx, line, records=weight,
                            suffix=note)
        if when is None:
            continue
        project = pick(row, "project.id", "project_id")
        cost = number(pick(row, "cost"))
        if not project or cost is None:
            ctx.problem("billing row has no project.id or no numeric cost" + note, line=line, records=weight)
            continue
        credits = sum(number(c.get("amount")) or 0.0 for c in row.get("credits") or [] if isinstance(c, dict)) \
            if isinstance(row.get("credits"), list) else 0.0
        currency = str(pick(row, "currency") or "USD").upper()
        rate = number(pick(row, "currency_conversion_rate"))
        total = cost + credits
        if currency != "USD":
            if not rate:
                ctx.problem(f"cost in {currency} with no currency_conversion_rate{note}", line=line, records=weight)
                continue
            total /= rate
        sku = str(pick(row, "sku.description", "sku_description") or "")
        service = str(pick(row, "service.description", "service_description") or "")
        name = pick(row, "resource.name", "resource_name")
        global_name = str(pick(row, "resource.global_name", "resource_global_name") or "")
        zone = pick(row, "location.zone", "location_zone")
        instance = "/instances/" in global_name or (
            service == "Compute Engine" and re.search(r"Core|Ram|GPU|Instance", sku) is not None)
        resource = catalog.instance_resource(str(project), str(zone), str(name)) if instance and name and zone \
            else (str(name) if name else None)
        credit_types = " ".join(str(c.get("type")) for c in row.get("credits") or [] if isinstance(c, dict)) \
            if isinstance(row.get("credits"), list) else ""
        pricing = ("spot" if re.search(r"Spot|Preemptible", sku) else
                   "savings" if "COMMITTED_USAGE" in credit_types or "Commitment" in sku else "on_demand")
        rows.append({
            "hour": when.replace(minute=0, second=0, microsecond=0), "cloud": CLOUD, "account": str(project),
            "region": pick(row, "location.region", "location_region") or catalog.zone_region(zone),
            "service": service or "unknown", "usage_type": sku or None, "resource": resource,
            "cost_usd": total, "usage_amount": number(pick(row, "usage.amount", "usage_amount")), "pricing": pricing,
        })
    return FileResult(tables={"spend": pa.Table.from_pylist(rows, schema=SPEND_SCHEMA)})


def _weight(value: Any) -> int:
    """The count of export rows a summed row stands for: a whole number >= 1 (anything else: 1)."""
    n = number(value)
    return int(n) if n is not None and n >= 1 and n == int(n) else 1


def read_monitoring(rel: PurePath, raw: bytes, ctx: FileContext) -> FileResult:
    """Read Cloud Monitoring TimeSeries (JSON lines) of CPU and GPU utilisation into `utilization`.

    The instance is named by the metric label `instance_name` or `metadata.systemLabels.name` (ask for it
    with `view=FULL`); a series that names neither cannot be joined to the other tables and is a problem.
    """
    result = FileResult()
    rows = []
    for line, series in entries(raw, ctx):
        metric = series.get("metric") or {}
        known = METRICS.get(str(metric.get("type")))
        if known is None:
            result.counts["metric samples not used"] += len(series.get("points") or [])
            continue
        canonical, factor = known
        labels = (series.get("resource") or {}).get("labels") or {}
        mlabels = metric.get("labels") or {}
        vm = mlabels.get("instance_name") or ((series.get("metadata") or {}).get("systemLabels") or {}).get("name")
        project, zone = labels.get("project_id"), labels.get("zone")
        if not (vm and project and zone):
            ctx.problem("time series names no instance (instance_name or metadata.systemLabels.name), project "
                        "or zone", line=line, records=len(series.get("points") or []) or 1)
            continue
        resource = catalog.instance_resource(project, zone, vm)
        for point in series.get("points") or []:
            interval = point.get("interval") or {}
            when = checked_time(interval.get("endTime"), "endTime", ctx, line)
            value = point.get("value") or {}
            got = number(value.get("doubleValue", value.get("int64Value")))
            if when is None or got is None:
                if when is not None:
                    ctx.problem("point has no numeric value", line=line)
                continue
            rows.append({"time": when, "cloud": CLOUD, "account": project, "region": catalog.zone_region(zone),
                         "resource": resource, "metric": canonical, "device": mlabels.get("gpu_number"),
                         "value": got * factor})
    result.tables["utilization"] = pa.Table.from_pylist(rows, schema=UTIL_SCHEMA)
    return result

