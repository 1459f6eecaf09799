"""Integration helpers: agentd installed with `make install` in the disposable
systemd machine, started as agentd.service, plus ordinary users to act as.

alice and bob are ordinary users; carol is in agentd-admin.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.1)


CONF = "/etc/agentd/agentd.toml"
# agentd's short timings for task tests: leases lapse and units idle within a test
FAST = "heartbeat_interval = 1\nlease_seconds = 4\nretry_backoff = 1\nidle_timeout = 6\n"


class Agentd:
    """The installed agentd inside the machine, driven like a user would."""

    def __init__(self, machine: Any) -> None:
        self.m = machine

    def sh(self, cmd: str, **kw: Any) -> Any:
        return self.m.run(cmd, **kw)

    def ctl(
        self, *args: str, user: str | None = None, check: bool = True, timeout: float = 120
    ) -> Any:
        return self.m.run(["agentctl", *args], user=user, check=check, timeout=timeout)

    def ctl_json(self, *args: str, user: str | None = None) -> Any:
        return json.loads(self.ctl(*args, "--json", user=user).stdout)

    def busctl(self, *args: str, user: str | None = None, check: bool = True) -> Any:
        return self.m.run(["busctl", "--system", *args], user=user, check=check)

    def uid_of(self, name: str) -> int:
        return int(self.sh(["id", "-u", name]).stdout)

    def main_pid(self, unit: str) -> int:
        out = self.sh(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout
        return int(out.strip())

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(["systemctl", "show", unit, "-p", ",".join(props)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def proc_status(self, pid: int) -> dict[str, str]:
        out = self.sh(["cat", f"/proc/{pid}/status"]).stdout
        return {k: v.strip() for k, v in (line.split(":", 1) for line in out.splitlines())}

    def create(
        self, name: str, template: str = "sandbox", user: str | None = None, start: bool = False
    ) -> None:
        self.ctl("agent", "create", name, "--template", template, user=user)
        if start:
            self.ctl("agent", "start", name, user=user)

    def online(self, name: str) -> bool:
        path = "/org/agentos/agentd1/agent/" + name.replace("-", "_2d")
        out = self.busctl(
            "get-property", "org.agentos.agentd1", path, "org.agentos.agentd1.Agent", "Online"
        ).stdout
        return out.strip() == "b true"

    def wait_online(self, name: str) -> None:
        wait_for(lambda: self.online(name), 30, f"agent {name} online")

    def restart(self) -> None:
        self.sh(["systemctl", "reset-failed", "agentd.service"])
        self.sh(["systemctl", "restart", "agentd.service"])

    @contextlib.contextmanager
    def configured(self, extra: str) -> Iterator[Agentd]:
        """agentd restarted with EXTRA appended to agentd.toml; put back after."""
        original = self.sh(["cat", CONF]).stdout
        self.m.write_file(CONF, original + "\n" + extra, mode=0o644)
        self.restart()
        try:
            yield self
        finally:
            self.m.write_file(CONF, original, mode=0o644)
            self.restart()

    def submit(self, title: str, *args: str, user: str = "alice") -> int:
        """`agentctl task submit TITLE ARGS...` as USER; the new task's id."""
        out = self.ctl("task", "submit", title, *args, user=user).stdout.strip()
        assert out.isdigit(), out
        return int(out)

    def audit(self, action: str | None = None, agent: str | None = None) -> list[dict]:
        rows = self.ctl_json("audit", "--limit", "100000")
        return [
            r
            for r in rows
            if (action is None or r["action"] == action) and (agent is None or r["agent"] == agent)
        ]


def kill_agentd_and_wait(agentd: Agentd) -> None:
    wait_restarted(agentd, kill_agentd(agentd))


def kill_agentd(agentd: Agentd) -> int:
    """kill -9 agentd; its PID, for wait_restarted."""
    # The test kills on purpose, often: clear systemd's start-rate counter
    # (StartLimitBurst) so Restart=on-failure always gets to act.
    agentd.sh(["systemctl", "reset-failed", "agentd.service"])
    old = agentd.main_pid("agentd.service")
    assert old, "agentd is not running"
    agentd.sh(["kill", "-9", str(old)])
    return old


def wait_restarted(agentd: Agentd, old: int) -> None:
    wait_for(
        lambda: (
            agentd.main_pid("agentd.service") not in (0, old)
            and agentd.show("agentd.service", "ActiveState")["ActiveState"] == "active"
        ),
        60,
        "agentd restarted by systemd",
    )


VERSION = (
    "busctl --system --timeout=15 get-property org.agentos.agentd1 /org/agentos/agentd1 "
    "org.agentos.agentd1.Manager Version"
)
# asks agentd for its version without pause, each answer timed in the machine
PROBE = (
    "while :; do s=$(date +%s%N); " + VERSION + " >/dev/null 2>&1 && r=ok || r=fail; "
    'echo "$r $(( ($(date +%s%N) - s) / 1000000 ))"; done >"$0"'
)


@contextlib.contextmanager
def answering(a: Agentd, user: str = "bob") -> Iterator[None]:
    """Around an attack: USER's calls to agentd keep being answered, none failing,
    nine in ten within 1 s (the hardening tests' measure that agentd keeps serving
    everyone else). A call fails if agentd does not answer within busctl's 15 s: a
    loop blocked by the attack. The 1 s is held by the 90th percentile, not the
    slowest call: on 2 cores shared with the model one call in hundreds waits ~2 s
    for the scheduler (measured: 2,099 ms once in a CI run), which says nothing of
    agentd."""
    log = a.sh(["mktemp", "/tmp/agentd-probe.XXXXXX"]).stdout.strip()
    a.sh(["chown", user, log])
    p = a.m.popen(["/bin/sh", "-c", PROBE, log], user=user)
    try:
        wait_for(lambda: a.sh(["test", "-s", log], check=False).returncode == 0, 30, "probing")
        yield
    finally:
        p.terminate()
        p.communicate(timeout=30)
    out = a.sh(["cat", log]).stdout
    samples = [line.split() for line in out.splitlines() if line.count(" ") == 1]
    ms = [int(t) for r, t in samples if r == "ok"]
    print(f"{user}: {len(samples)} calls during the attack, slowest {max(ms, default=-1)} ms")
    assert samples and all(r == "ok" for r, _ in samples), out[-2000:]
    p90 = sorted(ms)[int(0.9 * (len(ms) - 1))]
    assert p90 < 1000, sorted(ms)[-10:]
