"""A fake of the Cloud Storage JSON API: the object listing and media download the GCP connector uses.

Enough for the real `google-cloud-storage` client: `objects.list` (`prefix`, `startOffset`, `endOffset`,
`delimiter`, `maxResults`, `pageToken`) and the media download (`/download/storage/v1/b/B/o/NAME?alt=media`,
pinned to a `generation` when asked, with the `x-goog-hash` and `x-goog-generation` headers the client checks).
Faults a test sets: buckets that answer 403, and a number of 429s to answer before serving again.
`gcp-storage-emulator` (PyPI) was considered: it has neither pagination nor `startOffset`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import google_crc32c

from .raw_http import Request, Response

MAX_PAGE = 1000  # what the real API returns at most per page


@dataclass
class StoredObject:
    data: bytes
    generation: int
    updated: datetime


@dataclass
class FakeGcs:
    """In-memory buckets. `denied` buckets answer 403; `throttle` is how many requests still get a 429."""

    buckets: dict[str, dict[str, StoredObject]] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)
    throttle: int = 0
    log: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    _generation: int = 1_763_500_000_000_000
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, bucket: str, name: str, data: bytes) -> int:
        """Write (or overwrite) an object; returns its new generation."""
        with self._lock:
            self._generation += 1
            self.buckets.setdefault(bucket, {})[name] = StoredObject(data, self._generation, datetime.now(UTC))
            return self._generation

    def upload_tree(self, root: Path, bucket: str) -> list[str]:
        """Every file under `root` as an object of `bucket` named by its path below `root`; the names."""
        names = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            names.append(path.relative_to(root).as_posix())
            self.put(bucket, names[-1], path.read_bytes())
        return names

    def __call__(self, req: Request) -> Response:
        parts = req.path.strip("/").split("/")
        if len(parts) == 4 and parts[:3] == ["storage", "v1", "b"]:
            # Bucket metadata: the client fetches it in the background (for tracing) and caches a fallback on
            # 403, which is what the least-privilege role (no storage.buckets.get) gets. Not an object call:
            # neither logged nor throttled, so tests do not race with that thread.
            return _error(403, "spendwatch@acme.iam.gserviceaccount.com does not have storage.buckets.get access "
                               "to the Google Cloud Storage bucket.", "forbidden")
        with self._lock:
            self.log.append((req.method, req.path, dict(req.query)))
            if self.throttle > 0:
                self.throttle -= 1
                return _error(429, "The rate of change requests to the object is too high.", "rateLimitExceeded")
        if parts[:4] == ["storage", "v1", "b", parts[3] if len(parts) > 3 else ""] and parts[4:] == ["o"]:
            return self._list(unquote(parts[3]), req.query)
        if parts[:5] == ["download", "storage", "v1", "b", parts[4] if len(parts) > 4 else ""] and \
                len(parts) == 7 and parts[5] == "o":
            return self._get(unquote(parts[4]), unquote(parts[6]), req.query)
        return _error(404, f"no route {req.method} {req.path}", "notFound")

    def _bucket(self, bucket: str, verb: str) -> dict[str, StoredObject] | Response:
        if bucket in self.denied:
            return _error(403, f"spendwatch@acme.iam.gserviceaccount.com does not have storage.objects.{verb} "
                               f"access to the Google Cloud Storage bucket. Permission 'storage.objects.{verb}' "
                               f"denied on resource (or it may not exist).", "forbidden")
        if bucket not in self.buckets:
            return _error(404, "The specified bucket does not exist.", "notFound")
        return self.buckets[bucket]

    def _list(self, bucket: str, query: dict[str, str]) -> Response:
        objects = self._bucket(bucket, "list")
        if isinstance(objects, Response):
            return objects
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        start, end = query.get("startOffset", ""), query.get("endOffset", "")
        after = base64.urlsafe_b64decode(query["pageToken"]).decode() if query.get("pageToken") else ""
        size = min(int(query.get("maxResults") or MAX_PAGE), MAX_PAGE)
        items: list[dict[str, object]] = []
        prefixes: list[str] = []
        token, last = None, ""
        for name in sorted(objects):
            if not name.startswith(prefix) or name < start or (end and name >= end) or name <= after:
                continue
            if len(items) + len(prefixes) == size:
                token = base64.urlsafe_b64encode(last.encode()).decode()
                break
            last = name
            if delimiter and delimiter in name[len(prefix):]:
                folder = prefix + name[len(prefix):].split(delimiter, 1)[0] + delimiter
                if folder not in prefixes:
                    prefixes.append(folder)
                continue
            items.append(_resource(bucket, name, objects[name]))
        body: dict[str, object] = {"kind": "storage#objects", "items": items}
        if prefixes:
            body["prefixes"] = prefixes
        if token:
            body["nextPageToken"] = token
        return Response(200, json.dumps(body).encode(), {"Content-Type": "application/json; charset=UTF-8"})

    def _get(self, bucket: str, name: str, query: dict[str, str]) -> Response:
        objects = self._bucket(bucket, "get")
        if isinstance(objects, Response):
            return objects
        obj = objects.get(name)
        if obj is None or (query.get("generation") and int(query["generation"]) != obj.generation):
            return _error(404, f"No such object: {bucket}/{name}", "notFound")
        if query.get("alt") != "media":
            return Response(200, json.dumps(_resource(bucket, name, obj)).encode(),
                            {"Content-Type": "application/json; charset=UTF-8"})
        return Response(200, obj.data, {
            "Content-Type": "application/octet-stream", "x-goog-generation": str(obj.generation),
            "x-goog-metageneration": "1", "x-goog-stored-content-length": str(len(obj.data)),
            "x-goog-stored-content-encoding": "identity",
            "x-goog-hash": f"crc32c={_crc32c(obj.data)},md5={_md5(obj.data)}",
        })


def _resource(bucket: str, name: str, obj: StoredObject) -> dict[str, object]:
    stamp = obj.updated.strftime("%Y-%m-%dT%H:%M:%S.") + f"{obj.updated.microsecond // 1000:03d}Z"
    return {"kind": "storage#object", "id": f"{bucket}/{name}/{obj.generation}", "name": name, "bucket": bucket,
            "generation": str(obj.generation), "metageneration": "1", "contentType": "application/octet-stream",
            "size": str(len(obj.data)), "timeCreated": stamp, "updated": stamp, "storageClass": "STANDARD",
            "md5Hash": _md5(obj.data), "crc32c": _crc32c(obj.data)}


def _crc32c(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _error(code: int, message: str, reason: str) -> Response:
    body = {"error": {"code": code, "message": message, "errors": [{"message": message, "domain": "global",
                                                                      "reason": reason}]}}
    return Response(code, json.dumps(body).encode(), {"Content-Type": "application/json; charset=UTF-8"})
