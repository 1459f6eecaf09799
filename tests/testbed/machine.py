"""A disposable systemd machine for integration tests.

`Machine.boot()` runs ``boot.sh`` (next to this file), which starts a real systemd 252 as
PID 1 of fresh pid/mount/uts/ipc/cgroup namespaces on an overlay of the host root (see
shared/TESTBED.md). The machine has a real system bus, journald, logind, useradd and
cgroups; everything it writes lands in a tmpfs and vanishes at `Machine.poweroff()`. It
shares the host's network namespace, so services inside bind host ports.

Typical use::

    with Machine.boot(binds=["/path/to/project"]) as m:
        m.run(["useradd", "-r", "alice"])
        print(m.run("getent passwd alice").stdout)

Standard library only: it runs under Debian's /usr/bin/python3 as root.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

__all__ = ["BootError", "Machine", "MachineCommandError", "MachinePopen"]

BOOT_SH = Path(__file__).resolve().with_name("boot.sh")
STATE_ROOT = Path("/run/agentd-testbed")
"""Where machines keep their state dirs on the host (not /tmp, which tests must not touch)."""

BASE_ENV: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}
"""Environment of commands run inside: the host's (pyenv, PIP_*, ...) must not leak in."""

Cmd = Sequence[str] | str

# Runs inside the machine as root (argv: unit, user, cmd...). It joins the unit's cgroups,
# then execs into the unit's namespaces with the unit's credentials; `exec` keeps the pid
# that was moved, so the final command is the process that sits in the unit's cgroups.
_IN_UNIT_SH = r"""
set -eu
unit=$1 user=$2
shift 2
main=$(systemctl show --property=MainPID --value -- "$unit")
if [ -z "$main" ] || [ "$main" = 0 ]; then
    echo "run_in_unit: $unit has no running main process" >&2
    exit 125
fi
# systemd 252 refuses this for units without Delegate=yes ("Process migration not
# available on non-delegated units."), and for delegated ones it moves us only in the
# hierarchies the unit has realized; the loop below does the rest.
busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
    org.freedesktop.systemd1.Manager AttachProcessesToUnit ssau "$unit" "" 1 $$ \
    >/dev/null 2>&1 || true
while IFS=: read -r id ctrls path; do
    if [ "$id" = 0 ]; then
        dir=/sys/fs/cgroup/unified
        [ -e "$dir/cgroup.procs" ] || dir=/sys/fs/cgroup
    else
        dir=/sys/fs/cgroup/${ctrls#name=}
    fi
    echo $$ >"$dir$path/cgroup.procs"
done <"/proc/$main/cgroup"
if [ -n "$user" ]; then
    uid=$(id -u -- "$user")
    gid=$(id -g -- "$user")
else
    uid=$(awk '/^Uid:/ {print $2}' "/proc/$main/status")
    gid=$(awk '/^Gid:/ {print $2}' "/proc/$main/status")
fi
# The supplementary groups the unit's process really carries (the D-Bus policy
# decides on them), read from outside so they are the host's GIDs.
list=$(awk '/^Groups:/ {$1 = ""; print}' "/proc/$main/status" | xargs | tr ' ' ,)
if [ -n "$list" ]; then groups=--groups=$list; else groups=--clear-groups; fi
pre=""
ns="-m -n -i -u"
if [ "$(readlink "/proc/$main/ns/user")" != "$(readlink /proc/1/ns/user)" ]; then
    # PrivateUsers=yes: setgroups is denied inside its user namespace, so set the
    # groups before entering it and keep them across (nsenter would drop them).
    ns="--preserve-credentials -U $ns"
    pre="setpriv $groups --"
    groups=--keep-groups
fi
pw=$(getent passwd "$uid" || true)
if [ -n "$pw" ]; then
    HOME=$(echo "$pw" | cut -d: -f6)
    USER=$(echo "$pw" | cut -d: -f1)
    LOGNAME=$USER
    export HOME USER LOGNAME
fi
exec $pre nsenter -t "$main" $ns --root --wd -- \
    setpriv --reuid "$uid" --regid "$gid" $groups \
    --no-new-privs --inh-caps=-all --bounding-set=-all -- "$@"
"""


class BootError(RuntimeError):
    """The machine did not come up; the message carries the tail of the boot log."""


class MachineCommandError(subprocess.CalledProcessError):
    """A command inside the machine failed; str() shows command, status and output."""

    def __str__(self) -> str:
        cmd = self.cmd if isinstance(self.cmd, str) else shlex.join(self.cmd)
        return (
            f"command in machine failed with exit status {self.returncode}: {cmd}\n"
            f"--- stdout ---\n{self.stdout or ''}--- stderr ---\n{self.stderr or ''}"
        )


