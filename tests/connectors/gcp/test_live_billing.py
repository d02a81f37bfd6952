"""GCP spend from the BigQuery billing export table through the real google-cloud-bigquery client against a local
fake of the REST API on 127.0.0.1: the same spend as the export's rows read from a bucket, paging through the
job's results, a rate-limited call retried, a denied table as a gap, the revision window, and the live scan
querying the table instead of reading the billing files."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakes.bigquery import FakeBigQuery
from fakes.gcs import FakeGcs
from fakes.raw_http import serve

from spendwatch.config import ConfigError
from spendwatch.connectors.files import read_directory
from spendwatch.connectors.gcp import GcpConfig, GcsLocation
from spendwatch.connectors.gcp.billing import REVISE, BillingOptions, read_spend
from spendwatch.connectors.gcp.live import scan
from spendwatch.report import RunReport
from spendwatch.simulate import DEFAULT_END
from spendwatch.simulate.gcp import BILLING, simulate_gcp
from spendwatch.store import Watermark

TABLE = "acme-billing.billing_export.gcp_billing_export_resource_v1_01A2B3_C4D5E6_F7A8B9"


@dataclass
class World:
    root: Path
    exported: pd.DataFrame  # the files connector's spend from the same rows saved as JSON lines


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("gcp-billing")
    simulate_gcp(root, seed=7, days=1.0, instances=12, write_truth=False)
    return World(root, read_directory(root / BILLING, RunReport()).spend)


@pytest.fixture
def api(world: World) -> Iterator[tuple[FakeBigQuery, BillingOptions]]:
    fake = FakeBigQuery(TABLE)
    for path in (world.root / BILLING).rglob("*.json"):
        fake.add_export(path)
    with serve(fake) as url:
        yield fake, BillingOptions(TABLE, endpoint=url, anonymous=True, backoff_s=0.01, retry_deadline_s=30)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["hour", "cloud", "account", "region", "service", "usage_type", "resource", "cost_usd", "usage_amount",
            "pricing"]
    return frame[cols].sort_values(["hour", "resource", "usage_type"]).reset_index(drop=True)


def test_the_table_gives_the_spend_the_export_files_give(world: World, api: tuple[FakeBigQuery,
                                                                                  BillingOptions]) -> None:
    fake, options = api
    fake.page_rows = 25  # the first page comes with jobs.query, the rest through the job's results
    fake.throttle = 1  # 403 rateLimitExceeded, as BigQuery throttles: retried
    report = RunReport()
    got = read_spend(report, options, marks={}, now=DEFAULT_END)
    assert not report.gaps and not report.problems and fake.throttle == 0
    expected = world.exported[world.exported["hour"] >= pd.Timestamp(DEFAULT_END - timedelta(hours=24))]
    assert len(expected) > 50
    pd.testing.assert_frame_equal(_sorted(got.spend), _sorted(expected))
    pages = [q.get("pageToken") for m, p, q in fake.calls if m == "GET" and "/queries/" in p]
    assert pages == [str(n) for n in range(25, len(expected), 25)]
    assert [m.position for m in got.marks] == [DEFAULT_END.isoformat()]


def test_a_denied_table_is_a_gap_and_the_revision_window(api: tuple[FakeBigQuery, BillingOptions]) -> None:
    fake, options = api
    fake.table_denied = True
    report = RunReport()
    mark = Watermark("gcp", "*", "", "billing", f"bigquery:{TABLE}", (DEFAULT_END - timedelta(hours=6)).isoformat())
    got = read_spend(report, options, marks={mark.key: mark}, now=DEFAULT_END)
    assert [g.source for g in report.gaps] == ["gcp/*/billing"] and not got.marks
    assert "access denied" in report.gaps[0].reason and "bigquery.tables.getData" in report.gaps[0].reason
    fake.table_denied = False
    got = read_spend(RunReport(), options, marks={mark.key: mark}, now=DEFAULT_END)
    # From REVISE before the watermark, so back past the simulated day's start, not from 6 hours ago.
    assert timedelta(hours=18) < REVISE
    assert got.spend["hour"].min() == pd.Timestamp(DEFAULT_END - timedelta(hours=24))


def test_the_live_scan_queries_the_table_not_the_files(world: World, api: tuple[FakeBigQuery,
                                                                                BillingOptions]) -> None:
    _, options = api
    gcs = FakeGcs()
    gcs.upload_tree(world.root / BILLING, BILLING)
    with serve(gcs) as url:
        config = GcpConfig(billing=(GcsLocation(BILLING, "billing_export/"),), billing_table=TABLE,
                           bigquery_endpoint=options.endpoint, storage_endpoint=url, anonymous=True, inventory=False,
                           backoff_s=0.01)
        report = RunReport()
        got = scan(config, report, now=DEFAULT_END)
    assert not gcs.log and any("billing is not read" in n for n in report.notes)
    assert len(got.tables.spend) == len(world.exported[world.exported["hour"] >=
                                                       pd.Timestamp(DEFAULT_END - timedelta(hours=24))])
    assert "gcp/*/billing" not in {g.source for g in report.gaps}
    assert any(n.startswith("gcp billing: 1 BigQuery query") for n in report.notes)
    assert GcpConfig.from_dict({"billing_table": TABLE}).billing_table == TABLE
    with pytest.raises(ConfigError, match=r"\[gcp\] billing_table: 'billing_export' is not a table"):
        GcpConfig.from_dict({"billing_table": "billing_export"})
