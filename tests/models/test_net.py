from __future__ import annotations

import pandas as pd

from spendwatch.models.net import is_public


def test_public_and_not_public_v4_v6():
    cases = {
        "8.8.8.8": True, "198.51.100.7": True, "100.128.0.1": True, "172.32.0.1": True,
        "10.1.2.3": False, "172.16.0.1": False, "172.31.255.255": False, "192.168.0.1": False,
        "100.64.0.1": False, "100.127.255.255": False, "127.0.0.1": False, "169.254.169.254": False,
        "0.0.0.0": False, "224.0.0.251": False, "255.255.255.255": False,
        "2001:db8::1": True, "2606:4700::1111": True, "fd00::1": False, "fc00::1": False, "fe80::1": False,
        "::1": False, "::ffff:10.0.0.1": False, "::ffff:8.8.8.8": True, "not-an-ip": False, "300.1.1.1": False,
    }
    got = is_public(pd.Series(list(cases), dtype="str"))
    assert dict(zip(cases, got.tolist(), strict=True)) == cases


def test_missing_values_are_not_public():
    assert is_public(pd.Series([None, "8.8.8.8"], dtype="str")).tolist() == [False, True]
    assert is_public(pd.Series([], dtype="str")).tolist() == []
