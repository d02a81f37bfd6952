"""A fake of Amazon Athena's query API (JSON 1.1, `X-Amz-Target: AmazonAthena.<Operation>`) that runs the SQL.

Operations: StartQueryExecution, GetQueryExecution, GetQueryResults, StopQueryExecution, driven through the
real boto3 client (`endpoint_url` on 127.0.0.1). A query is parsed as Athena (Trino) SQL with sqlglot, its
table names mapped to DuckDB tables the test loads, translated to DuckDB's dialect and run there when it is
started; the execution then answers QUEUED, RUNNING (one poll each, `polls`) and SUCCEEDED, or FAILED with the
parse, binder or "function not found" error as its StateChangeReason. A function sqlglot does not know as
Trino's (DuckDB's epoch_ns, say) fails as it would in Athena. Results page at most `page_max` rows, the first
page starting with the header row, NULL cells without VarCharValue, ColumnInfo typed as Athena types them.
With `results_s3` (a boto3 S3 client, e.g. on a moto server) and an OutputLocation, a query's result is also
written where Athena writes it, `<OutputLocation>/<QueryExecutionId>.csv`, as Athena writes it: a header row,
every value quoted (a quote doubled), NULL an unquoted empty field; GetQueryExecution names the file.
`UNLOAD (query) TO 's3://...' WITH (format = 'PARQUET'[, compression = 'GZIP' | 'SNAPPY'])` writes the query's
rows there instead, as Parquet files of at most `unload_file_rows` rows, and a data manifest listing them at
`<OutputLocation>/<QueryExecutionId>-manifest.csv` (Statistics.DataManifestLocation); it fails as Athena does
where the destination already holds an object, and, without `results_s3` or with `unload_denied`, as a write
that was denied.

`add_flow_logs(name, root)` loads the gzip text VPC flow logs under `root` as a table with the columns of AWS's
documented Athena DDL (versions 2-5), string columns as the text has them (`-` included), integer columns NULL
where the text has `-`, `region` from the S3 key where the record has none (the partition-projection DDL's
`region` partition), and the DDL's partition `date` (DATE) from the key's `YYYY/MM/DD`, the day AWS delivered
the file. Its DataScannedInBytes honours that partition as Athena prunes: a query with `"date" BETWEEN <day> AND
<day>` is billed for the files of those days only; without such a filter, for every file. `add_table(name,
arrow_table)` loads any other table (Security Lake's OCSF, CUR) as it is, nested columns included, billed its
Arrow size per query that reads it. Faults: a workgroup in `denied_workgroups` answers AccessDeniedException.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from .raw_http import Request, Response

# The documented DDL's columns (docs.aws.amazon.com/athena/latest/ug/vpc-flow-logs-create-table-statement.html)
DDL: list[tuple[str, str]] = [
    ("version", "INTEGER"), ("account_id", "VARCHAR"), ("interface_id", "VARCHAR"), ("srcaddr", "VARCHAR"),
    ("dstaddr", "VARCHAR"), ("srcport", "INTEGER"), ("dstport", "INTEGER"), ("protocol", "BIGINT"),
    ("packets", "BIGINT"), ("bytes", "BIGINT"), ("start", "BIGINT"), ("end", "BIGINT"), ("action", "VARCHAR"),
    ("log_status", "VARCHAR"), ("vpc_id", "VARCHAR"), ("subnet_id", "VARCHAR"), ("instance_id", "VARCHAR"),
    ("tcp_flags", "INTEGER"), ("type", "VARCHAR"), ("pkt_srcaddr", "VARCHAR"), ("pkt_dstaddr", "VARCHAR"),
    ("region", "VARCHAR"), ("az_id", "VARCHAR"), ("sublocation_type", "VARCHAR"), ("sublocation_id", "VARCHAR"),
    ("pkt_src_aws_service", "VARCHAR"), ("pkt_dst_aws_service", "VARCHAR"), ("flow_direction", "VARCHAR"),
    ("traffic_path", "INTEGER"),
]


@dataclass
class _Execution:
    query: str
    workgroup: str
    state: str = "QUEUED"
    polls: int = 0
    reason: str | None = None
    result: pa.Table | None = None
    scanned: int = 0
    output: str | None = None  # s3://bucket/key.csv
    manifest: str | None = None  # an UNLOAD's data manifest, s3://bucket/key-manifest.csv


@dataclass
class FakeAthena:
    denied_workgroups: set[str] = field(default_factory=set)
    page_max: int = 1000  # Athena's own limit; the client may ask for fewer
    polls: int = 1  # polls answering QUEUED, then as many answering RUNNING
    results_s3: Any = None  # a boto3 S3 client: result files are written with it (module doc)
    unload_file_rows: int = 1000  # rows per Parquet file an UNLOAD writes
    unload_denied: bool = False  # an UNLOAD fails as a write the results bucket refuses (a SELECT still runs)
    calls: list[str] = field(default_factory=list)  # operation names, in order
    signers: list[str] = field(default_factory=list)  # the access key id that signed each request, in order
    executions: dict[str, _Execution] = field(default_factory=dict)
    _tables: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (DuckDB table, bytes)
    _days: dict[str, dict[str, int]] = field(default_factory=dict)  # DuckDB table -> {date partition: bytes}
    _con: Any = field(default_factory=duckdb.connect)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=itertools.count)

    def add_flow_logs(self, name: str, root: Path) -> int:
        """Load the text flow logs under `root` (`.../vpcflowlogs/<region>/...log.gz`) as table `name`
        (`database.table` or `table`); returns the number of records."""
        files = sorted(str(p) for p in Path(root).rglob("*.log.gz") if "/vpcflowlogs/" in str(p))
        if not files:
            raise ValueError(f"no flow log files under {root}")
        local = f"t{len(self._tables)}"
        parts = []
        for path in files:  # every field as text, as the SerDe splits it; the header names the fields
            with gzip.open(path, "rt") as handle:
                names = handle.readline().split()
            part = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=" "),
                                  convert_options=pacsv.ConvertOptions(
                                      column_types={n: pa.string() for n in names}, strings_can_be_null=False))
            region, year, month, day = path.split("/vpcflowlogs/", 1)[1].split("/")[:4]
            part = part.append_column("sw_key_region", pa.array([region] * part.num_rows, pa.string()))
            parts.append(part.append_column("sw_key_date", pa.array([f"{year}-{month}-{day}"] * part.num_rows)))
        raw = pa.concat_tables(parts, promote_options="default")
        present = set(raw.column_names)
        columns = []
        for column, kind in DDL:
            text = column.replace("_", "-")
            value = f'"{text}"' if text in present else "CAST(NULL AS VARCHAR)"
            if column == "region":  # the partition: the S3 key's region where the record has none
                value = f"coalesce(nullif({value}, '-'), sw_key_region)"
            columns.append(f'{value} AS "{column}"' if kind == "VARCHAR"
                           else f'TRY_CAST({value} AS {kind}) AS "{column}"')
        columns.append('CAST(sw_key_date AS DATE) AS "date"')  # the DDL's partition: the key's delivery day
        self._con.register("sw_raw", raw)
        self._con.execute(f"CREATE TABLE {local} AS SELECT {', '.join(columns)} FROM sw_raw")
        self._con.unregister("sw_raw")
        self._tables[name.lower()] = (local, sum(Path(f).stat().st_size for f in files))
        days = self._days.setdefault(local, {})
        for path in files:
            year, month, day = path.split("/vpcflowlogs/", 1)[1].split("/")[1:4]
            days[f"{year}-{month}-{day}"] = days.get(f"{year}-{month}-{day}", 0) + Path(path).stat().st_size
        return int(self._con.execute(f"SELECT count(*) FROM {local}").fetchone()[0])

    def add_table(self, name: str, table: pa.Table, scanned_bytes: int | None = None) -> int:
        """Load an Arrow table as table `name` (`database.table` or `table`), nested structs included (as Glue
        declares an OCSF or CUR table); `scanned_bytes` is what each query reading it reports (default: its
        Arrow size). Returns its rows."""
        local = f"t{len(self._tables)}"
        cur = self._con.cursor()  # its own: the connection may hold an unfinished result
        cur.register("sw_raw", table)
        cur.execute(f"CREATE TABLE {local} AS SELECT * FROM sw_raw")
        cur.close()
        self._tables[name.lower()] = (local, table.nbytes if scanned_bytes is None else scanned_bytes)
        return table.num_rows

    @contextlib.contextmanager
    def results_in(self, endpoint: str, bucket: str) -> Iterator[str]:
        """While in the block, write result files (module doc) to `bucket`, created on the S3 at `endpoint` (a
        moto server); yields `s3://<bucket>/`, for an OutputLocation under it."""
        import boto3

        s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
        self.results_s3 = s3
        try:
            yield f"s3://{bucket}/"
        finally:
            self.results_s3 = None

    def sql(self, query: str) -> pa.Table:
        """A query in DuckDB's dialect over the loaded tables (by their DuckDB names: `local(name)`), for a test
        to derive one table from another."""
        return self._con.cursor().sql(query).to_arrow_table()

    def local(self, name: str) -> str:
        """The DuckDB table holding table `name`."""
        return self._tables[name.lower()][0]

    def __call__(self, req: Request) -> Response:
        target = req.headers.get("x-amz-target", "")
        operation = target.split(".", 1)[-1]
        body = json.loads(req.body or b"{}")
        credential = req.headers.get("authorization", "").partition("Credential=")[2]
        with self._lock:
            self.calls.append(operation)
            self.signers.append(credential.split("/", 1)[0])
            handler = {"StartQueryExecution": self._start, "GetQueryExecution": self._get,
                       "GetQueryResults": self._results, "StopQueryExecution": self._stop}.get(operation)
            if handler is None:
                return _error("UnknownOperationException", f"{target} is not an operation this fake knows")
            return handler(body)

    def _start(self, body: dict[str, Any]) -> Response:
        workgroup = body.get("WorkGroup") or "primary"
        if workgroup in self.denied_workgroups:
            return _error("AccessDeniedException", f"User: arn:aws:iam::123456789012:user/test is not authorized "
                                                   f"to perform: athena:StartQueryExecution on resource: "
                                                   f"arn:aws:athena:us-east-1:123456789012:workgroup/{workgroup}")
        query = str(body.get("QueryString") or "")
        if not query.strip():
            return _error("InvalidRequestException", "QueryString must not be empty")
        qid = f"{next(self._ids):08d}-fake-athena-query"
        execution = _Execution(query, workgroup)
        self.executions[qid] = execution
        location = str((body.get("ResultConfiguration") or {}).get("OutputLocation") or "")
        if location:
            execution.output = f"{location.rstrip('/')}/{qid}.csv"
        database = str((body.get("QueryExecutionContext") or {}).get("Database") or "default").lower()
        unload = _UNLOAD.match(query)
        try:
            sql, execution.scanned = self._translate(unload["query"] if unload else query, database)
            execution.result = self._con.cursor().sql(sql).to_arrow_table()
            if unload:
                execution.manifest = self._unload(qid, execution.result, unload, location)
                execution.result = execution.result.schema.empty_table()  # the rows went to S3
        except (sqlglot.errors.SqlglotError, duckdb.Error, _Failed) as exc:
            execution.reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            execution.result = None
        if execution.result is not None and execution.output and self.results_s3 is not None and not unload:
            bucket, _, key = execution.output.removeprefix("s3://").partition("/")
            self.results_s3.put_object(Bucket=bucket, Key=key, Body=athena_csv(execution.result))
        return _json({"QueryExecutionId": qid})

    def _unload(self, qid: str, result: pa.Table, unload: re.Match[str], location: str) -> str:
        """Write an UNLOAD's rows as Parquet files under its destination and the data manifest listing them in the
        query result location; the manifest's location. _Failed as Athena fails the query."""
        destination = unload["to"]
        properties = {k.lower(): v for k, v in re.findall(r"(\w+)\s*=\s*'([^']*)'", unload["properties"])}
        if properties.get("format", "").upper() != "PARQUET":
            raise _Failed(f"this fake writes UNLOAD's PARQUET format only, not {properties.get('format')!r}")
        compression = properties.get("compression", "gzip").lower()
        if compression not in ("gzip", "snappy"):
            raise _Failed(f"INVALID_TABLE_PROPERTY: Unsupported compression {compression!r} for PARQUET")
        if self.unload_denied or self.results_s3 is None or not location or not destination.startswith("s3://"):
            raise _Failed(f"HIVE_CANNOT_OPEN_SPLIT: Access denied when writing output to url: {destination}")
        bucket, _, prefix = destination.removeprefix("s3://").partition("/")
        if self.results_s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"):
            raise _Failed(f"HIVE_PATH_ALREADY_EXISTS: Target directory for table already exists: {destination}")
        written = []
        for i, start in enumerate(range(0, result.num_rows, self.unload_file_rows)):
            out = pa.BufferOutputStream()
            pq.write_table(result.slice(start, self.unload_file_rows), out, compression=compression)
            key = f"{prefix.rstrip('/')}/{qid}_{i:05d}".lstrip("/")
            self.results_s3.put_object(Bucket=bucket, Key=key, Body=out.getvalue().to_pybytes())
            written.append(f"s3://{bucket}/{key}")
        manifest = f"{location.rstrip('/')}/{qid}-manifest.csv"
        m_bucket, _, m_key = manifest.removeprefix("s3://").partition("/")
        self.results_s3.put_object(Bucket=m_bucket, Key=m_key, Body="".join(f"{w}\n" for w in written).encode())
        return manifest

    def _translate(self, query: str, database: str) -> tuple[str, int]:
        """The query in DuckDB's dialect over the loaded tables, and the bytes of the tables it reads."""
        tree = sqlglot.parse_one(query, read="athena")
        unknown = sorted({f.name for f in tree.find_all(exp.Anonymous)})
        if unknown:
            raise _Failed(f"FUNCTION_NOT_FOUND: line 1:1: Function '{unknown[0].lower()}' not registered")
        ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
        scanned = 0

        def swap(node: exp.Expression) -> exp.Expression:
            nonlocal scanned
            if not isinstance(node, exp.Table) or not node.name:
                return node
            name = node.name.lower()
            if not node.args.get("db") and name in ctes:
                return node
            full = f"{(node.text('db') or database).lower()}.{name}"
            local = self._tables.get(full) or (self._tables.get(name) if not node.args.get("db") else None)
            if local is None:
                raise _Failed(f"TABLE_NOT_FOUND: line 1:1: Table 'awsdatacatalog.{full}' does not exist")
            scanned += _pruned(tree, self._days[local[0]]) if local[0] in self._days else local[1]
            return exp.to_table(local[0], alias=node.alias or None)

        tree = tree.transform(swap)
        return tree.sql(dialect="duckdb"), scanned

    def _execution(self, body: dict[str, Any]) -> tuple[str, _Execution | None]:
        qid = str(body.get("QueryExecutionId") or "")
        return qid, self.executions.get(qid)

    def _get(self, body: dict[str, Any]) -> Response:
        qid, execution = self._execution(body)
        if execution is None:
            return _error("InvalidRequestException", f"QueryExecution {qid} was not found")
        if execution.state in ("QUEUED", "RUNNING"):
            execution.polls += 1
            if execution.polls > 2 * self.polls:
                execution.state = "FAILED" if execution.reason else "SUCCEEDED"
            elif execution.polls > self.polls:
                execution.state = "RUNNING"
        status: dict[str, Any] = {"State": execution.state, "SubmissionDateTime": 1.7e9}
        stats: dict[str, Any] = {"EngineExecutionTimeInMillis": 1, "TotalExecutionTimeInMillis": 2}
        if execution.state == "FAILED":
            status["StateChangeReason"] = execution.reason
            status["AthenaError"] = {"ErrorCategory": 2, "ErrorType": 1006, "Retryable": False,
                                     "ErrorMessage": execution.reason}
        if execution.state == "SUCCEEDED":
            stats["DataScannedInBytes"] = execution.scanned
            if execution.manifest:
                stats["DataManifestLocation"] = execution.manifest
        return _json({"QueryExecution": {
            "QueryExecutionId": qid, "Query": execution.query, "StatementType": "DML", "WorkGroup": execution.workgroup,
            "Status": status, "Statistics": stats,
            "ResultConfiguration": {"OutputLocation": execution.output} if execution.output else {}}})

    def _results(self, body: dict[str, Any]) -> Response:
        qid, execution = self._execution(body)
        if execution is None:
            return _error("InvalidRequestException", f"QueryExecution {qid} was not found")
        if execution.state != "SUCCEEDED" or execution.result is None:
            return _error("InvalidRequestException", f"Query has not yet finished. Current state: {execution.state}")
        size = min(int(body.get("MaxResults") or self.page_max), self.page_max)
        offset = int(body.get("NextToken") or 0)
        table = execution.result
        header = [{"Data": [{"VarCharValue": name} for name in table.column_names]}]
        total = table.num_rows + 1
        rows: list[dict[str, Any]] = []
        for i in range(offset, min(offset + size, total)):
            if i == 0:
                rows.extend(header)
                continue
            rows.append({"Data": [_datum(table.column(c)[i - 1].as_py()) for c in range(table.num_columns)]})
        answer: dict[str, Any] = {"UpdateCount": 0, "ResultSet": {"Rows": rows, "ResultSetMetadata": {
            "ColumnInfo": [_column(f) for f in table.schema]}}}
        if offset + size < total:
            answer["NextToken"] = str(offset + size)
        return _json(answer)

    def _stop(self, body: dict[str, Any]) -> Response:
        _, execution = self._execution(body)
        if execution is not None and execution.state in ("QUEUED", "RUNNING"):
            execution.state = "CANCELLED"
            execution.reason = "Query cancelled by user"
        return _json({})


