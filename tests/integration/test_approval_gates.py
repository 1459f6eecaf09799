"""Approval gates (issue 12, section 3) end to end in the systemd machine.

The model cannot be relied on to ask, so each agent's part is played by a
script run inside the agent's own unit as the agent (Machine.run_in_unit,
as test_batched_claims does), with a runtime that claims nothing: it claims
its task with Runtime.ClaimTasks, asks with Runtime.RequestApproval, and runs
the gated shell command only if Runtime.UseApproval succeeds, as the agent
loop does. The owner answers with agentctl.

The attacks: bob (not the owner) and the agent itself try to answer; a
denied action is tried anyway (UseApproval is refused, so the file it would
write never appears); a granted action is tried again by a later attempt
(refused: it ran once). Meanwhile agentd keeps answering bob within 1 s.
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
SCRIPT = "/opt/agentd-tests/approvals_probe.py"  # not /tmp: the unit has PrivateTmp
TEMPLATES = "/etc/agentd/templates"
GATED = """description = "an admin's copy of sandbox whose shell asks the owner"
capabilities = ["general"]
tools = ["files", "shell"]
profile = "offline"
concurrency = 2

[approval]
tools = ["shell"]
shell_allow = ["ls *"]
timeout = "{timeout}"
"""

# Runs as the agent inside its unit. argv[1]: a JSON list of steps; prints a JSON
# list of each step's answer or error name. "use" runs the command only if agentd
# granted it (what the agent loop does), appending one line to ~/ran.
PROBE = r"""
import asyncio, json, os, pwd, subprocess, sys
sys.path.insert(0, "/usr/lib/agentd/python")
from sdbus import DbusFailedError, SdBusBaseError, sd_bus_open_system, set_default_bus
from agentd.api import errors  # maps org.agentos.agentd1.Error.* to DbusFailedError
from agentd.api.interfaces import BUS_NAME, ROOT_PATH, RuntimeInterface
from agentd.api.interfaces.approvals import ApprovalsInterface

HOME = pwd.getpwuid(os.getuid()).pw_dir

async def main(steps):
    bus = sd_bus_open_system(); set_default_bus(bus)
    rt = RuntimeInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
    ap = ApprovalsInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
    out, held = [], None
    for step in steps:
        op, args = step[0], step[1:]
        try:
            if op == "register":
                out.append((await rt.register())[0])
            elif op == "claim":
                tasks = await rt.claim_tasks(1, 20000)
                held = [tasks[0]["id"][1], tasks[0]["attempt"][1]] if tasks else None
                out.append(held)
            elif op == "request":
                out.append(await rt.request_approval(held[0], held[1], "shell",
                                                     json.dumps({"command": args[0]})))
            elif op == "use":
                await rt.use_approval(args[0], held[1])
                subprocess.run(["/bin/sh", "-c", args[1]], cwd=HOME, check=True)
                out.append("ran")
            elif op == "approvals":
                out.append(json.loads(await rt.task_approvals(held[0])))
            elif op == "grant":
                out.append(await ap.grant_approval(args[0], False))
        except DbusFailedError as e:
            out.append(e.dbus_error_name.rsplit(".", 1)[-1])
        except SdBusBaseError as e:  # refused by the bus itself (its policy)
            out.append(type(e).__name__)
    print(json.dumps(out))

