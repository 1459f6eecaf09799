"""Runs inside the disposable machine, as root, with agentd installed.

Measures, in one process and one run:
  baseline  groupadd + useradd + home + StartTransientUnit (the same unit
            properties agentd would use, through the same systemd client),
            then StopUnit + userdel + groupdel + rm home;
  agentd    CreateAgent + StartAgent, then StopAgent + RemoveAgent over D-Bus.
  Both return when systemd has queued the start job, as StartUnit does; the
  "until running" figures also wait for the job to end (the unit exec'd).
  scale     N agents created and started concurrently, all online at once:
            failures, wall time, agentd's RSS, against N baseline units.
Prints one JSON document.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, "/usr/lib/agentd/python")

from sdbus import sd_bus_open_system, set_default_bus

from agentd.api import errors as _errors  # noqa: F401
from agentd.api.interfaces import BUS_NAME, ROOT_PATH, ManagerInterface
from agentd.sandbox import AgentIdentity, unit_properties
from agentd.systemd import Systemd
from agentd.templates import Limits, Profile

RUNTIME = Path("/usr/libexec/agentd/agentd-runtime")
BASE_UID = 99000


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 2),
        "p99_ms": round(pct(ms, 99), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def agentd_pid() -> int:
    out = subprocess.run(
        ["systemctl", "show", "-p", "MainPID", "--value", "agentd"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out)


class Baseline:
    """What agentd does, minus agentd: shadow tools + the same transient unit."""

    def __init__(self, systemd: Systemd) -> None:
        self.systemd = systemd
        self.jobs: dict[int, str] = {}

    async def up(self, i: int) -> None:
        name, uid = f"bl{i}", BASE_UID + i
        home = Path("/home/agents") / name
        for argv in (
            ["groupadd", "--system", "--gid", str(uid), name],
            [
                "useradd",
                "--system",
                "--uid",
                str(uid),
                "--gid",
                str(uid),
                "--groups",
                "agentd-agents",
                "--no-create-home",
                "--home-dir",
                str(home),
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
        ):
            proc = await asyncio.create_subprocess_exec(*argv)
            assert await proc.wait() == 0, argv
        os.mkdir(home, 0o700)
        os.chown(home, uid, uid)
        props = unit_properties(
            AgentIdentity(name, uid, uid, home),
            Limits(256 << 20, 50, 32),
            Profile("offline"),
            runtime_command=Path("/bin/sleep"),
            slice_="agents.slice",
            heartbeat_interval=10,
        )
        props = [(k, v) for k, v in props if k != "ExecStart"]
        props.append(("ExecStart", ("a(sasb)", [("/bin/sleep", ["sleep", "infinity"], False)])))
        job = await self.systemd.start_transient(f"bl-{name}.service", props)
        self.jobs[i] = job

    async def down(self, i: int) -> None:
        name = f"bl{i}"
        await self.systemd.stop(f"bl-{name}.service")
        for argv in (["userdel", name], ["groupdel", name]):
            proc = await asyncio.create_subprocess_exec(*argv)
            await proc.wait()
        shutil.rmtree(Path("/home/agents") / name, ignore_errors=True)


async def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    await fn(*args)
    return time.perf_counter() - t0


async def latency(n: int, up, down, wait_running) -> dict:
    ups, running = [], []
    for i in range(n):
        t0 = time.perf_counter()
        await up(i)
        ups.append(time.perf_counter() - t0)
        await wait_running(i)
        running.append(time.perf_counter() - t0)
    downs = [await timed(down, i) for i in range(n)]
    return {
        "create_start": summary(ups),
        "create_until_running": summary(running),
        "stop_remove": summary(downs),
    }


async def scale(n: int, up, down, concurrency: int, wait_online) -> dict:
    sem = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one(i: int) -> None:
        async with sem:
            try:
                await up(i)
            except Exception as e:
                failures.append(f"{i}: {e}")

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    started = time.perf_counter() - t0
    online = await wait_online(n - len(failures)) if wait_online else None
    result = {
        "n": n,
        "failures": len(failures),
        "first_failures": failures[:3],
        "wall_s": round(started, 2),
    }
    if online is not None:
        result["all_online_s"] = round(online + started, 2)
    await asyncio.gather(*(down(i) for i in range(n)), return_exceptions=True)
    return result


def run_times(argv: list[str], runs: int) -> dict[str, float]:
    """Wall time of ARGV (a CLI call, its Python start included), RUNS times."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return summary(times)


