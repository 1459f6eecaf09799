"""The status-transition table, walked exhaustively, and the version check.

For every status and every event: either the table allows it, and the engine
operation that emits that event takes a task in that status to the table's
status; or the operation is refused (a typed error, or a sweep that leaves the
task alone) and nothing is written. Then the optimistic-versioning Conflict
path: of two writers racing on one task exactly one wins.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from world import ALICE, World

from agentd.agent import Agent
from agentd.approvalrules import ApprovalRules
from agentd.approvals import Approvals
from agentd.errors import AgentdError, Busy, Conflict
from agentd.events import TaskChanged
from agentd.tasks.model import (
    EVENTS,
    FINAL,
    STATUSES,
    TRANSITIONS,
    Artifact,
    IllegalTransition,
    Task,
    allows,
    next_status,
)
from agentd.tasks.queue import TaskQueue


class H:
    """A World with a queue, agent a1 of ALICE's, and the task events published."""

    def __init__(self, tmp_path: Path) -> None:
        self.w = World(tmp_path)
        self.q = TaskQueue(self.w.store, self.w.reg)
        self.ap = Approvals(self.q, self.w.reg.catalog, ApprovalRules())
        self.seen: list[tuple[int, str]] = []
        self.w.reg.events.subscribe(TaskChanged, lambda e: self.seen.append((e.task.id, e.event)))
        self.a1 = self.agent("a1")

    def agent(self, name: str) -> Agent:
        return self.w.run(self.w.reg.create(ALICE, name, "sandbox"))

    def task(self, tid: int) -> Task:
        task = self.q.find(tid)
        assert task is not None
        return task

    def rows(self, event: str, tid: int) -> int:
        """Audit rows of EVENT happening to task TID (not of its being denied)."""
        return sum(
            1
            for e in self.w.audit.entries(task_id=tid, limit=100000)
            if e.action == event and e.result != "denied"
        )

    def remove_a1(self) -> None:
        self.w.run(self.w.reg.remove(ALICE, "a1"))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def build(h: H, status: str, pinned: bool = False, max_attempts: int = 3) -> int:
    """A task of ALICE's in STATUS, brought there by the engine itself."""
    spec: dict[str, Any] = {
        "title": "t",
        "max_attempts": 1 if status == "dead_lettered" else max_attempts,
    }
    if pinned:
        spec["agent"] = "a1"
    tid = h.q.submit(ALICE, spec).id
    if status == "cancelled":
        h.q.cancel(ALICE, tid)
    if status in ("pending", "cancelled"):
        return tid
    claimed = h.q.claim(h.a1)
    assert claimed is not None and claimed.id == tid
    if status == "blocked":
        h.q.block(h.a1, tid, 1, "which file?")
    elif status == "completed":
        run(h.q.complete(h.a1, tid, 1, "", []))
    elif status == "failed":
        run(h.q.fail(h.a1, tid, 1, "it broke", "", []))
    elif status == "dead_lettered":
        h.q.expire_leases(now=time.time() + 10 * h.w.cfg.lease_seconds)
    elif status == "awaiting_approval":
        _ask(h, tid)
    assert h.task(tid).status == status
    return tid


# -- the engine operation(s) that emit each event ------------------------------------------
def _unassign(h: H, tid: int) -> None:
    h.q.assign()  # a pending task goes to a1 ...
    h.remove_a1()  # ... which is removed
    h.q.assign()


def _orphan(h: H, tid: int) -> None:
    h.remove_a1()  # the task is pinned to a1
    h.q.assign()


def _attempt(h: H, tid: int) -> int:
    return h.task(tid).attempts


def _ask(h: H, tid: int) -> int:
    """a1, holding TID, asks to run a shell command (approval.requested)."""
    return h.ap.request(h.a1, tid, _attempt(h, tid), "shell", '{"command": "rm -rf build"}')


