"""Attempts made as an agent, from inside its own unit: what it must not reach.

Each probe runs in agent-NAME.service's cgroup and mount/network namespaces as
the agent's UID with no capabilities and no_new_privs (Machine.run_in_unit);
the real runtime process is checked separately for its seccomp filter.
"""

from __future__ import annotations

import re

import pytest
from agentd_helpers import Agentd

from agentd.names import account_name

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pair(agentd: Agentd) -> tuple[str, str]:
    for name in ("sec-a", "sec-b"):
        agentd.create(name, user="alice", start=True)
        agentd.wait_online(name)
    agentd.sh(
        "echo secret-of-b > /home/agents/sec-b/secret && chown agent-sec-b: "
        "/home/agents/sec-b/secret && chmod 600 /home/agents/sec-b/secret"
    )
    return "sec-a", "sec-b"


def as_agent(agentd: Agentd, name: str, cmd: str) -> object:
    return agentd.m.run_in_unit(
        f"agent-{name}.service", ["/bin/sh", "-c", cmd], user=account_name(name), check=False
    )


def test_probe_really_runs_as_the_agent_in_its_unit(agentd: Agentd, pair) -> None:
    r = as_agent(agentd, "sec-a", "id -u; cat /proc/self/cgroup; grep NoNewPrivs /proc/self/status")
    assert r.stdout.splitlines()[0] == str(agentd.uid_of(account_name("sec-a")))
    assert "agent-sec-a.service" in r.stdout and "NoNewPrivs:\t1" in r.stdout


def test_agent_can_use_its_own_home(agentd: Agentd, pair) -> None:
    r = as_agent(agentd, "sec-a", "echo hi > $HOME/own && cat /home/agents/sec-a/own")
    assert r.stdout.strip() == "hi"


def test_agent_cannot_read_another_agents_home(agentd: Agentd, pair) -> None:
    r = as_agent(agentd, "sec-a", "cat /home/agents/sec-b/secret; ls /home/agents/sec-b")
    assert r.returncode != 0 and "secret-of-b" not in r.stdout
    r = as_agent(agentd, "sec-a", "ls -a /home/agents")
    assert "sec-b" not in r.stdout  # other homes are not even visible


@pytest.mark.parametrize(
    "path",
    ["/etc/agent-was-here", "/var/lib/agentd/x", "/usr/lib/agentd/python/x", "/home/alice/x"],
)
def test_agent_cannot_write_outside_its_home(agentd: Agentd, pair, path: str) -> None:
    r = as_agent(agentd, "sec-a", f"echo x > {path}")
    assert r.returncode != 0
    assert agentd.sh(["test", "-e", path], check=False).returncode == 1


def test_agent_cannot_read_agentd_state(agentd: Agentd, pair) -> None:
    r = as_agent(agentd, "sec-a", "cat /var/lib/agentd/agentd.db | head -c 16; ls /var/lib/agentd")
    assert r.returncode != 0 and "SQLite" not in r.stdout


def test_agent_gets_permission_denied_from_manager(agentd: Agentd, pair) -> None:
    before = len([r for r in agentd.audit() if r["result"] == "denied"])
    calls = [
        "CreateAgent ssa{sv} spawned sandbox 0",
        "StopAgent s sec-b",
        "RemoveAgent sb sec-b false",
        "ListAgents",
    ]
    for call in calls:
        r = as_agent(
            agentd,
            "sec-a",
            "busctl --system call org.agentos.agentd1 "
            f"/org/agentos/agentd1 org.agentos.agentd1.Manager {call}",
        )
        assert r.returncode != 0, call
        assert "agents may not" in r.stderr, (call, r.stderr)
    # the typed error name, as a D-Bus client sees it
    r = as_agent(
        agentd,
        "sec-a",
        "gdbus call --system --dest org.agentos.agentd1 "
        "--object-path /org/agentos/agentd1 --method "
        "org.agentos.agentd1.Manager.StopAgent sec-b",
    )
    assert "org.agentos.agentd1.Error.PermissionDenied" in r.stderr
    after = [r for r in agentd.audit() if r["result"] == "denied"]
    assert len(after) >= before + len(calls) + 1
    assert after[-1]["actor_uid"] == agentd.uid_of(account_name("sec-a"))
    assert agentd.show("agent-sec-b.service", "ActiveState")["ActiveState"] == "active"
    assert agentd.sh(["getent", "passwd", account_name("spawned")], check=False).returncode == 2


