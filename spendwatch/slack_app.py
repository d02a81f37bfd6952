"""The Slack interaction endpoint: the alert's buttons, answered safely.

`make_app(settings, store_path)` builds an `InteractionApp` (a slack-bolt `App` plus the checks around it);
`serve_http(app, host, port)` serves it on plain HTTP (put TLS in front in production, as Slack requires
https); `InteractionApp.wsgi` mounts it in any WSGI server (`spendwatch serve` will).

What a request goes through, in order; the first that fails answers and nothing else happens:

1. Shape: POST to `/slack/events`, a Content-Length under `max_body_bytes` (else 404/405/411/413).
2. Signature: `X-Slack-Signature` must be `v0=` + HMAC-SHA256(signing secret, `v0:{timestamp}:{raw body}`),
   compared in constant time, and `X-Slack-Request-Timestamp` within five minutes of now, either way (else
   401). This runs before the body is parsed, so unsigned bytes never reach a parser. Bolt checks it again.
3. Slack retry (`X-Slack-Retry-Num`): acknowledged with 200 and `X-Slack-No-Retry: 1`, and ignored. Slack
   retries when our ack was late or lost, usually after the first delivery already acted; acting on the retry
   would act twice. If the first delivery never arrived, the user sees Slack's error and clicks again.
4. Replay: a digest of timestamp and signature is recorded in the state database until the timestamp can no
   longer pass step 2 (at least ten minutes); a request whose digest is already there gets 401. One IMMEDIATE
   transaction checks and records, so processes sharing the database cannot both accept a request.
5. Acknowledge: every listener acks at once (bolt `process_before_response=False`); the work runs in bolt's
   lazy listeners on a worker pool, so a slow AWS call never delays the ack past Slack's three seconds.
6. Authorisation (in the worker): the clicking user must be in `allowed_users` or a member of one of
   `allowed_groups` (usergroups.users.list, cached for a minute; a failed lookup refuses). Anyone else gets
   an ephemeral refusal (chat.postEphemeral), an audit line with outcome `refused`, and nothing changes.
   With no users and no groups configured nobody may act: the endpoint fails closed.
7. Idempotency: actions on one finding run one at a time (a lock per finding in this process, the store's
   quarantine record across processes); a click that would repeat the current state (quarantine a
   quarantined finding, snooze a snoozed one) is audited as `ignored`, answered ephemerally and changes
   nothing, and the message is left as the first click set it.
8. Act: Quarantine and Release run `spendwatch.actions.execute` with `apply=True` (the click, behind its
   confirm dialog, is the human approval; `stop` stays false), the same code path as `spendwatch
   quarantine --apply`, which audits every step under the actor `slack:<user id>`: the action of the
   finding's cloud (`aws.quarantine`, `gcp.quarantine`, `azure.quarantine` and their releases), with clients
   built for the finding's account, project or subscription (`default_clients`). Contain principal and
   Release principal run `aws.contain-principal` / `aws.release-principal` on the AWS role or user that
   launched it, behind the same dialog, checks and audit. Snooze and Mark expected set the finding's status.
   Every click is audited as `slack.<action>` with who, and the alert is updated (chat.update) with the
   outcome and who did it.

Forged, stale, replayed and malformed requests are not audited: they are not attributable to anyone and
writing them would let anyone on the internet fill the audit log. They are logged at INFO.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from .actions.base import ActionSettings
from .approvals import ACTION_APPROVE as ACTION_GPU_APPROVE
from .approvals import ACTION_DENY as ACTION_GPU_DENY
from .approvals import APPROVER_ROLE_ENV
from .findings import Finding
from .sinks.slack import (
    ACTION_CONSOLE,
    ACTION_CONTAIN,
    ACTION_EXPECTED,
    ACTION_QUARANTINE,
    ACTION_RELEASE,
    ACTION_RELEASE_PRINCIPAL,
    ACTION_SNOOZE,
    QUARANTINE_CLOUDS,
    SNOOZE_HOURS,
    alert_payload,
    can_contain,
    contained_principal,
    esc,
    make_client,
    snooze_over,
)
from .store import SlackRecords, Store, state_location

if TYPE_CHECKING:
    from slack_bolt import App
    from slack_sdk import WebClient

    from .actions.base import Outcome, Target
    from .store import StoredQuarantine

log = logging.getLogger(__name__)

PATH = "/slack/events"
SIGNATURE_MAX_AGE_S = 300  # Slack's own recommendation, and what slack_sdk's SignatureVerifier enforces
REPLAY_TTL_S = 600
EXPECTED_VIEW = "sw_expected_modal"
LAZY_VERIFIED = "spendwatch_lazy_verified"  # request context key set only by spendwatch.lambda_handlers
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SLACK_ID = re.compile(r"[A-Z0-9]{2,32}")


@dataclass(frozen=True)
class SlackSettings:
    """What the endpoint and the alerter need. Secrets come from the environment, never from the config file.

    `allowed_users`: Slack user ids (U..., W...) that may act; `allowed_groups`: user group ids (S...) whose
    members may act. `api_base_url`, `aws_endpoint_url`, `gcp_endpoint_url` and `azure_endpoint_url` point at
    local fakes in tests, with `gcp_credentials` / `azure_credential` objects for them; left out, the GCP and
    Azure actions use Application Default Credentials and DefaultAzureCredential (the service's own identity,
    which deploy/terraform/gcp and azure give the generated quarantine role).

    From the environment::

        SLACK_SIGNING_SECRET=...  SLACK_BOT_TOKEN=xoxb-...  SPENDWATCH_SLACK_CHANNEL=C0123ALERTS
        SPENDWATCH_SLACK_ALLOWED_USERS="U01ALICE U02BOB"  SPENDWATCH_SLACK_ALLOWED_GROUPS="S01SECOPS"
    """

    signing_secret: str
    bot_token: str
    channel: str
    allowed_users: frozenset[str] = frozenset()
    allowed_groups: frozenset[str] = frozenset()
    api_base_url: str | None = None
    aws_endpoint_url: str | None = None
    quarantine_role: str | None = None  # role name assumed in the finding's account before acting
    external_id: str | None = None  # what that role's trust requires (env SPENDWATCH_AWS_EXTERNAL_ID), if anything
    approver_role: str | None = None  # role name assumed in a GPU-launch principal's account (spendwatch.approvals)
    gcp_endpoint_url: str | None = None
    azure_endpoint_url: str | None = None
    gcp_credentials: Any = field(default=None, repr=False, compare=False)
    azure_credential: Any = field(default=None, repr=False, compare=False)
    actions: ActionSettings = field(default_factory=ActionSettings)
    max_body_bytes: int = 1 << 20
    group_cache_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.signing_secret.strip():
            raise ValueError("Slack signing secret is empty: set SLACK_SIGNING_SECRET")
        if not self.bot_token.strip():
            raise ValueError("Slack bot token is empty: set SLACK_BOT_TOKEN")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SlackSettings:
        env = os.environ if environ is None else environ

        def ids(name: str) -> frozenset[str]:
            return frozenset(env.get(name, "").replace(",", " ").split())

        return cls(
            signing_secret=env.get("SLACK_SIGNING_SECRET", ""), bot_token=env.get("SLACK_BOT_TOKEN", ""),
            channel=env.get("SPENDWATCH_SLACK_CHANNEL", ""), allowed_users=ids("SPENDWATCH_SLACK_ALLOWED_USERS"),
            allowed_groups=ids("SPENDWATCH_SLACK_ALLOWED_GROUPS"),
            api_base_url=env.get("SPENDWATCH_SLACK_API_URL") or None,
            actions=ActionSettings.from_env(dict(env)), **aws_roles_from_env(env),
        )


class AwsRoles(TypedDict):
    quarantine_role: str | None
    external_id: str | None
    approver_role: str | None


def aws_roles_from_env(env: Mapping[str, str]) -> AwsRoles:
    """The `SlackSettings` fields that name how the handlers act in other AWS accounts, from the variables every
    deployment sets (the Lambda's and `serve`'s alike): the quarantine role and the external ID its trust
    requires, and the approver role (`spendwatch.approvals`)."""
    return AwsRoles(quarantine_role=env.get("SPENDWATCH_AWS_QUARANTINE_ROLE_NAME") or None,
                    external_id=env.get("SPENDWATCH_AWS_EXTERNAL_ID") or None,
                    approver_role=env.get(APPROVER_ROLE_ENV) or None)


class _TrackingExecutor(ThreadPoolExecutor):
    """bolt's worker pool, counting unfinished work so a caller (tests, a clean shutdown) can wait for it."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="spendwatch-slack")
        self._pending = 0
        self._cond = threading.Condition()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._cond:
            self._pending += 1  # counted before the request thread returns, so wait_idle cannot miss it
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._finished(None)
            raise
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: object) -> None:
        with self._cond:
            self._pending -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._pending <= 0, timeout)


