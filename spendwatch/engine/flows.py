"""Flow records in, in bounded memory: per-window aggregates in DuckDB, and the two small things detection reads.

A flow log holds one record per capture window and 5-tuple; most of what tells one record from the next is
the client's ephemeral port, which no detector reads. `FlowEngine` takes batches of canonical `flows`
records (Arrow tables, from any reader thread) and reduces each batch at once (`reduce_records`, Arrow's
own hash aggregation, no Python per record) to one row per

    cloud, account, region, resource, interface, src, dst, src_port, dst_port, protocol, action, direction,
    window (the ten-minute interval, from the Unix epoch, in which the record started)

with the first start, the last end, summed packets and bytes, the number of records (`records`) and the bytes
of records that lasted `long_lived_s` or more (`long_bytes`). Before grouping, the port of the side that is
the client of the connection (>= 1024 and above the other port, or >= 32768, while the other is not; both
known) is set to null. The partial aggregates go into a DuckDB table that spills to disk past its memory
limit, so memory follows neither the records nor the aggregate. Files DuckDB can read itself (Parquet flow logs
on disk) are reduced there by the same reduction written as SQL (`reduce_sql`, `insert_reduced`), and a
warehouse's aggregate rows (spendwatch.engine.remote) are added as they come.

After the read, `summary(tables)` (SQL on DuckDB, once the inventory and the DNS answers are known) hands
detection two small things instead of one fat table:

- `window_flows(seconds)`: the flow features per (cloud, account, resource, 10-minute or 1-hour window) that
  `models.features` would compute from every record (bytes in and out, bytes per packet, distinct public
  peers, the top peer's share and persistence, long-lived and unnamed shares), and `ingress_bytes()`;
- `rows`: canonical flow rows (aggregates, with `records` and `long_bytes`) only for what rules read row by
  row: every (resource, remote) pair with a public peer where the resource is the client, or a peer that a
  DNS answer in the account named, plus the row holding the latest end (so the table spans the scan's time).
  Inbound internet scans and web clients (ever-new source addresses) are counted in the features and never
  handed over one row per peer.

Both are computed exactly as `models.features.Features` computes them from the records (resources resolved
from interfaces and private addresses, the remote end and its publicness, the client side); tests/engine
checks it rule by rule and feature by feature.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from spendwatch.records import FLOWS

if TYPE_CHECKING:
    import pandas as pd

    from spendwatch.records import Tables

# VPC flow logs' default aggregation interval (hours are whole multiples of it) and what counts as long-lived:
# models.features' INTERVAL_S and LONG_LIVED_S, which the summary reproduces (tests/engine checks they agree).
WINDOW_S = 600
LONG_LIVED_S = 300
_NS = 1_000_000_000

# Canonical flow columns that identify an aggregate (start, end, packets and bytes are what is summed).
KEYS = ("cloud", "account", "region", "resource", "interface", "src", "dst", "src_port", "dst_port", "protocol",
        "action", "direction")
STRINGS = tuple(c.name for c in FLOWS.columns if c.kind == "str")
SUMS = ("start_ns", "end_ns", "packets", "bytes", "records", "long_bytes")
LAYOUT = (*KEYS, "window", *SUMS)
SCHEMA = pa.schema([(c, pa.large_string() if c in STRINGS else pa.int64()) for c in LAYOUT])
DEFAULT_MEMORY = "512MB"
BASIC_FEATURES = ("bytes_in", "bytes_out", "bytes_per_packet", "peers", "top_peer_share")  # resource_hours' flows
FLUSH_ROWS = 250_000  # reduced rows buffered before one insert into DuckDB (about 40 MB)
CHECKPOINT_ROWS = 500_000  # rows inserted between checkpoints, which compress them (about 100 MB to 17 MB)

# The side of a connection that is its client: its port is ephemeral relative to the other's.
_CLIENT = "({a} IS NOT NULL AND {b} IS NOT NULL AND {a} >= 1024 AND ({a} > {b} OR {a} >= 32768))"

REDUCE_SQL = """
SELECT {select}, start_ns // {window_ns} AS "window",
       min(start_ns) AS start_ns, max(end_ns) AS end_ns, CAST(sum(packets) AS BIGINT) AS packets,
       CAST(sum(bytes) AS BIGINT) AS bytes, count(*) AS records,
       CAST(sum(CASE WHEN end_ns - start_ns >= {long_ns} THEN bytes ELSE 0 END) AS BIGINT) AS long_bytes
