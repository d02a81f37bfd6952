"""Scenario evaluation: run each labelled scenario through the real pipeline and score the findings.

Pipeline per scenario: `simulate.scenarios.run_scenario` (native export files) -> `connectors.files.
read_directory` -> `models.detect` -> findings. Only findings at or above `min_severity` (default medium,
what pages a person) count. Definitions, per scenario and then summed:

- A *label* is one injected incident (positive) or one hard negative: a set of resources and/or a principal.
- A finding *covers* a label when its resource is one of the label's resources, or when it is a principal
  finding (no resource) of the label's principal, or a principal finding listing one of the label's
  resources as related.
- Recall = positive labels covered by at least one counted finding / positive labels (FN: the others).
- Precision = counted findings that cover a positive label (TP) / all counted findings; every counted finding
  that covers no positive label is a false positive, whether it sits on a labelled hard negative or on any
  other (unlabelled, legitimate) resource of the scenario's organisation.
- A hard negative *holds* when no counted finding covers it.
- Per rule: the same counts restricted to counted findings whose `rules` include the rule (the rule took
  part in raising them): TP_r, FP_r, precision_r = TP_r / (TP_r + FP_r), and recall_r = positive labels
  covered by such a finding / all positive labels (how much of the suite the rule helps catch).
- Time to detect (with `ttd=True`): for each positive label covered at the end, the first 15-minute tick at
  which a scan of what had been *delivered* by then (spendwatch.replay's delivery lags) covers it, minus the
  incident's start. Ticks run forward from the start and stop once every such label is found.

The organisation's model: each scenario's baseline model is trained once, as the scheduled retrain at the start
of the scanned day leaves it (`model_store.baseline_model` at the scenario's end: the trailing history ending
`holdout_hours` = one day before, i.e. the scenario's history days, without the incidents), and every scan of
the scenario, the time-to-detect ticks included, scores with it.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .findings import Finding, Severity
from .models.config import DetectionConfig
from .simulate import Incident

__all__ = ["MODES", "Comparison", "Label", "ScenarioResult", "Suite", "evaluate_modes", "evaluate_scenario",
           "mode_configs", "run_compare", "run_suite", "score_findings"]

TTD_EVERY = timedelta(minutes=15)  # the scheduled scan's interval in the time-to-detect ticks


@dataclass(frozen=True)
class Label:
    name: str
    positive: bool
    resources: tuple[str, ...]
    principal: str | None
    started: datetime | None = None

    @classmethod
    def of(cls, incident: Incident, positive: bool) -> Label:
        return cls(incident.name, positive, tuple(incident.resources), incident.principal, incident.started)

    def covered_by(self, f: Finding) -> bool:
        if f.resource is not None:
            return f.resource in self.resources
        if self.principal is not None and f.principal == self.principal:
            return True
        return bool(set(f.related) & set(self.resources))


@dataclass
class ScenarioResult:
    scenario: str
    kind: str
    labels: list[Label]
    findings: list[Finding]  # the counted findings (>= min_severity)
    covered: dict[str, list[str]]  # label name -> ids of counted findings covering it
    seconds: float = 0.0
    detected: dict[str, datetime] = field(default_factory=dict)  # label name -> first tick covering it (ttd)

    def ttd_minutes(self) -> dict[str, float]:
        """Minutes from each detected positive's start to the first tick at which it was covered."""
        return {lab.name: round((self.detected[lab.name] - lab.started).total_seconds() / 60, 1)
                for lab in self.positives if lab.name in self.detected and lab.started is not None}

    @property
    def positives(self) -> list[Label]:
        return [lab for lab in self.labels if lab.positive]

    def tp_findings(self) -> list[Finding]:
        return [f for f in self.findings if any(lab.covered_by(f) for lab in self.positives)]

    def fp_findings(self) -> list[Finding]:
        return [f for f in self.findings if not any(lab.covered_by(f) for lab in self.positives)]

    def passed(self) -> bool:
        """Every positive covered and every hard negative held."""
        return all(bool(self.covered[lab.name]) == lab.positive for lab in self.labels)

    def best(self, label: Label) -> str:
        """The highest severity reached on a label by any finding (counted or not), for the table."""
        return self.covered.get(f"{label.name}#best", ["none"])[0]


