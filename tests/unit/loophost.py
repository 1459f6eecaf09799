"""A scripted TaskHost for the agent loop's unit tests (agentd.agentloop.loop):
the model's answers are canned, every host call is recorded.

Test modules import this, never each other.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from agentd.agentloop.host import Outcome
from agentd.agentloop.loop import AgentLoop

SETTINGS = {
    "tools": ["files", "shell"],
    "profile": "offline",
    "steps": 10,
    "task_tokens": 20000,
    "memory": False,  # no recall, no lesson: test_agentloop_memory.py turns it on
}


def step(tool: str, **args: Any) -> dict[str, Any]:
    return {"thought": f"use {tool}", "tool": tool, **args}


class Host:
    """A TaskHost: think answers from a script (a step dict, an answer dict with
    "text", or an exception), every call recorded."""

    def __init__(self, *script: Any, ctx: dict[str, Any] | None = None) -> None:
        self.script = list(script)
        self.ctx = ctx or {}
        self.hits: list[dict[str, Any]] | Exception = []  # what recall answers (or raises)
        self.stored: dict[str, Any] | Exception = {"added": 1, "skipped": 0, "tokens": 9}
        self.recalls: list[tuple[str, int, int]] = []
        self.remembered: list[tuple[str, str, int]] = []
        self.thinks: list[tuple[list[dict[str, str]], dict[str, Any]]] = []
        self.steps: list[dict[str, Any]] = []
        self.calls: list[tuple[Any, ...]] = []
        self.tokens_per_char = 0.0  # > 0: prompt_tokens counted from the prompt's length

    async def think(
        self, messages: list[dict[str, str]], options: dict[str, Any]
    ) -> dict[str, Any]:
        self.thinks.append(([dict(m) for m in messages], dict(options)))
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        chars = sum(len(m["content"]) for m in messages)
        prompt_tokens = int(chars * self.tokens_per_char) if self.tokens_per_char else 100
        if "text" in item:
            return {"prompt_tokens": prompt_tokens, "completion_tokens": 10, **item}
        return {
            "text": json.dumps(item),
            "finish_reason": "stop",
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 10,
            "prompt_tokens_computed": 40,
        }

    async def context(self, task: int) -> dict[str, Any]:
        self.calls.append(("context", task))
        return self.ctx

    async def record_step(self, task: int, attempt: int, s: dict[str, Any]) -> None:
        self.steps.append(s)

    async def ask_owner(self, task: int, attempt: int, question: str) -> None:
        self.calls.append(("ask_owner", task, attempt, question))

    async def defer(self, task: int, attempt: int, seconds: float, reason: str) -> None:
        self.calls.append(("defer", task, attempt, seconds, reason))

    async def request_approval(
        self, task: int, attempt: int, tool: str, arguments: dict[str, Any]
    ) -> int:
        self.calls.append(("request_approval", task, attempt, tool, arguments))
        return 99

    async def use_approval(self, approval: int, attempt: int) -> None:
        self.calls.append(("use_approval", approval, attempt))

    async def remember(self, text: str, kind: str, task: int) -> dict[str, Any]:
        self.remembered.append((text, kind, task))
        if isinstance(self.stored, Exception):
            raise self.stored
        return {**self.stored, "ids": [100 + len(self.remembered)]}

    async def recall(self, query: str, k: int, task: int) -> list[dict[str, Any]]:
        self.recalls.append((query, k, task))
        if isinstance(self.hits, Exception):
            raise self.hits
        return [dict(h) for h in self.hits[:k]]


def no_gate(rules: dict[str, Any], tool: str, args: dict[str, Any]) -> str | None:
    return None


def shell_gate(rules: dict[str, Any], tool: str, args: dict[str, Any]) -> str | None:
    """A stand-in for agentd.shellgate: shell asks unless the command is `ls`."""
    if tool == "shell" and args.get("command") != "ls":
        return "not in the allow list"
    return None


def run(
    home: Path, host: Host, settings: dict[str, Any] | None = None, gate: Any = no_gate, **task: Any
) -> Outcome:
    task.setdefault("id", 7)
    task.setdefault("attempt", 1)
    task.setdefault("title", "count the files")
    loop = AgentLoop(home, {**SETTINGS, **(settings or {})}, host, gate=gate)
    return asyncio.run(loop.run(task))


def tools_of(host: Host, call: int) -> list[str]:
    """The tools offered to the model at its CALLth think."""
    schema = json.loads(host.thinks[call][1]["json_schema"])
    return [alt["properties"]["tool"]["const"] for alt in schema["oneOf"]]
