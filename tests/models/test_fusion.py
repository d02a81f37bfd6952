from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spendwatch.findings import Hit, Severity
from spendwatch.models.fusion import Mass, combine, fused_mass, score, severity_of, strongest_per_family

T = datetime(2026, 3, 2, tzinfo=UTC)


def hit(rule: str, belief: float, family: str = "", against: float = 0.0, resource: str = "i-a") -> Hit:
    return Hit(rule=rule, cloud="aws", account="1", resource=resource, principal=None, start=T, end=T,
               belief=belief, against=against, evidence=f"{rule} said so", family=family)


def test_port_alone_is_low():
    assert severity_of(score([hit("stratum-port", 0.35, "pool-port")])) == Severity.LOW


def test_saturation_alone_is_low_at_most():
    assert severity_of(score([hit("gpu-saturation", 0.3, "saturation")])) <= Severity.LOW


def test_domain_flow_gpu_and_new_agent_is_critical():
    hits = [hit("pool-domain", 0.8, "pool-intel"), hit("miner-flow-shape", 0.4, "flow-shape"),
            hit("gpu-saturation", 0.3, "saturation"), hit("new-gpu-launch", 0.4, "launch")]
    assert severity_of(score(hits)) == Severity.CRITICAL


def test_domain_gpu_and_first_time_agent_is_critical_without_flow_shape():
    hits = [hit("pool-domain", 0.8, "pool-intel"), hit("gpu-saturation", 0.3, "saturation"),
            hit("new-gpu-launch", 0.4, "launch")]
    assert score(hits) == pytest.approx(1 - 0.2 * 0.7 * 0.6)
    assert severity_of(score(hits)) == Severity.CRITICAL


def test_one_family_counts_once():
    one = [hit("gpu-saturation", 0.3, "saturation")]
    two = [hit("gpu-saturation", 0.3, "saturation"), hit("cpu-saturation", 0.25, "saturation")]
    assert score(two) == pytest.approx(score(one)) == pytest.approx(0.3)
    assert [h.rule for h in strongest_per_family(two)] == ["gpu-saturation"]
    # different families do add up
    assert score([*one, hit("stratum-port", 0.35, "pool-port")]) == pytest.approx(1 - 0.7 * 0.65)


def test_against_mass_lowers_the_score():
    port = hit("stratum-port", 0.35, "pool-port")
    plain = score([port, hit("gpu-saturation", 0.1, "saturation")])
    training = score([port, hit("gpu-saturation", 0.1, "saturation", against=0.4)])
    assert training < plain
    # worked through by hand: m(A) = (.1*.35 + .1*.65 + .5*.35) / (1 - .4*.35)
    assert training == pytest.approx(0.275 / 0.86)


def test_dempster_rule_is_normalised_and_commutative():
    a, b = Mass(0.6, 0.1, 0.3), Mass(0.2, 0.5, 0.3)
    ab, ba = combine(a, b), combine(b, a)
    assert ab.abuse + ab.legit + ab.unknown == pytest.approx(1.0)
    assert (ab.abuse, ab.legit) == pytest.approx((ba.abuse, ba.legit))
    assert combine(Mass(1, 0, 0), Mass(0, 1, 0)).unknown == 1.0  # total conflict stays undecided
    assert fused_mass([]).abuse == 0.0


@pytest.mark.parametrize(("value", "level"), [(0.0, Severity.INFO), (0.19, Severity.INFO), (0.2, Severity.LOW),
                                              (0.44, Severity.LOW), (0.45, Severity.MEDIUM), (0.7, Severity.HIGH),
                                              (0.88, Severity.CRITICAL), (1.0, Severity.CRITICAL)])
def test_cutoffs(value, level):
    assert severity_of(value) == level
