"""Scheduled live scans with `[aws.athena]`: the flow reduction runs in Athena, the rest is read as always.

The organisation's buckets are in moto (server mode); the flow logs are also loaded into the executing Athena
fake (tests/fakes/athena.py) from the same simulator files, so the live scan that reads the flow_logs bucket and
the one that asks Athena must find the same incidents. Both fakes are driven through real boto3 clients.
"""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, where the fakes are

from fakes.athena import FakeAthena
from fakes.raw_http import serve

from spendwatch.aws_cli import live_configs
from spendwatch.cli import main
from spendwatch.config import ConfigError
from spendwatch.connectors.aws import AwsConfig, permissions
from spendwatch.connectors.aws.config import AthenaConfig
from spendwatch.engine.remote import WarehouseFlows
from spendwatch.pipeline import ScanResult, scan_aws, scan_live
from spendwatch.simulate import DEFAULT_END, Truth, simulate
from tests.engine.test_flows import _view

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
TABLE = "logs.vpc_flow_logs"
FLOW_BUCKET = "acme-flow-logs"


@dataclass
class Live:
    endpoint: str  # moto
    athena_url: str  # the Athena fake
    truth: Truth
    reference: ScanResult  # the live scan that reads the flow_logs bucket
    athena: FakeAthena


def _toml(endpoint: str, truth: Truth, athena: str = "") -> str:
    accounts = ", ".join(f'"{a}"' for a in truth.accounts)
    return f'''[aws]
accounts = [{accounts}]
role_name = "spendwatch-read"
regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]
trail = "s3://acme-org-trail/"
flow_logs = "s3://{FLOW_BUCKET}/"
dns_logs = "s3://acme-dns-logs/"
cur = "s3://acme-billing/cur2/acme-cur2/"
metrics = "s3://acme-metrics/metric-streams/"
endpoint_url = "{endpoint}"
max_attempts = 2
{athena}'''


def _upload(endpoint: str, root: Path) -> None:
    """Every file under `root` into the bucket named by its top folder, key = the rest of its path."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.parent != root]
    for bucket in sorted({p.relative_to(root).parts[0] for p in files}):
        s3.create_bucket(Bucket=bucket)

    def put(p: Path) -> None:
        rel = p.relative_to(root)
        s3.put_object(Bucket=rel.parts[0], Key="/".join(rel.parts[1:]), Body=p.read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, files))


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """`python -m moto.server` of this module's own on 127.0.0.1: the simulator's bucket names are fixed, and
    the session's moto servers may hold buckets of those names (tests/connectors/aws). A process of its own,
    as the connector tests' server: serving the objects then does not compete with the scan for the GIL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def live(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ENV.items():
            mp.setenv(key, value)
        root = tmp_path_factory.mktemp("live-athena") / "org"
        truth = simulate(root, days=1.0, instances=16)
        _upload(moto_endpoint, root)
        fake = FakeAthena(denied_workgroups={"locked"}, polls=0)  # polling is test_pushdown's; no waits here
        fake.add_flow_logs(TABLE, root / FLOW_BUCKET)
        config = tmp_path_factory.mktemp("live-athena-conf") / "spendwatch.toml"
        config.write_text(_toml(moto_endpoint, truth))
        reference = scan_live(live_configs(str(config)), store=None, now=truth.end, keep_tables=True)
        with serve(fake) as url:
            yield Live(moto_endpoint, url, truth, reference, fake)


def _athena_toml(live: Live, tmp_path: Path, **keys: Any) -> Path:
    """The reference's configuration with an [aws.athena] table (`keys` override or add keys)."""
    values = {"table": TABLE, "window_hours": 48, "endpoint_url": live.athena_url, **keys}
    table = "\n[aws.athena]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    path = tmp_path / "athena.toml"
    path.write_text(_toml(live.endpoint, live.truth, table))
    return path


