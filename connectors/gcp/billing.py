"""Live GCP spend: a query of the BigQuery detailed billing export table, read as canonical `spend`.

One query per run (google-cloud-bigquery `Client.query_and_wait`, `jobs.query` with named parameters), in the
table's own project, over the rows whose `usage_start_time` is in this run's window, reading only the leaf
columns the files reader uses (BigQuery bills by the columns a query reads, and a `_PARTITIONTIME` filter keeps
it to the window's daily partitions, two days of slack for rows exported late).

BigQuery sums the rows, so a large organisation's hundreds of thousands of line rows a run come back as one row
per usage hour (`TIMESTAMP_TRUNC(usage_start_time, HOUR)`) and per everything the reader turns into a `spend`
column or uses to compute one: project, service, SKU, resource name and global name, zone, region, currency and
conversion rate (cost_usd is (cost + credits) / rate: only rows of one rate are summed, so the division is
the reader's), whether a credit is a committed-use one (which makes the pricing `savings`), and whether `cost`
is NULL (such rows stay apart, so a sum never hides one). Each answered row keeps the export's nested shape
(`project.id`, `sku.description`, `usage.amount`, ...): `cost` and `usage.amount` are sums, `credits` holds
one record, the summed credit amount with type `COMMITTED_USAGE` or `OTHER`, and `export_rows` counts the
rows summed (the records are built around the plain sums, outside the aggregation). The rows go through the
files connector's billing reader (`spendwatch.connectors.files.gcp.read_billing`), so the table and an extract
of it in a bucket give the same `spend` (up to float rounding of the sums); a row the reader refuses (no
project, NULL cost, another currency without a rate) is reported once per summed row, not once per export row.

Window and watermark: one watermark (`gcp/*/billing`, scope `bigquery:<table>`) whose position is the end of
the last window read. Billing keeps adding and revising rows of a usage day for a while, so each run reads
from `REVISE` before it to now (findings are upserted: nothing is counted twice in the store); a first run
starts `initial_hours` back. Rate limits (`rateLimitExceeded`, 429) and 5xx are retried by the client's
default retry, with back-off from `backoff_s`; `accessDenied` (no `bigquery.jobs.create` in the project, or
no `bigquery.tables.getData` on the table) and a missing table are a gap that keeps the watermark.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

import pandas as pd

from spendwatch.records import conform, empty
from spendwatch.report import RunReport
from spendwatch.store import Watermark

from . import gcs
from .permissions import permission

REVISE = timedelta(days=3)
SOURCE = "billing"
QUERY = """
SELECT
  usage_hour AS usage_start_time,
  STRUCT(project_id AS id) AS project,
  STRUCT(service_description AS description) AS service,
  STRUCT(sku_description AS description) AS sku,
  STRUCT(resource_name AS name, resource_global_name AS global_name) AS resource,
  STRUCT(location_region AS region, location_zone AS zone) AS location,
  cost, currency, currency_conversion_rate,
  STRUCT(usage_amount AS amount) AS usage,
  [STRUCT(credit AS amount, IF(committed, 'COMMITTED_USAGE', 'OTHER') AS type)] AS credits,
  export_rows
