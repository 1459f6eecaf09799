"""The agent runtime (agentd/runtime.py) against a fake Runtime proxy and a fake
executor: registering, claiming within the WIP limit, reporting (and retrying
reports), heartbeats that abort tasks, and Think errors as ModelError.

The fake proxy answers what agentd.api.runtime.RuntimeObject answers (a{sv}
built by agentd.api.marshal.variants); D-Bus errors are agentd.api.errors
classes, transport failures sdbus errors. Nothing here sleeps: each test waits
for the call or callback it expects (bounded by GUARD only so a broken runtime
fails instead of hanging).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from sdbus import SdBusLibraryError
from sdbus.dbus_exceptions import DbusNoReplyError, DbusServiceUnknownError

from agentd import runtime as runtime_mod
from agentd.agentloop.host import HostError
from agentd.api import errors as api_errors
from agentd.api.marshal import variants
from agentd.executor import Executor, ModelError, Outcome
from agentd.runtime import CLAIM_WAIT_MS, FINAL_ERRORS, Runtime, thinker

GUARD = 10.0  # seconds: only a broken runtime ever gets near this
SETTINGS = {"wip": 1, "tools": ["files", "shell"], "heartbeat_interval": 10, "lease_seconds": 30}


def dbus_error(short: str, message: str = "refused") -> Exception:
    """The exception sdbus raises for org.agentos.agentd1.Error.SHORT."""
    return api_errors.BY_NAME[api_errors.PREFIX + short](message)


async def until(awaitable: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(awaitable, GUARD)


def task_info(task_id: int, attempt: int = 1, title: str = "t") -> dict[str, Any]:
    """ClaimTasks' task, as plain values (the fake sends them as a{sv})."""
    return {
        "id": task_id,
        "attempt": attempt,
        "title": title,
        "description": "",
        "exec": "",
        "needs": [],
        "notes": [],
        "lease_seconds": 30,
    }


class FakeProxy:
    """The RuntimeInterface proxy: scripted answers, every call recorded."""

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = dict(SETTINGS if settings is None else settings)
        self.register_errors: list[BaseException] = []
        self.registers = 0
        # ClaimTasks: a task dict (found), None (timed out: not found), or an exception
        self.claims: asyncio.Queue[Any] = asyncio.Queue()
        self.claim_timeouts: list[int] = []
        self.report_errors: list[BaseException] = []
        self.reports: list[tuple[Any, ...]] = []
        self.reported: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        # Heartbeat: (abort, interval) answers or exceptions, then ([], interval)
        self.heartbeats: list[Any] = []
        self.heartbeat_calls = 0
        self.interval = 0
        self.think_calls: list[tuple[str, dict[str, Any]]] = []
        self.think_answer: Any = {
            "text": "hi",
            "finish_reason": "stop",
            "prompt_tokens": 3,
            "completion_tokens": 1,
        }

    async def register_and_claim(
        self, max: int
    ) -> tuple[str, str, dict[str, tuple[str, object]], list[dict[str, tuple[str, object]]]]:
        self.registers += 1
        if self.register_errors:
            raise self.register_errors.pop(0)
        return "scribe", "/org/agentos/agentd1/agent/scribe", variants(self.settings), []

    async def heartbeat(self) -> tuple[list[int], int]:
        self.heartbeat_calls += 1
        answer = self.heartbeats.pop(0) if self.heartbeats else ([], self.interval)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def claim_tasks(self, max: int, timeout_ms: int) -> list[dict[str, tuple[str, object]]]:
        """One scripted item per call (the runtime asks for its free slots)."""
        self.claim_timeouts.append(timeout_ms)
        item = await self.claims.get()
        if isinstance(item, BaseException):
            raise item
        if item is None:
            return []
        return [variants(item)]

    async def _report(self, *call: Any) -> None:
        if self.report_errors:
            self.reports.append(("refused", *call))
            raise self.report_errors.pop(0)
        self.reports.append(call)
        self.reported.put_nowait(call)

    async def complete_task(
        self, task: int, attempt: int, result: str, artifacts: list[tuple[str, str]]
    ) -> None:
        await self._report("complete", task, attempt, result, artifacts)

    async def complete_and_claim(
        self,
        task: int,
        attempt: int,
        result: str,
        artifacts: list[tuple[str, str]],
        max: int,
        timeout_ms: int,
    ) -> list[dict[str, tuple[str, object]]]:
        """A completion that claims nothing more (tests/unit/test_runtime_claims.py
        covers the tasks it brings)."""
        await self._report("complete", task, attempt, result, artifacts)
        return []

    async def fail_task(
        self, task: int, attempt: int, error: str, result: str, artifacts: list[tuple[str, str]]
    ) -> None:
        await self._report("fail", task, attempt, error, result, artifacts)

    async def block_task(self, task: int, attempt: int, reason: str) -> None:
        await self._report("block", task, attempt, reason)

    async def think(self, messages: str, options: dict[str, tuple[str, object]]) -> str:
        self.think_calls.append((messages, options))
        if isinstance(self.think_answer, BaseException):
            raise self.think_answer
        return json.dumps(self.think_answer)


