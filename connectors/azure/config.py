"""The Azure connector's settings: the `[azure]` table of spendwatch's TOML configuration file.

Example::

    [azure]
    subscriptions = ["5b1c7e2a-9d4f-4e3b-8a61-2f0c9d7e4b18"]
    logs = ["https://acmelogs.blob.core.windows.net/"]       # storage accounts diagnostic settings write to
    cost = ["https://acmecost.blob.core.windows.net/exports/daily/acme-actual/"]  # Cost Management exports
    metrics_api = true                                       # Percentage CPU from Azure Monitor, per VM
    cost_api = true                                          # daily cost per resource from Cost Management

A `logs` account is one that diagnostic settings send to: the Activity Log (container
`insights-activity-logs`), VNet flow logs (`insights-logs-flowlogflowevent`; flow logs must go to an account in
the VNet's region, so list one account per region) and VM platform metrics (`insights-metrics-pt1m`). A `cost`
location is the container and folder of a Cost Management export. Utilisation comes from one of two places:
`metrics_api = true` asks Azure Monitor (`metrics:getBatch`, 50 VMs a call, at most `metrics_max_calls` calls a
run) for the Percentage CPU of every VM the inventory lists (so it needs `inventory = true`); otherwise the
`insights-metrics-pt1m` container of the `logs` accounts is read. With `metrics_api = true` that container is
not read (the run report says so): one source, never the same minute twice. Spend likewise:
`cost_api = true` asks the Cost Management query API (daily cost per resource, per subscription) and the
`cost` exports are then not read. Credentials are
DefaultAzureCredential (a managed identity, workload identity, or the Azure CLI's login). `arm_endpoint`,
`metrics_endpoint` (a template with `{region}`), `allow_http` (ARM and metrics) and `ca_bundle` (a CA file to
trust, for Blob, ARM and metrics) are for local fakes and private endpoints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from spendwatch.config import ConfigError, Table

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")


@dataclass(frozen=True)
class BlobLocation:
    """A storage account's blob endpoint, optionally a container and a name prefix.

    Written as a URL: `https://<account>.blob.core.windows.net/<container>/<prefix>`, or path-style
    `https://<host>:<port>/<account>/<container>/<prefix>` as emulators and some private endpoints serve it.
    """

    account_url: str  # what BlobServiceClient takes: https://acct.blob.core.windows.net or https://host/acct
    account: str
    container: str = ""
    prefix: str = ""

    @classmethod
    def parse(cls, value: str) -> BlobLocation:
        """Raises ValueError (the caller names the key) for anything that is not a blob endpoint URL."""
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError(f"not a blob endpoint URL (https://<account>.blob.core.windows.net/...): {value!r}")
        segments = [s for s in parts.path.split("/") if s] if parts.path else []
        host = parts.hostname or ""
        if ".blob." in host:
            account = host.split(".", 1)[0]
            account_url = f"{parts.scheme}://{parts.netloc}"
        else:
            if not segments:
                raise ValueError(f"a path-style blob URL needs the account after the host: {value!r}")
            account = segments.pop(0)
            account_url = f"{parts.scheme}://{parts.netloc}/{account}"
        if not _ACCOUNT.match(account):
            raise ValueError(f"{account!r} is not a storage account name (3-24 lower-case letters and digits)")
        container = segments[0] if segments else ""
        prefix = "/".join(segments[1:])
        if prefix:
            prefix += "/"  # a folder: `.../exports/daily` must not also match `daily-old/`
        return cls(account_url, account, container, prefix)

    def __str__(self) -> str:
        return "/".join(p for p in (self.account_url, self.container, self.prefix.rstrip("/")) if p) + "/"


@dataclass(frozen=True)
class AzureConfig:
    """What the Azure connector reads and from where. See the module doc for an example."""

    subscriptions: tuple[str, ...] = ()
    logs: tuple[BlobLocation, ...] = ()
    cost: tuple[BlobLocation, ...] = ()
    inventory: bool = True  # VMs and NICs through Azure Resource Manager, per subscription
    metrics_api: bool = False  # Percentage CPU of every inventoried VM from Azure Monitor (`metrics.py`)
    metrics_max_calls: int = 100  # metrics:getBatch calls per run (50 VMs each); VMs past the cap are a gap
    cost_api: bool = False  # daily cost per resource from the Cost Management query API (`costs.py`)
    initial_hours: int = 24  # how far back an API source starts on its first run
    lookback_days: int = 2  # blobs modified this many days before the newest one are still compared
    arm_endpoint: str | None = None
    metrics_endpoint: str = "https://{region}.metrics.monitor.azure.com"  # the regional metrics endpoints
    allow_http: bool = False  # bearer tokens over plain http to `arm_endpoint`: local fakes only
    ca_bundle: str | None = None
    retry_total: int = 6
    backoff_s: float = 2.0  # first wait before retrying a throttled (503/429) or failed call
    backoff_base: float = 3.0  # Blob: the n-th retry waits backoff_s + backoff_base ** n seconds

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, path: Path | str | None = None) -> AzureConfig:
        """Settings from the `[azure]` table; ConfigError names the file, the key and what is wrong."""
        t = Table(data, "azure", path=path)
        subscriptions = tuple(s.lower() for s in t.strings("subscriptions"))
        for sub in subscriptions:
            if not _GUID.match(sub):
                raise t.error("subscriptions", f"{sub!r} is not a subscription id (a GUID)")
        logs, cost = _locations(t, "logs"), _locations(t, "cost")
        for loc in cost:
            if not loc.container:
                raise t.error("cost", f"{loc} names no container: give the export's container and folder")
        config = cls(subscriptions=subscriptions, logs=logs, cost=cost, inventory=t.boolean("inventory", True),
                     metrics_api=t.boolean("metrics_api", False), cost_api=t.boolean("cost_api", False),
                     metrics_max_calls=t.integer("metrics_max_calls", 100, minimum=1),
                     initial_hours=t.integer("initial_hours", 24, minimum=1, maximum=24 * 30),
                     metrics_endpoint=t.string("metrics_endpoint", "https://{region}.metrics.monitor.azure.com"),
                     lookback_days=t.integer("lookback_days", 2), arm_endpoint=t.string("arm_endpoint", None),
                     allow_http=t.boolean("allow_http", False), ca_bundle=t.string("ca_bundle", None),
                     retry_total=t.integer("retry_total", 6, maximum=20),
                     backoff_s=t.number("backoff_s", 2.0, minimum=0.0),
                     backoff_base=t.number("backoff_base", 3.0, minimum=0.0))
        t.done()
        if config.metrics_api and not config.inventory:
            raise t.error("metrics_api", "needs inventory = true: the metrics are asked for per VM of the inventory")
        return config


def _locations(t: Table, key: str) -> tuple[BlobLocation, ...]:
    out = []
    for value in t.strings(key, ()):
        try:
            out.append(BlobLocation.parse(value))
        except ValueError as exc:
            raise t.error(key, str(exc)) from None
    return tuple(out)


__all__ = ["AzureConfig", "BlobLocation", "ConfigError"]