asyncio.run(main(json.loads(sys.argv[1])))
"""


@pytest.fixture(scope="module")
def gated(agentd: Agentd) -> Iterator[Agentd]:
    """Agents of alice's on admin copies of a template with an [approval] table,
    whose units run a runtime that claims nothing: the test plays the agent."""
    original = agentd.sh(["cat", CONF]).stdout
    agentd.m.write_file(IDLE, "#!/bin/sh\nexec sleep infinity\n", mode=0o755)
    agentd.m.write_file(
        CONF,
        original
        + f'\nruntime_command = "{IDLE}"\nidle_timeout = 0\nretry_backoff = 1\n'
        + "heartbeat_interval = 1\n",
        mode=0o644,
    )
    agentd.sh(["mkdir", "-p", "/opt/agentd-tests", TEMPLATES])
    agentd.m.write_file(SCRIPT, PROBE, mode=0o644)
    agentd.m.write_file(f"{TEMPLATES}/gated.toml", GATED.format(timeout="1h"), mode=0o644)
    agentd.m.write_file(f"{TEMPLATES}/gated2s.toml", GATED.format(timeout="2s"), mode=0o644)
    agentd.restart()
    for name, template in (("ap-a", "gated"), ("ap-t", "gated2s")):
        agentd.create(name, template=template, user="alice", start=True)
        wait_for(lambda n=name: active(agentd, n), 60, f"agent-{name}.service active")
    yield agentd
    for name in ("ap-a", "ap-t"):
        agentd.ctl("agent", "rm", name, user="alice", check=False)
    agentd.sh(["rm", "-f", f"{TEMPLATES}/gated.toml", f"{TEMPLATES}/gated2s.toml"])
    agentd.m.write_file(CONF, original, mode=0o644)
    agentd.restart()


def active(a: Agentd, name: str) -> bool:
    return a.show(f"agent-{name}.service", "ActiveState")["ActiveState"] == "active"


def play(a: Agentd, agent: str, *steps: list[Any]) -> list[Any]:
    """STEPS run by AGENT inside its unit, as itself; each step's answer."""
    r = a.m.run_in_unit(
        f"agent-{agent}.service",
        ["python3", SCRIPT, json.dumps([["register"], *steps])],
        user=account_name(agent),
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout.strip().splitlines()[-1]))[1:]


def home(a: Agentd, agent: str) -> str:
    return str(a.sh(["getent", "passwd", account_name(agent)]).stdout.split(":")[5])


def ran(a: Agentd, agent: str) -> list[str]:
    """Lines of ~/ran: one per gated command that actually ran."""
    out = a.sh(["cat", f"{home(a, agent)}/ran"], check=False)
    return out.stdout.split() if out.returncode == 0 else []


def approval(a: Agentd, ident: int, user: str = "alice") -> dict[str, Any]:
    return dict(a.ctl_json("approval", "show", str(ident), user=user))


def ask(a: Agentd, agent: str, command: str) -> tuple[int, int]:
    """A task of alice's for AGENT, claimed by it, which asks to run COMMAND."""
    tid = a.submit(f"gated {command}", "--agent", agent)
    (held, ident) = play(a, agent, ["claim"], ["request", command])
    assert held[0] == tid, held
    assert isinstance(ident, int), ident
    return tid, ident


def done(a: Agentd, tid: int) -> None:
    """Cancel TID, so that the agent's next claim in another test finds only its own."""
    a.ctl("task", "cancel", str(tid), user="alice")


def task_status(a: Agentd, tid: int) -> str:
    return str(a.ctl_json("task", "show", str(tid), user="alice")["status"])


def test_the_owner_sees_the_exact_action_others_cannot_answer(gated: Agentd) -> None:
    a = gated
    command = "echo granted >> ran; rm -f nothing"
    tid, ident = ask(a, "ap-a", command)
    assert task_status(a, tid) == "awaiting_approval"
    listed = {x["id"]: x for x in a.ctl_json("approval", "list", user="alice")}
    assert listed[ident]["arguments"] == {"command": command}
    assert listed[ident]["status"] == "pending" and listed[ident]["task"] == tid
    plain = a.ctl("approval", "list", user="alice").stdout
    assert any(
        line.startswith(f"{ident}\tpending") and command in line for line in plain.splitlines()
    )
    shown = approval(a, ident)
    assert shown["tool"] == "shell" and shown["arguments"]["command"] == command
    assert [e for e in a.audit("approval.requested") if e["detail"].get("approval") == ident]

    bob = a.uid_of("bob")
    with answering(a, user="carol"):
        refused = a.ctl("approval", "grant", str(ident), user="bob", check=False)
        assert refused.returncode == 77 and "PermissionDenied" in refused.stderr, refused
        refused = a.ctl("approval", "show", str(ident), user="bob", check=False)
        assert refused.returncode == 77 and "PermissionDenied" in refused.stderr, refused
        assert ident not in {x["id"] for x in a.ctl_json("approval", "list", user="bob")}
        # the agent itself: refused by the bus policy (agents reach Runtime only) or agentd
        (self_grant,) = play(a, "ap-a", ["grant", ident])
        assert self_grant in ("PermissionDenied", "AccessDenied", "DbusAccessDeniedError")
    denied = [
        e for e in a.audit("approval.grant") if e["result"] == "denied" and e["actor_uid"] == bob
    ]
    assert denied, "bob's refused grant is audited"
    assert approval(a, ident)["status"] == "pending" and ran(a, "ap-a") == []

    # the owner grants: the task is pending again; the next attempt runs it, once
    a.ctl("approval", "grant", str(ident), user="alice")
    assert approval(a, ident)["status"] == "granted"
    assert task_status(a, tid) == "pending"
    held, first, again = play(a, "ap-a", ["claim"], ["use", ident, command], ["use", ident, "true"])
    assert held[0] == tid and first == "ran" and again == "ran", (held, first, again)
    assert ran(a, "ap-a") == ["granted"]
    assert approval(a, ident)["status"] == "used"
    # another attempt (a new runtime released the claim) is refused: it ran once
    held, later = play(a, "ap-a", ["claim"], ["use", ident, command])
    assert held == [tid, held[1]] and later == "Busy", (held, later)
    assert ran(a, "ap-a") == ["granted"]
    rows = [e for e in a.audit("approval.granted") if e["detail"].get("approval") == ident]
    assert len(rows) == 1 and rows[0]["actor_uid"] == a.uid_of("alice")
    done(a, tid)


