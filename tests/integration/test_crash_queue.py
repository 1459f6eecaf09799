"""kill -9 agentd while agents claim and complete tasks as fast as they can
(issue 11: group commit). A reply is sent only after the group it joined is
committed, so every claim and completion an agent was told succeeded is in the
database after systemd restarts agentd, and the audit chain verifies.

The agents are client processes running as the agents' UIDs (as the bus policy
sees a real runtime) through the Runtime interface, each writing a line per
acknowledged reply; the agents' units run an idle command instead of the
runtime, so nothing else claims.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from agentd_helpers import Agentd, kill_agentd_and_wait, wait_for

pytestmark = pytest.mark.integration
IDLE = "/usr/local/lib/crash-idle-runtime"
AGENTS = [f"cq-{i}" for i in range(4)]
PER_AGENT = 150
DB = "/var/lib/agentd/agentd.db"

CLIENT = r"""
import sys, asyncio
sys.path.insert(0, "/usr/lib/agentd/python")
from sdbus import sd_bus_open_system, set_default_bus
from agentd.api.interfaces import BUS_NAME, ROOT_PATH, RuntimeInterface
async def main(log):
    bus = sd_bus_open_system(); set_default_bus(bus)
    rt = RuntimeInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
    await rt.register()
    with open(log, "a", buffering=1) as out:
        while True:
            found, task = await rt.claim_task(2000)
            if not found:
                return
            tid, attempt = task["id"][1], task["attempt"][1]
            out.write(f"claimed {tid} {attempt}\n")
            await rt.complete_task(tid, attempt, "", [])
            out.write(f"completed {tid} {attempt}\n")
asyncio.run(main(sys.argv[1]))
"""
SUBMIT = r"""
import sys, asyncio
sys.path.insert(0, "/usr/lib/agentd/python")
from sdbus import sd_bus_open_system, set_default_bus
from agentd.api.interfaces import BUS_NAME, ROOT_PATH, TasksInterface
async def main(n, names):
    bus = sd_bus_open_system(); set_default_bus(bus)
    tasks = TasksInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
    for name in names:
        for _ in range(n):
            await tasks.submit_task({"title": ("s", "crash"), "agent": ("s", name)})
asyncio.run(main(int(sys.argv[1]), sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def idle(agentd: Agentd) -> Iterator[Agentd]:
    agentd.m.write_file(IDLE, "#!/bin/sh\nexec sleep infinity\n", mode=0o755)
    with agentd.configured(
        f'runtime_command = "{IDLE}"\nidle_timeout = 0\ncreates_burst = 1000\n'
    ) as a:
        yield a


def test_kill_during_claims_loses_no_acknowledged_claim_or_completion(idle: Agentd) -> None:
    a = idle
    gid = a.sh(["getent", "group", "agentd-agents"]).stdout.split(":")[2]
    a.m.write_file("/opt/crash-client.py", CLIENT, mode=0o644)
    clients = []
    a.m.write_file("/opt/crash-submit.py", SUBMIT, mode=0o644)
    for name in AGENTS:
        a.create(name, user="alice")
    a.m.run(["/usr/bin/python3", "/opt/crash-submit.py", str(PER_AGENT), *AGENTS], user="alice")
    for name in AGENTS:
        uid = a.ctl_json("agent", "show", name, user="alice")["uid"]
        log = f"/tmp/{name}.acks"
        a.sh(["rm", "-f", log])
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", f"--groups={gid}", "--"]
        argv += ["/usr/bin/python3", "/opt/crash-client.py", log]
        clients.append((name, log, a.m.popen(argv)))
    total = "cat /tmp/cq-*.acks 2>/dev/null | grep -c ^completed || true"
    wait_for(lambda: int(a.sh(["/bin/sh", "-c", total]).stdout) >= 100, 120, "100 completions")
    kill_agentd_and_wait(a)
    for _, _, p in clients:
        p.communicate(timeout=60)

    acked: dict[int, tuple[str, int]] = {}  # task -> (what was acknowledged last, attempt)
    for _, log, _ in clients:
        # no file: that client had nothing acknowledged yet (a CI run of
        # 2026-12-01 killed agentd before the last client's first claim)
        for line in a.sh(f"cat {log} 2>/dev/null || true").stdout.splitlines():
            what, tid, attempt = line.split()
            acked[int(tid)] = (what, int(attempt))
    rows = a.sh(
        ["sqlite3", "-json", DB, "SELECT id, status, attempts FROM tasks WHERE title='crash'"]
    ).stdout
    stored = {r["id"]: (r["status"], r["attempts"]) for r in json.loads(rows or "[]")}
    done = [t for t, (w, _) in acked.items() if w == "completed"]
    print(f"{len(acked)} tasks acknowledged ({len(done)} completed) before the kill")
    lost = [
        (t, w, n, stored.get(t))
        for t, (w, n) in acked.items()
        if (w == "completed" and stored.get(t, ("", 0))[0] != "completed")
        or (w == "claimed" and stored.get(t, ("", 0))[1] < n)
    ]
    assert not lost, lost[:10]
    assert len(done) >= 100
    assert a.ctl_json("audit", "verify")["ok"]
    for name in AGENTS:
        a.ctl("agent", "rm", name, user="alice")
