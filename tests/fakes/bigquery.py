"""A fake of the BigQuery REST API calls `Client.query_and_wait` makes, holding one billing export table.

`jobs.query` (`POST /bigquery/v2/projects/<p>/queries`) answers the first page of rows; when there are more,
the client turns to the job: `jobs.getQueryResults` (`GET .../queries/<job>`, pages by `pageToken`) and
`jobs.get` (`GET .../jobs/<job>`). Rows go out in BigQuery's `f`/`v` form, timestamps as int64 microseconds
(the client asks for `useInt64Timestamp`), records nested, repeated fields as lists.

The fake does not parse SQL. It checks what it can of a query: standard SQL, named TIMESTAMP parameters `start`
and `end`, the table it holds named in backquotes, a `_PARTITIONTIME` filter (so a full scan is not billed);
it answers the rows whose `usage_start_time` is in [start, end), projected on the leaf columns the connector's
query selects (OUTPUT below), and reports bytes processed as 8 per leaf value. Faults a test sets: jobs in a
project of `denied` or on the table while `table_denied` answer 403 `accessDenied`; `throttle` calls answer
403 `rateLimitExceeded`, as BigQuery throttles.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .raw_http import Request, Response

# The output schema of the connector's query: (name, type, mode, subfields).
OUTPUT: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    ("usage_start_time", "TIMESTAMP", "NULLABLE", []),
    ("project", "RECORD", "NULLABLE", [("id", "STRING")]),
    ("service", "RECORD", "NULLABLE", [("description", "STRING")]),
    ("sku", "RECORD", "NULLABLE", [("description", "STRING")]),
    ("resource", "RECORD", "NULLABLE", [("name", "STRING"), ("global_name", "STRING")]),
    ("location", "RECORD", "NULLABLE", [("region", "STRING"), ("zone", "STRING")]),
    ("cost", "FLOAT", "NULLABLE", []),
    ("currency", "STRING", "NULLABLE", []),
    ("currency_conversion_rate", "FLOAT", "NULLABLE", []),
    ("usage", "RECORD", "NULLABLE", [("amount", "FLOAT")]),
    ("credits", "RECORD", "REPEATED", [("amount", "FLOAT"), ("type", "STRING")]),
]


@dataclass
class FakeBigQuery:
    table: str  # project.dataset.table
    rows: list[dict[str, Any]] = field(default_factory=list)  # export rows, as the export's JSON writes them
    denied: set[str] = field(default_factory=set)  # projects where jobs may not be created
    table_denied: bool = False
    throttle: int = 0
    page_rows: int = 100_000
    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # method, path, query
    _jobs: dict[str, list[list[Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_export(self, path: Path) -> int:
        """The rows of a billing export extract in JSON lines (as the simulator writes it)."""
        new = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        self.rows.extend(new)
        return len(new)

    def __call__(self, req: Request) -> Response:
        parts = req.path.strip("/").split("/")
        with self._lock:
            self.calls.append((req.method, req.path, dict(req.query)))
        if parts[:3] != ["bigquery", "v2", "projects"] or len(parts) < 5:
            return _error(404, "notFound", f"no route {req.method} {req.path}")
        project = parts[3]
        with self._lock:
            if project in self.denied:
                return _error(403, "accessDenied", f"Access Denied: Project {project}: User does not have "
                                                   f"bigquery.jobs.create permission in project {project}.")
            if self.throttle > 0:
                self.throttle -= 1
                return _error(403, "rateLimitExceeded", "Exceeded rate limits: too many api requests per user per "
                                                        "method for this user_method.")
        if req.method == "POST" and parts[4] == "queries" and len(parts) == 5:
            return self._query(project, json.loads(req.body or b"{}"))
        if req.method == "GET" and len(parts) == 6 and parts[4] in ("queries", "jobs") and parts[5] in self._jobs:
            return self._job(project, parts[4], parts[5], req.query)
        return _error(404, "notFound", f"no route {req.method} {req.path}")

    def _query(self, project: str, body: dict[str, Any]) -> Response:
        sql = str(body.get("query") or "")
        params = {p["name"]: p for p in body.get("queryParameters") or []}
        problems = []
        if body.get("useLegacySql", True):
            problems.append("legacy SQL")
        if f"`{self.table}`" not in sql:
            problems.append(f"the query does not name `{self.table}`")
        if "_PARTITIONTIME" not in sql:
            problems.append("no _PARTITIONTIME filter: the whole table would be scanned and billed")
        if set(params) != {"start", "end"} or any(p["parameterType"]["type"] != "TIMESTAMP" for p in params.values()):
            problems.append(f"parameters must be TIMESTAMP start and end, not {sorted(params)}")
        if problems:
            return _error(400, "invalidQuery", "; ".join(problems))
        if self.table_denied:
            return _error(403, "accessDenied", f"Access Denied: Table {self.table}: User does not have permission "
                                               "to query table (bigquery.tables.getData).")
        start, end = (_time(params[k]["parameterValue"]["value"]) for k in ("start", "end"))
        rows = [_encode(r) for r in self.rows if start <= _time(r["usage_start_time"]) < end]
        job = f"job_{len(self._jobs) + 1}"
        with self._lock:
            self._jobs[job] = rows
        answer = self._page(project, job, rows, 0, int(body.get("maxResults") or self.page_rows))
        answer["kind"] = "bigquery#queryResponse"
        return _json(answer)

    def _job(self, project: str, kind: str, job: str, query: dict[str, str]) -> Response:
        rows = self._jobs[job]
        if kind == "jobs":
            return _json({"kind": "bigquery#job", "id": f"{project}:US.{job}", "status": {"state": "DONE"},
                          "jobReference": {"projectId": project, "jobId": job, "location": "US"},
                          "configuration": {"jobType": "QUERY", "query": {"query": "", "useLegacySql": False}},
                          "statistics": {"query": {"totalBytesProcessed": str(_bytes(rows))}}})
        size = int(query.get("maxResults") or self.page_rows)
        answer = self._page(project, job, rows, int(query.get("pageToken") or 0), size)
        answer["kind"] = "bigquery#getQueryResultsResponse"
        return _json(answer)

    def _page(self, project: str, job: str, rows: list[Any], start: int, size: int) -> dict[str, Any]:
        size = max(1, min(size, self.page_rows)) if size else 0
        answer: dict[str, Any] = {
            "jobReference": {"projectId": project, "jobId": job, "location": "US"}, "jobComplete": True,
            "totalRows": str(len(rows)), "totalBytesProcessed": str(_bytes(rows)), "cacheHit": False,
            "schema": {"fields": [_field(*f) for f in OUTPUT]}, "rows": rows[start:start + size]}
        if size and start + size < len(rows):
            answer["pageToken"] = str(start + size)
        return answer


def _field(name: str, kind: str, mode: str, sub: list[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "type": kind, "mode": mode}
    if sub:
        out["fields"] = [{"name": n, "type": t, "mode": "NULLABLE"} for n, t in sub]
    return out


def _time(text: str) -> float:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00").replace(" UTC", "+00:00")).timestamp()


def _scalar(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "TIMESTAMP":
        return str(round(_time(value) * 1_000_000))
    return str(value)


def _encode(row: dict[str, Any]) -> dict[str, Any]:
    cells = []
    for name, kind, mode, sub in OUTPUT:
        value = row.get(name)
        if kind != "RECORD":
            cells.append({"v": _scalar(kind, value)})
        elif mode == "REPEATED":
            cells.append({"v": [{"v": {"f": [{"v": _scalar(t, (item or {}).get(n))} for n, t in sub]}}
                                for item in value or []]})
        else:
            cells.append({"v": {"f": [{"v": _scalar(t, (value or {}).get(n))} for n, t in sub]}})
    return {"f": cells}


def _bytes(rows: list[Any]) -> int:
    leaves = sum(len(sub) or 1 for _, _, _, sub in OUTPUT)
    return 8 * leaves * len(rows)


def _json(body: dict[str, Any]) -> Response:
    return Response(200, json.dumps(body).encode(), {"Content-Type": "application/json"})


def _error(status: int, reason: str, message: str) -> Response:
    body = {"error": {"code": status, "message": message, "status": "PERMISSION_DENIED" if status == 403 else "",
                      "errors": [{"reason": reason, "domain": "global", "message": message}]}}
    return Response(status, json.dumps(body).encode(), {"Content-Type": "application/json"})
