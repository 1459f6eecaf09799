"""Issue 10, finding 3: agent names squat future system accounts.

An agent named ``docker`` used to be user and group ``docker``; a package
installed later (``getent group docker || groupadd -r docker``) then handed
the agent its socket. Agents' accounts are now ``agent-NAME``
(agentd.names.account_name); an older agentd's bare accounts are renamed at
start, or before the agent's next start while its unit runs; and a D-Bus
policy ``user=`` rule, which dbus-daemon applies after agentd's confinement of
the agents group, can name no agent: agentd refuses to create or start such
an agent, and to start at all while one names an ``agent-*`` account.

Each attack runs while bob's calls to agentd are timed (answering: each
answered within 1 s).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from agentd_helpers import Agentd, answering, wait_for

from agentd.names import account_name

pytestmark = pytest.mark.integration

BUS, ROOT, MANAGER = "org.agentos.agentd1", "/org/agentos/agentd1", "org.agentos.agentd1.Manager"
EVIL = "/etc/dbus-1/system.d/zz-agentd-test-user-rule.conf"
PING_SYSTEMD = [
    "busctl", "--system", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
    "org.freedesktop.DBus.Peer", "Ping",
]  # fmt: skip


def getent(a: Agentd, db: str, key: str) -> int:
    return int(a.sh(["getent", db, key], check=False).returncode)


def head(a: Agentd) -> int:
    return int(a.busctl("get-property", BUS, ROOT, MANAGER, "AuditHead").stdout.split()[1])


def rows_since(a: Agentd, seq: int) -> list[dict[str, Any]]:
    return list(a.ctl_json("audit", "--after", str(seq), "--limit", "100000"))


def test_an_agent_named_docker_leaves_the_name_to_a_later_package(agentd: Agentd) -> None:
    with answering(agentd):
        agentd.create("docker", user="alice")
        assert getent(agentd, "passwd", "agent-docker") == 0
        assert getent(agentd, "group", "agent-docker") == 0
        assert getent(agentd, "passwd", "docker") == 2 and getent(agentd, "group", "docker") == 2
        # The package arrives: its usual maintainer script makes its own group.
        agentd.sh("getent group docker || groupadd -r docker")
        docker_gid = agentd.sh(["getent", "group", "docker"]).stdout.split(":")[2]
        assert int(docker_gid) != agentd.uid_of("agent-docker")
        agentd.sh(
            "mkdir -p /opt/docker-probe && echo socket-of-docker > /opt/docker-probe/sock && "
            "chown root:docker /opt/docker-probe/sock && chmod 660 /opt/docker-probe/sock"
        )
        assert "docker" not in agentd.sh(["id", "-nG", "agent-docker"]).stdout.split()
        agentd.ctl("agent", "start", "docker", user="alice")
        agentd.wait_online("docker")
        unit = "agent-docker.service"
        assert agentd.show(unit, "User")["User"] == "agent-docker"
        groups = agentd.m.run_in_unit(unit, ["id", "-nG"]).stdout.split()
        assert "docker" not in groups and "agent-docker" in groups
        r = agentd.m.run_in_unit(unit, ["cat", "/opt/docker-probe/sock"], check=False)
        assert r.returncode != 0 and "Permission denied" in r.stderr, (r.stdout, r.stderr)
    agentd.ctl("agent", "stop", "docker", user="alice")
    agentd.ctl("agent", "rm", "docker", user="alice")
    assert getent(agentd, "passwd", "agent-docker") == 2
    assert getent(agentd, "group", "docker") == 0  # the package's group is not touched


def _make_old(a: Agentd, name: str) -> None:
    """As an older agentd made it: user and group NAME (same UID, GID, home)."""
    a.sh(["usermod", "--login", name, account_name(name)])
    a.sh(["groupmod", "--new-name", name, account_name(name)])


def _edit_old(a: Agentd, name: str) -> None:
    """_make_old for a running agent (usermod refuses a user with processes):
    the files edited under the shadow tools' lock, as vipw would."""
    acc = account_name(name)
    a.sh(
        f"flock /etc/.pwd.lock sed -i -e 's/^{acc}:/{name}:/' -e 's/\\([:,]\\){acc}$/\\1{name}/' "
        f"-e 's/\\([:,]\\){acc},/\\1{name},/' /etc/passwd /etc/shadow /etc/group /etc/gshadow"
    )
    assert getent(a, "passwd", name) == 0 and getent(a, "group", name) == 0


