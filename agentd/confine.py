"""The online unit's first step: Landlock-scope away the host's abstract Unix
sockets, then exec the agent's runtime.

Run as a file, ``python3 -I -S confine.py MODE COMMAND...`` (agentd.sandbox
builds that ExecStart): stdlib only, imports nothing of agentd, so the step
costs one bare Python start (10 ms), not agentd's templates and config (65 ms,
bench/runtime_start.py). MODE "required" (the profile's require_landlock)
exits EX_CONFIG where Landlock cannot scope; "best-effort" says so on stderr
and goes on. agentd.sandbox re-exports these for its tests and docs.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

LANDLOCK_ABI_SCOPE = 6  # Linux 6.12: LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
# The landlock syscalls came after the syscall tables were unified: one number
# on every architecture.
_SYS_CREATE_RULESET, _SYS_RESTRICT_SELF = 444, 446
_CREATE_RULESET_VERSION = 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1
EX_CONFIG = 78  # sysexits.h, as agentd.sd has it (RestartPreventExitStatus)


def scope_abstract_unix_sockets() -> str | None:
    """Landlock-scope this process and everything it execs away from abstract
    Unix sockets made outside it. None when done, else why it could not be."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # syscall(2) reads every argument as a long: pass them so, never as C ints.
    long, size = ctypes.c_long, ctypes.c_size_t
    abi = libc.syscall(long(_SYS_CREATE_RULESET), None, size(0), long(_CREATE_RULESET_VERSION))
    if abi < 0:
        return f"Landlock unavailable ({os.strerror(ctypes.get_errno())})"
    if abi < LANDLOCK_ABI_SCOPE:
        return f"kernel Landlock ABI {abi} < {LANDLOCK_ABI_SCOPE} (Linux 6.12)"
    # struct landlock_ruleset_attr {u64 handled_access_fs, handled_access_net, scoped}
    attr = (ctypes.c_uint64 * 3)(0, 0, _SCOPE_ABSTRACT_UNIX_SOCKET)
    fd = libc.syscall(
        long(_SYS_CREATE_RULESET), ctypes.byref(attr), size(ctypes.sizeof(attr)), long(0)
    )
    if fd < 0:
        return f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}"
    try:
        if libc.syscall(long(_SYS_RESTRICT_SELF), long(fd), long(0)) < 0:
            return f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}"
    finally:
        os.close(fd)
    return None


def confine_exec(argv: list[str]) -> NoReturn:
    """``MODE COMMAND...``: scope away the host's abstract sockets, then exec
    COMMAND; MODE is "required" or "best-effort"."""
    mode, command = argv[0], argv[1:]
    why = scope_abstract_unix_sockets()
    if why is not None:
        print(f"agentd: host abstract Unix sockets NOT isolated: {why}", file=sys.stderr)
        if mode == "required":
            print("agentd: the profile sets require_landlock: not starting", file=sys.stderr)
            sys.exit(EX_CONFIG)
    os.execv(command[0], command)


if __name__ == "__main__":
    confine_exec(sys.argv[1:])
