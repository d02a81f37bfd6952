"""Run the push-down query where the flow logs live (Athena, BigQuery) and bring back the aggregate rows.

`WarehouseFlows` is what `pipeline.scan_directory(flows_from=...)` calls once the other sources are read:
it asks the warehouse for the number of records in the window and the latest end (`sql.totals_sql`, one
distributed aggregate), then for the aggregate rows the summary reads (`sql.pushdown_sql`: only rows with a
public or DNS-named end, and the latest ones), and adds them to the FlowEngine. Detection then runs as on a
local scan. Only aggregate rows travel back, never records.

- Athena (boto3): start_query_execution, get_query_execution polled with back-off under an overall timeout
  (a query still running then is stopped). The totals run first: the rows query takes their latest end as a
  literal. With an output location (and `unload` on, the default), the rows query is an UNLOAD: Athena
  writes the rows as gzip Parquet files under a new prefix of the output location (`spendwatch-unload/<uuid>/`:
  UNLOAD refuses a prefix that holds anything), and the data manifest that GetQueryExecution names lists them;
  each file is fetched (S3 GetObject, into a temporary file), which the FlowEngine reads itself (DuckDB's
  Parquet reader: `FlowEngine.insert_parquet`, one INSERT a file, no row through Python). The
  bench's 50 million records give 4.2 million rows: about 91 MB of Parquet instead of a 741 MB CSV file.
  An UNLOAD that fails (an engine without it, a write the bucket refuses) or whose files cannot be read before
  any row was handed over is asked again as a plain query, and the report says why; a read that breaks off
  after rows arrived is a gap. Otherwise the aggregate rows are streamed from the CSV file Athena writes to the
  output location (S3 GetObject, which GetQueryResults needs anyway; parsed by pyarrow in blocks: NULL is an
  unquoted empty field, an empty string a quoted one) into the FlowEngine as they arrive, so memory does not
  follow the rows: GetQueryResults gives at most 1,000 rows a call, one Python value per cell, which for the 4.2
  million rows of the bench's 50 million records is 4,209 calls, and 39 s of conversion here against 1.9 s to
  parse the file (bench/flows_scale.py, `pushdown`). Where the file cannot be read (no output location,
  a denied or missing object) the rows come through get_query_results, paged (the first page starts with the
  header row; a cell without VarCharValue is NULL; values converted by the result's column types), and the
  report says why. Bytes scanned: the executions' DataScannedInBytes.
- BigQuery (google-cloud-bigquery): Client.query_and_wait; the aggregate rows go into the FlowEngine page by
  page as the client turns them into Arrow (RowIterator.to_arrow_iterable); bytes: total_bytes_processed.
  Without the Storage Read API, the client turns every value of a REST page into a Python object: 165 s for the
  4.2 million rows of 50 M records, 19 values a row. So the rows query packs each row into one CSV line
  (`sql.packed_row`), which pyarrow parses here (`unpack_rows`): one value a row for the client.
  With an export location (`export_uri`, gs://bucket/prefix), the rows query is an EXPORT DATA instead: BigQuery
  writes the rows as gzip Parquet files under a new prefix of it (`spendwatch-export/<uuid>/*.parquet`), which are
  listed and fetched through google-cloud-storage (into a temporary file each), which the FlowEngine reads
  itself, as Athena's UNLOAD files; the client converts nothing. An EXPORT DATA that fails (no write
  permission on the bucket, a location BigQuery refuses) or whose files cannot be read before any row was handed
  over is asked again as the packed query, and the report says why; a read that breaks off after rows arrived is
  a gap.

A query that fails, is denied or times out is a coverage gap naming the engine, the table and the error, and
the scan goes on without flows (never an all clear). The SDKs are imported only here, only when used.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .flows import LAYOUT, SCHEMA
from .sql import NAMED_LIMIT, Partition, named_private, pushdown_sql, totals_sql, translate

if TYPE_CHECKING:
    from datetime import datetime

    from spendwatch.connectors.aws.config import AwsConfig
    from spendwatch.connectors.gcp.config import GcpConfig
    from spendwatch.records import Tables
    from spendwatch.report import RunReport

    from .flows import FlowEngine

ATHENA_PAGE_MAX = 1000  # GetQueryResults' MaxResults limit
UNLOAD_PREFIX = "spendwatch-unload"  # under the output location: one new prefix per UNLOAD (it must be empty)
UNLOAD_BATCH_ROWS = 262_144  # rows of an UNLOAD file handed to the engine at a time
EXPORT_PREFIX = "spendwatch-export"  # under a BigQuery export location: one new prefix per EXPORT DATA


class WarehouseError(Exception):
    """A query that could not be run or read; the message names the engine, the table and the cause."""


class QueryFailed(WarehouseError):
    """The warehouse ran a query and answered FAILED or CANCELLED (not a timeout, not a denied call)."""


class _NotUnloaded(Exception):
    """UNLOAD's files could not be read before any row was handed over: the rows are asked for again."""


class _NotExported(Exception):
    """An EXPORT DATA ran but its files could not be read before any row was handed over: ask again (packed)."""


Sink = Callable[[pa.Table], None]  # takes aggregate rows (flows.SCHEMA) as they arrive
# takes a Parquet file of aggregate rows whole (its path, and what names it in an error), returns the rows it
# stored; ValueError where it cannot (FlowEngine.insert_parquet)
FileSink = Callable[[str, str], int]