class FakeExecutor:
    """run(task) -> Outcome, abort(task_id) -> bool; with hold=True every run
    waits until the test releases it, so the test decides when tasks end."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.outcomes: dict[int, Outcome | BaseException] = {}
        self.ran: list[dict[str, Any]] = []
        self.started: asyncio.Queue[int] = asyncio.Queue()
        self.gates: dict[int, asyncio.Future[None]] = {}
        self.active = 0
        self.most = 0
        self.abortable: set[int] = set()
        self.aborted: asyncio.Queue[int] = asyncio.Queue()

    async def run(self, task: dict[str, Any]) -> Outcome:
        self.ran.append(task)
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            if self.hold:
                self.gates[task["id"]] = asyncio.get_running_loop().create_future()
            self.started.put_nowait(task["id"])
            if self.hold:
                await self.gates[task["id"]]
            outcome = self.outcomes.get(task["id"], Outcome("completed", result={"ok": 1}))
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        finally:
            self.active -= 1

    def release(self, task_id: int) -> None:
        self.gates[task_id].set_result(None)

    def abort(self, task_id: int) -> bool:
        self.aborted.put_nowait(task_id)
        return task_id in self.abortable


async def registered(proxy: FakeProxy) -> Runtime:
    runtime = Runtime(proxy)  # type: ignore[arg-type]
    assert await runtime.register()
    return runtime


async def finish(runtime: Runtime, *jobs: asyncio.Task[Any]) -> None:
    """Stop the runtime and end what the test started (nothing may stay pending)."""
    runtime.stop.set()
    pending = [*jobs, *runtime.running.values()]
    for job in pending:
        job.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def record_sleeps(runtime: Runtime, stop_after: int | None = None) -> list[float]:
    """Replace Runtime._sleep (a wait on the stop event) by a recorder that
    returns at once; set stop after STOP_AFTER sleeps."""
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if stop_after is not None and len(sleeps) >= stop_after:
            runtime.stop.set()
        await asyncio.sleep(0)

    runtime._sleep = sleep  # type: ignore[method-assign]
    return sleeps


# ------------------------------------------------------------------ register
def test_register_retries_until_agentd_answers_and_keeps_the_settings() -> None:
    async def main() -> None:
        proxy = FakeProxy({**SETTINGS, "wip": 3, "heartbeat_interval": 7})
        proxy.register_errors = [
            DbusServiceUnknownError("agentd1 is not running"),
            SdBusLibraryError("connection reset"),
            DbusNoReplyError("no reply"),
        ]
        runtime = Runtime(proxy)  # type: ignore[arg-type]
        sleeps = record_sleeps(runtime)
        assert await runtime.register() is True
        assert proxy.registers == 4
        assert sleeps == [0.5, 1.0, 2.0]  # backoff between attempts
        assert runtime.name == "scribe"
        assert runtime.settings == {
            "wip": 3,
            "tools": ["files", "shell"],
            "heartbeat_interval": 7,
            "lease_seconds": 30,
        }

    asyncio.run(main())


def test_a_runtime_that_waits_for_its_network_registers_without_claiming() -> None:
    """An online agent in its own namespace (agentd.usernet) must not hold a
    lease while its way out comes up: plain Register, no first tasks."""

    async def main() -> None:
        class Plain(FakeProxy):
            async def register(self) -> Any:
                self.registers += 1
                return "scribe", "/org/agentos/agentd1/agent/scribe", variants(self.settings)

            async def register_and_claim(self, max: int) -> Any:
                raise AssertionError("claimed before its network was up")

        runtime = Runtime(Plain())  # type: ignore[arg-type]
        assert await runtime.register(claim=False) is True
        assert runtime.name == "scribe" and runtime.first == []

    asyncio.run(main())


def test_the_route_wait_looks_the_route_up_until_there_is_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Asked until slirp4netns has set the route; None once USERNET_WAIT_S passed."""
    answers = [False, False, False, True]
    monkeypatch.setattr(runtime_mod, "route_exists", lambda: answers.pop(0))
    waited = asyncio.run(runtime_mod.wait_for_route())
    assert waited is not None and answers == []
    monkeypatch.setattr(runtime_mod, "route_exists", lambda: False)
    monkeypatch.setattr(runtime_mod, "USERNET_WAIT_S", 0.05)
    assert asyncio.run(runtime_mod.wait_for_route()) is None


