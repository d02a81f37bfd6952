from __future__ import annotations

from spendwatch.models.rules.stratum_port import StratumPortConfig, StratumPortRule


def _flow(build, src, dst, dport, direction="egress", **kw):
    return {"start": build.at(0), "resource": "i-a", "src": src, "dst": dst, "src_port": 40000,
            "dst_port": dport, "packets": 10, "bytes": 1200, "direction": direction, **kw}


def test_public_pool_port_fires_weakly(build):
    flows = build.flows([_flow(build, "10.0.1.5", "198.51.100.7", 3333)])
    hits = StratumPortRule().run(build.tables(flows=flows))
    assert len(hits) == 1
    assert hits[0].belief == 0.35 and hits[0].family == "pool-port"
    assert "3333 (128 pool endpoints in the 2018 census)" in hits[0].evidence
    assert "198.51.100.7:3333" in hits[0].evidence


def test_inbound_reply_from_pool_port_counts_with_unknown_direction(build):
    flows = build.flows([_flow(build, "198.51.100.7", "10.0.1.5", 40000, direction=None, src_port=14444)])
    hits = StratumPortRule().run(build.tables(flows=flows))
    assert len(hits) == 1 and hits[0].facts["ports"] == [14444]


def test_private_to_private_never_fires(build):
    rows = [_flow(build, "10.0.1.5", dst, 3333) for dst in
            ("10.0.2.9", "172.16.4.4", "192.168.1.1", "100.64.0.7", "127.0.0.1", "169.254.169.254")]
    rows.append(_flow(build, "fd00::5", "fd12:3456::1", 3333))
    rows.append(_flow(build, "fd00::5", "fe80::1", 3333))
    assert StratumPortRule().run(build.tables(flows=build.flows(rows))) == []


def test_ipv6_public_fires_and_ordinary_ports_do_not(build):
    rows = [_flow(build, "fd00::5", "2001:db8::77", 4444), _flow(build, "10.0.1.5", "198.51.100.8", 443),
            _flow(build, "10.0.1.5", "198.51.100.8", 80)]
    hits = StratumPortRule().run(build.tables(flows=build.flows(rows)))
    assert len(hits) == 1 and hits[0].facts["ports"] == [4444]


def test_rejected_flows_are_ignored_unless_asked(build):
    flows = build.flows([_flow(build, "10.0.1.5", "198.51.100.7", 3333, action="REJECT")])
    assert StratumPortRule().run(build.tables(flows=flows)) == []
    assert len(StratumPortRule(StratumPortConfig(include_rejected=True)).run(build.tables(flows=flows))) == 1


def test_web_server_reply_to_a_visitor_on_port_13333_does_not_fire(build):
    rows = [_flow(build, "203.0.113.9", "10.0.1.5", 443, direction=None, src_port=13333),
            _flow(build, "10.0.1.5", "203.0.113.9", 13333, direction=None, src_port=443),
            _flow(build, "10.0.1.5", "203.0.113.9", 13333, direction=None, src_port=8080)]
    assert StratumPortRule().run(build.tables(flows=build.flows(rows))) == []


def test_private_to_private_on_pool_ports_never_fires(build):
    from spendwatch.models.rules import StratumPortRule

    rows = build.steady_flows("i-ledger", "10.20.3.4", 3333, hours=2) + build.steady_flows(
        "i-web", "172.16.8.9", 4444, hours=2)
    assert StratumPortRule().run(build.tables(flows=build.flows(rows))) == []
