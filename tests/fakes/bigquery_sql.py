"""A fake of the BigQuery REST calls `Client.query_and_wait` makes that runs the SQL, over a flow-log sink table.

Beside `fakes.bigquery.FakeBigQuery` (which holds a billing export and checks, not runs, the connector's one
query), this one executes: `jobs.query` parses the query as BigQuery SQL with sqlglot, maps the table it holds to
a DuckDB table, translates to DuckDB's dialect and runs it; a function sqlglot does not know as BigQuery's, or a
DuckDB parse or binder error, answers 400 `invalidQuery` as BigQuery does. Rows page by `maxResults` (capped at
`page_rows`) through `jobs.getQueryResults`; `jobs.get` answers the job. Rows go out in the `f`/`v` form.

`add_flow_logs(root)` loads the GCP VPC flow log entries a Cloud Logging sink to Cloud Storage wrote under
`root` (JSON lines, `compute.googleapis.com/vpc_flows`) as the rows a BigQuery sink writes for the same
entries: `jsonPayload` a record (connection, bytes_sent and packets_sent as INT64, start_time and end_time as
TIMESTAMP, reporter, src_instance / dest_instance), `resource` a record with its labels, `timestamp`, `logName`.
totalBytesProcessed: the bytes of those entries' JSON, per query. `sharded=True` holds the entries as a sink
without partitioned tables writes them, one table a day (`<table>_YYYYMMDD`): only the wildcard `<table>_*` is
found, with `_TABLE_SUFFIX` the day of each entry's `timestamp`. Faults: projects in `denied` answer 403
`accessDenied` to jobs; `table_denied` answers 403 for the table.

`add_billing_export(root)` holds a detailed billing export table instead: the rows of the export's JSON lines
under `root` (what the simulator writes, plus any a test adds) as BigQuery holds them (BILLING_SCHEMA: nested
records, `credits` a repeated record, TIMESTAMP columns), with the `_PARTITIONTIME` pseudo-column set to the UTC
day of `usage_start_time` (ingestion-time partitioning gives the day the row was exported: the same day or a
little later). Named query parameters (`queryParameters` of the jobs.query body, scalar types) are substituted
into the query as typed literals before it runs; a parameter the query names but the body lacks answers 400.
Result columns of STRUCT, LIST and TIMESTAMP type go out as RECORD, REPEATED and TIMESTAMP fields (timestamps
as int64 microseconds, as the client asks with `useInt64Timestamp`).

`EXPORT DATA OPTIONS (uri = 'gs://B/P/*.parquet', format = 'PARQUET', ...) AS query` runs the query and writes its
rows into `storage` (a `fakes.gcs.FakeGcs`) as Parquet files of at most `export_rows` rows each (at least one file,
as BigQuery writes one for no rows), the `*` replaced by a twelve-digit number; the job has no result rows.
`compression` must be one BigQuery takes for Parquet (GZIP, SNAPPY, ZSTD, NONE). Faults: `export_denied` answers
403 as BigQuery does when it may not write to the bucket; a bucket `storage` does not hold answers 404; with
`overwrite` false, a destination that already holds objects answers 400.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from .bigquery import _error, _json
from .raw_http import Request, Response

_VM = pa.struct([("project_id", pa.string()), ("zone", pa.string()), ("region", pa.string()),
                 ("vm_name", pa.string())])
SINK_SCHEMA = pa.schema([
    ("logName", pa.string()), ("insertId", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
    ("resource", pa.struct([("type", pa.string()), ("labels", pa.struct([
        ("project_id", pa.string()), ("location", pa.string()), ("subnetwork_name", pa.string())]))])),
    ("jsonPayload", pa.struct([
        ("connection", pa.struct([("src_ip", pa.string()), ("dest_ip", pa.string()), ("src_port", pa.int64()),
                                  ("dest_port", pa.int64()), ("protocol", pa.int64())])),
        ("bytes_sent", pa.int64()), ("packets_sent", pa.int64()),
        ("start_time", pa.timestamp("us", tz="UTC")), ("end_time", pa.timestamp("us", tz="UTC")),
        ("reporter", pa.string()), ("src_instance", _VM), ("dest_instance", _VM)])),
])


_CREDIT = pa.struct([("name", pa.string()), ("amount", pa.float64()), ("full_name", pa.string()),
                     ("id", pa.string()), ("type", pa.string())])
# The detailed usage cost export's columns that the simulator writes (the real table has more: labels, invoice,
# price, ...), with BigQuery's types.
BILLING_SCHEMA = pa.schema([
    ("billing_account_id", pa.string()),
    ("service", pa.struct([("id", pa.string()), ("description", pa.string())])),
    ("sku", pa.struct([("id", pa.string()), ("description", pa.string())])),
    ("usage_start_time", pa.timestamp("us", tz="UTC")), ("usage_end_time", pa.timestamp("us", tz="UTC")),
    ("project", pa.struct([("id", pa.string()), ("name", pa.string())])),
    ("resource", pa.struct([("name", pa.string()), ("global_name", pa.string())])),
    ("location", pa.struct([("location", pa.string()), ("country", pa.string()), ("region", pa.string()),
                            ("zone", pa.string())])),
    ("cost", pa.float64()), ("currency", pa.string()), ("currency_conversion_rate", pa.float64()),
    ("usage", pa.struct([("amount", pa.float64()), ("unit", pa.string())])),
    ("credits", pa.list_(_CREDIT)), ("cost_type", pa.string()),
    ("_PARTITIONTIME", pa.timestamp("us", tz="UTC")),
])


def _time(text: Any) -> datetime | None:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass
class FakeBigQuerySql:
    table: str  # project.dataset.table
    denied: set[str] = field(default_factory=set)
    table_denied: bool = False
    page_rows: int = 100_000
    sharded: bool = False
    storage: Any = None  # a fakes.gcs.FakeGcs that EXPORT DATA writes to
    export_denied: bool = False
    export_rows: int = 100_000
    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)  # the SQL of each jobs.query, as sent
    _jobs: dict[str, tuple[pa.Table, int]] = field(default_factory=dict)
    _bytes: int = 0
    _con: Any = field(default_factory=duckdb.connect)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=itertools.count)

    def add_flow_logs(self, root: Path) -> int:
        """Load the flow log entries under `root` as the table's rows; returns their number."""
        rows = []
        size = 0
        for path in sorted(Path(root).rglob("*.json")):
            if "compute.googleapis.com/vpc_flows" not in path.as_posix():
                continue
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                size += len(line)
                entry = json.loads(line)
                body = entry.get("jsonPayload") or {}
                conn = body.get("connection") or {}
                rows.append({
                    "logName": entry.get("logName"), "insertId": entry.get("insertId"),
                    "timestamp": _time(entry.get("timestamp")), "resource": entry.get("resource"),
                    "jsonPayload": {
                        "connection": {"src_ip": conn.get("src_ip"), "dest_ip": conn.get("dest_ip"),
                                       "src_port": _int(conn.get("src_port")),
                                       "dest_port": _int(conn.get("dest_port")),
                                       "protocol": _int(conn.get("protocol"))},
                        "bytes_sent": _int(body.get("bytes_sent")), "packets_sent": _int(body.get("packets_sent")),
                        "start_time": _time(body.get("start_time")), "end_time": _time(body.get("end_time")),
                        "reporter": body.get("reporter"), "src_instance": body.get("src_instance"),
                        "dest_instance": body.get("dest_instance")}})
        if not rows:
            raise ValueError(f"no GCP VPC flow log entries under {root}")
        self._con.register("sink_rows", pa.Table.from_pylist(rows, schema=SINK_SCHEMA))
        suffix = ", strftime(\"timestamp\", '%Y%m%d') AS _TABLE_SUFFIX" if self.sharded else ""
        self._con.execute(f"CREATE OR REPLACE TABLE sink AS SELECT *{suffix} FROM sink_rows")
        self._con.unregister("sink_rows")
        self._bytes = size
        return len(rows)

    def add_billing_export(self, root: Path) -> int:
        """Load the billing export rows of the JSON lines files under `root` as the table's rows (in place of
        anything held before); returns their number."""
        rows = []
        size = 0
        for path in sorted(Path(root).rglob("*.json")):
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                size += len(line)
                row = json.loads(line)
                start = _time(row.get("usage_start_time"))
                rows.append({**row, "usage_start_time": start, "usage_end_time": _time(row.get("usage_end_time")),
                             "_PARTITIONTIME": start.replace(hour=0, minute=0, second=0, microsecond=0)
                             if start else None})
        if not rows:
            raise ValueError(f"no billing export rows under {root}")
        self._con.execute("SET TimeZone = 'UTC'")  # BigQuery truncates timestamps in UTC unless told otherwise
        self._con.register("billing_rows", pa.Table.from_pylist(rows, schema=BILLING_SCHEMA))
        self._con.execute("CREATE OR REPLACE TABLE sink AS SELECT * FROM billing_rows")
        self._con.unregister("billing_rows")
        self._bytes = size
        return len(rows)

    def __call__(self, req: Request) -> Response:
        parts = req.path.strip("/").split("/")
        with self._lock:
            self.calls.append((req.method, req.path, dict(req.query)))
        if parts[:3] != ["bigquery", "v2", "projects"] or len(parts) < 5:
            return _error(404, "notFound", f"no route {req.method} {req.path}")
        project = parts[3]
        if project in self.denied:
            return _error(403, "accessDenied", f"Access Denied: Project {project}: User does not have "
                                               f"bigquery.jobs.create permission in project {project}.")
        if req.method == "POST" and parts[4] == "queries" and len(parts) == 5:
            return self._query(project, json.loads(req.body or b"{}"))
        if req.method == "GET" and len(parts) == 6 and parts[4] in ("queries", "jobs") and parts[5] in self._jobs:
            return self._job(project, parts[4], parts[5], req.query)
        return _error(404, "notFound", f"no route {req.method} {req.path}")

    def _query(self, project: str, body: dict[str, Any]) -> Response:
        sql = str(body.get("query") or "")
        with self._lock:
            self.queries.append(sql)
        if body.get("useLegacySql", True):
            return _error(400, "invalidQuery", "legacy SQL: this fake runs standard SQL only")
        try:
            tree = sqlglot.parse_one(sql, read="bigquery")
        except sqlglot.errors.SqlglotError as exc:
            return _error(400, "invalidQuery", f"Syntax error: {str(exc).splitlines()[0]}")
        try:
            tree = _bind(tree, body.get("queryParameters") or [])
        except (KeyError, ValueError) as exc:
            return _error(400, "invalidQuery", str(exc).strip("'\""))
        export = tree if isinstance(tree, exp.Export) else None
        if export is not None:
            tree = export.this
        unknown = sorted({f.name for f in tree.find_all(exp.Anonymous)})
        if unknown:
            return _error(400, "invalidQuery", f"Function not found: {unknown[0]} at [1:1]")
        ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
        held = self.table.split(".")
        if self.sharded:
            held[-1] += "_*"
        reads = False

        def swap(node: exp.Expression) -> exp.Expression:
            nonlocal reads
            if not isinstance(node, exp.Table) or (not node.args.get("db") and node.name in ctes):
                return node
            name = [p for p in (node.text("catalog"), node.text("db"), node.name) if p]
            if name not in (held, held[1:]):
                raise LookupError(".".join(name))
            reads = True
            return exp.to_table("sink", alias=node.alias or None)

        try:
            tree = tree.transform(swap)
        except LookupError as exc:
            return _error(404, "notFound", f"Not found: Table {exc} was not found in location US")
        if reads and self.table_denied:
            return _error(403, "accessDenied", f"Access Denied: Table {self.table}: User does not have permission "
                                               "to query table (bigquery.tables.getData).")
        try:
            with self._lock:
                result = self._con.cursor().sql(tree.sql(dialect="duckdb")).to_arrow_table()
        except duckdb.Error as exc:
            return _error(400, "invalidQuery", str(exc).splitlines()[0])
        if export is not None:
            refused = self._export(export, result)
            if refused is not None:
                return refused
            result = pa.table({})
        job = f"job_{next(self._ids)}"
        with self._lock:
            self._jobs[job] = (result, self._bytes if reads else 0)
        answer = self._page(project, job, 0, int(body.get("maxResults") or self.page_rows))
        answer["kind"] = "bigquery#queryResponse"
        return _json(answer)

    def _export(self, export: exp.Export, result: pa.Table) -> Response | None:
        """Write `result` where the EXPORT DATA statement says (module doc); an error response, or None."""
        import io

        import pyarrow.parquet as pq

        options: dict[str, Any] = {}
        for prop in export.args["options"].expressions:
            if isinstance(prop, exp.FileFormatProperty):
                options["format"] = prop.this.name
            else:
                options[prop.name.lower()] = prop.args["value"].to_py()
        uri = str(options.get("uri") or "")
        if not uri.startswith("gs://") or uri.count("*") != 1:
            return _error(400, "invalidQuery", f"Invalid value: uri {uri!r} must be a gs:// URI with one wildcard")
        if str(options.get("format") or "").upper() != "PARQUET":
            return _error(400, "invalidQuery", f"this fake exports PARQUET only, not {options.get('format')!r}")
        codec = str(options.get("compression") or "SNAPPY").upper()
        if codec not in ("GZIP", "SNAPPY", "ZSTD", "NONE"):
            return _error(400, "invalidQuery", f"Invalid value: compression {codec} is not supported for PARQUET")
        if self.export_denied:
            return _error(403, "accessDenied", "Access Denied: BigQuery BigQuery: Permission denied while writing "
                                               "data.")
        bucket, _, pattern = uri.removeprefix("gs://").partition("/")
        if self.storage is None or bucket not in self.storage.buckets:
            return _error(404, "notFound", f"Not found: bucket {bucket}")
        before, _, after = pattern.partition("*")
        if not options.get("overwrite") and any(n.startswith(before) for n in self.storage.buckets[bucket]):
            return _error(400, "invalidQuery", f"Invalid value: the destination {uri} is not empty")
        for number, start in enumerate(range(0, max(result.num_rows, 1), self.export_rows)):
            out = io.BytesIO()
            pq.write_table(result.slice(start, self.export_rows), out, compression=codec.lower())
            self.storage.put(bucket, f"{before}{number:012d}{after}", out.getvalue())
        return None

    def _job(self, project: str, kind: str, job: str, query: dict[str, str]) -> Response:
        _, scanned = self._jobs[job]
        if kind == "jobs":
            return _json({"kind": "bigquery#job", "id": f"{project}:US.{job}", "status": {"state": "DONE"},
                          "jobReference": {"projectId": project, "jobId": job, "location": "US"},
                          "configuration": {"jobType": "QUERY", "query": {"query": "", "useLegacySql": False}},
                          "statistics": {"query": {"totalBytesProcessed": str(scanned)}}})
        answer = self._page(project, job, int(query.get("pageToken") or 0),
                            int(query.get("maxResults") or self.page_rows))
        answer["kind"] = "bigquery#getQueryResultsResponse"
        return _json(answer)

    def _page(self, project: str, job: str, start: int, size: int) -> dict[str, Any]:
        result, scanned = self._jobs[job]
        size = max(1, min(size, self.page_rows))
        part = result.slice(start, size)
        rows = [{"f": [{"v": _cell(v)} for v in row.values()]} for row in part.to_pylist()]
        answer: dict[str, Any] = {
            "jobReference": {"projectId": project, "jobId": job, "location": "US"}, "jobComplete": True,
            "totalRows": str(result.num_rows), "totalBytesProcessed": str(scanned), "cacheHit": False,
            "schema": {"fields": [_field(f) for f in result.schema]}, "rows": rows}
        if start + size < result.num_rows:
            answer["pageToken"] = str(start + size)
        return answer


