"""Static evaluation of AWS IAM policy documents: which statements let a principal make one call.

This is an approximation of the IAM evaluation logic, written to answer "who could launch GPU instances,
raise quotas, mint long-lived keys or subscribe in the Marketplace", not a replacement for IAM:

- Statements: Allow/Deny, Action/NotAction (IAM wildcards `*` and `?`, case-insensitive), Resource/NotResource
  (`*` or a pattern covering every resource of the call is "full"; anything narrower is "scoped", reported).
- Conditions are evaluated for the keys whose value is known statically: `ec2:InstanceType` and
  `sagemaker:InstanceTypes` (the evaluator tries each instance type; absent from calls that do not carry
  them), `aws:PrincipalTag/<key>` (the principal's own tags) and `aws:CurrentTime` (the evaluation time).
  Operators: String(Not)Equals(IgnoreCase), String(Not)Like, Null, Date*, Bool, each with `...IfExists` and
  the `ForAnyValue:`/`ForAllValues:` set prefixes (one probed value: both prefixes mean the same). Any other key
  (aws:SourceIp, aws:RequestedRegion, aws:MultiFactorAuthPresent, ...) or operator makes the statement
  *conditional*, and the keys are reported: static evaluation stops there.
- Policy sets: identity policies (users' and their groups', roles'), an optional permission boundary and the
  SCPs of every level of the organisation above the account. A definite Deny anywhere wins; otherwise the call
  is allowed when the identity policies allow it and the boundary (if any) and every SCP level allow it too.
- Not modelled: resource-based policies, session policies, role chaining, VPC endpoint policies, RCPs, and
  what a principal could do by first changing IAM (privilege escalation). These can only widen or narrow the
  answer for a principal that is already reported; they are named as limits in the README.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Decision = Literal["allowed", "conditional", "denied"]

# Keys this module can evaluate; aws:PrincipalTag/* is matched by prefix. The instance-type keys are known for
# every call: present (the probed type) in the calls that carry them (`Request.type_key`), absent in the others.
TYPE_KEYS = ("ec2:instancetype", "sagemaker:instancetypes")
KNOWN_KEYS = (*TYPE_KEYS, "aws:currenttime")
_TAG_PREFIX = "aws:principaltag/"


def iam_match(pattern: str, value: str) -> bool:
    """IAM wildcard match (`*`, `?`), case-insensitive, as IAM matches actions and StringLike values."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL) is not None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


@dataclass(frozen=True)
class Request:
    """One API call to judge: the IAM action, the resource ARN it needs, and the statically known context."""

    action: str
    resource: str = "*"
    instance_type: str | None = None
    principal_tags: Mapping[str, str] = field(default_factory=dict)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    type_key: str = "ec2:instancetype"  # the key that carries `instance_type` in this call's context

    def value(self, key: str) -> tuple[bool, str | None]:
        """(known, value) of a condition key; value None when known to be absent from the request context."""
        low = key.lower()
        if low in TYPE_KEYS:
            return True, self.instance_type if low == self.type_key.lower() else None
        if low == "aws:currenttime":
            return True, self.now.isoformat().replace("+00:00", "Z")
        if low.startswith(_TAG_PREFIX):
            wanted = low[len(_TAG_PREFIX):]
            for k, v in self.principal_tags.items():
                if k.lower() == wanted:  # tag keys are case-insensitive in condition keys
                    return True, v
            return True, None
        return False, None


@dataclass(frozen=True)
class StatementRef:
    """Where a statement lives: "<kind> <policy name>" and its Sid or position."""

    source: str  # identity / boundary / scp
    policy: str
    sid: str
    effect: str
    scoped: bool = False  # Resource narrower than every resource of the call
    unknown_keys: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.policy}#{self.sid}"
        if self.source != "identity":
            text = f"{self.source}:{text}"
        if self.scoped:
            text += " (resource-scoped)"
        if self.unknown_keys:
            text += f" (conditional: {', '.join(self.unknown_keys)})"
        return text


@dataclass(frozen=True)
class Policy:
    """One policy document with the name it is reported under."""

    name: str
    document: Mapping[str, Any]

    def statements(self) -> list[tuple[str, Mapping[str, Any]]]:
        out = []
        for i, st in enumerate(_as_list(self.document.get("Statement"))):
            if isinstance(st, Mapping):
                out.append((str(st.get("Sid") or f"[{i}]"), st))
        return out


_DATE_OPS = {"DateEquals": "==", "DateNotEquals": "!=", "DateLessThan": "<", "DateLessThanEquals": "<=",
             "DateGreaterThan": ">", "DateGreaterThanEquals": ">="}
