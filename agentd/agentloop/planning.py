"""A goal's planner at work (issue 14): one answer per task, no tools.

agentd makes a goal's planner two kinds of task and says which in the task's
context ("goal": {"role": ...}, agentd.goals.runner.context_for): "plan",
answered with one JSON plan under the schema the context carries (agentd
checks it and asks again with the errors if it is wrong), and "report", the
goal's result in words from its steps' results. Neither needs the tool loop:
the planner's template has no tools, and a grammar-constrained answer is
valid JSON in one generation, where a loop of steps would spend several.
"""

from __future__ import annotations

import json
from typing import Any

from .host import ModelError, Outcome, TaskHost

PLAN_TOKENS = 2048  # 12 steps of ~150 tokens, and room
REPORT_TOKENS = 512
ROLES = ("plan", "report")


def role(ctx: dict[str, Any]) -> str:
    """The planner's role for a task whose context says so; "" for any other task."""
    goal = ctx.get("goal")
    said = goal.get("role") if isinstance(goal, dict) else None
    return said if said in ROLES else ""


async def answer(
    host: TaskHost, task: dict[str, Any], ctx: dict[str, Any], persona: str
) -> Outcome:
    """TASK answered in one Think: a plan (JSON) or a report (words)."""
    tid = int(task["id"])
    messages = []
    if persona:
        messages.append({"role": "system", "content": persona})
    messages.append({"role": "user", "content": str(task.get("description") or task["title"])})
    options: dict[str, Any] = {"task": tid, "max_tokens": REPORT_TOKENS}
    if role(ctx) == "plan":
        options["max_tokens"] = PLAN_TOKENS
        options["json_schema"] = json.dumps(ctx["goal"].get("schema") or {"type": "object"})
    try:
        said = await host.think(messages, options)
    except ModelError as e:
        if e.name == "QuotaExceeded":  # agentd resumes it at the reset
            return Outcome("blocked", reason=str(e))
        return Outcome("failed", error=f"model: {e}")
    text = str(said.get("text", "")).strip()
    usage = {k: int(said.get(k) or 0) for k in ("prompt_tokens", "completion_tokens")}
    cut = said.get("finish_reason") == "length"
    if cut and "json_schema" in options:  # a plan cut short is no plan: agentd asks again
        return Outcome("failed", result=usage, error="the answer was cut at its token limit")
    if cut:  # a report cut short is still most of the report: say so, keep it
        return Outcome("completed", result={"answer": text, "cut": True, **usage})
    return Outcome("completed", result={"answer": text, **usage})
