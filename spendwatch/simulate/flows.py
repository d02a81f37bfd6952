"""VPC Flow Logs: generated vectorised per workload, written as AWS delivers them to S3 (formats.md §1).

Each workload contributes "conversations" per (instance, 10-minute aggregation window); a conversation
becomes the two records AWS logs on the instance's interface (one per direction), and a conversation
between two instances of the same VPC is logged on both interfaces. Miner connections are long-lived:
one record per direction in every aggregation window, 1-3 KB per minute each way in 110-140-byte packets.

One file per flow log (one per VPC) and aggregation window, named by the window's end, which is about
when AWS would publish it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .common import FileWriter, day_path, ip_int, is_private, key_time, short_hash
from .net import S3_RANGES, client_pool, domain_ips, names_for, s3_addresses
from .org import Instance, Org, Stream, active, in_intervals

WIN = 600  # aggregation interval, seconds (AWS default)

V2_FIELDS = ["version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport", "dstport", "protocol",
             "packets", "bytes", "start", "end", "action", "log-status"]
# A custom format with version-3..5 fields, deliberately not in the default order (bytes before packets):
# readers must go by the header.
V5_FIELDS = ["version", "vpc-id", "subnet-id", "instance-id", "interface-id", "account-id", "type", "srcaddr",
             "dstaddr", "srcport", "dstport", "pkt-srcaddr", "pkt-dstaddr", "protocol", "bytes", "packets", "start",
             "end", "action", "tcp-flags", "log-status", "flow-direction", "traffic-path", "region", "az-id"]

COLS = ("inst", "src", "dst", "sport", "dport", "proto", "packets", "bytes", "start", "end", "action",
        "direction", "status", "path", "flags")
OK, NODATA, SKIPDATA = 0, 1, 2
INGRESS, EGRESS = 0, 1
ACCEPT, REJECT = 0, 1

# Base conversation rates per aggregation window, tuned so a 300-instance org yields ~360 records per
# instance-day (the benchmark's scale).
WEB_CLIENT_RATE = 0.85
SCAN_PORTS = np.array([22, 23, 80, 443, 445, 2375, 3306, 3333, 3389, 4444, 5555, 5900, 6379, 8080, 9200, 14444])


@dataclass
class Rows:
    """One row per (instance, aggregation window) in which the instance runs."""

    inst: np.ndarray  # instance index
    win: np.ndarray  # window start, Unix seconds
    lo: np.ndarray  # part of the window the instance runs in
    hi: np.ndarray

    def __len__(self) -> int:
        return len(self.inst)

    def take(self, mask: np.ndarray) -> Rows:
        return Rows(self.inst[mask], self.win[mask], self.lo[mask], self.hi[mask])


def rows_for(org: Org, insts: list[Instance]) -> Rows:
    parts: list[tuple[np.ndarray, ...]] = []
    for inst in insts:
        span = active(inst, org.start, org.end)
        if span is None:
            continue
        a, b = span
        wins = np.arange(np.floor(a / WIN) * WIN, b, WIN)
        lo = np.maximum(wins, a)
        hi = np.minimum(wins + WIN, b)
        keep = hi - lo >= 1
        parts.append((np.full(keep.sum(), inst.idx), wins[keep], lo[keep], hi[keep]))
    if not parts:
        z = np.zeros(0)
        return Rows(z.astype(np.int64), z, z, z)
    return Rows(*(np.concatenate([p[i] for p in parts]) for i in range(4)))


class Buf:
    """Accumulates flow records as column arrays."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, **cols: np.ndarray | int) -> None:
        sizes = [np.size(v) for v in cols.values() if np.ndim(v) > 0]
        if not sizes or min(sizes) == 0:
            return
        n = max(sizes)
        out = {}
        for c in COLS:
            v = cols.get(c, 0)
            out[c] = np.broadcast_to(np.asarray(v, dtype=np.int64), (n,)).copy()
        self.parts.append(out)

    def pair(self, *, inst: np.ndarray, local: np.ndarray, peer: np.ndarray, lport: np.ndarray | int,
             pport: np.ndarray | int, start: np.ndarray, end: np.ndarray, out_bytes: np.ndarray,
             in_bytes: np.ndarray, out_pkt: np.ndarray | float, in_pkt: np.ndarray | float,
             local_initiates: bool, path: np.ndarray | int, long_lived: bool = False, proto: int = 6) -> None:
        """Both records of a conversation as the local interface logs them."""
        out_packets = np.maximum(1, np.round(out_bytes / out_pkt)).astype(np.int64)
        in_packets = np.maximum(1, np.round(in_bytes / in_pkt)).astype(np.int64)
        if long_lived or proto != 6:
            f_out = f_in = 0
        elif local_initiates:
            f_out, f_in = 3, 19  # SYN|FIN out, SYN-ACK|FIN back
        else:
            f_out, f_in = 19, 3
        self.add(inst=inst, src=local, dst=peer, sport=lport, dport=pport, proto=proto, packets=out_packets,
                 bytes=out_bytes, start=start, end=end, direction=EGRESS, path=path, flags=f_out)
        self.add(inst=inst, src=peer, dst=local, sport=pport, dport=lport, proto=proto, packets=in_packets,
                 bytes=in_bytes, start=start, end=end, direction=INGRESS, path=0, flags=f_in)

    def frame(self) -> dict[str, np.ndarray]:
        if not self.parts:
            return {c: np.zeros(0, dtype=np.int64) for c in COLS}
        return {c: np.concatenate([p[c] for p in self.parts]) for c in COLS}


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int, lo: float, hi: float) -> np.ndarray:
    return np.clip(rng.lognormal(np.log(median), sigma, n), lo, hi).astype(np.int64)


