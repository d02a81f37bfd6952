"""The flow aggregate summarised in SQL for detection: row-level rows for the rules, features per window.

`summarise` runs on the DuckDB table `agg` that `FlowEngine` fills (one row per interface, peer, server port,
protocol, action, direction and ten-minute window, possibly split over several batches: every step sums).
It reproduces, statement by statement, what `models.features.Features` derives from flow records:

- the resource: the record's own, else the instance that launched with the interface (the files connector's
  join), else the inventory's owner of the interface, then of the source, then of the destination address;
- the remote end: the source for ingress, the destination for egress and, where the direction is unknown,
  the public end (or the destination); an address is public as `models.net.is_public` says (dotted quads in
  SQL, once per distinct address; anything else through `is_public` itself);
- the client side: the resource's local port is unknown, or >= 1024 and above the remote's, or >= 32768.

Two passes over `agg`: one groups what has a public or DNS-named peer per (resource, peer, ten-minute
interval) into `sw_grouped` (the features' input, `sw_peers`) and lists the (resource, peer) pairs the rules
read; the second takes the rows of those pairs. The per-peer tables hold integers only: a resource is its
`rid` in `sw_rid` (negative where no resource is known, per cloud and account), an address its `aid` in
`sw_addr`, numbered in the addresses' order so that the smallest id is the smallest address. Names come back
only in the features' few rows: with the names and the sums as DuckDB makes them (HUGEINT), the two per-peer
tables of 50 million records took about 1.2 GB, twice the engine's memory limit, and the summary spent half its
time spilling them. Row order mirrors the pandas path (the aggregate ordered by window,
cloud, account, interface), which is what decides the order of resource-windows for the isolation forest
and, between peers with exactly the same bytes, which is the top peer.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .flows import BASIC_FEATURES, LAYOUT, WINDOW_S, FlowSummary

if TYPE_CHECKING:
    from spendwatch.records import Tables

log = logging.getLogger(__name__)

PERSISTENCE_INTERVALS = 6  # as models.features: the top peer's presence over the last hour of intervals
# A row's place in the aggregate ordered by (interval, cloud, account, interface, resource, src, ...), as the
# pandas path reads it: interval * 2**24 + rank of (cloud, account, interface, resource), then the source address.
_RANK_BITS = 24

# Public-address test for dotted quads (models.net.is_public): four octets of up to three digits, none above 255,
# not in RFC 1918, loopback, "this network", CGNAT, link-local, multicast or reserved space. Run once per distinct
# address (`sw_addr`); everything else (IPv6, an octet above 255, odd text) is left null there and decided by
# is_public itself.
# The octets are computed once, as columns: a macro's arguments are expressions, repeated wherever the body
# names them (with split_part in them, the test took 2.0 s instead of 0.75 s on 2.6 million addresses).
_OCTET = "(25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])"
_ADDRESSES = rf"""
CREATE OR REPLACE TEMP MACRO sw_v4_public(a, b) AS NOT (
    a = 0 OR a = 10 OR (a = 100 AND b BETWEEN 64 AND 127) OR a = 127 OR (a = 169 AND b = 254)
    OR (a = 172 AND b BETWEEN 16 AND 31) OR (a = 192 AND b = 168) OR a >= 224);
CREATE OR REPLACE TABLE sw_addr AS
SELECT address, CAST(row_number() OVER (ORDER BY address) AS INTEGER) AS aid,
       CASE WHEN quad THEN sw_v4_public(a, b) END AS public, address IN (SELECT address FROM sw_answers) AS answered
FROM (SELECT address, regexp_full_match(address, '{_OCTET}(\.{_OCTET}){{3}}') AS quad,
             TRY_CAST(split_part(address, '.', 1) AS INTEGER) AS a,
             TRY_CAST(split_part(address, '.', 2) AS INTEGER) AS b
      FROM (SELECT src AS address FROM agg UNION SELECT dst FROM agg)
      WHERE address IS NOT NULL);