def test_a_route_lookup_sends_nothing_and_says_unreachable_without_a_route() -> None:
    """A UDP connect() in a namespace with no route: ENETUNREACH, so False;
    run in a fresh network namespace where one can be made (root here)."""
    import subprocess
    import sys

    code = "from agentd.runtime import route_exists; print(route_exists())"
    r = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", code], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"no network namespace here: {r.stderr.strip()}")
    assert r.stdout.strip() == "False"  # only loopback: no route to 192.0.2.1


def test_register_gives_up_when_stopped_while_agentd_is_away() -> None:
    async def main() -> None:
        class Away(FakeProxy):
            async def register_and_claim(self, max: int) -> Any:
                self.registers += 1
                runtime.stop.set()  # SIGTERM arrives while agentd is unreachable
                raise SdBusLibraryError("no bus")

        proxy = Away()
        runtime = Runtime(proxy)  # type: ignore[arg-type]
        assert await until(runtime.register()) is False
        assert proxy.registers == 1  # the real _sleep woke on stop: no second try
        assert runtime.name == "" and runtime.settings == {}

    asyncio.run(main())


# ------------------------------------------------------------------ work: claim, run, report
RESULT_ARG = {"complete": 3, "fail": 4}  # where each report carries its JSON result


def decoded(call: tuple[Any, ...]) -> tuple[Any, ...]:
    """CALL with its result JSON text parsed ("" stays "": no result)."""
    i = RESULT_ARG.get(call[0])
    if i is None or call[i] == "":
        return call
    return (*call[:i], json.loads(call[i]), *call[i + 1 :])


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (
            Outcome(
                "completed",
                result={"answer": "42", "n": [1, 2]},
                artifacts=[("out.txt", "artifacts/out.txt")],
            ),
            ("complete", 7, 3, {"answer": "42", "n": [1, 2]}, [("out.txt", "artifacts/out.txt")]),
        ),
        (Outcome("completed"), ("complete", 7, 3, "", [])),
        (
            Outcome(
                "failed",
                result={"exit_code": 2},
                error="command exited with status 2",
                artifacts=[("log", "artifacts/log")],
            ),
            (
                "fail",
                7,
                3,
                "command exited with status 2",
                {"exit_code": 2},
                [("log", "artifacts/log")],
            ),
        ),
        (Outcome("blocked", reason="needs an API key"), ("block", 7, 3, "needs an API key")),
        (RuntimeError("tool crashed"), ("fail", 7, 3, "executor error: tool crashed", "", [])),
    ],
    ids=["completed", "completed-empty", "failed", "blocked", "executor-raised"],
)
def test_work_claims_runs_and_reports_with_the_tasks_id_and_attempt(
    outcome: Outcome | BaseException, expected: tuple[Any, ...]
) -> None:
    async def main() -> None:
        proxy = FakeProxy()
        executor = FakeExecutor()
        executor.outcomes[7] = outcome
        runtime = await registered(proxy)
        proxy.claims.put_nowait(task_info(7, attempt=3, title="write it"))
        work = asyncio.get_running_loop().create_task(runtime.work(executor))  # type: ignore[arg-type]
        call = await until(proxy.reported.get())
        await finish(runtime, work)

        assert [(t["id"], t["attempt"], t["title"]) for t in executor.ran] == [(7, 3, "write it")]
        assert proxy.claim_timeouts[0] == CLAIM_WAIT_MS
        assert decoded(call) == expected  # the result goes over the bus as JSON text
        assert len(proxy.reports) == 1

    asyncio.run(main())


