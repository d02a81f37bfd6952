"""OCSF Detection Finding: every rendered finding validates against the class's required attributes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from spendwatch.delivery import SinkConfig, enqueue, flush
from spendwatch.findings import STATUSES, Severity
from spendwatch.sinks.ocsf import REQUIRED, to_ocsf, validate
from spendwatch.store import Store
from tests.fakes.findings import T0, make_finding

VARIANTS = [
    make_finding(),
    make_finding(id="sw-info", severity=Severity.INFO, principal=None, principal_type=None, hourly_cost_usd=None,
                 evidence=[]),
    make_finding(id="sw-gcp", cloud="gcp", account="ml-prod", region="us-central1",
                 resource="projects/ml-prod/zones/us-central1-a/instances/train-7"),
    make_finding(id="sw-azure", cloud="azure", account="0000-sub", region=None, resource=None, principal="agent@corp"),
]


@pytest.mark.parametrize("activity", ["create", "update", "close"])
@pytest.mark.parametrize("n", range(len(VARIANTS)))
def test_every_rendered_finding_validates(n: int, activity: str) -> None:
    for status in STATUSES:
        f = replace(VARIANTS[n], status=status)
        event = to_ocsf(f, activity, delivery_id="x:y:z")
        assert validate(event) == [], (f, activity)
        assert json.loads(json.dumps(event)) == event  # JSON-ready


def test_mapping() -> None:
    f = make_finding()
    e = to_ocsf(f, "update")
    assert (e["class_uid"], e["category_uid"], e["activity_id"], e["type_uid"]) == (2004, 2, 2, 200402)
    assert e["severity_id"] == 5 and e["severity"] == "Critical" and e["status_id"] == 1
    assert e["finding_info"]["uid"] == f.id and e["finding_info"]["first_seen_time"] < e["finding_info"][
        "last_seen_time"]
    assert e["cloud"] == {"provider": "AWS", "account": {"uid": "012345678901"}, "region": "ap-southeast-1"}
    assert e["resources"][0]["uid"] == "i-0abc" and e["resources"][0]["cloud_partition"] == "aws"
    assert [x["data"]["text"] for x in e["evidences"]] == f.evidence
    assert e["metadata"]["version"].startswith("1.") and e["metadata"]["product"]["vendor_name"] == "spendwatch"
    assert to_ocsf(replace(f, status="resolved"), "close")["status_id"] == 4
    # The sink maps the finding's severity; it never picks its own.
    assert [to_ocsf(replace(f, severity=s))["severity_id"] for s in Severity] == [1, 2, 3, 4, 5]


def test_validator_catches_what_is_missing() -> None:
    e = to_ocsf(make_finding())
    for obj, attrs in REQUIRED.items():
        for attr in attrs:
            broken = json.loads(json.dumps(e))
            node = broken
            for part in filter(None, obj.split(".")):
                node = node[part]
            del node[attr]
            assert any(p.startswith(f"{obj + '.' if obj else ''}{attr}") for p in validate(broken)), (obj, attr)
    assert "class_uid" in " ".join(validate({**e, "class_uid": 2001}))
    assert "type_uid" in " ".join(validate({**e, "type_uid": 200409}))
    assert validate({**e, "severity_id": 7})
    assert validate({**e, "time": "2026-11-20"})
    assert validate({**e, "resources": [{"type": "x"}]})


def test_ocsf_file_sink_through_the_outbox(tmp_path: Path) -> None:
    out = tmp_path / "ocsf" / "findings.jsonl"
    c = SinkConfig("lake", "ocsf", {"path": str(out)})
    with Store(tmp_path / "s.db") as store:
        enqueue(VARIANTS, [c], store, T0)
        enqueue(VARIANTS, [c], store, T0)
        res = flush(store, [c], T0)
        assert res.sinks["lake"].delivered == len(VARIANTS)
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(events) == len(VARIANTS) and all(validate(e) == [] for e in events)
    assert len({e["metadata"]["uid"] for e in events}) == len(VARIANTS)
