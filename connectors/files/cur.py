"""Billing: CUR 2.0 (AWS Data Exports) Parquet, and the legacy Cost and Usage Report CSV (gzip or not).
Produces `spend`, one row per line item, with the hour floored from the usage start.

Both layouts are first renamed to one set of fields, then checked and converted in one vectorised pass:
times that do not parse or are implausible, costs that are not numbers or are absurd (|cost| >= 1e9 USD for
one line item), usage amounts that are not numbers. Credits and refunds (negative costs) are real and kept.
A CUR 2.0 export written as CSV (snake_case header) is read too. Problem line numbers are CSV lines
(header = 1) or, for Parquet, 1-based row numbers. This module does not fetch, dedupe or restate billing
periods: a scan reads the files it is given.
"""

from __future__ import annotations

from pathlib import PurePath

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ._common import CLOUD, EARLIEST, STR, FileContext, FileResult, latest_time, payload, schema

# A single line item beyond a billion dollars is a corrupted number, not a bill.
MAX_ABS_COST = 1e9

LEGACY: dict[str, str] = {
    "lineItem/UsageStartDate": "start",
    "lineItem/UsageAccountId": "account",
    "lineItem/LineItemType": "line_item_type",
    "lineItem/ProductCode": "product_code",
    "lineItem/UsageType": "usage_type",
    "lineItem/ResourceId": "resource",
    "lineItem/UsageAmount": "usage_amount",
    "lineItem/UnblendedCost": "cost",
    "lineItem/AvailabilityZone": "az",
    "product/region": "region",
    "product/instanceType": "instance_type",
    "pricing/term": "pricing_term",
}
CUR2: dict[str, str] = {
    "line_item_usage_start_date": "start",
    "line_item_usage_account_id": "account",
    "line_item_line_item_type": "line_item_type",
    "line_item_product_code": "product_code",
    "line_item_usage_type": "usage_type",
    "line_item_resource_id": "resource",
    "line_item_usage_amount": "usage_amount",
    "line_item_unblended_cost": "cost",
    "line_item_availability_zone": "az",
    "product_region_code": "region",
    "product_instance_type": "instance_type",
    "pricing_term": "pricing_term",
}
REQUIRED = ("start", "account", "product_code", "cost")
SAVINGS_TYPES = ("SavingsPlanCoveredUsage", "DiscountedUsage")
SCHEMA = schema("spend", {"line_item_type": STR, "instance_type": STR})


def read_parquet(rel: PurePath, raw: bytes, ctx: FileContext) -> FileResult:
    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError) as exc:
        ctx.problem(f"Parquet billing file cannot be read ({exc}); records lost: at least one")
        return FileResult()
    return read_cur2_table(table, ctx)


def read_cur2_table(table: pa.Table, ctx: FileContext, *, line_items: str | None = None) -> FileResult:
    """`spend` from an Arrow table with CUR 2.0's columns (a Parquet file's, or the rows of a query of Athena's
    CUR 2.0 table, `spendwatch.engine.spend_sql`): the checks and conversion every CUR 2.0 source goes through.
    Problem line numbers are 1-based row numbers of `table`. `line_items` names a column holding how many line
    items each row sums (an aggregate query's): a rejected row then counts, and says, that many lost."""
    cols: dict[str, pa.ChunkedArray] = {}
    original: dict[str, str] = {}
    for name, field in CUR2.items():
        if name in table.column_names:
            cols[field], original[field] = table[name], name
    if "product" in table.column_names and pa.types.is_map(table["product"].type):
        # CUR 2.0 keeps product attributes in a map column.
        for attr, field in (("instance_type", "instance_type"), ("region", "region")):
            if field not in cols:
                cols[field] = pc.map_lookup(table["product"], attr, "first")
                original[field] = f"product[{attr}]"
    frame = pd.DataFrame({k: _pandas(v) for k, v in cols.items()}, index=pd.RangeIndex(table.num_rows))
    weights = None
    if line_items is not None:
        counts = pc.fill_null(pc.cast(table[line_items], pa.int64()), 1)
        weights = np.maximum(counts.to_numpy(), 1)
    return _finish(frame.replace("", None), original, ctx, first_line=1, weights=weights)


def read_csv(rel: PurePath, raw: bytes, ctx: FileContext) -> FileResult:
    data, damaged = payload(raw, ctx)
    if damaged and not data.strip():
        return FileResult()  # the damage is the whole story
    invalid: list[tuple[int, int]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append((row.number or 0, row.actual_columns))
        return "skip"

    try:
        header = pacsv.read_csv(pa.BufferReader(data.split(b"\n", 1)[0] + b"\n")).column_names
        mapping = LEGACY if any(c in LEGACY for c in header) else CUR2
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                include_columns=[c for c in header if c in mapping],
                column_types={c: pa.string() for c in header},
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        ctx.problem(f"billing CSV cannot be parsed ({exc}); records lost: at least one", line=None)
        return FileResult()
    for number, columns in invalid:
        ctx.problem(f"record has {columns} fields, the header names {len(header)}", line=number + 1)
    cols = {mapping[c]: table[c] for c in table.column_names}
    original = {mapping[c]: c for c in table.column_names}
    frame = pd.DataFrame({k: _pandas(v) for k, v in cols.items()}, index=pd.RangeIndex(table.num_rows))
    frame = frame.replace("", None)
    return _finish(frame, original, ctx, first_line=2, skipped=sorted(n for n, _ in invalid))


def _pandas(col: pa.ChunkedArray) -> pd.Series:
    if pa.types.is_timestamp(col.type):
        return pd.Series(pc.cast(col, pa.timestamp("ns", tz="UTC")).to_pandas())
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type):
        return pd.Series(pc.cast(col, pa.float64()).to_pandas())
    return pd.Series(pc.cast(col, pa.string()).to_pandas(), dtype="str")


