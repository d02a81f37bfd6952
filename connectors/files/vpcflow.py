"""VPC Flow Logs as delivered to S3: gzip text with a header line (default v2 or any custom v3-v8 format),
or the Parquet delivery option. Produces the canonical `flows` table.

Fast path: pyarrow.csv parses a whole file with typed columns (it releases the GIL, so files parse in
parallel threads), then one vectorised pass checks every record (missing fields, ports, protocol, negative
counts, implausible times, addresses). Only a file whose typed parse fails is read again with every column
as text, and then only its bad lines are looked at one by one. No Python object is built per record.
Read for `spendwatch.engine` (`read_text_many(..., reduce)`), a clean batch is reduced in the reader thread
and its addresses are checked on that aggregate's distinct values instead of on every record. Parquet flow
logs on disk go further (`read_parquet_many`): DuckDB checks and reduces them straight from the files, and only
a file with something to report is read here, record by record.

NODATA and SKIPDATA records say something about the capture window, not about traffic: they are counted
(the connector turns the counts into a note), never turned into flows and never reported as problems.
`-` is a null. `flows.direction` comes only from a `flow-direction` field; nothing here guesses it.
`flows.resource` is the `instance-id` field where the format has it; the connector fills the rest from
CloudTrail's interface ids. This module does not decide which files are flow logs (detect.py does).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ._common import (
    CLOUD,
    EARLIEST,
    GZIP_MAGIC,
    STR,
    FileContext,
    FileResult,
    KeyInfo,
    decompress,
    key_info,
    latest_time,
    line_counts,
    payload,
    schema,
)
from .detect import FLOW_FIELDS

try:  # ISA-L inflates gzip about three times as fast as zlib; inflating is a third of reading a text flow log
    from isal import igzip as _igzip
except ImportError:  # pragma: no cover - isal is a dependency; zlib still reads every file
    _igzip = None

INT_FIELDS = frozenset({"version", "srcport", "dstport", "protocol", "packets", "bytes", "start", "end",
                        "tcp-flags", "traffic-path"})

# Flow log field -> canonical (or extra) column. Fields not named here are parsed by nobody.
COLUMNS: dict[str, str] = {
    "account-id": "account",
    "region": "region",
    "instance-id": "resource",
    "interface-id": "interface",
    "srcaddr": "src",
    "dstaddr": "dst",
    "srcport": "src_port",
    "dstport": "dst_port",
    "protocol": "protocol",
    "packets": "packets",
    "bytes": "bytes",
    "action": "action",
    "flow-direction": "direction",
    "vpc-id": "vpc",
    "subnet-id": "subnet",
    "pkt-srcaddr": "pkt_src",
    "pkt-dstaddr": "pkt_dst",
    "tcp-flags": "tcp_flags",
    "traffic-path": "traffic_path",
}
READ = frozenset(COLUMNS) | {"start", "end", "log-status"}
REQUIRED = ("srcaddr", "dstaddr", "start", "end")
EXTRA: dict[str, pa.DataType] = {
    "vpc": STR, "subnet": STR, "pkt_src": STR, "pkt_dst": STR,
    "tcp_flags": pa.int64(), "traffic_path": pa.int64(),
}
SCHEMA = schema("flows", EXTRA)
NOT_DATA = ("NODATA", "SKIPDATA")
STATUSES = ("OK", *NOT_DATA)

_INT_TEXT = r"^-?\d{1,18}$"
_IP = r"^(\d{1,3}(\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}(:\d{1,3}(\.\d{1,3}){3})?)$"

LineMap = Callable[[np.ndarray], np.ndarray]  # table row indices -> 1-based line (or record) numbers
class Reduce(Protocol):
    """Canonical flow records -> their per-window aggregate, or None (`FlowEngine.reduce`): `keep` says which
    rows are data (None: all), `constants` the string columns left out of the table that hold one value."""

    def __call__(self, table: pa.Table, *, keep: pa.Array | None = None,
                 constants: dict[str, str | None] | None = None) -> pa.Table | None: ...


def _inflate(raw: bytes) -> tuple[bytes, str | None]:
    """Gunzip a flow log, fast; damaged gzip goes to `_common.decompress`, which keeps what can be read and
    says what is wrong, exactly as for any other file."""
    if _igzip is not None and raw.startswith(GZIP_MAGIC):
        try:
            return _igzip.decompress(raw), None
        except Exception:  # any damage (isal raises its own IsalError): the careful path below says what
            pass
    return decompress(raw) if raw.startswith(GZIP_MAGIC) else (raw, None)


def read_text(rel: PurePath, raw: bytes, ctx: FileContext) -> FileResult:
    """Read one gzip text flow log (header line, then space-separated records)."""
    inflated, error = _inflate(raw)
    data, damaged = (inflated, False) if error is None else payload(raw, ctx)
    if damaged and not data.strip():
        return FileResult()  # the damage is the whole story
    newline = data.find(b"\n")
    header = (data if newline < 0 else data[:newline]).decode("utf-8", errors="replace").strip()
    body = b"" if newline < 0 else data[newline + 1 :]
    fields = header.split()
    if not _header_ok(fields, key_info(rel), ctx, lambda: len(body.splitlines())):
        return FileResult()
    wanted = [f for f in fields if f in READ]
    invalid: list[tuple[int, int, str]] = []

    def parse(types: dict[str, pa.DataType]) -> pa.Table:
        invalid.clear()
        return _parse(body, fields, wanted, types, invalid)

    typed = {f: (pa.int64() if f in INT_FIELDS else STR) for f in wanted}
    text_ints: list[str] = []
    if body.strip():
        try:
            table = parse(typed)
        except pa.ArrowInvalid:
            # Some value does not fit its type: read every column as text; the check below finds the lines.
            text_ints = [f for f in wanted if f in INT_FIELDS]
            table = parse(dict.fromkeys(wanted, STR))
    else:
        table = pa.table({f: pa.array([], typed[f]) for f in wanted})

    bad_rows = sorted(n for n, _, _ in invalid)

    def lines(rows: np.ndarray) -> np.ndarray:
        """Line numbers of table rows; only asked for bad rows, so blank lines are looked for only then."""
        r = rows.astype(np.int64) + 1  # 1-based row among the rows the parser kept
        for n in bad_rows:  # rows the parser skipped come before later ones
            r = np.where(r >= n, r + 1, r)
        return _shift(r + 1, _blank_lines(body))  # +1: the header is line 1

    if invalid:
        nums = np.array([n for n, _, _ in invalid], dtype=np.int64)
        where = _shift(nums + 1, _blank_lines(body))
        ctx.line_problems(f"record has {{value}} fields, the header names {len(fields)}", list(where),
                          [c for _, c, _ in invalid])
    return _finish(table, ctx, key_info(rel), lines, text_ints)


def _parse(body: bytes, fields: list[str], wanted: list[str], types: dict[str, pa.DataType],
           invalid: list[tuple[int, int, str]]) -> pa.Table:
    """pyarrow's CSV reader over space-separated records; rows with the wrong field count go to `invalid`."""

    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append((row.number or 0, row.actual_columns, row.text))
        return "skip"

    return pacsv.read_csv(
        pa.BufferReader(body),
        read_options=pacsv.ReadOptions(column_names=fields, use_threads=False, block_size=1 << 24),
        parse_options=pacsv.ParseOptions(delimiter=" ", quote_char=False, double_quote=False,
                                         invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(null_values=["-"], strings_can_be_null=True,
                                             include_columns=wanted, column_types=types),
    )


class _Dirty(Exception):
    """A batch met a problem: its files are read again one by one, where each problem gets its line."""


class _Probe(FileContext):
    def problem(self, reason: str, line: int | None = None, records: int = 1) -> None:
        raise _Dirty(reason)


# Files parsed in one pyarrow call, at most this many bytes of text: the simulator's and AWS's hourly files
# are a few kilobytes each, and per-call overhead, not parsing, would otherwise dominate.
BATCH_BYTES = 16 << 20


def read_text_many(items: list[tuple[PurePath, bytes, FileContext]],
                   reduce: Reduce | None = None) -> list[FileResult]:
    """Read several text flow logs, parsing those with the same header and key account/region in one go.

    Results are exactly those of `read_text` on each file: a group whose parse or checks meet any problem
    (or a blank line, or damaged gzip) is read again file by file, so every problem keeps its own file and
    line. A clean group's flows travel in its first file's result; every file still reports its own rows.
    With `reduce` (`spendwatch.engine.flows.FlowEngine.reduce`), a clean group's flows travel as the per-window
    aggregate it returns, made here in the reader thread; files read one by one still give their records.
    """
    results: list[FileResult | None] = [None] * len(items)
    groups: dict[tuple[str, str | None, str | None], list[tuple[int, bytes]]] = {}
    for i, (rel, raw, _) in enumerate(items):
        data, error = _inflate(raw)
        newline = data.find(b"\n")
        if error or newline < 0:
            continue
        header = data[:newline].decode("utf-8", errors="replace").strip()
        body = data[newline + 1 :]
        if body and not body.endswith(b"\n"):
            body += b"\n"
        key = key_info(rel)
        fields = header.split()
        if any(f not in FLOW_FIELDS for f in fields) or any(f not in fields for f in REQUIRED) or (
                "account-id" not in fields and key.account is None):
            continue
        groups.setdefault((" ".join(fields), key.account, key.region), []).append((i, body))
    for (header, account, region), members in groups.items():
        start = 0
        while start < len(members):
            size, end = 0, start
            while end < len(members) and (end == start or size + len(members[end][1]) <= BATCH_BYTES):
                size += len(members[end][1])
                end += 1
            batch = members[start:end]
            start = end
            try:
                shares = _batch(header.split(), KeyInfo(account, region), [b for _, b in batch], items[batch[0][0]][2],
                                reduce)
            except _Dirty:
                continue
            for (i, _), result in zip(batch, shares, strict=True):
                results[i] = result
    return [r if r is not None else read_text(*items[i]) for i, r in enumerate(results)]


def _batch(fields: list[str], key: KeyInfo, bodies: list[bytes], ctx: FileContext,
           reduce: Reduce | None = None) -> list[FileResult]:
    """One parse and one check for several clean files; raises _Dirty at the first sign of trouble.

    With `reduce`, the addresses are checked on its aggregate (one row per peer and window, several times
    fewer than the records, and only the distinct values there), not on the records."""
    joined = b"".join(bodies)
    wanted = [f for f in fields if f in READ]
    invalid: list[tuple[int, int, str]] = []
    try:
        table = _parse(joined, fields, wanted, {f: (pa.int64() if f in INT_FIELDS else STR) for f in wanted},
                       invalid)
    except pa.ArrowInvalid as exc:
        raise _Dirty(str(exc)) from exc
    counts = line_counts(bodies)
    # One row per line: pyarrow skips blank lines, so a blank line (or a short row) shows up here too.
    if invalid or table.num_rows != int(counts.sum()):
        raise _Dirty("rows")
    probe = _Probe(ctx.path, ctx.report)
    if reduce is None:
        merged = _finish(table, probe, key, lambda rows: rows + 1, [])
    else:  # the NODATA rows are left in and dropped by the reduction: filtering every column costs more
        table, bad, merged = _checked(table, probe, key, lambda rows: rows + 1, [], addresses=False)
        records, constants = _reducible(table, key)
        flows = reduce(records, keep=pa.array(~bad) if bad.any() else None, constants=constants)
        if flows is not None and not _addresses_ok(flows, ("src", "dst")):
            raise _Dirty("address")
        merged.tables = {"flows": flows} if flows is not None else {}
    kept = counts.copy()
    if "log-status" in table.column_names:
        owner = np.repeat(np.arange(len(bodies)), counts)
        kept -= np.bincount(owner[_np(pc.is_in(table["log-status"], pa.array(NOT_DATA)))], minlength=len(bodies))
    out = [FileResult(records={"flows": int(n)}) for n in kept]
    out[0].tables, out[0].counts = merged.tables, merged.counts
    return out


def read_parquet(rel: PurePath, raw: bytes, ctx: FileContext) -> FileResult:
    """Read one flow log delivered as Parquet (fields with `_` for `-`); record numbers stand in for lines."""
    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError) as exc:
        ctx.problem(f"Parquet flow log cannot be read ({exc}); records lost: at least one")
        return FileResult()
    table = table.rename_columns([c.replace("_", "-") for c in table.column_names])
    if not _header_ok(table.column_names, key_info(rel), ctx, lambda: table.num_rows, what="columns"):
        return FileResult()
    cols: dict[str, pa.ChunkedArray] = {}
    for name in table.column_names:
        if name not in READ:
            continue
        col = table[name]
        if name in INT_FIELDS:
            if pa.types.is_timestamp(col.type):
                col = pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64())
            col = pc.cast(col, pa.int64())
        elif name == "account-id" and pa.types.is_integer(col.type):
            col = pc.utf8_lpad(pc.cast(col, STR), 12, "0")  # lost leading zeros, restored
        else:
            col = pc.cast(col, STR)
        cols[name] = col
    return _finish(pa.table(cols), ctx, key_info(rel), lambda rows: rows.astype(np.int64) + 1, [])


