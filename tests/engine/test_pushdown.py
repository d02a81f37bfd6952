"""`scan --engine athena|bigquery`: the flow aggregate computed in the warehouse gives the local scan's findings.

The warehouses are local fakes that run the SQL they receive (tests/fakes/athena.py, bigquery_sql.py), driven
through the real boto3 and google-cloud-bigquery clients.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, where the fakes are

from fakes.athena import FakeAthena
from fakes.bigquery_sql import FakeBigQuerySql
from fakes.gcs import FakeGcs
from fakes.raw_http import serve

from spendwatch.cli import main
from spendwatch.engine.remote import AthenaOptions, BigQueryOptions, WarehouseFlows
from spendwatch.pipeline import scan_directory
from spendwatch.simulate.flows import V2_FIELDS
from spendwatch.simulate.gcp import simulate_gcp
from spendwatch.simulate.scenarios import run_scenario

WHOLE = {"start_s": 0, "end_s": 4_000_000_000}
EVER = ["--since", "2000-01-01T00:00Z", "--until", "2100-01-01T00:00Z"]
SINK = "acme-logs.flow_logs.compute_googleapis_com_vpc_flows"


def _view(findings: list[Any]) -> list[str]:
    return [json.dumps({k: v for k, v in vars(f).items() if k != "detected_at"}, sort_keys=True, default=str)
            for f in findings]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
                       "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(key, value)


def _add_busy_traffic(root: Path, connections: int = 3000) -> int:
    """Write one more flow log file beside the scenario's first: traffic shaped as real VPCs carry it, which the
    simulator does not write (it logs one record per conversation and window). One instance's interface
    opens `connections` connections from ephemeral ports to a database in its VPC and as many to a public API,
    each its own record. Returns the records written."""
    for first in sorted(root.rglob("*.log.gz")):  # the first file with a record of traffic
        with gzip.open(first, "rt") as handle:
            header = handle.readline().split()
            records = [dict(zip(header, line.split(), strict=True)) for line in handle]
        record = next((r for r in records if r.get("log-status") == "OK"), None)
        if record is not None:
            break
    assert record is not None
    start, end = int(record["start"]), int(record["end"])
    lines = []
    for i in range(connections):
        port = 32768 + i % 28000
        for dst, dport in (("10.99.0.5", 5432), ("198.51.100.80", 443)):
            fields = {"version": "2", "account-id": record["account-id"], "interface-id": record["interface-id"],
                      "srcaddr": "10.99.0.9", "dstaddr": dst, "srcport": str(port), "dstport": str(dport),
                      "protocol": "6", "packets": "10", "bytes": str(1000 + i), "start": str(start),
                      "end": str(end), "action": "ACCEPT", "log-status": "OK"}
            lines.append(" ".join(fields[f] for f in V2_FIELDS))
    (first.parent / ("busy-" + first.name)).write_bytes(
        gzip.compress((" ".join(V2_FIELDS) + "\n" + "\n".join(lines) + "\n").encode()))
    return len(lines)


@pytest.fixture(scope="module")
def aws_data(tmp_path_factory: pytest.TempPathFactory) -> Any:
    truth = run_scenario("classic-miners", tmp_path_factory.mktemp("pushdown") / "data")
    _add_busy_traffic(truth.root)
    return truth


@pytest.fixture
def athena(aws_data: Any, aws_env: None) -> Iterator[tuple[FakeAthena, str]]:
    fake = FakeAthena(denied_workgroups={"locked"}, page_max=1000)
    fake.add_flow_logs("logs.vpc_flow_logs", aws_data.root)
    with serve(fake) as url:
        yield fake, url


def _athena(url: str, **options: Any) -> WarehouseFlows:
    return WarehouseFlows("athena", "vpc_flow_logs", "vpc_flow_logs", **WHOLE,
                          athena=AthenaOptions(database="logs", endpoint_url=url, poll_s=0.001, **options))


def test_athena_gives_the_local_scans_findings_and_only_aggregates_travel(aws_data: Any,
                                                                          athena: tuple[FakeAthena, str]) -> None:
    fake, url = athena
    local = scan_directory(aws_data.root, store=None, now=aws_data.end)
    source = _athena(url, page_rows=200)
    remote = scan_directory(aws_data.root, store=None, now=aws_data.end, flows_from=source)
    assert remote.findings and _view(remote.findings) == _view(local.findings)
    fetched = source.fetched
    assert fetched is not None
    assert fetched.records == local.report.tables["flows"] == remote.report.tables["flows"]
    # aggregate rows travel, not records: the scenario's own records are nearly one per conversation and window,
    # the busy interface's 6,000 records come back as the one row of its public peer (and the latest row)
    assert fetched.returned + 5_000 < fetched.records
    assert fetched.bytes_scanned and fetched.bytes_scanned > 0 and len(fetched.queries) == 2
    # paged (no output location, so no result file to read): 200 rows a page, the header row in the first
    assert fetched.via == "through GetQueryResults (no result file named)"
    assert fake.calls.count("GetQueryResults") == 1 + -(-(fetched.returned + 1) // 200)
    assert fake.calls.count("GetQueryExecution") >= 6  # QUEUED, RUNNING, SUCCEEDED for each query
    # the flow log files were not read here; the warehouse is a source of the report
    assert not any(s.kind.startswith("vpc-flow-logs") for s in remote.report.sources)
    assert any(s.path == "athena:vpc_flow_logs" and s.records == {"flows": fetched.records}
               for s in remote.report.sources)
    assert any("vpc-flow-logs files" in n for n in remote.report.notes)
    assert remote.report.complete == local.report.complete


def test_a_failed_athena_query_is_a_gap_and_the_scan_goes_on(aws_data: Any, athena: tuple[FakeAthena, str]) -> None:
    _, url = athena
    source = WarehouseFlows("athena", "vpc_flow_logs", "no_such_table", **WHOLE,
                            athena=AthenaOptions(database="logs", endpoint_url=url, poll_s=0.001))
    result = scan_directory(aws_data.root, store=None, now=aws_data.end, flows_from=source)
    gaps = [g for g in result.report.gaps if g.source == "athena:no_such_table"]
    assert len(gaps) == 1 and "FAILED" in gaps[0].reason and "TABLE_NOT_FOUND" in gaps[0].reason
    assert "fake-athena-query" in gaps[0].reason  # the query id, to look it up in the console
    assert not result.report.complete
    assert result.report.tables.get("activity")  # the other sources were read


def test_a_denied_athena_workgroup_is_a_gap_through_the_cli(aws_data: Any, athena: tuple[FakeAthena, str],
                                                            tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    _, url = athena
    report = tmp_path / "report.json"
    code = main(["scan", "--data", str(aws_data.root), "--engine", "athena", "--table", "vpc_flow_logs",
                 "--database", "logs", "--workgroup", "locked", "--endpoint-url", url, "--state",
                 str(tmp_path / "state.db"), "--report", str(report), "--json", *EVER])
    assert code == 0  # as for any gap: the run completed, the report says what it could not read
    got = json.loads(report.read_text())
    assert not got["complete"]
    assert any(g["source"] == "athena:vpc_flow_logs" and "AccessDeniedException" in g["reason"]
               and "workgroup/locked" in g["reason"] for g in got["gaps"])
    assert "athena:vpc_flow_logs" in capsys.readouterr().err


def test_a_partition_column_the_table_lacks_is_a_gap_naming_it(aws_data: Any, athena: tuple[FakeAthena, str],
                                                               tmp_path: Path) -> None:
    _, url = athena
    report = tmp_path / "report.json"
    assert main(["scan", "--data", str(aws_data.root), "--engine", "athena", "--table", "vpc_flow_logs",
                 "--database", "logs", "--partition-column", "dt", "--endpoint-url", url, "--state",
                 str(tmp_path / "state.db"), "--report", str(report), "--json", *EVER]) == 0
    gaps = [g for g in json.loads(report.read_text())["gaps"] if g["source"] == "athena:vpc_flow_logs"]
    assert len(gaps) == 1 and "FAILED" in gaps[0]["reason"] and '"dt"' in gaps[0]["reason"]


def test_the_day_partition_bills_only_the_windows_days(aws_data: Any, athena: tuple[FakeAthena, str]) -> None:
    """Three hours of a four-day table: the filtered queries read the files of three days (the window's, one
    either side), not four, and lose no record (the fake bills pruned partitions as Athena does)."""
    _, url = athena
    start = int(aws_data.start.timestamp())
    fetched = {}
    for partition in ("source", None):
        source = WarehouseFlows("athena", "vpc_flow_logs", "vpc_flow_logs", start, start + 3 * 3600,
                                athena=AthenaOptions(database="logs", endpoint_url=url, poll_s=0.001),
                                partition=partition)
        scan_directory(aws_data.root, store=None, now=aws_data.end, flows_from=source)
        fetched[partition] = source.fetched
    pruned, whole = fetched["source"], fetched[None]
    assert pruned is not None and whole is not None and pruned.records == whole.records > 0
    assert pruned.bytes_scanned is not None and whole.bytes_scanned is not None
    assert pruned.bytes_scanned < whole.bytes_scanned


def test_the_cli_scan_on_athena_finds_what_the_local_scan_finds(aws_data: Any, athena: tuple[FakeAthena, str],
                                                                tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    _, url = athena
    assert main(["scan", "--data", str(aws_data.root), "--state", str(tmp_path / "local.db"), "--json"]) == 0
    local = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["scan", "--data", str(aws_data.root), "--engine", "athena", "--table", "vpc_flow_logs",
                 "--database", "logs", "--endpoint-url", url, "--state", str(tmp_path / "remote.db"), "--json",
                 *EVER]) == 0
    out = capsys.readouterr()
    remote = [json.loads(line) for line in out.out.splitlines()]
    assert local and [f["id"] for f in remote] == [f["id"] for f in local]
    assert [f["severity"] for f in remote] == [f["severity"] for f in local]
    assert "bytes scanned" in out.err


@pytest.fixture(scope="module")
def gcp_data(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return simulate_gcp(tmp_path_factory.mktemp("pushdown-gcp") / "data", days=1.0, instances=16)


@pytest.fixture
def bigquery(gcp_data: Any) -> Iterator[tuple[FakeBigQuerySql, str]]:
    fake = FakeBigQuerySql(SINK, page_rows=100)
    fake.add_flow_logs(gcp_data.root)
    with serve(fake) as url:
        yield fake, url


def test_bigquery_gives_the_local_scans_findings(gcp_data: Any, bigquery: tuple[FakeBigQuerySql, str]) -> None:
    fake, url = bigquery
    local = scan_directory(gcp_data.root, store=None, now=gcp_data.end)
    source = WarehouseFlows("bigquery", "gcp_flow_sink", SINK, **WHOLE,
                            bigquery=BigQueryOptions(endpoint=url, page_rows=100))
    remote = scan_directory(gcp_data.root, store=None, now=gcp_data.end, flows_from=source)
    assert remote.findings and _view(remote.findings) == _view(local.findings)
    fetched = source.fetched
    assert fetched is not None and fetched.records == local.report.tables["flows"]
    # the simulator's GCP entries are one per conversation and five minutes: the gain here is small (the
    # Athena test above shows it on traffic with ephemeral-port churn and east-west chatter)
    assert fetched.returned < fetched.records
    assert fetched.rows.num_rows == 0  # they went to the engine page by page, not into a table
    assert fetched.bytes_scanned and len(fetched.queries) == 2
    pages = [c for c in fake.calls if c[0] == "GET" and "/queries/" in c[1]]
    assert len(pages) == -(-fetched.returned // 100) - 1  # the first page comes with jobs.query
    assert not any(s.kind == "gcp-vpc-flow-logs" for s in remote.report.sources)


def test_a_sink_of_day_shards_is_read_through_its_wildcard_for_the_windows_days(gcp_data: Any) -> None:
    """A sink without partitioned tables writes a table a day: `name_*` with a _TABLE_SUFFIX filter reads only the
    window's days (one either side), and gives what the partitioned table gives."""
    fake = FakeBigQuerySql(SINK, sharded=True)
    fake.add_flow_logs(gcp_data.root)
    local = scan_directory(gcp_data.root, store=None, now=gcp_data.end)
    end_s = int(gcp_data.end.timestamp())
    with serve(fake) as url:
        sharded = WarehouseFlows("bigquery", "gcp_flow_sink", SINK + "_*", end_s - 3 * 86_400, end_s + 3600,
                                 bigquery=BigQueryOptions(endpoint=url))
        remote = scan_directory(gcp_data.root, store=None, now=gcp_data.end, flows_from=sharded)
        assert remote.findings and _view(remote.findings) == _view(local.findings)
        assert sharded.fetched is not None and sharded.fetched.records == local.report.tables["flows"]
        days = (datetime.fromtimestamp(end_s - 4 * 86_400, UTC), datetime.fromtimestamp(end_s + 3600 + 86_400, UTC))
        assert all(f"_TABLE_SUFFIX BETWEEN '{days[0]:%Y%m%d}' AND '{days[1]:%Y%m%d}'" in q for q in fake.queries)
        # the table itself is not there: only its shards
        plain = WarehouseFlows("bigquery", "gcp_flow_sink", SINK, **WHOLE, bigquery=BigQueryOptions(endpoint=url))
        gaps = scan_directory(gcp_data.root, store=None, now=gcp_data.end, flows_from=plain).report.gaps
        assert any(g.source == f"bigquery:{SINK}" and "was not found" in g.reason for g in gaps)


