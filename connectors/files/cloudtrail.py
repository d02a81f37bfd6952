"""CloudTrail log files as delivered to S3 (`{"Records": [...]}`, gzip JSON). Produces `activity`, and the
launches and state changes the connector turns into `inventory` and the interface/IP maps.

Events taken: ec2 RunInstances, RequestSpotInstances, RequestSpotFleet, CreateFleet, StartInstances,
StopInstances, TerminateInstances; servicequotas GetServiceQuota, ListServiceQuotas, GetAWSDefaultServiceQuota,
RequestServiceQuotaIncrease; iam CreateAccessKey. Every other event is counted and left out: a trail holds
mostly read-only calls that say nothing about spend. Failed calls are kept with their `error`: a burst of
denied GPU launches is itself a signal, and a launch the guardrail denied becomes an approval request
(`spendwatch.denied_launches`), which needs `requested_count`: how many instances a launch call asked for
(RunInstances maxCount, RequestSpotInstances instanceCount, CreateFleet TotalTargetCapacity, RequestSpotFleet
targetCapacity), null for other events.

Who: `principal` is the stable identity (an assumed role's issuer role ARN, with the session name kept in
`session_name`; an IAM user's ARN; the AWS service's name), and `principal_type` is one of human, role,
service, agent, decided by `principal_type()` below. Problem line numbers are 1-based positions in the
`Records` list (a trail file is one JSON document, usually on one line).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any, Final

import pyarrow as pa

from spendwatch import catalog

from ._common import CLOUD, STR, FileContext, FileResult, Launch, account_id, payload, schema, time_problem

# A principal is an AI agent when its role name, session name, user name or user agent contains one of
# these words at a word start (case-insensitive): "agent" matches "bedrock-agent-run" and "AgentCore" but not
# "AmazonSSMAgentRole". Markers of three letters or fewer must also end there (a digit may follow), so "mcp"
# matches "mcp-server" and "gpt" matches "gpt4o-runner" but neither matches "mcpherson" or "gptools".
# Extend here; `agent_marker()` is the only reader.
AGENT_MARKERS: Final[tuple[str, ...]] = (
    "agent", "bedrock", "langchain", "langgraph", "autogen", "crewai", "mcp", "claude", "anthropic",
    "openai", "chatgpt", "gpt", "llamaindex", "copilot", "devin", "cursor",
)
# Software that calls itself an agent without being an AI one: removed before the markers are looked for.
NOT_AGENTS: Final[tuple[str, ...]] = ("amazon-ssm-agent", "amazoncloudwatchagent", "cloudwatch-agent", "cwagent",
                                      "user-agent", "useragent", "ecs-agent")
# Identity Center (SSO) roles carry people: `AWSReservedSSO_<PermissionSet>_<hash>`.
SSO_ROLE_PREFIX: Final[str] = "AWSReservedSSO_"

QUOTA_ACTIONS: Final[dict[str, str]] = {
    "GetServiceQuota": "quota_lookup",
    "ListServiceQuotas": "quota_lookup",
    "GetAWSDefaultServiceQuota": "quota_lookup",
    "ListAWSDefaultServiceQuotas": "quota_lookup",
    "RequestServiceQuotaIncrease": "quota_request",
}
STATE_ACTIONS: Final[dict[str, str]] = {
    "StartInstances": "start", "StopInstances": "stop", "TerminateInstances": "terminate",
}

EXTRA: dict[str, pa.DataType] = {"target": STR, "desired_value": pa.float64(), "event_id": STR,
                                  "requested_count": pa.int64()}
SCHEMA = schema("activity", EXTRA)

_MARKERS = re.compile(
    "(?<![a-z0-9])("
    + "|".join(re.escape(m) + ("(?![a-z])" if len(m) <= 3 else "") for m in AGENT_MARKERS)
    + ")"
)
_NOT_AGENTS = re.compile("|".join(map(re.escape, NOT_AGENTS)))


def agent_marker(*texts: str | None) -> str | None:
    """The first agent marker found in any of `texts`, else None."""
    for text in texts:
        if text:
            found = _MARKERS.search(_NOT_AGENTS.sub(" ", text.lower()))
            if found:
                return found.group(1)
    return None


def principal_of(identity: dict[str, Any], user_agent: str | None) -> tuple[str, str, str | None]:
    """(principal, principal_type, session_name) for a CloudTrail userIdentity."""
    kind = identity.get("type") or ""
    arn = identity.get("arn") or ""
    session_name = None
    if kind == "AssumedRole":
        issuer = ((identity.get("sessionContext") or {}).get("sessionIssuer") or {})
        role_arn = issuer.get("arn") or _role_arn(arn) or arn
        role_name = issuer.get("userName") or role_arn.rsplit("/", 1)[-1]
        session_name = arn.rsplit("/", 1)[-1] if arn.count("/") >= 2 else None
        principal = role_arn
        names: tuple[str | None, ...] = (role_name, session_name, user_agent)
    elif kind == "AWSService":
        principal = identity.get("invokedBy") or "aws-service"
        names = (principal, user_agent)
    else:
        principal = arn or identity.get("principalId") or identity.get("userName") or kind or "unknown"
        names = (identity.get("userName"), arn, user_agent)
        if kind == "FederatedUser":
            session_name = arn.rsplit("/", 1)[-1] or None
    return principal, principal_type(identity, names, user_agent), session_name


def principal_type(identity: dict[str, Any], names: tuple[str | None, ...], user_agent: str | None) -> str:
    """human / role / service / agent. Agent markers win over everything: an agent acting with a person's
    or a service's credentials is still an agent."""
    if agent_marker(*names):
        return "agent"
    kind = identity.get("type") or ""
    if kind == "AWSService" or identity.get("invokedBy"):
        return "service"
    if kind in ("IAMUser", "Root", "FederatedUser"):
        return "human"
    if kind == "AssumedRole":
        issuer_arn = ((identity.get("sessionContext") or {}).get("sessionIssuer") or {}).get("arn") or ""
        if f"/{SSO_ROLE_PREFIX}" in issuer_arn or "/aws-reserved/sso.amazonaws.com/" in issuer_arn:
            return "human"
        if "/aws-service-role/" in issuer_arn or (user_agent or "").endswith(".amazonaws.com"):
            return "service"
        return "role"
    return "role"


