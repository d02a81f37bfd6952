"""Decide what kind of export a file is, from its content first and its S3 key layout second.

Content wins: gzip and Parquet magic numbers, a flow log's header line, a CSV header, the keys of the first
JSON object. The key layout (`AWSLogs/<account>/vpcflowlogs/...`, `.../CloudTrail/...`, `BILLING_PERIOD=`)
only decides for a file whose content says nothing recognisable, so that a damaged flow log or a CloudTrail
file without `Records` reaches its own reader and is reported with a precise reason instead of as an
unknown file. File extensions are never used to decide on their own.

This module reads nothing beyond the bytes it is given and records no problems; it only names a kind.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from pathlib import PurePath

import pyarrow as pa
import pyarrow.parquet as pq

from ._common import GZIP_MAGIC, PARQUET_MAGIC, key_info

FLOW_TEXT = "vpc-flow-logs"
FLOW_PARQUET = "vpc-flow-logs-parquet"
CLOUDTRAIL = "cloudtrail"
RESOLVER = "route53-resolver-query-logs"
CUR2 = "cur2-parquet"
CUR_CSV = "cur-csv"
METRIC_STREAM = "metric-stream"
METRIC_CSV = "metric-csv"
METADATA = "metadata"  # manifests, digests and other files AWS writes beside the data: read, nothing to take
# GCP: Cloud Logging entries routed to Cloud Storage (one reader, kind named by the log), billing, Monitoring.
GCP_AUDIT = "gcp-audit-logs"
GCP_FLOWS = "gcp-vpc-flow-logs"
GCP_DNS = "gcp-dns-logs"
GCP_LOGGING = "gcp-logging"  # any other Cloud Logging log: read, entries counted and left out
GCP_BILLING = "gcp-billing-export"  # JSON lines, CSV or Parquet
GCP_MONITORING = "gcp-monitoring"
# Azure: diagnostic settings' blobs and Cost Management exports.
AZ_ACTIVITY = "azure-activity-log"
AZ_FLOWS = "azure-vnet-flow-logs"
AZ_METRICS = "azure-metrics"
AZ_COST = "azure-cost-export"  # CSV or Parquet

KINDS = (FLOW_TEXT, FLOW_PARQUET, CLOUDTRAIL, RESOLVER, CUR2, CUR_CSV, METRIC_STREAM, METRIC_CSV, METADATA,
         GCP_AUDIT, GCP_FLOWS, GCP_DNS, GCP_LOGGING, GCP_BILLING, GCP_MONITORING,
         AZ_ACTIVITY, AZ_FLOWS, AZ_METRICS, AZ_COST)

# Storage containers Azure diagnostic settings write to, and the kind of what is in them.
_AZURE_CONTAINERS = {"insights-activity-logs": AZ_ACTIVITY, "insights-logs-flowlogflowevent": AZ_FLOWS,
                     "insights-metrics-pt1m": AZ_METRICS}
# Cloud Logging log ids (the folders a Cloud Storage sink writes) and the kind of what is in them.
_GCP_LOGS = (("cloudaudit.googleapis.com", GCP_AUDIT), ("vpc_flows", GCP_FLOWS), ("dns_queries", GCP_DNS))
_GCP_BILLING_COLUMNS = frozenset({"billing_account_id", "usage_start_time"})

# Every field a VPC flow log format may name (versions 2 to 8), with `-` as in a text header.
_FLOW_FIELD_LIST = (
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action "
    "log-status vpc-id subnet-id instance-id tcp-flags type pkt-srcaddr pkt-dstaddr region az-id "
    "sublocation-type sublocation-id pkt-src-aws-service pkt-dst-aws-service flow-direction traffic-path "
    "ecs-cluster-arn ecs-cluster-name ecs-container-instance-arn ecs-container-instance-id ecs-container-id "
    "ecs-second-container-id ecs-service-name ecs-task-definition-arn ecs-task-arn ecs-task-id "
    "reject-reason"
)
FLOW_FIELDS = frozenset(_FLOW_FIELD_LIST.split())

METRIC_CSV_HEADER = ("timestamp", "value")

# Files AWS writes next to the data that hold no records for us (CUR manifests, Athena/Redshift helpers,
# CloudTrail digests, the S3 delivery test object). Matched on the file name or a folder name.
_METADATA_NAMES = re.compile(
    r"(-Manifest\.json|-RedshiftManifest\.json|-RedshiftCommands\.sql|-create-table\.sql|crawler-cfn\.yml"
    r"|^aws-programmatic-access-test-object)$"
)
_METADATA_FOLDERS = frozenset({"CloudTrail-Digest", "cost_and_usage_data_status", "metadata"})
_MANIFEST_KEYS = frozenset({"reportKeys", "dataFiles", "assemblyId", "reportId", "exportArn", "billingPeriod"})

_SNIFF = 65536


@dataclass(frozen=True)
class Detection:
    kind: str | None  # one of KINDS, or None for a file of no known kind
    seen: str  # what the content looked like, in plain words (for the "not a known format" reason)
    # The whole gunzipped content, when the file was small enough to be inflated whole while sniffing: the
    # reader takes it instead of inflating the file a second time.
    content: bytes | None = None


def detect(rel: PurePath, raw: bytes) -> Detection:
    """Name the kind of the file at key `rel` whose bytes are `raw`."""
    kind, seen, content = _by_content(raw)
    if kind is None:
        kind = _by_key(rel, raw)
    return Detection(kind, seen, content)


def _by_content(raw: bytes) -> tuple[str | None, str, bytes | None]:
    if not raw:
        return None, "empty file", None
    if raw.startswith(PARQUET_MAGIC):
        return (*_parquet(raw), None)
    head = raw[:_SNIFF]
    what = "text"
    complete = len(raw) <= _SNIFF
    content = None
    if raw.startswith(GZIP_MAGIC):
        what = "gzip text"
        try:
            inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
            head = inflater.decompress(raw[:_SNIFF], _SNIFF)
            complete = inflater.eof
        except zlib.error as exc:
            return None, f"corrupt gzip data: {exc}", None
        if not head:
            return None, "gzip file with nothing in it", None
        # One member, inflated whole, nothing after it: the content is all here.
        if complete and not inflater.unused_data and not inflater.unconsumed_tail:
            content = head
    if b"\x00" in head[:4096]:
        return None, f"binary data{' inside gzip' if what == 'gzip text' else ''}", None
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    first_line, newline, _ = text.partition("\n")
    first_line = first_line.strip("\r ")
    kind = _text(first_line, text if (complete or newline) else "", complete)
    shown = first_line if len(first_line) <= 60 else first_line[:57] + "..."
    return kind, f"{what} starting {shown!r}", content


def _parquet(raw: bytes) -> tuple[str | None, str]:
    try:
        names = set(pq.read_schema(pa.BufferReader(raw)).names)
    except (pa.ArrowException, OSError) as exc:
        return None, f"Parquet file that cannot be opened: {exc}"
    flow = {n.replace("_", "-") for n in names} & FLOW_FIELDS
    if "srcaddr" in flow or "dstaddr" in flow or len(flow) >= 4:
        return FLOW_PARQUET, "Parquet flow log"
    if any(n.startswith("line_item_") for n in names):
        return CUR2, "Parquet CUR 2.0"
    if names == {"status"}:
        return METADATA, "Parquet CUR status"
    if names >= _GCP_BILLING_COLUMNS or ("usage_start_time" in names and "sku" in names):
        return GCP_BILLING, "Parquet GCP billing export"
    if _azure_cost({n.lower() for n in names}):
        return AZ_COST, "Parquet Azure cost export"
    listed = ", ".join(sorted(names)[:8])
    return None, f"Parquet with columns {listed}"


def _text(first_line: str, text: str, complete: bool) -> str | None:
    if first_line.startswith("{") or text.lstrip().startswith("{"):
        return _json(first_line, text, complete)
    tokens = first_line.split(" ")
    if len(tokens) >= 3 and sum(t in FLOW_FIELDS for t in tokens) * 2 >= len(tokens):
        return FLOW_TEXT
    columns = [c.strip().strip('"') for c in first_line.split(",")]
    if any(c.startswith(("lineItem/", "line_item_")) for c in columns):
        return CUR_CSV
    if tuple(c.lower() for c in columns) == METRIC_CSV_HEADER:
        return METRIC_CSV
    lower = {c.lower() for c in columns}
    if "usage_start_time" in lower and ({"billing_account_id", "cost"} & lower):
        return GCP_BILLING
    if _azure_cost(lower):
        return AZ_COST
    return None


def _azure_cost(lower: set[str]) -> bool:
    """Column names (lower case) of an Azure cost export (usage details; EA, MCA and the newer exports)."""
    return "metercategory" in lower and bool({"subscriptionid", "subscriptionguid"} & lower)


def _cloud_json(obj: dict[str, object]) -> str | None:
    """The kind of a GCP or Azure JSON record, from its keys."""
    records = obj.get("records")
    if isinstance(records, list):
        first_record = records[0] if records else {}
        return _cloud_json(first_record) if isinstance(first_record, dict) else None
    keys = set(obj)
    log_name = obj.get("logName")
    if isinstance(log_name, str) and keys & {"protoPayload", "jsonPayload", "textPayload"}:
        log = log_name.replace("%2F", "/")
        return next((kind for marker, kind in _GCP_LOGS if marker in log), GCP_LOGGING)
    if keys >= _GCP_BILLING_COLUMNS or ("usage_start_time" in keys and "sku" in keys):
        return GCP_BILLING
    if "points" in keys and "metric" in keys and "resource" in keys:
        return GCP_MONITORING
    if "flowRecords" in keys or obj.get("category") == "FlowLogFlowEvent":
        return AZ_FLOWS
    if "metricName" in keys and "resourceId" in keys:
        return AZ_METRICS
    if "operationName" in keys and "resourceId" in keys and keys & {"caller", "identity", "category"}:
        return AZ_ACTIVITY
    return None


def _cloud_text(text: str) -> str | None:
    """The kind of a GCP or Azure document too long to parse whole while sniffing, from the names in it."""
    if re.match(r'\s*\{\s*"records"\s*:', text):
        for marker, kind in (('"flowRecords"', AZ_FLOWS), ('"metricName"', AZ_METRICS),
                             ('"operationName"', AZ_ACTIVITY)):
            if marker in text:
                return kind
    if '"logName"' in text:
        return next((kind for marker, kind in _GCP_LOGS if marker in text), GCP_LOGGING)
    return None


def _json(first_line: str, text: str, complete: bool) -> str | None:
    if re.match(r'\s*\{\s*"Records"\s*:', text or first_line):
        return CLOUDTRAIL
    obj = None
    for candidate in (first_line, text if complete else ""):
        try:
            obj = json.loads(candidate)
            break
        except ValueError:
            continue
    if isinstance(obj, dict):
        keys = set(obj)
        if "Records" in keys:
            return CLOUDTRAIL
        if "query_name" in keys and "query_timestamp" in keys:
            return RESOLVER
        if "metric_name" in keys and ("metric_stream_name" in keys or "namespace" in keys):
            return METRIC_STREAM
        if "digestStartTime" in keys or keys & _MANIFEST_KEYS:
            return METADATA
        return _cloud_json(obj)
    # A first line cut short (truncated file): the field names still tell.
    if '"query_name"' in first_line and '"query_timestamp"' in first_line:
        return RESOLVER
    if '"metric_name"' in first_line and '"namespace"' in first_line:
        return METRIC_STREAM
    return _cloud_text(text or first_line)


def _by_key(rel: PurePath, raw: bytes) -> str | None:
    """The kind the key layout names, for a file whose content was not recognised."""
    parts = rel.parts
    if _METADATA_NAMES.search(rel.name) or _METADATA_FOLDERS & set(parts[:-1]):
        return METADATA
    service = key_info(rel).service
    parquet = raw.startswith(PARQUET_MAGIC) or rel.name.endswith(".parquet")
    if service == "vpcflowlogs":
        return FLOW_PARQUET if parquet else FLOW_TEXT
    if service == "CloudTrail":
        return CLOUDTRAIL
    if service == "vpcdnsquerylogs":
        return RESOLVER
    if any(p.startswith("BILLING_PERIOD=") for p in parts) and "data" in parts:
        return CUR2 if parquet else CUR_CSV
    lowered = [p.lower() for p in parts]
    for container, kind in _AZURE_CONTAINERS.items():
        if container in lowered:
            return kind
    folders = "/".join(parts[:-1])
    return next((kind for marker, kind in _GCP_LOGS if marker in folders), None)
