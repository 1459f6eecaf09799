"""Issue 10, finding 1: an agent shapes its home to freeze or crash agentd's removal.

As the agent, inside its own unit, the attack builds what once froze agentd
(tarfile and shutil.rmtree on the event loop): a directory chain 1,500 deep,
a `truncate -s 16T` sparse file, and, for the failure path, a chain deeper
than tar can archive. Its owner then removes it with --keep-home. Meanwhile
bob, another user, reads agentd's Version property in a loop from inside the
machine; every answer must come within 1 s. The removal either ends (the
archive holds the sparse file, sparse) or fails visibly (`removing` with the
reason), survives a restart of agentd without a retry loop, and `agentctl
agent rm --force` by root finishes it. A kill -9 of agentd in the middle of a
removal is finished by the next agentd, once, in the background.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from agentd_helpers import Agentd, wait_for

from agentd.names import account_name

pytestmark = pytest.mark.integration

TESTS = "/opt/agentd-tests"
TIB16 = 16 << 40

# Run as bob: time each read of Manager.Version until the stop file appears;
# one line per answer ("SECONDS ok" or "SECONDS error"), as it comes.
PROBE = """\
import os, subprocess, sys, time
argv = ["busctl", "--system", "get-property", "org.agentos.agentd1",
        "/org/agentos/agentd1", "org.agentos.agentd1.Manager", "Version"]
while not os.path.exists(sys.argv[1]):
    t = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    ok = r.returncode == 0 and r.stdout.startswith("s ")
    print(f"{time.monotonic() - t:.4f} {'ok' if ok else 'error'}", flush=True)
    time.sleep(0.05)
"""

# Run as the agent in its unit: a chain DEPTH deep (through directory fds: the
# path is longer than PATH_MAX), FILES empty files, then the 16 TiB hole.
SHAPE = """\
import os, subprocess, sys
depth, files = int(sys.argv[1]), int(sys.argv[2])
home = os.environ["HOME"]
fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
for _ in range(depth):
    os.mkdir("d", dir_fd=fd)
    nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    fd = nxt
os.close(fd)
for i in range(files):
    if i % 1000 == 0:
        os.mkdir(f"{home}/many{i // 1000}")
    os.close(os.open(f"{home}/many{i // 1000}/f{i}", os.O_CREAT | os.O_WRONLY, 0o600))
subprocess.run(["truncate", "-s", "16T", f"{home}/huge"], check=True)
print(os.stat(f"{home}/huge").st_size)
"""


@pytest.fixture(scope="module")
def scripts(agentd: Agentd) -> None:
    agentd.sh(["mkdir", "-p", TESTS])
    agentd.m.write_file(f"{TESTS}/probe.py", PROBE, mode=0o644)
    agentd.m.write_file(f"{TESTS}/shape.py", SHAPE, mode=0o644)


class Probe:
    """bob reading Manager.Version in a loop inside the machine (PROBE)."""

    def __init__(self, agentd: Agentd, tag: str) -> None:
        self.agentd, self.stop_file = agentd, f"{TESTS}/stop-{tag}"
        agentd.sh(["rm", "-f", self.stop_file])
        self.proc = agentd.m.popen(["python3", f"{TESTS}/probe.py", self.stop_file], user="bob")
        self.samples: list[tuple[float, str]] = []

    def _sample(self, line: str) -> None:
        dt, status = line.split()
        self.samples.append((float(dt), status))

    def wait_samples(self, n: int) -> None:
        """Until N more answers came (the probe really runs now)."""
        assert self.proc.stdout is not None
        for _ in range(n):
            line = self.proc.stdout.readline()
            assert line, "the probe ended early"
            self._sample(line)

    def stop(self) -> None:
        self.agentd.sh(["touch", self.stop_file])
        out, _err = self.proc.communicate(timeout=120)
        for line in out.splitlines():
            self._sample(line)

    @property
    def worst(self) -> float:
        return max(dt for dt, _ in self.samples)


@contextmanager
def bob_probing(agentd: Agentd, tag: str) -> Iterator[Probe]:
    """bob reads Manager.Version in a loop while the block runs."""
    probe = Probe(agentd, tag)
    try:
        probe.wait_samples(1)
        yield probe
    finally:
        probe.stop()


def assert_answered_within_1s(probe: Probe) -> None:
    assert len(probe.samples) >= 3, probe.samples  # the probe really ran during the attack
    assert all(status == "ok" for _, status in probe.samples), probe.samples
    assert probe.worst < 1.0, f"agentd took {probe.worst:.2f} s to answer bob"


def make_agent(agentd: Agentd, name: str, depth: int, files: int = 0) -> dict[str, Any]:
    """alice's agent NAME, running, whose home the agent itself has shaped."""
    agentd.create(name, user="alice", start=True)
    agentd.wait_online(name)
    r = agentd.m.run_in_unit(
        f"agent-{name}.service",
        ["python3", f"{TESTS}/shape.py", str(depth), str(files)],
        user=account_name(name),
        timeout=600,
    )
    assert int(r.stdout.split()[-1]) == TIB16  # the hole is really there, 16 TiB
    return agentd.ctl_json("agent", "show", name, user="alice")