class _Authoriser:
    """Who may act: configured users, or members of configured user groups (looked up, cached briefly)."""

    def __init__(self, users: frozenset[str], groups: frozenset[str], client: WebClient, ttl_s: float) -> None:
        self.users, self.groups, self.client, self.ttl_s = users, groups, client, ttl_s
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def check(self, user_id: str) -> tuple[bool, str]:
        """(allowed, why) for one Slack user id."""
        if user_id in self.users:
            return True, "listed in allowed users"
        failed: list[str] = []
        for group in sorted(self.groups):
            members = self._members(group)
            if members is None:
                failed.append(group)
            elif user_id in members:
                return True, f"member of user group {group}"
        why = f"<@{user_id}> is not allowed to act on spendwatch alerts"
        if failed:
            why += f" (membership of {', '.join(failed)} could not be checked)"
        return False, why

    def _members(self, group: str) -> frozenset[str] | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(group)
            if hit and now - hit[0] < self.ttl_s:
                return hit[1]
        try:
            resp = self.client.usergroups_users_list(usergroup=group)
        except Exception as exc:  # fail closed: an unknown membership is no membership
            log.warning("usergroups.users.list %s failed: %s", group, exc)
            return None
        members = frozenset(str(u) for u in resp.get("users") or [])
        with self._lock:
            self._cache[group] = (now, members)
        return members


