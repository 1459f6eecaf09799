"""The loop's checks of a step before it acts on it (agentd.agentloop.checks):
repeats are sampled again and then refused, a finish before the named file or
before a written script has run is refused once. Scripted model, real tools."""

from __future__ import annotations

from pathlib import Path

import pytest
from loophost import Host, run, step, tools_of

from agentd.agentloop import checks
from agentd.agentloop.loop import RESAMPLE_TEMPERATURE, RESAMPLES


def temperatures(host: Host) -> list[float]:
    return [float(o.get("temperature", 0.0)) for _m, o in host.thinks]


def test_a_model_repeating_itself_is_sampled_again_then_made_to_finish(tmp_path: Path) -> None:
    """A step repeated with nothing but reads since is asked again with some
    temperature; still the same, it is not run; after three such refusals the
    next step may only finish."""
    echo = step("shell", command="echo $$ >> ran")
    host = Host(echo, *[echo] * (3 * (1 + RESAMPLES)), step("finish", answer="hello"))
    out = run(tmp_path, host)
    assert out.status == "completed" and out.result["steps"] == 5
    assert len((tmp_path / "ran").read_text().split()) == 1  # run once, refused three times
    assert [s["result"].startswith("Not run") for s in host.steps[:4]] == [False, True, True, True]
    assert temperatures(host)[:4] == [0.0, 0.0, RESAMPLE_TEMPERATURE, RESAMPLE_TEMPERATURE]
    last = len(host.thinks) - 1
    assert tools_of(host, last - 1) != ["finish"] and tools_of(host, last) == ["finish"]


