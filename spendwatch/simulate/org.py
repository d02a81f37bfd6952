"""The simulated organisation: accounts, VPCs, principals, instances, workloads and the injected incidents.

`plan()` decides everything that the writers (flows, DNS, CloudTrail, metrics, billing) then render, so all
of them agree on ids, addresses and times. It draws from one numpy Generator in a fixed order, which is what
makes the output byte-identical for a seed.

Times are Unix seconds (floats). Telemetry (flows, DNS, metrics, billing) covers [start, end); CloudTrail
also holds the launches of instances that were already running at `start` (up to a week earlier), because a
reader needs those RunInstances events to map interfaces to instances and to know what is usual.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spendwatch import catalog

from .common import AZ_IDS, hex_id, ip_int

ORG_ID = "o-7k2m9x4q1z"
PAYER = "456789012345"

HOUR = 3600.0
DAY = 86400.0


@dataclass(frozen=True)
class Vpc:
    account: str
    region: str
    vpc_id: str
    cidr: str  # e.g. "10.10.0.0/16"
    base: int  # network address as an integer
    subnets: tuple[str, ...]  # one per AZ
    azs: tuple[str, ...]
    az_ids: tuple[str, ...]
    flow_log_id: str
    default_vpc: bool = False


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    flow_format: str  # "v2" (default format) or "v5" (custom format with instance-id etc.)


@dataclass(frozen=True)
class Principal:
    """An identity as CloudTrail shows it. `arn` is what the reader reports as the principal."""

    key: str
    account: str
    type: str  # CloudTrail userIdentity.type: AssumedRole / IAMUser
    name: str  # role or user name
    session: str | None
    arn: str  # issuer role ARN for assumed roles, user ARN for IAM users
    principal_id: str  # e.g. AROA...:session
    access_key: str
    user_agent: str
    source_ip: str
    human: bool = False


@dataclass
class Instance:
    idx: int
    id: str
    account: str
    region: str
    vpc: Vpc
    az: int  # index into vpc.azs
    itype: str
    vcpus: int
    gpus: int
    gpu_model: str | None
    workload: str  # web, batch, ci, internal, train, jupyter, gpu_miner
    eni: str
    ip: int
    launched: float
    terminated: float | None  # None: still running at the end
    principal: str  # Principal.key
    spot: bool
    name: str
    ami: str
    busy: list[tuple[float, float]] = field(default_factory=list)  # batch runs, CI job, jupyter sessions
    dips: list[tuple[float, float]] = field(default_factory=list)  # training checkpoint / eval dips
    miner_from: float | None = None  # when a miner started on it
    miner: MinerSpec | None = None  # how a scenario's miner behaves (None: the base incidents' built-in shapes)
    streams: list[Stream] = field(default_factory=list)  # long-lived connections a scenario adds (tunnels, uploads)
    cpu_busy: tuple[float, float] | None = None  # a batch worker's CPU range while busy (None: pegged, 94-100 %)


@dataclass(frozen=True)
class MinerSpec:
    """A scenario miner: what it pegs, how hard, and where it connects (scenarios.py sets these).

    `domain` None means the pool is never looked up through the logged resolver (pool by IP, a proxy's
    address, or third-party DNS); `third_party_dns` adds the small UDP flows to a public resolver that go
    with the latter. `fill_dips` hides a GPU miner inside a training job: it takes the GPUs only when the
    job leaves them idle (checkpoints, evaluation), so the series stays pegged.
    """

    device: str  # "gpu" or "cpu"
    level: float  # utilisation percent while mining
    addr: str  # the address the miner connects to (pool, proxy or VPS)
    port: int
    domain: str | None = None
    connections: int = 1
    third_party_dns: bool = False
    fill_dips: bool = False
    level_range: tuple[float, float] | None = None  # a varying cap: a new level in this range every 20-40 min
    tunnel: bool = False  # the pool traffic rides one of the instance's `streams`: no trickle flows of its own


@dataclass(frozen=True)
class Stream:
    """One long-lived TCP connection from an instance, as the client, to `addr:port` during [start, end).

    Every 10-minute aggregation window carries one record per direction; the bytes per minute vary from window
    to window by a lognormal factor with `sigma` (0: steady), and the connection is re-opened on a new local
    port every few hours. Scenarios use it for encrypted tunnels and bulk uploads.
    """

    addr: str
    port: int
    start: float
    end: float
    out_per_min: float  # bytes the instance sends per minute (median)
    in_per_min: float  # bytes it receives per minute (median)
    out_packet: float = 1200.0  # mean bytes per packet each way
    in_packet: float = 1200.0
    sigma: float = 0.3


@dataclass(frozen=True)
class PlannedIncident:
    """An injected incident as planned; `simulate()` turns it into the public `Incident`."""

    name: str
    kind: str
    account: str
    region: str
    resources: tuple[str, ...]
    principal: str | None  # None: the label is about resources only
    started: float


@dataclass(frozen=True)
class AgentCall:
    """One of the agent's calls before its launch: a quota look-up, or the launch that hit the vCPU limit."""

    time: float
    region: str
    name: str
    quota: str = ""
    error: str = ""
    itype: str = ""
    count: int = 0
    principal: str = "agent"  # Principal.key of the caller (scenarios add calls by other principals)
    desired: float = 0.0  # RequestServiceQuotaIncrease's desired value


