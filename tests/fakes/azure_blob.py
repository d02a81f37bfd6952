"""A fake of the Azure Blob Storage REST API: List Blobs and Get Blob, path-style as Azurite serves them.

Enough for the real `azure-storage-blob` client at `http://127.0.0.1:PORT/<account>`: List Blobs (`prefix`,
`marker`, `maxresults`, XML answers with `NextMarker`) and Get Blob with `x-ms-range` (206 and
`Content-Range`, 416 on an empty blob, as the service answers). Requests must carry a bearer token (the
connector authenticates with Entra ID; shared keys are not checked here). Faults a test sets: accounts or
containers that answer 403 `AuthorizationPermissionMismatch`, and a number of 503 `ServerBusy` answers (how
Blob storage throttles). Azurite itself is on npm, not PyPI, and the test suite runs without Node.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import unquote
from xml.sax.saxutils import escape

from .raw_http import Request, Response

MAX_PAGE = 5000  # the service's largest page


@dataclass
class StoredBlob:
    data: bytes
    etag: str
    created: datetime
    modified: datetime


@dataclass
class FakeBlobStorage:
    """accounts[account][container][name]. `denied` holds "account" or "account/container" entries."""

    accounts: dict[str, dict[str, dict[str, StoredBlob]]] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)
    throttle: int = 0
    log: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    _version: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def container(self, account: str, container: str) -> None:
        self.accounts.setdefault(account, {}).setdefault(container, {})

    def put(self, account: str, container: str, name: str, data: bytes) -> str:
        """Write or replace a block blob; returns its new ETag."""
        with self._lock:
            self._version += 1
            etag = f'"0x8DD{self._version:013X}"'
            blobs = self.accounts.setdefault(account, {}).setdefault(container, {})
            now = datetime.now(UTC)
            created = blobs[name].created if name in blobs else now
            blobs[name] = StoredBlob(data, etag, created, now)
            return etag

    def append(self, account: str, container: str, name: str, more: bytes) -> str:
        """Add bytes to a blob, as diagnostic settings add records to an hour's PT1H.json."""
        return self.put(account, container, name, self.accounts[account][container][name].data + more)

    def upload_tree(self, root: Path, account: str) -> list[str]:
        """Every file under `root` as a blob of `account`: the first folder is the container, the rest the
        blob's name. Returns "container/name" of each."""
        names = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            container, _, name = path.relative_to(root).as_posix().partition("/")
            self.put(account, container, name, path.read_bytes())
            names.append(f"{container}/{name}")
        return names

    def __call__(self, req: Request) -> Response:
        with self._lock:
            self.log.append((req.method, req.path, dict(req.query)))
            if self.throttle > 0:
                self.throttle -= 1
                return _error(503, "ServerBusy", "The server is busy.")
        if not req.headers.get("authorization", "").startswith("Bearer "):
            return _error(401, "NoAuthenticationInformation", "Server failed to authenticate the request.")
        account, _, rest = req.path.strip("/").partition("/")
        container, _, name = rest.partition("/")
        if account in self.denied or f"{account}/{container}" in self.denied:
            return _error(403, "AuthorizationPermissionMismatch",
                          "This request is not authorized to perform this operation using this permission.")
        if account not in self.accounts:
            return _error(404, "ResourceNotFound", "The specified resource does not exist.")
        blobs = self.accounts[account].get(container)
        if blobs is None:
            return _error(404, "ContainerNotFound", "The specified container does not exist.")
        if not name and req.query.get("restype") == "container" and req.query.get("comp") == "list":
            return self._list(account, container, blobs, req.query)
        if name and req.method in ("GET", "HEAD"):
            return self._get(blobs, unquote(name), req.headers)
        return _error(400, "UnsupportedHttpVerb", f"{req.method} {req.path} is not served by this fake")

    def _list(self, account: str, container: str, blobs: dict[str, StoredBlob], query: dict[str, str]) -> Response:
        prefix = query.get("prefix", "")
        after = base64.urlsafe_b64decode(query["marker"]).decode() if query.get("marker") else ""
        size = min(int(query.get("maxresults") or MAX_PAGE), MAX_PAGE)
        names = [n for n in sorted(blobs) if n.startswith(prefix) and n > after]
        page, rest = names[:size], names[size:]
        items = "".join(
            f"<Blob><Name>{escape(n)}</Name><Properties><Creation-Time>{_http_date(blobs[n].created)}</Creation-Time>"
            f"<Last-Modified>{_http_date(blobs[n].modified)}</Last-Modified><Etag>{blobs[n].etag}</Etag>"
            f"<Content-Length>{len(blobs[n].data)}</Content-Length><Content-Type>application/json</Content-Type>"
            f"<Content-MD5>{_md5(blobs[n].data)}</Content-MD5><BlobType>BlockBlob</BlobType>"
            f"<AccessTier>Hot</AccessTier><LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState>"
            f"<ServerEncrypted>true</ServerEncrypted></Properties><OrMetadata /></Blob>"
            for n in page)
        marker = f"<NextMarker>{base64.urlsafe_b64encode(page[-1].encode()).decode()}</NextMarker>" if rest else \
            "<NextMarker />"
        body = (f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1/'
                f'{account}/" ContainerName="{escape(container)}"><Prefix>{escape(prefix)}</Prefix>'
                f"<MaxResults>{size}</MaxResults><Blobs>{items}</Blobs>{marker}</EnumerationResults>")
        return Response(200, body.encode(), {"Content-Type": "application/xml", **_common()})

    def _get(self, blobs: dict[str, StoredBlob], name: str, headers: dict[str, str]) -> Response:
        blob = blobs.get(name)
        if blob is None:
            return _error(404, "BlobNotFound", "The specified blob does not exist.")
        meta = {"ETag": blob.etag, "Last-Modified": _http_date(blob.modified), "x-ms-blob-type": "BlockBlob",
                "x-ms-creation-time": _http_date(blob.created), "Content-Type": "application/json",
                "Accept-Ranges": "bytes", "x-ms-server-encrypted": "true", **_common()}
        wanted = re.match(r"bytes=(\d+)-(\d*)$", headers.get("x-ms-range") or headers.get("range") or "")
        if headers.get("if-match") and headers["if-match"] != blob.etag:
            return _error(412, "ConditionNotMet", "The condition specified using HTTP conditional header(s) "
                                                  "is not met.")
        if not wanted:
            return Response(200, blob.data, meta)
        start = int(wanted[1])
        end = min(int(wanted[2]) if wanted[2] else len(blob.data) - 1, len(blob.data) - 1)
        if start >= len(blob.data):
            return _error(416, "InvalidRange", "The range specified is invalid for the current size of the "
                                               "resource.", {"Content-Range": f"bytes */{len(blob.data)}"})
        return Response(206, blob.data[start:end + 1],
                        {**meta, "Content-Range": f"bytes {start}-{end}/{len(blob.data)}"})


def _http_date(when: datetime) -> str:
    return format_datetime(when.replace(microsecond=0), usegmt=True)


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _common() -> dict[str, str]:
    return {"x-ms-version": "2025-11-05", "x-ms-request-id": "00000000-0000-0000-0000-000000000000",
            "Date": _http_date(datetime.now(UTC))}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{escape(message)}'
            f"</Message></Error>")
    return Response(status, body.encode(), {"Content-Type": "application/xml", "x-ms-error-code": code,
                                            **_common(), **(headers or {})})
