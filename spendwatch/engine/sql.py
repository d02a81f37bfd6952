"""Flow features as SQL: written once in DuckDB's dialect, translated with sqlglot for Athena and BigQuery.

One query, three steps, each a common table expression:

1. `flow_records`: the source's rows in the canonical `flows` columns, times as integer nanoseconds
   (`start_ns`, `end_ns`). One adapter per source (SOURCES): a canonical table (DuckDB, local), the VPC flow
   logs table of AWS's documented Athena DDL, Amazon Security Lake's OCSF VPC flow table (Athena), and a
   Cloud Logging sink of GCP VPC flow logs (BigQuery).
2. `flow_agg`: the reduction `spendwatch.engine.flows.reduce_records` runs on each batch, as SQL
   (`reduce_sql`): per interface, peer, server port, protocol, action and ten-minute window.
3. the per-(cloud, account, entity, hour) flow features of `models.features.resource_hours`: bytes in and
   out, bytes per packet, distinct public peers and the top peer's share of the bytes, seen from the
   resource's side exactly as `Features.flows` sees it (the remote end is dst for egress, src for ingress,
   and, where the direction is unknown, the public end). `entity` is the resource where the record names
   one, else the interface: the caller maps interfaces to instances with its inventory.

So only per-hour rows travel back from the warehouse. `translate` gives the SQL for an engine; the
translation is tested to parse in each dialect and, on DuckDB, to give the same numbers as the pandas path.
Not translated: DuckDB-only functions (none are used on purpose: `regexp_matches`, `CASE`, `CAST`,
`TRY_CAST`, `//`, `count(DISTINCT)` all have sqlglot mappings).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from .flows import LAYOUT, LONG_LIVED_S, STRINGS, WINDOW_S, reduce_sql

ENGINES = {"duckdb": "duckdb", "athena": "athena", "bigquery": "bigquery"}

# Addresses that are not public (as models.net.is_public): RFC 1918, loopback, link-local, CGNAT,
# "this network", multicast and reserved IPv4; IPv6 unspecified, loopback, ULA, link-local and multicast.
# IPv4-mapped IPv6 addresses are left to the local path (they do not occur in VPC flow logs).
_PRIVATE = (r"^(10\.|127\.|0\.|169\.254\.|192\.168\.|172\.(1[6-9]|2[0-9]|3[01])\.|"
            r"100\.(6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])\.|(22[4-9]|2[3-5][0-9])\.|"
            r"[fF][cCdD][0-9a-fA-F]{0,2}:|[fF][eE][89aAbB][0-9a-fA-F]?:|[fF][fF][0-9a-fA-F]{0,2}:|::1?$)")
_ADDRESS = r"^([0-9]{1,3}\.){3}[0-9]{1,3}$|:"


def _public(column: str) -> str:
    return (f"({column} IS NOT NULL AND regexp_matches({column}, '{_ADDRESS}') "
            f"AND NOT regexp_matches({column}, '{_PRIVATE}'))")


@dataclass(frozen=True)
class DayPartition:
    """A partition column naming the day its rows were delivered (or happened), so that a query reads only the
    window's partitions: without it Athena reads the whole table on every scan, months of flow logs for three
    hours of them. `format` is "date" for a DATE column (AWS's documented flow-log DDL partitions by `date`), or
    the strftime pattern of a string column ("%Y%m%d" for Security Lake's `eventday`, "%Y/%m/%d" for a
    partition-projection `day`); zero-padded, most significant first, so that strings compare as days do.

    The filter keeps the window's days and one day either side: a record is delivered after it starts (a file
    written just after midnight holds records of the day before), and a day may be cut in UTC or not. The column
    is quoted (`date` is a reserved word), except a pseudo-column starting with `_` (BigQuery's `_TABLE_SUFFIX`
    of a wildcard table), which must stay bare."""

    column: str
    format: str = "date"

    def __post_init__(self) -> None:
        if not self.column.replace("_", "").isalnum():
            raise ValueError(f"partition column {self.column!r}: not a plain column name (letters, digits, _)")
        if self.format != "date" and (not self.format or "'" in self.format
                                      or datetime(2026, 1, 2, 3).strftime(self.format) == self.format):
            raise ValueError(f"partition format {self.format!r}: not \"date\" or a strftime pattern "
                             "such as %Y%m%d")

    def condition(self, start_s: int, end_s: int) -> str:
        """The filter for records that started in [start_s, end_s), in DuckDB's dialect."""
        first = datetime.fromtimestamp(start_s - 86_400, UTC)
        last = datetime.fromtimestamp(max(end_s, start_s) + 86_400, UTC)
        column = self.column if self.column.startswith("_") else f'"{self.column}"'
        if self.format == "date":
            return f"{column} BETWEEN CAST('{first:%Y-%m-%d}' AS DATE) AND CAST('{last:%Y-%m-%d}' AS DATE)"
        return f"{column} BETWEEN '{first.strftime(self.format)}' AND '{last.strftime(self.format)}'"


