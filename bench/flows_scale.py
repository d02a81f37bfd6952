"""Benchmark: spendwatch over millions of VPC flow records, against the parse ceiling and a naive pandas pipeline.

Generates N version-2 flow records (default 5 million) for a 1,000-instance organisation, once, as gzip text
and as Parquet (cached under tmp/bench/flows-<N>-<seed>/), then measures each case in its own subprocess
(time, records per second, the child's CPU seconds and peak RSS from `os.wait4`'s resource usage):

- spendwatch: `scan_directory` end to end (read every file, check every record, reduce the flows into DuckDB,
  compute the per-window flow features and the rows the rules read there, run every rule and the forest, fuse
  findings; no state store);
- ceiling: pyarrow reading the same files and nothing else (gunzip + CSV parse, or Parquet read; 2 threads);
- naive: what a user would otherwise write: `pandas.read_csv` (or `read_parquet`) of every file, one
  concat, then a groupby per interface, peer and port. It holds every record in memory (about 440 bytes
  each: 2.2 GB at 5 million, 20.5 GB at 50 million), so it is left out, saying so, where the machine has not
  that much memory available.

Ratios are against the ceiling and the naive pipeline measured in the same run, so they hold on a noisy,
shared machine; CPU seconds (user + system, all threads) say what each case costs whatever else runs. A third
spendwatch row scans only the first 15 minutes (`window`), the issue's "scan of a 15-minute window of a
1,000-instance organisation within 1 GB".

The data: ~1,000 instances in 10 accounts and 2 regions (instance ids and interfaces come from CloudTrail
RunInstances files beside the flow logs, as in a real log archive), about 133,000 records a minute (2 million
per 15 minutes). Records are east-west service calls (55 %), calls to public AWS endpoints (20 %), internet
clients of 50 web-facing instances (8 %), rejected internet scans (5 %), DNS and NTP (8 %), NODATA lines
(4 %) and 3 miners holding Stratum sessions to pool addresses on ports 3333, 14444 and 4444 (one record per
leg and 5 minutes). Every connection uses a fresh ephemeral client port, as real clients do.

    .venv/bin/python bench/flows_scale.py [--records 5000000] [--cases text,parquet,window,naive]
    .venv/bin/python bench/flows_scale.py --records 50000000   # the big run (~5 GB of text to generate once)
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

T0 = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp())
RATE_PER_MINUTE = 2_000_000 / 15
SLOT = 300  # S3 delivery: one file per flow log every 5 minutes
WINDOW = 600  # the flow logs' aggregation interval
REGIONS = ("us-east-1", "eu-west-1")
ACCOUNTS = tuple(f"0{41 + i:02d}{i:09d}" for i in range(10))
HEADER = ("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action "
          "log-status")
MINER_PORTS = (3333, 14444, 4444)
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "tmp" / "bench"


@dataclass
class Org:
    """The fixed part of the organisation: instances, their peers, and who mines."""

    account: np.ndarray  # per instance: index into ACCOUNTS
    region: np.ndarray  # per instance: index into REGIONS
    eni: np.ndarray  # "eni-..." per instance
    instance: np.ndarray  # "i-..." per instance
    ip: np.ndarray  # private IPv4 as uint32
    services: np.ndarray  # private service addresses (uint32) and their ports
    service_ports: np.ndarray
    endpoints: np.ndarray  # public AWS endpoint addresses
    clients: np.ndarray  # internet client addresses (popular ones first)
    web: np.ndarray  # indices of web-facing instances
    miners: np.ndarray  # indices of mining instances
    pools: np.ndarray  # one pool address per miner


def _hex(rng: np.random.Generator, prefix: str, n: int) -> np.ndarray:
    digits = np.array(list("0123456789abcdef"))
    return np.array([prefix + "".join(row) for row in digits[rng.integers(0, 16, size=(n, 17))]])


def _ip(a: int, b: np.ndarray | int, c: np.ndarray | int, d: np.ndarray | int) -> np.ndarray:
    return ((a << 24) | (np.asarray(b, dtype=np.uint32) << 16) | (np.asarray(c, dtype=np.uint32) << 8)
            | np.asarray(d, dtype=np.uint32)).astype(np.uint32)


def build_org(seed: int, instances: int = 1000) -> Org:
    rng = np.random.default_rng(seed)
    n = instances
    services = _ip(10, rng.integers(0, 40, 150), rng.integers(0, 256, 150), rng.integers(4, 250, 150))
    public_first = np.array([52, 54, 3, 18, 35], dtype=np.uint32)
    endpoints = ((public_first[rng.integers(0, 5, 300)] << 24) | rng.integers(0, 1 << 24, 300).astype(np.uint32))
    clients = ((rng.integers(60, 200, 200_000).astype(np.uint32) << 24)
               | rng.integers(0, 1 << 24, 200_000).astype(np.uint32))
    miners = rng.choice(n, 3, replace=False)
    return Org(
        account=rng.integers(0, len(ACCOUNTS), n), region=rng.integers(0, len(REGIONS), n),
        eni=_hex(rng, "eni-", n), instance=_hex(rng, "i-", n),
        ip=_ip(10, rng.integers(0, 40, n), rng.integers(0, 256, n), rng.integers(4, 250, n)),
        services=services, service_ports=rng.choice([443, 5432, 6379, 8080, 9092, 3306, 27017], 150),
        endpoints=endpoints, clients=clients,
        web=rng.choice(np.setdiff1d(np.arange(n), miners), 50, replace=False), miners=miners,
        pools=np.array([_ip(203, 0, 113, 10 + i)[()] for i in range(3)], dtype=np.uint32),
    )


def _slot_records(org: Org, rng: np.random.Generator, slot_start: int, n: int) -> dict[str, np.ndarray]:
    """`n` records whose capture windows end in the 5-minute slot starting at `slot_start`."""
    kinds = rng.choice(7, size=n, p=[0.55, 0.20, 0.08, 0.05, 0.06, 0.02, 0.04])
    inst = rng.integers(0, len(org.eni), n)
    web = kinds == 2
    inst[web] = org.web[rng.integers(0, len(org.web), int(web.sum()))]
    local = org.ip[inst]
    remote = np.zeros(n, dtype=np.uint32)
    server_port = np.zeros(n, dtype=np.int64)
    protocol = np.full(n, 6, dtype=np.int64)
    # 0 east-west: each instance calls a stable handful of internal services
    k = kinds == 0
    svc = (inst[k] * 7 + rng.integers(0, 12, int(k.sum()))) % len(org.services)
    remote[k], server_port[k] = org.services[svc], org.service_ports[svc]
    # 1 public AWS endpoints (S3, STS, ECR ...) on 443
    k = kinds == 1
    remote[k] = org.endpoints[(inst[k] * 3 + rng.integers(0, 8, int(k.sum()))) % len(org.endpoints)]
    server_port[k] = 443
    # 2 internet clients of web-facing instances (popular clients come back often)
    k = kinds == 2
    remote[k] = org.clients[np.minimum(rng.zipf(1.3, int(k.sum())) - 1, len(org.clients) - 1)]
    server_port[k] = rng.choice([443, 80], int(k.sum()), p=[0.9, 0.1])
    # 3 internet scans, rejected: random sources, random low ports
    k = kinds == 3
    remote[k] = rng.integers(1 << 24, 223 << 24, int(k.sum())).astype(np.uint32)
    server_port[k] = rng.choice([22, 23, 445, 3389, 8080, 1433, 5900], int(k.sum()))
    # 4 DNS to the VPC resolver, 5 NTP to the Amazon Time Sync Service
    k = kinds == 4
    remote[k], server_port[k], protocol[k] = (local[k] & 0xFFFF0000) | 2, 53, 17
    k = kinds == 5
    remote[k], server_port[k], protocol[k] = _ip(169, 254, 169, 123)[()], 123, 17
    client_port = rng.integers(32768, 61000, n)
    # Who is the client: the instance, except for internet clients and scans coming in.
    incoming = (kinds == 2) | (kinds == 3)
    request = rng.random(n) < 0.5  # the request leg, or the reply leg of the same connection
    from_local = np.where(incoming, ~request, request)
    local_port = np.where(incoming, server_port, client_port)
    remote_port = np.where(incoming, client_port, server_port)
    packets = np.maximum(1, rng.lognormal(2.5, 1.2, n)).astype(np.int64)
    size = np.where(protocol == 17, rng.integers(60, 120, n), rng.integers(60, 1400, n))
    window_end = slot_start + rng.integers(0, SLOT, n)
    start = window_end - rng.integers(30, WINDOW, n)
    out = {
        "account": org.account[inst], "region": org.region[inst], "eni": inst,
        "src": np.where(from_local, local, remote), "dst": np.where(from_local, remote, local),
        "srcport": np.where(from_local, local_port, remote_port),
        "dstport": np.where(from_local, remote_port, local_port),
        "protocol": protocol, "packets": packets, "bytes": packets * size, "start": start, "end": window_end,
        "action": np.where(kinds == 3, 1, 0), "nodata": kinds == 6,
    }
    return _with_miners(org, rng, slot_start, out)


def _with_miners(org: Org, rng: np.random.Generator, slot_start: int,
                 recs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each miner keeps one Stratum session per pool: ~130-byte messages, a few KB a minute, both legs."""
    rows: dict[str, list[int]] = {k: [] for k in recs}
    for i, m in enumerate(org.miners):
        port = 40000 + int(m) % 20000  # one long-lived session: the same client port all along
        for from_local in (True, False):
            packets = int(rng.integers(25, 40))
            src, dst = (org.ip[m], org.pools[i]) if from_local else (org.pools[i], org.ip[m])
            sport, dport = (port, MINER_PORTS[i]) if from_local else (MINER_PORTS[i], port)
            for key, value in (("account", org.account[m]), ("region", org.region[m]), ("eni", m), ("src", src),
                               ("dst", dst), ("srcport", sport), ("dstport", dport), ("protocol", 6),
                               ("packets", packets), ("bytes", packets * int(rng.integers(110, 150))),
                               ("start", slot_start), ("end", slot_start + SLOT - 1),
                               ("action", 0), ("nodata", False)):
                rows[key].append(int(value))
    return {k: np.concatenate([v, np.asarray(rows[k], dtype=v.dtype)]) for k, v in recs.items()}


