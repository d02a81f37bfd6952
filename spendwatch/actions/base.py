"""What every action shares: targets, steps, the dry run, safety checks and the audit trail.

An action is the only code that changes a cloud. It is built with its clients (passed in, never built at
import), inspects the target in `plan` and returns the concrete `Step`s it would take; the plan *is* the dry
run. `apply` runs exactly those steps, writes every one to the audit log and persists what it changed after
each step, so a quarantine cut short by an error can still be released. `execute` ties the two together for
the CLI and (later) the Slack button, so both take one code path.

Nothing here imports a cloud SDK.
"""

from __future__ import annotations

import copy
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from ..store import Store

DEFAULT_MAX_PER_HOUR = 5
PROTECTED_TAG = "spendwatch:protected"

Kind = Literal["quarantine", "release"]
Status = Literal["planned", "applied", "partial", "refused"]


class Refused(Exception):
    """The action will not run on this target (protected, not ours to release, over the limit, ...).

    Nothing was changed when this is raised. The message says why and what to do instead.
    """


@dataclass(frozen=True)
class Target:
    """What to act on: one resource (or principal ARN) in one cloud account and region.

    `account` None means "whatever account the credentials belong to"; when given, the action refuses to
    run with credentials for another account. `finding_id` links the action to a stored finding (None for
    a manual quarantine).
    """

    cloud: str
    resource: str
    account: str | None = None
    region: str | None = None
    finding_id: str | None = None


@dataclass
class Step:
    """One change an action will make, in words a person can check before saying --apply.

    `run` performs it and returns facts worth auditing (ids created, ...); a step with no `run` is a note
    (e.g. "snapshots are kept") that appears in the plan and the audit log but changes nothing.
    """

    name: str
    description: str
    permissions: tuple[str, ...] = ()
    run: Callable[[], dict[str, Any] | None] | None = field(default=None, repr=False, compare=False)


@dataclass
class StepResult:
    name: str
    description: str
    permissions: tuple[str, ...]
    outcome: Literal["planned", "ok", "failed", "skipped", "note"]
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "permissions": list(self.permissions),
            "outcome": self.outcome, "detail": self.detail,
        }


@dataclass
class Outcome:
    """What one action did (or would do). `status`: planned (dry run), applied, partial (a step failed;
    what ran is recorded and can be released), refused (nothing changed)."""

    action: str
    target: Target
    dry_run: bool
    status: Status
    message: str
    steps: list[StepResult] = field(default_factory=list)
    quarantine_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("planned", "applied")

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action, "cloud": self.target.cloud, "account": self.target.account,
            "region": self.target.region, "resource": self.target.resource, "finding": self.target.finding_id,
            "dry_run": self.dry_run, "status": self.status, "message": self.message,
            "quarantine_id": self.quarantine_id, "steps": [s.to_json() for s in self.steps],
        }


@dataclass(frozen=True)
class ActionSettings:
    """Safety settings shared by every action.

    `protected_ids`: resource ids, ASG names, principal ARNs or names that are never touched, on top of the
    `spendwatch:protected=true` tag. `max_per_hour`: the blast-radius limit, quarantines (instances and
    principals) applied per rolling hour across every process sharing the state database.

    From the environment (until the config file carries them)::

        SPENDWATCH_PROTECTED_IDS="i-0abc123 arn:aws:iam::123456789012:role/break-glass"
        SPENDWATCH_MAX_QUARANTINES_PER_HOUR=5
    """

    protected_ids: frozenset[str] = frozenset()
    max_per_hour: int = DEFAULT_MAX_PER_HOUR

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ActionSettings:
        env = os.environ if environ is None else environ
        ids = frozenset(env.get("SPENDWATCH_PROTECTED_IDS", "").replace(",", " ").split())
        raw = env.get("SPENDWATCH_MAX_QUARANTINES_PER_HOUR", "").strip()
        try:
            limit = int(raw) if raw else DEFAULT_MAX_PER_HOUR
        except ValueError:
            raise ValueError(f"SPENDWATCH_MAX_QUARANTINES_PER_HOUR={raw!r} is not a whole number") from None
        if limit < 0:
            raise ValueError("SPENDWATCH_MAX_QUARANTINES_PER_HOUR must be 0 or more")
        return cls(protected_ids=ids, max_per_hour=limit)


def now_utc() -> datetime:
    return datetime.now(UTC)


