"""The simulator writes AWS's native formats (formats.md), deterministically, with the incidents it reports.

These tests read the files with plain parsers of their own (not the connector), so they check the written
bytes against the spec rather than against another reading of it. One small org is built per module.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from spendwatch import catalog
from spendwatch.simulate import Truth, simulate

SMALL = {"days": 1.0, "instances": 20}

LAYOUTS = {
    "flows": re.compile(r"^acme-flow-logs/AWSLogs/(\d{12})/vpcflowlogs/([a-z0-9-]+)/(\d{4})/(\d{2})/(\d{2})/"
                        r"\1_vpcflowlogs_\2_fl-[0-9a-f]{17}_\3\4\5T\d{4}Z_[0-9a-f]{8}\.log\.gz$"),
    "trail": re.compile(r"^acme-org-trail/AWSLogs/o-[a-z0-9]{10}/(\d{12})/CloudTrail/([a-z0-9-]+)/"
                        r"(\d{4})/(\d{2})/(\d{2})/\1_CloudTrail_\2_\3\4\5T\d{4}Z_[A-Za-z0-9]{16}\.json\.gz$"),
    "dns": re.compile(r"^acme-dns-logs/AWSLogs/(\d{12})/vpcdnsquerylogs/(vpc-[0-9a-f]{17})/(\d{4})/(\d{2})/(\d{2})/"
                      r"\1_vpcdnsquerylogs_\2_\3\4\5T\d{4}Z_[0-9a-f]{8}\.log\.gz$"),
    "cur": re.compile(r"^acme-billing/cur2/(acme-cur2)/data/BILLING_PERIOD=\d{4}-\d{2}/\1-00001\.snappy\.parquet$"),
    "manifest": re.compile(r"^acme-billing/cur2/(acme-cur2)/metadata/BILLING_PERIOD=\d{4}-\d{2}/\1-Manifest\.json$"),
    "metrics": re.compile(r"^acme-metrics/metric-streams/[a-z0-9-]+/(\d{4})/(\d{2})/(\d{2})/(\d{2})/"
                          r"[a-z0-9-]+-\d+-\1-\2-\3-\4-\d{2}-\d{2}-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\.gz$"),
}


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Truth:
    return simulate(tmp_path_factory.mktemp("org"), **SMALL)


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def flows(root: Path) -> pd.DataFrame:
    """Every flow record, typed, with the file's header as column names (formats differ per account)."""
    frames = []
    for f in sorted(root.glob("acme-flow-logs/**/*.log.gz")):
        frames.append(pd.read_csv(io.BytesIO(gzip.decompress(f.read_bytes())), sep=" ", dtype=str,
                                  keep_default_na=False))
    df = pd.concat(frames, ignore_index=True)
    ok = df["log-status"] == "OK"
    for c in ("srcport", "dstport", "packets", "bytes", "start", "end"):
        df[c] = pd.to_numeric(df[c].where(ok))
    return df


def trail(root: Path) -> list[dict]:
    out: list[dict] = []
    for f in sorted(root.glob("acme-org-trail/**/*.json.gz")):
        out += json.loads(gzip.decompress(f.read_bytes()))["Records"]
    return out


def dns(root: Path) -> list[dict]:
    out = []
    for f in sorted(root.glob("acme-dns-logs/**/*.log.gz")):
        out += [json.loads(x) for x in gzip.decompress(f.read_bytes()).decode().splitlines()]
    return out


def metrics(root: Path) -> pd.DataFrame:
    rows = []
    for f in sorted(root.glob("acme-metrics/**/*.gz")):
        rows += [json.loads(x) for x in gzip.decompress(f.read_bytes()).decode().splitlines()]
    df = pd.DataFrame(rows)
    df["instance"] = df["dimensions"].map(lambda d: d["InstanceId"])
    df["avg"] = df["value"].map(lambda v: v["sum"] / v["count"])
    return df


def launches(events: list[dict]) -> dict[str, tuple[dict, dict]]:
    """instance id -> (RunInstances event, its instance item)."""
    out = {}
    for e in events:
        if e["eventName"] == "RunInstances" and e.get("responseElements"):
            for item in e["responseElements"]["instancesSet"]["items"]:
                out[item["instanceId"]] = (e, item)
    return out


def eni_of(events: list[dict]) -> dict[str, str]:
    return {n["networkInterfaceId"]: iid for iid, (_, item) in launches(events).items()
            for n in item["networkInterfaceSet"]["items"]}