"""

# Every aggregate row seen from its resource's side (Features.flows). {rid} resolves the resource (its id in
# sw_rid); {joins} add the private-address lookups where some interface is not known; {where} narrows the rows
# of `agg` (g), before the joins (in the joins' WHERE DuckDB applied it after them, to every row).
_SIDED = """
SELECT a.*, r.resource_e, {rid} AS rid, r.irank,
       CASE WHEN inbound THEN src_aid ELSE dst_aid END AS remote,
       CASE WHEN inbound THEN src_port ELSE dst_port END AS remote_port,
       CASE WHEN inbound THEN dst_port ELSE src_port END AS local_port,
       CASE WHEN inbound THEN src_pub ELSE dst_pub END AS remote_public,
       CASE WHEN inbound THEN src_answered ELSE dst_answered END AS remote_answered
FROM (
  SELECT *, ingress OR (NOT ingress AND NOT egress AND src_pub AND NOT dst_pub) AS inbound
  FROM (SELECT g.*, coalesce(lower(g.direction) = 'ingress', false) AS ingress,
               coalesce(lower(g.direction) = 'egress', false) AS egress,
               coalesce(sa.public, false) AS src_pub, coalesce(da.public, false) AS dst_pub,
               sa.aid AS src_aid, da.aid AS dst_aid,
               coalesce(sa.answered, false) AS src_answered, coalesce(da.answered, false) AS dst_answered
        FROM (SELECT * FROM agg g {where}) g
        LEFT JOIN sw_addr sa ON sa.address = g.src LEFT JOIN sw_addr da ON da.address = g.dst)
) a
JOIN sw_resolved r ON a.cloud IS NOT DISTINCT FROM r.cloud AND a.account IS NOT DISTINCT FROM r.account
  AND a.resource IS NOT DISTINCT FROM r.resource AND a.interface IS NOT DISTINCT FROM r.interface
{joins}
"""

_CLIENT = ("(local_port IS NULL OR (local_port >= 1024 AND (coalesce(local_port > remote_port, false) "
           "OR local_port >= 32768)))")

# Per (resource, remote, ten-minute interval), for remotes that are public or named by a DNS answer (in any
# account; `named`: in the resource's own). Ids and sums as 4- and 8-byte integers (module doc).
_GROUPED = f"""
CREATE TABLE sw_grouped AS
SELECT g.*, n.aid IS NOT NULL AS named
FROM (
  SELECT rid, remote AS aid, CAST("window" AS INTEGER) AS iv, bool_or(remote_public) AS remote_public,
         CAST(sum(CASE WHEN inbound THEN coalesce(bytes, 0) ELSE 0 END) AS BIGINT) AS bin,
         CAST(sum(CASE WHEN inbound THEN 0 ELSE coalesce(bytes, 0) END) AS BIGINT) AS bout,
         CAST(sum(coalesce(packets, 0)) AS BIGINT) AS pk, CAST(sum(coalesce(long_bytes, 0)) AS BIGINT) AS blong,
         CAST(sum(CASE WHEN client THEN coalesce(bytes, 0) ELSE 0 END) AS BIGINT) AS bclient,
         CAST(sum(CASE WHEN client THEN coalesce(long_bytes, 0) ELSE 0 END) AS BIGINT) AS blclient,
         CAST(count(*) FILTER (WHERE inbound) AS INTEGER) AS n_in, bool_or(client) AS client,
         min(CAST("window" AS BIGINT) * {2 ** _RANK_BITS} + irank) AS okey, min(src_aid) AS osrc
  FROM (SELECT *, {_CLIENT} AS client FROM ({{sided}}))
  WHERE remote_public OR remote_answered
  GROUP BY rid, remote, "window"
) g
JOIN sw_rid r ON r.rid = g.rid
LEFT JOIN sw_named n ON n.cid = r.cid AND n.aid = g.aid
"""

# The features' input: public peers of known resources (b, the bytes either way, is bin + bout: `inbound` is
# never null), with the client bytes of peers no DNS answer in the account named.
_PEERS = """
CREATE OR REPLACE VIEW sw_peers AS
SELECT rid, aid AS remote, iv, bin, bout, bin + bout AS b, pk, blong, n_in, okey, osrc,
       CASE WHEN named THEN 0 ELSE bclient END AS bun, CASE WHEN named THEN 0 ELSE blclient END AS bunlong