def _answer(grant: bool) -> Callable[[H, int], object]:
    """ALICE answers the newest approval of the task (there is none outside
    awaiting_approval: then the operation is refused by having nothing to answer)."""

    def act(h: H, tid: int) -> object:
        rows = h.w.store.query("SELECT id FROM approvals WHERE task_id=? ORDER BY id DESC", (tid,))
        if not rows:
            raise Busy(f"task {tid} has no approval to answer")
        return h.ap.answer(ALICE, int(rows[0]["id"]), grant=grant, reason="no")

    return act


@dataclass(frozen=True)
class Op:
    event: str
    name: str
    act: Callable[[H, int], object]
    froms: frozenset[str]  # the statuses it does EVENT from; from any other it is refused
    pinned: bool = False
    max_attempts: int = 3


def _ops() -> tuple[Op, ...]:
    lapse = time.time() + 1000 * 1000

    def ok(*statuses: str) -> frozenset[str]:
        return frozenset(statuses)

    return (
        Op("task.assigned", "assign", lambda h, tid: h.q.assign(), ok("pending")),
        Op("task.unassigned", "agent removed, assign", _unassign, ok("pending")),
        Op("task.claimed", "claim", lambda h, tid: h.q.claim(h.a1), ok("pending")),
        Op(
            "task.completed",
            "complete",
            lambda h, tid: run(h.q.complete(h.a1, tid, _attempt(h, tid), '{"ok": true}', [])),
            ok("in_progress"),
        ),
        Op(
            "task.failed",
            "fail",
            lambda h, tid: run(h.q.fail(h.a1, tid, _attempt(h, tid), "it broke", "", [])),
            ok("in_progress"),
        ),
        Op("task.failed", "pinned agent removed, assign", _orphan, ok("pending"), pinned=True),
        Op(
            "task.blocked",
            "block",
            lambda h, tid: h.q.block(h.a1, tid, _attempt(h, tid), "why?"),
            ok("in_progress"),
        ),
        Op(
            "task.unblocked",
            "unblock",
            lambda h, tid: h.q.unblock(ALICE, tid, "this one"),
            ok("blocked"),
        ),
        Op(
            "task.deferred",
            "defer",
            lambda h, tid: h.q.loop.defer(h.a1, tid, _attempt(h, tid), 5, "later"),
            ok("in_progress"),
        ),
        Op(
            "task.replied",
            "reply",
            lambda h, tid: h.q.loop.reply(ALICE, tid, "this one"),
            ok("blocked"),
        ),
        Op(
            "task.cancelled",
            "cancel",
            lambda h, tid: h.q.cancel(ALICE, tid),
            ok("pending", "in_progress", "blocked", "awaiting_approval"),
        ),
        Op(
            "task.deferred",
            "defer",
            lambda h, tid: h.q.loop.defer(h.a1, tid, _attempt(h, tid), 0, "later"),
            ok("in_progress"),
        ),
        Op(
            "task.replied",
            "reply",
            lambda h, tid: h.q.loop.reply(ALICE, tid, "yes"),
            ok("blocked"),
        ),
        Op("approval.requested", "request approval", _ask, ok("in_progress")),
        Op("approval.granted", "grant", _answer(True), ok("awaiting_approval")),
        Op("approval.denied", "deny", _answer(False), ok("awaiting_approval")),
        Op(
            "task.retried",
            "retry",
            lambda h, tid: h.q.retry(ALICE, tid),
            ok("failed", "cancelled", "dead_lettered"),
        ),
        Op(
            "task.lease_expired",
            "lease lapsed",
            lambda h, tid: h.q.expire_leases(now=lapse),
            ok("in_progress"),
        ),
        Op(
            "task.lease_expired", "new runtime", lambda h, tid: h.q.release(h.a1), ok("in_progress")
        ),
        Op(
            "task.dead_lettered",
            "lease lapsed on the last attempt",
            lambda h, tid: h.q.expire_leases(now=lapse),
            ok("in_progress"),
            max_attempts=1,
        ),
        Op(
            "task.dead_lettered",
            "new runtime, last attempt",
            lambda h, tid: h.q.release(h.a1),
            ok("in_progress"),
            max_attempts=1,
        ),
    )