def _argv(cmd: Cmd) -> list[str]:
    """A str runs through /bin/sh -c, a sequence as is."""
    if isinstance(cmd, str):
        return ["/bin/sh", "-c", cmd]
    return list(cmd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_ns_init(pid: int) -> bool:
    """True if host pid is PID 1 of a child pid namespace (never the host's init)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    nspid = next((ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")), [])
    return len(nspid) > 1 and nspid[-1] == "1"


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _remove_cgroup_tree(top: Path) -> list[Path]:
    """Kill what is left in a cgroup dir, rmdir it deepest first; return dirs left."""
    if not top.is_dir():
        return []
    dirs = sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts))
    for _attempt in range(50):
        for d in reversed(dirs):
            with contextlib.suppress(OSError):
                for line in (d / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError, ValueError):
                        os.kill(int(line), signal.SIGKILL)
            with contextlib.suppress(OSError):  # busy for a moment after its last task died
                d.rmdir()
        dirs = [d for d in dirs if d.is_dir()]
        if not dirs:
            return []
        time.sleep(0.1)  # a killed task leaves its cgroup a moment after dying
    return dirs


def _mounts_under(path: Path) -> list[str]:
    """Host mount points at or below path, deepest first."""
    prefix = str(path).rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


class MachinePopen(subprocess.Popen):  # type: ignore[type-arg]
    """Popen of an nsenter in its own session whose signals go to the processes inside.

    nsenter (forking into the pid namespace) forwards no signal, and if it dies first
    its child is reparented to the host's init, outside the machine, which here leaves
    a zombie that systemd-shutdown waits on for 10 s. So send_signal() (and with it
    terminate() and kill()) signals the rest of nsenter's process group, and nsenter
    exits by itself once its child is gone; nsenter itself is signalled only when
    nothing of its group is left.
    """

    def __init__(self, argv: list[str], **kwargs: Any) -> None:
        super().__init__(argv, start_new_session=True, **kwargs)

    def send_signal(self, sig: int) -> None:
        if self.poll() is not None:
            return
        inside = _group_members(self.pid)
        for pid in inside:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if not inside:
            super().send_signal(sig)


def _group_members(pgid: int) -> list[int]:
    """Host pids in process group pgid, except its leader."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == pgid:
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # state ppid pgrp ...
            found.append(int(entry.name))
    return found


class Machine:
    """A booted disposable systemd machine; make one with `Machine.boot()`."""

    def __init__(self, state: Path, boot_proc: subprocess.Popen[bytes]) -> None:
        """Use `Machine.boot()`; this only records what a boot started."""
        self.state = state
        """Host state dir: boot.log, boot.pid, machine.pid, cgroups."""
        self.pid: int = 0
        """Host pid of the machine's systemd (PID 1 inside); 0 until found."""
        self._boot_proc = boot_proc
        self._lock = threading.Lock()
        self._closed = False
        _LIVE.add(self)

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def boot(
        cls,
        binds: Sequence[str | os.PathLike[str]] = (),
        *,
        timeout: float = 60,
        hostname: str = "agentd-testbed",
        mask: Sequence[str] | None = None,
    ) -> Machine:
        """Boot a machine and wait until systemd says `running` or `degraded`.

        binds: host dirs to bind-mount at the same path inside (suffix ":ro" for
        read-only); the overlay holds only the root file system, so the project tree
        must be bound. mask: units to mask instead of boot.sh's default list.
        Raises BootError (after tearing down) if it does not come up within timeout.
        """
        if os.geteuid() != 0:
            raise PermissionError("booting a machine needs root")
        _install_safety_net()
        reap_stale()
        name = f"agentd-testbed-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        state = STATE_ROOT / name
        state.mkdir(mode=0o700, parents=True)
        (state / "owner.pid").write_text(f"{os.getpid()}\n")
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TERM")}
        env |= {"TESTBED_CGROUP": name, "TESTBED_HOSTNAME": hostname}
        env.setdefault("PATH", BASE_ENV["PATH"])
        if mask is not None:
            env["TESTBED_MASK"] = " ".join(mask)
        args = ["/bin/bash", str(BOOT_SH), str(state)]
        for b in binds:
            b = os.fspath(b)
            ro = b.endswith(":ro")
            src = os.path.realpath(b.removesuffix(":ro"))
            args.append(src + (":ro" if ro else ""))
        with open(state / "boot.log", "wb") as log:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        machine = cls(state, proc)
        try:
            machine._wait_booted(timeout)
        except BaseException:
            machine.poweroff()
            raise
        return machine

    def _wait_booted(self, timeout: float) -> None:
        """Find systemd's host pid, then poll `systemctl is-system-running`."""
        deadline = time.monotonic() + timeout
        while not self.pid:
            self._check_boot_alive()
            pid = _read_int(self.state / "machine.pid")
            if pid and self._is_machine_init(pid):
                self.pid = pid
                break
            if time.monotonic() > deadline:
                raise BootError(f"systemd did not start within {timeout}s\n{self.boot_log()}")
            time.sleep(0.05)
        state = ""
        while True:
            self._check_boot_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                failed = subprocess.CompletedProcess([], 0, "?\n", "")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    failed = self.run(
                        ["systemctl", "--failed", "--no-legend"], check=False, timeout=5
                    )
                raise BootError(
                    f"machine not up within {timeout}s (state {state!r})\n"
                    f"failed units:\n{failed.stdout}{self.boot_log()}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                r = self.run(
                    ["systemctl", "is-system-running", "--wait"],
                    check=False,
                    timeout=min(left, 5),
                )
                state = r.stdout.strip()
            if state == "running":
                return
            if state == "degraded":
                failed = self.run(["systemctl", "--failed", "--no-legend"], check=False)
                print(
                    f"testbed: machine is degraded; failed units:\n{failed.stdout}", file=sys.stderr
                )
                return
            time.sleep(0.1)

    def _is_machine_init(self, pid: int) -> bool:
        """True once pid is PID 1 of its namespace and has exec'ed systemd."""
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return False
        return exe.endswith("/systemd") and _is_ns_init(pid)

    def _check_boot_alive(self) -> None:
        if self._boot_proc.poll() is not None:
            raise BootError(
                f"boot.sh exited with status {self._boot_proc.returncode}\n{self.boot_log()}"
            )

    def boot_log(self, lines: int = 40) -> str:
        """The last lines of boot.sh's output (systemd's own log is in the journal)."""
        try:
            text = (self.state / "boot.log").read_text(errors="replace")
        except OSError:
            return ""
        return "--- boot.log ---\n" + "\n".join(text.splitlines()[-lines:]) + "\n"

    @property
    def running(self) -> bool:
        """Whether the machine's systemd is still alive."""
        return bool(self.pid) and not self._closed and self._boot_proc.poll() is None

    def poweroff(self, timeout: float = 30) -> None:
        """Power off and remove every trace on the host. Idempotent; safe after a failed boot.

        `systemctl poweroff` inside; if the machine is not gone within timeout, SIGKILL
        its PID 1 (which kills the whole pid namespace). Then remove the sub-cgroups
        boot.sh made (with whatever systemd left under them), any mount under the state
        dir, and the state dir.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        proc = self._boot_proc
        if proc.poll() is None:
            if self.pid:
                with contextlib.suppress(Exception):
                    self.run(["systemctl", "poweroff"], check=False, timeout=10)
            else:  # boot failed half-way: nothing inside to ask
                pid = _read_int(self.state / "machine.pid")
                if pid and _is_ns_init(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if self.pid and _is_ns_init(self.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        _teardown_state(self.state)
        _LIVE.discard(self)

    def __enter__(self) -> Machine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.poweroff()

    # ------------------------------------------------------------------- commands
    def _nsenter(self) -> list[str]:
        if not self.pid or self._boot_proc.poll() is not None:
            raise RuntimeError("machine is not running")
        # No -n: the machine shares the host's network namespace.
        return ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "-C"]

    def _command(
        self,
        cmd: Cmd,
        user: str | None,
        env: Mapping[str, str] | None,
        cwd: str | None,
    ) -> tuple[list[str], dict[str, str]]:
        """The host argv and environment that run cmd inside, as user if given."""
        argv = self._nsenter()
        if cwd:
            argv.append(f"--wdns={cwd}")
        argv.append("--")
        full_env = dict(BASE_ENV)
        if user is not None:
            pw = self.getpwnam(user)
            argv += ["setpriv", f"--reuid={pw[2]}", f"--regid={pw[3]}", "--init-groups", "--"]
            full_env |= {"HOME": pw[5], "USER": pw[0], "LOGNAME": pw[0]}
        if env:
            full_env |= env
        return argv + _argv(cmd), full_env

    def run(
        self,
        cmd: Cmd,
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run cmd inside (as root, or as user via setpriv) and capture its output as text.

        A str runs through /bin/sh -c. The environment is BASE_ENV plus env, never the
        host's. check=True raises MachineCommandError on a non-zero exit; on timeout the
        whole process group is killed and subprocess.TimeoutExpired raised.
        """
        argv, full_env = self._command(cmd, user, env, cwd)
        r = self._exec(argv, full_env, input, timeout)
        out = subprocess.CompletedProcess(
            cmd, r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        )
        if check and out.returncode != 0:
            raise MachineCommandError(out.returncode, cmd, out.stdout, out.stderr)
        return out

    def _exec(
        self,
        argv: list[str],
        env: Mapping[str, str],
        input: str | bytes | None,
        timeout: float,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a host argv in a new session, so a timeout can kill all it started inside."""
        data = input.encode() if isinstance(input, str) else input
        with MachinePopen(
            argv,
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
        ) as p:
            try:
                stdout, stderr = p.communicate(data, timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                raise
            return subprocess.CompletedProcess(argv, p.returncode, stdout, stderr)

    def popen(
        self,
        cmd: Cmd,
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = subprocess.PIPE,
        stderr: int | IO[Any] | None = subprocess.PIPE,
    ) -> MachinePopen:
        """Start a long-running command inside (e.g. `journalctl -f`); text pipes.

        Stop it with p.terminate() / p.kill() / p.send_signal(), which signal the
        processes inside, never os.killpg(p.pid, ...) (see MachinePopen).
        """
        argv, full_env = self._command(cmd, user, env, cwd)
        return MachinePopen(
            argv, stdin=stdin, stdout=stdout, stderr=stderr, env=full_env, text=True
        )

    def run_in_unit(
        self,
        unit: str,
        cmd: Cmd,
        *,
        user: str | None = None,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run cmd inside a running service unit's sandbox, as the unit's user.

        For security tests: "what can an agent do from inside its unit?". A root shell
        inside the machine moves itself into the unit's cgroups (AttachProcessesToUnit
        where systemd allows it, which in 252 is only for Delegate=yes units, else by
        writing its pid into the unit's cgroup.procs in every hierarchy, as the unit's
        main process sits), then execs
        ``nsenter -t MAINPID -m -n -i -u [-U] --root --wd -- setpriv --reuid --regid
        --no-new-privs --inh-caps=-all --bounding-set=-all -- cmd``.

        user: a user name; default is the uid/gid of the unit's main process. The
        supplementary groups are always those the main process carries.

        Shared with the unit: its cgroups (so MemoryMax, TasksMax, CPUQuota, v1 device
        policy apply, and stopping the unit kills cmd), its mount namespace (ProtectSystem,
        ProtectHome, PrivateTmp, PrivateDevices, BindPaths, Read*Paths, ProtectKernel*,
        ProtectProc...), network (PrivateNetwork), IPC and UTS namespaces, its user
        namespace if PrivateUsers=yes (the groups are set before entering it, since
        setgroups is denied inside), root and working dir, uid/gid and groups (so the
        D-Bus policy sees the probe as it sees the unit).

        NOT shared: the seccomp filter (a running process's filter cannot be copied onto
        another), hence none of SystemCallFilter, SystemCallArchitectures,
        RestrictAddressFamilies, RestrictNamespaces, MemoryDenyWriteExecute,
        LockPersonality, RestrictRealtime, RestrictSUIDSGID, ProtectClock or the syscall
        half of ProtectKernel*; nor rlimits, environment (cmd gets BASE_ENV, HOME/USER of
        the uid, plus env), umask, nice/scheduling, OOM score, keyring, securebits or
        LSM labels. Capabilities are all dropped and NoNewPrivs set regardless of the
        unit's settings, so a test of the seccomp layer must start its own unit
        (systemd-run) instead.
        """
        script = ["/bin/sh", "-c", _IN_UNIT_SH, "run_in_unit", unit, user or "", *_argv(cmd)]
        r = self.run(script, check=False, input=input, timeout=timeout, env=env)
        r.args = cmd
        if check and r.returncode != 0:
            raise MachineCommandError(r.returncode, cmd, r.stdout, r.stderr)
        return r

    # ------------------------------------------------------------------- helpers
    def getpwnam(self, name: str) -> list[str]:
        """The machine's passwd entry of name, split on ':' (users made inside are not
        on the host, so never ask the host's pwd module)."""
        r = self.run(["getent", "passwd", name], check=False)
        if r.returncode != 0:
            raise KeyError(f"no user {name!r} in the machine")
        return r.stdout.strip().split(":")

    def write_file(
        self, path: str, text: str | bytes, mode: int = 0o644, owner: str | None = None
    ) -> None:
        """Write a file inside the machine (through a process inside, so that no
        symlink in the machine can resolve to a host path)."""
        script = 'cat >"$1" && chmod "$2" "$1" && { [ -z "$3" ] || chown "$3" "$1"; }'
        argv, env = self._command(
            ["/bin/sh", "-c", script, "sh", path, f"{mode:o}", owner or ""], None, None, None
        )
        r = self._exec(argv, env, text, 60)
        if r.returncode != 0:
            raise MachineCommandError(r.returncode, argv, "", r.stderr.decode(errors="replace"))

    def copy_in(self, src: str | os.PathLike[str], dst: str) -> None:
        """Copy a host file or directory tree to dst inside the machine (dst is the new
        name, as with `cp -r src dst`); modes and owners are kept."""
        dst = dst.rstrip("/") or "/"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(os.fspath(src), arcname=os.path.basename(dst))
        script = 'mkdir -p "$1" && tar -x -C "$1" -f -'
        parent = os.path.dirname(dst) or "/"
        argv, env = self._command(["/bin/sh", "-c", script, "sh", parent], None, None, None)
        r = self._exec(argv, env, buf.getvalue(), 300)
        if r.returncode != 0:
            raise MachineCommandError(r.returncode, argv, "", r.stderr.decode(errors="replace"))

    def journal(
        self, unit: str | None = None, since: str | None = None, *, args: Sequence[str] = ()
    ) -> str:
        """This boot's journal as text, of one unit if given; since takes journalctl's
        formats ("-10s", "2024-01-01 10:00:00", ...)."""
        cmd = ["journalctl", "--no-pager", "-b", "-o", "short-precise", *args]
        if unit:
            cmd += ["-u", unit]
        if since:
            cmd += ["--since", since]
        return self.run(cmd, check=False).stdout

    def __repr__(self) -> str:
        return f"<Machine pid={self.pid} state={self.state} running={self.running}>"


# --------------------------------------------------------------------- teardown
def _teardown_state(state: Path) -> None:
    """Remove what a (dead) machine left on the host: cgroup dirs, mounts, state dir."""
    for line in _read_lines(state / "cgroups"):
        left = _remove_cgroup_tree(Path(line))
        if left:
            print(f"testbed: could not remove cgroup dirs {left}", file=sys.stderr)
    for point in _mounts_under(state):  # only inside the machine's namespace normally
        subprocess.run(["umount", "-l", point], check=False)
    if not _mounts_under(state):
        shutil.rmtree(state, ignore_errors=True)
    with contextlib.suppress(OSError):
        STATE_ROOT.rmdir()  # only if no other machine is up


def _read_lines(path: Path) -> list[str]:
    try:
        return [ln for ln in path.read_text().splitlines() if ln.strip()]
    except OSError:
        return []


def reap_stale() -> None:
    """Tear down machines whose owning process died without powering them off (e.g. a
    SIGKILLed pytest); machines of live processes, or of other users of this host, are
    left alone."""
    if not STATE_ROOT.is_dir():
        return
    for state in STATE_ROOT.iterdir():
        owner = _read_int(state / "owner.pid")
        if owner is None or _pid_alive(owner):
            continue
        pid = _read_int(state / "machine.pid")
        if pid and _is_ns_init(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        boot = _read_int(state / "boot.pid")
        for _ in range(100):
            if not ((pid and _pid_alive(pid)) or (boot and _pid_alive(boot))):
                break
            time.sleep(0.05)
        _teardown_state(state)


# ------------------------------------------------------------------- safety net
_LIVE: set[Machine] = set()
"""Machines booted and not yet powered off (strong refs: a forgotten one still goes)."""
_NET_INSTALLED = False


def _poweroff_all() -> None:
    for m in list(_LIVE):
        with contextlib.suppress(Exception):
            m.poweroff(timeout=10)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Power machines off, then die of the signal as we would have without the net."""
    _poweroff_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_safety_net() -> None:
    """atexit + SIGTERM/SIGHUP handlers, so an interrupted run still powers off.

    SIGINT is left to Python (KeyboardInterrupt unwinds through fixtures and atexit).
    """
    global _NET_INSTALLED
    if _NET_INSTALLED:
        return
    _NET_INSTALLED = True
    atexit.register(_poweroff_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)