def _role_arn(assumed_arn: str) -> str | None:
    """arn:aws:sts::A:assumed-role/R/S -> arn:aws:iam::A:role/R (when no session issuer is given)."""
    m = re.match(r"arn:(aws[\w-]*):sts::(\d+):assumed-role/([^/]+)/", assumed_arn)
    return f"arn:{m.group(1)}:iam::{m.group(2)}:role/{m.group(3)}" if m else None


def read(rel: PurePath, raw: bytes, ctx: FileContext) -> FileResult:
    """Read one CloudTrail log file; keeps the events read before any damage in the file."""
    data, damaged = payload(raw, ctx)
    if damaged and not data.strip():
        return FileResult()  # the damage is the whole story
    text = data.decode("utf-8", errors="replace")
    records, error = _records(text)
    if error:
        ctx.problem(error[0], line=error[1], records=error[2])
    result = FileResult()
    rows: list[dict[str, Any]] = []
    for i, event in enumerate(records, start=1):
        if not isinstance(event, dict):
            ctx.problem(f"record is a JSON {type(event).__name__}, not an event object", line=i)
            continue
        try:
            rows.extend(_event(event, i, ctx, result))
        except (TypeError, AttributeError, KeyError, ValueError) as exc:
            # An event whose fields have the wrong shapes (a list where an object belongs, ...).
            ctx.problem(f"{event.get('eventName', 'event')} has fields of unexpected shape ({exc})", line=i)
    result.counts["cloudtrail events ignored"] += len(records) - len(rows)
    result.tables["activity"] = pa.Table.from_pylist(rows, schema=SCHEMA)
    return result


def _records(text: str) -> tuple[list[Any], tuple[str, int | None, int] | None]:
    """The `Records` list, and (reason, line, records lost) when the document is damaged or lacks it."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        salvaged = _salvage(text)
        return salvaged, (f"JSON is truncated or malformed ({exc.msg} at character {exc.pos}); kept the "
                          f"{len(salvaged)} complete events before it (records lost: at least one)",
                          len(salvaged) + 1, 1)
    if not isinstance(doc, dict) or not isinstance(doc.get("Records"), list):
        got = ", ".join(sorted(doc)[:5]) if isinstance(doc, dict) else type(doc).__name__
        return [], (f"CloudTrail file has no 'Records' list (found: {got or 'nothing'})", None, 0)
    return doc["Records"], None


def _salvage(text: str) -> list[Any]:
    """Events that parse completely, from the start of a damaged `{"Records": [...` document."""
    m = re.match(r'\s*\{\s*"Records"\s*:\s*\[', text)
    if not m:
        return []
    decoder = json.JSONDecoder()
    pos = m.end()
    out: list[Any] = []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return out
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return out
        out.append(obj)


def _items(container: Any) -> list[Any]:
    """CloudTrail's XML-shaped lists: {"items": [...]}, {"item": [...]} or a single {"item": {...}}."""
    if isinstance(container, list):
        return container
    if not isinstance(container, dict):
        return []
    for key in ("items", "item"):
        if key in container:
            value = container[key]
            return value if isinstance(value, list) else [value]
    return []