# ---- Parquet read by DuckDB itself -------------------------------------------------------------------------------
# Files whose every record passes these checks are reduced by DuckDB straight from disk; any other file is read by
# `read_parquet`, which says what is wrong with which record. They are the checks of `_finish`, as SQL.
_SQL_STATUSES = "('NODATA', 'SKIPDATA')"
_SQL_INT = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"})


class ParquetEngine(Protocol):
    """What `read_parquet_many` needs of `spendwatch.engine.flows.FlowEngine`."""

    def query(self, sql: str) -> pa.Table: ...

    def insert_reduced(self, source: str, records: int, *, addresses: str | None = None) -> bool: ...


def read_parquet_many(items: list[tuple[str, PurePath, FileContext]],
                      engine: ParquetEngine) -> list[FileResult | None]:
    """Parquet flow logs on local disk (path, key layout, context), reduced into `engine` by DuckDB reading the
    files itself: no record becomes a Python or Arrow object here.

    Files are taken in groups with the same columns and types (one query each). A file that is not plainly
    readable this way (a column it does not know, a required one missing, a time stored as a timestamp, a
    footer DuckDB cannot read) or holds any record `_finish` would report gets None: the caller reads it with
    `read_parquet`, where each problem gets its record number. The rest give their record counts and
    NODATA/SKIPDATA tallies exactly as `read_parquet` would.

    The checks read as little as they can. A range that the footer's statistics show every value of a column
    within (ports, protocol, packets, bytes) is not checked record by record (`_proven`), and the null
    addresses of data records are found on the reduced rows, with the malformed ones (`insert_reduced`). Only
    when the reduced rows fail is every check run record by record, to tell the files with something to report
    from the clean ones, which are reduced again.
    """
    results: list[FileResult | None] = [None] * len(items)
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    proofs: dict[int, frozenset[str]] = {}
    for i, (path, rel, _) in enumerate(items):
        try:
            metadata = pq.read_metadata(path)
            arrow_schema = metadata.schema.to_arrow_schema()
        except (pa.ArrowException, OSError):
            continue
        columns = tuple((f.name, str(f.type)) for f in arrow_schema)
        if _parquet_plain(dict(columns), key_info(rel)):
            groups.setdefault(columns, []).append(i)
            proofs[i] = _proven(metadata)
    for columns, members in groups.items():
        physical = {name.replace("_", "-"): name for name, _ in columns}
        types = {name.replace("_", "-"): t for name, t in columns}
        files = {items[i][0]: (i, key_info(items[i][1])) for i in members}
        proven = frozenset.intersection(*(proofs[i] for i in members))
        stored = _reduce_group(engine, files, physical, types, results, proven)
        if stored is False:  # a data record with no address or a malformed one: every check, record by record
            stored = _reduce_group(engine, files, physical, types, results, frozenset(), addresses_checked=True)
        if not stored:  # some address is not one (or DuckDB failed): each file read again, with its records
            for i, _ in files.values():
                results[i] = None
    return results


