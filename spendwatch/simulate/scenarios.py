"""Labelled scenarios: small simulated organisations, each with one evasive abuse case or one hard negative.

Each scenario starts from `plan()`'s organisation with the built-in incidents removed (so everything abusive
in it is labelled), then injects its case through the hooks in org.py, with its own fixed seed. Positives go
to `Truth.incidents`, hard negatives to `Truth.negatives`; every other resource is an unlabelled negative
(a finding at medium or above on it is a false positive). Issue 3's "Done when" list, one entry each:

evasions (must be found at medium or above)
    tls-proxy-thirdparty-dns   Stratum over TLS on 443 to a proxy address, pool names resolved at 8.8.8.8
    throttled-gpu-miner        GPU miner held at 50-60 %, flat, through a TLS proxy
    cpu-miner-on-gpu           RandomX (CPU) miner on a GPU notebook instance; the GPU sits idle
    miner-in-training          GPU miner inside a running training job, filling its dips; pool by IP
    mass-launch-dark-regions   a deploy role launches nine spot GPU instances in three regions with no flow logs
    agent-recon-then-gpus      an agent role looks up vCPU quotas in five regions, asks for more, launches GPUs
classic (must be found at medium or above)
    classic-miners             simulate()'s built-in agent GPU miners and web CPU miner (pool names, Stratum ports)
hard negatives (must stay below medium)
    nightly-training           a nightly job pegging 4 GPUs flat at ~100 % for hours while it pulls its dataset
    new-ml-team                a new team's role launches its first GPU training jobs in the usual region
    baseline                   Jupyter on 8888, internal services on 3333/4444 between private addresses, a
                               crypto price API ticker, and CI runner bursts (one larger than usual)

Scenarios are small (16 planned instances, one day) so the whole suite simulates and scans in seconds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from . import Truth, simulate
from .org import (
    BOTO_UA,
    DATA,
    DAY,
    HOUR,
    ML,
    PROD,
    AgentCall,
    MinerSpec,
    Org,
    PlannedIncident,
    _role,
    add_instance,
    ensure_vpc,
    strip_incidents,
    training_dips,
)

Kind = Literal["evasion", "negative", "classic"]


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Kind
    summary: str
    setup: Callable[[Org, np.random.Generator], None]
    seed: int
    days: float = 1.0
    instances: int = 16


def _label(org: Org, name: str, kind: str, resources: list[str], principal_key: str | None, region: str,
           account: str, started: float, *, negative: bool = False) -> None:
    principal = org.principals[principal_key].arn if principal_key else None
    item = PlannedIncident(name, kind, account, region, tuple(resources), principal, started)
    (org.negatives if negative else org.incidents).append(item)


def _at(org: Org, share: float) -> float:
    """A whole second `share` of the way through the window."""
    return float(np.floor(org.start + share * (org.end - org.start)))


def classic(org: Org, rng: np.random.Generator) -> None:
    """The default organisation's own incidents, unchanged: pool names in the resolver log, Stratum ports."""


# ---- evasions -----------------------------------------------------------------------------------------------

def tls_proxy(org: Org, rng: np.random.Generator) -> None:
    strip_incidents(org)
    t = _at(org, 0.3)
    inst = add_instance(org, rng, "gpu_miner", ML, "us-east-1", "g5.2xlarge", t, "ml-training", name="sd-render-02")
    inst.miner_from = t + 240
    inst.miner = MinerSpec("gpu", 99.5, addr="45.76.133.10", port=443, connections=2, third_party_dns=True)
    _label(org, "tls-proxy-thirdparty-dns", "gpu_miner", [inst.id], "ml-training", "us-east-1", ML, t)


