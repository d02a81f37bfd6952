"""`spendwatch iam-policy aws|gcp|azure` prints exactly the permissions the connectors declare."""

from __future__ import annotations

import json

import pytest

from spendwatch.cli import main


def test_gcp_role_lists_exactly_the_declared_permissions(capsys: pytest.CaptureFixture[str]) -> None:
    from spendwatch.connectors.gcp.permissions import permissions

    assert main(["iam-policy", "gcp"]) == 0
    out = capsys.readouterr().out
    listed = [line.strip()[2:] for line in out.splitlines() if line.strip().startswith("- ")]
    assert sorted(listed) == sorted(permissions())


def test_azure_role_lists_exactly_the_declared_operations(capsys: pytest.CaptureFixture[str]) -> None:
    from spendwatch.connectors.azure.permissions import DATA_CALLS, permissions

    assert main(["iam-policy", "azure"]) == 0
    role = json.loads(capsys.readouterr().out)
    assert role["Actions"] == permissions()
    assert role["DataActions"] == sorted(set(DATA_CALLS.values()))
    assert not any("*" in action for action in role["Actions"])


def test_aws_athena_policy_is_what_terraform_grants(capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from spendwatch.connectors.aws.permissions import ATHENA_CALLS

    assert main(["iam-policy", "aws", "--athena"]) == 0
    printed = json.loads(capsys.readouterr().out)
    generated = Path(__file__).parents[1] / "deploy" / "terraform" / "aws" / "policies" / "athena.json"
    assert printed == json.loads(generated.read_text())
    assert set(ATHENA_CALLS.values()) <= {a for s in printed["Statement"] for a in s["Action"]}
    assert main(["iam-policy", "gcp", "--athena"]) == 2
    assert "--athena is for aws" in capsys.readouterr().err
