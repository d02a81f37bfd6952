"""Every rule module is registered, carries its metadata and has its tests."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import spendwatch.models.rules as rules_pkg
from spendwatch.findings import Severity
from spendwatch.models import DetectionConfig
from spendwatch.models.rules import RULES
from spendwatch.models.rules.base import Rule, RuleConfig

RULE_MODULES = [m.name for m in pkgutil.iter_modules(rules_pkg.__path__)
                if not m.name.startswith("_") and m.name != "base"]


def test_every_rule_module_defines_a_registered_rule():
    registered = {cls.__module__.rsplit(".", 1)[-1] for cls in RULES.values()}
    assert sorted(registered) == sorted(RULE_MODULES)
    for name in RULE_MODULES:
        module = importlib.import_module(f"spendwatch.models.rules.{name}")
        classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
                   if issubclass(c, Rule) and c is not Rule and c.__module__ == module.__name__]
        assert classes, name
        for cls in classes:
            assert RULES.get(cls.id) is cls, f"{cls.__name__} is not registered under {cls.id!r}"


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_rule_metadata(rule_id):
    cls = RULES[rule_id]
    assert cls.id == rule_id
    assert cls.title and isinstance(cls.title, str)
    assert isinstance(cls.severity, Severity)
    assert re.fullmatch(r"T\d{4}(\.\d{3})?", cls.technique)
    assert cls.family
    doc = inspect.getdoc(cls) or ""
    assert "Catches" in doc and "Miss" in doc, "docstring must say what it catches and what it misses"
    assert issubclass(cls.config_type, RuleConfig)
    assert isinstance(DetectionConfig().rule_config(rule_id), cls.config_type)


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_rule_has_tests(rule_id):
    module = RULES[rule_id].__module__.rsplit(".", 1)[-1]
    path = Path(__file__).parent / "rules" / f"test_{module}.py"
    assert path.exists(), f"no tests for {rule_id} at {path}"
    text = path.read_text()
    assert text.count("def test_") >= 2, "a positive and a negative test at least"


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_rule_runs_on_empty_tables(rule_id):
    from spendwatch.records import Tables

    assert RULES[rule_id]().run(Tables()) == []
