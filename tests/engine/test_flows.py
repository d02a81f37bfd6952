"""The flow engine: what detection reads of a scan's flows is the same through DuckDB as from every record."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from spendwatch.connectors.files import read_directory
from spendwatch.engine.flows import CHECKPOINT_ROWS, FLUSH_ROWS, SCHEMA, FlowEngine, FlowSummary, reduce_records
from spendwatch.models import RULES, detect
from spendwatch.models.config import DetectionConfig
from spendwatch.models.features import Features, resource_hours, resource_windows
from spendwatch.pipeline import scan_directory
from spendwatch.records import Tables, conform, empty
from spendwatch.report import RunReport
from spendwatch.simulate.scenarios import run_scenario

T0 = pd.Timestamp("2026-11-20T10:00:00Z")


def flows(rows: list[tuple], **common: object) -> pd.DataFrame:
    """Canonical flow records from (minute, src, dst, src_port, dst_port, bytes[, action, seconds])."""
    frame = pd.DataFrame([{
        "start": T0 + pd.Timedelta(minutes=r[0]),
        "end": T0 + pd.Timedelta(minutes=r[0], seconds=r[7] if len(r) > 7 else 60),
        "cloud": "aws", "account": "012345678901", "region": "us-east-1", "interface": "eni-1",
        "src": r[1], "dst": r[2], "src_port": r[3], "dst_port": r[4], "protocol": 6, "packets": 2, "bytes": r[5],
        "action": r[6] if len(r) > 6 else "ACCEPT", **common} for r in rows])
    return conform("flows", frame)


def arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


def test_client_ports_collapse_and_sums_counts_and_times_are_kept() -> None:
    out = reduce_records(arrow(flows([
        (0, "10.0.0.5", "198.51.100.7", 50001, 3333, 100),  # two connections of one client to a pool port
        (1, "10.0.0.5", "198.51.100.7", 50002, 3333, 150, "ACCEPT", 400),
        (2, "198.51.100.7", "10.0.0.5", 3333, 50002, 70),  # the replies
        (3, "203.0.113.9", "10.0.0.5", 41000, 22, 90, "REJECT"),  # an inbound SSH attempt: the remote is the client
        (4, "10.0.0.5", "10.0.0.6", 40000, 45000, 10),  # both ports ephemeral: which is the client is unknown
        (12, "10.0.0.5", "198.51.100.7", 50003, 3333, 50),  # the next ten-minute window
    ])))
    assert out is not None
    out = out.to_pandas()
    pool = out[(out["dst"] == "198.51.100.7")].sort_values("start_ns")
    assert pool["src_port"].isna().all() and list(pool["dst_port"]) == [3333, 3333]
    first = pool.iloc[0]
    assert (first["records"], first["bytes"], first["packets"]) == (2, 250, 4)
    assert (first["start_ns"], first["end_ns"]) == (T0.value, (T0 + pd.Timedelta(minutes=1, seconds=400)).value)
    assert first["long_bytes"] == 150  # only the record that lasted 300 s or more
    assert list(pool["window"]) == [T0.value // 600_000_000_000, T0.value // 600_000_000_000 + 1]
    reply = out[out["src"] == "198.51.100.7"].iloc[0]
    assert pd.isna(reply["dst_port"]) and reply["src_port"] == 3333
    ssh = out[out["dst_port"] == 22].iloc[0]
    assert pd.isna(ssh["src_port"]) and ssh["action"] == "REJECT"
    both = out[out["dst"] == "10.0.0.6"].iloc[0]
    assert (both["src_port"], both["dst_port"]) == (40000, 45000)
    assert out["records"].sum() == 6 and len(out) == 5
    # constant columns are put back after the grouping, not lost
    assert set(out["region"]) == {"us-east-1"} and set(out["cloud"]) == {"aws"} and out["direction"].isna().all()


def test_the_engine_counts_windows_and_long_lived_records_as_the_features_do() -> None:
    from spendwatch.engine import flows as engine_flows
    from spendwatch.models import features

    assert engine_flows.WINDOW_S == features.INTERVAL_S and engine_flows.LONG_LIVED_S == features.LONG_LIVED_S


def test_what_a_reader_knows_spares_copies_and_changes_nothing() -> None:
    """Rows marked as not records are dropped, constant columns given apart are put back, integer nanosecond
    times read as the timestamps: the same aggregate as from the plain canonical records."""
    rows = [(0, "10.0.0.5", "198.51.100.7", 50001, 3333, 100), (1, "10.0.0.5", "198.51.100.7", 50002, 3333, 150),
            (2, "198.51.100.7", "10.0.0.5", 3333, 50002, 70), (13, "10.0.0.5", "198.51.100.8", 50003, 443, 5)]
    records = arrow(flows(rows))
    nodata = arrow(flows([(5, None, None, None, None, None)]))  # a NODATA line: no addresses, ports or bytes
    plain = reduce_records(records)
    mixed = pa.concat_tables([records.slice(0, 2), nodata, records.slice(2)])
    lean = mixed.drop_columns(["cloud", "region", "start", "end"]).append_column(
        "start_ns", pc.cast(mixed["start"], pa.int64())).append_column("end_ns", pc.cast(mixed["end"], pa.int64()))
    keep = pa.array([True, True, False, True, True])
    given = reduce_records(lean, keep=keep, constants={"cloud": "aws", "region": "us-east-1"})
    key = ["window", "src", "dst", "src_port", "dst_port"]
    assert plain is not None and given is not None
    pd.testing.assert_frame_equal(given.to_pandas().sort_values(key).reset_index(drop=True),
                                  plain.to_pandas().sort_values(key).reset_index(drop=True))
    assert reduce_records(lean.slice(2, 1), keep=keep.slice(2, 1)) is None  # nothing but NODATA: nothing


def test_an_empty_batch_reduces_to_nothing() -> None:
    assert reduce_records(arrow(flows([(0, "10.0.0.5", "198.51.100.7", 50001, 443, 1)])).slice(0, 0)) is None


def _view(findings: list) -> list[str]:
    return [json.dumps({k: v for k, v in vars(f).items() if k != "detected_at"}, sort_keys=True, default=str)
            for f in findings]


def _hits(tables: Tables, features: Features) -> dict[str, list[str]]:
    config = DetectionConfig()
    return {rule_id: sorted(json.dumps(vars(h), sort_keys=True, default=str)
                            for h in rule_cls(config.rule_config(rule_id)).run(tables, features))
            for rule_id, rule_cls in RULES.items()}


def _through_engine(tables: Tables, frames: list[pd.DataFrame], **engine: object) -> tuple[Tables, FlowSummary]:
    """`tables` with its flows replaced by what the engine hands detection, the engine fed `frames`."""
    with FlowEngine(**engine) as eng:  # type: ignore[arg-type]
        for frame in frames:
            eng.add(arrow(frame))
        out = Tables(**{name: frame for name, frame in tables.items()})
        out.flows = empty("flows")
        summary = eng.summary(out)
        out.flows = summary.rows
        # the windows are computed on demand, while the engine is open: ask for every one now
        for seconds in (600, 3600):
            summary.window_flows(seconds, True)
        summary.ingress_bytes()
    return out, summary


def _assert_same_as_records(records: Tables, reduced: Tables, summary: FlowSummary) -> None:
    """Every view detection reads of the flows is the same from the engine as from the records."""
    by_records, by_engine = Features(records), Features(reduced, flow_summary=summary)
    for window in ("1h", "10min"):
        pd.testing.assert_frame_equal(resource_windows(by_engine, window), resource_windows(by_records, window))
    pd.testing.assert_frame_equal(resource_hours(by_engine), resource_hours(by_records))
    pd.testing.assert_series_equal(by_engine.ingress_bytes, by_records.ingress_bytes, check_index_type=False)
    assert _hits(reduced, by_engine) == _hits(records, by_records)


def test_odd_addresses_directions_and_unknown_interfaces_are_read_as_the_pandas_path_does() -> None:
    """Public or not as models.net.is_public says (IPv6, mapped IPv4, leading zeros, octets above 255, text),
    the remote end by direction, and resources from the inventory's interfaces and private addresses."""
    rows = [
        (0, "10.0.1.9", "2001:db8::7", 50001, 3333, 500),  # IPv6: public (documentation range)
        (0, "10.0.1.9", "fd00::1", 50002, 3333, 400),  # IPv6 unique local: private
        (0, "10.0.1.9", "::ffff:198.51.100.9", 50003, 3333, 300),  # mapped IPv4, public
        (1, "10.0.1.9", "::ffff:10.1.1.1", 50004, 3333, 200),  # mapped IPv4, private
        (1, "10.0.1.9", "010.000.000.001", 50005, 3333, 100),  # leading zeros: 10.0.0.1, private
        (1, "10.0.1.9", "300.1.1.1", 50006, 3333, 90),  # an octet above 255: not an address
        (2, "10.0.1.9", "100.64.0.1", 50007, 3333, 80), (2, "10.0.1.9", "100.128.0.1", 50008, 3333, 70),  # CGNAT
        (2, "10.0.1.9", "172.15.0.1", 50009, 3333, 60), (2, "10.0.1.9", "172.16.0.1", 50010, 3333, 50),
        (3, "10.0.1.9", "224.0.0.5", 50011, 3333, 40), (3, "198.51.100.20", "10.0.1.9", 3333, 50012, 30),
        (3, "10.0.1.9", "not an address", 50013, 3333, 20),
    ]
    plain = flows(rows)
    directed = flows([(r[0] + 20, *r[1:]) for r in rows[:4]], direction="ingress")
    # an interface nobody launched: its resource comes from the private source (then destination) address
    unknown = flows([(30, "10.0.7.7", "198.51.100.30", 50100, 14444, 1000),
                     (31, "198.51.100.31", "10.0.8.8", 14444, 50101, 900)], interface="eni-unknown")
    frame = pd.concat([plain, directed, unknown], ignore_index=True)
    inventory = conform("inventory", pd.DataFrame([
        {"resource": "i-web", "cloud": "aws", "account": "012345678901", "interfaces": "eni-1",
         "private_ips": "10.0.1.9", "launched_at": T0 - pd.Timedelta(days=1)},
        {"resource": "i-src", "cloud": "aws", "account": "012345678901", "private_ips": "10.0.7.7",
         "launched_at": T0 - pd.Timedelta(days=1)},
        {"resource": "i-dst", "cloud": "aws", "account": "012345678901", "private_ips": "10.0.8.8",
         "launched_at": T0 - pd.Timedelta(days=1)}]))
    records = Tables(flows=frame, inventory=inventory)
    reduced, summary = _through_engine(records, [frame])
    _assert_same_as_records(records, reduced, summary)
    seen = Features(reduced, flow_summary=summary).flows
    assert {"i-web", "i-src", "i-dst"} <= set(seen["resource"].dropna())
    hits = _hits(reduced, Features(reduced, flow_summary=summary))["stratum-port"]
    assert len(hits) == 3  # i-web (to public peers on 3333), i-src and i-dst (on 14444)