FROM (SELECT *, {src_client} AS src_client, {dst_client} AS dst_client FROM {source})
GROUP BY {group}
""".strip()

_PORTS = {
    "src_port": "CASE WHEN src_client AND NOT dst_client THEN NULL ELSE src_port END AS src_port",
    "dst_port": "CASE WHEN dst_client AND NOT src_client THEN NULL ELSE dst_port END AS dst_port",
}


def reduce_sql(source: str, *, keys: tuple[str, ...] | list[str] = KEYS, window_s: int = WINDOW_S,
               long_lived_s: int = LONG_LIVED_S) -> str:
    """The reduction `reduce_records` performs, as SQL over `source` (canonical columns, times as integer
    start_ns/end_ns) in DuckDB's dialect: what `spendwatch.engine.sql` runs where the data lives."""
    select = ", ".join(_PORTS.get(k, k) for k in keys)
    group = ", ".join(str(i) for i in range(1, len(keys) + 2))  # ordinals: Trino has no GROUP BY ALL
    return REDUCE_SQL.format(select=select, group=group, source=source, window_ns=window_s * _NS,
                             long_ns=long_lived_s * _NS,
                             src_client=_CLIENT.format(a="src_port", b="dst_port"),
                             dst_client=_CLIENT.format(a="dst_port", b="src_port"))