# `partition` arguments: "source" is the source's own (Source.partition), None is no partition filter.
Partition = DayPartition | None | Literal["source"]


@dataclass(frozen=True)
class Source:
    """How one source's table becomes `flow_records` (canonical columns, integer nanosecond times)."""

    name: str
    engine: str  # the engine whose tables these are
    doc: str
    sql: str  # DuckDB dialect; {table} is the source table, {start_s}/{end_s} the time range (Unix seconds),
    # {partition} the day-partition filter (" AND ...", or nothing)
    partition: DayPartition | None = None  # the partition the usual table of this kind has
    shards: DayPartition | None = None  # a wildcard table of day shards (`name_*`): how their suffix reads a day


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("canonical", "duckdb", "a canonical flows table (what the connectors produce), times as timestamps",
           """SELECT cloud, account, region, resource, interface, src, dst, src_port, dst_port, protocol, packets,
       bytes, action, direction, epoch_ns(start) AS start_ns, epoch_ns("end") AS end_ns
FROM {table}
WHERE epoch(start) >= {start_s} AND epoch(start) < {end_s}"""),
    Source("vpc_flow_logs", "athena", "VPC flow logs in S3 as AWS's Athena DDL declares them (version, account_id, "
           "interface_id, srcaddr, dstaddr, srcport, dstport, protocol, packets, bytes, start, end, action, "
           "log_status, and the version 3-5 columns the documented DDL declares: region, instance_id, flow_direction, "
           "which read as NULL or '-' for a version 2 log)",
           """SELECT 'aws' AS cloud, account_id AS account, nullif(region, '-') AS region,
       nullif(instance_id, '-') AS resource, interface_id AS interface, srcaddr AS src, dstaddr AS dst,
       CAST(srcport AS BIGINT) AS src_port, CAST(dstport AS BIGINT) AS dst_port, CAST(protocol AS BIGINT) AS protocol,
       CAST(packets AS BIGINT) AS packets, CAST(bytes AS BIGINT) AS bytes, action,
       nullif(flow_direction, '-') AS direction, CAST(start AS BIGINT) * 1000000000 AS start_ns,
       CAST("end" AS BIGINT) * 1000000000 AS end_ns
FROM {table}
WHERE log_status = 'OK' AND start >= {start_s} AND start < {end_s}{partition}""", DayPartition("date")),
    Source("security_lake", "athena", "Amazon Security Lake's VPC flow table (OCSF Network Activity): "
           "src_endpoint/dst_endpoint ip and port, connection_info.protocol_num and direction, traffic bytes and "
           "packets, start_time/end_time in ms, cloud.account.uid, cloud.region, src_endpoint.interface_uid and "
           "instance_uid, disposition; events without endpoint addresses (capture windows without data) left out",
           """SELECT 'aws' AS cloud, cloud.account.uid AS account, cloud.region AS region,
       src_endpoint.instance_uid AS resource, src_endpoint.interface_uid AS interface,
       src_endpoint.ip AS src, dst_endpoint.ip AS dst, CAST(src_endpoint.port AS BIGINT) AS src_port,
       CAST(dst_endpoint.port AS BIGINT) AS dst_port, CAST(connection_info.protocol_num AS BIGINT) AS protocol,
       CAST(traffic.packets AS BIGINT) AS packets, CAST(traffic.bytes AS BIGINT) AS bytes,
       CASE WHEN disposition = 'Blocked' THEN 'REJECT' ELSE 'ACCEPT' END AS action,
       CASE lower(connection_info.direction) WHEN 'inbound' THEN 'ingress' WHEN 'outbound' THEN 'egress' END
         AS direction,
       CAST(start_time AS BIGINT) * 1000000 AS start_ns, CAST(end_time AS BIGINT) * 1000000 AS end_ns
FROM {table}
WHERE start_time >= {start_s} * 1000 AND start_time < {end_s} * 1000
  -- a capture window without data (NODATA, SKIPDATA) is an event without endpoints: not a flow
  AND src_endpoint.ip IS NOT NULL AND dst_endpoint.ip IS NOT NULL{partition}""", DayPartition("eventday", "%Y%m%d")),
    Source("gcp_flow_sink", "bigquery", "a Cloud Logging sink of GCP VPC flow logs (compute_googleapis_com_vpc_flows: "
           "jsonPayload.connection, bytes_sent, packets_sent, start_time, end_time, reporter, src_instance / "
           "dest_instance)",
           """SELECT 'gcp' AS cloud,
       coalesce(CASE WHEN dest AND dest_vm.vm_name IS NOT NULL THEN dest_vm.project_id
                     WHEN NOT dest AND src_vm.vm_name IS NOT NULL THEN src_vm.project_id END,
                labels.project_id) AS account,
       coalesce(CASE WHEN dest THEN dest_vm.region ELSE src_vm.region END, labels.location) AS region,
       CASE WHEN dest THEN 'projects/' || dest_vm.project_id || '/zones/' || dest_vm.zone || '/instances/'
                           || dest_vm.vm_name
            ELSE 'projects/' || src_vm.project_id || '/zones/' || src_vm.zone || '/instances/' || src_vm.vm_name
       END AS resource,
       labels.subnetwork_name AS interface, conn.src_ip AS src, conn.dest_ip AS dst,
       TRY_CAST(conn.src_port AS BIGINT) AS src_port, TRY_CAST(conn.dest_port AS BIGINT) AS dst_port,
       TRY_CAST(conn.protocol AS BIGINT) AS protocol, TRY_CAST(packets_sent AS BIGINT) AS packets,
       TRY_CAST(bytes_sent AS BIGINT) AS bytes, 'ACCEPT' AS action,
       CASE reporter WHEN 'SRC' THEN 'egress' WHEN 'DEST' THEN 'ingress' END AS direction,
       epoch_us(started) * 1000 AS start_ns, epoch_us(coalesce(ended, started)) * 1000 AS end_ns
FROM (SELECT upper(jsonPayload.reporter) AS reporter, coalesce(upper(jsonPayload.reporter), '') = 'DEST' AS dest,
             jsonPayload.src_instance AS src_vm, jsonPayload.dest_instance AS dest_vm,
             jsonPayload.connection AS conn, jsonPayload.packets_sent AS packets_sent,
             jsonPayload.bytes_sent AS bytes_sent, resource.labels AS labels,
             CAST(jsonPayload.start_time AS TIMESTAMPTZ) AS started, CAST(jsonPayload.end_time AS TIMESTAMPTZ) AS ended
      FROM {table}
      -- the entry's own time, an hour either side of the window: a sink table partitioned by it is read only
      -- in the window's partitions (an entry is written when its flow's capture interval closes)
      WHERE "timestamp" >= to_timestamp({start_s} - 3600) AND "timestamp" < to_timestamp({end_s} + 3600){partition}
      ) AS entries
WHERE started >= to_timestamp({start_s}) AND started < to_timestamp({end_s})""",
           # a sink without "use partitioned tables" writes a table a day (name_YYYYMMDD): query it as name_*
           shards=DayPartition("_TABLE_SUFFIX", "%Y%m%d")),
)}

