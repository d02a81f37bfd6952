"""AWS Lambda entry points: a scheduled scan, and the Slack interaction endpoint behind a Function URL.

- `scan_handler(event, context)`: for an EventBridge Scheduler schedule (or an EventBridge rule's "Scheduled
  Event"). Runs one scan with its Slack alerts, then one approval sweep (expired GPU-launch exceptions revoked),
  exactly as `spendwatch serve --once` does, and returns the run's summary with `approvals_expired`. A failed
  scan raises, so the invocation counts in the function's `Errors` metric (alarm on it); a failed sweep is
  logged (`approvals.sweep_failed`) and retried by the next invocation. With `{"action": "retrain"}` in the
  event (the module's daily retraining schedule) it scans nothing and retrains the baseline model instead
  (`model_cli.retrain` over the live clouds' history, kept with the state): incremental scans hold too little
  history to retrain it, as `spendwatch serve`'s daily model job does. A failed retrain raises.
- `slack_handler(event, context)`: for a Lambda Function URL (payload format 2.0: `rawPath`, `headers`, `body`,
  `isBase64Encoded`, `requestContext.http.method`). Slack wants an answer within three seconds and Lambda
  freezes the sandbox as soon as the handler returns, so the work cannot run in a thread after the ack. Bolt's
  Lambda adapter solves it: with `process_before_response=True` the listener acks, and each lazy listener is
  started by invoking this same function again asynchronously (`InvocationType="Event"`) with the original
  event plus the header `x-slack-bolt-lazy-only`; the second invocation runs only the lazy work.

  Headers are not signed by Slack, so anyone could add `x-slack-bolt-lazy-only` to a replayed click. The first
  invocation therefore adds `x-spendwatch-lazy-token`, an HMAC (signing secret) of the Slack timestamp,
  signature and lazy function name; a lazy invocation without a valid token is refused (401). Only a verified
  lazy invocation skips the replay check (the first invocation already recorded that request).

Configuration comes from the environment (Terraform fills it from Secrets Manager or SSM Parameter Store):

    SPENDWATCH_CONFIG=/var/task/spendwatch.toml   or   SPENDWATCH_CONFIG_TOML="[serve] ..."  (inline TOML)
    SPENDWATCH_DATABASE_URL=postgresql://...      or  SPENDWATCH_DATABASE_URL_SSM_PARAMETER (the shared state)
    SPENDWATCH_STATE=/mnt/efs/state.db            (a path or a URL; wins over SPENDWATCH_DATABASE_URL; default
                                                   /tmp/spendwatch/state.db: per sandbox, see below)
    SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET         or  SLACK_BOT_TOKEN_SSM_PARAMETER, SLACK_SIGNING_SECRET_SSM_PARAMETER
                                                      (SecureString names, read once per cold start, decrypted)
    SPENDWATCH_SLACK_CHANNEL, SPENDWATCH_SLACK_ALLOWED_USERS, SPENDWATCH_SLACK_ALLOWED_GROUPS (slack handler)
    SPENDWATCH_AWS_QUARANTINE_ROLE_NAME           (slack handler: the role assumed in a finding's account)
    SPENDWATCH_AWS_EXTERNAL_ID                    (slack handler: the external ID that role's trust requires)
    SPENDWATCH_AWS_APPROVER_ROLE_NAME             (both: the role assumed in a GPU-launch principal's account to
                                                   apply and sweep approvals; unset: own account only)

State: the scheduled function and the Slack function must share one state (findings, Slack threads, replay
digests, quarantine records). PostgreSQL (a `postgresql://` URL, e.g. RDS; the functions then need a VPC
route to it) is the deployment answer: every check-then-write holds across concurrent invocations
(spendwatch/store/backend.py). SQLite on a shared EFS mount works for low volume. /tmp is per sandbox and
only fits a trial.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import logging
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .slack_app import InteractionApp, SlackSettings

log = logging.getLogger("spendwatch.lambda")

DEFAULT_STATE = "/tmp/spendwatch/state.db"
SECRET_NAMES = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SPENDWATCH_DATABASE_URL")
LAZY_TOKEN_HEADER = "x-spendwatch-lazy-token"
_LAZY_HEADERS = ("x-slack-bolt-lazy-only", "x-slack-bolt-lazy-function-name", LAZY_TOKEN_HEADER)


def resolve_secrets(environ: dict[str, str], *, ssm: Any = None) -> dict[str, str]:
    """The environment with each secret in SECRET_NAMES filled from SSM Parameter Store when only its
    `<NAME>_SSM_PARAMETER` is set. `ssm`: a boto3 SSM client (default: built here, in the function's region).

    The database URL is not read when SPENDWATCH_STATE is set: that wins (spendwatch.store.resolve_state), so the
    URL would go unused, and a secret left empty must not stop the function from starting."""
    env = dict(environ)
    for name in SECRET_NAMES:
        param = env.get(f"{name}_SSM_PARAMETER")
        if env.get(name) or not param:
            continue
        if name == "SPENDWATCH_DATABASE_URL" and env.get("SPENDWATCH_STATE"):
            continue
        if ssm is None:
            import boto3

            ssm = boto3.client("ssm", endpoint_url=env.get("SPENDWATCH_SSM_ENDPOINT_URL") or None)
        env[name] = str(ssm.get_parameter(Name=param, WithDecryption=True)["Parameter"]["Value"])
    return env


def _setup_logging() -> None:
    from .serve import setup_logging

    # Lambda's runtime puts its own handler on the root logger; one JSON line per record is what we want.
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    setup_logging()


# -- scheduled scans --------------------------------------------------------------------------------------


def scan_handler(event: dict[str, Any] | None, context: Any, *, environ: dict[str, str] | None = None,
                 ssm: Any = None) -> dict[str, Any]:
    """One scheduled scan. `event`: EventBridge Scheduler's input (any JSON; `{}` by default) or an EventBridge
    rule's Scheduled Event (`detail-type`, `time`, `id`). Returns the run summary; raises when the run failed."""
    from .config import ConfigError, load
    from .serve import ServeSettings, Service, emit

    _setup_logging()
    env = resolve_secrets(dict(os.environ if environ is None else environ), ssm=ssm)
    event = event if isinstance(event, dict) else {}
    inline, path = env.get("SPENDWATCH_CONFIG_TOML"), env.get("SPENDWATCH_CONFIG")
    if inline:
        import tomllib

        try:
            data = tomllib.loads(inline)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"SPENDWATCH_CONFIG_TOML: not valid TOML ({exc})") from exc
        settings = ServeSettings.from_dict(data, path="SPENDWATCH_CONFIG_TOML", environ=env)
    elif path:
        settings = ServeSettings.from_dict(load(path), path=path, environ=env)
    else:
        raise ConfigError("set SPENDWATCH_CONFIG (a TOML file) or SPENDWATCH_CONFIG_TOML (its text)")
    from .store import resolve_state

    state = resolve_state(None, environ=env, configured=settings.state, default=DEFAULT_STATE)
    action = event.get("action")
    if action == "retrain":
        return _retrain(settings, state, request_id=getattr(context, "aws_request_id", None))
    if action not in (None, "scan"):
        raise ValueError(f"event field 'action': {action!r} is not 'scan' or 'retrain'")
    emit("lambda.scan", trigger=event.get("detail-type") or "EventBridge Scheduler", scheduled_time=event.get("time"),
         event_id=event.get("id"), request_id=getattr(context, "aws_request_id", None))
    service = Service(settings, state=state)
    result = service.run_scan()
    expired = service.sweep_approvals()  # whatever the scan's outcome: revoking expired access must not wait
    if result.status != "ok":
        raise RuntimeError(f"scan {result.run} failed: {result.error}")
    return {**result.to_json(), "approvals_expired": expired}


