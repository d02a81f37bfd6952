"""Microsoft Sentinel: each finding update as a row in a Log Analytics custom table (Logs Ingestion API).

Sentinel analytics rules query the table (e.g. `SpendwatchFindings_CL | where Severity in ("high",
"critical")`) and raise incidents; updates of the same incident share `FindingId`, and `DeliveryId`
(`sink:finding:version`) lets a query drop a row sent twice after a crash (`summarize arg_max(TimeGenerated,
*) by DeliveryId`). Rows go through azure-monitor-ingestion's `LogsIngestionClient.upload` to a Data
Collection Rule stream.

Settings::

    [sinks.sentinel]
    type = "sentinel"
    endpoint = "https://my-dce.westeurope-1.ingest.monitor.azure.com"   # the Data Collection Endpoint
    rule_id = "dcr-00000000000000000000000000000000"                     # the DCR's immutable id
    stream = "Custom-SpendwatchFindings_CL"

Credentials come from azure-identity's DefaultAzureCredential (managed identity, workload identity or the
environment); the identity needs "Monitoring Metrics Publisher" on the DCR. The table's columns are
`COLUMNS` below (create the table and the DCR's stream declaration with them). Azure's own retries are off
(`retry_total=0`): the outbox retries with backoff, and a down endpoint must not stall the other sinks.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..findings import Finding

if TYPE_CHECKING:
    from ..store import OutboxItem

COLUMNS = {
    "TimeGenerated": "datetime", "FindingId": "string", "DeliveryId": "string", "Activity": "string",
    "Cloud": "string", "Account": "string", "Region": "string", "Resource": "string", "Principal": "string",
    "PrincipalType": "string", "Severity": "string", "SeverityLevel": "int", "Score": "real",
    "Rules": "dynamic", "Evidence": "dynamic", "Summary": "string", "Status": "string",
    "HourlyCostUsd": "real", "FirstSeen": "datetime", "LastSeen": "datetime", "DetectedAt": "datetime",
    "InstanceType": "string",
}


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_row(f: Finding, *, activity: str, delivery_id: str, generated_at: datetime) -> dict[str, Any]:
    return {
        "TimeGenerated": _iso(generated_at), "FindingId": f.id, "DeliveryId": delivery_id, "Activity": activity,
        "Cloud": f.cloud, "Account": f.account, "Region": f.region or "", "Resource": f.resource or "",
        "Principal": f.principal or "", "PrincipalType": f.principal_type or "", "Severity": f.severity.label,
        "SeverityLevel": int(f.severity), "Score": round(f.score, 4), "Rules": list(f.rules),
        "Evidence": list(f.evidence), "Summary": f.summary, "Status": f.status,
        "HourlyCostUsd": f.hourly_cost_usd, "FirstSeen": _iso(f.first_seen), "LastSeen": _iso(f.last_seen),
        "DetectedAt": _iso(f.detected_at), "InstanceType": f.instance_type or "",
    }


def _http_allowed_policy(credential: Any, scope: str) -> Any:
    """Bearer auth that lets a token travel over plain http: for a local test endpoint only."""
    from azure.core.pipeline.policies import BearerTokenCredentialPolicy

    class _Policy(BearerTokenCredentialPolicy):
        def on_request(self, request: Any) -> None:
            request.context["enforce_https"] = False
            super().on_request(request)

    return _Policy(credential, scope)


class SentinelSink:
    """Uploads one row per update to a DCR stream."""

    def __init__(self, endpoint: str, rule_id: str, stream: str, *, credential: Any = None,
                 allow_http: bool = False, timeout_s: float = 15.0) -> None:
        self.endpoint, self.rule_id, self.stream = endpoint, rule_id, stream
        self.credential, self.allow_http, self.timeout_s = credential, allow_http, timeout_s
        self._client: Any = None

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any]) -> SentinelSink:
        from ..config import ConfigError

        missing = [k for k in ("endpoint", "rule_id", "stream") if not settings.get(k)]
        if missing:
            raise ConfigError(f"[sinks.{name}] needs {', '.join(missing)}")
        return cls(str(settings["endpoint"]), str(settings["rule_id"]), str(settings["stream"]),
                   allow_http=bool(settings.get("allow_http", False)))

    def client(self) -> Any:
        if self._client is None:
            from azure.monitor.ingestion import LogsIngestionClient

            credential = self.credential
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            kwargs: dict[str, Any] = {"retry_total": 0, "connection_timeout": self.timeout_s,
                                      "read_timeout": self.timeout_s}
            if self.allow_http:
                kwargs["authentication_policy"] = _http_allowed_policy(credential, "https://monitor.azure.com//.default")
            self._client = LogsIngestionClient(endpoint=self.endpoint, credential=credential, **kwargs)
        return self._client

    def send(self, item: OutboxItem) -> None:
        from azure.core.exceptions import AzureError, HttpResponseError

        from ..delivery import DeliveryError

        row = to_row(item.finding, activity=item.activity, delivery_id=item.delivery_id,
                     generated_at=datetime.fromtimestamp(item.enqueued_at, UTC))
        try:
            self.client().upload(rule_id=self.rule_id, stream_name=self.stream, logs=[row])
        except HttpResponseError as exc:
            code = int(exc.status_code or 0)
            transient = code in (408, 429) or code >= 500 or code == 0
            raise DeliveryError(f"Logs Ingestion HTTP {code}: {exc.message}", permanent=not transient) from None
        except AzureError as exc:
            raise DeliveryError(f"Logs Ingestion: {exc}") from None
