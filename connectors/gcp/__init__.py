"""The GCP connector: live inventory through google-cloud-compute, and the permissions it needs.

File-mode GCP exports (Cloud Logging sinks, the billing export, Monitoring series) are read by the files
connector (`spendwatch.connectors.files.gcp`). Nothing here imports a Google library at import time: the SDK
is imported where a client is built, so the core runs without the `gcp` extra.
"""

from .permissions import permissions

__all__ = ["permissions"]
