"""Live Azure utilisation: Azure Monitor's `metrics:getBatch` for every VM of the inventory, as `utilization`.

One call (azure-monitor-querymetrics `MetricsClient.query_resources`) asks for `Percentage CPU` of up to 50
VMs (the service's limit) at 1-minute grain, `Average` aggregation. The batch API takes VMs of one
subscription and one region per call and is served by that region's endpoint
(`https://<region>.metrics.monitor.azure.com`), so VMs are batched by subscription and region. Azure has no
platform GPU metric: a GPU VM's GPU utilisation needs an in-guest agent, which this does not read.

Calls per run are capped (`max_calls`). Batches holding GPU VMs go first (they are what mining runs on), then
the rest by subscription, region and name; VMs left out by the cap are a gap of their subscription, named with
how many, and that subscription's watermark stays where it was (the next run asks for the whole window again).

Window and watermark: one watermark per subscription (`azure/<sub>/utilization`, scope `metrics:getBatch`),
whose position is the end of the last window read. A run reads from `LATE` before it to now (minutes that
Azure Monitor publishes late are read again; findings are upserted, so nothing is doubled); a first run starts
`initial_hours` back. Throttling (429) is retried by azure-core's RetryPolicy, which honours Retry-After, as
are 5xx; a 403 (no `Microsoft.Insights/Metrics/Read`) stops that subscription's batches and is a gap naming
the action. Resources are the lower-cased ARM ids, as everywhere in the Azure tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from spendwatch.records import conform, empty
from spendwatch.report import RunReport
from spendwatch.store import Watermark

from . import catalog
from .permissions import permission

BATCH = 50  # resource ids per metrics:getBatch call: the service's limit
LATE = timedelta(minutes=10)
NAMESPACE = "Microsoft.Compute/virtualMachines"
METRIC = "Percentage CPU"
ACTION = "Microsoft.Insights/Metrics/Read"
SOURCE, SCOPE = "utilization", "metrics:getBatch"
AUDIENCE = "https://metrics.monitor.azure.com"


@dataclass(frozen=True)
class Vm:
    resource: str  # lower-cased ARM id
    account: str  # subscription
    region: str
    gpus: int


@dataclass(frozen=True)
class MetricsOptions:
    credential: Any
    endpoint: str = "https://{region}.metrics.monitor.azure.com"  # `{region}` is filled per batch
    max_calls: int = 100
    initial_hours: int = 24
    retry_total: int = 6
    retry_backoff_factor: float = 0.8
    connection_verify: str | None = None
    allow_http: bool = False  # bearer tokens over plain http: local fakes only


@dataclass
class MetricsRead:
    utilization: pd.DataFrame
    marks: list[Watermark]
    calls: int = 0
    vms_read: int = 0
    vms_skipped: int = 0  # left out by the call cap
    points: int = 0
    subscriptions_read: list[str] = field(default_factory=list)


def vms_of(inventory: pd.DataFrame) -> list[Vm]:
    """The VMs of a canonical inventory frame (ARM's rows: account, region and resource are set)."""
    inv = inventory[(inventory["cloud"] == "azure") & inventory["resource"].notna() & inventory["account"].notna()
                    & inventory["region"].notna()]
    return [Vm(str(resource), str(account), str(region), int(gpus))
            for resource, account, region, gpus in zip(inv["resource"], inv["account"], inv["region"],
                                                       inv["gpus"].fillna(0), strict=True)]


def window(mark: Watermark | None, now: datetime, initial_hours: int) -> tuple[datetime, datetime]:
    """(start, end) of this run's read, on minute boundaries."""
    end = datetime.fromtimestamp(int(now.timestamp()) // 60 * 60, UTC)
    start = datetime.fromisoformat(mark.position) - LATE if mark is not None and mark.position else \
        end - timedelta(hours=initial_hours)
    return datetime.fromtimestamp(int(start.timestamp()) // 60 * 60, UTC), end


def batches(vms: Iterable[Vm]) -> list[list[Vm]]:
    """VMs in calls of at most BATCH, one subscription and region each; the batches with GPUs first."""
    groups: dict[tuple[str, str], list[Vm]] = {}
    for vm in sorted(set(vms), key=lambda v: (v.gpus == 0, v.account, v.region, v.resource)):
        groups.setdefault((vm.account, vm.region), []).append(vm)
    out = [members[i:i + BATCH] for members in groups.values() for i in range(0, len(members), BATCH)]
    return sorted(out, key=lambda b: (all(v.gpus == 0 for v in b), b[0].account, b[0].region, b[0].resource))


def _client(region: str, options: MetricsOptions) -> Any:
    from azure.monitor.querymetrics import MetricsClient

    kwargs: dict[str, Any] = {"retry_total": options.retry_total,
                              "retry_backoff_factor": options.retry_backoff_factor}
    if options.connection_verify:
        kwargs["connection_verify"] = options.connection_verify
    if options.allow_http:
        from azure.core.pipeline.policies import BearerTokenCredentialPolicy

        class _PlainHttp(BearerTokenCredentialPolicy):
            """Bearer auth that lets a token travel over http: for local fakes only."""

            def on_request(self, request: Any) -> None:
                request.context["enforce_https"] = False
                super().on_request(request)

        kwargs["authentication_policy"] = _PlainHttp(options.credential, f"{AUDIENCE}/.default")
    return MetricsClient(options.endpoint.format(region=region), options.credential, **kwargs)


def _denied(exc: Exception) -> bool:
    from azure.core.exceptions import ClientAuthenticationError

    return isinstance(exc, ClientAuthenticationError) or getattr(exc, "status_code", None) in (401, 403)


def _describe(exc: Exception, sub: str, region: str) -> str:
    code = getattr(getattr(exc, "error", None), "code", None) or type(exc).__name__
    if _denied(exc):
        return f"access denied to Azure Monitor metrics of subscription {sub} ({ACTION}): {code}"
    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", None) or exc).splitlines()[0]
    return f"Azure Monitor metrics of subscription {sub} in {region}: {f'HTTP {status} ' if status else ''}" \
        f"{code}: {message}"


def read_utilization(vms: Iterable[Vm], subscriptions: Iterable[str], report: RunReport, options: MetricsOptions, *,
                     marks: Mapping[tuple[str, str, str, str, str], Watermark], now: datetime) -> MetricsRead:
    """Percentage CPU of `vms` since their subscriptions' watermarks; failures and the cap are gaps."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError

    out = MetricsRead(empty("utilization"), [])
    spans = {}
    for sub in subscriptions:
        key = ("azure", sub, "", SOURCE, SCOPE)
        spans[sub] = (key, window(marks.get(key), now, options.initial_hours))
    plan = [b for b in batches(vms) if b[0].account in spans and spans[b[0].account][1][0] < spans[b[0].account][1][1]]
    failed: set[str] = set()
    unread: dict[str, int] = {}
    clients: dict[str, Any] = {}
    rows: list[pd.DataFrame] = []
    try:
        for batch in plan:
            sub, region = batch[0].account, batch[0].region
            if sub in failed:
                continue
            if out.calls >= options.max_calls:
                unread[sub] = unread.get(sub, 0) + len(batch)
                continue
            start, end = spans[sub][1]
            if region not in clients:
                clients[region] = _client(region, options)
            permission("MetricsClient.query_resources")
            out.calls += 1
            try:
                results = clients[region].query_resources(
                    resource_ids=[v.resource for v in batch], metric_namespace=NAMESPACE, metric_names=[METRIC],
                    timespan=(start, end), granularity=timedelta(minutes=1), aggregations=["Average"])
            except (HttpResponseError, ServiceRequestError) as exc:
                report.gap(f"azure/{sub}/{SOURCE}", _describe(exc, sub, region))
                failed.add(sub)
                continue
            frame = _rows(results, batch, report)
            out.vms_read += len(batch)
            out.points += len(frame)
            rows.append(frame)
    finally:
        for c in clients.values():
            c.close()
    for sub, count in sorted(unread.items()):
        report.gap(f"azure/{sub}/{SOURCE}", f"{count} VM(s) not read: the cap of {options.max_calls} metrics:getBatch "
                                            "calls a run was reached (raise [azure] metrics_max_calls)")
        out.vms_skipped += count
    for sub, (key, (_, end)) in spans.items():
        if sub not in failed and sub not in unread:
            out.marks.append(Watermark(*key, end.isoformat()))
            out.subscriptions_read.append(sub)
    rows = [r for r in rows if len(r)]
    if rows:
        out.utilization = conform("utilization", pd.concat(rows, ignore_index=True))
    return out


def _rows(results: Iterable[Any], batch: list[Vm], report: RunReport) -> pd.DataFrame:
    """Rows of one batch's answer. Each result names its resource only in its metrics' ids
    (`<resource id>/providers/Microsoft.Insights/metrics/Percentage CPU`)."""
    known = {vm.resource: vm for vm in batch}
    times: list[datetime] = []
    values: list[float] = []
    resources: list[str] = []
    for result in results:
        for metric in result.metrics:
            mid = str(metric.id or "")
            cut = mid.lower().find("/providers/microsoft.insights/metrics/")
            vm = known.get(catalog.canonical(mid[:cut]) or "") if cut > 0 else None
            if vm is None:
                report.problem(f"azure-monitor://{batch[0].account}/{batch[0].region}",
                               f"metric {metric.name!r} names a resource that was not asked for: {metric.id!r}")
                continue
            for series in metric.timeseries:
                for point in series.data:
                    if point.average is None or point.timestamp is None:
                        continue  # a minute with no sample (VM stopped): nothing to say
                    times.append(point.timestamp)
                    values.append(float(point.average))
                    resources.append(vm.resource)
    if not times:
        return empty("utilization")
    regions = {vm.resource: vm.region for vm in batch}
    return pd.DataFrame({"time": pd.to_datetime(times, utc=True), "cloud": "azure", "account": batch[0].account,
                         "region": [regions[r] for r in resources], "resource": resources, "metric": "cpu_util",
                         "device": None, "value": values})


def summary(read: MetricsRead) -> str:
    return (f"azure metrics: {read.calls} metrics:getBatch call(s) for {read.vms_read} VM(s), {read.points} "
            f"points; {read.vms_skipped} VM(s) left for the next run by the call cap")


__all__ = ["BATCH", "MetricsOptions", "MetricsRead", "Vm", "batches", "read_utilization", "summary", "vms_of",
           "window"]
