"""Route 53 Resolver logs, CUR 2.0 Parquet and legacy CUR CSV, Metric Streams and plain metric CSVs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from aws_kit import ACCOUNT, CUR2_KEY, CUR_CSV_KEY, METRIC_CSV_KEY, RESOLVER_KEY, STREAM_KEY, Bucket, cur2_table

from spendwatch.report import RunReport

Problems = Callable[[RunReport, Path], list[tuple[int | None, str, int]]]


# --- Route 53 Resolver query logs -------------------------------------------------------------------------


def test_resolver_queries(bucket: Bucket) -> None:
    bucket.put(RESOLVER_KEY, bucket.sample("resolver.jsonl"))
    tables, report = bucket.scan()
    assert report.problems == [] and report.sources[0].kind == "route53-resolver-query-logs"
    dns = tables.dns
    first = dns.iloc[0]
    assert first["query"] == "xmr.pool.example.net"  # lower case, no trailing dot
    assert first["answers"] == "192.0.2.44 192.0.2.45"
    assert (first["resource"], first["qtype"], first["src"], first["account"]) == (
        "i-0a100000000000001", "A", "10.0.2.20", ACCOUNT)
    assert first["time"] == pd.Timestamp("2026-11-20T10:00:05Z")
    assert pd.isna(dns.iloc[1]["answers"])
    assert pd.isna(dns.iloc[1]["resource"])  # no srcids.instance and no trail to map its address


def test_resolver_bad_lines(bucket: Bucket, problems_of: Problems) -> None:
    good = bucket.sample("resolver.jsonl").splitlines()[0]
    obj = json.loads(good)
    lines = [
        good,
        good[:80],  # truncated line
        json.dumps({**obj, "query_timestamp": "1970-01-01T00:00:00Z"}),
        json.dumps({k: v for k, v in obj.items() if k != "query_name"}),
        json.dumps({**obj, "account_id": 12345678901}),  # a writer that made the id a number
    ]
    path = bucket.put(RESOLVER_KEY, "\n".join(lines) + "\n")
    tables, report = bucket.scan()
    found = problems_of(report, path)
    assert [(line, records) for line, _, records in found] == [(2, 1), (3, 1), (4, 1)]
    assert found[0][1].startswith("line is not valid JSON (")
    assert found[1][1] == "query_timestamp 1970-01-01T00:00:00Z is before 2000"
    assert found[2][1] == "query_name is missing"
    assert list(tables.dns["account"]) == [ACCOUNT, ACCOUNT]


# --- Billing ------------------------------------------------------------------------------------------------


def test_cur2_parquet(bucket: Bucket) -> None:
    bucket.put_parquet(CUR2_KEY, cur2_table())
    tables, report = bucket.scan()
    assert report.problems == [] and report.sources[0].kind == "cur2-parquet"
    spend = tables.spend
    assert list(spend["pricing"]) == ["on_demand", "spot", "other"]
    assert list(spend["cost_usd"]) == [1.006, 0.42, -0.5]  # a credit is real money, kept
    assert list(spend["account"]) == [ACCOUNT] * 3
    assert spend["resource"].tolist()[:2] == ["i-0a100000000000001", "i-0b200000000000002"]
    assert pd.isna(spend["resource"].iloc[2])  # "" is no resource
    assert spend["region"].tolist()[:2] == ["us-east-1", "ap-south-1"]
    assert spend["instance_type"].iloc[0] == "g5.xlarge"  # from the product map
    assert (spend["hour"] == pd.Timestamp("2026-11-20T10:00:00Z")).all()


def test_cur2_absurd_cost_and_bad_times(bucket: Bucket, problems_of: Problems) -> None:
    table = cur2_table([1.0, 1e12, 2.0])
    starts = table["line_item_usage_start_date"].to_pylist()
    starts[2] = pd.Timestamp("1990-01-01T00:00:00Z").to_pydatetime()
    table = table.set_column(0, "line_item_usage_start_date", pa.array(starts, pa.timestamp("us", tz="UTC")))
    path = bucket.put_parquet(CUR2_KEY, table)
    tables, report = bucket.scan()
    found = problems_of(report, path)
    assert found == [
        (3, "line_item_usage_start_date 1990-01-01 00:00:00+00:00 is before 2000", 1),
        (2, "line_item_unblended_cost 1000000000000.0 is not a plausible line item cost (1e9 USD or more)", 1),
    ]
    assert list(tables.spend["cost_usd"]) == [1.0]


def test_rows_that_sum_line_items_count_them_all_when_rejected() -> None:
    # An aggregate query's rows (Athena's CUR sums, spendwatch.engine.spend_sql) carry how many line items each
    # sums: a rejected row loses them all, per row up to the per-line cap and in the lumped rest beyond it.
    from spendwatch.connectors.files._common import MAX_LINE_PROBLEMS, FileContext
    from spendwatch.connectors.files.cur import read_cur2_table

    n = MAX_LINE_PROBLEMS + 5
    table = cur2_table([None] * n + [1.0])
    table = table.append_column("line_items", pa.array([3] * n + [7], pa.int64()))
    report = RunReport()
    ctx = FileContext("athena:cur", report)
    spend = read_cur2_table(table, ctx, line_items="line_items").tables["spend"]
    assert spend.num_rows == 1 and ctx.skipped == report.skipped_records == 3 * n
    first, last = report.problems[0], report.problems[-1]
    assert (first.line, first.reason, first.records) == (1, "line_item_unblended_cost is missing (a sum of 3 line "
                                                            "items)", 3)
    assert (last.line, last.records) == (MAX_LINE_PROBLEMS + 1, 15)
    assert last.reason == "line_item_unblended_cost is missing (and 5 more lines like it, 15 line items in all)"
    # without the column each row is one line item, as in a file
    plain = RunReport()
    read_cur2_table(table, FileContext("file", plain))
    assert plain.skipped_records == n and plain.problems[0].reason == "line_item_unblended_cost is missing"


def test_legacy_cur_csv(bucket: Bucket) -> None:
    bucket.put(CUR_CSV_KEY, bucket.sample("cur_legacy.csv"))
    tables, report = bucket.scan()
    assert report.problems == [] and report.sources[0].kind == "cur-csv"
    spend = tables.spend
    assert list(spend["pricing"]) == ["on_demand", "spot", "savings", "on_demand"]
    assert list(spend["account"]) == [ACCOUNT] * 4
    assert list(spend["service"]) == ["AmazonEC2"] * 3 + ["AmazonS3"]
    assert spend["hour"].iloc[1] == pd.Timestamp("2026-11-20T10:00:00Z")  # 10:15 floored
    assert spend["usage_amount"].iloc[1] == 0.75


def test_legacy_cur_csv_uncompressed_with_bad_rows(bucket: Bucket, problems_of: Problems) -> None:
    lines = bucket.sample("cur_legacy.csv").splitlines()
    bad_cost = lines[1].replace(",1.006,", ",abc,")
    huge = lines[2].replace(",0.3,", ",1e12,")
    bad_time = lines[3].replace("2026-11-20T10:00:00Z", "not-a-date", 1)
    path = bucket.put(CUR_CSV_KEY.removesuffix(".gz"), "\n".join([lines[0], bad_cost, huge, bad_time, lines[4]]))
    tables, report = bucket.scan()
    assert sorted(problems_of(report, path)) == [
        (2, "lineItem/UnblendedCost 'abc' is not a number", 1),
        (3, "lineItem/UnblendedCost '1e12' is not a plausible line item cost (1e9 USD or more)", 1),
        (4, "lineItem/UsageStartDate 'not-a-date' is not a time", 1),
    ]
    assert list(tables.spend["service"]) == ["AmazonS3"]


def test_billing_file_missing_its_cost_column(bucket: Bucket, problems_of: Problems) -> None:
    path = bucket.put_parquet(CUR2_KEY, cur2_table().drop_columns(["line_item_unblended_cost"]))
    tables, report = bucket.scan()
    assert problems_of(report, path) == [
        (None, "billing file lacks column(s) line_item_unblended_cost: its 3 line items cannot be used", 3)]
    assert tables.spend.empty


# --- Utilisation --------------------------------------------------------------------------------------------


def test_metric_stream_cpu_and_gpu(bucket: Bucket) -> None:
    bucket.put(STREAM_KEY, bucket.sample("metric_stream.jsonl"))
    tables, report = bucket.scan()
    assert report.problems == [] and report.sources[0].kind == "metric-stream"
    util = tables.utilization.set_index("metric")
    assert util.loc["cpu_util", "value"] == 98.0  # sum / count
    assert pd.isna(util.loc["cpu_util", "device"])
    gpu = util.loc["gpu_util"]
    assert (gpu["value"], gpu["device"], gpu["device_name"], gpu["resource"]) == (100.0, "0", "NVIDIA A10G",
                                                                                   "i-0a100000000000001")
    assert util.loc["power", "value"] == 290.0
    assert "NetworkIn" not in set(tables.utilization["metric"])
    assert any("1 samples of metrics spendwatch does not use" in n for n in report.notes)


def test_metric_stream_uncompressed_with_bad_lines(bucket: Bucket, problems_of: Problems) -> None:
    good = bucket.sample("metric_stream.jsonl").splitlines()[1]  # GPU utilisation
    obj = json.loads(good)
    lines = [
        good,
        json.dumps({**obj, "value": {"max": 250.0, "min": 250.0, "sum": 1000.0, "count": 4.0}}),
        json.dumps({**obj, "value": "high"}),
        json.dumps({**obj, "timestamp": 4102444800000}),
        '{"metric_name": "CPUUtil',
    ]
    path = bucket.put(STREAM_KEY.removesuffix(".gz"), "\n".join(lines) + "\n")
    tables, report = bucket.scan()
    found = problems_of(report, path)
    assert [(line, reason) for line, reason, _ in found[:3]] == [
        (2, "nvidia_smi_utilization_gpu: value 250 is not a percentage (0-100) for gpu_util"),
        (3, "nvidia_smi_utilization_gpu: value \"high\" is not a number or a sum/count statistic"),
        (4, "nvidia_smi_utilization_gpu: timestamp 2100-01-01T00:00:00Z is more than a year in the future"),
    ]
    assert found[3][0] == 5 and found[3][1].startswith("line is not valid JSON")
    assert len(tables.utilization) == 1


@pytest.mark.parametrize("key", [METRIC_CSV_KEY, f"exports/{ACCOUNT}/us-east-1/i-0a100000000000001_gpu_util.csv"])
def test_plain_metric_csv(bucket: Bucket, key: str) -> None:
    bucket.put(key, bucket.sample("gpu_util.csv"))
    tables, report = bucket.scan()
    assert report.problems == [] and report.sources[0].kind == "metric-csv"
    util = tables.utilization
    assert list(util["value"]) == [97.5, 98.0]
    assert list(util["time"]) == [pd.Timestamp("2026-11-20T10:00:00Z"), pd.Timestamp("2026-11-20T10:01:00Z")]
    assert set(util["resource"]) == {"i-0a100000000000001"} and set(util["metric"]) == {"gpu_util"}
    assert set(util["account"]) == {ACCOUNT} and set(util["region"]) == {"us-east-1"}


def test_plain_metric_csv_bad_rows_and_unknown_target(bucket: Bucket, problems_of: Problems) -> None:
    path = bucket.put(METRIC_CSV_KEY, "timestamp,value\n2026-11-20T10:00:00Z,50\nsoon,1\n2026-11-20T10:02:00Z,n/a\n"
                                      "2026-11-20T10:03:00Z,-3\n")
    nameless = bucket.put("cloudwatch/series.csv", "timestamp,value\n2026-11-20T10:00:00Z,50\n")
    tables, report = bucket.scan()
    assert problems_of(report, path) == [
        (3, "timestamp 'soon' is missing or not a time", 1),
        (4, "value 'n/a' is missing or not a number", 1),
        (5, "value -3 is not a percentage (0-100) for gpu_util", 1),
    ]
    [(_, reason, records)] = problems_of(report, nameless)
    assert reason.startswith("cannot tell the instance and metric from the path") and records == 1
    assert list(tables.utilization["value"]) == [50.0]
