"""A fake of the Cost Management query API (`POST /subscriptions/<sub>/providers/Microsoft.CostManagement/query`)
for the real azure-mgmt-costmanagement client, over plain http (`allow_http` in the connector's options).

As the service does: `ActualCost`, `Custom` time period, `Daily` granularity, `Sum` aggregations of `Cost` and
`CostUSD`, at most two `Dimension` groupings; answers `properties.columns` (aggregations first, then
`UsageDate` as a yyyymmdd number, the groupings, `Currency`) and `properties.rows`, cut into pages of
`page_rows` with a `nextLink` carrying `$skiptoken`. Anything else is a 400, so a query the real API would read
differently fails here. Requests must carry a bearer token.

Faults a test sets: subscriptions in `denied` answer 403 AuthorizationFailed; `throttle` calls answer 429 with
Cost Management's own retry-after headers and Retry-After. `add_export` loads the simulator's cost export CSV.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from .http import Handler
from .raw_http import Handler as RawHandler
from .raw_http import Request, Response

DIMENSIONS = {"ResourceId": "resource_id", "MeterCategory": "meter_category"}


@dataclass
class CostRow:
    subscription: str
    day: date
    resource_id: str
    meter_category: str
    cost_usd: float


@dataclass
class FakeCostManagement:
    rows: list[CostRow] = field(default_factory=list)
    denied: set[str] = field(default_factory=set)
    throttle: int = 0
    page_rows: int = 5000
    base_url: str = ""  # set once the server runs: nextLinks are absolute
    calls: list[tuple[str, dict[str, object], str]] = field(default_factory=list)  # sub, body, skiptoken
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_export(self, path: Path) -> int:
        """The rows of a Cost Management export CSV (as the simulator writes it); returns how many."""
        n = 0
        for rec in csv.DictReader(io.StringIO(path.read_text())):
            self.rows.append(CostRow(rec["SubscriptionId"].lower(), datetime.strptime(rec["Date"], "%m/%d/%Y").date(),
                                     rec["ResourceId"].lower(), rec["MeterCategory"], float(rec["costInUsd"])))
            n += 1
        return n

    def __call__(self, req: Request) -> Response:
        parts = req.path.strip("/").split("/")
        if req.method != "POST" or len(parts) != 5 or parts[0] != "subscriptions" or \
                parts[2:] != ["providers", "Microsoft.CostManagement", "query"]:
            return _error(404, "NotFound", f"no route {req.method} {req.path}")
        if not req.headers.get("authorization", "").startswith("Bearer "):
            return _error(401, "AuthenticationFailed", "no bearer token")
        sub = parts[1].lower()
        body = json.loads(req.body or b"{}")
        token = req.query.get("$skiptoken", "")
        with self._lock:
            self.calls.append((sub, body, token))
            if sub in self.denied:
                return _error(403, "AuthorizationFailed", f"The client does not have authorization to perform action "
                                                          f"'Microsoft.CostManagement/query/read' over scope "
                                                          f"'/subscriptions/{sub}'")
            if self.throttle > 0:
                self.throttle -= 1
                return _error(429, "429", "Too many requests. Please retry.",
                              {"Retry-After": "1", "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after": "1"})
        try:
            columns, rows = self._answer(sub, body)
        except ValueError as exc:
            return _error(400, "BadRequest", str(exc))
        start = int(token or 0)
        props: dict[str, object] = {"columns": columns, "rows": rows[start:start + self.page_rows]}
        if start + self.page_rows < len(rows):
            props["nextLink"] = (f"{self.base_url}{req.path}?api-version={req.query.get('api-version')}"
                                 f"&$skiptoken={start + self.page_rows}")
        answer = {"id": f"subscriptions/{sub}/providers/Microsoft.CostManagement/query/q1", "name": "q1",
                  "type": "Microsoft.CostManagement/query", "properties": props}
        return Response(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    def _answer(self, sub: str, body: dict) -> tuple[list[dict[str, str]], list[list[object]]]:
        if body.get("type") != "ActualCost" or body.get("timeframe") != "Custom":
            raise ValueError("the fake answers ActualCost over a Custom time period only")
        dataset = body.get("dataset") or {}
        if dataset.get("granularity") != "Daily":
            raise ValueError("the fake answers Daily granularity only")
        aggregation = dataset.get("aggregation") or {}
        sums = [a["name"] for a in aggregation.values() if a.get("function") == "Sum"]
        if len(sums) != len(aggregation) or not set(sums) <= {"Cost", "CostUSD"}:
            raise ValueError(f"the fake sums Cost and CostUSD only, not {aggregation}")
        grouping = dataset.get("grouping") or []
        if len(grouping) > 2 or any(g.get("type") != "Dimension" or g.get("name") not in DIMENSIONS for g in grouping):
            raise ValueError(f"at most two Dimension groupings of {', '.join(DIMENSIONS)}, not {grouping}")
        period = body["timePeriod"]
        first = datetime.fromisoformat(period["from"].replace("Z", "+00:00")).date()
        last = datetime.fromisoformat(period["to"].replace("Z", "+00:00")).date()
        groups: dict[tuple[object, ...], float] = defaultdict(float)
        names = [g["name"] for g in grouping]
        for r in self.rows:
            if r.subscription == sub and first <= r.day <= last:
                key = (int(r.day.strftime("%Y%m%d")), *(getattr(r, DIMENSIONS[n]) for n in names))
                groups[key] += r.cost_usd
        columns = [{"name": n, "type": "Number"} for n in sums] + [{"name": "UsageDate", "type": "Number"}] + \
            [{"name": n, "type": "String"} for n in names] + [{"name": "Currency", "type": "String"}]
        rows = [[round(total, 6) for _ in sums] + [*key, "USD"] for key, total in sorted(groups.items())]
        return columns, rows


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})})


def beside_arm(arm: Handler, cost: FakeCostManagement) -> RawHandler:
    """One ARM endpoint that answers Cost Management queries with `cost` and everything else with `arm` (a
    `fakes.http` handler, such as `fakes.azure_arm.arm_handler`), as management.azure.com serves both."""
    def handle(req: Request) -> Response:
        if "/providers/Microsoft.CostManagement/" in req.path:
            return cost(req)
        status, body, headers = arm(req.method, req.path, req.query)
        return Response(status, json.dumps(body).encode(), {"Content-Type": "application/json", **headers})

    return handle
