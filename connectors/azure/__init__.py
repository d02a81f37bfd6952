"""The Azure connector: live inventory through azure-mgmt-compute / azure-mgmt-network, and its permissions.

File-mode Azure exports (Activity Log, VNet flow logs, metrics, cost exports) are read by the files connector
(`spendwatch.connectors.files.azure`). No Azure library is imported at import time: the SDK is imported where
a client is built, so the core runs without the `azure` extra.
"""

from .permissions import permissions

__all__ = ["permissions"]
