"""A generic signed webhook: one POST per finding update, for PagerDuty, Opsgenie or the user's automation.

The body is JSON: `{"delivery_id", "activity", "finding"}` with the DESIGN.md finding fields (or, with
`format = "ocsf"`, the OCSF Detection Finding event itself). Headers:

- `X-Spendwatch-Timestamp`: Unix seconds when the request was signed;
- `X-Spendwatch-Signature`: `sha256=` + hex HMAC-SHA256 over `"{timestamp}.{body}"` with the shared secret;
- `X-Spendwatch-Delivery`: `sink:finding:version`, the same on a retry: dedupe on it.

Verifying on the receiving side (any language; Python shown)::

    import hashlib, hmac, time
    def verify(secret: bytes, headers, body: bytes, tolerance_s: int = 300) -> bool:
        ts = headers["X-Spendwatch-Timestamp"]
        if abs(time.time() - int(ts)) > tolerance_s:      # refuse replays of old requests
            return False
        mac = hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest("sha256=" + mac, headers["X-Spendwatch-Signature"])

Sign and compare the raw body bytes, before any JSON parsing. A 2xx answer is a delivery; 408, 429 and 5xx
(or no answer) mean "down, retry later"; any other 4xx rejects this one item (it is retried with backoff, so a
fixed receiver still gets it). PagerDuty's Events API and Opsgenie expect their own body shapes: point this
sink at a small relay (or their "custom webhook" integrations) rather than at their APIs directly.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store import OutboxItem

SIGNATURE_HEADER = "X-Spendwatch-Signature"
TIMESTAMP_HEADER = "X-Spendwatch-Timestamp"
DELIVERY_HEADER = "X-Spendwatch-Delivery"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, *, now: float | None = None,
           tolerance_s: float = 300.0) -> bool:
    """The receiver's check: signature matches and the timestamp is recent (a replay window of `tolerance_s`)."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def body_for(item: OutboxItem, fmt: str = "finding") -> bytes:
    if fmt == "ocsf":
        from .ocsf import to_ocsf

        doc: dict[str, Any] = to_ocsf(item.finding, item.activity, delivery_id=item.delivery_id)
    else:
        doc = {"delivery_id": item.delivery_id, "activity": item.activity, "finding": json.loads(item.payload)}
    return json.dumps(doc, separators=(",", ":")).encode()


class WebhookSink:
    """POSTs each update, signed, to one URL."""

    def __init__(self, url: str, secret: bytes, *, fmt: str = "finding", timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"webhook url must be http(s): {url!r}")
        self.url, self.secret, self.fmt, self.timeout_s, self.clock = url, secret, fmt, timeout_s, clock

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any]) -> WebhookSink:
        from ..config import ConfigError
        from ..delivery import secret

        url = settings.get("url")
        if not url:
            raise ConfigError(f"[sinks.{name}] needs url")
        fmt = str(settings.get("format", "finding"))
        if fmt not in ("finding", "ocsf"):
            raise ConfigError(f"[sinks.{name}] format must be 'finding' or 'ocsf'")
        return cls(str(url), secret(settings, "secret", sink=name).encode(), fmt=fmt,
                   timeout_s=float(settings.get("timeout_s", 10.0)))

    def send(self, item: OutboxItem) -> None:
        from ..delivery import DeliveryError

        body = body_for(item, self.fmt)
        ts = str(int(self.clock()))
        req = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "spendwatch-webhook",
            TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(self.secret, ts, body), DELIVERY_HEADER: item.delivery_id,
        })
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            transient = exc.code in (408, 429) or exc.code >= 500
            raise DeliveryError(f"HTTP {exc.code} from {self.url}", permanent=not transient) from None
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryError(f"{self.url}: {getattr(exc, 'reason', exc)}") from None
