"""The executor: how an agent's runtime carries out a task with its tools.

Tools run inside the agent's unit, as the agent, in its sandbox; they touch
only the agent's home. A task either names a command (`exec`, run by the
shell tool) or is free-form: then the model drives it, a few steps at most,
each answer constrained by a JSON schema to one of the actions the template
allows (answer, shell, write_file), the last step always an answer.
Imports nothing of agentd's engine (only the task vocabulary): it runs as the
agent.

Importing it is part of every agent's start, before its first claim: what only
a running task needs (agentd.nobind's ctypes, the task vocabulary's limits) is
imported when first used, and nothing here needs dataclasses. That keeps ~4 ms
of CPU per agent start off the import (``python3 -X importtime``, build
machine, 2026-11-30); tests/unit/test_runtime_imports.py keeps it so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

OUTPUT_LIMIT = 64 * 1024  # bytes of stdout/stderr kept in a result
MAX_STEPS = 3  # model steps per free-form task; the last one must answer
STEP_TOKENS = 192
FEEDBACK_CHARS = 400  # of a tool's output shown back to the model (small contexts)
TASK_CHARS = 1500

# think(messages, options) -> {"text", "finish_reason", "prompt_tokens", ...}
Think = Callable[[list[dict[str, str]], dict[str, Any]], Awaitable[dict[str, Any]]]


class ModelError(Exception):
    """agentd refused or failed a Think call; ``name`` is its error's short name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


ARTIFACTS_DIR = "artifacts"


class Outcome:
    """How a task ended. A plain class: dataclasses costs ~1 ms at each agent start."""

    FIELDS = ("status", "result", "error", "reason", "artifacts")
    __slots__ = FIELDS

    def __init__(
        self,
        status: str,  # completed | failed | blocked
        result: dict[str, Any] | None = None,
        error: str = "",
        reason: str = "",
        artifacts: list[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.result: dict[str, Any] = {} if result is None else result
        self.error = error
        self.reason = reason
        self.artifacts: list[tuple[str, str]] = [] if artifacts is None else artifacts

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Outcome):
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a in self.FIELDS)

    def __repr__(self) -> str:
        fields = ", ".join(f"{a}={getattr(self, a)!r}" for a in self.FIELDS)
        return f"Outcome({fields})"