def _dotted(values: np.ndarray) -> np.ndarray:
    """Dotted-quad text of IPv4 addresses given as integers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    v = values.astype(np.int64)
    parts = [pc.cast(pa.array((v >> s) & 255), pa.string()) for s in (24, 16, 8, 0)]
    return np.asarray(pc.binary_join_element_wise(*parts, ".").to_numpy(zero_copy_only=False), dtype=object)


def _lines(org: Org, recs: dict[str, np.ndarray], rows: np.ndarray) -> bytes:
    """Space-separated v2 records, `-` for the fields of a NODATA record."""
    import pyarrow as pa
    import pyarrow.compute as pc

    r = {k: v[rows] for k, v in recs.items()}
    acct = np.asarray(ACCOUNTS)[r["account"]]
    text = [pa.array(np.full(len(rows), "2")), pa.array(acct), pa.array(org.eni[r["eni"]]),
            pa.array(_dotted(r["src"])), pa.array(_dotted(r["dst"]))]
    text += [pc.cast(pa.array(r[k]), pa.string()) for k in ("srcport", "dstport", "protocol", "packets", "bytes",
                                                              "start", "end")]
    text += [pa.array(np.where(r["action"] == 1, "REJECT", "ACCEPT")), pa.array(np.full(len(rows), "OK"))]
    nodata = r["nodata"]
    if nodata.any():
        dash = pa.array(np.where(nodata, "-", ""))
        for i in (3, 4, 5, 6, 7, 8, 9, 12):
            text[i] = pc.if_else(pa.array(nodata), dash, text[i])
        text[13] = pa.array(np.where(nodata, "NODATA", "OK"))
    line = pc.binary_join_element_wise(*text, " ")
    return (HEADER + "\n" + "\n".join(line.to_pylist()) + "\n").encode()


def _parquet_table(org: Org, recs: dict[str, np.ndarray], rows: np.ndarray):  # -> pa.Table
    """The Parquet delivery option's columns and types; NODATA fields are nulls."""
    import pyarrow as pa

    r = {k: v[rows] for k, v in recs.items()}
    nodata = r["nodata"]

    def col(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        return pa.array(values, typ, mask=nodata)

    return pa.table({
        "version": pa.array(np.full(len(rows), 2), pa.int32()),
        "account_id": pa.array(np.asarray(ACCOUNTS)[r["account"]]),
        "interface_id": pa.array(org.eni[r["eni"]]),
        "srcaddr": col(_dotted(r["src"]), pa.string()), "dstaddr": col(_dotted(r["dst"]), pa.string()),
        "srcport": col(r["srcport"], pa.int32()), "dstport": col(r["dstport"], pa.int32()),
        "protocol": col(r["protocol"], pa.int32()), "packets": col(r["packets"], pa.int64()),
        "bytes": col(r["bytes"], pa.int64()), "start": pa.array(r["start"], pa.int64()),
        "end": pa.array(r["end"], pa.int64()),
        "action": col(np.where(r["action"] == 1, "REJECT", "ACCEPT"), pa.string()),
        "log_status": pa.array(np.where(nodata, "NODATA", "OK")),
    })


def _key(kind: str, account: str, region: str, slot: int, suffix: str) -> str:
    t = datetime.fromtimestamp(slot + SLOT, UTC)
    flow_log = f"fl-{int(account) % 9973:04x}{REGIONS.index(region)}abc"
    return (f"{kind}/AWSLogs/{account}/vpcflowlogs/{region}/{t:%Y/%m/%d}/"
            f"{account}_vpcflowlogs_{region}_{flow_log}_{t:%Y%m%dT%H%MZ}_{slot % 99991:08x}.log.{suffix}")


def _trail(org: Org) -> dict[str, bytes]:
    """One CloudTrail file per account and region with the RunInstances of its instances (a day before)."""
    launched = T0 - 86_400
    files: dict[str, list[dict[str, object]]] = {}
    for i in range(len(org.eni)):
        account, region = ACCOUNTS[org.account[i]], REGIONS[org.region[i]]
        ip = _dotted(org.ip[i : i + 1])[0]
        event = {
            "eventVersion": "1.10", "eventTime": datetime.fromtimestamp(launched, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": "ec2.amazonaws.com", "eventName": "RunInstances", "awsRegion": region,
            "sourceIPAddress": "autoscaling.amazonaws.com", "userAgent": "autoscaling.amazonaws.com",
            "recipientAccountId": account, "eventID": f"{i:08x}-0000-4000-8000-000000000000",
            "userIdentity": {"type": "AWSService", "invokedBy": "autoscaling.amazonaws.com"},
            "requestParameters": {"instanceType": "m6i.large", "instancesSet": {"items": [
                {"imageId": "ami-0abcdef1234567890", "minCount": 1, "maxCount": 1}]}},
            "responseElements": {"instancesSet": {"items": [{
                "instanceId": str(org.instance[i]), "instanceType": "m6i.large", "launchTime": launched * 1000,
                "placement": {"availabilityZone": region + "a"}, "privateIpAddress": ip,
                "networkInterfaceSet": {"items": [{"networkInterfaceId": str(org.eni[i]), "privateIpAddress": ip,
                                                   "subnetId": "subnet-0a1b2c3d", "vpcId": "vpc-0a1b2c3d"}]}}]}},
        }
        t = datetime.fromtimestamp(launched, UTC)
        key = (f"AWSLogs/{account}/CloudTrail/{region}/{t:%Y/%m/%d}/"
               f"{account}_CloudTrail_{region}_{t:%Y%m%dT%H%MZ}_bench0000000000.json.gz")
        files.setdefault(key, []).append(event)
    return {k: gzip.compress(json.dumps({"Records": v}).encode(), 6) for k, v in files.items()}


def generate(root: Path, records: int, seed: int) -> dict[str, object]:
    """Write the organisation's flow logs under root/text and root/parquet (skipped when already complete)."""
    import pyarrow.parquet as pq

    done = root / "DONE.json"
    if done.exists():
        return dict(json.loads(done.read_text()))
    org = build_org(seed)
    rng = np.random.default_rng(seed + 1)
    per_slot = int(RATE_PER_MINUTE * SLOT / 60)
    slots = max(1, -(-records // per_slot))
    total = nodata = 0
    for kind in ("text", "parquet"):
        for key, body in _trail(org).items():
            path = root / kind / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for s in range(slots):
            n = (records - total if s == slots - 1 else per_slot) - 2 * len(org.miners)
            recs = _slot_records(org, rng, T0 + s * SLOT, max(n, 0))
            total += len(recs["end"])
            nodata += int(recs["nodata"].sum())
            group = recs["account"] * len(REGIONS) + recs["region"]
            order = np.argsort(group, kind="stable")
            bounds = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1], True])
            jobs = []
            for a, b in itertools.pairwise(bounds):
                rows = np.sort(order[a:b])
                g = int(group[rows[0]])
                account, region = ACCOUNTS[g // len(REGIONS)], REGIONS[g % len(REGIONS)]
                text, table = _lines(org, recs, rows), _parquet_table(org, recs, rows)
                for kind, suffix in (("text", "gz"), ("parquet", "parquet")):
                    target = root / _key(kind, account, region, T0 + s * SLOT, suffix)
                    target.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(table, root / _key("parquet", account, region, T0 + s * SLOT, "parquet"))
                path = root / _key("text", account, region, T0 + s * SLOT, "gz")
                jobs.append(pool.submit(path.write_bytes, gzip.compress(text, 6)))
            for job in jobs:
                job.result()
            print(f"\r  generated {total:,} records ({s + 1}/{slots} five-minute slots)", end="", file=sys.stderr,
                  flush=True)
    print(file=sys.stderr)
    info = {"records": total, "nodata": nodata, "slots": slots, "miners": [str(org.instance[m]) for m in org.miners],
            "window_slots": min(slots, 3)}
    done.write_text(json.dumps(info))
    return info


def window_dir(root: Path, slots: int) -> Path:
    """Hard links to the CloudTrail files and the first `slots` five-minute slots of text flow logs."""
    out = root / f"window-{slots}"
    if out.exists():
        return out
    last = datetime.fromtimestamp(T0 + slots * SLOT, UTC).strftime("%Y%m%dT%H%MZ")
    for path in sorted((root / "text").rglob("*")):
        if not path.is_file():
            continue
        name = path.name
        if "_vpcflowlogs_" in name and name.split("_")[-2] > last:
            continue
        target = out / path.relative_to(root / "text")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    return out


# ---- the cases, each run in a child process ------------------------------------------------------------------
def case_spendwatch(data: Path) -> dict[str, object]:
    from spendwatch.pipeline import scan_directory

    result = scan_directory(data, store=None, keep_tables=True)
    report = result.report
    return {"records": sum(s.records.get("flows", 0) for s in report.sources),
            "findings": [(f.resource, f.severity.label, f.rules) for f in result.findings],
            "problems": len(report.problems), "rule_rows": len(result.tables.flows) if result.tables else 0,
            "flows_note": next((n for n in report.notes if n.startswith("flows:")), ""),
            "timings": {k: round(v, 2) for k, v in report.timings.items()}}


def case_ceiling(data: Path) -> dict[str, object]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    flow_files = sorted(p for p in data.rglob("*") if "_vpcflowlogs_" in p.name)

    def text(path: Path) -> int:
        with pa.input_stream(str(path), compression="gzip") as fh:
            return pacsv.read_csv(fh, parse_options=pacsv.ParseOptions(delimiter=" "),
                                  convert_options=pacsv.ConvertOptions(null_values=["-"],
                                                                       strings_can_be_null=True)).num_rows

    def parquet(path: Path) -> int:
        return pq.read_table(path).num_rows

    with ThreadPoolExecutor(max_workers=2) as pool:
        rows = sum(pool.map(lambda p: parquet(p) if p.suffix == ".parquet" else text(p), flow_files))
    return {"records": rows}


def case_naive(data: Path) -> dict[str, object]:
    import pandas as pd

    flow_files = sorted(p for p in data.rglob("*") if "_vpcflowlogs_" in p.name)
    if flow_files and flow_files[0].suffix == ".parquet":
        frame = pd.concat([pd.read_parquet(p) for p in flow_files], ignore_index=True)
        frame.columns = [c.replace("_", "-") for c in frame.columns]
    else:
        frame = pd.concat([pd.read_csv(p, sep=" ", na_values="-") for p in flow_files], ignore_index=True)
    records = int((frame["log-status"] == "OK").sum())
    frame = frame[frame["log-status"] == "OK"]
    agg = frame.groupby(["interface-id", "dstaddr", "dstport", "protocol", "action"]).agg(
        bytes=("bytes", "sum"), packets=("packets", "sum"), flows=("bytes", "size"), first=("start", "min"),
        last=("end", "max"))
    return {"records": records, "aggregate_rows": len(agg)}


STAND_IN_MEMORY = "512MB"  # DuckDB standing in for Athena in the `pushdown` case (50 M: 16 s; 12.8 s with 4GB)


def case_pushdown(data: Path) -> dict[str, object]:
    """What `scan --engine athena` brings back: the push-down queries (spendwatch.engine.sql, translated to
    Athena's dialect and back, as the tests check) run by DuckDB over the Parquet files as the documented
    Athena table, standing in for the warehouse. Its time is DuckDB's on this machine, not Athena's."""
    import duckdb

    from spendwatch.engine.sql import pushdown_sql, totals_sql, translate

    flow_files = sorted(str(p) for p in data.rglob("*") if "_vpcflowlogs_" in p.name)
    con = duckdb.connect(config={"memory_limit": STAND_IN_MEMORY})
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in flow_files)
    # The bench writes version 2 logs: the DDL's version 3-5 columns read as NULL; its partition `date` is the
    # day a file was delivered (here: the day its records end).
    con.execute(f"CREATE VIEW vpc_flow_logs AS SELECT *, CAST(NULL AS VARCHAR) AS region, CAST(NULL AS VARCHAR) "
                f"AS instance_id, CAST(NULL AS VARCHAR) AS flow_direction, CAST(to_timestamp(\"end\") AS DATE) "
                f"AS \"date\" FROM read_parquet([{listed}])")

    def run(sql: str) -> object:  # through Athena's dialect and back, as the warehouse would get it
        import sqlglot

        return con.sql(sqlglot.transpile(translate(sql, "athena"), read="athena", write="duckdb")[0]).to_arrow_table()

    window = {"table": "vpc_flow_logs", "start_s": T0 - 86_400, "end_s": T0 + 30 * 86_400}
    started = time.perf_counter()
    totals = run(totals_sql("vpc_flow_logs", **window)).to_pylist()[0]  # type: ignore[attr-defined]
    rows = run(pushdown_sql("vpc_flow_logs", latest_end_ns=totals["latest_end_ns"], **window))
    stand_in_s = time.perf_counter() - started
    return {"records": int(totals["records"]), "rows_back": rows.num_rows, "stand_in_s": stand_in_s,  # type: ignore[attr-defined]
            "bytes_back": rows.nbytes, "parquet_bytes": sum(Path(f).stat().st_size for f in flow_files),  # type: ignore[attr-defined]
            **athena_client_side(rows, data.parent / ATHENA_RESULT), **bigquery_client_side(rows)}  # type: ignore[arg-type]


ATHENA_RESULT = "athena-result.csv"  # the push-down rows as Athena's result file, beside text/ and parquet/
UNLOAD_FILES = "unload"  # the same rows as UNLOAD's gzip Parquet files, a folder beside it


def athena_client_side(rows: object, keep: Path) -> dict[str, object]:
    """spendwatch's side of bringing Athena's rows back, both ways, with no network: parsing the result file
    Athena writes to S3 (its CSV), and converting GetQueryResults' pages of 1,000 rows (the time the stand-in
    spends making each page is left out). The calls a real Athena would answer: one GetObject, or a page each.
    The file is kept at `keep`, for the `into-engine` cases."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv

    from spendwatch.engine.remote import Athena, AthenaOptions, _csv_rows

    table: pa.Table = rows  # type: ignore[assignment]
    out = pa.BufferOutputStream()
    pacsv.write_csv(table, out, pacsv.WriteOptions(quoting_style="all_valid"))  # as Athena writes it
    csv = out.getvalue().to_pybytes()
    keep.write_bytes(csv)
    t0 = time.perf_counter()
    parsed = _csv_rows(io.BytesIO(csv), "bench", lambda batch: None)
    file_s = time.perf_counter() - t0

    info = [{"Name": f.name, "Type": "varchar" if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
             else "bigint"} for f in table.schema]
    making = 0.0

    class Pages:  # GetQueryResults, made from the table page by page
        calls = 0

        def get_query_results(self, QueryExecutionId: str, MaxResults: int, NextToken: str | None = None) -> dict:
            nonlocal making
            started = time.perf_counter()
            Pages.calls += 1
            offset = int(NextToken or 0)
            part = table.slice(max(offset - 1, 0), MaxResults - (offset == 0)).to_pylist()
            page = [{"Data": [{"VarCharValue": c["Name"]} for c in info]}] if offset == 0 else []
            page += [{"Data": [{} if v is None else {"VarCharValue": str(v)} for v in row.values()]} for row in part]
            answer: dict = {"ResultSet": {"Rows": page, "ResultSetMetadata": {"ColumnInfo": info}}}
            if offset + MaxResults < table.num_rows + 1:
                answer["NextToken"] = str(offset + MaxResults)
            making += time.perf_counter() - started
            return answer

    t0 = time.perf_counter()
    paged = sum(t.num_rows for t in Athena(AthenaOptions(), client=Pages(), s3=object())._pages("bench"))
    pages_s = time.perf_counter() - t0 - making
    # UNLOAD's way: the rows as gzip Parquet files of about a million rows (Athena writes several in parallel),
    # read through Athena.unloaded from a stand-in S3 that hands over the bytes.
    import pyarrow.parquet as pq

    destination = "s3://bench/unload/"
    objects: dict[str, bytes] = {}
    for i, start in enumerate(range(0, table.num_rows, 1 << 20)):
        out = pa.BufferOutputStream()
        pq.write_table(table.slice(start, 1 << 20), out, compression="gzip")
        objects[f"{destination}{i:05d}"] = out.getvalue().to_pybytes()
    objects["s3://bench/q-manifest.csv"] = "".join(f"{k}\n" for k in objects).encode()
    unload_dir = keep.parent / UNLOAD_FILES  # kept for the `files` and `batches` cases
    unload_dir.mkdir(exist_ok=True)
    for stale in unload_dir.glob("*.parquet"):
        stale.unlink()
    for key, body in objects.items():
        if key.startswith(destination):
            (unload_dir / f"{key.rsplit('/', 1)[1]}.parquet").write_bytes(body)

    class S3:  # GetObject, counted
        calls = 0

        def get_object(self, Bucket: str, Key: str) -> dict:
            S3.calls += 1
            return {"Body": io.BytesIO(objects[f"s3://{Bucket}/{Key}"])}

    t0 = time.perf_counter()
    unloaded, _ = Athena(AthenaOptions(), client=object(), s3=S3()).unloaded(
        "bench", {"Statistics": {"DataManifestLocation": "s3://bench/q-manifest.csv"}}, destination, lambda rows: None)
    unload_s = time.perf_counter() - t0
    assert parsed == paged == unloaded == table.num_rows
    parquet = sum(len(body) for key, body in objects.items() if key.startswith(destination))
    return {"file_s": file_s, "file_mb": len(csv) / 1e6, "pages_s": pages_s, "page_calls": Pages.calls,
            "unload_s": unload_s, "unload_mb": parquet / 1e6, "unload_calls": S3.calls}


def bigquery_client_side(table: object, page_rows: int = 40_000) -> dict[str, object]:
    """BigQuery's rows on spendwatch's side, with no network: google-cloud-bigquery turning REST result pages
    (JSON, every value a string, as jobs.getQueryResults answers) into Arrow, as `RowIterator.to_arrow_iterable`
    does without the Storage Read API, which spendwatch does not use. Two ways: the 19 columns as they are
    (`plain`), and each row packed into one CSV line as the rows query asks for (`sql.packed_row`, computed
    here by DuckDB), then unpacked by `remote.unpack_rows` (`packed`). The JSON is parsed inside the timing,
    as the client parses each response; making the pages is left out. Uses the library's page converters
    (`_row_iterator_page_columns`, `download_arrow_row_iterator`), the functions the iterator itself calls."""
    import json

    import duckdb
    import pyarrow as pa
    from google.cloud.bigquery import SchemaField
    from google.cloud.bigquery._pandas_helpers import download_arrow_row_iterator
    from google.cloud.bigquery.table import _row_iterator_page_columns

    from spendwatch.engine.remote import unpack_rows
    from spendwatch.engine.sql import packed_row

    rows: pa.Table = table  # type: ignore[assignment]
    con = duckdb.connect()
    con.register("rows_back", rows)
    packed = con.sql(f"SELECT {packed_row()} AS line FROM rows_back").to_arrow_table()
    out: dict[str, object] = {}
    for way, data in (("plain", rows), ("packed", packed)):
        schema = [SchemaField(f.name, "INT64" if pa.types.is_integer(f.type) else "STRING") for f in data.schema]
        bodies = []
        for start in range(0, data.num_rows, page_rows):
            part = data.slice(start, page_rows).to_pylist()
            bodies.append(json.dumps({"rows": [{"f": [{"v": None if v is None else str(v)} for v in row.values()]}
                                               for row in part], "totalRows": str(data.num_rows)}))

        class Page:  # what the iterator hands the converter: the rows, and their columns made lazily
            def __init__(self, body: str, schema: list = schema) -> None:  # type: ignore[type-arg]
                response = json.loads(body)
                self.rows = response.get("rows", [])
                self._columns = _row_iterator_page_columns(schema, response)

            def __iter__(self):  # type: ignore[no-untyped-def]
                return iter(self.rows)

        t0 = time.perf_counter()
        converted = 0
        for batch in download_arrow_row_iterator((Page(b) for b in bodies), schema):
            page = pa.Table.from_batches([batch])
            converted += (unpack_rows(page, "bench") if way == "packed" else page).num_rows
        out[f"bq_{way}_s"] = time.perf_counter() - t0
        out[f"bq_{way}_mb"] = sum(len(b) for b in bodies) / 1e6
        out["bq_pages"] = len(bodies)
        assert converted == rows.num_rows
    # EXPORT DATA's way (`export_uri`): the rows as gzip Parquet files of about a million rows, read through
    # BigQuery.exported from a stand-in Cloud Storage client that hands over the bytes (a listing, a fetch a file).
    import io

    import pyarrow.parquet as pq

    from spendwatch.engine.remote import BigQuery, BigQueryOptions

    objects: dict[str, bytes] = {}
    for i, start in enumerate(range(0, rows.num_rows, 1 << 20)):
        buffer = pa.BufferOutputStream()
        pq.write_table(rows.slice(start, 1 << 20), buffer, compression="gzip")
        objects[f"export/{i:012d}.parquet"] = buffer.getvalue().to_pybytes()

    class Blob:
        def __init__(self, name: str) -> None:
            self.name = name

        def download_to_file(self, file: io.IOBase, **_: object) -> None:
            Storage.calls += 1
            file.write(objects[self.name])

    class Storage:  # list_blobs and each blob's download, counted
        calls = 0

        def list_blobs(self, bucket: str, prefix: str) -> list[Blob]:
            Storage.calls += 1
            return [Blob(n) for n in objects if n.startswith(prefix)]

    t0 = time.perf_counter()
    exported, _ = BigQuery(BigQueryOptions(), "p.d.t", client=object(), storage=Storage()).exported(
        "bench", "gs://bench/export/", lambda got: None)
    out["bq_export_s"] = time.perf_counter() - t0
    out["bq_export_mb"] = sum(len(b) for b in objects.values()) / 1e6
    out["bq_export_calls"] = Storage.calls
    assert exported == rows.num_rows
    return out


NAIVE_BYTES_PER_RECORD = 440  # peak RSS of the naive case over its records: 438 at 5 M, 410 at 50 M


def available_memory() -> int | None:
    """Bytes of memory the kernel says are available now (MemAvailable); None where it does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def case_stream(path: Path) -> dict[str, object]:
    """Athena's rows into the FlowEngine as a scan takes them: streamed from the result file in blocks."""
    from spendwatch.engine.flows import FlowEngine
    from spendwatch.engine.remote import _csv_rows

    with FlowEngine() as engine, path.open("rb") as body:
        rows = _csv_rows(body, str(path), lambda batch: engine.append(batch, records=0))
        engine.flush()
    return {"records": rows, "into_engine": "streamed from the result file"}


def case_whole(path: Path) -> dict[str, object]:
    """The same rows taken whole first, as the pages used to be (as Arrow here, lighter than the pages' Python
    values), then added to the FlowEngine: the baseline for `case_stream`."""
    import pyarrow.csv as pacsv

    from spendwatch.engine.flows import LAYOUT, SCHEMA, FlowEngine
    from spendwatch.engine.remote import _csv_options, to_schema

    table = to_schema(pacsv.read_csv(path, **_csv_options({c: SCHEMA.field(c).type for c in LAYOUT}, list(LAYOUT))),
                      str(path))
    with FlowEngine() as engine:
        engine.append(table, records=0)
        engine.flush()
    return {"records": table.num_rows, "into_engine": "taken whole, then added"}


def case_files(folder: Path) -> dict[str, object]:
    """UNLOAD's (or EXPORT DATA's) Parquet files into the FlowEngine as a scan takes them: each read by DuckDB
    itself (FlowEngine.insert_parquet), no row through Python."""
    from spendwatch.engine.flows import FlowEngine

    with FlowEngine() as engine:
        rows = sum(engine.insert_parquet(str(f), str(f)) for f in sorted(folder.glob("*.parquet")))
    return {"records": rows, "into_engine": "read from the Parquet files by the engine itself"}


def case_batches(folder: Path) -> dict[str, object]:
    """The same files handed over batch by batch through Python (what a caller without an engine gets): the
    baseline for `case_files`."""
    from spendwatch.engine.flows import FlowEngine
    from spendwatch.engine.remote import _Handover

    with FlowEngine() as engine:
        handed = _Handover(lambda batch: engine.append(batch, records=0), None)
        for f in sorted(folder.glob("*.parquet")):
            with f.open("rb+") as spill:
                spill.seek(0, 2)
                handed.file(spill, str(f))
        engine.flush()
    return {"records": handed.rows, "into_engine": "handed over from the Parquet files batch by batch"}


CASES = {"spendwatch": case_spendwatch, "ceiling": case_ceiling, "naive": case_naive, "pushdown": case_pushdown,
         "stream": case_stream, "whole": case_whole, "files": case_files, "batches": case_batches}


def run_child(case: str, data: Path, cores: int | None) -> dict[str, object]:
    """Run one case in a fresh interpreter; its wall time, CPU time and peak RSS (of that child alone)."""
    cmd = [sys.executable, __file__, "--child", case, "--data", str(data)]
    pre = None
    if cores:
        pre = lambda: os.sched_setaffinity(0, set(range(cores)))  # noqa: E731
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, preexec_fn=pre)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"case {case} on {data} failed (exit {os.waitstatus_to_exitcode(status)})")
    result = dict(json.loads(out.decode().strip().splitlines()[-1]))
    result.update(seconds=seconds, cpu=usage.ru_utime + usage.ru_stime, peak_mb=usage.ru_maxrss / 1024)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the generated files are cached")
    parser.add_argument("--cases", default="text,parquet,window,naive,pushdown,startup",
                        help="comma-separated: text, parquet (spendwatch and the ceiling on each), window (the "
                             "first 15 minutes), naive (pandas on text and Parquet), pushdown (the rows "
                             "`scan --engine athena` brings back), startup (`spendwatch --help` and a scan of "
                             "an empty directory, against the bare interpreter)")
    parser.add_argument("--cores", type=int, default=2, help="CPU cores the children may use (default 2)")
    parser.add_argument("--child", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CASES[args.child](args.data)))
        return 0

    root = args.dir / f"flows-{args.records}-{args.seed}"
    t0 = time.perf_counter()
    info = generate(root, args.records, args.seed)
    size = {k: sum(p.stat().st_size for p in (root / k).rglob("*") if "_vpcflowlogs_" in p.name) / 1e6
            for k in ("text", "parquet")}
    print(f"data: {info['records']:,} v2 flow records ({info['nodata']:,} NODATA) from 1,000 instances, "
          f"{size['text']:,.0f} MB gzip text, {size['parquet']:,.0f} MB Parquet, in {root} "
          f"(ready in {time.perf_counter() - t0:.0f} s); cores: {args.cores}")
    wanted = set(args.cases.split(","))
    available, needed = available_memory(), args.records * NAIVE_BYTES_PER_RECORD
    if "naive" in wanted and available is not None and available < needed:
        wanted.discard("naive")
        print(f"naive pandas left out: it would need about {needed / 1e9:.1f} GB of memory, "
              f"{available / 1e9:.1f} GB available")
    rows: list[tuple[str, dict[str, object]]] = []
    for fmt in ("text", "parquet"):
        if fmt in wanted:
            rows.append((f"ceiling, pyarrow ({fmt})", run_child("ceiling", root / fmt, args.cores)))
            rows.append((f"spendwatch ({fmt})", run_child("spendwatch", root / fmt, args.cores)))
        if "naive" in wanted:
            rows.append((f"naive pandas ({fmt})", run_child("naive", root / fmt, args.cores)))
    if "pushdown" in wanted:
        rows.append(("push-down rows (parquet)", run_child("pushdown", root / "parquet", args.cores)))
        for case in ("whole", "stream"):
            rows.append((f"Athena's rows into the engine ({case})", run_child(case, root / ATHENA_RESULT, args.cores)))
        for case in ("batches", "files"):
            rows.append((f"UNLOAD's files into the engine ({case})", run_child(case, root / UNLOAD_FILES, args.cores)))
    if "window" in wanted:
        slots = int(info["window_slots"])  # type: ignore[call-overload]
        window = window_dir(root, slots)
        rows.append(("ceiling, pyarrow (15-min window)", run_child("ceiling", window, args.cores)))
        rows.append(("spendwatch (15-min window)", run_child("spendwatch", window, args.cores)))
    print_table(rows, info)
    if "startup" in wanted:
        print_startup(startup(args.cores))
    return 0


