from __future__ import annotations

from spendwatch.models.rules.cpu_saturation import CpuSaturationRule


def test_flat_pegged_cpu_on_a_web_host_fires(build):
    util = build.util("i-web", [99.5] * 90, metric="cpu_util")
    inv = build.inventory([{"resource": "i-web", "instance_type": "m5.large", "tags": {"Name": "web-frontend"}}])
    hits = CpuSaturationRule().run(build.tables(utilization=util, inventory=inv))
    assert len(hits) == 1
    assert hits[0].rule == "cpu-saturation" and hits[0].family == "saturation"
    assert hits[0].belief <= 0.3 and hits[0].evidence.startswith("CPU utilisation of i-web")


def test_batch_worker_is_skipped(build):
    util = build.util("i-batch", [99.5] * 90, metric="cpu_util")
    inv = build.inventory([{"resource": "i-batch", "instance_type": "c5.4xlarge",
                            "tags": {"role": "batch-worker", "Name": "nightly"}}])
    assert CpuSaturationRule().run(build.tables(utilization=util, inventory=inv)) == []


def test_gpu_metric_is_not_read_as_cpu(build):
    util = build.util("i-a", [100.0] * 90, metric="gpu_util")
    assert CpuSaturationRule().run(build.tables(utilization=util)) == []


def test_cpu_miner_on_a_gpu_instance_ignores_batch_tags_and_weighs_more(build):
    import pandas as pd

    from spendwatch.models.rules import CpuSaturationRule

    inv = build.inventory([{"resource": "i-nb", "instance_type": "g4dn.2xlarge", "gpus": 1,
                            "tags": {"team": "ml", "role": "training"}},
                           {"resource": "i-batch", "instance_type": "c5.4xlarge", "tags": {"role": "batch"}}])
    util = pd.concat([build.util("i-nb", [99.3] * 120, metric="cpu_util"),
                      build.util("i-nb", [0.0] * 120, metric="gpu_util"),
                      build.util("i-batch", [99.3] * 120, metric="cpu_util")], ignore_index=True)
    hits = CpuSaturationRule().run(build.tables(utilization=util, inventory=inv))
    assert [h.resource for h in hits] == ["i-nb"]  # the tagged batch host is skipped, the GPU box is not
    assert hits[0].belief == 0.35 and hits[0].facts["gpu_mean_pct"] == 0.0 and "idle" in hits[0].evidence