def _retrain(settings: Any, state: Path | str, *, request_id: str | None) -> dict[str, Any]:
    """The daily model retraining (`spendwatch model train --config`): the live clouds of the configuration,
    the model kept with `state`. Unlike serve's hook it raises on failure, so the invocation counts in the
    function's `Errors` metric; too little history is no error (the scans keep the last model, if any)."""
    from .config import ConfigError
    from .model_cli import retrain
    from .serve import emit

    if not settings.live_configs():
        raise ConfigError(f"{settings.source}: retraining needs a live cloud ([aws], [gcp] or [azure] table)")
    emit("lambda.retrain", request_id=request_id)
    trained = retrain(state=state, live=settings.live_configs())
    if trained is None:
        emit("model.skipped", logging.WARNING, reason="too little history for a baseline")
        return {"action": "retrain", "trained": False, "rows": 0}
    emit("model.trained", rows=trained.rows)
    return {"action": "retrain", "trained": True, "rows": trained.rows, "resources": trained.resources,
            "trained_at": trained.trained_at.isoformat() if trained.trained_at else None}


# -- Slack interactions behind a Function URL -------------------------------------------------------------


def _response(status: int, body: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": "text/plain; charset=utf-8", **(headers or {})},
            "body": body}


def lazy_token(secret: str, timestamp: str, signature: str, function_name: str) -> str:
    """HMAC that proves a lazy invocation was started by our own first invocation."""
    msg = f"lazy:{timestamp}:{signature}:{function_name}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


