"""detect() end to end on a small organisation: one miner, one training job, one quiet host."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from spendwatch.findings import Finding, Hit, Severity, finding_id
from spendwatch.models import DetectionConfig, detect, run_detectors
from spendwatch.models.features import Features
from spendwatch.models.fusion import fuse

AGENT = "arn:aws:iam::012345678901:role/agent-x"
ML = "arn:aws:iam::012345678901:role/ml-train"


@pytest.fixture
def org(build):
    acts = [
        {"time": build.at(-3 * 1440), "principal": ML, "principal_type": "role", "resource": "i-old",
         "instance_type": "p4d.24xlarge", "gpus": 8},
        {"time": build.at(-2 * 1440), "principal": AGENT, "principal_type": "agent", "resource": "i-cpu",
         "instance_type": "m5.large", "gpus": 0},
        {"time": build.at(-5), "principal": AGENT, "principal_type": "agent", "resource": "i-0abc",
         "instance_type": "g5.12xlarge", "region": "ap-southeast-1"},
        {"time": build.at(-5), "principal": ML, "principal_type": "role", "resource": "i-train",
         "instance_type": "p4d.24xlarge", "gpus": 8},
    ]
    inv = build.inventory([
        {"resource": "i-0abc", "instance_type": "g5.12xlarge", "gpus": 4, "region": "ap-southeast-1",
         "launched_by": AGENT, "launched_by_type": "agent", "launched_at": build.at(-5)},
        {"resource": "i-train", "instance_type": "p4d.24xlarge", "gpus": 8, "launched_by": ML,
         "launched_by_type": "role", "launched_at": build.at(-5), "tags": {"role": "training"}},
    ])
    util = pd.concat([build.util("i-0abc", [100.0] * 360, devices=4),
                      build.util("i-train", build.training_gpu(6), devices=8)], ignore_index=True)
    flows = build.steady_flows("i-0abc", "198.51.100.7", 3333, hours=5)
    flows += [{"start": build.at(10 * i), "resource": "i-train", "src": "52.216.1.1", "dst": "10.0.2.9",
               "src_port": 443, "dst_port": 50000, "packets": 800_000, "bytes": 1_100_000_000,
               "direction": "ingress"} for i in range(30)]
    dns = build.dns([("i-0abc", "xmr-eu1.nanopool.org")] * 5 + [("i-train", "api.coingecko.com")])
    spend = pd.concat([build.spend("i-0abc", 5.0, 2), build.spend("i-0abc", 5.67, 6)], ignore_index=True)
    return build.tables(activity=build.activity(acts), inventory=inv, utilization=util, flows=build.flows(flows),
                        dns=dns, spend=spend)


def test_miner_is_critical_and_training_is_not_reported(org, build):
    findings = detect(org)
    assert [f.resource for f in findings] == ["i-0abc"]
    f = findings[0]
    assert f.severity == Severity.CRITICAL and f.score >= 0.88
    assert set(f.rules) == {"pool-domain", "stratum-port", "miner-flow-shape", "gpu-saturation", "new-gpu-launch"}
    assert f.id == finding_id("aws", build.ACCOUNT, "i-0abc")
    assert (f.principal, f.principal_type, f.instance_type, f.region) == (AGENT, "agent", "g5.12xlarge",
                                                                           "ap-southeast-1")
    assert f.hourly_cost_usd == pytest.approx(5.67)  # mean of the last 3 billed hours
    assert f.summary == ("Likely GPU crypto-mining on i-0abc (g5.12xlarge, ap-southeast-1) launched by agent "
                         "role agent-x; $5.67/h")
    assert f.first_seen == build.at(-5) and f.last_seen == build.at(359)
    assert f.detected_at == build.at(359)  # default now: the latest timestamp in the data
    assert any("Cost: $5.67/h" in e for e in f.evidence)
    assert Finding.from_json(f.to_json()).id == f.id


def test_now_and_config_overrides(org):
    now = datetime(2026, 3, 3, tzinfo=UTC)
    cfg = DetectionConfig().with_overrides({"disabled": ["pool-domain", "new-gpu-launch"],
                                            "fusion": {"min_severity": "info"}})
    findings = detect(org, config=cfg, now=now)
    miner = next(f for f in findings if f.resource == "i-0abc")
    assert miner.detected_at == now and "pool-domain" not in miner.rules
    assert miner.severity == Severity.HIGH  # port + flow shape + flat GPU, no domain, no launch
    assert any(f.resource == "i-train" and f.severity == Severity.INFO for f in findings)
    with pytest.raises(ValueError, match="unknown"):
        DetectionConfig().with_overrides({"gpu_saturation": {"nope": 1}})


def test_list_price_is_the_fallback_cost(org, build):
    org.spend = org.spend.iloc[0:0]
    f = detect(org)[0]
    assert f.hourly_cost_usd == pytest.approx(5.672)  # g5.12xlarge list price in the catalogue
    assert any("list price" in e for e in f.evidence)


def test_principal_level_hits_attach_to_launched_resources_or_stand_alone(org, build):
    features = Features(org)
    hits = run_detectors(org, features=features)
    launch = next(h for h in hits if h.rule == "new-gpu-launch")
    principal_hit = Hit(**{**launch.__dict__, "resource": None})
    others = [h for h in hits if h.rule != "new-gpu-launch"]
    attached = fuse([*others, principal_hit], features, now=build.at(400))
    assert "new-gpu-launch" in attached[0].rules and attached[0].resource == "i-0abc"
    alone = fuse([Hit(**{**principal_hit.__dict__, "principal": "arn:aws:iam::012345678901:role/ghost"})],
                 features, now=build.at(400))
    assert len(alone) == 1 and alone[0].resource is None
    assert alone[0].id == finding_id("aws", build.ACCOUNT, "principal:arn:aws:iam::012345678901:role/ghost")
