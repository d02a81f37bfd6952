"""Live GCP utilisation: Cloud Monitoring's `projects.timeSeries.list`, per project, as canonical `utilization`.

Three metric types, each asked for once per project and run (google-cloud-monitoring; the client speaks gRPC
only), every point a mean over `period_s` (60 or 300 s, `ALIGN_MEAN`):

- `agent.googleapis.com/gpu/utilization` (the Ops Agent's NVIDIA metrics): one series per instance and GPU,
  `gpu_util` with the GPU number as the device;
- `agent.googleapis.com/cpu/utilization` (the Ops Agent): asked for its `idle` state only and averaged over the
  CPUs (`REDUCE_MEAN`), so one series per instance whatever the agent's label layout; `cpu_util` = 100 - idle.
  The agent's other states (user, system, steal, ...) would return several series per CPU and instance: the
  API bills per series returned, and their sum is 100 - idle anyway;
- `compute.googleapis.com/instance/cpu/utilization` (the hypervisor, every VM, no agent needed): a fraction,
  made a percentage. An instance with the agent's CPU metric keeps only that one, so `cpu_util` has one source
  per instance.

Series are grouped by project, zone, instance id and `metadata.system_labels.name`: the agent's metrics carry
no instance name of their own, and the API returns the name in the series' metadata only when the reduction
names it. The resource is the files connector's: `projects/<project>/zones/<zone>/instances/<name>`.

Window and watermark: one watermark per project (`gcp/<project>/utilization`, scope `monitoring`), whose
position is the end of the last window read. A run reads from `LATE` before it (points the agent buffered or
Monitoring ingested late are read again; findings are upserted, so nothing is doubled) to now, cut to the
period; a first run starts `initial_hours` back. A project whose calls fail keeps its watermark and is a gap
named `gcp/<project>/utilization`: 403 (API disabled, or `monitoring.timeSeries.list` missing) names the
permission. RESOURCE_EXHAUSTED (429) and UNAVAILABLE are retried with exponential back-off by google-api-core
(it does not read the server's retry delay). Paging follows `next_page_token` (the API pages by points).
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

from . import catalog, gcs
from .permissions import permission

LATE = timedelta(minutes=10)  # each run reads this far behind the last window's end again
SOURCE, SCOPE = "utilization", "monitoring"
INSTANCE_FIELDS = ("resource.label.project_id", "resource.label.zone", "resource.label.instance_id",
                   "metadata.system_labels.name")


@dataclass(frozen=True)
class Query:
    """One `list_time_series` call: a metric type and how its points become canonical values."""

    metric_type: str
    metric: str  # canonical metric
    scale: float = 1.0  # to percent
    extra_filter: str = ""
    group_by: tuple[str, ...] = ()  # fields kept besides the instance's
    idle: bool = False  # the value is the idle share: utilisation is 100 minus it

    def filter(self) -> str:
        parts = [f'metric.type = "{self.metric_type}"', 'resource.type = "gce_instance"']
        return " AND ".join([*parts, self.extra_filter] if self.extra_filter else parts)


AGENT_CPU = "agent.googleapis.com/cpu/utilization"
QUERIES = (
    Query("agent.googleapis.com/gpu/utilization", "gpu_util", group_by=("metric.label.gpu_number",)),
    Query(AGENT_CPU, "cpu_util", extra_filter='metric.labels.cpu_state = "idle"', idle=True),
    Query("compute.googleapis.com/instance/cpu/utilization", "cpu_util", scale=100.0),
)


@dataclass(frozen=True)
class MonitoringOptions:
    """How to reach Cloud Monitoring. `endpoint` with `anonymous` is a plain-text gRPC target (local fakes)."""

    endpoint: str | None = None
    anonymous: bool = False
    period_s: int = 60
    initial_hours: int = 24
    backoff_s: float = 1.0
    retry_deadline_s: float = 60.0


@dataclass
class MonitoringRead:
    """What one run read: the rows, the watermarks to save once findings are stored, and what it cost."""

    utilization: pd.DataFrame
    marks: list[Watermark]
    calls: int = 0
    series: int = 0  # time series returned: what the API bills
    points: int = 0
    projects_read: list[str] = field(default_factory=list)


def window(mark: Watermark | None, now: datetime, period_s: int, initial_hours: int) -> tuple[datetime, datetime]:
    """(start, end) of this run's read, both on period boundaries."""
    step = int(period_s)
    end = datetime.fromtimestamp(int(now.timestamp()) // step * step, UTC)
    if mark is not None and mark.position:
        start = datetime.fromisoformat(mark.position) - LATE
    else:
        start = end - timedelta(hours=initial_hours)
    start = datetime.fromtimestamp(int(start.timestamp()) // step * step, UTC)
    return start, end


def client(options: MonitoringOptions) -> Any:
    """A MetricServiceClient: Application Default Credentials, or a plain-text channel to a local fake."""
    from google.cloud import monitoring_v3

    if options.endpoint and options.anonymous:
        import grpc
        from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

        target = options.endpoint.removeprefix("http://")
        return monitoring_v3.MetricServiceClient(
            transport=MetricServiceGrpcTransport(channel=grpc.insecure_channel(target)))
    kwargs: dict[str, Any] = {}
    if options.endpoint:
        from google.api_core.client_options import ClientOptions

        kwargs["client_options"] = ClientOptions(api_endpoint=options.endpoint)
    if options.anonymous:
        from google.auth.credentials import AnonymousCredentials

        kwargs["credentials"] = AnonymousCredentials()
    return monitoring_v3.MetricServiceClient(**kwargs)


def _retry(options: MonitoringOptions) -> Any:
    from google.api_core import retry as retries
    from google.api_core.exceptions import ServiceUnavailable, TooManyRequests

    # ResourceExhausted (gRPC's 429) is a TooManyRequests.
    return retries.Retry(predicate=retries.if_exception_type(TooManyRequests, ServiceUnavailable),
                         initial=options.backoff_s, maximum=max(options.backoff_s, 30.0), multiplier=2.0,
                         timeout=options.retry_deadline_s)


def read_utilization(projects: Iterable[str], report: RunReport, options: MonitoringOptions, *,
                     marks: Mapping[tuple[str, str, str, str, str], Watermark], now: datetime) -> MonitoringRead:
    """Utilisation of every instance of `projects` since their watermarks; unreadable projects are gaps."""
    from google.api_core.exceptions import GoogleAPICallError, RetryError
    from google.auth.exceptions import GoogleAuthError

    out = MonitoringRead(empty("utilization"), [])
    frames: list[pd.DataFrame] = []
    retry = _retry(options)
    try:
        api = client(options)
    except GoogleAuthError as exc:  # no Application Default Credentials: every project is unread
        for project in projects:
            report.gap(f"gcp/{project}/{SOURCE}", f"no credentials for Cloud Monitoring: {exc}")
        return out
    with api:
        for project in projects:
            key = ("gcp", project, "", SOURCE, SCOPE)
            mark = marks.get(key) or Watermark(*key, "")
            start, end = window(mark, now, options.period_s, options.initial_hours)
            if start >= end:
                continue
            reader = _ProjectReader(project, start, end, options.period_s, report)
            try:
                for query in QUERIES:
                    reader.read(api, query, retry)
            except (GoogleAPICallError, RetryError) as exc:
                where = f"Cloud Monitoring of project {project}"
                report.gap(f"gcp/{project}/{SOURCE}", gcs.describe(exc, where, "monitoring.timeSeries.list"))
                out.calls += reader.calls
                continue
            out.calls, out.series, out.points = (out.calls + reader.calls, out.series + reader.series,
                                                 out.points + reader.points)
            frames.append(reader.frame())
            out.marks.append(Watermark(*key, end.isoformat()))
            out.projects_read.append(project)
    frames = [f for f in frames if len(f)]
    if frames:
        out.utilization = conform("utilization", pd.concat(frames, ignore_index=True))
    return out


class _ProjectReader:
    """The rows of one project's three queries (kept apart until all three succeed)."""

    def __init__(self, project: str, start: datetime, end: datetime, period_s: int, report: RunReport) -> None:
        self.project, self.start, self.end, self.period_s, self.report = project, start, end, period_s, report
        self.calls = self.series = self.points = 0
        self.cols: dict[str, list[Any]] = {k: [] for k in ("t", "resource", "zone", "metric", "device", "value",
                                                          "agent")}

    def read(self, api: Any, query: Query, retry: Any) -> None:
        from google.cloud import monitoring_v3

        agg = monitoring_v3.Aggregation(
            alignment_period=timedelta(seconds=self.period_s),
            per_series_aligner=monitoring_v3.Aggregation.Aligner.ALIGN_MEAN,
            cross_series_reducer=monitoring_v3.Aggregation.Reducer.REDUCE_MEAN,
            group_by_fields=[*INSTANCE_FIELDS, *query.group_by])
        request = monitoring_v3.ListTimeSeriesRequest(
            name=f"projects/{self.project}", filter=query.filter(),
            interval=monitoring_v3.TimeInterval(start_time=self.start, end_time=self.end), aggregation=agg,
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL)
        permission("MetricServiceClient.list_time_series")
        for page in api.list_time_series(request=request, retry=retry).pages:
            self.calls += 1  # one call per page (retried attempts not counted)
            for series in type(page).pb(page).time_series:
                self._series(series, query)

    def _series(self, series: Any, query: Query) -> None:
        self.series += 1
        labels = series.resource.labels
        zone, project = labels.get("zone", ""), labels.get("project_id", "") or self.project
        system = series.metadata.system_labels.fields
        name = series.metric.labels.get("instance_name", "") or \
            (system["name"].string_value if "name" in system else "")
        if not (zone and name):
            self.report.problem(f"monitoring://projects/{self.project}/{query.metric_type}",
                                f"series of instance id {labels.get('instance_id', '?')} names no zone or instance "
                                "name (metadata.system_labels.name)", records=max(1, len(series.points)))
            return
        resource = catalog.instance_resource(project, zone, name)
        device = series.metric.labels.get("gpu_number") or None
        cols = self.cols
        for point in series.points:
            value = point.value
            kind = value.WhichOneof("value")
            if kind not in ("double_value", "int64_value"):
                continue
            number = float(getattr(value, kind)) * query.scale
            cols["t"].append(point.interval.end_time.seconds)
            cols["value"].append(100.0 - number if query.idle else number)
            cols["resource"].append(resource)
            cols["zone"].append(zone)
            cols["metric"].append(query.metric)
            cols["device"].append(device)
            cols["agent"].append(query.metric_type == AGENT_CPU)
            self.points += 1

    def frame(self) -> pd.DataFrame:
        """The rows, with the hypervisor's CPU dropped where the agent's CPU exists for the same instance."""
        if not self.cols["t"]:
            return empty("utilization")
        f = pd.DataFrame(self.cols)
        with_agent = set(f.loc[f["agent"], "resource"])
        f = f[f["agent"] | (f["metric"] != "cpu_util") | ~f["resource"].isin(with_agent)]
        regions = {z: catalog.zone_region(z) for z in f["zone"].unique()}
        return pd.DataFrame({
            "time": pd.to_datetime(f["t"].to_numpy(), unit="s", utc=True), "cloud": "gcp",
            "account": self.project, "region": f["zone"].map(regions).to_numpy(), "resource": f["resource"].to_numpy(),
            "metric": f["metric"].to_numpy(), "device": f["device"].to_numpy(), "value": f["value"].to_numpy(),
        })


def summary(read: MonitoringRead) -> str:
    """One line for the run report: what the reads cost (the API bills time series returned)."""
    return (f"gcp monitoring: {read.calls} timeSeries.list call(s), {read.series} time series, {read.points} "
            f"points, projects {', '.join(read.projects_read) or 'none'}")


__all__ = ["QUERIES", "MonitoringOptions", "MonitoringRead", "Query", "read_utilization", "summary", "window"]