@dataclass
class Org:
    seed: int
    start: float
    end: float
    accounts: list[Account]
    vpcs: dict[tuple[str, str], Vpc]
    principals: dict[str, Principal]
    instances: list[Instance]
    incidents: list[PlannedIncident]
    agent_events: list[AgentCall]  # the agent's calls before its launch
    pools: dict[str, tuple[str, int, tuple[str, ...]]]  # incident name -> (pool domain, port, addresses)
    negatives: list[PlannedIncident] = field(default_factory=list)  # labelled hard negatives (scenarios)
    dark: set[tuple[str, str]] = field(default_factory=set)  # (account, region) with no flow/DNS/metric logs
    scan_start: float | None = None  # scenarios: incidents go in [scan_start, end); before it is history


# Invented public addresses standing in for the pools' A records (the simulator does not claim these are
# the real pools' addresses; detection must match names in DNS, per Falco's note in PROVENANCE.md).
POOLS: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "agent-gpu-miner": ("gulf.moneroocean.stream", 14444, ("141.94.96.71", "141.94.96.144")),
    "web-cpu-miner": ("pool.supportxmr.com", 3333, ("94.130.165.87", "95.216.46.125")),
}

ACCOUNTS = [
    Account("012345678901", "acme-prod", "v2"),
    Account("234567890123", "acme-ml", "v5"),
    Account("345678901234", "acme-data", "v2"),
    Account(PAYER, "acme-management", "v2"),
]
PROD, ML, DATA = "012345678901", "234567890123", "345678901234"

# (account, region) -> (cidr base, default VPC?)
VPC_LAYOUT: dict[tuple[str, str], tuple[str, bool]] = {
    (PROD, "us-east-1"): ("10.10.0.0", False),
    (PROD, "eu-west-1"): ("10.11.0.0", False),
    (ML, "us-east-1"): ("10.20.0.0", False),
    (ML, "ap-southeast-1"): ("172.31.0.0", True),  # the default VPC: nobody set up this region on purpose
    (DATA, "eu-west-1"): ("10.30.0.0", False),
    (DATA, "us-east-1"): ("10.31.0.0", False),
}

BOTO_UA = ("Boto3/1.35.40 md/Botocore#1.35.40 ua/2.0 os/linux#6.1.112-124.190.amzn2023.x86_64 md/arch#x86_64 "
           "lang/python#3.11.9 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.35.40")
TF_UA = ("APN/1.0 HashiCorp/1.0 Terraform/1.9.8 (+https://www.terraform.io) terraform-provider-aws/5.74.0 "
         "(+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.32.2 ua/2.1 os/linux "
         "lang/go#1.23.2 md/GOOS#linux md/GOARCH#amd64 api/ec2#1.187.0")
CONSOLE_UA = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/130.0.0.0 Safari/537.36")
NODE_UA = "aws-sdk-js/3.682.0 ua/2.1 os/linux#5.10.227 lang/js md/nodejs#20.18.0 api/ec2#3.682.0"
AGENT_UA = (BOTO_UA + " langchain-aws/0.2.4 langgraph/0.2.39 bedrock-agent-ops/1.3 agent")


ID_CHARS = list("ABCDEFHIJKLNOQRSTUVWXYZ234567")