def test_work_never_runs_more_than_wip_tasks_at_once() -> None:
    async def main() -> None:
        proxy = FakeProxy({**SETTINGS, "wip": 2})
        executor = FakeExecutor(hold=True)
        runtime = await registered(proxy)
        for tid in range(1, 6):
            proxy.claims.put_nowait(task_info(tid))
        work = asyncio.get_running_loop().create_task(runtime.work(executor))  # type: ignore[arg-type]
        try:
            assert {await until(executor.started.get()) for _ in range(2)} == {1, 2}
            assert len(proxy.claim_timeouts) == 2  # no claim while both slots are taken
            assert set(runtime.running) == {1, 2}
            # each task that ends frees its slot for exactly one more
            for done, nxt in ((1, 3), (2, 4), (3, 5)):
                executor.release(done)
                assert await until(executor.started.get()) == nxt
            for done in (4, 5):
                executor.release(done)
            reported = [await until(proxy.reported.get()) for _ in range(5)]
        finally:
            await finish(runtime, work)
        assert executor.most == 2
        assert sorted(call[1] for call in reported) == [1, 2, 3, 4, 5]
        assert [t["id"] for t in executor.ran] == [1, 2, 3, 4, 5]

    asyncio.run(main())


def test_work_claims_again_after_an_empty_long_poll_or_a_failed_claim() -> None:
    async def main() -> None:
        proxy = FakeProxy()  # wip 1: a slot not given back would stop all work
        executor = FakeExecutor()
        runtime = await registered(proxy)
        sleeps = record_sleeps(runtime)
        proxy.claims.put_nowait(None)  # the long poll timed out
        proxy.claims.put_nowait(SdBusLibraryError("connection reset"))
        proxy.claims.put_nowait(task_info(5))
        work = asyncio.get_running_loop().create_task(runtime.work(executor))  # type: ignore[arg-type]
        call = await until(proxy.reported.get())
        await finish(runtime, work)
        assert call[:3] == ("complete", 5, 1)
        assert sleeps == [1]  # a pause after the failed claim only
        assert len(proxy.claim_timeouts) >= 3

    asyncio.run(main())


def test_a_refused_report_frees_the_slot_for_the_next_task() -> None:
    async def main() -> None:
        proxy = FakeProxy()  # wip 1
        executor = FakeExecutor()
        runtime = await registered(proxy)
        proxy.report_errors = [dbus_error("LeaseExpired", "attempt 1 is no longer current")]
        proxy.claims.put_nowait(task_info(1))
        proxy.claims.put_nowait(task_info(2))
        work = asyncio.get_running_loop().create_task(runtime.work(executor))  # type: ignore[arg-type]
        call = await until(proxy.reported.get())
        await finish(runtime, work)
        assert proxy.reports[0][:3] == ("refused", "complete", 1)
        assert call[:2] == ("complete", 2)

    asyncio.run(main())


def test_shutdown_aborts_the_running_tasks() -> None:
    async def main() -> None:
        proxy = FakeProxy({**SETTINGS, "wip": 2})
        executor = FakeExecutor(hold=True)
        runtime = await registered(proxy)
        proxy.claims.put_nowait(task_info(8))
        proxy.claims.put_nowait(task_info(9))
        work = asyncio.get_running_loop().create_task(runtime.work(executor))  # type: ignore[arg-type]
        try:
            for _ in range(2):
                await until(executor.started.get())
            await runtime.shutdown(executor)  # type: ignore[arg-type]
            assert {executor.aborted.get_nowait() for _ in range(2)} == {8, 9}
        finally:
            await finish(runtime, work)

    asyncio.run(main())


# ------------------------------------------------------------------ report retries
@pytest.fixture
def fast_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """asyncio.sleep in agentd.runtime (report's pause between tries) without the wait."""
    real_sleep = asyncio.sleep
    delays: list[float] = []

    async def sleep(delay: float, result: Any = None) -> Any:
        delays.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(runtime_mod.asyncio, "sleep", sleep)
    return delays


