"""A free-form task, agentd's own runtime and the default model (SmolLM2-135M),
in the machine: the loop uses a tool, in the agent's unit, as the agent's UID,
and what it leaves under artifacts/ is the owner's alone (issue 12).

What the default model does with this task was measured outside the machine
with tools/loop_try.py's host (the runtime's own loop code, greedy decoding,
context 4,096, home /home/agents/NAME as here), 2026-11-30 on the shared 2
CPUs. Greedy decoding made every repeat of a prompt take the same steps:

- loop without the plan step (20:05), sandbox template, 3 runs each:
  "Write the word hello into the file artifacts/hello.txt": shell
  `wc -l; echo hello; echo hello`, the same step refused 3 times as a repeat,
  then finish; no file. Writing template (files only), 2 runs: list_files
  artifacts/hello.txt (missing), refused repeats, then a 768-token finish
  ("I am a tool. ..."); no file. "Run the command: echo hello >
  artifacts/hello.txt" (1 run): shell `echo hello > artifacts/hello.txt` at
  step 1 (the file written), then ask_owner "change this line to". "Use
  write_file to write hello to artifacts/hello.txt": invalid steps (a shell
  step naming logs/hello.txt, cut at max_tokens).
- loop with the plan step (20:25), sandbox template, 1 run each: "Run the
  command: echo hello > artifacts/hello.txt" (also with "Then finish with the
  answer: done." / "Do not ask me anything.") and "Run echo hello >
  artifacts/hello.txt and finish": plan, then shell `ls -S logs/*.log ...`
  (the prompt's example), repeated; no file.

So the 135M model does not write the file reliably with any phrasing tried,
and the loop (agentd/agentloop/, being tuned) changes what it does. Asserted
here, whatever the model does: the task ends (completed, or failed with a
plain reason; a question is answered once), and its trace holds at least one
real tool step with its result; the runtime ran in the unit as the agent: the
artifacts/ directory it makes is the agent UID's, and bob can neither list it
nor read the task's trace or artifacts. Every artifact agentd lists is a file
in that directory owned by the agent UID, and `agentctl task artifact` gives
the file's bytes to alice and refuses bob; and if a step wrote
artifacts/hello.txt (write_file, or a shell command redirecting into it that
exited 0), hello.txt must be among the artifacts, holding "hello". That last
clause is what issue 12 asks for, and it binds only when the model writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from agentd_helpers import Agentd, wait_for

pytestmark = pytest.mark.integration
AGENT = "aa-w"
TITLE = "Run the command: echo hello > artifacts/hello.txt"
TOOL_STEPS = ("shell", "write_file", "read_file", "list_files")
ENDED = ("completed", "failed", "dead_lettered", "cancelled")


@pytest.fixture(scope="module")
def ran(agentd: Agentd) -> Iterator[tuple[Agentd, int, dict[str, Any]]]:
    """AGENT created by alice, TITLE submitted to it, and run to its end."""
    a = agentd
    wait_for(lambda: a.ctl_json("model", "show")["state"] == "loaded", 300, "model loaded")
    a.create(AGENT, template="sandbox", user="alice")
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