def gone(agentd: Agentd, info: dict[str, Any]) -> list[str]:
    """What is left of the agent INFO described: its row, user, home, unit."""
    left = []
    if any(a["name"] == info["name"] for a in agentd.ctl_json("agent", "list")):
        left.append("row")
    if agentd.sh(["getent", "passwd", str(info["uid"])], check=False).returncode == 0:
        left.append("user")
    if agentd.sh(["test", "-e", info["home"]], check=False).returncode == 0:
        left.append("home")
    units = agentd.sh(["systemctl", "list-units", "--all", "--plain", "--no-legend", info["unit"]])
    if info["unit"] in units.stdout:
        left.append("unit")
    return left


def agentd_state(agentd: Agentd) -> tuple[int, int, str]:
    props = agentd.show("agentd.service", "MainPID", "NRestarts", "ActiveState")
    return int(props["MainPID"]), int(props["NRestarts"]), props["ActiveState"]


def archives_of(agentd: Agentd, name: str, uid: int) -> list[str]:
    out = agentd.sh(["ls", "/var/lib/agentd/archive"], check=False).stdout.split()
    return [f for f in out if f.startswith(f"{name}-{uid}-")]


def test_a_deep_sparse_home_is_archived_sparse_while_agentd_keeps_serving(
    agentd: Agentd, scripts: None
) -> None:
    info = make_agent(agentd, "rm-deep", depth=1500)
    with bob_probing(agentd, "deep") as probe:
        started = time.monotonic()
        agentd.ctl("agent", "rm", "--keep-home", "rm-deep", user="alice")
        took = time.monotonic() - started
    assert_answered_within_1s(probe)
    assert gone(agentd, info) == []
    (archive,) = archives_of(agentd, "rm-deep", info["uid"])
    path = f"/var/lib/agentd/archive/{archive}"
    assert int(agentd.sh(["stat", "-c", "%s", path]).stdout) < 1 << 20  # sparse: KiB, not TiB
    listing = agentd.sh(["tar", "-tvzf", path]).stdout.splitlines()
    (huge,) = [line for line in listing if line.endswith("/huge")]
    assert str(TIB16) in huge.split()
    assert sum(1 for line in listing if line.endswith("/d/")) == 1500
    row = agentd.audit("agent.remove", "rm-deep")[-1]
    assert row["result"] == "ok" and row["detail"]["archive"] == path
    print(f"removal took {took:.1f} s; bob's worst of {len(probe.samples)}: {probe.worst:.3f} s")


