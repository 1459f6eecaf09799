"""What the service tells systemd: sd_notify messages and journal log lines.

Invariants:

- Without ``$NOTIFY_SOCKET`` (not under systemd, or not Type=notify)
  :func:`sd_notify` does nothing and says so; it never raises: systemd's
  absence must not stop the service.
- Under journald (``$JOURNAL_STREAM``) each log line carries its syslog
  priority as a ``<N>`` prefix, so ``journalctl -p`` filters the service's
  warnings; elsewhere lines are plain ``agentd-inference: LEVEL message``.

Both protocols are a few lines of the standard library: no libsystemd binding.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

log = logging.getLogger("agentd.inference")

_PRIORITIES = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def sd_notify(state: str) -> bool:
    """Send ``state`` to systemd's notification socket, if there is one (the
    sd_notify protocol: one datagram to $NOTIFY_SOCKET; '@' is abstract)."""
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


class _JournalFormatter(logging.Formatter):
    """``<priority>message`` lines: journald reads the priority prefix."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITIES.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


def setup_logging(debug: bool) -> None:
    """Log to stderr (the journal, under systemd); ``debug``: one line per request."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("agentd-inference: %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    # llama.cpp logs hundreds of lines at info and debug per model load
    logging.getLogger("agentd.inference.llama").setLevel(logging.WARNING)
