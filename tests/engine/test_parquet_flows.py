"""Parquet flow logs reduced by DuckDB from the files themselves (vpcflow.read_parquet_many) give exactly what
the record-by-record reader gives, and any file with something to report is read by that reader instead."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from spendwatch.connectors import files
from spendwatch.connectors.files import read_directory, vpcflow
from spendwatch.connectors.files.detect import FLOW_PARQUET
from spendwatch.engine.flows import FlowEngine
from spendwatch.models import detect
from spendwatch.report import RunReport
from spendwatch.simulate.scenarios import run_scenario
from tests.engine.test_flows import _assert_same_as_records, _view

INTS = {"version", "srcport", "dstport", "protocol", "packets", "bytes", "start", "end", "tcp_flags", "traffic_path"}


def _to_parquet(root: Path, *, account_as_number: bool = False) -> list[Path]:
    """Every text flow log under `root` rewritten as the Parquet delivery option writes it (`_` for `-`,
    32-bit ports and protocol, nulls for `-`), under the same key with .parquet for .log.gz."""
    written = []
    for path in sorted(root.rglob("*_vpcflowlogs_*.log.gz")):
        text = gzip.decompress(path.read_bytes())
        names = [n.replace("-", "_") for n in text.split(b"\n", 1)[0].decode().split()]
        table = pacsv.read_csv(pa.BufferReader(text), read_options=pacsv.ReadOptions(column_names=names,
                                                                                     skip_rows=1),
                               parse_options=pacsv.ParseOptions(delimiter=" "),
                               convert_options=pacsv.ConvertOptions(
                                   null_values=["-"], strings_can_be_null=True,
                                   column_types={n: pa.int64() if n in INTS else pa.string() for n in names}))
        for name in ("srcport", "dstport", "protocol", "version"):
            if name in table.column_names:
                table = table.set_column(table.column_names.index(name), name, pc.cast(table[name], pa.int32()))
        if account_as_number and "account_id" in table.column_names:
            i = table.column_names.index("account_id")
            table = table.set_column(i, "account_id", pc.cast(table["account_id"], pa.int64()))
        target = path.with_name(path.name.removesuffix(".log.gz") + ".log.parquet")
        pq.write_table(table, target)
        path.unlink()
        written.append(target)
    return written


@pytest.fixture
def careful_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The Parquet files the record-by-record reader was asked to read."""
    seen: list[str] = []
    reader = files.READERS[FLOW_PARQUET]

    def counting(rel, raw, ctx):  # type: ignore[no-untyped-def]
        seen.append(ctx.path)
        return reader(rel, raw, ctx)

    monkeypatch.setitem(files.READERS, FLOW_PARQUET, counting)
    return seen


@pytest.mark.parametrize(("name", "account_as_number"), [("classic-miners", False), ("proxyjacking-tunnel", True)])
def test_clean_parquet_is_reduced_by_duckdb_with_the_same_features_findings_and_counts(
        name: str, account_as_number: bool, tmp_path: Path, careful_reads: list[str]) -> None:
    truth = run_scenario(name, tmp_path / "data")
    assert _to_parquet(truth.root, account_as_number=account_as_number)
    by_records = RunReport()
    records = read_directory(truth.root, by_records)  # no engine: every file through read_parquet
    careful_reads.clear()
    report = RunReport()
    with FlowEngine() as engine:
        tables = read_directory(truth.root, report, flows=engine)
        assert careful_reads == []  # every file was clean: DuckDB read them all
        summary = engine.summary(tables)
        tables.flows = summary.rows
        assert summary.records == len(records.flows)
        _assert_same_as_records(records, tables, summary)
        findings = detect(tables, now=truth.end, flow_summary=summary)
    assert _view(findings) == _view(detect(records, now=truth.end))
    assert [(s.path, s.kind, s.records, s.skipped) for s in report.sources] == \
        [(s.path, s.kind, s.records, s.skipped) for s in by_records.sources]
    assert report.notes == by_records.notes  # the NODATA tally included
    assert report.problems == by_records.problems == []


