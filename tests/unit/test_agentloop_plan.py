"""The plan the loop asks for before a task's first step (loop._plan): asked
once, in free text, recorded in the trace, not counted as a step, kept in the
conversation, and rebuilt from the trace on a new claim, not asked again."""

from __future__ import annotations

import json
from pathlib import Path

from loophost import Host, run, step

from agentd.agentloop import prompt


def test_the_plan_is_asked_once_before_the_first_step(tmp_path: Path) -> None:
    plan = {"text": '{"requirements": ["a count"], "steps": ["ls"]}', "finish_reason": "stop"}
    host = Host(plan, step("shell", command="ls | wc -l"), step("finish", answer="3"))
    out = run(tmp_path, host, {"plan": True})
    (messages, options), *later = host.thinks
    assert messages[-1]["content"].endswith(prompt.PLAN_ASK)
    assert json.loads(options["json_schema"]) == prompt.PLAN_SCHEMA
    assert options["max_tokens"] == prompt.PLAN_TOKENS
    assert all("oneOf" in json.loads(o["json_schema"]) for _m, o in later)
    first_step = later[0][0]
    assert [m["role"] for m in first_step[-3:]] == ["user", "assistant", "user"]
    assert first_step[-2]["content"] == plan["text"]
    assert first_step[-1]["content"] == prompt.AFTER_PLAN
    assert not first_step[-3]["content"].endswith(prompt.PLAN_ASK)  # asked only that once
    assert [s["tool"] for s in host.steps] == ["plan", "shell", "finish"]
    assert host.steps[0]["result"] == plan["text"]
    assert out.result["steps"] == 2  # the plan is not a step
    assert out.result["completion_tokens"] == 30


def test_a_resumed_task_keeps_its_plan_and_is_not_asked_again(tmp_path: Path) -> None:
    trace = [
        {"n": 1, "attempt": 1, "tool": "plan", "arguments": {}, "result": "ask, then finish"},
        {"n": 2, "attempt": 1, "tool": "ask_owner", "arguments": {"question": "which?"}},
    ]
    ctx = {"trace": trace, "replies": [{"question": "which?", "answer": "the red one"}]}
    host = Host(step("finish", answer="red"), ctx=ctx)
    out = run(tmp_path, host, {"plan": True}, attempt=2)
    assert out.result["answer"] == "red" and len(host.thinks) == 1
    contents = [m["content"] for m in host.thinks[0][0]]
    assert "ask, then finish" in contents and prompt.AFTER_PLAN in contents
    assert any("the red one" in c for c in contents)