def test_a_fresh_sample_replaces_a_repeat(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    host = Host(
        step("read_file", path="a"),
        step("read_file", path="a"),  # greedy: the same again
        step("list_files", path="."),  # sampled: something else, run
        step("finish", answer="ok"),
    )
    out = run(tmp_path, host)
    assert [s["tool"] for s in host.steps] == ["read_file", "list_files", "finish"]
    assert not any(s["result"].startswith("Not run") for s in host.steps)
    assert out.result["steps"] == 3 and out.result["completion_tokens"] == 40


def test_a_cycle_of_reads_is_a_repeat_and_a_write_breaks_it(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    read = step("read_file", path="a")
    host = Host(
        read,
        step("list_files", path="."),
        *[read] * (1 + RESAMPLES),  # only reads since: not run
        step("write_file", path="b", content="y"),
        read,  # a write since: run
        step("finish", answer="ok"),
    )
    run(tmp_path, host)
    ran = [not s["result"].startswith("Not run") for s in host.steps[:5]]
    assert ran == [True, True, False, True, True]


def test_a_failed_command_repeated_is_refused_with_its_failure(tmp_path: Path) -> None:
    bad = step("shell", command="exit 3")
    host = Host(bad, *[bad] * (1 + RESAMPLES), step("finish", answer="gave up"))
    run(tmp_path, host)
    assert host.steps[0]["result"].startswith("exit 3")
    assert host.steps[1]["result"] == checks.REPEATED_FAILURE
    shown = host.thinks[1][0][-1]["content"]  # the failure, as the model saw it
    assert "the command failed: read its error" in shown


def test_a_finish_before_the_file_the_task_names_is_refused_once(tmp_path: Path) -> None:
    host = Host(
        step("finish", answer="[{...}]"),  # refused: artifacts/out.json is not there
        step("write_file", path="artifacts/out.json", content="[]"),
        step("finish", answer="wrote artifacts/out.json"),
    )
    out = run(tmp_path, host, title="Convert it", description="Save it as artifacts/out.json.")
    assert out.status == "completed" and out.result["answer"] == "wrote artifacts/out.json"
    assert host.steps[0]["result"].startswith("Not finished: the task asks for artifacts/out.json")
    host = Host(step("finish", answer="a"), step("finish", answer="b"))  # reminded once only
    (tmp_path / "x").mkdir()
    out = run(tmp_path / "x", host, description="Save it as artifacts/none.txt")
    assert out.result["answer"] == "b"


def test_a_script_written_and_never_run_is_not_finished_once(tmp_path: Path) -> None:
    script = step("write_file", path="artifacts/hi.sh", content="echo hi\n")
    host = Host(
        script,
        step("finish", answer="wrote it"),  # refused: never ran
        step("shell", command="sh artifacts/hi.sh"),
        step("finish", answer="wrote and ran it"),
    )
    out = run(tmp_path, host)
    assert out.result["answer"] == "wrote and ran it"
    refusal = host.steps[1]["result"]
    assert refusal.startswith("Not finished: you wrote artifacts/hi.sh but never ran it")
    assert "(for instance: bash artifacts/hi.sh)" in refusal
    host = Host(script, step("finish", answer="a"), step("finish", answer="b"))  # once only
    assert run(tmp_path, host).result["answer"] == "b"


def test_a_script_is_not_checked_without_a_shell(tmp_path: Path) -> None:
    host = Host(
        step("write_file", path="artifacts/hi.py", content="print(1)\n"),
        step("finish", answer="wrote it"),
    )
    out = run(tmp_path, host, {"tools": ["files"]})
    assert out.result["answer"] == "wrote it"


def test_untested_scripts_are_those_not_run_since_written() -> None:
    acts = [
        checks.action("write_file", {"path": "./artifacts/a.sh", "content": "x"}),
        checks.action("write_file", {"path": "artifacts/b.py", "content": "x"}),
        checks.action("write_file", {"path": "artifacts/c.txt", "content": "x"}),
        checks.action("shell", {"command": "python3 artifacts/b.py in.csv"}),
    ]
    assert checks.untested(acts) == {"artifacts/a.sh": "bash artifacts/a.sh"}
    acts.append(checks.action("write_file", {"path": "artifacts/b.py", "content": "y"}))
    assert list(checks.untested(acts)) == ["artifacts/a.sh", "artifacts/b.py"]
    assert checks.failed("exit 2\nstderr: no") and not checks.failed("exit 0\nstdout: x")


@pytest.mark.parametrize(
    ("path", "first_line", "command"),
    [
        ("x.sh", "#!/bin/sh", "sh x.sh"),
        ("x.sh", "#!/bin/bash", "bash x.sh"),
        ("x.sh", "#!/usr/bin/env bash", "bash x.sh"),
        ("x", "#!/usr/bin/env python3", "python3 x"),
        ("x.py", "import sys", "python3 x.py"),
        ("x.sh", "echo hi", "bash x.sh"),
    ],
)
def test_a_script_is_run_as_its_first_line_says(path: str, first_line: str, command: str) -> None:
    assert checks.how_to_run(path, f"{first_line}\nrest\n") == command


def test_a_step_repeated_across_claims_is_a_repeat(tmp_path: Path) -> None:
    """After a claim resumes the trace (an approval, a reply), its steps count:
    through agentd, every gated shell step is a new claim, and the 1.5B model
    had the same failing command approved and run twice (bench/agents.py)."""
    first = [
        {"n": 1, "attempt": 1, "tool": "shell", "arguments": {"command": "exit 3"}},
        {"n": 2, "attempt": 1, "tool": "ask_owner", "arguments": {"question": "go on?"}},
    ]
    for s in first:
        s["result"] = "exit 3\nstderr: no" if s["tool"] == "shell" else ""
    ctx = {"trace": first, "replies": [{"question": "go on?", "answer": "yes"}]}
    bad = step("shell", command="exit 3")
    host = Host(*[bad] * (1 + RESAMPLES), step("finish", answer="no"), ctx=ctx)
    run(tmp_path, host, attempt=2)
    assert host.steps[0]["result"] == checks.REPEATED_FAILURE


def test_a_degenerate_answer_is_not_asked_again_with_more_room(tmp_path: Path) -> None:
    loop = "du -sh d/*; " + " ".join(f"du -sh d{'/*' * i};" for i in range(2, 80))
    cut = {
        "text": '{"thought": "x", "tool": "shell", "command": "' + loop,
        "finish_reason": "length",
    }
    host = Host(cut, step("finish", answer="ok"))
    out = run(tmp_path, host)
    assert out.result["answer"] == "ok" and len(host.thinks) == 2
    assert host.steps[0]["tool"] == "error"
    assert host.thinks[1][1]["max_tokens"] == host.thinks[0][1]["max_tokens"]  # not doubled
    assert host.thinks[1][1]["temperature"] == RESAMPLE_TEMPERATURE  # after an invalid step
    assert "temperature" not in host.thinks[0][1]
    rows = "".join(f'{{"name": "P{i}", "age": {20 + i}, "city": "C{i}"}},\n' for i in range(40))
    assert checks.degenerate(loop) and not checks.degenerate(rows)
    assert not checks.degenerate(Path(checks.__file__).read_text())
