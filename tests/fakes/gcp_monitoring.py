"""A fake of Cloud Monitoring's `ListTimeSeries`, served by a real gRPC server on 127.0.0.1 and driven through the
real google-cloud-monitoring client (whose MetricService speaks gRPC only).

What it does as the API does: the filter (`metric.type`, `resource.type`, `metric.labels.K`, `resource.labels.K`,
`=` and `!=`, joined by AND); the interval (points whose end time is in (start, end]); `ALIGN_MEAN` over an
alignment period, with the periods ending at the interval's end; `REDUCE_MEAN` across series grouped by
`resource.label.K`, `metric.label.K` and `metadata.system_labels.K`, the output keeping only those labels (and
the metadata only when a group-by names it); points newest first; pages cut by points (`page_size`, at most
100,000, and `page_points` when a test wants small pages), a series continuing on the next page. Anything
else it is asked for answers INVALID_ARGUMENT, so a request the real API would read differently fails here.

Faults a test sets: projects in `denied` answer PERMISSION_DENIED; `throttle` calls answer RESOURCE_EXHAUSTED.
`add_simulated` loads the simulator's saved series (spendwatch/simulate/gcp.py), moving the instance name of
the agent's metrics from the metric labels (where the simulator keeps it for the files reader) to the
resource metadata, where the API keeps it.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

MAX_PAGE = 100_000
Answer = tuple[dict[str, Any], list[tuple[int, float]]]  # an output series' identity and its points, newest first
_CLAUSE = re.compile(r'^\s*([a-z_.]+)\s*(=|!=)\s*"([^"]*)"\s*$')


@dataclass
class Series:
    """One raw time series as the service stores it: points are (end time in epoch seconds, value)."""

    project: str
    metric_type: str
    metric_labels: dict[str, str]
    resource_labels: dict[str, str]
    system_labels: dict[str, str]
    points: list[tuple[int, float]]
    resource_type: str = "gce_instance"


@dataclass
class Call:
    project: str
    filter: str
    start: int
    end: int
    period: int
    group_by: tuple[str, ...]
    page_token: str


class _Invalid(Exception):
    pass


@dataclass
class FakeMonitoring:
    series: list[Series] = field(default_factory=list)
    denied: set[str] = field(default_factory=set)
    throttle: int = 0
    page_points: int = MAX_PAGE
    calls: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, series: Series) -> None:
        self.series.append(series)

    def add_simulated(self, root: Path) -> int:
        """Every series under `root` (the simulator's `timeseries/YYYY/MM/DD/HH.json`), hours joined; returns
        how many series the fake now holds from it."""
        merged: dict[str, Series] = {}
        for path in sorted(root.rglob("*.json")):
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                raw = json.loads(line)
                metric, resource = raw["metric"], raw["resource"]
                labels = dict(metric.get("labels") or {})
                name = labels.get("instance_name", "")
                if not metric["type"].startswith("compute.googleapis.com/"):
                    labels.pop("instance_name", None)  # the agent's metrics do not carry it
                key = json.dumps([metric["type"], labels, resource["labels"], name], sort_keys=True)
                s = merged.get(key)
                if s is None:
                    rl = dict(resource["labels"])
                    s = merged[key] = Series(rl["project_id"], metric["type"], labels, rl, {"name": name}, [])
                for p in raw["points"]:
                    when = datetime.fromisoformat(p["interval"]["endTime"].replace("Z", "+00:00"))
                    value = p["value"]
                    s.points.append((int(when.timestamp()), float(value.get("doubleValue", value.get("int64Value")))))
        self.series.extend(merged.values())
        return len(merged)

    # -- the service --------------------------------------------------------------------------------------

    def list_time_series(self, request: Any, context: Any) -> Any:
        import grpc
        from google.cloud import monitoring_v3

        project = request.name.removeprefix("projects/")
        agg = request.aggregation
        start, end = _seconds(request.interval.start_time), _seconds(request.interval.end_time)
        period = int(agg.alignment_period.total_seconds()) if agg.alignment_period else 0
        with self._lock:
            self.calls.append(Call(project, request.filter, start, end, period, tuple(agg.group_by_fields),
                                   request.page_token))
            if project in self.denied:
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"Permission monitoring.timeSeries.list denied (or the resource may not exist) on "
                              f"projects/{project}")
            if self.throttle > 0:
                self.throttle -= 1
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "Quota exceeded for quota metric 'Time series "
                                                                  "queries' and limit 'per minute'")
        try:
            out = self._answer(project, request, start, end, period)
        except _Invalid as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        size = min(request.page_size or MAX_PAGE, MAX_PAGE, self.page_points)
        offset = int(request.page_token or 0)
        response = monitoring_v3.ListTimeSeriesResponse.pb()()
        flat = [(i, j) for i, (_, points) in enumerate(out) for j in range(len(points))]
        page = flat[offset:offset + size]
        last, ts = -1, cast(Any, None)
        for i, j in page:
            labels, points = out[i]
            if i != last:  # a new series on this page (or the rest of one cut by the previous page)
                ts, last = response.time_series.add(), i
                _fill(ts, labels)
            point = ts.points.add()
            point.interval.end_time.seconds = points[j][0]
            point.interval.start_time.seconds = points[j][0] - period
            point.value.double_value = points[j][1]
        if offset + len(page) < len(flat):
            response.next_page_token = str(offset + len(page))
        return response

    def _answer(self, project: str, request: Any, start: int, end: int, period: int) -> list[Answer]:
        from google.cloud import monitoring_v3

        clauses = _parse(request.filter)
        if not any(k == "metric.type" and op == "=" for k, op, _ in clauses):
            raise _Invalid("the filter must name one metric.type")
        if request.view != monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL:
            raise _Invalid("the fake answers view FULL only")
        agg = request.aggregation
        aligner, reducer = agg.per_series_aligner, agg.cross_series_reducer
        if period and aligner != monitoring_v3.Aggregation.Aligner.ALIGN_MEAN:
            raise _Invalid("the fake aligns with ALIGN_MEAN only")
        reducers = monitoring_v3.Aggregation.Reducer
        if reducer not in (reducers.REDUCE_NONE, reducers.REDUCE_MEAN):
            raise _Invalid("the fake reduces with REDUCE_MEAN only")
        if reducer == reducers.REDUCE_MEAN and not period:
            raise _Invalid("a cross-series reducer needs an alignment period")
        group_by = tuple(agg.group_by_fields)
        for name in group_by:
            if not re.match(r"^(resource\.labels?|metric\.labels?|metadata\.system_labels)\.[a-z_]+$", name):
                raise _Invalid(f"group-by field {name!r} is not one the fake knows")
        chosen = []
        for s in self.series:
            if s.project != project or not all(_match(s, k, op, v) for k, op, v in clauses):
                continue
            points = [(t, v) for t, v in s.points if start < t <= end]
            if points:
                chosen.append((s, _align(points, end, period) if period else sorted(points)))
        if reducer != monitoring_v3.Aggregation.Reducer.REDUCE_MEAN:
            return [(_labels(s, None), pts[::-1]) for s, pts in chosen]
        groups: dict[tuple[str, ...], list[tuple[Series, list[tuple[int, float]]]]] = defaultdict(list)
        for s, pts in chosen:
            groups[tuple(_field(s, f) for f in group_by)].append((s, pts))
        out = []
        for _, members in sorted(groups.items()):
            at: dict[int, list[float]] = defaultdict(list)
            for _, pts in members:
                for t, v in pts:
                    at[t].append(v)
            out.append((_labels(members[0][0], group_by), [(t, sum(v) / len(v)) for t, v in sorted(at.items())][::-1]))
        return out


def _seconds(ts: Any) -> int:
    return int(ts.timestamp()) if ts else 0


def _parse(text: str) -> list[tuple[str, str, str]]:
    out = []
    for clause in re.split(r"\s+AND\s+", text.strip()):
        m = _CLAUSE.match(clause)
        if not m:
            raise _Invalid(f"the fake cannot read the filter clause {clause!r}")
        out.append((m[1], m[2], m[3]))
    return out


def _value(s: Series, key: str) -> str | None:
    if key == "metric.type":
        return s.metric_type
    if key == "resource.type":
        return s.resource_type
    kind, _, label = key.rpartition(".")
    if kind in ("metric.labels", "metric.label"):
        return s.metric_labels.get(label)
    if kind in ("resource.labels", "resource.label"):
        return s.resource_labels.get(label)
    if kind == "metadata.system_labels":
        return s.system_labels.get(label)
    raise _Invalid(f"the fake does not know the field {key!r}")


def _match(s: Series, key: str, op: str, want: str) -> bool:
    got = _value(s, key)
    return got == want if op == "=" else got != want


def _field(s: Series, key: str) -> str:
    return _value(s, key) or ""


def _align(points: list[tuple[int, float]], end: int, period: int) -> list[tuple[int, float]]:
    """Means per alignment period; periods end at `end` (the API aligns to the interval's end)."""
    buckets: dict[int, list[float]] = defaultdict(list)
    for t, v in points:
        buckets[end - math.floor((end - t) / period) * period].append(v)
    return sorted((t, sum(v) / len(v)) for t, v in buckets.items())


def _labels(s: Series, group_by: tuple[str, ...] | None) -> dict[str, Any]:
    """The identity of an output series: everything (no reduction) or only the grouped fields."""
    def keep(kind: str, labels: dict[str, str]) -> dict[str, str]:
        if group_by is None:
            return dict(labels)
        return {k: v for k, v in labels.items() if f"{kind}.label.{k}" in group_by or f"{kind}.labels.{k}" in group_by}

    system = dict(s.system_labels) if group_by is None else \
        {k: v for k, v in s.system_labels.items() if f"metadata.system_labels.{k}" in group_by}
    return {"type": s.metric_type, "metric": keep("metric", s.metric_labels),
            "resource": keep("resource", s.resource_labels), "resource_type": s.resource_type,
            "system": system if group_by is not None else {}}


def _fill(ts: Any, labels: dict[str, Any]) -> None:
    ts.metric.type = labels["type"]
    ts.metric.labels.update(labels["metric"])
    ts.resource.type = labels["resource_type"]
    ts.resource.labels.update(labels["resource"])
    if labels["system"]:
        ts.metadata.system_labels.update(labels["system"])
    ts.metric_kind = 1  # GAUGE
    ts.value_type = 3  # DOUBLE


@contextmanager
def serve_monitoring(fake: FakeMonitoring) -> Iterator[str]:
    """The MetricService's ListTimeSeries on 127.0.0.1; yields host:port (a plain-text gRPC target)."""
    import grpc
    from google.cloud import monitoring_v3

    handler = grpc.method_handlers_generic_handler("google.monitoring.v3.MetricService", {
        "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
            fake.list_time_series, request_deserializer=monitoring_v3.ListTimeSeriesRequest.deserialize,
            response_serializer=lambda message: message.SerializeToString()),
    })
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)