@pytest.mark.parametrize("status", ["completed", "failed", "blocked"])
def test_a_report_is_retried_after_transport_errors(status: str, fast_sleep: list[float]) -> None:
    async def main() -> None:
        proxy = FakeProxy()
        runtime = Runtime(proxy)  # type: ignore[arg-type]
        proxy.report_errors = [
            SdBusLibraryError("connection reset"),
            DbusNoReplyError("agentd did not answer"),
            DbusServiceUnknownError("agentd1 is restarting"),
            dbus_error("Conflict", "task 4 changed meanwhile"),
        ]
        runtime.stop.set()  # stopping does not cut a report short
        outcome = Outcome(status, result={"x": 1}, error="e", reason="r")
        await until(runtime.report(task_info(4, attempt=2), outcome))
        assert len(proxy.reports) == 5
        assert [r[0] for r in proxy.reports[:4]] == ["refused"] * 4
        assert proxy.reports[4][1:3] == (4, 2)
        assert (
            proxy.reports[4][0]
            == {"completed": "complete", "failed": "fail", "blocked": "block"}[status]
        )
        assert fast_sleep == [0.5, 1.0, 2.0, 4.0]

    asyncio.run(main())


@pytest.mark.parametrize("short", FINAL_ERRORS)
def test_a_report_is_given_up_on_a_final_error(short: str, fast_sleep: list[float]) -> None:
    async def main() -> None:
        proxy = FakeProxy()
        runtime = Runtime(proxy)  # type: ignore[arg-type]
        proxy.report_errors = [dbus_error(short)]
        await until(runtime.report(task_info(4, attempt=2), Outcome("completed")))
        assert [r[:3] for r in proxy.reports] == [("refused", "complete", 4)]
        assert fast_sleep == []

    asyncio.run(main())


@pytest.mark.parametrize("short", ["InvalidArgument", "PermissionDenied"])
def test_refused_artifacts_fail_the_task_without_them(short: str, fast_sleep: list[float]) -> None:
    """agentd refusing the files (a link, too big) must still end the task: else its
    lease would be renewed for ever. It is failed, saying why, with no artifacts."""

    async def main() -> None:
        proxy = FakeProxy()
        runtime = Runtime(proxy)  # type: ignore[arg-type]
        proxy.report_errors = [dbus_error(short)]
        outcome = Outcome(
            "completed", result={"exit_code": 0}, artifacts=[("big", "artifacts/big")]
        )
        await until(runtime.report(task_info(4, attempt=2), outcome))
        refused, failed = proxy.reports
        assert refused[:3] == ("refused", "complete", 4)
        assert failed[:3] == ("fail", 4, 2) and failed[3].startswith("artifacts refused: ")
        assert json.loads(failed[4]) == {"exit_code": 0} and failed[5] == []

    asyncio.run(main())


def test_a_refusal_without_artifacts_is_still_final(fast_sleep: list[float]) -> None:
    async def main() -> None:
        proxy = FakeProxy()
        runtime = Runtime(proxy)  # type: ignore[arg-type]
        proxy.report_errors = [dbus_error("InvalidArgument")]
        await until(runtime.report(task_info(4, attempt=2), Outcome("completed")))
        assert [r[:3] for r in proxy.reports] == [("refused", "complete", 4)]

    asyncio.run(main())


def test_the_executor_leaves_out_what_agentd_would_refuse(tmp_path: Path) -> None:
    """A file over the per-artifact limit (a sparse 2 GiB one here) stays behind, named
    in the result, and the rest is reported: one big file does not sink the report."""
    executor = Executor(tmp_path, ["shell"])
    command = "truncate -s 2G $AGENTD_ARTIFACTS/huge && echo hi > $AGENTD_ARTIFACTS/small"
    outcome = asyncio.run(executor.run({"id": 1, "exec": command}))
    assert outcome.status == "completed", outcome
    assert outcome.artifacts == [("small", "artifacts/small")]
    assert outcome.result["artifacts_left_out"] == ["huge"]


def test_final_errors_are_errors_agentd_has() -> None:
    for short in FINAL_ERRORS:
        assert api_errors.PREFIX + short in api_errors.BY_NAME


