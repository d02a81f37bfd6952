"""AWS Security Hub: each finding as an ASFF finding imported with BatchImportFindings.

The ASFF `Id` is the finding's stable id (prefixed `spendwatch/`), so every update of an incident overwrites
the same Security Hub finding (a newer `UpdatedAt`) instead of adding one; a resolved finding is imported
with `RecordState: ARCHIVED` and `Workflow.Status: RESOLVED`. Findings go to the account's default product
(`arn:aws:securityhub:<region>:<account>:product/<account>/default`), which needs no partner integration.

Settings::

    [sinks.securityhub]
    type = "securityhub"
    region = "eu-west-1"          # where to import (default: the finding's region, else us-east-1)
    account_id = "012345678901"   # the importing account (default: the finding's account)
    # endpoint_url = "http://127.0.0.1:5000"   # tests only

Permissions: `securityhub:BatchImportFindings` on the product ARN. Limits: Security Hub accepts
`Workflow` from BatchImportFindings only when the finding is created; later workflow changes are
BatchUpdateFindings (the customer's side), so on real Security Hub an archived finding shows RecordState
ARCHIVED while its workflow may stay as the console left it. Severity is the finding's own label.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..findings import Finding, Severity
from .ocsf import description, title

if TYPE_CHECKING:
    from ..store import OutboxItem

LABELS = {Severity.INFO: "INFORMATIONAL", Severity.LOW: "LOW", Severity.MEDIUM: "MEDIUM", Severity.HIGH: "HIGH",
          Severity.CRITICAL: "CRITICAL"}
# ASFF types are namespace/category/classifier; the namespaces are fixed by AWS (TTPs, Effects, Unusual
# Behaviors, ...), the category and classifier are ours to choose. GuardDuty's miner findings use the same
# "Impact / Resource Consumption" ideas.
TYPES = ["TTPs/Impact/T1496-Resource Hijacking", "Effects/Resource Consumption/Cryptocurrency Mining",
         "Unusual Behaviors/VM/Cryptocurrency Mining"]
WORKFLOW = {"open": "NEW", "quarantined": "NOTIFIED", "snoozed": "SUPPRESSED", "expected": "SUPPRESSED",
            "resolved": "RESOLVED"}
GENERATOR_PREFIX = "spendwatch"


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def product_arn(region: str, account: str) -> str:
    return f"arn:aws:securityhub:{region}:{account}:product/{account}/default"


def asff_id(f: Finding) -> str:
    return f"spendwatch/{f.id}"


def to_asff(f: Finding, *, region: str, account: str, updated_at: datetime, activity: str = "update") -> dict[str, Any]:
    """One finding as an ASFF document. `updated_at` is when this version was produced (newer on each update)."""
    resource_id = f.resource or f.principal or f.id
    if f.cloud == "aws" and f.resource and f.resource.startswith("i-") and f.region:
        resource: dict[str, Any] = {"Type": "AwsEc2Instance",
                                    "Id": f"arn:aws:ec2:{f.region}:{f.account}:instance/{f.resource}",
                                    "Partition": "aws", "Region": f.region}
        if f.instance_type:
            resource["Details"] = {"AwsEc2Instance": {"Type": f.instance_type}}
    else:
        resource = {"Type": "Other", "Id": resource_id, "Partition": "aws", "Region": f.region or region}
    archived = f.status == "resolved" or activity == "close"
    doc: dict[str, Any] = {
        "SchemaVersion": "2018-10-08",
        "Id": asff_id(f),
        "ProductArn": product_arn(region, account),
        "ProductName": "spendwatch",
        "CompanyName": "spendwatch",
        "GeneratorId": f"{GENERATOR_PREFIX}/{'+'.join(sorted(f.rules)) or 'fusion'}"[:512],
        "AwsAccountId": f.account if f.cloud == "aws" else account,
        "Region": region,
        "Types": list(TYPES),
        "FirstObservedAt": _iso(f.first_seen),
        "LastObservedAt": _iso(f.last_seen),
        "CreatedAt": _iso(f.detected_at),
        "UpdatedAt": _iso(max(updated_at, f.detected_at)),
        "Severity": {"Label": LABELS[f.severity], "Original": f.severity.label},
        "Confidence": round(max(0.0, min(1.0, f.score)) * 100),
        "Title": title(f)[:256],
        "Description": description(f)[:1024],
        "Resources": [resource],
        "RecordState": "ARCHIVED" if archived else "ACTIVE",
        "Workflow": {"Status": WORKFLOW.get(f.status, "NEW")},
        "ProductFields": {"spendwatch/finding_id": f.id, "spendwatch/cloud": f.cloud, "spendwatch/status": f.status,
                          "spendwatch/rules": ",".join(f.rules), "spendwatch/score": f"{f.score:.4f}",
                          **({"spendwatch/hourly_cost_usd": f"{f.hourly_cost_usd:.4f}"}
                             if f.hourly_cost_usd is not None else {})},
    }
    if f.principal:
        doc["ProductFields"]["spendwatch/principal"] = f.principal[:1024]
    if f.cloud != "aws":
        doc["ProductFields"]["spendwatch/account"] = f.account
    return doc


class SecurityHubSink:
    """Imports each update with BatchImportFindings (one finding per call, so a rejection names its item)."""

    def __init__(self, *, region: str | None = None, account_id: str | None = None,
                 endpoint_url: str | None = None, client: Any = None) -> None:
        self.region, self.account_id, self.endpoint_url = region, account_id, endpoint_url
        self._clients: dict[str, Any] = {}
        if client is not None and region:
            self._clients[region] = client

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any]) -> SecurityHubSink:
        return cls(region=settings.get("region"), account_id=settings.get("account_id"),
                   endpoint_url=settings.get("endpoint_url"))

    def _client(self, region: str) -> Any:
        if region not in self._clients:
            import boto3

            self._clients[region] = boto3.client("securityhub", region_name=region, endpoint_url=self.endpoint_url)
        return self._clients[region]

    def send(self, item: OutboxItem) -> None:
        from datetime import UTC

        from botocore.exceptions import BotoCoreError, ClientError

        from ..delivery import DeliveryError

        f = item.finding
        region = self.region or (f.region if f.cloud == "aws" and f.region else "us-east-1")
        account = self.account_id or f.account
        doc = to_asff(f, region=region, account=account, activity=item.activity,
                      updated_at=datetime.fromtimestamp(item.enqueued_at, UTC))
        try:
            resp = self._client(region).batch_import_findings(Findings=[doc])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            permanent = code in ("InvalidInputException", "AccessDeniedException") and status < 500
            raise DeliveryError(f"{code}: {exc}", permanent=permanent) from None
        except BotoCoreError as exc:
            raise DeliveryError(str(exc)) from None
        if resp.get("FailedCount"):
            failed = resp.get("FailedFindings") or [{}]
            raise DeliveryError(f"{failed[0].get('ErrorCode')}: {failed[0].get('ErrorMessage')}", permanent=True)
