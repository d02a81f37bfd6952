"""`spendwatch serve`: scheduled scans, Slack alerts, the Slack interaction endpoint and a health check, in one
process.

What runs:

- APScheduler 3.x (`BackgroundScheduler`) runs the scan job every `interval_s` seconds with `max_instances=1`
  (one run at a time: a run still going when the next is due makes the scheduler skip that one), `coalesce=True`
  (runs missed while the process was paused or busy collapse into one), `jitter_s` (several deployments do not
  hit the provider APIs in the same second) and `misfire_grace_time` (a run more than that late is skipped,
  not started late). APScheduler 4 is alpha; 3.x is what we use.
- After each scan, findings at or above `alert_min_severity` go to Slack through `SlackAlerter` (a new incident
  as a new alert with its chart, a changed one as a reply in its thread) with the run's coverage gaps in the
  footer. What was alerted is kept in the store (`AlertLedger`), so a run killed half-way resumes on the next
  start: alerts not yet posted are posted, alerts already posted are not repeated.
- One HTTP server (wsgiref, threaded) on `host:port` answers `POST /slack/events` (the interaction endpoint,
  `spendwatch.slack_app`) and `GET /healthz` (JSON: the last run's time, status, duration, findings and gaps;
  503 when that run failed or the next one is overdue).
- SIGTERM or SIGINT: no new run starts, the HTTP server stops, Slack work already acknowledged finishes, the
  running scan gets `shutdown_grace_s` to finish (it stops posting alerts at once; what it has not posted is
  posted by the next start) and is otherwise abandoned: every store write is one transaction, so an abandoned
  run leaves the state as a killed one would, consistent. Exit 0.
- Logs: one JSON object per line on stderr (`event`, `run`, ...). Library log lines go through the same
  formatter, so a log pipeline sees one format.

- The approval sweep (`approvals.expire_due`: GPU-launch exceptions whose time is up are revoked) runs every
  `approval_sweep_s` on a worker of its own, so a long scan never holds back a revocation. It acts in each
  principal's account through the role SPENDWATCH_AWS_APPROVER_ROLE_NAME names (unset: its own account only);
  a revocation that failed is logged (`approvals.expire_failed`), audited and tried again by the next sweep.
- With live clouds (`[aws]`, `[gcp]`, `[azure]`) a daily job retrains the organisation's baseline model from
  their history (spendwatch.model_cli.retrain); incremental scans hold too little history to do it themselves.

`--once` runs one scan (with its alerts), then one approval sweep, and exits: the mode for the cloud's own
scheduler (Cloud Run jobs, Container Apps jobs, ECS scheduled tasks). Exit code 0 when the scan succeeded, 1
when it failed (a failed sweep is logged as `approvals.sweep_failed` and retried by the next run).
`--no-schedule` serves the Slack endpoint and /healthz and runs no scans and no retraining: the service half of a
deployment whose scans run as a separate job (Cloud Run service, Container App). It keeps the approval sweep:
a sweep is not a scan (one indexed query when nothing is due), revoking an exception on time is a security
matter, and an always-on service sweeps every `approval_sweep_s` where the job sweeps only once per scan. The
job's sweep stays the floor for services that scale to zero; two sweepers never revoke twice (each expiry is a
compare-and-set in the store, and revoking in IAM is idempotent). Both halves need one shared state: a
PostgreSQL URL. Its /healthz is 200 while the state can be opened, 503 when it cannot.

The state is a file path or a `postgresql://` URL: `--state`, else $SPENDWATCH_STATE, else
$SPENDWATCH_DATABASE_URL (where the deployments put the secret), else `[serve] state`, else
$SPENDWATCH_HOME/state.db. $SPENDWATCH_HOST and $SPENDWATCH_PORT override `host` and `port` (the container
image sets them, and its HEALTHCHECK reads the same port).

Configuration (TOML; secrets only from the environment: SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET)::

    [serve]
    data = "/exports"              # scan exports on disk; or leave it out and give [aws], [gcp] and/or [azure]
    state = "/var/lib/spendwatch/state.db"  # or "postgresql://spendwatch@db/spendwatch" (password: PGPASSWORD)
    interval_s = 900
    jitter_s = 30
    misfire_grace_s = 300
    host = "0.0.0.0"
    port = 8080
    alert_min_severity = "medium"
    approval_sweep_s = 300         # revoke expired GPU-launch approvals this often (own worker)
    denied_launch_hours = 4        # hours asked for by the requests made from launches the guardrail denied

    [slack]                        # leave out for no Slack (scans, logs and /healthz only)
    channel = "C0123ALERTS"
    allowed_users = ["U01ALICE"]
    allowed_groups = ["S01SECOPS"]

Live clouds: the `[aws]`, `[gcp]` and `[azure]` tables of `scan --config` (their connectors' settings). With
`[aws]` alone each run is `pipeline.scan_aws`; with `[gcp]` or `[azure]` (with or without `[aws]`) each run is
one `pipeline.scan_live` over all of them: one report, one detection, every cloud's watermarks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ConfigError, Table, load
from .findings import Finding, Severity

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .pipeline import ScanResult
    from .sinks.slack import SlackAlerter
    from .slack_app import InteractionApp, SlackSettings
    from .store import Store

log = logging.getLogger("spendwatch.serve")

HEALTH_PATH = "/healthz"
SLACK_PATH = "/slack/events"
SEVERITIES = ("info", "low", "medium", "high", "critical")
LIVE_CLOUDS = ("aws", "gcp", "azure")  # the config file's tables that name live clouds to scan
# Findings in these states are settled by a person: no more alerts while they stay so.
QUIET_STATUSES = frozenset({"snoozed", "expected", "resolved"})


# -- settings ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeSettings:
    """`[serve]` (and whether `[slack]`, `[aws]`, `[gcp]` and `[azure]` are there), typed and checked.

    `overdue_s` is how long after the last run (or the start) `/healthz` turns 503 for want of a run; by
    default two intervals plus jitter and grace, so one skipped run (busy, misfired) does not page anyone.
    """

    data: Path | None = None
    aws: dict[str, Any] | None = None
    gcp: dict[str, Any] | None = None
    azure: dict[str, Any] | None = None
    state: Path | str | None = None  # a file, or a postgresql:// URL
    interval_s: float = 900.0
    jitter_s: float = 30.0
    misfire_grace_s: float = 300.0
    run_on_start: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    alert_min_severity: Severity = Severity.MEDIUM
    charts: bool = True
    shutdown_grace_s: float = 20.0
    overdue_s: float | None = None
    slack: SlackSettings | None = field(default=None, repr=False)  # repr=False: it holds the secrets
    sinks: dict[str, Any] | None = None  # the file's [sinks.*] tables: delivered after every scan
    approval_sweep_s: float = 300.0  # how often expired GPU-launch approvals are revoked (spendwatch.approvals)
    denied_launch_hours: float = 4.0  # what a request from a denied launch asks for (spendwatch.denied_launches)
    approver_role: str | None = None  # env SPENDWATCH_AWS_APPROVER_ROLE_NAME: the sweep's role in each account
    source: str | None = None  # the file the settings came from, for the live tables' error messages

    @property
    def overdue_after_s(self) -> float:
        if self.overdue_s is not None:
            return self.overdue_s
        return 2 * self.interval_s + self.jitter_s + self.misfire_grace_s

    @property
    def clouds(self) -> tuple[str, ...]:
        """The live clouds scanned (those with a table), in a fixed order; empty for a data directory."""
        return tuple(c for c in LIVE_CLOUDS if getattr(self, c) is not None)

    @property
    def target(self) -> str:
        return str(self.data) if self.data is not None else "+".join(self.clouds)

    def live_configs(self) -> dict[str, Any]:
        """Each live cloud's table as its connector's settings; ConfigError names the file and key."""
        return _live_configs({c: getattr(self, c) for c in self.clouds}, path=self.source)

    @classmethod
    def load(cls, path: Path | str, *, environ: dict[str, str] | None = None) -> ServeSettings:
        """Read `[serve]`, `[slack]` and the live clouds' tables of the file; ConfigError names the file, table
        and key."""
        data = load(path)
        env = dict(os.environ if environ is None else environ)
        return cls.from_dict(data, path=path, environ=env)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, path: Path | str | None = None,
                  environ: dict[str, str] | None = None) -> ServeSettings:
        from .approvals import APPROVER_ROLE_ENV, MAX_HOURS

        env = dict(os.environ if environ is None else environ)
        t = Table(data.get("serve"), "serve", path=path)
        raw_data = t.string("data", None)
        live = {cloud: data[cloud] for cloud in LIVE_CLOUDS if data.get(cloud) is not None}
        for cloud, table in live.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: [{cloud}] must be a table")
        if raw_data is None and not live:
            raise t.error("data", "is required unless the file has an [aws], [gcp] or [azure] table (a live scan)")
        if raw_data is not None and live:
            raise t.error("data", f"and [{'], ['.join(live)}] are all set: serve scans one target, pick one")
        _live_configs(live, path=path)  # fail at start-up, not at the first run
        from .store import state_location

        raw_state = t.string("state", None)
        interval = t.number("interval_s", 900.0, minimum=1.0)
        settings = cls(
            data=Path(raw_data).expanduser() if raw_data else None,
            aws=dict(live["aws"]) if "aws" in live else None,
            gcp=dict(live["gcp"]) if "gcp" in live else None,
            azure=dict(live["azure"]) if "azure" in live else None,
            source=str(path) if path is not None else None,
            state=state_location(raw_state) if raw_state else None,
            interval_s=interval,
            jitter_s=t.number("jitter_s", min(30.0, interval / 10)),
            misfire_grace_s=t.number("misfire_grace_s", 300.0, minimum=1.0),
            run_on_start=t.boolean("run_on_start", True),
            # The container image sets SPENDWATCH_HOST/PORT; its HEALTHCHECK reads the same port.
            host=_env_host(env, t.string("host", "127.0.0.1")),
            port=_env_port(env, t.integer("port", 8080, minimum=0, maximum=65535)),
            alert_min_severity=Severity.parse(t.string("alert_min_severity", "medium", choices=SEVERITIES)),
            charts=t.boolean("charts", True),
            shutdown_grace_s=t.number("shutdown_grace_s", 20.0),
            overdue_s=t.number("overdue_s", None, minimum=1.0),
            approval_sweep_s=t.number("approval_sweep_s", 300.0, minimum=1.0),
            denied_launch_hours=t.number("denied_launch_hours", 4.0, minimum=0.0, above=True),
            approver_role=env.get(APPROVER_ROLE_ENV) or None,
        )
        t.done()
        if settings.denied_launch_hours > MAX_HOURS:  # the bound of every approval request
            raise t.error("denied_launch_hours", f"must be at most {MAX_HOURS:g}")
        slack = _slack_settings(data.get("slack"), path=path, environ=env)
        sinks = data.get("sinks")
        if sinks is not None:
            from .delivery import parse_sinks

            try:
                parse_sinks({"sinks": sinks})  # fail at start-up, not at the first run
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from exc
        return _replace(settings, slack=slack, sinks=dict(sinks) if sinks is not None else None)


def _live_configs(tables: dict[str, Any], *, path: Path | str | None) -> dict[str, Any]:
    """The live clouds' tables ({"aws": {...}, ...}) as their connectors' settings (as `scan --config` reads
    them); ConfigError for a bad table. Each connector is imported only when its cloud is configured."""
    configs: dict[str, Any] = {}
    if "aws" in tables:
        from .connectors.aws import AwsConfig

        configs["aws"] = AwsConfig.from_dict(tables["aws"])
    if "gcp" in tables:
        from .connectors.gcp import GcpConfig

        configs["gcp"] = GcpConfig.from_dict(tables["gcp"], path=path)
    if "azure" in tables:
        from .connectors.azure import AzureConfig

        configs["azure"] = AzureConfig.from_dict(tables["azure"], path=path)
    return configs


def _env_host(env: dict[str, str], configured: str) -> str:
    return env.get("SPENDWATCH_HOST") or configured


def _env_port(env: dict[str, str], configured: int) -> int:
    raw = env.get("SPENDWATCH_PORT")
    if not raw:
        return configured
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise ConfigError(f"SPENDWATCH_PORT: {raw!r} is not a port number (0-65535)")
    return int(raw)


def _shown(state: Path | str) -> str:
    """The state for logs: a URL without its password."""
    from .store import describe

    return describe(state)


def _replace(settings: ServeSettings, **kw: Any) -> ServeSettings:
    from dataclasses import replace

    return replace(settings, **kw)


def _slack_settings(table: Any, *, path: Path | str | None, environ: dict[str, str]) -> SlackSettings | None:
    """`[slack]` plus the secrets from the environment; None when there is no `[slack]` table."""
    if table is None:
        return None
    from .actions.base import ActionSettings
    from .slack_app import SlackSettings, aws_roles_from_env

    t = Table(table, "slack", path=path)
    channel = t.string("channel")
    users = t.strings("allowed_users", ())
    groups = t.strings("allowed_groups", ())
    api_url = t.string("api_url", None)  # a local fake Slack in tests; production leaves it out
    aws_endpoint = t.string("aws_endpoint_url", None)  # moto in tests, or a VPC endpoint
    t.done()
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        if not environ.get(name, "").strip():
            raise ConfigError(f"{path}: [slack] is configured but the environment variable {name} is not set "
                              "(secrets never go in the file)")
    return SlackSettings(
        signing_secret=environ["SLACK_SIGNING_SECRET"], bot_token=environ["SLACK_BOT_TOKEN"], channel=channel,
        allowed_users=frozenset(users), allowed_groups=frozenset(groups), api_base_url=api_url,
        aws_endpoint_url=aws_endpoint, actions=ActionSettings.from_env(environ), **aws_roles_from_env(environ),
    )


# -- structured logs --------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts`, `level`, `event`, then the event's fields. Library records (no event)
    become `{"event": "log", "logger": ..., "message": ...}` so the stream stays parseable."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "log"),
        }
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if out["event"] == "log":
            out["logger"] = record.name
            out["message"] = record.getMessage()
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def setup_logging(stream: Any = None, level: int = logging.INFO) -> logging.Handler:
    """Route every logger through one JSON-lines handler on stderr (idempotent)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_spendwatch_json", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._spendwatch_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # APScheduler's INFO lines ("Running job ...") duplicate our scan.start/scan.end events.
    # Its skipped-run warnings duplicate our scan.skipped events too.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    return handler