@dataclass
class Fetched:
    """What one warehouse read gave: aggregate rows in `flows.SCHEMA` (empty where they went to a sink as they
    arrived), the records they reduce (all records of the window, not only the rows kept), bytes the warehouse
    scanned (None where it did not say), the ids of its queries, how many rows came back and how."""

    rows: pa.Table
    records: int
    bytes_scanned: int | None
    queries: list[str] = field(default_factory=list)
    returned: int = 0
    via: str = ""


def _empty() -> pa.Table:
    return pa.table({c: pa.array([], SCHEMA.field(c).type) for c in LAYOUT}, schema=SCHEMA)


@dataclass(frozen=True)
class AthenaOptions:
    database: str | None = None
    catalog: str | None = None
    workgroup: str | None = None
    output_location: str | None = None  # s3://bucket/prefix/ (needed unless the workgroup sets one)
    region: str | None = None  # default: the usual AWS environment
    endpoint_url: str | None = None  # default: the usual AWS environment (AWS_ENDPOINT_URL_ATHENA)
    s3_endpoint_url: str | None = None  # where the result files are read; default: the usual AWS environment
    poll_s: float = 0.5  # first wait between polls; doubles up to max_poll_s
    max_poll_s: float = 5.0
    timeout_s: float = 600.0  # overall, per read
    page_rows: int = ATHENA_PAGE_MAX
    unload: bool = True  # the flow rows as Parquet through UNLOAD under output_location (else the CSV result)

    @classmethod
    def from_aws(cls, config: AwsConfig) -> AthenaOptions:
        """The options of `config.athena` (`[aws.athena]`), region and endpoint defaulting to `[aws]`'s."""
        athena = config.athena
        if athena is None:
            raise ValueError("the [aws] configuration has no [aws.athena] table")
        return cls(database=athena.database, catalog=athena.catalog, workgroup=athena.workgroup,
                   output_location=str(athena.output_location) if athena.output_location else None,
                   region=athena.region or config.home_region,
                   endpoint_url=athena.endpoint_url or config.endpoint_url, s3_endpoint_url=config.endpoint_url,
                   timeout_s=athena.query_timeout_s, unload=athena.unload)


@dataclass(frozen=True)
class BigQueryOptions:
    project: str | None = None  # where the job runs (default: the table's project)
    location: str | None = None
    endpoint: str | None = None  # tests: a local fake (anonymous credentials then)
    page_rows: int | None = None  # rows per page of results (default: the client's)
    timeout_s: float = 600.0
    export_uri: str | None = None  # gs://bucket/prefix: the flow rows as Parquet through EXPORT DATA under it
    storage_endpoint: str | None = None  # tests: a local Cloud Storage fake (anonymous credentials then)


def to_schema(table: pa.Table, where: str) -> pa.Table:
    """`table` as `flows.SCHEMA` (columns by name, cast); WarehouseError naming a missing column."""
    missing = [c for c in LAYOUT if c not in table.column_names]
    if missing:
        raise WarehouseError(f"{where}: the result has no column {', '.join(missing)} "
                             f"(columns: {', '.join(table.column_names)})")
    return pa.table([table[c].cast(SCHEMA.field(c).type) for c in LAYOUT], schema=SCHEMA)


# ---- Athena ----------------------------------------------------------------------------------------------------

_ATHENA_INTS = {"tinyint", "smallint", "integer", "int", "bigint"}
_ATHENA_FLOATS = {"double", "float", "real", "decimal"}


def _athena_value(kind: str, text: str | None) -> Any:
    """One result cell (VarCharValue, None when absent) as a Python value of its column's type."""
    if text is None:
        return None
    if kind in _ATHENA_INTS:
        return int(text)
    if kind in _ATHENA_FLOATS:
        return float(text)
    if kind == "boolean":
        return text.lower() == "true"
    return text


