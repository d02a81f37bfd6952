from __future__ import annotations

import pandas as pd

from spendwatch.models.rules.pool_domain import PoolDomainConfig, PoolDomainRule, match_pool_domain


def test_pool_subdomain_fires_with_checkable_evidence(build):
    dns = build.dns([("i-miner", "xmr-eu1.nanopool.org")] * 3 + [("i-miner", "pool.supportxmr.com.")])
    hits = PoolDomainRule().run(build.tables(dns=dns))
    assert len(hits) == 1
    hit = hits[0]
    assert (hit.resource, hit.belief, hit.family) == ("i-miner", 0.8, "pool-intel")
    assert "4 DNS queries" in hit.evidence and "nanopool.org" in hit.evidence
    assert sorted(hit.facts["pool_domains"]) == ["nanopool.org", "supportxmr.com"]


def test_price_api_exchange_and_lookalike_do_not_fire(build):
    dns = build.dns([("i-app", "api.coingecko.com"), ("i-app", "www.binance.com"), ("i-app", "notnanopool.org"),
                     ("i-app", "nanopool.org.evil.example"), ("i-app", "coinhive.com")])
    assert PoolDomainRule().run(build.tables(dns=dns)) == []


def test_match_is_on_label_boundaries():
    names = pd.Series(["nanopool.org", "a.b.nanopool.org", "xnanopool.org", "nanopool.org.cn", None], dtype="str")
    got = match_pool_domain(names, frozenset({"nanopool.org"})).tolist()
    assert got[:2] == ["nanopool.org", "nanopool.org"]
    assert all(pd.isna(v) for v in got[2:])


def test_cname_answer_to_a_pool_fires_and_config_can_drop_an_entry(build):
    dns = build.dns([("i-proxy", "mine.internal.example")])
    dns["answers"] = pd.Series(["gulf.moneroocean.stream 203.0.113.9"], dtype="str")
    hits = PoolDomainRule().run(build.tables(dns=dns))
    assert len(hits) == 1 and "CNAME" in hits[0].evidence
    cfg = PoolDomainConfig(ignore_domains=frozenset({"moneroocean.stream"}))
    assert PoolDomainRule(cfg).run(build.tables(dns=dns)) == []


def test_dns_without_resource_is_attributed_through_inventory_address(build):
    dns = build.dns([("i-x", "eth.2miners.com")])
    dns["resource"] = pd.Series([None], dtype="str")
    dns["src"] = pd.Series(["10.0.3.4"], dtype="str")
    inv = build.inventory([{"resource": "i-owner", "private_ips": "10.0.3.4"}])
    hits = PoolDomainRule().run(build.tables(dns=dns, inventory=inv))
    assert [h.resource for h in hits] == ["i-owner"]
