"""Launches the guardrail denied, seen in CloudTrail, turned into approval requests (issue 11, item 3).

An agent that runs into the guardrail (`spendwatch.guardrails`) gets `Client.UnauthorizedOperation` back and
may never run `spendwatch request`; its attempt is in CloudTrail all the same. After a scan, every denied
accelerated launch by an agent becomes the request `spendwatch request` would have made
(`approvals.new_request` + `approvals.post_request`: stored, audited, posted to Slack with Approve and Deny):

- who: the principal as the CloudTrail reader names it (the role ARN of an assumed-role session, or the user
  ARN), its kind in `requested_by` (`cloudtrail:agent`) and the session name in the reason;
- what: the instance type and the count the call asked for (the reader's `requested_count`: RunInstances
  maxCount, RequestSpotInstances instanceCount, CreateFleet and RequestSpotFleet target capacity);
- where: the account the call was made in and its region;
- projected cost: catalogue list price x count x `hours` (`DEFAULT_HOURS`, configurable), as for any request;
- the reason opens with "Seen in CloudTrail: denied by the guardrail" and names the attempts' event times and
  ids, so the approver (and the audit line, which carries the reason) can find them in CloudTrail.

What counts as a denied launch: a RunInstances, CreateFleet, RequestSpotInstances or RequestSpotFleet event
that failed with an authorisation error (`DENIED_CODES`), by a principal the reader typed `agent`, for an
accelerated instance type (`catalog.is_accelerated`). Other denied launches are counted by reason, not requested.

One request per key (the principal's IAM identity, instance type, region), however many attempts or scans see
it. The store's approval rows are the memory, no new table: each row answers the attempts of its key up to a
time (`answered_until`): a pending request all of them; an approval those until its expiry; a denial those
until `decided_at + hours` (the window the request asked for: an agent retrying after a "no" is not asked about
again within it); a failed approval those until its decision. Only attempts after that time make a new
request. Attempt times come from CloudTrail and never change, so a second scan of the same files, or of files
that arrive late, adds nothing. A request whose Slack post failed stays pending without a message; the next
run posts it again rather than making another.

Where it runs: `spendwatch serve` after each scan's alerts, when `[slack]` is configured (`[serve]
denied_launch_hours`, default 4), and `spendwatch approvals from-activity --data DIR|--config FILE [--post]`
(a dry run without --post). A serve run whose call here failed is logged (`approvals.from_activity_failed`);
a data directory is read whole by every scan, so the next one catches up, but a live scan reads only what is
new, so run `approvals from-activity --config` (it reads the trail whole) to catch up there.

What this does not do: it cannot tell the guardrail's Deny from any other (CloudTrail's error names no
policy), so an agent refused by a missing Allow is asked about too, which is what an approver wants to see. A
role tagged `spendwatch:agent=true` whose names carry no agent marker is typed `role` by the reader and is not
requested: CloudTrail carries no tags, and reading every principal's tags would need IAM access the scans do
not have. Two processes planning the same key at the same moment can both request it (the check and the insert
are not one transaction); serve runs one scan at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .approvals import MAX_COUNT, MAX_HOURS, RequestError, audit, message, new_request, post_request, principal_target
from .catalog import is_accelerated
from .store import Approvals, Store, StoredApproval

if TYPE_CHECKING:
    import pandas as pd

    from .report import RunReport

# EC2 answers an unauthorised launch with Client.UnauthorizedOperation in CloudTrail (UnauthorizedOperation
# to the caller); other services and some SDK paths record AccessDenied.
DENIED_CODES = frozenset({"Client.UnauthorizedOperation", "UnauthorizedOperation", "AccessDenied",
                          "Client.AccessDenied", "AccessDeniedException"})
LAUNCH_EVENTS = frozenset({"RunInstances", "CreateFleet", "RequestSpotInstances", "RequestSpotFleet"})
DEFAULT_HOURS = 4.0
MARK = "Seen in CloudTrail: denied by the guardrail"
REQUESTER = "cloudtrail:"  # requested_by of the requests made here: "cloudtrail:<principal kind>"

Key = tuple[str, str, str, str, str]  # account, "user"|"role", name, instance type, region


def request_key(principal: str, instance_type: str, region: str) -> Key:
    """The identity a request is about: an assumed-role session and its role are one key (the approval is
    applied to the role), and so are two sessions of it. Raises RequestError for a non-IAM principal."""
    account, kind, name = principal_target(principal)
    return account, kind, name, instance_type.lower(), region


@dataclass(frozen=True)
class DeniedLaunch:
    """One denied launch attempt, as CloudTrail recorded it."""

    time: datetime
    event_id: str | None
    event_name: str
    error: str
    principal: str
    principal_type: str
    session: str | None
    account: str
    region: str
    instance_type: str
    count: int | None  # None: the event does not say

    @property
    def key(self) -> Key:
        return request_key(self.principal, self.instance_type, self.region)


@dataclass
class Plan:
    """What one run would do: requests to make, requests to post again, and what it left alone and why."""

    new: list[StoredApproval] = field(default_factory=list)
    attempts: dict[str, list[DeniedLaunch]] = field(default_factory=dict)  # new request id -> its attempts
    unposted: list[StoredApproval] = field(default_factory=list)  # ours, pending, never shown in Slack
    answered: int = 0  # attempts an existing request or decision already answers
    skipped: Counter[str] = field(default_factory=Counter)  # denied launch events not requested, by reason


@dataclass
class Outcome:
    """What a run did (or, in a dry run, would do)."""

    plan: Plan
    posted: list[StoredApproval] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (approval id, error): posted again next run
    dry_run: bool = True

    def to_json(self) -> dict[str, Any]:
        p = self.plan
        return {
            "dry_run": self.dry_run,
            "requests": [{**a.to_json(), "event_ids": [d.event_id for d in p.attempts.get(a.id, [])]}
                         for a in p.new],
            "reposted": [a.id for a in p.unposted], "posted": [a.id for a in self.posted],
            "failed": [{"approval": i, "error": e} for i, e in self.failed],
            "already_answered": p.answered, "skipped": dict(sorted(p.skipped.items())),
        }


# -- reading the activity table ---------------------------------------------------------------------------

def _text(value: Any) -> str | None:
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return str(value).strip() or None


def find_denied(activity: pd.DataFrame) -> tuple[list[DeniedLaunch], Counter[str]]:
    """The denied accelerated launches by agents in `activity`, and the other denied launches counted by why
    they are not requested."""
    skipped: Counter[str] = Counter()
    if activity.empty or "event_name" not in activity or "error" not in activity:
        return [], skipped
    rows = activity[activity["event_name"].isin(LAUNCH_EVENTS) & activity["error"].isin(DENIED_CODES)
                    & (activity["cloud"] == "aws")]
    found: dict[tuple[str | None, str], DeniedLaunch] = {}
    for row in rows.to_dict("records"):
        reason, launch = _denied(row)
        if launch is None:
            skipped[reason] += 1
            continue
        # A trail read twice (account and organisation trails) gives the event twice: one attempt.
        ident = (launch.event_id, launch.instance_type) if launch.event_id else (None, f"row {len(found)}")
        found.setdefault(ident, launch)
    return sorted(found.values(), key=lambda d: d.time), skipped


def _denied(row: dict[Any, Any]) -> tuple[str, DeniedLaunch | None]:
    """(why not, None) or ("", the attempt) for one denied launch row."""
    instance_type, region = _text(row.get("instance_type")), _text(row.get("region"))
    if _text(row.get("principal_type")) != "agent":
        return f"not an agent ({_text(row.get('principal_type')) or 'unknown'})", None
    if instance_type is None:
        return "instance type not in the event (a launch template's)", None
    if not is_accelerated(instance_type):
        return "not an accelerated instance type", None
    if region is None:
        return "no region in the event", None
    principal = _text(row.get("principal")) or ""
    try:
        principal_target(principal)
    except RequestError:
        return "principal is not an IAM user or role", None
    count = _text(row.get("requested_count"))
    return "", DeniedLaunch(
        time=row["time"].to_pydatetime() if hasattr(row["time"], "to_pydatetime") else row["time"],
        event_id=_text(row.get("event_id")), event_name=str(row["event_name"]), error=str(row["error"]),
        principal=principal, principal_type="agent", session=_text(row.get("session_name")),
        account=_text(row.get("account")) or principal_target(principal)[0], region=region,
        instance_type=instance_type, count=None if count is None else int(float(count)),
    )


# -- planning against what the store already holds --------------------------------------------------------

def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def answered_until(a: StoredApproval) -> datetime:
    """Until when request `a` answers the denied attempts of its key (see the module doc)."""
    requested = _when(a.requested_at) or datetime.min.replace(tzinfo=UTC)
    if a.status == "pending":
        return datetime.max.replace(tzinfo=UTC)
    decided = _when(a.decided_at) or requested
    if a.status == "denied":
        until = decided + timedelta(hours=a.hours)
    elif a.status in ("approved", "expired", "revoked"):
        until = _when(a.expires_at) or decided
    else:  # failed: nothing was granted, the next attempt asks again
        until = decided
    return max(until, requested)


def plan(store: Store, attempts: Iterable[DeniedLaunch], *, hours: float = DEFAULT_HOURS,
         now: datetime) -> Plan:
    """The requests to make for `attempts`, given the approval rows already in `store`. Stores nothing."""
    out = Plan()
    existing: dict[Key, list[StoredApproval]] = defaultdict(list)
    for a in Approvals(store).all():
        if a.status == "pending" and a.ts is None and a.requested_by.startswith(REQUESTER):
            out.unposted.append(a)  # whatever this run saw: a live scan may never see its attempts again
        try:
            existing[request_key(a.principal, a.instance_type, a.region)].append(a)
        except RequestError:
            continue  # not an IAM principal: cannot be one of ours
    groups: dict[Key, list[DeniedLaunch]] = defaultdict(list)
    for d in attempts:
        groups[d.key].append(d)
    for key, group in groups.items():
        rows = existing.get(key, [])
        until = max((answered_until(a) for a in rows), default=None)
        fresh = sorted((d for d in group if until is None or d.time > until), key=lambda d: d.time)
        out.answered += len(group) - len(fresh)
        if fresh:
            a = _request(fresh, hours=hours, now=now)
            out.new.append(a)
            out.attempts[a.id] = fresh
    return out


def _request(attempts: list[DeniedLaunch], *, hours: float, now: datetime) -> StoredApproval:
    """The request for one key's fresh attempts: the latest attempt's principal, the largest count asked."""
    latest = attempts[-1]
    known = [d.count for d in attempts if d.count is not None]
    asked = max(known, default=1)
    return new_request(principal=latest.principal, instance_type=latest.instance_type,
                       count=min(asked, MAX_COUNT), region=latest.region, hours=hours,
                       reason=_reason(attempts, asked=asked, count_known=bool(known)),
                       requested_by=f"{REQUESTER}{latest.principal_type}", now=now)


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reason(attempts: list[DeniedLaunch], *, asked: int, count_known: bool) -> str:
    latest, first = attempts[-1], attempts[0]
    n = len(attempts)
    who = f" (session `{latest.session}`)" if latest.session else ""
    parts = [f"{MARK}. {n} attempt{'s' if n > 1 else ''} in account {latest.account}{who}; latest "
             f"{latest.event_name} at {_stamp(latest.time)} ({latest.error}), event {latest.event_id or '?'}"]
    if n > 1:
        parts.append(f"first at {_stamp(first.time)}, event {first.event_id or '?'}")
    if not count_known:
        parts.append("the event names no count: 1 assumed")
    elif asked > MAX_COUNT:
        parts.append(f"asked for {asked}, more than one approval grants ({MAX_COUNT})")
    return "; ".join(parts) + "."


# -- acting -----------------------------------------------------------------------------------------------

def request_denied(store: Store, activity: pd.DataFrame, *, client: Any = None, channel: str | None = None,
                   hours: float = DEFAULT_HOURS, now: datetime | None = None, post: bool = True) -> Outcome:
    """Find the denied launches in `activity`, plan against the store, and (with `post`) store and post the
    requests to `channel`. A post that fails is reported in `failed`, stays pending in the store and is posted
    again by the next run; the others go on."""
    if not 0 < hours <= MAX_HOURS:
        raise RequestError(f"hours must be in (0, {MAX_HOURS:g}]")
    now = now or datetime.now(UTC)
    attempts, skipped = find_denied(activity)
    p = plan(store, attempts, hours=hours, now=now)
    p.skipped.update(skipped)
    done = Outcome(p, dry_run=not post)
    if not post:
        return done
    if client is None or not channel:
        raise RequestError("posting needs a Slack client and channel")
    for a in p.new:
        try:
            done.posted.append(post_request(store, client, channel, a, now=now))
        except Exception as exc:  # stored and audited before the post: the next run posts it again
            done.failed.append((a.id, f"{type(exc).__name__}: {exc}"))
    for a in p.unposted:
        try:
            done.posted.append(_post_again(store, client, channel, a, now=now))
        except Exception as exc:
            done.failed.append((a.id, f"{type(exc).__name__}: {exc}"))
    return done


def _post_again(store: Store, client: Any, channel: str, a: StoredApproval, *, now: datetime) -> StoredApproval:
    body = message(a)
    resp = client.chat_postMessage(channel=channel, text=body["text"], blocks=body["blocks"])
    records = Approvals(store)
    records.set_message(a.id, channel=str(resp["channel"]), ts=str(resp["ts"]))
    audit(store, a, at=now, actor=a.requested_by, action="approval.request", outcome="reposted",
          description="posted to Slack again: the first post failed")
    return records.get(a.id) or a


# -- command line: `spendwatch approvals from-activity` -------------------------------------------------------

class CommandError(Exception):
    """Ends the command with exit code 1 and a one-line message."""


def _read_directory(data: Path, report: RunReport) -> pd.DataFrame:
    from .connectors.files import read_directory
    from .connectors.files.detect import (
        AZ_FLOWS,
        AZ_METRICS,
        FLOW_PARQUET,
        FLOW_TEXT,
        GCP_FLOWS,
        GCP_MONITORING,
        METRIC_CSV,
        METRIC_STREAM,
    )

    if not data.is_dir():
        raise CommandError(f"{data}: no such directory")
    # Only the activity logs are wanted: the bulky sources with none (flows, metrics) are left unread.
    skip = (FLOW_TEXT, FLOW_PARQUET, GCP_FLOWS, AZ_FLOWS, GCP_MONITORING, AZ_METRICS, METRIC_STREAM, METRIC_CSV)
    return read_directory(data, report, skip=skip).activity


def _read_trail(aws: dict[str, Any], report: RunReport) -> pd.DataFrame:
    """The [aws] table's organisation trail, read whole (no watermarks: those belong to the scans), with the
    other S3 sources and API fallbacks switched off; the connector still lists the instances of each region.
    The gaps of the sources switched off here are not this command's: only the trail's and the scope's stay."""
    from .connectors.aws import AwsConfig, scan
    from .report import RunReport

    config = AwsConfig.from_dict(aws)
    if config.trail is None:
        raise CommandError("[aws] names no trail: denied launches are read from the organisation trail")
    config = replace(config, flow_logs=None, dns_logs=None, dns_log_groups=(), cur=None, metrics=None,
                     metrics_api=False, cost_explorer_max_requests=0)
    inner = RunReport(strict=report.strict)
    try:
        got = scan(config, inner)
    except Exception as exc:  # the connector lets a failed bucket listing through: the trail is a gap here
        from .connectors.aws.clients import describe_error
        from .records import empty

        report.gap("aws/*/*/cloudtrail", f"the trail {config.trail} could not be read: {describe_error(exc)}")
        return empty("activity")
    for g in inner.gaps:
        if g.source.rsplit("/", 1)[-1].lower().startswith(("cloudtrail", "scope")):
            report.gap(g.source, g.reason)
    for p in inner.problems:
        report.problem(p.source, p.reason, p.line, p.records)
    for r in inner.sources:
        report.read(r.path, r.kind, r.records, r.skipped)
    return got.tables.activity


