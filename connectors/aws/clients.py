"""boto3 clients for the connector: one per (account, region, service), built where first used.

Every client gets botocore's adaptive retry mode (exponential back-off with jitter for throttling and 5xx,
plus a client-side rate limiter that slows down when AWS throttles), bounded time-outs, and a before-call
hook that refuses calls not declared in `permissions.CALLS`. Accounts other than the caller's are reached
by assuming `role_name` there; the credentials are cached for the run. boto3 is imported here only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from .config import AwsConfig
from .permissions import permission

Hook = tuple[str, Callable[..., Any]]  # (botocore event name, handler), registered on every client


class AccountUnreachable(Exception):
    """The read role could not be assumed in an account; `reason` says why (access denied, time-out, ...)."""

    def __init__(self, account: str, reason: str) -> None:
        super().__init__(f"account {account}: {reason}")
        self.account, self.reason = account, reason


def _check_declared(model: Any, **_: Any) -> None:
    permission(model.service_model.service_name, model.name)


def describe_error(exc: BaseException) -> str:
    """A short reason for a gap: the AWS error code and message, or the kind of network failure."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code, message = err.get("Code", "Error"), err.get("Message", "")
        op = exc.operation_name
        kind = "access denied" if "AccessDenied" in code or code in ("UnauthorizedOperation", "AuthFailure") \
            else "error"
        return f"{kind}: {code} on {op}" + (f" ({message})" if message else "")
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return f"time-out: {exc}"
    if isinstance(exc, EndpointConnectionError):
        return f"unreachable: {exc}"
    if isinstance(exc, BotoCoreError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


class Clients:
    """Builds and caches clients; thread-safe (botocore clients themselves are)."""

    def __init__(self, config: AwsConfig, *, hooks: Sequence[Hook] = (), session: Any = None) -> None:
        import boto3
        from botocore.config import Config

        self.config = config
        self.hooks = list(hooks)
        self._base = session or boto3.session.Session(profile_name=config.profile, region_name=config.home_region)
        self._botocore_config = Config(
            retries={"mode": "adaptive", "max_attempts": max(1, config.max_attempts)},
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            max_pool_connections=32,  # the files connector's reader threads fetch S3 objects in parallel
        )
        self._sessions: dict[str, Any] = {}
        self._failed: dict[str, str] = {}
        self._clients: dict[tuple[str | None, str, str], Any] = {}
        self._lock = threading.RLock()

    def _new(self, session: Any, service: str, region: str) -> Any:
        kwargs: dict[str, Any] = {"region_name": region, "config": self._botocore_config}
        if self.config.endpoint_url:
            kwargs["endpoint_url"] = self.config.endpoint_url
        client = session.client(service, **kwargs)
        client.meta.events.register("before-call.*.*", _check_declared)
        for event, handler in self.hooks:
            client.meta.events.register(event, handler)
        return client

    def base(self, service: str, region: str | None = None) -> Any:
        """A client with the caller's own credentials (buckets, Organizations, STS)."""
        return self._cached(None, service, region or self.config.home_region, lambda: self._base)

    def bucket(self, region: str | None = None) -> Any:
        """The S3 client buckets are read with: `bucket_role_arn` when set, else the caller's credentials."""
        arn = self.config.bucket_role_arn
        if not arn:
            return self.base("s3", region)
        return self._cached("bucket", "s3", region or self.config.home_region, lambda: self._assume("bucket", arn))

    def role(self, arn: str, service: str, region: str | None = None) -> Any:
        """A client as role `arn` (e.g. `[aws.athena] role_arn`; see `as_role`)."""
        key = f"role:{arn}"
        return self._cached(key, service, region or self.config.home_region, lambda: self.as_role(arn))

    def as_role(self, arn: str) -> Any:
        """A boto3 session as role `arn`, assumed once per run (with `external_id` when set). Raises
        AccountUnreachable when it cannot be assumed."""
        return self._assume(f"role:{arn}", arn)

    def account(self, account: str, service: str, region: str) -> Any:
        """A client in `account`, through its read role. Raises AccountUnreachable when the role cannot be
        assumed (and again, without another call, for every later client of that account in this run)."""
        arn = self.config.role_arn(account)
        if arn is None:
            return self.base(service, region)
        return self._cached(account, service, region, lambda: self._assume(account, arn))

    def _cached(self, key: str | None, service: str, region: str, session: Callable[[], Any]) -> Any:
        with self._lock:
            client = self._clients.get((key, service, region))
            if client is None:
                client = self._clients[(key, service, region)] = self._new(session(), service, region)
            return client

    def _assume(self, key: str, arn: str) -> Any:
        import boto3

        if key in self._failed:
            raise AccountUnreachable(key, self._failed[key])
        if key in self._sessions:
            return self._sessions[key]
        kwargs: dict[str, Any] = {"RoleArn": arn, "RoleSessionName": self.config.session_name}
        if self.config.external_id:
            kwargs["ExternalId"] = self.config.external_id
        try:
            creds = self.base("sts").assume_role(**kwargs)["Credentials"]
        except Exception as exc:
            reason = f"cannot assume {arn}: {describe_error(exc)}"
            self._failed[key] = reason
            raise AccountUnreachable(key, reason) from exc
        session = boto3.session.Session(
            aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"], region_name=self.config.home_region,
        )
        self._sessions[key] = session
        return session