FROM sw_grouped
WHERE remote_public AND rid > 0
"""

_PAIRS = """
CREATE TABLE sw_pairs AS
SELECT DISTINCT g.rid, g.aid, a.address
FROM sw_grouped g JOIN sw_addr a ON a.aid = g.aid
WHERE (g.remote_public AND g.client) OR g.named
"""

# The rows of the pairs (and of the latest record), one row per aggregate key, in the pandas path's order.
_ROWS = """
SELECT cloud, account, region, resource_e AS resource, interface, src, dst, src_port, dst_port, protocol, action,
       direction, "window", min(start_ns) AS start_ns, max(end_ns) AS end_ns,
       CAST(sum(packets) AS BIGINT) AS packets, CAST(sum(bytes) AS BIGINT) AS bytes,
       CAST(sum(records) AS BIGINT) AS records, CAST(sum(long_bytes) AS BIGINT) AS long_bytes
FROM ({sided}) s
WHERE EXISTS (SELECT 1 FROM sw_pairs p WHERE p.rid = s.rid AND p.aid = s.remote)
   OR ({latest})
GROUP BY ALL
ORDER BY "window", cloud, account, interface, resource, src, dst, src_port, dst_port, protocol, action, direction,
         region
"""

# Per resource and window: the sums straight from sw_peers (a few thousand groups), and apart from them the one
# thing that needs a row per (resource, peer, window), the peer count and the top peer, grouped with two
# aggregates only: the same grouping with every sum (as `pp` did) holds a hash table several times wider,
# which spills to disk at 512 MB (50 M records: 5.7 s against 2.1 s for the hour, identical results). The top
# peer's persistence reads only the sw_peers rows of top peers.
_WINDOWS = """
WITH tops AS MATERIALIZED (
  SELECT rid, h, count(*) AS peers, max(b) AS top_b, arg_max(remote, (b, okey, remote)) AS top
  FROM (SELECT rid, remote, iv // {k} AS h, sum(b) AS b, min(okey) AS okey
        FROM sw_peers GROUP BY rid, remote, iv // {k})
  GROUP BY rid, h
), win AS MATERIALIZED (
  SELECT s.*, t.peers, t.top_b, t.top
  FROM (SELECT rid, iv // {k} AS h, sum(bin) AS bin, sum(bout) AS bout, sum(b) AS b,
               sum(pk) AS pk, sum(blong) AS blong, sum(bun) AS bun, sum(bunlong) AS bunlong, min(okey) AS okey,
               min(osrc) AS osrc
        FROM sw_peers GROUP BY rid, iv // {k}) s
  JOIN tops t ON t.rid = s.rid AND t.h = s.h
), seen AS (
  SELECT w.rid, w.h, count(*) AS seen
  FROM win w JOIN (SELECT * FROM sw_peers WHERE remote IN (SELECT top FROM win)) p
    ON p.rid = w.rid AND p.remote = w.top AND p.iv BETWEEN (w.h + 1) * {k} - {intervals} AND (w.h + 1) * {k} - 1
  GROUP BY w.rid, w.h
)
SELECT r.cloud, r.account, r.resource, CAST(w.h AS BIGINT) AS h,
       CAST(w.bin AS DOUBLE) AS bytes_in, CAST(w.bout AS DOUBLE) AS bytes_out,
       CAST(w.b AS DOUBLE) / CAST(greatest(w.pk, 1) AS DOUBLE) AS bytes_per_packet,
       CAST(w.peers AS DOUBLE) AS peers,
       CASE WHEN w.b > 0 THEN CAST(w.top_b AS DOUBLE) / CAST(w.b AS DOUBLE) ELSE 0.0 END AS top_peer_share,
       CASE WHEN w.b > 0 THEN CAST(w.blong AS DOUBLE) / CAST(w.b AS DOUBLE) ELSE 0.0 END AS long_lived_share,
       CASE WHEN w.b > 0 THEN CAST(w.bun AS DOUBLE) / CAST(w.b AS DOUBLE) ELSE 0.0 END AS unnamed_share,
       CAST(w.bunlong AS DOUBLE) AS unnamed_long_lived_bytes,
       CAST(coalesce(s.seen, 0) AS DOUBLE) / {intervals} AS top_peer_persistence
FROM win w JOIN sw_rid r ON r.rid = w.rid LEFT JOIN seen s ON s.rid = w.rid AND s.h = w.h
ORDER BY w.okey, w.osrc, r.resource, w.h
"""

EXTENDED = (*BASIC_FEATURES, "long_lived_share", "unnamed_share", "unnamed_long_lived_bytes", "top_peer_persistence")


def _run(con: Any, sql: str) -> Any:
    """Execute `sql` (statements or a query whose rows are fetched whole), logging its duration at debug level."""
    started = time.perf_counter()
    result = con.execute(sql).fetchall()
    log.debug("%.2f s  %s", time.perf_counter() - started, " ".join(sql.split())[:100])
    return result


def _arrow(con: Any, sql: str) -> pa.Table:
    """A query's rows as an Arrow table, logging its duration at debug level."""
    started = time.perf_counter()
    table = con.sql(sql).to_arrow_table()
    log.debug("%.2f s  %s", time.perf_counter() - started, " ".join(sql.split())[:100])
    return table


def _other_addresses(con: Any) -> None:
    """Decide with `models.net.is_public` the addresses the dotted-quad test left open (IPv6, odd text)."""
    from spendwatch.models.net import is_public

    others = _arrow(con, "SELECT address FROM sw_addr WHERE public IS NULL")["address"].to_pylist()
    if not others:
        return
    con.register("sw_other", pa.table({"address": pa.array(others, pa.string()),
                                       "public": pa.array(is_public(others), pa.bool_())}))
    _run(con, "UPDATE sw_addr SET public = o.public FROM sw_other o WHERE sw_addr.address = o.address")
    con.unregister("sw_other")


def _frame(table: pa.Table | pd.DataFrame, columns: list[str]) -> pa.Table:
    """A small lookup frame as an Arrow table of strings, for DuckDB to join."""
    if isinstance(table, pa.Table):
        return table
    return pa.table({c: pa.array(table[c].astype(object).where(table[c].notna(), None).tolist(), pa.string())
                     for c in columns})


def summarise(con: Any, tables: Tables, owners: dict[str, str], *, records: int) -> FlowSummary:
    """Build `sw_peers` and the rule rows from `agg` (module doc); the features per window come on demand."""
    from spendwatch.models.features import Features

    features = Features(tables)
    con.register("sw_owners", pa.table({"interface": pa.array(list(owners), pa.string()),
                                        "owner": pa.array(list(owners.values()), pa.string())}))
    interfaces = features._address_map("interfaces")  # the lookups Features itself fills resources with
    private_ips = features._address_map("private_ips")
    con.register("sw_imap", _frame(interfaces, ["cloud", "account", "key", "resource"]))
    con.register("sw_pmap", _frame(private_ips, ["cloud", "account", "key", "resource"]))
    answers = features.dns_answers[["cloud", "account", "address"]].drop_duplicates()
    con.register("sw_answers", _frame(answers, ["cloud", "account", "address"]))
    for statement in _ADDRESSES.split(";")[:-1]:
        _run(con, statement)
    _other_addresses(con)
    _run(con, """
        CREATE OR REPLACE TABLE sw_resolved AS
        SELECT e.cloud, e.account, e.resource, e.interface, coalesce(e.resource, o.owner) AS resource_e,
               coalesce(e.resource, o.owner, im.resource) AS resource_i,
               dense_rank() OVER (ORDER BY e.cloud, e.account, e.interface, e.resource) AS irank
        FROM (SELECT DISTINCT cloud, account, resource, interface FROM agg) e
        LEFT JOIN sw_owners o ON o.interface = e.interface
        LEFT JOIN sw_imap im ON im.cloud = e.cloud AND im.account = e.account AND im.key = e.interface
    """)
    unresolved = _run(con, "SELECT count(*) FROM sw_resolved WHERE resource_i IS NULL")[0][0]
    lookups = bool(unresolved and len(private_ips))
    # The resources, numbered: positive where known, negative for "none known" in a cloud and account.
    pmap = "UNION SELECT cloud, account, resource FROM sw_pmap" if lookups else ""
    _run(con, f"""
        CREATE OR REPLACE TABLE sw_rid AS
        SELECT cloud, account, resource, CAST(dense_rank() OVER (ORDER BY cloud, account) AS INTEGER) AS cid,
               CAST(CASE WHEN resource IS NULL THEN -1 ELSE 1 END
                    * row_number() OVER (ORDER BY cloud, account, resource) AS INTEGER) AS rid
        FROM (SELECT DISTINCT cloud, account, resource_i AS resource FROM sw_resolved {pmap})
    """)
    _run(con, """
        ALTER TABLE sw_resolved ADD COLUMN rid INTEGER;
        UPDATE sw_resolved SET rid = r.rid FROM sw_rid r
        WHERE r.cloud IS NOT DISTINCT FROM sw_resolved.cloud AND r.account IS NOT DISTINCT FROM sw_resolved.account
          AND r.resource IS NOT DISTINCT FROM sw_resolved.resource_i
    """)
    _run(con, """
        CREATE OR REPLACE TABLE sw_named AS
        SELECT DISTINCT c.cid, a.aid
        FROM sw_answers n JOIN (SELECT DISTINCT cloud, account, cid FROM sw_rid) c
          ON c.cloud = n.cloud AND c.account = n.account
        JOIN sw_addr a ON a.address = n.address
    """)
    if lookups:
        _run(con, """
            CREATE OR REPLACE TABLE sw_pmap_rid AS
            SELECT p.cloud, p.account, p.key, r.rid FROM sw_pmap p
            JOIN sw_rid r ON r.cloud = p.cloud AND r.account = p.account AND r.resource = p.resource
        """)
        rid = "coalesce(ps.rid, pd.rid, r.rid)"
        joins = ("LEFT JOIN sw_pmap_rid ps ON r.resource_i IS NULL AND ps.cloud = a.cloud "
                 "AND ps.account = a.account AND ps.key = a.src\n"
                 "LEFT JOIN sw_pmap_rid pd ON r.resource_i IS NULL AND pd.cloud = a.cloud "
                 "AND pd.account = a.account AND pd.key = a.dst")
    else:
        rid, joins = "r.rid", ""
    _run(con, "DROP VIEW IF EXISTS sw_peers")
    for name in ("sw_grouped", "sw_pairs"):
        _run(con, f"DROP TABLE IF EXISTS {name}")
    _run(con, _GROUPED.format(sided=_SIDED.format(rid=rid, joins=joins, where="")))
    _run(con, _PEERS)
    _run(con, _PAIRS)
    aggregates = _run(con, "SELECT count(*) FROM agg")[0][0]
    latest = _run(con, f"SELECT {', '.join(_quote(c) for c in LAYOUT)} FROM agg ORDER BY end_ns DESC, "
                       f"{', '.join(_quote(c) for c in LAYOUT)} LIMIT 1")
    # Only rows whose source or destination is one of the pairs' remotes can belong to a pair: the rest is
    # left out before any per-row work. The latest row's own key is kept too (module doc of flows.py).
    narrow = ("WHERE g.src IN (SELECT address FROM sw_pairs) OR g.dst IN (SELECT address FROM sw_pairs)"
              + (f" OR {_match(latest[0], prefix='g.')}" if latest else ""))
    rows = _arrow(con, _ROWS.format(sided=_SIDED.format(rid=rid, joins=joins, where=narrow),
                                    latest=_match(latest[0], prefix="s.") if latest else "false"))
    return FlowSummary(rows=_canonical(rows), records=records, aggregates=aggregates, compute=_Windows(con))


_KEY_OF_ROW = ("window", "cloud", "account", "region", "resource", "interface", "src", "dst", "src_port",
               "dst_port", "protocol", "action", "direction")  # the window first: the cheapest test to fail


def _quote(name: str) -> str:
    return f'"{name}"'


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _match(row: tuple[Any, ...], prefix: str = "") -> str:
    """SQL that is true on rows with the aggregate key of `row` (a tuple in LAYOUT order)."""
    values = dict(zip(LAYOUT, row, strict=True))
    return "(" + " AND ".join(f"{prefix}{_quote(c)} IS NOT DISTINCT FROM {_literal(values[c])}"
                              for c in _KEY_OF_ROW) + ")"


def _canonical(rows: pa.Table) -> pd.DataFrame:
    """The rule rows as a conformed canonical flows frame (plus records, long_bytes and window)."""
    from spendwatch.records import conform

    ts = pa.timestamp("ns", tz="UTC")
    out = {c: rows[c] for c in rows.column_names if c not in ("start_ns", "end_ns")}
    out["start"] = pc.cast(rows["start_ns"], ts)
    out["end"] = pc.cast(rows["end_ns"], ts)
    out["long_bytes"] = pc.fill_null(rows["long_bytes"], 0)
    frame = pa.table(out).to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow", na_value=np.nan),
                                                  pa.large_string(): pd.StringDtype("pyarrow", na_value=np.nan),
                                                  pa.int64(): pd.Int64Dtype()}.get)
    return conform("flows", frame)


