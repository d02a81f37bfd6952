"""Flow features as SQL: the translations parse in their dialects, and DuckDB gives the pandas path's numbers."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlglot

from spendwatch.cli import main
from spendwatch.connectors.files import read_directory
from spendwatch.engine import sql
from spendwatch.engine.flows import LAYOUT, SCHEMA, FlowEngine
from spendwatch.engine.remote import unpack_rows
from spendwatch.models.features import Features, resource_hours
from spendwatch.records import Tables, empty
from spendwatch.report import RunReport
from spendwatch.simulate.scenarios import run_scenario

FEATURES = ["bytes_in", "bytes_out", "bytes_per_packet", "peers", "top_peer_share"]


@pytest.mark.parametrize("engine", ["athena", "bigquery", "duckdb"])
@pytest.mark.parametrize("source", sorted(sql.SOURCES))
def test_translation_parses_in_the_target_dialect(source: str, engine: str) -> None:
    text = sql.query(engine, source, table="db.flow_table", start_s=1_795_132_800, end_s=1_795_136_400)
    tree = sqlglot.parse_one(text, read=sql.ENGINES[engine])
    assert tree.find(sqlglot.exp.Group) is not None
    assert "GROUP BY ALL" not in text.upper()  # Trino has no GROUP BY ALL
    if engine == "bigquery":
        assert "REGEXP_CONTAINS" in text and "DIV(" in text
    if engine == "athena":
        assert "REGEXP_LIKE" in text


def _table(tables_flows: pd.DataFrame) -> pa.Table:
    arrow = pa.Table.from_pandas(tables_flows, preserve_index=False)
    for name in ("start", "end"):  # DuckDB's epoch functions take microsecond timestamps
        arrow = arrow.set_column(arrow.schema.get_field_index(name), name,
                                 arrow[name].cast(pa.timestamp("us", tz="UTC")))
    return arrow


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[Features, pd.DataFrame]:
    truth = run_scenario("classic-miners", tmp_path_factory.mktemp("sql") / "data")
    features = Features(read_directory(truth.root, RunReport()))
    reference = resource_hours(features)
    reference = reference[reference["peers"] > 0].assign(
        hour_s=lambda f: pd.to_datetime(f["hour"], utc=True).astype("int64") // 10**9)
    return features, reference


def _compare(out: pd.DataFrame, reference: pd.DataFrame) -> None:
    merged = reference.merge(out.rename(columns={"entity": "resource"}), how="outer", indicator=True,
                             on=["cloud", "account", "resource", "hour_s"], suffixes=("_pandas", "_sql"))
    assert (merged["_merge"] == "both").all(), merged["_merge"].value_counts()
    for column in FEATURES:
        np.testing.assert_allclose(merged[f"{column}_sql"], merged[f"{column}_pandas"], rtol=1e-12, err_msg=column)


def test_duckdb_gives_the_pandas_features(scenario: tuple[Features, pd.DataFrame]) -> None:
    features, reference = scenario
    con = duckdb.connect()
    # resources filled from inventory as the local path does (a warehouse groups by interface instead)
    con.register("flows", _table(features.tables.flows.assign(resource=features.flows["resource"])))
    out = con.sql(sql.features_sql("canonical", table="flows")).df()
    assert len(out) == len(reference) > 100
    _compare(out, reference)


def test_the_athena_flow_log_table_gives_the_same_features(scenario: tuple[Features, pd.DataFrame]) -> None:
    """The VPC flow log adapter, run on DuckDB over a table shaped like AWS's Athena DDL, then translated and
    run back: interfaces come out as entities, as a warehouse would return them."""
    features, reference = scenario
    f = features.tables.flows
    logs = pd.DataFrame({
        "version": 2, "account_id": f["account"], "interface_id": f["interface"], "srcaddr": f["src"],
        "dstaddr": f["dst"], "srcport": f["src_port"], "dstport": f["dst_port"], "protocol": f["protocol"],
        "packets": f["packets"], "bytes": f["bytes"], "start": f["start"].astype("int64") // 10**9,
        "end": f["end"].astype("int64") // 10**9, "action": f["action"], "log_status": "OK",
        # version 3-5 columns of the documented DDL: a version 2 log reads them as NULL
        **{c: pd.Series(None, index=f.index, dtype="str") for c in ("region", "instance_id", "flow_direction")},
        "date": pd.to_datetime(f["end"], utc=True).dt.date})  # the partition: the day the file was delivered
    con = duckdb.connect()
    con.register("vpc_flow_logs", pa.Table.from_pandas(logs, preserve_index=False))
    text = sql.features_sql("vpc_flow_logs", table="vpc_flow_logs", start_s=0, end_s=4_000_000_000)
    out = con.sql(text).df()
    # back through the Athena translation: same rows
    again = con.sql(sql.translate(sqlglot.transpile(sql.translate(text, "athena"), read="athena",
                                                    write="duckdb")[0], "duckdb")).df()
    pd.testing.assert_frame_equal(out, again)
    by_interface = features.tables.inventory.assign(interface=features.tables.inventory["interfaces"].str.split()
                                                    ).explode("interface")[["interface", "resource"]]
    out = out.merge(by_interface, left_on="entity", right_on="interface").drop(columns=["entity", "interface"])
    _compare(out.rename(columns={"resource": "entity"}), reference)


def test_the_day_partition_bounds_the_days_read() -> None:
    """A scan of three hours reads three days of partitions (one either side), not the table's months."""
    start_s, end_s = 1795132800 + 3600, 1795132800 + 4 * 3600  # 2026-11-20 01:00 to 04:00 UTC
    con = duckdb.connect()
    days = pd.date_range("2026-11-01", "2026-11-30", freq="D")
    con.register("vpc_flow_logs", pd.DataFrame({  # one record a day, each starting at 02:00 on 2026-11-20
        "version": 2, "account_id": "111111111111", "interface_id": "eni-1", "srcaddr": "10.0.0.1",
        "dstaddr": "203.0.113.9", "srcport": 40000, "dstport": 3333, "protocol": 6, "packets": 1, "bytes": 100,
        "start": start_s + 3600, "end": start_s + 3660, "action": "ACCEPT", "log_status": "OK", "region": None,
        "instance_id": None, "flow_direction": None, "date": days.date}))
    counted = {p: con.sql(sql.totals_sql("vpc_flow_logs", table="vpc_flow_logs", start_s=start_s, end_s=end_s,
                                         partition=p)).fetchall()[0][0]
               for p in ("source", None, sql.DayPartition("date"))}
    assert counted == {"source": 3, None: 30, sql.DayPartition("date"): 3}  # 19th, 20th and 21st
    text = sql.translate(sql.totals_sql("security_lake", table="t", start_s=start_s, end_s=end_s), "athena")
    assert "\"eventday\" BETWEEN '20261119' AND '20261121'" in text
    custom = sql.DayPartition("day", "%Y/%m/%d")
    assert custom.condition(start_s, end_s) == "\"day\" BETWEEN '2026/11/19' AND '2026/11/21'"
    assert "BETWEEN" not in sql.totals_sql("security_lake", table="t", start_s=start_s, end_s=end_s, partition=None)
    with pytest.raises(ValueError, match="no day partition"):
        sql.totals_sql("canonical", table="flows", start_s=start_s, end_s=end_s, partition=custom)
    for column, fmt, error in (("date; DROP", "date", "not a plain column"), ("day", "yyyy", "strftime"),
                               ("day", "%Y'", "strftime")):
        with pytest.raises(ValueError, match=error):
            sql.DayPartition(column, fmt)


