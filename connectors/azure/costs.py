"""Live Azure spend: the Cost Management query API (`query.usage`) per subscription, as canonical `spend`.

One query per subscription and run (azure-mgmt-costmanagement): actual cost, `Daily` granularity (the API's
finest for a query), summed by `ResourceId` and `MeterCategory` (two groupings: the query API allows few),
`Cost` and `CostUSD`. Paging follows the answer's `nextLink` (its `$skiptoken` is passed back with the same
query). As with cost exports (`spendwatch.connectors.files.azure`), a day's cost is spread evenly over its 24
hours so that `spend` stays hourly: an estimate per hour, exact per day.

Window and watermark: one watermark per subscription (`azure/<sub>/billing`, scope `costmanagement:query`)
whose position is the last day read. Cost Management keeps revising a day for up to 72 hours, so each run reads
from `REVISE` days before it to today (findings are upserted: a revised day is not counted twice); a first run
starts `initial_hours` back. Throttling (429) and 5xx are retried by azure-core's RetryPolicy (it honours
Retry-After; Cost Management also sends its own `x-ms-ratelimit-microsoft.costmanagement-*-retry-after`
headers, which it does not read, so back-off applies). A 403 (no `Microsoft.CostManagement/query/read`, or
a subscription type Cost Management does not serve) is a gap of that subscription, which keeps its watermark.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd

from spendwatch.records import conform, empty
from spendwatch.report import RunReport
from spendwatch.store import Watermark

from . import catalog
from .inventory import AzureOptions, _client_kwargs, _gap_reason
from .permissions import permission

REVISE = 3  # days Cost Management may still revise
SOURCE, SCOPE = "billing", "costmanagement:query"
ACTION = "Microsoft.CostManagement/query/read"


@dataclass
class CostRead:
    spend: pd.DataFrame
    marks: list[Watermark]
    calls: int = 0
    rows: int = 0
    subscriptions_read: list[str] = field(default_factory=list)


def window(mark: Watermark | None, now: datetime, initial_hours: int) -> tuple[date, date]:
    """(first day, last day) to ask for, both included; the last is today (UTC)."""
    today = now.astimezone(UTC).date()
    if mark is not None and mark.position:
        return date.fromisoformat(mark.position) - timedelta(days=REVISE), today
    return (now - timedelta(hours=initial_hours)).astimezone(UTC).date(), today


def _query(first: date, last: date) -> Any:
    from azure.mgmt.costmanagement import models

    return models.QueryDefinition(
        type="ActualCost", timeframe="Custom",
        time_period=models.QueryTimePeriod(from_property=datetime(first.year, first.month, first.day, tzinfo=UTC),
                                           to=datetime(last.year, last.month, last.day, 23, 59, 59, tzinfo=UTC)),
        dataset=models.QueryDataset(
            granularity="Daily",
            aggregation={"totalCost": models.QueryAggregation(name="Cost", function="Sum"),
                         "totalCostUSD": models.QueryAggregation(name="CostUSD", function="Sum")},
            grouping=[models.QueryGrouping(type="Dimension", name="ResourceId"),
                      models.QueryGrouping(type="Dimension", name="MeterCategory")]))


def read_spend(subscriptions: Iterable[str], report: RunReport, options: AzureOptions, *,
               marks: Mapping[tuple[str, str, str, str, str], Watermark], now: datetime,
               initial_hours: int) -> CostRead:
    """Daily cost per resource of `subscriptions` since their watermarks, spread over hours; failures are gaps."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError
    from azure.mgmt.costmanagement import CostManagementClient

    out = CostRead(empty("spend"), [])
    client = CostManagementClient(options.credential, **_client_kwargs(options))
    frames = []
    try:
        for sub in subscriptions:
            key = ("azure", sub, "", SOURCE, SCOPE)
            first, last = window(marks.get(key), now, initial_hours)
            rows: list[dict[str, Any]] = []
            token: str | None = None
            try:
                while True:
                    permission("query.usage")
                    out.calls += 1
                    result = client.query.usage(f"/subscriptions/{sub}", _query(first, last),
                                                params={"$skiptoken": token} if token else {})
                    if result is None:  # 204: nothing in the window
                        break
                    rows.extend(_rows(sub, result, report))
                    token = _skiptoken(result.next_link)
                    if not token:
                        break
            except (HttpResponseError, ServiceRequestError) as exc:
                reason = _gap_reason(exc)
                status = getattr(exc, "status_code", None)
                detail = f"{reason} ({ACTION})" if reason else f"HTTP {status}: {exc.message}" if status else \
                    f"{type(exc).__name__}: {exc.message}"
                report.gap(f"azure/{sub}/{SOURCE}", f"Cost Management query of subscription {sub}: {detail}")
                continue
            out.rows += len(rows)
            if rows:
                frames.append(pd.DataFrame(rows))
            out.marks.append(Watermark(*key, last.isoformat()))
            out.subscriptions_read.append(sub)
    finally:
        client.close()
    if frames:
        out.spend = conform("spend", pd.concat(frames, ignore_index=True))
    return out


def _skiptoken(next_link: str | None) -> str | None:
    if not next_link:
        return None
    values = parse_qs(urlsplit(next_link).query).get("$skiptoken")
    return values[0] if values else None


def _rows(sub: str, result: Any, report: RunReport) -> list[dict[str, Any]]:
    """Hourly rows of one answer page: each daily row of a resource becomes 24 rows of a 24th of its cost."""
    names = [str(c.name).lower() for c in result.columns or []]
    where = f"costmanagement://subscriptions/{sub}/query"
    needed = {"usagedate", "resourceid", "costusd"}
    if not needed <= set(names):
        report.problem(where, f"the answer has no column(s) {', '.join(sorted(needed - set(names)))}: got "
                              f"{', '.join(names)}", records=len(result.rows or []))
        return []
    at = {name: i for i, name in enumerate(names)}
    out = []
    for n, row in enumerate(result.rows or [], start=1):
        try:
            day = datetime.strptime(str(int(row[at["usagedate"]])), "%Y%m%d").replace(tzinfo=UTC)
            usd = float(row[at["costusd"]])
        except (TypeError, ValueError):
            report.problem(where, f"row has no usable UsageDate or CostUSD: {row!r}", line=n)
            continue
        resource = catalog.canonical(row[at["resourceid"]]) if row[at["resourceid"]] else None
        service = str(row[at["metercategory"]]) if "metercategory" in at and row[at["metercategory"]] else "unknown"
        for h in range(24):
            out.append({"hour": day + timedelta(hours=h), "cloud": "azure", "account": sub, "region": None,
                        "service": service, "usage_type": None, "resource": resource, "cost_usd": usd / 24,
                        "usage_amount": None, "pricing": None})
    return out


def summary(read: CostRead) -> str:
    return (f"azure cost management: {read.calls} query call(s), {read.rows} hourly row(s), subscriptions "
            f"{', '.join(read.subscriptions_read) or 'none'}")


__all__ = ["CostRead", "read_spend", "summary", "window"]
