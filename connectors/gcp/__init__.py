"""The GCP connector: the sinks' and exports' objects in Cloud Storage, and inventory through the Compute API.

`scan(GcpConfig, report, marks=...)` (`live.py`) reads Cloud Logging sink buckets (audit, VPC flow and DNS
logs), billing export files and saved Monitoring series incrementally, with the files connector's readers
(`spendwatch.connectors.files.gcp`), and the instance list of each project (`inventory.py`); optionally
utilisation from the Cloud Monitoring API (`monitoring.py`) and spend from the BigQuery billing export table
(`billing.py`) instead of their files. Nothing here imports a Google library at import time: the SDKs are
imported where a client is built, so the core runs without the `gcp` extra. `scan` is loaded on first use:
the files connector imports this package's catalogue, and `live.py` imports the files connector.
"""

from typing import Any

from .config import GcpConfig, GcsLocation
from .permissions import permissions

__all__ = ["GcpConfig", "GcsLocation", "permissions", "scan"]


def __getattr__(name: str) -> Any:
    if name == "scan":
        from .live import scan

        return scan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
