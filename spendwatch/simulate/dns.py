"""Route 53 Resolver query logs, as delivered to S3 (formats.md §3): gzip JSON lines, a file per VPC and hour.

Instances look up the names their workload talks to (net.OUTBOUND), their private service names, and,
through the resolver search list, a few `*.ec2.internal` names that do not exist (NXDOMAIN). Miners look
up their pool when they start and again every hour or three (reconnects, TTL expiry).
"""

from __future__ import annotations

import json

import numpy as np

from .common import FileWriter, day_path, ip_text, iso, join_lines, key_time, short_hash
from .flows import WIN, Rows, rows_for
from .net import domain_ips, names_for
from .org import Instance, Org

DEFAULT_WORKLOADS = ("web", "batch", "ci", "internal", "train", "jupyter", "gpu_miner")
FILE_SPAN = 3600  # one file per VPC and hour: keeps a 14-day org at a few thousand DNS files
RATE = {"web": 0.6, "batch": 0.4, "ci": 4.0, "internal": 0.5, "train": 0.5, "jupyter": 0.4, "gpu_miner": 0.15,
        "nightly": 0.4, "ticker": 2.0, "db": 0.4, "inference": 0.5, "tool": 1.0}


def _answers(ips: tuple[int, ...] | list[int]) -> str:
    return json.dumps([{"Rdata": ip_text(int(x)), "Type": "A", "Class": "IN"} for x in ips],
                      separators=(",", ":"))


