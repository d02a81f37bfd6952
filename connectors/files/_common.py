"""Plumbing shared by the files connector's readers: bytes, problems, bounds, paths and Arrow schemas.

Each reader turns one file into a `FileResult`: canonical tables as Arrow tables (typed like
`spendwatch.records`, so the connector can concatenate them without a pandas round trip per file), plus the
side facts the connector joins afterwards (launches, state changes, counts of records that are not data).
Nothing here decides what kind a file is (that is `detect.py`) or how a format is parsed (one module each).
"""

from __future__ import annotations

import itertools
import json
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from spendwatch.records import TABLES
from spendwatch.report import RunReport

CLOUD = "aws"

# Plausible record times. A timestamp before 2000 is a zero or a garbled field; one more than a year ahead
# is milliseconds read as seconds or a corrupted clock. The wide forward margin keeps simulated data and
# replays that run a little ahead of the wall clock valid.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_AHEAD = timedelta(days=366)

# One bad record is one problem with its line, but a file with thousands of bad lines of the same kind is
# reported as this many lines, then one problem that counts the rest, so a report stays readable.
MAX_LINE_PROBLEMS = 20

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"

STR = pa.large_string()

ARROW_TYPES: dict[str, pa.DataType] = {
    "time": pa.timestamp("ns", tz="UTC"),
    # large_string is what pandas' "str" dtype holds: frames convert without a copy of every string column.
    "str": pa.large_string(),
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
}