def score_findings(labels: Sequence[Label], findings: Iterable[Finding], *, scenario: str = "", kind: str = "",
                   min_severity: Severity = Severity.MEDIUM) -> ScenarioResult:
    """Match findings to labels (definitions in the module docstring)."""
    everything = list(findings)
    counted = [f for f in everything if f.severity >= min_severity]
    covered: dict[str, list[str]] = {}
    for lab in labels:
        covered[lab.name] = [f.id for f in counted if lab.covered_by(f)]
        worst = max((f.severity for f in everything if lab.covered_by(f)), default=None)
        covered[f"{lab.name}#best"] = [worst.label if worst is not None else "none"]
    return ScenarioResult(scenario, kind, list(labels), counted, covered)


def evaluate_scenario(name: str, *, workdir: Path | None = None, min_severity: Severity = Severity.MEDIUM,
                      config: DetectionConfig | None = None) -> ScenarioResult:
    """Simulate one scenario, read it with the files connector, detect, and score (see module docstring)."""
    return evaluate_modes(name, {"default": config}, workdir=workdir, min_severity=min_severity)["default"]


def evaluate_modes(name: str, modes: dict[str, DetectionConfig | None], *, workdir: Path | None = None,
                   min_severity: Severity = Severity.MEDIUM, ttd: bool = False) -> dict[str, ScenarioResult]:
    """Simulate and read one scenario once, then detect and score it under each named detection config
    (each scan scored with the scenario's baseline model; with `ttd`, time to detect too: module docstring)."""
    import time

    from .connectors.files import read_directory
    from .models import detect
    from .models.features import Features, resource_windows
    from .models.iforest import RULE_ID as IFOREST_ID
    from .models.model_store import baseline_model
    from .report import RunReport
    from .simulate.scenarios import SCENARIOS, run_scenario

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"sw-eval-{name}-", dir=workdir) as tmp:
        truth = run_scenario(name, Path(tmp) / "data")
        tables = read_directory(truth.root, RunReport())
    labels = [Label.of(i, True) for i in truth.incidents] + [Label.of(i, False) for i in truth.negatives]
    rows = None
    shared = time.perf_counter() - t0
    out = {}
    for mode, config in modes.items():
        t1 = time.perf_counter()
        cfg = config or DetectionConfig()
        model = None
        if IFOREST_ID not in cfg.disabled:
            rows = resource_windows(Features(tables), "1h") if rows is None else rows
            model = baseline_model(rows, now=truth.end, config=cfg.iforest)
        findings = detect(tables, config=cfg, now=truth.end, model=model)
        result = score_findings(labels, findings, scenario=name, kind=SCENARIOS[name].kind,
                                min_severity=min_severity)
        if ttd:
            result.detected = first_detection(tables, result, config=cfg, model=model, end=truth.end,
                                              min_severity=min_severity)
        result.seconds = shared + time.perf_counter() - t1
        out[mode] = result
    return out


def first_detection(tables: Any, result: ScenarioResult, *, config: DetectionConfig, model: Any, end: datetime,
                    min_severity: Severity = Severity.MEDIUM) -> dict[str, datetime]:
    """For each positive label `result` covers (the scan at `end`), the first TTD_EVERY tick from its start at
    which a scan of what had been delivered by then covers it (more data is assumed never to hide a finding)."""
    from .models import detect
    from .replay import DeliveredTables, ticks

    todo = {lab.name: (lab, lab.started) for lab in result.positives
            if result.covered[lab.name] and lab.started is not None}
    if not todo:
        return {}
    delivered = DeliveredTables(tables)
    found: dict[str, datetime] = {}
    for tick in ticks(min(start for _, start in todo.values()), end + TTD_EVERY, TTD_EVERY):
        due = [lab for lab, start in todo.values() if start <= tick]
        if not due:
            continue
        findings = [f for f in detect(delivered.at(tick), config=config, now=tick, model=model)
                    if f.severity >= min_severity]
        for lab in due:
            if any(lab.covered_by(f) for f in findings):
                found[lab.name] = tick
                del todo[lab.name]
        if not todo:
            break
    return found


