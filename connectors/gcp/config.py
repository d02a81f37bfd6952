"""The GCP connector's settings: the `[gcp]` table of spendwatch's TOML configuration file.

Example::

    [gcp]
    projects = ["acme-ml-prod", "acme-web-prod"]      # inventory through the Compute API, one call per project
    logs = ["gs://acme-gcp-logs/"]                    # Cloud Logging sink buckets: audit, VPC flow and DNS logs
    billing = ["gs://acme-gcp-billing/billing_export/"]  # detailed billing export files (JSON lines, CSV, Parquet)
    monitoring = ["gs://acme-gcp-monitoring/timeseries/"]  # Monitoring time series saved as JSON lines

A `logs` location is where a sink writes: the folders `cloudaudit.googleapis.com/activity/`,
`compute.googleapis.com/vpc_flows/` and `dns.googleapis.com/dns_queries/` under it (an organisation-level
aggregated sink puts every project's entries there). Credentials are Application Default Credentials.
`compute_endpoint`, `storage_endpoint` and `anonymous` are for local fakes and private endpoints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spendwatch.config import ConfigError, Table

_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


@dataclass(frozen=True)
class GcsLocation:
    """A bucket and a name prefix, written `gs://bucket/prefix/` in the configuration."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, value: str) -> GcsLocation:
        """Raises ValueError (the caller names the key) for anything but `gs://bucket[/prefix]`."""
        if not value.startswith("gs://"):
            raise ValueError(f"not a Cloud Storage location (gs://bucket/prefix/): {value!r}")
        bucket, _, prefix = value[5:].partition("/")
        if not _BUCKET.match(bucket):
            raise ValueError(f"not a valid bucket name in {value!r}")
        if prefix and not prefix.endswith("/"):
            prefix += "/"  # a folder: `gs://b/logs` must not also match `logs-old/`
        return cls(bucket, prefix)

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class GcpConfig:
    """What the GCP connector reads and from where. See the module doc for an example."""

    projects: tuple[str, ...] = ()
    logs: tuple[GcsLocation, ...] = ()
    billing: tuple[GcsLocation, ...] = ()
    monitoring: tuple[GcsLocation, ...] = ()
    inventory: bool = True  # the Compute API's instance list per project (GPUs, state, addresses)
    lookback_days: int = 2  # objects that land late are still read this many days behind the newest one
    compute_endpoint: str | None = None
    storage_endpoint: str | None = None
    anonymous: bool = False  # no credentials at all: local fakes only
    backoff_s: float = 1.0  # first wait before retrying a throttled (429) or unavailable (5xx) call
    retry_deadline_s: float = 60.0

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, path: Path | str | None = None) -> GcpConfig:
        """Settings from the `[gcp]` table; ConfigError names the file, the key and what is wrong."""
        t = Table(data, "gcp", path=path)
        projects = t.strings("projects", ())
        for project in projects:
            if not _PROJECT.match(project):
                raise t.error("projects", f"{project!r} is not a project id (6-30 lower-case letters, digits, -)")
        locations = {key: _locations(t, key) for key in ("logs", "billing", "monitoring")}
        config = cls(projects=projects, **locations, inventory=t.boolean("inventory", True),
                     lookback_days=t.integer("lookback_days", 2), compute_endpoint=t.string("compute_endpoint", None),
                     storage_endpoint=t.string("storage_endpoint", None), anonymous=t.boolean("anonymous", False),
                     backoff_s=t.number("backoff_s", 1.0, minimum=0.0, above=True),
                     retry_deadline_s=t.number("retry_deadline_s", 60.0, minimum=0.0, above=True))
        t.done()
        if not (config.projects or config.logs or config.billing or config.monitoring):
            raise ConfigError(f"{f'{path}: ' if path else ''}[gcp]: nothing to scan: set projects, logs, billing "
                              "or monitoring")
        return config


def _locations(t: Table, key: str) -> tuple[GcsLocation, ...]:
    out = []
    for value in t.strings(key, ()):
        try:
            out.append(GcsLocation.parse(value))
        except ValueError as exc:
            raise t.error(key, str(exc)) from None
    return tuple(out)