class _Windows:
    """The per-window flow features, in SQL over `sw_peers`, as `models.features._window_flows` returns them."""

    def __init__(self, con: Any) -> None:
        self.con = con

    def window_flows(self, seconds: int) -> pd.DataFrame:
        from spendwatch.models.features import KEY

        if seconds % WINDOW_S:
            raise ValueError(f"window of {seconds} s is not a whole number of {WINDOW_S}-second intervals")
        got = _arrow(self.con, _WINDOWS.format(k=seconds // WINDOW_S, intervals=PERSISTENCE_INTERVALS))
        if not got.num_rows:
            return pd.DataFrame()
        part = pd.DataFrame({name: got[name].to_numpy() for name in EXTENDED})
        part.index = pd.MultiIndex.from_arrays(
            [got["cloud"].to_numpy(zero_copy_only=False), got["account"].to_numpy(zero_copy_only=False),
             got["resource"].to_numpy(zero_copy_only=False),
             pd.to_datetime(got["h"].to_numpy() * seconds * 1_000_000_000, utc=True)],
            names=[*KEY, "window"])
        return part

    def ingress_bytes(self) -> pd.Series:
        from spendwatch.models.features import KEY

        got = _arrow(self.con, """
            SELECT r.cloud, r.account, r.resource, p.bytes
            FROM (SELECT rid, CAST(sum(bin) AS DOUBLE) AS bytes FROM sw_peers GROUP BY rid HAVING sum(n_in) > 0) p
            JOIN sw_rid r ON r.rid = p.rid
            ORDER BY r.cloud, r.account, r.resource
        """)
        if not got.num_rows:
            return pd.Series(dtype="float64")
        index = pd.MultiIndex.from_arrays([got[c].to_numpy(zero_copy_only=False) for c in KEY], names=KEY)
        return pd.Series(got["bytes"].to_numpy(), index=index, name="bytes")