def _as_list(value: Any) -> list[Any]:
    """A list, an XML-shaped list, or one bare object (CreateFleet's request uses all three)."""
    if isinstance(value, dict) and not ({"items", "item"} & set(value)):
        return [value]
    return _items(value)


def _event(event: dict[str, Any], line: int, ctx: FileContext, result: FileResult) -> list[dict[str, Any]]:
    name = event.get("eventName")
    source = event.get("eventSource") or ""
    wanted = (source == "ec2.amazonaws.com" and (name in STATE_ACTIONS or name in (
        "RunInstances", "RequestSpotInstances", "RequestSpotFleet", "CreateFleet")))
    wanted |= source == "servicequotas.amazonaws.com" and name in QUOTA_ACTIONS
    wanted |= source == "iam.amazonaws.com" and name == "CreateAccessKey"
    if not wanted:
        return []
    when = _time(event.get("eventTime"))
    if when is None:
        ctx.problem(f"{name}: eventTime {event.get('eventTime')!r} is missing or not a time", line=line)
        return []
    if reason := time_problem(when, "eventTime"):
        ctx.problem(f"{name}: {reason}", line=line)
        return []
    identity = event.get("userIdentity") or {}
    account = account_id(event.get("recipientAccountId") or identity.get("accountId"))
    if account is None:
        ctx.problem(f"{name}: neither recipientAccountId nor userIdentity.accountId is present", line=line)
        return []
    user_agent = event.get("userAgent")
    principal, ptype, session = principal_of(identity, user_agent)
    base: dict[str, Any] = {
        "time": when, "cloud": CLOUD, "account": account, "region": event.get("awsRegion"),
        "principal": principal, "principal_type": ptype, "source_ip": event.get("sourceIPAddress"),
        "user_agent": user_agent, "session_name": session, "event_name": name,
        "error": event.get("errorCode"), "event_id": event.get("eventID"),
    }
    request = event.get("requestParameters") or {}
    response = event.get("responseElements") or {}
    base["requested_count"] = _requested_count(name, request)
    if name == "RunInstances":
        return _run_instances(base, request, response, result)
    if name == "RequestSpotInstances":
        spec = request.get("launchSpecification") or {}
        items = _items(response.get("spotInstanceRequestSet"))
        if not items:
            return [_row(base, "launch_request", None, spec.get("instanceType"), True)]
        return [_row(base, "launch_request", it.get("spotInstanceRequestId"),
                     (it.get("launchSpecification") or {}).get("instanceType") or spec.get("instanceType"), True)
                for it in items]
    if name == "CreateFleet":
        return _create_fleet(base, request, response, result)
    if name == "RequestSpotFleet":
        config = _key(request, "spotFleetRequestConfig") or {}
        return [_row(base, "launch_request", _key(response, "spotFleetRequestId"), _spot_fleet_type(config), True)]
    if name in STATE_ACTIONS:
        action = STATE_ACTIONS[name]
        ids = [it.get("instanceId") for it in _items(request.get("instancesSet")) if it.get("instanceId")]
        if not base["error"]:
            result.state_changes.extend((when, i, action) for i in ids)
        return [_row(base, action, i) for i in ids] or [_row(base, action, None)]
    if name in QUOTA_ACTIONS:
        row = _row(base, QUOTA_ACTIONS[name], request.get("quotaCode") or request.get("serviceCode"))
        row["target"] = request.get("serviceCode")
        desired = request.get("desiredValue")
        row["desired_value"] = float(desired) if isinstance(desired, (int, float, str)) and desired != "" else None
        return [row]
    # CreateAccessKey
    key = (response.get("accessKey") or {})
    row = _row(base, "key_create", key.get("accessKeyId"))
    row["target"] = request.get("userName") or key.get("userName")
    return [row]


def _row(base: dict[str, Any], action: str, resource: str | None, instance_type: str | None = None,
         spot: bool | None = None) -> dict[str, Any]:
    known = catalog.lookup(instance_type)
    return {**base, "action": action, "resource": resource, "instance_type": instance_type,
            "gpus": known.gpus if known else None, "vcpus": known.vcpus if known else None, "spot": spot}


