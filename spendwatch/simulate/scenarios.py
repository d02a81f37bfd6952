"""Labelled scenarios: small simulated organisations, each with one evasive abuse case or one hard negative.

Each scenario starts from `plan()`'s organisation with the built-in incidents removed (so everything abusive
in it is labelled), then injects its case through the hooks in org.py, with its own fixed seed. Positives go
to `Truth.incidents`, hard negatives to `Truth.negatives`; every other resource is an unlabelled negative
(a finding at medium or above on it is a false positive).

Every scenario simulates `history_days` (2) of the organisation's ordinary life before its scanned day: what
the organisation's own baseline model is trained on (a nightly backup or an inference server is part of that
history; the incidents are not). Incidents start inside the scanned day (`_at` places them there).

Issue 3's "Done when" list, one entry each:

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

Issue 4's unknown-signature cases: abuse no rule has a signature for, which only the organisation's baseline
model can see (each function's docstring says why the rules cannot), in organisations whose history already
holds long-lived connections (a price ticker) and heavy nightly egress (a database backup); and hard negatives
that are unusual in the ways the model looks at but ordinary for this organisation:
novel (must be found at medium or above)
    proxyjacking-tunnel        a compromised internal host relays proxyware traffic and runs a load-following
                               CPU miner, both through one TLS tunnel to a VPS by address
    agent-exfiltration         an agent role launches a CPU instance that streams data to one external address
    gpu-miner-new-region       a GPU miner with a varying cap behind a tunnel, in a region the account never used
hard negatives (must stay below medium)
    nightly-backup-s3          a database host pushes ~60 GB of backups to S3 every night
    etl-job-90pct              a new ETL worker holds its CPU at 82-93 % for hours, reading from S3
    inference-server           a model server's GPUs follow the users' day at 35-80 %, behind a load balancer

Scenarios are small (16 planned instances, one scanned day after two of history) so the whole suite simulates
and scans in about a minute.
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
    Stream,
    _role,
    add_instance,
    ensure_vpc,
    strip_incidents,
    training_dips,
)

Kind = Literal["evasion", "negative", "classic", "novel"]


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Kind
    summary: str
    setup: Callable[[Org, np.random.Generator], None]
    seed: int
    days: float = 1.0  # the scanned part, in which the incidents happen
    instances: int = 16
    history_days: float = 2.0  # ordinary life before it: the organisation's baseline


def _label(org: Org, name: str, kind: str, resources: list[str], principal_key: str | None, region: str,
           account: str, started: float, *, negative: bool = False) -> None:
    principal = org.principals[principal_key].arn if principal_key else None
    item = PlannedIncident(name, kind, account, region, tuple(resources), principal, started)
    (org.negatives if negative else org.incidents).append(item)


def _at(org: Org, share: float) -> float:
    """A whole second `share` of the way through the scanned part of the window (after the history)."""
    start = org.start if org.scan_start is None else org.scan_start
    return float(np.floor(start + share * (org.end - start)))


def _nightly(org: Org, rng: np.random.Generator, at_hour: float,
             hours: tuple[float, float]) -> list[tuple[float, float]]:
    """One run a night over the whole window (history included), starting around `at_hour` UTC."""
    day0 = np.floor(org.start / DAY) * DAY
    runs = []
    for d in np.arange(day0 - DAY, org.end, DAY).tolist():
        s = d + (at_hour + float(rng.uniform(0, 0.4))) * HOUR
        runs.append((s, s + float(rng.uniform(*hours)) * HOUR))
    return [(max(a, org.start), min(b, org.end)) for a, b in runs if b > org.start and a < org.end]


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


# ---- unknown signatures (issue 4): what only the organisation's baseline model can see ---------------------------
# Invented addresses in ordinary hosting ranges stand for the intruders' servers (no DNS name: typed in).
TUNNEL_VPS = "185.243.112.57"
DROP_HOST = "91.219.238.14"
GPU_TUNNEL_VPS = "45.133.1.88"


def _busy_history(org: Org, rng: np.random.Generator) -> None:
    """Ordinary traffic that looks like the unknown-signature cases in one way each, all through the history: a
    price ticker holding long-lived connections to its API, and a database host pushing ~60 GB to S3 every
    night. The incidents must stand out from an organisation that already does both, not from an empty one."""
    add_instance(org, rng, "ticker", PROD, "us-east-1", "t3.medium", org.start - 4 * DAY, "deploy",
                 name="price-ticker")
    db = add_instance(org, rng, "db", PROD, "us-east-1", "r5.2xlarge", org.start - 5 * DAY, "deploy",
                      name="postgres-main")
    db.busy = _nightly(org, rng, 2.0, (1.5, 2.5))


def proxyjack(org: Org, rng: np.random.Generator) -> None:
    """A compromised internal host (a collector, launched long ago by the deploy role) sells its bandwidth through
    proxyware and mines Monero, both through one TLS tunnel to a VPS on 443, reached by address.

    Proxyjacking (Sysdig 2023, Akamai 2023) is usually dropped together with a miner by the same campaigns. The
    miner's launcher follows the host's load (nice level and thread count), so the CPU sits at 70-90 % and moves
    every 20-40 minutes. Why the rules cannot see it: no pool name is looked up (the tunnel end is an address);
    443 is not a pool port; the tunnel carries the relayed traffic, so it is bulk (0.5-1 MB/min each way,
    MTU-sized packets) and not the small steady trickle miner-flow-shape looks for (that rule documents batching
    proxies as its blind spot); the CPU stays under cpu-saturation's 95 % and moves too much for
    flat-utilization; nothing was launched and the bill does not move (relayed bytes cost cents an hour).
    What is unusual for this organisation: an internal host with one external peer holding a long-lived,
    heavy, unnamed connection in every interval, and a CPU far above what such hosts do.
    """
    strip_incidents(org)
    _busy_history(org, rng)
    host = next(i for i in org.instances if i.workload == "internal" and i.name.startswith("collector"))
    t = _at(org, 0.3)
    host.miner_from = t
    host.miner = MinerSpec("cpu", 80.0, addr=TUNNEL_VPS, port=443, level_range=(70.0, 90.0), tunnel=True)
    host.streams.append(Stream(TUNNEL_VPS, 443, t, org.end, out_per_min=6e5, in_per_min=9e5, out_packet=1100.0,
                               in_packet=1250.0, sigma=0.5))
    _label(org, "proxyjacking-tunnel", "cpu_miner", [host.id], None, "us-east-1", PROD, t)


def exfil(org: Org, rng: np.random.Generator) -> None:
    """An AI agent's role (bedrock-agent-ops) launches a CPU instance in its usual region, which reads the datasets
    bucket and streams ~80 MB/min to one external address on 443 for the rest of the day (an injected tool call
    with an upload URL by IP).

    Why the rules cannot see it: they look for mining and for GPU acquisition; this is neither. A single
    m5.xlarge is no launch burst and no GPU launch, no pool, port or saturation signal exists, and the
    transfer costs ~$0.45/h, far under spend-spike's $3/h. What is unusual for this organisation: ~5 GB an
    hour leaving to one unnamed address over one long-lived connection.
    """
    strip_incidents(org)
    _busy_history(org, rng)
    t = _at(org, 0.4)
    inst = add_instance(org, rng, "tool", ML, "us-east-1", "m5.xlarge", t, "agent", name="agent-tool-runner")
    inst.streams.append(Stream(DROP_HOST, 443, t + 900, org.end, out_per_min=8e7, in_per_min=1.6e6,
                               out_packet=1400.0, in_packet=66.0, sigma=0.25))
    _label(org, "agent-exfiltration", "exfiltration", [inst.id], "agent", "us-east-1", ML, t)


def gpu_new_region(org: Org, rng: np.random.Generator) -> None:
    """A stolen SSO session of an ML engineer launches a g5.2xlarge in us-west-2, where the account never ran
    anything, and mines with a varying cap (80-92 %, a new level every 20-40 minutes) through a tunnel that
    also carries the intruder's shell and tool downloads.

    Why the rules cannot see it as abuse: new-gpu-launch notes the new region, weak alone (low), and nothing
    joins it: no pool name (the tunnel end is an address), 443, the tunnel's traffic is bursty (the shell and
    downloads: per-interval bytes vary far more than a Stratum session's) so miner-flow-shape stays silent, the
    GPU never reaches gpu-saturation's 95 %, and the varying cap defeats flat-utilization (which documents it).
    What is unusual for this organisation: a GPU held at 80-92 % without the dips of training, with one unnamed
    external peer in every interval.
    """
    strip_incidents(org)
    _busy_history(org, rng)
    ensure_vpc(org, rng, ML, "us-west-2")
    t = _at(org, 0.25)
    inst = add_instance(org, rng, "gpu_miner", ML, "us-west-2", "g5.2xlarge", t, "ml-engineer",
                        name="sd-finetune-uw2")
    inst.miner_from = t + 300
    inst.miner = MinerSpec("gpu", 86.0, addr=GPU_TUNNEL_VPS, port=443, level_range=(80.0, 92.0), tunnel=True)
    inst.streams.append(Stream(GPU_TUNNEL_VPS, 443, t + 300, org.end, out_per_min=4e4, in_per_min=1.5e5,
                               out_packet=600.0, in_packet=1200.0, sigma=1.0))
    _label(org, "gpu-miner-new-region", "gpu_miner", [inst.id], "ml-engineer", "us-west-2", ML, t)


def backup(org: Org, rng: np.random.Generator) -> None:
    """A database host (up for a week) compresses and pushes ~60 GB of backups to S3 every night at 02:00.

    Heavy egress for two hours from a host that is otherwise quiet, as unusual as an exfiltration in bytes, but
    to S3 through the gateway endpoint, and every night of the history: the organisation's own baseline has it.
    """
    strip_incidents(org)
    db = add_instance(org, rng, "db", PROD, "us-east-1", "r5.2xlarge", org.start - 5 * DAY, "deploy",
                      name="postgres-main")
    db.busy = _nightly(org, rng, 2.0, (1.5, 2.5))
    _label(org, "nightly-backup-s3", "legit", [db.id], None, "us-east-1", PROD, org.start, negative=True)


def etl(org: Org, rng: np.random.Generator) -> None:
    """The batch role starts a new ETL worker for a six-hour backfill: CPU at 82-93 % (I/O waits keep it off the
    ceiling), bulk reads from S3, package downloads, terminated after the job.

    Its CPU sits where the proxyjacking host's miner does, but everything else is what the batch fleet does
    every night of the history.
    """
    strip_incidents(org)
    t = _at(org, 0.3)
    inst = add_instance(org, rng, "batch", DATA, "eu-west-1", "c5.4xlarge", t, "batch", terminated=t + 6.3 * HOUR,
                        name="etl-backfill-01")
    inst.busy = [(t + 180, t + 6.1 * HOUR)]
    inst.cpu_busy = (82.0, 93.0)
    _label(org, "etl-job-90pct", "legit", [inst.id], "batch", "eu-west-1", DATA, t, negative=True)


def inference(org: Org, rng: np.random.Generator) -> None:
    """A model server (up for days, launched by the training role) whose GPU load follows the users' day between
    35 and 80 %, serving through a load balancer (private peers) and pulling weights from S3.

    A GPU held below the ceiling for hours, as the new-region miner's is, but smooth with the day and part of
    the history.
    """
    strip_incidents(org)
    inst = add_instance(org, rng, "inference", ML, "us-east-1", "g5.xlarge", org.start - 6 * DAY, "ml-training",
                        name="llm-inference-01")
    _label(org, "inference-server", "legit_gpu", [inst.id], None, "us-east-1", ML, org.start, negative=True)


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
    Scenario("proxyjacking-tunnel", "novel",
             "a compromised internal host relays proxyware traffic and mines at 70-90 % CPU through one TLS tunnel",
             proxyjack, seed=301),
    Scenario("agent-exfiltration", "novel",
             "an agent role's new CPU instance streams ~80 MB/min to one external address", exfil, seed=302),
    Scenario("gpu-miner-new-region", "novel",
             "a GPU miner with a varying 80-92 % cap behind a tunnel, in a region the account never used",
             gpu_new_region, seed=303),
    Scenario("nightly-backup-s3", "negative", "a database host pushes ~60 GB of backups to S3 every night",
             backup, seed=204),
    Scenario("etl-job-90pct", "negative", "a new ETL worker at 82-93 % CPU for six hours, reading from S3",
             etl, seed=205),
    Scenario("inference-server", "negative", "a model server's GPUs follow the users' day at 35-80 %",
             inference, seed=206),
)}


def run_scenario(name: str, out: Path | None = None) -> Truth:
    """Simulate scenario `name` into `out` (a new temporary directory when None) and return its truth."""
    sc = SCENARIOS[name]
    root = Path(tempfile.mkdtemp(prefix=f"sw-{name}-")) if out is None else out
    rng = np.random.default_rng([sc.seed, 9001])

    def setup(org: Org) -> None:
        org.scan_start = org.end - sc.days * DAY
        sc.setup(org, rng)

    return simulate(root, seed=sc.seed, days=sc.days + sc.history_days, instances=sc.instances, scenario=setup)
