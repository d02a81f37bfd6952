"""Quarantine and release: the only code in spendwatch that changes a cloud.

One code path serves the CLI (`spendwatch quarantine` / `release`) and, later, the Slack button: build an
action with its clients, `execute(action, target, apply=...)`. Every action declares the permissions it needs,
plans before it acts (the plan is the dry run), refuses protected resources, respects the blast-radius limit
and writes every step to the audit log in the state database. Cloud SDKs are imported only when an action's
clients are built.

`ACTIONS` is the registry: a plain dict of name -> class; a test walks it and checks each declares its
permissions.
"""

from __future__ import annotations

from .aws import AwsContainPrincipal, AwsQuarantine, AwsRelease, AwsReleasePrincipal
from .azure import AzureQuarantine, AzureRelease
from .base import Action, ActionSettings, Outcome, Refused, Step, Target, execute
from .gcp import GcpQuarantine, GcpRelease

ACTIONS: dict[str, type[Action]] = {
    AwsQuarantine.name: AwsQuarantine,
    AwsRelease.name: AwsRelease,
    AwsContainPrincipal.name: AwsContainPrincipal,
    AwsReleasePrincipal.name: AwsReleasePrincipal,
    AzureQuarantine.name: AzureQuarantine,
    AzureRelease.name: AzureRelease,
    GcpQuarantine.name: GcpQuarantine,
    GcpRelease.name: GcpRelease,
}

__all__ = ["ACTIONS", "Action", "ActionSettings", "Outcome", "Refused", "Step", "Target", "execute"]
