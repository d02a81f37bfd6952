"""Scheduled live scans with `[aws.athena] cur_table`: spend aggregated in Athena over the CUR 2.0 table.

The organisation's buckets are in moto (server mode). The simulator's CUR 2.0 file gets what real exports also
hold (a usage hour written as several line items, an implausible cost, a missing cost, a missing account) and
goes both into the `cur` bucket and, as the Athena table over the export (`billing_period` partition, zoneless
timestamps, as Glue declares it), into the executing Athena fake (tests/fakes/athena.py): the scan that reads the
bucket and the one that asks Athena must give the same spend and the same findings. Real boto3 clients drive
both fakes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlglot

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, where the fakes are

from fakes.athena import FakeAthena
from fakes.raw_http import serve

from spendwatch.aws_cli import live_configs
from spendwatch.config import ConfigError
from spendwatch.connectors.aws import AwsConfig, permissions, scan
from spendwatch.connectors.files._common import FileContext
from spendwatch.connectors.files.cur import read_cur2_table, read_parquet
from spendwatch.engine.spend_sql import REVISE, billing_periods, cur_spend_sql, window
from spendwatch.engine.sql import translate
from spendwatch.pipeline import ScanResult, scan_live
from spendwatch.report import RunReport
from spendwatch.simulate import Truth, simulate
from tests.engine.test_flows import _view
from tests.engine.test_pushdown_live import ENV, FLOW_BUCKET, _toml, _upload, moto_endpoint  # noqa: F401 (fixture)

CUR_TABLE = "cur.acme_cur2"
FLOW_TABLE = "logs.vpc_flow_logs"
KEY = ["hour", "account", "region", "service", "usage_type", "resource", "pricing"]
# Every line item of the simulated period (the Tax lines start on the 1st): the first run's window covers them.
INITIAL_HOURS = 24 * 21


@dataclass
class Cur:
    endpoint: str  # moto
    athena_url: str
    fake: FakeAthena
    truth: Truth
    items: pa.Table  # the CUR 2.0 line items in the bucket (what the Athena table holds)
    reference: ScanResult  # the live scan that reads the cur bucket


def _cur_file(root: Path) -> Path:
    (path,) = (root / "acme-billing").rglob("*.parquet")
    return path


def _with_what_exports_hold(items: pa.Table) -> pa.Table:
    """The simulator's line items, plus: the first GPU instance's usage hours each written as two line items
    (0.4 and 0.6 of the cost and usage), and five bad line items on an existing key (an implausible cost, two
    with a missing cost) or none (two missing an account), which both readers must drop without touching the
    good ones. The twins fall in one aggregate row each: Athena's answer has three bad rows for five items."""
    rows = items.to_pylist()
    gpu = next(r["line_item_resource_id"] for r in rows if (r["product_instance_type"] or "").startswith("p"))
    out: list[dict[str, Any]] = []
    for r in rows:
        if r["line_item_resource_id"] == gpu and r["line_item_line_item_type"] == "Usage":
            for share in (0.4, 0.6):
                out.append({**r, "line_item_unblended_cost": r["line_item_unblended_cost"] * share,
                            "line_item_usage_amount": r["line_item_usage_amount"] * share})
        else:
            out.append(r)
    victim = next(r for r in rows if r["line_item_resource_id"] and r["line_item_resource_id"] != gpu)
    out.append({**victim, "line_item_unblended_cost": 5e9})
    out.extend([{**victim, "line_item_unblended_cost": None}] * 2)
    out.extend([{**victim, "line_item_usage_account_id": None}] * 2)
    return pa.Table.from_pylist(out, schema=items.schema)


def _athena_table(items: pa.Table, period: str) -> pa.Table:
    """The table Athena keeps over the export: zoneless timestamps holding UTC, the `billing_period` partition."""
    columns = {}
    for name in items.column_names:
        col = items[name]
        if pa.types.is_timestamp(col.type) and col.type.tz is not None:
            col = col.cast(pa.timestamp(col.type.unit))  # the same instants, as UTC wall-clock time
        columns[name] = col
    columns["billing_period"] = pa.array([period] * items.num_rows, pa.string())
    return pa.table(columns)


