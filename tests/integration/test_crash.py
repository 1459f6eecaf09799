"""kill -9 agentd in the middle of creates and removes: after systemd restarts
it, every agent is whole or gone, with no orphan user, home or unit."""

from __future__ import annotations

import time

import pytest
from agentd_helpers import Agentd, kill_agentd_and_wait

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


def test_repairs_are_audited(agentd: Agentd) -> None:
    """Across the storms above, agentd must have had work to repair at least once."""
    rows = agentd.audit()
    repairs = [r for r in rows if r["result"] in ("rolled_back", "repaired")]
    starts = [r for r in rows if r["action"] == "agentd.start"]
    assert len(starts) >= 10
    assert repairs, "no kill landed inside a create or remove; the crash test proved nothing"