def test_sql_command_prints_the_query(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "--engine", "athena", "--since", "2026-11-20T00:00Z", "--until", "2026-11-20T01:00Z"]) == 0
    text = capsys.readouterr().out
    sqlglot.parse_one(text.rstrip().rstrip(";"), read="athena")
    assert "start >= 1795132800" in text and "start < 1795136400" in text


def test_sql_command_takes_the_tables_day_partition(capsys: pytest.CaptureFixture[str]) -> None:
    window = ["--since", "2026-11-20T00:00Z", "--until", "2026-11-20T03:00Z"]
    assert main(["sql", "--engine", "athena", *window, "--partition-column", "day", "--partition-format",
                 "%Y/%m/%d"]) == 0
    text = capsys.readouterr().out
    assert "\"day\" BETWEEN '2026/11/19' AND '2026/11/21'" in text and "\"date\"" not in text
    assert main(["sql", "--engine", "athena", "--source", "security_lake", *window, "--partition-format",
                 "%Y%m%d%H"]) == 0
    assert "\"eventday\" BETWEEN '2026111900' AND '2026112103'" in capsys.readouterr().out
    assert main(["sql", "--engine", "athena", *window, "--partition-column", ""]) == 0
    assert "BETWEEN" not in capsys.readouterr().out
    for args, error in ((["--engine", "duckdb", "--partition-column", "day"], "takes no day partition"),
                        (["--engine", "athena", "--partition-format", "yyyy"], "not \"date\" or a strftime"),
                        (["--engine", "athena", "--partition-column", "a b"], "not a plain column name")):
        assert main(["sql", *args]) == 2
        assert error in capsys.readouterr().err