# ------------------------------------------------------------------ heartbeat
def test_heartbeat_aborts_the_tasks_agentd_lists() -> None:
    async def main() -> None:
        proxy = FakeProxy({**SETTINGS, "heartbeat_interval": 0})
        proxy.heartbeats = [
            SdBusLibraryError("connection reset"),  # a miss is not fatal
            ([4, 9], 0),
            ([12], 0),
        ]
        executor = FakeExecutor()
        executor.abortable = {4, 12}  # 9 already ended here: abort() says False
        runtime = await registered(proxy)
        beat = asyncio.get_running_loop().create_task(runtime.heartbeat(executor))  # type: ignore[arg-type]
        try:
            aborted = [await until(executor.aborted.get()) for _ in range(3)]
        finally:
            runtime.stop.set()
            await until(beat)  # stop ends the loop by itself
        assert aborted == [4, 9, 12]
        assert proxy.heartbeat_calls >= 3

    asyncio.run(main())


def test_heartbeat_waits_the_interval_agentd_asks_for() -> None:
    async def main() -> None:
        proxy = FakeProxy({**SETTINGS, "heartbeat_interval": 7})
        proxy.interval = 3  # reconfigured meanwhile
        runtime = await registered(proxy)
        sleeps = record_sleeps(runtime, stop_after=3)
        await until(runtime.heartbeat(FakeExecutor()))  # type: ignore[arg-type]
        assert sleeps == [7, 3, 3]

    asyncio.run(main())


# ------------------------------------------------------------------ thinker
def test_thinker_sends_typed_options_and_returns_the_answer() -> None:
    async def main() -> None:
        proxy = FakeProxy()
        think = thinker(proxy)  # type: ignore[arg-type]
        messages = [{"role": "user", "content": "hello"}]
        answer = await think(
            messages,
            {
                "max_tokens": 64,
                "temperature": 0.5,
                "json_schema": '{"type": "object"}',
                "task": 12,
                "unknown": "dropped",
            },
        )
        assert answer == proxy.think_answer
        ((sent, options),) = proxy.think_calls
        assert json.loads(sent) == messages
        assert options == {
            "max_tokens": ("u", 64),
            "temperature": ("d", 0.5),
            "json_schema": ("s", '{"type": "object"}'),
            "task": ("t", 12),
        }

    asyncio.run(main())


@pytest.mark.parametrize(
    "short", ["QuotaExceeded", "ModelUnavailable", "Overloaded", "InvalidArgument"]
)
def test_thinker_turns_a_dbus_error_into_a_model_error_with_its_short_name(short: str) -> None:
    async def main() -> None:
        proxy = FakeProxy()
        proxy.think_answer = dbus_error(short, "no tokens left today")
        with pytest.raises(ModelError) as raised:
            await thinker(proxy)([{"role": "user", "content": "hi"}], {})  # type: ignore[arg-type]
        assert raised.value.name == short
        assert str(raised.value) == "no tokens left today"

    asyncio.run(main())


def test_thinker_turns_a_transport_failure_into_a_failed_model_error() -> None:
    async def main() -> None:
        proxy = FakeProxy()
        proxy.think_answer = SdBusLibraryError("connection reset")
        with pytest.raises(ModelError) as raised:
            await thinker(proxy)([{"role": "user", "content": "hi"}], {})  # type: ignore[arg-type]
        assert raised.value.name == "Failed"
        assert "connection reset" in str(raised.value)

    asyncio.run(main())


# ------------------------------------------------------------------ the agent loop's host
def test_a_released_task_is_not_reported() -> None:
    """ask_owner, an approval, a deferral: agentd already moved the task."""

    async def main() -> None:
        proxy = FakeProxy()
        executor = FakeExecutor()
        executor.outcomes[7] = Outcome("released", reason="question: which disk?")
        executor.outcomes[8] = Outcome("completed", result={"answer": "x"})
        runtime = await registered(proxy)
        proxy.claims.put_nowait(task_info(7))
        proxy.claims.put_nowait(task_info(8))
        work = asyncio.get_running_loop().create_task(runtime.work(executor))  # type: ignore[arg-type]
        call = await until(proxy.reported.get())
        await finish(runtime, work)
        assert call[:2] == ("complete", 8)  # the slot was freed for the next task
        assert [r[1] for r in proxy.reports] == [8]

    asyncio.run(main())


