"""The agent loop (agentd.agentloop.loop) against a scripted TaskHost: the
model's answers are canned, every host call is recorded. Tools run for real
in a temporary home (the shell under agentd.nobind, as in the unit)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from loophost import SETTINGS, Host, no_gate, run, shell_gate, step, tools_of

from agentd.agentloop.host import ModelError, Outcome
from agentd.agentloop.loop import AgentLoop
from agentd.agentloop.prompt import chain_of


def opening(messages: list[dict[str, str]]) -> str:
    """The first message of a prompt: the system prompt and the task after it."""
    firsts = messages[:2] if messages[0]["role"] == "system" else messages[:1]
    return "\n\n".join(m["content"] for m in firsts)


# ------------------------------------------------------------------ tools and finish
def test_a_direct_finish_completes_with_the_answer_and_tokens(tmp_path: Path) -> None:
    host = Host(step("finish", answer="42"))
    out = run(tmp_path, host)
    assert out.status == "completed"
    assert out.result == {
        "answer": "42",
        "steps": 1,
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "computed_tokens": 40,
    }
    assert tools_of(host, 0) == [
        "shell",
        "read_file",
        "list_files",
        "write_file",
        "ask_owner",
        "finish",
    ]
    (rec,) = host.steps
    assert rec["tool"] == "finish" and rec["arguments"] == {"answer": "42"}
    assert (rec["prompt_tokens"], rec["computed_tokens"], rec["completion_tokens"]) == (100, 40, 10)
    assert rec["n"] == 1 and rec["attempt"] == 1 and rec["thought"] == "use finish"
    assert host.thinks[0][1]["task"] == 7


def test_every_tool_runs_in_the_home_and_feeds_back(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hello\n")
    host = Host(
        step("list_files", path="."),
        step("read_file", path="in.txt"),
        step("shell", command="tr a-z A-Z < in.txt; echo err >&2; exit 3"),
        step("write_file", path="artifacts/out.txt", content="HELLO\n"),
        step("finish", answer="done"),
    )
    out = run(tmp_path, host)
    assert out.status == "completed" and out.result["steps"] == 5
    results = [s["result"] for s in host.steps]
    assert "in.txt (6 B)" in results[0]
    assert results[1] == "hello\n"
    assert results[2].startswith("exit 3") and "HELLO" in results[2] and "err" in results[2]
    assert results[3] == "wrote 6 bytes to artifacts/out.txt (an artifact of the task)"
    assert out.artifacts == [("out.txt", "artifacts/out.txt")]
    # what the model sees next: its own step, then the tool's result
    last = host.thinks[3][0]
    assert json.loads(last[-2]["content"])["tool"] == "shell"
    assert last[-1]["role"] == "user" and "HELLO" in last[-1]["content"]


def test_outside_the_home_is_refused(tmp_path: Path) -> None:
    host = Host(step("read_file", path="../../etc/passwd"), step("finish", answer="no"))
    run(tmp_path, host)
    assert host.steps[0]["result"].startswith("error: ") and "outside" in host.steps[0]["result"]


def test_tools_follow_the_template(tmp_path: Path) -> None:
    host = Host(step("finish", answer="x"))
    run(tmp_path, host, {"tools": ["web"], "profile": "online"})
    assert tools_of(host, 0) == ["fetch", "ask_owner", "finish"]
    intro = opening(host.thinks[0][0])
    assert "fetch" in intro and "shell" not in intro and str(tmp_path) in intro
    host = Host(step("finish", answer="x"))
    run(tmp_path, host, {"tools": ["web"], "profile": "offline"})
    assert tools_of(host, 0) == ["ask_owner", "finish"]
    assert "no network" in opening(host.thinks[0][0])


def test_a_tool_the_schema_did_not_offer_is_an_invalid_step(tmp_path: Path) -> None:
    host = Host(step("shell", command="touch pwned"), step("finish", answer="ok"))
    out = run(tmp_path, host, {"tools": []})
    assert not (tmp_path / "pwned").exists()
    assert host.steps[0]["tool"] == "error" and out.status == "completed"


def test_the_prompt_says_where_the_agent_is(tmp_path: Path) -> None:
    ctx = {
        "project": "backups",
        "depends": [
            {
                "id": 3,
                "title": "list disks",
                "status": "completed",
                "result": "sda sdb",
                "artifacts": ["disks.txt"],
            }
        ],
        "notes": ["keep it short"],
        "last_error": "command exited with status 2",
        "replies": [{"question": "which disk?", "answer": "sdb", "at": 1.0}],
    }
    host = Host(step("finish", answer="x"), ctx=ctx)
    run(tmp_path, host, title="Name a backup script", description="for the nightly job")
    assert host.thinks[0][0][0]["role"] == "system"  # the situation; the task is the user's
    assert host.thinks[0][0][1]["content"].startswith("Task: Name a backup script")
    intro = opening(host.thinks[0][0])
    for needle in (
        "Project: backups",
        "sda sdb",
        "[its files, kept for your owner: disks.txt]",
        "keep it short",
        "status 2",
        "sdb",
        "artifacts/",
        "Task: Name a backup script\nfor the nightly job",
    ):
        assert needle in intro, needle
    assert intro.rstrip().endswith("for the nightly job")  # the task last


# ------------------------------------------------------------------ limits
def test_the_last_step_may_only_finish(tmp_path: Path) -> None:
    host = Host(
        step("shell", command="true"), step("shell", command=":"), step("finish", answer="done")
    )
    out = run(tmp_path, host, {"steps": 3})
    assert out.status == "completed" and out.result["answer"] == "done"
    assert tools_of(host, 1) != ["finish"] and tools_of(host, 2) == ["finish"]
    assert "finish now" in host.thinks[2][0][-1]["content"]


def test_a_spent_budget_leaves_one_finish_step(tmp_path: Path) -> None:
    host = Host(
        step("shell", command="true"), step("shell", command=":"), step("finish", answer="short")
    )
    out = run(tmp_path, host, {"task_tokens": 200})  # each think costs 110
    assert out.status == "completed"
    assert [tools_of(host, i) == ["finish"] for i in range(3)] == [False, False, True]
    assert "budget is spent" in host.thinks[2][0][-1]["content"]


def test_an_answer_cut_at_max_tokens_is_asked_again_with_more_room(tmp_path: Path) -> None:
    cut = {
        "text": '{"thought": "x", "tool": "write_file", "path": "a", "content": "aaa',
        "finish_reason": "length",
    }
    host = Host(cut, step("finish", answer="ok"))
    out = run(tmp_path, host)
    first, second = (o["max_tokens"] for _m, o in host.thinks)
    assert second == 2 * first
    assert out.status == "completed" and out.result["prompt_tokens"] == 200


def test_a_finish_cut_twice_keeps_what_was_said(tmp_path: Path) -> None:
    cut = {
        "text": '{"thought": "", "tool": "finish", "answer": "a long story',
        "finish_reason": "length",
    }
    out = run(tmp_path, Host(cut, cut))
    assert out.status == "completed" and out.result["answer"] == "a long story [cut]"


def test_a_model_without_a_valid_step_fails_plainly(tmp_path: Path) -> None:
    bad = {"text": '{"tool": "dance"}', "finish_reason": "stop"}
    out = run(tmp_path, Host(bad, bad, bad))
    assert out.status == "failed"
    assert out.error.startswith("the model did not produce a valid step after 3 tries: ")


def test_the_prompt_is_trimmed_to_the_context_oldest_output_first(tmp_path: Path) -> None:
    for n in range(5):  # five different files: a read of the same one is not run again
        (tmp_path / f"big{n}.txt").write_text("".join(f"line {i}\n" for i in range(3000)))
    reads = [step("read_file", path=f"big{n}.txt") for n in range(5)]
    host = Host(*reads, step("finish", answer="ok"))
    host.tokens_per_char = 0.33  # what the service counts
    out = run(tmp_path, host, {"context_tokens": 2048, "task_tokens": 10**6})
    assert out.status == "completed"
    for messages, options in host.thinks:
        chars = sum(len(m["content"]) for m in messages)
        assert chars * 0.33 + 8 * len(messages) + options["max_tokens"] <= 2048
    sizes = [sum(len(m["content"]) for m in messages) for messages, _o in host.thinks]
    assert max(sizes) * 0.33 > 800  # the context is used, not wasted
    last = host.thinks[-1][0]
    assert last[0]["content"].startswith("You are an agent")  # the task stays
    assert "Task: count the files" in opening(last)
    assert any("trimmed" in m["content"] or "cut" in m["content"] for m in last[1:5])
    assert "line 1" in last[-1]["content"]  # the last result is shown


def test_a_too_long_request_teaches_the_real_context(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("x" * 5000)
    too_long = ModelError(
        "InvalidArgument", "model: 1400 prompt tokens + max_tokens 512 > 1024 tokens per sequence"
    )
    host = Host(step("read_file", path="big.txt"), too_long, step("finish", answer="ok"))
    out = run(tmp_path, host)
    assert out.status == "completed"
    retry = host.thinks[2]
    assert retry[1]["max_tokens"] <= 256
    assert sum(len(m["content"]) for m in retry[0]) < sum(
        len(m["content"]) for m in host.thinks[1][0]
    )


# ------------------------------------------------------------------ model errors
@pytest.mark.parametrize("name", ["Overloaded", "ModelUnavailable"])
def test_transient_model_errors_defer_with_backoff(tmp_path: Path, name: str) -> None:
    host = Host(ModelError(name, "busy"))
    out = run(tmp_path, host)
    assert out.status == "released"
    ((_call, task, attempt, seconds, reason),) = [c for c in host.calls if c[0] == "defer"]
    assert (task, attempt, seconds) == (7, 1, 10.0) and name in reason
    assert host.steps[-1]["tool"] == "deferred"
    # deferred again: the wait doubles
    trace = [dict(host.steps[-1])]
    host = Host(ModelError(name, "busy"), ctx={"trace": trace})
    run(tmp_path, host, attempt=1)
    assert [c[3] for c in host.calls if c[0] == "defer"] == [20.0]


def test_quota_blocks_and_other_model_errors_fail(tmp_path: Path) -> None:
    out = run(tmp_path, Host(ModelError("QuotaExceeded", "resets at X")))
    assert out.status == "blocked" and "resets at X" in out.reason
    out = run(tmp_path, Host(ModelError("InvalidArgument", "bad schema")))
    assert out.status == "failed" and out.error == "model: bad schema"


def test_an_aborted_task_stops_before_its_next_step(tmp_path: Path) -> None:
    host = Host(step("shell", command="true"), step("finish", answer="never"))
    loop = AgentLoop(tmp_path, SETTINGS, host, gate=no_gate, aborted=lambda t: bool(host.steps))
    out = asyncio.run(loop.run({"id": 7, "attempt": 1, "title": "t"}))
    assert out.status == "released" and len(host.thinks) == 1


# ------------------------------------------------------------------ ask_owner and resume
def test_ask_owner_blocks_then_the_reply_resumes_the_conversation(tmp_path: Path) -> None:
    host = Host(step("shell", command="echo one"), step("ask_owner", question="which disk?"))
    out = run(tmp_path, host)
    assert out.status == "released"
    assert ("ask_owner", 7, 1, "which disk?") in host.calls
    trace = host.steps
    assert trace[-1]["tool"] == "ask_owner" and trace[-1]["result"] == ""
    ctx = {"trace": trace, "replies": [{"question": "which disk?", "answer": "sdb", "at": 2.0}]}
    host = Host(step("finish", answer="sdb it is"), ctx=ctx)
    out = run(tmp_path, host, attempt=2)
    assert out.status == "completed" and out.result["steps"] == 3
    messages = host.thinks[0][0]
    assert json.loads(messages[2]["content"])["command"] == "echo one"
    assert "one" in messages[3]["content"]
    assert messages[-1]["content"] == "The owner answered: sdb"
    assert out.result["prompt_tokens"] == 300  # the earlier steps' tokens count
    assert host.steps[0]["n"] == 3 and host.steps[0]["attempt"] == 2


def test_a_failed_attempt_is_not_resumed(tmp_path: Path) -> None:
    trace = [
        {"n": 1, "attempt": 1, "tool": "shell", "arguments": {"command": "x"}, "result": "r"},
        {"n": 2, "attempt": 2, "tool": "ask_owner", "arguments": {"question": "q"}, "result": ""},
        {"n": 3, "attempt": 3, "tool": "shell", "arguments": {"command": "y"}, "result": "r"},
    ]
    assert chain_of(trace[:2]) == trace[1:2]  # attempt 1 did not let the task go
    assert chain_of(trace) == []  # attempt 3 ended otherwise (failed, or its runtime died)
    deferred = {"attempt": 3, "tool": "deferred"}
    assert chain_of([*trace, deferred]) == [trace[1], trace[2], deferred]


# ------------------------------------------------------------------ approvals
def test_a_gated_action_asks_and_lets_the_task_go(tmp_path: Path) -> None:
    host = Host(
        step("shell", command="ls"),
        step("shell", command="touch x"),
        ctx={"rules": {"tools": ["shell"]}},
    )
    out = run(tmp_path, host, gate=shell_gate)
    assert out.status == "released" and "not in the allow list" in out.reason
    assert not (tmp_path / "x").exists()
    assert ("request_approval", 7, 1, "shell", {"command": "touch x"}) in host.calls
    assert host.steps[0]["tool"] == "shell"  # ls is allowed: it ran
    assert host.steps[-1]["tool"] == "approval"
    assert host.steps[-1]["arguments"]["arguments"] == {"command": "touch x"}


def resumed(tmp_path: Path, status: str, reason: str = "") -> tuple[Host, Outcome]:
    first = Host(step("shell", command="touch x"), ctx={"rules": {"tools": ["shell"]}})
    run(tmp_path, first, gate=shell_gate)
    approval = {
        "id": 99,
        "tool": "shell",
        "arguments": {"command": "touch x"},
        "status": status,
        "reason": reason,
    }
    ctx = {"trace": first.steps, "rules": {"tools": ["shell"]}, "approvals": [approval]}
    host = Host(step("finish", answer="end"), ctx=ctx)
    return host, run(tmp_path, host, gate=shell_gate, attempt=2)


def test_a_granted_action_is_used_then_run_once(tmp_path: Path) -> None:
    host, out = resumed(tmp_path, "granted")
    assert out.status == "completed" and (tmp_path / "x").exists()
    assert host.calls[1:] == [("use_approval", 99, 2)]
    assert host.steps[0]["tool"] == "shell" and host.steps[0]["result"].startswith("exit 0")
    assert len(host.thinks) == 1  # the action was resolved without asking the model again
    assert json.loads(host.thinks[0][0][2]["content"])["command"] == "touch x"


def test_a_denied_action_tells_the_model_why(tmp_path: Path) -> None:
    host, out = resumed(tmp_path, "denied", "not on Fridays")
    assert out.status == "completed" and not (tmp_path / "x").exists()
    assert host.steps[0]["tool"] == "denied"
    assert "denied by the owner: not on Fridays" in host.thinks[0][0][-1]["content"]
    assert not [c for c in host.calls if c[0] == "use_approval"]


def test_a_used_approval_is_never_run_again(tmp_path: Path) -> None:
    host, out = resumed(tmp_path, "used")
    assert out.status == "completed" and not (tmp_path / "x").exists()
    assert not [c for c in host.calls if c[0] == "use_approval"]
    assert "not run again" in host.thinks[0][0][-1]["content"]


def test_an_approval_is_used_once_a_repeat_asks_again(tmp_path: Path) -> None:
    approval = {"id": 5, "tool": "shell", "arguments": {"command": "touch y"}, "status": "granted"}
    host = Host(
        step("shell", command="touch y"),
        step("write_file", path="z", content=""),  # not a mere repeat: it asks again
        step("shell", command="touch y"),
        ctx={"rules": {"tools": ["shell"]}, "approvals": [approval]},
    )
    out = run(tmp_path, host, gate=shell_gate)
    assert out.status == "released"
    assert [c[0] for c in host.calls[1:]] == ["use_approval", "request_approval"]


def test_the_real_gate_is_called_with_the_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentd import shellgate

    seen: list[tuple[Any, ...]] = []
    monkeypatch.setattr(shellgate, "needs_approval", lambda r, t, a: seen.append((r, t, a)))
    rules = {"tools": ["shell"], "shell_allow": ["ls *"]}
    run(
        tmp_path,
        Host(step("list_files", path="."), step("finish", answer="x"), ctx={"rules": rules}),
        gate=None,
    )
    assert seen == [(rules, "list_files", {"path": "."})]