def _run_instances(base: dict[str, Any], request: dict[str, Any], response: dict[str, Any],
                   result: FileResult) -> list[dict[str, Any]]:
    requested_type = request.get("instanceType")
    market = ((request.get("instanceMarketOptions") or {}).get("marketType") or "").lower()
    items = _items(response.get("instancesSet"))
    if not items:
        return [_row(base, "launch", None, requested_type, market == "spot" or None)]
    rows = []
    request_tags = _tags(request.get("tagSpecificationSet"))
    for it in items:
        instance_type = it.get("instanceType") or requested_type
        spot = it.get("instanceLifecycle") == "spot" or market == "spot"
        rows.append(_row(base, "launch", it.get("instanceId"), instance_type, spot))
        if it.get("instanceId") and not base["error"]:
            enis = _items(it.get("networkInterfaceSet"))
            ips = [e.get("privateIpAddress") for e in enis if e.get("privateIpAddress")]
            if it.get("privateIpAddress") and it["privateIpAddress"] not in ips:
                ips.insert(0, it["privateIpAddress"])
            launched = _time(it.get("launchTime")) or base["time"]
            result.launches.append(Launch(
                resource=it["instanceId"], account=base["account"],
                region=base["region"], instance_type=instance_type, spot=spot, launched_at=launched,
                launched_by=base["principal"], launched_by_type=base["principal_type"],
                interfaces=[e["networkInterfaceId"] for e in enis if e.get("networkInterfaceId")],
                private_ips=ips, tags={**request_tags, **_tags(it.get("tagSet"))},
            ))
    return rows


def _create_fleet(base: dict[str, Any], request: dict[str, Any], response: dict[str, Any],
                  result: FileResult) -> list[dict[str, Any]]:
    req = request.get("CreateFleetRequest") or request
    override_types = [
        o.get("InstanceType")
        for config in _as_list(req.get("LaunchTemplateConfigs"))
        for o in _as_list(config.get("Overrides"))
        if isinstance(o, dict)
    ]
    fallback_type = next((t for t in override_types if t), None)
    resp = response.get("CreateFleetResponse") or response
    rows = []
    for group in _as_list(resp.get("fleetInstanceSet")):
        spot = (group.get("lifecycle") or "").lower() == "spot"
        instance_type = group.get("instanceType") or fallback_type
        for instance in _as_list(group.get("instanceIds")):
            rows.append(_row(base, "launch", instance, instance_type, spot))
            if not base["error"]:
                result.launches.append(Launch(
                    resource=instance, account=base["account"], region=base["region"],
                    instance_type=instance_type, spot=spot, launched_at=base["time"],
                    launched_by=base["principal"], launched_by_type=base["principal_type"],
                    interfaces=[], private_ips=[], tags={},
                ))
    if not rows:
        rows.append(_row(base, "launch", resp.get("fleetId"), fallback_type,
                         (req.get("Type") or "").lower() == "spot" or None))
    return rows


def _key(obj: Any, name: str) -> Any:
    """`obj[name]` matched without regard to case. The casing of RequestSpotFleet's parameters in CloudTrail is
    not pinned by a recorded sample here (the query API spells `SpotFleetRequestConfig`, CloudTrail's EC2
    events mostly camel-case), so either is read."""
    if not isinstance(obj, dict):
        return None
    if name in obj:
        return obj[name]
    low = name.lower()
    return next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == low), None)


def _spot_fleet_type(config: dict[str, Any]) -> str | None:
    """The first instance type a Spot Fleet request names (launch specifications, else template overrides)."""
    for spec in _as_list(_key(config, "launchSpecifications")):
        if _key(spec, "instanceType"):
            return str(_key(spec, "instanceType"))
    for template in _as_list(_key(config, "launchTemplateConfigs")):
        for override in _as_list(_key(template, "overrides")):
            if _key(override, "instanceType"):
                return str(_key(override, "instanceType"))
    return None


def _count(value: Any) -> int | None:
    """A positive instance count (CloudTrail writes numbers, sometimes as strings); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and value > 0 else None


def _requested_count(name: str | None, request: dict[str, Any]) -> int | None:
    """How many instances a launch call asked for; None for other events or when the event does not say.
    RunInstances: maxCount (the most it would launch; minCount when maxCount is missing), summed over items."""
    if name == "RunInstances":
        counts = [_count(it.get("maxCount", it.get("minCount")))
                  for it in _items(request.get("instancesSet")) if isinstance(it, dict)]
        known = [c for c in counts if c is not None]
        return sum(known) if known else None
    if name == "RequestSpotInstances":
        return _count(request.get("instanceCount"))
    if name == "CreateFleet":
        spec = (request.get("CreateFleetRequest") or request).get("TargetCapacitySpecification") or {}
        return _count(_key(spec, "TotalTargetCapacity"))
    if name == "RequestSpotFleet":
        return _count(_key(_key(request, "spotFleetRequestConfig"), "targetCapacity"))
    return None


def _tags(container: Any) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in _items(container):
        if "tags" in item:  # tagSpecificationSet: {items: [{resourceType, tags: [{key, value}]}]}
            if item.get("resourceType") in (None, "instance"):
                tags.update({str(t.get("key")): str(t.get("value")) for t in item["tags"]
                             if isinstance(t, dict) and t.get("key") is not None})
        elif "key" in item:
            tags[item["key"]] = item.get("value")
    return tags


def _time(value: Any) -> datetime | None:
    """eventTime (ISO 8601, Z) or launchTime (epoch ms, or ISO in some event versions)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None
