"""AWS, GCP and Azure organisations side by side under one root, with one ground truth for all three.

`simulate_multicloud(out)` runs the AWS simulator unchanged (its buckets at the top of `out`), then the GCP
and Azure ones beside it, and rewrites `out/TRUTH.json` with every cloud's incidents and legitimate GPU
work, so one `spendwatch scan --data out` covers all three clouds.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from . import DEFAULT_END, TRUTH_FILE, Truth, simulate
from .azure import simulate_azure
from .gcp import simulate_gcp


def simulate_multicloud(out: Path, *, seed: int = 7, days: float = 2.0, instances: int = 40,
                        end: datetime | None = None) -> Truth:
    """Write all three clouds' exports under `out`; return the combined truth (also in out/TRUTH.json)."""
    end = DEFAULT_END if end is None else end
    out = Path(out)
    parts = [simulate(out, seed=seed, days=days, instances=instances, end=end),
             simulate_gcp(out, seed=seed, days=days, instances=instances, end=end, write_truth=False),
             simulate_azure(out, seed=seed, days=days, instances=instances, end=end, write_truth=False)]
    truth = Truth(root=out, start=min(p.start for p in parts), end=end,
                  accounts=tuple(a for p in parts for a in p.accounts),
                  incidents=tuple(i for p in parts for i in p.incidents),
                  legit_gpu=tuple(r for p in parts for r in p.legit_gpu),
                  instances=sum(p.instances for p in parts), flow_records=sum(p.flow_records for p in parts))
    (out / TRUTH_FILE).write_text(truth.to_json())
    return truth