def athena_csv(table: pa.Table) -> bytes:
    """A result as Athena writes its CSV file: header row, every value quoted, NULL an unquoted empty field,
    timestamps to the millisecond (`2026-11-20 00:00:00.000`)."""
    columns = [pc.strftime(c.cast(pa.timestamp("ms")), format="%Y-%m-%d %H:%M:%S")
               if pa.types.is_timestamp(c.type) else c for c in table.columns]
    out = pa.BufferOutputStream()
    pacsv.write_csv(pa.table(columns, names=table.column_names), out, pacsv.WriteOptions(quoting_style="all_valid"))
    return out.getvalue().to_pybytes()


def _pruned(tree: exp.Expression, days: dict[str, int]) -> int:
    """The bytes of the `date` partitions a query's `"date" BETWEEN a AND b` keeps (all of them without one)."""
    for between in tree.find_all(exp.Between):
        column = between.this
        if isinstance(column, exp.Column) and column.name.lower() == "date":
            low, high = (str(between.args[k].this.this if isinstance(between.args[k], exp.Cast)
                             else between.args[k].this) for k in ("low", "high"))
            return sum(size for day, size in days.items() if low <= day <= high)
    return sum(days.values())


_UNLOAD = re.compile(r"\s*UNLOAD\s*\((?P<query>.*)\)\s*TO\s*'(?P<to>[^']*)'\s*WITH\s*\((?P<properties>[^)]*)\)\s*$",
                     re.S | re.I)


class _Failed(Exception):
    """A query Athena accepts but fails (unknown function or table)."""


def _datum(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"VarCharValue": "true" if value else "false"}
    return {"VarCharValue": str(value)}


def _column(f: pa.Field) -> dict[str, Any]:
    t = f.type
    kind = ("bigint" if pa.types.is_int64(t) else "integer" if pa.types.is_integer(t) else
            "double" if pa.types.is_floating(t) else "boolean" if pa.types.is_boolean(t) else
            "timestamp" if pa.types.is_timestamp(t) else "decimal" if pa.types.is_decimal(t) else "varchar")
    return {"CatalogName": "hive", "SchemaName": "", "TableName": "", "Name": f.name, "Label": f.name, "Type": kind,
            "Precision": 19 if kind == "bigint" else 0, "Scale": 0, "Nullable": "UNKNOWN",
            "CaseSensitive": kind == "varchar"}


def _json(body: dict[str, Any]) -> Response:
    return Response(200, json.dumps(body).encode(), {"Content-Type": "application/x-amz-json-1.1"})


def _error(code: str, message: str) -> Response:
    return Response(400, json.dumps({"__type": code, "Message": message}).encode(),
                    {"Content-Type": "application/x-amz-json-1.1"})
