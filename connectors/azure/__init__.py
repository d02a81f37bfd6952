"""The Azure connector: diagnostic-settings and cost-export blobs in storage accounts, and inventory from ARM.

`scan(AzureConfig, report, marks=...)` (`live.py`) reads the Activity Log, VNet flow log and VM metrics blobs
of each subscription and the cost exports incrementally, with the files connector's readers
(`spendwatch.connectors.files.azure`), and the VMs and NICs of each subscription (`inventory.py`); optionally
VM utilisation from Azure Monitor's metrics API (`metrics.py`) and spend from the Cost Management query API
(`costs.py`) instead of their blobs. No Azure library is imported at import time: the SDKs are imported where
a client is built, so the core runs without the `azure` extra. `scan` is loaded on first use: the files
connector imports this package's catalogue, and `live.py` imports the files connector.
"""

from typing import Any

from .config import AzureConfig, BlobLocation
from .permissions import permissions

__all__ = ["AzureConfig", "BlobLocation", "permissions", "scan"]


def __getattr__(name: str) -> Any:
    if name == "scan":
        from .live import scan

        return scan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