@pytest.mark.parametrize("fault", ["project", "table"])
def test_a_denied_bigquery_query_is_a_gap(gcp_data: Any, bigquery: tuple[FakeBigQuerySql, str], fault: str) -> None:
    fake, url = bigquery
    if fault == "project":
        fake.denied.add("jobs-here")
    else:
        fake.table_denied = True
    source = WarehouseFlows("bigquery", "gcp_flow_sink", SINK, **WHOLE,
                            bigquery=BigQueryOptions(endpoint=url, project="jobs-here"))
    result = scan_directory(gcp_data.root, store=None, now=gcp_data.end, flows_from=source)
    gaps = [g for g in result.report.gaps if g.source == f"bigquery:{SINK}"]
    assert len(gaps) == 1 and "Forbidden" in gaps[0].reason and "Access Denied" in gaps[0].reason
    assert result.report.tables.get("activity") and not result.report.complete


def test_a_function_bigquery_lacks_fails_the_query(gcp_data: Any, bigquery: tuple[FakeBigQuerySql, str]) -> None:
    """The fake refuses what BigQuery would (a DuckDB-only function): the SQL it runs is the SQL BigQuery gets."""
    from spendwatch.engine.remote import BigQuery, WarehouseError

    _, url = bigquery
    api = BigQuery(BigQueryOptions(endpoint=url), SINK)
    with pytest.raises(Exception, match="Function not found: epoch_ns"):
        api.run(f"SELECT epoch_ns(timestamp) FROM `{SINK}`")
    assert WarehouseError  # the scan turns such an error into a gap (test above)


