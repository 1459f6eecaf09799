"""The scheduler (agentd/scheduler.py) over a World: a TaskQueue on the World's
store and registry, the World's FakeUnits as systemd, the registry's events.

Each pass is driven with `await scheduler.step(now=...)`, so idle timeouts and
leases are tested at chosen instants, not by waiting; background starts and
stops (registry.track) are awaited with `await w.reg.settle()`. run() is tested
for what wakes it, with its once-a-second tick pushed out of reach, waiting on
the pass's effect (a unit started), bounded by GUARD only so a broken scheduler
fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from world import ALICE, BOB, World

from agentd import scheduler as scheduler_mod
from agentd.events import JobFinished, TaskChanged, UnitStateChanged
from agentd.names import unit_name
from agentd.registry import Agent
from agentd.scheduler import Scheduler
from agentd.tasks.queue import TaskQueue

GUARD = 10.0  # seconds: only a broken scheduler ever gets near this


class S:
    """A World with a queue and a scheduler (not running: tests call step())."""

    def __init__(self, tmp_path: Path, **cfg: object) -> None:
        self.w = World(tmp_path, **cfg)
        self.q = TaskQueue(self.w.store, self.w.reg)
        self.sched = Scheduler(self.w.reg, self.q, self.w.units, self.w.reg.events)

    async def agent(self, name: str, owner: Any = ALICE, running: bool = False) -> Agent:
        agent = await self.w.reg.create(owner, name, "sandbox")
        if running:
            await self.w.reg.start(owner, name)
            await self.w.reg.settle()
            assert self.running(name)
        return agent

    def submit(self, caller: Any = ALICE, **spec: object) -> int:
        spec.setdefault("title", "t")
        return self.q.submit(caller, spec).id

    def running(self, name: str) -> bool:
        return unit_name(name) in self.w.units.running

    def audit(self, action: str) -> list:
        return self.w.audit_rows(action)


# ------------------------------------------------------------------ scale from zero
def test_a_task_for_a_stopped_agent_makes_step_start_its_unit(tmp_path: Path) -> None:
    async def main() -> None:
        s = S(tmp_path)
        await s.agent("a1")
        await s.agent("idle")  # no work: stays stopped
        await s.agent("bobs", owner=BOB)
        tid = s.submit(agent="a1")
        assert not s.running("a1")
        await s.sched.step(now=time.time())
        await s.sched.step(now=time.time())  # a start under way is not started twice
        await s.w.reg.settle()
        assert s.running("a1")
        assert not s.running("idle") and not s.running("bobs")
        starts = s.audit("agent.start")
        assert [(e.agent, e.actor_uid, e.result) for e in starts] == [("a1", 0, "ok")]
        assert s.q.find(tid).status == "pending"  # the runtime claims it, not step()

    asyncio.run(main())


def test_step_assigns_unpinned_work_and_starts_the_agent_it_chose(tmp_path: Path) -> None:
    async def main() -> None:
        s = S(tmp_path)
        await s.agent("a1")
        tid = s.submit()  # any of alice's agents
        await s.sched.step(now=time.time())
        await s.w.reg.settle()
        assert s.q.find(tid).agent == "a1"
        assert s.running("a1")

    asyncio.run(main())


def test_a_running_agent_with_work_is_not_started_again(tmp_path: Path) -> None:
    async def main() -> None:
        s = S(tmp_path)
        await s.agent("a1", running=True)
        s.submit(agent="a1")
        await s.sched.step(now=time.time())
        await s.w.reg.settle()
        assert len(s.audit("agent.start")) == 1  # the test's own start only

    asyncio.run(main())


def test_a_task_waiting_for_its_backoff_does_not_start_the_agent(tmp_path: Path) -> None:
    async def main() -> None:
        s = S(tmp_path, retry_backoff=60)
        agent = await s.agent("a1")
        tid = s.submit(agent="a1")
        s.q.claim(agent)
        lapsed = s.q.find(tid).lease_expires + 1
        await s.sched.step(now=lapsed)  # back to pending, not before lapsed + 60
        await s.w.reg.settle()
        assert s.q.find(tid).status == "pending" and not s.running("a1")
        await s.sched.step(now=lapsed + 60)
        await s.w.reg.settle()
        assert s.running("a1")

    asyncio.run(main())


# ------------------------------------------------------------------ idle stop
def test_an_idle_agent_is_stopped_once_idle_timeout_has_passed(tmp_path: Path) -> None:
    async def main() -> None:
        s = S(tmp_path, idle_timeout=60)
        await s.agent("a1", running=True)
        t0 = time.time()
        await s.sched.step(now=t0)
        await s.sched.step(now=t0 + 59)
        await s.w.reg.settle()
        assert s.running("a1")
        assert s.audit("agent.stop") == []
        await s.sched.step(now=t0 + 60)
        await s.w.reg.settle()
        assert not s.running("a1")
        (stop,) = s.audit("agent.stop")
        assert (stop.agent, stop.actor_uid, stop.result) == ("a1", 0, "ok")

    asyncio.run(main())


def test_idle_timeout_zero_never_stops(tmp_path: Path) -> None:
    async def main() -> None:
        s = S(tmp_path, idle_timeout=0)
        await s.agent("a1", running=True)
        t0 = time.time()
        for dt in (0, 10**6, 10**7):
            await s.sched.step(now=t0 + dt)
        await s.w.reg.settle()
        assert s.running("a1")

    asyncio.run(main())


def test_an_agent_with_a_pending_task_is_never_stopped_as_idle(tmp_path: Path) -> None:
    async def main() -> None:
        s = S(tmp_path, idle_timeout=10)
        await s.agent("a1", running=True)
        s.submit(agent="a1")  # waiting for a1 to claim it
        t0 = time.time()
        for dt in (0, 10, 100, 10**5):
            await s.sched.step(now=t0 + dt)
        await s.w.reg.settle()
        assert s.running("a1")
        assert s.audit("agent.stop") == []

    asyncio.run(main())


def test_an_agent_running_a_task_is_not_stopped_and_its_idle_clock_restarts(tmp_path: Path) -> None:
    async def main() -> None:
        s = S(tmp_path, idle_timeout=10)
        agent = await s.agent("a1", running=True)
        t0 = time.time()
        await s.sched.step(now=t0)  # idle since t0
        tid = s.submit(agent="a1")
        task = s.q.claim(agent)
        assert task is not None and task.id == tid
        await s.sched.step(now=t0 + 5)
        await s.sched.step(now=t0 + 25)  # within the lease (30 s): still busy
        assert s.q.find(tid).status == "in_progress"
        assert s.running("a1")
        await s.q.complete(agent, tid, task.attempts, "", [])
        await s.sched.step(now=t0 + 26)  # idle again, since now
        await s.sched.step(now=t0 + 35)
        await s.w.reg.settle()
        assert s.running("a1")  # idle 9 s, though 35 s since it was first idle
        await s.sched.step(now=t0 + 36)
        await s.w.reg.settle()
        assert not s.running("a1")

    asyncio.run(main())


def test_only_the_idle_agent_is_stopped(tmp_path: Path) -> None:
    async def main() -> None:
        s = S(tmp_path, idle_timeout=10)
        await s.agent("busy", running=True)
        await s.agent("idle", running=True)
        s.submit(agent="busy")
        t0 = time.time()
        await s.sched.step(now=t0)
        await s.sched.step(now=t0 + 10)
        await s.w.reg.settle()
        assert s.running("busy") and not s.running("idle")
        assert [e.agent for e in s.audit("agent.stop")] == ["idle"]

    asyncio.run(main())


# ------------------------------------------------------------------ leases
def test_an_expired_lease_is_retried_by_step(tmp_path: Path) -> None:
    async def main() -> None:
        s = S(tmp_path)
        agent = await s.agent("a1")
        tid = s.submit()
        s.q.assign()
        claimed = s.q.claim(agent)
        assert claimed is not None and claimed.id == tid
        expires = s.q.find(tid).lease_expires
        await s.sched.step(now=expires - 1)
        assert s.q.find(tid).status == "in_progress"
        await s.sched.step(now=expires + 1)
        await s.w.reg.settle()
        task = s.q.find(tid)
        assert (task.status, task.attempts) == ("pending", 1)
        assert task.not_before > expires + 1  # retried after a backoff
        (lapse,) = s.audit("task.lease_expired")
        assert lapse.detail["task_id"] == tid and lapse.result == "retrying"

    asyncio.run(main())


def test_an_expired_lease_on_the_last_attempt_is_dead_lettered(tmp_path: Path) -> None:
    async def main() -> None:
        s = S(tmp_path)
        agent = await s.agent("a1")
        tid = s.submit(agent="a1", max_attempts=1)
        assert s.q.claim(agent) is not None
        await s.sched.step(now=s.q.find(tid).lease_expires + 1)
        await s.w.reg.settle()
        assert s.q.find(tid).status == "dead_lettered"

    asyncio.run(main())


# ------------------------------------------------------------------ what wakes run()
@pytest.fixture
def no_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    """run()'s regular tick out of reach: only a wake-up can make it pass."""
    monkeypatch.setattr(scheduler_mod, "TICK", 3600.0)


