"""Delegation (agentd.goals.delegation) over the real store and queue: children
as the owner's tasks, only from a held task of a template that allows it,
bounded in fan-out and depth, all or nothing, audited; the parent sees their
results, and takes its open children with it when it ends. And the loop's
delegate tool (agentd.agentloop.delegate) against a scripted host."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from world import ALICE, BOB, World

from agentd.agentloop import delegate as tool
from agentd.agentloop.host import HostError
from agentd.errors import InvalidArgument, LimitExceeded, PermissionDenied
from agentd.goals.delegation import MAX_DEPTH, MAX_FANOUT, Delegation
from agentd.tasks.queue import TaskQueue

BOSS = """description = "delegates"
capabilities = ["general"]
tools = ["files", "delegate"]
profile = "offline"
concurrency = 4
"""


class D:
    def __init__(self, tmp_path: Path) -> None:
        (tmp_path / "etc" / "templates").mkdir(parents=True)
        (tmp_path / "etc" / "templates" / "boss.toml").write_text(BOSS)
        self.w = World(tmp_path)
        self.q = TaskQueue(self.w.store, self.w.reg)
        self.d = Delegation(
            self.w.store, self.q, self.w.reg.catalog, self.w.audit, self.w.reg.events
        )
        self.boss = self.w.run(self.w.reg.create(ALICE, "boss", "boss"))
        self.w1 = self.w.run(self.w.reg.create(ALICE, "w1", "sandbox"))
        self.task = self.held("boss", {"title": "big job", "needs": ["general"]})

    def held(self, name: str, spec: dict) -> Any:
        agent = self.w.reg.find(name)
        task = self.q.submit(ALICE, {**spec, "agent": name})
        [claimed] = [t for t in self.q.claim_many(agent, 10) if t.id == task.id]
        return claimed

    def steps(self, n: int) -> str:
        return json.dumps(
            [{"title": f"part {i}", "instructions": f"do part {i}"} for i in range(n)]
        )


@pytest.fixture
def d(tmp_path: Path) -> D:
    return D(tmp_path)


def test_children_are_the_owners_tasks_with_the_parents_needs_and_audited(d: D) -> None:
    ids = d.d.delegate(d.boss, d.task.id, d.task.attempts, d.steps(2))
    kids = [d.q.find(i) for i in ids]
    assert all(k.owner_uid == ALICE.uid and k.needs == ("general",) for k in kids)
    assert all(not k.exec and "Delegated by agent boss" in k.description for k in kids)
    [row] = d.w.audit_rows("task.delegated")
    assert (row.agent, row.task_id, row.detail["children"]) == ("boss", d.task.id, ids)
    # the parent sees them, not done, then done with their results
    assert d.d.results(d.boss, d.task.id)["done"] is False
    for k in d.q.claim_many(d.w1, 10):
        asyncio.run(d.q.complete(d.w1, k.id, k.attempts, json.dumps({"answer": f"r{k.id}"}), []))
    got = d.d.results(d.boss, d.task.id)
    assert got["done"] and [c["status"] for c in got["children"]] == ["completed"] * 2
    assert json.loads(got["children"][0]["result"])["answer"] == f"r{ids[0]}"


def test_fan_out_is_bounded_and_a_refusal_is_audited_whole(d: D) -> None:
    d.d.delegate(d.boss, d.task.id, d.task.attempts, d.steps(MAX_FANOUT - 1))
    with pytest.raises(LimitExceeded, match="the most a task may hand out"):
        d.d.delegate(d.boss, d.task.id, d.task.attempts, d.steps(2))
    assert len(d.d.children(d.task.id)) == MAX_FANOUT - 1  # nothing of the refused call
    refused = [r for r in d.w.audit_rows("task.delegated") if r.result == "refused"]
    assert refused and refused[-1].detail["error"] == "LimitExceeded"


def test_a_child_of_a_child_stops_at_the_depth_bound(d: D) -> None:
    task = d.task
    for _ in range(MAX_DEPTH):
        [child] = d.d.delegate(d.boss, task.id, task.attempts, d.steps(1))
        task = _hold(d, child)
    with pytest.raises(LimitExceeded, match=f"at most {MAX_DEPTH} levels"):
        d.d.delegate(d.boss, task.id, task.attempts, d.steps(1))


def _hold(d: D, task_id: int) -> Any:
    """The child, pinned to boss and claimed by it (as if routed there)."""
    d.w.store.execute(
        "UPDATE tasks SET agent=?, agent_id=?, pinned_agent=?, pinned_agent_id=? WHERE id=?",
        ("boss", d.boss.id, "boss", d.boss.id, task_id),
    )
    [claimed] = [t for t in d.q.claim_many(d.boss, 10) if t.id == task_id]
    return claimed


def test_only_the_holder_of_a_template_that_allows_it_delegates(d: D) -> None:
    with pytest.raises(PermissionDenied):  # w1 does not hold boss's task
        d.d.delegate(d.w1, d.task.id, d.task.attempts, d.steps(1))
    mine = d.held("w1", {"title": "small job", "needs": ["general"]})
    with pytest.raises(PermissionDenied, match="does not allow the 'delegate' tool"):
        d.d.delegate(d.w1, mine.id, mine.attempts, d.steps(1))
    denied = [r for r in d.w.audit_rows("runtime.delegate") if r.result == "denied"]
    assert len(denied) == 2
    for bad in (
        "nope",
        "[]",
        json.dumps([{"title": "t"}]),
        json.dumps([{"title": "t", "instructions": "i", "exec": "rm -rf /"}]),
    ):
        with pytest.raises(InvalidArgument):
            d.d.delegate(d.boss, d.task.id, d.task.attempts, bad)
    assert d.d.children(d.task.id) == []


def test_a_parent_that_ends_takes_its_open_children_with_it(d: D) -> None:
    ids = d.d.delegate(d.boss, d.task.id, d.task.attempts, d.steps(2))
    asyncio.run(d.q.complete(d.boss, d.task.id, d.task.attempts, json.dumps({"answer": "x"}), []))
    assert {d.q.find(i).status for i in ids} == {"cancelled"}


def test_bob_cannot_read_alices_delegations(d: D) -> None:
    bobs = d.w.run(d.w.reg.create(BOB, "bobs", "boss"))
    with pytest.raises(PermissionDenied):
        d.d.results(bobs, d.task.id)


def test_wait_returns_when_the_children_end(d: D) -> None:
    async def run() -> dict:
        d.d.delegate(d.boss, d.task.id, d.task.attempts, d.steps(1))
        waiting = asyncio.ensure_future(d.d.wait(d.boss, d.task.id, 30))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        [k] = d.q.claim_many(d.w1, 10)
        await d.q.complete(d.w1, k.id, k.attempts, json.dumps({"answer": "ok"}), [])
        return await asyncio.wait_for(waiting, 5)

    assert asyncio.run(run())["done"]


class Host:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse, self.polls, self.sent = refuse, 0, []

    async def delegate(self, task: int, attempt: int, steps: list[dict[str, str]]) -> list[int]:
        if self.refuse:
            raise HostError("LimitExceeded", "too many")
        self.sent = steps
        return [11, 12]

    async def delegated(self, task: int, timeout_ms: int) -> dict[str, Any]:
        self.polls += 1
        done = self.polls >= 2
        kids = [
            {
                "id": 11,
                "title": "a",
                "status": "completed",
                "agent": "w1",
                "result": '{"answer": "A!"}',
            },
            {
                "id": 12,
                "title": "b",
                "status": "failed" if done else "in_progress",
                "error": "boom",
            },
        ]
        return {"done": done, "children": kids}


def test_the_tool_hands_out_waits_and_shows_each_result() -> None:
    host = Host()
    out = asyncio.run(tool.run(host, 5, 1, {"steps": ["count the files in logs/", "  "]}))  # type: ignore[arg-type]
    assert host.sent == [
        {"title": "count the files in logs/", "instructions": "count the files in logs/"}
    ]
    assert host.polls == 2
    assert (
        "task 11 (completed, agent w1): a\nA!" in out
        and "task 12 (failed, agent -): b\nboom" in out
    )
    refused = asyncio.run(tool.run(Host(refuse=True), 5, 1, {"steps": ["x"]}))  # type: ignore[arg-type]
    assert refused.startswith("error: not delegated: too many (LimitExceeded)")