def test_peers_named_by_dns_are_kept_for_the_pool_rule_even_inbound_or_private(tmp_path: Path) -> None:
    truth = run_scenario("classic-miners", tmp_path / "data")
    records = read_directory(truth.root, RunReport())
    assert len(records.dns)  # the scenario resolves pool names
    reduced, summary = _through_engine(records, [records.flows])
    _assert_same_as_records(records, reduced, summary)
    assert len(reduced.flows) < len(records.flows)


@pytest.mark.parametrize("name", ["tls-proxy-thirdparty-dns", "proxyjacking-tunnel", "inference-server"])
def test_findings_rules_and_features_are_the_same_through_the_engine(name: str, tmp_path: Path) -> None:
    truth = run_scenario(name, tmp_path / "data")
    records = read_directory(truth.root, RunReport())
    report = RunReport()
    with FlowEngine() as engine:
        tables = read_directory(truth.root, report, flows=engine)
        summary = engine.summary(tables)
        tables.flows = summary.rows
        assert summary.records == len(records.flows) and len(tables.flows) < len(records.flows)
        _assert_same_as_records(records, tables, summary)
        reduced_findings = detect(tables, now=truth.end, flow_summary=summary)
    assert _view(reduced_findings) == _view(detect(records, now=truth.end))
    # every file still reports the records it gave, not aggregate rows
    assert sum(s.records.get("flows", 0) for s in report.sources) == len(records.flows)