def _bind(tree: exp.Expr, params: list[dict[str, Any]]) -> exp.Expr:
    """The query with each named parameter `@name` replaced by its value as a typed literal."""
    values: dict[str, exp.Expression] = {}
    for param in params:
        kind = str((param.get("parameterType") or {}).get("type") or "")
        if kind in ("ARRAY", "STRUCT", "RANGE", ""):
            raise ValueError(f"query parameter {param.get('name')!r}: type {kind or 'missing'} is not supported "
                             "by this fake")
        value = (param.get("parameterValue") or {}).get("value")
        literal = exp.null() if value is None else exp.Literal.string(str(value))
        values[str(param.get("name")).lower()] = exp.cast(literal, exp.DataType.build(kind, dialect="bigquery"))

    def swap(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Parameter):
            return node
        name = node.name.lower()
        if name not in values:
            raise KeyError(f"Query parameter '{node.name}' not found at [1:1]")
        return values[name].copy()

    return tree.transform(swap)


def _cell(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):  # a STRUCT: a RECORD's cells in field order
        return {"f": [{"v": _cell(v)} for v in value.values()]}
    if isinstance(value, list):  # a LIST: a REPEATED field's values
        return [{"v": _cell(v)} for v in value]
    if isinstance(value, datetime):  # TIMESTAMP as int64 microseconds since the epoch
        since = (value if value.tzinfo else value.replace(tzinfo=UTC)) - datetime(1970, 1, 1, tzinfo=UTC)
        return str(since // timedelta(microseconds=1))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _field(f: pa.Field) -> dict[str, Any]:
    t = f.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {**_field(pa.field(f.name, t.value_type)), "mode": "REPEATED"}
    if pa.types.is_struct(t):
        return {"name": f.name, "type": "RECORD", "mode": "NULLABLE", "fields": [_field(t.field(i))
                                                                                  for i in range(t.num_fields)]}
    if pa.types.is_timestamp(t):
        return {"name": f.name, "type": "TIMESTAMP", "mode": "NULLABLE"}
    kind = ("INTEGER" if pa.types.is_integer(t) else "FLOAT" if pa.types.is_floating(t) else
            "BOOLEAN" if pa.types.is_boolean(t) else "STRING")
    return {"name": f.name, "type": kind, "mode": "NULLABLE"}