STARTUP_RUNS = 7


def startup(cores: int | None, runs: int = STARTUP_RUNS) -> dict[str, list[float]]:
    """Wall seconds of `runs` fresh processes each: the bare interpreter (the baseline), `spendwatch --help`, and
    `spendwatch scan` of an empty directory (a scan's fixed start: imports, the run report, no forest), which is
    what a function's cold start pays before reading anything."""
    import tempfile

    pre = (lambda: os.sched_setaffinity(0, set(range(cores)))) if cores else None
    with tempfile.TemporaryDirectory() as empty:
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "spendwatch --help": [sys.executable, "-m", "spendwatch", "--help"],
            "spendwatch scan (empty directory)": [sys.executable, "-m", "spendwatch", "scan", "--data", empty,
                                                  "--no-progress"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):  # interleaved, so a noisy moment hits every command alike
            for name, cmd in commands.items():
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, preexec_fn=pre)
                times[name].append(time.perf_counter() - t0)
    return times


def print_startup(times: dict[str, list[float]]) -> None:
    base = float(np.median(times["python -c pass"]))
    print(f"\n{'start-up (' + str(len(next(iter(times.values())))) + ' runs each)':<34} {'median s':>9} "
          f"{'min s':>7}  over the bare interpreter")
    for name, values in times.items():
        median = float(np.median(values))
        extra = f"+{median - base:.2f} s" if name != "python -c pass" else "(baseline)"
        print(f"{name:<34} {median:>9.2f} {min(values):>7.2f}  {extra}")


