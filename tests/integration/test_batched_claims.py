"""Fewer round trips (issue 11) in the systemd machine: ClaimTasks,
CompleteAndClaim and RegisterAndClaim called by an agent from inside its own
unit, as its own UID (Machine.run_in_unit, so the bus policy and agentd's
caller checks see it as they see a runtime), then tasks run end to end by the
real runtime, which uses those calls.

The attack: an agent asks for far more tasks than its template allows, and
tries to complete (and so claim through) another agent's task. It gets at
most its free wip, only its own tasks, and a refused completion claims
nothing; meanwhile agentd keeps answering another user within 1 s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from agentd_helpers import Agentd, answering, wait_for

from agentd.names import account_name

pytestmark = pytest.mark.integration
CONF = "/etc/agentd/agentd.toml"
IDLE = "/usr/local/lib/agentd-tests-idle-runtime"  # a unit that is up, claiming nothing
SCRIPT = "/opt/agentd-tests/claim_many.py"  # not /tmp: the unit has PrivateTmp

# Runs as the agent inside its unit: each step's answer (task ids) or error name.
PROBE = r"""
import asyncio, json, sys
sys.path.insert(0, "/usr/lib/agentd/python")
from sdbus import DbusFailedError, sd_bus_open_system, set_default_bus
from agentd.api import errors  # maps org.agentos.agentd1.Error.* to DbusFailedError
from agentd.api.interfaces import BUS_NAME, ROOT_PATH, RuntimeInterface

def ids(tasks):
    return [[t["id"][1], t["attempt"][1]] for t in tasks]

async def step(out, name, call):
    try:
        out[name] = await call
    except DbusFailedError as e:  # agentd's errors, mapped by agentd.api.errors
        out[name] = e.dbus_error_name.rsplit(".", 1)[-1]

async def main(foreign):
    bus = sd_bus_open_system(); set_default_bus(bus)
    rt = RuntimeInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
    out = {}
    name, _, settings = await rt.register()
    out["registered"] = [name, settings["wip"][1]]
    await step(out, "claim_100", rt.claim_tasks(100, 5000))
    await step(out, "claim_full", rt.claim_tasks(1, 300))
    (tid, attempt), _ = ids(out["claim_100"])
    await step(out, "next", rt.complete_and_claim(tid, attempt, '{"ok": 1}', [], 1, 5000))
    await step(out, "stale", rt.complete_and_claim(tid, attempt, "", [], 1, 300))
    await step(out, "foreign", rt.complete_and_claim(foreign, 1, "", [], 0, 300))
    # a new runtime: the claims above are released (retried after a backoff),
    # and it gets what is ready now in the same call
    name, _, _, first = await rt.register_and_claim(0)
    out["reregistered"] = ids(first)
    for key in ("claim_100", "claim_full", "next"):
        if isinstance(out[key], list):
            out[key] = ids(out[key])
    print(json.dumps(out))

