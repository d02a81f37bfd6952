from __future__ import annotations

import json
from datetime import UTC, datetime

from spendwatch.findings import Finding, Severity
from spendwatch.report import RunReport
from spendwatch.sinks.slack import FIELD_MAX, HEADER_MAX, TEXT_MAX, alert_payload

T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)


def finding(**kw: object) -> Finding:
    base: dict[str, object] = dict(
        id="sw-1", cloud="aws", account="012345678901", region="ap-southeast-1", resource="i-0abc",
        principal="arn:aws:iam::012345678901:role/bedrock-agent-ops", severity=Severity.CRITICAL, score=0.97,
        rules=["pool-domain", "gpu-saturation"], evidence=["queried gulf.moneroocean.stream 14 times"],
        first_seen=T0, last_seen=T0, detected_at=T0, hourly_cost_usd=5.672,
        summary="Likely GPU mining on i-0abc; $5.67/h", principal_type="agent", instance_type="g5.12xlarge",
    )
    base.update(kw)
    return Finding(**base)  # type: ignore[arg-type]


def texts(payload: dict) -> str:
    return json.dumps(payload)


def test_alert_says_what_who_and_cost() -> None:
    payload = alert_payload(finding())
    body = texts(payload)
    assert "i-0abc" in body and "g5.12xlarge" in body
    assert "bedrock-agent-ops" in body and "(agent)" in body
    assert "$5.67/h" in body and "$136" in body  # 24 h projection
    assert "gulf.moneroocean.stream" in body
    assert payload["blocks"][0]["type"] == "header"
    [actions] = [b for b in payload["blocks"] if b["type"] == "actions"]
    assert "i-0abc" in actions["elements"][0]["url"]


def test_coverage_gaps_reach_the_footer() -> None:
    report = RunReport()
    report.gap("aws/111111111111/eu-west-1/flows", "AccessDenied")
    report.problem("a.log.gz", "corrupt gzip", records=3)
    body = texts(alert_payload(finding(), report))
    assert "coverage gaps" in body and "AccessDenied" in body
    assert "3 records could not be read" in body


def test_long_content_is_cut_to_slack_limits() -> None:
    payload = alert_payload(finding(summary="x" * 500, evidence=["e" * 1000] * 10, principal="p" * 3000))
    header = payload["blocks"][0]["text"]["text"]
    assert len(header) <= HEADER_MAX
    for block in payload["blocks"]:
        if block["type"] == "section":
            if "text" in block:
                assert len(block["text"]["text"]) <= TEXT_MAX
            for field in block.get("fields", []):
                assert len(field["text"]) <= FIELD_MAX
            assert len(block.get("fields", [])) <= 10


def test_unknown_cost_is_said_not_invented() -> None:
    assert "unknown" in texts(alert_payload(finding(hourly_cost_usd=None)))
