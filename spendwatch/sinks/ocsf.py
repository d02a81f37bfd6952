"""OCSF Detection Finding (class 2004): the schema Amazon Security Lake and many SIEMs ingest.

`to_ocsf(finding, activity)` renders one finding as an OCSF 1.1 Detection Finding event; `validate(event)`
checks it against the class's required attributes (`REQUIRED`, below, with where each list comes from);
`OcsfFileSink` appends one event per outbox item to a JSON-lines file that a log shipper (Security Lake
custom source, Fluent Bit, the SIEM's agent) picks up. The webhook sink can send the same events
(`format = "ocsf"`).

Mapping: the finding's id is `finding_info.uid` (stable, so the SIEM groups a create and its updates);
`activity_id` 1 Create, 2 Update, 3 Close (resolved); severity info..critical -> `severity_id` 1..5;
status open/quarantined/snoozed/expected/resolved -> `status_id` New/In Progress/Suppressed/Suppressed/
Resolved; each evidence line is an `evidences[].data` entry; resource and principal are `observables`; score
is `confidence_score` (0..100). The sink never decides severity: it maps the finding's own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..findings import Finding, Severity

if TYPE_CHECKING:
    from ..store import OutboxItem

OCSF_VERSION = "1.1.0"  # the first release with Detection Finding (2004)
CLASS_UID, CATEGORY_UID = 2004, 2
ACTIVITY_IDS = {"create": 1, "update": 2, "close": 3}
SEVERITY_IDS = {Severity.INFO: 1, Severity.LOW: 2, Severity.MEDIUM: 3, Severity.HIGH: 4, Severity.CRITICAL: 5}
SEVERITY_NAMES = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical", 6: "Fatal",
                  99: "Other"}
STATUS_IDS = {"open": 1, "quarantined": 2, "snoozed": 3, "expected": 3, "resolved": 4}
STATUS_NAMES = {0: "Unknown", 1: "New", 2: "In Progress", 3: "Suppressed", 4: "Resolved", 5: "Archived",
                6: "Deleted", 99: "Other"}
PROVIDERS = {"aws": "AWS", "gcp": "GCP", "azure": "Azure"}

# Required attributes of Detection Finding (2004), from the schema's own source files (ocsf/ocsf-schema on
# GitHub, read for this module): events/base_event.json and traits/classification.json + occurrence (class,
# category, type, activity, severity, time, metadata); events/findings/finding.json (finding_info);
# events/findings/detection_finding.json (adds no required attribute; evidences and resources recommended);
# objects/metadata.json (product, version); objects/product.json (name; vendor_name in 1.x releases, so both
# are required here); objects/finding_info.json (uid; title, required in 1.1.0 and recommended later, is
# required here); objects/cloud.json (provider, once the cloud profile is applied). schema.ocsf.io renders
# these same files.
REQUIRED: dict[str, tuple[str, ...]] = {
    "": ("activity_id", "category_uid", "class_uid", "type_uid", "severity_id", "time", "metadata", "finding_info"),
    "metadata": ("product", "version"),
    "metadata.product": ("name", "vendor_name"),
    "finding_info": ("uid", "title"),
    "cloud": ("provider",),
}
ENUMS: dict[str, frozenset[int]] = {
    "activity_id": frozenset({0, 1, 2, 3, 99}),
    "severity_id": frozenset({0, 1, 2, 3, 4, 5, 6, 99}),
    "status_id": frozenset({0, 1, 2, 3, 4, 5, 6, 99}),
}


def _ms(value: datetime) -> int:
    """OCSF timestamps are epoch milliseconds."""
    return int(value.timestamp() * 1000)


def title(f: Finding) -> str:
    subject = f.resource or f.principal or "unknown resource"
    return f"{f.severity.label.upper()}: {f.summary.split(';')[0]}"[:256] if f.summary else f"Finding on {subject}"


def description(f: Finding) -> str:
    cost = "unknown" if f.hourly_cost_usd is None else f"${f.hourly_cost_usd:,.2f}/h"
    lines = [f.summary, f"Started by: {f.principal or 'unknown'}"
             + (f" ({f.principal_type})" if f.principal_type else ""), f"Cost: {cost}",
             f"Rules: {', '.join(f.rules)}", "Evidence:", *(f"- {e}" for e in f.evidence)]
    return "\n".join(lines)


def resource_type(f: Finding) -> str:
    r = f.resource or ""
    if f.cloud == "aws" and r.startswith("i-"):
        return "AwsEc2Instance"
    if f.cloud == "gcp" and "/instances/" in r:
        return "GcpComputeInstance"
    if f.cloud == "azure" and "/virtualMachines/" in r:
        return "AzureVirtualMachine"
    return "Other" if f.resource else "Principal"


def to_ocsf(f: Finding, activity: str = "create", *, delivery_id: str | None = None) -> dict[str, Any]:
    """One finding as an OCSF Detection Finding event (a plain dict, JSON-ready)."""
    activity_id = ACTIVITY_IDS[activity]
    severity_id = SEVERITY_IDS[f.severity]
    status_id = STATUS_IDS.get(f.status, 99)
    region = f.region or None
    resource: dict[str, Any] = {
        "uid": f.resource or f.principal or f.id, "name": f.resource or f.principal or f.id,
        "type": resource_type(f), "region": region, "cloud_partition": "aws" if f.cloud == "aws" else None,
        "data": {"instance_type": f.instance_type, "hourly_cost_usd": f.hourly_cost_usd, "related": f.related},
    }
    observables = []
    if f.resource:
        observables.append({"name": "resources[0].uid", "type_id": 10, "type": "Resource UID", "value": f.resource})
    if f.principal:
        observables.append({"name": "unmapped.spendwatch.principal", "type_id": 99, "type": "Other",
                            "value": f.principal})
    event: dict[str, Any] = {
        "class_uid": CLASS_UID, "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID, "category_name": "Findings",
        "activity_id": activity_id, "activity_name": activity.capitalize(),
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": f"Detection Finding: {activity.capitalize()}",
        "severity_id": severity_id, "severity": SEVERITY_NAMES[severity_id],
        "status_id": status_id, "status": STATUS_NAMES[status_id] if status_id != 99 else f.status,
        "time": _ms(f.last_seen if activity != "create" else f.detected_at),
        "start_time": _ms(f.first_seen), "end_time": _ms(f.last_seen),
        "message": f.summary,
        "is_alert": activity != "close",
        "confidence_score": round(max(0.0, min(1.0, f.score)) * 100),
        "finding_info": {
            "uid": f.id, "title": title(f), "desc": description(f),
            "types": ["Resource Hijacking", "Cryptocurrency Mining"],
            "first_seen_time": _ms(f.first_seen), "last_seen_time": _ms(f.last_seen),
            "created_time": _ms(f.detected_at), "modified_time": _ms(f.last_seen),
            "analytic": {"name": ",".join(f.rules), "type_id": 1, "type": "Rule"},
            "attacks": [{"technique": {"uid": "T1496", "name": "Resource Hijacking"},
                         "tactic": {"uid": "TA0040", "name": "Impact"}, "version": "14"}],
        },
        "resources": [{k: v for k, v in resource.items() if v is not None}],
        "cloud": {"provider": PROVIDERS.get(f.cloud, f.cloud), "account": {"uid": f.account},
                  **({"region": region} if region else {})},
        "evidences": [{"data": {"text": e}} for e in f.evidence],
        "observables": observables,
        "metadata": {
            "product": {"name": "spendwatch", "vendor_name": "spendwatch", "version": __version__},
            "version": OCSF_VERSION, "profiles": ["cloud"],
            **({"uid": delivery_id} if delivery_id else {}),
        },
        "unmapped": {"spendwatch": {"score": round(f.score, 4), "hourly_cost_usd": f.hourly_cost_usd,
                                    "rules": list(f.rules), "status": f.status, "principal": f.principal,
                                    "principal_type": f.principal_type}},
    }
    return event


def _get(event: Mapping[str, Any], path: str) -> Any:
    node: Any = event
    for part in path.split(".") if path else []:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def validate(event: Mapping[str, Any]) -> list[str]:
    """Problems with `event` as an OCSF Detection Finding (empty when valid): required attributes present and
    non-empty, the class's fixed ids, enums, type_uid = class_uid * 100 + activity_id, integer times, and every
    resource naming itself (uid or name)."""
    problems = []
    for obj, attrs in REQUIRED.items():
        node = _get(event, obj)
        if obj and node is None and obj == "cloud":
            problems.append("cloud: required by the cloud profile")
            continue
        for attr in attrs:
            value = node.get(attr) if isinstance(node, Mapping) else None
            if value is None or value == "" or value == {}:
                problems.append(f"{obj + '.' if obj else ''}{attr}: required")
    if event.get("class_uid") != CLASS_UID:
        problems.append(f"class_uid: {event.get('class_uid')!r} is not {CLASS_UID}")
    if event.get("category_uid") != CATEGORY_UID:
        problems.append(f"category_uid: {event.get('category_uid')!r} is not {CATEGORY_UID}")
    for key, allowed in ENUMS.items():
        if key in event and event[key] not in allowed:
            problems.append(f"{key}: {event[key]!r} not in the enum")
    if isinstance(event.get("activity_id"), int) and event.get("type_uid") != CLASS_UID * 100 + event["activity_id"]:
        problems.append("type_uid: must be class_uid * 100 + activity_id")
    for key in ("time", "start_time", "end_time"):
        if key in event and not isinstance(event[key], int):
            problems.append(f"{key}: must be epoch milliseconds (integer)")
    for n, res in enumerate(event.get("resources") or []):
        if not (isinstance(res, Mapping) and (res.get("uid") or res.get("name"))):
            problems.append(f"resources[{n}]: needs uid or name")
    return problems


class OcsfFileSink:
    """Appends one OCSF event per outbox item to a JSON-lines file (fsynced, so an accepted item is on disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any]) -> OcsfFileSink:
        from ..config import ConfigError

        if not settings.get("path"):
            raise ConfigError(f"[sinks.{name}] needs path (the OCSF JSON-lines file)")
        return cls(Path(str(settings["path"])).expanduser())

    def send(self, item: OutboxItem) -> None:
        event = to_ocsf(item.finding, item.activity, delivery_id=item.delivery_id)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
