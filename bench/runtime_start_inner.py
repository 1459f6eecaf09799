"""Runs inside the disposable machine, as root, with agentd installed.

Where an agent's start goes, for runtime variants measured in this same run:
  before    the runtime as of git commit BEFORE (its agentd/; launcher python3 -I)
  after     the installed tree (this work tree), its launcher (python3 -I)
  after_S   the installed tree with the launcher's python3 -I -S (no site module)
Phases:
  imports   `python3 -X importtime` of exactly what the launcher imports, and the
            wall time of that interpreter start + import (min and p50 of R runs);
  start     per agent, started one at a time through agentd (StartAgent) with
            the offline profile (ExecStart: the launcher) and the online one
            (ExecStart: python3 -I -c CONFINE ... then exec of the launcher):
            StartAgent called -> systemd starts the job (InactiveExit: "queue")
            -> main process forked (ExecMainStart) -> sandbox set up and
            exec'd (ActiveEnter: "sandbox_exec") -> Register reached agentd
            (its agent.online audit row: "runtime");
  idle      each runtime's CPU used by its start (its cgroup's CPU time when it
            registered), its CPU over an idle window, its RSS (VmRSS of MainPID)
            and its cgroup's memory;
  baseline  the same hardened unit (agentd.sandbox.unit_properties, both
            profiles) running /bin/true and `python3 -I` of an empty script,
            InactiveExit -> exec'd, and -> the process exited; the online one
            also through a stdlib-only prototype of CONFINE;
  ablation  the offline /bin/true unit with one hardening property left out
            at a time: what each costs the start (measured, never adopted).
Prints one JSON document.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, "/usr/lib/agentd/python")
REPO = Path(__file__).resolve().parents[1]

from sdbus import sd_bus_open_system, set_default_bus  # noqa: E402

from agentd import sandbox  # noqa: E402
from agentd.api import errors as _errors  # noqa: E402, F401
from agentd.api.interfaces import (  # noqa: E402
    BUS_NAME,
    ROOT_PATH,
    AgentInterface,
    ManagerInterface,
    agent_path,
)
from agentd.sandbox import AgentIdentity, unit_properties  # noqa: E402
from agentd.systemd import Systemd  # noqa: E402
from agentd.templates import Limits, Profile  # noqa: E402

CONF = Path("/etc/agentd/agentd.toml")
PYDIR = "/usr/lib/agentd/python"
BEFORE_DIR = "/usr/lib/agentd/python-before"
LAUNCHERS = Path("/usr/local/lib/agentd-bench")
PROFILES = {"offline": "writing", "online": "research"}  # profile -> a template using it
IDENTITIES: dict[str, AgentIdentity] = {}
IDLE_WINDOW_S = 5.0  # heartbeats come every 10 s: the window sees the loop at rest
LAUNCHER = """#!/usr/bin/python3 {flags}
import sys
{paths}
from agentd.runtime import main
sys.exit(main())
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))]


def dist(values: list[float], digits: int = 2) -> dict[str, float]:
    return {
        "n": len(values),
        "min": round(min(values), digits),
        "p50": round(pct(values, 50), digits),
        "p99": round(pct(values, 99), digits),
        "mean": round(statistics.fmean(values), digits),
    }


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True).stdout


def configure(extra: str) -> None:
    base = CONF.read_text().split("\n# bench\n")[0]
    CONF.write_text(base + "\n# bench\n" + extra)
    sh("systemctl", "reset-failed", "agentd")
    sh("systemctl", "restart", "agentd")


def show(unit: str, *props: str) -> dict[str, str]:
    out = sh("systemctl", "show", unit, *(f"-p{p}" for p in props))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def cpu_ns(unit: str) -> int:
    """CPU time of UNIT's cgroup: cgroup2's cpu.stat usage_usec (the hybrid
    layout's unified tree, where systemd 252 says CPUUsageNSec=[not set]),
    else cgroup v1's cpuacct.usage."""
    cg = show(unit, "ControlGroup")["ControlGroup"]
    stat = Path(f"/sys/fs/cgroup/unified{cg}/cpu.stat")
    if stat.exists():
        fields = dict(line.split() for line in stat.read_text().splitlines())
        return int(fields["usage_usec"]) * 1000
    for v1 in ("cpuacct", "cpu,cpuacct"):
        usage = Path(f"/sys/fs/cgroup/{v1}{cg}/cpuacct.usage")
        if usage.exists():
            return int(usage.read_text())
    raise AssertionError(f"no CPU accounting found for {unit} ({cg})")


