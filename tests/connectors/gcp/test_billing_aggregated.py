"""The billing export query sums the export's rows per usage hour in BigQuery, and nothing is lost by it.

The connector's real query runs, through the real google-cloud-bigquery client, in the executing BigQuery fake
(tests/fakes/bigquery_sql.py: sqlglot BigQuery -> DuckDB) over the simulator's billing export plus rows real
exports hold and the simulator does not write: one usage hour split into several rows (one starting at :30),
credits of two types on one row (one of them committed use), rows in EUR with a conversion rate, two rows
with NULL cost and two with no project. The same files read by the files connector (`read_billing`, one row at a
time) are the reference: the same `spend` per hour and key, the same bad rows reported, fewer rows through the
query, and the same findings from a live scan either way.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from google.api_core.exceptions import BadRequest
from google.cloud import bigquery

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, where the fakes are

from fakes.bigquery_sql import FakeBigQuerySql
from fakes.gcs import FakeGcs
from fakes.raw_http import serve

from spendwatch.aws_cli import live_configs
from spendwatch.connectors.files import read_directory
from spendwatch.connectors.gcp.billing import QUERY, BillingOptions, client, read_spend, summary
from spendwatch.pipeline import scan_live
from spendwatch.report import RunReport
from spendwatch.simulate import DEFAULT_END
from spendwatch.simulate.gcp import BILLING, LOGS, MONITORING, simulate_gcp
from tests.engine.test_flows import _view

TABLE = "acme-billing.billing_export.gcp_billing_export_resource_v1_01A2B3_C4D5E6_F7A8B9"
EXPORT = "billing_export"
KEYS = ["hour", "account", "region", "service", "usage_type", "resource", "pricing"]


@dataclass
class World:
    root: Path
    added: int  # rows added to the simulator's export
    warehouse: FakeBigQuerySql
    bigquery_url: str
    storage: FakeGcs
    storage_url: str


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _real_export_rows(export: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows real exports hold and the simulator does not write, for one CPU VM's first full hour."""
    cpu = next(r for r in export if "Core" in r["sku"]["description"])
    hour = datetime.fromisoformat(cpu["usage_start_time"].replace("Z", "+00:00"))
    assert hour.minute == hour.second == 0  # the simulator bills whole hours

    def row(minute: int = 0, **changes: Any) -> dict[str, Any]:
        start = hour + timedelta(minutes=minute)
        return {**cpu, "usage_start_time": _iso(start), "usage_end_time": _iso(hour + timedelta(hours=1)),
                "credits": [], **changes}

    return [
        # the hour split into more rows (one of them for the second half hour)
        row(cost=0.25, usage={"amount": 900, "unit": "seconds"}),
        row(30, cost=0.5, usage={"amount": 1800, "unit": "seconds"}),
        # credits of two types, one committed use: savings pricing, apart from the on-demand rows of the hour
        row(cost=0.6, usage={"amount": 1200, "unit": "seconds"}, credits=[
            {"name": "Committed use discount: CPU", "amount": -0.2, "type": "COMMITTED_USAGE_DISCOUNT",
             "id": "c1", "full_name": None},
            {"name": "Sustained usage discount", "amount": -0.05, "type": "SUSTAINED_USAGE_DISCOUNT", "id": "c2",
             "full_name": None}]),
        row(cost=0.3, usage={"amount": 600, "unit": "seconds"}, credits=[
            {"name": "Sustained usage discount", "amount": -0.03, "type": "SUSTAINED_USAGE_DISCOUNT", "id": "c2",
             "full_name": None}]),
        # a currency other than USD (units per USD) in three rows, two with a promotion credit, at two rates
        # (a revised row may carry a newer one): only rows of one rate may be summed before the division
        row(cost=0.46, currency="EUR", currency_conversion_rate=0.92, usage={"amount": 1800, "unit": "seconds"}),
        row(30, cost=0.23, currency="EUR", currency_conversion_rate=0.92, usage={"amount": 900, "unit": "seconds"},
            credits=[{"name": "Free trial", "amount": -0.1, "type": "PROMOTION", "id": "c3", "full_name": None}]),
        row(45, cost=0.2, currency="EUR", currency_conversion_rate=0.9, usage={"amount": 900, "unit": "seconds"},
            credits=[{"name": "Free trial", "amount": -0.1, "type": "PROMOTION", "id": "c3", "full_name": None}]),
        # rows the reader refuses, keyed like the good rows of the hour: they must not vanish into their sums
        # (two of each, which BigQuery sums into one row each)
        row(15, cost=None),
        row(45, cost=None),
        row(project={"id": None, "name": None}, cost=1.0),
        row(30, project={"id": None, "name": None}, cost=2.0),
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("gcp-billing-aggregated")
    simulate_gcp(root, seed=7, days=1.0, instances=12)
    folder = root / BILLING / EXPORT
    export = [json.loads(line) for p in sorted(folder.glob("*.json")) for line in p.read_text().splitlines()]
    added = _real_export_rows(export)
    (folder / "gcp_billing_export_resource_v1_01A2B3_C4D5E6_F7A8B9-000000000001.json").write_text(
        "".join(json.dumps(r) + "\n" for r in added))
    storage = FakeGcs()
    for bucket in (LOGS, BILLING, MONITORING):
        storage.upload_tree(root / bucket, bucket)
    warehouse = FakeBigQuerySql(TABLE, page_rows=40)  # the nested rows page through jobs.getQueryResults
    assert warehouse.add_billing_export(folder) == len(export) + len(added)
    with serve(storage) as storage_url, serve(warehouse) as bigquery_url:
        yield World(root, len(added), warehouse, bigquery_url, storage, storage_url)


def _totals(spend: pd.DataFrame) -> dict[tuple[Any, ...], tuple[float, float]]:
    """cost_usd and usage_amount summed per spend key (missing keys as "")."""
    sums = spend.fillna({k: "" for k in KEYS}).groupby(KEYS)[["cost_usd", "usage_amount"]].sum()
    return {key: (float(cost), float(usage))
            for key, cost, usage in zip(sums.index, sums["cost_usd"], sums["usage_amount"], strict=True)}


def test_the_query_sums_per_hour_and_gives_the_spend_the_rows_give(world: World) -> None:
    options = BillingOptions(TABLE, endpoint=world.bigquery_url, anonymous=True, backoff_s=0.01)
    report = RunReport()
    got = read_spend(report, options, marks={}, now=DEFAULT_END)
    assert world.warehouse.queries[-1] == QUERY.format(table=TABLE)  # the connector's query, run as sent
    files = RunReport()
    expected = read_directory(world.root / BILLING, files).spend
    # The simulated day is the first run's window (initial_hours = 24), so every row of the files is in it.
    assert expected["hour"].min() >= pd.Timestamp(DEFAULT_END - timedelta(hours=24))
    want, have = _totals(expected), _totals(got.spend)
    assert want.keys() == have.keys()
    for key, (cost, usage) in want.items():
        assert math.isclose(have[key][0], cost, rel_tol=1e-9, abs_tol=1e-12), key
        assert math.isclose(have[key][1], usage, rel_tol=1e-9), key
    # the added hour: on-demand rows and the committed-use row apart; EUR converted at its rate
    assert {k[-1] for k in want} >= {"on_demand", "savings"}
    savings = [v for k, v in want.items() if k[-1] == "savings"]
    assert len(savings) == 1 and math.isclose(savings[0][0], 0.6 - 0.2 - 0.05)
    # fewer rows travel: the split hour and the EUR rows are summed
    rows_in_files = sum(1 for p in (world.root / BILLING).rglob("*.json") for line in p.read_text().splitlines()
                        if line.strip())
    assert got.export_rows == rows_in_files
    assert got.rows < got.export_rows and len(got.spend) < len(expected)
    assert f"{got.rows} row(s) (hourly sums of {rows_in_files} export row(s))" in summary(got)
    # the NULL-cost and the projectless rows are reported, not summed away: four export rows lost on both
    # paths, one problem per row in the files, one per summed row from BigQuery, saying how many it sums
    assert len(files.problems) == 4 and files.skipped_records == 4
    assert [(p.reason, p.records) for p in report.problems] == \
        [("billing row has no project.id or no numeric cost (a sum of 2 export rows)", 2)] * 2
    assert not report.gaps and [m.position for m in got.marks] == [DEFAULT_END.isoformat()]


def test_the_window_is_bound_as_typed_parameters(world: World) -> None:
    """@start and @end go to BigQuery as TIMESTAMP parameters and select the window's hours; a query naming a
    parameter the request lacks is refused, as BigQuery refuses it."""
    options = BillingOptions(TABLE, endpoint=world.bigquery_url, anonymous=True, initial_hours=6, backoff_s=0.01)
    now = DEFAULT_END - timedelta(hours=6)
    got = read_spend(RunReport(), options, marks={}, now=now)
    spend = read_directory(world.root / BILLING, RunReport()).spend
    inside = spend[(spend["hour"] >= pd.Timestamp(now - timedelta(hours=6))) & (spend["hour"] < pd.Timestamp(now))]
    assert 0 < len(inside) < len(spend)
    assert _totals(got.spend).keys() == _totals(inside).keys()
    api = client(options)
    try:
        config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("start", "TIMESTAMP", now)])
        with pytest.raises(BadRequest, match="Query parameter 'end' not found"):
            api.query_and_wait(QUERY.format(table=TABLE), job_config=config, retry=None)
    finally:
        api.close()