def print_table(rows: list[tuple[str, dict[str, object]]], info: dict[str, object]) -> None:
    """Records/s counts every line of the flow files (NODATA too), the ceiling's count, so rates compare."""
    if not rows:
        return
    by = dict(rows)

    def lines(name: str) -> int:
        return int(by["ceiling, pyarrow (" + name.split("(")[-1]]["records"])  # type: ignore[call-overload]

    print(f"\n{'case':<34} {'records':>12} {'seconds':>8} {'CPU s':>7} {'records/s':>12} {'peak RSS':>9}  ratios")
    for name, r in rows:
        if "rows_back" in r or "into_engine" in r:  # not a scan: its own line below
            continue
        rate = lines(name) / float(r["seconds"])  # type: ignore[arg-type]
        ratios = []
        fmt = name.split("(")[-1]
        for base, label in ((f"ceiling, pyarrow ({fmt}", "of the ceiling"), (f"naive pandas ({fmt}", "x naive")):
            if base in by and base != name and not name.startswith("ceiling"):
                ratios.append(f"{rate / (lines(base) / float(by[base]['seconds'])):.2f} {label}")  # type: ignore[arg-type]
        print(f"{name:<34} {lines(name):>12,} {float(r['seconds']):>8.2f} {float(r['cpu']):>7.1f} "  # type: ignore[arg-type]
              f"{rate:>12,.0f} {float(r['peak_mb']):>7,.0f} MB  {', '.join(ratios)}")  # type: ignore[arg-type]
    for name, r in rows:
        if "rows_back" in r:
            records, back = int(r["records"]), int(r["rows_back"])  # type: ignore[call-overload]
            print(f"{name}: {records:,} data records in the warehouse, {back:,} aggregate rows brought back "
                  f"({back / max(records, 1):.1%} of the records; {int(r['bytes_back']) / 1e6:,.0f} MB as Arrow "  # type: ignore[call-overload]
                  f"vs {int(r['parquet_bytes']) / 1e6:,.0f} MB of Parquet); DuckDB, standing in for Athena with "
                  f"{STAND_IN_MEMORY}, ran both queries here in {float(r['stand_in_s']):.2f} s (the case's seconds "  # type: ignore[arg-type]
                  "also hold the client-side measurements below)")
            file_s, pages_s = float(r["file_s"]), float(r["pages_s"])  # type: ignore[arg-type]
            print(f"{name}: Athena's rows on spendwatch's side: the result file ({float(r['file_mb']):,.0f} MB of "  # type: ignore[arg-type]
                  f"CSV, 1 GetObject) parsed in {file_s:.2f} s; GetQueryResults' pages ({int(r['page_calls']):,} "  # type: ignore[call-overload]
                  f"calls) converted in {pages_s:.2f} s, {pages_s / max(file_s, 1e-9):.0f}x the file, network left out")
            unload_s = float(r["unload_s"])  # type: ignore[arg-type]
            print(f"{name}: through UNLOAD (the default): {float(r['unload_mb']):,.0f} MB of gzip Parquet "  # type: ignore[arg-type]
                  f"({float(r['file_mb']) / max(float(r['unload_mb']), 1e-9):.1f}x less than the CSV; "  # type: ignore[arg-type]
                  f"{int(r['unload_calls'])} GetObject with the manifest) read in {unload_s:.2f} s, "  # type: ignore[call-overload]
                  f"{unload_s / max(file_s, 1e-9):.2f}x the CSV file's time")
            plain_s, packed_s = float(r["bq_plain_s"]), float(r["bq_packed_s"])  # type: ignore[arg-type]
            print(f"{name}: BigQuery's rows on spendwatch's side (REST pages, no Storage Read API, network left "
                  f"out; {int(r['bq_pages']):,} pages): packed one CSV line a row (the default) "  # type: ignore[call-overload]
                  f"{float(r['bq_packed_mb']):,.0f} MB of JSON in {packed_s:.2f} s, against 19 values a row "  # type: ignore[arg-type]
                  f"{float(r['bq_plain_mb']):,.0f} MB in {plain_s:.2f} s ({plain_s / max(packed_s, 1e-9):.1f}x)")  # type: ignore[arg-type]
            export_s = float(r["bq_export_s"])  # type: ignore[arg-type]
            print(f"{name}: through EXPORT DATA (with export_uri): {float(r['bq_export_mb']):,.0f} MB of gzip Parquet "  # type: ignore[arg-type]
                  f"({int(r['bq_export_calls'])} Cloud Storage calls with the listing) read in {export_s:.2f} s, "  # type: ignore[call-overload]
                  f"{packed_s / max(export_s, 1e-9):.1f}x faster than the packed pages")
        if "into_engine" in r:
            print(f"{name}: {int(r['records']):,} rows {r['into_engine']} in {float(r['seconds']):.2f} s, "  # type: ignore[call-overload, arg-type]
                  f"peak RSS {float(r['peak_mb']):,.0f} MB")  # type: ignore[arg-type]
        if "findings" in r:
            found = {res for res, sev, _ in r["findings"]}  # type: ignore[union-attr]
            miners = info["miners"]
            print(f"{name}: {len(r['findings'])} findings, miners found {sum(m in found for m in miners)}/"  # type: ignore[arg-type]
                  f"{len(miners)}, {r['problems']} problems; {r['flows_note']}; stages (s): "
                  f"{r.get('timings')}")


if __name__ == "__main__":
    sys.exit(main())
