"""Hits and findings: what detection says, and the one finding type every sink renders.

A `Hit` is one piece of evidence from one rule (or the model) about one resource or principal: a belief in
0..1 that it is abuse, the time span it covers and a sentence with numbers a person can check. Fusion turns
the hits about one incident into a `Finding`, the contract with users and their tools (DESIGN.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any


class Severity(IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | int | Severity) -> Severity:
        if isinstance(value, Severity):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown severity {value!r}: expected one of {', '.join(s.label for s in cls)}"
            ) from None


STATUSES = ("open", "quarantined", "snoozed", "expected", "resolved")


@dataclass
class Hit:
    """One piece of evidence from one detector.

    `belief` is the detector's mass on "this is abuse" (Dempster-Shafer simple support); 1 - belief stays
    uncommitted. `against` is mass on "this is legitimate" (e.g. the dips of a training job), used by
    fusion to discount. `family` groups rules that see the same signal so fusion does not count one fact
    twice (two port rules on one flow are one piece of evidence).
    """

    rule: str
    cloud: str
    account: str
    resource: str | None
    principal: str | None
    start: datetime
    end: datetime
    belief: float
    evidence: str
    region: str | None = None
    family: str = ""
    against: float = 0.0
    principal_type: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.belief <= 1.0:
            raise ValueError(f"hit from {self.rule}: belief {self.belief} outside 0..1")
        if not 0.0 <= self.against <= 1.0 - self.belief + 1e-9:
            raise ValueError(f"hit from {self.rule}: against {self.against} with belief {self.belief}")
        if not self.family:
            self.family = self.rule


def finding_id(cloud: str, account: str, subject: str) -> str:
    """Stable id of the incident on one subject (resource or principal)."""
    digest = hashlib.sha256(f"{cloud}\x1f{account}\x1f{subject}".encode()).hexdigest()
    return f"sw-{digest[:16]}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


@dataclass
class Finding:
    """One incident on one resource (or one principal), kept up to date while it lasts."""

    id: str
    cloud: str
    account: str
    region: str | None
    resource: str | None
    principal: str | None
    severity: Severity
    score: float
    rules: list[str]
    evidence: list[str]
    first_seen: datetime
    last_seen: datetime
    detected_at: datetime
    hourly_cost_usd: float | None
    summary: str
    status: str = "open"
    principal_type: str | None = None
    instance_type: str | None = None
    related: list[str] = field(default_factory=list)  # other resources of the same principal's incident

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["severity"] = self.severity.label
        data["score"] = round(self.score, 4)
        data["hourly_cost_usd"] = None if self.hourly_cost_usd is None else round(self.hourly_cost_usd, 4)
        for key in ("first_seen", "last_seen", "detected_at"):
            data[key] = _iso(getattr(self, key))
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        kwargs = dict(data)
        kwargs["severity"] = Severity.parse(data["severity"])
        for key in ("first_seen", "last_seen", "detected_at"):
            kwargs[key] = datetime.fromisoformat(data[key].replace("Z", "+00:00"))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in kwargs.items() if k in known})