asyncio.run(main(int(sys.argv[1])))
"""


def submit(a: Agentd, title: str, *args: str, user: str = "alice") -> int:
    out = a.ctl("task", "submit", title, *args, user=user).stdout.strip()
    assert out.isdigit(), out
    return int(out)


def show(a: Agentd, task: int, user: str = "alice") -> dict:
    return a.ctl_json("task", "show", str(task), user=user)


def active(a: Agentd, unit: str) -> bool:
    return a.show(unit, "ActiveState")["ActiveState"] == "active"


ORIGINAL: dict[str, str] = {}
MONITOR = (  # every Runtime call on the bus, as root sees it (BecomeMonitor)
    "exec busctl --system monitor "
    "--match \"type='method_call',interface='org.agentos.agentd1.Runtime'\" >\"$0\" 2>&1"
)


@pytest.fixture(scope="module")
def idle(agentd: Agentd) -> Iterator[Agentd]:
    """Agents whose units run a runtime that claims nothing: the test claims."""
    original = ORIGINAL["conf"] = agentd.sh(["cat", CONF]).stdout
    agentd.m.write_file(IDLE, "#!/bin/sh\nexec sleep infinity\n", mode=0o755)
    agentd.m.write_file(
        CONF,
        original + f'\nruntime_command = "{IDLE}"\nidle_timeout = 0\nretry_backoff = 60\n',
        mode=0o644,
    )
    agentd.restart()
    agentd.sh(["mkdir", "-p", "/opt/agentd-tests"])
    agentd.m.write_file(SCRIPT, PROBE, mode=0o644)
    for name, user in (("cm-a", "alice"), ("cm-b", "alice"), ("cm-c", "bob")):
        agentd.create(name, template="sandbox", user=user)  # sandbox: concurrency 2
    yield agentd
    agentd.m.write_file(CONF, original, mode=0o644)
    agentd.restart()


def test_an_agent_gets_at_most_its_wip_and_only_its_own_tasks(idle: Agentd) -> None:
    a = idle
    # in the order the scheduler may assign them meanwhile (a claim takes the
    # tasks assigned to the agent before the unassigned ones pinned to it)
    mine = {
        "high": submit(a, "high", "--agent", "cm-a", "--priority", "high"),
        "med": submit(a, "med", "--agent", "cm-a", "--priority", "medium"),
        "med2": submit(a, "med2", "--agent", "cm-a", "--priority", "medium"),
        "low": submit(a, "low", "--agent", "cm-a", "--priority", "low"),
    }
    sibling = submit(a, "sibling's", "--agent", "cm-b", "--priority", "critical")
    bobs = submit(a, "bob's", "--agent", "cm-c", "--priority", "critical", user="bob")
    a.ctl("agent", "start", "cm-a", user="alice", check=False)  # may be started already
    wait_for(lambda: active(a, "agent-cm-a.service"), 60, "agent-cm-a.service active")
    with answering(a, user="bob"):
        r = a.m.run_in_unit(
            "agent-cm-a.service",
            ["python3", SCRIPT, str(sibling)],
            user=account_name("cm-a"),
            check=False,
        )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["registered"] == ["cm-a", 2]
    got = [tid for tid, _ in out["claim_100"]]
    assert got == [mine["high"], mine["med"]]  # asked for 100, got its wip, best first
    assert out["claim_full"] == []  # no room: nothing, after waiting
    assert [tid for tid, _ in out["next"]] == [mine["med2"]]  # its completion's slot
    assert out["stale"] == "LeaseExpired"  # completed already: refused, nothing claimed
    assert out["foreign"] == "PermissionDenied"  # another agent's task
    assert [tid for tid, _ in out["reregistered"]] == [mine["low"]]  # the others back off
    assert show(a, mine["high"])["status"] == "completed"
    assert show(a, sibling)["status"] == "pending"  # never given to cm-a
    assert show(a, bobs, user="bob")["status"] == "pending"
    claimed = [e["detail"].get("task_id") for e in a.audit("task.claimed", agent="cm-a")]
    assert sibling not in claimed and bobs not in claimed
    assert claimed.count(mine["low"]) == 1  # the refused calls claimed nothing
    denied = [
        e
        for e in a.audit("task.completed", agent="cm-a")
        if e["result"] == "denied" and e["detail"].get("task_id") == sibling
    ]
    assert denied, "the foreign completion is audited"


def test_the_real_runtime_registers_and_claims_and_completes_and_claims(idle: Agentd) -> None:
    a = idle
    a.m.write_file(CONF, ORIGINAL["conf"], mode=0o644)  # agentd's own runtime again
    a.restart()
    a.create("cm-r", template="sandbox", user="alice")  # stopped: work starts it
    log = a.sh(["mktemp", "/tmp/agentd-monitor.XXXXXX"]).stdout.strip()
    monitor = a.m.popen(["/bin/sh", "-c", MONITOR, log])
    try:
        wait_for(lambda: "Monitoring" in a.sh(["cat", log]).stdout, 30, "busctl monitor")
        stamp = "date +%s.%N; sleep 1; date +%s.%N"
        ids = [submit(a, f"real{i}", "--agent", "cm-r", "--exec", stamp) for i in range(3)]
        for tid in ids:
            rc = a.ctl("task", "wait", str(tid), "--timeout", "90", user="alice", check=False)
            assert rc.returncode == 0, show(a, tid)
        calls = wait_for(
            lambda: (
                (out := a.sh(["cat", log]).stdout).count("Member=CompleteAndClaim") >= 3 and out
            ),
            30,
            "three CompleteAndClaim calls seen on the bus",
        )
    finally:
        monitor.terminate()
        monitor.communicate(timeout=30)
    spans = sorted(
        tuple(float(x) for x in json.loads(show(a, t)["result"])["stdout"].split()) for t in ids
    )
    assert spans[0][1] > spans[1][0], spans  # wip 2: the first two ran at once
    assert "Member=RegisterAndClaim" in calls
    members = {
        line.split("Member=", 1)[1].split()[0] for line in calls.splitlines() if "Member=" in line
    }
    assert "ClaimTask" not in members and "CompleteTask" not in members, members
    assert all(show(a, t)["status"] == "completed" for t in ids)
