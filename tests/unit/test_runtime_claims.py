"""The agent runtime's round trips (issue 11): it registers and claims its first
tasks in one call (RegisterAndClaim), long-polls ClaimTasks only for its free
slots, reports a completion with CompleteAndClaim (which refills that slot),
and never runs more than its wip at once.

Against a fake Runtime proxy that answers as agentd.api.runtime.RuntimeObject
does (a{sv} from agentd.api.marshal.variants) and a fake executor whose runs
end when the test says. Nothing sleeps: each test waits for the call it
expects (bounded by GUARD so a broken runtime fails instead of hanging).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from agentd.api import errors as api_errors
from agentd.api.marshal import variants
from agentd.executor import Outcome
from agentd.runtime import CLAIM_WAIT_MS, Runtime

GUARD = 10.0
SETTINGS = {"wip": 2, "tools": ["files"], "heartbeat_interval": 10, "lease_seconds": 30}
Wire = dict[str, tuple[str, object]]


async def until(awaitable: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(awaitable, GUARD)


def info(task_id: int, attempt: int = 1) -> dict[str, Any]:
    return {
        "id": task_id,
        "attempt": attempt,
        "title": f"t{task_id}",
        "description": "",
        "exec": "",
        "needs": [],
        "notes": [],
        "lease_seconds": 30,
    }


class Proxy:
    """The new calls, scripted: FIRST for RegisterAndClaim, NEXT[id] for the
    CompleteAndClaim of task id, the CLAIMS queue for ClaimTasks."""

    def __init__(self, first: list[int], wip: int = 2) -> None:
        self.settings = {**SETTINGS, "wip": wip}
        self.first = first
        self.next: dict[int, list[int] | BaseException] = {}
        self.claims: asyncio.Queue[list[int]] = asyncio.Queue()
        self.calls: list[tuple[Any, ...]] = []
        self.reported: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    async def register_and_claim(self, most: int) -> tuple[str, str, Wire, list[Wire]]:
        self.calls.append(("register_and_claim", most))
        path = "/org/agentos/agentd1/agent/scribe"
        return "scribe", path, variants(self.settings), [variants(info(t)) for t in self.first]

    async def claim_tasks(self, most: int, timeout_ms: int) -> list[Wire]:
        self.calls.append(("claim_tasks", most, timeout_ms))
        return [variants(info(t)) for t in await self.claims.get()]

    async def complete_and_claim(
        self,
        task: int,
        attempt: int,
        result: str,
        artifacts: list[tuple[str, str]],
        most: int,
        timeout_ms: int,
    ) -> list[Wire]:
        call = ("complete_and_claim", task, attempt, most, timeout_ms)
        self.calls.append(call)
        nxt = self.next.pop(task, [])
        self.reported.put_nowait(call)
        if isinstance(nxt, BaseException):
            raise nxt
        return [variants(info(t)) for t in nxt]

    async def _report(self, *call: Any) -> None:
        self.calls.append(call)
        self.reported.put_nowait(call)

    async def complete_task(
        self, task: int, attempt: int, result: str, artifacts: list[tuple[str, str]]
    ) -> None:
        await self._report("complete_task", task, attempt)

    async def fail_task(
        self, task: int, attempt: int, error: str, result: str, artifacts: list[tuple[str, str]]
    ) -> None:
        await self._report("fail_task", task, attempt)

    async def block_task(self, task: int, attempt: int, reason: str) -> None:
        await self._report("block_task", task, attempt)


class Executor:
    """Each run waits until the test releases it with an outcome."""

    def __init__(self) -> None:
        self.gates: dict[int, asyncio.Future[Outcome]] = {}
        self.started: asyncio.Queue[int] = asyncio.Queue()
        self.active = 0
        self.most = 0

    async def run(self, task: dict[str, Any]) -> Outcome:
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            self.gates[task["id"]] = asyncio.get_running_loop().create_future()
            self.started.put_nowait(task["id"])
            return await self.gates[task["id"]]
        finally:
            self.active -= 1

    def end(self, task_id: int, status: str = "completed") -> None:
        self.gates[task_id].set_result(Outcome(status, error="e", reason="r"))

    def abort(self, task_id: int) -> bool:
        return False


async def started(proxy: Proxy) -> tuple[Runtime, Executor, asyncio.Task[None]]:
    runtime = Runtime(proxy)  # type: ignore[arg-type]
    assert await runtime.register()
    executor = Executor()
    work = asyncio.get_running_loop().create_task(runtime.work(executor))  # type: ignore[arg-type]
    return runtime, executor, work


async def finish(runtime: Runtime, work: asyncio.Task[None]) -> None:
    runtime.stop.set()
    pending = [work, *runtime.running.values()]
    for job in pending:
        job.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def settle() -> None:
    """Let every ready callback run (the runtime reacts to what just happened)."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_registration_brings_the_first_tasks_and_claims_only_the_free_slots() -> None:
    async def main() -> None:
        proxy = Proxy(first=[1], wip=3)
        runtime, executor, work = await started(proxy)
        try:
            assert await until(executor.started.get()) == 1  # no claim call for it
            await settle()
            assert proxy.calls == [("register_and_claim", 0), ("claim_tasks", 2, CLAIM_WAIT_MS)]
            assert runtime.settings["wip"] == 3
        finally:
            await finish(runtime, work)

    asyncio.run(main())


