"""A fake of Azure Monitor's `metrics:getBatch`, for the real azure-monitor-querymetrics MetricsClient.

`POST /<region>/subscriptions/<sub>/metrics:getBatch?starttime&endtime&interval&metricnamespace&metricnames&
aggregation&api-version` with `{"resourceids": [...]}` (the test's endpoint template is
`https://127.0.0.1:PORT/{region}`, so the region each call went to is seen and checked). As the service does:
at most 50 resource ids, all of the path's subscription and of the endpoint's region (else 400
BadRequest), `PT1M` grain means of the minutes in [starttime, endtime), one result per resource, whose metric
id is `<resource id>/providers/Microsoft.Insights/metrics/<name>`, resource ids answered as the service writes
them (its own case). Requests must carry a bearer token.

Faults a test sets: subscriptions in `denied` answer 403 AuthorizationFailed; `throttle` calls answer 429 with
`Retry-After: 1`. `add_simulated` loads the simulator's `insights-metrics-pt1m` blobs (the same minutes Azure
Monitor would serve).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .raw_http import Request, Response

MAX_IDS = 50


@dataclass
class FakeAzureMetrics:
    points: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # lower-case resource id -> minutes
    names: dict[str, str] = field(default_factory=dict)  # lower-case resource id -> id as the service writes it
    regions: dict[str, str] = field(default_factory=dict)  # lower-case resource id -> region
    denied: set[str] = field(default_factory=set)
    throttle: int = 0
    calls: list[tuple[str, str, list[str], dict[str, str]]] = field(default_factory=list)  # region, sub, ids, query
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, resource_id: str, region: str, minutes: list[tuple[int, float]]) -> None:
        key = resource_id.lower()
        self.names[key], self.regions[key] = resource_id, region
        self.points.setdefault(key, []).extend(minutes)

    def add_simulated(self, container: Path, region: str) -> list[str]:
        """Every minute of every `PT1H.json` under the simulator's `insights-metrics-pt1m` folder; the ids."""
        found: dict[str, list[tuple[int, float]]] = {}
        names: dict[str, str] = {}
        for path in sorted(container.rglob("PT1H.json")):
            for line in path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    when = datetime.fromisoformat(rec["time"].replace("Z", "+00:00"))
                    names[rec["resourceId"].lower()] = rec["resourceId"]
                    found.setdefault(rec["resourceId"].lower(), []).append((int(when.timestamp()), rec["average"]))
        for key, minutes in found.items():
            self.add(names[key], region, minutes)
        return sorted(names.values())

    def __call__(self, req: Request) -> Response:
        parts = req.path.strip("/").split("/")
        # <region>/subscriptions/<sub>/metrics:getBatch
        if len(parts) != 4 or parts[1] != "subscriptions" or parts[3] != "metrics:getBatch" or req.method != "POST":
            return _error(404, "NotFound", f"no route {req.method} {req.path}")
        region, sub = parts[0], parts[2].lower()
        if not req.headers.get("authorization", "").startswith("Bearer "):
            return _error(401, "AuthenticationFailed", "no bearer token")
        ids = [str(r) for r in json.loads(req.body or b"{}").get("resourceids", [])]
        with self._lock:
            self.calls.append((region, sub, ids, dict(req.query)))
            if sub in self.denied:
                return _error(403, "AuthorizationFailed", f"The client does not have authorization to perform "
                                                          f"action 'Microsoft.Insights/Metrics/Read' over scope "
                                                          f"'/subscriptions/{sub}'")
            if self.throttle > 0:
                self.throttle -= 1
                return _error(429, "TooManyRequests", "throttled", {"Retry-After": "1"})
        q = req.query
        if not ids or len(ids) > MAX_IDS:
            return _error(400, "BadRequest", f"between 1 and {MAX_IDS} resource ids, not {len(ids)}")
        if q.get("interval") != "PT1M" or q.get("aggregation", "").lower() != "average" or \
                q.get("metricnamespace", "").lower() != "microsoft.compute/virtualmachines":
            return _error(400, "BadRequest", f"the fake serves PT1M averages of virtual machines, not {q}")
        start, end = (int(datetime.fromisoformat(q[k].replace("Z", "+00:00")).timestamp()) for k in
                      ("starttime", "endtime"))
        values = []
        for rid in ids:
            key = rid.lower()
            if not key.startswith(f"/subscriptions/{sub}/"):
                return _error(400, "BadRequest", f"{rid} is not in subscription {sub}")
            if self.regions.get(key, region) != region:
                return _error(400, "BadRequest", f"{rid} is in {self.regions[key]}, not {region}")
            data = [{"timeStamp": datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "average": v}
                    for t, v in sorted(self.points.get(key, [])) if start <= t < end]
            name = self.names.get(key, rid)
            values.append({
                "starttime": q["starttime"], "endtime": q["endtime"], "interval": "PT1M",
                "namespace": "microsoft.compute/virtualmachines", "resourceregion": region, "resourceid": name,
                "value": [{"id": f"{name}/providers/Microsoft.Insights/metrics/{q['metricnames']}",
                           "type": "Microsoft.Insights/metrics",
                           "name": {"value": q["metricnames"], "localizedValue": q["metricnames"]},
                           "displayDescription": "The percentage of allocated compute units in use by the VM(s)",
                           "unit": "Percent", "errorCode": "Success",
                           "timeseries": [{"metadatavalues": [], "data": data}]}],
            })
        return Response(200, json.dumps({"values": values}).encode(), {"Content-Type": "application/json"})


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})})
