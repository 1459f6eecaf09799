"""The delegate tool: parts of the task handed to other agents, then their results.

The task keeps its claim while it waits (the runtime's heartbeat renews its
lease), for at most WAIT_S: long enough for other agents' model work, short of
holding an agent's slot for ever when nobody can take the parts. What agentd
refuses (the template does not allow it, a bound passed: agentd.goals.delegation)
is shown to the model as the tool's result, to do the work itself instead.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .host import HostError, TaskHost

WAIT_S = 1800.0
POLL_MS = 30_000  # each Runtime.Delegated long-poll
RESULT_CHARS = 1200  # of each child's answer, in what the model sees
TITLE_CHARS = 80


async def run(host: TaskHost, task: int, attempt: int, args: dict[str, Any]) -> str:
    steps = [str(s).strip() for s in args.get("steps") or [] if str(s).strip()]
    if not steps:
        return "error: steps must name at least one part of the task"
    parts = [{"title": _title(s), "instructions": s} for s in steps]
    try:
        children = await host.delegate(task, attempt, parts)
        deadline = time.monotonic() + WAIT_S
        got = await host.delegated(task, POLL_MS)
        while not got.get("done") and time.monotonic() < deadline:
            got = await host.delegated(task, POLL_MS)
    except HostError as e:
        return f"error: not delegated: {e} ({e.name}). Do this part yourself."
    return render(children, got)


def render(children: list[int], got: dict[str, Any]) -> str:
    """One paragraph per child: its task, status, and answer (or error)."""
    mine = [c for c in got.get("children") or [] if c.get("id") in children]
    lines = [] if got.get("done") else [f"still running after {WAIT_S:g} s: shown as they are"]
    for c in mine:
        head = (
            f"task {c['id']} ({c.get('status')}, agent {c.get('agent') or '-'}): {c.get('title')}"
        )
        body = _answer(c.get("result")) if c.get("status") == "completed" else c.get("error")
        lines.append(f"{head}\n{(body or '')[:RESULT_CHARS]}")
    return "\n\n".join(lines) or "no delegated task found"


def _answer(result: object) -> str:
    try:
        data = json.loads(str(result or ""))
    except ValueError:
        return str(result or "")
    if isinstance(data, dict) and isinstance(data.get("answer"), str):
        return str(data["answer"])
    return str(result)


def _title(step: str) -> str:
    line = step.splitlines()[0]
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 3] + "..."