class LoopProxy(FakeProxy):
    """FakeProxy with the agent loop's Runtime methods (HOST's and GATE's)."""

    def __init__(self) -> None:
        super().__init__()
        self.loop_calls: list[tuple[Any, ...]] = []
        self.errors: list[BaseException] = []
        self.approvals: Any = json.dumps({"rules": {"tools": ["shell"]}, "approvals": []})

    async def _loop(self, *call: Any) -> None:
        self.loop_calls.append(call)
        if self.errors:
            raise self.errors.pop(0)

    async def task_context(self, task: int) -> str:
        await self._loop("task_context", task)
        return json.dumps({"trace": [], "budget": 500})

    async def task_approvals(self, task: int) -> str:
        await self._loop("task_approvals", task)
        if isinstance(self.approvals, BaseException):
            raise self.approvals
        return str(self.approvals)

    async def record_step(self, task: int, attempt: int, step_json: str) -> None:
        await self._loop("record_step", task, attempt, json.loads(step_json))

    async def ask_owner(self, task: int, attempt: int, question: str) -> None:
        await self._loop("ask_owner", task, attempt, question)

    async def defer_task(self, task: int, attempt: int, seconds: float, reason: str) -> None:
        await self._loop("defer_task", task, attempt, seconds, reason)

    async def request_approval(self, task: int, attempt: int, tool: str, arguments: str) -> int:
        await self._loop("request_approval", task, attempt, tool, json.loads(arguments))
        return 41

    async def use_approval(self, approval: int, attempt: int) -> None:
        await self._loop("use_approval", approval, attempt)


def test_runtime_host_calls_the_runtime_methods(fast_sleep: list[float]) -> None:
    async def main() -> None:
        proxy = LoopProxy()
        host = runtime_mod.RuntimeHost(proxy)  # type: ignore[arg-type]
        ctx = await host.context(5)
        assert ctx == {"trace": [], "budget": 500, "rules": {"tools": ["shell"]}, "approvals": []}
        await host.record_step(5, 2, {"n": 1, "tool": "shell"})
        await host.ask_owner(5, 2, "which disk?")
        await host.defer(5, 2, 30, "busy")
        assert await host.request_approval(5, 2, "shell", {"command": "rm x"}) == 41
        await host.use_approval(41, 2)
        assert proxy.loop_calls[2:] == [
            ("record_step", 5, 2, {"n": 1, "tool": "shell"}),
            ("ask_owner", 5, 2, "which disk?"),
            ("defer_task", 5, 2, 30.0, "busy"),
            ("request_approval", 5, 2, "shell", {"command": "rm x"}),
            ("use_approval", 41, 2),
        ]
        assert (await host.think([{"role": "user", "content": "hi"}], {}))["text"] == "hi"

    asyncio.run(main())


def test_runtime_host_retries_while_agentd_is_away_and_types_refusals(
    fast_sleep: list[float],
) -> None:
    async def main() -> None:
        proxy = LoopProxy()
        host = runtime_mod.RuntimeHost(proxy)  # type: ignore[arg-type]
        proxy.errors = [SdBusLibraryError("connection reset"), DbusNoReplyError("restarting")]
        await host.record_step(5, 2, {"n": 1})
        assert len(proxy.loop_calls) == 3 and fast_sleep == [0.5, 1.0]
        proxy.errors = [dbus_error("LeaseExpired", "attempt 2 is no longer current")]
        with pytest.raises(HostError) as raised:
            await host.use_approval(41, 2)
        assert raised.value.name == "LeaseExpired"

    asyncio.run(main())


def test_runtime_host_without_approvals_on_agentd_has_no_rules(fast_sleep: list[float]) -> None:
    from sdbus.dbus_exceptions import DbusUnknownMethodError

    async def main() -> None:
        proxy = LoopProxy()
        proxy.approvals = DbusUnknownMethodError("no TaskApprovals")
        ctx = await runtime_mod.RuntimeHost(proxy).context(5)  # type: ignore[arg-type]
        assert ctx["rules"] == {} and ctx["approvals"] == []

    asyncio.run(main())
