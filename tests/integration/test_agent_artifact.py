"""A free-form task run by agentd's own runtime and a real model, in the
machine: the loop uses a tool, in the agent's unit, as the agent's UID, and
what it leaves under artifacts/ is the owner's alone (issue 12).

The default model (SmolLM2-135M, the CI model) does not write a file a task
names reliably with any phrasing tried (tools/loop_try.py, greedy, 2026-11-30:
"Write the word hello into the file artifacts/hello.txt" gave `wc -l; echo
hello` and repeats; "Run the command: echo hello > artifacts/hello.txt" ran
that command at step 1, then asked its owner). So with it, what must hold
whatever the model does is asserted: the task ends, its trace holds a real
tool step with its result, artifacts/ is the agent UID's, and every artifact
agentd lists is that UID's file, given to alice and refused to bob; and when a
step wrote artifacts/hello.txt, it is an artifact holding "hello". A template
of 4 steps keeps the run short.

The capable model (Qwen2.5-Coder-1.5B, `tools/test.sh --slow`) must do the
whole of it: complete the task with a tool step and leave hello.txt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentd_helpers import Agentd, wait_for

pytestmark = pytest.mark.integration
AGENT = "aa-w"
TITLE = "Run the command: echo hello > artifacts/hello.txt"
TEMPLATES = "/etc/agentd/templates"
QUICK = """description = "an admin's copy of sandbox with 4 model steps a task"
capabilities = ["general"]
tools = ["files", "shell"]
profile = "offline"
steps = 4
"""
REPO = Path(__file__).resolve().parents[2]
CAPABLE = "qwen2.5-coder-1.5b"
TOOL_STEPS = ("shell", "write_file", "read_file", "list_files")
ENDED = ("completed", "failed", "dead_lettered", "cancelled")


@pytest.fixture(scope="module")
def ran(agentd: Agentd) -> Iterator[tuple[Agentd, int, dict[str, Any]]]:
    """AGENT created by alice, TITLE submitted to it, and run to its end."""
    a = agentd
    wait_for(lambda: a.ctl_json("model", "show")["state"] == "loaded", 300, "model loaded")
    a.m.write_file(f"{TEMPLATES}/quick.toml", QUICK, mode=0o644)
    a.create(AGENT, template="quick", user="alice")
    task = a.submit(TITLE, "--agent", AGENT)
    info = wait_end(a, task)
    if info["status"] == "blocked":  # the model asked its owner: answered once
        a.ctl("task", "reply", str(task), "Yes. Do it now, then finish.", user="alice")
        info = wait_end(a, task)
    agent: dict[str, Any] = a.ctl_json("agent", "show", AGENT, user="alice")
    yield a, task, agent
    a.ctl("task", "cancel", str(task), user="alice", check=False)


def wait_end(a: Agentd, task: int) -> dict[str, Any]:
    """The task once it ended or is blocked on a question (15 min at most: the
    2 CPUs are shared; a 135M step takes seconds alone, minutes under load)."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        left = max(5, int(deadline - time.monotonic()))
        wait = ("task", "wait", str(task), "--timeout", str(min(left, 60)))
        a.ctl(*wait, user="alice", check=False)  # returns at the end, or after 60 s
        info = show(a, task)
        if info["status"] in ENDED or (
            info["status"] == "blocked" and info["block_reason"].startswith("question:")
        ):
            return info
    raise AssertionError(f"task {task} did not end in 900 s: {show(a, task)}")


def show(a: Agentd, task: int) -> dict[str, Any]:
    info: dict[str, Any] = a.ctl_json("task", "show", str(task), user="alice")
    return info


def wrote_hello(steps: list[dict[str, Any]]) -> bool:
    """A step that should have left artifacts/hello.txt behind."""
    for s in steps:
        args = s.get("arguments") or {}
        if s["tool"] == "write_file" and str(args.get("path", "")).endswith("artifacts/hello.txt"):
            return not str(s.get("result", "")).startswith("error")
        command = str(args.get("command", "")) if s["tool"] == "shell" else ""
        if "artifacts/hello.txt" in command and ">" in command:
            return str(s.get("result", "")).startswith("exit 0")
    return False


