"""Findings for the sink tests: one factory with sensible defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spendwatch.findings import Finding, Severity, finding_id

T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)


def make_finding(resource: str = "i-0abc", **kw: object) -> Finding:
    base: dict[str, object] = dict(
        id=finding_id("aws", "012345678901", resource), cloud="aws", account="012345678901", region="ap-southeast-1",
        resource=resource, principal="arn:aws:iam::012345678901:role/bedrock-agent-ops",
        severity=Severity.CRITICAL, score=0.97, rules=["pool-domain", "gpu-saturation"],
        evidence=["queried gulf.moneroocean.stream 14 times", "GPU at 99-100% for 5 h"],
        first_seen=T0 - timedelta(hours=5), last_seen=T0, detected_at=T0, hourly_cost_usd=5.672,
        summary=f"Likely GPU mining on {resource}; $5.67/h", principal_type="agent", instance_type="g5.12xlarge",
    )
    base.update(kw)
    return Finding(**base)  # type: ignore[arg-type]