@dataclass(frozen=True)
class _Click:
    """The parts of an interaction payload we act on, validated."""

    user_id: str
    user_name: str
    finding_id: str
    channel: str | None
    message_ts: str | None
    trigger_id: str | None

    @classmethod
    def from_action(cls, body: dict[str, Any]) -> _Click | None:
        user = body.get("user") or {}
        actions = body.get("actions") or [{}]
        container = body.get("container") or {}
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
        ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
        return cls._make(user, str(actions[0].get("value") or ""), channel, ts, body.get("trigger_id"))

    @classmethod
    def from_view(cls, body: dict[str, Any]) -> _Click | None:
        try:
            meta = json.loads((body.get("view") or {}).get("private_metadata") or "{}")
        except ValueError:
            return None
        if not isinstance(meta, dict):
            return None
        return cls._make(body.get("user") or {}, str(meta.get("finding") or ""), meta.get("channel"), meta.get("ts"),
                         None)

    @classmethod
    def _make(cls, user: dict[str, Any], finding: str, channel: Any, ts: Any, trigger: Any) -> _Click | None:
        user_id = str(user.get("id") or "")
        if not _SLACK_ID.fullmatch(user_id) or not finding or len(finding) > 200:
            return None
        name = str(user.get("username") or user.get("name") or user_id)[:80]
        return cls(user_id, name, finding, str(channel) if channel else None, str(ts) if ts else None,
                   str(trigger) if trigger else None)

    @property
    def actor(self) -> str:
        return f"slack:{self.user_id}"


