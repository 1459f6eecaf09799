"""agentd.nobind: a tool under the filter cannot bind, listen or set up io_uring,
in any family, nor can anything it forks or execs; it can still connect and
send. The filter is only ever installed in child processes (never in pytest).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentd import nobind, sandbox
from agentd.executor import ShellTool
from agentd.templates import Limits, Profile

pytestmark = pytest.mark.skipif(
    os.uname().machine not in nobind.DENIED, reason="no filter for this architecture"
)

# argv: TCP_PORT UDP_PORT HOME. Prints {probe: "ok:..." | "err:ERRNO"}.
PROBE = r"""
import ctypes, errno, json, os, socket, sys
tcp_port, udp_port, home = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def outcome(fn):
    try:
        return "ok:" + str(fn())
    except OSError as e:
        return "err:" + errno.errorcode.get(e.errno, str(e.errno))
def bind(family, kind, addr):
    def go():
        with socket.socket(family, kind) as s:
            s.bind(addr); return "bound"
    return go
def listen():
    with socket.socket() as s:
        s.listen(); return "listening"
def io_uring():
    libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(ctypes.c_long(425), ctypes.c_long(1), ctypes.create_string_buffer(120))
    if fd < 0: raise OSError(ctypes.get_errno(), "io_uring_setup")
    os.close(fd); return "ring"
def connect():
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as s:
        return s.recv(16).decode()
def sendto():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"hi", ("127.0.0.1", udp_port)); return "sent"
def seccomp():
    with open("/proc/self/status") as f:
        return [l.split()[1] for l in f if l.startswith("Seccomp:")][0]
A, A6, U = socket.AF_INET, socket.AF_INET6, socket.AF_UNIX
D, S = socket.SOCK_DGRAM, socket.SOCK_STREAM
probes = dict(
    udp4=bind(A, D, ("127.0.0.1", 0)), tcp4=bind(A, S, ("0.0.0.0", 0)),
    udp6=bind(A6, D, ("::1", 0)), tcp6=bind(A6, S, ("::", 0)),
    unix_path=bind(U, S, os.path.join(home, "s.sock")), unix_abstract=bind(U, D, "\0nobind"),
    listen=listen, io_uring=io_uring, connect=connect, sendto=sendto, seccomp=seccomp,
)
print(json.dumps({name: outcome(fn) for name, fn in probes.items()}))
"""

DENIED = ("udp4", "tcp4", "udp6", "tcp6", "unix_path", "unix_abstract", "listen", "io_uring")


Peers = tuple[socket.socket, socket.socket]


@pytest.fixture
def peers() -> Iterator[Peers]:
    """A TCP listener answering "hello" once, and a UDP socket: what the child reaches."""
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    yield tcp, udp
    tcp.close()
    udp.close()


def probe(argv_prefix: list[str], peers: Peers, home: Path) -> dict[str, str]:
    """Run PROBE after ARGV_PREFIX, serving its one connection meanwhile."""
    tcp, udp = peers
    args = [str(tcp.getsockname()[1]), str(udp.getsockname()[1]), str(home)]
    (home / "probe.py").write_text(PROBE)
    proc = subprocess.Popen(
        [*argv_prefix, sys.executable, str(home / "probe.py"), *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    tcp.settimeout(10)
    try:
        conn, _ = tcp.accept()
        with conn:
            conn.sendall(b"hello")
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    got: dict[str, str] = json.loads(out)
    udp.settimeout(5)
    got["received"] = udp.recv(16).decode()
    return got


def test_without_the_filter_all_of_it_works(peers: Peers, tmp_path: Path) -> None:
    """The control: the same probe, unfiltered, binds, listens and sets up a ring."""
    got = probe([], peers, tmp_path)
    assert all(got[k].startswith("ok:") for k in DENIED if k != "io_uring"), got
    assert got["connect"] == "ok:hello" and got["received"] == "hi", got


def test_a_tool_under_the_filter_cannot_bind_but_can_connect(peers: Peers, tmp_path: Path) -> None:
    got = probe(nobind.wrap([]), peers, tmp_path)
    assert {k: got[k] for k in DENIED} == dict.fromkeys(DENIED, "err:EPERM"), got
    assert got["connect"] == "ok:hello", got  # connect() autobinds: no bind() needed
    assert got["sendto"] == "ok:sent" and got["received"] == "hi", got
    assert got["seccomp"] == "ok:2", got


def test_the_filter_is_inherited_across_exec_and_fork(peers: Peers, tmp_path: Path) -> None:
    """wrapper -> exec sh -> fork+exec python: the probe is a grandchild's exec."""
    got = probe([*nobind.wrap(["/bin/sh", "-c", '"$@"; exit $?', "sh"])], peers, tmp_path)
    assert {k: got[k] for k in DENIED} == dict.fromkeys(DENIED, "err:EPERM"), got
    assert got["connect"] == "ok:hello" and got["received"] == "hi", got
    forked = subprocess.run(
        nobind.wrap(
            [
                sys.executable,
                "-c",
                "import os, socket, sys\n"
                "pid = os.fork()\n"
                "if pid == 0:\n"
                "    try:\n"
                "        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(('127.0.0.1', 0))\n"
                "        os._exit(0)\n"
                "    except PermissionError:\n"
                "        os._exit(13)\n"
                "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n",
            ]
        ),
        timeout=20,
    )
    assert forked.returncode == 13  # the forked child (no exec) got EPERM


