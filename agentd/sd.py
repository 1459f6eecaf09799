"""What a service tells systemd: readiness over sd_notify, and EX_CONFIG.

Shared by agentd and agentd-inference (which imports nothing of the engine, so
this module imports nothing of agentd). The sd_notify protocol is one datagram
to $NOTIFY_SOCKET ('@' is the abstract namespace): a few lines of the
standard library, no libsystemd binding. Without $NOTIFY_SOCKET (not under
systemd, or not Type=notify) notify() does nothing; it never raises, since
systemd's absence must not stop a service.
"""

from __future__ import annotations

import logging
import os
import socket

# sysexits.h: a configuration error. The units' RestartPreventExitStatus, so
# systemd does not restart a service on a bad config for ever.
EX_CONFIG = 78

log = logging.getLogger("agentd")


def notify(state: str) -> bool:
    """Send STATE (e.g. "READY=1") to systemd; whether it was sent."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
        return True
    except OSError as e:
        log.debug("sd_notify %r: %s", state, e)
        return False
