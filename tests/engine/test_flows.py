"""The streaming flow reduction: what detection reads is the same on the aggregate as on the records."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from spendwatch.connectors.files import read_directory
from spendwatch.engine.flows import FlowReducer
from spendwatch.models import detect
from spendwatch.models.features import Features, resource_hours
from spendwatch.pipeline import scan_directory
from spendwatch.records import conform
from spendwatch.report import RunReport
from spendwatch.simulate.scenarios import run_scenario

T0 = pd.Timestamp("2026-11-20T10:00:00Z")


def flows(rows: list[tuple]) -> pa.Table:
    """Canonical flow records from (minute, src, dst, src_port, dst_port, bytes[, action, seconds])."""
    frame = pd.DataFrame([{
        "start": T0 + pd.Timedelta(minutes=r[0]),
        "end": T0 + pd.Timedelta(minutes=r[0], seconds=r[7] if len(r) > 7 else 60),
        "cloud": "aws", "account": "012345678901", "region": "us-east-1", "interface": "eni-1",
        "src": r[1], "dst": r[2], "src_port": r[3], "dst_port": r[4], "protocol": 6, "packets": 2, "bytes": r[5],
        "action": r[6] if len(r) > 6 else "ACCEPT"} for r in rows])
    return pa.Table.from_pandas(conform("flows", frame), preserve_index=False)


def reduce(*batches: pa.Table, **kwargs: object) -> pd.DataFrame:
    reducer = FlowReducer(**kwargs)  # type: ignore[arg-type]
    for batch in batches:
        reducer.add(batch)
    table = reducer.result()
    assert table is not None
    return table.to_pandas()


def test_client_ports_collapse_and_sums_counts_and_times_are_kept() -> None:
    out = reduce(flows([
        (0, "10.0.0.5", "198.51.100.7", 50001, 3333, 100),  # two connections of one client to a pool port
        (1, "10.0.0.5", "198.51.100.7", 50002, 3333, 150, "ACCEPT", 400),
        (2, "198.51.100.7", "10.0.0.5", 3333, 50002, 70),  # the replies
        (3, "203.0.113.9", "10.0.0.5", 41000, 22, 90, "REJECT"),  # an inbound SSH attempt: the remote is the client
        (4, "10.0.0.5", "10.0.0.6", 40000, 45000, 10),  # both ports ephemeral: which is the client is unknown
        (12, "10.0.0.5", "198.51.100.7", 50003, 3333, 50),  # the next ten-minute window
    ]))
    pool = out[(out["dst"] == "198.51.100.7")].sort_values("start")
    assert pool["src_port"].isna().all() and list(pool["dst_port"]) == [3333, 3333]
    first = pool.iloc[0]
    assert (first["records"], first["bytes"], first["packets"]) == (2, 250, 4)
    assert (first["start"], first["end"]) == (T0, T0 + pd.Timedelta(minutes=1, seconds=400))
    assert first["long_bytes"] == 150  # only the record that lasted 300 s or more
    reply = out[out["src"] == "198.51.100.7"].iloc[0]
    assert pd.isna(reply["dst_port"]) and reply["src_port"] == 3333
    ssh = out[out["dst_port"] == 22].iloc[0]
    assert pd.isna(ssh["src_port"]) and ssh["action"] == "REJECT"
    both = out[out["dst"] == "10.0.0.6"].iloc[0]
    assert (both["src_port"], both["dst_port"]) == (40000, 45000)
    assert out["records"].sum() == 6 and len(out) == 5


def test_many_small_batches_merge_to_the_one_batch_result() -> None:
    rows = [(m % 30, f"10.0.0.{m % 3}", f"198.51.100.{m % 7}", 40000 + m, 443, m) for m in range(300)]
    whole = reduce(flows(rows))
    pieces = reduce(*[flows(rows[i:i + 7]) for i in range(0, len(rows), 7)], merge_rows=10)
    pd.testing.assert_frame_equal(whole, pieces)
    assert whole["records"].sum() == 300 and whole["bytes"].sum() == sum(range(300))


def test_nothing_added_gives_none() -> None:
    assert FlowReducer().result() is None


def _view(findings: list) -> list[str]:
    return [json.dumps({k: v for k, v in vars(f).items() if k != "detected_at"}, sort_keys=True, default=str)
            for f in findings]


@pytest.mark.parametrize("name", ["classic-miners", "inference-server"])
def test_findings_and_features_are_the_same_on_the_aggregate(name: str, tmp_path: Path) -> None:
    truth = run_scenario(name, tmp_path / "data")
    records = read_directory(truth.root, RunReport())
    report = RunReport()
    reduced = read_directory(truth.root, report, flows=FlowReducer())
    assert len(reduced.flows) < len(records.flows) and reduced.flows["records"].sum() == len(records.flows)
    assert _view(detect(reduced, now=truth.end)) == _view(detect(records, now=truth.end))
    assert _view(detect(records, now=truth.end))  # the scenario does produce findings
    pd.testing.assert_frame_equal(resource_hours(Features(reduced)), resource_hours(Features(records)))
    # every file still reports the records it gave, not aggregate rows
    assert sum(s.records.get("flows", 0) for s in report.sources) == len(records.flows)


def test_scan_reports_records_and_the_reduction(tmp_path: Path) -> None:
    truth = run_scenario("classic-miners", tmp_path / "data")
    result = scan_directory(truth.root, store=None, now=truth.end, keep_tables=True)
    assert result.tables is not None
    records = int(result.tables.flows["records"].sum())
    assert result.report.tables["flows"] == records > len(result.tables.flows)
    assert any(f"{records:,} records reduced to" in n for n in result.report.notes)
    assert result.findings
