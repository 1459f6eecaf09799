"""An agent's memory at work in its tasks (issue 13), through agentd's runtime in
the machine. Before its first step a task recalls the agent's memory: a step of
its trace (tool recall, "auto"), naming the chunks it used, which `task show`
lists. When the task ends the agent stores a lesson (kind lesson, source
task/ID), and the next similar task recalls it.

SmolLM2-135M proves the plumbing. With the capable model (Qwen2.5-Coder-1.5B,
`tools/test.sh --slow`) the learning check of issue 13: a fact the agent read
in one task answers a later task, the file it came from gone and the fact not
repeated."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from agentd_helpers import Agentd, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CAPABLE = "qwen2.5-coder-1.5b"
ENDED = ("completed", "failed", "dead_lettered", "cancelled")
TEMPLATES = "/etc/agentd/templates"
BRIEF = """description = "sandbox with 3 model steps a task (the learning tests)"
capabilities = ["general"]
tools = ["files", "shell"]
profile = "offline"
steps = 3
"""
NOTES = "# Servers\n\nThe backup server is called vault-7. It keeps fourteen daily copies.\n"


@pytest.fixture(scope="module")
def mem(agentd: Agentd) -> Agentd:
    a = agentd
    models = a.ctl_json("model", "list")
    if not any(m["name"] == "minilm" and m.get("installed") for m in models):
        pytest.fail("the embedding model is not installed (make model-minilm; provision.py)")
    wait_for(lambda: a.ctl_json("model", "show").get("embedding_name"), 300, "embedding loaded")
    wait_for(lambda: a.ctl_json("model", "show")["state"] == "loaded", 300, "model loaded")
    a.m.write_file(f"{TEMPLATES}/brief.toml", BRIEF, mode=0o644)
    return a


def run_task(a: Agentd, agent: str, title: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Submit TITLE to AGENT and wait for its end (15 min at most: 2 shared CPUs);
    its `task show` and its steps."""
    task = a.submit(title, "--agent", agent, "--max-attempts", "1")
    deadline = time.monotonic() + 900
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        a.ctl("task", "wait", str(task), "--timeout", "60", user="alice", check=False)
        info = a.ctl_json("task", "show", str(task), user="alice")
        if info["status"] in ENDED:
            break
        if info["status"] == "blocked" and info["block_reason"].startswith("question:"):
            a.ctl("task", "reply", str(task), "I cannot tell you more. Answer now.", user="alice")
    assert info.get("status") in ENDED, info
    return info, a.ctl_json("task", "log", str(task), user="alice")


def answer(info: dict[str, Any]) -> str:
    """The loop's answer in a task's result (JSON text)."""
    try:
        result = json.loads(info.get("result") or "{}")
    except ValueError:
        return str(info.get("result"))
    return str(result.get("answer", "")) if isinstance(result, dict) else str(result)


def auto_recall(steps: list[dict[str, Any]]) -> dict[str, Any]:
    first = steps[0]
    assert first["tool"] == "recall" and first["arguments"].get("auto") is True, steps[:2]
    return first


def test_a_task_recalls_first_then_stores_a_lesson_the_next_task_recalls(mem: Agentd) -> None:
    a = mem
    a.create("learn-a", template="brief", user="alice")
    a.m.write_file("/tmp/servers.md", NOTES, mode=0o644)
    a.ctl("memory", "add", "learn-a", "/tmp/servers.md", user="alice")
    (chunk,) = a.ctl_json("memory", "list", "learn-a", user="alice")

    info, steps = run_task(a, "learn-a", "What is the name of the backup server?")
    recall = auto_recall(steps)
    assert chunk["id"] in [m["id"] for m in recall["memories"]], recall
    assert chunk["id"] in [m["id"] for m in info["memories"]]
    lesson = steps[-1]
    assert lesson["tool"] == "lesson", [s["tool"] for s in steps]
    assert not str(lesson["result"]).startswith("not stored"), lesson
    mine = a.ctl_json("memory", "list", "learn-a", user="alice")
    (learned,) = [m for m in mine if m["kind"] == "lesson"]
    assert learned["source"] == f"task/{info['id']}"
    assert "backup server" in learned["text"]  # the task's title goes with its lesson

    _, steps = run_task(a, "learn-a", "Tell me the backup server's name.")
    recalled = {m["id"] for m in auto_recall(steps)["memories"]}
    assert learned["id"] in recalled, auto_recall(steps)
    assert len(a.audit("memory.added", "learn-a")) >= 2  # the document, the lessons


@pytest.mark.slow
def test_the_capable_model_uses_a_fact_it_learned_in_an_earlier_task(mem: Agentd) -> None:
    a = mem
    cache = REPO / "build" / "model-cache"  # make model-1.5b: no download
    a.m.run(["agentctl", "model", "install", CAPABLE, "--from", str(cache)], timeout=1800)
    a.m.run(["agentctl", "model", "use", CAPABLE], timeout=1200)
    try:
        a.create("learn-q", template="sandbox", user="alice")
        uid = a.uid_of("agent-learn-q")
        a.m.write_file("/home/agents/learn-q/servers.txt", NOTES, mode=0o600, owner=str(uid))
        first, steps = run_task(
            a, "learn-q", "Read servers.txt and tell me the name of our backup server."
        )
        said = [(s["tool"], s.get("arguments"), str(s.get("result", ""))[:200]) for s in steps]
        assert first["status"] == "completed" and "vault-7" in answer(first), said
        a.m.run(["rm", "/home/agents/learn-q/servers.txt"])
        later, steps = run_task(
            a, "learn-q", "What is the name of our backup server? Answer with the name only."
        )
        trace = [(s["tool"], str(s.get("result", ""))[:200]) for s in steps]
        assert later["status"] == "completed", trace
        assert "vault-7" in answer(later), trace
        assert any(m["source"] == f"task/{first['id']}" for m in later["memories"]), trace
    finally:
        a.m.run(["agentctl", "model", "use", "smollm2-135m"], timeout=600, check=False)