FROM (
  SELECT
    usage_hour, project_id, service_description, sku_description, resource_name, resource_global_name,
    location_region, location_zone, SUM(cost) AS cost, currency, currency_conversion_rate,
    SUM(usage_amount) AS usage_amount, SUM(credit) AS credit, committed, COUNT(*) AS export_rows
  FROM (
    SELECT
      TIMESTAMP_TRUNC(usage_start_time, HOUR) AS usage_hour,
      project.id AS project_id, service.description AS service_description, sku.description AS sku_description,
      resource.name AS resource_name, resource.global_name AS resource_global_name,
      location.region AS location_region, location.zone AS location_zone,
      cost, cost IS NULL AS no_cost, currency, currency_conversion_rate, usage.amount AS usage_amount,
      IFNULL((SELECT SUM(c.amount) FROM UNNEST(credits) AS c), 0) AS credit,
      EXISTS(SELECT 1 FROM UNNEST(credits) AS c WHERE STRPOS(c.type, 'COMMITTED_USAGE') > 0) AS committed
    FROM `{table}`
    WHERE _PARTITIONTIME >= TIMESTAMP_SUB(TIMESTAMP_TRUNC(@start, DAY), INTERVAL 2 DAY)
      AND usage_start_time >= @start AND usage_start_time < @end
  )
  GROUP BY usage_hour, project_id, service_description, sku_description, resource_name, resource_global_name,
    location_region, location_zone, currency, currency_conversion_rate, no_cost, committed
)
"""


@dataclass(frozen=True)
class BillingOptions:
    table: str  # project.dataset.table of the detailed (resource-level) usage cost export
    endpoint: str | None = None  # local fakes and private endpoints: http://127.0.0.1:PORT
    anonymous: bool = False
    initial_hours: int = 24
    backoff_s: float = 1.0
    retry_deadline_s: float = 60.0


@dataclass
class BillingRead:
    spend: pd.DataFrame
    marks: list[Watermark] = field(default_factory=list)
    rows: int = 0  # rows the query answered: hourly sums
    bytes_processed: int | None = None
    export_rows: int | None = None  # export rows those sums add up (None: the answer did not say)


def window(mark: Watermark | None, now: datetime, initial_hours: int) -> tuple[datetime, datetime]:
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    start = datetime.fromisoformat(mark.position) - REVISE if mark is not None and mark.position else \
        end - timedelta(hours=initial_hours)
    return start, end


def client(options: BillingOptions) -> Any:
    from google.cloud import bigquery

    kwargs: dict[str, Any] = {"project": options.table.split(".", 1)[0]}
    if options.endpoint:
        from google.api_core.client_options import ClientOptions

        kwargs["client_options"] = ClientOptions(api_endpoint=options.endpoint)
    if options.anonymous:
        from google.auth.credentials import AnonymousCredentials

        kwargs["credentials"] = AnonymousCredentials()
    return bigquery.Client(**kwargs)


def read_spend(report: RunReport, options: BillingOptions, *,
               marks: Mapping[tuple[str, str, str, str, str], Watermark], now: datetime) -> BillingRead:
    """Spend since the watermark from the billing export table; a failed query is a gap `gcp/*/billing`."""
    from google.api_core.exceptions import GoogleAPICallError, RetryError
    from google.auth.exceptions import GoogleAuthError
    from google.cloud import bigquery
    from google.cloud.bigquery.retry import DEFAULT_RETRY

    from spendwatch.connectors.files._common import FileContext
    from spendwatch.connectors.files.gcp import read_billing

    key = ("gcp", "*", "", SOURCE, f"bigquery:{options.table}")
    start, end = window(marks.get(key), now, options.initial_hours)
    out = BillingRead(empty("spend"))
    if start >= end:
        return out
    config = bigquery.QueryJobConfig(query_parameters=[
        bigquery.ScalarQueryParameter("start", "TIMESTAMP", start),
        bigquery.ScalarQueryParameter("end", "TIMESTAMP", end)])
    retry = DEFAULT_RETRY.with_delay(initial=options.backoff_s, maximum=max(options.backoff_s, 30.0),
                                     multiplier=2.0).with_timeout(options.retry_deadline_s)
    try:
        api = client(options)
    except GoogleAuthError as exc:
        report.gap(f"gcp/*/{SOURCE}", f"no credentials for BigQuery: {exc}")
        return out
    try:
        permission("Client.query_and_wait")  # runs a query job in the table's project
        permission("Client.query_and_wait/table")  # which reads the billing export table
        rows = api.query_and_wait(QUERY.format(table=options.table), job_config=config, retry=retry)
        items = [dict(row.items()) for row in rows]
        lines = [json.dumps(item, default=_plain) for item in items]
        out.bytes_processed = rows.total_bytes_processed
    except (GoogleAPICallError, RetryError) as exc:
        report.gap(f"gcp/*/{SOURCE}", gcs.describe(exc, f"bigquery:{options.table}",
                                                   "bigquery.jobs.create, bigquery.tables.getData"))
        return out
    finally:
        api.close()
    where = f"bigquery:{options.table} {start:%Y-%m-%dT%H:%MZ}..{end:%Y-%m-%dT%H:%MZ}"
    ctx = FileContext(where, report)
    result = read_billing(PurePosixPath("bigquery"), "\n".join(lines).encode(), ctx, summed="export_rows")
    spend = result.tables["spend"].to_pandas()
    out.rows = len(lines)
    summed = [item.get("export_rows") for item in items]
    out.export_rows = sum(summed) if all(isinstance(n, int) for n in summed) else None
    out.spend = conform("spend", spend) if len(spend) else empty("spend")
    out.marks.append(Watermark(*key, end.isoformat()))
    return out


def _plain(value: Any) -> Any:
    """JSON for what BigQuery rows hold besides plain values: timestamps (as ISO 8601) and decimals."""
    if isinstance(value, datetime):
        return value.isoformat()
    return float(value)


def summary(read: BillingRead) -> str:
    scanned = f"{read.bytes_processed / 2**30:.3f} GiB scanned" if read.bytes_processed is not None else \
        "bytes scanned not reported"
    summed = f" (hourly sums of {read.export_rows} export row(s))" if read.export_rows is not None else ""
    return f"gcp billing: 1 BigQuery query, {read.rows} row(s){summed}, {scanned}"


__all__ = ["QUERY", "BillingOptions", "BillingRead", "read_spend", "summary", "window"]