@dataclass
class Suite:
    results: list[ScenarioResult]
    rules: list[str] = field(default_factory=list)

    def overall(self) -> dict[str, Any]:
        tp = sum(len(r.tp_findings()) for r in self.results)
        fp = sum(len(r.fp_findings()) for r in self.results)
        pos = [(r, lab) for r in self.results for lab in r.positives]
        found = sum(1 for r, lab in pos if r.covered[lab.name])
        ttd = [m for r in self.results for m in r.ttd_minutes().values()]
        return {"tp": tp, "fp": fp, "fn": len(pos) - found, "positives": len(pos),
                "precision": _ratio(tp, tp + fp), "recall": _ratio(found, len(pos)),
                "median_ttd_min": round(statistics.median(ttd), 1) if ttd else None}

    def per_rule(self) -> dict[str, dict[str, Any]]:
        pos = [(r, lab) for r in self.results for lab in r.positives]
        out = {}
        for rule in self.rules:
            tp = sum(1 for r in self.results for f in r.tp_findings() if rule in f.rules)
            fp = sum(1 for r in self.results for f in r.fp_findings() if rule in f.rules)
            found = sum(1 for r, lab in pos if any(rule in f.rules for f in r.findings if lab.covered_by(f)))
            out[rule] = {"tp": tp, "fp": fp, "precision": _ratio(tp, tp + fp),
                         "recall": _ratio(found, len(pos)), "incidents": found}
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "min_severity": "medium",
            "scenarios": [{
                "scenario": r.scenario, "kind": r.kind, "passed": r.passed(), "seconds": round(r.seconds, 2),
                "labels": [{"name": lab.name, "positive": lab.positive, "covered": bool(r.covered[lab.name]),
                            "best_severity": r.best(lab)} for lab in r.labels],
                "findings": [{"id": f.id, "resource": f.resource, "principal": f.principal,
                              "severity": f.severity.label, "score": round(f.score, 4), "rules": f.rules,
                              "true_positive": f in r.tp_findings()} for f in r.findings],
            } for r in self.results],
            "overall": self.overall(),
            "per_rule": self.per_rule(),
        }

    def markdown(self) -> str:
        lines = ["| scenario | kind | label | expected | best severity | result |", "|---|---|---|---|---|---|"]
        for r in self.results:
            for lab in r.labels:
                ok = bool(r.covered[lab.name]) == lab.positive
                lines.append(f"| {r.scenario} | {r.kind} | {lab.name} | "
                             f"{'>= medium' if lab.positive else '< medium'} | {r.best(lab)} | "
                             f"{'pass' if ok else 'FAIL'} |")
        o = self.overall()
        lines += ["", "| rule | TP findings | FP findings | precision | recall (incidents) |", "|---|---|---|---|---|"]
        for rule, m in self.per_rule().items():
            lines.append(f"| {rule} | {m['tp']} | {m['fp']} | {_pct(m['precision'])} | {_pct(m['recall'])} "
                         f"({m['incidents']}/{o['positives']}) |")
        lines.append(f"| **overall** | {o['tp']} | {o['fp']} | {_pct(o['precision'])} | {_pct(o['recall'])} "
                     f"({o['positives'] - o['fn']}/{o['positives']}) |")
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        width = max(len(r.scenario) for r in self.results) if self.results else 10
        lines = []
        for r in self.results:
            marks = ", ".join(
                f"{lab.name}: {r.best(lab)}{'' if bool(r.covered[lab.name]) == lab.positive else ' FAIL'}"
                for lab in r.labels)
            lines.append(f"{r.scenario:<{width}}  {r.kind:<8}  {'pass' if r.passed() else 'FAIL'}  {marks}")
        o = self.overall()
        lines.append("")
        lines.append(f"{'rule':<18} {'TP':>4} {'FP':>4} {'precision':>10} {'recall':>8}")
        for rule, m in self.per_rule().items():
            lines.append(f"{rule:<18} {m['tp']:>4} {m['fp']:>4} {_pct(m['precision']):>10} {_pct(m['recall']):>8}")
        lines.append(f"{'overall':<18} {o['tp']:>4} {o['fp']:>4} {_pct(o['precision']):>10} {_pct(o['recall']):>8}")
        return "\n".join(lines) + "\n"


def _ratio(a: int, b: int) -> float | None:
    return None if b == 0 else round(a / b, 4)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"


def run_suite(names: Sequence[str] | None = None, *, workdir: Path | None = None) -> Suite:
    """Every scenario (or the named ones) evaluated; per-rule figures over every registered rule + iforest."""
    from .models.rules import RULES
    from .simulate.scenarios import SCENARIOS

    results = [evaluate_scenario(n, workdir=workdir) for n in (names or list(SCENARIOS))]
    return Suite(results, rules=[*RULES, "iforest"])


# ---- rules vs model vs both ----------------------------------------------------------------------------------
# The same detector three ways: every rule without the forest; the forest alone (its hits as the default detector
# makes them: a resource far beyond the baseline's alert-budget threshold for three hours or more reaches medium
# on its own, anything less stays low); and both (the default).
MODES = ("rules", "model", "both")


