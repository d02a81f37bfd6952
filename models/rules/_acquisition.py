"""Shared pieces of the resource-acquisition rules: launch rows, GPU counts, principal-type weights."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spendwatch import catalog


def default_weights() -> dict[str, float]:
    """How much a hit about a principal counts by its type: agents act fast and unsupervised."""
    return {"agent": 1.3, "human": 1.0, "role": 1.0, "service": 0.8}


def weight(ptype: object, weights: dict[str, float]) -> float:
    return weights.get(str(ptype).lower(), 1.0) if isinstance(ptype, str) else 1.0


def launches(act: pd.DataFrame, actions: tuple[str, ...], *, include_failed: bool = False) -> pd.DataFrame:
    """Launch-like rows with `gpus_n` and `vcpus_n` filled from the catalogue where the record lacks them."""
    if not len(act):
        return act.assign(gpus_n=pd.Series(dtype="float64"), vcpus_n=pd.Series(dtype="float64"))
    ok = act["action"].str.lower().isin(actions).fillna(False)
    if not include_failed:
        ok &= act["error"].isna()
    rows = act[ok]
    types = rows["instance_type"].dropna().unique()
    spec = {t: catalog.lookup(t) for t in types}
    gpus_cat = rows["instance_type"].map({t: (s.gpus if s else np.nan) for t, s in spec.items()})
    vcpus_cat = rows["instance_type"].map({t: (s.vcpus if s else np.nan) for t, s in spec.items()})
    gpus = rows["gpus"].astype("float64").fillna(gpus_cat.astype("float64")).fillna(0.0)
    vcpus = rows["vcpus"].astype("float64").fillna(vcpus_cat.astype("float64")).fillna(0.0)
    return rows.assign(gpus_n=gpus, vcpus_n=vcpus).sort_values("time", kind="stable")
