"""Kit for the files connector tests: native-format samples placed under real S3 key layouts.

The readable samples live in tests/fixtures/aws/; `bucket.put` gzips them where AWS delivers gzip and
writes them under the key AWS would use, in a temporary directory. Binary formats (Parquet) are written here
with pyarrow, from small literal tables.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from spendwatch.connectors.files import read_directory
from spendwatch.records import Tables
from spendwatch.report import RunReport

ACCOUNT = "012345678901"  # the leading zero must survive every reader
PAYER = "210987654321"
REGION = "us-east-1"
T0 = 1795168800  # 2026-11-20T10:00:00Z

FLOW_V2_KEY = (f"AWSLogs/{ACCOUNT}/vpcflowlogs/{REGION}/2026/11/20/"
               f"{ACCOUNT}_vpcflowlogs_{REGION}_fl-0aa1_20261120T1000Z_1a2b3c4d.log.gz")
FLOW_V5_KEY = (f"AWSLogs/{ACCOUNT}/vpcflowlogs/{REGION}/2026/11/20/"
               f"{ACCOUNT}_vpcflowlogs_{REGION}_fl-0bb2_20261120T1000Z_5e6f7a8b.log.gz")
FLOW_PARQUET_KEY = (f"AWSLogs/aws-account-id={ACCOUNT}/aws-service=vpcflowlogs/aws-region={REGION}/year=2026/"
                    f"month=11/day=20/hour=10/{ACCOUNT}_vpcflowlogs_{REGION}_fl-0cc3_20261120T1000Z_9c8d.log.parquet")
TRAIL_KEY = (f"AWSLogs/o-abc123def4/{ACCOUNT}/CloudTrail/{REGION}/2026/11/20/"
             f"{ACCOUNT}_CloudTrail_{REGION}_20261120T1005Z_AbCdEf012345.json.gz")
RESOLVER_KEY = (f"AWSLogs/{ACCOUNT}/vpcdnsquerylogs/vpc-0aa11/2026/11/20/"
                f"{ACCOUNT}_vpcdnsquerylogs_vpc-0aa11_20261120T1000Z_0f1e2d3c.log.gz")
CUR_CSV_KEY = "cur/legacy/swcur/20261101-20261201/swcur-1.csv.gz"
CUR2_KEY = "exports/sw-export/data/BILLING_PERIOD=2026-11/sw-export-00001.snappy.parquet"
CUR2_MANIFEST_KEY = "exports/sw-export/metadata/BILLING_PERIOD=2026-11/sw-export-Manifest.json"
STREAM_KEY = "metrics/2026/11/20/10/sw-stream-1-2026-11-20-10-00-00-5d3c2b1a-0000-4000-8000-000000000001.gz"
METRIC_CSV_KEY = f"cloudwatch/{ACCOUNT}/{REGION}/i-0a100000000000001/gpu_util.csv"


class Bucket:
    """A local copy of export buckets under `root`."""

    def __init__(self, root: Path, samples: Path) -> None:
        self.root = root
        self.samples = samples

    def sample(self, name: str) -> str:
        return (self.samples / name).read_text()

    def put(self, key: str, content: str | bytes, *, gzipped: bool | None = None) -> Path:
        """Write `content` at `key`; gzip it when the key ends in .gz (or when told)."""
        data = content.encode() if isinstance(content, str) else content
        if gzipped if gzipped is not None else key.endswith(".gz"):
            data = gzip.compress(data, mtime=0)
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def put_parquet(self, key: str, table: pa.Table) -> Path:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="snappy")
        return path

    def scan(self, *, strict: bool = False) -> tuple[Tables, RunReport]:
        report = RunReport(strict=strict)
        return read_directory(self.root, report), report


def flow_parquet() -> pa.Table:
    """A flow log as the Parquet delivery option writes it (v5 fields, `_` for `-`)."""
    return pa.table({
        "version": pa.array([5, 5], pa.int32()),
        "account_id": pa.array([ACCOUNT, ACCOUNT]),
        "interface_id": pa.array(["eni-0c0c0c0c0c0c0c0e5", "eni-0c0c0c0c0c0c0c0e5"]),
        "instance_id": pa.array([None, None], pa.string()),
        "srcaddr": pa.array(["10.0.3.5", "10.0.3.5"]),
        "dstaddr": pa.array(["192.0.2.80", "2001:db8::80"]),
        "srcport": pa.array([40000, 40001], pa.int32()),
        "dstport": pa.array([443, 443], pa.int32()),
        "protocol": pa.array([6, 6], pa.int32()),
        "packets": pa.array([10, 12], pa.int64()),
        "bytes": pa.array([1500, 1800], pa.int64()),
        "start": pa.array([T0, T0], pa.int64()),
        "end": pa.array([T0 + 60, T0 + 60], pa.int64()),
        "action": pa.array(["ACCEPT", "ACCEPT"]),
        "log_status": pa.array(["OK", "OK"]),
        "flow_direction": pa.array(["egress", "egress"]),
        "traffic_path": pa.array([8, None], pa.int32()),
    })


def cur2_table(costs: list[float] | None = None) -> pa.Table:
    """CUR 2.0 rows as Data Exports writes them (snake_case, product as a map)."""
    costs = costs if costs is not None else [1.006, 0.42, -0.5]
    n = len(costs)
    start = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    base: dict[str, list[Any]] = {
        "line_item_usage_start_date": [start] * n,
        "line_item_usage_end_date": [datetime(2026, 11, 20, 11, 0, tzinfo=UTC)] * n,
        "line_item_usage_account_id": [ACCOUNT] * n,
        "line_item_line_item_type": (["Usage", "Usage", "Credit"] * n)[:n],
        "line_item_product_code": ["AmazonEC2"] * n,
        "line_item_usage_type": (["USE1-BoxUsage:g5.xlarge", "APS1-SpotUsage:g5.xlarge", ""] * n)[:n],
        "line_item_resource_id": (["i-0a100000000000001", "i-0b200000000000002", ""] * n)[:n],
        "line_item_unblended_cost": costs,
        "line_item_usage_amount": [1.0] * n,
        "line_item_availability_zone": (["us-east-1a", "ap-south-1b", ""] * n)[:n],
        "product_region_code": (["us-east-1", "ap-south-1", None] * n)[:n],
        "pricing_term": (["OnDemand", "Spot", ""] * n)[:n],
    }
    table = pa.table(base)
    product = pa.array([[("instance_type", "g5.xlarge"), ("region", "us-east-1")]] * n,
                       pa.map_(pa.string(), pa.string()))
    return table.append_column("product", product)


CUR2_MANIFEST = json.dumps({
    "executionId": "0a1b2c", "billingPeriod": {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"},
    "dataFiles": ["s3://bucket/exports/sw-export/data/BILLING_PERIOD=2026-11/sw-export-00001.snappy.parquet"],
}, indent=2)
