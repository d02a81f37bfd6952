"""Utilisation: CloudWatch Metric Streams JSON lines (as Firehose writes them to S3, gzip or not), and a plain
`timestamp,value` CSV of one metric for one instance. Produces `utilization`.

A metric stream carries every metric of its namespaces; only the ones in `METRICS` are utilisation we use.
Samples of other metrics (NetworkIn, DiskReadOps, ...) and samples not tied to one instance (aggregated by
Auto Scaling group) are counted and left out, not reported as problems: they are good data we do not need.
The value is the window's average (sum / count). Percentages outside 0-100 and negative watts are bad
records. This module does not resample or align series.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from ._common import (
    CLOUD,
    EARLIEST,
    STR,
    FileContext,
    FileResult,
    account_id,
    bool_mask,
    json_objects,
    key_info,
    latest_time,
    payload,
    read_many_lines,
    schema,
    time_problem,
)

# CloudWatch / CloudWatch agent metric name -> canonical metric. The canonical names map to themselves so a
# CSV may be named either way.
METRICS: Final[dict[str, str]] = {
    "CPUUtilization": "cpu_util",
    "nvidia_smi_utilization_gpu": "gpu_util",
    "nvidia_smi_utilization_memory": "gpu_mem",
    "nvidia_smi_power_draw": "power",
    "nvidia_smi_memory_used": "gpu_mem_used",  # MiB; kept under its own name, it is not a percentage
    **{m: m for m in ("cpu_util", "gpu_util", "gpu_mem", "power", "gpu_mem_used")},
}
PERCENT = frozenset({"cpu_util", "gpu_util", "gpu_mem"})
# A reading a hair over 100 % happens (rounding in the agent); beyond this it is a broken number.
MAX_PERCENT = 100.5
MAX_WATTS = 5000.0  # no accelerator draws more than this on its own

SCHEMA = schema("utilization", {"device_name": STR})

_CSV_NAME = re.compile(r"^(?P<instance>i-[0-9a-f]+)_(?P<metric>\w+)$")
_INSTANCE = re.compile(r"^i-[0-9a-f]+$")


def value_problem(metric: str, value: float) -> str | None:
    if math.isnan(value) or math.isinf(value):
        return f"value {value} is not a number"
    if metric in PERCENT and not 0 <= value <= MAX_PERCENT:
        return f"value {value:g} is not a percentage (0-100) for {metric}"
    if metric == "power" and not 0 <= value <= MAX_WATTS:
        return f"value {value:g} W is not a plausible power draw"
    if value < 0:
        return f"value {value:g} is negative"
    return None


def _implausible(metric: str, values: np.ndarray) -> np.ndarray:
    """Vectorised twin of `value_problem` (NaN is not flagged here: it is reported as not a number)."""
    with np.errstate(invalid="ignore"):
        high = MAX_PERCENT if metric in PERCENT else MAX_WATTS if metric == "power" else np.inf
        return np.isinf(values) | (values < 0) | (values > high)


# The fields the fast path reads; anything else on a line is ignored by pyarrow, as it is by the slow path.
_STREAM_SCHEMA = pa.schema([
    ("timestamp", pa.int64()), ("account_id", pa.string()), ("region", pa.string()), ("metric_name", pa.string()),
    ("value", pa.struct([("sum", pa.float64()), ("count", pa.float64())])),
    ("dimensions", pa.struct([("InstanceId", pa.string()), ("index", pa.string()), ("name", pa.string())])),
])


def read_stream(rel: PurePath, raw: bytes, ctx: FileContext) -> FileResult:
    """Read one Metric Streams JSON-lines object.

    Fast path: pyarrow's JSON reader and vectorised checks. A file it cannot take whole (a broken line, a
    value of another shape, any bad sample) is read line by line instead, so each problem gets its line.
    """
    data, damaged = payload(raw, ctx)
    if damaged and not data.strip():
        return FileResult()  # the damage is the whole story
    key = key_info(rel)
    fast = _stream_fast(data, key.account, key.region)
    if fast is not None:
        return fast[0]
    result = FileResult()
    rows: list[dict[str, Any]] = []
    for number, obj in json_objects(data, ctx, "a metric object"):
        metric = METRICS.get(str(obj.get("metric_name")))
        found = obj.get("dimensions")
        dims: dict[str, Any] = found if isinstance(found, dict) else {}
        if metric is None or not dims.get("InstanceId"):
            result.counts["metric samples not used"] += 1
            continue
        row, reason = _stream_row(obj, metric, dims, key.account, key.region)
        if reason:
            ctx.problem(reason, line=number)
        else:
            rows.append(row)
    result.tables["utilization"] = pa.Table.from_pylist(rows, schema=SCHEMA)
    return result


def read_stream_many(items: list[tuple[PurePath, bytes, FileContext]]) -> list[FileResult]:
    """Several Metric Streams objects at once; results equal `read_stream` on each (see read_many_lines)."""
    return read_many_lines(items, lambda text, key: _stream_fast(text, key.account, key.region), read_stream,
                           "utilization")


def _stream_fast(data: bytes, key_account: str | None, key_region: str | None
                 ) -> tuple[FileResult, np.ndarray] | None:
    """The whole text at once (with the mask of lines turned into samples), or None when any line needs
    the line-by-line reader."""
    if not data.strip():
        return FileResult(tables={"utilization": SCHEMA.empty_table()}), np.zeros(0, dtype=bool)
    try:
        table = pajson.read_json(
            pa.BufferReader(data),
            read_options=pajson.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=pajson.ParseOptions(explicit_schema=_STREAM_SCHEMA, unexpected_field_behavior="ignore"),
        )
    except pa.ArrowInvalid:
        return None
    names = pa.array(list(METRICS), pa.string())
    canon = pa.array(list(METRICS.values()), STR)
    metric = pc.take(canon, pc.index_in(table["metric_name"], value_set=names))
    dims = table["dimensions"]
    instance = pc.struct_field(dims, "InstanceId")
    used = bool_mask(pc.and_(pc.is_valid(metric), pc.is_valid(instance)))
    result = FileResult()
    result.counts["metric samples not used"] += int((~used).sum())
    table, metric = table.filter(pa.array(used)), pc.filter(metric, pa.array(used))
    value = table["value"]
    total, count = pc.struct_field(value, "sum"), pc.struct_field(value, "count")
    stamp = table["timestamp"]
    if stamp.null_count or total.null_count or count.null_count or pc.any(pc.less_equal(count, 0)).as_py():
        return None
    average = pc.divide(total, count)
    lo, hi = int(EARLIEST.timestamp() * 1000), int(latest_time().timestamp() * 1000)
    if table.num_rows and (pc.min(stamp).as_py() < lo or pc.max(stamp).as_py() > hi):
        return None
    values = average.to_numpy()
    kinds = np.asarray(metric.to_numpy(zero_copy_only=False))
    for name in np.unique(kinds):
        if _implausible(str(name), values[kinds == name]).any() or np.isnan(values[kinds == name]).any():
            return None
    n = table.num_rows
    account = table["account_id"]
    region = table["region"]
    out = {
        "time": pc.cast(pc.cast(stamp, pa.timestamp("ms", tz="UTC")), pa.timestamp("ns", tz="UTC")),
        "cloud": pc.fill_null(pa.nulls(n, STR), CLOUD),
        "account": pc.cast(pc.fill_null(account, key_account) if key_account else account, STR),
        "region": pc.cast(pc.fill_null(region, key_region) if key_region else region, STR),
        "resource": pc.cast(pc.filter(instance, pa.array(used)), STR),
        "metric": metric,
        "device": pc.cast(pc.struct_field(table["dimensions"], "index"), STR),
        "value": average,
        "device_name": pc.cast(pc.struct_field(table["dimensions"], "name"), STR),
    }
    result.tables["utilization"] = pa.table([out[f.name] for f in SCHEMA], schema=SCHEMA)
    return result, used


def _stream_row(obj: dict[str, Any], metric: str, dims: dict[str, Any], key_account: str | None,
                key_region: str | None) -> tuple[dict[str, Any], str | None]:
    name = obj.get("metric_name")
    stamp = obj.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
        return {}, f"{name}: timestamp {stamp!r} is not epoch milliseconds"
    try:
        when = datetime.fromtimestamp(stamp / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return {}, f"{name}: timestamp {stamp!r} is out of range"
    if reason := time_problem(when, "timestamp"):
        return {}, f"{name}: {reason}"
    value = obj.get("value")
    try:
        if isinstance(value, dict):
            count = float(value["count"])
            if count <= 0:
                return {}, f"{name}: value.count is {count:g}, no average can be taken"
            average = float(value["sum"]) / count
        else:
            average = float(value)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        return {}, f"{name}: value {json.dumps(value)[:60]} is not a number or a sum/count statistic"
    if reason := value_problem(metric, average):
        return {}, f"{name}: {reason}"
    account = account_id(obj.get("account_id")) or key_account
    device = dims.get("index")
    return {
        "time": when, "cloud": CLOUD, "account": account, "region": obj.get("region") or key_region,
        "resource": str(dims["InstanceId"]), "metric": metric,
        "device": None if device is None else str(device), "value": average,
        "device_name": dims.get("name"),
    }, None


def csv_target(rel: PurePath) -> tuple[str, str] | None:
    """(instance id, canonical metric) named by `.../<instance>/<metric>.csv` or `.../<instance>_<metric>.csv`."""
    stem = rel.name
    for suffix in (".gz", ".csv"):
        stem = stem.removesuffix(suffix)
    m = _CSV_NAME.match(stem)
    if m and m.group("metric") in METRICS:
        return m.group("instance"), METRICS[m.group("metric")]
    parent = rel.parent.name
    if _INSTANCE.match(parent) and stem in METRICS:
        return parent, METRICS[stem]
    return None


def read_csv(rel: PurePath, raw: bytes, ctx: FileContext) -> FileResult:
    """Read a `timestamp,value` series of one metric of one instance."""
    data, damaged = payload(raw, ctx)
    if damaged and not data.strip():
        return FileResult()  # the damage is the whole story
    try:
        table = pacsv.read_csv(pa.BufferReader(data), convert_options=pacsv.ConvertOptions(
            column_types={"timestamp": pa.string(), "value": pa.string()}, null_values=[""],
            strings_can_be_null=True))
    except (pa.ArrowInvalid, OSError) as exc:
        ctx.problem(f"metric CSV cannot be parsed ({exc}); records lost: at least one")
        return FileResult()
    n = table.num_rows
    target = csv_target(rel)
    if target is None:
        ctx.problem("cannot tell the instance and metric from the path (expected .../<instance-id>/<metric>.csv "
                    f"or .../<instance-id>_<metric>.csv, metric one of {', '.join(sorted(METRICS))}): "
                    f"its {n} samples cannot be used", records=n)
        return FileResult()
    instance, metric = target
    key = key_info(rel)
    frame = pd.DataFrame({c.lower(): table[c].to_pandas() for c in table.column_names})
    raw_time, raw_value = frame["timestamp"], frame["value"]
    times = pd.to_datetime(raw_time, utc=True, errors="coerce", format="mixed")
    values = pd.to_numeric(raw_value, errors="coerce")
    bad = np.zeros(n, dtype=bool)
    checks = [
        (times.isna().to_numpy(), lambda i: f"timestamp {raw_time.iloc[i]!r} is missing or not a time"),
        (values.isna().to_numpy(), lambda i: f"value {raw_value.iloc[i]!r} is missing or not a number"),
        (((times < EARLIEST) | (times > latest_time())).to_numpy(),
         lambda i: time_problem(times.iloc[i], "timestamp")),
        (_implausible(metric, values.to_numpy(dtype="float64", na_value=np.nan)),
         lambda i: value_problem(metric, float(values.iloc[i]))),
    ]
    for mask, reason in checks:
        # Vectorised masks; Python only for the rows that are bad, to name each one.
        for i in np.flatnonzero(mask & ~bad):
            ctx.problem(reason(int(i)) or "bad sample", line=int(i) + 2)
        bad |= mask
    keep = ~bad
    out = pd.DataFrame({
        "time": times[keep], "cloud": CLOUD, "account": key.account, "region": key.region,
        "resource": instance, "metric": metric, "device": None, "value": values[keep].astype("float64"),
        "device_name": None,
    })
    return FileResult(tables={"utilization": pa.Table.from_pandas(out, schema=SCHEMA, preserve_index=False)})