async def registered(manager, count: int, pid: int) -> dict:
    """COUNT agents registered (created, not started), 16 calls in flight: the
    time it takes, agentd's RSS, and listing them (ListAgents over D-Bus, and
    `agentctl agent list`, against `agentctl template list` for the CLI's own
    start and one small call), then all removed again."""
    sem = asyncio.Semaphore(16)
    failures: list[str] = []

    async def make(i: int) -> None:
        async with sem:
            try:
                await manager.create_agent(f"reg{i}", "sandbox", {})
            except Exception as e:
                failures.append(f"{i}: {e}")

    async def drop(i: int) -> None:
        async with sem:
            await manager.remove_agent(f"reg{i}", False)

    t0 = time.perf_counter()
    await asyncio.gather(*(make(i) for i in range(count)))
    made = time.perf_counter() - t0
    listed = []
    for _ in range(20):
        t1 = time.perf_counter()
        rows = await manager.list_agents()
        listed.append(time.perf_counter() - t1)
    result = {
        "n": count,
        "failures": len(failures),
        "first_failures": failures[:3],
        "create_wall_s": round(made, 2),
        "listed": len(rows),
        "agentd_rss_kib": rss_kib(pid),
        "list_agents_dbus": summary(listed),
        "agentctl_agent_list": run_times(["agentctl", "agent", "list"], 10),
        "baseline_agentctl_template_list": run_times(["agentctl", "template", "list"], 10),
    }
    t0 = time.perf_counter()
    await asyncio.gather(*(drop(i) for i in range(count)), return_exceptions=True)
    result["remove_wall_s"] = round(time.perf_counter() - t0, 2)
    return result


async def main() -> None:
    n, concurrent = int(sys.argv[1]), int(sys.argv[2])
    many = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    bus = sd_bus_open_system()
    set_default_bus(bus)
    systemd = Systemd(bus)
    await systemd.connect()
    manager = ManagerInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
    base = Baseline(systemd)

    agent_jobs: dict[int, str] = {}

    async def agent_up(i: int) -> None:
        await manager.create_agent(f"bench{i}", "sandbox", {})
        agent_jobs[i] = await manager.start_agent(f"bench{i}")

    async def agent_running(i: int) -> None:
        # agentd's StartAgent job is systemd's job: wait for it the same way.
        await systemd.wait_job(agent_jobs[i])

    async def base_running(i: int) -> None:
        await systemd.wait_job(base.jobs[i])

    async def agent_down(i: int) -> None:
        await manager.stop_agent(f"bench{i}")
        await manager.remove_agent(f"bench{i}", False)

    async def wait_online(count: int, timeout: float = 300) -> float:
        t0 = time.perf_counter()
        while await manager.n_online < count and time.perf_counter() - t0 < timeout:
            await asyncio.sleep(0.2)
        return time.perf_counter() - t0

    pid = agentd_pid()
    report: dict = {"agentd_rss_kib_idle": rss_kib(pid)}
    report["baseline"] = await latency(n, base.up, base.down, base_running)
    report["agentd"] = await latency(n, agent_up, agent_down, agent_running)
    for key in ("create_start", "create_until_running", "stop_remove"):
        report[f"ratio_{key}_p50"] = round(
            report["agentd"][key]["p50_ms"] / report["baseline"][key]["p50_ms"], 2
        )
    report["scale_baseline"] = await scale(concurrent, base.up, base.down, 16, None)
    rss_before = rss_kib(pid)
    scale_task = asyncio.create_task(scale(concurrent, agent_up, agent_down, 16, wait_online))
    peak = rss_before
    while not scale_task.done():
        peak = max(peak, rss_kib(pid))
        await asyncio.sleep(0.2)
    report["scale_agentd"] = scale_task.result()
    report["scale_agentd"]["agentd_rss_kib_before"] = rss_before
    report["scale_agentd"]["agentd_rss_kib_peak"] = peak
    if many:
        report["registered"] = await registered(manager, many, pid)
    report["agentd_restarts"] = int(agentd_pid() != pid)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
