"""GCP Security Command Center: each finding as an SCC finding under the user's own source.

A new incident is `create_finding`; later versions are `update_finding` of the same name (SCC's update also
creates a finding that is missing, and a create answered AlreadyExists falls back to it), so the SCC finding
follows the incident. Resolved sets `state: INACTIVE`. Fields: category `RESOURCE_HIJACKING_CRYPTOMINING`,
finding_class THREAT, severity (the finding's own; info maps to LOW, SCC has no informational level),
event_time (last seen), resource_name (a full resource name for GCP instances), external_uri (the console
where known) and source_properties (every DESIGN.md field, evidence included).

Settings::

    [sinks.scc]
    type = "scc"
    source = "organizations/123456789/sources/987654321"   # create it once: gcloud scc sources create
    # api_endpoint = "http://127.0.0.1:8080"                 # tests only (REST, anonymous credentials)

Permissions: `securitycenter.findings.create` and `securitycenter.findings.update` on the source (the
role Security Center Findings Editor). The client is REST (`transport="rest"`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..findings import Finding, Severity

if TYPE_CHECKING:
    from ..store import OutboxItem

CATEGORY = "RESOURCE_HIJACKING_CRYPTOMINING"
SEVERITIES = {Severity.INFO: "LOW", Severity.LOW: "LOW", Severity.MEDIUM: "MEDIUM", Severity.HIGH: "HIGH",
              Severity.CRITICAL: "CRITICAL"}


def scc_finding_id(f: Finding) -> str:
    """SCC ids are 1-32 alphanumerics: our id without its dash."""
    return "".join(ch for ch in f.id if ch.isalnum())[:32]


def resource_name(f: Finding) -> str:
    r = f.resource or f.principal or f.id
    if f.cloud == "gcp" and r.startswith("projects/"):
        return f"//compute.googleapis.com/{r}"
    return r


def to_scc(f: Finding, source: str, activity: str = "update") -> dict[str, Any]:
    """The SCC Finding as a dict of its fields (the REST JSON names, snake_case as the Python client takes)."""
    from .slack import console_url

    props: dict[str, Any] = {
        "spendwatch_id": f.id, "cloud": f.cloud, "account": f.account, "region": f.region or "",
        "resource": f.resource or "", "principal": f.principal or "", "principal_type": f.principal_type or "",
        "severity": f.severity.label, "score": round(f.score, 4), "rules": list(f.rules),
        "evidence": list(f.evidence), "summary": f.summary, "status": f.status,
        "hourly_cost_usd": f.hourly_cost_usd if f.hourly_cost_usd is not None else -1,
        "first_seen": f.first_seen.isoformat(), "last_seen": f.last_seen.isoformat(),
        "instance_type": f.instance_type or "",
    }
    doc: dict[str, Any] = {
        "name": f"{source}/findings/{scc_finding_id(f)}",
        "parent": source,
        "resource_name": resource_name(f),
        "state": "INACTIVE" if f.status == "resolved" or activity == "close" else "ACTIVE",
        "category": CATEGORY,
        "finding_class": "THREAT",
        "severity": SEVERITIES[f.severity],
        "event_time": f.last_seen,
        "create_time": f.detected_at,
        "source_properties": props,
        "description": f.summary,
    }
    url = console_url(f)
    if url:
        doc["external_uri"] = url
    return doc


class SccSink:
    """Creates or updates one SCC finding per incident through google-cloud-securitycenter's client."""

    def __init__(self, source: str, *, client: Any = None, api_endpoint: str | None = None,
                 timeout_s: float = 15.0) -> None:
        self.source, self.api_endpoint, self.timeout_s = source, api_endpoint, timeout_s
        self._client = client

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any]) -> SccSink:
        from ..config import ConfigError

        source = str(settings.get("source") or "")
        if not source.startswith("organizations/") or "/sources/" not in source:
            raise ConfigError(f"[sinks.{name}] source must be organizations/ORG/sources/SOURCE")
        return cls(source, api_endpoint=settings.get("api_endpoint"))

    def client(self) -> Any:
        if self._client is None:
            from google.api_core.client_options import ClientOptions
            from google.cloud import securitycenter_v1

            kwargs: dict[str, Any] = {"transport": "rest"}
            if self.api_endpoint:
                from google.auth.credentials import AnonymousCredentials

                kwargs["client_options"] = ClientOptions(api_endpoint=self.api_endpoint)
                kwargs["credentials"] = AnonymousCredentials()
            self._client = securitycenter_v1.SecurityCenterClient(**kwargs)
        return self._client

    def send(self, item: OutboxItem) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud import securitycenter_v1

        from ..delivery import DeliveryError

        f = item.finding
        doc = to_scc(f, self.source, item.activity)
        finding = securitycenter_v1.Finding(**doc)
        client = self.client()
        try:
            if item.activity == "create":
                try:
                    # retry=None: the outbox retries with backoff; the client's own retries would stall the flush.
                    client.create_finding(parent=self.source, finding_id=scc_finding_id(f), finding=finding,
                                          retry=None, timeout=self.timeout_s)
                    return
                except gexc.AlreadyExists:
                    pass
            client.update_finding(finding=finding, retry=None, timeout=self.timeout_s)
        except gexc.GoogleAPICallError as exc:
            code = int(getattr(exc, "code", 0) or 0)
            transient = code in (408, 429) or code >= 500 or code == 0
            raise DeliveryError(f"SCC {code}: {exc.message}", permanent=not transient) from None
        except Exception as exc:  # transport errors (refused connection) surface as requests exceptions
            raise DeliveryError(f"SCC: {exc}") from None
