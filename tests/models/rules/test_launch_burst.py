"""launch-burst: a principal's GPU burst or regional fan-out against its own history."""

from __future__ import annotations

from spendwatch.models.rules import LaunchBurstRule

DEPLOY = "arn:aws:iam::012345678901:role/deploy"
CI = "arn:aws:iam::012345678901:role/ci"


def test_gpu_fan_out_after_a_quiet_history_fires_once_for_the_principal(build):
    rows = [{"time": build.at(-3000), "principal": DEPLOY, "principal_type": "role", "resource": "i-web",
             "instance_type": "m5.large"}]
    for k, region in enumerate(("us-west-2", "eu-central-1", "ap-northeast-1")):
        rows += [{"time": build.at(k * 2), "principal": DEPLOY, "principal_type": "role", "resource": f"i-{k}{j}",
                  "instance_type": "g5.2xlarge", "region": region, "spot": True} for j in range(3)]
    hits = LaunchBurstRule().run(build.tables(activity=build.activity(rows)))
    assert len(hits) == 1
    h = hits[0]
    assert h.resource is None and h.principal == DEPLOY and h.family == "burst"
    assert h.facts["burst"] and h.facts["fanout"] and h.facts["gpus"] == 9 and len(h.facts["resources"]) == 9
    assert h.belief > 0.5


def test_ci_bursts_like_earlier_ones_and_first_launches_do_not_fire(build):
    rows = []
    for day in range(3):  # a daily burst of six runners, then a release-day burst of ten
        n = 10 if day == 2 else 6
        rows += [{"time": build.at(day * 1440 + j), "principal": CI, "principal_type": "role",
                  "resource": f"i-ci{day}{j}", "instance_type": "c5.xlarge"} for j in range(n)]
    # a new principal's first launches: no history, one region: not this rule's business
    rows += [{"time": build.at(10 + j), "principal": DEPLOY, "principal_type": "role", "resource": f"i-g{j}",
              "instance_type": "g5.2xlarge"} for j in range(4)]
    assert LaunchBurstRule().run(build.tables(activity=build.activity(rows))) == []