def _toml(world: World, billing_table: bool) -> str:
    table = f'billing_table = "{TABLE}"\n' if billing_table else ""
    return f'''[gcp]
logs = ["gs://{LOGS}/"]
billing = ["gs://{BILLING}/{EXPORT}/"]
monitoring = ["gs://{MONITORING}/timeseries/"]
storage_endpoint = "{world.storage_url}"
bigquery_endpoint = "{world.bigquery_url}"
anonymous = true
backoff_s = 0.01
{table}'''


def test_a_live_scan_finds_the_same_with_the_summed_query(world: World, tmp_path: Path) -> None:
    scans = {}
    for name in ("files", "bigquery"):
        config = tmp_path / f"{name}.toml"
        config.write_text(_toml(world, billing_table=name == "bigquery"))
        scans[name] = scan_live(live_configs(str(config)), store=None, now=DEFAULT_END)
    files, bigquery = scans["files"], scans["bigquery"]
    assert files.findings and _view(bigquery.findings) == _view(files.findings)
    assert any(n.startswith("gcp billing: 1 BigQuery query") for n in bigquery.report.notes)
    assert bigquery.report.tables["spend"] < files.report.tables["spend"]  # the split hour arrives summed
    assert {g.source for g in bigquery.report.gaps} == {g.source for g in files.report.gaps}