# Amazon Security Lake's VPC flow table (source version 2, OCSF 1.1 Network Activity) as Glue declares it,
# derived from the same records: nested endpoints, times in milliseconds, partitions region/accountid/eventday.
# NODATA and SKIPDATA capture windows become events without endpoints, which the source must leave out.
_OCSF = """
SELECT struct_pack(ip := CASE WHEN log_status = 'OK' THEN srcaddr END, port := srcport,
                   interface_uid := interface_id, instance_uid := nullif(instance_id, '-'),
                   vpc_uid := vpc_id, subnet_uid := subnet_id) AS src_endpoint,
       struct_pack(ip := CASE WHEN log_status = 'OK' THEN dstaddr END, port := dstport) AS dst_endpoint,
       struct_pack(protocol_num := CAST(protocol AS INTEGER),
                   direction := CASE flow_direction WHEN 'ingress' THEN 'Inbound' WHEN 'egress' THEN 'Outbound'
                                END) AS connection_info,
       struct_pack(packets := packets, bytes := bytes) AS traffic,
       start * 1000 AS start_time, "end" * 1000 AS end_time, "end" * 1000 AS "time",
       struct_pack(account := struct_pack(uid := account_id), region := region, provider := 'AWS') AS cloud,
       CASE action WHEN 'REJECT' THEN 'Blocked' WHEN 'ACCEPT' THEN 'Allowed' END AS disposition,
       CASE action WHEN 'REJECT' THEN 'Denied' WHEN 'ACCEPT' THEN 'Allowed' END AS action,
       region, account_id AS accountid, strftime(to_timestamp(start), '%Y%m%d') AS eventday
FROM {flows}
"""
LAKE = "amazon_security_lake_table_us_east_1_vpc_flow_2_0"


