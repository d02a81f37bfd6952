"""Athena's aggregate rows come as Parquet files an UNLOAD writes under the output location, or (`unload` off, or
the UNLOAD failed or its files could not be read) from the CSV result file Athena writes to S3, streamed into the
FlowEngine, and through GetQueryResults' pages only where that file cannot be read; every way gives the same rows
and the local scan's findings. Athena is the local fake (tests/fakes/athena.py), S3 a moto server, both through
boto3."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, where the fakes are

from fakes.athena import FakeAthena, athena_csv
from fakes.raw_http import serve

from spendwatch.engine.flows import LAYOUT, SCHEMA
from spendwatch.engine.remote import AthenaOptions, WarehouseError, WarehouseFlows, _csv_rows, to_schema
from spendwatch.pipeline import scan_directory
from tests.engine.test_pushdown import WHOLE, _view, aws_data  # noqa: F401  (a module fixture, shared)

RESULTS = "s3://athena-results/spendwatch/"


@pytest.fixture
def athena_s3(aws_data: Any, aws: str) -> Iterator[tuple[FakeAthena, str, Any]]:  # noqa: F811
    fake = FakeAthena(page_max=1000, polls=0)
    fake.add_flow_logs("logs.vpc_flow_logs", aws_data.root)
    with serve(fake) as url, fake.results_in(aws, "athena-results"):
        yield fake, url, fake.results_s3


def _source(url: str, s3_url: str, **options: Any) -> WarehouseFlows:
    return WarehouseFlows("athena", "vpc_flow_logs", "vpc_flow_logs", **WHOLE,
                          athena=AthenaOptions(database="logs", endpoint_url=url, s3_endpoint_url=s3_url,
                                               output_location=RESULTS, poll_s=0.001, **options))


def test_the_rows_come_from_the_result_file_with_the_local_scans_findings(
        aws_data: Any, athena_s3: tuple[FakeAthena, str, Any], aws: str) -> None:  # noqa: F811
    fake, url, s3 = athena_s3
    local = scan_directory(aws_data.root, store=None, now=aws_data.end)
    source = _source(url, aws, unload=False)
    remote = scan_directory(aws_data.root, store=None, now=aws_data.end, flows_from=source)
    assert remote.findings and _view(remote.findings) == _view(local.findings)
    fetched = source.fetched
    assert fetched is not None and fetched.records == local.report.tables["flows"]
    rows_query = fetched.queries[1]
    key = f"spendwatch/{rows_query}.csv"
    assert fetched.via == f"from s3://athena-results/{key}"
    written = fake.executions[rows_query].result
    assert written is not None and fetched.returned == written.num_rows > 1_000  # more than one page's worth
    assert fetched.rows.num_rows == 0  # they went to the engine as they came, not into a table
    assert fake.calls.count("GetQueryResults") == 1  # the totals' one row only; no page of the rows
    assert any(f"aggregate rows brought back from s3://athena-results/{key}" in n for n in remote.report.notes)
    assert s3.head_object(Bucket="athena-results", Key=key)["ContentLength"] > 0


def test_an_unreadable_result_file_falls_back_to_the_pages_and_says_why(
        aws_data: Any, athena_s3: tuple[FakeAthena, str, Any], aws: str) -> None:  # noqa: F811
    fake, url, _ = athena_s3
    fake.results_s3 = None  # the file is never written: GetObject answers NoSuchKey
    by_file = _source(url, aws, unload=False)
    local = scan_directory(aws_data.root, store=None, now=aws_data.end)
    remote = scan_directory(aws_data.root, store=None, now=aws_data.end, flows_from=by_file)
    assert _view(remote.findings) == _view(local.findings)
    fetched = by_file.fetched
    assert fetched is not None and fetched.via.startswith("through GetQueryResults (s3://athena-results/")
    assert "NoSuchKey" in fetched.via
    assert fake.calls.count("GetQueryResults") == 1 + -(-(fetched.returned + 1) // 1000)
    assert remote.report.complete == local.report.complete  # a slower way, not a gap
    assert any("NoSuchKey" in n for n in remote.report.notes)


def _rows(**changes: list[Any]) -> pa.Table:
    base: dict[str, list[Any]] = {c: [None, None, None] for c in LAYOUT}
    base.update(cloud=["aws"] * 3, account=["012345678901"] * 3, src=["10.0.0.1", "", 'odd "quoted",\ntext'],
                dst=["198.51.100.7", None, "2001:db8::1"], src_port=[None, 443, 0], dst_port=[3333, None, 65535],
                protocol=[6, 17, None], window=[1, 2, 3], start_ns=[10, 20, 30], end_ns=[11, 21, 31],
                packets=[1, 2, 3], bytes=[100, 200, 2**62], records=[1, 1, 1], long_bytes=[0, 0, 0])
    base.update(changes)
    return pa.table({c: pa.array(v, SCHEMA.field(c).type) for c, v in base.items()}, schema=SCHEMA)


def test_the_result_file_keeps_nulls_empty_strings_and_quotes_apart() -> None:
    table = _rows()
    got: list[pa.Table] = []
    assert _csv_rows(io.BytesIO(athena_csv(table)), "query q: result file f", got.append) == 3
    assert pa.concat_tables(got).equals(to_schema(table, "expected"))
    assert got[0]["src"].to_pylist() == ["10.0.0.1", "", 'odd "quoted",\ntext']  # "" stays a string
    assert got[0]["dst"].to_pylist()[1] is None and got[0]["dst_port"].to_pylist()[1] is None


def test_a_result_file_that_is_not_the_rows_is_an_error_naming_it() -> None:
    table = _rows().drop_columns(["long_bytes"])
    with pytest.raises(WarehouseError, match=r"result file s3://b/q\.csv: .*long_bytes"):
        _csv_rows(io.BytesIO(athena_csv(table)), "query q: result file s3://b/q.csv", lambda rows: None)
    broken = athena_csv(_rows()).replace(b'"100"', b'"a hundred"')
    with pytest.raises(WarehouseError, match=r"result file s3://b/q\.csv: .*\(0 rows read before\)"):
        _csv_rows(io.BytesIO(broken), "query q: result file s3://b/q.csv", lambda rows: None)


def test_a_result_file_that_breaks_is_a_gap_not_an_all_clear(
        aws_data: Any, athena_s3: tuple[FakeAthena, str, Any], aws: str,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    import fakes.athena

    def damaged(table: pa.Table) -> bytes:  # a file cut short: its first row ends after two cells
        head, _, rest = athena_csv(table).partition(b"\n")
        first, _, others = rest.partition(b"\n")
        return b"\n".join([head, b",".join(first.split(b",")[:2]), others])

    monkeypatch.setattr(fakes.athena, "athena_csv", damaged)
    source = _source(athena_s3[1], aws, unload=False)
    result = scan_directory(aws_data.root, store=None, now=aws_data.end, flows_from=source)
    gaps = [g for g in result.report.gaps if g.source == "athena:vpc_flow_logs"]
    assert len(gaps) == 1 and not result.report.complete
    assert "no flows were read" in gaps[0].reason and "result file s3://athena-results/" in gaps[0].reason
    assert "(0 rows read before)" in gaps[0].reason
    assert result.report.tables.get("activity")  # the other sources were read


# ---- UNLOAD: the rows as Parquet files ---------------------------------------------------------------------------

def _fetch(url: str, s3_url: str, **options: Any) -> tuple[pa.Table, Any]:
    """The aggregate rows one Athena read hands over (in a canonical order), and what it says of them."""
    from spendwatch.engine.remote import Athena

    got: list[pa.Table] = []
    source = _source(url, s3_url, **options)
    fetched = Athena(source.athena).fetch(source.source, source.table, source.start_s, source.end_s, [],
                                          sink=got.append)
    rows = pa.concat_tables([to_schema(_rows().slice(0, 0), "empty"), *got])
    return rows.sort_by([(c, "ascending") for c in LAYOUT]), fetched


def test_unload_hands_over_the_rows_of_the_result_file_from_parquet_files(
        athena_s3: tuple[FakeAthena, str, Any], aws: str) -> None:
    fake, url, s3 = athena_s3
    fake.unload_file_rows = 700
    by_csv, csv_fetched = _fetch(url, aws, unload=False)
    calls = len(fake.calls)
    by_unload, fetched = _fetch(url, aws)
    assert by_unload.equals(by_csv) and by_unload.num_rows == fetched.returned > 1_000
    unload = fake.executions[fetched.queries[1]]
    assert unload.query.startswith("UNLOAD (SELECT * FROM (WITH flow_records AS") and unload.manifest
    assert fetched.via.startswith("as Parquet through UNLOAD (") and fetched.bytes_scanned == csv_fetched.bytes_scanned
    files = -(-fetched.returned // 700)
    assert f"({files} file(s), " in fetched.via
    destination = fetched.via.split(" under ")[1].rstrip(")")
    assert destination.startswith(f"{RESULTS}spendwatch-unload/") and destination.endswith("/")
    listed = s3.list_objects_v2(Bucket="athena-results", Prefix=destination.removeprefix("s3://athena-results/"))
    assert listed["KeyCount"] == files
    assert fake.calls[calls:].count("GetQueryResults") == 1  # the totals' one row; the rows came from S3
    # each UNLOAD writes under a prefix of its own (UNLOAD refuses one that holds anything)
    _, again = _fetch(url, aws)
    assert again.via.split(" under ")[1] != fetched.via.split(" under ")[1]


def test_a_failed_unload_is_asked_again_as_a_query_and_says_why(
        athena_s3: tuple[FakeAthena, str, Any], aws: str) -> None:
    fake, url, _ = athena_s3
    by_csv, _ = _fetch(url, aws, unload=False)
    fake.unload_denied = True
    rows, fetched = _fetch(url, aws)
    assert rows.equals(by_csv)
    assert fetched.via.startswith("from s3://athena-results/spendwatch/") and "(UNLOAD failed: query " in fetched.via
    assert "Access denied when writing output to url: s3://athena-results/spendwatch/spendwatch-unload/" in fetched.via
    assert len(fetched.queries) == 3  # the totals, the failed UNLOAD, the query


def test_unload_files_that_cannot_be_read_are_asked_for_again(
        athena_s3: tuple[FakeAthena, str, Any], aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = athena_s3[1]
    by_csv, _ = _fetch(url, aws, unload=False)
    write = FakeAthena._unload
    monkeypatch.setattr(FakeAthena, "_unload", lambda self, *a: write(self, *a) + ".gone")  # names a missing file
    rows, fetched = _fetch(url, aws)
    assert rows.equals(by_csv) and fetched.via.startswith("from s3://athena-results/spendwatch/")
    assert "(UNLOAD files could not be read: s3://athena-results/spendwatch/" in fetched.via
    assert "-manifest.csv.gone: NoSuchKey" in fetched.via


def test_an_unload_file_that_breaks_after_rows_arrived_is_a_gap(
        aws_data: Any, athena_s3: tuple[FakeAthena, str, Any], aws: str,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    import fakes.athena
    import pyarrow.parquet as pq

    athena_s3[0].unload_file_rows = 700
    written = 0

    class CutShort:  # the fake's pyarrow.parquet, writing the second file of the UNLOAD only halfway
        @staticmethod
        def write_table(table: pa.Table, out: Any, **options: Any) -> None:
            nonlocal written
            written += 1
            whole = pa.BufferOutputStream()
            pq.write_table(table, whole, **options)
            data = whole.getvalue()
            out.write(data.slice(0, data.size // 2) if written == 2 else data)

    monkeypatch.setattr(fakes.athena, "pq", CutShort)
    source = _source(athena_s3[1], aws)
    result = scan_directory(aws_data.root, store=None, now=aws_data.end, flows_from=source)
    gaps = [g for g in result.report.gaps if g.source == "athena:vpc_flow_logs"]
    assert len(gaps) == 1 and not result.report.complete
    assert "not all flows were read" in gaps[0].reason and "(700 rows read before)" in gaps[0].reason
    assert "_00001: " in gaps[0].reason and "700 aggregate rows had arrived and are kept" in gaps[0].reason
    assert result.report.tables.get("activity")  # the other sources were read


def test_a_warehouse_parquet_file_goes_into_the_engine_whole_or_not_at_all(tmp_path: Path) -> None:
    """FlowEngine.insert_parquet, what a scan hands UNLOAD's and EXPORT DATA's files to: DuckDB reads the file, the
    rows are those the file holds (values, NULLs, awkward strings, narrower integer types cast), and a file it
    cannot take stores nothing and names itself."""
    import pyarrow.parquet as pq

    from spendwatch.engine.flows import FlowEngine

    table = _rows()
    narrow = table.set_column(LAYOUT.index("window"), "window", table["window"].cast(pa.int32()))
    pq.write_table(narrow, tmp_path / "good.parquet", compression="gzip")
    pq.write_table(table.drop_columns(["bytes"]), tmp_path / "no-bytes.parquet")
    pq.write_table(table.set_column(LAYOUT.index("packets"), "packets", pa.array(["1", "two", "3"])),
                   tmp_path / "words.parquet")
    whole = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(whole[:len(whole) // 2])
    order = [(c, "ascending") for c in LAYOUT]
    with FlowEngine() as engine:
        assert engine.insert_parquet(str(tmp_path / "good.parquet"), "gs://b/good") == 3
        stored = engine.query(f"SELECT * FROM {engine._table}")
        assert to_schema(stored, "stored").sort_by(order).equals(table.sort_by(order))
        for name, says in (("no-bytes", 'does not have a column named "bytes"'), ("words", "two"),
                           ("cut", "parquet")):
            with pytest.raises(ValueError, match=rf"^s3://b/{name}: .*{says}"):
                engine.insert_parquet(str(tmp_path / f"{name}.parquet"), f"s3://b/{name}")
        assert engine.query(f"SELECT count(*) AS n FROM {engine._table}")["n"].to_pylist() == [3]
        assert engine.records == 0  # a warehouse's rows stand for records counted apart
