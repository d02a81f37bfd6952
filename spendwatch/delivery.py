"""Routing findings to sinks, and delivering them reliably through the store's outbox (issue 10).

Configuration, one TOML table per sink (the table name is the sink's name; it keys the outbox, so renaming a
sink re-sends its findings)::

    [sinks.pager]
    type = "webhook"                 # webhook, securityhub, scc, sentinel, ocsf, html_report
    url = "https://events.example.com/spendwatch"
    secret_env = "SPENDWATCH_WEBHOOK_SECRET"
    rate_limit = 10                  # at most 10 deliveries a minute (0 or absent: no limit)
    [sinks.pager.route]
    min_severity = "critical"        # a critical incident pages ...
    clouds = ["aws"]                 # empty or absent: any
    accounts = ["012345678901"]
    rules = ["pool-domain", "gpu-saturation"]   # any of them fired

    [sinks.report]
    type = "html_report"             # ... a low one only lands in the report
    path = "/var/lib/spendwatch/report.html"
    [sinks.report.route]
    min_severity = "info"

`deliver(findings, report, config, store, now)` routes each finding to the sinks whose route matches, queues
one outbox row per (sink, finding, version) (idempotent: the same version is never queued twice), then
flushes every sink's due rows. Guarantees:

- nothing is lost: a row stays in the store until its sink accepted it; a failure keeps it with
  `next_attempt_at` pushed out (exponential backoff, `backoff_s` doubling up to `max_backoff_s`, forever);
- a failing sink never blocks the others: each sink is flushed on its own, every exception is caught, and a
  sink that fails (down, 5xx, refused) is not tried again in the same flush;
- never the same update twice: a delivered row is never sent again, a claimed row is leased so two senders
  do not take it, and an older version still queued is superseded by a newer one. The one window left is a
  crash after the receiver accepted and before the store recorded it; then the row is sent again with the
  same `delivery_id` (the webhook's `X-Spendwatch-Delivery`, Security Hub's `Id`, SCC's finding name and the
  Sentinel row's `DeliveryId`), so receivers that dedupe on it see it once.

`html_report` is a snapshot, not an update stream: it is rewritten from the routed findings on every call and
does not go through the outbox. The router never changes a finding's severity: sinks render, they never judge.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from .config import ConfigError
from .findings import Finding, Severity
from .report import RunReport
from .store import Outbox, OutboxItem, Store

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0
DEFAULT_BACKOFF_S = 30.0
DEFAULT_MAX_BACKOFF_S = 3600.0
DEFAULT_BATCH = 100
SNAPSHOT_TYPES = frozenset({"html_report"})
OUTBOX_TYPES = frozenset({"webhook", "securityhub", "scc", "sentinel", "ocsf"})


class DeliveryError(Exception):
    """A sink could not deliver one item. `permanent` (e.g. HTTP 400): the receiver rejected this item, other
    items may still go through; otherwise the sink is treated as down for the rest of the flush."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Sink(Protocol):
    """Renders one outbox item (a finding at one version, with its activity) and sends it; raises on failure."""

    def send(self, item: OutboxItem) -> None: ...


@dataclass(frozen=True)
class Route:
    """Which findings a sink receives. Empty lists match anything; `rules` matches when any listed rule fired."""

    min_severity: Severity = Severity.INFO
    clouds: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()

    def matches(self, f: Finding) -> bool:
        return (f.severity >= self.min_severity
                and (not self.clouds or f.cloud in self.clouds)
                and (not self.accounts or f.account in self.accounts)
                and (not self.rules or bool(self.rules.intersection(f.rules))))


@dataclass(frozen=True)
class SinkConfig:
    name: str
    type: str
    settings: dict[str, Any]
    route: Route = Route()
    rate_limit: int = 0  # deliveries per minute; 0: unlimited
    backoff_s: float = DEFAULT_BACKOFF_S
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S
    batch: int = DEFAULT_BATCH


