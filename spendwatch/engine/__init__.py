"""The scale engine: flow records streamed into per-window aggregates, and features expressed as SQL.

- `flows.FlowReducer` takes batches of canonical flow records as they are read and keeps only what
  detection needs from them, per (resource/interface, peer, ports, protocol, action, ten-minute window), in
  an embedded DuckDB database that spills to disk past its memory limit. A scan of any size then hands
  detection a table orders of magnitude smaller than its input, with sums, counts, first and last seen.
- `sql` holds the same reduction and the per-window flow features as SQL text (DuckDB's dialect), and
  translates them with sqlglot for Athena (Trino) and BigQuery, so the heavy aggregation can run where the
  data already lives and only per-window rows travel back.

Nothing here is imported by `spendwatch --help`; DuckDB and sqlglot load only when a scan or `spendwatch sql`
needs them.
"""
