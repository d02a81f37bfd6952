"""Stream flow records into the per-window aggregates detection needs, in bounded memory.

A flow log holds one record per capture window and 5-tuple; most of what distinguishes one record from
the next is the client's ephemeral port, which no detector reads. `FlowReducer` takes batches of canonical
`flows` records (Arrow tables, from any connector and any thread) and keeps, per

    cloud, account, region, resource, interface, src, dst, src_port, dst_port, protocol, action, direction,
    window (the ten-minute interval, from the Unix epoch, in which the record started)

the first start, the last end, summed packets and bytes, the number of records (`records`) and the bytes of
records that lasted `long_lived_s` or more (`long_bytes`). Before grouping, the port of the side that is the
client of the connection is set to null: the port that is >= 1024 and above the other (or >= 32768) while the
other is not, both being known. Which is exactly what the rules read: a resource is "the client" when its
local port looks ephemeral relative to the remote's, and a null local port counts as a client's, so every
rule, feature and window of ten minutes or a multiple of it (hours) sees the same sums, counts, first and
last seen, distinct peers and client-side flags as on the records; rules count `records`, not rows.
Connector-specific extra columns (vpc, subnet, tcp_flags, ...) are dropped: no detector reads them.

Each batch is reduced at once in the calling thread (DuckDB releases the GIL, so the reader threads keep
parsing), and the partial aggregates are merged whenever they outnumber the rows merged so far. Memory
therefore follows the size of the aggregate, not the number of records: it grows with distinct
(interface, peer, server port, window) combinations, which is what detection is handed at the end.
"""

from __future__ import annotations

import tempfile
import threading
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from spendwatch.records import FLOWS

WINDOW_S = 600  # VPC flow logs' default aggregation interval; hours are whole multiples of it
LONG_LIVED_S = 300
_NS = 1_000_000_000

# Canonical flow columns that identify an aggregate (start, end, packets and bytes are what is summed).
KEYS = ("cloud", "account", "region", "resource", "interface", "src", "dst", "src_port", "dst_port", "protocol",
        "action", "direction")
STRINGS = tuple(c.name for c in FLOWS.columns if c.kind == "str")
INTS = ("src_port", "dst_port", "protocol", "packets", "bytes")
_LAYOUT = [*KEYS, "window", "start_ns", "end_ns", "packets", "bytes", "records", "long_bytes"]
_SCHEMA = pa.schema([(c, pa.large_string() if c in STRINGS else pa.int64()) for c in _LAYOUT])

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

MERGE_SQL = """
SELECT {keys}, "window", min(start_ns) AS start_ns, max(end_ns) AS end_ns,
       CAST(sum(packets) AS BIGINT) AS packets, CAST(sum(bytes) AS BIGINT) AS bytes,
       CAST(sum(records) AS BIGINT) AS records, CAST(sum(long_bytes) AS BIGINT) AS long_bytes
FROM {source}
GROUP BY ALL
""".strip()

_PORTS = {
    "src_port": "CASE WHEN src_client AND NOT dst_client THEN NULL ELSE src_port END AS src_port",
    "dst_port": "CASE WHEN dst_client AND NOT src_client THEN NULL ELSE dst_port END AS dst_port",
}


def reduce_sql(source: str, *, keys: tuple[str, ...] | list[str] = KEYS, window_s: int = WINDOW_S,
               long_lived_s: int = LONG_LIVED_S) -> str:
    """The reduction of flow records in `source` (canonical columns, times as integer start_ns/end_ns) to
    one row per `keys` and window, as SQL (DuckDB's dialect; `spendwatch.engine.sql` translates it)."""
    select = ", ".join(_PORTS.get(k, k) for k in keys)
    group = ", ".join(str(i) for i in range(1, len(keys) + 2))  # ordinals: Trino has no GROUP BY ALL
    return REDUCE_SQL.format(select=select, group=group, source=source, window_ns=window_s * _NS,
                             long_ns=long_lived_s * _NS,
                             src_client=_CLIENT.format(a="src_port", b="dst_port"),
                             dst_client=_CLIENT.format(a="dst_port", b="src_port"))


def _constants(batch: pa.Table) -> dict[str, str | None]:
    """String key columns with one value (or only nulls) in this batch: grouping by them costs time for
    nothing (a flow log file has one account and region, v2 records no instance or direction)."""
    out: dict[str, str | None] = {}
    for name in KEYS:
        if name not in STRINGS:
            continue
        col = batch[name]
        if col.null_count == len(col):
            out[name] = None
        elif col.null_count == 0:
            mm = pc.min_max(col)
            if mm["min"] == mm["max"]:
                out[name] = mm["min"].as_py()
    return out


def _input(table: pa.Table) -> pa.Table:
    """The canonical columns the reduction reads, typed alike whatever connector made them."""
    n = table.num_rows
    cols: dict[str, Any] = {}
    for name in STRINGS:
        present = name in table.column_names
        cols[name] = pc.cast(table[name], pa.large_string()) if present else pa.nulls(n, pa.large_string())
    for name in INTS:
        cols[name] = pc.cast(table[name], pa.int64()) if name in table.column_names else pa.nulls(n, pa.int64())
    for name in ("start", "end"):
        col = table[name]
        if pa.types.is_timestamp(col.type):
            col = pc.cast(pc.cast(col, pa.timestamp("ns", tz=col.type.tz)), pa.int64())
        cols[f"{name}_ns"] = col
    return pa.table(cols)


