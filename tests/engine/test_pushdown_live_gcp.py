"""Scheduled live GCP scans with `[gcp.bigquery]`: the flow reduction runs in BigQuery, the rest is read as always.

The sink buckets are in the Cloud Storage fake (tests/fakes/gcs.py); the same simulator's VPC flow log entries
are also loaded into the executing BigQuery fake (tests/fakes/bigquery_sql.py) as a BigQuery sink's rows, so the
live scan that fetches the sink's `vpc_flows/` objects and the one that asks BigQuery must find the same
incidents. Both fakes are driven through the real google-cloud-storage and google-cloud-bigquery clients.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, where the fakes are

from fakes.bigquery_sql import FakeBigQuerySql
from fakes.gcs import FakeGcs
from fakes.raw_http import serve

from spendwatch.aws_cli import live_configs
from spendwatch.config import ConfigError
from spendwatch.connectors.gcp import GcpConfig, permissions
from spendwatch.connectors.gcp.config import BigQueryFlowsConfig
from spendwatch.connectors.gcp.live import scan
from spendwatch.engine.flows import FlowEngine
from spendwatch.engine.remote import WarehouseFlows
from spendwatch.pipeline import ScanResult, scan_live
from spendwatch.report import RunReport
from spendwatch.simulate import DEFAULT_END, Truth
from spendwatch.simulate.gcp import BILLING, LOGS, MONITORING, simulate_gcp
from tests.engine.test_flows import _view

TABLE = "acme-logs.flow_logs.compute_googleapis_com_vpc_flows"
DENIED = "acme-flow-jobs"  # a job project where the fake answers 403 accessDenied to jobs
FLOWS = "compute.googleapis.com/vpc_flows/"


@dataclass
class Live:
    storage: FakeGcs
    storage_url: str
    warehouse: FakeBigQuerySql
    bigquery_url: str
    truth: Truth
    reference: ScanResult  # the live scan that fetches the sink's flow objects


def _toml(storage_url: str, bigquery_url: str, bigquery: str = "") -> str:
    return f'''[gcp]
logs = ["gs://{LOGS}/"]
billing = ["gs://{BILLING}/billing_export/"]
monitoring = ["gs://{MONITORING}/timeseries/"]
storage_endpoint = "{storage_url}"
bigquery_endpoint = "{bigquery_url}"
anonymous = true
backoff_s = 0.01
{bigquery}'''


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("live-bigquery")
    truth = simulate_gcp(root, seed=7, days=1.0, instances=12)
    storage = FakeGcs()
    for bucket in (LOGS, BILLING, MONITORING):
        storage.upload_tree(root / bucket, bucket)
    warehouse = FakeBigQuerySql(TABLE, denied={DENIED}, page_rows=500)
    assert warehouse.add_flow_logs(root / LOGS) == truth.flow_records
    with serve(storage) as storage_url, serve(warehouse) as bigquery_url:
        config = tmp_path_factory.mktemp("live-bigquery-conf") / "spendwatch.toml"
        config.write_text(_toml(storage_url, bigquery_url))
        reference = scan_live(live_configs(str(config)), store=None, now=truth.end, keep_tables=True)
        yield Live(storage, storage_url, warehouse, bigquery_url, truth, reference)


def _bigquery_toml(live: Live, tmp_path: Path, **keys: Any) -> Path:
    """The reference's configuration with a [gcp.bigquery] table (`keys` override or add keys)."""
    values = {"table": TABLE, "window_hours": 48, **keys}
    table = "\n[gcp.bigquery]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    path = tmp_path / "bigquery.toml"
    path.write_text(_toml(live.storage_url, live.bigquery_url, table))
    return path


def _touches_flows(log: list[tuple[str, str, dict[str, str]]]) -> list[tuple[str, str, dict[str, str]]]:
    """Storage requests that list or fetch the sink's flow objects (a listing names its prefix in the query)."""
    return [r for r in log if FLOWS in r[1] or FLOWS in r[2].get("prefix", "") or
            FLOWS.replace("/", "%2F") in r[1]]


