from __future__ import annotations

from spendwatch.models.rules.miner_flow_shape import MinerFlowShapeRule


def test_steady_tiny_session_fires(build):
    rows = build.steady_flows("i-miner", "198.51.100.7", 443, hours=3)
    hits = MinerFlowShapeRule().run(build.tables(flows=build.flows(rows)))
    assert len(hits) == 1
    hit = hits[0]
    assert hit.resource == "i-miner" and hit.family == "flow-shape" and hit.belief == 0.4
    assert "198.51.100.7:443" in hit.evidence and "125 bytes/packet" in hit.evidence
    assert "3.0 KB/min" in hit.evidence


def test_bulk_training_ingress_does_not_fire(build):
    rows = [{"start": build.at(i), "resource": "i-train", "src": "52.216.8.8", "dst": "10.0.2.9",
             "src_port": 443, "dst_port": 50000, "packets": 40_000, "bytes": 56_000_000, "direction": "ingress"}
            for i in range(240)]
    assert MinerFlowShapeRule().run(build.tables(flows=build.flows(rows))) == []


def test_steady_trickle_with_one_bulk_burst_does_not_fire(build):
    rows = build.steady_flows("i-a", "198.51.100.9", 3333, hours=3)
    rows.append({"start": build.at(50), "resource": "i-a", "src": "198.51.100.9", "dst": "10.0.1.5",
                 "src_port": 3333, "dst_port": 40000, "packets": 1_500, "bytes": 2_000_000, "direction": "ingress"})
    assert MinerFlowShapeRule().run(build.tables(flows=build.flows(rows))) == []


def test_busiest_interval_guard_alone_rejects_a_burst(build):
    from spendwatch.models.rules.miner_flow_shape import MinerFlowShapeConfig

    rows = build.steady_flows("i-a", "198.51.100.9", 3333, hours=3)
    rows.append({"start": build.at(50), "resource": "i-a", "src": "198.51.100.9", "dst": "10.0.1.5",
                 "src_port": 3333, "dst_port": 40000, "packets": 1_000, "bytes": 150_000, "direction": "ingress"})
    tables = build.tables(flows=build.flows(rows))
    assert len(MinerFlowShapeRule().run(tables)) == 1  # 15 KB/min at its peak: still a trickle
    strict = MinerFlowShapeConfig(max_bin_bytes_per_minute=10_000)
    assert MinerFlowShapeRule(strict).run(tables) == []


def test_short_or_private_sessions_do_not_fire(build):
    short = build.steady_flows("i-a", "198.51.100.7", 3333, hours=1)
    private = build.steady_flows("i-b", "10.0.9.9", 3333, hours=4)
    assert MinerFlowShapeRule().run(build.tables(flows=build.flows(short + private))) == []
