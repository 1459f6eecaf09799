"""A model's step: parsed from its answer against the tools offered, a finish
cut at max_tokens salvaged, and bounded to what agentd stores of a step.

Kept apart from the loop (agentd.agentloop.loop) because it is pure: text in,
a step or InvalidStep out, testable without a host.
"""

from __future__ import annotations

import json
from typing import Any

from . import prompt


class InvalidStep(Exception):
    """The model's answer is not a step of the schema (what it said: ``text``)."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text
        self.usage: dict[str, int] = {}


def parse(text: str, tools: list[str], finish_reason: Any) -> dict[str, Any]:
    try:
        # strict=False: a raw newline inside a string (a file's content) is what
        # the model meant; Qwen2.5-Coder-1.5B wrote them in write_file content,
        # and strict parsing failed the step three times (tools/loop_try.py).
        data = json.loads(text, strict=False)
    except ValueError:
        data = salvage(text) if finish_reason == "length" else None
        if data is None:
            cut = " (cut at max_tokens)" if finish_reason == "length" else ""
            raise InvalidStep(f"the answer is not the JSON asked for{cut}", text) from None
    if not isinstance(data, dict) or data.get("tool") not in tools:
        raise InvalidStep(f"no tool of {', '.join(tools)} was named", text)
    tool = data["tool"]
    for arg in prompt.TOOL_ARGS[tool]:
        if not isinstance(data.get(arg), str) or (arg != "content" and not data[arg]):
            raise InvalidStep(f"{tool} needs its argument {arg!r}", text)
    keep = {"thought", "tool", *prompt.TOOL_ARGS[tool]}
    return {k: v for k, v in data.items() if k in keep}


def within_step_limit(step: dict[str, Any], arg_chars: int, most: int) -> dict[str, Any]:
    """STEP within agentd's size of a step (16 KiB of JSON): its result and long
    arguments cut (an approval's action is kept whole: it is matched on resume)."""
    limit = arg_chars
    while len(json.dumps(step, ensure_ascii=False).encode()) > most and limit > 50:
        step["result"] = prompt.clip(step["result"], limit)
        if step["tool"] != "approval":
            step["arguments"] = {
                k: prompt.clip(v, limit) if isinstance(v, str) else v
                for k, v in step["arguments"].items()
            }
        limit //= 2
    return step


def salvage(text: str) -> dict[str, Any] | None:
    """A finish step cut inside its answer: closed, its answer marked as cut."""
    for tail in ('"}', "}"):
        try:
            data = json.loads(text + tail)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("tool") == "finish" and data.get("answer"):
            data["answer"] = str(data["answer"]) + " [cut]"
            return data
    return None