def _reduce_group(engine: ParquetEngine, files: dict[str, tuple[int, KeyInfo]], physical: dict[str, str],
                  types: dict[str, str], results: list[FileResult | None], proven: frozenset[str], *,
                  addresses_checked: bool = False) -> bool | None:
    """Check one group of files and reduce the clean ones into `engine`, filling their `results`. True when
    stored; False when the reduced rows hold a null or malformed address; None when DuckDB failed (a file it
    cannot read, a type it reads differently) or no file is clean. With `addresses_checked`, null addresses
    are checked record by record too, so a False means a malformed address."""
    try:
        checked = engine.query(_parquet_checks(files, physical, proven, addresses=addresses_checked))
    except Exception:  # the careful path
        return None
    clean: dict[str, tuple[int, KeyInfo]] = {}
    records = 0
    for row in checked.to_pylist():
        if row["filename"] not in files:
            continue
        i, key = files[row["filename"]]
        if row["bad"]:
            results[i] = None
            continue
        result = FileResult(records={"flows": row["n"] - row["nodata"] - row["skipdata"]})
        result.counts["flow NODATA"] += row["nodata"]
        result.counts["flow SKIPDATA"] += row["skipdata"]
        results[i] = result
        clean[row["filename"]] = (i, key)
        records += row["n"] - row["nodata"] - row["skipdata"]
    if not clean:
        return None
    try:
        stored = engine.insert_reduced(_parquet_records(clean, physical, types), records, addresses=_IP[1:-1])
    except Exception:
        return None
    if not stored:
        for i, _ in clean.values():
            results[i] = None
    return stored


