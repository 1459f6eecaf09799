"""A template's program, kept running as the agent by its runtime.

A template may name a program (``program = ["python3", "bot.py"]``): code of
the owner's choosing, e.g. a script in the agent's home built on an agent
framework, that uses the agent's OpenAI-compatible endpoint
(agentd.endpoint) through OPENAI_BASE_URL and OPENAI_API_KEY. The runtime
starts it once registered, and keeps registering, heartbeating, claiming
tasks and serving the endpoint meanwhile.

Invariants: the program runs exactly as a tool does (agentd.agentloop.tools):
in the agent's home, in its own process group, under agentd.nobind's seccomp
filter (no bind, listen or io_uring), with the runtime shielded from it; its
output goes to the unit's journal. It is restarted after a failure (a
non-zero exit, a signal) with a backoff doubling from 1 s to 60 s, reset once
it has run for a minute; an exit with status 0 ends it for this start of the
agent. When the runtime stops, the whole process group is stopped (SIGTERM,
then SIGKILL after STOP_GRACE_S).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from .agentloop.tools import ENDPOINT_ENV, PATH

BACKOFF_S = (1.0, 60.0)  # first and longest wait before a restart
HEALTHY_S = 60.0  # a run this long resets the backoff
STOP_GRACE_S = 5.0


def program_env(home: Path, agent: str) -> dict[str, str]:
    env = {"HOME": str(home), "PATH": PATH, "LANG": "C.UTF-8", "AGENTD_AGENT": agent}
    env.update({k: os.environ[k] for k in ENDPOINT_ENV if k in os.environ})
    return env


def argv_in(home: Path, argv: list[str]) -> list[str]:
    """ARGV with a first word that is a path relative to HOME made absolute
    (a bare name, like python3, is looked up in PATH)."""
    first = argv[0]
    if "/" in first and not first.startswith("/"):
        first = str(home / first)
    return [first, *argv[1:]]


class Program:
    def __init__(self, home: Path, agent: str, argv: list[str], log: Callable[[str], None]) -> None:
        self.home = home
        self.agent = agent
        self.argv = argv_in(home, argv)
        self.say = log  # the runtime's journal lines
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self.runs = 0

    async def supervise(self) -> None:
        """Run the program, again after each failure, until it exits 0 or stop()."""
        delay = BACKOFF_S[0]
        while not self.stopping:
            started = time.monotonic()
            status = await self._run_once()
            if self.stopping:
                return
            if status == 0:
                self.say(f"program exited with status 0: not restarted ({self.argv[0]})")
                return
            if time.monotonic() - started >= HEALTHY_S:
                delay = BACKOFF_S[0]
            self.say(f"program failed ({_status(status)}); restarting in {delay:.0f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_S[1])

    async def _run_once(self) -> int | None:
        from . import nobind  # ctypes: only for an agent with a program

        nobind.shield_runtime()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *nobind.wrap(self.argv),
                cwd=self.home,
                env=program_env(self.home, self.agent),
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            self.say(f"program could not start: {e.strerror or e} ({self.argv[0]})")
            return 127
        self.runs += 1
        self.say(f"program started, pid {self.proc.pid}: {' '.join(self.argv)}")
        return await self.proc.wait()

    async def stop(self) -> None:
        """SIGTERM the program's process group, SIGKILL after STOP_GRACE_S."""
        self.stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        _killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            _killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def _status(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by signal {-code}"
    return f"status {code}"


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
