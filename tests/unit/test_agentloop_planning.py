"""agentd.agentloop.planning: a goal's planner answers its plan and report
tasks in one Think each (the plan under the schema its context carries), with
no tool step, and a cut or refused answer ends the task as it should."""

from __future__ import annotations

import json
from pathlib import Path

from loophost import Host, run

from agentd.agentloop.host import ModelError, Outcome

SCHEMA = {"type": "object", "properties": {"steps": {"type": "array"}}}
PLAN = {"steps": [{"id": "a", "title": "A", "instructions": "do a", "needs": [], "after": []}]}


def plan(tmp_path: Path, host: Host, description: str = "Plan this goal: apples") -> Outcome:
    """One task of a planner (no tools, the template's system prompt) run whole."""
    settings = {"tools": [], "persona": "You plan work."}
    return run(tmp_path, host, settings, title="Plan goal 3", description=description)


def test_a_plan_task_is_one_answer_under_the_context_s_schema(tmp_path: Path) -> None:
    host = Host(
        {"text": json.dumps(PLAN), "finish_reason": "stop"},
        ctx={"goal": {"role": "plan", "schema": SCHEMA}},
    )
    out = plan(tmp_path, host)
    assert out.status == "completed" and json.loads(out.result["answer"]) == PLAN
    [(messages, options)] = host.thinks
    assert messages == [
        {"role": "system", "content": "You plan work."},
        {"role": "user", "content": "Plan this goal: apples"},
    ]
    assert json.loads(options["json_schema"]) == SCHEMA and options["task"] == 7
    assert host.steps == [] and host.remembered == []  # no tool step, no lesson


def test_a_report_is_words_and_other_tasks_take_the_loop(tmp_path: Path) -> None:
    host = Host(
        {"text": "Apples are fine.", "finish_reason": "stop"}, ctx={"goal": {"role": "report"}}
    )
    out = plan(tmp_path, host, "Write the result")
    assert out.result["answer"] == "Apples are fine." and "json_schema" not in host.thinks[0][1]
    # a step of a goal is work like any other task: the loop's steps, with their schema
    step_host = Host(
        {"thought": "done", "tool": "finish", "answer": "ok"},
        ctx={"goal": {"role": "step", "step": "a"}},
    )
    out = run(tmp_path, step_host, title="do a")
    assert out.status == "completed" and out.result["answer"] == "ok"
    assert "finish" in step_host.thinks[0][1]["json_schema"]


def test_a_cut_report_is_kept_and_says_so(tmp_path: Path) -> None:
    host = Host(
        {"text": "Apples are red and", "finish_reason": "length"}, ctx={"goal": {"role": "report"}}
    )
    out = plan(tmp_path, host, "Write the result")
    assert out.status == "completed" and out.result["answer"] == "Apples are red and"
    assert out.result["cut"] is True


def test_a_cut_answer_fails_and_a_quota_blocks(tmp_path: Path) -> None:
    ctx = {"goal": {"role": "plan", "schema": SCHEMA}}
    host = Host({"text": '{"steps": [', "finish_reason": "length"}, ctx=ctx)
    out = plan(tmp_path, host)
    assert out.status == "failed" and "token limit" in out.error
    host = Host(ModelError("QuotaExceeded", "quota used up"), ctx=ctx)
    out = plan(tmp_path, host)
    assert (out.status, out.reason) == ("blocked", "quota used up")