class SlackLambda:
    """The interaction endpoint on Lambda: the checks of `spendwatch.slack_app`, bolt's Lambda adapter for the
    ack-then-lazy split. One per sandbox (built on the cold start, reused by warm invocations).

    `lambda_client`: what invokes this function again for the lazy work (default boto3's, built on first use);
    tests pass one that runs the handler in a thread, as Lambda would in another sandbox.
    """

    def __init__(self, settings: SlackSettings, store_path: Path | str, *, lambda_client: Any = None,
                 client: Any = None, clients_factory: Any = None) -> None:
        from slack_bolt.adapter.aws_lambda.lazy_listener_runner import LambdaLazyListenerRunner

        from .slack_app import make_app

        self.settings = settings
        self.app: InteractionApp = make_app(settings, store_path, client=client, clients_factory=clients_factory,
                                            process_before_response=True)
        owner = self

        class Runner(LambdaLazyListenerRunner):
            """bolt's runner, adding our token so the lazy invocation can be told from a forged one."""

            def start(self, function: Any, request: Any) -> None:
                if self.lambda_client is None:
                    import boto3

                    self.lambda_client = boto3.client("lambda")
                event = copy.deepcopy(request.context["lambda_request"])
                headers = {k.lower(): v for k, v in (event.get("headers") or {}).items() if k.lower() != "cookie"}
                name = str(request.lazy_function_name)
                headers["x-slack-bolt-lazy-only"] = "1"
                headers["x-slack-bolt-lazy-function-name"] = name
                headers[LAZY_TOKEN_HEADER] = lazy_token(owner.settings.signing_secret,
                                                        headers.get("x-slack-request-timestamp", ""),
                                                        headers.get("x-slack-signature", ""), name)
                event["headers"] = headers
                self.lambda_client.invoke(FunctionName=request.context["aws_lambda_invoked_function_arn"],
                                          InvocationType="Event", Payload=json.dumps(event))

        self.app.bolt.listener_runner.lazy_listener_runner = Runner(log, lambda_client)

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """Answer one Function URL event (format 2.0) with a Function URL response."""
        from slack_bolt.adapter.aws_lambda.handler import to_aws_response, to_bolt_request

        from .slack_app import LAZY_VERIFIED, PATH

        method = ((event.get("requestContext") or {}).get("http") or {}).get("method")
        if (event.get("rawPath") or "") != PATH:
            return _response(404, "not found")
        if method != "POST":
            return _response(405, "method not allowed")
        raw = event.get("body") or ""
        try:
            body = base64.b64decode(raw).decode("utf-8") if event.get("isBase64Encoded") else str(raw)
        except (ValueError, UnicodeDecodeError):
            return _response(400, "malformed request")
        if len(body.encode()) > self.settings.max_body_bytes:
            return _response(413, "request too large")
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        ts, sig = headers.get("x-slack-request-timestamp", ""), headers.get("x-slack-signature", "")
        lazy = "x-slack-bolt-lazy-only" in headers
        if lazy:
            name = headers.get("x-slack-bolt-lazy-function-name", "")
            expected = lazy_token(self.settings.signing_secret, ts, sig, name)
            if not hmac.compare_digest(headers.get(LAZY_TOKEN_HEADER, ""), expected):
                log.info("refused a lazy invocation without our token")
                return _response(401, "invalid request")
        elif any(h in headers for h in _LAZY_HEADERS):
            return _response(401, "invalid request")
        if not self.app._verifier.is_valid(body, ts, sig):  # signature and five-minute window, before parsing
            log.info("refused a request with a missing, invalid or stale signature")
            return _response(401, "invalid request")
        clean = {**event, "headers": headers, "body": body, "isBase64Encoded": False}
        try:
            req = to_bolt_request(copy.deepcopy(clean))
        except Exception:
            return _response(400, "malformed request")
        req.context["aws_lambda_function_name"] = getattr(context, "function_name", "spendwatch-slack")
        req.context["aws_lambda_invoked_function_arn"] = getattr(context, "invoked_function_arn",
                                                                 req.context["aws_lambda_function_name"])
        req.context["lambda_request"] = clean
        if lazy:
            req.context[LAZY_VERIFIED] = True
        try:
            resp = self.app.bolt.dispatch(req)
        except Exception:
            log.exception("interaction dispatch failed")
            return _response(500, "internal error")
        return to_aws_response(resp)


_SLACK: SlackLambda | None = None
_SLACK_LOCK = threading.Lock()


def _default_slack() -> SlackLambda:
    global _SLACK
    with _SLACK_LOCK:
        if _SLACK is None:
            from .slack_app import SlackSettings

            _setup_logging()
            env = resolve_secrets(dict(os.environ))
            settings = SlackSettings.from_env(env)
            if env.get("SPENDWATCH_AWS_ENDPOINT_URL"):
                settings = replace(settings, aws_endpoint_url=env["SPENDWATCH_AWS_ENDPOINT_URL"])
            from .store import resolve_state

            _SLACK = SlackLambda(settings, resolve_state(None, environ=env, default=DEFAULT_STATE))
        return _SLACK


def slack_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point for the Slack Function URL (handler string `spendwatch.lambda_handlers.slack_handler`)."""
    return _default_slack().handle(event, context)
