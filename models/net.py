"""Address helpers: which addresses are public, computed over whole columns at once.

"Public" here means routable on the internet as far as a flow log can tell: not RFC 1918, loopback,
link-local, CGNAT (100.64/10), unspecified, multicast, broadcast, IPv6 ULA (fc00::/7) or IPv6 link-local.
Documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32) count as public on purpose:
simulations and tests use them to stand for internet hosts. Strings that are not addresses are not public.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pandas as pd

# (network, prefix length) pairs as integers, so IPv4 checks are numpy comparisons.
_V4_NOT_PUBLIC = (
    ("0.0.0.0", 8), ("10.0.0.0", 8), ("100.64.0.0", 10), ("127.0.0.0", 8), ("169.254.0.0", 16),
    ("172.16.0.0", 12), ("192.168.0.0", 16), ("224.0.0.0", 4), ("240.0.0.0", 4),
)
_V6_NOT_PUBLIC = tuple(
    ipaddress.ip_network(n)
    for n in ("::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8")
)


def _v4_public(octets: np.ndarray) -> np.ndarray:
    value = (octets[:, 0] << 24) | (octets[:, 1] << 16) | (octets[:, 2] << 8) | octets[:, 3]
    public = np.ones(len(value), dtype=bool)
    for net, prefix in _V4_NOT_PUBLIC:
        base = int(ipaddress.IPv4Address(net))
        mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
        public &= (value & mask) != base
    return public


def _v6_public(text: str) -> bool:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return bool(_v4_public(np.array([list(addr.ipv4_mapped.packed)], dtype=np.int64))[0])
    return not any(addr in net for net in _V6_NOT_PUBLIC)


def is_public(addresses: pd.Series | np.ndarray | list[str]) -> np.ndarray:
    """Boolean array: True where the address is public (see module doc). Missing values are False.

    Works on distinct values only (flow logs repeat a few thousand addresses over millions of rows): IPv4
    is parsed and range-checked with numpy, IPv6 goes through `ipaddress` one distinct value at a time.
    """
    codes, uniques = pd.factorize(pd.Series(addresses, dtype="str"), use_na_sentinel=True)
    if len(uniques) == 0:
        return np.zeros(len(codes), dtype=bool)
    texts = pd.Series(np.asarray(uniques, dtype=object), dtype="str")
    result = np.zeros(len(texts), dtype=bool)
    v4 = texts.str.fullmatch(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}").fillna(False).to_numpy(dtype=bool)
    if v4.any():
        octets = texts[v4].str.split(".", expand=True).astype("int64").to_numpy()
        valid = (octets <= 255).all(axis=1)
        pub = np.zeros(len(octets), dtype=bool)
        pub[valid] = _v4_public(octets[valid])
        result[v4] = pub
    other = np.flatnonzero(~v4 & texts.str.contains(":", regex=False).fillna(False).to_numpy(dtype=bool))
    for i in other:
        result[i] = _v6_public(texts.iloc[i])
    out = np.zeros(len(codes), dtype=bool)
    known = codes >= 0
    out[known] = result[codes[known]]
    return out