def test_an_older_agentds_accounts_are_renamed_and_keep_working(agentd: Agentd) -> None:
    agentd.create("oldie", template="ops", user="alice")
    agentd.create("oldrun", user="alice", start=True)
    agentd.wait_online("oldrun")
    uid = agentd.uid_of(account_name("oldie"))
    seq = head(agentd)
    agentd.sh(["systemctl", "stop", "agentd.service"])
    _make_old(agentd, "oldie")
    _edit_old(agentd, "oldrun")  # its unit keeps running meanwhile
    assert "oldie" in agentd.sh(["getent", "group", "agentd-agents"]).stdout.split(":")[3]
    agentd.sh(["systemctl", "start", "agentd.service"])
    # oldie: renamed at start, every part of it kept
    assert getent(agentd, "passwd", "oldie") == 2 and getent(agentd, "group", "oldie") == 2
    passwd = agentd.sh(["getent", "passwd", "agent-oldie"]).stdout.strip().split(":")
    assert passwd[2:4] == [str(uid), str(uid)] and passwd[5] == "/home/agents/oldie"
    assert "agent-oldie" in agentd.sh(["getent", "group", "agentd-agents"]).stdout
    rows = [r for r in rows_since(agentd, seq) if r["action"] == "agent.repair"]
    mine = {(r["agent"], r["result"]) for r in rows}
    assert ("oldie", "repaired") in mine and ("oldrun", "deferred") in mine, rows
    # oldrun: its unit ran, so it is renamed before its next start
    assert getent(agentd, "passwd", "oldrun") == 0
    assert agentd.sh(["stat", "-c", "%U", "/home/agents/oldrun"]).stdout.strip() == "oldrun"
    with answering(agentd):
        agentd.ctl("agent", "stop", "oldrun", user="alice")
        wait_for(
            lambda: (
                agentd.show("agent-oldrun.service", "ActiveState")["ActiveState"]
                in ("inactive", "failed", "")
            ),
            30,
            "oldrun stopped",
        )
        agentd.ctl("agent", "start", "oldrun", user="alice")
        agentd.wait_online("oldrun")
        assert getent(agentd, "passwd", "oldrun") == 2
        assert agentd.show("agent-oldrun.service", "User")["User"] == "agent-oldrun"
        # oldie still works: its unit starts, a task runs in it as agent-oldie
        out = agentd.ctl(
            "task", "submit", "who", "--agent", "oldie", "--exec", "id -un", user="alice"
        ).stdout.strip()
        tid = int(out)
        agentd.ctl("task", "wait", str(tid), "--timeout", "90", user="alice")
        task = agentd.ctl_json("task", "show", str(tid), user="alice")
        assert task["status"] == "completed", task
        assert json.loads(task["result"])["stdout"].split() == ["agent-oldie"]
    for name in ("oldie", "oldrun"):
        agentd.ctl("agent", "rm", "--force", name, user="carol")
        assert getent(agentd, "passwd", account_name(name)) == 2
        assert getent(agentd, "passwd", name) == 2


@pytest.fixture
def evil_rule(agentd: Agentd) -> Any:
    """A policy file of the bus naming a user, reloaded; gone afterwards."""

    def write(user: str) -> None:
        agentd.m.write_file(
            EVIL,
            f'<busconfig><policy user="{user}">'
            '<allow send_destination="org.freedesktop.systemd1"/></policy></busconfig>\n',
            mode=0o644,
        )
        reload_bus(agentd)

    yield write
    agentd.sh(["rm", "-f", EVIL])
    reload_bus(agentd)
    if agentd.sh(["systemctl", "is-active", "agentd.service"], check=False).returncode:
        agentd.restart()


def reload_bus(a: Agentd) -> None:
    a.busctl("call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
             "ReloadConfig")  # fmt: skip


def test_a_bus_policy_user_rule_cannot_override_the_confinement(
    agentd: Agentd, evil_rule: Any
) -> None:
    agentd.create("buspol", user="alice", start=True)
    agentd.wait_online("buspol")
    unit = "agent-buspol.service"
    denied = agentd.m.run_in_unit(unit, PING_SYSTEMD, check=False)
    assert denied.returncode != 0 and (
        "Access denied" in denied.stderr or "Rejected send" in denied.stderr
    ), denied.stderr
    assert agentd.sh(PING_SYSTEMD, user="bob").returncode == 0  # people may
    # Without a defence: dbus-daemon applies the user= block after the group's.
    evil_rule("agent-buspol")
    allowed = agentd.m.run_in_unit(unit, PING_SYSTEMD, check=False)
    assert allowed.returncode == 0, allowed.stderr
    # The defence: the agent is not started again, nor is a named agent made.
    seq = head(agentd)
    with answering(agentd):
        agentd.ctl("agent", "stop", "buspol", user="alice")
        wait_for(
            lambda: agentd.show(unit, "ActiveState")["ActiveState"] in ("inactive", "failed", ""),
            30,
            "buspol stopped",
        )
        r = agentd.ctl("agent", "start", "buspol", user="alice", check=False)
        assert r.returncode != 0 and "names account agent-buspol" in r.stderr, r.stderr
        evil_rule(str(agentd.uid_of("agent-buspol")))  # by UID: dbus-daemon takes it
        r = agentd.ctl("agent", "start", "buspol", user="alice", check=False)
        assert r.returncode != 0 and "InvalidConfig" in r.stderr + r.stdout, r.stderr
        evil_rule("agent-buspol2")  # before the agent exists
        r = agentd.ctl(
            "agent", "create", "buspol2", "--template", "sandbox", user="alice", check=False
        )
        assert r.returncode != 0 and "names account agent-buspol2" in r.stderr, r.stderr
        assert getent(agentd, "passwd", "agent-buspol2") == 2
    rows = rows_since(agentd, seq)
    starts = [r["result"] for r in rows if r["action"] == "agent.start"]
    creates = [r["result"] for r in rows if r["action"] == "agent.create"]
    assert starts.count("error") == 2 and creates == ["refused"], rows
    # agentd itself refuses to start while a rule names an agent-* account
    r = agentd.sh(["systemctl", "restart", "agentd.service"], check=False)
    assert r.returncode != 0
    status = agentd.show("agentd.service", "ExecMainStatus")["ExecMainStatus"]
    assert status == "78", status  # EX_CONFIG
    log = agentd.sh("journalctl -b --no-pager -n 50 -u agentd.service").stdout
    assert "names an agent account" in log
    agentd.sh(["rm", "-f", EVIL])
    reload_bus(agentd)
    agentd.restart()
    agentd.ctl("agent", "start", "buspol", user="alice")
    agentd.wait_online("buspol")
    agentd.ctl("agent", "rm", "--force", "buspol", user="carol")