def _strings(name: str, key: str, value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise ConfigError(f"[sinks.{name}.route] {key} must be a list of strings")
    return frozenset(str(v) for v in value)


def parse_sinks(config: Mapping[str, Any]) -> list[SinkConfig]:
    """The `[sinks.*]` tables of a loaded configuration, validated. Raises ConfigError naming the key."""
    tables = config.get("sinks") or {}
    if not isinstance(tables, dict):
        raise ConfigError("[sinks] must be a table of tables")
    out = []
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[sinks.{name}] must be a table")
        kind = table.get("type")
        if kind not in OUTBOX_TYPES | SNAPSHOT_TYPES:
            raise ConfigError(f"[sinks.{name}] type {kind!r}: expected one of "
                              f"{', '.join(sorted(OUTBOX_TYPES | SNAPSHOT_TYPES))}")
        route_t = table.get("route") or {}
        if not isinstance(route_t, dict):
            raise ConfigError(f"[sinks.{name}.route] must be a table")
        unknown = set(route_t) - {"min_severity", "clouds", "accounts", "rules"}
        if unknown:
            raise ConfigError(f"[sinks.{name}.route] unknown keys: {', '.join(sorted(unknown))}")
        try:
            min_sev = Severity.parse(route_t.get("min_severity", "info"))
        except ValueError as exc:
            raise ConfigError(f"[sinks.{name}.route] min_severity: {exc}") from None
        route = Route(min_sev, _strings(name, "clouds", route_t.get("clouds")),
                      _strings(name, "accounts", route_t.get("accounts")),
                      _strings(name, "rules", route_t.get("rules")))
        numbers: dict[str, float] = {}
        for key, default in (("rate_limit", 0), ("backoff_s", DEFAULT_BACKOFF_S),
                             ("max_backoff_s", DEFAULT_MAX_BACKOFF_S), ("batch", DEFAULT_BATCH)):
            value = table.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"[sinks.{name}] {key} must be a number >= 0")
            numbers[key] = value
        settings = {k: v for k, v in table.items()
                    if k not in {"type", "route", "rate_limit", "backoff_s", "max_backoff_s", "batch"}}
        out.append(SinkConfig(name, kind, settings, route, int(numbers["rate_limit"]), float(numbers["backoff_s"]),
                              float(numbers["max_backoff_s"]), max(int(numbers["batch"]), 1)))
    return out


def secret(settings: Mapping[str, Any], key: str, *, sink: str) -> str:
    """`<key>_env` names an environment variable holding the secret (preferred); `<key>` holds it inline."""
    env = settings.get(f"{key}_env")
    if env:
        value = os.environ.get(str(env))
        if not value:
            raise ConfigError(f"[sinks.{sink}] {key}_env: environment variable {env} is not set")
        return value
    value = settings.get(key)
    if not value:
        raise ConfigError(f"[sinks.{sink}] needs {key}_env (or {key})")
    return str(value)


def build_sink(cfg: SinkConfig) -> Sink:
    """The sink object for an outbox-type sink. Each sink module imports its SDK only here, on first use."""
    if cfg.type == "webhook":
        from .sinks.webhook import WebhookSink
        return WebhookSink.from_settings(cfg.name, cfg.settings)
    if cfg.type == "securityhub":
        from .sinks.securityhub import SecurityHubSink
        return SecurityHubSink.from_settings(cfg.name, cfg.settings)
    if cfg.type == "scc":
        from .sinks.scc import SccSink
        return SccSink.from_settings(cfg.name, cfg.settings)
    if cfg.type == "sentinel":
        from .sinks.sentinel import SentinelSink
        return SentinelSink.from_settings(cfg.name, cfg.settings)
    if cfg.type == "ocsf":
        from .sinks.ocsf import OcsfFileSink
        return OcsfFileSink.from_settings(cfg.name, cfg.settings)
    raise ConfigError(f"[sinks.{cfg.name}] type {cfg.type!r} has no outbox sink")


def version_of(f: Finding) -> str:
    """The finding's version: a digest of everything it says. Any change (severity, evidence, last_seen,
    status) is a new version, hence one new update per sink."""
    return hashlib.sha256(f.dumps().encode()).hexdigest()[:16]


@dataclass
class SinkResult:
    delivered: int = 0
    failed: int = 0
    deferred: int = 0  # due but held back by the rate limit or because the sink failed in this flush
    queued: int = 0  # newly enqueued in this call
    errors: list[str] = field(default_factory=list)
    written: str | None = None  # snapshot sinks: the file written

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DeliveryResult:
    sinks: dict[str, SinkResult] = field(default_factory=dict)

    def sink(self, name: str) -> SinkResult:
        return self.sinks.setdefault(name, SinkResult())

    @property
    def ok(self) -> bool:
        return not any(r.errors for r in self.sinks.values())

    def to_dict(self) -> dict[str, Any]:
        return {name: r.to_dict() for name, r in self.sinks.items()}


