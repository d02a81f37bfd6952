"""Blob storage through azure-storage-blob: list a container's blobs under a prefix, fetch one blob.

Throttling (503 ServerBusy, 429) and 5xx are retried by the client's ExponentialRetry. A blob is fetched as it
is when asked, and the version recorded is the ETag of what was fetched (not the one listed): diagnostic
settings keep appending to an hour's blob, and the watermark must describe the bytes actually read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from spendwatch.connectors.live import Listed

from .config import AzureConfig, BlobLocation

PAGE_SIZE = 5000  # the service's largest page


def service(loc: BlobLocation, credential: Any, config: AzureConfig) -> Any:
    """A BlobServiceClient for the location's account."""
    from azure.storage.blob import BlobServiceClient, ExponentialRetry

    # Seconds as floats: the SDK's hints say int, its arithmetic takes any number (sub-second waits in tests).
    retry: dict[str, Any] = {"initial_backoff": config.backoff_s, "increment_base": config.backoff_base,
                             "retry_total": config.retry_total, "random_jitter_range": min(3.0, config.backoff_s)}
    kwargs: dict[str, Any] = {"retry_policy": ExponentialRetry(**retry)}
    if config.ca_bundle:
        kwargs["connection_verify"] = config.ca_bundle
    return BlobServiceClient(loc.account_url, credential=credential, **kwargs)


def list_prefix(container: Any, prefix: str) -> Iterator[Listed]:
    """Every blob of the container under `prefix`, in name order (all pages)."""
    for blob in container.list_blobs(name_starts_with=prefix or None, results_per_page=PAGE_SIZE):
        yield Listed(blob.name, int(blob.size or 0), str(blob.etag or ""), blob.last_modified)


def download(container: Any, name: str) -> tuple[bytes, str]:
    """The blob's bytes and the ETag of that content."""
    stream = container.download_blob(name)
    data = stream.readall()
    return bytes(data), str(stream.properties.etag or "")


def status(exc: Exception) -> tuple[int | None, str]:
    """(HTTP status, service error code) of an SDK error."""
    return getattr(exc, "status_code", None), str(getattr(exc, "error_code", None) or type(exc).__name__)


def describe(exc: Exception, where: str, action: str) -> str:
    """A gap or problem reason for a failed call on `where` (a blob URL), naming the data action involved."""
    code, name = status(exc)
    if code in (401, 403):
        return f"access denied to {where} ({action}): {name}"
    if code == 404:
        return f"not found: {where} ({name})"
    message = str(getattr(exc, "message", None) or exc).splitlines()[0]
    return f"{where}: {f'HTTP {code} ' if code else ''}{name}: {message}"
