"""The agent loop's host side (issue 12) in the systemd machine.

The default model (SmolLM2-135M) rarely does anything useful, so the agent's
side is driven by hand: a probe runs inside the agent's own unit, as its UID
(Machine.run_in_unit, as tests/integration/test_batched_claims.py does), and
calls TaskContext, RecordStep, AskOwner, DeferTask, Think and BlockTask as a
runtime would. The owner then reads the trace with `agentctl task log` and
answers with `agentctl task reply`; another user is refused both.

The attack: the agent writes steps into its sibling's task, a superseded
attempt, and past the size bound; each is refused (and the foreign write
audited) while agentd keeps answering another user within 1 s.

Then a task blocked on a spent quota resumes by itself when an admin resets
the quota (blocked -> pending -> claimed, nobody unblocking it), and one
free-form task runs through agentd's own runtime to its end, with its steps
in `agentctl task log`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from agentd_helpers import Agentd, answering, wait_for

from agentd.names import account_name

pytestmark = pytest.mark.integration
CONF = "/etc/agentd/agentd.toml"
IDLE = "/usr/local/lib/agentd-tests-idle-runtime"  # a unit that is up, claiming nothing
SCRIPT = "/opt/agentd-tests/agent_loop.py"  # not /tmp: the unit has PrivateTmp

# Runs as the agent inside its unit. argv: MODE TASK [OTHER]; prints one JSON
# object: each call's answer, or the name of agentd's error.
PROBE = r"""
import asyncio, json, sys
sys.path.insert(0, "/usr/lib/agentd/python")
from sdbus import DbusFailedError, sd_bus_open_system, set_default_bus
from agentd.api import errors  # maps org.agentos.agentd1.Error.* to DbusFailedError
from agentd.api.interfaces import BUS_NAME, ROOT_PATH, RuntimeInterface

async def step(out, name, call):
    try:
        out[name] = await call
        if out[name] is None:
            out[name] = "ok"
    except DbusFailedError as e:
        out[name] = e.dbus_error_name.rsplit(".", 1)[-1]
        out[name + "_message"] = str(e.args[0]) if e.args else ""

def step_json(n, **kw):
    return json.dumps({"n": n, "tool": "shell", "arguments": {"command": "ls"},
                       "result": "exit 0", "prompt_tokens": 100, "computed_tokens": 100 - n,
                       "completion_tokens": 9, "seconds": 0.5, **kw})

async def claim(rt, task):
    for _ in range(20):
        for t in await rt.claim_tasks(1, 3000):
            if t["id"][1] == task:
                return t["attempt"][1]
    raise SystemExit(f"task {task} never came")