def _config(cur: Cur, tmp_path: Path, **athena: Any) -> Path:
    values = {"cur_table": CUR_TABLE, "endpoint_url": cur.athena_url, **athena}
    table = f"initial_hours = {INITIAL_HOURS}\n\n[aws.athena]\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    path = tmp_path / "cur-athena.toml"
    path.write_text(_toml(cur.endpoint, cur.truth, table))
    return path


@pytest.fixture(scope="module")
def cur(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cur]:  # noqa: F811
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ENV.items():
            mp.setenv(key, value)
        root = tmp_path_factory.mktemp("cur-athena") / "org"
        truth = simulate(root, days=1.0, instances=16)
        path = _cur_file(root)
        items = _with_what_exports_hold(pq.read_table(path))
        pq.write_table(items, path)  # the manifest names this file: the bucket holds the same line items
        _upload(moto_endpoint, root)
        fake = FakeAthena(denied_workgroups={"locked"}, polls=0)
        period = path.parent.name.split("=", 1)[1]
        fake.add_table(CUR_TABLE, _athena_table(items, period), scanned_bytes=path.stat().st_size)
        fake.add_flow_logs(FLOW_TABLE, root / FLOW_BUCKET)
        config = tmp_path_factory.mktemp("cur-athena-conf") / "spendwatch.toml"
        config.write_text(_toml(moto_endpoint, truth, f"initial_hours = {INITIAL_HOURS}\n"))
        reference = scan_live(live_configs(str(config)), store=None, now=truth.end, keep_tables=True)
        with serve(fake) as url:
            yield Cur(moto_endpoint, url, fake, truth, items, reference)


def _totals(spend: pd.DataFrame) -> pd.DataFrame:
    frame = spend[[*KEY, "cost_usd", "usage_amount"]].copy()
    frame[KEY] = frame[KEY].astype(object).where(frame[KEY].notna(), "<null>")
    return frame.groupby(KEY, dropna=False)[["cost_usd", "usage_amount"]].sum().sort_index()


def test_spend_from_athena_is_the_bucket_spend_with_the_same_findings(cur: Cur, tmp_path: Path) -> None:
    ref = cur.reference
    got = scan_live(live_configs(str(_config(cur, tmp_path))), store=None, now=cur.truth.end, keep_tables=True)
    assert ref.tables is not None and got.tables is not None
    want, have = _totals(ref.tables.spend), _totals(got.tables.spend)
    assert list(have.index) == list(want.index)
    pd.testing.assert_frame_equal(have, want, check_exact=False, rtol=1e-9)
    # fewer rows travelled: the split usage hours came back as one row each
    assert len(got.tables.spend) < len(ref.tables.spend) < cur.items.num_rows
    assert _view(got.findings) == _view(ref.findings) and got.findings
    # the bucket's CUR objects were not read; the Athena read counts every line item of the window
    assert not any(s.kind == "cur2-parquet" for s in got.report.sources)
    assert any(s.kind == "cur2-parquet" for s in ref.report.sources)
    assert [(s.records, s.skipped) for s in got.report.sources if s.path == f"athena:{CUR_TABLE}"] == \
        [({"spend": cur.items.num_rows - 5}, 5)]
    assert sum(s.records.get("spend", 0) for s in ref.report.sources if s.kind == "cur2-parquet") == \
        cur.items.num_rows - 5
    assert sum("cur bucket s3://acme-billing/cur2/acme-cur2/ is not read" in n for n in got.report.notes) == 1
    # only CUR is pushed down: flows still come from the flow_logs bucket
    assert got.report.tables["flows"] == ref.report.tables["flows"] == cur.truth.flow_records
    # the bad line items are problems on both paths, and nothing else is: five line items lost on each, one
    # problem per line item in the files, one per summed row from Athena, saying how many line items it sums
    implausible = "line_item_unblended_cost 5000000000.0 is not a plausible line item cost (1e9 USD or more)"
    for report, where in ((ref.report, "s3://acme-billing/"), (got.report, f"athena:{CUR_TABLE} ")):
        assert all(p.source.startswith(where) for p in report.problems)
        assert report.skipped_records == 5
    assert sorted(p.reason for p in ref.report.problems) == [
        implausible, *["line_item_unblended_cost is missing"] * 2, *["line_item_usage_account_id is missing"] * 2]
    assert sorted((p.reason, p.records) for p in got.report.problems) == [
        (implausible, 1), ("line_item_unblended_cost is missing (a sum of 2 line items)", 2),
        ("line_item_usage_account_id is missing (a sum of 2 line items)", 2)]
    assert {g.source for g in got.report.gaps} == {g.source for g in ref.report.gaps}


