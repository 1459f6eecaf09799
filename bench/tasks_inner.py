"""Runs inside the disposable machine, as root, with agentd installed.

Phases, each against a baseline measured in this same run:
  queue     claim+complete cycles through the D-Bus Runtime API by N client
            processes running as N agents' UIDs (so the bus policy applies as
            to real runtimes): ClaimTask + CompleteTask (two calls per task),
            and CompleteAndClaim (one call per task: the completion brings the
            next claim), vs the same TaskQueue code in-process (no bus), and
            vs a bare D-Bus round trip to agentd (Peer.Ping) per call;
  scale0    submit -> running (claimed) for an agent whose unit is stopped,
            vs systemd starting the same hardened unit (StartTransientUnit
            until the job is done).
Prints one JSON document.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, "/usr/lib/agentd/python")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(REPO / "tests" / "unit"))

from sdbus import sd_bus_open_system, set_default_bus  # noqa: E402

from agentd.api import errors as _errors  # noqa: E402, F401
from agentd.api.interfaces import (  # noqa: E402
    BUS_NAME,
    ROOT_PATH,
    ManagerInterface,
    TasksInterface,
)
from agentd.names import account_name  # noqa: E402

CONF = Path("/etc/agentd/agentd.toml")
IDLE_RUNTIME = Path("/usr/local/lib/bench-idle-runtime")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))]


def ms(values: list[float]) -> dict[str, float]:
    v = [x * 1000 for x in values]
    return {
        "n": len(v),
        "p50_ms": round(pct(v, 50), 3),
        "p99_ms": round(pct(v, 99), 3),
        "mean_ms": round(statistics.fmean(v), 3),
    }


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def configure(extra: str) -> None:
    base = CONF.read_text().split("\n# bench\n")[0]
    CONF.write_text(base + "\n# bench\n" + extra)
    sh("systemctl", "reset-failed", "agentd")
    sh("systemctl", "restart", "agentd")


CLIENT = r"""
import sys, time, json, asyncio
sys.path.insert(0, "/usr/lib/agentd/python")
from sdbus import sd_bus_open_system, set_default_bus
from agentd.api.interfaces import BUS_NAME, ROOT_PATH, RuntimeInterface
async def single(rt, n, calls):
    cycles = 0
    while cycles < n:
        c0 = time.perf_counter()
        found, task = await rt.claim_task(2000)
        calls.append(time.perf_counter() - c0)
        if not found:
            break
        await rt.complete_task(task["id"][1], task["attempt"][1], "", [])
        cycles += 1
    return cycles
async def batched(rt, n, calls):
    cycles = 0
    c0 = time.perf_counter()
    tasks = await rt.claim_tasks(1, 2000)
    calls.append(time.perf_counter() - c0)
    while tasks:
        task = tasks[0]
        c0 = time.perf_counter()
        more = 1 if cycles + 1 < n else 0
        if more:
            tasks = await rt.complete_and_claim(
                task["id"][1], task["attempt"][1], "", [], 1, 2000
            )
        else:
            await rt.complete_task(task["id"][1], task["attempt"][1], "", [])
            tasks = []
        calls.append(time.perf_counter() - c0)
        cycles += 1
    return cycles
async def main(n, mode):
    bus = sd_bus_open_system(); set_default_bus(bus)
    rt = RuntimeInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
    await rt.register()
    calls = []
    sys.stdout.write("ready\n"); sys.stdout.flush(); sys.stdin.readline()
    t0 = time.perf_counter()
    cycles = await (batched if mode == "batched" else single)(rt, n, calls)
    print(json.dumps({"cycles": cycles, "wall": time.perf_counter() - t0, "calls": calls}))
asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""


