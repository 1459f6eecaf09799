"""The executor: how an agent's runtime carries out a task with its tools.

Tools run inside the agent's unit, as the agent, in its sandbox; they touch
only the agent's home. A task either names a command (`exec`, run by the
shell tool, its artifacts what it changed under artifacts/) or is free-form:
then the agent loop (agentd.agentloop.loop) works on it with the model,
through the TaskHost the runtime gives (agentd.agentloop.host). Imports
nothing of agentd's engine (only the task vocabulary): it runs as the agent.

Importing it is part of every agent's start, before its first claim: what only
a running task needs (the loop and its prompt, agentd.nobind's ctypes, the
task vocabulary's limits, the fetch tool's http.client) is imported when first
used, and nothing here needs dataclasses. That keeps ~4 ms of CPU per agent
start off the import (``python3 -X importtime``, build machine, 2026-11-30);
tests/unit/test_runtime_imports.py keeps it so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .agentloop.host import HostError, ModelError, Outcome, TaskHost
from .agentloop.tools import ARTIFACTS_DIR, OUTPUT_LIMIT, ShellTool, Toolbox, collect, shell_env
from .agentloop.tools import snapshot as _snapshot

__all__ = [
    "ARTIFACTS_DIR",
    "OUTPUT_LIMIT",
    "Executor",
    "HostError",
    "ModelError",
    "Outcome",
    "TaskHost",
    "Think",
]

# think(messages, options) -> {"text", "finish_reason", "prompt_tokens", ...}
Think = Callable[[list[dict[str, str]], dict[str, Any]], Awaitable[dict[str, Any]]]


class Executor:
    def __init__(
        self,
        home: Path,
        tools: list[str],
        host: TaskHost | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.home = home
        self.tools = set(tools)
        self.settings = {**(settings or {}), "tools": list(tools)}
        self.toolbox = Toolbox(home)
        self.shell: ShellTool = self.toolbox.shell
        self.host = host
        self.active: set[int] = set()  # free-form tasks being worked on
        self.aborted: set[int] = set()

    async def run(self, task: dict[str, Any]) -> Outcome:
        if task.get("exec"):
            return await self._exec(task)
        if self.host is None:
            return Outcome("blocked", reason="this runtime has no model to work with")
        from .agentloop.loop import AgentLoop  # the loop and its prompt: on first use

        tid = int(task["id"])
        self.active.add(tid)
        try:
            loop = AgentLoop(
                self.home, self.settings, self.host, self.toolbox, aborted=self.aborted.__contains__
            )
            return await loop.run(task)
        finally:
            self.active.discard(tid)
            self.aborted.discard(tid)

    async def _exec(self, task: dict[str, Any]) -> Outcome:
        if "shell" not in self.tools:
            return Outcome("failed", error="this agent's template does not allow the shell tool")
        task_id = int(task["id"])
        artifacts = self.home / ARTIFACTS_DIR
        artifacts.mkdir(exist_ok=True)
        before = _snapshot(artifacts)
        env = shell_env(self.home, task_id, int(task.get("attempt", 0)))
        result = await self.shell.run(task_id, task["exec"], env)
        found, left_out = collect(self.home, before)
        if left_out:  # agentd would refuse the whole report: say what stays behind instead
            result["artifacts_left_out"] = left_out
        if result["exit_code"] == 0:
            return Outcome("completed", result=result, artifacts=found)
        return Outcome(
            "failed",
            result=result,
            artifacts=found,
            error=f"command exited with status {result['exit_code']}",
        )

    def abort(self, task_id: int) -> bool:
        """Kill the task's command; a free-form task also stops before its next step."""
        if task_id in self.active:
            self.aborted.add(task_id)
        return self.shell.abort(task_id) or task_id in self.active


def __getattr__(name: str) -> Any:
    """The step schema by its old names (tests/inference/test_schema_limits.py
    compiles it with llama.cpp), without loading the prompt at the runtime's start."""
    if name in ("ACTION_ARGS", "step_schema"):
        from .agentloop import prompt

        return prompt.TOOL_ARGS if name == "ACTION_ARGS" else prompt.step_schema
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