# -- determinism -------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes(org: Truth, tmp_path: Path) -> None:
    again = simulate(tmp_path / "again", **SMALL)
    assert files(org.root) == files(again.root)
    for rel in files(org.root):
        assert (org.root / rel).read_bytes() == (again.root / rel).read_bytes(), rel
    assert again.incidents == org.incidents and again.flow_records == org.flow_records


def test_different_seed_differs(org: Truth, tmp_path: Path) -> None:
    other = simulate(tmp_path / "other", seed=8, **SMALL)
    assert other.incidents[0].resources != org.incidents[0].resources
    a = sorted(org.root.glob("acme-billing/**/*.parquet"))[0].read_bytes()
    b = sorted(other.root.glob("acme-billing/**/*.parquet"))[0].read_bytes()
    assert a != b


def test_gzip_headers_carry_no_time(org: Truth) -> None:
    for f in sorted(org.root.rglob("*.gz"))[:50]:
        head = f.read_bytes()[:10]
        assert head[:2] == b"\x1f\x8b" and head[4:8] == b"\0\0\0\0"  # mtime 0


def test_end_defaults_to_a_fixed_date(org: Truth) -> None:
    assert org.end == datetime(2026, 11, 20, 12, tzinfo=UTC)
    assert (org.end - org.start).total_seconds() == 86400


# -- layouts and formats -----------------------------------------------------------------------------------
def test_every_file_matches_a_documented_key_layout(org: Truth) -> None:
    seen = dict.fromkeys(LAYOUTS, 0)
    for rel in files(org.root):
        if rel == "TRUTH.json":
            continue
        kinds = [k for k, rx in LAYOUTS.items() if rx.match(rel)]
        assert len(kinds) == 1, rel
        seen[kinds[0]] += 1
    assert all(seen.values()), seen


def test_flow_headers_default_and_custom(org: Truth) -> None:
    headers = {}
    for f in org.root.glob("acme-flow-logs/AWSLogs/*/vpcflowlogs/**/*.log.gz"):
        account = f.relative_to(org.root).parts[2]
        headers.setdefault(account, set()).add(gzip.decompress(f.read_bytes()).split(b"\n", 1)[0].decode())
    default = ("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end "
               "action log-status")
    assert headers["012345678901"] == {default}
    (custom,) = headers["234567890123"]
    assert {"instance-id", "pkt-srcaddr", "pkt-dstaddr", "flow-direction", "traffic-path"} <= set(custom.split())


def test_flow_records_counted_and_no_data_present(org: Truth) -> None:
    df = flows(org.root)
    assert (df["log-status"] == "OK").sum() == org.flow_records
    nodata = df[df["log-status"] == "NODATA"]
    assert len(nodata) > 0 and (nodata["srcaddr"] == "-").all() and (nodata["action"] == "-").all()
    ok = df[df["log-status"] == "OK"]
    assert ((ok["end"] - ok["start"]) <= 600).all()
    assert ((ok["start"] >= org.start.timestamp()) & (ok["end"] <= org.end.timestamp())).all()


def test_account_with_leading_zero_kept_as_text(org: Truth) -> None:
    assert "012345678901" in org.accounts
    df = flows(org.root)
    assert "012345678901" in set(df["account-id"])
    cur = pq.read_table(sorted(org.root.glob("acme-billing/**/*.parquet"))[0])
    assert str(cur.schema.field("line_item_usage_account_id").type) == "string"
    assert "012345678901" in set(cur.column("line_item_usage_account_id").to_pylist())
    assert any(e["recipientAccountId"] == "012345678901" for e in trail(org.root))


def test_cur_prices_come_from_the_catalogue(org: Truth) -> None:
    cur = pq.read_table(sorted(org.root.glob("acme-billing/**/*.parquet"))[0]).to_pandas()
    box = cur[cur["line_item_usage_type"].str.contains("BoxUsage:")]
    assert len(box) > 0
    for _, row in box.head(50).iterrows():
        itype = row["line_item_usage_type"].split(":", 1)[1]
        price = catalog.lookup(itype).on_demand_usd_hour  # type: ignore[union-attr]
        assert row["line_item_unblended_cost"] == pytest.approx(price * row["line_item_usage_amount"], rel=1e-6)
        assert row["pricing_term"] == "OnDemand" and row["line_item_resource_id"].startswith("i-")
    assert str(cur["line_item_usage_start_date"].dtype).startswith("datetime64") and \
        cur["line_item_usage_start_date"].dt.tz is not None
    manifest = json.loads(sorted(org.root.glob("acme-billing/**/*Manifest.json"))[0].read_text())
    assert manifest["dataFiles"][0].endswith("acme-cur2-00001.snappy.parquet")


