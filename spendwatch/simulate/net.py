"""The outside world the simulated instances talk to: domains, their addresses, S3 ranges, client populations.

Flows and Resolver logs both draw from these tables, so a flow to an address is explained by a DNS answer
for it. Third-party and pool addresses are invented stand-ins in ordinary public ranges (not the TEST-NET
ranges, which Python's `ipaddress` calls private); S3 prefixes are AWS's published ranges for each region.
"""

from __future__ import annotations

import numpy as np

from .common import ip_int, short_hash

THIRD_PARTY: dict[str, tuple[str, ...]] = {
    "api.github.com": ("140.82.112.5", "140.82.113.6"),
    "github.com": ("140.82.114.3",),
    "objects.githubusercontent.com": ("185.199.108.133", "185.199.109.133"),
    "pypi.org": ("151.101.0.223", "151.101.64.223"),
    "files.pythonhosted.org": ("151.101.1.63", "151.101.65.63"),
    "registry-1.docker.io": ("54.236.113.205", "54.227.20.253"),
    "production.cloudflare.docker.com": ("104.16.101.215",),
    "huggingface.co": ("18.164.174.23",),
    "cdn-lfs.huggingface.co": ("18.164.174.55", "18.164.174.118"),
    "download.pytorch.org": ("18.160.10.45",),
    "api.wandb.ai": ("35.186.228.49",),
    "api.stripe.com": ("54.187.216.72", "54.187.174.169"),
    "api.coinbase.com": ("104.18.35.15",),  # a price API: crypto, but not mining (a hard negative)
    "api.coingecko.com": ("104.18.40.68",),  # another price API, behind the same CDN (scenarios only)
    "security.ubuntu.com": ("91.189.91.81",),
    "archive.ubuntu.com": ("185.125.190.36",),
    "sentry.io": ("35.186.247.156",),
    "hooks.slack.com": ("34.233.39.82",),
}

# AWS's published S3 prefixes per region (a flow to these is S3 traffic through the gateway endpoint).
S3_RANGES: dict[str, tuple[str, int]] = {
    "us-east-1": ("52.216.0.0", 15),
    "eu-west-1": ("52.218.0.0", 17),
    "ap-southeast-1": ("52.219.128.0", 17),
}
# Invented addresses in AWS space for the regional service endpoints (ssm, monitoring, sts, ...).
ENDPOINT_BASE: dict[str, str] = {
    "us-east-1": "3.236.64.0", "eu-west-1": "3.248.160.0", "ap-southeast-1": "13.228.64.0",
    "us-west-2": "35.160.64.0",
}
AWS_SERVICES = ("ssm", "ec2messages", "ssmmessages", "monitoring", "logs", "sts", "ec2", "api.ecr", "sqs",
                "dynamodb", "secretsmanager")

PUBLIC_FIRST_OCTETS = np.array([
    23, 24, 31, 37, 45, 46, 47, 49, 50, 62, 66, 67, 68, 69, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82,
    83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 108, 109, 112, 113, 114, 115, 116,
    117, 118, 119, 120, 121, 122, 123, 124, 125, 151, 152, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182,
    183, 184, 185, 186, 187, 188, 189, 190, 191, 200, 201, 212, 213, 217, 218, 219, 220, 221, 222,
])


def _stable_int(name: str) -> int:
    return int(short_hash(name, n=8), 16)