def test_the_task_ends_and_its_trace_holds_a_tool_step(
    ran: tuple[Agentd, int, dict[str, Any]],
) -> None:
    a, task, _ = ran
    info = show(a, task)
    steps = a.ctl_json("task", "log", str(task), user="alice")
    trace = [(s["n"], s["tool"], s.get("arguments"), str(s.get("result", ""))[:120]) for s in steps]
    assert info["status"] == "completed" or (
        info["status"] == "failed" and info["error"] and "Traceback" not in info["error"]
    ), (info, trace)
    used = [s for s in steps if s["tool"] in TOOL_STEPS]
    assert used, f"no tool step: {trace}"
    assert all(s.get("result") for s in used), trace  # each ran and said what it did
    assert [s["n"] for s in steps] == sorted(s["n"] for s in steps), trace


def test_what_the_runtime_wrote_is_the_agents_and_not_bobs(
    ran: tuple[Agentd, int, dict[str, Any]],
) -> None:
    a, task, agent = ran
    uid = a.uid_of(f"agent-{AGENT}")
    home = agent["home"]
    made = a.m.run(["stat", "-c", "%u %a", f"{home}/artifacts"]).stdout.split()
    assert int(made[0]) == uid, made  # made by the loop, in the unit, as the agent
    r = a.m.run(["ls", f"{home}/artifacts"], user="bob", check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    for args in (("log", str(task)), ("show", str(task))):
        r = a.ctl("task", *args, user="bob", check=False)
        assert r.returncode == 77 and "(PermissionDenied)" in r.stderr, r

    steps = a.ctl_json("task", "log", str(task), user="alice")
    arts = {x["name"]: x for x in show(a, task)["artifacts"]}
    for name, art in arts.items():
        path = str(art["path"])
        assert path.startswith(f"{home}/artifacts/"), art
        owner = a.m.run(["stat", "-c", "%u", path]).stdout.strip()
        assert int(owner) == uid, (path, owner)
        data = a.ctl("task", "artifact", str(task), name, user="alice").stdout
        assert data == a.m.run(["cat", path]).stdout and len(data) == art["size"], art
        r = a.ctl("task", "artifact", str(task), name, user="bob", check=False)
        assert r.returncode == 77 and "(PermissionDenied)" in r.stderr, r
        r = a.m.run(["cat", path], user="bob", check=False)
        assert r.returncode != 0 and "Permission denied" in r.stderr, r
    if wrote_hello(steps):  # what issue 12 asks for, once the model does it
        assert "hello.txt" in arts, (arts, json.dumps(steps)[:2000])
        text = a.ctl("task", "artifact", str(task), "hello.txt", user="alice").stdout
        assert text.strip() == "hello", text


@pytest.mark.slow
def test_the_capable_model_writes_the_file_the_task_asks_for(agentd: Agentd) -> None:
    a = agentd
    cache = REPO / "build" / "model-cache"  # make model-1.5b: no download
    a.m.run(["agentctl", "model", "install", CAPABLE, "--from", str(cache)], timeout=1800)
    a.m.run(["agentctl", "model", "use", CAPABLE], timeout=1200)
    try:
        a.create("aa-q", template="sandbox", user="alice")
        task = a.submit("Write the word hello into the file artifacts/hello.txt", "--agent", "aa-q")
        info = wait_end(a, task)
        steps = a.ctl_json("task", "log", str(task), user="alice")
        trace = [(s["tool"], s.get("arguments"), str(s.get("result", ""))[:120]) for s in steps]
        assert info["status"] == "completed", (info, trace)
        assert wrote_hello(steps), trace
        text = a.ctl("task", "artifact", str(task), "hello.txt", user="alice").stdout
        assert text.strip() == "hello", text
        (art,) = [x for x in info["artifacts"] if x["name"] == "hello.txt"]
        owner = a.m.run(["stat", "-c", "%u", str(art["path"])]).stdout.strip()
        assert int(owner) == a.uid_of("agent-aa-q")
        r = a.ctl("task", "artifact", str(task), "hello.txt", user="bob", check=False)
        assert r.returncode == 77 and "(PermissionDenied)" in r.stderr, r
    finally:
        a.m.run(["agentctl", "model", "use", "smollm2-135m"], timeout=600, check=False)