def throttled(org: Org, rng: np.random.Generator) -> None:
    strip_incidents(org)
    t = _at(org, 0.15)
    inst = add_instance(org, rng, "gpu_miner", ML, "us-east-1", "g5.2xlarge", t, "ml-training", name="eval-04")
    inst.miner_from = t + 300
    inst.miner = MinerSpec("gpu", 55.0, addr="51.15.69.136", port=443, third_party_dns=True)
    _label(org, "throttled-gpu-miner", "gpu_miner", [inst.id], "ml-training", "us-east-1", ML, t)


def cpu_on_gpu(org: Org, rng: np.random.Generator) -> None:
    strip_incidents(org)
    inst = add_instance(org, rng, "jupyter", ML, "us-east-1", "g4dn.2xlarge", org.start - 2 * DAY, "ml-engineer",
                        name="notebook-shared")
    inst.miner_from = _at(org, 0.3)
    inst.miner = MinerSpec("cpu", 99.3, addr="5.9.157.150", port=443, third_party_dns=True)
    _label(org, "cpu-miner-on-gpu", "cpu_miner", [inst.id], "ml-engineer", "us-east-1", ML, inst.miner_from)


def in_training(org: Org, rng: np.random.Generator) -> None:
    strip_incidents(org)
    inst = next(i for i in org.instances if i.workload == "train" and i.launched < org.start and i.terminated is None)
    inst.miner_from = _at(org, 0.35)
    inst.miner = MinerSpec("gpu", 99.0, addr="37.187.95.110", port=3333, fill_dips=True)
    _label(org, "miner-in-training", "gpu_miner", [inst.id], inst.principal, "us-east-1", ML, inst.miner_from)


def mass_launch(org: Org, rng: np.random.Generator) -> None:
    strip_incidents(org)
    t0 = _at(org, 0.45)
    ids = []
    for k, region in enumerate(("us-west-2", "eu-central-1", "ap-northeast-1")):
        ensure_vpc(org, rng, PROD, region, dark=True)
        t = t0 + 90 * k
        for j in range(3):
            inst = add_instance(org, rng, "gpu_miner", PROD, region, "g5.2xlarge", t, "deploy", spot=True,
                                name=f"build-cache-{k}{j}")
            inst.miner_from = t + 180
            ids.append(inst.id)
    _label(org, "mass-launch-dark-regions", "mass_launch", ids, "deploy", "us-west-2", PROD, t0)


def agent_recon(org: Org, rng: np.random.Generator) -> None:
    strip_incidents(org, keep_agent=True)
    org.dark.add((ML, "ap-southeast-1"))  # the agent's region has no flow logs: only the trail and the bill
    last = max(c.time for c in org.agent_events if c.name != "RunInstances")
    org.agent_events.append(AgentCall(last + 25, "ap-southeast-1", "RequestServiceQuotaIncrease",
                                      quota="L-DB2E81BA", desired=192.0))
    org.incidents = []
    miners = [i for i in org.instances if i.workload == "gpu_miner"]
    first = min(c.time for c in org.agent_events)
    _label(org, "agent-recon-then-gpus", "gpu_launch", [i.id for i in miners], "agent", "ap-southeast-1", ML, first)


# ---- hard negatives -----------------------------------------------------------------------------------------

def nightly(org: Org, rng: np.random.Generator) -> None:
    strip_incidents(org)
    inst = add_instance(org, rng, "nightly", ML, "us-east-1", "g5.12xlarge", org.start - 3 * DAY, "ml-training",
                        name="nightly-finetune")
    day0 = np.floor(org.start / DAY) * DAY
    inst.busy = [(d + 1 * HOUR, d + 4.5 * HOUR) for d in np.arange(day0 - DAY, org.end, DAY).tolist()]
    _label(org, "nightly-training", "legit_gpu", [inst.id], "ml-training", "us-east-1", ML, org.start,
           negative=True)