OPS = _ops()


def test_the_table_is_well_formed() -> None:
    froms = {s for s, _, _ in TRANSITIONS if s is not None}
    tos = {t for _, _, t in TRANSITIONS}
    assert froms | tos == set(STATUSES)  # every status is reachable and the table knows it
    assert len({(s, e) for s, e, _ in TRANSITIONS}) == len(TRANSITIONS)  # deterministic
    assert {e for s, e, _ in TRANSITIONS if s in FINAL} == {"task.retried"}  # final is final
    assert [(s, t) for s, e, t in TRANSITIONS if e == "task.created"] == [(None, "pending")]
    assert set(EVENTS) == {op.event for op in OPS} | {"task.created"}  # each has an operation


def test_the_store_allows_exactly_the_table_s_statuses() -> None:
    from agentd import store
    from agentd.approvalschema import MIGRATION_8

    assert MIGRATION_8 in store.MIGRATIONS  # the last tasks table is migration 8's
    schema = "".join(store.MIGRATIONS)
    check = schema[schema.rindex("status        TEXT NOT NULL CHECK") :]
    check = check[: check.index(")")]
    assert {s.strip(" '\n") for s in check.split("(")[-1].split(",")} == set(STATUSES)


def test_submit_is_task_created_from_nothing(tmp_path: Path) -> None:
    h = H(tmp_path)
    task = h.q.submit(ALICE, {"title": "t"})
    assert task.status == next_status(None, "task.created") == "pending"
    assert h.rows("task.created", task.id) == 1 and h.seen == [(task.id, "task.created")]


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("status", STATUSES)
def test_transition_consults_the_table(tmp_path: Path, status: str, event: str) -> None:
    """The generic transition: the table's status, or IllegalTransition and no write."""
    h = H(tmp_path)
    tid = build(h, status)
    before, seen = h.task(tid), len(h.seen)
    if allows(status, event):
        after = h.q.lifecycle.transition(before, event, 0, {})
        assert after.status == next_status(status, event) == h.task(tid).status
        assert after.version == before.version + 1 and h.rows(event, tid) >= 1
    else:
        rows = h.rows(event, tid)
        with pytest.raises(IllegalTransition):
            h.q.lifecycle.transition(before, event, 0, {})
        assert h.task(tid) == before and h.rows(event, tid) == rows and len(h.seen) == seen


def test_transition_will_not_take_a_status_from_its_caller(tmp_path: Path) -> None:
    h = H(tmp_path)
    task = h.task(build(h, "pending"))
    with pytest.raises(IllegalTransition):
        h.q.lifecycle.transition(task, "task.assigned", 0, {"status": "completed"})
    assert h.task(task.id) == task


def test_the_operations_cover_the_table_exactly() -> None:
    """Each allowed (status, event) has an operation that does it, and no
    operation claims one the table does not allow."""
    done = {(status, op.event) for op in OPS for status in op.froms}
    assert done == {(s, e) for s, e, _ in TRANSITIONS if s is not None}


@pytest.mark.parametrize("op", OPS, ids=lambda op: f"{op.event}:{op.name}")
@pytest.mark.parametrize("status", STATUSES)
def test_each_operation_follows_the_table(tmp_path: Path, status: str, op: Op) -> None:
    """From each status, OP either does its event (to the table's status) or is
    refused - typed, or a sweep passing the task by - and writes nothing to it."""
    h = H(tmp_path)
    tid = build(h, status, pinned=op.pinned, max_attempts=op.max_attempts)
    before, rows = h.task(tid), h.rows(op.event, tid)
    try:
        op.act(h, tid)
    except AgentdError:  # refused, typed (never IllegalTransition: the guard comes first)
        assert status not in op.froms
    after = h.task(tid)
    if status in op.froms:
        assert h.rows(op.event, tid) == rows + 1 and (tid, op.event) in h.seen
        assert after.status == next_status(status, op.event)
    else:
        assert h.rows(op.event, tid) == rows
        assert after.version == before.version and after.status == status


