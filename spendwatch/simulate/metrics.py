"""Utilisation: CloudWatch Metric Streams JSON lines as Firehose delivers them to S3 (formats.md §5).

Samples are drawn per minute and streamed as 5-minute statistics (max, min, sum, count), which is what
keeps the 14-day, 300-instance org near a million lines. AWS/EC2 CPUUtilization for every instance;
CWAgent nvidia_smi_utilization_gpu per GPU index for GPU instances. Metric streams are regional: one stream
per region in the monitoring (management) account, which CloudWatch cross-account observability lets see
every linked account's metrics (each record names its account); one file per 15-minute Firehose buffer.

Shapes: web 20-50 % with a daily cycle; batch pegged during runs and near idle otherwise; training GPUs at
95-100 % with a dip to 5-40 % at every checkpoint/evaluation (every 30-60 min); GPU miners flat at
99-100 % with no dips and modest CPU; a CPU miner pegs its host flat near 100 %.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from .common import FileWriter, det_uuid, ip_text
from .org import Instance, MinerSpec, Org, active, in_intervals

PERIOD = 300
BUFFER = 900  # Firehose buffer interval, seconds

GPU_NAMES = {"A10G": "NVIDIA A10G", "V100": "Tesla V100-SXM2-16GB", "A100": "NVIDIA A100-SXM4-40GB",
             "T4": "Tesla T4", "L4": "NVIDIA L4", "H100": "NVIDIA H100 80GB HBM3"}


def _diurnal(t: np.ndarray, peak: float) -> np.ndarray:
    hour = (t % 86400) / 3600
    return 0.5 + 0.5 * np.cos(2 * np.pi * (hour - peak) / 24)


class MetricSim:
    def __init__(self, org: Org, rng: np.random.Generator) -> None:
        self.org = org
        self.rng = rng
        self.lines: list[tuple[np.ndarray, int, list[str]]] = []  # (timestamps, stream index, lines)
        self.streams = sorted({i.region for i in org.instances})

    def series(self, inst: Instance) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Per-minute samples: times, CPU, and GPU (shape gpus x minutes) or None."""
        span = active(inst, self.org.start, self.org.end)
        assert span is not None
        t = np.arange(np.ceil(span[0] / 60) * 60, span[1], 60.0)
        n = len(t)
        rng = self.rng
        gpu: np.ndarray | None = None
        w = inst.workload
        if w == "web":
            peak = 13.0 if inst.region == "eu-west-1" else 18.0
            cpu = 20 + 28 * _diurnal(t, peak) + rng.normal(0, 2.5, n)
            cpu = np.clip(cpu, 18, 52)
        elif w == "batch":
            busy = in_intervals(inst.busy, t)
            lo, hi = inst.cpu_busy or (94.0, 100.0)
            cpu = np.where(busy, rng.uniform(lo, hi, n), rng.uniform(0.8, 4, n))
        elif w == "ci":
            busy = in_intervals(inst.busy, t)
            cpu = np.where(busy, np.clip(75 + rng.normal(0, 12, n), 5, 100), rng.uniform(2, 8, n))
        elif w == "internal":
            cpu = np.clip(12 + rng.normal(0, 3, n), 3, 30)
        elif w == "train":
            dip = in_intervals(inst.dips, t)
            cpu = np.where(dip, rng.uniform(45, 70, n), np.clip(35 + rng.normal(0, 6, n), 10, 80))
            base = np.clip(97.5 + rng.normal(0, 1.0, n), 93, 100)
            gpu = np.stack([np.where(dip, rng.uniform(5, 40, n), np.clip(base + rng.normal(0, 0.6, n), 92, 100))
                            for _ in range(inst.gpus)])
        elif w == "jupyter":
            busy = in_intervals(inst.busy, t)
            cpu = np.where(busy, rng.uniform(5, 25, n), rng.uniform(0.5, 3, n))
            burst = busy & (rng.random(n) < 0.4)
            gpu = np.where(burst, rng.uniform(30, 90, n), np.where(busy, rng.uniform(0, 5, n), 0.0))[None, :]
        elif w == "gpu_miner":
            assert inst.miner_from is not None
            mining = t >= inst.miner_from
            cpu = np.where(mining, np.clip(10 + rng.normal(0, 2, n), 4, 20), rng.uniform(20, 45, n))
            gpu = np.stack([np.where(mining, np.clip(99.4 + rng.uniform(-0.4, 0.6, n), 99, 100), 0.0)
                            for _ in range(inst.gpus)])
        elif w == "nightly":  # pegged flat while the nightly run lasts, idle otherwise
            busy = in_intervals(inst.busy, t)
            cpu = np.where(busy, np.clip(40 + rng.normal(0, 5, n), 20, 80), rng.uniform(0.5, 3, n))
            gpu = np.stack([np.where(busy, np.clip(99.6 + rng.uniform(-0.4, 0.4, n), 99, 100), 0.0)
                            for _ in range(inst.gpus)])
        elif w == "ticker":
            cpu = np.clip(4 + rng.normal(0, 1.5, n), 1, 15)
        elif w == "db":  # a database: light load; the nightly backup compresses and uploads
            busy = in_intervals(inst.busy, t)
            cpu = np.where(busy, rng.uniform(55, 80, n), np.clip(14 + rng.normal(0, 4, n), 4, 35))
        elif w == "inference":  # a model server: GPU load follows the users' day
            load = _diurnal(t, 17.0)
            cpu = np.clip(18 + 14 * load + rng.normal(0, 3, n), 5, 60)
            gpu = np.stack([np.clip(35 + 45 * load + rng.normal(0, 4, n), 5, 95) for _ in range(inst.gpus)])
        elif w == "tool":
            cpu = np.clip(20 + rng.normal(0, 6, n), 3, 60)
        else:
            raise AssertionError(w)
        if inst.miner_from is not None and w == "web" and inst.miner is None:
            mining = t >= inst.miner_from
            cpu = np.where(mining, np.clip(98.8 + rng.uniform(0, 1.2, n), 98, 100), cpu)
        if inst.miner is not None and inst.miner_from is not None:
            cpu, gpu = self.overlay(inst, t, cpu, gpu)
        return t, cpu, gpu

    def overlay(self, inst: Instance, t: np.ndarray, cpu: np.ndarray,
                gpu: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """A scenario miner's utilisation on top of the host's own: flat at its level (throttled or not)."""
        spec = inst.miner
        assert spec is not None and inst.miner_from is not None
        mining = t >= inst.miner_from
        n = len(t)
        level = np.clip(self._levels(spec, t) + self.rng.uniform(-0.6, 0.6, n), 0, 100)
        if spec.device == "cpu":
            return np.where(mining, level, cpu), gpu
        assert gpu is not None, f"{inst.id}: a GPU miner needs a GPU instance"
        if spec.fill_dips:  # it takes the GPUs only when the training job leaves them idle
            return cpu, np.where(mining, np.maximum(gpu, level), gpu)
        return cpu, np.where(mining, level, gpu)

    def _levels(self, spec: MinerSpec, t: np.ndarray) -> np.ndarray | float:
        """The miner's cap at each time: fixed, or (level_range) a new level every 20-40 minutes."""
        if spec.level_range is None or not len(t):
            return spec.level
        edges = [float(t[0])]
        while edges[-1] <= t[-1]:
            edges.append(edges[-1] + self.rng.uniform(20, 40) * 60)
        levels = self.rng.uniform(*spec.level_range, len(edges))
        return levels[np.searchsorted(np.array(edges), t, side="right") - 1]

    def add(self, inst: Instance, t: np.ndarray, values: np.ndarray, head: str) -> None:
        """Aggregate per-minute values into PERIOD statistics and render the JSON lines."""
        period = (t // PERIOD * PERIOD).astype(np.int64)
        starts = np.concatenate([[0], np.flatnonzero(np.diff(period)) + 1])
        vmax = np.maximum.reduceat(values, starts)
        vmin = np.minimum.reduceat(values, starts)
        vsum = np.add.reduceat(values, starts)
        count = np.diff(np.append(starts, len(values)))
        ts = period[starts]
        lines = [f'{head},"timestamp":{p * 1000},"value":{{"max":{a:.2f},"min":{b:.2f},"sum":{s:.2f},'
                 f'"count":{c}.0}},"unit":"Percent"}}'
                 for p, a, b, s, c in zip(ts.tolist(), vmax.tolist(), vmin.tolist(), vsum.tolist(),
                                          count.tolist(), strict=True)]
        self.lines.append((ts, self.streams.index(inst.region), lines))

    def run(self) -> None:
        for inst in self.org.instances:
            if active(inst, self.org.start, self.org.end) is None or (inst.account, inst.region) in self.org.dark:
                continue
            t, cpu, gpu = self.series(inst)
            if not len(t):
                continue
            common = f'{{"metric_stream_name":"sw-metrics","account_id":"{inst.account}","region":"{inst.region}"'
            self.add(inst, t, cpu, common + ',"namespace":"AWS/EC2","metric_name":"CPUUtilization",'
                     f'"dimensions":{{"InstanceId":"{inst.id}"}}')
            if gpu is None:
                continue
            host = f"ip-{ip_text(inst.ip).replace('.', '-')}"
            name = GPU_NAMES.get(inst.gpu_model or "", "NVIDIA GPU")
            for k in range(gpu.shape[0]):
                self.add(inst, t, gpu[k], common + ',"namespace":"CWAgent","metric_name":"nvidia_smi_utilization_gpu",'
                         f'"dimensions":{{"InstanceId":"{inst.id}","index":"{k}","name":"{name}","host":"{host}"}}')

    def write(self, writer: FileWriter, bucket: str) -> int:
        if not self.lines:
            return 0
        ts = np.concatenate([x[0] for x in self.lines])
        stream = np.concatenate([np.full(len(x[0]), x[1]) for x in self.lines])
        lines = [line for x in self.lines for line in x[2]]
        # a datapoint reaches Firehose a minute or two after its period ends
        buf = (ts + PERIOD + 90) // BUFFER
        order = np.lexsort((ts, buf, stream))
        key = (stream * (1 << 40) + buf)[order]
        bounds = np.flatnonzero(np.diff(key)) + 1
        for a, b in zip(np.concatenate([[0], bounds]).tolist(), np.concatenate([bounds, [len(key)]]).tolist(),
                        strict=True):
            j = order[a]
            region = self.streams[int(stream[j])]
            when = int((buf[j] + 1) * BUFFER + self.rng.integers(0, 30))
            d = datetime.fromtimestamp(when, UTC)
            fname = f"sw-metrics-{region}-1-{d:%Y-%m-%d-%H-%M-%S}-{det_uuid(self.rng)}.gz"
            rel = f"{bucket}/metric-streams/{region}/{d:%Y/%m/%d/%H}/{fname}"
            writer.write_gz(rel, "\n".join(lines[k] for k in order[a:b].tolist()) + "\n", level=1)
        return len(lines)
