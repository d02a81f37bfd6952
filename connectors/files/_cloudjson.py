"""Plumbing for the GCP and Azure readers: JSON lines (or a `{"records": [...]}` document), times, rows.

GCP's Cloud Logging sinks and Azure's diagnostic settings both write one JSON object per line; Azure's older
blobs and its flow logs are one `{"records": [...]}` document. `entries()` yields the objects of either with
their 1-based line (or record) numbers and reports each line that is not a JSON object. These readers parse
in Python, line by line: the files are hourly and small next to AWS flow logs, so clarity beat speed here.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ._common import PARQUET_MAGIC, FileContext, json_objects, payload, time_problem

_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time (Z or offset; Azure's 7 fractional digits cut to 6), epoch seconds or milliseconds
    as a number, or None when `value` is none of those."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    text = str(value).strip()
    if not text:
        return None
    text = _FRACTION.sub(r"\1", text.replace("Z", "+00:00").replace(" UTC", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = datetime.strptime(text, "%m/%d/%Y")  # Azure EA exports write US dates
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def checked_time(value: Any, name: str, ctx: FileContext, line: int, *, records: int = 1,
                 suffix: str = "") -> datetime | None:
    """`parse_time`, with a problem recorded for a missing, unreadable or implausible time (costing `records`
    records, its reason ending in `suffix`: for a row that sums several)."""
    when = parse_time(value)
    if when is None:
        ctx.problem(f"{name} {value!r} is missing or not a time{suffix}", line=line, records=records)
        return None
    if reason := time_problem(when, name):
        ctx.problem(reason + suffix, line=line, records=records)
        return None
    return when


def entries(raw: bytes, ctx: FileContext) -> Iterator[tuple[int, dict[str, Any]]]:
    """The JSON objects of a JSON-lines file or of a `{"records": [...]}` document, numbered from 1."""
    data, damaged = payload(raw, ctx)
    if damaged and not data.strip():
        return
    stripped = data.lstrip()
    if re.match(rb'\{\s*"records"\s*:', stripped):
        try:
            doc = json.loads(data)
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("records"), list):
            for number, rec in enumerate(doc["records"], start=1):
                if isinstance(rec, dict):
                    yield number, rec
                else:
                    ctx.problem(f"record is a JSON {type(rec).__name__}, not an object", line=number)
            return
        if doc is not None or b"\n" not in stripped.strip():
            ctx.problem("JSON document is truncated or malformed, or has no 'records' list "
                        "(records lost: at least one)")
            return
    for number, obj in json_objects(data, ctx, "an object"):
        if isinstance(obj.get("records"), list):  # one document per line
            for rec in obj["records"]:
                if isinstance(rec, dict):
                    yield number, rec
            continue
        yield number, obj


def table_rows(raw: bytes, ctx: FileContext) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a tabular export given as Parquet, CSV or JSON lines, flattened to dotted keys
    (`{"project": {"id": "p"}}` -> `project.id`), numbered from 1 (CSV: the header is line 1)."""
    if raw.startswith(PARQUET_MAGIC):
        try:
            table = pq.read_table(pa.BufferReader(raw))
        except (pa.ArrowException, OSError) as exc:
            ctx.problem(f"Parquet file cannot be read ({exc}); records lost: at least one")
            return
        for number, row in enumerate(table.to_pylist(), start=1):
            yield number, flatten(row)
        return
    data, damaged = payload(raw, ctx)
    if damaged and not data.strip():
        return
    if data.lstrip(b"\xef\xbb\xbf \r\n\t").startswith(b"{"):
        for number, obj in entries(data, ctx):
            yield number, flatten(obj)
        return
    text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        if None in row:  # more fields than the header names
            ctx.problem(f"row has {len(row) - 1 + len(row[None])} fields, the header names {len(row) - 1}",
                        line=reader.line_num)
            continue
        yield reader.line_num, {k.strip(): v for k, v in row.items() if k is not None}


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def pick(row: dict[str, Any], *names: str) -> Any:
    """The first non-empty value among `names`, compared case-insensitively and with `.` and `_` alike
    (BigQuery's nested `project.id` is `project_id` once flattened into CSV)."""
    norm = {k.lower().replace(".", "_"): v for k, v in row.items()}
    for name in names:
        value = norm.get(name.lower().replace(".", "_"))
        if value is not None and value != "":
            return value
    return None


def number(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def integer(value: Any) -> int | None:
    """Integers as Cloud Logging writes int64 (as strings) or as numbers."""
    got = number(value)
    return int(got) if got is not None and got == got else None


def json_field(value: Any) -> dict[str, Any]:
    """An object given inline or as a JSON string (Azure's requestbody/responseBody), else {}."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}