def new_team(org: Org, rng: np.random.Generator) -> None:
    strip_incidents(org)
    org.principals["ml-team-b"] = _role("ml-team-b", ML, "ml-research-b", "airflow-research-b", BOTO_UA,
                                        "10.20.9.14", rng)
    t = _at(org, 0.35)
    ids = []
    for k in range(3):
        inst = add_instance(org, rng, "train", ML, "us-east-1", "g5.2xlarge", t + 60 * k, "ml-team-b",
                            name=f"research-b-{k}")
        training_dips(rng, inst, org.start, org.end)
        ids.append(inst.id)
    _label(org, "new-ml-team", "legit_gpu", ids, "ml-team-b", "us-east-1", ML, t, negative=True)


def baseline(org: Org, rng: np.random.Generator) -> None:
    strip_incidents(org)
    ticker = add_instance(org, rng, "ticker", PROD, "us-east-1", "t3.medium", org.start - 4 * DAY, "deploy",
                          name="price-ticker")
    t = _at(org, 0.6)
    burst = []
    for k in range(12):  # a release day: more runners at once than the usual bursts of ~5
        start = t + float(rng.uniform(0, 120))
        life = float(rng.uniform(10, 40)) * 60
        inst = add_instance(org, rng, "ci", DATA, "us-east-1", "c5.2xlarge", start, "ci", terminated=start + life,
                            spot=True, name=f"gha-runner-r{k:02d}")
        inst.busy = [(start + 60, start + life - 30)]
        burst.append(inst.id)
    by = {w: [i.id for i in org.instances if i.workload == w] for w in ("jupyter", "internal", "ci")}
    _label(org, "jupyter-8888", "legit", by["jupyter"], None, "us-east-1", ML, org.start, negative=True)
    _label(org, "internal-3333-4444", "legit", by["internal"], None, "us-east-1", PROD, org.start, negative=True)
    _label(org, "crypto-price-api", "legit", [ticker.id], None, "us-east-1", PROD, org.start, negative=True)
    _label(org, "ci-bursts", "legit", by["ci"], "ci", "us-east-1", DATA, org.start, negative=True)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("classic-miners", "classic",
             "simulate()'s own incidents: an agent's GPU miners and a web host's CPU miner, pools by name",
             classic, seed=100),
    Scenario("tls-proxy-thirdparty-dns", "evasion",
             "Stratum over TLS on 443 to a proxy address, third-party DNS, on a GPU box of a usual launcher",
             tls_proxy, seed=101),
    Scenario("throttled-gpu-miner", "evasion", "GPU miner throttled to ~55 %, flat, through a TLS proxy",
             throttled, seed=102),
    Scenario("cpu-miner-on-gpu", "evasion", "CPU (RandomX) miner on a GPU notebook instance, GPU idle",
             cpu_on_gpu, seed=103),
    Scenario("miner-in-training", "evasion", "GPU miner inside a running training job, pool by IP on 3333",
             in_training, seed=104),
    Scenario("mass-launch-dark-regions", "evasion",
             "nine spot GPU instances in three regions without flow logs, by a deploy role", mass_launch, seed=105),
    Scenario("agent-recon-then-gpus", "evasion",
             "agent role: quota look-ups in five regions, an increase request, GPU launch in a dark region",
             agent_recon, seed=106),
    Scenario("nightly-training", "negative", "nightly fine-tuning: 4 GPUs flat at ~100 % for hours, large ingress",
             nightly, seed=201),
    Scenario("new-ml-team", "negative", "a new team's first GPU training launches in the account's usual region",
             new_team, seed=202),
    Scenario("baseline", "negative",
             "Jupyter on 8888, internal 3333/4444, a crypto price ticker, CI bursts (one large)", baseline,
             seed=203),
)}


def run_scenario(name: str, out: Path | None = None) -> Truth:
    """Simulate scenario `name` into `out` (a new temporary directory when None) and return its truth."""
    sc = SCENARIOS[name]
    root = Path(tempfile.mkdtemp(prefix=f"sw-{name}-")) if out is None else out
    rng = np.random.default_rng([sc.seed, 9001])
    return simulate(root, seed=sc.seed, days=sc.days, instances=sc.instances,
                    scenario=lambda org: sc.setup(org, rng))