def test_scan_elsewhere_with_dry_run_prints_the_query(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--data", str(tmp_path), "--engine", "bigquery", "--dry-run"]) == 0
    sqlglot.parse_one(capsys.readouterr().out.rstrip().rstrip(";"), read="bigquery")


def test_a_source_of_another_engine_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--data", str(tmp_path), "--engine", "athena", "--source", "gcp_flow_sink"]) == 1
    assert "--source gcp_flow_sink is a bigquery table" in capsys.readouterr().err


# ---- the push-down query: the aggregate rows the summary reads ----------------------------------------------------

WHOLE = {"start_s": 0, "end_s": 4_000_000_000}


@pytest.mark.parametrize("engine", ["athena", "bigquery", "duckdb"])
@pytest.mark.parametrize("source", sorted(sql.SOURCES))
def test_the_pushdown_query_parses_in_each_dialect(source: str, engine: str) -> None:
    for latest in (None, 1_795_136_400_000_000_000):
        text = sql.translate(sql.pushdown_sql(source, table="my-project.logs.flow_table", start_s=1_795_132_800,
                                              end_s=1_795_136_400, named=["10.0.0.7", "198.51.100.1"],
                                              latest_end_ns=latest), engine)
        tree = sqlglot.parse_one(text, read=sql.ENGINES[engine])
        assert [c.alias_or_name for c in tree.selects] == list(LAYOUT)
        assert "'10.0.0.7'" in text and "'198.51.100.1'" not in text  # a public answer needs no listing
    totals = sqlglot.parse_one(sql.translate(sql.totals_sql(source, table="t", start_s=0, end_s=1), engine),
                               read=sql.ENGINES[engine])
    assert [c.alias_or_name for c in totals.selects] == ["records", "latest_end_ns"]
    if engine == "bigquery":
        assert "`my-project`.`logs`.`flow_table`" in text
    if sql.SOURCES[source].engine == engine != "duckdb":  # no DuckDB-only function left (epoch_ns, epoch_us)
        assert "EPOCH" not in text.upper()
    packed = sqlglot.parse_one(sql.translate(sql.pushdown_sql(source, table="t", packed=True, **WHOLE), engine),
                               read=sql.ENGINES[engine])
    assert [c.alias_or_name for c in packed.selects] == ["line"]  # one CSV line a row (BigQuery's REST pages)


def test_past_the_limit_of_named_addresses_every_row_is_kept() -> None:
    many = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(sql.NAMED_LIMIT + 1)]
    assert sql.named_private(many) is None and sql.named_private(many[:10]) == sorted(many[:10])
    text = sql.pushdown_sql("canonical", table="flows", named=many, **WHOLE)
    assert text.rstrip().endswith("WHERE TRUE") and "10.0.0.1" not in text


