"""Proof that the test machine is what integration tests assume it is: a real systemd as
PID 1, isolated from the host, whose units get real limits, and that leaves nothing
behind on the host when powered off."""

from __future__ import annotations

import os
import pwd
import re
import selectors
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.machine import Machine, MachineCommandError

pytestmark = pytest.mark.integration


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def _status(text: str) -> dict[str, str]:
    """/proc/PID/status as a dict."""
    return {k: v.strip() for k, v in (ln.split(":", 1) for ln in text.splitlines() if ":" in ln)}


@pytest.fixture
def user(machine: Machine) -> Iterator[str]:
    """A system user that exists only inside the machine."""
    name = _name("tb")
    machine.run(["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", name])
    yield name
    machine.run(["userdel", name], check=False)


def test_systemd_is_pid1_and_running(machine: Machine) -> None:
    assert machine.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert machine.run(["readlink", "/proc/1/exe"]).stdout.strip().endswith("/systemd")
    state = machine.run(["systemctl", "is-system-running"], check=False).stdout.strip()
    failed = machine.run(["systemctl", "--failed", "--no-legend"]).stdout
    assert state == "running", f"state {state}, failed units:\n{failed}"
    assert machine.run(["hostname"]).stdout.strip() == "agentd-testbed"
    for unit in ("dbus.service", "systemd-journald.service", "systemd-logind.service"):
        assert machine.run(["systemctl", "is-active", unit]).stdout.strip() == "active"


def test_project_tree_is_bound(machine: Machine) -> None:
    here = Path(__file__).resolve()
    assert machine.run(["cat", str(here)]).stdout == here.read_text()


def test_useradd_and_files_stay_inside(machine: Machine, user: str) -> None:
    uid = int(machine.getpwnam(user)[2])
    assert machine.run(["id", "-u", user]).stdout.strip() == str(uid)
    assert machine.run(["id", "-un"], user=user).stdout.strip() == user
    with pytest.raises(KeyError):
        pwd.getpwnam(user)
    assert f"\n{user}:" not in "\n" + Path("/etc/passwd").read_text()

    marker = _name("testbed-marker-")
    machine.write_file(f"/etc/{marker}", "x\n")
    machine.write_file(f"/tmp/{marker}", "x\n")
    assert machine.run(["cat", f"/etc/{marker}", f"/tmp/{marker}"]).stdout == "x\nx\n"
    assert not Path("/etc", marker).exists()
    assert not Path("/tmp", marker).exists()


def test_run_errors_say_what_failed(machine: Machine) -> None:
    with pytest.raises(MachineCommandError) as e:
        machine.run("echo out; echo err >&2; exit 3")
    text = str(e.value)
    assert "exit status 3" in text and "exit 3" in text
    assert "out" in text and "err" in text
    assert machine.run("exit 4", check=False).returncode == 4


def test_transient_unit_gets_limits_and_seccomp(machine: Machine, user: str) -> None:
    script = (
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; "
        "m=$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup); "
        "p=$(sed -n 's/^[0-9]*:pids://p' /proc/self/cgroup); "
        'echo "mem=$(cat /sys/fs/cgroup/memory$m/memory.limit_in_bytes)"; '
        'echo "pids=$(cat /sys/fs/cgroup/pids$p/pids.max)"; id -un'
    )
    r = machine.run(
        [
            "systemd-run",
            "--wait",
            "--pipe",
            "--quiet",
            "--collect",
            f"--property=User={user}",
            "--property=MemoryMax=64M",
            "--property=TasksMax=20",
            "--property=SystemCallFilter=@system-service",
            "--property=NoNewPrivileges=yes",
            "/bin/sh",
            "-c",
            script,
        ]
    )
    assert "Seccomp:\t2" in r.stdout
    assert "NoNewPrivs:\t1" in r.stdout
    assert f"mem={64 * 1024 * 1024}" in r.stdout
    assert "pids=20" in r.stdout
    assert r.stdout.strip().endswith(user)