def test_metric_stream_lines_have_the_documented_fields(org: Truth) -> None:
    m = metrics(org.root)
    assert set(m["metric_name"]) == {"CPUUtilization", "nvidia_smi_utilization_gpu"}
    gpu = m[m["metric_name"] == "nvidia_smi_utilization_gpu"]
    assert gpu["dimensions"].map(lambda d: {"InstanceId", "index", "name"} <= set(d)).all()
    assert (m["namespace"][m["metric_name"] == "CPUUtilization"] == "AWS/EC2").all()
    assert m["value"].map(lambda v: v["min"] <= v["sum"] / v["count"] <= v["max"]).all()


# -- the incidents are in the data -------------------------------------------------------------------------
def test_truth_lists_both_incidents(org: Truth) -> None:
    names = {i.name: i for i in org.incidents}
    assert set(names) == {"agent-gpu-miner", "web-cpu-miner"}
    agent = names["agent-gpu-miner"]
    assert agent.principal == "arn:aws:iam::234567890123:role/bedrock-agent-ops"
    assert 2 <= len(agent.resources) <= 3 and agent.region == "ap-southeast-1"
    span = org.end - org.start
    for inc in org.incidents:
        assert org.start + 0.65 * span <= inc.started <= org.start + 0.85 * span
    assert json.loads((org.root / "TRUTH.json").read_text())["incidents"][0]["name"] == "agent-gpu-miner"


