"""The agent loop's host side (agentd.tasks.trace): a task's trace, AskOwner and
ReplyTask, DeferTask, TaskContext and the settings a runtime gets; who may do
each, and the bounds. Quota-blocked tasks resuming: test_task_trace_resume.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from world import ALICE, BOB, ROOT, World

from agentd.agent import Agent
from agentd.api.access import GROUPED
from agentd.errors import Busy, InvalidArgument, LeaseExpired, PermissionDenied
from agentd.tasks.model import Artifact
from agentd.tasks.queue import TaskQueue
from agentd.tasks.trace import MAX_DEP_RESULT, MAX_STEP, MAX_STEPS


class L:
    """A World with a queue, alice's agents a1 and a2, and a task a1 holds."""

    def __init__(self, tmp_path: Path) -> None:
        self.w = World(tmp_path)
        self.q = TaskQueue(self.w.store, self.w.reg)
        self.a1 = self.agent("a1")
        self.a2 = self.agent("a2")
        self.tid = self.q.submit(ALICE, {"title": "t", "agent": "a1"}).id
        claimed = self.q.claim(self.a1)
        assert claimed is not None and claimed.id == self.tid

    def agent(self, name: str) -> Agent:
        return self.w.run(self.w.reg.create(ALICE, name, "sandbox"))

    def rows(self, action: str) -> list:
        return [e for e in self.w.audit.entries(limit=100000) if e.action == action]

    def step(self, n: int = 1, attempt: int = 1, **extra: object) -> int:
        step = {"n": n, "tool": "shell", "arguments": {"command": "ls"}, "result": "exit 0"}
        return self.q.loop.record_step(self.a1, self.tid, attempt, json.dumps({**step, **extra}))


@pytest.fixture
def h(tmp_path: Path) -> L:
    return L(tmp_path)


def test_steps_are_recorded_and_shown_to_the_owner_and_admins_only(h: L) -> None:
    h.step(1, prompt_tokens=812, computed_tokens=40, completion_tokens=22, seconds=1.9)
    h.step(2, tool="finish")
    steps = h.q.loop.steps(ALICE, h.tid)
    assert [(s["n"], s["tool"], s["attempt"]) for s in steps] == [(1, "shell", 1), (2, "finish", 1)]
    assert steps[0]["computed_tokens"] == 40 and steps[0]["at"] <= time.time()
    assert h.q.loop.steps(ROOT, h.tid) == steps
    with pytest.raises(PermissionDenied):
        h.q.loop.steps(BOB, h.tid)
    denied = [r for r in h.rows("task.show") if r.result == "denied"]
    assert [(r.actor_uid, r.task_id) for r in denied] == [(BOB.uid, h.tid)]


def test_an_agent_cannot_write_to_another_agents_task(h: L) -> None:
    with pytest.raises(PermissionDenied):
        h.q.loop.record_step(h.a2, h.tid, 1, json.dumps({"tool": "shell"}))
    with pytest.raises(PermissionDenied):
        h.q.loop.ask_owner(h.a2, h.tid, 1, "may I?")
    with pytest.raises(PermissionDenied):
        h.q.loop.defer(h.a2, h.tid, 1, 5, "later")
    with pytest.raises(PermissionDenied):
        h.q.loop.context(h.a2, h.tid)
    for action in ("runtime.record_step", "runtime.ask_owner", "runtime.defer", "runtime.context"):
        (row,) = h.rows(action)
        assert (row.result, row.actor_uid, row.agent, row.task_id) == (
            "denied",
            h.a2.uid,
            "a2",
            h.tid,
        )
    assert h.q.loop.trace(h.tid) == [] and h.q.find(h.tid).status == "in_progress"


def test_only_the_current_attempt_of_a_running_task_writes(h: L) -> None:
    with pytest.raises(LeaseExpired):
        h.step(attempt=2)
    h.q.block(h.a1, h.tid, 1, "stuck")
    with pytest.raises(LeaseExpired):
        h.step(attempt=1)
    assert h.q.loop.trace(h.tid) == []


def test_steps_are_bounded_in_size_shape_and_number(h: L) -> None:
    with pytest.raises(InvalidArgument, match="bytes"):
        h.step(result="x" * MAX_STEP)
    for bad in ("[1, 2]", "not json", "[" * 20000 + "]" * 20000):
        with pytest.raises(InvalidArgument, match="step_json"):
            h.q.loop.record_step(h.a1, h.tid, 1, bad)
    for n in range(1, MAX_STEPS + 1):
        h.step(n)
    with pytest.raises(InvalidArgument, match=f"{MAX_STEPS} steps"):
        h.step(MAX_STEPS + 1)
    assert len(h.q.loop.trace(h.tid)) == MAX_STEPS


def test_a_step_without_a_number_gets_the_next_one(h: L) -> None:
    h.q.loop.record_step(h.a1, h.tid, 1, json.dumps({"tool": "list_files", "n": "x"}))
    h.q.loop.record_step(h.a1, h.tid, 1, json.dumps({"tool": "finish"}))
    assert [s["n"] for s in h.q.loop.trace(h.tid)] == [1, 2]


