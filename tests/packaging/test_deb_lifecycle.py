"""The .deb's life in a disposable systemd machine, as an operator lives it:
apt install, an agent made by an ordinary user, an upgrade to the next version,
apt remove, a reinstall, apt purge. The tests run in file order on one machine
(each step starts from the state the one before left), and assert what the system
shows: dpkg, systemctl, getent, the files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from packaging_helpers import REPO, Packages
from testbed.machine import Machine
from testbed.provision import APT_ENV, allow_service_starts, apt_install

pytestmark = pytest.mark.integration

NOTES = "/home/agents/scout/notes.txt"
MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"  # `make model` puts it in build/models
MODELS = "/var/lib/agentd-models"
SOCKET = "/run/agentd-inference/socket"
CONF = "/etc/agentd/agentd.toml"
OVERRIDE = "/etc/agentd/templates/sandbox.toml"
ADMIN_EDIT = "max_agents_per_owner = 7   # local change: kept across upgrades"


@pytest.fixture(scope="module")
def m(packages: Packages) -> Iterator[Machine]:
    machine = Machine.boot(binds=[REPO])
    try:
        allow_service_starts(machine)
        for user in ("alice", "bob", "carol"):
            machine.run(["useradd", "--create-home", "--shell", "/bin/bash", user])
        yield machine
    finally:
        machine.poweroff()


def sh(m: Machine, cmd: str, **kw: Any) -> str:
    return m.run(cmd, **kw).stdout


def ok(m: Machine, cmd: str) -> bool:
    return m.run(cmd, check=False).returncode == 0


def status(m: Machine, user: str = "alice") -> dict[str, Any]:
    return json.loads(m.run(["agentctl", "status", "--json"], user=user).stdout)


def dpkg_status(m: Machine) -> str:
    return sh(m, "dpkg-query -W -f '${Status} ${Version}' agentd", check=False).strip()


def active(m: Machine, unit: str) -> str:
    return m.run(["systemctl", "is-active", unit], check=False).stdout.strip()


def main_pid(m: Machine, unit: str) -> int:
    return int(sh(m, f"systemctl show -p MainPID --value {unit}").strip())


def inference(m: Machine, request: dict[str, Any], user: str | None = None) -> list[Any]:
    """One request to agentd-inference over its socket (docs/inference-protocol.md):
    the reply lines, up to the terminal one."""
    client = (
        "import json, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({SOCKET!r})\n"
        "s.sendall(sys.argv[1].encode() + b'\\n')\n"
        "for line in s.makefile(encoding='utf-8'):\n"
        "    print(line, end='')\n"
        "    if json.loads(line)['event'] in ('done', 'error'):\n"
        "        break\n"
    )
    out = m.run(["python3", "-c", client, json.dumps(request)], user=user, timeout=120).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_apt_install_enables_and_starts_agentd(m: Machine, packages: Packages) -> None:
    apt_install(m, packages.deb)
    assert dpkg_status(m) == f"install ok installed {packages.version}"
    assert sh(m, "systemctl is-enabled agentd.service").strip() == "enabled"
    assert active(m, "agentd.service") == "active"
    assert status(m)["version"] == packages.version
    # The inference service too (with no model yet: it answers Unavailable).
    assert sh(m, "systemctl is-enabled agentd-inference.service").strip() == "enabled"
    assert active(m, "agentd-inference.service") == "active"
    # sysusers.d and tmpfiles.d applied by postinst.
    assert ok(m, "getent group agentd-admin && getent group agentd-agents")
    assert sh(m, f"stat -c '%a %U' /home/agents /var/lib/agentd {MODELS}").split() == [
        "711",
        "root",
        "700",
        "root",
        "755",
        "root",
    ]
    # Byte code compiled by postinst; the man pages and completion work.
    assert int(sh(m, "find /usr/lib/agentd/python -name '*.pyc' | wc -l")) > 20
    assert sh(m, "man -w agentctl").strip() == "/usr/share/man/man1/agentctl.1.gz"
    assert sh(m, "man -w 8 agentd").strip() == "/usr/share/man/man8/agentd.8.gz"
    words = m.run(
        [
            "bash",
            "-c",
            "source /usr/share/bash-completion/completions/agentctl; "
            "COMP_WORDS=(agentctl ag); COMP_CWORD=1; _agentctl_completion agentctl; "
            "printf '%s\\n' \"${COMPREPLY[@]}\"",
        ],
        user="alice",
    ).stdout.split()
    assert words == ["agent"]
    # agentd-purge (the purge for systems without one) does nothing without --yes.
    r = m.run(["/usr/libexec/agentd/agentd-purge"], check=False)
    assert r.returncode == 2 and "usage: agentd-purge --yes" in r.stderr
    assert active(m, "agentd.service") == "active"


def test_inference_service_runs_as_a_dynamic_user_without_network(m: Machine) -> None:
    pid = main_pid(m, "agentd-inference.service")
    uid = int(sh(m, f"stat -c %u /proc/{pid}").strip())
    assert 61184 <= uid <= 65519, uid  # systemd's DynamicUser= range
    assert sh(m, f"readlink /proc/{pid}/ns/net") != sh(m, "readlink /proc/1/ns/net")
    devices = sh(m, f"cat /proc/{pid}/net/dev").splitlines()[2:]
    assert [d.split(":")[0].strip() for d in devices] == ["lo"], devices
    assert sh(m, f"grep -E '^(CapEff|CapBnd):' /proc/{pid}/status").split() == [
        "CapEff:",
        "0000000000000000",
        "CapBnd:",
        "0000000000000000",
    ]
    # Only root reaches the socket.
    assert sh(m, f"stat -c '%a %U' /run/agentd-inference {SOCKET}").split() == [
        "700",
        "agentd-inference",
        "600",
        "agentd-inference",
    ]
    connect = f"import socket; socket.socket(socket.AF_UNIX).connect({SOCKET!r})"
    r = m.run(["python3", "-c", connect], user="alice", check=False)
    assert r.returncode != 0 and "PermissionError" in r.stderr, r.stderr
    # The default model, as an admin installs it; the service loads it at start.
    model = REPO / "build" / "models" / MODEL
    if not model.is_file():
        pytest.skip(f"no {model} (make model): the model is not tried")
    m.copy_in(model, f"{MODELS}/{MODEL}")
    m.run(["systemctl", "restart", "agentd-inference.service"], timeout=120)
    show = inference(m, {"op": "show"})[-1]
    assert show["event"] == "done" and show["state"] == "loaded", show
    assert show["model"]["path"] == f"{MODELS}/{MODEL}"
    done = inference(
        m,
        {
            "op": "generate",
            "agent": "test",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "Say hello."}],
        },
    )[-1]
    assert done["event"] == "done" and done["completion_tokens"] >= 1, done


def test_a_user_creates_and_starts_an_agent(m: Machine) -> None:
    m.run(["usermod", "-aG", "agentd-admin", "carol"])
    m.run(
        ["agentctl", "agent", "create", "scout", "--template", "sandbox", "--start"], user="alice"
    )
    pw = sh(m, "getent passwd agent-scout").strip().split(":")
    assert pw[5:] == ["/home/agents/scout", "/usr/sbin/nologin"]
    assert 70000 <= int(pw[2]) <= 99999
    assert active(m, "agent-scout.service") == "active"
    assert "agentd-agents" in sh(m, "id -nG agent-scout").split()
    # Data of the agent's, and an admin's edit of the conffile, for what follows.
    m.write_file(NOTES, "field notes\n", mode=0o600, owner="agent-scout:agent-scout")
    sh(m, f"echo '{ADMIN_EDIT}' >>{CONF}")
    sh(m, f"cp /usr/share/agentd/templates/sandbox.toml {OVERRIDE}")
    m.run(["systemctl", "restart", "agentd.service"])
    assert str(status(m)["config"]["max_agents_per_owner"]) == "7"


def test_upgrade_keeps_agents_and_restarts_agentd_on_the_new_version(
    m: Machine, packages: Packages
) -> None:
    uid = sh(m, "id -u agent-scout").strip()
    agentd_pid = main_pid(m, "agentd.service")
    agent_pid = main_pid(m, "agent-scout.service")
    apt_install(m, packages.next_deb)
    assert dpkg_status(m) == f"install ok installed {packages.next_version}"
    st = status(m)
    assert st["version"] == packages.next_version
    assert main_pid(m, "agentd.service") != agentd_pid
    # The agent's unit ran on through the upgrade; user, home and registry kept.
    assert main_pid(m, "agent-scout.service") == agent_pid
    assert sh(m, "id -u agent-scout").strip() == uid
    assert sh(m, f"cat {NOTES}") == "field notes\n"
    agents = json.loads(m.run(["agentctl", "agent", "list", "--json"], user="alice").stdout)
    assert [a["name"] for a in agents] == ["scout"]
    # The conffile kept the admin's edit, with no prompt and no .dpkg-* leftovers.
    assert ADMIN_EDIT in sh(m, f"cat {CONF}")
    assert str(st["config"]["max_agents_per_owner"]) == "7"
    assert sh(m, "ls /etc/agentd").split() == ["agentd.toml", "profiles", "templates"]
    assert sh(m, "systemctl is-enabled agentd.service").strip() == "enabled"
    assert active(m, "agentd-inference.service") == "active"


def test_remove_stops_agentd_and_agents_but_keeps_them(m: Machine, packages: Packages) -> None:
    m.run(["apt-get", "remove", "-y", "agentd"], env=APT_ENV, timeout=300)
    assert dpkg_status(m) == f"deinstall ok config-files {packages.next_version}"
    assert active(m, "agentd.service") in ("inactive", "unknown")
    assert active(m, "agentd-inference.service") in ("inactive", "unknown")
    assert active(m, "agent-scout.service") in ("inactive", "unknown")
    assert sh(m, "systemctl list-units --all --no-legend --plain 'agent-*'").strip() == ""
    assert not ok(m, "pgrep -u agent-scout")
    # Kept: the agent's user, group and home, agentd's state, groups and config.
    assert ok(m, "getent passwd agent-scout && getent group agent-scout")
    assert ok(m, "getent group agentd-agents && getent group agentd-admin")
    assert sh(m, f"cat {NOTES}") == "field notes\n"
    assert ok(m, "test -s /var/lib/agentd/agentd.db")
    assert ok(m, f"test -d {MODELS}")
    assert ADMIN_EDIT in sh(m, f"cat {CONF}")
    assert not ok(m, "test -e /usr/libexec/agentd/agentd || test -e /usr/bin/agentctl")


def test_reinstall_brings_the_same_agents_back(m: Machine, packages: Packages) -> None:
    uid = sh(m, "id -u agent-scout").strip()
    apt_install(m, packages.next_deb)
    assert active(m, "agentd.service") == "active"
    agents = json.loads(m.run(["agentctl", "agent", "list", "--json"], user="alice").stdout)
    assert [(a["name"], str(a["uid"])) for a in agents] == [("scout", uid)]
    m.run(["agentctl", "agent", "start", "scout"], user="alice")
    assert active(m, "agent-scout.service") == "active"
    m.run(["apt-get", "remove", "-y", "agentd"], env=APT_ENV, timeout=300)
    assert active(m, "agent-scout.service") in ("inactive", "unknown")


def test_purge_archives_then_deletes_agents_groups_and_state(m: Machine) -> None:
    # bob (an ordinary user someone put in agentd-agents) and carol (an admin)
    # are people, not agents: purge must leave their accounts alone.
    m.run(["usermod", "-aG", "agentd-agents", "bob"])
    out = m.run(["apt-get", "purge", "-y", "agentd"], env=APT_ENV, timeout=300).stdout
    assert dpkg_status(m) in ("", "unknown ok not-installed")
    archived = r"agentd-purge: archived .* to /var/backups/agentd-purge-\d{8}T\d{6}Z\.tar\.gz"
    assert re.search(archived, out), out
    # Gone: agent user and group, agentd's groups, homes, state, config.
    assert not ok(m, "getent passwd agent-scout") and not ok(m, "getent group agent-scout")
    assert not ok(m, "getent group agentd-agents") and not ok(m, "getent group agentd-admin")
    for path in ("/home/agents", "/var/lib/agentd", MODELS, "/etc/agentd"):
        assert not ok(m, f"test -e {path}"), path
    assert ok(m, "getent passwd alice && getent passwd bob && getent passwd carol")
    # The archive: root's alone, with the agent's home and agentd's database.
    backups = sh(m, "ls /var/backups/ | grep '^agentd-purge-'").split()
    assert len(backups) == 1, backups
    archive = f"/var/backups/{backups[0]}"
    assert sh(m, f"stat -c '%a %U %G' {archive}").strip() == "600 root root"
    members = sh(m, f"tar -tzvf {archive}")
    assert re.search(
        r"^-rw------- agent-scout/agent-scout .* home/agents/scout/notes\.txt$", members, re.M
    )
    assert re.search(r" var/lib/agentd/agentd\.db$", members, re.M)
    assert re.search(r"^drwxr-xr-x root/root .* var/lib/agentd-models/$", members, re.M)
    # dpkg deleted the conffile agentd.toml before postrm purge ran (as it does every
    # conffile on purge); what the admin added under /etc/agentd is in the archive.
    assert re.search(r" etc/agentd/templates/sandbox\.toml$", members, re.M)
    assert sh(m, f"tar -xzOf {archive} home/agents/scout/notes.txt") == "field notes\n"