def test_incident_launches_are_in_cloudtrail(org: Truth) -> None:
    events = trail(org.root)
    launched = launches(events)
    for inc in org.incidents:
        for iid in inc.resources:
            event, item = launched[iid]
            assert event["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] == inc.principal
            assert item["networkInterfaceSet"]["items"][0]["networkInterfaceId"].startswith("eni-")
    agent = next(i for i in org.incidents if i.kind == "gpu_miner")
    event, item = launched[agent.resources[0]]
    assert item["instanceType"] in ("g5.12xlarge", "p3.8xlarge") and event["awsRegion"] == "ap-southeast-1"
    assert "agent-session" in event["userIdentity"]["arn"] and "langchain" in event["userAgent"]
    # quota look-ups in several regions first, and no earlier launch by the account in that region
    quota = [e for e in events if e["eventSource"] == "servicequotas.amazonaws.com"
             and e["eventTime"] <= event["eventTime"]]
    assert len({e["awsRegion"] for e in quota}) >= 3
    assert all(e["requestParameters"]["serviceCode"] == "ec2" for e in quota)
    ml_launches = [(iid, e) for iid, (e, _) in launched.items() if e["recipientAccountId"] == agent.account]
    assert all(e["awsRegion"] != "ap-southeast-1" for iid, e in ml_launches if iid not in agent.resources)
    assert any(e["eventName"] == "CreateAccessKey" for e in events)
    assert any(e["eventName"] == "TerminateInstances" for e in events)


def test_miners_resolve_their_pool(org: Truth) -> None:
    queries = dns(org.root)
    for inc in org.incidents:
        asked = {q["query_name"] for q in queries if q["srcids"]["instance"] in inc.resources}
        pools = asked & {"gulf.moneroocean.stream.", "pool.supportxmr.com."}
        assert pools, inc.name
        assert {q["srcids"]["instance"] for q in queries if q["query_name"] in pools} == set(inc.resources)


def _pool_flows(org: Truth) -> dict[str, pd.DataFrame]:
    df = flows(org.root)
    df = df[df["log-status"] == "OK"]
    owner = eni_of(trail(org.root))
    df = df.assign(instance=df["interface-id"].map(owner))
    pool_ips = {a["Rdata"] for q in dns(org.root) for a in q["answers"]
                if q["query_name"] in ("gulf.moneroocean.stream.", "pool.supportxmr.com.")}
    out = {}
    for inc in org.incidents:
        for iid in inc.resources:
            mine = df[df["instance"] == iid]
            out[iid] = mine[mine["dstaddr"].isin(pool_ips) | mine["srcaddr"].isin(pool_ips)]
    return out


def test_miner_flows_are_tiny_steady_and_persistent(org: Truth) -> None:
    for iid, pool in _pool_flows(org).items():
        assert len(pool) > 0, iid
        minutes = (pool["end"] - pool["start"]) / 60
        per_minute = pool["bytes"] / minutes
        per_packet = pool["bytes"] / pool["packets"]
        assert per_minute.between(1000, 6 * 1024).all(), iid
        assert per_packet.between(100, 150).all(), iid
        assert set(pool["dstport"]).union(pool["srcport"]) & {3333, 4444, 5555, 14444}
        # present in every aggregation window from the first full one to the end
        windows = set((pool["start"] // 600).astype(int))
        first, last = min(windows), int(org.end.timestamp() // 600) - 1
        assert set(range(first + 1, last + 1)) <= windows, iid


def test_miners_peg_their_processors(org: Truth) -> None:
    m = metrics(org.root)
    gpu_miner = next(i for i in org.incidents if i.kind == "gpu_miner")
    cpu_miner = next(i for i in org.incidents if i.kind == "cpu_miner")
    late = m["timestamp"] >= (gpu_miner.started.timestamp() + 3600) * 1000
    for iid in gpu_miner.resources:
        g = m[late & (m["instance"] == iid) & (m["metric_name"] == "nvidia_smi_utilization_gpu")]
        assert len(g) > 0 and (g["value"].map(lambda v: v["min"]) >= 99).all()
        c = m[late & (m["instance"] == iid) & (m["metric_name"] == "CPUUtilization")]
        assert c["avg"].max() < 30
    (host,) = cpu_miner.resources
    c = m[(m["instance"] == host) & (m["metric_name"] == "CPUUtilization")]
    before = c[c["timestamp"] + 300_000 <= cpu_miner.started.timestamp() * 1000]["avg"]
    after = c[c["timestamp"] >= (cpu_miner.started.timestamp() + 600) * 1000]["avg"]
    assert before.max() <= 55 and after.min() >= 98


# -- the legitimate look-alikes ----------------------------------------------------------------------------
def test_training_has_dips_and_large_ingress(org: Truth) -> None:
    m = metrics(org.root)
    events = launches(trail(org.root))
    df = flows(org.root)
    df = df[df["log-status"] == "OK"].assign(instance=lambda d: d["interface-id"].map(eni_of(trail(org.root))))
    training = [i for i in org.legit_gpu if events[i][1]["instanceType"] != "g4dn.xlarge"]
    assert training
    for iid in training:
        event, _ = events[iid]
        issuer = event["userIdentity"]["sessionContext"]["sessionIssuer"]["userName"]
        assert issuer == "ml-training" or issuer.startswith("AWSReservedSSO_")
        assert event["awsRegion"] == "us-east-1"
        g = m[(m["instance"] == iid) & (m["metric_name"] == "nvidia_smi_utilization_gpu")]
        per_time = g.groupby("timestamp")["avg"].mean()
        if len(per_time) < 24:  # under two hours of data: too short to judge dips
            continue
        hours = len(per_time) * 300 / 3600
        dips = per_time < 70
        assert (per_time >= 93).mean() > 0.6, iid
        # a dip every 30-60 minutes: at least one per hour and a half, each short
        starts = int((dips & ~dips.shift(fill_value=False)).sum())
        assert starts >= hours / 1.5 - 1, iid
        ingress = df[(df["instance"] == iid) & (df["dstaddr"].str.startswith("10."))]["bytes"].sum()
        assert ingress / hours > 1e9, iid


def test_legitimate_gpu_launches_span_the_window(org: Truth) -> None:
    events = launches(trail(org.root))
    times = sorted(datetime.strptime(events[i][0]["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                   for i in org.legit_gpu)
    assert times[0] < org.start < times[-1]


def test_internal_service_uses_miner_ports_between_private_addresses(org: Truth) -> None:
    df = flows(org.root)
    df = df[df["log-status"] == "OK"]
    internal = df[df["dstport"].isin([3333, 4444]) & (df["action"] == "ACCEPT")]
    private = internal["srcaddr"].str.startswith("10.") & internal["dstaddr"].str.startswith("10.")
    assert private.sum() > 0


# -- arguments -----------------------------------------------------------------------------------------------
def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        simulate(tmp_path / "a", instances=5)
    with pytest.raises(ValueError):
        simulate(tmp_path / "b", end=datetime(2026, 1, 1))  # naive: ambiguous


def test_scales_with_instances(tmp_path: Path) -> None:
    t = simulate(tmp_path / "s", days=0.25, instances=60, end=datetime(2026, 3, 1, 6, tzinfo=UTC))
    assert t.instances == 60 and len(t.incidents[0].resources) == 3
    per_instance_day = t.flow_records / (60 * 0.25)
    assert 150 < per_instance_day < 700
    assert np.isfinite(per_instance_day)
