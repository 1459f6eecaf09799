"""The executor: how an agent's runtime carries out a task with its tools.

Tools run inside the agent's unit, as the agent, in its sandbox; they touch
only the agent's home. The executor is what the model will drive later (it
will pick tools and arguments); today a task either names a command (`exec`,
run by the shell tool) or waits for the model, and says so by blocking.
Imports nothing of agentd's engine: it runs as the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT_LIMIT = 64 * 1024  # bytes of stdout/stderr kept in a result
MAX_ARTIFACTS = 256
ARTIFACTS_DIR = "artifacts"


@dataclass
class Outcome:
    status: str  # completed | failed | blocked
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    reason: str = ""
    artifacts: list[tuple[str, str]] = field(default_factory=list)


class ShellTool:
    """Runs a command with /bin/sh in the agent's home, in its own process group."""

    name = "shell"

    def __init__(self, home: Path) -> None:
        self.home = home
        self.running: dict[int, asyncio.subprocess.Process] = {}

    async def run(self, task_id: int, command: str, env: dict[str, str]) -> dict[str, Any]:
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command, cwd=self.home, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        self.running[task_id] = proc
        try:
            out, err = await proc.communicate()
        finally:
            self.running.pop(task_id, None)
        return {
            "exit_code": proc.returncode,
            "stdout": _tail(out), "stderr": _tail(err),
            "duration_s": round(time.monotonic() - started, 3),
        }

    def abort(self, task_id: int) -> bool:
        proc = self.running.get(task_id)
        if proc is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return True


class FilesTool:
    """Reads and writes files under the agent's home, never outside it."""

    name = "files"

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()

    def _path(self, relative: str) -> Path:
        path = (self.home / relative).resolve()
        if path != self.home and self.home not in path.parents:
            raise PermissionError(f"{relative} is outside the agent's home")
        return path

    def read(self, relative: str, limit: int = OUTPUT_LIMIT) -> str:
        with open(self._path(relative), "rb") as f:
            return f.read(limit).decode(errors="replace")

    def write(self, relative: str, content: str) -> None:
        path = self._path(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def _artifact_name(relative: Path) -> str:
    """A name agentd accepts ([A-Za-z0-9._-], alphanumeric first, <= 128)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", str(relative))
    if not name[:1].isalnum():
        name = "f" + name
    return name[:128]


def _tail(data: bytes) -> str:
    text = data[-OUTPUT_LIMIT:].decode(errors="replace")
    return ("[...]\n" + text) if len(data) > OUTPUT_LIMIT else text


class Executor:
    def __init__(self, home: Path, tools: list[str]) -> None:
        self.home = home
        self.tools = set(tools)
        self.shell = ShellTool(home)
        self.files = FilesTool(home)

    async def run(self, task: dict[str, Any]) -> Outcome:
        if task.get("exec"):
            return await self._exec(task)
        return Outcome("blocked", reason=(
            "this agent has no model to work on a free-form task yet; "
            "submit it with --exec COMMAND, or unblock it once a model is configured"))

    async def _exec(self, task: dict[str, Any]) -> Outcome:
        if "shell" not in self.tools:
            return Outcome("failed", error="this agent's template does not allow the shell tool")
        task_id = int(task["id"])
        artifacts = self.home / ARTIFACTS_DIR
        artifacts.mkdir(exist_ok=True)
        before = _snapshot(artifacts)
        env = {
            "HOME": str(self.home), "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8", "AGENTD_TASK_ID": str(task_id),
            "AGENTD_ARTIFACTS": str(artifacts),
        }
        result = await self.shell.run(task_id, task["exec"], env)
        found = [(_artifact_name(p.relative_to(artifacts)), str(p.relative_to(self.home)))
                 for p, stamp in sorted(_snapshot(artifacts).items())
                 if before.get(p) != stamp][:MAX_ARTIFACTS]
        if result["exit_code"] == 0:
            return Outcome("completed", result=result, artifacts=found)
        return Outcome("failed", result=result, artifacts=found,
                       error=f"command exited with status {result['exit_code']}")

    def abort(self, task_id: int) -> bool:
        return self.shell.abort(task_id)


def _snapshot(root: Path) -> dict[Path, tuple[int, int]]:
    """Regular files under ROOT with (mtime_ns, size): what a task wrote is what changed."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            with contextlib.suppress(OSError):
                st = path.lstat()
                if path.is_file() and not path.is_symlink():
                    out[path] = (st.st_mtime_ns, st.st_size)
    return out
