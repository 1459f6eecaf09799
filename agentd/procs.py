"""The processes of a unit, read from its cgroup and /proc (stdlib only).

`agentctl agent ps` needs what `ps` would show of one agent's unit and
nothing else: the PIDs come from the unit's own cgroup (systemd's
ControlGroup property), so a process that left the unit is not listed and
one that forked inside it is. No psutil: three small /proc files per process.
The cgroup is looked for where each of systemd's layouts mounts it: hybrid
(``/sys/fs/cgroup/unified``, where cgroup v2 lives beside the v1
controllers), unified (``/sys/fs/cgroup``) and legacy
(``/sys/fs/cgroup/systemd``). A process that exits while it is read is
left out, never an error: the list is a snapshot of a moving thing.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")
MAX_PROCESSES = 4096  # an agent's TasksMax is far lower; bounds the reply anyway
MAX_COMMAND = 1024  # characters of a command line


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    uid: int  # the real UID
    state: str  # R, S, D, Z, ...
    threads: int
    rss_bytes: int
    cpu_seconds: float  # user + system
    started_at: float  # Unix time
    command: str  # the command line, or [comm] for a kernel-style one without

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cgroup_dir(control_group: str, root: Path = CGROUP_ROOT) -> Path | None:
    """The directory of CONTROL_GROUP (e.g. /agents.slice/agent-x.service) that
    lists its processes, in the hybrid, unified or legacy layout; None if gone."""
    relative = control_group.strip("/")
    if not relative or ".." in relative.split("/"):
        return None
    for base in (root / "unified", root, root / "systemd"):
        if (base / relative / "cgroup.procs").is_file():
            return base / relative
    return None


def cpu_usage_nsec(control_group: str, root: Path = CGROUP_ROOT) -> int | None:
    """CONTROL_GROUP's CPU time from cgroup v2's cpu.stat (present with or without
    the cpu controller), for systemd's CPUUsageNSec when it has none: on the
    hybrid layout systemd counts CPU only for units with CPUAccounting=yes."""
    relative = control_group.strip("/")
    if not relative or ".." in relative.split("/"):
        return None
    for base in (root / "unified", root):
        try:
            text = (base / relative / "cpu.stat").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec" and value.strip().isdigit():
                return int(value) * 1000
    return None


def cgroup_pids(directory: Path) -> list[int]:
    """PIDs in DIRECTORY's cgroup and its children, ascending, at most MAX_PROCESSES."""
    pids: set[int] = set()
    for here, _dirs, files in os.walk(directory):
        if "cgroup.procs" not in files:
            continue
        try:
            text = (Path(here) / "cgroup.procs").read_text()
        except OSError:
            continue  # removed while walked
        pids.update(int(line) for line in text.split() if line.isdigit())
    return sorted(pids)[:MAX_PROCESSES]


def _boot_time(proc: Path) -> float:
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def read_process(pid: int, proc: Path = PROC, boot: float | None = None) -> Process | None:
    """PID's row, or None if it exited while being read."""
    base = proc / str(pid)
    try:
        stat = (base / "stat").read_text()
        status = (base / "status").read_text()
        cmdline = (base / "cmdline").read_bytes()
    except OSError:  # exited (ENOENT, ESRCH) or hidden
        return None
    comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
    fields = rest.split()  # fields[0] is stat(5)'s field 3, state
    ticks = os.sysconf("SC_CLK_TCK")
    values = _status(status)
    command = " ".join(a.decode(errors="replace") for a in cmdline.split(b"\0") if a)
    boot = _boot_time(proc) if boot is None else boot
    return Process(
        pid=pid,
        ppid=int(fields[1]),
        uid=int(values.get("Uid", "0").split()[0]),
        state=fields[0],
        threads=int(values.get("Threads", "1")),
        rss_bytes=int(values.get("VmRSS", "0 kB").split()[0]) * 1024,
        cpu_seconds=round((int(fields[11]) + int(fields[12])) / ticks, 2),
        started_at=round(boot + int(fields[19]) / ticks, 2),
        command=(command or f"[{comm}]")[:MAX_COMMAND],
    )


def _status(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def processes(control_group: str, root: Path = CGROUP_ROOT, proc: Path = PROC) -> list[Process]:
    """The processes in CONTROL_GROUP now ([] if it is gone or empty)."""
    directory = cgroup_dir(control_group, root) if control_group else None
    if directory is None:
        return []
    boot = _boot_time(proc)
    rows = (read_process(pid, proc, boot) for pid in cgroup_pids(directory))
    return [row for row in rows if row is not None]
