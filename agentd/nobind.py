"""No listening sockets for an agent's tools: a seccomp filter on every tool process.

Invariant: every process an agent's runtime starts for it (the shell tool, so
every ``--exec`` command and every shell step of a model-driven task) runs
under a seccomp filter that makes bind(2) and listen(2) fail with EPERM and
refuses io_uring (EPERM), on the native architecture only; the filter is
inherited by everything those processes fork and exec, and cannot be removed.
So code an agent controls holds no socket bound to an address of its choosing
and no listening socket. Clients keep working: connect() and sendto() bind an
ephemeral port themselves (autobind), which no bind() call sees.

Why here and not in the unit: the unit's runtime is agentd's own code and
needs bind(): the vendored sd-bus binds its AF_UNIX client socket to an
abstract name and fails without it (measured, see agentd/sandbox.py), and
seccomp cannot tell an AF_UNIX bind from an AF_INET one (the address is
behind a pointer). SocketBindDeny= would, but Debian 12's systemd 252 does
not enforce it (built without BPF_FRAMEWORK; measured in agentd/sandbox.py).
Tools need no bus of their own: systemd 252's busctl does not bind (the
integration test's bus probe runs under this filter).

What else could bind or listen, and how it is closed:

- io_uring's IORING_OP_BIND and IORING_OP_LISTEN (Linux 6.11) run in the
  kernel, past any seccomp filter: io_uring_setup, _enter and _register are
  refused here (and by the online unit itself). systemd 252's @system-service
  allows them (measured with ``systemd-analyze syscall-filter``).
- socketcall(2): none on x86_64 or aarch64. Any other architecture, x32 system
  calls (nr | 0x40000000) included, kills the process, as systemd's
  SystemCallArchitectures=native does; this module refuses to start a tool on
  an architecture it has no table for (exit 126) rather than run it unfiltered.
- The runtime itself, which can bind: a tool has its UID, so without Yama
  (the test machine's kernel has none) it could write the runtime's memory
  through /proc/PID/mem or process_vm_writev (allowed by @system-service) and
  make it bind. shield_runtime() makes the runtime non-dumpable, after which
  only CAP_SYS_PTRACE (which no agent process has) may do either; a tool's exec
  makes the tool dumpable again, which does not matter.

No preexec_fn: the runtime is multi-threaded (asyncio's child watcher, sd-bus),
where Python's preexec_fn is unsafe. The runtime starts
``python3 -I -S nobind.py COMMAND...`` instead, which installs the filter and
execs COMMAND (same PID). It costs one Python start per tool run, ~10 ms
(measured once on the build machine: `true` 100 times took 0.11 s bare and
1.15 s wrapped; 2.1 s before pathlib and typing were kept out of the import).

Stdlib only, and runnable as a file: the wrapper imports nothing of agentd.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys

TYPE_CHECKING = False  # not typing's: the wrapper's start-up is paid per tool run
if TYPE_CHECKING:
    from typing import NoReturn

# <linux/audit.h>, <linux/seccomp.h>, <linux/filter.h>, <linux/prctl.h>
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_SYSCALL_BIT = 0x40000000
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_MODE_FILTER = 2
PR_SET_DUMPABLE, PR_GET_DUMPABLE = 4, 3
PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS = 22, 38
EPERM = 1
EXIT_REFUSED = 126  # the shell's "found but cannot be executed"
# struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}: offsets of nr and arch
_NR, _ARCH = 0, 4
# classic BPF: LD|W|ABS, JMP|JEQ|K, JMP|JGE|K, RET|K
_LD, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06

# io_uring_setup, io_uring_enter and io_uring_register are 425-427 on every
# architecture (added after the tables were unified).
_IO_URING = (425, 426, 427)
DENIED: dict[str, tuple[int, tuple[int, ...]]] = {
    # os.uname().machine: (audit arch, bind, listen, io_uring_*)
    "x86_64": (AUDIT_ARCH_X86_64, (49, 50, *_IO_URING)),
    "aarch64": (AUDIT_ARCH_AARCH64, (200, 201, *_IO_URING)),
}

Insn = tuple[int, int, int, int]  # code, jt, jf, k


def program(machine: str) -> list[Insn]:
    """The filter for MACHINE (os.uname().machine); KeyError if there is none."""
    arch, denied = DENIED[machine]
    n = len(denied)
    # ALLOW and ERRNO close the program; a jump offset counts from the next insn.
    body: list[Insn] = [
        (_LD, 0, 0, _ARCH),
        (_JEQ, 1, 0, arch),
        (_RET, 0, 0, SECCOMP_RET_KILL_PROCESS),
        (_LD, 0, 0, _NR),
    ]
    if arch == AUDIT_ARCH_X86_64:  # x32 ABI; -1 (a probe for ENOSYS) passes, as in libseccomp
        body += [(_JGE, 0, 2, X32_SYSCALL_BIT), (_JEQ, 1, 0, 0xFFFFFFFF)]
        body += [(_RET, 0, 0, SECCOMP_RET_KILL_PROCESS)]
    for i, nr in enumerate(denied):
        body.append((_JEQ, n - i, 0, nr))  # to the ERRNO return after ALLOW
    return [*body, (_RET, 0, 0, SECCOMP_RET_ALLOW), (_RET, 0, 0, SECCOMP_RET_ERRNO | EPERM)]


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _prctl(libc: ctypes.CDLL, option: int, *args: int) -> None:
    ulong = ctypes.c_ulong
    values = [ulong(a) for a in (*args, 0, 0, 0, 0)[:4]]
    if libc.prctl(ctypes.c_int(option), *values) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def install(machine: str | None = None) -> None:
    """Put the filter on this process (and so on all it forks and execs).
    KeyError on an architecture without a table; OSError if the kernel refuses."""
    insns = program(machine or os.uname().machine)
    code = b"".join(struct.pack("=HBBI", *insn) for insn in insns)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = _Fprog(len(insns), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)  # the unit sets it too; seccomp requires it
    # prctl, not seccomp(2): systemd 252's @system-service allows only the former.
    _prctl(libc, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


def shield_runtime() -> None:
    """Make this process (the runtime) non-dumpable: its tools, same UID, may then
    not ptrace it, open its /proc/PID/mem or process_vm_writev into it. Idempotent."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(ctypes.c_int(PR_GET_DUMPABLE), *[ctypes.c_ulong(0)] * 4) != 0:
        _prctl(libc, PR_SET_DUMPABLE, 0)


SCRIPT = os.path.realpath(__file__)


def wrap(argv: list[str], python: str | None = None) -> list[str]:
    """ARGV run under the filter: -I keeps the tool's PYTHON* variables out, -S
    skips site (a third of the start-up); the script imports nothing of ours."""
    return [python or sys.executable or "/usr/bin/python3", "-I", "-S", SCRIPT, *argv]


def main(argv: list[str]) -> NoReturn:
    if not argv:
        print("usage: nobind.py COMMAND [ARG...]", file=sys.stderr)
        sys.exit(2)
    try:
        install()
    except (KeyError, OSError) as e:
        why = f"no filter for {e}" if isinstance(e, KeyError) else str(e)
        print(f"agentd: tool not started, bind() could not be denied: {why}", file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        print(f"agentd: {argv[0]}: {e.strerror}", file=sys.stderr)
        sys.exit(127 if isinstance(e, FileNotFoundError) else EXIT_REFUSED)


if __name__ == "__main__":
    main(sys.argv[1:])