class FlowReducer:
    """Per-window flow aggregates from record batches; `add` from any thread, `result` once at the end.

    Each batch is reduced where it was read; the partial aggregates are merged (re-aggregated together)
    whenever the rows waiting to be merged outnumber those already merged, so merging costs a constant
    factor and the partials never hold more than about twice the final aggregate. `threads` and
    `memory_limit` are DuckDB's; DuckDB spills a merge larger than its limit to `spill_dir`.
    """

    def __init__(self, *, window_s: int = WINDOW_S, long_lived_s: int = LONG_LIVED_S,
                 memory_limit: str = "512MB", threads: int | None = None, spill_dir: str | None = None,
                 merge_rows: int = 500_000) -> None:
        import duckdb

        self.window_s = window_s
        self.long_lived_s = long_lived_s
        self.merge_rows = merge_rows
        self._spill = tempfile.TemporaryDirectory(prefix="spendwatch-flows-") if spill_dir is None else None
        self._con = duckdb.connect(config={"memory_limit": memory_limit,
                                           "temp_directory": spill_dir or self._spill.name,  # type: ignore[union-attr]
                                           "preserve_insertion_order": False,
                                           **({"threads": threads} if threads else {})})
        self._lock = threading.Lock()
        self._local = threading.local()
        self._merged: pa.Table | None = None  # the aggregate so far
        self._pending: list[pa.Table] = []  # partial aggregates not yet merged into it
        self._pending_rows = 0
        self.records = 0  # records taken in
        self._closed = False

    def _cursor(self) -> Any:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self._con.cursor()
        return cur

    def add(self, table: pa.Table) -> None:
        """Reduce one batch of canonical flow records and fold it into the aggregate."""
        if table.num_rows == 0:
            return
        cur = self._cursor()
        batch = _input(table)
        consts = _constants(batch)
        keys = [k for k in KEYS if k not in consts]
        cur.register("batch", batch.drop_columns(list(consts)))
        try:
            partial = cur.sql(reduce_sql("batch", keys=keys, window_s=self.window_s,
                                         long_lived_s=self.long_lived_s)).to_arrow_table()
        finally:
            cur.unregister("batch")
        for name, value in consts.items():
            partial = partial.append_column(name, pa.array([value] * partial.num_rows, pa.large_string()))
        partial = partial.select(_LAYOUT).cast(_SCHEMA)
        with self._lock:
            self.records += table.num_rows
            self._pending.append(partial)
            self._pending_rows += partial.num_rows
            merged = self._merged.num_rows if self._merged is not None else 0
            if self._pending_rows > max(merged, self.merge_rows):
                self._merge(cur)

    def _merge(self, cur: Any) -> None:
        parts = ([self._merged] if self._merged is not None else []) + self._pending
        both = pa.concat_tables(parts)
        cur.register("merging", both)
        try:
            self._merged = cur.sql(MERGE_SQL.format(keys=", ".join(KEYS), source="merging")).to_arrow_table().select(
                _LAYOUT).cast(_SCHEMA)
        finally:
            cur.unregister("merging")
        self._pending, self._pending_rows = [], 0

    def result(self) -> pa.Table | None:
        """The aggregate as canonical flows (plus `records`, `long_bytes`, `window`), in a stable order; None
        when nothing was added. The reducer is closed afterwards."""
        with self._lock:
            if self._merged is None and not self._pending:
                self.close()
                return None
            cur = self._cursor()
            self._merge(cur)
            cur.register("agg", self._merged)
            table = cur.sql(
                "SELECT * FROM agg ORDER BY \"window\", cloud, account, interface, resource, src, dst, src_port, "
                "dst_port, protocol, action, direction, region").to_arrow_table()
            cur.unregister("agg")
            self._merged = None
        self.close()
        return canonical(table)

    def close(self) -> None:
        """Free DuckDB and the spill directory (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._con.close()
        if self._spill is not None:
            self._spill.cleanup()
            self._spill = None


def canonical(agg: pa.Table) -> pa.Table:
    """Aggregate rows in the canonical flows shape: times back to UTC timestamps, counts as int64."""
    ts = pa.timestamp("ns", tz="UTC")
    cols: dict[str, Any] = {}
    for col in FLOWS.columns:
        if col.name in ("start", "end"):
            cols[col.name] = pc.cast(agg[f"{col.name}_ns"], pa.int64()).cast(ts)
        elif col.kind == "str":
            cols[col.name] = pc.cast(agg[col.name], pa.large_string())
        else:
            cols[col.name] = pc.cast(agg[col.name], pa.int64())
    cols["records"] = pc.cast(agg["records"], pa.int64())
    cols["long_bytes"] = pc.cast(pc.fill_null(agg["long_bytes"], 0), pa.int64())
    cols["window"] = pc.cast(agg["window"], pa.int64())
    return pa.table(cols)
