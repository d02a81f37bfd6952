"""Races between real processes, each with its own connection to one state (as the scheduled job, several Slack
handler instances and the CLI would be). `race` starts the processes (spawned, so nothing is inherited from
the test process), lines them up on a barrier once their store is open, and returns what each returned.

The task functions live here, in an importable module, because a spawned process imports its target by name.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from spendwatch.findings import Finding, Severity, finding_id
from spendwatch.store import Approvals, Outbox, QuarantineRefused, SlackRecords, Store, Watermark, Watermarks

T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
ACCOUNT = "012345678901"
BARRIER_TIMEOUT_S = 60


def race(location: Path | str, task: Callable[..., Any], n: int, *args: Any, migrated: bool = True) -> list[Any]:
    """Run `task(store, index, *args)` in `n` processes at once; their results in index order. A worker's
    exception fails the race with the worker's traceback. `migrated`: open the state here first, so the race
    is about `task` alone (False: the racers also race to create the schema)."""
    return race_each(location, task, [args] * n, migrated=migrated)


def race_each(location: Path | str, task: Callable[..., Any], each: list[tuple[Any, ...]], *,
              migrated: bool = True) -> list[Any]:
    """`race`, process `i` running `task(store, i, *each[i])`."""
    if migrated:
        Store(location).close()
    n = len(each)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n, timeout=BARRIER_TIMEOUT_S)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(location), task, i, barrier, results, args), daemon=True)
             for i, args in enumerate(each)]
    for p in procs:
        p.start()
    got: dict[int, Any] = {}
    try:
        for _ in range(n):
            index, ok, value = results.get(timeout=BARRIER_TIMEOUT_S * 2)
            if not ok:
                raise AssertionError(f"racer {index} failed:\n{value}")
            got[index] = value
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    return [got[i] for i in range(n)]


def _worker(location: str, task: Callable[..., Any], index: int, barrier: Any, results: Any,
            args: tuple[Any, ...]) -> None:
    try:
        with Store(location) as store:  # opened (and migrated) before the start line
            barrier.wait()
            results.put((index, True, task(store, index, *args)))
    except BaseException:
        barrier.abort()  # the others stop waiting for a racer that will never arrive
        results.put((index, False, traceback.format_exc()))


def finding(resource: str = "i-race", *, last_seen: datetime = T0, summary: str = "miner") -> Finding:
    return Finding(
        id=finding_id("aws", ACCOUNT, resource), cloud="aws", account=ACCOUNT, region="us-east-1",
        resource=resource, principal="arn:aws:iam::012345678901:role/agent", severity=Severity.HIGH, score=0.9,
        rules=["pool-domain"], evidence=["pool domain"], first_seen=last_seen - timedelta(hours=1),
        last_seen=last_seen, detected_at=last_seen, hourly_cost_usd=5.0, summary=summary)


# -- tasks: each runs in its own process with its own Store --------------------------------------------------


def open_only(store: Store, index: int) -> str:
    return store.dialect


def see_request(store: Store, index: int, digest: str) -> bool:
    """A Slack retry or a second handler instance receiving the same signed request."""
    return SlackRecords(store).first_sighting(digest, now=T0.timestamp(), expires_at=T0.timestamp() + 300)


def click_quarantine(store: Store, index: int, resource: str, limit: int) -> int | str:
    """A Quarantine click: the reservation that stands between a click and the cloud API calls."""
    try:
        return store.reserve_quarantine(cloud="aws", account=ACCOUNT, region="us-east-1", resource=resource,
                                        finding_id=None, actor=f"slack:U{index}", action="aws.quarantine",
                                        now=T0 + timedelta(seconds=index), limit=limit, record={"by": index})
    except QuarantineRefused as exc:
        return f"refused: {exc}"


def drain_outbox(store: Store, index: int, sink: str) -> list[int]:
    """A sender: claim a few due items at a time, deliver them, until none are left."""
    ob = Outbox(store)
    mine: list[int] = []
    while True:
        items = ob.claim(sink, now=T0.timestamp(), limit=3, lease_s=600)
        if not items:
            return mine
        for item in items:
            ob.delivered(item.id, now=T0.timestamp())
            mine.append(item.id)


def decide(store: Store, index: int, approval_id: str) -> bool:
    """Approve and Deny clicked at once by different people."""
    to = "approved" if index % 2 == 0 else "denied"
    return Approvals(store).transition(approval_id, from_status="pending", to_status=to, by=f"U{index}",
                                       now=T0, expires_at=T0 + timedelta(hours=1) if to == "approved" else None)


def upsert_same(store: Store, index: int) -> None:
    """Several runs storing the same incident, each having seen it until a different hour."""
    store.upsert([finding(last_seen=T0 + timedelta(hours=index))], now=T0 + timedelta(hours=index))


MARKS = 40
ROUNDS = 25


def scan_rounds(store: Store, index: int) -> int:
    """Run `index` 0 is a scanning job: per round, store the findings, then move every watermark (as the
    pipeline does). The other runs read at the same time, watermarks first, then the findings."""
    if index == 0:
        for r in range(1, ROUNDS + 1):
            store.upsert([finding(summary=f"round {r:03d}", last_seen=T0 + timedelta(minutes=r))],
                         now=T0 + timedelta(minutes=r))
            Watermarks(store).save([Watermark("aws", ACCOUNT, "us-east-1", "flows", f"s{m:02d}", f"round {r:03d}")
                                    for m in range(MARKS)], now=T0)
        return ROUNDS
    reads = 0
    give_up = time.monotonic() + 120  # only so a broken writer cannot hang the test; not a timing check
    while time.monotonic() < give_up:
        marks = Watermarks(store).load("aws")
        stored = store.get(finding().id)
        positions = {m.position for m in marks.values()}
        assert len(marks) in (0, MARKS), f"a partial watermark save was visible: {len(marks)} marks"
        assert len(positions) <= 1, f"watermarks of two rounds seen at once: {sorted(positions)}"
        if positions:
            (position,) = positions
            assert stored is not None and stored.summary >= position, (
                f"watermarks at {position} but findings only at {stored.summary if stored else None}")
        reads += 1
        if positions == {f"round {ROUNDS:03d}"}:
            return reads
    return -1
