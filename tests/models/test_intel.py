from __future__ import annotations

import pandas as pd

from spendwatch.models import intel
from spendwatch.models.rules.pool_domain import match_pool_domain


def test_pool_domains_are_curated():
    domains = intel.pool_domains()
    assert 100 <= len(domains) <= 400
    for absent in ("api.coingecko.com", "coingecko.com", "binance.com", "coinhive.com", "getmonero.org",
                   "mymonero.com", "btc.com", "whattomine.com", "authedmine.com", "xmrig.com"):
        assert absent not in domains
    for present in ("nanopool.org", "supportxmr.com", "2miners.com", "moneroocean.stream", "f2pool.com",
                    "donate.v2.xmrig.com"):
        assert present in domains
    names = pd.Series(["api.coingecko.com", "www.binance.com", "api.binance.com"], dtype="str")
    assert match_pool_domain(names, domains).isna().all()


def test_every_entry_names_its_source():
    from importlib import resources

    text = resources.files("spendwatch.models.data").joinpath("pool_domains.txt").read_text()
    known = ("falco", "nocoin", "blocklistproject", "spendwatch maintainers")
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            source = line.partition("#")[2]
            assert any(k in source for k in known), line
            if "spendwatch maintainers" in source:
                assert ":" in source, f"maintainer entry without a reason: {line}"


def test_ports():
    ports = intel.pool_ports()
    assert ports[3333].pool_endpoints_2018 == 128 and ports[3333].default
    assert not ports[443].default and not ports[80].default
    assert 3333 in intel.default_pool_ports() and 443 not in intel.default_pool_ports()
    assert all(p.source for p in ports.values())