def test_a_live_scan_on_bigquery_finds_what_the_bucket_scan_finds(live: Live, tmp_path: Path) -> None:
    ref = live.reference
    before = len(live.storage.log)
    got = scan_live(live_configs(str(_bigquery_toml(live, tmp_path))), store=None, now=live.truth.end)
    flagged = {f.resource for f in ref.findings if f.severity.label in ("high", "critical")}
    assert all(set(i.resources) <= flagged for i in live.truth.incidents)  # the reference sees the incidents
    assert _view(got.findings) == _view(ref.findings)
    # every entry of the window was reduced in BigQuery: the same count as the sink's objects gave
    assert got.report.tables == ref.report.tables and ref.report.tables["flows"] == live.truth.flow_records
    assert any(s.path == f"bigquery:{TABLE}" and s.records == {"flows": live.truth.flow_records}
               for s in got.report.sources)
    assert not any(s.kind == "gcp-vpc-flow-logs" for s in got.report.sources)
    assert any(s.kind == "gcp-vpc-flow-logs" for s in ref.report.sources)
    assert sum("vpc_flows/ objects are not read" in n for n in got.report.notes) == 1
    # the sink's flow objects were neither listed nor fetched; the other folders and buckets were
    requests = live.storage.log[before:]
    assert requests and not _touches_flows(requests)
    assert _touches_flows(live.storage.log[:before])  # the reference's, which the check would have caught
    assert {g.source for g in got.report.gaps} == {g.source for g in ref.report.gaps}
    assert not got.report.problems
    # the query jobs went through the connector's declared, counted calls
    assert any("bigquery.jobs.create 2" in n for n in got.report.notes if n.startswith("gcp storage calls"))