def enqueue(findings: Iterable[Finding], cfgs: Sequence[SinkConfig], store: Store, now: datetime,
            result: DeliveryResult | None = None) -> DeliveryResult:
    """Queue each finding for every outbox sink whose route matches (idempotent per sink, finding, version)."""
    result = result or DeliveryResult()
    outbox = Outbox(store)
    ts = now.timestamp()
    for f in findings:
        version = version_of(f)
        for cfg in cfgs:
            if cfg.type in OUTBOX_TYPES and cfg.route.matches(f) and outbox.enqueue(cfg.name, f, version=version,
                                                                                    now=ts):
                result.sink(cfg.name).queued += 1
    return result


def _due(outbox: Outbox, sink: str, ts: float) -> int:
    return sum(1 for i in outbox.items(sink, state="pending") if i.next_attempt_at <= ts)


def flush(store: Store, cfgs: Sequence[SinkConfig], now: datetime, *,
          sinks: Mapping[str, Sink] | None = None, result: DeliveryResult | None = None) -> DeliveryResult:
    """Deliver every outbox sink's due items, worst first, within its rate limit.

    `sinks` overrides `build_sink` by name (tests, or a caller holding clients). A sink that cannot be built
    (a missing secret) keeps its items queued and reports the error; the others go on.
    """
    result = result or DeliveryResult()
    outbox = Outbox(store)
    ts = now.timestamp()
    for cfg in cfgs:
        if cfg.type not in OUTBOX_TYPES:
            continue
        res = result.sink(cfg.name)
        try:
            sink = (sinks or {}).get(cfg.name) or build_sink(cfg)
        except Exception as exc:  # a broken sink must not stop the others; its rows wait in the outbox
            res.errors.append(f"cannot set up sink: {exc}")
            res.deferred += _due(outbox, cfg.name, ts)
            continue
        allowance = cfg.batch
        if cfg.rate_limit:
            allowance = min(allowance, cfg.rate_limit - len(outbox.delivered_since(cfg.name, ts - RATE_WINDOW_S)))
        items = outbox.claim(cfg.name, now=ts, limit=allowance)
        for n, item in enumerate(items):
            try:
                sink.send(item)
            except Exception as exc:  # every failure is kept in the outbox with its reason, never raised past here
                delay = min(cfg.backoff_s * 2 ** item.attempts, cfg.max_backoff_s)
                outbox.failed(item.id, error=f"{type(exc).__name__}: {exc}", next_attempt_at=ts + delay)
                res.failed += 1
                res.errors.append(f"{item.finding_id}: {exc}")
                if not (isinstance(exc, DeliveryError) and exc.permanent):
                    for rest in items[n + 1:]:  # the sink is down: do not hammer it, try again next flush
                        outbox.release(rest.id)
                    break
            else:
                outbox.delivered(item.id, now=ts)
                res.delivered += 1
        res.deferred += _due(outbox, cfg.name, ts)
    return result


def write_snapshots(findings: Sequence[Finding], report: RunReport | Mapping[str, Any] | None,
                    cfgs: Sequence[SinkConfig], now: datetime, *, charts: Mapping[str, bytes] | None = None,
                    result: DeliveryResult | None = None) -> DeliveryResult:
    """Rewrite each snapshot sink (the HTML report) from the findings its route matches."""
    from .sinks.html_report import write_report

    result = result or DeliveryResult()
    for cfg in cfgs:
        if cfg.type not in SNAPSHOT_TYPES:
            continue
        res = result.sink(cfg.name)
        path = cfg.settings.get("path")
        if not path:
            res.errors.append(f"[sinks.{cfg.name}] needs path")
            continue
        try:
            write_report(Path(str(path)).expanduser(), [f for f in findings if cfg.route.matches(f)], report,
                         generated_at=now, charts=charts, title=str(cfg.settings.get("title", "spendwatch report")))
        except OSError as exc:
            res.errors.append(f"{path}: {exc}")
            continue
        res.written = str(path)
        res.delivered += 1
    return result