def endpoint_ips(name: str, region: str) -> tuple[int, ...]:
    """Addresses a regional AWS endpoint name resolves to (stable per name)."""
    if name.startswith("s3.") or ".s3." in name:
        base, bits = S3_RANGES[region]
        span = 1 << (32 - bits)
        h = _stable_int(name)
        return (ip_int(base) + h % span, ip_int(base) + (h // span) % span)
    h = _stable_int(name)
    return (ip_int(ENDPOINT_BASE[region]) + 16 + h % 8000,)


def aws_name(service: str, region: str) -> str:
    return f"{service}.{region}.amazonaws.com"


def domain_ips(name: str, region: str) -> tuple[int, ...]:
    """Addresses for any simulated public name (third party, AWS endpoint, bucket)."""
    if name in THIRD_PARTY:
        return tuple(ip_int(x) for x in THIRD_PARTY[name])
    return endpoint_ips(name, region)


def client_pool(rng: np.random.Generator, n: int) -> np.ndarray:
    """A population of public client addresses (int64), for inbound web traffic and scanners."""
    first = rng.choice(PUBLIC_FIRST_OCTETS, n)
    rest = rng.integers(1, 1 << 24, n)
    return (first.astype(np.int64) << 24) | rest


def s3_addresses(rng: np.random.Generator, region: str, n: int) -> np.ndarray:
    base, bits = S3_RANGES[region]
    return ip_int(base) + rng.integers(1, (1 << (32 - bits)) - 1, n)


# What each workload looks up and talks to outside its VPC (name -> weight); `{r}` is the region and
# `{a}` the account. Flows to these names use the addresses DNS answers with.
OUTBOUND: dict[str, dict[str, float]] = {
    "web": {"api.github.com": 1, "api.stripe.com": 3, "sentry.io": 2, "hooks.slack.com": 0.5,
            "api.coinbase.com": 0.4, "security.ubuntu.com": 0.3, "sts.{r}.amazonaws.com": 1,
            "dynamodb.{r}.amazonaws.com": 3, "sqs.{r}.amazonaws.com": 2, "secretsmanager.{r}.amazonaws.com": 0.5},
    "batch": {"s3.{r}.amazonaws.com": 4, "acme-data-lake.s3.{r}.amazonaws.com": 4, "pypi.org": 0.3,
              "files.pythonhosted.org": 0.3, "sts.{r}.amazonaws.com": 1, "sqs.{r}.amazonaws.com": 1},
    "ci": {"github.com": 3, "api.github.com": 3, "objects.githubusercontent.com": 2, "pypi.org": 2,
           "files.pythonhosted.org": 2, "registry-1.docker.io": 2, "production.cloudflare.docker.com": 2,
           "api.ecr.{r}.amazonaws.com": 1, "{a}.dkr.ecr.{r}.amazonaws.com": 1},
    "internal": {"dynamodb.{r}.amazonaws.com": 2, "sts.{r}.amazonaws.com": 1, "sqs.{r}.amazonaws.com": 1},
    "train": {"acme-ml-datasets.s3.{r}.amazonaws.com": 6, "acme-ml-checkpoints.s3.{r}.amazonaws.com": 3,
              "huggingface.co": 0.5, "cdn-lfs.huggingface.co": 1, "api.wandb.ai": 2,
              "download.pytorch.org": 0.2, "sts.{r}.amazonaws.com": 0.5},
    "jupyter": {"pypi.org": 2, "files.pythonhosted.org": 2, "huggingface.co": 1, "github.com": 1,
                "acme-ml-datasets.s3.{r}.amazonaws.com": 1},
    "gpu_miner": {"sts.{r}.amazonaws.com": 0.3},
    # scenario workloads (spendwatch/simulate/scenarios.py)
    "nightly": {"acme-ml-datasets.s3.{r}.amazonaws.com": 6, "acme-ml-checkpoints.s3.{r}.amazonaws.com": 3,
                "api.wandb.ai": 1},
    "ticker": {"api.coingecko.com": 3, "api.coinbase.com": 2},
    "db": {"acme-db-backups.s3.{r}.amazonaws.com": 2, "sts.{r}.amazonaws.com": 1, "kms.{r}.amazonaws.com": 1},
    "inference": {"acme-ml-models.s3.{r}.amazonaws.com": 2, "api.wandb.ai": 1, "sts.{r}.amazonaws.com": 0.5},
    "tool": {"bedrock-runtime.{r}.amazonaws.com": 4, "acme-ml-datasets.s3.{r}.amazonaws.com": 2,
             "sts.{r}.amazonaws.com": 1},
}
# Every instance's agents (SSM, CloudWatch agent) talk to these.
BACKGROUND = {"ssm.{r}.amazonaws.com": 2, "ec2messages.{r}.amazonaws.com": 2, "ssmmessages.{r}.amazonaws.com": 1,
              "monitoring.{r}.amazonaws.com": 2, "logs.{r}.amazonaws.com": 1}


def names_for(workload: str, region: str, account: str, *, background: bool = True) -> tuple[list[str], np.ndarray]:
    table = dict(OUTBOUND.get(workload, {}))
    if background:
        table.update(BACKGROUND)
    names = [k.format(r=region, a=account) for k in table]
    w = np.array(list(table.values()), dtype=float)
    return names, w / w.sum()