def test_a_live_scan_on_athena_finds_what_the_bucket_scan_finds(live: Live, tmp_path: Path) -> None:
    ref = live.reference
    got = scan_live(live_configs(str(_athena_toml(live, tmp_path))), store=None, now=live.truth.end)
    flagged = {f.resource for f in ref.findings if f.severity.name in ("HIGH", "CRITICAL")}
    assert all(set(i.resources) <= flagged for i in live.truth.incidents)  # the reference sees the incidents
    assert _view(got.findings) == _view(ref.findings)
    # every record of the window was reduced in Athena: the same count as the files of the bucket gave
    assert got.report.tables == ref.report.tables and ref.report.tables["flows"] == live.truth.flow_records
    assert any(s.path == f"athena:{TABLE}" and s.records == {"flows": live.truth.flow_records}
               for s in got.report.sources)
    assert not any(s.kind.startswith("vpc-flow-logs") for s in got.report.sources)
    assert any(s.kind.startswith("vpc-flow-logs") for s in ref.report.sources)
    assert sum("flow_logs bucket s3://acme-flow-logs/" in n and "not read" in n for n in got.report.notes) == 1
    # the bucket is not listed, so its "no flow log files for this account" gap is gone; every other gap stays
    ref_gaps = {g.source for g in ref.report.gaps}
    assert {g.source for g in got.report.gaps} == {s for s in ref_gaps if not s.endswith("/vpcflowlogs")}
    assert not got.report.problems
    # the Athena calls went through the connector's own clients (counted with its other calls)
    assert any("athena:StartQueryExecution 2" in n for n in got.report.notes if n.startswith("aws api calls"))


def test_a_live_scan_reads_athenas_rows_from_the_result_file(live: Live, tmp_path: Path) -> None:
    """With an output location and `unload = false`, the rows come from the CSV file Athena writes there, through
    the connector's S3 client, and the findings are the same."""
    with live.athena.results_in(live.endpoint, "acme-athena-results") as results:
        config = _athena_toml(live, tmp_path, output_location=f"{results}spendwatch/", unload=False)
        got = scan_live(live_configs(str(config)), store=None, now=live.truth.end)
    assert _view(got.findings) == _view(live.reference.findings)
    assert got.report.tables == live.reference.report.tables
    assert any("aggregate rows brought back from s3://acme-athena-results/spendwatch/" in n
               for n in got.report.notes)
    assert not any("UNLOAD" in e.query for e in live.athena.executions.values())