@dataclass
class _Config:
    """What `--config` gives the command: serve's [slack] table, its state and denied_launch_hours."""

    slack: dict[str, Any] = field(default_factory=dict)
    state: str | None = None
    hours: float | None = None


def _from_config(path: str, report: RunReport) -> tuple[pd.DataFrame, _Config]:
    """(activity, settings) of a serve configuration file."""
    from .config import ConfigError, load

    try:
        doc = load(path)
    except ConfigError as exc:
        raise CommandError(str(exc)) from exc
    serve, slack, aws = doc.get("serve") or {}, doc.get("slack") or {}, doc.get("aws")
    if not isinstance(serve, dict) or not isinstance(slack, dict) or (aws is not None and not isinstance(aws, dict)):
        raise CommandError(f"{path}: [serve], [slack] and [aws] must be tables")
    hours = serve.get("denied_launch_hours")
    conf = _Config(slack, serve.get("state") if isinstance(serve.get("state"), str) else None,
                   float(hours) if isinstance(hours, int | float) and not isinstance(hours, bool) else None)
    if isinstance(serve.get("data"), str):
        return _read_directory(Path(serve["data"]).expanduser(), report), conf
    if aws is not None:
        try:
            return _read_trail(aws, report), conf
        except ConfigError as exc:
            raise CommandError(f"{path}: {exc}") from exc
    raise CommandError(f"{path}: neither [serve] data nor an [aws] table: nothing to read")