def test_ask_owner_blocks_and_the_owners_reply_unblocks_for_the_same_agent(h: L) -> None:
    h.step(1, tool="ask_owner")
    task = h.q.loop.ask_owner(h.a1, h.tid, 1, "Which directory?")
    assert (task.status, task.block_reason, task.lease_expires) == (
        "blocked",
        "question: Which directory?",
        None,
    )
    with pytest.raises(LeaseExpired):  # the claim ended
        h.step(2)
    with pytest.raises(PermissionDenied):
        h.q.loop.reply(BOB, h.tid, "/etc")
    assert h.q.find(h.tid).status == "blocked"
    task = h.q.loop.reply(ALICE, h.tid, "/srv/data")
    assert (task.status, task.agent, task.block_reason) == ("pending", "a1", None)
    (row,) = h.rows("task.replied")
    assert row.actor_uid == ALICE.uid and row.detail["answer"] == "/srv/data"
    assert row.detail["question"] == "question: Which directory?"
    with pytest.raises(Busy):  # nothing to reply to now
        h.q.loop.reply(ALICE, h.tid, "again")
    again = h.q.claim(h.a1)
    assert again is not None and (again.id, again.attempts) == (h.tid, 2)
    ctx = h.q.loop.context(h.a1, h.tid)
    assert [(r["question"], r["answer"]) for r in ctx["replies"]] == [
        ("Which directory?", "/srv/data")
    ]
    assert [s["tool"] for s in ctx["trace"]] == ["ask_owner"]


def test_replies_and_questions_are_bounded(h: L) -> None:
    with pytest.raises(InvalidArgument):
        h.q.loop.ask_owner(h.a1, h.tid, 1, "   ")
    with pytest.raises(InvalidArgument):
        h.q.loop.ask_owner(h.a1, h.tid, 1, "q" * 20000)
    h.q.loop.ask_owner(h.a1, h.tid, 1, "ok?")
    with pytest.raises(InvalidArgument):
        h.q.loop.reply(ALICE, h.tid, "")
    with pytest.raises(InvalidArgument):
        h.q.loop.reply(ALICE, h.tid, "a" * 20000)
    assert h.q.find(h.tid).status == "blocked"


def test_defer_returns_the_task_without_consuming_its_attempt(h: L) -> None:
    before = h.q.find(h.tid)
    task = h.q.loop.defer(h.a1, h.tid, 1, 30, "Overloaded: try later")
    assert (task.status, task.agent, task.attempts) == ("pending", "a1", 1)
    assert task.max_attempts == before.max_attempts + 1
    assert time.time() + 25 < task.not_before <= time.time() + 30
    (row,) = h.rows("task.deferred")
    assert (row.actor_uid, row.detail["seconds"], row.detail["reason"]) == (
        h.a1.uid,
        30.0,
        "Overloaded: try later",
    )
    assert h.q.claim(h.a1) is None  # not before its time
    with pytest.raises(LeaseExpired):  # the deferred attempt may not report
        run_complete(h, 1)
    h.w.store.execute("UPDATE tasks SET not_before=0 WHERE id=?", (h.tid,))
    again = h.q.claim(h.a1)
    assert again is not None and again.attempts == 2
    assert "deferred: Overloaded" in h.q.loop.context(h.a1, h.tid)["last_error"]


@pytest.mark.parametrize("seconds", [-1, 86401, float("nan"), float("inf")])
def test_defer_seconds_are_bounded(h: L, seconds: float) -> None:
    with pytest.raises(InvalidArgument, match="seconds"):
        h.q.loop.defer(h.a1, h.tid, 1, seconds, "")
    assert h.q.find(h.tid).status == "in_progress"


def run_complete(h: L, attempt: int) -> None:
    h.w.run(h.q.complete(h.a1, h.tid, attempt, "{}", []))


def test_context_has_depends_notes_last_error_project_and_budget(tmp_path: Path) -> None:
    w = World(tmp_path)
    q = TaskQueue(w.store, w.reg)
    a1 = w.run(w.reg.create(ALICE, "a1", "sandbox"))
    q.create_project(ALICE, "site")
    dep = q.submit(ALICE, {"title": "fetch", "agent": "a1"}).id
    q.claim(a1)
    w.run(q.complete(a1, dep, 1, json.dumps({"answer": "x" * 5000}), []))
    q.repo.add_artifact(dep, Artifact(dep, "out.csv", "text/csv", "/h/out.csv", 1, "0" * 64), 0.0)
    tid = q.submit(ALICE, {"title": "use it", "agent": "a1", "after": [dep], "project": "site"}).id
    q.claim(a1)
    w.run(q.fail(a1, tid, 1, "the model could not produce a valid step", "", []))
    q.retry(ALICE, tid)
    q.claim(a1)
    ctx = q.loop.context(a1, tid)
    assert ctx["project"] == "site" and ctx["budget"] == 20000 and ctx["notes"] == []
    (d,) = ctx["depends"]
    assert (d["id"], d["title"], d["status"]) == (dep, "fetch", "completed")
    assert len(d["result"]) == MAX_DEP_RESULT
    assert d["artifacts"] == ["out.csv"]  # the names a dependent step's prompt shows
    assert ctx["last_error"] == "failed: the model could not produce a valid step"
    assert ctx["trace"] == [] and ctx["replies"] == []


def test_a_task_is_only_read_by_the_agent_holding_it_now(h: L) -> None:
    assert h.q.loop.context(h.a1, h.tid)["last_error"] == ""
    h.q.block(h.a1, h.tid, 1, "waiting")
    with pytest.raises(PermissionDenied):  # blocked: no claim held
        h.q.loop.context(h.a1, h.tid)


def test_register_settings_carry_steps_and_task_tokens(h: L) -> None:
    settings = h.q.settings(h.a1)
    assert settings["steps"] == 10 and settings["task_tokens"] == 20000
    assert settings["wip"] >= 1  # the router's settings are still there


def test_the_agents_writes_join_the_group_commit() -> None:
    assert {"runtime.record_step", "runtime.ask_owner", "runtime.defer"} <= GROUPED
    assert "runtime.context" not in GROUPED and "task.reply" not in GROUPED