_NEGATED = {"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "DateNotEquals"}


def _parse_time(text: str) -> datetime | None:
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    except ValueError:
        return None


def _one(op: str, actual: str, expected: str) -> bool | None:
    """One value against one expected value; None for an operator we do not evaluate."""
    if op in ("StringEquals", "StringNotEquals"):
        return actual == expected
    if op in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        return actual.lower() == expected.lower()
    if op in ("StringLike", "StringNotLike"):
        return iam_match(expected, actual)  # StringLike is case-sensitive in IAM; instance types are lower case
    if op == "Bool":
        return actual.lower() == expected.lower()
    if op in _DATE_OPS:
        a, e = _parse_time(actual), _parse_time(expected)
        if a is None or e is None:
            return None
        return {"==": a == e, "!=": a == e, "<": a < e, "<=": a <= e, ">": a > e, ">=": a >= e}[_DATE_OPS[op]]
    return None


def condition_holds(operator: str, key: str, expected: Any, req: Request) -> bool | None:
    """Whether one condition (operator, key, values) holds for `req`; None when it cannot be told statically."""
    known, actual = req.value(key)
    if not known:
        return None
    op = operator
    prefix = ""
    if ":" in op:
        prefix, op = op.split(":", 1)
    if_exists = op.endswith("IfExists")
    if if_exists:
        op = op[: -len("IfExists")]
    values = [str(v) for v in _as_list(expected)]
    if op == "Null":
        want_absent = any(v.lower() == "true" for v in values)
        return (actual is None) == want_absent
    if actual is None:
        if prefix == "ForAllValues" or if_exists:
            return True
        return op in _NEGATED  # a negated operator on an absent key holds; a positive one does not
    results = [_one(op, actual, v) for v in values]
    if any(r is None for r in results):
        return None
    hit = any(results)
    return not hit if op in _NEGATED else hit


def statement_applies(st: Mapping[str, Any], req: Request) -> tuple[bool, bool, tuple[str, ...]]:
    """(applies, scoped, unknown condition keys) of one statement for `req`.

    applies False: the statement certainly does not cover the call. With unknown keys it may or may not.
    """
    if "NotAction" in st:
        if any(iam_match(a, req.action) for a in _as_list(st["NotAction"])):
            return False, False, ()
    elif not any(iam_match(a, req.action) for a in _as_list(st.get("Action"))):
        return False, False, ()
    scoped = False
    if "NotResource" in st:
        if any(iam_match(r, req.resource) for r in _as_list(st["NotResource"])):
            return False, False, ()
        scoped = True  # excludes some resources of the call: it may still need them
    else:
        resources = _as_list(st.get("Resource", "*"))
        if not any(r == "*" or iam_match(r, req.resource) for r in resources):
            if not any(":" in r for r in resources):
                return False, False, ()
            scoped = True  # some resources only: the call may still be allowed on them
    unknown: list[str] = []
    for operator, block in (st.get("Condition") or {}).items():
        if not isinstance(block, Mapping):
            continue
        for key, expected in block.items():
            holds = condition_holds(str(operator), str(key), expected, req)
            if holds is False:
                return False, False, ()
            if holds is None:
                unknown.append(str(key))
    return True, scoped, tuple(sorted(set(unknown)))


@dataclass(frozen=True)
class Verdict:
    """What the policy sets say about one call, and through which statements."""

    decision: Decision
    allowed_by: tuple[StatementRef, ...] = ()
    denied_by: tuple[StatementRef, ...] = ()
    missing: tuple[str, ...] = ()  # sets that do not allow it: "boundary", "scp level 2", ...

    @property
    def unknown_keys(self) -> tuple[str, ...]:
        keys = {k for ref in (*self.allowed_by, *self.denied_by) for k in ref.unknown_keys}
        return tuple(sorted(keys))


def _scan(source: str, policies: Iterable[Policy], req: Request) -> tuple[list[StatementRef], list[StatementRef]]:
    allows: list[StatementRef] = []
    denies: list[StatementRef] = []
    for pol in policies:
        for sid, st in pol.statements():
            applies, scoped, unknown = statement_applies(st, req)
            if not applies:
                continue
            effect = str(st.get("Effect", "")).capitalize()
            ref = StatementRef(source, pol.name, sid, effect, scoped, unknown)
            (allows if effect == "Allow" else denies if effect == "Deny" else []).append(ref)
    return allows, denies


def _certain(refs: Sequence[StatementRef]) -> bool:
    return any(not r.unknown_keys and not r.scoped for r in refs)


def evaluate(req: Request, identity: Sequence[Policy], boundary: Policy | None = None,
             scp_levels: Sequence[Sequence[Policy]] | None = None) -> Verdict:
    """Judge one call. `scp_levels`: the SCPs attached at each level above the account (root, OUs, account);
    None when SCPs are not read (then they are not part of the answer, and the caller says so)."""
    sets: list[tuple[str, list[Policy]]] = [("identity", list(identity))]
    if boundary is not None:
        sets.append(("boundary", [boundary]))
    for i, level in enumerate(scp_levels or ()):
        sets.append((f"scp level {i}" if len(scp_levels or ()) > 1 else "scp", list(level)))
    all_denies: list[StatementRef] = []
    per_set_allows: list[tuple[str, list[StatementRef]]] = []
    for name, policies in sets:
        allows, denies = _scan("identity" if name == "identity" else name.split(" ")[0], policies, req)
        all_denies += denies
        per_set_allows.append((name, allows))
    if _certain(all_denies):
        return Verdict("denied", denied_by=tuple(r for r in all_denies if not r.unknown_keys and not r.scoped))
    missing = tuple(name for name, allows in per_set_allows if not allows)
    identity_allows = per_set_allows[0][1]
    if missing:
        return Verdict("denied", allowed_by=tuple(identity_allows), missing=missing)
    certain = all(_certain(allows) for _, allows in per_set_allows) and not all_denies
    # Report the identity statements that grant it (the actionable ones), certain ones first.
    ranked = sorted(identity_allows, key=lambda r: (bool(r.unknown_keys) or r.scoped, str(r)))
    others = [r for _, allows in per_set_allows[1:] for r in allows if r.unknown_keys or r.scoped]
    return Verdict("allowed" if certain else "conditional", allowed_by=tuple(ranked + others),
                   denied_by=tuple(all_denies))