def test_nodata_and_skipdata_lines_in_text_logs_are_tallied_and_left_out_as_by_the_records(tmp_path: Path) -> None:
    truth = run_scenario("inference-server", tmp_path / "data")
    for i, path in enumerate(sorted(truth.root.rglob("*_vpcflowlogs_*.log.gz"))[::3]):
        header, _, body = gzip.decompress(path.read_bytes()).partition(b"\n")
        first = body.split(b"\n", 1)[0].split()
        status = b"NODATA" if i % 2 else b"SKIPDATA"
        blank = b" ".join([*first[:3], *[b"-"] * 7, first[10], first[11], b"-", status])
        path.write_bytes(gzip.compress(header + b"\n" + blank + b"\n" + body))
    by_records = RunReport()
    records = read_directory(truth.root, by_records)
    report = RunReport()
    with FlowEngine() as engine:
        tables = read_directory(truth.root, report, flows=engine)
        summary = engine.summary(tables)
        tables.flows = summary.rows
        assert summary.records == len(records.flows)
        _assert_same_as_records(records, tables, summary)
    assert report.notes == by_records.notes and any("NODATA" in n for n in report.notes)
    assert [(s.path, s.records) for s in report.sources] == [(s.path, s.records) for s in by_records.sources]


def test_batches_split_anywhere_and_a_tight_memory_limit_give_the_same_summary(tmp_path: Path) -> None:
    """Rows of one key arriving in many batches are summed wherever they are read, under a tight memory limit."""
    truth = run_scenario("inference-server", tmp_path / "data")
    records = read_directory(truth.root, RunReport())
    whole, _ = _through_engine(records, [records.flows])
    pieces = [records.flows.iloc[i:i + 997] for i in range(0, len(records.flows), 997)]
    split, split_summary = _through_engine(records, pieces, memory_limit="128MB")
    _assert_same_as_records(records, split, split_summary)
    key = ["window", "cloud", "account", "interface", "src", "dst", "src_port", "dst_port", "protocol", "action"]
    pd.testing.assert_frame_equal(split.flows.sort_values(key).reset_index(drop=True),
                                  whole.flows.sort_values(key).reset_index(drop=True))