@pytest.fixture
def lake(aws_data: Any, aws_env: None) -> Iterator[tuple[FakeAthena, str]]:
    fake = FakeAthena()
    fake.add_flow_logs("staging.vpc_flow_logs", aws_data.root)
    ocsf = fake.sql(_OCSF.format(flows=fake.local("staging.vpc_flow_logs")))
    assert ocsf.schema.field("src_endpoint").type.num_fields == 6  # nested, as the OCSF table is
    fake.add_table(f"amazon_security_lake_glue_db_us_east_1.{LAKE}", ocsf)
    with serve(fake) as url:
        yield fake, url


def test_security_lake_gives_the_local_scans_findings(aws_data: Any, lake: tuple[FakeAthena, str]) -> None:
    fake, url = lake
    local = scan_directory(aws_data.root, store=None, now=aws_data.end)
    source = WarehouseFlows("athena", "security_lake", LAKE, **WHOLE,
                            athena=AthenaOptions(database="amazon_security_lake_glue_db_us_east_1",
                                                 endpoint_url=url, poll_s=0.001))
    remote = scan_directory(aws_data.root, store=None, now=aws_data.end, flows_from=source)
    assert remote.findings and _view(remote.findings) == _view(local.findings)
    fetched = source.fetched
    assert fetched is not None and not remote.report.gaps
    # every record of traffic, none of the capture windows without data (the table holds those too)
    assert fetched.records == local.report.tables["flows"]
    assert fake.sql(f"SELECT count(*) AS n FROM {fake.local('amazon_security_lake_glue_db_us_east_1.' + LAKE)} "
                    "WHERE src_endpoint.ip IS NULL")["n"][0].as_py() > 0
    assert fetched.returned + 5_000 < fetched.records