def deliver(findings: Sequence[Finding], report: RunReport | Mapping[str, Any] | None, config: Mapping[str, Any],
            store: Store, now: datetime, *, sinks: Mapping[str, Sink] | None = None,
            charts: Mapping[str, bytes] | None = None,
            snapshot_findings: Callable[[], Sequence[Finding]] | None = None) -> DeliveryResult:
    """Route, queue and deliver `findings` to the sinks of `config` (the loaded TOML), then write snapshots.

    `snapshot_findings` supplies what the HTML report shows when it should differ from `findings` (the CLI
    passes every stored finding).
    """
    cfgs = parse_sinks(config)
    result = enqueue(findings, cfgs, store, now)
    flush(store, cfgs, now, sinks=sinks, result=result)
    write_snapshots(snapshot_findings() if snapshot_findings else findings, report, cfgs, now, charts=charts,
                    result=result)
    for name, res in result.sinks.items():
        for err in res.errors:
            log.warning("sink %s: %s", name, err)
    return result


# -- command line: `spendwatch report` and `spendwatch deliver` ---------------------------------------------


def cmd_report(args: Any) -> int:
    """Write the HTML report of the stored findings and the last run."""
    import sys
    from datetime import UTC

    from .cli import EXIT_FATAL, EXIT_OK, _open_store
    from .sinks.html_report import write_report

    store = _open_store(args.state)
    try:
        findings = store.findings(min_severity=Severity.parse(args.min_severity))
        last = Outbox(store).last_run_report()
    finally:
        store.close()
    label = None
    report = None
    if last is not None:
        run, report = last
        label = f"last run #{run.id} ({run.source}) finished {run.finished_at}"
    try:
        path = write_report(Path(args.output).expanduser(), findings, report, generated_at=datetime.now(UTC),
                            run_label=label, title=args.title)
    except OSError as exc:
        print(f"spendwatch: error: {args.output}: {exc}", file=sys.stderr)
        return EXIT_FATAL
    print(f"wrote {path} ({len(findings)} findings)")
    return EXIT_OK


def cmd_deliver(args: Any) -> int:
    """Queue the stored findings for the configured sinks (idempotent) and flush the outbox."""
    import json
    import sys
    from datetime import UTC

    from . import config as config_mod
    from .cli import EXIT_FATAL, EXIT_OK, _open_store

    try:
        config = config_mod.load(args.config)
        parse_sinks(config)
    except ConfigError as exc:
        print(f"spendwatch: error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    store = _open_store(args.state)
    try:
        findings = store.findings()
        last = Outbox(store).last_run_report()
        result = deliver(findings, last[1] if last else None, config, store, datetime.now(UTC))
        counts = Outbox(store).counts()
    finally:
        store.close()
    if args.json:
        print(json.dumps({"sinks": result.to_dict(), "outbox": counts}, indent=2))
    else:
        for name, res in result.sinks.items():
            state = counts.get(name, {})
            print(f"{name}: queued {res.queued}, delivered {res.delivered}, failed {res.failed}, "
                  f"waiting {state.get('pending', 0)}" + (f", wrote {res.written}" if res.written else ""))
            for err in res.errors[:5]:
                print(f"  error: {err}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FATAL


def add_commands(sub: Any) -> None:
    """Add `report` and `deliver` to the spendwatch parser (heavy imports wait until a command runs)."""
    from .cli import STATE_HELP
    rep = sub.add_parser("report", help="write an HTML report of the stored findings and the last run")
    rep.add_argument("--state", metavar="PATH|URL", help=STATE_HELP)
    rep.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write the HTML file")
    rep.add_argument("--min-severity", choices=("info", "low", "medium", "high", "critical"), default="info")
    rep.add_argument("--title", default="spendwatch report")
    rep.set_defaults(func=cmd_report)
    dlv = sub.add_parser("deliver", help="queue stored findings for the configured sinks and flush the outbox"
                         " (exit 1 when a sink failed; its updates stay queued)")
    dlv.add_argument("--config", required=True, metavar="FILE", help="TOML file with [sinks.<name>] tables")
    dlv.add_argument("--state", metavar="PATH|URL", help=STATE_HELP)
    dlv.add_argument("--json", action="store_true", help="print what was delivered as JSON")
    dlv.set_defaults(func=cmd_deliver)