def test_a_live_scan_reads_athenas_rows_as_parquet_through_unload(live: Live, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """By default, with an output location, the rows query is an UNLOAD: Athena writes them as Parquet under a new
    prefix of the output location, the data manifest lists the files, and the connector's S3 client reads them
    (counted with its other calls); the findings are the same as the bucket scan's."""
    monkeypatch.setattr(live.athena, "unload_file_rows", 500)  # several files
    got: dict[bool, ScanResult] = {}
    with live.athena.results_in(live.endpoint, "acme-athena-results") as results:
        for unload in (False, True):
            config = _athena_toml(live, tmp_path, output_location=f"{results}spendwatch/", unload=unload)
            got[unload] = scan_live(live_configs(str(config)), store=None, now=live.truth.end)
    assert _view(got[True].findings) == _view(live.reference.findings)
    assert got[True].report.tables == live.reference.report.tables
    note = next(n for n in got[True].report.notes if n.startswith(f"athena:{TABLE}:"))
    files = int(note.split("as Parquet through UNLOAD (")[1].split(" file(s)")[0])
    assert files > 1 and "under s3://acme-athena-results/spendwatch/spendwatch-unload/" in note
    unloads = [e for e in live.athena.executions.values() if e.query.startswith("UNLOAD (")]
    assert len(unloads) == 1 and "WITH (format = 'PARQUET', compression = 'GZIP')" in unloads[0].query

    def get_object(result: ScanResult) -> int:  # through the connector's client, counted with its other calls
        calls = next(n for n in result.report.notes if n.startswith("aws api calls"))
        return int(calls.split("s3:GetObject ")[1].split(",")[0])

    # the manifest and each file instead of the one CSV file
    assert get_object(got[True]) == get_object(got[False]) + files


def _started_in(root: Path, start_s: int, end_s: int) -> int:
    """Flow records (log-status OK) under `root` that started in [start_s, end_s), read from the files."""
    count = 0
    for path in root.rglob("*.log.gz"):
        with gzip.open(path, "rt") as handle:
            header = handle.readline().split()
            for line in handle:
                record = dict(zip(header, line.split(), strict=True))
                count += record["log-status"] == "OK" and start_s <= int(record["start"]) < end_s
    return count


def test_the_flow_logs_bucket_is_not_read_and_athena_reads_the_trailing_window(live: Live, tmp_path: Path) -> None:
    """The connector itself (what scan_live, scan_aws and model training call), with a hook on every client."""
    from spendwatch.connectors.aws import scan
    from spendwatch.engine.flows import FlowEngine
    from spendwatch.report import RunReport

    reads: list[tuple[str, str]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        reads.append((model.name, str(params.get("Bucket"))))

    calls: list[str] = []

    def every(model: Any, **_: Any) -> None:
        calls.append(f"{model.service_model.service_name}:{model.name}")

    # the bucket sources this test does not look at are left out: the scan then reads DNS logs only
    config = replace(live_configs(str(_athena_toml(live, tmp_path, window_hours=3)))["aws"], trail=None,
                     metrics=None, cur=None)
    report = RunReport()
    with FlowEngine() as engine:
        got = scan(config, report, now=live.truth.end, flows=engine,
                   hooks=[("before-parameter-build.s3.*", record), ("before-call.*.*", every)])
        records = engine.records
    assert ("GetObject", "acme-dns-logs") in reads  # the recorder sees the reads
    assert not [r for r in reads if r[1] == FLOW_BUCKET]  # neither listed nor fetched
    assert not any(c.startswith("logs:") for c in calls)  # nor CloudWatch Logs flow log groups
    assert calls.count("athena:StartQueryExecution") == 2  # the totals, then the rows
    assert {c for c in calls if c.startswith("athena:")} == {
        "athena:StartQueryExecution", "athena:GetQueryExecution", "athena:GetQueryResults"}
    assert got.calls["athena:StartQueryExecution"] == 2  # counted by the connector like its other calls
    # declared (the clients refuse undeclared calls), granted by the extra policy and not by the read-only one
    made = {permissions.permission(*c.split(":")) for c in calls if c.startswith("athena:")}
    extra = {a for statement in permissions.athena_policy()["Statement"] for a in statement["Action"]}
    assert made <= extra and {"s3:PutObject", "glue:GetTable"} <= extra
    assert not made & set(permissions.declared())
    end_s = int(live.truth.end.timestamp())
    expected = _started_in(live.truth.root / FLOW_BUCKET, end_s - 3 * 3600, end_s)
    assert 0 < expected < live.truth.flow_records
    assert records == expected and got.tables.flows.empty
    # no watermark for the flows: each scan asks for its trailing window again
    assert not any(m.source == "flows" for m in got.marks)


def test_scan_aws_asks_athena_for_the_hours_before_its_now(live: Live, tmp_path: Path) -> None:
    """`scan_aws(now=...)` (a replay, a test) moves the Athena window with it, not only detection's clock."""
    config = replace(live_configs(str(_athena_toml(live, tmp_path, window_hours=2)))["aws"], trail=None,
                     metrics=None, cur=None)
    now = live.truth.end - timedelta(hours=5)
    got = scan_aws(config, store=None, now=now)
    end_s = int(now.timestamp())
    expected = _started_in(live.truth.root / FLOW_BUCKET, end_s - 2 * 3600, end_s)
    assert expected > 0 and got.report.tables["flows"] == expected
    assert any(s.path == f"athena:{TABLE}" and s.records == {"flows": expected} for s in got.report.sources)


def test_a_denied_athena_query_is_a_gap_and_the_scan_goes_on(live: Live, tmp_path: Path) -> None:
    """(A query that fails in Athena, TABLE_NOT_FOUND say, takes the same way: test_pushdown.py shows it.)"""
    got = scan_live(live_configs(str(_athena_toml(live, tmp_path, workgroup="locked"))), store=None,
                    now=live.truth.end)
    gaps = [g for g in got.report.gaps if g.source == f"athena:{TABLE}"]
    assert len(gaps) == 1 and "AccessDeniedException" in gaps[0].reason and "workgroup/locked" in gaps[0].reason
    assert "no flows were read" in gaps[0].reason
    assert not got.report.complete
    assert "flows" not in got.report.tables or not got.report.tables["flows"]
    for name in ("activity", "dns", "spend", "utilization", "inventory"):  # the other sources were read
        assert got.report.tables[name] == live.reference.report.tables[name], name
    assert got.findings  # detection ran on what was read


def test_model_training_asks_athena_for_the_baseline_window(live: Live, tmp_path: Path) -> None:
    """`model train` over a live configuration: the flows of the whole baseline (two weeks and a day), not the
    trailing `window_hours` a scan asks for."""
    from spendwatch.engine.flows import FlowEngine
    from spendwatch.model_cli import _live_tables
    from spendwatch.report import RunReport

    config = live_configs(str(_athena_toml(live, tmp_path, window_hours=2)))
    with FlowEngine() as engine:
        _live_tables({"aws": config["aws"]}, RunReport(), {}, flows=engine)
        trained_on = engine.records
    assert trained_on == live.truth.flow_records  # the day of data, all of it in the baseline window


def test_athena_queries_run_as_the_role_arn_names(live: Live, tmp_path: Path) -> None:
    """A table in another account (log archive, Security Lake): the queries are signed with the assumed role's
    credentials, not the scanner's own (moto's STS hands out ASIA... keys; the scanner's is "testing")."""
    fake = live.athena
    fake.signers.clear()
    role = "arn:aws:iam::222222222222:role/spendwatch-athena"
    got = scan_live(live_configs(str(_athena_toml(live, tmp_path, role_arn=role))), store=None,
                    now=live.truth.end)
    assert _view(got.findings) == _view(live.reference.findings)
    assert fake.signers and all(key.startswith("ASIA") for key in fake.signers)
    assert any("sts:AssumeRole" in n for n in got.report.notes if n.startswith("aws api calls"))


def test_a_partition_column_the_table_lacks_is_a_gap_and_none_reads_it_whole(live: Live, tmp_path: Path) -> None:
    got = scan_live(live_configs(str(_athena_toml(live, tmp_path, partition_column="dt"))), store=None,
                    now=live.truth.end)
    gaps = [g for g in got.report.gaps if g.source == f"athena:{TABLE}"]
    assert len(gaps) == 1 and '"dt"' in gaps[0].reason
    whole = scan_live(live_configs(str(_athena_toml(live, tmp_path, partition_column=""))), store=None,
                      now=live.truth.end)
    assert _view(whole.findings) == _view(live.reference.findings)
    queries = [e.query for e in live.athena.executions.values()]
    assert any('"dt" BETWEEN' in q for q in queries) and any('"date" BETWEEN' in q for q in queries)


@pytest.mark.parametrize(("table", "key"), [
    ('table = "t"\npartition_format = "yyyy"', "partition_format"),
    ('table = "t"\npartition_column = "day; DROP"', "partition_column"),
    ('table = "t"\nrole_arn = "spendwatch-athena"', "role_arn"),
    ('source = "vpc_flow_logs"', "table"),
    ('table = "logs.vpc flow logs"', "table"),
    ('table = "t"\nsource = "canonical"', "source"),
    ('table = "t"\nwindow_hours = 0', "window_hours"),
    ('table = "t"\nwindow_hours = "3h"', "window_hours"),
    ('table = "t"\noutput_location = "athena-results/"', "output_location"),
    ('table = "t"\nquery_timeout_s = 0', "query_timeout_s"),
    ('table = "t"\nworkgroup = ""', "workgroup"),
    ('table = "t"\nunload = "yes"', "unload"),
])
def test_a_bad_athena_value_is_a_config_error_naming_the_key(tmp_path: Path, table: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[aws]\naccounts = ["012345678901"]\n\n[aws.athena]\n{table}\n')
    with pytest.raises(ConfigError, match=rf"^\[aws\.athena\] {key}: "):
        live_configs(str(path))


def test_an_unknown_athena_key_or_a_non_table_is_refused(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"\[aws\.athena\]: unknown key\(s\) windw_hours"):
        AwsConfig.from_dict({"athena": {"table": "t", "windw_hours": 3}})
    with pytest.raises(ConfigError, match=r"\[aws\.athena\] must be a table"):
        AwsConfig.from_dict({"athena": "logs.vpc_flow_logs"})
    path = tmp_path / "bad.toml"
    path.write_text('[aws]\naccounts = ["012345678901"]\n\n[aws.athena]\ntable = "t"\nsource = "ocsf"\n')
    assert main(["scan", "--config", str(path), "--state", str(tmp_path / "s.db")]) == 1
    assert "[aws.athena] source: must be one of vpc_flow_logs, security_lake, not 'ocsf'" in capsys.readouterr().err


def test_the_window_is_the_trailing_hours_and_defaults_come_from_aws() -> None:
    config = AwsConfig.from_dict({"home_region": "eu-west-1", "endpoint_url": "http://127.0.0.1:9",
                                  "athena": {"table": TABLE, "output_location": "s3://results/sw"}})
    assert config.athena == AthenaConfig(table=TABLE, output_location=config.athena.output_location)
    now = DEFAULT_END
    source = WarehouseFlows.from_aws(config, now)
    assert (source.engine, source.source, source.table) == ("athena", "vpc_flow_logs", TABLE)
    assert source.end_s == int(now.timestamp()) and source.start_s == int((now - timedelta(hours=3)).timestamp())
    assert source.athena.region == "eu-west-1" and source.athena.endpoint_url == "http://127.0.0.1:9"
    assert source.athena.output_location == "s3://results/sw/" and source.athena.timeout_s == 600.0
    assert source.athena.unload is True
    off = AwsConfig.from_dict({"athena": {"table": TABLE, "unload": False}})
    assert WarehouseFlows.from_aws(off, now).athena.unload is False
    with pytest.raises(ValueError, match=r"no \[aws\.athena\]"):
        WarehouseFlows.from_aws(AwsConfig(), now)