def test_no_unload_on_the_command_line_reads_athenas_csv_result() -> None:
    from spendwatch.cli import build_parser
    from spendwatch.engine.cli import warehouse

    base = ["scan", "--data", ".", "--engine", "athena", "--table", "t", "--output-location", "s3://r/sw/"]
    parser = build_parser()
    assert warehouse(parser.parse_args(base), "athena").athena.unload is True
    assert warehouse(parser.parse_args([*base, "--no-unload"]), "athena").athena.unload is False


def test_packed_rows_come_back_as_they_were_values_nulls_and_quotes_included() -> None:
    """`packed_row` run by DuckDB (the fake runs BigQuery's translation of it there) and `unpack_rows` give back
    every value: NULL apart from the empty string, quotes, commas and newlines in text, 64-bit integers."""
    import duckdb
    import pyarrow as pa

    from spendwatch.engine.flows import LAYOUT, SCHEMA
    from spendwatch.engine.remote import to_schema, unpack_rows
    from spendwatch.engine.sql import packed_row, translate

    values: dict[str, list[Any]] = {c: [None, None, None, None] for c in LAYOUT}
    values.update(cloud=["aws", "gcp", "", None], account=["012345678901", 'a "quoted", one', "x\ny", ","],
                  src=["10.0.0.1", "", "2001:db8::1", None], dst=["198.51.100.7", None, '"', "a,b"],
                  src_port=[None, 443, 0, 65535], window=[1, -2, 3, 2**40], bytes=[100, 2**62, -1, None],
                  records=[1, 2, 3, 4])
    rows = pa.table({c: pa.array(v, SCHEMA.field(c).type) for c, v in values.items()}, schema=SCHEMA)
    con = duckdb.connect()
    con.register("t", rows)
    sql = translate(f"SELECT {packed_row()} AS line FROM t", "bigquery", pretty=False)
    assert "CAST(`window` AS STRING)" in sql  # BigQuery's own dialect, as the warehouse gets it
    packed = con.sql(f"SELECT {packed_row()} AS line FROM t").to_arrow_table()
    assert packed.column_names == ["line"] and packed["line"].null_count == 0
    assert unpack_rows(packed, "job j").equals(to_schema(rows, "expected"))
    assert unpack_rows(packed.slice(0, 0), "job j").num_rows == 0