def _ns(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Integer nanoseconds of a time column (timestamps of any unit), or the integers as they are."""
    if pa.types.is_timestamp(col.type):
        return pc.cast(pc.cast(col, pa.timestamp("ns", tz=col.type.tz)), pa.int64())
    return pc.cast(col, pa.int64())


def _small_offsets(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A large_string key column as string, which Arrow groups with its fast, row-encoded hash table: with any
    large_string key it falls back to a generic one several times slower (1.1 million flow records on one
    core, 0.30 s against 1.48 s). A chunk past 2 GB of text cannot be cast and is grouped as it is."""
    if not pa.types.is_large_string(col.type):
        return col
    try:
        return pc.cast(col, pa.string())
    except pa.ArrowInvalid:
        return col


def _client(port: Any, other: Any) -> Any:
    """Where `port` is the client's (as _CLIENT); False where either port is unknown."""
    ephemeral = pc.or_(pc.greater(port, other), pc.greater_equal(port, 32768))
    return pc.fill_null(pc.and_(pc.greater_equal(port, 1024), ephemeral), False)


def reduce_records(table: pa.Table, *, keep: pa.Array | None = None, constants: dict[str, str | None] | None = None,
                   window_s: int = WINDOW_S, long_lived_s: int = LONG_LIVED_S) -> pa.Table | None:
    """One batch of canonical flow records reduced to aggregate rows (SCHEMA); None for an empty batch.

    Runs Arrow's hash aggregation in the calling thread (it releases the GIL). String key columns with a
    single value in the batch (a flow log file has one cloud, account and region; version 2 records name no
    instance or direction) are left out of the grouping and put back after it: hashing them costs for nothing.

    A reader that knows more passes it, sparing copies of the records: `keep` (booleans) marks the rows that
    are records (the others, NODATA lines, are grouped apart and dropped with their groups); `constants` gives
    string key columns that hold one value and are left out of `table`; times may come as integer
    nanoseconds `start_ns`/`end_ns` instead of `start`/`end`.
    """
    n = table.num_rows
    if n == 0:
        return None
    names = set(table.column_names)

    def column(name: str, typ: pa.DataType) -> Any:
        return pc.cast(table[name], typ) if name in names else pa.nulls(n, typ)

    src_port, dst_port = column("src_port", pa.int64()), column("dst_port", pa.int64())
    src_client, dst_client = _client(src_port, dst_port), _client(dst_port, src_port)
    none = pa.scalar(None, pa.int64())
    start_ns = table["start_ns"] if "start_ns" in names else _ns(table["start"])
    end_ns = table["end_ns"] if "end_ns" in names else _ns(table["end"])
    bytes_ = column("bytes", pa.int64())
    long_ns = pa.scalar(long_lived_s * _NS, pa.int64())
    cols: dict[str, Any] = {
        "src_port": pc.if_else(pc.and_(src_client, pc.invert(dst_client)), none, src_port),
        "dst_port": pc.if_else(pc.and_(dst_client, pc.invert(src_client)), none, dst_port),
        "protocol": column("protocol", pa.int64()),
        "window": pc.divide(start_ns, pa.scalar(window_s * _NS, pa.int64())),
    }
    constants = dict(constants or {})
    for name in KEYS:
        if name not in STRINGS or name in constants:
            continue
        col = table[name] if name in names else None
        if col is None or col.null_count == n:
            constants[name] = None
            continue
        if col.null_count == 0 and col[0] == col[n - 1]:  # a cheap test first: most key columns vary
            mm = pc.min_max(col)
            if mm["min"] == mm["max"]:
                constants[name] = mm["min"].as_py()
                continue
        cols[name] = _small_offsets(col)
    if keep is not None:
        cols["_keep"] = keep
    keys = [k for k in (*KEYS, "window", "_keep") if k in cols]
    data = pa.table({**cols, "start_ns": start_ns, "end_ns": end_ns, "packets": column("packets", pa.int64()),
                     "bytes": bytes_,
                     "long_bytes": pc.if_else(pc.greater_equal(pc.subtract(end_ns, start_ns), long_ns), bytes_, 0)})
    grouped = data.group_by(keys, use_threads=False).aggregate([
        ("start_ns", "min"), ("end_ns", "max"), ("packets", "sum"), ("bytes", "sum"), ([], "count_all"),
        ("long_bytes", "sum")])
    if keep is not None:
        grouped = grouped.filter(pc.fill_null(grouped["_keep"], False))
    m = grouped.num_rows
    if m == 0:
        return None
    out: dict[str, Any] = {}
    for name in LAYOUT:
        if name in constants:
            value = constants[name]
            out[name] = pa.repeat(pa.scalar(value, pa.large_string()), m)
        elif name in keys:
            out[name] = grouped[name]
        else:
            source = {"start_ns": "start_ns_min", "end_ns": "end_ns_max", "records": "count_all"}.get(name,
                                                                                                   f"{name}_sum")
            out[name] = grouped[source]
    return pa.table(out).cast(SCHEMA)


class FlowEngine:
    """Flow records reduced into a DuckDB table as they are read (`add`, from any thread), then summarised for
    detection once the read is done (`summary`). Close it (or use it as a context manager) to free DuckDB and
    its spill directory.

    `memory_limit` and `threads` are DuckDB's; past the limit DuckDB spills to `spill_dir` (a temporary
    directory by default) instead of growing.
    """

    def __init__(self, *, memory_limit: str = DEFAULT_MEMORY, threads: int | None = None,
                 spill_dir: str | None = None) -> None:
        import duckdb

        self._spill = tempfile.TemporaryDirectory(prefix="spendwatch-flows-") if spill_dir is None else None
        self._con = duckdb.connect(config={"memory_limit": memory_limit,
                                           "temp_directory": spill_dir or self._spill.name,  # type: ignore[union-attr]
                                           "preserve_insertion_order": False,
                                           **({"threads": threads} if threads else {})})
        self._table = "agg"  # as cursors (other connections to the same database) name it
        self._checkpoint = "CHECKPOINT"
        try:  # DuckDB >= 1.3 compresses an in-memory database: the aggregate takes about a sixth of the memory
            self._con.execute("ATTACH ':memory:' AS flows (COMPRESS)")
            self._con.execute("USE flows")
            # A cursor's database is the default one (`memory`), not the USEd one: named, or it checkpoints that.
            self._table, self._checkpoint = "flows.agg", "CHECKPOINT flows"
        except duckdb.Error:  # an older DuckDB: uncompressed, it spills sooner
            pass
        columns = ", ".join(f"{_q(c)} {_sql_type(c)}" for c in LAYOUT)
        self._con.execute(f"CREATE TABLE agg ({columns})")
        self._unchecked = 0  # rows inserted since the last checkpoint (which compresses them)
        self._lock = threading.Lock()  # guards the buffer and the counts
        self._writing = threading.Lock()  # one insert (or checkpoint) at a time
        self._buffer: list[pa.Table] = []  # reduced batches not yet inserted
        self._buffered = 0
        self.records = 0  # records taken in
        self.owners: dict[str, str] = {}  # interface -> instance, from the launches the connector read
        self._closed = False

    def __enter__(self) -> FlowEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reduce(self, table: pa.Table, *, keep: pa.Array | None = None,
               constants: dict[str, str | None] | None = None) -> pa.Table | None:
        """`reduce_records` (no DuckDB; any thread)."""
        return reduce_records(table, keep=keep, constants=constants)

    def append(self, partial: pa.Table | None, *, records: int | None = None) -> None:
        """Store aggregate rows made by `reduce` (rows of one key may come in several batches: every later
        step sums them). They wait in a buffer of at most FLUSH_ROWS rows: one insert into DuckDB costs tens of
        milliseconds whatever its size, so inserting each small batch would cost more than reducing it.

        `records`: how many records the rows stand for, where that is not their `records` sum (a warehouse
        returns only the rows detection reads, of all the records it reduced)."""
        if records is not None:
            with self._lock:
                self.records += records
        if partial is None or not partial.num_rows:
            return
        with self._lock:
            if records is None:
                self.records += int(pc.sum(partial["records"]).as_py() or 0)
            self._buffer.append(partial)
            self._buffered += partial.num_rows
            if self._buffered < FLUSH_ROWS:
                return
            parts, self._buffer, self._buffered = self._buffer, [], 0
        self._insert(parts)

    def _insert(self, parts: list[pa.Table]) -> None:
        if not parts:
            return
        rows = pa.concat_tables(parts)
        # One writer at a time: a checkpoint refuses to run beside another thread's open insert.
        with self._writing:
            cur = self._con.cursor()
            try:
                cur.register("partial", rows)
                cur.execute(f"INSERT INTO {self._table} SELECT {', '.join(_q(c) for c in LAYOUT)} FROM partial")
                self._inserted(cur, rows.num_rows)
            finally:
                cur.close()

    def _inserted(self, cur: Any, rows: int) -> None:
        """Count `rows` just inserted on `cur` (holding `_writing`); every CHECKPOINT_ROWS, compress them."""
        self._unchecked += rows
        if self._unchecked >= CHECKPOINT_ROWS:
            self._unchecked = 0
            cur.execute(self._checkpoint)

    def flush(self) -> None:
        """Insert what waits in the buffer (the summary does it first)."""
        with self._lock:
            parts, self._buffer, self._buffered = self._buffer, [], 0
        self._insert(parts)

    def query(self, sql: str) -> pa.Table:
        """A read-only query (e.g. over files DuckDB reads itself) on its own cursor; any thread."""
        cur = self._con.cursor()
        try:
            return cur.sql(sql).to_arrow_table()
        finally:
            cur.close()

    def insert_reduced(self, source: str, records: int, *, addresses: str | None = None) -> bool:
        """Reduce the canonical flow records that the SQL relation `source` yields (integer start_ns/end_ns,
        as `reduce_sql` reads them) into the aggregate, in DuckDB: for files DuckDB reads itself (Parquet), no
        record passes through Python. `records` is how many records `source` holds.

        With `addresses` (a regular expression), every reduced row must have a src and a dst, and every distinct
        address must match it in full, or nothing is stored and the answer is False: checking the aggregate's
        distinct values costs a fraction of checking every record."""
        columns = ", ".join(_q(c) for c in LAYOUT)
        cur = self._con.cursor()  # its own connection: the temporary table is this call's alone
        try:
            cur.execute(f"CREATE OR REPLACE TEMP TABLE sw_reduced AS SELECT {columns} FROM ({reduce_sql(source)})")
            if addresses is not None:
                bad = cur.execute("SELECT count(*) FROM (SELECT src AS a FROM sw_reduced UNION SELECT dst FROM "
                                  "sw_reduced) WHERE a IS NULL OR NOT regexp_full_match(a, ?)",
                                  [addresses]).fetchone()
                if bad and bad[0]:
                    return False
            with self._writing:
                inserted = cur.execute(f"INSERT INTO {self._table} SELECT * FROM sw_reduced").fetchone()
                self._inserted(cur, int(inserted[0]) if inserted else 0)
        finally:
            cur.execute("DROP TABLE IF EXISTS sw_reduced")
            cur.close()
        with self._lock:
            self.records += records
        return True

    def insert_parquet(self, path: str, where: str) -> int:
        """Store the aggregate rows of the Parquet file at `path` (columns named as LAYOUT, castable to its types:
        a warehouse's UNLOAD or EXPORT DATA file), read by DuckDB itself, no row through Python: for the 4.2
        million rows of the bench's 50 M records, 3.9 s and a peak of 0.5 GB against 5.6 s and 0.8 GB handing
        them over batch by batch (`append`). All or nothing (one INSERT); the rows stored. They count no record
        (a warehouse's rows stand for records counted apart). ValueError naming `where` for a file DuckDB cannot
        read, a missing column or a value of the wrong type."""
        import duckdb

        # qualified: a missing column then reads 'Table "f" does not have a column named "bytes"'
        columns = ", ".join(f"CAST(f.{_q(c)} AS {_sql_type(c)}) AS {_q(c)}" for c in LAYOUT)
        literal = "'" + path.replace("'", "''") + "'"
        cur = self._con.cursor()
        try:
            with self._writing:
                got = cur.execute(f"INSERT INTO {self._table} SELECT {columns} FROM read_parquet({literal}) AS f"
                                  ).fetchone()
                stored = int(got[0]) if got else 0
                self._inserted(cur, stored)
        except duckdb.Error as exc:
            raise ValueError(f"{where}: {str(exc).splitlines()[0]}") from exc
        finally:
            cur.close()
        return stored

    def add(self, table: pa.Table, *, records: int | None = None) -> None:
        """Store one batch: canonical flow records (reduced here) or an aggregate `reduce` already made
        (`records` as for `append`)."""
        self.append(table if table.schema.equals(SCHEMA) else self.reduce(table), records=records)

    def summary(self, tables: Tables) -> FlowSummary:
        """What detection reads of the flows, once `tables` holds the scan's inventory and DNS (module doc).

        The engine must stay open while the summary is used: its window features are computed on demand.
        """
        from .summary import summarise

        self.flush()
        with self._lock:
            return summarise(self._con, tables, self.owners, records=self.records)

    def close(self) -> None:
        """Free DuckDB and the spill directory (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._con.close()
        if self._spill is not None:
            self._spill.cleanup()
            self._spill = None


def _q(name: str) -> str:
    return f'"{name}"'


def _sql_type(name: str) -> str:
    """The DuckDB type of the aggregate's column `name` (SCHEMA's, in SQL)."""
    return "VARCHAR" if name in STRINGS else "BIGINT"


@dataclass
class FlowSummary:
    """The flows as detection reads them (module doc): `rows` for row-level rules, features per window.

    `window_flows(seconds, extended)` is `models.features._window_flows` computed in SQL; `ingress_bytes()` is
    `Features.ingress_bytes`. `records` is the number of flow records behind it, `aggregates` the number of
    aggregate rows DuckDB held.
    """

    rows: pd.DataFrame
    records: int
    aggregates: int
    compute: Any = field(repr=False)  # the SQL side: window_flows(seconds, extended), ingress_bytes()
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    def window_flows(self, seconds: int, extended: bool) -> pd.DataFrame:
        key = ("windows", seconds)
        if key not in self._cache:  # every column at once: the basic ones are a subset
            self._cache[key] = self.compute.window_flows(seconds)
        frame = self._cache[key]
        return frame if extended or not len(frame) else frame[list(BASIC_FEATURES)]

    def ingress_bytes(self) -> pd.Series:
        if "ingress" not in self._cache:
            self._cache["ingress"] = self.compute.ingress_bytes()
        return self._cache["ingress"]