class Athena:
    """Queries through boto3's Athena client, and result files through its S3 client (each built here from the
    usual AWS environment and the options unless given)."""

    def __init__(self, options: AthenaOptions, client: Any = None, s3: Any = None) -> None:
        self.options = options
        if client is None:
            import boto3

            client = boto3.client("athena", region_name=options.region, endpoint_url=options.endpoint_url)
        self.client = client
        self._s3 = s3
        self.via = ""  # how the last `query` read its rows
        self.sleep: Callable[[float], None] = time.sleep

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client("s3", region_name=self.options.region, endpoint_url=self.options.s3_endpoint_url)
        return self._s3

    def start(self, sql: str) -> str:
        o = self.options
        kwargs: dict[str, Any] = {"QueryString": sql}
        context = {k: v for k, v in (("Database", o.database), ("Catalog", o.catalog)) if v}
        if context:
            kwargs["QueryExecutionContext"] = context
        if o.workgroup:
            kwargs["WorkGroup"] = o.workgroup
        if o.output_location:
            kwargs["ResultConfiguration"] = {"OutputLocation": o.output_location}
        return str(self.client.start_query_execution(**kwargs)["QueryExecutionId"])

    def wait(self, query_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Poll until every query has ended; their QueryExecution by id. WarehouseError on FAILED or
        CANCELLED (with StateChangeReason and the id), or past the timeout (the queries still running are
        stopped, so they bill no further)."""
        o = self.options
        deadline = time.monotonic() + o.timeout_s
        done: dict[str, dict[str, Any]] = {}
        delay = o.poll_s
        while True:
            for qid in query_ids:
                if qid in done:
                    continue
                execution = self.client.get_query_execution(QueryExecutionId=qid)["QueryExecution"]
                status = execution.get("Status") or {}
                state = status.get("State")
                if state == "SUCCEEDED":
                    done[qid] = execution
                elif state in ("FAILED", "CANCELLED"):
                    reason = status.get("StateChangeReason") or (status.get("AthenaError") or {}).get(
                        "ErrorMessage") or "no reason given"
                    self._stop(q for q in query_ids if q not in done and q != qid)
                    raise QueryFailed(f"query {qid} {state}: {reason}")
            if len(done) == len(query_ids):
                return done
            if time.monotonic() + delay > deadline:
                self._stop(q for q in query_ids if q not in done)
                raise WarehouseError(f"queries {', '.join(q for q in query_ids if q not in done)} still running "
                                     f"after {o.timeout_s:g} s: stopped")
            self.sleep(delay)
            delay = min(delay * 2, o.max_poll_s)

    def _stop(self, query_ids: Iterable[str]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        for qid in query_ids:  # best effort: the error that ended the read is what the report says
            with contextlib.suppress(BotoCoreError, ClientError):
                self.client.stop_query_execution(QueryExecutionId=qid)

    def results(self, query_id: str) -> pa.Table:
        """Every row of a query's result, paged, as an Arrow table typed by the result's column types."""
        return pa.concat_tables(self._pages(query_id))

    def _pages(self, query_id: str, rows_per_table: int = 100_000) -> Iterator[pa.Table]:
        """A query's result through GetQueryResults, as Arrow tables of about `rows_per_table` rows (at least
        one table, for the column names and types)."""
        kinds: list[str] = []
        names: list[str] = []
        columns: list[list[Any]] = []
        token: str | None = None
        first = True
        while True:
            kwargs: dict[str, Any] = {"QueryExecutionId": query_id, "MaxResults": self.options.page_rows}
            if token:
                kwargs["NextToken"] = token
            page = self.client.get_query_results(**kwargs)
            result = page.get("ResultSet") or {}
            if first:
                info = (result.get("ResultSetMetadata") or {}).get("ColumnInfo") or []
                names = [c["Name"] for c in info]
                kinds = [str(c.get("Type") or "varchar").lower() for c in info]
                columns = [[] for _ in names]
            rows = result.get("Rows") or []
            if first and rows:
                rows = rows[1:]  # the header row: column labels, not data
            first = False
            for row in rows:
                data = row.get("Data") or []
                if len(data) != len(names):
                    raise WarehouseError(f"query {query_id}: a result row has {len(data)} cells, not {len(names)}")
                for i, cell in enumerate(data):
                    columns[i].append(_athena_value(kinds[i], cell.get("VarCharValue")))
            token = page.get("NextToken")
            if not token or (columns and len(columns[0]) >= rows_per_table):
                arrays = [pa.array(values, _arrow_type(kind)) for values, kind in zip(columns, kinds, strict=True)]
                yield pa.table(arrays, names=names)
                columns = [[] for _ in names]
            if not token:
                return

    def _result_file(self, execution: dict[str, Any]) -> tuple[str, Any, str]:
        """The result file a finished query wrote: its location, its body (an open stream; None where it cannot
        be read) and, then, why not."""
        location = str((execution.get("ResultConfiguration") or {}).get("OutputLocation") or "")
        if not (location.startswith("s3://") and location.endswith(".csv")):
            return location, None, "no result file named"
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return location, self._object(location), ""
        except (ClientError, BotoCoreError) as exc:
            return location, None, f"{location} could not be read: {_boto_reason(exc)}"

    def stream(self, query_id: str, execution: dict[str, Any], sink: Sink) -> tuple[int, str]:
        """Hand the aggregate rows of a finished query to `sink` as they arrive, from the result file where it
        can be read, else through GetQueryResults; the rows handed over and how they came."""
        location, body, why = self._result_file(execution)
        if body is not None:
            try:
                return _csv_rows(body, f"query {query_id}: result file {location}", sink), f"from {location}"
            finally:
                body.close()
        returned = 0
        for page in self._pages(query_id):
            rows = to_schema(page, f"query {query_id}")
            if rows.num_rows:
                sink(rows)
                returned += rows.num_rows
        return returned, f"through GetQueryResults ({why})"

    def query(self, sql: str) -> tuple[pa.Table, int | None, str]:
        """One query (Athena's dialect) run to its end: its rows, the bytes it scanned and its id. The rows come
        from the result file where it can be read (typed by the result's ColumnInfo, which one GetQueryResults
        call of one row gives), else through GetQueryResults' pages; `via` says which, and why."""
        query_id = self.start(sql)
        executions = self.wait([query_id])
        location, body, why = self._result_file(executions[query_id])
        if body is None:
            self.via = f"through GetQueryResults ({why})"
            return self.results(query_id), _athena_scanned(executions.values()), query_id
        try:
            page = self.client.get_query_results(QueryExecutionId=query_id, MaxResults=1)
            info = ((page.get("ResultSet") or {}).get("ResultSetMetadata") or {}).get("ColumnInfo") or []
            types = {c["Name"]: _arrow_type(str(c.get("Type") or "varchar").lower()) for c in info}
            table = _csv_table(body, f"query {query_id}: result file {location}", types)
        finally:
            body.close()
        self.via = f"from {location}"
        return table, _athena_scanned(executions.values()), query_id

    def fetch(self, source: str, table: str, start_s: int, end_s: int, named: Iterable[str],
              partition: Partition = "source", sink: Sink | None = None, files: FileSink | None = None) -> Fetched:
        """The totals, then the aggregate rows (needs the totals' latest end), read from Athena; `partition`:
        the day partition both queries filter on (sql.DayPartition). With `sink`, the rows go to it as they
        arrive and `rows` is empty; with `files` too, UNLOAD's files go to it whole (`unloaded`)."""
        totals_id = self.start(translate(totals_sql(source, table=table, start_s=start_s, end_s=end_s,
                                                    partition=partition), "athena"))
        executions = self.wait([totals_id])
        totals = self.results(totals_id).to_pylist()
        records = int(totals[0]["records"] or 0) if totals else 0
        latest = totals[0]["latest_end_ns"] if totals else None
        scanned = _athena_scanned(executions.values())
        if not records:
            return Fetched(_empty(), 0, scanned, [totals_id])
        rows_sql = translate(pushdown_sql(source, table=table, start_s=start_s, end_s=end_s, named=named,
                                          latest_end_ns=latest, partition=partition), "athena")
        kept: list[pa.Table] = []
        queries, why = [totals_id], ""
        destination = self._unload_destination()
        if destination:
            unload_id = self.start(unload_sql(rows_sql, destination))
            queries.append(unload_id)
            try:
                executions.update(self.wait([unload_id]))
                returned, via = self.unloaded(unload_id, executions[unload_id], destination, sink or kept.append,
                                              files)
                return Fetched(pa.concat_tables([_empty(), *kept]), records, _athena_scanned(executions.values()),
                               queries, returned, via)
            except (QueryFailed, _NotUnloaded) as exc:  # asked again as a plain query, whose CSV Athena writes
                why = f" (UNLOAD {exc})" if isinstance(exc, _NotUnloaded) else f" (UNLOAD failed: {exc})"
        rows_id = self.start(rows_sql)
        queries.append(rows_id)
        executions.update(self.wait([rows_id]))
        returned, via = self.stream(rows_id, executions[rows_id], sink or kept.append)
        return Fetched(pa.concat_tables([_empty(), *kept]), records, _athena_scanned(executions.values()), queries,
                       returned, via + why)

    def _unload_destination(self) -> str:
        """A new, empty prefix under the output location for one UNLOAD, or "" where UNLOAD is not to be used (off,
        or no output location known here: a workgroup's own is not visible before a query runs; or one with a
        quote, which the statement's string literal could not hold)."""
        location = self.options.output_location or ""
        if not (self.options.unload and location.startswith("s3://")) or "'" in location:
            return ""
        import uuid

        return f"{location.rstrip('/')}/{UNLOAD_PREFIX}/{uuid.uuid4().hex}/"

    def _object(self, uri: str) -> Any:
        """The body of the S3 object at `uri` (s3://bucket/key), an open stream."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"]

    def unloaded(self, query_id: str, execution: dict[str, Any], destination: str, sink: Sink,
                 files: FileSink | None = None) -> tuple[int, str]:
        """Hand the rows an UNLOAD query wrote (Parquet files, listed by the data manifest that
        GetQueryExecution names) over file by file: whole to `files` where given, else batch by batch to `sink`;
        the rows handed over and how they came. _NotUnloaded where the files cannot be read before any row was
        handed over (the caller asks again); WarehouseError where a read breaks off after some were."""
        import shutil
        import tempfile

        from botocore.exceptions import BotoCoreError, ClientError

        manifest = str((execution.get("Statistics") or {}).get("DataManifestLocation") or "")
        if not manifest.startswith("s3://"):
            raise _NotUnloaded(f"query {query_id} named no data manifest")
        handed = _Handover(sink, files)
        where = manifest
        try:
            body = self._object(manifest)
            try:
                uris = [line.strip() for line in body.read().decode("utf-8").splitlines() if line.strip()]
            finally:
                body.close()
            for uri in uris:
                where = uri
                if not uri.startswith(destination):
                    raise WarehouseError(f"the manifest {manifest} names {uri}, outside {destination}")
                with tempfile.NamedTemporaryFile(prefix="spendwatch-unload-", suffix=".parquet") as spill:
                    body = self._object(uri)
                    try:
                        shutil.copyfileobj(body, spill, 8 << 20)
                    finally:
                        body.close()
                    handed.file(spill, f"query {query_id}: {uri}")
        except (ClientError, BotoCoreError, pa.ArrowException, OSError, UnicodeDecodeError, WarehouseError) as exc:
            reason = _boto_reason(exc) if isinstance(exc, ClientError | BotoCoreError) else _first_line(exc)
            if not handed.rows:
                raise _NotUnloaded(f"files could not be read: {where}: {reason}") from exc
            raise WarehouseError(f"query {query_id}: {where}: {reason} ({handed.rows:,} rows read before)") from exc
        return handed.rows, (f"as Parquet through UNLOAD ({len(uris)} file(s), {handed.bytes / 1e6:,.1f} MB under "
                             f"{destination})")


class _Handover:
    """Where an UNLOAD's or an EXPORT DATA's Parquet files go, and how many rows went (`rows`), counted as they
    go: a file can break after some of its batches were handed over, and then the rows must not be asked for
    again (they would be added twice)."""

    def __init__(self, sink: Sink, files: FileSink | None) -> None:
        self.sink, self.files, self.rows, self.bytes = sink, files, 0, 0

    def file(self, spill: Any, where: str) -> None:
        """Hand over the Parquet file `spill` (a named temporary file, written to its end; `where` names it in an
        error): whole to `files` where given (the FlowEngine reads it itself, all or nothing), else to `sink` in
        batches of UNLOAD_BATCH_ROWS, in flows.SCHEMA."""
        import pyarrow.parquet as pq

        self.bytes += spill.tell()
        spill.flush()
        if self.files is not None:
            try:
                self.rows += self.files(spill.name, where)
            except ValueError as exc:  # the caller names the file
                raise WarehouseError(str(exc).removeprefix(f"{where}: ")) from exc
            return
        spill.seek(0)
        for batch in pq.ParquetFile(spill).iter_batches(batch_size=UNLOAD_BATCH_ROWS):
            rows = to_schema(pa.Table.from_batches([batch]), where)
            if rows.num_rows:
                self.sink(rows)
                self.rows += rows.num_rows


def unload_sql(select: str, destination: str) -> str:
    """`select` (Athena's dialect) as an UNLOAD writing its rows as gzip Parquet under `destination` (an empty
    S3 prefix). Parquet's typed, compressed columns are several times smaller than the CSV result file of the
    same query (the bench's 50 M records: 91 MB against 741 MB). The query goes in as a subquery of a plain
    SELECT: Athena's documentation shows UNLOAD around a SELECT, and Presto-based grammars refuse a
    parenthesised query that starts with WITH where a subquery in FROM takes it."""
    if "'" in destination:
        raise ValueError(f"UNLOAD destination {destination!r}: a quote in an S3 location")
    return (f"UNLOAD (SELECT * FROM ({select}) AS unloaded) TO '{destination}' "
            "WITH (format = 'PARQUET', compression = 'GZIP')")


def _csv_options(types: dict[str, pa.DataType], columns: list[str] | None = None) -> dict[str, Any]:
    """pyarrow CSV options for an Athena result file: a header row, every value quoted (newlines too), NULL an
    unquoted empty field, an empty string a quoted one."""
    import pyarrow.csv as pacsv

    return {"parse_options": pacsv.ParseOptions(newlines_in_values=True),
            "convert_options": pacsv.ConvertOptions(
                column_types={c: pa.string() if pa.types.is_large_string(t) else t for c, t in types.items()},
                include_columns=columns or [], null_values=[""], strings_can_be_null=True,
                quoted_strings_can_be_null=False)}


def _csv_table(body: Any, where: str, types: dict[str, pa.DataType]) -> pa.Table:
    """A whole Athena result file as a table typed by `types` (names -> Arrow types, as `_arrow_type` gives);
    WarehouseError naming `where` for one that cannot be read so."""
    import pyarrow.csv as pacsv
    from botocore.exceptions import BotoCoreError

    try:
        table = pacsv.read_csv(pa.PythonFile(body, mode="r"), **_csv_options(types))
    except (pa.ArrowException, OSError, BotoCoreError) as exc:
        raise WarehouseError(f"{where}: {_first_line(exc)}") from exc
    return table.cast(pa.schema([(f.name, types.get(f.name, f.type)) for f in table.schema]))


def unpack_rows(page: pa.Table, where: str) -> pa.Table:
    """Aggregate rows (flows.SCHEMA) from a page of CSV lines, one a row in the column `line`
    (`sql.packed_row`): the lines joined in Arrow and parsed by pyarrow's CSV reader, no Python per row.
    WarehouseError naming `where` for lines that are not such rows."""
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    lines = page["line"].combine_chunks()
    if not len(lines):
        return _empty()
    if lines.null_count:
        raise WarehouseError(f"{where}: {lines.null_count:,} packed rows are NULL")
    text = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines.cast(pa.string())),
                          "\n")[0].as_buffer()
    try:
        table = pacsv.read_csv(pa.BufferReader(text), read_options=pacsv.ReadOptions(column_names=list(LAYOUT)),
                               **_csv_options({c: SCHEMA.field(c).type for c in LAYOUT}, list(LAYOUT)))
    except pa.ArrowException as exc:
        raise WarehouseError(f"{where}: {_first_line(exc)}") from exc
    if table.num_rows != len(lines):
        raise WarehouseError(f"{where}: {len(lines):,} packed rows gave {table.num_rows:,} rows")
    return to_schema(table, where)


def _csv_rows(body: Any, where: str, sink: Sink) -> int:
    """Parse an Athena result file (CSV: a header row, every value quoted, NULL an unquoted empty field) as
    aggregate rows, block by block, handing each to `sink`; the rows handed over. WarehouseError naming
    `where` for a file that is not such rows or whose read broke off (rows already handed over stay)."""
    import pyarrow.csv as pacsv
    from botocore.exceptions import BotoCoreError

    returned = 0
    try:
        reader = pacsv.open_csv(pa.PythonFile(body, mode="r"), read_options=pacsv.ReadOptions(block_size=8 << 20),
                                **_csv_options({c: SCHEMA.field(c).type for c in LAYOUT}, list(LAYOUT)))
        for batch in reader:
            rows = to_schema(pa.Table.from_batches([batch]), where)
            if rows.num_rows:
                sink(rows)
                returned += rows.num_rows
    except (pa.ArrowException, OSError, BotoCoreError) as exc:
        raise WarehouseError(f"{where}: {_first_line(exc)} "
                             f"({returned:,} rows read before)") from exc
    return returned


@contextlib.contextmanager
def athena_errors() -> Iterator[None]:
    """botocore's errors (denied, throttled past the retries, no credentials) as WarehouseError, with the code."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise WarehouseError(_boto_reason(exc)) from exc


def _first_line(exc: Exception) -> str:
    """An error's first line (a parser's message can run on for lines), or its type where it has no text."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _boto_reason(exc: Exception) -> str:
    """A botocore error in a line: a service error's code and message, else the exception's type and text."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        return f"{error.get('Code', 'error')}: {error.get('Message', exc)}"
    return f"{type(exc).__name__}: {exc}"


def _athena_scanned(executions: Iterable[dict[str, Any]]) -> int | None:
    total = 0
    for execution in executions:
        scanned = (execution.get("Statistics") or {}).get("DataScannedInBytes")
        if scanned is None:
            return None
        total += int(scanned)
    return total


def _arrow_type(kind: str) -> pa.DataType:
    if kind in _ATHENA_INTS:
        return pa.int64()
    if kind in _ATHENA_FLOATS:
        return pa.float64()
    if kind == "boolean":
        return pa.bool_()
    return pa.large_string()


# ---- BigQuery --------------------------------------------------------------------------------------------------

class BigQuery:
    """Queries through google-cloud-bigquery's Client.query_and_wait; an export's files through google-cloud-storage
    (`storage`: a client to use instead of building one)."""

    def __init__(self, options: BigQueryOptions, table: str, client: Any = None, storage: Any = None) -> None:
        self.options = options
        self.project = options.project or table.split(".", 1)[0]
        if client is None:
            from google.cloud import bigquery

            kwargs: dict[str, Any] = {"project": self.project}
            if options.location:
                kwargs["location"] = options.location
            if options.endpoint:
                from google.api_core.client_options import ClientOptions
                from google.auth.credentials import AnonymousCredentials

                kwargs["client_options"] = ClientOptions(api_endpoint=options.endpoint)
                kwargs["credentials"] = AnonymousCredentials()
            client = bigquery.Client(**kwargs)
        self.client = client
        self._storage = storage

    @property
    def storage(self) -> Any:
        if self._storage is None:
            from spendwatch.connectors.gcp import gcs

            self._storage = gcs.client(self.project, endpoint=self.options.storage_endpoint,
                                       anonymous=bool(self.options.storage_endpoint))
        return self._storage

    def run(self, sql: str) -> tuple[pa.Table, int | None, str]:
        rows = self.client.query_and_wait(sql, page_size=self.options.page_rows, wait_timeout=self.options.timeout_s)
        table = rows.to_arrow(create_bqstorage_client=False)
        return table, rows.total_bytes_processed, str(rows.job_id or rows.query_id or "")

    def stream(self, sql: str, sink: Sink) -> tuple[int, int | None, str]:
        """Run `sql`, whose result is the aggregate rows packed as CSV lines (`sql.pushdown_sql(packed=True)`), and
        hand them to `sink` page by page as they arrive; the rows, bytes processed and the job's id."""
        rows = self.client.query_and_wait(sql, page_size=self.options.page_rows, wait_timeout=self.options.timeout_s)
        job = str(rows.job_id or rows.query_id or "")
        returned = 0
        for batch in rows.to_arrow_iterable():
            got = unpack_rows(pa.Table.from_batches([batch]), f"job {job}")
            if got.num_rows:
                sink(got)
                returned += got.num_rows
        return returned, rows.total_bytes_processed, job

    def fetch(self, source: str, table: str, start_s: int, end_s: int, named: Iterable[str],
              sink: Sink | None = None, files: FileSink | None = None) -> Fetched:
        """The totals, then the aggregate rows: through EXPORT DATA where an export location is set (asked again
        packed where that fails before any row arrived), else packed, page by page. With `sink`, the rows go to it
        as they arrive and `rows` is empty; with `files` too, the export's files go to it whole (`exported`)."""
        from google.api_core.exceptions import GoogleAPICallError

        totals, scanned, totals_id = self.run(translate(totals_sql(source, table=table, start_s=start_s,
                                                                   end_s=end_s), "bigquery"))
        first = totals.to_pylist()[0] if totals.num_rows else {}
        records = int(first.get("records") or 0)
        if not records:
            return Fetched(_empty(), 0, scanned, [totals_id])
        named = list(named)

        def rows_sql(packed: bool) -> str:
            return translate(pushdown_sql(source, table=table, start_s=start_s, end_s=end_s, named=named,
                                          latest_end_ns=first.get("latest_end_ns"), packed=packed), "bigquery")

        billed: list[int | None] = [scanned]  # bytes processed by each job that ran

        def total() -> int | None:
            return None if None in billed else sum(b or 0 for b in billed)

        kept: list[pa.Table] = []
        queries, why = [totals_id], ""
        destination = self._export_destination()
        if destination:
            try:
                done = self.client.query_and_wait(export_sql(rows_sql(False), destination + "*.parquet"),
                                                  wait_timeout=self.options.timeout_s)
                export_id = str(done.job_id or done.query_id or "")
                queries.append(export_id)
                billed.append(done.total_bytes_processed)
                returned, via = self.exported(export_id, destination, sink or kept.append, files)
                return Fetched(pa.concat_tables([_empty(), *kept]), records, total(), queries, returned, via)
            except GoogleAPICallError as exc:  # the statement failed: asked again, packed
                why = f" (EXPORT DATA failed: {_first_line(exc)})"
            except _NotExported as exc:
                why = f" (EXPORT DATA {exc})"
        returned, more, rows_id = self.stream(rows_sql(True), sink or kept.append)
        queries.append(rows_id)
        billed.append(more)
        return Fetched(pa.concat_tables([_empty(), *kept]), records, total(), queries, returned,
                       "page by page" + why)

    def _export_destination(self) -> str:
        """A new, empty prefix under the export location for one EXPORT DATA (gs://bucket/prefix/), or "" where
        there is none (or one the statement's string literal could not hold: config.export_location refuses
        those)."""
        location = self.options.export_uri or ""
        if not location.startswith("gs://") or any(c in location for c in "'*\\") or not location.isprintable():
            return ""
        import uuid

        return f"{location.rstrip('/')}/{EXPORT_PREFIX}/{uuid.uuid4().hex}/"

    def exported(self, job: str, destination: str, sink: Sink, files: FileSink | None = None) -> tuple[int, str]:
        """Hand the rows an EXPORT DATA wrote (the Parquet files under `destination`, in name order) over file by
        file: whole to `files` where given, else batch by batch to `sink`; the rows handed over and how they came.
        _NotExported where the files cannot be listed or read before any row was handed over; WarehouseError where
        a read breaks off after some were.
        No file at all is an error too: BigQuery writes one even for no rows (and the totals said there are)."""
        import tempfile

        from google.api_core.exceptions import GoogleAPIError
        from google.cloud.storage.exceptions import DataCorruption  # a download whose checksum does not match

        bucket, _, prefix = destination.removeprefix("gs://").partition("/")
        handed = _Handover(sink, files)
        read = 0
        where = destination
        try:
            blobs = list(self.storage.list_blobs(bucket, prefix=prefix))
            if not blobs:
                raise WarehouseError("no file was written there")
            for blob in sorted(blobs, key=lambda b: b.name):
                where = f"gs://{bucket}/{blob.name}"
                with tempfile.NamedTemporaryFile(prefix="spendwatch-export-", suffix=".parquet") as spill:
                    blob.download_to_file(spill, raw_download=True)
                    read += 1
                    handed.file(spill, f"job {job}: {where}")
        except (GoogleAPIError, DataCorruption, pa.ArrowException, OSError, WarehouseError) as exc:
            reason = _first_line(exc)
            if not handed.rows:
                raise _NotExported(f"files could not be read: {where}: {reason}") from exc
            raise WarehouseError(f"job {job}: {where}: {reason} ({handed.rows:,} rows read before)") from exc
        return handed.rows, (f"as Parquet through EXPORT DATA ({read} file(s), {handed.bytes / 1e6:,.1f} MB under "
                             f"{destination})")

    def close(self) -> None:
        self.client.close()


def export_sql(select: str, uri: str) -> str:
    """`select` (BigQuery's dialect) as an EXPORT DATA writing its rows as gzip Parquet files named by `uri` (a
    Cloud Storage URI with one `*`, which BigQuery numbers). A fresh prefix per query holds nothing to overwrite;
    `overwrite = true` keeps a prefix that is not empty from failing the statement."""
    if any(c in uri for c in "'\\") or not uri.isprintable() or uri.count("*") != 1 or not uri.startswith("gs://"):
        raise ValueError(f"EXPORT DATA uri {uri!r}: not a gs:// location with one wildcard and no quote")
    return (f"EXPORT DATA OPTIONS (uri = '{uri}', format = 'PARQUET', compression = 'GZIP', overwrite = true) "
            f"AS {select}")


# ---- the scan's flow source ------------------------------------------------------------------------------------

FLOW_KINDS = {"athena": ("vpc-flow-logs", "vpc-flow-logs-parquet"), "bigquery": ("gcp-vpc-flow-logs",)}


@dataclass
class WarehouseFlows:
    """The flows of a scan, read from a warehouse table instead of local files (module doc).

    `skip`: the file kinds (connectors.files.detect) the scan leaves unread, since their records are what the
    table holds. Called with the tables read from the other sources (the DNS answers decide which private
    peers the query keeps), the scan's FlowEngine and its report.
    """

    engine: str  # athena or bigquery
    source: str  # a key of sql.SOURCES
    table: str
    start_s: int
    end_s: int
    athena: AthenaOptions = field(default_factory=AthenaOptions)
    bigquery: BigQueryOptions = field(default_factory=BigQueryOptions)
    client: Any = None  # an SDK client to use instead of building one (tests)
    s3_client: Any = None  # Athena: the S3 client its result files are read with, instead of building one
    storage_client: Any = None  # BigQuery: the Cloud Storage client an export's files are read with
    fetched: Fetched | None = None  # what the last call read
    partition: Partition = "source"  # the table's day partition (sql.DayPartition): "source" is the source's usual

    @classmethod
    def from_aws(cls, config: AwsConfig, now: datetime, *, client: Any = None, s3: Any = None) -> WarehouseFlows:
        """The flows of a live AWS scan at `now` (`config.athena`, the `[aws.athena]` table): Athena's
        aggregate rows for the records that started in the trailing `window_hours`. `client` and `s3`: the
        Athena client and the S3 client for its result files (the connector passes them built like its
        others: credentials, retries, declared calls)."""
        athena = config.athena
        if athena is None or athena.table is None:
            raise ValueError("the [aws] configuration has no [aws.athena] table (flow log table)")
        end_s = int(now.timestamp())
        options = AthenaOptions.from_aws(config)
        return cls("athena", athena.source, athena.table, end_s - athena.window_hours * 3600, end_s,
                   athena=options, client=client, s3_client=s3, partition=athena.partition)

    @classmethod
    def from_gcp(cls, config: GcpConfig, now: datetime, *, client: Any = None, storage: Any = None) -> WarehouseFlows:
        """The flows of a live GCP scan at `now` (`config.bigquery`, the `[gcp.bigquery]` table): BigQuery's
        aggregate rows for the sink's entries that started in the trailing `window_hours`. `client`: the BigQuery
        client to use (the connector passes one built with its credentials and `bigquery_endpoint`); `storage`: the
        Cloud Storage client an export's files are read with (`export_uri`)."""
        flows = config.bigquery
        if flows is None:
            raise ValueError("the [gcp] configuration has no [gcp.bigquery] table")
        end_s = int(now.timestamp())
        options = BigQueryOptions(project=flows.project, location=flows.location, endpoint=config.bigquery_endpoint,
                                  timeout_s=flows.query_timeout_s,
                                  export_uri=str(flows.export_uri) if flows.export_uri else None,
                                  storage_endpoint=config.storage_endpoint)
        return cls("bigquery", "gcp_flow_sink", flows.table, end_s - flows.window_hours * 3600, end_s,
                   bigquery=options, client=client, storage_client=storage)

    @property
    def skip(self) -> tuple[str, ...]:
        return FLOW_KINDS[self.engine]

    @property
    def label(self) -> str:
        return f"{self.engine}:{self.table}"

    def __call__(self, tables: Tables, flows: FlowEngine, report: RunReport) -> None:
        from spendwatch.models.features import Features

        named = Features(tables).dns_answers["address"].tolist()
        if named_private(named) is None:
            report.notes.append(f"{self.label}: more than {NAMED_LIMIT:,} DNS-named private addresses: every "
                                "aggregate row is brought back, not only those with a public or named end")
        arrived = 0

        def sink(rows: pa.Table) -> None:  # rows as they arrive; their records are counted once all came
            nonlocal arrived
            arrived += rows.num_rows
            flows.append(rows, records=0)

        def files(path: str, where: str) -> int:  # an UNLOAD or EXPORT DATA file, read by DuckDB itself
            nonlocal arrived
            stored = flows.insert_parquet(path, where)
            arrived += stored
            return stored

        try:
            fetched = self._fetch(named, sink, files)
        except WarehouseError as exc:
            kept = f" ({arrived:,} aggregate rows had arrived and are kept)" if arrived else ""
            report.gap(self.label, f"flow query failed, {'not all' if arrived else 'no'} flows were read: "
                                   f"{exc}{kept}")
            return
        self.fetched = fetched
        report.read(self.label, f"{self.engine}-flows", {"flows": fetched.records})
        scanned = (f"{fetched.bytes_scanned:,} bytes scanned" if fetched.bytes_scanned is not None
                   else "bytes scanned not reported")
        via = f" {fetched.via}" if fetched.via else ""
        report.notes.append(f"{self.label}: {fetched.records:,} flow records in "
                            f"{_utc(self.start_s)}..{_utc(self.end_s)} reduced in {self.engine}, "
                            f"{fetched.returned:,} aggregate rows brought back{via}, {scanned} "
                            f"(queries {', '.join(fetched.queries)})")
        # The rows stand for every record of the window, not only for those behind the rows kept.
        flows.add(fetched.rows, records=fetched.records)

    def _fetch(self, named: list[str], sink: Sink | None = None, files: FileSink | None = None) -> Fetched:
        """Fetched rows, or WarehouseError naming the engine's error (denied, bad query, no credentials)."""
        if self.engine == "athena":
            with athena_errors():
                return Athena(self.athena, self.client, self.s3_client).fetch(
                    self.source, self.table, self.start_s, self.end_s, named, self.partition, sink, files)
        if self.engine == "bigquery":
            from google.api_core.exceptions import GoogleAPIError
            from google.auth.exceptions import GoogleAuthError

            try:
                api = BigQuery(self.bigquery, self.table, self.client, self.storage_client)
            except GoogleAuthError as exc:
                raise WarehouseError(f"no credentials for BigQuery: {exc}") from exc
            try:
                return api.fetch(self.source, self.table, self.start_s, self.end_s, named, sink, files)
            except GoogleAPIError as exc:
                raise WarehouseError(f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}") from exc
            finally:
                if self.client is None:
                    api.close()
        raise ValueError(f"engine {self.engine!r}: not athena or bigquery")


def _utc(seconds: int) -> str:
    from datetime import UTC, datetime

    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%MZ}"


__all__ = ["Athena", "AthenaOptions", "BigQuery", "BigQueryOptions", "Fetched", "WarehouseError", "WarehouseFlows",
           "athena_errors", "export_sql", "to_schema"]
