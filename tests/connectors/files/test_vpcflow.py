"""VPC flow logs: default and custom formats, IPv6, NODATA/SKIPDATA, Parquet, and every kind of bad record."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from aws_kit import ACCOUNT, FLOW_PARQUET_KEY, FLOW_V2_KEY, FLOW_V5_KEY, REGION, T0, Bucket, flow_parquet

from spendwatch.report import RunReport

Problems = Callable[[RunReport, Path], list[tuple[int | None, str, int]]]
HEADER = ("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action "
          "log-status")


def record(src: str = "10.0.1.10", dst: str = "198.51.100.7", sport: object = 49152, dport: object = 443,
           nbytes: object = 5200, start: object = T0, end: object = T0 + 600, status: str = "OK") -> str:
    return f"2 {ACCOUNT} eni-0a1b2c3d4e5f60001 {src} {dst} {sport} {dport} 6 40 {nbytes} {start} {end} ACCEPT {status}"


def test_default_format_with_nodata_skipdata_and_ipv6(bucket: Bucket) -> None:
    bucket.put(FLOW_V2_KEY, bucket.sample("vpcflow_v2.log"))
    tables, report = bucket.scan()
    flows = tables.flows
    assert len(flows) == 4  # 6 records, of which NODATA and SKIPDATA are not traffic
    assert report.problems == []  # ... and are not problems either
    assert any("1 NODATA and 1 SKIPDATA" in note for note in report.notes)
    first = flows.iloc[0]
    assert first["account"] == ACCOUNT and first["region"] == REGION and first["cloud"] == "aws"
    assert first["start"] == pd.Timestamp(T0, unit="s", tz="UTC")
    assert first["end"] - first["start"] == pd.Timedelta(minutes=10)
    assert (first["src"], first["dst"]) == ("10.0.1.10", "198.51.100.7")
    assert (first["src_port"], first["dst_port"]) == (49152, 3333)
    assert (first["protocol"], first["packets"], first["bytes"], first["action"]) == (6, 40, 5200, "ACCEPT")
    assert flows["direction"].isna().all()  # the default format does not say, so nothing is guessed
    assert flows["resource"].isna().all()  # no instance-id field and no launch names these interfaces
    v6 = flows[flows["src"].str.contains(":")].iloc[0]
    assert (v6["src"], v6["dst"], v6["bytes"]) == ("2600:1f18:1234:5600::10", "2001:db8::7", 9000)
    assert report.sources[0].kind == "vpc-flow-logs"
    assert report.sources[0].records == {"flows": 4}


def test_custom_v5_format_in_its_own_field_order(bucket: Bucket) -> None:
    bucket.put(FLOW_V5_KEY, bucket.sample("vpcflow_v5.log"))
    tables, report = bucket.scan()
    flows = tables.flows.set_index("src_port")
    assert report.problems == []
    out = flows.loc[40000]
    assert out["resource"] == "i-0a100000000000001"
    assert (out["direction"], out["traffic_path"], out["tcp_flags"]) == ("egress", 8, 2)
    assert (out["pkt_src"], out["pkt_dst"], out["vpc"], out["subnet"]) == ("10.0.2.20", "192.0.2.44", "vpc-0aa11",
                                                                         "subnet-0bb22")
    assert (out["bytes"], out["packets"]) == (880, 11)  # bytes before packets in this format
    assert flows.loc[4444, "direction"] == "ingress"
    assert pd.isna(flows.loc[4444, "traffic_path"])
    assert pd.isna(flows.loc[40001, "resource"])  # instance-id "-", and no trail in this bucket


def test_parquet_delivery_with_hive_prefixes(bucket: Bucket) -> None:
    bucket.put_parquet(FLOW_PARQUET_KEY, flow_parquet())
    tables, report = bucket.scan()
    assert report.problems == []
    assert report.sources[0].kind == "vpc-flow-logs-parquet"
    flows = tables.flows
    assert list(flows["dst"]) == ["192.0.2.80", "2001:db8::80"]
    assert list(flows["account"]) == [ACCOUNT, ACCOUNT]
    assert list(flows["region"]) == [REGION, REGION]  # from aws-region=... in the key
    assert list(flows["direction"]) == ["egress", "egress"]
    assert flows["src_port"].dtype == "Int64"


def test_parquet_with_account_as_number_keeps_the_leading_zero(bucket: Bucket) -> None:
    table = flow_parquet()
    table = table.set_column(1, "account_id", pa.array([int(ACCOUNT)] * 2, pa.int64()))
    bucket.put_parquet(FLOW_PARQUET_KEY, table)
    tables, _ = bucket.scan()
    assert list(tables.flows["account"]) == [ACCOUNT, ACCOUNT]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (record(nbytes=-5), "bytes -5 is negative"),
        (record(sport=70000), "srcport 70000 is not a port number (0-65535)"),
        (record(dport=-1), "dstport -1 is not a port number (0-65535)"),
        (record(start=946684799), "start 946684799 (Unix seconds) is before 2000"),
        (record(start=T0, end=4102444800), "end 4102444800 (Unix seconds) is more than a year in the future"),
        (record(start=T0 + 600, end=T0), "end is before start"),
        (record(nbytes="lots"), "bytes 'lots' is not a number"),
        (record(dport="https"), "dstport 'https' is not a number"),
        (record(src="not-an-ip"), "srcaddr 'not-an-ip' is not an IP address"),
        (record(src="-"), "srcaddr is missing"),
        (record(status="WEIRD"), "log-status 'WEIRD' is not OK, NODATA or SKIPDATA"),
        (" ".join(record().split()[:9]), "record has 9 fields, the header names 14"),
    ],
)
def test_a_bad_record_is_one_problem_with_its_line_and_the_rest_is_kept(
    bucket: Bucket, problems_of: Problems, bad: str, reason: str
) -> None:
    lines = [HEADER, record(sport=1), record(sport=2), bad, record(sport=4)]
    path = bucket.put(FLOW_V2_KEY, "\n".join(lines) + "\n")
    tables, report = bucket.scan()
    assert problems_of(report, path) == [(4, reason, 1)]
    assert sorted(tables.flows["src_port"]) == [1, 2, 4]
    assert report.sources[0].skipped == 1


def test_line_numbers_count_blank_lines_and_skipped_rows(bucket: Bucket, problems_of: Problems) -> None:
    lines = [HEADER, record(sport=1), "", "2 short line", record(sport=2), "", record(nbytes=-1), record(sport=3)]
    path = bucket.put(FLOW_V2_KEY, "\n".join(lines) + "\n")
    tables, report = bucket.scan()
    assert problems_of(report, path) == [(4, "record has 3 fields, the header names 14", 1),
                                         (7, "bytes -1 is negative", 1)]
    assert sorted(tables.flows["src_port"]) == [1, 2, 3]


def test_many_bad_lines_are_summed_up_after_the_first_twenty(bucket: Bucket, problems_of: Problems) -> None:
    lines = [HEADER, *(record(nbytes=-i) for i in range(1, 31)), record(sport=7)]
    path = bucket.put(FLOW_V2_KEY, "\n".join(lines) + "\n")
    tables, report = bucket.scan()
    found = problems_of(report, path)
    assert len(found) == 21
    assert found[0] == (2, "bytes -1 is negative", 1)
    assert found[-1] == (22, "bytes ... is negative (and 10 more lines like it)", 10)
    assert sum(r for _, _, r in found) == 30 == report.skipped_records
    assert list(tables.flows["src_port"]) == [7]


def test_header_without_srcaddr_loses_the_file_not_the_run(bucket: Bucket, problems_of: Problems) -> None:
    header = HEADER.replace("srcaddr ", "")
    rows = [" ".join(record(sport=i).split()[:3] + record(sport=i).split()[4:]) for i in range(3)]
    path = bucket.put(FLOW_V2_KEY, "\n".join([header, *rows]) + "\n")
    bucket.put(FLOW_V5_KEY, bucket.sample("vpcflow_v5.log"))
    tables, report = bucket.scan()
    assert problems_of(report, path) == [(1, "flow log header lacks field(s) srcaddr: its 3 records cannot be used", 3)]
    assert len(tables.flows) == 3  # the other file is read


def test_unknown_header_field_is_reported_and_ignored(bucket: Bucket, problems_of: Problems) -> None:
    path = bucket.put(FLOW_V2_KEY, f"{HEADER} colour\n{record()} blue\n")
    tables, report = bucket.scan()
    assert problems_of(report, path) == [(1, "flow log header names unknown field(s) colour: their values are ignored",
                                          0)]
    assert len(tables.flows) == 1


def test_truncated_gzip_keeps_the_lines_before_the_cut(bucket: Bucket, problems_of: Problems) -> None:
    text = "\n".join([HEADER, *(record(sport=i + 1) for i in range(2000))]) + "\n"
    packed = gzip.compress(text.encode(), mtime=0)
    path = bucket.put(FLOW_V2_KEY, packed[: len(packed) // 2], gzipped=False)
    tables, report = bucket.scan()
    [(line, reason, records)] = problems_of(report, path)
    kept = len(tables.flows)
    assert 0 < kept < 2000
    assert reason == f"gzip stream is truncated after line {kept + 1}: the rest of the file could not be read " \
                     "(records lost: at least one)"
    assert line == kept + 2 and records == 1
    assert list(tables.flows["src_port"]) == list(range(1, kept + 1))


def test_corrupt_gzip_data_is_one_problem(bucket: Bucket, problems_of: Problems) -> None:
    text = "\n".join([HEADER, *(record(sport=i + 1) for i in range(50))]) + "\n"
    packed = bytearray(gzip.compress(text.encode(), mtime=0))
    packed[10:40] = b"\xff" * 30  # the deflate stream's first block
    path = bucket.put(FLOW_V2_KEY, bytes(packed), gzipped=False)
    tables, report = bucket.scan()
    [(line, reason, records)] = problems_of(report, path)
    assert reason.startswith("corrupt gzip data (") and "after line 0" in reason
    assert (line, records) == (1, 1)
    assert tables.flows.empty
    assert report.sources[0].kind == "vpc-flow-logs"  # told by its key, since its content cannot be read


def test_files_parsed_together_keep_their_own_counts_and_lines(bucket: Bucket, problems_of: Problems) -> None:
    # Same header, account and region: the connector parses these in one batch, and must still tell them apart.
    keys = [FLOW_V2_KEY.replace("1a2b3c4d", f"0000000{i}") for i in range(3)]
    bucket.put(keys[0], "\n".join([HEADER, record(sport=1), record(status="NODATA"), record(sport=2)]))
    bad = bucket.put(keys[1], "\n".join([HEADER, record(sport=3), record(sport=99999)]) + "\n")
    bucket.put(keys[2], "\n".join([HEADER, *(record(sport=10 + i) for i in range(5))]) + "\n")
    tables, report = bucket.scan()
    rows = {Path(s.path).name: s.records for s in report.sources}
    assert [rows[Path(k).name] for k in keys] == [{"flows": 2}, {"flows": 1}, {"flows": 5}]
    assert [(p.source, p.line) for p in report.problems] == [(str(bad), 3)]
    assert sorted(tables.flows["src_port"]) == [1, 2, 3, 10, 11, 12, 13, 14]
    assert any("1 NODATA and 0 SKIPDATA" in n for n in report.notes)


def test_a_streamed_read_reports_bad_lines_and_reduces_the_good_records(bucket: Bucket, problems_of: Problems) -> None:
    from spendwatch.connectors.files import read_directory
    from spendwatch.engine.flows import FlowEngine

    lines = [HEADER, record(sport=50001), record(sport="x"), record(sport=50002), record(dst="not-an-ip")]
    path = bucket.put(FLOW_V2_KEY, "\n".join(lines) + "\n")
    report = RunReport()
    with FlowEngine() as engine:
        tables = read_directory(bucket.root, report, flows=engine)
        assert tables.flows.empty and engine.records == 2  # the records went to the engine
        flows = engine.summary(tables).rows
    assert problems_of(report, path) == [(3, "srcport 'x' is not a number", 1),
                                         (5, "dstaddr 'not-an-ip' is not an IP address", 1)]
    assert report.sources[0].records == {"flows": 2} and report.sources[0].skipped == 2
    # the two good records, one connection's client port apart: one aggregate row, kept for the rules (a client
    # talking to a public address)
    assert len(flows) == 1 and flows["records"].iloc[0] == 2 and flows["bytes"].iloc[0] == 2 * 5200
    assert pd.isna(flows["src_port"].iloc[0]) and flows["dst_port"].iloc[0] == 443


def test_a_bad_address_in_a_batch_that_parses_cleanly_is_found_on_its_aggregate(bucket: Bucket,
                                                                                problems_of: Problems) -> None:
    """Read through the engine, a batch's addresses are checked on its aggregate, not record by record: a bad one
    there still sends the batch back to the file-by-file read, which reports the line and keeps the rest."""
    from spendwatch.connectors.files import read_directory
    from spendwatch.engine.flows import FlowEngine

    keys = [FLOW_V2_KEY.replace("1a2b3c4d", f"0000000{i}") for i in range(2)]
    bucket.put(keys[0], "\n".join([HEADER, record(sport=50001), record(sport=50002)]) + "\n")
    bad = bucket.put(keys[1], "\n".join([HEADER, record(sport=50003), record(src="10.0.1.x", sport=50004)]) + "\n")
    report = RunReport()
    with FlowEngine() as engine:
        tables = read_directory(bucket.root, report, flows=engine)
        flows = engine.summary(tables).rows
    assert problems_of(report, bad) == [(3, "srcaddr '10.0.1.x' is not an IP address", 1)]
    assert [s.records for s in report.sources] == [{"flows": 2}, {"flows": 1}]
    assert engine.records == 3 and int(flows["records"].sum()) == 3
