"""`spendwatch iam-policy aws|gcp|azure`, and the live half of `spendwatch scan --config FILE` (every cloud).

Kept out of cli.py so the AWS connector's commands live beside each other; cli.py adds them with one line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_iam_policy(args: argparse.Namespace) -> int:
    """Print the read-only policy (AWS IAM policy, GCP custom role, Azure role definition) that covers
    exactly the calls the cloud's connector makes; with --athena, the AWS policy `[aws.athena]` adds."""
    if args.athena and args.cloud != "aws":
        print(f"spendwatch: error: --athena is for aws, not {args.cloud}", file=sys.stderr)
        return 2
    if args.cloud == "gcp":
        from .connectors.gcp.permissions import role_yaml

        text = role_yaml()
    elif args.cloud == "azure":
        from .connectors.azure.permissions import role_json

        text = role_json()
    elif args.athena:
        import json

        from .connectors.aws.permissions import athena_policy

        text = json.dumps(athena_policy(), indent=2)
    else:
        from .connectors.aws.permissions import policy_json

        text = policy_json()
    sys.stdout.write(text.rstrip("\n") + "\n")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("iam-policy", help="print the least-privilege read-only policy or role a live scan needs")
    p.add_argument("cloud", choices=("aws", "gcp", "azure"),
                   help="aws: IAM policy JSON; gcp: custom role YAML; azure: role definition JSON")
    p.add_argument("--athena", action="store_true",
                   help="aws: instead, the policy [aws.athena] adds (Athena queries, the Glue tables, their buckets "
                        "and the results bucket; narrow each statement's Resource); with role_arn, that role's")
    p.set_defaults(func=cmd_iam_policy)


def live_configs(path: str) -> dict[str, Any]:
    """The `[aws]`, `[gcp]` and `[azure]` tables of the file, each as its connector's typed settings.

    Raises `spendwatch.config.ConfigError` for a bad file, a bad table, or a file with none of the three.
    """
    from .config import ConfigError, load

    data = load(path)
    configs: dict[str, Any] = {}
    for cloud in ("aws", "gcp", "azure"):
        table = data.get(cloud)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{cloud}] must be a table")
        if cloud == "aws":
            from .connectors.aws import AwsConfig

            configs[cloud] = AwsConfig.from_dict(table)
        elif cloud == "gcp":
            from .connectors.gcp import GcpConfig

            configs[cloud] = GcpConfig.from_dict(table, path=path)
        else:
            from .connectors.azure import AzureConfig

            configs[cloud] = AzureConfig.from_dict(table, path=path)
    if not configs:
        raise ConfigError(f"{path}: no [aws], [gcp] or [azure] table: no live cloud to scan")
    return configs


def run_config_scan(path: str, *, store: Any, strict: bool, credentials: dict[str, Any] | None = None) -> Any:
    """`scan --config FILE`: every cloud the file has a table for (`[aws]`, `[gcp]`, `[azure]`), scanned live
    in one run (`spendwatch.pipeline.scan_live`).

    Raises `spendwatch.config.ConfigError` for a bad file; StrictError on a bad record under --strict.
    """
    from .pipeline import scan_live

    return scan_live(live_configs(path), store=store, strict=strict, credentials=credentials)