def test_the_filter_checks_the_architecture() -> None:
    """Any other audit arch, and x32 calls, are killed; -1 passes (an ENOSYS probe)."""
    x86 = nobind.program("x86_64")
    assert x86[0] == (0x20, 0, 0, 4) and x86[1][3] == nobind.AUDIT_ARCH_X86_64
    assert x86[2] == (0x06, 0, 0, nobind.SECCOMP_RET_KILL_PROCESS)
    assert (0x35, 0, 2, nobind.X32_SYSCALL_BIT) in x86
    arm = nobind.program("aarch64")
    assert arm[1][3] == nobind.AUDIT_ARCH_AARCH64 and {200, 201} <= {i[3] for i in arm}
    with pytest.raises(KeyError):
        nobind.program("sparc64")
    for insns in (x86, arm):  # every jump lands inside the program
        for at, (code, jt, jf, _k) in enumerate(insns):
            if code & 0x07 == 0x05:
                assert at + 1 + max(jt, jf) < len(insns)
        assert insns[-2:] == [
            (0x06, 0, 0, nobind.SECCOMP_RET_ALLOW),
            (0x06, 0, 0, nobind.SECCOMP_RET_ERRNO | nobind.EPERM),
        ]
    assert len(b"".join(struct.pack("=HBBI", *i) for i in x86)) == 8 * len(x86)


def test_a_x32_call_kills_the_tool() -> None:
    code = (
        "import ctypes; libc = ctypes.CDLL(None)\n"
        "libc.syscall(ctypes.c_long(0x40000000 | 39))\n"  # x32 getpid
        "print('survived')"
    )
    r = subprocess.run(
        nobind.wrap([sys.executable, "-c", code]), capture_output=True, text=True, timeout=20
    )
    assert r.returncode == -31 and "survived" not in r.stdout  # SIGSYS


def test_the_wrapper_refuses_rather_than_run_unfiltered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_table() -> None:
        raise KeyError("sparc64")

    def never(*_args: object) -> None:
        raise AssertionError("exec'd unfiltered")

    monkeypatch.setattr(nobind, "install", no_table)
    monkeypatch.setattr(nobind.os, "execvp", never)
    with pytest.raises(SystemExit) as e:
        nobind.main(["/bin/true"])
    assert e.value.code == nobind.EXIT_REFUSED and "sparc64" in capsys.readouterr().err


def test_a_missing_command_is_127() -> None:
    r = subprocess.run(nobind.wrap(["/nonexistent/tool"]), capture_output=True, timeout=20)
    assert r.returncode == 127


@pytest.mark.skipif(os.geteuid() != 0, reason="drops to nobody to be a same-UID attacker")
@pytest.mark.parametrize("shielded", [False, True])
def test_a_tool_cannot_write_its_shielded_runtime(shielded: bool) -> None:
    """As one UID without capabilities: a child opens its parent's /proc/PID/mem
    for writing; shield_runtime() in the parent makes that EACCES."""
    code = (
        "import os, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from agentd import nobind\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        # setuid made it non-dumpable (suid_dumpable): back to a plain process
        "import ctypes; ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)\n"
        "if sys.argv[2] == '1': nobind.shield_runtime()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    try:\n"
        "        open(f'/proc/{os.getppid()}/mem', 'r+b', buffering=0).close(); os._exit(0)\n"
        "    except PermissionError:\n"
        "        os._exit(13)\n"
        "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    root = str(Path(nobind.__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, "-c", code, root, str(int(shielded))], timeout=20)
    assert r.returncode == (13 if shielded else 0)


def test_the_shell_tool_runs_commands_under_the_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shields: list[bool] = []
    monkeypatch.setattr(nobind, "shield_runtime", lambda: shields.append(True))
    command = (
        f'{sys.executable} -c "import socket; s = socket.socket(); '
        "print(s.connect_ex(('127.0.0.1', 1)) != 0); s.bind(('127.0.0.1', 0))\""
    )
    env = {"PATH": "/usr/bin:/bin"}
    r = asyncio.run(ShellTool(tmp_path).run(1, command, env))
    assert r["exit_code"] == 1 and "PermissionError" in r["stderr"], r
    assert r["stdout"] == "True\n" and shields == [True]


def test_the_online_unit_refuses_io_uring_itself() -> None:
    """Past the tool filter too: nothing in an online unit needs io_uring, and
    systemd 252's @system-service would allow it."""
    ident = sandbox.AgentIdentity("a", 60001, 60001, Path("/home/agents/a"))
    props = sandbox.unit_properties(
        ident,
        Limits(),
        Profile("online", network="full"),
        runtime_command=Path("/usr/libexec/agentd/agentd-runtime"),
        slice_="agents.slice",
        heartbeat_interval=10,
    )
    filters = [value for name, value in props if name == "SystemCallFilter"]
    assert ("(bas)", (False, sandbox.IO_URING_SYSCALLS)) in filters
    assert set(sandbox.IO_URING_SYSCALLS) == {
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
    }
