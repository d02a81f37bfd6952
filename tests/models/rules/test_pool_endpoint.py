"""pool-endpoint: traffic to addresses that pool names (and only pool names) resolved to in the account's DNS."""

from __future__ import annotations

import pandas as pd

from spendwatch.models.rules import PoolEndpointRule
from spendwatch.records import conform


def _dns(build, rows):
    data = [{"time": build.at(i), "cloud": build.CLOUD, "account": build.ACCOUNT, "region": build.REGION,
             "resource": r, "query": q, "qtype": "A", "answers": a} for i, (r, q, a) in enumerate(rows)]
    return conform("dns", pd.DataFrame(data))


def test_connection_to_a_pool_answer_fires_even_from_a_host_that_never_looked_it_up(build):
    # i-web resolved the pool; i-miner (third-party DNS) connects to the answer on 443
    dns = _dns(build, [("i-web", "gulf.moneroocean.stream", "141.94.96.71 141.94.96.144")])
    flows = build.flows(build.steady_flows("i-miner", "141.94.96.71", 443, hours=1))
    hits = PoolEndpointRule().run(build.tables(dns=dns, flows=flows))
    assert [h.resource for h in hits] == ["i-miner"]
    assert hits[0].family == "pool-intel" and "moneroocean.stream" in hits[0].evidence
    assert hits[0].facts["pools"] == ["moneroocean.stream"]


def test_shared_and_cdn_addresses_are_not_pool_evidence(build):
    dns = _dns(build, [
        ("i-a", "pool.supportxmr.com", "94.130.165.87"),
        ("i-b", "www.example-shop.com", "94.130.165.87"),  # the same address answers an ordinary name
        ("i-a", "xmr.2miners.com", "104.16.5.5"),  # Cloudflare: a CDN edge serving thousands of names
        ("i-a", "api.coinbase.com", "104.18.35.15"),  # a price API is not a pool at all
    ])
    rows = []
    for peer in ("94.130.165.87", "104.16.5.5", "104.18.35.15"):
        rows += build.steady_flows("i-c", peer, 443, hours=1)
    assert PoolEndpointRule().run(build.tables(dns=dns, flows=build.flows(rows))) == []


def test_no_dns_answers_no_hits(build):
    flows = build.flows(build.steady_flows("i-miner", "141.94.96.71", 3333, hours=1))
    assert PoolEndpointRule().run(build.tables(flows=flows)) == []