def test_run_in_unit(machine: Machine, user: str) -> None:
    unit = _name("probe-") + ".service"
    machine.run(
        [
            "systemd-run",
            f"--unit={unit}",
            "--collect",
            f"--property=User={user}",
            "--property=ProtectSystem=strict",
            "sleep",
            "1000",
        ]
    )
    try:
        r = machine.run_in_unit(
            unit, "cat /proc/self/cgroup; id -u; cat /proc/self/status; touch /usr/x || true"
        )
        cgroups = [ln.split(":", 2) for ln in r.stdout.splitlines() if re.match(r"\d+:[^:]*:/", ln)]
        own = {ctl: path for _, ctl, path in cgroups}
        assert own["name=systemd"] == f"/system.slice/{unit}"
        assert own[""] == f"/system.slice/{unit}"  # unified
        # the same cgroups as the unit's main process, in every hierarchy
        main = machine.run(["systemctl", "show", "-P", "MainPID", unit]).stdout.strip()
        theirs = machine.run(["cat", f"/proc/{main}/cgroup"]).stdout
        assert sorted(":".join(c) for c in cgroups) == sorted(theirs.splitlines())
        uid = machine.getpwnam(user)[2]
        assert f"\n{uid}\n" in r.stdout
        status = _status(r.stdout)
        assert status["Uid"].split()[0] == uid
        assert status["NoNewPrivs"] == "1"
        assert int(status["CapEff"], 16) == 0
        assert int(status["CapBnd"], 16) == 0
        assert "Read-only file system" in r.stderr  # the unit's mount namespace
    finally:
        machine.run(["systemctl", "stop", unit], check=False)


def test_run_in_unit_with_private_users_and_network(machine: Machine, user: str) -> None:
    unit = _name("probe-") + ".service"
    machine.run(
        [
            "systemd-run",
            f"--unit={unit}",
            "--collect",
            f"--property=User={user}",
            "--property=PrivateUsers=yes",
            "--property=PrivateNetwork=yes",
            "sleep",
            "1000",
        ]
    )
    try:
        r = machine.run_in_unit(unit, "id -u; cat /proc/self/uid_map; cat /proc/net/dev")
        uid = machine.getpwnam(user)[2]
        lines = r.stdout.split()
        assert lines[0] == uid
        assert [uid, uid, "1"] == lines[4:7]  # root and the user only: the unit's userns
        interfaces = [ln.split(":")[0].strip() for ln in r.stdout.splitlines() if ":" in ln]
        assert interfaces == ["lo"]  # the unit's network namespace
    finally:
        machine.run(["systemctl", "stop", unit], check=False)


def test_popen_follows_the_journal(machine: Machine) -> None:
    tag = _name("tb-")
    p = machine.popen(["journalctl", "-f", "-n", "0", "-o", "cat", "-t", tag])
    assert p.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    try:
        deadline = time.monotonic() + 20
        line = ""
        while "hello" not in line and time.monotonic() < deadline:
            machine.run(["systemd-cat", "-t", tag, "echo", "hello"])
            if sel.select(timeout=0.5):
                line = p.stdout.readline()
        assert "hello" in line
        assert "hello" in machine.journal(since="-1min", args=["-t", tag])
    finally:
        p.terminate()
        p.wait(10)


def test_poweroff_leaves_nothing() -> None:
    m = Machine.boot(timeout=60)
    try:
        init = m.pid
        state = m.state
        pidns = os.readlink(f"/proc/{init}/ns/pid")
        cgroups = [Path(p) for p in (state / "cgroups").read_text().split()]
        assert cgroups and all(c.is_dir() for c in cgroups)
        m.run(["systemd-run", "--unit=busy", "sleep", "1000"])
        inside = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _readlink(p / "ns/pid") == pidns
        ]
        assert init in inside and len(inside) > 3
    finally:
        m.poweroff()
    m.poweroff()  # idempotent
    assert not m.running
    alive = [
        pid
        for pid in inside
        if Path(f"/proc/{pid}").exists() and _readlink(Path(f"/proc/{pid}/ns/pid")) == pidns
    ]
    assert not alive, f"machine processes left: {alive}"
    assert [c for c in cgroups if c.exists()] == []
    assert not state.exists()
    with pytest.raises(RuntimeError):
        m.run(["true"])


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""