class Action(ABC):
    """Base of every quarantine and release action.

    Subclasses set `name`, `cloud`, `kind` and `permissions` (every IAM action / GCP permission / Azure
    operation their steps may call; a test checks each registered action declares them and that the calls
    made against moto stay within them), and implement `plan`. Quarantine actions reserve a blast-radius
    slot in the store before the first change; release actions mark the stored quarantine released after
    the last one.

    Example (what `spendwatch quarantine i-0abc --apply` does)::

        action = AwsQuarantine(clients=AwsClients.build(region="us-east-1"), store=store, actor="cli:alice")
        outcome = execute(action, Target("aws", "i-0abc"), apply=True)
    """

    name: ClassVar[str]
    cloud: ClassVar[str]
    kind: ClassVar[Kind]
    permissions: ClassVar[tuple[str, ...]]
    # Whether applying it sets the linked finding's status (quarantined / open again). Principal containment
    # leaves it alone: the finding is about the resource, which may still be running free (or still be held).
    sets_finding_status: ClassVar[bool] = True

    def __init__(self, *, store: Store, actor: str, settings: ActionSettings | None = None,
                 now: Callable[[], datetime] = now_utc) -> None:
        self.store = store
        self.actor = actor
        self.settings = settings or ActionSettings()
        self.now = now
        # What this action has changed so far; persisted after every step so release can undo a partial run.
        self.record: dict[str, Any] = {}
        self.quarantine_id: int | None = None
        self.resolved: Target | None = None  # the target with account/region filled in by plan()

    @abstractmethod
    def plan(self, target: Target) -> list[Step]:
        """Inspect the target and return the steps `apply` would take. Changes nothing. Raises `Refused`."""

    # Hooks around apply; quarantine and release actions override them.
    def begin(self, target: Target) -> None:  # noqa: B027 (an optional hook, not an abstract method)
        """Called after a successful plan, before the first change (reserve a slot, load the record)."""

    def checkpoint(self, state: str) -> None:
        """Persist `self.record` (after every step)."""
        if self.quarantine_id is not None:
            self.store.update_quarantine(self.quarantine_id, record=self.record, state=state)

    def finish(self, target: Target, *, complete: bool) -> None:  # noqa: B027 (an optional hook)
        """Called after the last step (or the failed one)."""

    def apply(self, target: Target, steps: list[Step]) -> Outcome:
        """Run the planned steps in order, auditing each; stop at the first failure."""
        self.begin(target)
        results: list[StepResult] = []
        for step in steps:
            if step.run is None:
                results.append(StepResult(step.name, step.description, step.permissions, "note"))
                self._audit(target, step.name, step.description, "note", dry_run=False)
                continue
            try:
                detail = step.run() or {}
            except Exception as exc:
                detail = {"error": f"{type(exc).__name__}: {exc}"}
                results.append(StepResult(step.name, step.description, step.permissions, "failed", detail))
                results.extend(StepResult(s.name, s.description, s.permissions, "skipped") for s in
                               steps[len(results):])
                self._audit(target, step.name, step.description, "failed", dry_run=False, detail=detail)
                self.checkpoint("partial")
                self.finish(target, complete=False)
                message = (f"{self.name} of {target.resource} stopped at step {step.name!r}: {detail['error']}. "
                           "What ran is recorded")
                if self.kind == "quarantine":
                    message += f"; undo it with: spendwatch release {target.resource} --apply"
                self._audit(target, "", message, "partial", dry_run=False)
                return Outcome(self.name, target, False, "partial", message, results, self.quarantine_id)
            results.append(StepResult(step.name, step.description, step.permissions, "ok", detail))
            self._audit(target, step.name, step.description, "ok", dry_run=False, detail=detail)
            self.checkpoint("applying" if self.kind == "quarantine" else "releasing")
        self.finish(target, complete=True)
        message = f"{self.name} of {target.resource}: {len(results)} step(s) applied"
        self._audit(target, "", message, "applied", dry_run=False)
        return Outcome(self.name, target, False, "applied", message, results, self.quarantine_id)

    def _audit(self, target: Target, step: str, description: str, outcome: str, *, dry_run: bool,
               detail: dict[str, Any] | None = None) -> None:
        t = self.resolved or target
        self.store.write_audit(
            at=self.now(), actor=self.actor, action=self.name, cloud=t.cloud, account=t.account, region=t.region,
            resource=t.resource, finding_id=t.finding_id, step=step, description=description, outcome=outcome,
            dry_run=dry_run, detail=json.dumps(detail or {}, default=str, sort_keys=True),
        )