def _engine_summary(records: Tables, aggregates: pa.Table) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    with FlowEngine() as engine:
        engine.add(aggregates)
        tables = Tables(**dict(records.items()))
        tables.flows = empty("flows")
        summary = engine.summary(tables)
        return summary.rows, summary.window_flows(3600, True), summary.ingress_bytes()


@pytest.mark.parametrize("name", ["classic-miners", "proxyjacking-tunnel"])
def test_the_pushed_down_rows_give_the_summary_every_record_gives(name: str, tmp_path: Path) -> None:
    """On DuckDB over a canonical table: the rows the query keeps, loaded into a FlowEngine, give the same rule
    rows, hourly window features and ingress bytes as every record loaded."""
    truth = run_scenario(name, tmp_path / "data")
    records = read_directory(truth.root, RunReport())
    table = _table(records.flows)
    con = duckdb.connect()
    con.register("flows", table)
    named = Features(records).dns_answers["address"]
    (count, latest), = con.sql(sql.totals_sql("canonical", table="flows", **WHOLE)).fetchall()
    assert count == len(records.flows)
    reference = _engine_summary(records, table)
    for end in (latest, None):
        rows = con.sql(sql.pushdown_sql("canonical", table="flows", named=named, latest_end_ns=end, **WHOLE)
                       ).to_arrow_table()
        assert rows.column_names == list(LAYOUT)
        assert int(pc.sum(rows["records"]).as_py()) < count
        got = _engine_summary(records, rows.cast(SCHEMA))
        pd.testing.assert_frame_equal(got[0], reference[0])
        pd.testing.assert_frame_equal(got[1], reference[1])
        pd.testing.assert_series_equal(got[2], reference[2])
        packed = con.sql(sql.pushdown_sql("canonical", table="flows", named=named, latest_end_ns=end, packed=True,
                                          **WHOLE)).to_arrow_table()
        order = [(c, "ascending") for c in LAYOUT]  # the same rows, one CSV line each (in no set order)
        assert unpack_rows(packed, "packed").sort_by(order).equals(rows.cast(SCHEMA).sort_by(order))
    # without the DNS-named private peers the rule rows differ: the list is what keeps them
    if sql.named_private(named):
        rows = con.sql(sql.pushdown_sql("canonical", table="flows", latest_end_ns=latest, **WHOLE)).to_arrow_table()
        assert len(_engine_summary(records, rows.cast(SCHEMA))[0]) < len(reference[0])


def test_the_flow_sink_query_reads_only_the_windows_partitions() -> None:
    """A sink table is partitioned by the entries' `timestamp`: the BigQuery query filters on it (an hour of slack
    either side of the window), so a scan is billed for its window's partitions, not the table's retention."""
    query = sqlglot.parse_one(sql.translate(sql.pushdown_sql("gcp_flow_sink", table="p.logs.vpc_flows",
                                                             start_s=1_795_000_000, end_s=1_795_010_800),
                                            "bigquery"), read="bigquery")
    bounds = {(type(c).__name__, c.expression.sql("bigquery")) for c in query.find_all(sqlglot.exp.GT,
                                                                                         sqlglot.exp.GTE,
                                                                                         sqlglot.exp.LT)
              if isinstance(c.this, sqlglot.exp.Column) and c.this.name == "timestamp"}
    assert bounds == {("GTE", "TIMESTAMP_SECONDS(1795000000 - 3600)"), ("LT", "TIMESTAMP_SECONDS(1795010800 + 3600)")}