async def main(mode, task, other):
    bus = sd_bus_open_system(); set_default_bus(bus)
    rt = RuntimeInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
    out = {}
    _, _, settings = await rt.register()
    out["settings"] = {k: v[1] for k, v in settings.items() if k in ("steps", "task_tokens")}
    out["attempt"] = attempt = await claim(rt, task)
    await step(out, "context", rt.task_context(task))
    if mode == "ask":
        await step(out, "step1", rt.record_step(task, attempt, step_json(1)))
        await step(out, "too_big", rt.record_step(task, attempt, step_json(2, result="x" * 17000)))
        await step(out, "not_json", rt.record_step(task, attempt, "[1]"))
        await step(out, "foreign", rt.record_step(other, 1, step_json(1)))
        await step(out, "stale", rt.record_step(task, attempt + 1, step_json(2)))
        await step(out, "ask", rt.ask_owner(task, attempt, "Which directory?"))
        await step(out, "after_ask", rt.record_step(task, attempt, step_json(2)))
    elif mode == "defer":
        await step(out, "step2", rt.record_step(task, attempt, step_json(2, tool="finish")))
        await step(out, "defer", rt.defer_task(task, attempt, 2.0, "Overloaded: try later"))
        out["again"] = await claim(rt, task)
        await step(out, "done", rt.complete_task(task, out["again"], '{"answer": "ok"}', []))
    elif mode == "quota":
        hello = json.dumps([{"role": "user", "content": "hi"}])
        await step(out, "think", rt.think(hello, {"task": ("t", task), "max_tokens": ("u", 8)}))
        if out["think"] == "QuotaExceeded":  # as the runtime does: blocked with the reason
            await step(out, "block", rt.block_task(task, attempt, out["think_message"]))
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0))
"""


ORIGINAL: dict[str, str] = {}


@pytest.fixture(scope="module")
def idle(agentd: Agentd) -> Iterator[Agentd]:
    """Agents whose units run a runtime that claims nothing: the probe does."""
    original = ORIGINAL["conf"] = agentd.sh(["cat", CONF]).stdout
    agentd.m.write_file(IDLE, "#!/bin/sh\nexec sleep infinity\n", mode=0o755)
    agentd.m.write_file(
        CONF, original + f'\nruntime_command = "{IDLE}"\nidle_timeout = 0\n', mode=0o644
    )
    agentd.restart()
    agentd.sh(["mkdir", "-p", "/opt/agentd-tests"])
    agentd.m.write_file(SCRIPT, PROBE, mode=0o644)
    for name in ("al-a", "al-b"):
        agentd.create(name, template="sandbox", user="alice")
    yield agentd
    agentd.m.write_file(CONF, original, mode=0o644)
    agentd.restart()


def probe(a: Agentd, agent: str, *args: object) -> dict[str, Any]:
    a.ctl("agent", "start", agent, user="alice", check=False)  # may be started already
    unit = f"agent-{agent}.service"
    wait_for(lambda: a.show(unit, "ActiveState")["ActiveState"] == "active", 60, unit)
    r = a.m.run_in_unit(
        unit,
        ["python3", SCRIPT, *map(str, args)],
        user=account_name(agent),
        check=False,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def show(a: Agentd, task: int, user: str = "alice") -> dict[str, Any]:
    info: dict[str, Any] = a.ctl_json("task", "show", str(task), user=user)
    return info


def test_steps_questions_replies_and_deferral_through_the_bus(idle: Agentd) -> None:
    a = idle
    task = a.submit("Tidy the data directory", "--agent", "al-a")
    sibling = a.submit("The sibling's", "--agent", "al-b", "--priority", "critical")
    with answering(a, user="bob"):
        out = probe(a, "al-a", "ask", task, sibling)
    assert out["settings"] == {"steps": 10, "task_tokens": 20000}
    context = json.loads(out["context"])
    assert context["trace"] == [] and context["last_error"] == "" and context["budget"] == 20000
    assert out["step1"] == "ok"
    assert out["too_big"] == "InvalidArgument" and out["not_json"] == "InvalidArgument"
    assert out["foreign"] == "PermissionDenied"  # its sibling's task: refused ...
    denied = [
        e
        for e in a.audit("runtime.record_step", agent="al-a")
        if e["result"] == "denied" and e["detail"].get("task_id") == sibling
    ]
    assert denied, "... and audited"
    assert out["stale"] == "LeaseExpired" and out["ask"] == "ok"
    assert out["after_ask"] == "LeaseExpired"  # asking let go of the claim

    info = show(a, task)
    assert (info["status"], info["block_reason"]) == ("blocked", "question: Which directory?")
    log = a.ctl_json("task", "log", str(task), user="alice")
    assert [(s["n"], s["tool"], s["attempt"], s["computed_tokens"]) for s in log] == [
        (1, "shell", 1, 99)
    ]
    assert a.ctl("task", "log", str(task), user="alice").stdout.count("\n") == 1
    assert "1 steps" in a.ctl("task", "show", str(task), user="alice").stdout
    for args in (("log", str(task)), ("reply", str(task), "/etc"), ("show", str(task))):
        r = a.ctl("task", *args, user="bob", check=False)
        assert r.returncode == 77 and "(PermissionDenied)" in r.stderr, r
    assert show(a, task)["status"] == "blocked"  # bob's reply changed nothing
    a.ctl("task", "reply", str(task), "Use /srv/data", user="alice")
    info = show(a, task)
    assert (info["status"], info["agent"]) == ("pending", "al-a")

    out = probe(a, "al-a", "defer", task)
    context = json.loads(out["context"])
    assert [(r["question"], r["answer"]) for r in context["replies"]] == [
        ("Which directory?", "Use /srv/data")
    ]
    assert [s["tool"] for s in context["trace"]] == ["shell"]
    assert out["attempt"] == 2 and out["defer"] == "ok"
    assert out["again"] == 3 and out["done"] == "ok"  # claimed again after its wait
    info = show(a, task)
    assert info["status"] == "completed" and info["max_attempts"] == 4  # not consumed
    (deferred,) = [e for e in a.audit("task.deferred") if e["detail"].get("task_id") == task]
    assert deferred["detail"]["reason"] == "Overloaded: try later"
    replied = [e for e in a.audit("task.replied") if e["detail"].get("task_id") == task]
    assert [e["detail"]["answer"] for e in replied] == ["Use /srv/data"]
    assert [s["tool"] for s in a.ctl_json("task", "log", str(task), user="alice")] == [
        "shell",
        "finish",
    ]
    a.ctl("task", "cancel", str(sibling), user="alice")


def test_a_quota_blocked_task_resumes_by_itself_when_its_quota_resets(idle: Agentd) -> None:
    a = idle
    a.ctl("quota", "set", "al-b", "1", "--period", "daily", user="carol")
    try:
        task = a.submit("Needs the model", "--agent", "al-b")
        out = probe(a, "al-b", "quota", task)
        assert out["think"] == "QuotaExceeded" and out["block"] == "ok", out
        info = show(a, task)
        assert info["status"] == "blocked" and "quota resets at" in info["block_reason"]
        a.ctl("quota", "reset", "al-b", user="carol")  # an admin starts the count afresh
        wait_for(lambda: show(a, task)["status"] == "pending", 30, "resumed by agentd")
        out = probe(a, "al-b", "none", task)  # claimed again by its agent
        assert out["attempt"] == 2
    finally:
        a.ctl("quota", "set", "al-b", "0", user="carol")
    events = [e for e in a.ctl_json("task", "show", str(task), user="alice")["events"]]
    seen = [e["event"] for e in events]
    assert seen[seen.index("task.blocked") :][:3] == [
        "task.blocked",
        "task.unblocked",
        "task.claimed",
    ], seen
    (unblocked,) = [e for e in events if e["event"] == "task.unblocked"]
    assert unblocked["actor_uid"] == 0 and "quota reset" in json.dumps(unblocked["detail"])


def test_a_free_form_task_runs_to_its_end_with_its_steps_logged(idle: Agentd) -> None:
    """Through agentd's own runtime and the default model: it ends, completed
    or failed with a plain reason, and its steps are in `task log`."""
    a = idle
    a.m.write_file(CONF, ORIGINAL["conf"], mode=0o644)  # agentd's own runtime again
    a.restart()
    wait_for(lambda: a.ctl_json("model", "show")["state"] == "loaded", 180, "model loaded")
    a.create("al-r", template="sandbox", user="alice")
    task = a.submit("Suggest a name for a backup script", "--agent", "al-r")
    a.ctl("task", "wait", str(task), "--timeout", "600", user="alice", check=False, timeout=660)
    info = show(a, task)
    assert info["status"] in ("completed", "failed"), info
    if info["status"] == "failed":
        assert info["error"] and "Traceback" not in info["error"], info["error"]
    steps = a.ctl_json("task", "log", str(task), user="alice")
    assert steps, "the loop recorded its steps"
    assert all({"tool", "n", "attempt", "at"} <= set(s) for s in steps), steps
    r = a.ctl("task", "log", str(task), user="bob", check=False)
    assert r.returncode == 77, r
