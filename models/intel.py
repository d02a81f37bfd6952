"""Curated intel shipped in `spendwatch.models.data`: pool domains and pool ports (see data/PROVENANCE.md)."""

from __future__ import annotations

import csv
import ipaddress
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PoolPort:
    port: int
    pool_endpoints_2018: int | None  # sMaSheD census count; None where the census has no endpoint on it
    source: str
    default: bool  # used by the stratum-port rule unless the config says otherwise
    note: str


def _data_text(name: str) -> str:
    return resources.files("spendwatch.models.data").joinpath(name).read_text(encoding="utf-8")


@cache
def pool_domains() -> frozenset[str]:
    """The curated server mining-pool domains, lower case, without comments."""
    names = set()
    for line in _data_text("pool_domains.txt").splitlines():
        entry = line.split("#", 1)[0].strip().lower().rstrip(".")
        if entry:
            names.add(entry)
    return frozenset(names)


@cache
def pool_ports() -> dict[int, PoolPort]:
    """Every port in stratum_ports.csv, keyed by port number."""
    rows = csv.DictReader(_data_text("stratum_ports.csv").splitlines())
    return {
        int(r["port"]): PoolPort(
            int(r["port"]),
            int(r["pool_endpoints_2018"]) if r["pool_endpoints_2018"] else None,
            r["source"],
            r["default"] == "yes",
            r["note"],
        )
        for r in rows
    }


def default_pool_ports() -> frozenset[int]:
    return frozenset(p for p, row in pool_ports().items() if row.default)


@cache
def cdn_networks() -> tuple[tuple[int, int], ...]:
    """Shared CDN IPv4 ranges (data/cdn_ranges.txt) as (network, mask) integer pairs."""
    out = []
    for line in _data_text("cdn_ranges.txt").splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            net = ipaddress.ip_network(entry)
            out.append((int(net.network_address), int(net.netmask)))
    return tuple(out)


def in_cdn(addresses: pd.Series) -> np.ndarray:
    """Boolean array: which addresses (IPv4 text) fall in a known CDN range; others and IPv6 are False."""
    text = pd.Series(addresses, dtype="str")
    v4 = text.str.fullmatch(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}").fillna(False).to_numpy(dtype=bool)
    out = np.zeros(len(text), dtype=bool)
    if not v4.any():
        return out
    octets = text[v4].str.split(".", expand=True).astype("int64").to_numpy()
    value = (octets[:, 0] << 24) | (octets[:, 1] << 16) | (octets[:, 2] << 8) | octets[:, 3]
    hit = np.zeros(len(value), dtype=bool)
    for net, mask in cdn_networks():
        hit |= (value & mask) == net
    out[v4] = hit
    return out