def _slack(slack: dict[str, Any]) -> tuple[Any, str]:
    """The Slack client and channel: the config's [slack] (token from $SLACK_BOT_TOKEN), else the environment
    `spendwatch request` reads."""
    import os

    from .approvals import _slack_client

    if slack.get("channel"):
        from .sinks.slack import make_client

        token = os.environ.get("SLACK_BOT_TOKEN", "")
        if not token:
            raise RequestError("set SLACK_BOT_TOKEN to post approval requests (secrets never go in the file)")
        return make_client(token, base_url=slack.get("api_url") or None), str(slack["channel"])
    return _slack_client()


def _open(location: Path | str) -> Store:
    import sqlite3

    from .store import StoreError, describe

    try:
        return Store(location)
    except (sqlite3.Error, OSError, RuntimeError, StoreError) as exc:
        raise CommandError(f"state {describe(location)}: {exc}") from exc


def cmd_from_activity(args: argparse.Namespace) -> int:
    """`spendwatch approvals from-activity --data DIR|--config FILE [--post]`."""
    from .report import RunReport
    from .sinks.console import render_report
    from .store import StoreError, resolve_state

    if bool(args.data) == bool(args.config):
        print("spendwatch: error: from-activity needs one of --data DIR or --config FILE", file=sys.stderr)
        return 2
    report = RunReport()
    conf = _Config()
    try:
        if args.data:
            activity = _read_directory(Path(args.data).expanduser(), report)
        else:
            activity, conf = _from_config(args.config, report)
        client, channel = _slack(conf.slack) if args.post else (None, None)
        hours = args.hours if args.hours is not None else conf.hours or DEFAULT_HOURS
        with _open(resolve_state(args.state, configured=conf.state)) as store:
            done = request_denied(store, activity, client=client, channel=channel, hours=hours, post=args.post)
    except (CommandError, RequestError, StoreError) as exc:
        print(f"spendwatch: error: {exc}", file=sys.stderr)
        return 1
    report.tables = {"activity": len(activity)}
    if args.json:
        print(json.dumps({**done.to_json(), "report": report.to_dict()}, indent=2, default=str))
    else:
        _render(done, sys.stdout)
        render_report(report, sys.stdout)
    for approval_id, error in done.failed:
        print(f"spendwatch: error: posting {approval_id} to Slack: {error} (kept; the next run posts it)",
              file=sys.stderr)
    return 1 if done.failed else 0