WAKERS = {
    "kick": lambda s, tid: s.sched.kick(),
    "TaskChanged": lambda s, tid: s.w.reg.events.publish(
        TaskChanged(s.q.find(tid), "task.created")
    ),
    "UnitStateChanged": lambda s, tid: s.w.reg.events.publish(UnitStateChanged("a1", "inactive")),
}


@pytest.mark.parametrize("waker", list(WAKERS))
def test_run_makes_a_pass_when_woken(tmp_path: Path, no_tick: None, waker: str) -> None:
    async def main() -> None:
        s = S(tmp_path)
        await s.agent("a1")
        tid = s.submit(agent="a1")
        started = asyncio.Event()
        s.w.reg.events.subscribe(JobFinished, lambda e: e.operation == "start" and started.set())
        s.sched._kick.clear()  # whatever submit did: the wake-up under test only
        loop = asyncio.create_task(s.sched.run())
        try:
            WAKERS[waker](s, tid)
            await asyncio.wait_for(started.wait(), GUARD)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
            await s.w.reg.settle()
        assert s.running("a1")

    asyncio.run(main())


def test_a_failed_pass_does_not_end_run(tmp_path: Path, no_tick: None) -> None:
    async def main() -> None:
        s = S(tmp_path)
        await s.agent("a1")
        s.submit(agent="a1")
        failed, started = asyncio.Event(), asyncio.Event()
        real_list_units = s.w.units.list_units

        async def list_units(pattern: str) -> list[tuple[str, str]]:
            if not failed.is_set():
                failed.set()
                raise RuntimeError("systemd went away")
            return await real_list_units(pattern)

        s.w.units.list_units = list_units  # type: ignore[method-assign]
        s.w.reg.events.subscribe(JobFinished, lambda e: started.set())
        loop = asyncio.create_task(s.sched.run())
        try:
            s.sched.kick()
            await asyncio.wait_for(failed.wait(), GUARD)
            s.sched.kick()
            await asyncio.wait_for(started.wait(), GUARD)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
            await s.w.reg.settle()
        assert s.running("a1")

    asyncio.run(main())


def test_a_task_submitted_to_the_queue_wakes_run(tmp_path: Path, no_tick: None) -> None:
    """The queue publishes TaskChanged once the submission commits; no kick by hand."""

    async def main() -> None:
        s = S(tmp_path)
        await s.agent("a1")
        started = asyncio.Event()
        s.w.reg.events.subscribe(JobFinished, lambda e: e.operation == "start" and started.set())
        loop = asyncio.create_task(s.sched.run())
        try:
            assert not s.sched._kick.is_set()  # nothing woke run() yet
            s.submit(agent="a1")
            assert s.sched._kick.is_set()
            await asyncio.wait_for(started.wait(), GUARD)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
            await s.w.reg.settle()
        assert s.running("a1")

    asyncio.run(main())