class InteractionApp:
    """The endpoint: a slack-bolt App with the checks of the module doc around it. Build with `make_app`."""

    def __init__(self, settings: SlackSettings, store_path: Path | str, *, client: WebClient | None = None,
                 clients_factory: Callable[[Target], Any] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC), workers: int = 8,
                 process_before_response: bool = False) -> None:
        from slack_bolt import App
        from slack_sdk.signature import SignatureVerifier

        if str(store_path) == ":memory:":
            raise ValueError("the endpoint needs a state file shared by its threads, not :memory:")
        self.settings = settings
        self.store_path = state_location(store_path)  # a file, or a postgresql:// URL
        self.client = client or make_client(settings.bot_token, base_url=settings.api_base_url)
        self.now = now
        self._clients_factory = clients_factory or (lambda target: default_clients(settings, target))
        self._verifier = SignatureVerifier(settings.signing_secret)
        self._executor = _TrackingExecutor(workers)
        self._authoriser = _Authoriser(settings.allowed_users, settings.allowed_groups, self.client,
                                       settings.group_cache_s)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        if not settings.allowed_users and not settings.allowed_groups:
            log.warning("no Slack users or groups are allowed to act: every button click will be refused")
        # auth.test runs here once (token check); the store is created before the first request needs it.
        self.bolt: App = App(
            client=self.client, signing_secret=settings.signing_secret, name="spendwatch",
            process_before_response=process_before_response, listener_executor=self._executor,
            before_authorize=self._guard,
        )
        Store(self.store_path).close()
        self._register(self.bolt)

    # -- the HTTP face -----------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Answer one HTTP request: (status, headers, body). Steps 1 and 2 of the module doc, then bolt."""
        from slack_bolt.request import BoltRequest

        if path.split("?", 1)[0] != PATH:
            return _plain(404, "not found")
        if method != "POST":
            return _plain(405, "method not allowed")
        if len(body) > self.settings.max_body_bytes:
            return _plain(413, "request too large")
        low = {k.lower(): v for k, v in headers.items()}
        ts, sig = low.get("x-slack-request-timestamp", ""), low.get("x-slack-signature", "")
        try:
            # Slack sends UTF-8 only, and slack_sdk's verifier decodes the body before hashing it.
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return _plain(400, "malformed request")
        if not (_TIMESTAMP.fullmatch(ts) and _SIGNATURE.fullmatch(sig)) or not self._verifier.is_valid(text, ts, sig):
            log.info("refused a request with a missing, invalid or stale signature (timestamp %r)", ts[:20])
            return _plain(401, "invalid request")
        try:
            req = BoltRequest(body=text, query=path.split("?", 1)[1] if "?" in path else None,
                              headers={k: [v] for k, v in low.items()})
        except Exception as exc:  # signed but unparseable: not from Slack's encoder, refuse
            log.info("refused a signed request that does not parse: %s", exc)
            return _plain(400, "malformed request")
        try:
            resp = self.bolt.dispatch(req)
        except Exception:
            log.exception("interaction dispatch failed")
            return _plain(500, "internal error")
        out = {k: (v[0] if isinstance(v, list) and v else str(v)) for k, v in (resp.headers or {}).items()}
        return resp.status, out, (resp.body or "").encode("utf-8")

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        """WSGI entry point (for `spendwatch serve` or any WSGI server)."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > self.settings.max_body_bytes:
            status, headers, body = _plain(413, "request too large")
        else:
            raw = environ["wsgi.input"].read(length) if length else b""
            hdrs = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
            if environ.get("CONTENT_TYPE"):
                hdrs["content-type"] = str(environ["CONTENT_TYPE"])
            path = environ.get("PATH_INFO", "") + (f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else "")
            status, headers, body = self.handle(environ.get("REQUEST_METHOD", "GET"), path, hdrs, raw)
        start_response(f"{status} {_REASONS.get(status, '')}".strip(), list(headers.items()))
        return [body]

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every acknowledged request's work has finished; False on timeout."""
        return self._executor.wait_idle(timeout)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    # -- bolt: guard, listeners ----------------------------------------------------------------------------

    def _guard(self, req: Any, resp: Any, next: Callable[[], Any]) -> Any:
        """Steps 3 and 4: ignore Slack's retries, refuse replays. Runs after bolt's own signature check."""
        from slack_bolt.response import BoltResponse

        if req.lazy_only and req.context.get(LAZY_VERIFIED):
            # The second half of a click on AWS Lambda: the first invocation passed these checks and recorded the
            # digest, and `lambda_handlers` proved (HMAC) that this invocation came from it, not from outside.
            return next()
        if req.headers.get("x-slack-retry-num"):
            reason = (req.headers.get("x-slack-retry-reason") or ["?"])[0]
            log.info("acknowledged and ignored a Slack retry (%s)", reason)
            return BoltResponse(status=200, body="", headers={"x-slack-no-retry": "1"})
        ts = (req.headers.get("x-slack-request-timestamp") or [""])[0]
        sig = (req.headers.get("x-slack-signature") or [""])[0]
        digest = hashlib.sha256(f"{ts}:{sig}".encode()).hexdigest()
        now = time.time()
        try:
            expires = max(now + REPLAY_TTL_S, int(ts) + SIGNATURE_MAX_AGE_S + 60)
        except ValueError:
            return BoltResponse(status=401, body="invalid request")
        with self._store() as store:
            first = SlackRecords(store).first_sighting(digest, now=now, expires_at=expires)
        if not first:
            log.info("refused a replayed request (timestamp %s)", ts)
            return BoltResponse(status=401, body="replayed request")
        return next()

    def _register(self, app: App) -> None:
        def ack_now(ack: Callable[..., None]) -> None:
            ack()

        def ack_expected_view(ack: Callable[..., None], view: dict[str, Any]) -> None:
            if _reason(view):
                ack()
            else:  # keeps the modal open with the message under the field
                ack(response_action="errors", errors={"reason": "Say why this is expected; it goes in the audit log."})

        app.action(ACTION_CONSOLE)(ack_now)  # a link button still posts a click that must be acknowledged
        app.action(ACTION_QUARANTINE)(ack=ack_now, lazy=[self._work(self._quarantine)])
        app.action(ACTION_RELEASE)(ack=ack_now, lazy=[self._work(self._release)])
        app.action(ACTION_CONTAIN)(ack=ack_now, lazy=[self._work(self._contain)])
        app.action(ACTION_RELEASE_PRINCIPAL)(ack=ack_now, lazy=[self._work(self._release_principal)])
        app.action(ACTION_SNOOZE)(ack=ack_now, lazy=[self._work(self._snooze)])
        app.action(ACTION_EXPECTED)(ack=ack_now, lazy=[self._work(self._open_expected)])
        app.view(EXPECTED_VIEW)(ack=ack_expected_view, lazy=[self._work(self._expected, view=True)])
        # GPU launch approvals (issue 11): same checks, their own records; see spendwatch.approvals.
        app.action(ACTION_GPU_APPROVE)(ack=ack_now, lazy=[self._work(self._gpu_approve)])
        app.action(ACTION_GPU_DENY)(ack=ack_now, lazy=[self._work(self._gpu_deny)])

    def _work(self, fn: Callable[[Store, _Click, dict[str, Any]], None], *, view: bool = False
              ) -> Callable[[dict[str, Any]], None]:
        """A lazy listener around `fn`: parse the click, open a store for this thread, report failures."""

        def work(body: dict[str, Any]) -> None:
            try:
                click = _Click.from_view(body) if view else _Click.from_action(body)
            except (AttributeError, TypeError, IndexError):  # signed, but not shaped like Slack's payloads
                click = None
            if click is None:
                log.info("ignored an interaction without a usable user or finding")
                return
            try:
                with self._store() as store:
                    fn(store, click, body)
            except Exception as exc:
                log.exception("acting on %s for %s failed", click.finding_id, click.user_id)
                self._ephemeral(click, f":x: spendwatch could not finish that: {esc(type(exc).__name__)}: "
                                       f"{esc(str(exc))[:500]}")

        work.__name__ = f"work_{fn.__name__.lstrip('_')}"  # bolt names lazy functions by __name__
        return work

    # -- the actions -------------------------------------------------------------------------------------

    def _quarantine(self, store: Store, click: _Click, body: dict[str, Any]) -> None:
        finding = self._authorised(store, click, "slack.quarantine")
        if finding is None:
            return
        with self._finding_lock(finding.id):
            finding = store.get(finding.id) or finding
            active = _active(store, finding)
            if active is not None or finding.status == "quarantined":
                by = f" by {active.actor} at {active.created_at}" if active else ""
                self._ignore(store, click, finding, "slack.quarantine", f"already quarantined{by}")
                return
            if finding.cloud not in QUARANTINE_CLOUDS or not finding.resource:
                self._refuse(store, click, finding, "slack.quarantine",
                             f"quarantine from Slack is not available for {finding.cloud} resources yet")
                return
            outcome, error = self._run(store, finding, click, release=False)
            if outcome is not None and outcome.status == "refused" and outcome.quarantine_id is None and \
                    _active(store, finding):
                # Another process quarantined it between our check and our reservation: that click won.
                self._ignore(store, click, finding, "slack.quarantine", "already quarantined (by another click)")
                return
        line = _outcome_line("Quarantine", "Quarantined", ":lock:", click, self.now(), outcome, error)
        self._audit(store, click, finding, "slack.quarantine", outcome.status if outcome else "error", line)
        self._show(store, click, finding.id, line)

    def _release(self, store: Store, click: _Click, body: dict[str, Any]) -> None:
        finding = self._authorised(store, click, "slack.release")
        if finding is None:
            return
        with self._finding_lock(finding.id):
            active = _active(store, finding)
            if active is None:
                self._ignore(store, click, finding, "slack.release",
                             "not quarantined by spendwatch (already released?)")
                return
            outcome, error = self._run(store, finding, click, release=True)
        line = _outcome_line("Release", "Released", ":unlock:", click, self.now(), outcome, error)
        self._audit(store, click, finding, "slack.release", outcome.status if outcome else "error", line)
        self._show(store, click, finding.id, line)

    def _contain(self, store: Store, click: _Click, body: dict[str, Any]) -> None:
        """Contain the AWS role or user that launched the finding's resource (`aws.contain-principal`)."""
        finding = self._authorised(store, click, "slack.contain-principal")
        if finding is None:
            return
        principal = finding.principal or ""
        if not can_contain(finding):
            who = esc(principal or "an unknown principal")
            self._refuse(store, click, finding, "slack.contain-principal",
                         f"spendwatch contains AWS IAM users and roles only, not {who}")
            return
        # One lock per principal: one agent role often launched several findings' instances.
        with self._finding_lock(f"principal:{finding.account}:{principal}"):
            held = contained_principal(store, finding)
            if held is not None:
                self._ignore(store, click, finding, "slack.contain-principal",
                             f"already contained by {held.actor} at {held.created_at}", subject=held.resource)
                return
            outcome, error = self._run_principal(store, finding, click, None)
            if outcome is not None and outcome.status == "refused" and outcome.quarantine_id is None and \
                    contained_principal(store, finding) is not None:
                self._ignore(store, click, finding, "slack.contain-principal",
                             "already contained (by another click)", subject=principal)
                return
        line = _outcome_line("Contain principal", "Principal contained", ":lock:", click, self.now(), outcome, error)
        self._audit(store, click, finding, "slack.contain-principal", outcome.status if outcome else "error", line,
                    {"principal": principal})
        self._show(store, click, finding.id, line)

    def _release_principal(self, store: Store, click: _Click, body: dict[str, Any]) -> None:
        """Undo the containment of the finding's principal (`aws.release-principal`), whichever click made it."""
        finding = self._authorised(store, click, "slack.release-principal")
        if finding is None:
            return
        principal = finding.principal or ""
        with self._finding_lock(f"principal:{finding.account}:{principal}"):
            held = contained_principal(store, finding)
            if held is None:
                self._ignore(store, click, finding, "slack.release-principal",
                             "not contained by spendwatch (already released?)", subject=principal or None)
                return
            outcome, error = self._run_principal(store, finding, click, held)
        line = _outcome_line("Release principal", "Principal released", ":unlock:", click, self.now(), outcome, error)
        self._audit(store, click, finding, "slack.release-principal", outcome.status if outcome else "error", line,
                    {"principal": held.resource})
        self._show(store, click, finding.id, line)

    def _snooze(self, store: Store, click: _Click, body: dict[str, Any]) -> None:
        finding = self._authorised(store, click, "slack.snooze")
        if finding is None:
            return
        with self._finding_lock(finding.id):
            finding = store.get(finding.id) or finding
            if finding.status == "snoozed" and not snooze_over(store, finding, self.now()):
                self._ignore(store, click, finding, "slack.snooze", "already snoozed")
                return
            if finding.status == "quarantined":
                self._refuse(store, click, finding, "slack.snooze", "it is quarantined: release it before snoozing")
                return
            now = self.now()
            until = now + timedelta(hours=SNOOZE_HOURS)
            store.set_finding_status(finding.id, "snoozed", now=now)
            line = (f":zzz: *Snoozed* for {SNOOZE_HOURS} h by <@{click.user_id}> at {now:%H:%M}Z "
                    f"(until {until:%Y-%m-%d %H:%M}Z)")
            self._audit(store, click, finding, "slack.snooze", "ok", line, {"until": until.isoformat()})
        self._show(store, click, finding.id, line)

    def _open_expected(self, store: Store, click: _Click, body: dict[str, Any]) -> None:
        finding = self._authorised(store, click, "slack.mark-expected")
        if finding is None:
            return
        if finding.status == "quarantined":
            self._refuse(store, click, finding, "slack.mark-expected", "it is quarantined: release it first")
            return
        if not click.trigger_id:
            return
        meta = json.dumps({"finding": finding.id, "channel": click.channel, "ts": click.message_ts})
        subject = finding.resource or finding.principal or finding.id
        self.client.views_open(trigger_id=click.trigger_id, view={
            "type": "modal", "callback_id": EXPECTED_VIEW, "private_metadata": meta,
            "title": {"type": "plain_text", "text": "Mark expected"},
            "submit": {"type": "plain_text", "text": "Mark expected"},
            "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": (
                    f"`{esc(subject)}` will be marked *expected*: no more alerts for this incident. "
                    "Your name and reason go in the audit log.")}},
                {"type": "input", "block_id": "reason",
                 "label": {"type": "plain_text", "text": "Why is this expected?"},
                 "element": {"type": "plain_text_input", "action_id": "reason_input", "multiline": True,
                             "min_length": 3, "max_length": 500}},
            ],
        })

    def _expected(self, store: Store, click: _Click, body: dict[str, Any]) -> None:
        reason = _reason(body.get("view") or {})
        if not reason:
            return
        finding = self._authorised(store, click, "slack.mark-expected")
        if finding is None:
            return
        with self._finding_lock(finding.id):
            finding = store.get(finding.id) or finding
            if finding.status == "expected":
                self._ignore(store, click, finding, "slack.mark-expected", "already marked expected")
                return
            if finding.status == "quarantined":
                self._refuse(store, click, finding, "slack.mark-expected", "it is quarantined: release it first")
                return
            now = self.now()
            store.set_finding_status(finding.id, "expected", now=now)
            line = f":white_check_mark: *Marked expected* by <@{click.user_id}> at {now:%H:%M}Z: “{esc(reason)}”"
            self._audit(store, click, finding, "slack.mark-expected", "ok", line, {"reason": reason})
        self._show(store, click, finding.id, line)

    # -- GPU launch approvals (issue 11) -------------------------------------------------------------------

    def _gpu_approve(self, store: Store, click: _Click, body: dict[str, Any]) -> None:
        self._gpu_decide(store, click, approve=True)

    def _gpu_deny(self, store: Store, click: _Click, body: dict[str, Any]) -> None:
        self._gpu_decide(store, click, approve=False)

    def _gpu_decide(self, store: Store, click: _Click, *, approve: bool) -> None:
        """Approve or deny an approval request (`click.finding_id` carries its id). Refused unless the user is
        an allowed approver; the decision itself, IAM changes and audit live in spendwatch.approvals."""
        from .approvals import audit, decide, iam_per_account, message
        from .store import Approvals

        request = Approvals(store).get(click.finding_id)
        if request is None:
            self._ephemeral(click, f":grey_question: no approval request `{esc(click.finding_id[:64])}`.")
            return
        allowed, why = self._authoriser.check(click.user_id)
        action = "approval.approve" if approve else "approval.deny"
        if not allowed:
            audit(store, request, at=self.now(), actor=click.actor, action=action, outcome="refused", description=why,
                  detail={"slack_user": click.user_id, "channel": click.channel})
            self._ephemeral(click, f":no_entry: Not done: {why}. Nothing was changed.")
            return
        before = request.status
        decided, line = decide(store, iam_per_account(self.settings.approver_role, self.settings.aws_endpoint_url),
                               request.id,
                               approve=approve, actor=click.actor, now=self.now())
        if decided is None or decided.status == before:
            self._ephemeral(click, f":information_source: Nothing to do: {esc(line)}.")
            return
        channel, ts = click.channel or decided.channel, click.message_ts or decided.ts
        if channel and ts:
            payload = message(decided, outcome=line.replace(click.actor, f"<@{click.user_id}>"))
            self.client.chat_update(channel=channel, ts=ts, text=payload["text"], blocks=payload["blocks"])

    # -- helpers -----------------------------------------------------------------------------------------

    def _authorised(self, store: Store, click: _Click, action: str) -> Finding | None:
        """The clicked finding when the user may act on it; otherwise refuse (ephemeral, audited) and None."""
        finding = store.get(click.finding_id)
        if finding is None:
            self._ephemeral(click, f":grey_question: spendwatch has no finding `{esc(click.finding_id[:64])}`.")
            return None
        allowed, why = self._authoriser.check(click.user_id)
        if not allowed:
            self._refuse(store, click, finding, action, why)
            return None
        return finding

    def _run(self, store: Store, finding: Finding, click: _Click, *, release: bool) -> tuple[Outcome | None, str]:
        """Quarantine or release through `spendwatch.actions.execute`, as `spendwatch quarantine --apply` does,
        with the registered action of the finding's cloud (`<cloud>.quarantine` / `<cloud>.release`)."""
        from .actions import ACTIONS
        from .actions.base import Target, execute

        try:
            name = f"{finding.cloud}.{'release' if release else 'quarantine'}"
            if name not in ACTIONS:
                raise ValueError(f"spendwatch has no {name} action")
            target = Target(finding.cloud, finding.resource or "", finding.account, finding.region,
                            None if release else finding.id)
            common: dict[str, Any] = {"clients": self._clients_factory(target), "store": store,
                                      "actor": click.actor, "settings": self.settings.actions}
            action = ACTIONS[name](**common) if release else ACTIONS[name](**common, stop=False)  # type: ignore[call-arg]
            return execute(action, target, apply=True), ""
        except Exception as exc:  # no credentials, access denied while planning, ...: nothing was applied
            log.warning("%s of %s failed: %s", "release" if release else "quarantine", finding.resource, exc)
            return None, f"{type(exc).__name__}: {exc}"

    def _run_principal(self, store: Store, finding: Finding, click: _Click, held: StoredQuarantine | None
                       ) -> tuple[Outcome | None, str]:
        """Contain the finding's principal (`held` None) or release the containment `held`, through `execute`."""
        from .actions.aws import AwsContainPrincipal, AwsReleasePrincipal
        from .actions.base import Target, execute

        try:
            if held is None:
                target = Target("aws", finding.principal or "", finding.account, finding.region, finding.id)
            else:
                target = Target("aws", held.resource, held.account, held.region or finding.region)
            common: dict[str, Any] = {"clients": self._clients_factory(target), "store": store,
                                      "actor": click.actor, "settings": self.settings.actions}
            action = (AwsReleasePrincipal(**common) if held is not None
                      else AwsContainPrincipal(**common, linked_to=finding.resource))
            return execute(action, target, apply=True), ""
        except Exception as exc:
            log.warning("principal %s of %s failed: %s", "release" if held else "containment", finding.principal, exc)
            return None, f"{type(exc).__name__}: {exc}"

    def _refuse(self, store: Store, click: _Click, finding: Finding, action: str, why: str) -> None:
        self._audit(store, click, finding, action, "refused", why)
        self._ephemeral(click, f":no_entry: Not done: {why}. Nothing was changed.")

    def _ignore(self, store: Store, click: _Click, finding: Finding, action: str, why: str, *,
                subject: str | None = None) -> None:
        self._audit(store, click, finding, action, "ignored", why)
        what = subject or finding.resource or finding.id
        self._ephemeral(click, f":information_source: Nothing to do: `{esc(what)}` is {why}.")

    def _audit(self, store: Store, click: _Click, finding: Finding, action: str, outcome: str, description: str,
               detail: dict[str, Any] | None = None) -> None:
        store.write_audit(
            at=self.now(), actor=click.actor, action=action, cloud=finding.cloud, account=finding.account,
            region=finding.region, resource=finding.resource or finding.principal or finding.id,
            finding_id=finding.id, step="", description=description, outcome=outcome, dry_run=False,
            detail=json.dumps({"slack_user": click.user_id, "slack_name": click.user_name, "channel": click.channel,
                               "message_ts": click.message_ts, **(detail or {})}, sort_keys=True),
        )

    def _show(self, store: Store, click: _Click, finding_id: str, line: str) -> None:
        """Update the alert with the outcome line and the buttons for the finding's new status."""
        records = SlackRecords(store)
        records.set_outcome(finding_id, line, now=self.now())
        stored = records.message(finding_id)
        channel = click.channel or (stored.channel if stored else None)
        ts = click.message_ts or (stored.ts if stored else None)
        finding = store.get(finding_id)
        if not channel or not ts or finding is None:
            return
        payload = alert_payload(finding, outcome=line,
                                principal_contained=contained_principal(store, finding) is not None)
        self.client.chat_update(channel=channel, ts=ts, text=payload["text"], blocks=payload["blocks"])

    def _ephemeral(self, click: _Click, text: str) -> None:
        if not click.channel:
            log.info("no channel to answer %s in: %s", click.user_id, text)
            return
        try:
            self.client.chat_postEphemeral(channel=click.channel, user=click.user_id, text=text)
        except Exception as exc:
            log.warning("ephemeral reply to %s failed: %s", click.user_id, exc)

    @contextmanager
    def _store(self) -> Iterator[Store]:
        with Store(self.store_path) as store:  # one connection per thread: sqlite3 connections are not shared
            yield store

    @contextmanager
    def _finding_lock(self, finding_id: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(finding_id, threading.Lock())
        with lock:
            yield


def default_clients(settings: SlackSettings, target: Target) -> Any:
    """The clients a Slack-started action on `target` uses: AWS for the finding's account and region (through
    `settings.quarantine_role` when set), GCP for the project named in the instance's resource name, Azure for
    the subscription named in the VM's resource id."""
    if target.cloud == "aws":
        from .actions.aws import AwsClients

        return AwsClients.build(region=target.region, endpoint_url=settings.aws_endpoint_url, account=target.account,
                                assume_role=settings.quarantine_role, external_id=settings.external_id)
    if target.cloud == "gcp":
        from .actions.gcp import GcpClients, parse_instance

        project = parse_instance(target.resource)[0]
        return GcpClients.build(project, endpoint=settings.gcp_endpoint_url, credentials=settings.gcp_credentials)
    if target.cloud == "azure":
        from .actions.azure import AzureClients, parse_vm_id

        return AzureClients.build(parse_vm_id(target.resource)[0], base_url=settings.azure_endpoint_url,
                                  credential=settings.azure_credential)
    raise ValueError(f"spendwatch cannot act on {target.cloud} resources")


def _active(store: Store, finding: Finding) -> StoredQuarantine | None:
    """The active quarantine of the finding's resource, looked up as its cloud's action stored it."""
    if not finding.resource:
        return None
    account, resource = finding.account, finding.resource
    if finding.cloud == "azure":  # the Azure actions key records on lower-cased ids (ARM ids ignore case)
        account, resource = account.lower(), resource.lower()
    return store.active_quarantine(cloud=finding.cloud, account=account, resource=resource)


def _reason(view: dict[str, Any]) -> str:
    values = ((view.get("state") or {}).get("values") or {}).get("reason") or {}
    return str((values.get("reason_input") or {}).get("value") or "").strip()[:500]


def _outcome_line(verb: str, done: str, emoji: str, click: _Click, now: datetime, outcome: Outcome | None,
                  error: str) -> str:
    who = f"<@{click.user_id}>"
    if outcome is None:
        return f":x: *{verb} failed* (asked by {who} at {now:%H:%M}Z): {esc(error)[:1500]}. Nothing was applied."
    if outcome.status == "applied":
        ran = sum(1 for s in outcome.steps if s.outcome == "ok")
        record = f" (record {outcome.quarantine_id})" if outcome.quarantine_id else ""
        tail = {"Quarantine": " Release undoes it.", "Contain principal": " Release principal undoes it."}.get(verb, "")
        return f"{emoji} *{done}* by {who} at {now:%H:%M}Z: {ran} step(s) applied{record}.{tail}"
    if outcome.status == "partial":
        return f":warning: *{verb} partly applied* by {who} at {now:%H:%M}Z: {esc(outcome.message)[:1500]}"
    return f":no_entry: *{verb} refused* (asked by {who} at {now:%H:%M}Z): {esc(outcome.message)[:1500]}"


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Content Too Large", 500: "Internal Server Error"}


def _plain(status: int, text: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"content-type": "text/plain; charset=utf-8"}, text.encode()


def make_app(settings: SlackSettings, store_path: Path | str, *, client: WebClient | None = None,
             clients_factory: Callable[[Target], Any] | None = None,
             now: Callable[[], datetime] = lambda: datetime.now(UTC),
             process_before_response: bool = False) -> InteractionApp:
    """The interaction endpoint for `settings`, keeping its state (replays, audit, quarantines) in `store_path`.

    `client`: a WebClient (default: `make_client(settings.bot_token, base_url=settings.api_base_url)`, which
    retries rate limits). `clients_factory(target)`: the clients for an action on `target` (an `actions.Target`:
    cloud, resource, account, region; default `default_clients(settings, target)`). Bolt checks the bot token with
    auth.test here, so a wrong token fails at start-up (slack_bolt.error.BoltError), not on the first click.
    `process_before_response=True` is for FaaS (AWS Lambda), where nothing may run after the response: see
    `spendwatch.lambda_handlers`.
    """
    return InteractionApp(settings, store_path, client=client, clients_factory=clients_factory, now=now,
                          process_before_response=process_before_response)


class _Handler(BaseHTTPRequestHandler):
    server: SlackHTTPServer
    timeout = 10  # a client that stops sending mid-request must not hold a thread forever
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        app = self.server.app
        length_header = self.headers.get("Content-Length")
        body = b""
        if self.command == "POST":
            if length_header is None or self.headers.get("Transfer-Encoding"):
                self._send(*_plain(411, "Content-Length required"), close=True)
                return self._linger(app.settings.max_body_bytes)
            try:
                length = int(length_header)
            except ValueError:
                length = -1
            if length < 0 or length > app.settings.max_body_bytes:
                self._send(*_plain(413, "request too large"), close=True)
                return self._linger(app.settings.max_body_bytes)
            body = self.rfile.read(length)
        status, headers, out = app.handle(self.command, self.path, {k: v for k, v in self.headers.items()}, body)
        self._send(status, headers, out)

    def _send(self, status: int, headers: dict[str, str], body: bytes, *, close: bool = False) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _linger(self, limit: int) -> None:
        """After refusing a body unread, drain a bounded amount of it, so the client reads our answer rather
        than a connection reset (closing a socket with unread data makes the kernel send RST)."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline, drained = time.monotonic() + 1.0, 0
            while time.monotonic() < deadline and drained <= 4 * limit:
                chunk = self.connection.recv(1 << 16)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class SlackHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server for one `InteractionApp`; `url` is where Slack's Request URL should point."""

    daemon_threads = True

    def __init__(self, app: InteractionApp, host: str, port: int) -> None:
        self.app = app
        super().__init__((host, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionResetError, BrokenPipeError, TimeoutError)):
            log.debug("client %s went away: %s", client_address, exc)  # its problem, not ours
            return
        log.exception("error answering %s", client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{PATH}"


def serve_http(app: InteractionApp, host: str = "127.0.0.1", port: int = 3000, *,
               background: bool = False) -> SlackHTTPServer:
    """Serve `app` over HTTP on host:port (0 picks a free port). Blocks unless `background`, which serves from a
    daemon thread and returns at once; stop it with `server.shutdown(); server.server_close()`.
    """
    server = SlackHTTPServer(app, host, port)
    if background:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="spendwatch-slack-http",
                         daemon=True).start()
    else:
        server.serve_forever()
    return server