def test_a_live_scan_brings_bigquerys_rows_back_through_export_data(live: Live, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`export_uri`: the rows as Parquet files BigQuery writes to Cloud Storage, read back with the scan's storage
    client through declared, counted calls; the same findings as the bucket scan."""
    scratch = "acme-secops-scratch"
    monkeypatch.setitem(live.storage.buckets, scratch, {})
    monkeypatch.setattr(live.warehouse, "storage", live.storage)
    monkeypatch.setattr(live.warehouse, "export_rows", 400)  # several files
    insert = FlowEngine.insert_parquet
    inserted: list[int] = []

    def spy(self: FlowEngine, path: str, where: str) -> int:  # the engine reads each file itself
        inserted.append(insert(self, path, where))
        return inserted[-1]

    monkeypatch.setattr(FlowEngine, "insert_parquet", spy)
    config = _bigquery_toml(live, tmp_path, export_uri=f"gs://{scratch}/spendwatch/")
    got = scan_live(live_configs(str(config)), store=None, now=live.truth.end)
    assert _view(got.findings) == _view(live.reference.findings)
    assert got.report.tables == live.reference.report.tables
    assert live.warehouse.queries[-1].startswith(f"EXPORT DATA OPTIONS (uri = 'gs://{scratch}/spendwatch/")
    note = next(n for n in got.report.notes if n.startswith(f"bigquery:{TABLE}: "))
    assert "aggregate rows brought back as Parquet through EXPORT DATA (" in note
    written = [n for n in live.storage.buckets[scratch] if n.startswith("spendwatch/spendwatch-export/")]
    assert len(written) > 1 and f"({len(written)} file(s), " in note and len(inserted) == len(written)
    assert f" {sum(inserted):,} aggregate rows brought back as Parquet" in note
    calls = next(n for n in got.report.notes if n.startswith("gcp storage calls"))
    assert "storage.objects.create 1" in calls and "bigquery.jobs.create 2" in calls
    # the write permission is the bucket's grant, never the reader role's
    assert "storage.objects.create" not in permissions()


def _started_in(root: Path, start_s: int, end_s: int) -> int:
    """Flow log entries under `root` whose connection started in [start_s, end_s), read from the sink's files."""
    count = 0
    for path in (root / FLOWS).rglob("*.json"):
        for line in path.read_text().splitlines():
            if line.strip():
                started = json.loads(line)["jsonPayload"]["start_time"]
                count += start_s <= datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp() < end_s
    return count


def test_model_training_asks_bigquery_for_the_baseline_window(live: Live, tmp_path: Path) -> None:
    """`model train` over a live configuration: the sink's entries of the whole baseline, not the trailing
    `window_hours` a scan asks for."""
    from spendwatch.engine.flows import FlowEngine
    from spendwatch.model_cli import _live_tables
    from spendwatch.report import RunReport

    config = live_configs(str(_bigquery_toml(live, tmp_path, window_hours=2)))
    with FlowEngine() as engine:
        _live_tables({"gcp": config["gcp"]}, RunReport(), {}, flows=engine)
        assert engine.records == live.truth.flow_records


def test_the_connector_asks_bigquery_for_the_trailing_window_in_the_job_project(live: Live, tmp_path: Path) -> None:
    """The connector itself (what scan_live and model training call)."""
    config = live_configs(str(_bigquery_toml(live, tmp_path, window_hours=3, project="acme-secops")))["gcp"]
    config = replace(config, billing=(), monitoring=())  # the sink bucket alone, besides BigQuery
    before, queries = len(live.warehouse.calls), len(live.warehouse.queries)
    report = RunReport()
    with FlowEngine() as engine:
        got = scan(config, report, now=live.truth.end, flows=engine)
        records = engine.records
    end_s = int(live.truth.end.timestamp())
    expected = _started_in(live.truth.root / LOGS, end_s - 3 * 3600, end_s)
    assert 0 < expected < live.truth.flow_records
    assert records == expected and got.tables.flows.empty
    # the totals, then the rows: jobs in the job project, which read the sink's table
    jobs = [c for c in live.warehouse.calls[before:] if c[0] == "POST"]
    assert [c[1] for c in jobs] == ["/bigquery/v2/projects/acme-secops/queries"] * 2
    quoted = ".".join(f"`{part}`" for part in TABLE.split("."))
    assert len(live.warehouse.queries) == queries + 2 and all(quoted in q for q in live.warehouse.queries[queries:])
    assert any("bigquery.jobs.create 2" in n for n in report.notes if n.startswith("gcp storage calls"))
    # declared, and in the reader role Terraform deploys (the billing export query needs the same two)
    role = json.loads((Path(__file__).resolve().parents[2] / "deploy/terraform/gcp/roles/reader.json").read_text())
    assert {"bigquery.jobs.create", "bigquery.tables.getData"} <= set(permissions()) == \
        set(role["includedPermissions"])
    # no watermark for the flows: each scan asks for its trailing window again
    assert not any(m.source == "flows" for m in got.marks)
    assert any(m.source == "dns" for m in got.marks)


def test_a_denied_bigquery_job_is_a_gap_and_the_scan_goes_on(live: Live, tmp_path: Path) -> None:
    got = scan_live(live_configs(str(_bigquery_toml(live, tmp_path, project=DENIED))), store=None,
                    now=live.truth.end)
    gaps = [g for g in got.report.gaps if g.source == f"bigquery:{TABLE}"]
    assert len(gaps) == 1 and "Forbidden" in gaps[0].reason and "bigquery.jobs.create" in gaps[0].reason
    assert "no flows were read" in gaps[0].reason
    assert not got.report.complete
    assert "flows" not in got.report.tables or not got.report.tables["flows"]
    for name in ("activity", "dns", "spend", "utilization", "inventory"):  # the other sources were read
        assert got.report.tables[name] == live.reference.report.tables[name], name
    assert got.findings  # detection ran on what was read


def test_without_a_flow_engine_or_a_sink_bucket_the_flows_are_a_gap(live: Live) -> None:
    """[gcp.bigquery] alone is something to scan; a scan with no engine to add the rows to says it read no flows."""
    config = GcpConfig.from_dict({"bigquery": {"table": TABLE}, "bigquery_endpoint": live.bigquery_url,
                                  "anonymous": True})
    report = RunReport()
    scan(config, report, now=live.truth.end)
    gaps = {g.source: g.reason for g in report.gaps}
    assert "no flow engine" in gaps["gcp/*/flows"]
    assert "not configured" in gaps["gcp/*/dns"]  # the sink's other logs still need `logs`
    assert any("no sink bucket is read for flows" in n for n in report.notes)


@pytest.mark.parametrize(("table", "key"), [
    ('window_hours = 3', "table"),
    ('table = "flow_logs.compute_googleapis_com_vpc_flows"', "table"),
    (f'table = "{TABLE}"\nproject = "Acme_Jobs"', "project"),
    (f'table = "{TABLE}"\nwindow_hours = 0', "window_hours"),
    (f'table = "{TABLE}"\nwindow_hours = "3h"', "window_hours"),
    (f'table = "{TABLE}"\nquery_timeout_s = 0', "query_timeout_s"),
    (f'table = "{TABLE}"\nlocation = ""', "location"),
    (f'table = "{TABLE}*"', "table"),  # day shards are name_YYYYMMDD: the wildcard is name_*
    (f'table = "{TABLE}_*_x"', "table"),
    (f'table = "{TABLE}"\nexport_uri = "s3://acme-scratch/"', "export_uri"),
    (f'table = "{TABLE}"\nexport_uri = "gs://Acme_Scratch/"', "export_uri"),
    (f'table = "{TABLE}"\nexport_uri = "gs://acme-scratch/run-*/"', "export_uri"),
    (f'table = "{TABLE}"\nexport_uri = "gs://acme-scratch/o\'neil/"', "export_uri"),
    (f'table = "{TABLE}"\nexport_uri = "gs://acme-scratch/a\\\\b/"', "export_uri"),
])
def test_a_bad_bigquery_value_is_a_config_error_naming_the_key(tmp_path: Path, table: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[gcp]\nlogs = ["gs://{LOGS}/"]\n\n[gcp.bigquery]\n{table}\n')
    with pytest.raises(ConfigError, match=rf"^{path}: \[gcp\.bigquery\] {key}: "):
        live_configs(str(path))


def test_an_unknown_bigquery_key_or_a_non_table_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[gcp\.bigquery\]: unknown key\(s\) windw_hours"):
        GcpConfig.from_dict({"bigquery": {"table": TABLE, "windw_hours": 3}})
    with pytest.raises(ConfigError, match=r"\[gcp\.bigquery\] must be a table"):
        GcpConfig.from_dict({"bigquery": TABLE})


def test_the_window_is_the_trailing_hours_and_the_jobs_run_in_the_tables_project() -> None:
    config = GcpConfig.from_dict({"bigquery": {"table": TABLE}, "bigquery_endpoint": "http://127.0.0.1:9"})
    assert config.bigquery == BigQueryFlowsConfig(table=TABLE, project="acme-logs")
    now = DEFAULT_END
    source = WarehouseFlows.from_gcp(config, now)
    assert (source.engine, source.source, source.table) == ("bigquery", "gcp_flow_sink", TABLE)
    assert source.end_s == int(now.timestamp()) and source.start_s == int((now - timedelta(hours=3)).timestamp())
    assert source.bigquery.project == "acme-logs" and source.bigquery.endpoint == "http://127.0.0.1:9"
    assert source.bigquery.location is None and source.bigquery.timeout_s == 600.0
    located = replace(config, bigquery=BigQueryFlowsConfig(TABLE, "acme-secops", location="EU", window_hours=6,
                                                           query_timeout_s=30.0))
    source = WarehouseFlows.from_gcp(located, now)
    assert (source.bigquery.project, source.bigquery.location, source.bigquery.timeout_s) == \
        ("acme-secops", "EU", 30.0)
    assert source.end_s - source.start_s == 6 * 3600
    with pytest.raises(ValueError, match=r"no \[gcp\.bigquery\]"):
        WarehouseFlows.from_gcp(GcpConfig(logs=config.logs), now)
    shards = GcpConfig.from_dict({"bigquery": {"table": TABLE + "_*"}})  # a sink's day shards
    assert shards.bigquery is not None and WarehouseFlows.from_gcp(shards, now).table == TABLE + "_*"