def _finish(frame: pd.DataFrame, original: dict[str, str], ctx: FileContext, first_line: int,
            skipped: list[int] | None = None, weights: np.ndarray | None = None) -> FileResult:
    """`weights`: line items per row, where rows are sums of them (None: one each)."""
    n = len(frame)
    items = int(weights.sum()) if weights is not None else n
    missing = [_column_name(f, original) for f in REQUIRED if f not in frame.columns]
    if missing:
        ctx.problem(f"billing file lacks column(s) {', '.join(missing)}: its {items} line items cannot be used",
                    line=1 if first_line == 2 else None, records=items)
        return FileResult()

    def lines(rows: np.ndarray) -> list[int]:
        numbers = rows.astype(np.int64) + first_line
        for s in skipped or []:  # CSV rows the parser skipped shift later line numbers
            numbers = np.where(numbers >= s + 1, numbers + 1, numbers)
        return [int(x) for x in numbers]

    bad = np.zeros(n, dtype=bool)

    def check(mask: np.ndarray, reason: str, values: pd.Series | None = None) -> None:
        nonlocal bad
        hit = np.asarray(mask, dtype=bool) & ~bad
        if hit.any():
            rows = np.flatnonzero(hit)
            ctx.line_problems(reason, lines(rows), list(values.iloc[rows]) if values is not None else None,
                              records=None if weights is None else weights[rows].tolist(), unit="line items")
            bad |= hit

    start_name = original["start"]
    raw_start = frame["start"]
    if isinstance(raw_start.dtype, pd.DatetimeTZDtype):
        start = raw_start
    else:
        start = pd.to_datetime(raw_start, utc=True, errors="coerce", format="ISO8601")
    check(raw_start.isna().to_numpy(), f"{start_name} is missing")
    check(start.isna().to_numpy(), f"{start_name} {{value}} is not a time", raw_start)
    check((start < EARLIEST).to_numpy(), f"{start_name} {{value}} is before 2000", raw_start)
    check((start > latest_time()).to_numpy(), f"{start_name} {{value}} is more than a year in the future",
          raw_start)
    check(frame["account"].isna().to_numpy(), f"{original['account']} is missing")
    numbers: dict[str, pd.Series] = {}
    for field in ("cost", "usage_amount"):
        if field not in frame.columns:
            continue
        raw = frame[field]
        num = pd.to_numeric(raw, errors="coerce")
        numbers[field] = num
        if field == "cost":
            check(raw.isna().to_numpy(), f"{original[field]} is missing")
        check((raw.notna() & num.isna()).to_numpy(), f"{original[field]} {{value}} is not a number", raw)
        if field == "cost":
            check((num.abs() >= MAX_ABS_COST).to_numpy(),
                  f"{original[field]} {{value}} is not a plausible line item cost (1e9 USD or more)", raw)

    keep = ~bad
    out = pd.DataFrame({
        "hour": start[keep].dt.floor("h"),
        "cloud": CLOUD,
        "account": frame["account"][keep].astype("str"),
        "region": _region(frame)[keep],
        "service": frame["product_code"][keep],
        "usage_type": frame.get("usage_type", pd.Series(None, index=frame.index, dtype="str"))[keep],
        "resource": frame.get("resource", pd.Series(None, index=frame.index, dtype="str"))[keep],
        "cost_usd": numbers["cost"][keep],
        "usage_amount": numbers["usage_amount"][keep] if "usage_amount" in numbers else np.nan,
        "pricing": _pricing(frame)[keep],
        "line_item_type": frame.get("line_item_type", pd.Series(None, index=frame.index, dtype="str"))[keep],
        "instance_type": frame.get("instance_type", pd.Series(None, index=frame.index, dtype="str"))[keep],
    })
    account = out["account"]
    # A writer that typed the account column as a number dropped its leading zeros; ids are 12 digits.
    out["account"] = account.where(~account.str.fullmatch(r"\d{1,11}").fillna(False), account.str.zfill(12))
    out["resource"] = out["resource"].replace("", None)
    return FileResult(tables={"spend": pa.Table.from_pandas(out, schema=SCHEMA, preserve_index=False)})


def _column_name(field: str, original: dict[str, str]) -> str:
    """The column name a missing field goes by, in the layout this file uses."""
    legacy = any(name in LEGACY for name in original.values())
    table = LEGACY if legacy else CUR2
    return next(name for name, f in table.items() if f == field)


def _region(frame: pd.DataFrame) -> pd.Series:
    region = frame["region"] if "region" in frame.columns else pd.Series(None, index=frame.index, dtype="str")
    if "az" in frame.columns:
        # us-east-1a -> us-east-1, for line items that name a zone but no region.
        region = region.fillna(frame["az"].str.replace(r"[a-z]$", "", regex=True))
    return region.astype("str")


def _pricing(frame: pd.DataFrame) -> pd.Series:
    def col(name: str) -> pd.Series:
        if name in frame.columns:
            return frame[name].fillna("").astype("str")
        return pd.Series("", index=frame.index, dtype="str")

    term, usage_type, item_type = col("pricing_term"), col("usage_type"), col("line_item_type")
    pricing = np.select(
        [item_type.isin(SAVINGS_TYPES).to_numpy(),
         ((term == "Spot") | usage_type.str.contains("SpotUsage", regex=False)).to_numpy(),
         (term == "OnDemand").to_numpy()],
        ["savings", "spot", "on_demand"],
        default="other",
    )
    return pd.Series(pricing, index=frame.index, dtype="str")
