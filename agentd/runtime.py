"""The agent runtime: the process inside agent-NAME.service, as the agent's UID.

It speaks to agentd only through the Runtime interface, which identifies it by
its UID; it imports the interface definitions and the executor, nothing of the
engine or the store. The loop: register; then, while there is room (the
template's WIP limit), long-poll ClaimTask and run each claimed task with the
executor; heartbeat meanwhile (renewing the leases, aborting what agentd says
was cancelled); report each task once, retrying the report while agentd is
unreachable so that a restart of agentd loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from sdbus import DbusFailedError, SdBusBaseError, sd_bus_open_system, set_default_bus

from .api import errors as _errors
from .api.interfaces import BUS_NAME, ROOT_PATH, RuntimeInterface
from .api.marshal import plain
from .executor import Executor, ModelError, Outcome, Think

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

    async def register(self) -> bool:
        delay = 0.5
        while not self.stop.is_set():
            try:
                self.name, path, settings = await self.proxy.register()
                self.settings = plain(settings)
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
        room = asyncio.Semaphore(int(self.settings.get("wip", 1)))
        while not self.stop.is_set():
            await room.acquire()
            try:
                found, info = await self.proxy.claim_task(CLAIM_WAIT_MS)
            except SdBusBaseError as e:
                room.release()
                log(f"claim failed: {_message(e)}")
                await self._sleep(1)
                continue
            if not found:
                room.release()
                continue
            task = plain(info)
            job = asyncio.get_running_loop().create_task(self.run_task(executor, task))
            self.running[task["id"]] = job

            def finished(_job: asyncio.Task[None], tid: int = task["id"]) -> None:
                self.running.pop(tid, None)
                room.release()

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
        await self.report(task, outcome)

    async def report(self, task: dict[str, Any], outcome: Outcome) -> None:
        tid, attempt = task["id"], task["attempt"]
        result = json.dumps(outcome.result) if outcome.result else ""
        delay = 0.5
        while True:
            try:
                if outcome.status == "completed":
                    await self.proxy.complete_task(tid, attempt, result, outcome.artifacts)
                elif outcome.status == "blocked":
                    await self.proxy.block_task(tid, attempt, outcome.reason)
                else:
                    await self.proxy.fail_task(
                        tid, attempt, outcome.error, result, outcome.artifacts
                    )
                return
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
                    return
                log(f"task {tid}: report failed ({_message(e)}); retrying")
            except SdBusBaseError as e:
                log(f"task {tid}: report failed ({_message(e)}); retrying")
            await asyncio.sleep(delay)  # not cut short by stop: the result must get through
            delay = min(delay * 2, 10)

    async def shutdown(self, executor: Executor) -> None:
        for tid in list(self.running):
            executor.abort(tid)  # unfinished claims expire and are retried elsewhere


def thinker(proxy: RuntimeInterface) -> Think:
    """Runtime.Think as the executor's think(messages, options)."""

    async def think(messages: list[dict[str, str]], options: dict[str, Any]) -> dict[str, Any]:
        sig = {"max_tokens": "u", "temperature": "d", "json_schema": "s", "task": "t"}
        wire = {k: (sig[k], v) for k, v in options.items() if k in sig}
        try:
            answer: dict[str, Any] = json.loads(await proxy.think(json.dumps(messages), wire))
            return answer
        except DbusFailedError as e:
            raise ModelError(_errors.short_name(e), _message(e)) from None
        except SdBusBaseError as e:
            raise ModelError("Failed", _message(e)) from None

    return think


def _message(e: BaseException) -> str:
    args = getattr(e, "args", ())
    return str(args[-1]) if args else type(e).__name__


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
    if not await runtime.register():
        return 0
    executor = Executor(
        Path(os.environ.get("HOME", os.getcwd())),
        list(runtime.settings.get("tools", [])),
        thinker(runtime.proxy),
    )
    workers = [
        loop.create_task(runtime.heartbeat(executor)),
        loop.create_task(runtime.work(executor)),
    ]
    await runtime.stop.wait()
    log(f"agent {runtime.name} stopping")
    await runtime.shutdown(executor)
    for w in workers:
        w.cancel()
    await asyncio.wait(workers, timeout=2)  # a D-Bus call in flight must not hold us
    return 0


def main() -> int:
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