class QuarantineAction(Action):
    """An action that contains something: counts against the blast-radius limit and leaves a stored record."""

    kind: ClassVar[Kind] = "quarantine"

    def subject(self, target: Target) -> Target:
        return self.resolved or target

    def begin(self, target: Target) -> None:
        from ..store import QuarantineRefused

        t = self.subject(target)
        try:
            self.quarantine_id = self.store.reserve_quarantine(
                cloud=t.cloud, account=t.account or "", region=t.region, resource=t.resource,
                finding_id=t.finding_id, actor=self.actor, action=self.name, now=self.now(),
                limit=self.settings.max_per_hour, record=self.record,
            )
        except QuarantineRefused as exc:
            raise Refused(str(exc)) from exc

    def finish(self, target: Target, *, complete: bool) -> None:
        if self.quarantine_id is not None:
            self.store.update_quarantine(self.quarantine_id, record=self.record,
                                         state="active" if complete else "partial")
        t = self.subject(target)
        if t.finding_id and self.sets_finding_status:
            self.store.set_finding_status(t.finding_id, "quarantined", now=self.now())


class ReleaseAction(Action):
    """An action that undoes a stored quarantine, step by step, from what the quarantine recorded."""

    kind: ClassVar[Kind] = "release"

    def load(self, target: Target, *, account: str) -> dict[str, Any]:
        """The stored record of the active quarantine of `target`; refuses when spendwatch did not quarantine it."""
        stored = self.store.active_quarantine(cloud=target.cloud, account=account, resource=target.resource)
        if stored is None:
            raise Refused(
                f"spendwatch has no active quarantine of {target.resource} in {target.cloud} account {account} "
                f"(state {self.store.where}); release only undoes what spendwatch quarantined"
            )
        self.quarantine_id = stored.id
        self.record = dict(stored.record)
        # Keep what the quarantine did for the history: release steps drop what they undo from the record.
        self.record.setdefault("original", copy.deepcopy(stored.record))
        return self.record

    def checkpoint(self, state: str) -> None:
        # Persist what is left to undo (the quarantine's state unchanged), so a release cut short resumes.
        if self.quarantine_id is not None:
            stored = self.store.quarantine(self.quarantine_id)
            self.store.update_quarantine(self.quarantine_id, record=self.record,
                                         state=stored.state if stored else "active")

    def finish(self, target: Target, *, complete: bool) -> None:
        if self.quarantine_id is None:
            return
        if complete:
            self.store.mark_released(self.quarantine_id, now=self.now(), actor=self.actor)
            stored = self.store.quarantine(self.quarantine_id)
            if stored is not None and stored.finding_id and self.sets_finding_status:
                self.store.set_finding_status(stored.finding_id, "open", now=self.now())


def execute(action: Action, target: Target, *, apply: bool) -> Outcome:
    """Plan `action` on `target`; a dry run returns the plan, otherwise apply it. Every outcome is audited."""
    try:
        steps = action.plan(target)
    except Refused as exc:
        action._audit(target, "", str(exc), "refused", dry_run=not apply)
        return Outcome(action.name, action.resolved or target, not apply, "refused", str(exc))
    except Exception as exc:
        action._audit(target, "", f"planning failed: {type(exc).__name__}: {exc}", "error", dry_run=not apply)
        raise
    resolved = action.resolved or target
    if not apply:
        results = []
        for step in steps:
            planned: Literal["planned", "note"] = "planned" if step.run is not None else "note"
            results.append(StepResult(step.name, step.description, step.permissions, planned))
            action._audit(resolved, step.name, step.description, planned, dry_run=True)
        message = f"dry run: {len(steps)} step(s) planned for {resolved.resource}; nothing changed (add --apply)"
        if action.kind == "quarantine":
            used = action.store.quarantines_since(action.now(), window_s=3600)
            if used >= action.settings.max_per_hour:
                message += (f"; note: {used} quarantine(s) in the last hour already reach the limit of "
                            f"{action.settings.max_per_hour}, so --apply would be refused now")
        action._audit(resolved, "", message, "planned", dry_run=True)
        return Outcome(action.name, resolved, True, "planned", message, results)
    try:
        return action.apply(resolved, steps)
    except Refused as exc:
        action._audit(resolved, "", str(exc), "refused", dry_run=False)
        return Outcome(action.name, resolved, False, "refused", str(exc))
