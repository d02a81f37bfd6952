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
    loose = MinerFlowShapeConfig(max_bin_cv=10.0)  # isolate the guard from the unevenness one
    assert len(MinerFlowShapeRule(loose).run(tables)) == 1  # 15 KB/min at its peak: still a trickle
    strict = MinerFlowShapeConfig(max_bin_bytes_per_minute=10_000, max_bin_cv=10.0)
    assert MinerFlowShapeRule(strict).run(tables) == []


def test_short_or_private_sessions_do_not_fire(build):
    short = build.steady_flows("i-a", "198.51.100.7", 3333, hours=1)
    private = build.steady_flows("i-b", "10.0.9.9", 3333, hours=4)
    assert MinerFlowShapeRule().run(build.tables(flows=build.flows(short + private))) == []


# ---- issue 3: evasions it must catch, hard negatives it must leave alone ---------------------------------------

def _dns_answers(build, rows):
    import pandas as pd

    from spendwatch.records import conform

    data = [{"time": build.at(i), "cloud": build.CLOUD, "account": build.ACCOUNT, "region": build.REGION,
             "resource": r, "query": q, "qtype": "A", "answers": a} for i, (r, q, a) in enumerate(rows)]
    return conform("dns", pd.DataFrame(data))


def test_stratum_over_tls_to_a_proxy_never_named_in_dns_gets_more_belief(build):
    rows = build.steady_flows("i-m", "45.76.133.10", 443, hours=4)
    dns = _dns_answers(build, [("i-m", "sts.us-east-1.amazonaws.com", "3.236.64.20")])  # DNS logs exist
    hits = MinerFlowShapeRule().run(build.tables(flows=build.flows(rows), dns=dns))
    assert len(hits) == 1 and hits[0].facts["naming"] == "unnamed" and hits[0].belief == 0.45
    named = _dns_answers(build, [("i-m", "telemetry.vendor.example", "45.76.133.10")])
    hits = MinerFlowShapeRule().run(build.tables(flows=build.flows(rows), dns=named))
    assert hits[0].facts["naming"] == "named" and hits[0].belief == 0.3


def _pair(build, resource, local, peer, lport, pport, *, hours, out_b, in_b, out_p, in_p, proto=6, step=10,
          jitter=None):
    """Two records per step for one conversation, as the resource's interface logs them."""
    rows = []
    for i in range(int(hours * 60 / step)):
        k = 1.0 if jitter is None else jitter[i % len(jitter)]
        t = build.at(i * step)
        rows.append({"start": t, "end": build.at(i * step + step - 1), "resource": resource, "src": local,
                     "dst": peer, "src_port": lport, "dst_port": pport, "protocol": proto,
                     "packets": max(1, int(out_p * k)), "bytes": int(out_b * k), "direction": "egress"})
        rows.append({"start": t, "end": build.at(i * step + step - 1), "resource": resource, "src": peer,
                     "dst": local, "src_port": pport, "dst_port": lport, "protocol": proto,
                     "packets": max(1, int(in_p * k)), "bytes": int(in_b * k), "direction": "ingress"})
    return rows


def test_hard_negatives_ntp_monitoring_ssh_replication_mirrors(build):
    ip = "10.0.1.5"
    rows = []
    # NTP: UDP 123, 76-byte packets, steady all day
    rows += _pair(build, "i-ntp", ip, "162.159.200.1", 40123, 123, hours=6, out_b=760, in_b=760, out_p=10, in_p=10,
                  proto=17)
    # a monitoring agent posting metrics every 15 s over HTTPS: compressed bodies fill packets
    rows += _pair(build, "i-mon", ip, "3.233.146.10", 44000, 443, hours=6, out_b=40_000, in_b=6_000, out_p=40,
                  in_p=40)
    # an SSH session to the host (it is the server on 22): small packets, uneven
    rows += _pair(build, "i-ssh", ip, "81.2.69.160", 22, 51515, hours=6, out_b=20_000, in_b=4_000, out_p=160,
                  in_p=40, jitter=[0.1, 3.0, 0.2, 1.5, 0.05, 2.5])
    # the same host ssh-ing out to a bastion: port 22 is never Stratum
    rows += _pair(build, "i-ssh", ip, "81.2.69.161", 51000, 22, hours=6, out_b=12_000, in_b=12_000, out_p=100,
                  in_p=100)
    # database replication to a replica over public addresses: its port, and bulk
    rows += _pair(build, "i-db", ip, "52.1.2.3", 45000, 5432, hours=6, out_b=2_000_000, in_b=30_000, out_p=1_400,
                  in_p=500)
    # a low-traffic replication heartbeat on 3306: small and steady, but a database port
    rows += _pair(build, "i-db", ip, "52.1.2.4", 45001, 3306, hours=6, out_b=15_000, in_b=15_000, out_p=120,
                  in_p=120)
    # package mirror: bulk downloads at MTU-sized packets
    rows += _pair(build, "i-apt", ip, "91.189.91.81", 46000, 80, hours=6, out_b=60_000, in_b=50_000_000,
                  out_p=900, in_p=35_000)
    assert MinerFlowShapeRule().run(build.tables(flows=build.flows(rows))) == []