FEATURES_SQL = """
WITH flow_records AS (
{records}
), flow_agg AS (
{reduce}
), sided AS (
  SELECT *, {src_public} AS src_public, {dst_public} AS dst_public,
         lower(direction) = 'ingress' AS ingress, lower(direction) = 'egress' AS egress
  FROM flow_agg
), seen AS (
  SELECT cloud, account, coalesce(resource, interface) AS entity, "window" // {per_hour} AS hour_index,
         coalesce(ingress, FALSE) OR (NOT coalesce(ingress, FALSE) AND NOT coalesce(egress, FALSE)
                                     AND src_public AND NOT dst_public) AS inbound,
         src, dst, src_public, dst_public, bytes, packets
  FROM sided
), remote AS (
  SELECT cloud, account, entity, hour_index, inbound,
         CASE WHEN inbound THEN src ELSE dst END AS remote,
         CASE WHEN inbound THEN src_public ELSE dst_public END AS remote_public,
         coalesce(bytes, 0) AS bytes, coalesce(packets, 0) AS packets
  FROM seen
), public_peers AS (
  SELECT cloud, account, entity, hour_index, remote,
         sum(CASE WHEN inbound THEN bytes ELSE 0 END) AS bytes_in,
         sum(CASE WHEN inbound THEN 0 ELSE bytes END) AS bytes_out,
         sum(bytes) AS bytes, sum(packets) AS packets
  FROM remote
  WHERE remote_public AND entity IS NOT NULL
  GROUP BY cloud, account, entity, hour_index, remote
)
SELECT cloud, account, entity, hour_index * {hour_s} AS hour_s,
       CAST(sum(bytes_in) AS DOUBLE) AS bytes_in, CAST(sum(bytes_out) AS DOUBLE) AS bytes_out,
       CAST(sum(bytes) AS DOUBLE) / greatest(CAST(sum(packets) AS DOUBLE), 1.0) AS bytes_per_packet,
       CAST(count(*) AS DOUBLE) AS peers,
       CASE WHEN sum(bytes) > 0 THEN CAST(max(bytes) AS DOUBLE) / CAST(sum(bytes) AS DOUBLE) ELSE 0.0 END
         AS top_peer_share
FROM public_peers
GROUP BY cloud, account, entity, hour_index
ORDER BY cloud, account, entity, hour_s
""".strip()