def test_a_busy_runtime_makes_one_call_per_task() -> None:
    async def main() -> None:
        proxy = Proxy(first=[1], wip=1)
        proxy.next = {1: [2], 2: [3], 3: []}
        runtime, executor, work = await started(proxy)
        try:
            for tid in (1, 2, 3):
                assert await until(executor.started.get()) == tid
                executor.end(tid)
                assert (await until(proxy.reported.get()))[:2] == ("complete_and_claim", tid)
            await settle()
            assert proxy.calls == [
                ("register_and_claim", 0),
                ("complete_and_claim", 1, 1, 1, 0),  # its own slot, without waiting
                ("complete_and_claim", 2, 1, 1, 0),
                ("complete_and_claim", 3, 1, 1, 0),
                ("claim_tasks", 1, CLAIM_WAIT_MS),  # idle at last: the long poll
            ]
            assert executor.most == 1
        finally:
            await finish(runtime, work)

    asyncio.run(main())


def test_failed_and_blocked_tasks_free_their_slot_for_claim_tasks() -> None:
    async def main() -> None:
        proxy = Proxy(first=[1, 2], wip=2)
        runtime, executor, work = await started(proxy)
        try:
            assert {await until(executor.started.get()) for _ in range(2)} == {1, 2}
            await settle()
            assert [c[0] for c in proxy.calls] == ["register_and_claim"]  # full: no claim
            executor.end(1, "failed")
            assert await until(proxy.reported.get()) == ("fail_task", 1, 1)
            await settle()
            assert proxy.calls[-1] == ("claim_tasks", 1, CLAIM_WAIT_MS)
            proxy.claims.put_nowait([3])
            assert await until(executor.started.get()) == 3
            executor.end(2, "blocked")
            assert await until(proxy.reported.get()) == ("block_task", 2, 1)
            await settle()
            assert proxy.calls[-1] == ("claim_tasks", 1, CLAIM_WAIT_MS)
            assert executor.most == 2
        finally:
            await finish(runtime, work)

    asyncio.run(main())


def test_a_refused_completion_frees_the_slot_and_claims_through_the_loop() -> None:
    async def main() -> None:
        proxy = Proxy(first=[1], wip=1)
        proxy.next = {1: api_errors.BY_NAME[api_errors.PREFIX + "LeaseExpired"]("stale")}
        runtime, executor, work = await started(proxy)
        try:
            assert await until(executor.started.get()) == 1
            executor.end(1)
            assert (await until(proxy.reported.get()))[:2] == ("complete_and_claim", 1)
            await settle()
            assert proxy.calls[-1] == ("claim_tasks", 1, CLAIM_WAIT_MS)
            assert not runtime.running
        finally:
            await finish(runtime, work)

    asyncio.run(main())


def test_a_stopping_runtime_completes_without_claiming() -> None:
    async def main() -> None:
        proxy = Proxy(first=[])
        runtime = Runtime(proxy)  # type: ignore[arg-type]
        runtime.stop.set()
        assert await until(runtime.report(info(4, attempt=2), Outcome("completed"))) == []
        assert proxy.calls == [("complete_task", 4, 2)]

    asyncio.run(main())