def emit(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event."""
    log.log(level, event, extra={"event": event, "fields": fields})


# -- one run ----------------------------------------------------------------------------------------------


@dataclass
class RunState:
    """What `/healthz` reports about the last finished run."""

    run: str
    started_at: datetime
    finished_at: datetime
    status: str  # "ok" or "failed"
    duration_s: float
    findings: int = 0
    new: int = 0
    alerted: int = 0
    gaps: list[dict[str, str]] = field(default_factory=list)
    records: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    store_run_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run, "started_at": self.started_at.isoformat(), "finished_at": self.finished_at.isoformat(),
            "status": self.status, "duration_s": round(self.duration_s, 3), "findings": self.findings,
            "new": self.new, "alerted": self.alerted, "gaps": self.gaps, "records": self.records,
            "error": self.error, "store_run_id": self.store_run_id,
        }


def alert_digest(f: Finding) -> str:
    """What an alert said about `f`: its JSON without the status (a click changes the status and updates the
    alert itself; that must not read as news to post in the thread)."""
    doc = f.to_json()
    doc.pop("status", None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def to_alert(findings: Iterable[Finding], store: Store, min_severity: Severity,
             now: datetime | None = None) -> list[tuple[Finding, str]]:
    """(finding, digest) of the findings whose Slack alert is missing or out of date, worst first. A snoozed
    finding whose snooze has ended by `now` is due again (SlackAlerter.notify re-alerts it and reopens it)."""
    from .sinks.slack import snooze_over
    from .store import AlertLedger, SlackRecords

    ledger, records = AlertLedger(store), SlackRecords(store)
    now = now or datetime.now(UTC)
    due: list[tuple[Finding, str]] = []
    for f in findings:
        woken = snooze_over(store, f, now)
        if f.severity < min_severity or (f.status in QUIET_STATUSES and not woken):
            continue
        digest = alert_digest(f)
        if woken or records.message(f.id) is None or ledger.digest(f.id) != digest:
            due.append((f, digest))
    return due


class Service:
    """The scheduler, the HTTP server and the Slack parts of one `spendwatch serve` process."""

    def __init__(self, settings: ServeSettings, *, state: Path | str | None = None,
                 slack_client: Any = None) -> None:
        from .store import default_path

        self.settings = settings
        self.state: Path | str = state or settings.state or default_path()
        self._slack_client = slack_client
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()
        self._last: RunState | None = None
        self._started = time.time()
        self._next_run: datetime | None = None
        self._interaction: InteractionApp | None = None
        self._http: WSGIServer | None = None
        self._scheduler: Any = None
        self._scheduled = True  # False under --no-schedule: no scans here, so /healthz checks the state

    # -- the scan job ----------------------------------------------------------------------------------

    def run_scan(self) -> RunState:
        """One scan with its alerts. Never raises: a failure is a failed RunState (and a scan.end event)."""
        run = uuid.uuid4().hex[:12]
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        self._idle.clear()
        emit("scan.start", run=run, target=self.settings.target, pid=os.getpid())
        state = RunState(run, started, started, "failed", 0.0)
        try:
            from .store import Store

            with Store(self.state) as store:
                result = self._scan(store)
                state.findings, state.new = len(result.findings), len(result.new)
                state.records = dict(result.report.tables)
                state.gaps = [{"source": g.source, "reason": g.reason} for g in result.report.gaps]
                state.store_run_id = result.run_id
                state.alerted = self._alert(store, result, run)
                self._request_denied(store, result, run)
                self._deliver(store, result, run)
            state.status = "ok"
        except Exception as exc:
            state.error = f"{type(exc).__name__}: {exc}"
            log.exception("scan failed", extra={"event": "scan.error", "fields": {"run": run}})
        finally:
            state.finished_at = datetime.now(UTC)
            state.duration_s = time.perf_counter() - t0
            with self._lock:
                self._last = state
            emit("scan.end", logging.INFO if state.status == "ok" else logging.ERROR, run=run,
                 status=state.status, duration_s=round(state.duration_s, 3), records=state.records,
                 findings=state.findings, new=state.new, alerted=state.alerted, gaps=state.gaps,
                 store_run_id=state.store_run_id, error=state.error)
            self._idle.set()
        return state

    def _scan(self, store: Store) -> ScanResult:
        """One scan of the target: a data directory, `[aws]` alone (`scan_aws`, as always), or several live
        clouds including GCP or Azure (`scan_live`: one report and one detection over all of them)."""
        keep = self.settings.slack is not None  # for the charts, and the denied launches' approval requests
        if self.settings.data is not None:
            from .pipeline import scan_directory

            return scan_directory(self.settings.data, store=store, keep_tables=keep)
        if self.settings.clouds == ("aws",):
            from .connectors.aws import AwsConfig
            from .pipeline import scan_aws

            return scan_aws(AwsConfig.from_dict(self.settings.aws or {}), store=store, keep_tables=keep)
        from .pipeline import scan_live

        return scan_live(self.settings.live_configs(), store=store, keep_tables=keep)

    def retrain_model(self) -> bool:
        """Retrain the organisation's baseline model from the live clouds' history and keep it with the state
        (spendwatch.model_cli.retrain): incremental scans hold too little history to retrain it themselves.
        Never raises: a failure is logged and the scans keep the last model. True when a model was saved."""
        try:
            from .model_cli import retrain

            trained = retrain(state=self.state, live=self.settings.live_configs())
        except Exception:
            log.exception("model retrain failed", extra={"event": "model.error", "fields": {}})
            return False
        emit("model.trained" if trained is not None else "model.skipped",
             rows=trained.rows if trained is not None else 0)
        return trained is not None

    def _request_denied(self, store: Store, result: ScanResult, run: str) -> None:
        """Approval requests for the agents' launches the guardrail denied in this scan's activity
        (spendwatch.denied_launches). Never raises: a failure is logged (see that module on catching up)."""
        if self.settings.slack is None or result.tables is None:
            return
        from .denied_launches import request_denied

        try:
            done = request_denied(store, result.tables.activity, client=self._alerter_client(),
                                  channel=self.settings.slack.channel, hours=self.settings.denied_launch_hours)
        except Exception as exc:
            emit("approvals.from_activity_failed", logging.ERROR, run=run, error=f"{type(exc).__name__}: {exc}")
            return
        if done.posted or done.failed:
            emit("approvals.requested", logging.WARNING if done.failed else logging.INFO, run=run, **done.to_json())

    def sweep_approvals(self) -> int:
        """Revoke the GPU-launch approvals whose time is up (`approvals.expire_due`: policy and tags removed in
        IAM, audited, the Slack message updated). Never raises: a failure is logged and the next sweep retries."""
        from .approvals import expire_due, iam_per_account
        from .store import Store

        slack = self.settings.slack

        def failed(a: Any, line: str) -> None:  # audited too; retried by the next sweep
            emit("approvals.expire_failed", logging.ERROR, approval=a.id, principal=a.principal, error=line)

        try:
            client = self._alerter_client()
            with Store(self.state) as store:
                iam = iam_per_account(self.settings.approver_role, slack.aws_endpoint_url if slack else None)
                done = expire_due(store, iam, now=datetime.now(UTC), client=client, on_error=failed)
        except Exception as exc:
            emit("approvals.sweep_failed", logging.ERROR, error=f"{type(exc).__name__}: {exc}")
            return 0
        if done:
            emit("approvals.expired", approvals=[a.id for a in done], principals=[a.principal for a in done])
        return len(done)

    def _alerter_client(self) -> Any:
        slack = self.settings.slack
        if slack is not None and self._slack_client is None:
            from .sinks.slack import make_client

            self._slack_client = make_client(slack.bot_token, base_url=slack.api_base_url)
        return self._slack_client

    def _deliver(self, store: Store, result: ScanResult, run: str) -> None:
        """Queue the scan's findings for the configured sinks and flush the outbox. A failing sink is logged and
        retried on a later run (the outbox keeps it); it never fails the scan or blocks the other sinks."""
        if not self.settings.sinks:
            return
        from .delivery import deliver

        try:
            delivered = deliver(result.findings, result.report, {"sinks": self.settings.sinks}, store,
                                datetime.now(UTC), snapshot_findings=store.findings)
        except Exception as exc:
            emit("deliver.failed", logging.WARNING, run=run, error=f"{type(exc).__name__}: {exc}")
            return
        emit("deliver.done", logging.INFO if delivered.ok else logging.WARNING, run=run,
             sinks=delivered.to_dict())

    def _alerter(self, store: Store) -> SlackAlerter | None:
        slack = self.settings.slack
        if slack is None:
            return None
        from .sinks.slack import SlackAlerter, make_client

        if self._slack_client is None:
            self._slack_client = make_client(slack.bot_token, base_url=slack.api_base_url)
        return SlackAlerter(self._slack_client, channel=slack.channel, store=store)

    def _alert(self, store: Store, result: ScanResult, run: str) -> int:
        """Post what is due; stop early (the next start finishes) when shutting down. Returns alerts posted."""
        alerter = self._alerter(store)
        due = to_alert(result.findings, store, self.settings.alert_min_severity)
        if alerter is None:
            if due:
                emit("alert.skipped", run=run, due=len(due), reason="no [slack] table")
            return 0
        from .store import AlertLedger

        ledger, posted = AlertLedger(store), 0
        for f, digest in due:
            if self._stop.is_set():
                emit("alert.deferred", run=run, left=len(due) - posted, reason="shutting down")
                break
            try:
                done = alerter.notify(f, report=result.report, chart_png=self._chart(f, result))
            except Exception as exc:  # Slack down or refusing: the ledger is untouched, the next run retries
                emit("alert.failed", logging.WARNING, run=run, finding=f.id, error=f"{type(exc).__name__}: {exc}")
                continue
            ledger.record(f.id, digest, now=datetime.now(UTC))
            posted += 1
            emit("alert.posted", run=run, finding=f.id, kind=done.kind, severity=f.severity.label,
                 resource=f.resource, channel=done.channel, ts=done.ts)
        return posted

    def _chart(self, f: Finding, result: ScanResult) -> bytes | None:
        tables = result.tables
        if not self.settings.charts or tables is None:
            return None
        try:
            from .chart import chart_for_finding

            return chart_for_finding(f, utilization=tables.utilization, spend=tables.spend)
        except Exception as exc:  # a chart is a nicety: never lose the alert for it
            emit("chart.failed", logging.WARNING, finding=f.id, error=f"{type(exc).__name__}: {exc}")
            return None

    # -- health ----------------------------------------------------------------------------------------

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) for /healthz: 503 when the last run failed or a run is overdue."""
        if not self._scheduled:
            return self._endpoint_health()
        now = time.time()
        with self._lock:
            last = self._last
        since = last.finished_at.timestamp() if last else self._started
        overdue = self._idle.is_set() and now - since > self.settings.overdue_after_s
        if last is None:
            status = "overdue" if overdue else "starting"
        elif last.status != "ok":
            status = "failed"
        else:
            status = "overdue" if overdue else "ok"
        body: dict[str, Any] = {
            "status": status, "running": not self._idle.is_set(), "target": self.settings.target,
            "interval_s": self.settings.interval_s, "overdue_after_s": self.settings.overdue_after_s,
            "last_run": last.to_json() if last else None,
            "next_run_at": self._next_run_time(),
        }
        return (503 if status in ("failed", "overdue") else 200), body

    def _endpoint_health(self) -> tuple[int, dict[str, Any]]:
        """/healthz under --no-schedule: no runs here to report (the job's are in the state), so the check is
        that the shared state can be opened; the endpoint is of no use without it."""
        from .store import Store

        body: dict[str, Any] = {"status": "ok", "scheduled": False, "slack": self._interaction is not None}
        try:
            with Store(self.state) as store:
                last = store.runs(1)
        except Exception as exc:
            body.update(status="failed", error=f"state unreachable: {type(exc).__name__}: {exc}")
            return 503, body
        body["last_stored_run"] = vars(last[0]) if last else None  # the separate job's latest run, for context
        return 200, body

    def _next_run_time(self) -> str | None:
        sched = self._scheduler
        if sched is None:
            return None
        job = sched.get_job("scan")
        return job.next_run_time.isoformat() if job is not None and job.next_run_time else None

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        """/healthz and /slack/events; 404 elsewhere."""
        path = environ.get("PATH_INFO", "")
        if path == HEALTH_PATH:
            if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
                start_response("405 Method Not Allowed", [("content-type", "text/plain")])
                return [b"method not allowed"]
            code, body = self.health()
            raw = json.dumps(body).encode()
            start_response(f"{code} {'OK' if code == 200 else 'Service Unavailable'}",
                           [("content-type", "application/json"), ("cache-control", "no-store"),
                            ("content-length", str(len(raw)))])
            return [raw]
        if path == SLACK_PATH and self._interaction is not None:
            return self._interaction.wsgi(environ, start_response)
        start_response("404 Not Found", [("content-type", "text/plain")])
        return [b"not found"]

    # -- lifecycle -------------------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, _frame: Any = None) -> None:
        if not self._stop.is_set():
            emit("shutdown.requested", signal=signal.Signals(signum).name if signum else None)
        self._stop.set()

    def _install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)

    def once(self) -> int:
        """One scan with its alerts, then one approval sweep, then exit: 0 when the scan succeeded, 1 when it
        failed. The sweep runs whatever the scan's outcome (revoking expired access must not wait for a healthy
        scan); it never raises, and a failed sweep is logged and retried by the next run."""
        self._install_signals()
        emit("serve.once", target=self.settings.target, state=_shown(self.state))
        worker = threading.Thread(target=self.run_scan, name="spendwatch-scan", daemon=True)
        worker.start()
        while worker.is_alive() and not self._stop.is_set():
            worker.join(0.2)
        if worker.is_alive():
            return self._abandon_or_wait()
        if not self._stop.is_set():
            self.sweep_approvals()
        last = self._last
        return 0 if last is not None and last.status == "ok" else 1

    def serve(self, *, schedule: bool = True) -> int:
        """Schedule scans and serve HTTP until SIGTERM/SIGINT; exit 0. `schedule=False`: serve HTTP only."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        self._install_signals()
        s = self.settings
        self._scheduled = schedule  # before the HTTP server starts: /healthz answers by the mode from the start
        if s.slack is not None:
            from .slack_app import make_app

            self._interaction = make_app(s.slack, self.state)
        self._http = self._start_http()
        # One worker: together with max_instances=1 a second run can never start beside the first.
        # The approval sweep has its own worker: a long scan must not hold back revoking an expired exception.
        scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(1),
                                                   "approvals": ThreadPoolExecutor(1)}, timezone=UTC)
        self._scheduler = scheduler
        # --no-schedule keeps the sweep (module doc: it is not a scan, and it is what revokes access on time).
        scheduler.add_job(self.sweep_approvals, IntervalTrigger(seconds=s.approval_sweep_s), id="approvals",
                          name="approvals", executor="approvals", max_instances=1, coalesce=True,
                          next_run_time=datetime.now(UTC) + timedelta(seconds=0.1))
        if not schedule:
            scheduler.start()
            return self._serve_only()
        first = datetime.now(UTC) + (timedelta(seconds=0.1) if s.run_on_start else timedelta(seconds=s.interval_s))
        scheduler.add_job(self.run_scan, IntervalTrigger(seconds=s.interval_s, jitter=s.jitter_s or None),
                          id="scan", name="scan", max_instances=1, coalesce=True,
                          misfire_grace_time=int(max(1, s.misfire_grace_s)), next_run_time=first)
        if s.clouds:  # a data directory's scans retrain the model themselves (models/model_store.py)
            scheduler.add_job(self.retrain_model, IntervalTrigger(hours=24), id="model", name="model",
                              max_instances=1, coalesce=True, next_run_time=first + timedelta(seconds=1))
        self._watch_scheduler(scheduler)
        scheduler.start()
        host, port = self._http.server_address[:2]
        emit("serve.started", target=s.target, state=_shown(self.state), host=str(host), port=port,
             interval_s=s.interval_s, jitter_s=s.jitter_s, misfire_grace_s=s.misfire_grace_s,
             slack=s.slack is not None, pid=os.getpid())
        while not self._stop.wait(0.5):
            pass
        return self._shutdown()

    def _serve_only(self) -> int:
        """--no-schedule: the Slack endpoint, /healthz and the approval sweep until SIGTERM/SIGINT; no scans."""
        assert self._http is not None
        host, port = self._http.server_address[:2]
        emit("serve.started", target=self.settings.target, state=_shown(self.state), host=str(host),
             port=port, scheduled=False, approval_sweep_s=self.settings.approval_sweep_s,
             slack=self.settings.slack is not None, pid=os.getpid())
        while not self._stop.wait(0.5):
            pass
        return self._shutdown()

    def _watch_scheduler(self, scheduler: Any) -> None:
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED

        def listener(event: Any) -> None:
            reason = "previous run still going" if event.code == EVENT_JOB_MAX_INSTANCES else "missed (misfire)"
            emit("scan.skipped", logging.WARNING, reason=reason,
                 scheduled_for=[str(t) for t in getattr(event, "scheduled_run_times", None) or []])

        scheduler.add_listener(listener, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)

    def _start_http(self) -> WSGIServer:
        from socketserver import ThreadingMixIn
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True  # a slow client must not hold the shutdown

        class Handler(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s %s", self.address_string(), format % args)

        server = make_server(self.settings.host, self.settings.port, self.wsgi, server_class=Server,
                             handler_class=Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="spendwatch-http",
                         daemon=True).start()
        return server

    def _shutdown(self) -> int:
        t0 = time.perf_counter()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)  # no new runs; the running one goes on in its thread
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._interaction is not None:
            # Clicks already acknowledged to Slack finish (a quarantine half-applied is worse than a late exit).
            self._interaction.wait_idle(self.settings.shutdown_grace_s)
            self._interaction.close()
        code = self._abandon_or_wait()
        emit("shutdown.done", duration_s=round(time.perf_counter() - t0, 3))
        return code

    def _abandon_or_wait(self) -> int:
        """Give the running scan its grace; past it, leave at once: every store write is one transaction."""
        if self._idle.wait(self.settings.shutdown_grace_s):
            return 0
        emit("scan.abandoned", logging.WARNING, grace_s=self.settings.shutdown_grace_s,
             reason="still running at shutdown; the next start reads the same data again")
        logging.shutdown()  # flush the log lines before leaving without the interpreter's clean-up
        os._exit(0)  # the scan thread cannot be interrupted; its open transaction rolls back


# -- command line -----------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    setup_logging()
    try:
        settings = ServeSettings.load(args.config)
    except (ConfigError, ValueError) as exc:
        emit("serve.config_error", logging.ERROR, error=str(exc))
        print(f"spendwatch: error: {exc}", file=sys.stderr)
        return 1
    if args.once and args.no_schedule:
        print("spendwatch: error: --once and --no-schedule exclude each other", file=sys.stderr)
        return 2
    from .store import StoreError, resolve_state

    try:
        service = Service(settings, state=resolve_state(args.state, configured=settings.state))
        return service.once() if args.once else service.serve(schedule=not args.no_schedule)
    except (OSError, StoreError) as exc:  # the port is taken, the state cannot be opened, ...
        emit("serve.error", logging.ERROR, error=str(exc))
        print(f"spendwatch: error: {exc}", file=sys.stderr)
        return 1


def add_commands(sub: Any) -> None:
    p = sub.add_parser("serve", help="run scans on a schedule, alert Slack, serve the Slack endpoint and /healthz")
    p.add_argument("--config", metavar="FILE", required=True,
                   help="TOML file with [serve] (and [slack], [aws], [gcp], [azure])")
    p.add_argument("--once", action="store_true",
                   help="run one scan with its alerts, then one approval sweep, and exit (for the cloud's own "
                        "scheduler); exit 1 if the scan failed")
    p.add_argument("--no-schedule", action="store_true",
                   help="serve the Slack endpoint and /healthz, and sweep expired approvals; no scans (they run "
                        "elsewhere, as a scheduled job)")
    p.add_argument("--state", metavar="PATH|URL",
                   help="state: a file or a postgresql:// URL (default: $SPENDWATCH_STATE, $SPENDWATCH_DATABASE_URL, "
                        "[serve] state, then $SPENDWATCH_HOME/state.db)")
    p.set_defaults(func=cmd_serve)
