"""Billing: a CUR 2.0 (AWS Data Exports) Parquet file per billing period, with its manifest (formats.md §4).

Hourly line items per instance (BoxUsage / SpotUsage at the catalogue's hourly price, per-second billing
for partial hours), EBS volumes, data transfer out (from the flows' internet egress), S3 storage and
requests, and a Tax line per account and period. Billing lands hours late on AWS, so the export stops
`LAG` hours before the end of the window: the newest hours of an incident are not billed yet.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spendwatch import catalog

from .common import REGION_CODE, FileWriter, det_uuid
from .org import HOUR, PAYER, Org, active

LAG = 4 * HOUR
EXPORT = "acme-cur2"
SPOT_FACTOR = 0.35
DT_OUT_USD_GB = 0.09
EBS_USD_GB_MONTH = 0.08
TAX_RATE = 0.06
ACCOUNT_NAMES = {"012345678901": "acme-prod", "234567890123": "acme-ml", "345678901234": "acme-data",
                 PAYER: "acme-management"}
BUCKETS = [("234567890123", "us-east-1", "acme-ml-datasets", 80_000), ("234567890123", "us-east-1",
           "acme-ml-checkpoints", 20_000), ("345678901234", "eu-west-1", "acme-data-lake", 150_000),
           (PAYER, "us-east-1", "acme-org-logs", 3_000)]
EBS_GB = {"web": 50, "batch": 200, "ci": 100, "internal": 100, "train": 1000, "jupyter": 200, "gpu_miner": 100,
          "nightly": 1000, "ticker": 20, "db": 1000, "inference": 200, "tool": 50}


def _prefix(region: str, us_east_bare: bool = True) -> str:
    # us-east-1 usage types carry no region prefix (BoxUsage:m5.large), other regions do (EUW1-BoxUsage:...)
    return "" if (region == "us-east-1" and us_east_bare) else REGION_CODE[region] + "-"


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


FIELDS = ("t0", "t1", "account", "region", "type", "product_code", "usage_type", "operation", "resource",
          "amount", "cost", "rate", "unit", "term", "desc", "az", "pmap")


class BillingSim:
    def __init__(self, org: Org, rng: np.random.Generator, egress: dict[tuple[int, int], int]) -> None:
        self.org = org
        self.rng = rng
        self.egress = egress
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, t0: np.ndarray, **cols: object) -> None:
        """Line items for the hours `t0`; scalar columns apply to every hour."""
        n = len(t0)
        if not n:
            return
        part = {"t0": np.asarray(t0, dtype=float)}
        cols.setdefault("t1", part["t0"] + HOUR)
        for k in FIELDS[1:]:
            v = cols[k]
            if k == "pmap" and isinstance(v, dict):
                v = json.dumps(v, sort_keys=True)  # one string per distinct map; decoded once per file
            if isinstance(v, np.ndarray):
                part[k] = v
            else:
                arr = np.empty(n, dtype=object)
                arr[:] = [v] * n
                part[k] = arr
        self.parts.append(part)

    def run(self) -> None:
        org = self.org
        stop = np.floor((org.end - LAG) / HOUR) * HOUR
        for inst in org.instances:
            span = active(inst, org.start, stop)
            if span is None:
                continue
            spec = catalog.lookup(inst.itype)
            assert spec is not None
            price = spec.on_demand_usd_hour * (SPOT_FACTOR if inst.spot else 1.0)
            h = np.arange(np.floor(span[0] / HOUR) * HOUR, span[1], HOUR)
            amount = (np.minimum(h + HOUR, span[1]) - np.maximum(h, span[0])) / HOUR
            az = inst.vpc.azs[inst.az]
            pmap = {"instance_type": inst.itype, "region": inst.region, "operating_system": "Linux",
                    "product_name": "Amazon Elastic Compute Cloud", "instance_family": inst.itype.split(".")[0],
                    "vcpu": str(inst.vcpus)}
            market = "Spot" if inst.spot else "On Demand"
            self.add(h, account=inst.account, region=inst.region, type="Usage", product_code="AmazonEC2",
                     usage_type=_prefix(inst.region) + ("SpotUsage:" if inst.spot else "BoxUsage:") + inst.itype,
                     operation="RunInstances:SV001" if inst.spot else "RunInstances", resource=inst.id,
                     amount=amount, cost=np.round(price * amount, 8), rate=price, unit="Hrs",
                     term="Spot" if inst.spot else "OnDemand",
                     desc=f"${price:.4f} per {market} Linux {inst.itype} Instance Hour", az=az, pmap=pmap)
            ebs = EBS_GB[inst.workload] * amount / 730
            self.add(h, account=inst.account, region=inst.region, type="Usage", product_code="AmazonEC2",
                     usage_type=_prefix(inst.region) + "EBS:VolumeUsage.gp3", operation="CreateVolume-Gp3",
                     resource="vol-" + inst.id[2:], amount=ebs, cost=np.round(ebs * EBS_USD_GB_MONTH, 8),
                     rate=EBS_USD_GB_MONTH, unit="GB-Mo", term="OnDemand",
                     desc="$0.08 per GB-month of General Purpose (gp3) provisioned storage", az=az,
                     pmap={"region": inst.region, "volume_api_name": "gp3"})
            sent = np.array([self.egress.get((inst.idx, int(x // HOUR)), 0) for x in h.tolist()], dtype=float)
            m = sent > 0
            gbs = sent[m] / 2**30
            self.add(h[m], account=inst.account, region=inst.region, type="Usage", product_code="AmazonEC2",
                     usage_type=_prefix(inst.region) + "DataTransfer-Out-Bytes", operation="RunInstances",
                     resource=inst.id, amount=gbs, cost=np.round(gbs * DT_OUT_USD_GB, 8), rate=DT_OUT_USD_GB,
                     unit="GB", term="OnDemand", desc="$0.09 per GB - first 10 TB / month data transfer out", az="",
                     pmap={"region": inst.region, "from_location": inst.region, "to_location": "External"})
        hours = np.arange(np.floor(org.start / HOUR) * HOUR, stop, HOUR)
        for acct, region, bucket, gb in BUCKETS:
            self.add(hours, account=acct, region=region, type="Usage", product_code="AmazonS3",
                     usage_type=_prefix(region, False) + "TimedStorage-ByteHrs", operation="StandardStorage",
                     resource=bucket, amount=gb / 730, cost=round(gb / 730 * 0.023, 8), rate=0.023, unit="GB-Mo",
                     term="OnDemand", desc="$0.023 per GB - first 50 TB / month of storage used", az="",
                     pmap={"region": region})
            reqs = self.rng.integers(200, 20000, len(hours)).astype(float)
            self.add(hours, account=acct, region=region, type="Usage", product_code="AmazonS3",
                     usage_type=_prefix(region, False) + "Requests-Tier1", operation="PutObject", resource=bucket,
                     amount=reqs, cost=np.round(reqs * 5e-6, 8), rate=5e-6, unit="Requests", term="OnDemand",
                     desc="$0.005 per 1,000 PUT, COPY, POST, or LIST requests", az="", pmap={"region": region})

    def write(self, writer: FileWriter, bucket: str) -> int:
        """One Parquet file (+ manifest) per billing period; returns the number of line items."""
        if not self.parts:
            return 0
        cols = {k: np.concatenate([p[k] for p in self.parts]) for k in FIELDS}
        period_of = np.array([_ts(x).strftime("%Y-%m") for x in np.unique(np.floor(cols["t0"] / 86400) * 86400)])
        day_keys = np.unique(np.floor(cols["t0"] / 86400) * 86400)
        period = period_of[np.searchsorted(day_keys, np.floor(cols["t0"] / 86400) * 86400)]
        total = 0
        for per in sorted(set(period.tolist())):
            m = period == per
            part = {k: v[m] for k, v in cols.items()}
            y, mo = (int(x) for x in per.split("-"))
            p0 = datetime(y, mo, 1, tzinfo=UTC)
            p1 = datetime(y + (mo == 12), mo % 12 + 1, 1, tzinfo=UTC)
            accts = sorted(set(part["account"].tolist()))
            tax = {a: round(float(part["cost"][part["account"] == a].sum()) * TAX_RATE, 8) for a in accts}
            self.parts = [part]
            # sales tax: one line per account, spanning the period
            self.add(np.full(len(accts), p0.timestamp()), t1=np.full(len(accts), p1.timestamp()),
                     account=np.array(accts, dtype=object), region="", type="Tax", product_code="AmazonEC2",
                     usage_type="", operation="", resource=None, amount=1.0,
                     cost=np.array([tax[a] for a in accts]), rate=0.0, unit="", term="",
                     desc="Tax for product code AmazonEC2", az="", pmap={})
            part = {k: np.concatenate([p[k] for p in self.parts]) for k in FIELDS}
            table = self._table(part, p0, p1)
            total += table.num_rows
            sink = io.BytesIO()
            pq.write_table(table, sink, compression="snappy")
            base = f"{bucket}/cur2/{EXPORT}"
            data_key = f"{base}/data/BILLING_PERIOD={per}/{EXPORT}-00001.snappy.parquet"
            writer.write_bytes(data_key, sink.getvalue())
            manifest = {
                "version": "2.0",
                "exportArn": f"arn:aws:bcm-data-exports:us-east-1:{PAYER}:export/{EXPORT}-{det_uuid(self.rng)}",
                "exportName": EXPORT,
                "executionId": det_uuid(self.rng),
                "billingPeriod": {"start": f"{p0:%Y-%m-%dT%H:%M:%SZ}", "end": f"{p1:%Y-%m-%dT%H:%M:%SZ}"},
                "table": "COST_AND_USAGE_REPORT",
                "format": "Parquet",
                "dataFiles": [f"s3://{bucket}/{data_key.split('/', 1)[1]}"],
                "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
                "totalRows": table.num_rows,
            }
            writer.write_bytes(f"{base}/metadata/BILLING_PERIOD={per}/{EXPORT}-Manifest.json",
                               json.dumps(manifest, indent=2).encode())
        return total

    def _table(self, c: dict[str, np.ndarray], p0: datetime, p1: datetime) -> pa.Table:
        resource = np.array(["" if r is None else r for r in c["resource"].tolist()], dtype=object)
        order = np.lexsort((c["usage_type"].astype(str), resource.astype(str), c["product_code"].astype(str),
                            c["account"].astype(str), c["t0"]))
        c = {k: v[order] for k, v in c.items()}
        n = len(order)
        ts = pa.timestamp("ms", tz="UTC")
        t0 = (c["t0"] * 1000).astype(np.int64)
        t1 = (c["t1"].astype(float) * 1000).astype(np.int64)
        start = pa.array(t0, pa.int64()).cast(ts)
        end = pa.array(t1, pa.int64()).cast(ts)
        iso0 = pc.strftime(start, format="%Y-%m-%dT%H:%M:%SZ")
        iso1 = pc.strftime(end, format="%Y-%m-%dT%H:%M:%SZ")
        ids = [hashlib.sha256(f"{self.org.seed}|{a}|{b}|{r}|{u}|{ty}".encode()).hexdigest()[:52]
               for a, b, r, u, ty in zip(t0.tolist(), c["account"].tolist(), c["resource"].tolist(),
                                         c["usage_type"].tolist(), c["type"].tolist(), strict=True)]
        cost = pa.array(c["cost"].astype(float), pa.float64())
        # product maps: few distinct ones, so build each once
        pm_keys = c["pmap"].tolist()
        pm_cache = {k: sorted(json.loads(k).items()) for k in dict.fromkeys(pm_keys)}

        def strs(a: np.ndarray) -> pa.Array:
            return pa.array(a.tolist(), pa.string())

        def full(v: str) -> pa.Array:
            return pa.array([v] * n, pa.string())

        data = {
            "bill_bill_type": full("Anniversary"),
            "bill_billing_entity": full("AWS"),
            "bill_billing_period_end_date": pa.array([p1] * n, ts),
            "bill_billing_period_start_date": pa.array([p0] * n, ts),
            "bill_invoice_id": full(""),
            "bill_invoicing_entity": full("Amazon Web Services, Inc."),
            "bill_payer_account_id": full(PAYER),
            "bill_payer_account_name": full(ACCOUNT_NAMES[PAYER]),
            "identity_line_item_id": pa.array(ids, pa.string()),
            "identity_time_interval": pc.binary_join_element_wise(iso0, iso1, "/"),
            "line_item_availability_zone": strs(c["az"]),
            "line_item_blended_cost": cost,
            "line_item_currency_code": full("USD"),
            "line_item_legal_entity": full("Amazon Web Services, Inc."),
            "line_item_line_item_description": strs(c["desc"]),
            "line_item_line_item_type": strs(c["type"]),
            "line_item_operation": strs(c["operation"]),
            "line_item_product_code": strs(c["product_code"]),
            "line_item_resource_id": strs(c["resource"]),
            "line_item_unblended_cost": cost,
            "line_item_unblended_rate": pa.array([f"{float(x):.10f}".rstrip("0").rstrip(".")
                                                  for x in c["rate"].tolist()], pa.string()),
            "line_item_usage_account_id": strs(c["account"]),
            "line_item_usage_account_name": pa.array([ACCOUNT_NAMES[a] for a in c["account"].tolist()], pa.string()),
            "line_item_usage_amount": pa.array(c["amount"].astype(float), pa.float64()),
            "line_item_usage_end_date": end,
            "line_item_usage_start_date": start,
            "line_item_usage_type": strs(c["usage_type"]),
            "pricing_currency": full("USD"),
            "pricing_public_on_demand_cost": cost,
            "pricing_term": strs(c["term"]),
            "pricing_unit": strs(c["unit"]),
            "product": pa.array([pm_cache[k] for k in pm_keys], pa.map_(pa.string(), pa.string())),
            "product_instance_type": pa.array([dict(pm_cache[k]).get("instance_type", "") for k in pm_keys],
                                              pa.string()),
            "product_region_code": strs(c["region"]),
            "product_servicecode": strs(c["product_code"]),
            "resource_tags": pa.array([[]] * n, pa.map_(pa.string(), pa.string())),
        }
        return pa.table(data)
