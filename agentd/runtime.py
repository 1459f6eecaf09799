"""The agent runtime: the process inside agent-NAME.service, as the agent's UID.

It speaks to agentd only through the Runtime interface, which identifies it by
its UID; it imports the interface definitions and the executor, nothing of the
engine or the store. A free-form task is worked on by the agent loop
(agentd.agentloop) through RuntimeHost, the Runtime methods it needs (Think,
TaskContext, TaskApprovals, RecordStep, AskOwner, DeferTask, RequestApproval,
UseApproval, Remember, Recall); a task the loop let go of (asked, awaiting approval, deferred,
cancelled) is not reported: agentd already moved it. The loop: register and
claim the first tasks in one call (RegisterAndClaim); then, while there is room (the template's WIP
limit), long-poll ClaimTasks for as many tasks as there are free slots, and
run each claimed task with the executor; heartbeat meanwhile (renewing the
leases, aborting what agentd says was cancelled); report each task once,
retrying the report while agentd is unreachable so that a restart of agentd
loses nothing. A completed task is reported with CompleteAndClaim, which
refills its slot in the same round trip: a busy runtime makes one call per
task. agentd bounds every claim by the agent's free wip, so the runtime
never holds more than its template allows even if its own count is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdbus import DbusFailedError, SdBusBaseError, sd_bus_open_system, set_default_bus

from .api import errors as _errors
from .api.interfaces.common import BUS_NAME, ROOT_PATH
from .api.interfaces.runtime import RuntimeInterface  # not the package's other four
from .api.marshal import plain
from .executor import Executor, HostError, ModelError, Outcome, Think

if TYPE_CHECKING:
    from .endpoint.app import Endpoint

CLAIM_WAIT_MS = 20_000  # under sd-bus's 25 s default method timeout
FINAL_ERRORS = ("LeaseExpired", "PermissionDenied", "NoSuchTask", "InvalidArgument")
ARTIFACT_REFUSALS = ("InvalidArgument", "PermissionDenied")  # then reported without them


def log(message: str) -> None:
    print(message, flush=True)


class Runtime:
    def __init__(self, proxy: RuntimeInterface) -> None:
        self.proxy = proxy
        self.stop = asyncio.Event()
        self.running: dict[int, asyncio.Task[None]] = {}
        self.name = ""
        self.settings: dict[str, Any] = {}
        self.first: list[dict[str, Any]] = []  # the tasks RegisterAndClaim gave
        self.freed = asyncio.Event()  # a task ended: its slot is free

    async def register(self, claim: bool = True) -> bool:
        """Register (with CLAIM, taking the first tasks in the same call: not
        when the runtime must wait for its network before it can work on any)."""
        delay = 0.5
        while not self.stop.is_set():
            try:
                if claim:
                    self.name, path, settings, tasks = await self.proxy.register_and_claim(0)
                else:
                    (self.name, path, settings), tasks = await self.proxy.register(), []
                self.settings = plain(settings)
                self.first = [plain(t) for t in tasks]
                log(
                    f"agent {self.name} online as uid {os.getuid()} ({path}), heartbeat "
                    f"every {self.settings['heartbeat_interval']}s, "
                    f"{self.settings['wip']} task(s) at a time"
                )
                return True
            except SdBusBaseError as e:  # agentd restarting: retry with backoff
                log(f"register failed ({_message(e)}); retrying in {delay:.1f}s")
                await self._sleep(delay)
                delay = min(delay * 2, 30)
        return False

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the runtime is told to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def heartbeat(self, executor: Executor) -> None:
        interval = int(self.settings.get("heartbeat_interval", 10))
        while not self.stop.is_set():
            await self._sleep(interval)
            try:
                abort, interval = await self.proxy.heartbeat()
                for task_id in abort:
                    if executor.abort(task_id):
                        log(f"task {task_id}: aborted (cancelled by its owner)")
            except SdBusBaseError as e:
                log(f"heartbeat failed: {_message(e)}")

    async def work(self, executor: Executor) -> None:
        """Run the first tasks, then long-poll ClaimTasks for the free slots."""
        wip = int(self.settings.get("wip", 1))
        first, self.first = self.first, []
        for task in first:
            self.start(executor, task)
        while not self.stop.is_set():
            self.freed.clear()
            free = wip - len(self.running)
            if free <= 0:
                await self.freed.wait()
                continue
            try:
                tasks = await self.proxy.claim_tasks(free, CLAIM_WAIT_MS)
            except SdBusBaseError as e:
                log(f"claim failed: {_message(e)}")
                await self._sleep(1)
                continue
            for info in tasks:
                self.start(executor, plain(info))

    def start(self, executor: Executor, task: dict[str, Any]) -> None:
        """Run TASK (claimed: agentd counts it against the wip) in its own job."""
        tid = task["id"]
        job = asyncio.get_running_loop().create_task(self.run_task(executor, task))
        self.running[tid] = job

        def finished(_job: asyncio.Task[None]) -> None:
            if self.running.get(tid) is _job:
                del self.running[tid]
            self.freed.set()

        job.add_done_callback(finished)

    async def run_task(self, executor: Executor, task: dict[str, Any]) -> None:
        log(f"task {task['id']} (attempt {task['attempt']}): {task['title']}")
        try:
            outcome = await executor.run(task)
        except Exception as e:  # a tool crashed: that is the task failing, not the runtime
            outcome = Outcome("failed", error=f"executor error: {e}")
        log(
            f"task {task['id']}: {outcome.status}"
            + (f" ({outcome.error or outcome.reason})" if outcome.error or outcome.reason else "")
        )
        if outcome.status == "released":  # agentd already moved it: nothing to report
            return
        for nxt in await self.report(task, outcome):
            self.start(executor, nxt)

    async def report(self, task: dict[str, Any], outcome: Outcome) -> list[dict[str, Any]]:
        """Report TASK's OUTCOME once; return the tasks claimed with it (a
        completion refills its own slot: CompleteAndClaim for one more, not
        waiting, unless the runtime is stopping)."""
        tid, attempt = task["id"], task["attempt"]
        result = json.dumps(outcome.result) if outcome.result else ""
        delay = 0.5
        while True:
            try:
                # One call instead of CompleteTask + ClaimTask: bench/tasks.py, 8 agents
                # x 100 tasks, one run (2026-11-30): 527 -> 690 cycles/s.
                if outcome.status == "completed" and not self.stop.is_set():
                    tasks = await self.proxy.complete_and_claim(
                        tid, attempt, result, outcome.artifacts, 1, 0
                    )
                    return [plain(t) for t in tasks]
                if outcome.status == "completed":
                    await self.proxy.complete_task(tid, attempt, result, outcome.artifacts)
                elif outcome.status == "blocked":
                    await self.proxy.block_task(tid, attempt, outcome.reason)
                else:
                    await self.proxy.fail_task(
                        tid, attempt, outcome.error, result, outcome.artifacts
                    )
                return []
            except DbusFailedError as e:
                name = _errors.short_name(e)
                if name in ARTIFACT_REFUSALS and outcome.artifacts and outcome.status != "blocked":
                    # agentd refused the files (a link, too big...): the task must still
                    # end, or its lease would be renewed for ever. Fail it, saying why.
                    log(f"task {tid}: artifacts refused: {_message(e)}")
                    outcome = Outcome(
                        "failed", result=outcome.result, error=f"artifacts refused: {_message(e)}"
                    )
                    continue
                if name in FINAL_ERRORS:
                    log(f"task {tid}: report refused: {_message(e)}")
                    return []
                log(f"task {tid}: report failed ({_message(e)}); retrying")
            except SdBusBaseError as e:
                log(f"task {tid}: report failed ({_message(e)}); retrying")
            await asyncio.sleep(delay)  # not cut short by stop: the result must get through
            delay = min(delay * 2, 10)

    async def shutdown(self, executor: Executor) -> None:
        for tid in list(self.running):
            executor.abort(tid)  # unfinished claims expire and are retried elsewhere


ENDPOINT_ADDRESS = ("127.0.0.1", 8080)  # the agent's own loopback (its network namespace)


async def serve_endpoint(proxy: RuntimeInterface, name: str) -> Endpoint | None:
    """The agent's OpenAI-compatible endpoint (agentd.endpoint), with a key made
    now and given only to the processes the runtime starts (their environment:
    the agent's UID alone may read it). None where the unit may not listen (an
    online profile: no listen(), no loopback; docs/openai.md)."""
    from .endpoint.app import BackendError, Endpoint, fd_events

    sig = {"max_tokens": "u", "temperature": "d", "json_schema": "s", "stop": "as", "persona": "b"}

    @contextlib.contextmanager
    def refusals() -> Iterator[None]:
        """agentd's refusals as the endpoint's BackendError (one translation)."""
        try:
            yield
        except DbusFailedError as e:
            raise BackendError(_errors.short_name(e), _message(e)) from None
        except SdBusBaseError as e:
            raise BackendError("ModelUnavailable", _message(e)) from None

    async def backend(messages: list[dict[str, str]], options: dict[str, Any]) -> Any:
        wire = {k: (sig[k], v) for k, v in options.items() if k in sig}
        with refusals():
            return fd_events(await proxy.think_stream(json.dumps(messages), wire))

    async def embedder(texts: list[str]) -> dict[str, Any]:
        with refusals():
            result: dict[str, Any] = json.loads(await proxy.embed(texts))
        return result

    key = "sk-agent-" + os.urandom(24).hex()
    endpoint = Endpoint(backend, key, f"agent {name}", embedder)
    host, port = os.environ.get("AGENTD_OPENAI_HOST", ENDPOINT_ADDRESS[0]), ENDPOINT_ADDRESS[1]
    try:
        port = await endpoint.start(host, int(os.environ.get("AGENTD_OPENAI_PORT", port)))
    except OSError as e:
        log(f"OpenAI-compatible endpoint not served: {e.strerror or e}")
        return None
    os.environ["OPENAI_BASE_URL"] = f"http://{host}:{port}/v1"
    os.environ["OPENAI_API_KEY"] = key
    log(f"OpenAI-compatible endpoint on http://{host}:{port}/v1")
    return endpoint


def thinker(proxy: RuntimeInterface) -> Think:
    """Runtime.Think as the executor's think(messages, options)."""

    async def think(messages: list[dict[str, str]], options: dict[str, Any]) -> dict[str, Any]:
        sig = {"max_tokens": "u", "temperature": "d", "json_schema": "s", "task": "t", "stop": "as"}
        wire = {k: (sig[k], v) for k, v in options.items() if k in sig}
        try:
            answer: dict[str, Any] = json.loads(await proxy.think(json.dumps(messages), wire))
            return answer
        except DbusFailedError as e:
            raise ModelError(_errors.short_name(e), _message(e)) from None
        except SdBusBaseError as e:
            raise ModelError("Failed", _message(e)) from None

    return think


