"""What the service tells systemd: journal log lines (sd_notify is agentd.sd's,
shared with agentd; re-exported here as sd_notify).

Invariants:

- Under journald (``$JOURNAL_STREAM``) each log line carries its syslog
  priority as a ``<N>`` prefix, so ``journalctl -p`` filters the service's
  warnings; elsewhere lines are plain ``agentd-inference: LEVEL message``.

The protocol is a few lines of the standard library: no libsystemd binding.
"""

from __future__ import annotations

import logging
import os
import sys

from agentd.sd import notify as sd_notify

__all__ = ["sd_notify", "setup_logging"]

log = logging.getLogger("agentd.inference")

_PRIORITIES = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


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