def test_a_denied_action_never_runs_and_the_reason_is_kept(gated: Agentd) -> None:
    a = gated
    command = "echo denied >> ran"
    before = ran(a, "ap-a")
    tid, ident = ask(a, "ap-a", command)
    a.ctl("approval", "deny", str(ident), "--reason", "not in production", user="alice")
    shown = approval(a, ident)
    assert shown["status"] == "denied" and shown["reason"] == "not in production"
    assert task_status(a, tid) == "pending"
    held, tried, seen = play(a, "ap-a", ["claim"], ["use", ident, command], ["approvals"])
    assert held[0] == tid and tried == "Busy", (held, tried)
    mine = [x for x in seen["approvals"] if x["id"] == ident]
    assert mine and mine[0]["status"] == "denied" and mine[0]["reason"] == "not in production"
    assert ran(a, "ap-a") == before  # the denied command never ran
    rows = [e for e in a.audit("approval.denied") if e["detail"].get("approval") == ident]
    assert len(rows) == 1 and rows[0]["detail"]["reason"] == "not in production"
    done(a, tid)


def test_a_pending_approval_survives_a_restart(gated: Agentd) -> None:
    a = gated
    tid, ident = ask(a, "ap-a", "date > now")
    a.restart()
    wait_for(
        lambda: a.ctl("approval", "show", str(ident), user="alice", check=False).returncode == 0,
        60,
        "agentd answering after its restart",
    )
    assert approval(a, ident)["status"] == "pending"
    assert task_status(a, tid) == "awaiting_approval"
    assert ident in {x["id"] for x in a.ctl_json("approval", "list", user="alice")}
    wait_for(lambda: active(a, "ap-a"), 60, "agent-ap-a.service active again")
    a.ctl("approval", "grant", str(ident), user="alice")
    assert approval(a, ident)["status"] == "granted" and task_status(a, tid) == "pending"
    done(a, tid)


def test_an_unanswered_approval_times_out_denied(gated: Agentd) -> None:
    a = gated
    tid, ident = ask(a, "ap-t", "echo late >> ran")
    assert approval(a, ident)["deadline"] - approval(a, ident)["created_at"] == pytest.approx(2)
    shown = wait_for(
        lambda: (s := approval(a, ident))["status"] == "denied" and s, 60, "the timeout"
    )
    assert shown["reason"] == "timed out"
    assert task_status(a, tid) == "pending"
    _held, tried = play(a, "ap-t", ["claim"], ["use", ident, "echo late >> ran"])
    assert tried == "Busy" and ran(a, "ap-t") == []
    done(a, tid)


def test_grant_always_adds_to_the_agents_allow_list(gated: Agentd) -> None:
    a = gated
    tid, ident = ask(a, "ap-a", "wc -l /etc/hostname")
    info = a.ctl_json("approval", "grant", str(ident), "--always", user="alice")
    assert info["status"] == "granted" and info["always"] is True
    held, seen = play(a, "ap-a", ["claim"], ["approvals"])
    assert held[0] == tid
    allow = seen["rules"]["shell_allow"]
    assert "ls *" in allow and any(p.startswith("wc") for p in allow), allow
    row = [e for e in a.audit("approval.granted") if e["detail"].get("approval") == ident]
    assert row and "wc" in row[0]["detail"]["always"]
    done(a, tid)