def _role(key: str, account: str, name: str, session: str, ua: str, ip: str, rng: np.random.Generator,
          *, human: bool = False, sso: bool = False) -> Principal:
    path = "aws-reserved/sso.amazonaws.com/" if sso else ""
    # no G, M or P: a random id must never spell "gpt" or "mcp", which readers take as marks of an AI agent
    role_id = "AROA" + "".join(rng.choice(ID_CHARS, 17))
    key_id = "ASIA" + "".join(rng.choice(ID_CHARS, 16))
    return Principal(key, account, "AssumedRole", name, session, f"arn:aws:iam::{account}:role/{path}{name}",
                     f"{role_id}:{session}", key_id, ua, ip, human)


def _principals(rng: np.random.Generator) -> dict[str, Principal]:
    ps = [
        _role("deploy", PROD, "terraform-deploy", "terraform-run-4411", TF_UA, "3.221.14.90", rng),
        _role("platform-admin", PROD, "AWSReservedSSO_PlatformAdmin_5f1c2a9be3d04e71", "dana@acme.example",
              CONSOLE_UA, "81.2.69.160", rng, human=True, sso=True),
        _role("ml-training", ML, "ml-training", "airflow-train-scheduler", BOTO_UA, "10.20.4.21", rng),
        _role("ml-engineer", ML, "AWSReservedSSO_MLEngineer_0c6e8d2f1a7b3945", "alice@acme.example",
              BOTO_UA, "81.2.69.142", rng, human=True, sso=True),
        _role("agent", ML, "bedrock-agent-ops", "agent-session-7f3a9c2e41d8", AGENT_UA, "10.20.7.33", rng),
        _role("batch", DATA, "batch-scheduler", "batch-scheduler-eu", BOTO_UA, "10.30.2.17", rng),
        _role("ci", DATA, "github-runner-scale-up", "GitHubActions", NODE_UA, "44.210.8.3", rng),
        _role("mgmt-admin", PAYER, "AWSReservedSSO_AdministratorAccess_9a8b7c6d5e4f3a21", "sam@acme.example",
              CONSOLE_UA, "81.2.69.188", rng, human=True, sso=True),
    ]
    return {p.key: p for p in ps}


def _vpcs(rng: np.random.Generator) -> dict[tuple[str, str], Vpc]:
    out = {}
    for (acct, region), (base, default) in VPC_LAYOUT.items():
        b = ip_int(base)
        letters = ("a", "b", "c")
        out[(acct, region)] = Vpc(
            account=acct, region=region, vpc_id=hex_id(rng, "vpc-"), cidr=f"{base}/16", base=b,
            subnets=tuple(hex_id(rng, "subnet-") for _ in letters), azs=tuple(region + x for x in letters),
            az_ids=AZ_IDS[region], flow_log_id=hex_id(rng, "fl-"), default_vpc=default,
        )
    return out


@dataclass(frozen=True)
class Mix:
    """How many instances of each workload a given total gets."""

    web: int
    batch: int
    ci: int
    internal: int
    train: int
    jupyter: int
    gpu_miner: int


def mix(total: int) -> Mix:
    if total < 16:
        raise ValueError("simulate() needs at least 16 instances to hold every workload and both incidents")
    miners = 2 if total < 60 else 3
    train = max(2, round(0.10 * total))
    jupyter = max(1, round(0.02 * total))
    internal = max(2, round(0.08 * total))
    batch = max(2, round(0.15 * total))
    ci = max(3, round(0.20 * total))
    web = total - miners - train - jupyter - internal - batch - ci
    return Mix(web, batch, ci, internal, train, jupyter, miners)


WEB_TYPES = ("m5.large", "m5.xlarge", "c5.xlarge", "c5.2xlarge", "m6i.xlarge")
BATCH_TYPES = ("c5.4xlarge", "c5.9xlarge", "c6i.4xlarge")
CI_TYPES = ("c5.xlarge", "c5.2xlarge", "m5.large")
INTERNAL_TYPES = ("m5.large", "r5.xlarge", "m6i.large")
TRAIN_TYPES = ("p3.2xlarge", "p3.8xlarge", "g5.12xlarge", "g5.2xlarge", "p4d.24xlarge")
TRAIN_P = (0.3, 0.2, 0.25, 0.17, 0.08)


