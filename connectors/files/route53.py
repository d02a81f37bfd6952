"""Route 53 Resolver query logs as delivered to S3 (gzip JSON lines, one query per line). Produces `dns`.

`query` is lower-cased without its trailing dot; `answers` are the answers' Rdata values, space separated;
`resource` is `srcids.instance` where the log names it (the connector fills the rest from the private IPs
of CloudTrail launches). A bad line is one problem with its line number; the file's other lines are kept.
This module does not resolve names or judge them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from ._common import (
    CLOUD,
    EARLIEST,
    STR,
    FileContext,
    FileResult,
    KeyInfo,
    account_id,
    json_objects,
    key_info,
    latest_time,
    payload,
    read_many_lines,
    schema,
    time_problem,
)

SCHEMA = schema("dns", {"vpc": STR})
RESOLVER = "route53-resolver"


_IN = pa.schema([
    ("account_id", pa.string()), ("region", pa.string()), ("vpc_id", pa.string()),
    ("query_timestamp", pa.string()), ("query_name", pa.string()), ("query_type", pa.string()),
    ("rcode", pa.string()), ("srcaddr", pa.string()),
    ("answers", pa.list_(pa.struct([("Rdata", pa.string())]))),
    ("srcids", pa.struct([("instance", pa.string()), ("resolver_endpoint", pa.string())])),
])


def read_many(items: list[tuple[PurePath, bytes, FileContext]]) -> list[FileResult]:
    """Several Resolver log files at once; results equal `read` on each (see read_many_lines)."""
    return read_many_lines(items, _fast, read, "dns")


def read(rel: PurePath, raw: bytes, ctx: FileContext) -> FileResult:
    """Read one Resolver query log file. Fast path: pyarrow's JSON reader and vectorised checks; a file it
    cannot take whole is read line by line, so each bad line is named."""
    data, damaged = payload(raw, ctx)
    if damaged and not data.strip():
        return FileResult()  # the damage is the whole story
    key = key_info(rel)
    fast = _fast(data, key)
    if fast is not None:
        return fast[0]
    rows: list[dict[str, Any]] = []
    for number, obj in json_objects(data, ctx, "a query object"):
        row, reason = _row(obj, key.account, key.vpc)
        if reason:
            ctx.problem(reason, line=number)
        else:
            rows.append(row)
    return FileResult(tables={"dns": pa.Table.from_pylist(rows, schema=SCHEMA)})


def _fast(data: bytes, key: KeyInfo) -> tuple[FileResult, np.ndarray] | None:
    """The whole text at once (and which lines became rows: all of them), or None."""
    if not data.strip():
        return FileResult(tables={"dns": SCHEMA.empty_table()}), np.zeros(0, dtype=bool)
    try:
        table = pajson.read_json(
            pa.BufferReader(data),
            read_options=pajson.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=pajson.ParseOptions(explicit_schema=_IN, unexpected_field_behavior="ignore"),
        )
        when = pc.cast(table["query_timestamp"], pa.timestamp("ns", tz="UTC"))  # needs a zone, as fromisoformat
    except pa.ArrowInvalid:
        return None
    n = table.num_rows
    name = pc.utf8_trim_whitespace(table["query_name"])
    if name.null_count or when.null_count or (n and pc.min(pc.utf8_length(name)).as_py() == 0):
        return None
    if n and (pc.min(when).as_py() < EARLIEST or pc.max(when).as_py() > latest_time()):
        return None
    account = table["account_id"]
    if account.null_count:
        if key.account is None:
            return None
        account = pc.fill_null(account, key.account)
    answers = table["answers"].combine_chunks()
    rdata = pc.struct_field(answers.values, "Rdata")
    if rdata.null_count:
        return None
    lists = pa.ListArray.from_arrays(answers.offsets, rdata, mask=answers.is_null())
    joined = pc.binary_join(lists, " ")
    srcids = table["srcids"]
    out = {
        "time": when,
        "cloud": pc.fill_null(pa.nulls(n, STR), CLOUD),
        "account": account,
        "region": table["region"],
        "resource": pc.struct_field(srcids, "instance"),
        "query": pc.utf8_rtrim(pc.utf8_lower(name), characters="."),
        "qtype": table["query_type"],
        "answers": pc.if_else(pc.equal(joined, ""), pa.scalar(None, pa.string()), joined),
        "resolver": pc.fill_null(pc.struct_field(srcids, "resolver_endpoint"), RESOLVER),
        "src": table["srcaddr"],
        "rcode": table["rcode"],
        "vpc": pc.fill_null(table["vpc_id"], key.vpc) if key.vpc else table["vpc_id"],
    }
    arrays = [pc.cast(out[f.name], f.type) for f in SCHEMA]
    return FileResult(tables={"dns": pa.table(arrays, schema=SCHEMA)}), np.ones(n, dtype=bool)


def _row(obj: dict[str, Any], key_account: str | None, key_vpc: str | None) -> tuple[dict[str, Any], str | None]:
    name = obj.get("query_name")
    if not isinstance(name, str) or not name.strip():
        return {}, "query_name is missing"
    stamp = obj.get("query_timestamp")
    try:
        when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return {}, f"query_timestamp {stamp!r} is missing or not a time"
    if when.tzinfo is None:
        return {}, f"query_timestamp {stamp!r} has no time zone"
    if reason := time_problem(when, "query_timestamp"):
        return {}, reason
    account = account_id(obj.get("account_id")) or key_account
    if account is None:
        return {}, "account_id is missing"
    answers = obj.get("answers") or []
    rdata = [str(a.get("Rdata")) for a in answers if isinstance(a, dict) and a.get("Rdata") is not None]
    found = obj.get("srcids")
    srcids: dict[str, Any] = found if isinstance(found, dict) else {}
    return {
        "time": when,
        "cloud": CLOUD,
        "account": account,
        "region": obj.get("region"),
        "resource": srcids.get("instance"),
        "query": name.strip().lower().rstrip("."),
        "qtype": obj.get("query_type"),
        "answers": " ".join(rdata) or None,
        "resolver": srcids.get("resolver_endpoint") or RESOLVER,
        "src": obj.get("srcaddr"),
        "rcode": obj.get("rcode"),
        "vpc": obj.get("vpc_id") or key_vpc,
    }, None