class DnsSim:
    def __init__(self, org: Org, rng: np.random.Generator) -> None:
        self.org = org
        self.rng = rng
        # (time, vpc index, line) per query
        self.times: list[np.ndarray] = []
        self.vpcs: list[np.ndarray] = []
        self.lines: list[list[str]] = []
        self.vpc_index = {k: n for n, k in enumerate(org.vpcs)}
        self.answer_cache: dict[tuple[str, str], str] = {}
        internal = [i for i in org.instances if i.workload == "internal"]
        self.private_zone = {
            "collector.prod.internal": [i.ip for i in internal if i.name.startswith("collector")],
            "ledger.prod.internal": [i.ip for i in internal if i.name.startswith("ledger")],
        }

    def _emit(self, insts: list[Instance], times: np.ndarray, names: list[str], qtype: list[str],
              rcode: list[str], answers: list[str]) -> None:
        n = len(times)
        if not n:
            return
        ports = self.rng.integers(1024, 65535, n).tolist()
        lines = []
        for inst, t, name, qt, rc, ans, port in zip(insts, times.tolist(), names, qtype, rcode, answers, ports,
                                                    strict=True):
            lines.append(
                f'{{"version":"1.100000","account_id":"{inst.account}","region":"{inst.region}",'
                f'"vpc_id":"{inst.vpc.vpc_id}","query_timestamp":"{iso(t)}","query_name":"{name}.",'
                f'"query_type":"{qt}","query_class":"IN","rcode":"{rc}","answers":{ans},'
                f'"srcaddr":"{ip_text(inst.ip)}","srcport":"{port}","transport":"UDP",'
                f'"srcids":{{"instance":"{inst.id}"}}}}'
            )
        self.times.append(times)
        self.vpcs.append(np.array([self.vpc_index[(i.account, i.region)] for i in insts], dtype=np.int64))
        self.lines.append(lines)

    def workload(self, rows: Rows, workload: str) -> None:
        if not len(rows):
            return
        n = self.rng.poisson(RATE[workload] * (rows.hi - rows.lo) / WIN)
        r = np.repeat(np.arange(len(rows)), n)
        t = np.floor(rows.lo[r] + self.rng.random(len(r)) * (rows.hi[r] - rows.lo[r] - 1))
        inst_idx = rows.inst[r]
        insts = [self.org.instances[i] for i in inst_idx.tolist()]
        names: list[str] = [""] * len(r)
        cache: dict[tuple[str, str], tuple[list[str], np.ndarray]] = {}
        for inst in insts:
            key = (inst.region, inst.account)
            if key not in cache:
                cache[key] = names_for(workload, inst.region, inst.account)
        groups: dict[tuple[str, str], list[int]] = {}
        for k, inst in enumerate(insts):
            groups.setdefault((inst.region, inst.account), []).append(k)
        for key, ks in groups.items():
            pool, w = cache[key]
            pick = self.rng.choice(len(pool), len(ks), p=w)
            for k, p in zip(ks, pick.tolist(), strict=True):
                names[k] = pool[p]
        u = self.rng.random(len(r))
        qtype, rcode, answers = [], [], []
        for k, inst in enumerate(insts):
            name = names[k]
            if inst.account == "012345678901" and inst.region == "us-east-1" and u[k] < 0.15:
                name = "ledger.prod.internal" if workload == "web" else "collector.prod.internal"
                names[k] = name
                qtype.append("A")
                rcode.append("NOERROR")
                answers.append(_answers(self.private_zone[name][:2]))
            elif u[k] > 0.97:  # resolver search list expansion of a bare name
                suffix = "ec2.internal" if inst.region == "us-east-1" else f"{inst.region}.compute.internal"
                names[k] = f"{name}.{suffix}"
                qtype.append("A")
                rcode.append("NXDOMAIN")
                answers.append("[]")
            elif u[k] > 0.90:
                qtype.append("AAAA")
                rcode.append("NOERROR")
                answers.append("[]")
            else:
                qtype.append("A")
                rcode.append("NOERROR")
                key2 = (name, inst.region)
                if key2 not in self.answer_cache:
                    self.answer_cache[key2] = _answers(domain_ips(name, inst.region))
                answers.append(self.answer_cache[key2])
        self._emit(insts, t, names, qtype, rcode, answers)

    def miner(self, inst: Instance, domain: str, addrs: tuple[str, ...]) -> None:
        assert inst.miner_from is not None
        stop = self.org.end if inst.terminated is None else min(inst.terminated, self.org.end)
        times = []
        t = inst.miner_from - self.rng.uniform(0.2, 2.0)
        while t < stop:
            times.append(np.floor(t))
            t += self.rng.uniform(1, 3) * 3600
        n = len(times)
        ans = json.dumps([{"Rdata": a, "Type": "A", "Class": "IN"} for a in addrs], separators=(",", ":"))
        self._emit([inst] * n, np.array(times), [domain] * n, ["A"] * n, ["NOERROR"] * n, [ans] * n)

    def run(self) -> None:
        by: dict[str, list[Instance]] = {}
        for i in self.org.instances:
            if (i.account, i.region) not in self.org.dark:  # a region without resolver query logging
                by.setdefault(i.workload, []).append(i)
        for workload in RATE:
            if workload in by or workload in DEFAULT_WORKLOADS:  # same draws as ever for the default org
                self.workload(rows_for(self.org, by.get(workload, [])), workload)
        for inc in self.org.incidents:
            if inc.name not in self.org.pools:
                continue
            domain, _port, addrs = self.org.pools[inc.name]
            for iid in inc.resources:
                self.miner(next(i for i in self.org.instances if i.id == iid), domain, addrs)
        for inst in self.org.instances:  # scenario miners that look their pool up through the logged resolver
            spec = inst.miner
            if spec is not None and spec.domain and (inst.account, inst.region) not in self.org.dark:
                self.miner(inst, spec.domain, (spec.addr,))

    def write(self, writer: FileWriter, bucket: str) -> int:
        if not self.times:
            return 0
        t = np.concatenate(self.times)
        v = np.concatenate(self.vpcs)
        lines = [x for part in self.lines for x in part]
        win = (t // FILE_SPAN * FILE_SPAN).astype(np.int64)
        order = np.lexsort((t, win, v))
        keys = (v * (1 << 40) + win)[order]
        bounds = np.flatnonzero(np.diff(keys)) + 1
        vpcs = list(self.org.vpcs.values())
        for a, b in zip(np.concatenate([[0], bounds]).tolist(), np.concatenate([bounds, [len(keys)]]).tolist(),
                        strict=True):
            j = order[a]
            vpc = vpcs[int(v[j])]
            ts = float(win[j] + FILE_SPAN)
            name = (f"{vpc.account}_vpcdnsquerylogs_{vpc.vpc_id}_{key_time(ts)}_"
                    f"{short_hash(self.org.seed, vpc.vpc_id, ts)}.log.gz")
            rel = f"{bucket}/AWSLogs/{vpc.account}/vpcdnsquerylogs/{vpc.vpc_id}/{day_path(ts)}/{name}"
            writer.write_gz(rel, join_lines(lines[k] for k in order[a:b].tolist()), level=1)
        return len(lines)