def test_spend_read_from_athenas_result_file_is_the_spend_read_through_the_pages(cur: Cur, tmp_path: Path) -> None:
    """With an output location the rows come from the CSV file Athena writes there (types from the result's
    ColumnInfo): the same spend, problems and findings as through GetQueryResults' pages."""
    paged = scan_live(live_configs(str(_config(cur, tmp_path))), store=None, now=cur.truth.end, keep_tables=True)
    with cur.fake.results_in(cur.endpoint, "acme-athena-results") as results:
        config = _config(cur, tmp_path, output_location=f"{results}cur/")
        got = scan_live(live_configs(str(config)), store=None, now=cur.truth.end, keep_tables=True)
    assert got.tables is not None and paged.tables is not None
    pd.testing.assert_frame_equal(_totals(got.tables.spend), _totals(paged.tables.spend))
    assert [(p.reason, p.records) for p in got.report.problems] == \
        [(p.reason, p.records) for p in paged.report.problems]
    assert _view(got.findings) == _view(paged.findings)
    assert any(f"athena:{CUR_TABLE}" in n and "rows from s3://acme-athena-results/cur/" in n
               for n in got.report.notes)
    assert any(f"athena:{CUR_TABLE}" in n and "rows through GetQueryResults (no result file named)" in n
               for n in paged.report.notes)
    # the file was read through the connector's own S3 client: one GetObject more among its counted calls
    assert _calls(got, "s3:GetObject") == _calls(paged, "s3:GetObject") + 1
    assert _calls(got, "athena:GetQueryResults") == _calls(paged, "athena:GetQueryResults") == 1


def _calls(result: ScanResult, action: str) -> int:
    """How many `action` calls the AWS connector counted (its "aws api calls" note)."""
    note = next(n for n in result.report.notes if n.startswith("aws api calls: "))
    counts = dict(item.rsplit(" ", 1) for item in note.removeprefix("aws api calls: ").split(", "))
    return int(counts.get(action, 0))