def _flow_file(tmp_path: Path, name: str, *, statistics: bool = True, **changes: object) -> Path:
    """A small Parquet flow log (v5 fields); `changes` replace one column's values by name. Without
    `statistics` the footer holds no column minimum and maximum."""
    account = "111122223333"
    t0 = 1_795_000_000
    columns: dict[str, pa.Array] = {
        "version": pa.array([5, 5, 5], pa.int32()),
        "account_id": pa.array([account] * 3),
        "interface_id": pa.array(["eni-0a", "eni-0a", "eni-0a"]),
        "srcaddr": pa.array(["10.0.3.5", "10.0.3.5", None]),
        "dstaddr": pa.array(["198.51.100.7", "198.51.100.7", None]),
        "srcport": pa.array([40000, 40001, None], pa.int32()),
        "dstport": pa.array([3333, 3333, None], pa.int32()),
        "protocol": pa.array([6, 6, None], pa.int32()),
        "packets": pa.array([10, 12, None], pa.int64()),
        "bytes": pa.array([1500, 1800, None], pa.int64()),
        "start": pa.array([t0, t0 + 60, t0], pa.int64()),
        "end": pa.array([t0 + 60, t0 + 120, t0 + 60], pa.int64()),
        "action": pa.array(["ACCEPT", "ACCEPT", None]),
        "log_status": pa.array(["OK", "OK", "NODATA"]),
    }
    for column, values in changes.items():
        columns[column] = pa.array(values, columns[column].type if column in columns else None)
    path = (tmp_path / "AWSLogs" / account / "vpcflowlogs" / "us-east-1" / "2026" / "11" / "20"
            / f"{account}_vpcflowlogs_us-east-1_fl-0abc_20261120T1000Z_{name}.log.parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, write_statistics=statistics)
    return path


@pytest.mark.parametrize("changes", [
    {"bytes": [-5, 1800, None]},
    {"srcport": [70000, 40001, None]},
    {"protocol": [6, 300, None]},
    {"start": [946_684_799, 1_795_000_060, 1_795_000_000]},
    {"end": [1_794_999_000, 1_795_000_120, 1_795_000_060]},  # end before start
    {"srcaddr": [None, "10.0.3.5", None]},
    {"dstaddr": ["198.51.100.7", "not-an-ip", None]},  # caught on the aggregate's distinct addresses
    {"log_status": ["OK", "WEIRD", "NODATA"]},
    {"pkt_weird": ["x", "y", "z"]},  # a column no flow log format has
])
def test_a_file_with_anything_to_report_is_read_record_by_record(changes: dict[str, list[object]], tmp_path: Path,
                                                                 careful_reads: list[str]) -> None:
    clean = _flow_file(tmp_path, "clean")
    bad = _flow_file(tmp_path, "bad", **changes)
    expected = RunReport()
    records = read_directory(tmp_path, expected)
    careful_reads.clear()
    report = RunReport()
    with FlowEngine() as engine:
        tables = read_directory(tmp_path, report, flows=engine)
        assert engine.summary(tables).records == len(records.flows)  # the clean records of both files
    assert str(bad) in careful_reads  # the file with a problem went to the reader that says where it is
    assert report.problems == expected.problems and report.problems  # same file, record number and reason
    assert all(p.source == str(bad) for p in report.problems)
    if "dstaddr" not in changes:  # an address is checked after the reduction, for the whole query: both re-read
        assert str(clean) not in careful_reads
    assert [(s.path, s.records, s.skipped) for s in report.sources] == \
        [(s.path, s.records, s.skipped) for s in expected.sources]


@pytest.mark.parametrize("changes", [{"srcport": [70000, 40001, None]}, {"bytes": [-5, 1800, None]}])
def test_a_range_is_checked_record_by_record_where_the_footer_has_no_statistics(
        changes: dict[str, list[object]], tmp_path: Path, careful_reads: list[str]) -> None:
    clean = _flow_file(tmp_path, "clean")
    bad = _flow_file(tmp_path, "bad", statistics=False, **changes)
    assert vpcflow._proven(pq.read_metadata(clean)) == {"srcport", "dstport", "protocol", "packets", "bytes"}
    assert vpcflow._proven(pq.read_metadata(bad)) == frozenset()
    expected = RunReport()
    read_directory(tmp_path, expected)
    careful_reads.clear()
    report = RunReport()
    with FlowEngine() as engine:
        read_directory(tmp_path, report, flows=engine)
    assert careful_reads == [str(bad)]
    assert report.problems == expected.problems and [p.source for p in report.problems] == [str(bad)]


def test_the_footer_proves_only_the_ranges_every_row_group_keeps_to(tmp_path: Path) -> None:
    path = _flow_file(tmp_path, "wide", srcport=[40000, 70000, None], bytes=[-1, 1800, None])
    assert vpcflow._proven(pq.read_metadata(path)) == {"dstport", "protocol", "packets"}
    table = pq.read_table(path)
    pq.write_table(table, path, row_group_size=1)  # the bad values in one row group of three
    assert vpcflow._proven(pq.read_metadata(path)) == {"dstport", "protocol", "packets"}


def test_a_damaged_parquet_file_is_reported_and_the_others_are_read(tmp_path: Path) -> None:
    _flow_file(tmp_path, "clean")
    damaged = _flow_file(tmp_path, "damaged")
    damaged.write_bytes(damaged.read_bytes()[:-40])  # the footer cut off
    report = RunReport()
    with FlowEngine() as engine:
        read_directory(tmp_path, report, flows=engine)
        assert engine.records == 2
    assert [p.source for p in report.problems] == [str(damaged)]
    assert "cannot be read" in report.problems[0].reason


def test_parquet_objects_fetched_from_s3_are_reduced_by_duckdb_too(tmp_path: Path, careful_reads: list[str]) -> None:
    """`read_objects` (the live connectors' path: bytes fetched, no file on disk) gives DuckDB the objects through a
    temporary file each, with the same results as the record-by-record reader, and leaves no file behind."""
    truth = run_scenario("classic-miners", tmp_path / "data")
    assert _to_parquet(truth.root)
    blobs = [files.Blob(f"s3://logs/{p.relative_to(truth.root)}", str(p.relative_to(truth.root)), p.stat().st_size,
                        p.read_bytes) for p in sorted(truth.root.rglob("*")) if p.is_file() and p.name != "TRUTH.json"]
    by_records = RunReport()
    records = files.read_objects(blobs, by_records)  # no engine: every object through read_parquet
    careful_reads.clear()
    report = RunReport()
    spill = tmp_path / "tmp"
    spill.mkdir()
    with pytest.MonkeyPatch.context() as mp, FlowEngine() as engine:
        mp.setattr(files.tempfile, "tempdir", str(spill))
        tables = files.read_objects(blobs, report, flows=engine)
        assert careful_reads == [] and list(spill.iterdir()) == []
        summary = engine.summary(tables)
        tables.flows = summary.rows
        assert summary.records == len(records.flows)
        _assert_same_as_records(records, tables, summary)
    assert [(s.path, s.records) for s in report.sources] == [(s.path, s.records) for s in by_records.sources]
    assert report.problems == by_records.problems == []