def test_rows_inserted_from_reader_threads_are_compressed_as_they_come() -> None:
    """The checkpoint after CHECKPOINT_ROWS rows compresses the engine's own database, also when it runs on a
    reader's cursor (whose default database is another): 115 MB of these rows stay in memory uncompressed."""
    names = {f.name: pa.array([f"{f.name}-{k}" for k in range(997)], pa.large_string()) for f in SCHEMA
             if pa.types.is_large_string(f.type)}
    index = pa.array(np.arange(CHECKPOINT_ROWS) % 997)
    table = pa.table({f.name: names[f.name].take(index) if f.name in names
                      else pa.array(np.arange(CHECKPOINT_ROWS) % 65536, pa.int64()) for f in SCHEMA}, schema=SCHEMA)
    with FlowEngine() as engine:
        for start in range(0, CHECKPOINT_ROWS, FLUSH_ROWS):
            engine.append(table.slice(start, FLUSH_ROWS))
        held = engine._con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory() "
                                   "WHERE tag = 'IN_MEMORY_TABLE'").fetchone()
        assert engine._con.execute("SELECT count(*) FROM agg").fetchone() == (CHECKPOINT_ROWS,)
    assert held is not None
    assert held[0] < 30_000_000, f"{held[0]:,} bytes held: not compressed"


def test_rows_kept_are_the_client_side_and_dns_named_pairs_and_span_the_scan() -> None:
    frame = flows([
        (0, "10.0.1.9", "198.51.100.7", 50001, 443, 100),  # the resource as client: kept, with its reply
        (0, "198.51.100.7", "10.0.1.9", 443, 50001, 900),
        *[(m % 10, f"203.0.{m}.9", "10.0.1.9", 40000 + m, 443, 50) for m in range(40)],  # web clients: counted
        (59, "203.0.113.200", "10.0.1.9", 45000, 22, 40, "REJECT", 30),  # a scan, the latest record
    ])
    inventory = conform("inventory", pd.DataFrame([{"resource": "i-web", "cloud": "aws", "account": "012345678901",
                                                     "interfaces": "eni-1", "launched_at": T0}]))
    records = Tables(flows=frame, inventory=inventory)
    reduced, summary = _through_engine(records, [frame])
    _assert_same_as_records(records, reduced, summary)
    kept = reduced.flows
    assert set(zip(kept["src"], kept["dst"], strict=True)) == {
        ("10.0.1.9", "198.51.100.7"), ("198.51.100.7", "10.0.1.9"), ("203.0.113.200", "10.0.1.9")}
    assert kept["end"].max() == frame["end"].max()  # the table spans the scan: the baseline's clock reads it
    windows = summary.window_flows(3600, True)
    assert windows["peers"].iloc[0] == 42  # every web client and the scanner are counted as peers


def test_nothing_read_gives_an_empty_summary() -> None:
    with FlowEngine() as engine:
        summary = engine.summary(Tables())
        assert summary.records == 0 and summary.rows.empty
        assert summary.window_flows(3600, True).empty and summary.ingress_bytes().empty


def test_scan_reports_records_and_the_reduction(tmp_path: Path) -> None:
    truth = run_scenario("classic-miners", tmp_path / "data")
    result = scan_directory(truth.root, store=None, now=truth.end, keep_tables=True)
    assert result.tables is not None
    records = result.report.tables["flows"]
    assert records > int(result.tables.flows["records"].sum())  # only what the rules read travels as rows
    assert any(f"{records:,} records reduced to" in n for n in result.report.notes)
    assert result.findings
