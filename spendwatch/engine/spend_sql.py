"""CUR 2.0 spend as SQL: the line items of a window, aggregated per usage hour where the export lives (Athena).

`cur_spend_sql` is written in DuckDB's dialect and translated with `sql.translate(..., "athena")`, as the flow
queries are. It reads the table Athena keeps over a CUR 2.0 export (AWS Data Exports: snake_case columns,
partitioned by `billing_period` 'YYYY-MM') and groups the window's line items by the usage hour and by every
column `spendwatch.connectors.files.cur` turns into a `spend` column (account, line item type, product code,
usage type, resource, availability zone, region code, instance type, pricing term), summing the unblended cost
and the usage amount. The rows come back with CUR 2.0's column names and go through the files reader's own
checks and conversion (`cur.read_cur2_table`), so a scan fed by Athena and one fed by the bucket's objects give
the same `spend` per (hour, account, region, service, usage_type, resource, pricing), only fewer rows.

What aggregation must not blur: the reader drops a line item whose cost is missing or implausible
(|cost| >= `cur.MAX_ABS_COST`). Such line items are grouped apart from the good ones (the GROUP BY includes
`abs(cost) >= MAX_ABS_COST`, true, false or NULL), and their row carries a cost the reader rejects the same way
(NULL; the largest implausible cost), so good spend is summed exactly as the reader sums it. A rejected row
counts every line item it sums as lost (`line_items`), and its problem says how many: one problem per row,
not per line item, with the same count of records lost as the files give. Not read: line items without a
usage start (they are in no window; AWS's export always writes one).

Window (`window`): billing is revised for days after the usage hour (late line items, a period's files
rewritten several times a day), so each run asks for `REVISE` before the end of the last window it read up to
the start of the current hour; a first run starts `initial_hours` back. Findings are upserted, so hours read
again are not counted twice. The `billing_period` filter keeps Athena to the window's partitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from .sql import _table_ref, translate

if TYPE_CHECKING:
    from spendwatch.report import RunReport

    from .remote import Athena

REVISE = timedelta(days=3)

# The CUR 2.0 columns the files reader turns into `spend` (connectors/files/cur.py CUR2), less the two summed.
KEY = ("line_item_usage_account_id", "line_item_line_item_type", "line_item_product_code", "line_item_usage_type",
       "line_item_resource_id", "line_item_availability_zone", "product_region_code", "product_instance_type",
       "pricing_term")

SPEND_SQL = """SELECT date_trunc('hour', line_item_usage_start_date) AS line_item_usage_start_date,
       {key},
       sum(line_item_usage_amount) AS line_item_usage_amount,
       CASE WHEN max(abs(line_item_unblended_cost)) >= {max_cost}
            THEN max_by(line_item_unblended_cost, abs(line_item_unblended_cost))
            ELSE sum(line_item_unblended_cost) END AS line_item_unblended_cost,
       count(*) AS line_items
FROM {table}
WHERE billing_period IN ({periods})
  AND line_item_usage_start_date >= TIMESTAMP '{start}' AND line_item_usage_start_date < TIMESTAMP '{end}'
GROUP BY date_trunc('hour', line_item_usage_start_date), {key},
         abs(line_item_unblended_cost) >= {max_cost}"""


def billing_periods(start: datetime, end: datetime) -> list[str]:
    """The CUR 2.0 `billing_period` partitions ('YYYY-MM') holding line items that start in [start, end)."""
    month = datetime(start.year, start.month, 1, tzinfo=UTC)
    last = end - timedelta(microseconds=1)
    periods: list[str] = []
    while (month.year, month.month) <= (last.year, last.month):
        periods.append(f"{month:%Y-%m}")
        month = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
    return periods


def cur_spend_sql(table: str, start: datetime, end: datetime) -> str:
    """The query (DuckDB's dialect) for the CUR 2.0 line items of `table` that started in [start, end), both
    UTC, grouped per usage hour and `spend` key. ValueError when the window is empty."""
    from spendwatch.connectors.files.cur import MAX_ABS_COST

    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if start >= end:
        raise ValueError(f"empty window {start:%Y-%m-%dT%H:%MZ}..{end:%Y-%m-%dT%H:%MZ}")
    periods = ", ".join(f"'{p}'" for p in billing_periods(start, end))
    # Athena's CUR timestamps have no zone and hold UTC: the window is written the same way.
    return SPEND_SQL.format(key=", ".join(KEY), table=_table_ref(table), periods=periods,
                            max_cost=f"{MAX_ABS_COST:.1f}", start=f"{start:%Y-%m-%d %H:%M:%S}",
                            end=f"{end:%Y-%m-%d %H:%M:%S}")


def window(position: str | None, now: datetime, initial_hours: int) -> tuple[datetime, datetime]:
    """The usage hours a run reads: from REVISE before the end of the last window read (`position`, ISO 8601;
    empty or None on a first run: `initial_hours` back) to the start of the hour of `now`."""
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    start = datetime.fromisoformat(position) - REVISE if position else end - timedelta(hours=initial_hours)
    return start, end


@dataclass
class SpendRead:
    """What one read of a CUR 2.0 table gave: canonical `spend` (Arrow), the line items its rows sum, the
    aggregate rows brought back, the bytes Athena scanned (None where it did not say), the query's id, and the
    line items the reader rejected (each a problem in the report; `line_items` includes them)."""

    spend: pa.Table
    line_items: int
    rows: int
    bytes_scanned: int | None
    query_id: str
    skipped: int = 0
    via: str = ""  # how the rows came back (Athena.via)


def read_cur(athena: Athena, table: str, start: datetime, end: datetime, report: RunReport,
             where: str) -> SpendRead:
    """Run the spend query on Athena and read its rows as the files reader reads CUR 2.0 (its problems go to
    `report` under `where`). WarehouseError (remote.py) when the query fails, is denied or times out."""
    from spendwatch.connectors.files._common import FileContext
    from spendwatch.connectors.files.cur import read_cur2_table

    from .remote import WarehouseError, athena_errors

    with athena_errors():
        rows, scanned, query_id = athena.query(translate(cur_spend_sql(table, start, end), "athena"))
    missing = [c for c in ("line_item_usage_start_date", *KEY, "line_item_unblended_cost", "line_items")
               if c not in rows.column_names]
    if missing:
        raise WarehouseError(f"query {query_id}: the result has no column {', '.join(missing)}")
    ctx = FileContext(where, report)
    result = read_cur2_table(rows, ctx, line_items="line_items")
    spend = result.tables.get("spend")
    if spend is None:  # the reader refused the whole result (and said why in the report)
        from spendwatch.connectors.files.cur import SCHEMA

        spend = SCHEMA.empty_table()
    line_items = int(pc.sum(rows["line_items"]).as_py() or 0)
    return SpendRead(spend, line_items, rows.num_rows, scanned, query_id, skipped=ctx.skipped,
                     via=athena.via)


__all__ = ["KEY", "REVISE", "SpendRead", "billing_periods", "cur_spend_sql", "read_cur", "window"]
