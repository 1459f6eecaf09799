"""kill -9 agentd in the middle of creates and removes: after systemd restarts
it, every agent is whole or gone, with no orphan user, home or unit."""

from __future__ import annotations

import subprocess
import time

import pytest
from agentd_helpers import Agentd, kill_agentd, kill_agentd_and_wait, wait_for, wait_restarted

from agentd.names import account_name, agent_of_account

pytestmark = pytest.mark.integration


def invariants(agentd: Agentd) -> list[str]:
    """Whatever does not match between registry and system, as sentences."""
    agents = {a["name"] for a in agentd.ctl_json("agent", "list")}
    members = agentd.sh(["getent", "group", "agentd-agents"]).stdout.strip().split(":")[3]
    users = {agent_of_account(u) or u for u in members.split(",") if u}
    homes = set(agentd.sh(["ls", "/home/agents"]).stdout.split())
    units = {
        line.split()[0].removeprefix("agent-").removesuffix(".service")
        for line in agentd.sh(
            ["systemctl", "list-units", "--all", "--plain", "--no-legend", "agent-*.service"]
        ).stdout.splitlines()
        if line.strip()
    }
    problems = []
    problems += [f"user {u} has no agent" for u in users - agents]
    problems += [f"agent {a} has no user" for a in agents - users]
    problems += [f"home {h} has no agent" for h in homes - agents]
    problems += [f"agent {a} has no home" for a in agents - homes]
    problems += [f"unit of {u} has no agent" for u in units - agents]
    for a in agents:
        passwd = agentd.sh(["getent", "passwd", account_name(a)], check=False).stdout.split(":")
        if (
            len(passwd) > 3
            and agentd.sh(["stat", "-c", "%u", f"/home/agents/{a}"], check=False).stdout.strip()
            != passwd[2]
        ):
            problems.append(f"home of {a} is not owned by it")
    return problems


def storm(agentd: Agentd, verb: str, names: list[str], delay: float) -> None:
    procs = []
    for name in names:
        args = (
            ["agent", "create", name, "--template", "sandbox", "--start"]
            if verb == "create"
            else ["agent", "rm", name]
        )
        procs.append(agentd.m.popen(["agentctl", *args]))
    time.sleep(delay)
    kill_agentd_and_wait(agentd)
    for p in procs:
        p.wait(timeout=60)


@pytest.mark.parametrize("delay", [0.02, 0.05, 0.1, 0.2, 0.4])
def test_kill_during_creates_and_removes_leaves_no_orphans(agentd: Agentd, delay: float) -> None:
    tag = str(int(delay * 1000))
    names = [f"crash-{tag}-{i}" for i in range(6)]
    storm(agentd, "create", names, delay)
    assert invariants(agentd) == []
    present = [a["name"] for a in agentd.ctl_json("agent", "list") if a["name"] in names]
    storm(agentd, "rm", present, delay)
    assert invariants(agentd) == []
    ok, checked = agentd.ctl_json("audit", "verify")["ok"], 0
    assert ok, checked


# Holds /etc/.pwd.lock the way lckpwdf(3) does (an fcntl lock), which groupadd,
# useradd and userdel take first: agentd's create or remove waits there, at a
# known point, for as long as the test likes (they give up after 15 s).
HOLD_PWD_LOCK = (
    "import fcntl, sys\n"
    "f = open('/etc/.pwd.lock', 'a')\n"
    "fcntl.lockf(f, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def kill_inside(agentd: Agentd, tool: str, args: list[str]) -> None:
    """Run `agentctl ARGS`, kill -9 agentd while it waits in TOOL (groupadd,
    userdel) for the account lock, and let systemd restart it."""
    holder = agentd.m.popen(["python3", "-c", HOLD_PWD_LOCK], stdin=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "held"
    ctl = agentd.m.popen(["agentctl", *args])
    try:
        wait_for(
            lambda: agentd.sh(["pgrep", "-x", tool], check=False).returncode == 0,
            30,
            f"agentd waiting in {tool}",
        )
        old = kill_agentd(agentd)
    finally:
        holder.stdin.close()  # the lock goes with the holder, before agentd's repair
        holder.wait(timeout=30)
        ctl.wait(timeout=60)
    wait_restarted(agentd, old)


def test_a_kill_inside_a_create_is_rolled_back(agentd: Agentd) -> None:
    kill_inside(agentd, "groupadd", ["agent", "create", "crash-held", "--template", "sandbox"])
    assert invariants(agentd) == []
    assert "crash-held" not in {a["name"] for a in agentd.ctl_json("agent", "list")}
    rows = agentd.audit("agent.create", "crash-held")
    assert [r["result"] for r in rows] == ["rolled_back"], rows
    assert agentd.sh(["getent", "passwd", account_name("crash-held")], check=False).returncode


def test_a_kill_inside_a_remove_is_finished_after_the_restart(agentd: Agentd) -> None:
    agentd.ctl("agent", "create", "crash-rm", "--template", "sandbox")
    kill_inside(agentd, "userdel", ["agent", "rm", "crash-rm"])
    wait_for(lambda: agentd.audit("agent.remove", "crash-rm"), 60, "the removal finished by agentd")
    rows = agentd.audit("agent.remove", "crash-rm")
    assert [r["result"] for r in rows] == ["repaired"], rows
    assert invariants(agentd) == []
    assert agentd.sh(["getent", "passwd", account_name("crash-rm")], check=False).returncode