def _intervals(rng: np.random.Generator, t0: float, t1: float, gap: tuple[float, float],
               length: tuple[float, float]) -> list[tuple[float, float]]:
    """Back-to-back random intervals in [t0, t1): gap then length, repeated."""
    out = []
    t = t0 + rng.uniform(0, gap[1])
    while t < t1:
        d = rng.uniform(*length)
        out.append((t, min(t + d, t1)))
        t += d + rng.uniform(*gap)
    return out


def plan(seed: int, start: float, end: float, total: int) -> Org:
    """Decide the whole organisation for the window [start, end)."""
    rng = np.random.default_rng(seed)
    span = end - start
    principals = _principals(rng)
    vpcs = _vpcs(rng)
    m = mix(total)
    used_ips: set[int] = set()
    instances: list[Instance] = []

    def new(workload: str, acct: str, region: str, itype: str, launched: float, terminated: float | None,
            principal: str, *, spot: bool = False, name: str = "") -> Instance:
        vpc = vpcs[(acct, region)]
        az = int(rng.integers(0, 3))
        while True:  # a free host address in the AZ's /20 (subnets 10.x.0.0/20, 10.x.16.0/20, ...)
            ip = vpc.base + az * 4096 + int(rng.integers(10, 4000))
            if ip not in used_ips:
                used_ips.add(ip)
                break
        spec = catalog.lookup(itype)
        assert spec is not None, itype
        inst = Instance(
            idx=len(instances), id=hex_id(rng, "i-"), account=acct, region=region, vpc=vpc, az=az, itype=itype,
            vcpus=spec.vcpus, gpus=spec.gpus, gpu_model=spec.gpu_model, workload=workload,
            eni=hex_id(rng, "eni-"), ip=ip, launched=launched, terminated=terminated, principal=principal,
            spot=spot, name=name or workload, ami=hex_id(rng, "ami-"),
        )
        instances.append(inst)
        return inst

    def before() -> float:
        return start - rng.uniform(1 * HOUR, 7 * DAY)

    # Web fleet: prod, two regions, launched before the window by Terraform or a platform admin.
    for k in range(m.web):
        region = "us-east-1" if k % 3 != 2 else "eu-west-1"
        who = "deploy" if (k % 4 != 3 or k == 0) else "platform-admin"
        new("web", PROD, region, str(rng.choice(WEB_TYPES)), before(), None, who, name=f"web-{k:03d}")

    # Batch workers: data account, eu-west-1, a third on spot; they peg the CPU during runs, idle otherwise.
    for k in range(m.batch):
        inst = new("batch", DATA, "eu-west-1", str(rng.choice(BATCH_TYPES)), before(), None, "batch",
                   spot=(k % 3 == 1), name=f"batch-{k:03d}")
        runs = []
        day0 = np.floor(start / DAY) * DAY
        nightly = rng.uniform(0.5, 3.5) * HOUR
        d = day0 - DAY
        while d < end:  # a nightly run plus an occasional ad hoc one
            s = d + nightly + rng.uniform(0, 0.5 * HOUR)
            runs.append((s, s + rng.uniform(1.5, 4.5) * HOUR))
            if rng.random() < 0.5:
                s = d + rng.uniform(9, 20) * HOUR
                runs.append((s, s + rng.uniform(0.5, 2.0) * HOUR))
            d += DAY
        inst.busy = sorted((max(a, start), min(b, end)) for a, b in runs if b > start and a < end)

    # CI: short-lived runners launched in bursts by the scale-up role, terminated by it after the job.
    n_bursts = max(1, int(np.ceil(m.ci / 5)))
    burst_times = np.sort(rng.uniform(start + 0.02 * span, end - 0.05 * span, n_bursts))
    for k in range(m.ci):
        t = float(burst_times[k % n_bursts]) + rng.uniform(0, 90)
        life = rng.uniform(8, 45) * 60
        inst = new("ci", DATA, "us-east-1", str(rng.choice(CI_TYPES)), t, t + life, "ci",
                   spot=bool(rng.random() < 0.5), name=f"gha-runner-{k:04d}")
        inst.busy = [(t + 60, t + life - 30)]

    # Internal service on 3333/4444 between private addresses (a hard negative for port rules).
    for k in range(m.internal):
        new("internal", PROD, "us-east-1", str(rng.choice(INTERNAL_TYPES)), before(), None, "deploy",
            name=("ledger" if k % 2 else "collector") + f"-{k:02d}")

    # Legitimate training: ML account, us-east-1, launches across the whole window so the role is not new.
    n_long = max(1, int(np.ceil(m.train / 3)))
    for k in range(m.train):
        who = "ml-engineer" if k % 5 == 4 else "ml-training"
        itype = str(rng.choice(TRAIN_TYPES, p=TRAIN_P))
        if k < n_long:
            launched, term = before(), None
        else:
            launched = start + rng.uniform(0.0, 0.9) * span
            life = rng.uniform(6 * HOUR, 3 * DAY)
            term = launched + life if launched + life < end else None
        inst = new("train", ML, "us-east-1", itype, launched, term, who, name=f"train-{k:03d}")
        period = rng.uniform(30, 60) * 60
        t = max(launched, start) + rng.uniform(0, period)
        stop = end if term is None else term
        while t < stop:  # checkpoint / evaluation dips: GPU drops, checkpoint written to S3
            d = rng.uniform(4, 9) * 60
            inst.dips.append((t, min(t + d, stop)))
            t += d + period * rng.uniform(0.85, 1.15)

    # Jupyter notebooks on small GPUs, used by people in working hours.
    for k in range(m.jupyter):
        inst = new("jupyter", ML, "us-east-1", "g4dn.xlarge", before(), None, "ml-engineer",
                   name=f"notebook-{k:02d}")
        sessions = []
        d = np.floor(start / DAY) * DAY
        while d < end:
            for _ in range(int(rng.integers(1, 4))):
                s = d + rng.uniform(8, 18) * HOUR
                sessions.append((s, s + rng.uniform(0.3, 2.0) * HOUR))
            d += DAY
        inst.busy = sorted((max(a, start), min(b, end)) for a, b in sessions if b > start and a < end)

    # Incident 1: an agent role looks up quotas in several regions, fails in its home region, then launches
    # GPUs in a region the account never used, and they mine.
    agent = principals["agent"]
    t_agent = float(np.floor(start + rng.uniform(0.72, 0.78) * span))
    agent_events: list[AgentCall] = []
    t = t_agent
    for region, quota, name in [
        ("us-east-1", "L-DB2E81BA", "GetServiceQuota"), ("us-east-1", "L-417A185B", "GetServiceQuota"),
        ("us-west-2", "L-DB2E81BA", "ListServiceQuotas"), ("eu-west-1", "L-DB2E81BA", "GetServiceQuota"),
        ("ap-northeast-1", "L-DB2E81BA", "GetServiceQuota"), ("ap-southeast-1", "L-DB2E81BA", "GetServiceQuota"),
        ("ap-southeast-1", "L-DB2E81BA", "GetAWSDefaultServiceQuota"),
    ]:
        agent_events.append(AgentCall(t, region, name, quota=quota))
        t += rng.uniform(15, 80)
    agent_events.append(AgentCall(t + 40, "us-east-1", "RunInstances", error="Client.VcpuLimitExceeded",
                                  itype="g5.12xlarge", count=2))
    t_launch = t + rng.uniform(6, 12) * 60
    miner_type = "g5.12xlarge" if rng.random() < 0.6 else "p3.8xlarge"
    miners = []
    for k in range(m.gpu_miner):
        inst = new("gpu_miner", ML, "ap-southeast-1", miner_type, t_launch, None, "agent", name=f"agent-task-{k}")
        inst.miner_from = float(np.floor(t_launch + rng.uniform(3, 8) * 60))
        miners.append(inst)

    # Incident 2: an existing web host, launched early by the deploy role, starts a CPU miner late.
    hosts = [i for i in instances if i.workload == "web" and i.region == "us-east-1" and i.principal == "deploy"]
    victim = hosts[int(rng.integers(0, len(hosts)))]
    victim.miner_from = float(np.floor(start + rng.uniform(0.70, 0.82) * span))

    incidents = [
        PlannedIncident("agent-gpu-miner", "gpu_miner", ML, "ap-southeast-1", tuple(i.id for i in miners),
                        agent.arn, t_agent),
        PlannedIncident("web-cpu-miner", "cpu_miner", PROD, "us-east-1", (victim.id,),
                        principals[victim.principal].arn, victim.miner_from),
    ]
    return Org(seed, start, end, ACCOUNTS, vpcs, principals, instances, incidents, agent_events, dict(POOLS))