def memory_bytes(unit: str) -> int:
    """UNIT's cgroup memory: MemoryCurrent, else cgroup v1's memory.usage_in_bytes."""
    p = show(unit, "MemoryCurrent", "ControlGroup")
    if p["MemoryCurrent"].isdigit():
        return int(p["MemoryCurrent"])
    return int(Path(f"/sys/fs/cgroup/memory{p['ControlGroup']}/memory.usage_in_bytes").read_text())


# -- the variants ------------------------------------------------------------
def variants(before: str) -> dict[str, dict[str, Any]]:
    """Install BEFORE's agentd/ beside the installed tree, and one launcher per variant."""
    head = sh("git", "-c", "safe.directory=*", "-C", str(REPO), "rev-parse", before).strip()
    sh("rm", "-rf", BEFORE_DIR)
    os.makedirs(BEFORE_DIR)
    archive = subprocess.run(
        ["git", "-c", "safe.directory=*", "-C", str(REPO), "archive", head, "agentd"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", BEFORE_DIR], input=archive, check=True)
    sh("/usr/bin/python3", "-m", "compileall", "-q", BEFORE_DIR)
    sh("chmod", "-R", "u=rwX,go=rX", BEFORE_DIR)
    LAUNCHERS.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, Any]] = {
        "before": {"flags": ["-I"], "path": [BEFORE_DIR, PYDIR], "rev": head},
        "after": {"flags": ["-I"], "path": [PYDIR]},
        "after_S": {"flags": ["-I", "-S"], "path": [PYDIR]},
    }
    for name, v in out.items():
        launcher = LAUNCHERS / f"runtime-{name}"
        inserts = "\n".join(f"sys.path.insert({i}, {p!r})" for i, p in enumerate(v["path"]))
        flags = "-" + "".join(f.lstrip("-") for f in v["flags"])  # #! passes one argument
        launcher.write_text(LAUNCHER.format(flags=flags, paths=inserts))
        launcher.chmod(0o755)
        v["launcher"] = str(launcher)
    return out


# -- imports -----------------------------------------------------------------
def import_profile(variant: dict[str, Any], runs: int) -> dict[str, Any]:
    code = f"import sys; sys.path[:0] = {variant['path']!r}; import agentd.runtime"
    argv = ["/usr/bin/python3", *variant["flags"], "-c", code]
    walls, totals, runtime_us, modules = [], [], [], 0
    top: dict[str, list[int]] = {}
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True)
        walls.append((time.perf_counter() - t0) * 1000)
        r = subprocess.run(
            [argv[0], "-X", "importtime", *argv[1:]], check=True, capture_output=True, text=True
        )
        rows = [ln.split("|") for ln in r.stderr.splitlines() if ln.startswith("import time:")]
        rows = [(int(c), n) for _s, c, n in rows[1:]]  # the first is the header
        modules = len(rows)
        totals.append(sum(c for c, n in rows if not n.startswith("  ")) / 1000)
        for c, n in rows:
            if n.startswith(" ") and not n.startswith("   "):  # the runtime's direct imports
                top.setdefault(n.strip(), []).append(c)
            if n.strip() == "agentd.runtime":
                runtime_us.append(c / 1000)
    return {
        "argv": argv,
        "modules": modules,
        "wall_ms": dist(walls),
        "import_ms": dist(totals),
        "agentd_runtime_ms": dist(runtime_us),
        "direct_imports_min_ms": {
            k: round(min(v) / 1000, 2)
            for k, v in sorted(top.items(), key=lambda kv: -min(kv[1]))
            if min(v) >= 300
        },
    }