# -- optimistic versioning: two writers, one task --------------------------------------
def _race(h: H, monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], Any]) -> list[Any]:
    """Run MEANWHILE once, right after the next task look-up (the claimer's read of
    its candidate), so that the claimer goes on with a stale copy. MEANWHILE's
    result lands in the list returned."""
    real_find = h.q.repo.find
    out: list[Any] = []
    started = False

    def find(task_id: int) -> Task | None:
        nonlocal started
        task = real_find(task_id)
        if not started:
            started = True
            out.append(meanwhile())
        return task

    monkeypatch.setattr(h.q.repo, "find", find)
    return out


def test_two_agents_racing_for_a_task_one_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = H(tmp_path)
    a2 = h.agent("a2")
    tid = build(h, "pending")
    won = _race(h, monkeypatch, lambda: h.q.claim(a2))  # a2 claims while a1 holds the row
    assert h.q.claim(h.a1) is None  # a1 lost: Conflict, and no other task to take
    assert won[0].id == tid and won[0].agent == "a2"
    task = h.task(tid)
    assert task.status == "in_progress" and task.agent == "a2" and task.attempts == 1
    assert h.rows("task.claimed", tid) == 1
    assert [e for e in h.seen if e[1] == "task.claimed"] == [(tid, "task.claimed")]


def test_the_claimer_that_loses_skips_to_the_next_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = H(tmp_path)
    a2 = h.agent("a2")
    first = h.q.submit(ALICE, {"title": "first", "priority": "high"}).id
    second = h.q.submit(ALICE, {"title": "second"}).id
    won = _race(h, monkeypatch, lambda: h.q.claim(a2))
    got = h.q.claim(h.a1)
    assert won[0].id == first and got is not None and got.id == second
    assert h.task(first).agent == "a2" and h.task(second).agent == "a1"
    assert h.rows("task.claimed", first) == 1 and h.rows("task.claimed", second) == 1


def test_a_stale_claim_gets_conflict_and_writes_nothing(tmp_path: Path) -> None:
    h = H(tmp_path)
    a2 = h.agent("a2")
    tid = build(h, "pending")
    stale = h.task(tid)
    assert h.q.claim(h.a1) is not None
    with pytest.raises(Conflict):
        h.q.lifecycle.claim(stale, a2, time.time())
    assert h.task(tid).agent == "a1" and h.rows("task.claimed", tid) == 1


def test_a_stale_report_rolls_back_its_artifacts(tmp_path: Path) -> None:
    h = H(tmp_path)
    tid = build(h, "in_progress")
    stale = h.task(tid)
    h.q.cancel(ALICE, tid)  # the owner cancels meanwhile
    art = Artifact(0, "r.txt", "text/plain", "/nowhere/r.txt", 1, "0" * 64)
    with pytest.raises(Conflict):
        h.q.lifecycle.finish(stale, h.a1, 1, "task.completed", "", None, [art])
    assert h.task(tid).status == "cancelled" and h.q.artifacts(None, tid) == []
    assert h.rows("artifact.created", tid) == 0 and h.rows("task.completed", tid) == 0


def test_a_lapse_found_stale_is_left_alone(tmp_path: Path) -> None:
    h = H(tmp_path)
    tid = build(h, "in_progress")
    rows = h.w.store.query("SELECT * FROM tasks WHERE id=?", (tid,))  # the sweep's read
    run(h.q.complete(h.a1, tid, 1, "", []))  # the agent reports meanwhile
    assert h.q.lifecycle.expire(rows, time.time()) == []
    assert h.task(tid).status == "completed" and h.rows("task.lease_expired", tid) == 0