def features_sql(source: str = "canonical", *, table: str = "flows", start_s: int = 0, end_s: int = 2**62 // 10**9,
                 window_s: int = WINDOW_S, long_lived_s: int = LONG_LIVED_S, partition: Partition = "source") -> str:
    """Per-(cloud, account, entity, hour) flow features over `table` of kind `source`, in DuckDB's dialect.

    `start_s`/`end_s` bound the records' start (Unix seconds), so a warehouse scans only the partitions of
    the window (`partition`: the day partition to filter on, see DayPartition). Raises KeyError for an unknown
    source.
    """
    adapter = SOURCES[source]
    if 3600 % window_s:
        raise ValueError(f"window_s {window_s} does not divide an hour")
    records = _records(adapter.name, table, start_s, end_s, partition)
    return FEATURES_SQL.format(
        records=records, reduce=reduce_sql("flow_records", window_s=window_s, long_lived_s=long_lived_s),
        src_public=_public("src"), dst_public=_public("dst"), per_hour=3600 // window_s, hour_s=3600)


def translate(sql: str, engine: str, *, pretty: bool = True) -> str:
    """`sql` (DuckDB's dialect) in the dialect of `engine` (duckdb, athena or bigquery), through sqlglot.

    Raises KeyError for an unknown engine, sqlglot.errors.ParseError when `sql` is not valid DuckDB SQL.
    """
    import sqlglot

    dialect = ENGINES[engine]
    tree = sqlglot.parse_one(sql, read="duckdb")
    # DuckDB's epoch_us has no sqlglot mapping (BigQuery's UNIX_MICROS reads back to it, not the other way)
    tree = tree.transform(lambda node: sqlglot.exp.UnixMicros(this=node.expressions[0])
                          if isinstance(node, sqlglot.exp.Anonymous) and node.name.lower() == "epoch_us"
                          and len(node.expressions) == 1 else node)
    return tree.sql(dialect=dialect, pretty=pretty)


def query(engine: str, source: str, *, table: str, start_s: int, end_s: int, partition: Partition = "source") -> str:
    """The features query for `source` in `engine`'s dialect, ready to submit."""
    return translate(features_sql(source, table=table, start_s=start_s, end_s=end_s, partition=partition), engine)


# --- Push-down: the aggregate rows detection reads, computed where the data lives --------------------------------

# Addresses that local DNS answers named and that the warehouse's public test calls private, listed inline in
# the query. Past this many, the query keeps every aggregate row instead (a correct superset; the text of an
# Athena query is limited to 256 KB, and BigQuery's to 1 MB).
NAMED_LIMIT = 5_000

PUSHDOWN_SQL = """
WITH flow_records AS (
{records}
), flow_agg AS (
{reduce}
)
SELECT {layout}
FROM flow_agg
WHERE {keep}
""".strip()

TOTALS_SQL = """
SELECT count(*) AS records, max(end_ns) AS latest_end_ns
FROM (
{records}
) AS flow_records
""".strip()


def _table_ref(table: str) -> str:
    """`table` (dot-separated, e.g. a BigQuery project with hyphens) with each part quoted, unless it already
    holds quotes: a hyphen or a reserved word would not parse otherwise."""
    if any(q in table for q in "\"`[") or not table:
        return table
    return ".".join('"' + part + '"' for part in table.split("."))


def _records(source: str, table: str, start_s: int, end_s: int, partition: Partition = "source") -> str:
    adapter = SOURCES[source]
    usual = adapter.shards if adapter.shards is not None and table.endswith("*") else adapter.partition
    day = usual if partition == "source" else partition
    where = f"\n  AND {day.condition(int(start_s), int(end_s))}" if day is not None else ""
    if day is not None and "{partition}" not in adapter.sql:
        raise ValueError(f"source {source}: its table has no day partition to filter on")
    return adapter.sql.format(table=_table_ref(table), start_s=int(start_s), end_s=int(end_s), partition=where)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def public_in_sql(address: str) -> bool:
    """What the query's public-address test (`_public`) says of `address`: the same regular expressions, run
    here. Looser than `models.net.is_public` (an octet above 255 or a leading zero passes), never stricter for a
    real address, so the warehouse keeps every row the local summary could call public."""
    import re

    return bool(re.search(_ADDRESS, address)) and not re.search(_PRIVATE, address)


def named_private(named: Iterable[str]) -> list[str] | None:
    """The addresses of `named` that the query's public test would drop (sorted, distinct); None past
    NAMED_LIMIT, where the query keeps every row instead."""
    out = sorted({a for a in named if a and not public_in_sql(a)})
    return None if len(out) > NAMED_LIMIT else out


def packed_row(columns: Iterable[str] = LAYOUT) -> str:
    """SQL (DuckDB's dialect) for one text value holding a row's `columns` as a CSV line, as Athena writes its
    result file: strings quoted (a quote doubled), integers bare, NULL an unquoted empty field. A client that
    turns each value of a result into a Python object (google-cloud-bigquery's REST pages: 19 values a row)
    converts one value a row instead, and pyarrow's CSV reader parses the lines (`remote.unpack_rows`)."""
    fields = [f"coalesce('\"' || replace({_column(c)}, '\"', '\"\"') || '\"', '')" if c in STRINGS
              else f"coalesce(CAST({_column(c)} AS VARCHAR), '')" for c in columns]
    return " || ',' || ".join(fields)


def _column(name: str) -> str:
    return f'"{name}"' if name in ("window", "end") else name


def pushdown_sql(source: str, *, table: str, start_s: int, end_s: int, named: Iterable[str] = (),
                 latest_end_ns: int | None = None, window_s: int = WINDOW_S, long_lived_s: int = LONG_LIVED_S,
                 partition: Partition = "source", packed: bool = False) -> str:
    """The aggregate rows (columns `flows.LAYOUT`, DuckDB's dialect) that the local summary reads, reduced from
    `table` of kind `source`: rows with a public source or destination, or an end in `named` (addresses that
    DNS answers in the scan named), and the rows holding the latest end.

    The summary (spendwatch.engine.summary) groups only rows whose remote end is public or DNS-named, and
    takes the one row with the latest end; every row it would read is here, so loading these rows into a
    FlowEngine gives the summary loading every record gives. Public addresses (and the named ones the query
    would call public) need no list: only named private addresses are inlined, up to NAMED_LIMIT; past it every
    row is kept. The latest rows: those whose end is `latest_end_ns` (from `totals_sql`, which the warehouse
    computes in one cheap distributed aggregate), or, without it, the table's maximum end computed here (a
    second read of the source in engines that do not reuse a common table expression). Every row whose end is
    the maximum is kept, not one: the summary breaks the tie itself, among the same candidates.

    `packed`: each row as one CSV line in a column `line` (`packed_row`), for BigQuery's REST results.
    """
    if 3600 % window_s:
        raise ValueError(f"window_s {window_s} does not divide an hour")
    listed = named_private(named)
    if listed is None:
        keep = "TRUE"
    else:
        ends = [_public("src"), _public("dst")]
        if listed:
            values = ", ".join(_literal(a) for a in listed)
            ends += [f"coalesce(src IN ({values}), FALSE)", f"coalesce(dst IN ({values}), FALSE)"]
        latest = str(int(latest_end_ns)) if latest_end_ns is not None else "(SELECT max(end_ns) FROM flow_agg)"
        keep = " OR ".join([*ends, f"coalesce(end_ns = {latest}, FALSE)"])
    layout = f"{packed_row()} AS line" if packed else ", ".join(_column(c) for c in LAYOUT)
    return PUSHDOWN_SQL.format(
        records=_records(source, table, start_s, end_s, partition), layout=layout, keep=keep,
        reduce=reduce_sql("flow_records", window_s=window_s, long_lived_s=long_lived_s))


def totals_sql(source: str, *, table: str, start_s: int, end_s: int, partition: Partition = "source") -> str:
    """One row: how many records of `table` the window holds (`records`) and the latest end among them
    (`latest_end_ns`, NULL when none), in DuckDB's dialect. A plain aggregate, distributed in every engine; in a
    columnar table it reads only the columns the source's filter and times name."""
    return TOTALS_SQL.format(records=_records(source, table, start_s, end_s, partition))
