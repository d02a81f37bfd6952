"""Curated intel shipped in `spendwatch.models.data`: pool domains and pool ports (see data/PROVENANCE.md)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources


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
