"""The evaluator's definitions (on hand-made findings) and `spendwatch eval --scenarios` end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from spendwatch.cli import main
from spendwatch.evaluate import Label, Suite, score_findings
from spendwatch.findings import Finding, Severity

T = datetime(2026, 1, 1, tzinfo=UTC)


def _f(resource, severity, rules, principal=None, related=()):
    return Finding(id=f"sw-{resource}-{principal}", cloud="aws", account="1", region=None, resource=resource,
                   principal=principal, severity=severity, score=0.5, rules=list(rules), evidence=[], first_seen=T,
                   last_seen=T, detected_at=T, hourly_cost_usd=None, summary="", related=list(related))


def test_matching_counts_and_per_rule_figures():
    labels = [Label("miner", True, ("i-1",), None), Label("mass", True, ("i-5", "i-6"), "arn:p"),
              Label("missed", True, ("i-9",), None), Label("jupyter", False, ("i-j",), None)]
    findings = [
        _f("i-1", Severity.HIGH, ["pool-domain", "gpu-saturation"]),  # TP (resource)
        _f(None, Severity.MEDIUM, ["launch-burst"], principal="arn:p", related=["i-5", "i-6"]),  # TP (principal)
        _f("i-j", Severity.MEDIUM, ["gpu-saturation"]),  # FP on a hard negative
        _f("i-x", Severity.LOW, ["stratum-port"]),  # below medium: not counted
        _f("i-9", Severity.LOW, ["spend-spike"]),  # a positive reached only low: missed
    ]
    r = score_findings(labels, findings, scenario="s", kind="evasion")
    assert len(r.findings) == 3 and len(r.tp_findings()) == 2 and len(r.fp_findings()) == 1
    assert r.covered["miner"] and r.covered["mass"] and not r.covered["missed"] and r.covered["jupyter"]
    assert r.best(labels[2]) == "low" and not r.passed()
    suite = Suite([r], rules=["pool-domain", "gpu-saturation", "launch-burst", "spend-spike"])
    o = suite.overall()
    assert (o["tp"], o["fp"], o["fn"], o["positives"]) == (2, 1, 1, 3)
    assert o["precision"] == pytest.approx(2 / 3, abs=1e-4) and o["recall"] == pytest.approx(2 / 3, abs=1e-4)
    per = suite.per_rule()
    assert per["gpu-saturation"] == {"tp": 1, "fp": 1, "precision": 0.5, "recall": 0.3333, "incidents": 1}
    assert per["spend-spike"]["precision"] is None and per["spend-spike"]["recall"] == 0.0
    md = suite.markdown()
    assert "| **overall** | 2 | 1 | 67 % | 67 % (2/3) |" in md
    assert "| s | evasion | missed | >= medium | low | FAIL |" in md


def test_eval_scenarios_command(capsys):
    assert main(["eval", "--scenarios", "--only", "baseline", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scenarios"][0]["scenario"] == "baseline" and out["scenarios"][0]["passed"]
    assert out["overall"]["fp"] == 0 and "launch-burst" in out["per_rule"]
    assert main(["eval", "--scenarios", "--only", "nope"]) == 2


def test_f1_definition():
    from spendwatch.evaluate import f1

    assert f1(1.0, 1.0) == 1.0 and f1(0.5, 1.0) == pytest.approx(2 / 3, abs=1e-4)
    assert f1(None, 0.0) == 0.0 and f1(0.0, 0.0) == 0.0


def test_compare_modes_on_a_novel_scenario():
    """Rules only, model only and both on an unknown-signature scenario: the rules have nothing, the organisation's
    baseline model finds it, and the combination keeps it; figures and times computed from the findings."""
    from spendwatch.evaluate import f1, run_compare

    cmp = run_compare(["agent-exfiltration"], ttd=True)
    assert list(cmp.suites) == ["rules", "model", "both"]
    rules, model, both = (cmp.suites[m].results[0] for m in ("rules", "model", "both"))
    assert all("iforest" not in f.rules for f in rules.findings)
    assert model.findings and all(f.rules == ["iforest"] for f in model.findings)
    assert not rules.covered["agent-exfiltration"]
    assert model.covered["agent-exfiltration"] and both.covered["agent-exfiltration"]
    assert not rules.detected and set(model.detected) == {"agent-exfiltration"}
    start = next(lab.started for lab in model.positives)
    assert model.detected["agent-exfiltration"] > start  # the forest needs hours beyond its threshold
    took = (both.detected["agent-exfiltration"] - start).total_seconds() / 60
    assert both.ttd_minutes()["agent-exfiltration"] == round(took, 1)
    for mode, o in cmp.overall().items():
        r = cmp.suites[mode].results[0]
        assert o["tp"] == len(r.tp_findings()) and o["fp"] == len(r.fp_findings())
        assert o["f1"] == f1(o["precision"], o["recall"])
    assert cmp.overall()["rules"]["f1"] == 0.0 and cmp.overall()["both"]["f1"] == 1.0
    md = cmp.markdown()
    header = ("| detectors | TP findings | FP findings | missed incidents | precision | recall | F1 | "
              "median time to detect |")
    assert header in md
    assert md.count("| agent-exfiltration | novel |") == 1