def test_the_connector_reads_the_window_and_revises_three_days_back(cur: Cur, tmp_path: Path) -> None:
    """The connector itself: the first run's window is initial_hours back, the next starts REVISE before the end
    the first one saved; the Athena calls are the declared ones, granted by the Athena policy only."""
    calls: list[str] = []

    def every(model: Any, **_: Any) -> None:
        calls.append(f"{model.service_model.service_name}:{model.name}")

    config = replace(live_configs(str(_config(cur, tmp_path)))["aws"], trail=None, metrics=None, flow_logs=None,
                     dns_logs=None, initial_hours=6)
    now = cur.truth.end + timedelta(minutes=20)
    first = scan(config, RunReport(), now=now, hooks=[("before-call.*.*", every)])
    end = cur.truth.end  # the start of the hour of `now`
    (mark,) = [m for m in first.marks if m.source == "billing"]
    assert (mark.account, mark.region, mark.scope, mark.position) == ("*", "", f"athena:{CUR_TABLE}",
                                                                     end.isoformat())
    starts = pc.cast(cur.items["line_item_usage_start_date"], pa.timestamp("ms", tz="UTC"))
    expected = cur.items.filter(pc.and_(pc.greater_equal(starts, pa.scalar(end - timedelta(hours=6))),
                                        pc.less(starts, pa.scalar(end))))
    assert 0 < expected.num_rows < cur.items.num_rows
    assert first.tables.spend["cost_usd"].sum() == pytest.approx(
        pc.sum(expected["line_item_unblended_cost"]).as_py(), rel=1e-9)
    query = cur.fake.executions[max(cur.fake.executions)].query
    assert "billing_period IN ('2026-11')" in query and "'2026-11-20 06:00:00'" in query
    # the next run: from REVISE before the saved end
    later = now + timedelta(hours=2)
    second = scan(config, RunReport(), now=later, marks={("aws", "*", "", "billing", mark.scope): mark})
    query = cur.fake.executions[max(cur.fake.executions)].query
    assert f"'{end - REVISE:%Y-%m-%d %H:%M:%S}'" in query and f"'{end + timedelta(hours=2):%Y-%m-%d %H:%M:%S}'" in query
    assert [m.position for m in second.marks if m.source == "billing"] == [(end + timedelta(hours=2)).isoformat()]
    # no cur bucket read, no Cost Explorer; the Athena calls are declared and granted by the Athena policy only
    assert not any(c.startswith(("s3:", "ce:")) for c in calls)
    athena = {permissions.permission(*c.split(":")) for c in calls if c.startswith("athena:")}
    granted = {a for statement in permissions.athena_policy()["Statement"] for a in statement["Action"]}
    assert athena == {"athena:StartQueryExecution", "athena:GetQueryExecution", "athena:GetQueryResults"}
    assert athena <= granted and not athena & set(permissions.declared())


def test_a_denied_or_failed_query_is_a_billing_gap_and_the_scan_goes_on(cur: Cur, tmp_path: Path) -> None:
    got = scan_live(live_configs(str(_config(cur, tmp_path, table=FLOW_TABLE, workgroup="locked",
                                             window_hours=48))),
                    store=None, now=cur.truth.end)
    gaps = {g.source: g.reason for g in got.report.gaps}
    assert "AccessDeniedException" in gaps[f"athena:{CUR_TABLE}"] and "workgroup/locked" in gaps[f"athena:{CUR_TABLE}"]
    assert "no billing was read" in gaps[f"athena:{CUR_TABLE}"]
    assert "no flows were read" in gaps[f"athena:{FLOW_TABLE}"]  # both pushed down, both refused
    assert not got.report.complete and not got.report.tables.get("spend")
    for name in ("activity", "dns", "utilization", "inventory"):  # the other sources were read
        assert got.report.tables[name] == cur.reference.report.tables[name], name
    # a query Athena runs and fails (no such table) takes the same way, and saves no billing watermark
    config = replace(live_configs(str(_config(cur, tmp_path, cur_table="cur.no_such_table")))["aws"], trail=None,
                     metrics=None, flow_logs=None, dns_logs=None)
    report = RunReport()
    failed = scan(config, report, now=cur.truth.end)
    (gap,) = [g for g in report.gaps if g.source == "athena:cur.no_such_table"]
    assert "TABLE_NOT_FOUND" in gap.reason and "no billing was read" in gap.reason
    assert not any(m.source == "billing" for m in failed.marks) and failed.tables.spend.empty