def test_a_packed_page_that_is_not_the_rows_is_an_error_naming_the_job() -> None:
    import pyarrow as pa

    from spendwatch.engine.remote import WarehouseError, unpack_rows

    with pytest.raises(WarehouseError, match=r"^job j: "):
        unpack_rows(pa.table({"line": ["1,2,3"]}), "job j")
    with pytest.raises(WarehouseError, match=r"^job j: 1 packed rows are NULL"):
        unpack_rows(pa.table({"line": pa.array([None], pa.string())}), "job j")


def test_bigquery_sends_the_rows_packed_one_value_a_row(gcp_data: Any, bigquery: tuple[FakeBigQuerySql, str]) -> None:
    """The rows query asks for one CSV line a row (a column `line`); they unpack to the rows the unpacked query
    gives, page by page."""
    import pyarrow as pa

    from spendwatch.engine.flows import LAYOUT
    from spendwatch.engine.remote import BigQuery, to_schema
    from spendwatch.engine.sql import pushdown_sql, translate

    fake, url = bigquery
    api = BigQuery(BigQueryOptions(endpoint=url, page_rows=100), SINK)
    got: list[pa.Table] = []
    fetched = api.fetch("gcp_flow_sink", SINK, WHOLE["start_s"], WHOLE["end_s"], [], got.append)
    assert fetched.returned > 100 and fake.queries[-1].count(" AS line") == 1
    packed = pa.concat_tables(got)
    plain, _, _ = api.run(translate(pushdown_sql("gcp_flow_sink", table=SINK, start_s=WHOLE["start_s"],
                                                 end_s=WHOLE["end_s"]), "bigquery"))
    order = [(c, "ascending") for c in LAYOUT]
    assert packed.sort_by(order).equals(to_schema(plain, "plain").sort_by(order))


# --- BigQuery's rows as Parquet through EXPORT DATA ----------------------------------------------------------------

SCRATCH = "acme-secops-scratch"


@pytest.fixture
def exporting(gcp_data: Any) -> Iterator[tuple[FakeBigQuerySql, FakeGcs, str, str]]:
    """The executing BigQuery fake, writing EXPORT DATA's files (150 rows each) into a Cloud Storage fake."""
    storage = FakeGcs(buckets={SCRATCH: {}})
    fake = FakeBigQuerySql(SINK, page_rows=100, storage=storage, export_rows=150)
    fake.add_flow_logs(gcp_data.root)
    with serve(fake) as url, serve(storage) as storage_url:
        yield fake, storage, url, storage_url