HOST_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0)  # seconds between tries while agentd is away
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"


class RuntimeHost:
    """The agent loop's TaskHost (agentd.agentloop.host) over the Runtime methods.
    A call is retried while agentd is unreachable (a restart loses nothing);
    agentd's refusals are HostError (or ModelError for Think). An agentd
    without TaskApprovals (no approval rules) gives no rules."""

    def __init__(self, proxy: RuntimeInterface) -> None:
        self.proxy = proxy
        self._think = thinker(proxy)

    async def think(
        self, messages: list[dict[str, str]], options: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._think(messages, options)

    async def _call(self, method: str, *args: Any) -> Any:
        for delay in (*HOST_RETRIES, None):
            try:
                return await getattr(self.proxy, method)(*args)
            except DbusFailedError as e:
                name = getattr(e, "dbus_error_name", "")
                if name.startswith(_errors.PREFIX) or name == UNKNOWN_METHOD:
                    raise HostError(_errors.short_name(e), _message(e)) from None
                if delay is None:  # NoReply, ServiceUnknown...: agentd away
                    raise HostError(_errors.short_name(e), _message(e)) from None
                log(f"{method} failed ({_message(e)}); retrying")
                await asyncio.sleep(delay)
            except SdBusBaseError as e:
                if delay is None:
                    raise HostError("Failed", _message(e)) from None
                log(f"{method} failed ({_message(e)}); retrying")
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def context(self, task: int) -> dict[str, Any]:
        ctx: dict[str, Any] = json.loads(await self._call("task_context", task) or "{}")
        try:
            gates = json.loads(await self._call("task_approvals", task) or "{}")
        except HostError as e:
            if e.name != UNKNOWN_METHOD:
                raise
            gates = {}
        ctx["rules"] = gates.get("rules") or {}
        ctx["approvals"] = gates.get("approvals") or []
        shown = [m["id"] for m in ctx.get("messages") or [] if isinstance(m, dict)]
        if shown:  # in the task's first prompt from now on: read
            await self.ack(shown)
        return ctx

    async def send(self, to: str, subject: str, body: str) -> int:
        return int(await self._call("send", to, subject, body))

    async def receive(self, most: int, timeout_ms: int) -> list[dict[str, Any]]:
        got = json.loads(await self._call("receive", most, timeout_ms) or "[]")
        return got if isinstance(got, list) else []

    async def ack(self, ids: list[int]) -> int:
        return int(await self._call("ack", ids))

    async def record_step(self, task: int, attempt: int, step: dict[str, Any]) -> None:
        await self._call("record_step", task, attempt, json.dumps(step))

    async def ask_owner(self, task: int, attempt: int, question: str) -> None:
        await self._call("ask_owner", task, attempt, question)

    async def defer(self, task: int, attempt: int, seconds: float, reason: str) -> None:
        await self._call("defer_task", task, attempt, float(seconds), reason)

    async def request_approval(
        self, task: int, attempt: int, tool: str, arguments: dict[str, Any]
    ) -> int:
        return int(await self._call("request_approval", task, attempt, tool, json.dumps(arguments)))

    async def use_approval(self, approval: int, attempt: int) -> None:
        await self._call("use_approval", approval, attempt)

    async def delegate(self, task: int, attempt: int, steps: list[dict[str, str]]) -> list[int]:
        return [int(i) for i in await self._call("delegate", task, attempt, json.dumps(steps))]

    async def delegated(self, task: int, timeout_ms: int) -> dict[str, Any]:
        got = json.loads(await self._call("delegated", task, timeout_ms) or "{}")
        return got if isinstance(got, dict) else {}

    async def remember(self, text: str, kind: str, task: int) -> dict[str, Any]:
        result = json.loads(await self._call("remember", text, kind, task) or "{}")
        return result if isinstance(result, dict) else {}

    async def recall(self, query: str, k: int, task: int) -> list[dict[str, Any]]:
        hits = json.loads(await self._call("recall", query, k, task) or "[]")
        return [h for h in hits if isinstance(h, dict)] if isinstance(hits, list) else []


def _message(e: BaseException) -> str:
    args = getattr(e, "args", ())
    return str(args[-1]) if args else type(e).__name__


USERNET_WAIT_S = 10.0  # agentd starts slirp4netns before Register answers: ms, measured
ROUTE_PROBE = ("192.0.2.1", 9)  # TEST-NET-1 (RFC 5737): looked up, never sent to


async def wait_for_route() -> float | None:
    """Seconds until a route out exists (agentd.usernet's slirp4netns configures
    it just after Register answers), or None after USERNET_WAIT_S. A UDP
    connect() looks the route up and sends nothing; /proc/net is not in the
    unit (ProcSubset=pid)."""
    started = time.monotonic()
    while not route_exists():
        if time.monotonic() - started > USERNET_WAIT_S:
            return None
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def route_exists() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(ROUTE_PROBE)
            return True
        except OSError:  # ENETUNREACH: not yet
            return False


THINK_TIMEOUT_S = 180  # sd-bus's default 25 s method timeout is too short for Think


async def run() -> int:
    # read by sd-bus when the connection is made: the default for every call
    os.environ.setdefault("SYSTEMD_BUS_TIMEOUT", str(THINK_TIMEOUT_S))
    bus = sd_bus_open_system()
    set_default_bus(bus)
    runtime = Runtime(RuntimeInterface.new_proxy(BUS_NAME, ROOT_PATH, bus))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stop.set)
    interface = os.environ.get("AGENTD_USERNET")  # agentd.sandbox: online, own namespace
    if not await runtime.register(claim=not interface):
        return 0
    if interface:  # its tasks are claimed once the way out is up (or given up on)
        waited = await wait_for_route()
        if waited is None:
            log(f"no route out through {interface} after {USERNET_WAIT_S:.0f} s: offline")
        else:
            log(f"network up through {interface} after {waited * 1000:.0f} ms")
    endpoint = await serve_endpoint(runtime.proxy, runtime.name)
    home = Path(os.environ.get("HOME", os.getcwd()))
    executor = Executor(
        home,
        list(runtime.settings.get("tools", [])),
        RuntimeHost(runtime.proxy),
        runtime.settings,
    )
    workers = [
        loop.create_task(runtime.heartbeat(executor)),
        loop.create_task(runtime.work(executor)),
    ]
    program = None
    if runtime.settings.get("program"):  # the template's program (agentd.program)
        from .program import Program

        program = Program(home, runtime.name, list(runtime.settings["program"]), log)
        workers.append(loop.create_task(program.supervise()))
    await runtime.stop.wait()
    log(f"agent {runtime.name} stopping")
    if program is not None:
        await program.stop()
    await runtime.shutdown(executor)
    for w in workers:
        w.cancel()
    await asyncio.wait(workers, timeout=2)  # a D-Bus call in flight must not hold us
    if endpoint is not None:
        await endpoint.close()
    return 0


def main() -> int:
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