def test_the_sql_parses_as_athena_and_on_duckdb_gives_the_files_readers_spend(cur: Cur) -> None:
    start, end = datetime(2026, 10, 28, tzinfo=UTC), datetime(2026, 11, 20, 12, tzinfo=UTC)
    sql = cur_spend_sql(CUR_TABLE, start, end)
    athena = translate(sql, "athena")
    tree = sqlglot.parse_one(athena, read="athena")
    assert not list(tree.find_all(sqlglot.exp.Anonymous))  # every function is one Trino has
    assert "billing_period IN ('2026-10', '2026-11')" in athena
    con = duckdb.connect()
    con.register("athena_cur", _athena_table(cur.items, "2026-11"))
    rows = con.sql(cur_spend_sql("athena_cur", start, end)).to_arrow_table()
    assert rows.num_rows < cur.items.num_rows
    report = RunReport()
    pushed = read_cur2_table(rows, FileContext("duckdb", report), line_items="line_items").tables["spend"].to_pandas()
    files = read_parquet(Path("x.parquet"), _parquet(cur.items), FileContext("file", RunReport()))
    local = files.tables["spend"].to_pandas()
    pd.testing.assert_frame_equal(_totals(pushed), _totals(local), check_exact=False, rtol=1e-9)
    assert len(report.problems) == 3 and report.skipped_records == 5
    # Athena's GetQueryResults writes a timestamp as text with milliseconds: read the same way
    text = pc.strftime(rows["line_item_usage_start_date"], format="%Y-%m-%d %H:%M:00.000")  # whole hours
    assert text[0].as_py().endswith(":00:00.000")
    as_text = rows.set_column(rows.column_names.index("line_item_usage_start_date"), "line_item_usage_start_date",
                              text)
    again = read_cur2_table(as_text, FileContext("athena", RunReport())).tables["spend"].to_pandas()
    pd.testing.assert_frame_equal(again, pushed)


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def test_the_window_and_its_billing_periods() -> None:
    now = datetime(2027, 1, 2, 5, 40, tzinfo=UTC)
    assert window(None, now, 24) == (datetime(2027, 1, 1, 5, tzinfo=UTC), datetime(2027, 1, 2, 5, tzinfo=UTC))
    assert window("2027-01-02T04:00:00+00:00", now, 24) == (datetime(2026, 12, 30, 4, tzinfo=UTC),
                                                            datetime(2027, 1, 2, 5, tzinfo=UTC))
    assert billing_periods(datetime(2026, 11, 30, tzinfo=UTC), datetime(2027, 1, 2, tzinfo=UTC)) == \
        ["2026-11", "2026-12", "2027-01"]
    assert billing_periods(datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)) == ["2026-11"]
    with pytest.raises(ValueError, match="empty window"):
        cur_spend_sql("t", now, now)


@pytest.mark.parametrize(("athena", "message"), [
    ('cur_table = "cur.acme cur2"', r"^\[aws\.athena\] cur_table: 'cur.acme cur2' is not a table name"),
    ('cur_table = ""', r"^\[aws\.athena\] cur_table: must be a non-empty string"),
    ('cur_table = ["cur.acme_cur2"]', r"^\[aws\.athena\] cur_table: must be a non-empty string"),
    ('workgroup = "primary"', r"^\[aws\.athena\] table: is required .* unless cur_table"),
])
def test_a_bad_cur_table_is_a_config_error_naming_the_key(tmp_path: Path, athena: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[aws]\naccounts = ["012345678901"]\n\n[aws.athena]\n{athena}\n')
    with pytest.raises(ConfigError, match=message):
        live_configs(str(path))


def test_cur_table_alone_pushes_only_billing_down() -> None:
    config = AwsConfig.from_dict({"cur": "s3://b/cur2/", "athena": {"cur_table": "awsdatacatalog.cur.acme"}})
    assert config.athena is not None and config.athena.table is None
    assert config.athena_cur == "awsdatacatalog.cur.acme" and not config.athena_flows
    both = AwsConfig.from_dict({"athena": {"table": FLOW_TABLE, "cur_table": CUR_TABLE}})
    assert both.athena_flows and both.athena_cur == CUR_TABLE
    flows_only = AwsConfig.from_dict({"athena": {"table": FLOW_TABLE}})
    assert flows_only.athena_flows and flows_only.athena_cur is None
