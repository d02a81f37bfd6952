"""quota-recon: quota look-ups across regions, increase requests, then GPU launches."""

from __future__ import annotations

from spendwatch.models.rules import QuotaReconRule

AGENT = "arn:aws:iam::012345678901:role/bedrock-agent-ops"
ADMIN = "arn:aws:iam::012345678901:role/admin"


def test_agent_recon_across_regions_then_a_gpu_launch(build):
    rows = [{"time": build.at(k), "principal": AGENT, "principal_type": "agent", "action": "quota_lookup",
             "region": r, "resource": "L-DB2E81BA"} for k, r in enumerate(("us-east-1", "us-west-2", "eu-west-1",
                                                                          "ap-southeast-1"))]
    rows.append({"time": build.at(5), "principal": AGENT, "principal_type": "agent", "action": "quota_request",
                 "region": "ap-southeast-1", "resource": "L-DB2E81BA"})
    rows.append({"time": build.at(20), "principal": AGENT, "principal_type": "agent", "action": "launch",
                 "region": "ap-southeast-1", "resource": "i-1", "instance_type": "g5.12xlarge"})
    hits = QuotaReconRule().run(build.tables(activity=build.activity(rows)))
    assert len(hits) == 1
    h = hits[0]
    assert h.resource is None and h.principal == AGENT and h.family == "recon"
    assert h.facts == {"lookups": 4, "regions": 4, "requests": 1, "gpu_launches_after": 1}
    assert h.belief == 0.6  # capped; agents weigh 1.3


def test_a_person_checking_one_region_does_not_fire(build):
    rows = [{"time": build.at(k * 30), "principal": ADMIN, "principal_type": "human", "action": "quota_lookup",
             "region": "us-east-1", "resource": "L-1216C47A"} for k in range(5)]
    assert QuotaReconRule().run(build.tables(activity=build.activity(rows))) == []