class ShellTool:
    """Runs a command with /bin/sh in the agent's home, in its own process group,
    under agentd.nobind's seccomp filter (no bind, listen or io_uring)."""

    name = "shell"

    def __init__(self, home: Path) -> None:
        self.home = home
        self.running: dict[int, asyncio.subprocess.Process] = {}

    async def run(self, task_id: int, command: str, env: dict[str, str]) -> dict[str, Any]:
        from . import nobind  # ctypes: here, not at the runtime's start

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
        try:
            out, err = await proc.communicate()
        finally:
            self.running.pop(task_id, None)
        return {
            "exit_code": proc.returncode,
            "stdout": _tail(out),
            "stderr": _tail(err),
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


def _text(limit: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": limit}


# Each action with the arguments it requires, in the order the model writes them.
ACTION_ARGS: dict[str, dict[str, Any]] = {
    "answer": {"answer": _text(600)},
    "shell": {"command": _text(300)},
    "write_file": {"path": _text(100), "content": _text(600)},
}


def step_schema(actions: list[str]) -> dict[str, Any]:
    """What one model step may say: one of ACTIONS, with that action's arguments
    (a grammar per alternative, so an answer always carries its text)."""
    return {
        "oneOf": [
            {
                "type": "object",
                "properties": {"action": {"const": a}, **ACTION_ARGS[a]},
                "required": ["action", *ACTION_ARGS[a]],
                "additionalProperties": False,
            }
            for a in actions
        ]
    }


ANSWER_SCHEMA = step_schema(["answer"])


def task_prompt(task: dict[str, Any], actions: list[str]) -> str:
    lines = [f"Task: {task['title']}"]
    if task.get("description"):
        lines.append(str(task["description"])[:TASK_CHARS])
    lines += [f"Note: {n}" for n in task.get("notes", [])][:5]
    how = {
        "answer": '{"action": "answer", "answer": "the result"}',
        "shell": '{"action": "shell", "command": "a /bin/sh command to run in your home"}',
        "write_file": '{"action": "write_file", "path": "file name", "content": "text"}',
    }
    lines.append("Reply with one JSON object, one of: " + " or ".join(how[a] for a in actions))
    return "\n".join(lines)


class Executor:
    def __init__(self, home: Path, tools: list[str], think: Think | None = None) -> None:
        self.home = home
        self.tools = set(tools)
        self.shell = ShellTool(home)
        self.files = FilesTool(home)
        self.think = think

    async def run(self, task: dict[str, Any]) -> Outcome:
        if task.get("exec"):
            return await self._exec(task)
        if self.think is None:
            return Outcome("blocked", reason="this runtime has no model to work with")
        try:
            return await self._reason(task)
        except ModelError as e:
            if e.name == "QuotaExceeded":  # waits for the reset, or an admin
                return Outcome("blocked", reason=str(e))
            return Outcome("failed", error=f"model: {e}")

    def _actions(self) -> list[str]:
        return (
            ["answer"]
            + (["shell"] if "shell" in self.tools else [])
            + (["write_file"] if "files" in self.tools else [])
        )

    async def _step(
        self,
        messages: list[dict[str, str]],
        schema: dict[str, Any],
        task_id: int,
        usage: dict[str, int],
    ) -> dict[str, Any]:
        assert self.think is not None
        answer = await self.think(
            messages,
            {"max_tokens": STEP_TOKENS, "json_schema": json.dumps(schema), "task": task_id},
        )
        usage["prompt_tokens"] += int(answer.get("prompt_tokens", 0))
        usage["completion_tokens"] += int(answer.get("completion_tokens", 0))
        try:
            data = json.loads(answer.get("text", ""))
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ModelError(
                "Unparseable",
                "the model's answer is not the JSON asked for "
                f"(finish reason {answer.get('finish_reason')})",
            )
        return data

    async def _reason(self, task: dict[str, Any]) -> Outcome:
        """Up to MAX_STEPS model steps; tools run in between; the last step answers."""
        task_id = int(task["id"])
        actions = self._actions()
        messages = [{"role": "user", "content": task_prompt(task, actions)}]
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        steps: list[dict[str, Any]] = []
        for n in range(1, MAX_STEPS + 1):
            final = n == MAX_STEPS
            data = await self._step(
                messages, ANSWER_SCHEMA if final else step_schema(actions), task_id, usage
            )
            action = data.get("action", "answer")
            if action == "answer":
                result = {"answer": str(data.get("answer", "")), "steps": steps, **usage}
                return Outcome("completed", result=result)
            feedback = await self._act(task_id, action, data)
            steps.append(
                {
                    "action": action,
                    **{k: data[k] for k in ("command", "path") if k in data},
                    "result": feedback,
                }
            )
            messages += [
                {"role": "assistant", "content": json.dumps(data)},
                {
                    "role": "user",
                    "content": f"Result: {feedback}\nReply with JSON; answer when you are done.",
                },
            ]
        raise AssertionError("unreachable: the last step answers")

    async def _act(self, task_id: int, action: str, data: dict[str, Any]) -> str:
        if action == "shell" and "shell" in self.tools:
            env = {
                "HOME": str(self.home),
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "LANG": "C.UTF-8",
                "AGENTD_TASK_ID": str(task_id),
            }
            r = await self.shell.run(task_id, str(data.get("command", "")), env)
            return (
                f"exit {r['exit_code']}; stdout: {r['stdout'][:FEEDBACK_CHARS]}; "
                f"stderr: {r['stderr'][: FEEDBACK_CHARS // 2]}"
            )
        if action == "write_file" and "files" in self.tools:
            try:
                self.files.write(str(data.get("path") or "notes.txt"), str(data.get("content", "")))
                return f"wrote {data.get('path') or 'notes.txt'}"
            except (OSError, PermissionError) as e:
                return f"error: {e}"
        return f"error: action {action!r} is not available"

    async def _exec(self, task: dict[str, Any]) -> Outcome:
        if "shell" not in self.tools:
            return Outcome("failed", error="this agent's template does not allow the shell tool")
        task_id = int(task["id"])
        artifacts = self.home / ARTIFACTS_DIR
        artifacts.mkdir(exist_ok=True)
        before = _snapshot(artifacts)
        env = {
            "HOME": str(self.home),
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "AGENTD_TASK_ID": str(task_id),
            "AGENTD_ARTIFACTS": str(artifacts),
        }
        result = await self.shell.run(task_id, task["exec"], env)
        changed = {p: st for p, st in sorted(_snapshot(artifacts).items()) if before.get(p) != st}
        kept, left_out = _within_limits(changed)
        found = [
            (_artifact_name(p.relative_to(artifacts)), str(p.relative_to(self.home))) for p in kept
        ]
        if left_out:  # agentd would refuse the whole report: say what stays behind instead
            result["artifacts_left_out"] = [str(p.relative_to(artifacts)) for p in left_out]
        if result["exit_code"] == 0:
            return Outcome("completed", result=result, artifacts=found)
        return Outcome(
            "failed",
            result=result,
            artifacts=found,
            error=f"command exited with status {result['exit_code']}",
        )

    def abort(self, task_id: int) -> bool:
        return self.shell.abort(task_id)


def _within_limits(changed: dict[Path, tuple[int, int]]) -> tuple[list[Path], list[Path]]:
    """The files that fit agentd's artifact limits (agentd.tasks.model: count, size of
    one, size of all), in name order; and those that do not."""
    # agentd's own limits (a dependency-free module): a report over them is refused whole
    from .tasks.model import MAX_ARTIFACT_SIZE, MAX_ARTIFACTS, MAX_TASK_ARTIFACTS_SIZE

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