def _bq_rows(url: str, storage_url: str, **options: Any) -> tuple[Any, Any]:
    """The aggregate rows one BigQuery read hands over (in a canonical order), and what it says of them."""
    import pyarrow as pa

    from spendwatch.engine.flows import LAYOUT
    from spendwatch.engine.remote import BigQuery

    got: list[pa.Table] = []
    api = BigQuery(BigQueryOptions(endpoint=url, page_rows=100, storage_endpoint=storage_url, **options), SINK)
    fetched = api.fetch("gcp_flow_sink", SINK, WHOLE["start_s"], WHOLE["end_s"], [], got.append)
    rows = pa.concat_tables(got)
    return rows.sort_by([(c, "ascending") for c in LAYOUT]), fetched


def test_bigquery_export_hands_over_the_rows_the_packed_query_gives(
        exporting: tuple[FakeBigQuerySql, FakeGcs, str, str]) -> None:
    fake, storage, url, storage_url = exporting
    packed, by_pages = _bq_rows(url, storage_url)
    calls = len(fake.calls)
    rows, fetched = _bq_rows(url, storage_url, export_uri=f"gs://{SCRATCH}/spendwatch")
    assert rows.equals(packed) and rows.num_rows == fetched.returned > 1_000
    assert fake.queries[-1].startswith(f"EXPORT DATA OPTIONS (uri = 'gs://{SCRATCH}/spendwatch/spendwatch-export/")
    assert "*.parquet', format = 'PARQUET', compression = 'GZIP', overwrite = true) AS WITH flow_records AS" \
        in fake.queries[-1] and " AS line" not in fake.queries[-1]
    assert fetched.via.startswith("as Parquet through EXPORT DATA (") and len(fetched.queries) == 2
    assert fetched.bytes_scanned == by_pages.bytes_scanned
    files = -(-fetched.returned // 150)
    destination = fetched.via.split(" under ")[1].rstrip(")")
    names = sorted(n for n in storage.buckets[SCRATCH] if f"gs://{SCRATCH}/{n}".startswith(destination))
    assert f"({files} file(s), " in fetched.via and len(names) == files
    assert names[0].endswith("/000000000000.parquet") and names[-1].endswith(f"/{files - 1:012d}.parquet")
    assert not [c for c in fake.calls[calls:] if c[0] == "GET"]  # no page of rows: they came from Cloud Storage
    # each EXPORT DATA writes under a prefix of its own
    _, again = _bq_rows(url, storage_url, export_uri=f"gs://{SCRATCH}/spendwatch/")
    assert again.via.split(" under ")[1] != fetched.via.split(" under ")[1]


@pytest.mark.parametrize("fault", ["denied", "no bucket"])
def test_a_failed_export_is_asked_again_packed_and_says_why(
        exporting: tuple[FakeBigQuerySql, FakeGcs, str, str], fault: str) -> None:
    fake, _, url, storage_url = exporting
    packed, _ = _bq_rows(url, storage_url)
    fake.export_denied = fault == "denied"
    bucket = SCRATCH if fault == "denied" else "no-such-bucket"
    rows, fetched = _bq_rows(url, storage_url, export_uri=f"gs://{bucket}/spendwatch/")
    assert rows.equals(packed) and fetched.via.startswith("page by page (EXPORT DATA failed: ")
    assert ("403 " in fetched.via and "Permission denied while writing data" in fetched.via) if fault == "denied" \
        else ("404 " in fetched.via and "no-such-bucket" in fetched.via)
    assert len(fetched.queries) == 2 and fake.queries[-1].count(" AS line") == 1  # the failed export has no job


def test_export_files_that_cannot_be_read_are_asked_for_again(
        exporting: tuple[FakeBigQuerySql, FakeGcs, str, str]) -> None:
    fake, storage, url, storage_url = exporting
    packed, _ = _bq_rows(url, storage_url)
    queries = len(fake.queries)
    storage.denied.add(SCRATCH)  # BigQuery may write there, the scanner may not read
    rows, fetched = _bq_rows(url, storage_url, export_uri=f"gs://{SCRATCH}/spendwatch/")
    assert rows.equals(packed) and fetched.via.startswith("page by page (EXPORT DATA files could not be read: ")
    assert f"gs://{SCRATCH}/spendwatch/spendwatch-export/" in fetched.via and "403" in fetched.via
    assert len(fetched.queries) == 3  # the totals, the export, the packed query
    assert [q.split(None, 1)[0] for q in fake.queries[queries:]] == ["SELECT", "EXPORT", "WITH"]
    # the export's job is billed too
    _, by_pages = _bq_rows(url, storage_url)
    assert by_pages.bytes_scanned and fetched.bytes_scanned and fetched.bytes_scanned > by_pages.bytes_scanned


def test_an_export_file_that_breaks_after_rows_arrived_is_a_gap(
        gcp_data: Any, exporting: tuple[FakeBigQuerySql, FakeGcs, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, url, storage_url = exporting
    put = FakeGcs.put
    written = 0

    def cut_short(self: FakeGcs, bucket: str, name: str, data: bytes) -> int:  # the second file only halfway
        nonlocal written
        written += 1
        return put(self, bucket, name, data[:len(data) // 2] if written == 2 else data)

    monkeypatch.setattr(FakeGcs, "put", cut_short)
    source = WarehouseFlows("bigquery", "gcp_flow_sink", SINK, **WHOLE, bigquery=BigQueryOptions(
        endpoint=url, storage_endpoint=storage_url, export_uri=f"gs://{SCRATCH}/spendwatch/"))
    result = scan_directory(gcp_data.root, store=None, now=gcp_data.end, flows_from=source)
    gaps = [g for g in result.report.gaps if g.source == f"bigquery:{SINK}"]
    assert len(gaps) == 1 and not result.report.complete
    assert "not all flows were read" in gaps[0].reason and "(150 rows read before)" in gaps[0].reason
    assert "/000000000001.parquet: " in gaps[0].reason
    assert "150 aggregate rows had arrived and are kept" in gaps[0].reason


def test_a_file_that_breaks_between_its_own_batches_is_a_gap_not_asked_again(
        exporting: tuple[FakeBigQuerySql, FakeGcs, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of the first file already went to the engine: asking again would add them twice."""
    import pyarrow as pa

    import spendwatch.engine.remote as remote

    fake, _, url, storage_url = exporting
    monkeypatch.setattr(remote, "UNLOAD_BATCH_ROWS", 50)  # three batches a file
    convert = remote.to_schema
    calls = 0

    def second_breaks(table: pa.Table, where: str) -> pa.Table:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise pa.ArrowInvalid("a page that does not decode")
        return convert(table, where)

    monkeypatch.setattr(remote, "to_schema", second_breaks)
    queries = len(fake.queries)
    with pytest.raises(remote.WarehouseError, match=r"/000000000000\.parquet: a page that does not decode "
                                                    r"\(50 rows read before\)"):
        _bq_rows(url, storage_url, export_uri=f"gs://{SCRATCH}/spendwatch/")
    assert [q.split(None, 1)[0] for q in fake.queries[queries:]] == ["SELECT", "EXPORT"]  # not asked again


def test_export_uri_on_the_command_line(gcp_data: Any, exporting: tuple[FakeBigQuerySql, FakeGcs, str, str],
                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake, _, url, storage_url = exporting
    args = ["scan", "--data", str(gcp_data.root), "--engine", "bigquery", "--table", SINK, *EVER,
            "--endpoint-url", url, "--storage-endpoint", storage_url, "--state", str(tmp_path / "s.db")]
    assert main([*args, "--export-uri", f"gs://{SCRATCH}/sw/"]) == 0
    assert fake.queries[-1].startswith("EXPORT DATA OPTIONS (uri = 'gs://acme-secops-scratch/sw/spendwatch-export/")
    assert main([*args, "--export-uri", "s3://elsewhere/"]) == 1  # as any other bad warehouse option
    assert "--export-uri: not a Cloud Storage location (gs://bucket/prefix/): 's3://elsewhere/'" \
        in capsys.readouterr().err
    assert main([*args, "--export-uri", "gs://scratch/run-*/"]) == 1
    assert "--export-uri: 'gs://scratch/run-*/': a quote, a wildcard, a backslash" in capsys.readouterr().err