def active(inst: Instance, start: float, end: float) -> tuple[float, float] | None:
    """The part of [start, end) in which the instance runs, or None."""
    a = max(inst.launched, start)
    b = end if inst.terminated is None else min(inst.terminated, end)
    return (a, b) if b > a else None


def in_intervals(intervals: list[tuple[float, float]], t: np.ndarray) -> np.ndarray:
    """Boolean mask: which times fall inside one of the intervals (overlaps allowed)."""
    if not intervals:
        return np.zeros(t.shape, dtype=bool)
    merged: list[list[float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    arr = np.array(merged)
    k = np.searchsorted(arr[:, 0], t, side="right") - 1
    return (k >= 0) & (t < arr[np.maximum(k, 0), 1])


# ---- hooks for labelled scenarios (scenarios.py): grow or trim a planned organisation ----------------------
# They draw from the caller's Generator, never from plan()'s, so the default organisation is unchanged.

def ensure_vpc(org: Org, rng: np.random.Generator, account: str, region: str, *, dark: bool = False) -> Vpc:
    """The (account, region) VPC, created in 10.1xx.0.0/16 if missing; `dark`: it has no flow/DNS/metric logs."""
    if (account, region) not in org.vpcs:
        base = f"10.{100 + len(org.vpcs)}.0.0"
        letters = ("a", "b", "c")
        org.vpcs[(account, region)] = Vpc(
            account=account, region=region, vpc_id=hex_id(rng, "vpc-"), cidr=f"{base}/16", base=ip_int(base),
            subnets=tuple(hex_id(rng, "subnet-") for _ in letters), azs=tuple(region + x for x in letters),
            az_ids=AZ_IDS[region], flow_log_id=hex_id(rng, "fl-"),
        )
    if dark:
        org.dark.add((account, region))
    return org.vpcs[(account, region)]


def add_instance(org: Org, rng: np.random.Generator, workload: str, account: str, region: str, itype: str,
                 launched: float, principal: str, *, terminated: float | None = None, spot: bool = False,
                 name: str = "") -> Instance:
    """Append an instance (ids and a free address drawn from `rng`) and return it."""
    vpc = ensure_vpc(org, rng, account, region)
    used = {i.ip for i in org.instances}
    az = int(rng.integers(0, 3))
    while True:
        ip = vpc.base + az * 4096 + int(rng.integers(10, 4000))
        if ip not in used:
            break
    spec = catalog.lookup(itype)
    assert spec is not None, itype
    inst = Instance(
        idx=len(org.instances), id=hex_id(rng, "i-"), account=account, region=region, vpc=vpc, az=az,
        itype=itype, vcpus=spec.vcpus, gpus=spec.gpus, gpu_model=spec.gpu_model, workload=workload,
        eni=hex_id(rng, "eni-"), ip=ip, launched=launched, terminated=terminated, principal=principal, spot=spot,
        name=name or workload, ami=hex_id(rng, "ami-"),
    )
    org.instances.append(inst)
    return inst


def training_dips(rng: np.random.Generator, inst: Instance, start: float, end: float) -> None:
    """Checkpoint / evaluation dips every 30-60 minutes while the instance runs (as plan() draws them)."""
    period = rng.uniform(30, 60) * 60
    t = max(inst.launched, start) + rng.uniform(0, period)
    stop = end if inst.terminated is None else inst.terminated
    while t < stop:
        d = rng.uniform(4, 9) * 60
        inst.dips.append((t, min(t + d, stop)))
        t += d + period * rng.uniform(0.85, 1.15)


def strip_incidents(org: Org, *, keep_agent: bool = False) -> None:
    """Remove the built-in incidents, so a scenario holds only what it injects (and is labelled for)."""
    victims = {r for i in org.incidents if i.name == "web-cpu-miner" for r in i.resources}
    for inst in org.instances:
        if inst.id in victims:
            inst.miner_from = None
    org.incidents = [i for i in org.incidents if keep_agent and i.name == "agent-gpu-miner"]
    org.pools = {}
    if not keep_agent:
        org.instances = [i for i in org.instances if i.workload != "gpu_miner"]
        org.agent_events = []
        for k, inst in enumerate(org.instances):  # writers index arrays by idx
            inst.idx = k
