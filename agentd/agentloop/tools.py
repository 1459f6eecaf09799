"""The agent's tools: they run inside its unit, as the agent, in its sandbox,
and touch only its home.

- shell: /bin/sh -c in the home, in its own process group (killed whole on
  timeout or cancel), under agentd.nobind's seccomp filter (no bind, listen
  or io_uring); stdout and stderr are read as they come and only their last
  OUTPUT_LIMIT bytes kept, so a tool printing for ever costs no memory.
- read_file, list_files, write_file: paths resolved under the home, never
  outside it (a symlink out is refused).
- fetch (agentd.agentloop.fetch): imported on first use, in a worker thread.
Files under artifacts/ that a task changed become its artifacts, within
agentd's limits (agentd.tasks.model): what would make agentd refuse the whole
report stays behind, named in the result.

Cheap to import (part of every agent's start): nobind's ctypes, the task
vocabulary and the fetch tool are imported when first used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

OUTPUT_LIMIT = 64 * 1024  # bytes of stdout/stderr kept in a result
READ_LIMIT = 64 * 1024  # bytes of a file read_file returns
LIST_LIMIT = 200  # entries list_files shows
SHELL_TIMEOUT_S = 120.0  # a free-form task's command; --exec commands have none
DRAIN_AFTER_KILL_S = 2.0  # a daemonized child may hold the pipes: stop reading then
ARTIFACTS_DIR = "artifacts"
PATH = "/usr/local/bin:/usr/bin:/bin"


class ShellTool:
    """Runs a command with /bin/sh in the agent's home, in its own process group,
    under agentd.nobind's seccomp filter (no bind, listen or io_uring)."""

    name = "shell"

    def __init__(self, home: Path) -> None:
        self.home = home
        self.running: dict[int, asyncio.subprocess.Process] = {}

    async def run(
        self, task_id: int, command: str, env: dict[str, str], timeout: float | None = None
    ) -> dict[str, Any]:
        from .. import nobind  # ctypes: here, not at the runtime's start

        started = time.monotonic()
        # The tool is code the agent controls: no bind, listen or io_uring for
        # it (agentd.nobind), and no way into this process's memory.
        nobind.shield_runtime()
        proc = await asyncio.create_subprocess_exec(
            *nobind.wrap(["/bin/sh", "-c", command]),
            cwd=self.home,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        self.running[task_id] = proc
        out, err = bytearray(), bytearray()
        assert proc.stdout is not None and proc.stderr is not None
        loop = asyncio.get_running_loop()
        drains = [
            loop.create_task(_drain(proc.stdout, out)),
            loop.create_task(_drain(proc.stderr, err)),
        ]
        waiter = loop.create_task(_all(proc, drains))
        timed_out = False
        try:
            done, _ = await asyncio.wait({waiter}, timeout=timeout)
            if not done:
                timed_out = True
                _killpg(proc)
                await proc.wait()
                await asyncio.wait({waiter}, timeout=DRAIN_AFTER_KILL_S)
        finally:
            self.running.pop(task_id, None)
            if proc.returncode is None:  # cancelled: the command goes with the task
                _killpg(proc)
            for t in (waiter, *drains):
                t.cancel()
            await asyncio.gather(waiter, *drains, return_exceptions=True)
            if proc.returncode is None:
                await proc.wait()
        result: dict[str, Any] = {
            "exit_code": proc.returncode,
            "stdout": _tail(out),
            "stderr": _tail(err),
            "duration_s": round(time.monotonic() - started, 3),
        }
        if timed_out:
            result["timed_out"] = True
        return result

    def abort(self, task_id: int) -> bool:
        proc = self.running.get(task_id)
        if proc is None:
            return False
        _killpg(proc)
        return True


async def _all(proc: asyncio.subprocess.Process, drains: list[asyncio.Task[int]]) -> None:
    await asyncio.gather(*drains)
    await proc.wait()


async def _drain(stream: asyncio.StreamReader, buf: bytearray) -> int:
    """Read STREAM to its end keeping only its last OUTPUT_LIMIT bytes (and a
    marker byte count beyond); the total read."""
    total = 0
    while chunk := await stream.read(65536):
        total += len(chunk)
        buf += chunk
        if len(buf) > 2 * OUTPUT_LIMIT:
            del buf[: len(buf) - OUTPUT_LIMIT - 1]  # one more byte: _tail sees it was cut
    return total


def _killpg(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(data: bytes | bytearray) -> str:
    text = bytes(data[-OUTPUT_LIMIT:]).decode(errors="replace")
    return ("[...]\n" + text) if len(data) > OUTPUT_LIMIT else text


class FilesTool:
    """Reads, lists and writes files under the agent's home, never outside it."""

    name = "files"

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()

    def _path(self, relative: str) -> Path:
        path = (self.home / (relative or ".")).resolve()
        if path != self.home and self.home not in path.parents:
            raise PermissionError(f"{relative} is outside your home")
        return path

    def read(self, relative: str, limit: int = READ_LIMIT) -> str:
        with open(self._path(relative), "rb") as f:
            data = f.read(limit + 1)
        text = data[:limit].decode(errors="replace")
        return text + (f"\n[... only the first {limit} bytes shown]" if len(data) > limit else "")

    def list(self, relative: str) -> str:
        path = self._path(relative)
        if path.is_file():  # as ls does: a file lists as itself (models ask for them)
            return f"{relative} ({path.stat().st_size} B): a file, not a directory"
        entries = []
        for i, entry in enumerate(sorted(os.scandir(path), key=lambda e: e.name)):
            if i == LIST_LIMIT:
                entries.append(f"[... more than {LIST_LIMIT} entries]")
                break
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    entries.append(entry.name + "/")
                else:
                    entries.append(f"{entry.name} ({entry.stat(follow_symlinks=False).st_size} B)")
        return "\n".join(entries) if entries else "(empty)"

    def write(self, relative: str, content: str) -> int:
        path = self._path(relative)
        if relative.endswith("/") or path.is_dir():  # "artifacts/" made a file of that name
            raise IsADirectoryError(
                f"{relative} is a directory: give a file's path, e.g. artifacts/result.txt"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode()
        path.write_bytes(data)
        return len(data)


ENDPOINT_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY")


def shell_env(home: Path, task_id: int, attempt: int | None = None) -> dict[str, str]:
    """A command's environment: the task it serves (and, for an --exec task, its
    attempt, which Runtime calls about the task take) and where artifacts go."""
    env = {
        "HOME": str(home),
        "PATH": PATH,
        "LANG": "C.UTF-8",
        "AGENTD_TASK_ID": str(task_id),
        "AGENTD_ARTIFACTS": str(home / ARTIFACTS_DIR),
    }
    if attempt is not None:
        env["AGENTD_TASK_ATTEMPT"] = str(attempt)
    for name in ENDPOINT_ENV:  # the agent's OpenAI-compatible endpoint (agentd.runtime)
        if name in os.environ:
            env[name] = os.environ[name]
    return env


class Toolbox:
    """The loop's tools: run(task, tool, arguments) -> the text the model sees."""

    def __init__(self, home: Path, shell_timeout: float = SHELL_TIMEOUT_S) -> None:
        self.home = home
        self.shell = ShellTool(home)
        self.files = FilesTool(home)
        self.shell_timeout = shell_timeout

    async def run(self, task_id: int, tool: str, args: dict[str, Any]) -> str:
        try:
            return await self._run(task_id, tool, args)
        except (OSError, ValueError, UnicodeError) as e:
            return f"error: {e}"

    async def _run(self, task_id: int, tool: str, args: dict[str, Any]) -> str:
        if tool == "shell":
            r = await self.shell.run(
                task_id, str(args["command"]), shell_env(self.home, task_id), self.shell_timeout
            )
            head = f"exit {r['exit_code']}"
            if r.get("timed_out"):
                head += f" (killed: still running after {self.shell_timeout:g} s)"
            return "\n".join(
                [head]
                + ([f"stdout:\n{r['stdout']}"] if r["stdout"] else [])
                + ([f"stderr:\n{r['stderr']}"] if r["stderr"] else [])
            )
        if tool == "read_file":
            return self.files.read(str(args["path"]))
        if tool == "list_files":
            return self.files.list(str(args.get("path") or "."))
        if tool == "write_file":
            path = str(args["path"])
            n = self.files.write(path, str(args["content"]))
            kind = " (an artifact of the task)" if _is_artifact(path) else ""
            return f"wrote {n} bytes to {path}{kind}"
        if tool == "fetch":
            from . import fetch  # urllib, http.client, html.parser: on first use only

            return await asyncio.to_thread(fetch.get, str(args["url"]))
        raise ValueError(f"no tool {tool!r}")


def _is_artifact(relative: str) -> bool:
    parts = Path(relative).parts
    return bool(parts) and parts[0] == ARTIFACTS_DIR


# ------------------------------------------------------------------ artifacts
def artifact_name(relative: Path) -> str:
    """A name agentd accepts ([A-Za-z0-9._-], alphanumeric first, <= 128)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", str(relative))
    if not name[:1].isalnum():
        name = "f" + name
    return name[:128]


def snapshot(root: Path) -> dict[Path, tuple[int, int]]:
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


def within_limits(changed: dict[Path, tuple[int, int]]) -> tuple[list[Path], list[Path]]:
    """The files that fit agentd's artifact limits (agentd.tasks.model: count, size of
    one, size of all), in name order; and those that do not."""
    # agentd's own limits (a dependency-free module): a report over them is refused whole
    from ..tasks.model import MAX_ARTIFACT_SIZE, MAX_ARTIFACTS, MAX_TASK_ARTIFACTS_SIZE

    kept: list[Path] = []
    left_out: list[Path] = []
    total = 0
    for path, (_mtime, size) in changed.items():
        fits = (
            len(kept) < MAX_ARTIFACTS
            and size <= MAX_ARTIFACT_SIZE
            and total + size <= MAX_TASK_ARTIFACTS_SIZE
        )
        if fits:
            kept.append(path)
            total += size
        else:
            left_out.append(path)
    return kept, left_out


def collect(
    home: Path, before: dict[Path, tuple[int, int]], since_ns: int = 0
) -> tuple[list[tuple[str, str]], list[str]]:
    """The artifacts a task made: files under HOME/artifacts changed since BEFORE
    (a snapshot) or modified at or after SINCE_NS (a resumed task's first step);
    as (name, path under home) within agentd's limits, and those left out."""
    root = home / ARTIFACTS_DIR
    now = snapshot(root)
    changed = {
        p: st
        for p, st in sorted(now.items())
        if before.get(p) != st or (since_ns and st[0] >= since_ns)
    }
    kept, left_out = within_limits(changed)
    found = [(artifact_name(p.relative_to(root)), str(p.relative_to(home))) for p in kept]
    return found, [str(p.relative_to(root)) for p in left_out]