# Ranges `_parquet_checks` tests record by record unless the footer shows every value of the column within them.
_RANGES: dict[str, tuple[int, int | None]] = {
    "srcport": (0, 65535), "dstport": (0, 65535), "protocol": (0, 255), "packets": (0, None), "bytes": (0, None)}


def _proven(metadata: pq.FileMetaData) -> frozenset[str]:
    """The fields of `_RANGES` whose values the statistics of every row group show in range."""
    out = set()
    names = [metadata.schema.column(j).name for j in range(metadata.num_columns)]
    for field, (lo, hi) in _RANGES.items():
        if field not in names:  # the Parquet names of these fields are the text ones
            continue
        j = names.index(field)
        if all(_within(metadata.row_group(r), j, lo, hi) for r in range(metadata.num_row_groups)):
            out.add(field)
    return frozenset(out)


def _within(group: pq.RowGroupMetaData, j: int, lo: int, hi: int | None) -> bool:
    """Whether the statistics of column `j` in one row group show every value in lo..hi (no value at all, in a
    group of nulls only)."""
    stats = group.column(j).statistics
    if stats is None:
        return False
    if not stats.has_min_max:
        return stats.has_null_count and stats.null_count == group.num_rows
    return isinstance(stats.min, int) and stats.min >= lo and (hi is None or stats.max <= hi)


