"""Every registered action declares its permissions (Cloud Custodian's rule) and documents itself."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import spendwatch.actions as actions_pkg
from spendwatch.actions import ACTIONS
from spendwatch.actions.base import Action

PERMISSION = re.compile(r"^[a-z0-9-]+:[A-Z][A-Za-z0-9]+$")  # IAM action syntax, e.g. ec2:CreateSnapshot
# Azure RBAC operation syntax, e.g. Microsoft.Network/networkSecurityGroups/join/action
AZURE_OPERATION = re.compile(r"^Microsoft\.[A-Za-z]+(/[A-Za-z]+)+/(read|write|delete|action)$")
GCP_PERMISSION = re.compile(r"^[a-z]+\.[a-z][A-Za-z]+\.[a-z][A-Za-z]+$")  # e.g. compute.instances.setTags


def test_every_registered_action_declares_its_permissions() -> None:
    assert ACTIONS
    for name, cls in ACTIONS.items():
        assert cls.name == name
        assert isinstance(cls.permissions, tuple) and cls.permissions, name
        syntax = {"azure": AZURE_OPERATION, "gcp": GCP_PERMISSION}.get(cls.cloud, PERMISSION)
        assert all(isinstance(p, str) and syntax.match(p) for p in cls.permissions), name
        assert len(set(cls.permissions)) == len(cls.permissions), f"{name} declares a permission twice"
        assert cls.kind in ("quarantine", "release") and cls.cloud == name.split(".")[0]


def test_every_concrete_action_is_registered_and_documented() -> None:
    concrete = {
        obj for module in (actions_pkg.aws, actions_pkg.azure, actions_pkg.gcp)
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Action) and not inspect.isabstract(obj) and hasattr(obj, "name")
        and obj.__module__ == module.__name__
    }
    assert concrete == set(ACTIONS.values())
    for cls in concrete:
        assert cls.__doc__ and "Example" in cls.__doc__, f"{cls.__name__}: the docstring is the user doc"


def test_importing_actions_loads_no_cloud_sdk() -> None:
    code = ("import sys, spendwatch.actions, spendwatch.actions.commands, spendwatch.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('boto3', 'botocore', 'google', 'azure') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
