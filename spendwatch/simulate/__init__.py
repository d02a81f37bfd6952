"""A simulated AWS organisation written in AWS's native export formats, with its ground truth.

`simulate(out)` writes, under `out`, a directory laid out like the organisation's S3 buckets (formats.md):

    out/acme-org-trail/AWSLogs/<org-id>/<account>/CloudTrail/<region>/YYYY/MM/DD/*.json.gz
    out/acme-flow-logs/AWSLogs/<account>/vpcflowlogs/<region>/YYYY/MM/DD/*.log.gz
    out/acme-dns-logs/AWSLogs/<account>/vpcdnsquerylogs/<vpc-id>/YYYY/MM/DD/*.log.gz
    out/acme-billing/cur2/acme-cur2/{data,metadata}/BILLING_PERIOD=YYYY-MM/...
    out/acme-metrics/metric-streams/<region>/YYYY/MM/DD/HH/sw-metrics-<region>-1-...gz
    out/TRUTH.json                        the ground truth (not an AWS file; readers skip it)

and returns the `Truth`: which incidents were injected, on which instances, by whom, and which GPU
instances are legitimate training that must not be flagged above low. It is for `spendwatch demo`,
end-to-end tests and benchmarks; it is not a model of any real organisation's traffic mix.

Output is a pure function of the arguments: the same seed, days, instances and end give byte-identical
files (numpy Generator draws in a fixed order, gzip headers with mtime 0, no wall clock).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from . import billing, cloudtrail, dns, flows, metrics
from .common import FileWriter
from .org import Org, PlannedIncident, plan

__all__ = ["DEFAULT_END", "Incident", "Truth", "simulate"]

DEFAULT_END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TRUTH_FILE = "TRUTH.json"
BUCKETS = {"trail": "acme-org-trail", "flows": "acme-flow-logs", "dns": "acme-dns-logs",
           "billing": "acme-billing", "metrics": "acme-metrics"}


@dataclass(frozen=True)
class Incident:
    """One injected abuse case."""

    name: str  # e.g. "agent-gpu-miner", "web-cpu-miner"
    kind: str  # "gpu_miner", "cpu_miner", ...
    cloud: str  # "aws"
    account: str
    region: str
    resources: tuple[str, ...]  # instance ids involved
    principal: str | None  # launching principal as the reader derives it (issuer role ARN for assumed roles)
    started: datetime  # earliest evidence: the agent's first quota look-up; the CPU miner's start


@dataclass(frozen=True)
class Truth:
    """What the simulated organisation contains, for scoring a scan of it."""

    root: Path
    start: datetime
    end: datetime
    accounts: tuple[str, ...]
    incidents: tuple[Incident, ...]
    legit_gpu: tuple[str, ...]  # instance ids of legitimate GPU work (must NOT be flagged above low)
    instances: int
    flow_records: int  # flow records written with log-status OK (headers, NODATA and SKIPDATA excluded)
    negatives: tuple[Incident, ...] = ()  # labelled hard negatives (scenarios): must stay below medium

    def to_json(self) -> str:
        def enc(x: object) -> object:
            if isinstance(x, datetime):
                return x.strftime("%Y-%m-%dT%H:%M:%SZ")
            if isinstance(x, Path):
                return str(x)
            if isinstance(x, dict):
                return {k: enc(v) for k, v in x.items()}
            if isinstance(x, list | tuple):
                return [enc(v) for v in x]
            return x

        body = asdict(self)
        body.pop("root")  # keeps the file identical wherever the tree is written
        return json.dumps(enc(body), indent=2)


def simulate(out: Path, *, seed: int = 7, days: float = 2.0, instances: int = 40,
             end: datetime | None = None, scenario: Callable[[Org], None] | None = None) -> Truth:
    """Write a simulated organisation under `out` and return its ground truth.

    `instances` is the total number of instances over the window (CI runners and training jobs come and
    go); the workload mix scales with it and needs at least 16. Telemetry covers the `days` before `end`
    (default `DEFAULT_END`); CloudTrail also holds the launches, up to a week earlier, of what was already
    running. Existing files under `out` are not removed: write into an empty directory.
    `scenario`, when given, edits the planned organisation before anything is written (add instances,
    miners, principals, calls, labelled incidents and hard negatives; see scenarios.py).
    """
    if days <= 0:
        raise ValueError("days must be positive")
    end = DEFAULT_END if end is None else end
    if end.tzinfo is None:
        raise ValueError("end must be timezone-aware")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_end = end.timestamp()
    t_start = t_end - days * 86400.0
    org = plan(seed, t_start, t_end, instances)
    if scenario is not None:
        scenario(org)
    # one Generator per writer, derived from the seed: each writer's output does not depend on the others'
    rngs = [np.random.default_rng([seed, k]) for k in range(5)]
    writer = FileWriter(out)
    try:
        fsim = flows.FlowSim(org, rngs[0])
        recs = fsim.run()
        n_flows = flows.write(org, recs, writer, BUCKETS["flows"])
        egress = flows.egress_bytes(org, recs)
        del recs
        d = dns.DnsSim(org, rngs[1])
        d.run()
        d.write(writer, BUCKETS["dns"])
        trail = cloudtrail.TrailSim(org, rngs[2])
        trail.run()
        trail.write(writer, BUCKETS["trail"])
        ms = metrics.MetricSim(org, rngs[3])
        ms.run()
        ms.write(writer, BUCKETS["metrics"])
        bill = billing.BillingSim(org, rngs[4], egress)
        bill.run()
        bill.write(writer, BUCKETS["billing"])
    finally:
        writer.close()

    def dt(t: float) -> datetime:
        return datetime.fromtimestamp(t, UTC)

    def public(i: PlannedIncident) -> Incident:
        return Incident(name=i.name, kind=i.kind, cloud="aws", account=i.account, region=i.region,
                        resources=i.resources, principal=i.principal, started=dt(i.started))

    legit = tuple(i.id for i in org.instances if i.workload in ("train", "jupyter", "nightly") and i.miner is None)
    truth = Truth(root=out, start=dt(t_start), end=dt(t_end), accounts=tuple(a.id for a in org.accounts),
                  incidents=tuple(public(i) for i in org.incidents), legit_gpu=legit, instances=len(org.instances),
                  flow_records=n_flows, negatives=tuple(public(i) for i in org.negatives))
    (out / TRUTH_FILE).write_text(truth.to_json())
    return truth