def _parquet_plain(types: dict[str, str], key: KeyInfo) -> bool:
    """Whether a Parquet flow log's columns let DuckDB read it as `read_parquet` would, with nothing to report
    about the columns themselves (`_header_ok` would say nothing)."""
    fields = {name.replace("_", "-"): t for name, t in types.items()}
    if any(f not in FLOW_FIELDS for f in fields) or any(f not in fields for f in REQUIRED):
        return False
    if "account-id" not in fields and key.account is None:
        return False
    for f in READ & fields.keys():
        wanted = _SQL_INT if f in INT_FIELDS else {"string", "large_string"}
        if fields[f] not in wanted and not (f == "account-id" and fields[f] in _SQL_INT):
            return False
    return True


def _sql_text(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def _parquet_scan(files: dict[str, tuple[int, KeyInfo]]) -> str:
    listed = ", ".join(_sql_text(f) for f in files)
    return f"read_parquet([{listed}], filename = true)"


def _parquet_checks(files: dict[str, tuple[int, KeyInfo]], physical: dict[str, str],
                    proven: frozenset[str] = frozenset(), *, addresses: bool = True) -> str:
    """Per file: records, NODATA and SKIPDATA records, and records `_finish` would report: its checks, but for
    the form of the addresses, which `insert_reduced` checks on the distinct values of the reduced rows, the
    ranges of the fields in `proven` (the footer's statistics show them) and, without `addresses`, null
    addresses (which the reduced rows show as well)."""

    def col(f: str) -> str:
        return f'"{physical[f]}"'

    lo, hi = int(EARLIEST.timestamp()), int(latest_time().timestamp())
    bad = [f"{col(f)} IS NULL" for f in REQUIRED if addresses or f not in ("srcaddr", "dstaddr")]
    for f, (low, high) in _RANGES.items():
        if f in physical and f not in proven:
            bad.append(f"{col(f)} < {low}" + (f" OR {col(f)} > {high}" if high is not None else ""))
    bad += [f"{col(f)} < {lo} OR {col(f)} > {hi}" for f in ("start", "end")]
    bad.append(f"{col('end')} < {col('start')}")
    status = col("log-status") if "log-status" in physical else None
    if status:
        bad.append(f"{status} IS DISTINCT FROM 'OK'")
        not_data = f"coalesce({status} IN {_SQL_STATUSES}, false)"
        tallies = (f"count(*) FILTER (WHERE {status} = 'NODATA') AS nodata, "
                   f"count(*) FILTER (WHERE {status} = 'SKIPDATA') AS skipdata")
    else:
        not_data, tallies = "false", "0 AS nodata, 0 AS skipdata"
    return (f"SELECT filename, count(*) AS n, {tallies}, "
            f"count(*) FILTER (WHERE NOT {not_data} AND ({' OR '.join(f'({b})' for b in bad)})) AS bad "
            f"FROM {_parquet_scan(files)} GROUP BY filename")


def _parquet_records(files: dict[str, tuple[int, KeyInfo]], physical: dict[str, str], types: dict[str, str]) -> str:
    """The files' data records as canonical flow columns (integer nanosecond times), as `_canonical` makes
    them; the account and region the key names fill in where a record has none."""

    def col(f: str) -> str:
        return f'p."{physical[f]}"'

    def text(f: str, fallback: str = "NULL") -> str:
        if f not in physical:
            return fallback
        if f == "account-id" and types[f] in _SQL_INT:
            return f"coalesce(lpad(CAST({col(f)} AS VARCHAR), 12, '0'), {fallback})"  # lost leading zeros
        return f"coalesce({col(f)}, {fallback})" if fallback != "NULL" else col(f)

    def integer(f: str) -> str:
        return f"CAST({col(f)} AS BIGINT)" if f in physical else "CAST(NULL AS BIGINT)"

    keys = ", ".join(f"({_sql_text(name)}, {_sql_text(key.account)}, {_sql_text(key.region)})"
                     for name, (_, key) in files.items())
    where = f"WHERE {col('log-status')} = 'OK'" if "log-status" in physical else ""
    return f"""(SELECT {_sql_text(CLOUD)} AS cloud, {text("account-id", "k.k_account")} AS account,
       {text("region", "k.k_region")} AS region, {text("instance-id")} AS resource,
       {text("interface-id")} AS interface, {col("srcaddr")} AS src, {col("dstaddr")} AS dst,
       {integer("srcport")} AS src_port, {integer("dstport")} AS dst_port, {integer("protocol")} AS protocol,
       {integer("packets")} AS packets, {integer("bytes")} AS bytes, {text("action")} AS action,
       {text("flow-direction")} AS direction, CAST({col("start")} AS BIGINT) * 1000000000 AS start_ns,
       CAST({col("end")} AS BIGINT) * 1000000000 AS end_ns
FROM {_parquet_scan(files)} p JOIN (VALUES {keys}) AS k(k_file, k_account, k_region) ON k.k_file = p.filename
{where})"""


def _header_ok(fields: list[str], key: KeyInfo, ctx: FileContext, count: Callable[[], int],
               what: str = "header") -> bool:
    """Report unknown and missing fields; False when the file cannot give flows at all. `count` gives the
    number of records (only called when they are lost)."""
    unknown = [f for f in fields if f not in FLOW_FIELDS]
    known = len(fields) - len(unknown)
    line = 1 if what == "header" else None
    if not fields:
        ctx.problem("flow log is empty: no header line", records=0)
        return False
    if known * 2 < len(fields):
        shown = " ".join(fields)[:60]
        lost = count() + 1 if what == "header" else count()  # the first line may itself be a record
        ctx.problem(f"first line is not a flow log header (got {shown!r}): {lost} records cannot be read",
                    line=line, records=lost)
        return False
    if unknown:
        ctx.problem(f"flow log {what} names unknown field(s) {', '.join(unknown)}: their values are ignored",
                    line=line, records=0)
    missing = [f for f in REQUIRED if f not in fields]
    if "account-id" not in fields and key.account is None:
        missing.append("account-id")
    if missing:
        records = count()
        ctx.problem(f"flow log {what} lacks field(s) {', '.join(missing)}: its {records} records cannot be used",
                    line=line, records=records)
        return False
    return True


def _blank_lines(body: bytes) -> list[int]:
    """Line numbers (header = 1) of empty lines, which pyarrow skips; only searched when there are any."""
    if b"\n\n" not in body and not body.startswith(b"\n"):
        return []
    return [i + 2 for i, line in enumerate(body.split(b"\n")[:-1]) if not line.strip()]


def _shift(lines: np.ndarray, blanks: list[int]) -> np.ndarray:
    for b in blanks:
        lines = np.where(lines >= b, lines + 1, lines)
    return lines


def _addresses_ok(table: pa.Table, columns: tuple[str, ...]) -> bool:
    """Whether every non-null value of `columns` is an IP address (checked once per distinct value)."""
    for name in columns:
        distinct = pc.drop_null(pc.unique(table[name]))
        if len(distinct) and not pc.all(pc.match_substring_regex(distinct, _IP)).as_py():
            return False
    return True


def _np(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def _outside(col: pa.ChunkedArray, low: int, high: int | None) -> bool:
    """Whether any value of `col` lies outside [low, high] (nulls aside), from its min and max alone."""
    mm = pc.min_max(col)
    lowest, highest = mm["min"].as_py(), mm["max"].as_py()
    if lowest is None:
        return False
    return bool(lowest < low or (high is not None and highest > high))


def _finish(table: pa.Table, ctx: FileContext, key: KeyInfo, lines: LineMap, text_ints: list[str]) -> FileResult:
    """Check every record at once, count NODATA/SKIPDATA, report bad lines, build canonical flows."""
    table, bad, result = _checked(table, ctx, key, lines, text_ints)
    if bad.any():
        table = table.filter(pa.array(~bad))
    result.tables["flows"] = _canonical(table, key)
    return result


def _checked(table: pa.Table, ctx: FileContext, key: KeyInfo, lines: LineMap, text_ints: list[str], *,
             addresses: bool = True) -> tuple[pa.Table, np.ndarray, FileResult]:
    """`_finish`'s checks: the table (integer fields converted where they were read as text), the mask of rows
    that are not data (NODATA, SKIPDATA, reported as bad) and the file's result so far (its counts).

    `addresses=False` leaves the address check to the caller (`_batch` checks the distinct addresses of the
    batch's aggregate instead, which are far fewer)."""
    n = table.num_rows
    result = FileResult()
    names = set(table.column_names)
    statuses: dict[str | None, int] = {}
    if "log-status" in names:  # one pass counts every status; the masks below are built only where needed
        counted = pc.value_counts(table["log-status"])
        statuses = dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True))
        for s in NOT_DATA:
            result.counts[f"flow {s}"] += statuses.get(s, 0)
    if any(statuses.get(s) for s in NOT_DATA):
        not_data = _np(pc.is_in(table["log-status"], pa.array(NOT_DATA)))
    else:
        not_data = np.zeros(n, dtype=bool)
    bad = not_data.copy()  # rows already accounted for; a record gets one problem, its first

    def check(mask: np.ndarray, reason: str, column: str | None = None) -> None:
        nonlocal bad
        hit = mask & ~bad
        if not hit.any():
            return
        rows = np.flatnonzero(hit)
        values = table[column].take(pa.array(rows)).to_pylist() if column else None
        ctx.line_problems(reason, list(lines(rows)), values)
        bad |= hit

    # Text read of an integer field (only after the typed parse failed): find and drop the non-numbers.
    for f in text_ints:
        col = table[f]
        check(~_np(pc.is_null(col)) & ~_np(pc.match_substring_regex(col, _INT_TEXT)),
              f"{f} {{value}} is not a number", f)
    if text_ints:
        cols = {f: table[f] for f in table.column_names}
        for f in text_ints:
            numeric = pc.match_substring_regex(cols[f], _INT_TEXT)
            cols[f] = pc.cast(pc.if_else(pc.fill_null(numeric, False), cols[f], None), pa.int64())
        table = pa.table(cols)

    # Each check first asks a cheap question of the whole column (null count, min/max, the distinct
    # addresses) and builds a per-row mask only when the answer says some row may be bad.
    account_missing = "account-id" not in names and key.account is None
    for f in (*REQUIRED, *(["account-id"] if account_missing else [])):
        if table[f].null_count:
            check(_np(pc.is_null(table[f])), f"{f} is missing")
    for f in ("srcaddr", "dstaddr") if addresses else ():
        distinct = pc.drop_null(pc.unique(table[f]))
        not_ip = pc.filter(distinct, pc.invert(pc.match_substring_regex(distinct, _IP)))
        if len(not_ip):
            check(_np(pc.is_in(table[f], not_ip)), f"{f} {{value}} is not an IP address", f)
    lo, hi = int(EARLIEST.timestamp()), int(latest_time().timestamp())
    bounds = [
        *[(f, 0, 65535, f"{f} {{value}} is not a port number (0-65535)") for f in ("srcport", "dstport")],
        ("protocol", 0, 255, "protocol {value} is not an IP protocol number (0-255)"),
        *[(f, 0, None, f"{f} {{value}} is negative") for f in ("packets", "bytes")],
    ]
    for f, low, high, reason in bounds:
        if f in names and _outside(table[f], low, high):
            col = table[f]
            mask = pc.less(col, low) if high is None else pc.or_(pc.less(col, low), pc.greater(col, high))
            check(_np(mask), reason, f)
    for f in ("start", "end"):
        col = table[f]
        if _outside(col, lo, hi):
            check(_np(pc.less(col, lo)), f"{f} {{value}} (Unix seconds) is before 2000", f)
            check(_np(pc.greater(col, hi)), f"{f} {{value}} (Unix seconds) is more than a year in the future", f)
    backwards = pc.less(table["end"], table["start"])
    if pc.any(backwards).as_py():
        check(_np(backwards), "end is before start")
    if any(v is not None and v not in STATUSES for v in statuses):
        unexpected = pc.invert(pc.is_in(table["log-status"], pa.array(STATUSES)))
        if pc.any(unexpected).as_py():
            check(_np(unexpected), "log-status {value} is not OK, NODATA or SKIPDATA", "log-status")

    return table, bad, result