def test_a_home_too_deep_to_archive_fails_visibly_survives_a_restart_and_force_ends_it(
    agentd: Agentd, scripts: None
) -> None:
    info = make_agent(agentd, "rm-deeper", depth=12_000)
    with bob_probing(agentd, "deeper") as probe:
        r = agentd.ctl("agent", "rm", "--keep-home", "rm-deeper", user="alice", check=False)
    assert_answered_within_1s(probe)
    assert r.returncode != 0 and "stays 'removing'" in r.stderr, r.stderr
    listed = {a["name"]: a for a in agentd.ctl_json("agent", "list", user="alice")}
    assert listed["rm-deeper"]["state"] == "removing"
    shown = agentd.ctl_json("agent", "show", "rm-deeper", user="alice")
    assert shown["state"] == "removing" and "directories deep" in shown["removal_error"]
    assert agentd.sh(["test", "-d", info["home"]], check=False).returncode == 0  # nothing lost
    failed = agentd.audit("agent.remove", "rm-deeper")
    assert failed[-1]["result"] == "failed"

    # agentd restarts with the failed removal pending: it serves at once, once,
    # and leaves the removal to the administrator instead of retrying it.
    _pid, restarts, _state = agentd_state(agentd)
    agentd.restart()
    wait_for(lambda: agentd_state(agentd)[2] == "active", 60, "agentd active again")
    with bob_probing(agentd, "after-restart") as probe:
        shown = agentd.ctl_json("agent", "show", "rm-deeper", user="alice")
        assert "directories deep" in shown["removal_error"]
        assert agentd.audit("agent.remove", "rm-deeper") == failed  # not retried
        denied = agentd.ctl("agent", "rm", "--force", "rm-deeper", user="alice", check=False)
        assert denied.returncode != 0 and "only administrators" in denied.stderr
        agentd.ctl("agent", "rm", "--force", "rm-deeper")
    assert_answered_within_1s(probe)
    _pid, now, state = agentd_state(agentd)
    assert (now, state) == (restarts, "active")  # no crash, no restart loop
    assert gone(agentd, info) == []
    rows = agentd.audit("agent.remove", "rm-deeper")
    assert [r["result"] for r in rows[-3:]] == ["denied", "retrying", "ok"]
    assert rows[-1]["detail"]["forced"] is True and rows[-1]["actor_uid"] == 0
    assert archives_of(agentd, "rm-deeper", info["uid"]) == []


def test_agentd_killed_during_a_removal_finishes_it_once_after_restart(
    agentd: Agentd, scripts: None
) -> None:
    info = make_agent(agentd, "rm-crash", depth=1500, files=200_000)
    pid, restarts, _state = agentd_state(agentd)
    started = time.monotonic()
    rm = agentd.m.popen(["agentctl", "agent", "rm", "--keep-home", "rm-crash"], user="alice")

    def removing() -> bool:
        rows = agentd.ctl_json("agent", "list")
        return any(a["name"] == "rm-crash" and a["state"] == "removing" for a in rows)

    with bob_probing(agentd, "crash") as probe:
        wait_for(removing, 60, "the removal under way")
        probe.wait_samples(5)  # bob is answered while the helper works
        assert removing(), "the removal ended before agentd could be killed in it"
    assert_answered_within_1s(probe)
    agentd.sh(["kill", "-9", str(pid)])
    killed_at = time.monotonic() - started
    rm.communicate(timeout=120)
    assert rm.returncode != 0  # its agentd died under it
    wait_for(
        lambda: agentd_state(agentd)[0] not in (0, pid) and agentd_state(agentd)[2] == "active",
        120,
        "agentd restarted by systemd",
    )
    with bob_probing(agentd, "after-crash") as probe:
        wait_for(lambda: gone(agentd, info) == [], 300, "the removal finished after the restart")
        ended = time.monotonic() - started - killed_at
        probe.wait_samples(2)
    assert_answered_within_1s(probe)
    _pid, now, state = agentd_state(agentd)
    assert (now, state) == (restarts + 1, "active")  # the kill, and nothing more
    rows = agentd.audit("agent.remove", "rm-crash")
    assert rows[-1]["result"] == "repaired", rows[-1]
    (archive,) = archives_of(agentd, "rm-crash", info["uid"])
    assert not archive.endswith(".part")
    print(f"killed {killed_at:.1f} s into the removal, which ended {ended:.1f} s after")
    listing = agentd.sh(["tar", "-tzf", f"/var/lib/agentd/archive/{archive}"]).stdout
    assert listing.count("\n") > 200_000
