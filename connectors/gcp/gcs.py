"""Cloud Storage through google-cloud-storage: list a prefix from a name on, fetch one generation of an object.

Throttling (429) and 5xx are retried by the client with exponential back-off (`retry()`); an object is
fetched at the generation the listing showed, so a file rewritten in between fails with 404 and is read
again next run instead of being read in a state the watermark does not describe. Bytes are fetched raw
(no gzip transcoding): the files connector's readers sniff and inflate gzip themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from spendwatch.connectors.live import Listed

PAGE_SIZE = 1000  # the API's largest page


def client(project: str | None, *, endpoint: str | None, anonymous: bool) -> Any:
    """A storage client: Application Default Credentials, or none at all for a local fake."""
    from google.api_core.client_options import ClientOptions
    from google.cloud.storage import Client

    kwargs: dict[str, Any] = {"project": project}
    if endpoint:
        kwargs["client_options"] = ClientOptions(api_endpoint=endpoint)
    if anonymous:
        from google.auth.credentials import AnonymousCredentials

        kwargs["credentials"] = AnonymousCredentials()
        kwargs["project"] = project or "<none>"
    return Client(**kwargs)


def retry(backoff_s: float, deadline_s: float) -> Any:
    """The client's default retry (429, 408, 5xx, connection errors), starting at `backoff_s`."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(initial=backoff_s, maximum=max(backoff_s, 30.0), multiplier=2.0) \
        .with_timeout(deadline_s)


def list_from(gcs: Any, bucket: str, prefix: str, start: str, retry_policy: Any) -> Iterator[Listed]:
    """Every object under `prefix` whose name is `start` or after it, in name order (all pages)."""
    kwargs: dict[str, Any] = {"prefix": prefix, "page_size": PAGE_SIZE, "retry": retry_policy}
    if start > prefix:
        kwargs["start_offset"] = start
    for blob in gcs.list_blobs(bucket, **kwargs):
        yield Listed(blob.name, int(blob.size or 0), str(blob.generation or ""), blob.updated)


def download(gcs: Any, bucket: str, obj: Listed, retry_policy: Any) -> bytes:
    generation = int(obj.version) if obj.version.isdigit() else None
    blob = gcs.bucket(bucket).blob(obj.name, generation=generation)
    return bytes(blob.download_as_bytes(raw_download=True, retry=retry_policy))


def describe(exc: Exception, where: str, permission: str) -> str:
    """A gap or problem reason for a failed call on `where` (a gs:// URL), naming the permission involved."""
    from google.api_core.exceptions import Forbidden, GoogleAPICallError, NotFound, RetryError, Unauthorized

    if isinstance(exc, Forbidden | Unauthorized):
        return f"access denied to {where} ({permission}): {exc.message}"
    if isinstance(exc, NotFound):
        return f"not found: {where} ({exc.message})"
    if isinstance(exc, RetryError):
        return f"gave up retrying on {where}: {exc.cause or exc}"
    if isinstance(exc, GoogleAPICallError):
        return f"{where}: HTTP {exc.code} {exc.message}"
    return f"{where}: {type(exc).__name__}: {exc}"