def _reducible(table: pa.Table, key: KeyInfo) -> tuple[pa.Table, dict[str, str | None]]:
    """What the reduction reads of a checked batch, without `_canonical`'s copies: the canonical columns the
    file has fields for, times as integer nanoseconds; and the string columns that hold one value (cloud, and
    account and region where the key names them and the file has no field)."""
    out: dict[str, pa.ChunkedArray] = {
        "start_ns": pc.multiply(table["start"], pa.scalar(1_000_000_000, pa.int64())),
        "end_ns": pc.multiply(table["end"], pa.scalar(1_000_000_000, pa.int64())),
    }
    out.update(_fields(table, key))
    constants: dict[str, str | None] = {"cloud": CLOUD}
    for column, value in (("account", key.account), ("region", key.region)):
        if column not in out:
            constants[column] = value
    return pa.table(out), constants


def _fields(table: pa.Table, key: KeyInfo) -> dict[str, pa.ChunkedArray]:
    """The canonical columns the file has fields for, by canonical name; a record without account or region
    takes the key's."""
    out = {}
    for f, column in COLUMNS.items():
        if f in table.column_names:
            col = table[f]
            if f == "account-id" and key.account:
                col = pc.fill_null(col, key.account)
            elif f == "region" and key.region:
                col = pc.fill_null(col, key.region)
            out[column] = col
    return out


def _canonical(table: pa.Table, key: KeyInfo) -> pa.Table:
    n = table.num_rows

    def const(value: str | None) -> pa.Array:
        return pa.nulls(n, STR) if value is None else pc.fill_null(pa.nulls(n, STR), value)

    ns = pa.timestamp("ns", tz="UTC")
    out: dict[str, pa.Array | pa.ChunkedArray] = {
        "start": pc.cast(pc.cast(table["start"], pa.timestamp("s", tz="UTC")), ns),
        "end": pc.cast(pc.cast(table["end"], pa.timestamp("s", tz="UTC")), ns),
        "cloud": const(CLOUD),
    }
    out.update(_fields(table, key))
    if "account" not in out:
        out["account"] = const(key.account)
    if "region" not in out:
        out["region"] = const(key.region)
    arrays = [
        out[f.name] if f.name in out else pa.nulls(n, f.type)
        for f in SCHEMA
    ]
    return pa.table(arrays, schema=SCHEMA)

