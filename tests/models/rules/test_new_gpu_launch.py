from __future__ import annotations

from spendwatch.models.rules.new_gpu_launch import NewGpuLaunchRule

AGENT = "arn:aws:iam::012345678901:role/ops-agent"
ML = "arn:aws:iam::012345678901:role/ml-train"


def _history(build):
    return [
        {"time": build.at(-20 * 1440), "principal": ML, "principal_type": "role", "resource": "i-p1",
         "instance_type": "p4d.24xlarge", "gpus": 8},
        {"time": build.at(-10 * 1440), "principal": ML, "principal_type": "role", "resource": "i-p2",
         "instance_type": "p4d.24xlarge", "gpus": 8},
        {"time": build.at(-5 * 1440), "principal": AGENT, "principal_type": "agent", "resource": "i-c1",
         "instance_type": "m5.large", "gpus": 0},
    ]


def test_first_gpu_launch_by_new_agent_in_new_region_fires(build):
    rows = [*_history(build),
            {"time": build.at(0), "principal": AGENT, "principal_type": "agent", "resource": "i-g1",
             "instance_type": "g5.12xlarge", "region": "ap-southeast-1"},
            {"time": build.at(3), "principal": AGENT, "principal_type": "agent", "resource": "i-g2",
             "instance_type": "g5.12xlarge", "region": "ap-southeast-1"}]
    hits = NewGpuLaunchRule().run(build.tables(activity=build.activity(rows)))
    assert sorted(h.resource for h in hits) == ["i-g1", "i-g2"]  # the burst is one first time
    hit = next(h for h in hits if h.resource == "i-g1")
    assert hit.principal == AGENT and hit.principal_type == "agent" and hit.family == "launch"
    assert hit.facts["new_principal"] and hit.facts["new_region"]
    assert hit.belief == 0.6  # (1 - 0.75 * 0.8) * 1.6, capped at 0.6
    assert "first GPU launch" in hit.evidence and "ap-southeast-1" in hit.evidence
    assert "(4 GPUs)" in hit.evidence  # from the instance catalogue


def test_established_ml_role_in_its_usual_region_does_not_fire(build):
    rows = [*_history(build),
            {"time": build.at(0), "principal": ML, "principal_type": "role", "resource": "i-p3",
             "instance_type": "p4d.24xlarge", "gpus": 8}]
    assert NewGpuLaunchRule().run(build.tables(activity=build.activity(rows))) == []


def test_human_weighs_less_than_agent_and_short_history_says_nothing(build):
    human = "arn:aws:iam::012345678901:user/alice"
    rows = [*_history(build),
            {"time": build.at(0), "principal": human, "principal_type": "human", "resource": "i-h",
             "instance_type": "g5.xlarge"}]
    hits = NewGpuLaunchRule().run(build.tables(activity=build.activity(rows)))
    assert len(hits) == 1 and hits[0].belief == 0.25
    fresh = [{"time": build.at(0), "principal": AGENT, "principal_type": "agent", "resource": "i-g",
              "instance_type": "g5.xlarge"}]
    assert NewGpuLaunchRule().run(build.tables(activity=build.activity(fresh))) == []


def test_failed_and_cpu_launches_are_ignored(build):
    rows = [*_history(build),
            {"time": build.at(0), "principal": AGENT, "principal_type": "agent", "resource": "i-x",
             "instance_type": "g5.xlarge", "error": "InsufficientInstanceCapacity"},
            {"time": build.at(1), "principal": "new-role", "principal_type": "role", "resource": "i-y",
             "instance_type": "m5.xlarge"}]
    assert NewGpuLaunchRule().run(build.tables(activity=build.activity(rows))) == []


def test_a_known_launcher_in_a_region_it_never_used_gets_the_small_part(build):
    from spendwatch.models.rules import NewGpuLaunchRule

    role = "arn:aws:iam::012345678901:role/ml"
    rows = [{"time": build.at(-3 * 1440), "principal": "arn:aws:iam::012345678901:role/other",
             "principal_type": "role", "resource": "i-x", "instance_type": "m5.large", "region": "eu-west-1"},
            {"time": build.at(-2 * 1440), "principal": role, "principal_type": "role", "resource": "i-0",
             "instance_type": "g5.2xlarge"},
            {"time": build.at(0), "principal": role, "principal_type": "role", "resource": "i-1",
             "instance_type": "g5.2xlarge", "region": "eu-west-1"}]
    hits = NewGpuLaunchRule().run(build.tables(activity=build.activity(rows)))
    by = {h.resource: h for h in hits}
    assert by["i-1"].facts["principal_new_region"] and by["i-1"].belief == 0.15
