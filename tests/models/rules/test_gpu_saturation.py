from __future__ import annotations

from spendwatch.findings import Severity
from spendwatch.models.fusion import score, severity_of
from spendwatch.models.rules.gpu_saturation import GpuSaturationConfig, GpuSaturationRule


def test_flat_full_gpu_fires_low(build):
    util = build.util("i-miner", [100.0] * 120, devices=4)
    hits = GpuSaturationRule().run(build.tables(utilization=util))
    assert len(hits) == 1
    hit = hits[0]
    assert hit.belief == 0.3 and hit.against == 0.0 and hit.facts["shape"] == "flat"
    assert "mean of 4 devices" in hit.evidence and "2.0 h" in hit.evidence
    assert severity_of(score(hits)) == Severity.LOW


def test_training_series_with_dips_and_big_ingress_stays_at_most_low(build):
    util = build.util("i-train", build.training_gpu(6, period_min=60), devices=8)
    ingress = [{"start": build.at(10 * i), "resource": "i-train", "src": "52.216.8.8", "dst": "10.0.2.9",
                "src_port": 443, "dst_port": 50000, "packets": 700_000, "bytes": 1_000_000_000,
                "direction": "ingress"} for i in range(30)]
    hits = GpuSaturationRule().run(build.tables(utilization=util, flows=build.flows(ingress)))
    assert len(hits) == 1
    assert hits[0].facts["shape"] == "training" and hits[0].against > 0
    assert "about every 60 min" in hits[0].evidence
    assert severity_of(score(hits)) <= Severity.LOW


def test_short_or_low_utilisation_does_not_fire(build):
    short = build.util("i-a", [100.0] * 20)  # 19 minutes
    low = build.util("i-b", [70.0] * 120)
    holes = build.util("i-c", [100.0] * 8, step_min=20)  # samples 20 min apart: no sustained evidence
    tables = build.tables(utilization=__import__("pandas").concat([short, low, holes]))
    assert GpuSaturationRule().run(tables) == []


def test_thresholds_are_configurable(build):
    util = build.util("i-a", [100.0] * 45)
    assert len(GpuSaturationRule().run(build.tables(utilization=util))) == 1
    cfg = GpuSaturationConfig(min_minutes=60)
    assert GpuSaturationRule(cfg).run(build.tables(utilization=util)) == []


def test_flat_pegged_gpu_with_bulk_ingress_is_weaker(build):
    from spendwatch.models.rules import GpuSaturationRule

    util = build.util("i-n", [99.6] * 180)
    flows = build.flows([{"start": build.at(10 * i), "resource": "i-n", "src": "52.216.1.1", "dst": "10.0.2.9",
                          "src_port": 443, "dst_port": 50000, "packets": 800_000, "bytes": 1_100_000_000,
                          "direction": "ingress"} for i in range(3)])
    hits = GpuSaturationRule().run(build.tables(utilization=util, flows=flows))
    assert hits[0].facts["shape"] == "flat-ingress" and hits[0].belief == 0.2