_PANDAS_FOR_ARROW: dict[pa.DataType, Any] = {
    pa.string(): pd.StringDtype("pyarrow", na_value=np.nan),  # pandas 3's "str"
    pa.large_string(): pd.StringDtype("pyarrow", na_value=np.nan),
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


def latest_time() -> datetime:
    """The latest record time taken as plausible, for this run."""
    return datetime.now(UTC) + MAX_AHEAD


def time_problem(value: datetime | pd.Timestamp, field_name: str) -> str | None:
    """A reason when `value` is outside the plausible window, else None."""
    if value < EARLIEST:
        return f"{field_name} {value:%Y-%m-%dT%H:%M:%SZ} is before 2000"
    if value > latest_time():
        return f"{field_name} {value:%Y-%m-%dT%H:%M:%SZ} is more than a year in the future"
    return None


def schema(table: str, extra: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """The Arrow schema of canonical table `table`, plus this reader's extra columns."""
    fields = [pa.field(c.name, ARROW_TYPES[c.kind]) for c in TABLES[table].columns]
    fields += [pa.field(k, v) for k, v in (extra or {}).items()]
    return pa.schema(fields)


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow to pandas with the canonical dtypes (nullable ints and bools, pandas' own "str")."""
    return table.to_pandas(types_mapper=_PANDAS_FOR_ARROW.get)


@dataclass
class Launch:
    """One instance launched, as CloudTrail told it; the connector builds `inventory` from these."""

    resource: str
    account: str
    region: str | None
    instance_type: str | None
    spot: bool | None
    launched_at: datetime
    launched_by: str
    launched_by_type: str
    interfaces: list[str]
    private_ips: list[str]
    tags: dict[str, str]
    # Set by readers of clouds other than AWS, whose machine types the AWS catalogue does not know.
    cloud: str = CLOUD
    gpus: int | None = None
    vcpus: int | None = None


@dataclass
class FileResult:
    """What one file gave: canonical Arrow tables and facts the connector joins across files."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    launches: list[Launch] = field(default_factory=list)
    state_changes: list[tuple[datetime, str, str]] = field(default_factory=list)  # time, instance, action
    counts: Counter[str] = field(default_factory=Counter)  # named tallies the connector turns into notes
    # Rows this file gave, where its rows travel in another file's tables (flow logs parsed as one batch).
    records: dict[str, int] | None = None
    # Interface id -> private addresses, where an interface is described apart from its instance (an Azure
    # NIC is its own resource): the connector gives these addresses to the launches that name the interface.
    addresses: dict[str, list[str]] = field(default_factory=dict)

    def rows(self) -> dict[str, int]:
        if self.records is not None:
            return dict(self.records)
        return {name: t.num_rows for name, t in self.tables.items()}


class FileContext:
    """One file being read: its path, and a tally of records it lost, for `report.read`."""

    def __init__(self, path: str, report: RunReport) -> None:
        self.path = path
        self.report = report
        self.skipped = 0

    def problem(self, reason: str, line: int | None = None, records: int = 1) -> None:
        """Record a problem with this file (raises StrictError in a strict run)."""
        self.skipped += records
        self.report.problem(self.path, reason, line=line, records=records)

    def line_problems(self, reason: str, lines: Sequence[int], values: Sequence[object] | None = None, *,
                      records: Sequence[int] | None = None, unit: str = "records") -> None:
        """Record bad records, one problem per line up to MAX_LINE_PROBLEMS, then one for the rest.

        `reason` may hold `{value}`, filled from `values` (same length as `lines`). `records` (same length): how
        many source records each line stands for, where a line is a sum of them (a warehouse's aggregate row);
        a line of more than one says so, in `unit` ("line items"), and each problem counts them all.
        """
        weights = [1] * len(lines) if records is None else [int(n) for n in records]
        for i, line in enumerate(lines[:MAX_LINE_PROBLEMS]):
            value = values[i] if values is not None else None
            summed = f" (a sum of {weights[i]:,} {unit})" if weights[i] > 1 else ""
            self.problem(reason.format(value=_show(value)) + summed, line=int(line), records=weights[i])
        rest = len(lines) - MAX_LINE_PROBLEMS
        if rest > 0:
            generic = reason.format(value="...")
            lost = sum(weights[MAX_LINE_PROBLEMS:])
            summed = f", {lost:,} {unit} in all" if lost != rest else ""
            self.problem(f"{generic} (and {rest} more lines like it{summed})", line=int(lines[MAX_LINE_PROBLEMS]),
                         records=lost)


def _show(value: object) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def decompress(raw: bytes) -> tuple[bytes, str | None]:
    """Gunzip `raw` (several members allowed), keeping what could be read before any damage.

    Returns the bytes and None, or the bytes read before the damage and a plain-words reason.
    """
    out: list[bytes] = []
    data = raw
    while data:
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        try:
            out.append(inflater.decompress(data))
            out.append(inflater.flush())
        except zlib.error as exc:
            out.append(_salvage(data))
            return b"".join(out), f"corrupt gzip data ({exc})"
        if not inflater.eof:
            return b"".join(out), "gzip stream is truncated"
        data = inflater.unused_data
        # Some writers pad a gzip file with zero bytes; that is not another member.
        if data and not data.startswith(GZIP_MAGIC):
            if data.strip(b"\x00"):
                return b"".join(out), "trailing bytes after the gzip stream"
            break
    return b"".join(out), None


def _salvage(data: bytes) -> bytes:
    """Inflate `data` in small steps to keep whatever comes out before a zlib error."""
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    kept: list[bytes] = []
    step = 16384
    for i in range(0, len(data), step):
        try:
            kept.append(inflater.decompress(data[i : i + step]))
        except zlib.error:
            break
    return b"".join(kept)


def payload(raw: bytes, ctx: FileContext) -> tuple[bytes, bool]:
    """The file's content, gunzipped when it is gzip. On damage, records a problem and cuts the content
    back to its last whole line; returns (content, damaged)."""
    if not raw.startswith(GZIP_MAGIC):
        return raw, False
    data, error = decompress(raw)
    if error is None:
        return data, False
    cut = data.rfind(b"\n") + 1
    data = data[:cut]
    whole_lines = data.count(b"\n")
    ctx.problem(f"{error} after line {whole_lines}: the rest of the file could not be read "
                "(records lost: at least one)", line=whole_lines + 1)
    return data, True


def line_counts(bodies: Iterable[bytes]) -> np.ndarray:
    """The number of newlines in each of `bodies` (int64). numpy counts them without holding the GIL, about
    four times as fast as bytes.count, which holds it while the other reader threads wait."""
    return np.array([np.count_nonzero(np.frombuffer(b, np.uint8) == 10) for b in bodies], dtype=np.int64)


def text_lines(data: bytes) -> list[str]:
    """Lines of `data` as text; undecodable bytes become U+FFFD rather than stopping the file."""
    return data.decode("utf-8", errors="replace").splitlines()


FastLines = Callable[[bytes, "KeyInfo"], "tuple[FileResult, np.ndarray] | None"]
SlowReader = Callable[[PurePath, bytes, FileContext], FileResult]


def json_objects(data: bytes, ctx: FileContext, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each JSON-lines record; a line that is not valid JSON, or not an object
    (`what` names the object expected, e.g. "a query object"), is recorded as a problem and skipped."""
    for number, line in enumerate(text_lines(data), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            ctx.problem(f"line is not valid JSON ({exc.msg} at column {exc.colno})", line=number)
            continue
        if not isinstance(obj, dict):
            ctx.problem(f"line is a JSON {type(obj).__name__}, not {what}", line=number)
            continue
        yield number, obj


def read_many_lines(items: list[tuple[PurePath, bytes, FileContext]], fast: FastLines, slow: SlowReader,
                    table: str) -> list[FileResult]:
    """Read several JSON-lines files whose keys name the same account, region and VPC in one `fast` call.

    `fast(text, key)` reads a whole text or returns None; it also returns, per line, whether the line became
    a row of `table`. Files are small (Firehose objects, 5-minute Resolver files) and per-call overhead would
    dominate. Results equal `slow` on each file: any group the fast reader cannot take whole, or whose rows
    cannot be told apart by file, is read by `slow` file by file, so each problem keeps its own line.
    """
    results: list[FileResult | None] = [None] * len(items)
    groups: dict[KeyInfo, list[tuple[int, bytes]]] = {}
    for i, (rel, raw, _) in enumerate(items):
        data, error = decompress(raw) if raw.startswith(GZIP_MAGIC) else (raw, None)
        if error or not data.strip():
            continue
        if not data.endswith(b"\n"):
            data += b"\n"
        groups.setdefault(key_info(rel), []).append((i, data))
    for key, members in groups.items():
        joined = b"".join(d for _, d in members)
        if b"\n\n" in joined or joined.startswith(b"\n"):
            continue  # blank lines would blur which file a row came from
        got = fast(joined, key)
        counts = line_counts(d for _, d in members)
        if got is None or len(got[1]) != int(counts.sum()):
            continue
        merged, used = got
        owner = np.repeat(np.arange(len(members)), counts)
        per_file = np.bincount(owner[used], minlength=len(members))
        shares = [FileResult(records={table: int(n)}) for n in per_file]
        shares[0].tables, shares[0].counts = merged.tables, merged.counts
        for (i, _), share in zip(members, shares, strict=True):
            results[i] = share
    return [r if r is not None else slow(*items[i]) for i, r in enumerate(results)]


def bool_mask(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An Arrow boolean column as numpy, nulls as False."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


# Key layout: `AWSLogs/[<org-id>/]<account>/<service>/<region>/...` and the Hive form of the same.
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")


@dataclass(frozen=True)
class KeyInfo:
    account: str | None = None
    region: str | None = None
    service: str | None = None  # the folder after the account: vpcflowlogs, CloudTrail, ...
    vpc: str | None = None


def key_info(rel: PurePath) -> KeyInfo:
    """Account, region and service named by an S3 key layout, as far as the key names them."""
    parts = rel.parts
    hive = dict(p.split("=", 1) for p in parts if "=" in p)
    if "aws-account-id" in hive:
        return KeyInfo(hive.get("aws-account-id"), hive.get("aws-region"), hive.get("aws-service"))
    account = region = service = vpc = None
    for i, part in enumerate(parts):
        if part == "AWSLogs":
            rest = parts[i + 1 :]
            # An organisation trail puts the org id (o-...) before the account.
            if rest and rest[0].startswith("o-"):
                rest = rest[1:]
            if rest and _ACCOUNT.match(rest[0]):
                account = rest[0]
                service = rest[1] if len(rest) > 1 else None
                nxt = rest[2] if len(rest) > 2 else None
                if nxt and _REGION.match(nxt):
                    region = nxt
                elif nxt and nxt.startswith("vpc-"):
                    vpc = nxt
            break
    if account is None:
        # `<account>/<region>/` anywhere in the path (metric CSV exports).
        for a, b in itertools.pairwise(parts):
            if _ACCOUNT.match(a) and _REGION.match(b):
                account, region = a, b
                break
    return KeyInfo(account, region, service, vpc)


def account_id(value: object) -> str | None:
    """An account id as a 12-character string. A number (a writer that lost the type) is zero-padded back:
    AWS account ids are exactly twelve digits, so the leading zeros are known."""
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return f"{value:012d}"
    text = str(value).strip()
    return text or None


def first(items: Iterable[Any]) -> Any:
    for item in items:
        return item
    return None
