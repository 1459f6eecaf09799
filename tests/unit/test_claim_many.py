"""Fewer round trips (issue 11): ClaimTasks, CompleteAndClaim and
RegisterAndClaim, in the engine (agentd.tasks.queue/routing) and through the
Runtime service object (agentd.api.runtime) with a fixed caller.

What must hold: a batch claim never takes more than the agent's free wip (its
template's concurrency minus the tasks it holds), picks what a single claim
would pick (priority, then age; capabilities; dependencies; only its own
owner's or pinned tasks), and a completion that is refused claims nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from world import ALICE, BOB, World

from agentd.agent import Agent
from agentd.api.access import Callers
from agentd.api.errors import AgentdDbusError, short_name
from agentd.api.marshal import plain
from agentd.api.runtime import RuntimeObject
from agentd.errors import LeaseExpired, PermissionDenied
from agentd.policy import Caller, Policy
from agentd.tasks.queue import TaskQueue

GUARD = 5.0  # seconds: only a broken long poll gets near this


class Q:
    def __init__(self, tmp_path: Path) -> None:
        self.w = World(tmp_path)
        self.q = TaskQueue(self.w.store, self.w.reg)

    def agent(self, name: str, owner: Caller = ALICE, template: str = "sandbox") -> Agent:
        agent: Agent = self.w.run(self.w.reg.create(owner, name, template))
        return agent

    def submit(self, caller: Caller = ALICE, **spec: object) -> int:
        spec.setdefault("title", "t")
        return self.q.submit(caller, spec).id

    def claimed_rows(self) -> list[int]:
        return [e.detail["task_id"] for e in self.w.audit_rows("task.claimed")]


@pytest.fixture
def q(tmp_path: Path) -> Q:
    return Q(tmp_path)


# ------------------------------------------------------------------ the engine
def test_claim_many_takes_at_most_the_free_wip(q: Q) -> None:
    a = q.agent("a1")  # sandbox: concurrency 2
    ids = [q.submit() for _ in range(5)]
    assert q.q.router.room(a) == 2
    got = q.q.claim_many(a, 0)  # 0: as many as there is room for
    assert [t.id for t in got] == ids[:2]
    assert all(t.status == "in_progress" and t.agent == "a1" for t in got)
    assert q.q.router.room(a) == 0
    assert q.q.claim_many(a, 5) == []  # full: nothing, whatever max says
    asyncio.run(q.q.complete(a, ids[0], 1, "", []))
    assert [t.id for t in q.q.claim_many(a, 99)] == [ids[2]]  # over the room: clamped
    assert q.claimed_rows() == ids[:3]  # each claim is its task.claimed row


def test_claim_many_honours_a_smaller_max(q: Q) -> None:
    a = q.agent("a1", template="ops")  # concurrency 4
    ids = [q.submit() for _ in range(4)]
    assert [t.id for t in q.q.claim_many(a, 1)] == ids[:1]
    assert [t.id for t in q.q.claim_many(a, 2)] == ids[1:3]


def test_claim_many_takes_priority_then_age(q: Q) -> None:
    a = q.agent("a1", template="ops")
    low = q.submit(priority="low")
    crit = q.submit(priority="critical")
    med1 = q.submit(priority="medium")
    med2 = q.submit(priority="medium")
    assert [t.id for t in q.q.claim_many(a, 3)] == [crit, med1, med2]
    assert [t.id for t in q.q.claim_many(a, 3)] == [low]


def test_claim_many_skips_what_the_agent_cannot_run_or_may_not_take(q: Q) -> None:
    a = q.agent("a1", template="ops")  # ops: no "research" capability
    q.agent("r1", template="research")
    q.agent("b1", owner=BOB, template="ops")
    research = q.submit(needs=["research"])
    pinned = q.submit(agent="r1")
    bobs = q.submit(BOB)
    first = q.submit(title="first")
    second = q.submit(title="second", after=[first])
    ok = q.submit(title="ok")
    got = [t.id for t in q.q.claim_many(a, 0)]
    assert got == [first, ok]  # not another's, not pinned elsewhere, not waiting, capable
    for tid in (research, pinned, bobs, second):
        assert q.q.find(tid).status == "pending"
    asyncio.run(q.q.complete(a, first, 1, "", []))
    assert [t.id for t in q.q.claim_many(a, 0)] == [second]  # its dependency completed


def test_an_agent_without_a_valid_template_claims_nothing(q: Q) -> None:
    a = q.agent("a1")
    q.submit(agent="a1")
    d = q.w.db.parent / "etc" / "templates"
    d.mkdir(parents=True)
    (d / "sandbox.toml").write_text("this is [[not TOML")
    assert q.q.router.room(a) == 0 and q.q.claim_many(a, 0) == []


def test_complete_and_claim_returns_the_next_tasks(q: Q) -> None:
    a = q.agent("a1")
    ids = [q.submit() for _ in range(4)]
    (t,) = q.q.claim_many(a, 1)
    got = asyncio.run(q.q.complete_and_claim(a, t.id, 1, '{"ok": 1}', [], 0, 0))
    assert [x.id for x in got] == ids[1:3]  # its slot and the other free one
    done = q.q.find(t.id)
    assert done.status == "completed" and done.result == '{"ok": 1}'


def test_complete_and_claim_refuses_a_stale_attempt_and_claims_nothing(q: Q) -> None:
    a = q.agent("a1")
    tid = q.submit()
    waiting = [q.submit() for _ in range(2)]
    (t,) = q.q.claim_many(a, 1)
    q.q.expire_leases(now=t.lease_expires + 1)  # the claim lapsed: attempt 1 is over
    with q.w.store.transaction():  # no backoff: claim it again at once, as attempt 2
        q.w.store.execute("UPDATE tasks SET not_before=0 WHERE id=?", (tid,))
    (again,) = q.q.claim_many(a, 1)
    assert again.id == tid and again.attempts == 2
    before = q.claimed_rows()
    with pytest.raises(LeaseExpired):
        asyncio.run(q.q.complete_and_claim(a, tid, 1, "", [], 0, 1.0))
    assert q.claimed_rows() == before
    assert [q.q.find(i).status for i in waiting] == ["pending", "pending"]


def test_complete_and_claim_refuses_anothers_task_and_claims_nothing(q: Q) -> None:
    a, b = q.agent("a1"), q.agent("a2")
    tid = q.submit(agent="a1")
    q.submit(agent="a2")
    q.q.claim_many(a, 1)
    before = q.claimed_rows()
    with pytest.raises(PermissionDenied):
        asyncio.run(q.q.complete_and_claim(b, tid, 1, "", [], 0, 0))
    assert q.claimed_rows() == before
    assert q.w.audit_rows("task.completed")[-1].result == "denied"


def test_claim_many_wait_wakes_for_new_work_and_for_room(q: Q) -> None:
    a = q.agent("a1")  # concurrency 2

    async def scenario() -> None:
        waiter = asyncio.create_task(q.q.claim_many_wait(a, 0, GUARD))
        await asyncio.sleep(0)  # the long poll found nothing and waits
        assert not waiter.done()
        new = q.submit()
        q.q.assign()  # assigned to a1: wakes it
        assert [t.id for t in await asyncio.wait_for(waiter, GUARD)] == [new]
        other = q.submit(agent="a1")
        assert [t.id for t in q.q.claim_many(a, 0)] == [other]  # full now
        third = q.submit(agent="a1")
        waiter = asyncio.create_task(q.q.claim_many_wait(a, 0, GUARD))
        await asyncio.sleep(0)
        assert not waiter.done()  # work there is, room there is not
        await q.q.complete(a, new, 1, "", [])  # frees a slot: wakes the long poll
        assert [t.id for t in await asyncio.wait_for(waiter, GUARD)] == [third]

    asyncio.run(scenario())


def test_a_batch_long_poll_left_by_a_dead_runtime_claims_nothing(q: Q) -> None:
    a = q.agent("a1")

    async def scenario() -> list[Any]:
        orphan = asyncio.create_task(q.q.claim_many_wait(a, 0, GUARD))
        await asyncio.sleep(0)
        q.q.release(a)  # a new runtime registered: the asker above is dead
        q.submit(agent="a1")
        return await asyncio.wait_for(orphan, GUARD)

    assert asyncio.run(scenario()) == []
    assert q.q.find(1).status == "pending"


# ------------------------------------------------------------------ the Runtime object
class AsCaller(Callers):
    """Every call comes from CALLER (no bus)."""

    def __init__(self, policy: Policy, caller: Caller) -> None:
        super().__init__(None, policy)
        self.caller = caller

    async def credentials(self) -> Caller:
        return self.caller


def runtime_as(q: Q, caller: Caller) -> RuntimeObject:
    return RuntimeObject(q.w.reg, q.q, AsCaller(q.w.reg.policy, caller), None)  # type: ignore[arg-type]


def test_the_runtime_object_batches_as_the_single_calls_do(q: Q) -> None:
    a = q.agent("a1")
    ids = [q.submit() for _ in range(4)]
    rt = runtime_as(q, Caller(a.uid))

    async def scenario() -> None:
        name, path, settings, first = await rt.register_and_claim(0)
        assert name == "a1" and path.endswith("/a1") and plain(settings)["wip"] == 2
        tasks = [plain(t) for t in first]
        assert [t["id"] for t in tasks] == ids[:2]
        assert set(tasks[0]) == {
            "id",
            "attempt",
            "title",
            "description",
            "exec",
            "needs",
            "notes",
            "lease_seconds",
        }
        assert await rt.claim_tasks(5, 0) == []  # no room
        nxt = await rt.complete_and_claim(ids[0], 1, "", [], 1, 0)
        assert [plain(t)["id"] for t in nxt] == [ids[2]]
        with pytest.raises(AgentdDbusError) as stale:
            await rt.complete_and_claim(ids[0], 1, "", [], 1, 0)  # reported already
        assert short_name(stale.value) == "LeaseExpired"
        assert q.q.find(ids[3]).status == "pending"  # the refused call claimed nothing
        await rt.complete_task(ids[1], 1, "", [])
        assert [plain(t)["id"] for t in await rt.claim_tasks(0, 10)] == [ids[3]]

    asyncio.run(scenario())


def test_people_may_not_use_the_batch_calls(q: Q) -> None:
    q.agent("a1")
    tid = q.submit()
    rt = runtime_as(q, ALICE)

    async def scenario() -> list[str]:
        names = []
        for call in (
            lambda: rt.register_and_claim(0),
            lambda: rt.claim_tasks(0, 0),
            lambda: rt.complete_and_claim(tid, 1, "", [], 0, 0),
        ):
            try:
                await call()
                names.append("")
            except AgentdDbusError as e:
                names.append(short_name(e))
        return names

    assert asyncio.run(scenario()) == ["PermissionDenied"] * 3
    assert q.q.find(tid).status == "pending"
