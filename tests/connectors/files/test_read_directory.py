"""The connector as a whole: one bucket copy with every format, joins across files, the report, strict mode."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from aws_kit import ACCOUNT, FLOW_V2_KEY, FLOW_V5_KEY, RESOLVER_KEY, STREAM_KEY, TRAIL_KEY, Bucket

from spendwatch.connectors.files import read_directory
from spendwatch.records import TABLES
from spendwatch.report import RunReport, StrictError

Problems = Callable[[RunReport, Path], list[tuple[int | None, str, int]]]


def test_every_format_in_one_scan(org: Bucket) -> None:
    tables, report = org.scan()
    assert report.problems == [] and report.complete
    assert report.kinds() == {
        "vpc-flow-logs": 2, "vpc-flow-logs-parquet": 1, "cloudtrail": 1, "route53-resolver-query-logs": 1,
        "cur-csv": 1, "cur2-parquet": 1, "metric-stream": 1, "metric-csv": 1, "metadata": 1,
    }
    assert tables.counts() == {"spend": 7, "activity": 12, "flows": 9, "dns": 3, "utilization": 5, "inventory": 4}
    for name, frame in tables.items():
        assert {c: str(t) for c, t in frame.dtypes.items() if c in TABLES[name].names} == TABLES[name].dtypes()
        if "account" in frame:
            assert set(frame["account"].dropna()) == {ACCOUNT}, name  # the leading zero survives everywhere


def test_interfaces_and_private_ips_from_launches_name_the_instance(org: Bucket) -> None:
    tables, _ = org.scan()
    flows = tables.flows.set_index("interface")
    # The v5 record without instance-id, and the Parquet records: named through RunInstances' interfaces.
    assert flows.loc["eni-0c0c0c0c0c0c0c0b2", "resource"] == "i-0b200000000000002"
    assert set(flows.loc["eni-0c0c0c0c0c0c0c0e5", "resource"]) == {"i-0e500000000000005"}
    # Interfaces no launch names stay unknown: nothing is guessed.
    assert flows.loc[flows.index.str.startswith("eni-0a1b"), "resource"].isna().all()
    dns = tables.dns.set_index("src")
    assert dns.loc["10.0.2.21", "resource"] == "i-0b200000000000002"  # by private IP and account
    assert pd.isna(dns.loc["10.0.9.9", "resource"])


def test_a_reused_private_ip_goes_to_the_instance_that_held_it_then(bucket: Bucket) -> None:
    def launch(n: int, when: str) -> dict[str, object]:
        return {
            "eventTime": when, "eventSource": "ec2.amazonaws.com", "eventName": "RunInstances",
            "awsRegion": "us-east-1", "recipientAccountId": ACCOUNT, "eventID": f"e{n}",
            "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/bob"},
            "requestParameters": {"instanceType": "g5.xlarge"},
            "responseElements": {"instancesSet": {"items": [{
                "instanceId": f"i-{n:017x}", "instanceType": "g5.xlarge", "privateIpAddress": "10.0.5.5",
                "networkInterfaceSet": {"items": [{"networkInterfaceId": f"eni-{n:017x}",
                                                   "privateIpAddress": "10.0.5.5"}]}}]}},
        }

    bucket.put(TRAIL_KEY, json.dumps({"Records": [launch(1, "2026-11-20T08:00:00Z"),
                                                  launch(2, "2026-11-20T12:00:00Z")]}))
    query = json.loads(bucket.sample("resolver.jsonl").splitlines()[1])
    lines = [json.dumps({**query, "srcaddr": "10.0.5.5", "query_timestamp": t})
             for t in ("2026-11-20T07:00:00Z", "2026-11-20T09:00:00Z", "2026-11-20T13:00:00Z")]
    bucket.put(RESOLVER_KEY, "\n".join(lines))
    tables, _ = bucket.scan()
    assert list(tables.dns.sort_values("time")["resource"]) == [f"i-{1:017x}", f"i-{1:017x}", f"i-{2:017x}"]


def test_progress_counts_every_byte_once(org: Bucket) -> None:
    seen: list[int] = []
    org.put("notes/readme.txt", "hello")  # unknown files count too, or the bar never finishes
    read_directory(org.root, RunReport(), progress=seen.append)
    files = [p for p in org.root.rglob("*") if p.is_file()]
    assert len(seen) == len(files)
    assert sum(seen) == sum(p.stat().st_size for p in files)


def test_files_of_no_known_kind_are_problems_and_the_rest_is_read(org: Bucket, problems_of: Problems) -> None:
    text = org.put("notes/readme.txt", "hello world\n")
    blob = org.put("notes/blob.bin", bytes(range(256)))
    doc = org.put("notes/other.json.gz", json.dumps({"kind": "something else"}))
    tables, report = org.scan()
    assert problems_of(report, text) == [(None, "not a known export format (text starting 'hello world')", 0)]
    assert problems_of(report, blob) == [(None, "not a known export format (binary data)", 0)]
    assert problems_of(report, doc) == [
        (None, "not a known export format (gzip text starting '{\"kind\": \"something else\"}')", 0)]
    assert str(text) not in {s.path for s in report.sources}
    assert len(tables.flows) == 9 and not report.complete


def test_kind_comes_from_content_not_from_the_name(bucket: Bucket) -> None:
    bucket.put("misc/flows.json", bucket.sample("vpcflow_v2.log"))  # plain text flow log, misleading name
    bucket.put("misc/trail.txt", gzip.compress(bucket.sample("cloudtrail.json").encode()))
    bucket.put("misc/billing.log.gz", bucket.sample("cur_legacy.csv"))
    bucket.put("misc/metrics", bucket.sample("metric_stream.jsonl"))
    _, report = bucket.scan()
    kinds = {Path(s.path).name: s.kind for s in report.sources}
    assert kinds == {"flows.json": "vpc-flow-logs", "trail.txt": "cloudtrail", "billing.log.gz": "cur-csv",
                     "metrics": "metric-stream"}
    assert report.problems == []


def test_flow_log_without_account_field_takes_the_account_from_its_key(bucket: Bucket) -> None:
    text = "interface-id srcaddr dstaddr start end log-status\neni-1 10.0.0.1 10.0.0.2 1795168800 1795168860 OK\n"
    bucket.put(FLOW_V2_KEY, text)
    tables, report = bucket.scan()
    assert report.problems == []
    assert list(tables.flows["account"]) == [ACCOUNT]


def test_problems_are_in_path_order_whatever_the_threads_did(bucket: Bucket) -> None:
    for i in range(12):
        bucket.put(f"junk/{i:02d}.txt", f"junk {i}\n")
    _, report = bucket.scan()
    assert [Path(p.source).name for p in report.problems] == [f"{i:02d}.txt" for i in range(12)]


def test_strict_mode_raises_on_the_first_problem(org: Bucket) -> None:
    org.put(FLOW_V5_KEY, org.sample("vpcflow_v5.log").replace(" 880 ", " -880 "))
    with pytest.raises(StrictError, match=r"vpcflowlogs.*:2: bytes -880 is negative"):
        org.scan(strict=True)


def test_strict_mode_passes_on_clean_data(org: Bucket) -> None:
    tables, report = org.scan(strict=True)
    assert report.complete and len(tables.flows) == 9


def test_damaged_metric_stream_is_reported_not_fatal(org: Bucket, problems_of: Problems) -> None:
    packed = gzip.compress(org.sample("metric_stream.jsonl").encode() * 50, mtime=0)
    path = org.put(STREAM_KEY, packed[:-30], gzipped=False)
    tables, report = org.scan()
    found = problems_of(report, path)
    assert found and "gzip stream is truncated" in found[0][1]
    assert len(tables.utilization) > 10 and len(tables.flows) == 9


def test_the_simulators_ground_truth_is_skipped_with_a_note(org: Bucket) -> None:
    from spendwatch.simulate import TRUTH_FILE

    org.put(TRUTH_FILE, json.dumps({"incidents": []}))
    nested = org.put(f"elsewhere/{TRUTH_FILE}", json.dumps({"incidents": []}))
    seen: list[int] = []
    report = RunReport()
    read_directory(org.root, report, progress=seen.append)
    assert any("ground truth" in n for n in report.notes)
    assert [p.source for p in report.problems] == [str(nested)]  # only at the top is it the simulator's
    assert len(seen) == len([p for p in org.root.rglob("*") if p.is_file()])


@pytest.mark.parametrize(
    ("key", "sample", "table"),
    [
        (RESOLVER_KEY, "resolver.jsonl", "dns"),
        (STREAM_KEY, "metric_stream.jsonl", "utilization"),
        (FLOW_V5_KEY, "vpcflow_v5.log", "flows"),
        (FLOW_V2_KEY, "vpcflow_v2.log", "flows"),
    ],
)
def test_fast_and_line_by_line_paths_give_the_same_rows(tmp_path: Path, samples: Path, key: str, sample: str,
                                                        table: str) -> None:
    # A clean file takes the vectorised path; one broken line sends the same file down the line-by-line path.
    clean, broken = Bucket(tmp_path / "a", samples), Bucket(tmp_path / "b", samples)
    text = clean.sample(sample)
    clean.put(key, text)
    broken.put(key, text + "{ this line is broken\n")
    fast, fast_report = clean.scan()
    slow, slow_report = broken.scan()
    assert fast_report.problems == [] and len(slow_report.problems) == 1
    pd.testing.assert_frame_equal(getattr(fast, table), getattr(slow, table))
