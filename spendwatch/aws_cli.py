"""`spendwatch iam-policy aws|gcp|azure`, and the live-AWS half of `spendwatch scan --config FILE`.

Kept out of cli.py so the AWS connector's commands live beside each other; cli.py adds them with one line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_iam_policy(args: argparse.Namespace) -> int:
    """Print the read-only policy (AWS IAM policy, GCP custom role, Azure role definition) that covers
    exactly the calls the cloud's connector makes."""
    if args.cloud == "gcp":
        from .connectors.gcp.permissions import role_yaml

        text = role_yaml()
    elif args.cloud == "azure":
        from .connectors.azure.permissions import role_json

        text = role_json()
    else:
        from .connectors.aws.permissions import policy_json

        text = policy_json()
    sys.stdout.write(text.rstrip("\n") + "\n")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("iam-policy", help="print the least-privilege read-only policy or role a live scan needs")
    p.add_argument("cloud", choices=("aws", "gcp", "azure"),
                   help="aws: IAM policy JSON; gcp: custom role YAML; azure: role definition JSON")
    p.set_defaults(func=cmd_iam_policy)


def run_config_scan(path: str, *, store: Any, strict: bool) -> Any:
    """`scan --config FILE`: the clouds named in the file's tables (today `[aws]`), scanned live.

    Raises `spendwatch.config.ConfigError` for a bad file; StrictError on a bad record under --strict.
    """
    from .config import ConfigError, load

    data = load(path)
    if "aws" not in data:
        raise ConfigError(f"{path}: no [aws] table (the only live cloud so far)")
    from .connectors.aws import AwsConfig
    from .pipeline import scan_aws

    config = AwsConfig.from_dict(data["aws"])
    return scan_aws(config, store=store, strict=strict)