def _render(done: Outcome, out: Any) -> None:
    p = done.plan
    verb = "would request" if done.dry_run else "requested"
    for a in p.new:
        out.write(f"{verb} {a.id}: {message(a)['text']}\n  who: {a.principal} ({a.requested_by})\n"
                  f"  {a.reason}\n")
    for a in p.unposted:
        out.write(f"{'would post' if done.dry_run else 'posted'} {a.id} again (its first post failed)\n")
    out.write(f"{len(p.new)} request(s) {'to post' if done.dry_run else 'posted'}; {p.answered} denied "
              "attempt(s) already answered by a request or decision\n")
    for reason, n in sorted(p.skipped.items()):
        out.write(f"  not requested: {n} x {reason}\n")
    if done.dry_run and (p.new or p.unposted):
        out.write("dry run: nothing stored or posted; add --post\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `approvals from-activity` (added to the `approvals` command)."""
    parser.add_argument("--data", metavar="DIR", help="from-activity: exports on disk (CloudTrail files)")
    parser.add_argument("--config", metavar="FILE",
                        help="from-activity: serve's TOML ([serve] data, or [aws] trail read whole; [slack])")
    parser.add_argument("--post", action="store_true",
                        help="from-activity: store and post the requests (default: print what would be posted)")
    parser.add_argument("--hours", type=float,
                        help="from-activity: hours each request asks for (default: [serve] denied_launch_hours, "
                             f"else {DEFAULT_HOURS:g})")