# -- agents through agentd ---------------------------------------------------
async def audit_online(manager: Any) -> dict[str, float]:
    """agent -> ts of its last agent.online audit row (Register reached agentd)."""
    seen: dict[str, float] = {}
    after = 0
    while True:
        rows = await manager.list_audit_entries(after, 1000)
        if not rows:
            return seen
        for row in rows:
            seq, ts, _uid, action, agent = row[0], row[1], row[2], row[3], row[4]
            after = max(after, seq)
            if action == "agent.online":
                seen[agent] = ts
        if len(rows) < 1000:
            return seen


def mono_to_real() -> float:
    return time.time() - time.monotonic()


def point(link: Path, target: str) -> None:
    """Make LINK (agentd's runtime_command) lead to TARGET, atomically."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


async def start_one(bus: Any, manager: Any, systemd: Systemd, name: str) -> tuple[float, int]:
    """Start NAME through agentd, wait until its runtime registered: (call time, CPU ns)."""
    called = time.time()
    job = await manager.start_agent(name)
    assert await systemd.wait_job(job) == "done", name
    agent = AgentInterface.new_proxy(BUS_NAME, agent_path(name), bus)
    deadline = time.monotonic() + 60
    while not await agent.online:  # Register reaching agentd: its timestamp is audited
        assert time.monotonic() < deadline, f"{name} never registered"
        await asyncio.sleep(0.005)
    return called, cpu_ns(f"agent-{name}.service")


def phases_of(names: list[str], calls: dict[str, float], online: dict[str, float]) -> dict:
    offset = mono_to_real()
    phases: dict[str, list[float]] = {
        k: [] for k in ("queue", "sandbox_exec", "runtime", "unit_to_registered", "call")
    }
    for name in names:
        p = show(
            f"agent-{name}.service",
            "InactiveExitTimestampMonotonic",
            "ExecMainStartTimestampMonotonic",
            "ActiveEnterTimestampMonotonic",
        )
        inactive_exit = int(p["InactiveExitTimestampMonotonic"]) / 1e6 + offset
        main_start = int(p["ExecMainStartTimestampMonotonic"]) / 1e6 + offset
        active = int(p["ActiveEnterTimestampMonotonic"]) / 1e6 + offset
        phases["queue"].append(inactive_exit - calls[name])
        phases["sandbox_exec"].append(active - main_start)
        phases["runtime"].append(online[name] - active)
        phases["unit_to_registered"].append(online[name] - inactive_exit)
        phases["call"].append(online[name] - calls[name])
    return {k: dist([x * 1000 for x in v]) for k, v in phases.items()}


async def start_phase(
    bus: Any, manager: Any, systemd: Systemd, vs: dict[str, dict[str, Any]], n: int
) -> dict[str, Any]:
    """N agents per (variant, profile), started one at a time, the cases taking
    turns (agentd's runtime_command is a symlink re-pointed before each start),
    so that whatever else loads the machine meanwhile hits every case alike."""
    link = LAUNCHERS / "runtime"
    point(link, vs["before"]["launcher"])
    configure(f'runtime_command = "{link}"\nidle_timeout = 0\n')
    await manager.n_online  # agentd answers again
    cases = [(v, profile) for v in vs for profile in PROFILES]
    names = {
        c: [f"{c[0].replace('_', '').lower()[:6]}{c[1][:2]}{i}" for i in range(n)] for c in cases
    }
    for (_v, profile), agents in names.items():
        for name in agents:
            await manager.create_agent(name, PROFILES[profile], {})
    calls: dict[str, float] = {}
    start_cpu: dict[str, int] = {}
    failed: dict[tuple[str, str], str] = {}
    for i in range(n):
        for k in range(len(cases)):
            case = cases[(i + k) % len(cases)]  # each case in each position in turn
            if case in failed:
                continue
            point(link, vs[case[0]]["launcher"])
            try:
                calls[names[case][i]], start_cpu[names[case][i]] = await start_one(
                    bus, manager, systemd, names[case][i]
                )
            except AssertionError as e:  # e.g. a runtime that never registers: say so
                failed[case] = str(e)
    online = await audit_online(manager)
    everyone = [name for c in cases if c not in failed for name in names[c]]
    before = {name: cpu_ns(f"agent-{name}.service") for name in everyone}
    await asyncio.sleep(IDLE_WINDOW_S)  # a measuring window, not a wait for an event
    out: dict[str, Any] = {}
    for case in cases:
        if case in failed:
            out["/".join(case)] = {"failed": failed[case]}
            continue
        rss, mem, idle = [], [], []
        for name in names[case]:
            unit = f"agent-{name}.service"
            status = Path(f"/proc/{show(unit, 'MainPID')['MainPID']}/status").read_text()
            rss.append(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024)  # type: ignore[union-attr]
            mem.append(memory_bytes(unit) / 2**20)
            idle.append((cpu_ns(unit) - before[name]) / 1e6 / IDLE_WINDOW_S)
        pid = show(f"agent-{names[case][0]}.service", "MainPID")["MainPID"]
        out["/".join(case)] = {
            "cmdline": Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1],
            "ms": phases_of(names[case], calls, online),
            "start_cpu_ms": dist([start_cpu[name] / 1e6 for name in names[case]]),
            "idle_cpu_ms_per_s": dist(idle, 3),
            "idle_rss_mib": dist(rss),
            "idle_memory_current_mib": dist(mem),
        }
    for agents in names.values():
        for name in agents:
            await manager.stop_agent(name)
            await manager.remove_agent(name, False)
    return out


# -- the same hardened unit, without the runtime -------------------------------
async def baseline(
    manager: Any,
    systemd: Systemd,
    profile: str,
    command: Path,
    n: int,
    drop: str = "",
    exec_start: list[str] | None = None,
    first: int = 0,
) -> dict[str, Any]:
    """The hardened unit running COMMAND, N times; DROP: one property left out."""
    name = f"bl{profile[:3]}"
    if name not in IDENTITIES:  # one agentd agent per profile: its user, home, policy
        await manager.create_agent(name, PROFILES[profile], {})
        d = {k: v[1] for k, v in (await manager.describe_agent(name)).items()}
        IDENTITIES[name] = AgentIdentity(name, int(d["uid"]), int(d["uid"]), Path(str(d["home"])))
    ident = IDENTITIES[name]
    props = unit_properties(
        ident,
        Limits(256 << 20, 50, 32),
        Profile(profile, network="none" if profile == "offline" else "full"),
        runtime_command=command,
        slice_="agents.slice",
        heartbeat_interval=10,
    )
    props = [(k, v) for k, v in props if k != drop]
    if exec_start:
        props = [(k, v) for k, v in props if k != "ExecStart"]
        props.append(("ExecStart", ("a(sasb)", [(exec_start[0], exec_start, False)])))
    props.append(("RemainAfterExit", ("b", True)))  # keep the timestamps once it exited
    totals, execs = [], []
    for i in range(first, first + n):
        how = drop or ("proto" if exec_start else "full")
        unit = f"bl-{name}-{command.name}-{how}-{i}.service"
        result = await systemd.wait_job(await systemd.start_transient(unit, props))
        if result != "done":
            await systemd.stop(unit)
            return {"failed": f"{unit}: start job {result}"}
        deadline = time.monotonic() + 60
        while show(unit, "SubState")["SubState"] != "exited":
            assert time.monotonic() < deadline, unit
            await asyncio.sleep(0.005)
        p = show(
            unit,
            "InactiveExitTimestampMonotonic",
            "ActiveEnterTimestampMonotonic",
            "ExecMainExitTimestampMonotonic",
            "ExecMainStatus",
        )
        assert p["ExecMainStatus"] == "0", (unit, p)
        start = int(p["InactiveExitTimestampMonotonic"])
        totals.append((int(p["ExecMainExitTimestampMonotonic"]) - start) / 1000)
        execs.append((int(p["ActiveEnterTimestampMonotonic"]) - start) / 1000)
        await systemd.stop(unit)
    return {"until_exec_ms": dist(execs), "until_exited_ms": dist(totals), "raw_exec": execs}


# The properties that set up namespaces, mounts or filters in the child before exec.
ABLATE = (
    "PrivateUsers",
    "PrivateNetwork",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateIPC",
    "ProtectSystem",
    "ProtectHome",
    "BindPaths",
    "ProtectProc",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectHostname",
    "ProtectClock",
    "SystemCallFilter",
    "IPAddressDeny",
    "MemoryDenyWriteExecute",
    "RestrictNamespaces",
)


def stdlib_confine() -> Path:
    """A prototype of the online unit's confining step without agentd.sandbox's
    imports: sandbox.scope_abstract_unix_sockets' own source, stdlib only, run
    with python3 -I -S. What the online ExecStart would cost that way."""
    consts = ("LANDLOCK_ABI_SCOPE", "_SYS_CREATE_RULESET", "_SYS_RESTRICT_SELF")
    consts += ("_CREATE_RULESET_VERSION", "_SCOPE_ABSTRACT_UNIX_SOCKET")
    src = "import os, sys\n" + "".join(f"{c} = {getattr(sandbox, c)!r}\n" for c in consts)
    src += inspect.getsource(sandbox.scope_abstract_unix_sockets)
    src += (
        "why = scope_abstract_unix_sockets()\n"
        "if why is not None:\n"
        "    print('not isolated:', why, file=sys.stderr)\n"
        "os.execv(sys.argv[2], sys.argv[2:])\n"
    )
    path = LAUNCHERS / "confine-stdlib.py"
    path.write_text(src)
    return path


async def confine_prototype(manager: Any, systemd: Systemd, n: int) -> dict[str, Any]:
    """The online unit running `python3 -I` of an empty script through the
    prototype above instead of CONFINE."""
    pypass = LAUNCHERS / "python-pass"
    argv = ["/usr/bin/python3", "-I", "-S", str(stdlib_confine()), "best-effort", str(pypass)]
    return await baseline(manager, systemd, "online", pypass, n, exec_start=argv)


async def ablation(manager: Any, systemd: Systemd, n: int) -> dict[str, Any]:
    """What each property costs the offline unit's start (/bin/true until exec):
    the p50 with it left out, beside the full unit's; one unit of each in turn,
    N rounds, so that drift over the run hits all alike."""
    raw: dict[str, list[float]] = {}
    saved: dict[str, Any] = {}
    for i in range(n):
        for prop in ("", *ABLATE):
            if isinstance(saved.get(prop), str):
                continue
            r = await baseline(manager, systemd, "offline", Path("/bin/true"), 1, prop, None, i)
            if "failed" in r:  # the unit does not start without it (another property needs it)
                saved[prop] = r["failed"]
                continue
            raw.setdefault(prop, []).extend(r["raw_exec"])
    full = pct(raw.pop(""), 50)
    for prop, values in raw.items():
        saved[prop] = round(full - pct(values, 50), 2)
    return {
        "full_until_exec_p50_ms": round(full, 2),
        "saved_p50_ms_without": dict(
            sorted(saved.items(), key=lambda kv: -kv[1] if isinstance(kv[1], float) else 0)
        ),
    }


async def main() -> None:
    n, runs, before = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    report: dict[str, Any] = {"agents_per_case": n, "import_runs": runs}
    vs = variants(before)
    report["before_rev"] = vs["before"]["rev"]
    report["imports"] = {k: import_profile(v, runs) for k, v in vs.items()}
    bus = sd_bus_open_system()
    set_default_bus(bus)
    systemd = Systemd(bus)
    await systemd.connect()
    manager = ManagerInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
    pypass = LAUNCHERS / "python-pass"
    pypass.write_text("#!/usr/bin/python3 -I\npass\n")
    pypass.chmod(0o755)
    report["baseline"] = {
        f"{profile}/{label}": await baseline(manager, systemd, profile, cmd, n)
        for profile in PROFILES
        for label, cmd in (("true", Path("/bin/true")), ("python3 -I pass", pypass))
    }
    report["baseline"][
        "online/python3 -I pass, stdlib-only confine prototype"
    ] = await confine_prototype(manager, systemd, n)
    for r in report["baseline"].values():
        r.pop("raw_exec", None)
    print(json.dumps(report), file=sys.stderr, flush=True)  # progress, should a phase fail
    report["ablation_offline_true"] = await ablation(manager, systemd, n)
    report["start"] = await start_phase(bus, manager, systemd, vs, n)
    configure("")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