def test_agent_cannot_touch_another_agents_object(agentd: Agentd, pair) -> None:
    r = as_agent(
        agentd,
        "sec-a",
        "busctl --system call org.agentos.agentd1 "
        "/org/agentos/agentd1/agent/sec_2db org.agentos.agentd1.Agent Stop",
    )
    assert r.returncode != 0
    r = as_agent(
        agentd,
        "sec-a",
        "busctl --system get-property org.agentos.agentd1 "
        "/org/agentos/agentd1/agent/sec_2db org.agentos.agentd1.Agent Home",
    )
    assert r.returncode != 0 and "/home/agents" not in r.stdout


def test_agent_cannot_talk_to_systemd_or_other_services(agentd: Agentd, pair) -> None:
    probes = [
        "busctl --system call org.freedesktop.systemd1 /org/freedesktop/systemd1 "
        "org.freedesktop.systemd1.Manager StartUnit ss agentd.service replace",
        "busctl --system call org.freedesktop.systemd1 /org/freedesktop/systemd1 "
        "org.freedesktop.systemd1.Manager ListUnits",
        "busctl --system call org.freedesktop.login1 /org/freedesktop/login1 "
        "org.freedesktop.login1.Manager ListSessions",
        "systemctl start agent-sec-b.service",
        "systemd-run --unit escape /bin/true",
    ]
    for probe in probes:
        r = as_agent(agentd, "sec-a", probe)
        assert r.returncode != 0, probe
    r = as_agent(agentd, "sec-a", probes[1])
    assert "Access denied" in r.stderr or "AccessDenied" in r.stderr
    assert (
        agentd.sh(["systemctl", "is-active", "escape.service"], check=False).stdout.strip()
        != "active"
    )


def test_runtime_process_has_seccomp_and_no_privileges(agentd: Agentd, pair) -> None:
    st = agentd.proc_status(agentd.main_pid("agent-sec-a.service"))
    assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1"
    assert st["CapEff"] == st["CapPrm"] == st["CapBnd"] == "0000000000000000"


def test_memory_bomb_dies_inside_its_unit_and_agentd_keeps_serving(agentd: Agentd, pair) -> None:
    bomb = "python3 -c 'x = []\nwhile True: x.append(bytearray(16 << 20))'"
    r = as_agent(agentd, "sec-a", bomb)
    assert r.returncode in (137, -9) or "Killed" in r.stderr or "MemoryError" in r.stderr
    assert agentd.ctl_json("status")["version"]
    assert agentd.show("agent-sec-a.service", "ActiveState")["ActiveState"] == "active"
    assert agentd.show("agentd.service", "ActiveState")["ActiveState"] == "active"
    usage = agentd.sh(
        ["cat", "/sys/fs/cgroup/memory/agents.slice/agent-sec-a.service/memory.max_usage_in_bytes"]
    ).stdout
    assert int(usage) <= 256 << 20


def test_fork_bomb_stops_at_tasks_max(agentd: Agentd, pair) -> None:
    script = (
        "import os, time\n"
        "kids = []\n"
        "try:\n"
        "    for _ in range(500):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            time.sleep(60); os._exit(0)\n"
        "        kids.append(pid)\n"
        "    print('unbounded', len(kids))\n"
        "except OSError as e:\n"
        "    print('stopped', len(kids), e.errno)\n"
        "for k in kids: os.kill(k, 9)\n"
    )
    agentd.sh(["mkdir", "-p", "/opt/agentd-tests"])  # not /tmp: the unit has PrivateTmp
    agentd.m.write_file("/opt/agentd-tests/forkbomb.py", script, mode=0o644)
    r = agentd.m.run_in_unit(
        "agent-sec-a.service",
        ["python3", "/opt/agentd-tests/forkbomb.py"],
        user=account_name("sec-a"),
        check=False,
    )
    m = re.match(r"stopped (\d+) (\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert int(m.group(1)) < 32 and int(m.group(2)) == 11  # EAGAIN at TasksMax=32
    assert agentd.show("agent-sec-a.service", "ActiveState")["ActiveState"] == "active"


def test_denials_carry_the_agents_uid(agentd: Agentd, pair) -> None:
    # UIDs are reused after removal: count only what happened since sec-a exists.
    since = agentd.audit("agent.create", "sec-a")[-1]["seq"]
    rows = [
        r
        for r in agentd.audit()
        if r["result"] == "denied"
        and r["seq"] > since
        and r["actor_uid"] == agentd.uid_of(account_name("sec-a"))
    ]
    assert rows and all("agents may not" in r["detail"]["reason"] for r in rows)