async def queue_phase(manager, tasks, agents: int, per_agent: int, mode: str = "single") -> dict:
    """MODE "single": ClaimTask + CompleteTask per task (latency: the claim);
    "batched": CompleteAndClaim per task (latency: that one call)."""
    IDLE_RUNTIME.write_text("#!/bin/sh\nexec sleep infinity\n")
    IDLE_RUNTIME.chmod(0o755)
    configure(f'runtime_command = "{IDLE_RUNTIME}"\nidle_timeout = 0\n')
    await asyncio.sleep(0.5)
    names = [f"{mode[0]}q{i}" for i in range(agents)]
    for name in names:
        await manager.create_agent(name, "sandbox", {})
    for name in names:
        for _ in range(per_agent):
            await tasks.submit_task({"title": ("s", "bench"), "agent": ("s", name)})
    Path("/opt/bench-client.py").write_text(CLIENT)
    procs = []
    for name in names:
        uid = int(sh("id", "-u", account_name(name)))
        gid = sh("getent", "group", "agentd-agents").split(":")[2]
        procs.append(
            subprocess.Popen(
                [
                    "setpriv",
                    f"--reuid={uid}",
                    f"--regid={uid}",
                    f"--groups={gid}",
                    "--",
                    "/usr/bin/python3",
                    "/opt/bench-client.py",
                    str(per_agent),
                    mode,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    await asyncio.sleep(1.5)  # let the scheduler assign everything
    t0 = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.communicate()[0]) for p in procs]
    wall = time.perf_counter() - t0
    cycles = sum(r["cycles"] for r in results)
    calls = [c for r in results for c in r["calls"]]
    for name in names:
        await manager.stop_agent(name)
        await manager.remove_agent(name, False)
    return {
        "agents": agents,
        "cycles": cycles,
        "wall_s": round(wall, 3),
        "cycles_per_s": round(cycles / wall, 1),
        ("claim" if mode == "single" else "complete_and_claim"): ms(calls),
    }


async def ping_baseline(bus, n: int = 2000) -> dict:
    manager = ManagerInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await manager.dbus_ping()
        times.append(time.perf_counter() - t0)
    return ms(times)


async def inprocess_baseline(n: int) -> dict:
    """The same queue code, no bus: claim+complete on a store in /tmp."""
    from fakes import FakeAccounts, FakeHomes, FakeUnits  # tests/unit/fakes.py

    from agentd.audit import AuditLog
    from agentd.config import Config
    from agentd.policy import Caller
    from agentd.registry import Registry
    from agentd.store import Store
    from agentd.tasks.queue import TaskQueue
    from agentd.templates import Catalog

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config(state_dir=Path(tmp))
        store = Store(Path(tmp) / "q.db")
        audit = AuditLog(store, journal=None)
        reg = Registry(
            cfg,
            store,
            audit,
            FakeAccounts(),
            FakeHomes(),
            FakeUnits(),
            Catalog(Path("/usr/share/agentd"), Path(tmp)),
        )
        queue = TaskQueue(store, reg)
        agent = await reg.create(Caller(0), "inproc", "sandbox")
        for _ in range(n):
            queue.submit(Caller(0), {"title": "s", "agent": "inproc"})
        t0 = time.perf_counter()
        done = 0

        while (task := queue.claim(agent)) is not None:
            await queue.complete(agent, task.id, task.attempts, "", [])
            done += 1
        wall = time.perf_counter() - t0
    return {"cycles": done, "wall_s": round(wall, 3), "cycles_per_s": round(done / wall, 1)}


async def scale0_phase(bus, manager, tasks, runs: int) -> dict:
    configure("idle_timeout = 1\nheartbeat_interval = 1\nlease_seconds = 5\n")
    await asyncio.sleep(0.5)
    await manager.create_agent("cold", "sandbox", {})
    latencies = []
    for _ in range(runs):
        while sh(
            "systemctl", "show", "-p", "ActiveState", "--value", "agent-cold.service"
        ).strip() not in ("inactive", "failed"):
            await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        tid = await tasks.submit_task(
            {"title": ("s", "wake"), "agent": ("s", "cold"), "exec": ("s", "true")}
        )
        while True:
            info = await tasks.describe_task(tid)
            if info["status"][1] != "pending":
                break
            await asyncio.sleep(0.002)
        latencies.append(time.perf_counter() - t0)
    await manager.remove_agent("cold", False)
    return ms(latencies)


async def unit_start_baseline(bus, runs: int) -> dict:
    from agentd.sandbox import AgentIdentity, unit_properties
    from agentd.systemd import Systemd
    from agentd.templates import Limits, Profile

    systemd = Systemd(bus)
    await systemd.connect()
    home = Path("/home/agents/base0")
    home.mkdir(exist_ok=True)
    props = unit_properties(
        AgentIdentity("root", 0, 0, home),
        Limits(256 << 20, 50, 32),
        Profile("offline"),
        runtime_command=Path("/bin/true"),
        slice_="agents.slice",
        heartbeat_interval=10,
    )
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        job = await systemd.start_transient(f"base0-{i}.service", props)
        await systemd.wait_job(job)
        times.append(time.perf_counter() - t0)
    home.rmdir()
    return ms(times)


async def main() -> None:
    agents, per_agent, runs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    bus = sd_bus_open_system()
    set_default_bus(bus)
    manager = ManagerInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
    tasks = TasksInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
    phases = {
        "inprocess_queue": lambda: inprocess_baseline(agents * per_agent),
        "dbus_ping": lambda: ping_baseline(bus),
        "dbus_queue": lambda: queue_phase(manager, tasks, agents, per_agent),
        "dbus_queue_complete_and_claim": lambda: queue_phase(
            manager, tasks, agents, per_agent, "batched"
        ),
        "systemd_unit_start": lambda: unit_start_baseline(bus, runs),
        "submit_to_running_from_stopped": lambda: scale0_phase(bus, manager, tasks, runs),
    }
    wanted = os.environ.get("BENCH_PHASES", "").split(",")
    report = {}
    for name, phase in phases.items():
        if wanted != [""] and name not in wanted:
            continue
        t0 = time.perf_counter()
        try:
            report[name] = await phase()
        except Exception:
            print(sh("journalctl", "-u", "agentd", "--no-pager", "-n", "40"), file=sys.stderr)
            for status in ("pending", "in_progress", "blocked"):
                print(
                    status,
                    subprocess.run(
                        ["agentctl", "task", "list", "--status", status],
                        capture_output=True,
                        text=True,
                    ).stdout,
                    file=sys.stderr,
                )
            raise
        print(f"{name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    if "dbus_queue" in report and "inprocess_queue" in report:
        report["dbus_vs_inprocess_throughput"] = round(
            report["dbus_queue"]["cycles_per_s"] / report["inprocess_queue"]["cycles_per_s"], 3
        )
    batched = report.get("dbus_queue_complete_and_claim")
    if batched and "dbus_queue" in report:
        report["complete_and_claim_vs_claim_complete_throughput"] = round(
            batched["cycles_per_s"] / report["dbus_queue"]["cycles_per_s"], 3
        )
    print(json.dumps(report, indent=2))
    if os.path.exists("/opt/bench-client.py"):
        os.unlink("/opt/bench-client.py")


if __name__ == "__main__":
    asyncio.run(main())