class FlowSim:
    """Generates every flow record of the organisation for [org.start, org.end)."""

    def __init__(self, org: Org, rng: np.random.Generator) -> None:
        self.org = org
        self.rng = rng
        self.buf = Buf()
        self.ip = np.array([i.ip for i in org.instances], dtype=np.int64)
        self.region = np.array([i.region for i in org.instances], dtype=object)
        self.clients = {r: client_pool(rng, 20000) for r in ("us-east-1", "eu-west-1", "ap-southeast-1")}
        self.s3_base = {r: (ip_int(b), bits) for r, (b, bits) in S3_RANGES.items()}

    # -- helpers -------------------------------------------------------------------------------------------
    def _conv(self, rows: Rows, rate: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Poisson conversations per row; returns (row index, start time) per conversation."""
        frac = (rows.hi - rows.lo) / WIN
        n = self.rng.poisson(np.asarray(rate) * frac)
        r = np.repeat(np.arange(len(rows)), n)
        st = rows.lo[r] + self.rng.random(len(r)) * (rows.hi[r] - rows.lo[r] - 1)
        return r, st

    def _ends(self, rows: Rows, r: np.ndarray, st: np.ndarray, dur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = np.floor(st).astype(np.int64)
        e = np.minimum(np.floor(st + dur), rows.hi[r] - 1).astype(np.int64)
        return s, np.maximum(s, e)

    def _ephemeral(self, n: int) -> np.ndarray:
        return self.rng.integers(32768, 61000, n)

    def _is_s3(self, addr: np.ndarray) -> np.ndarray:
        out = np.zeros(addr.shape, dtype=bool)
        for base, bits in self.s3_base.values():
            out |= (addr >> (32 - bits)) == (base >> (32 - bits))
        return out

    def _outbound(self, rows: Rows, rate: float, workload: str, *, req: float = 1500, resp: float = 9000,
                  resp_sigma: float = 1.4, resp_max: float = 5e8) -> None:
        """Calls from instances to public names (APIs, AWS endpoints) on 443."""
        if not len(rows):
            return
        r, st = self._conv(rows, rate)
        if not len(r):
            return
        inst = rows.inst[r]
        peer = np.zeros(len(r), dtype=np.int64)
        # per (region, account) the same names table; pick a name by weight, then one of its addresses
        keys = np.array([f"{self.region[i]}|{self.org.instances[i].account}" for i in np.unique(inst)])
        regacct = np.array([f"{self.region[i]}|{self.org.instances[i].account}" for i in inst.tolist()])
        for key in keys.tolist():
            m = regacct == key
            region, acct = key.split("|")
            names, w = names_for(workload, region, acct)
            pick = self.rng.choice(len(names), m.sum(), p=w)
            ips = [domain_ips(n, region) for n in names]
            table = np.array([[x[k % len(x)] for k in range(2)] for x in ips], dtype=np.int64)
            peer[m] = table[pick, self.rng.integers(0, 2, m.sum())]
        n = len(r)
        out_b = _lognormal(self.rng, req, 0.8, n, 120, 5e6)
        in_b = _lognormal(self.rng, resp, resp_sigma, n, 200, resp_max)
        dur = np.clip(self.rng.lognormal(np.log(1.5), 1.2, n) + in_b / 5e7, 0.05, 590)
        s, e = self._ends(rows, r, st, dur)
        path = np.where(self._is_s3(peer), 7, 8)
        self.buf.pair(inst=inst, local=self.ip[inst], peer=peer, lport=self._ephemeral(n), pport=443, start=s,
                      end=e, out_bytes=out_b, in_bytes=in_b, out_pkt=self.rng.uniform(150, 400, n),
                      in_pkt=self.rng.uniform(900, 1400, n), local_initiates=True, path=path)

    def _s3_bulk(self, rows: Rows, rate: float | np.ndarray, median: float, *, egress: bool = False) -> None:
        """Large S3 transfers through the gateway endpoint: reads (ingress) or checkpoint writes (egress)."""
        r, st = self._conv(rows, rate)
        if not len(r):
            return
        n = len(r)
        inst = rows.inst[r]
        peer = np.zeros(n, dtype=np.int64)
        for region in np.unique(self.region[inst]).tolist():
            m = self.region[inst] == region
            peer[m] = s3_addresses(self.rng, region, m.sum())
        big = _lognormal(self.rng, median, 0.7, n, median / 20, median * 8)
        small = (big * self.rng.uniform(0.01, 0.03, n)).astype(np.int64)  # requests and ACKs
        dur = big / self.rng.uniform(1e8, 4e8, n)
        s, e = self._ends(rows, r, st, dur)
        out_b, in_b = (big, small) if egress else (small, big)
        out_pkt, in_pkt = (1448.0, 66.0) if egress else (66.0, 1448.0)
        self.buf.pair(inst=inst, local=self.ip[inst], peer=peer, lport=self._ephemeral(n), pport=443, start=s,
                      end=e, out_bytes=out_b, in_bytes=in_b, out_pkt=out_pkt, in_pkt=in_pkt,
                      local_initiates=True, path=7)

    def _scanners(self, rows: Rows, rate: float) -> None:
        """Internet background noise: rejected probes, some on miner ports (a weak, misleading signal)."""
        r, st = self._conv(rows, rate)
        if not len(r):
            return
        n = len(r)
        inst = rows.inst[r]
        src = self.clients["us-east-1"][self.rng.integers(0, 20000, n)]
        pk = self.rng.integers(1, 3, n)
        s = np.floor(st).astype(np.int64)
        self.buf.add(inst=inst, src=src, dst=self.ip[inst], sport=self.rng.integers(1024, 65535, n),
                     dport=self.rng.choice(SCAN_PORTS, n), proto=6, packets=pk, bytes=pk * 44, start=s,
                     end=s + self.rng.integers(0, 3, n), action=REJECT, direction=INGRESS, flags=2)

    # -- workloads -----------------------------------------------------------------------------------------
    def web(self, rows: Rows) -> None:
        hour = (rows.win % 86400) / 3600
        peak = np.where(self.region[rows.inst] == "eu-west-1", 13.0, 18.0)
        diurnal = 0.35 + 1.3 * (0.5 + 0.5 * np.cos(2 * np.pi * (hour - peak) / 24))
        r, st = self._conv(rows, WEB_CLIENT_RATE * diurnal)
        n = len(r)
        inst = rows.inst[r]
        peer = np.zeros(n, dtype=np.int64)
        for region, pool in self.clients.items():
            m = self.region[inst] == region
            idx = np.floor(len(pool) * self.rng.random(m.sum()) ** 2.5).astype(np.int64)
            peer[m] = pool[idx]
        port = np.where(self.rng.random(n) < 0.88, 443, 80)
        req = _lognormal(self.rng, 1200, 1.0, n, 60, 2e5)
        resp = _lognormal(self.rng, 25000, 1.3, n, 200, 5e7)
        dur = np.clip(self.rng.lognormal(np.log(2.0), 1.3, n), 0.05, 300)
        s, e = self._ends(rows, r, st, dur)
        self.buf.pair(inst=inst, local=self.ip[inst], peer=peer, lport=port, pport=self.rng.integers(1024, 65535, n),
                      start=s, end=e, out_bytes=resp, in_bytes=req, out_pkt=self.rng.uniform(1100, 1400, n),
                      in_pkt=self.rng.uniform(180, 600, n), local_initiates=False, path=8)
        self._outbound(rows, 0.45, "web")
        self._scanners(rows, 0.12)
        skip = self.rng.choice(len(rows), min(2, len(rows)), replace=False)  # a couple of SKIPDATA windows
        self.buf.add(inst=rows.inst[skip], start=rows.win[skip].astype(np.int64),
                     end=(rows.win[skip] + WIN - 1).astype(np.int64), status=SKIPDATA)

    def batch(self, rows: Rows) -> None:
        busy = np.zeros(len(rows), dtype=bool)
        for i in np.unique(rows.inst).tolist():
            m = rows.inst == i
            busy[m] = in_intervals(self.org.instances[i].busy, rows.win[m] + WIN / 2)
        b, idle = rows.take(busy), rows.take(~busy)
        self._s3_bulk(b, 1.8, 3e8)
        self._outbound(b, 0.8, "batch")
        # idle: only the SSM / CloudWatch agents, and sometimes nothing at all (NODATA)
        frac = (idle.hi - idle.lo) / WIN
        n = self.rng.poisson(0.5 * frac)
        quiet = (n == 0) & (self.rng.random(len(idle)) < 0.06)
        self.buf.add(inst=idle.inst[quiet], start=idle.lo[quiet].astype(np.int64),
                     end=(idle.hi[quiet] - 1).astype(np.int64), status=NODATA)
        self._outbound(idle.take(n > 0), 0.5 / max(1e-9, 1 - np.exp(-0.5)), "internal")

    def ci(self, rows: Rows) -> None:
        self._outbound(rows, 6.0, "ci", resp=2e6, resp_sigma=1.6, resp_max=2e9)

    def train(self, rows: Rows) -> None:
        self._s3_bulk(rows, 1.2, 1e9)
        self._outbound(rows, 0.4, "train")
        # checkpoints written at each dip; dataset and weights pulled from the mirror at job start
        dip = np.zeros(len(rows), dtype=bool)
        first = np.zeros(len(rows), dtype=bool)
        for i in np.unique(rows.inst).tolist():
            m = np.flatnonzero(rows.inst == i)
            inst = self.org.instances[i]
            dip[m] = in_intervals([(a - a % WIN, b) for a, b in inst.dips], rows.win[m])
            if inst.launched >= self.org.start:
                first[m[:2]] = True
        self._s3_bulk(rows.take(dip), 1.0, 3e9, egress=True)
        fr = rows.take(first)
        r, st = self._conv(fr, 3.0)
        n = len(r)
        if n:
            inst = fr.inst[r]
            peer = np.array([ip_int("18.164.174.55"), ip_int("18.164.174.118")])[self.rng.integers(0, 2, n)]
            big = _lognormal(self.rng, 4e9, 0.6, n, 5e8, 2e10)
            s, e = self._ends(fr, r, st, big / 2e8)
            self.buf.pair(inst=inst, local=self.ip[inst], peer=peer, lport=self._ephemeral(n), pport=443,
                          start=s, end=e, out_bytes=(big * 0.015).astype(np.int64), in_bytes=big, out_pkt=66.0,
                          in_pkt=1448.0, local_initiates=True, path=8)

    def jupyter(self, rows: Rows) -> None:
        busy = np.zeros(len(rows), dtype=bool)
        for i in np.unique(rows.inst).tolist():
            m = rows.inst == i
            busy[m] = in_intervals(self.org.instances[i].busy, rows.win[m] + WIN / 2)
        b = rows.take(busy)
        r, st = self._conv(b, 3.0)
        n = len(r)
        inst = b.inst[r]
        vpn = ip_int("10.200.0.0") + self.rng.integers(2, 1000, n)  # people on the VPN, through the TGW
        s, e = self._ends(b, r, st, self.rng.uniform(5, 590, n))
        self.buf.pair(inst=inst, local=self.ip[inst], peer=vpn, lport=8888, pport=self._ephemeral(n), start=s,
                      end=e, out_bytes=_lognormal(self.rng, 60000, 1.2, n, 500, 5e7),
                      in_bytes=_lognormal(self.rng, 8000, 1.0, n, 200, 5e6), out_pkt=1200.0, in_pkt=300.0,
                      local_initiates=False, path=3)
        self._outbound(b, 0.8, "jupyter", resp=2e5, resp_max=2e9)
        self._outbound(rows.take(~busy), 0.3, "internal")

    def internal(self, org: Org) -> None:
        """Ledger -> collector on 3333 (steady, tiny: stratum-shaped but private) and web -> ledger on 4444."""
        insts = [i for i in org.instances if i.workload == "internal"]
        collectors = [i for i in insts if i.name.startswith("collector")]
        ledgers = [i for i in insts if i.name.startswith("ledger")]
        for k, led in enumerate(ledgers):
            col = collectors[k % len(collectors)]
            rows = rows_for(org, [led])
            n = len(rows)
            s = (rows.lo + self.rng.uniform(0, 4, n)).astype(np.int64)
            e = np.maximum(s, (rows.hi - self.rng.uniform(1, 5, n)).astype(np.int64))
            secs = e - s
            rate = self.rng.uniform(2.0, 5.0)
            b1 = (rate * 1024 * secs / 60 * self.rng.uniform(0.85, 1.15, n)).astype(np.int64)
            b2 = (b1 * self.rng.uniform(0.2, 0.4, n)).astype(np.int64)
            lport = np.full(n, int(self._ephemeral(1)[0]))
            for a, b_, ab, ba in ((led, col, b1, b2), (col, led, b2, b1)):
                self.buf.pair(inst=np.full(n, a.idx), local=np.full(n, a.ip), peer=np.full(n, b_.ip),
                              lport=lport if a is led else 3333, pport=3333 if a is led else lport, start=s, end=e,
                              out_bytes=ab, in_bytes=ba, out_pkt=200.0, in_pkt=90.0, local_initiates=a is led,
                              path=1, long_lived=True)
            self._outbound(rows, 0.4, "internal")
        for col in collectors:
            self._outbound(rows_for(org, [col]), 0.4, "internal")
        web = rows_for(org, [i for i in org.instances if i.workload == "web" and i.region == "us-east-1"])
        if not ledgers or not len(web):
            return
        r, st = self._conv(web, 0.35)
        n = len(r)
        led_idx = np.array([x.idx for x in ledgers])[self.rng.integers(0, len(ledgers), n)]
        web_idx = web.inst[r]
        s, e = self._ends(web, r, st, self.rng.lognormal(np.log(0.3), 1.0, n))
        req = _lognormal(self.rng, 3000, 1.0, n, 100, 1e6)
        resp = _lognormal(self.rng, 12000, 1.2, n, 100, 5e6)
        lport = self._ephemeral(n)
        self.buf.pair(inst=web_idx, local=self.ip[web_idx], peer=self.ip[led_idx], lport=lport, pport=4444,
                      start=s, end=e, out_bytes=req, in_bytes=resp, out_pkt=500.0, in_pkt=1200.0,
                      local_initiates=True, path=1)
        self.buf.pair(inst=led_idx, local=self.ip[led_idx], peer=self.ip[web_idx], lport=4444, pport=lport,
                      start=s, end=e, out_bytes=resp, in_bytes=req, out_pkt=1200.0, in_pkt=500.0,
                      local_initiates=False, path=1)

    def stratum(self, inst: Instance, pool_ip: int, port: int, connections: int) -> None:
        """Long-lived pool connections: a record per direction in every window, 1-3 KB/min, ~125 B packets."""
        assert inst.miner_from is not None
        stop = self.org.end if inst.terminated is None else min(inst.terminated, self.org.end)
        for _ in range(connections):
            t = inst.miner_from + self.rng.uniform(0, 20)
            while t < stop:  # reconnect every few hours on a new local port
                seg_end = min(stop, t + self.rng.uniform(2, 6) * 3600)
                wins = np.arange(np.floor(t / WIN) * WIN, seg_end, WIN)
                n = len(wins)
                s = np.maximum(wins, t) + self.rng.uniform(0, 4, n)
                e = np.minimum(wins + WIN, seg_end) - self.rng.uniform(0.5, 4, n)
                ok = e - s >= 30
                s, e, wins = s[ok].astype(np.int64), e[ok].astype(np.int64), wins[ok]
                n = len(s)
                minutes = (e - s) / 60
                up = self.rng.uniform(1.2, 2.4) * 1024 * self.rng.uniform(0.9, 1.1, n) * minutes
                down = self.rng.uniform(1.3, 2.6) * 1024 * self.rng.uniform(0.9, 1.1, n) * minutes
                self.buf.pair(inst=np.full(n, inst.idx), local=np.full(n, inst.ip), peer=np.full(n, pool_ip),
                              lport=np.full(n, int(self._ephemeral(1)[0])), pport=port, start=s, end=e,
                              out_bytes=up.astype(np.int64), in_bytes=down.astype(np.int64),
                              out_pkt=self.rng.uniform(110, 140, n), in_pkt=self.rng.uniform(110, 140, n),
                              local_initiates=True, path=8, long_lived=True)
                t = seg_end + self.rng.uniform(5, 30)

    def nightly(self, rows: Rows) -> None:
        """Nightly training: the dataset pulled from S3 while it runs, the SSM/CloudWatch agents otherwise."""
        busy = np.zeros(len(rows), dtype=bool)
        for i in np.unique(rows.inst).tolist():
            m = rows.inst == i
            busy[m] = in_intervals(self.org.instances[i].busy, rows.win[m] + WIN / 2)
        self._s3_bulk(rows.take(busy), 2.0, 2e9)
        self._outbound(rows.take(busy), 0.4, "train")
        self._outbound(rows.take(~busy), 0.3, "internal")

    def ticker(self, rows: Rows) -> None:
        """A crypto price ticker: an HTTPS keep-alive poll of a price API every minute (a hard negative)."""
        if not len(rows):
            return
        for name in ("api.coingecko.com", "api.coinbase.com"):
            n = len(rows)
            peer = np.full(n, domain_ips(name, "us-east-1")[0], dtype=np.int64)
            minutes = (rows.hi - rows.lo) / 60
            s = rows.lo.astype(np.int64)
            e = np.maximum(s, (rows.hi - 1).astype(np.int64))
            self.buf.pair(inst=rows.inst, local=self.ip[rows.inst], peer=peer, lport=self._ephemeral(n), pport=443,
                          start=s, end=e, out_bytes=(minutes * 700).astype(np.int64),
                          in_bytes=(minutes * self.rng.uniform(2500, 4000, n)).astype(np.int64),
                          out_pkt=350.0, in_pkt=1100.0, local_initiates=True, path=8, long_lived=True)
        self._outbound(rows, 0.3, "internal")

    def stream(self, inst: Instance, spec: Stream) -> None:
        """A scenario's long-lived connection: a record per direction in every window it is open (org.Stream)."""
        stop = min(spec.end, self.org.end if inst.terminated is None else min(inst.terminated, self.org.end))
        t = max(spec.start, inst.launched, self.org.start) + self.rng.uniform(0, 20)
        while t < stop:  # re-opened every few hours on a new local port
            seg_end = min(stop, t + self.rng.uniform(2, 6) * 3600)
            wins = np.arange(np.floor(t / WIN) * WIN, seg_end, WIN)
            s = np.maximum(wins, t) + self.rng.uniform(0, 3, len(wins))
            e = np.minimum(wins + WIN, seg_end) - self.rng.uniform(0.5, 3, len(wins))
            ok = e - s >= 30
            s, e = s[ok].astype(np.int64), e[ok].astype(np.int64)
            n = len(s)
            minutes = (e - s) / 60
            vary = self.rng.lognormal(0.0, spec.sigma, n) if spec.sigma > 0 else np.ones(n)
            self.buf.pair(inst=np.full(n, inst.idx), local=np.full(n, inst.ip), peer=np.full(n, ip_int(spec.addr)),
                          lport=np.full(n, int(self._ephemeral(1)[0])), pport=spec.port, start=s, end=e,
                          out_bytes=(spec.out_per_min * minutes * vary).astype(np.int64),
                          in_bytes=(spec.in_per_min * minutes * vary).astype(np.int64), out_pkt=spec.out_packet,
                          in_pkt=spec.in_packet, local_initiates=True, path=8, long_lived=True)
            t = seg_end + self.rng.uniform(5, 30)

    def db(self, rows: Rows) -> None:
        """A database host: its agents and service calls, and a nightly backup pushed to S3 (bulk egress)."""
        busy = np.zeros(len(rows), dtype=bool)
        for i in np.unique(rows.inst).tolist():
            m = rows.inst == i
            busy[m] = in_intervals(self.org.instances[i].busy, rows.win[m] + WIN / 2)
        self._s3_bulk(rows.take(busy), 4.0, 1.5e9, egress=True)
        self._outbound(rows, 0.5, "db")

    def inference(self, rows: Rows) -> None:
        """A model server behind a load balancer (private peers), pulling weights from S3 now and then."""
        if not len(rows):
            return
        r, st = self._conv(rows, 40.0)
        n = len(r)
        inst = rows.inst[r]
        base = np.array([self.org.instances[i].vpc.base for i in inst.tolist()], dtype=np.int64)
        lb = base + 4096 * self.rng.integers(0, 3, n) + self.rng.integers(4, 8, n)  # the balancer's ENIs
        s, e = self._ends(rows, r, st, self.rng.lognormal(np.log(0.8), 0.8, n))
        self.buf.pair(inst=inst, local=self.ip[inst], peer=lb, lport=8080, pport=self._ephemeral(n), start=s, end=e,
                      out_bytes=_lognormal(self.rng, 6000, 0.8, n, 300, 5e6),
                      in_bytes=_lognormal(self.rng, 2500, 0.8, n, 200, 1e6), out_pkt=1100.0, in_pkt=500.0,
                      local_initiates=False, path=1)
        self._s3_bulk(rows, 0.1, 2e9)
        self._outbound(rows, 0.4, "inference")

    def tool(self, rows: Rows) -> None:
        """An agent's tool runner: calls to the model API, STS and the datasets bucket."""
        self._outbound(rows, 1.5, "tool")
        self._s3_bulk(rows, 0.3, 2e8)

    def resolver(self, inst: Instance) -> None:
        """Third-party DNS (8.8.8.8:53 over UDP) every few minutes: what the cloud's resolver log never sees."""
        assert inst.miner_from is not None
        stop = self.org.end if inst.terminated is None else min(inst.terminated, self.org.end)
        wins = np.arange(np.floor(inst.miner_from / WIN) * WIN, stop, WIN)
        n = len(wins)
        if not n:
            return
        s = (np.maximum(wins, inst.miner_from) + self.rng.uniform(0, 60, n)).astype(np.int64)
        self.buf.pair(inst=np.full(n, inst.idx), local=np.full(n, inst.ip), peer=np.full(n, ip_int("8.8.8.8")),
                      lport=self._ephemeral(n), pport=53, start=s, end=s + 1, out_bytes=np.full(n, 180),
                      in_bytes=np.full(n, 420), out_pkt=60.0, in_pkt=140.0, local_initiates=True, path=8, proto=17)

    def run(self) -> dict[str, np.ndarray]:
        org = self.org
        by: dict[str, list[Instance]] = {}
        for i in org.instances:
            if (i.account, i.region) not in org.dark:  # a region without flow logs writes nothing
                by.setdefault(i.workload, []).append(i)
        web = rows_for(org, by.get("web", []))
        self.web(web)
        self._outbound(web, 0.3, "internal")  # SSM/CloudWatch agents on web hosts
        self.batch(rows_for(org, by.get("batch", [])))
        self.ci(rows_for(org, by.get("ci", [])))
        self.internal(org)
        self.train(rows_for(org, by.get("train", [])))
        self.jupyter(rows_for(org, by.get("jupyter", [])))
        miners = rows_for(org, by.get("gpu_miner", []))
        self._outbound(miners, 0.2, "gpu_miner")
        self._scanners(miners, 0.12)
        for inc in org.incidents:
            if inc.name not in org.pools:
                continue
            _domain, port, addrs = org.pools[inc.name]
            for k, iid in enumerate(inc.resources):
                inst = next(i for i in org.instances if i.id == iid)
                conns = 2 if inst.workload == "gpu_miner" else 1
                self.stratum(inst, ip_int(addrs[k % len(addrs)]), port, conns)
        # Scenario workloads and miners; nothing here runs for the default organisation.
        if "nightly" in by:
            self.nightly(rows_for(org, by["nightly"]))
        if "ticker" in by:
            self.ticker(rows_for(org, by["ticker"]))
        for workload in ("db", "inference", "tool"):
            if workload in by:
                getattr(self, workload)(rows_for(org, by[workload]))
        for inst in org.instances:
            if (inst.account, inst.region) in org.dark:
                continue
            for spec in inst.streams:
                self.stream(inst, spec)
            if inst.miner is None or inst.miner_from is None:
                continue
            if not inst.miner.tunnel:
                self.stratum(inst, ip_int(inst.miner.addr), inst.miner.port, inst.miner.connections)
            if inst.miner.third_party_dns:
                self.resolver(inst)
        return self.buf.frame()


def _s(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.large_string())


def _text(a: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(a), pa.large_string())


def _ips(values: np.ndarray) -> pa.Array:
    """Dotted quads for IPv4 integers, built column-wise in Arrow (no Python loop over records)."""
    octets = [_text((values >> shift) & 255) for shift in (24, 16, 8, 0)]
    return pc.binary_join_element_wise(*octets, _s("."))


def _vpc_lines(org: Org, recs: dict[str, np.ndarray], fields: list[str], version: str) -> pa.Array:
    """One text line per record (ending in a newline) in the given field order, as an Arrow string array."""
    insts = org.instances
    n = len(recs["inst"])
    bad = pa.array(recs["status"] != OK)
    inst = recs["inst"]

    def per_inst(values: list[str]) -> pa.Array:
        return pa.array(np.array(values, dtype=object)[inst], pa.large_string())

    def dash(col: pa.Array) -> pa.Array:
        return pc.if_else(bad, _s("-"), col)

    def const(value: str) -> pa.Array:
        return pa.array(np.full(n, value, dtype=object), pa.large_string())

    src = dash(_ips(recs["src"]))
    dst = dash(_ips(recs["dst"]))
    makers = {
        "version": lambda: const(version),
        "account-id": lambda: per_inst([i.account for i in insts]),
        "interface-id": lambda: per_inst([i.eni for i in insts]),
        "srcaddr": lambda: src,
        "dstaddr": lambda: dst,
        "pkt-srcaddr": lambda: src,
        "pkt-dstaddr": lambda: dst,
        "srcport": lambda: dash(_text(recs["sport"])),
        "dstport": lambda: dash(_text(recs["dport"])),
        "protocol": lambda: dash(_text(recs["proto"])),
        "packets": lambda: dash(_text(recs["packets"])),
        "bytes": lambda: dash(_text(recs["bytes"])),
        "start": lambda: _text(recs["start"]),
        "end": lambda: _text(recs["end"]),
        "action": lambda: dash(pa.array(np.array(["ACCEPT", "REJECT"], dtype=object)[recs["action"]],
                                        pa.large_string())),
        "log-status": lambda: pa.array(np.array(["OK", "NODATA", "SKIPDATA"], dtype=object)[recs["status"]],
                                       pa.large_string()),
        "vpc-id": lambda: per_inst([i.vpc.vpc_id for i in insts]),
        "subnet-id": lambda: per_inst([i.vpc.subnets[i.az] for i in insts]),
        "instance-id": lambda: per_inst([i.id for i in insts]),
        "type": lambda: dash(const("IPv4")),
        "tcp-flags": lambda: dash(_text(recs["flags"])),
        "flow-direction": lambda: dash(pa.array(np.array(["ingress", "egress"], dtype=object)[recs["direction"]],
                                                pa.large_string())),
        "traffic-path": lambda: dash(pc.if_else(pa.array(recs["path"] > 0), _text(recs["path"]), _s("-"))),
        "region": lambda: per_inst([i.region for i in insts]),
        "az-id": lambda: per_inst([i.vpc.az_ids[i.az] for i in insts]),
    }
    cols = [makers[f]() for f in fields]
    return pc.binary_join_element_wise(pc.binary_join_element_wise(*cols, _s(" ")), _s(""), _s("\n"))


def write(org: Org, recs: dict[str, np.ndarray], writer: FileWriter, bucket: str) -> int:
    """Write the records as flow-log files, one per flow log and aggregation window; returns the OK count."""
    insts = org.instances
    vpc_keys = list(org.vpcs)
    vpc_of = np.array([vpc_keys.index((i.account, i.region)) for i in insts], dtype=np.int64)
    fmt = {a.id: a.flow_format for a in org.accounts}
    fl_all = vpc_of[recs["inst"]]
    for k, vpc in enumerate(org.vpcs.values()):
        sel = np.flatnonzero(fl_all == k)
        if not len(sel):
            continue
        part = {c: v[sel] for c, v in recs.items()}
        win = (part["start"] // WIN) * WIN
        order = np.lexsort((part["direction"], part["start"], part["inst"], win))
        part = {c: v[order] for c, v in part.items()}
        win = win[order]
        fields = V2_FIELDS if fmt[vpc.account] == "v2" else V5_FIELDS
        lines = _vpc_lines(org, part, fields, "2" if fields is V2_FIELDS else "5")
        if isinstance(lines, pa.ChunkedArray):
            lines = lines.combine_chunks()
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset:lines.offset + len(lines) + 1]
        data = memoryview(lines.buffers()[2])
        header = (" ".join(fields) + "\n").encode()
        bounds = np.flatnonzero(np.diff(win)) + 1
        for a, b in zip(np.concatenate([[0], bounds]).tolist(), np.concatenate([bounds, [len(win)]]).tolist(),
                        strict=True):
            t = float(win[a] + WIN)
            name = (f"{vpc.account}_vpcflowlogs_{vpc.region}_{vpc.flow_log_id}_{key_time(t)}_"
                    f"{short_hash(org.seed, vpc.flow_log_id, t)}.log.gz")
            rel = f"{bucket}/AWSLogs/{vpc.account}/vpcflowlogs/{vpc.region}/{day_path(t)}/{name}"
            writer.write_gz_bytes(rel, header + bytes(data[offsets[a]:offsets[b]]), level=1)
    return int((recs["status"] == OK).sum())


def egress_bytes(org: Org, recs: dict[str, np.ndarray]) -> dict[tuple[int, int], int]:
    """Bytes each instance sent to the internet per hour (for billing's DataTransfer-Out line items)."""
    m = (recs["status"] == OK) & (recs["direction"] == EGRESS) & ~is_private(recs["dst"]) & (recs["path"] == 8)
    hour = (recs["start"][m] // 3600).astype(np.int64)
    inst = recs["inst"][m]
    key = inst * (1 << 32) + hour
    uniq, inv = np.unique(key, return_inverse=True)
    total = np.bincount(inv, weights=recs["bytes"][m].astype(float))
    return {(int(k >> 32), int(k & 0xFFFFFFFF)): int(v) for k, v in zip(uniq.tolist(), total.tolist(), strict=True)}