def mode_configs(base: DetectionConfig | None = None) -> dict[str, DetectionConfig]:
    """The three detection configs compared: rules only, model only, both (the default)."""
    import dataclasses

    from .models.iforest import RULE_ID as IFOREST_ID
    from .models.rules import RULES

    cfg = base or DetectionConfig()
    return {"rules": dataclasses.replace(cfg, disabled=cfg.disabled | {IFOREST_ID}),
            "model": dataclasses.replace(cfg, disabled=frozenset(RULES)), "both": cfg}


def f1(precision: float | None, recall: float | None) -> float | None:
    """Harmonic mean; with no counted findings (precision undefined) and nothing found, F1 is 0."""
    if recall is None:
        return None
    if precision is None:
        return 0.0 if recall == 0 else None
    return 0.0 if precision + recall == 0 else round(2 * precision * recall / (precision + recall), 4)


@dataclass
class Comparison:
    """One Suite per mode over the same simulated scenarios."""

    suites: dict[str, Suite]

    def overall(self) -> dict[str, dict[str, Any]]:
        out = {}
        for mode, suite in self.suites.items():
            o = suite.overall()
            out[mode] = {**o, "f1": f1(o["precision"], o["recall"])}
        return out

    def to_json(self) -> dict[str, Any]:
        return {"min_severity": "medium", "overall": self.overall(),
                "scenarios": {mode: [{"scenario": r.scenario, "passed": r.passed(),
                                      "tp": len(r.tp_findings()), "fp": len(r.fp_findings()),
                                      "found": sum(bool(r.covered[lab.name]) for lab in r.positives),
                                      "positives": len(r.positives), "ttd_min": r.ttd_minutes()}
                                     for r in s.results]
                              for mode, s in self.suites.items()}}

    def markdown(self) -> str:
        modes = list(self.suites)
        lines = ["| scenario | kind | " + " | ".join(f"{m}: found / FP (time to detect)" for m in modes) + " |",
                 "|---|---|" + "---|" * len(modes)]
        for i, r0 in enumerate(self.suites[modes[0]].results):
            cells = []
            for m in modes:
                r = self.suites[m].results[i]
                found = sum(bool(r.covered[lab.name]) for lab in r.positives)
                ttd = r.ttd_minutes()
                when = f" ({', '.join(_minutes(v) for v in ttd.values())})" if ttd else ""
                cells.append(f"{found}/{len(r.positives)} / {len(r.fp_findings())}{when}")
            lines.append(f"| {r0.scenario} | {r0.kind} | " + " | ".join(cells) + " |")
        lines += ["", "| detectors | TP findings | FP findings | missed incidents | precision | recall | F1 | "
                  "median time to detect |", "|---|---|---|---|---|---|---|---|"]
        for mode, o in self.overall().items():
            lines.append(f"| {mode} | {o['tp']} | {o['fp']} | {o['fn']}/{o['positives']} | {_pct(o['precision'])} "
                         f"| {_pct(o['recall'])} | {_num(o['f1'])} | {_minutes(o['median_ttd_min'])} |")
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        lines = [f"{'detectors':<10} {'TP':>4} {'FP':>4} {'missed':>7} {'precision':>10} {'recall':>8} {'F1':>6} "
                 f"{'median TTD':>11}"]
        for mode, o in self.overall().items():
            lines.append(f"{mode:<10} {o['tp']:>4} {o['fp']:>4} {o['fn']:>3}/{o['positives']:<3} "
                         f"{_pct(o['precision']):>10} {_pct(o['recall']):>8} {_num(o['f1']):>6} "
                         f"{_minutes(o['median_ttd_min']):>11}")
        return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _minutes(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.0f} min" if x < 120 else f"{x / 60:.1f} h"


def run_compare(names: Sequence[str] | None = None, *, workdir: Path | None = None,
                base: DetectionConfig | None = None, ttd: bool = True) -> Comparison:
    """Every scenario (or the named ones) simulated once and scanned under rules only, model only and both;
    with `ttd`, each mode's time to detect too (a forward replay per scenario and mode: the slow part)."""
    from .models.rules import RULES
    from .simulate.scenarios import SCENARIOS

    configs = mode_configs(base)
    per = [evaluate_modes(n, dict(configs), workdir=workdir, ttd=ttd) for n in (names or list(SCENARIOS))]
    return Comparison({m: Suite([p[m] for p in per], rules=[*RULES, "iforest"]) for m in configs})
