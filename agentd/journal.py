"""An agent's journal, read by agentd for the people who manage the agent.

Why agentd reads it: an agent's unit logs as the agent's UID (journald keeps
those lines in user-UID journal files) and PID 1 logs about the unit; a person
can read neither with journalctl unless a member of systemd-journal or adm,
which opens the whole system's journal. So the owner (or an administrator:
policy action agent.journal) asks agentd, which reads the same lines
`agentctl agent logs` shows, and no others:

- the unit's own output (_SYSTEMD_UNIT=agent-NAME.service, a trusted field);
- PID 1's messages about the unit (_PID=1, UNIT=agent-NAME.service);
- lines root wrote about the agent (_UID=0, AGENT_NAME=NAME): agentd's audit
  and the agent's slirp4netns unit. An agent cannot forge these: its own
  lines carry its UID, not 0.

Bounded: at most MAX_LINES entries, each message clipped to MESSAGE_CHARS, a
wait of at most MAX_WAIT_MS; the wait is on the journal's inotify descriptor
in agentd's event loop (no thread, no polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from datetime import datetime
from typing import Any

from systemd import journal

from .errors import InvalidArgument
from .policy import Caller
from .registry import LISTED, Registry

JOURNAL = "agent.journal"  # the policy action (agentd.rules)
MAX_LINES = 500
MESSAGE_CHARS = 4096
MAX_WAIT_MS = 20_000  # a long poll: under sd-bus's 25 s default call timeout
CURSOR_CHARS = 1024


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def entry(fields: dict[str, Any]) -> dict[str, Any]:
    """One journal entry as the API gives it."""
    at = fields.get("__REALTIME_TIMESTAMP")
    return {
        "at": at.timestamp() if isinstance(at, datetime) else None,
        "priority": int(fields.get("PRIORITY", 6)),
        "identifier": _text(fields.get("SYSLOG_IDENTIFIER") or fields.get("_COMM")),
        "pid": int(fields.get("_PID", 0)),
        "message": _text(fields.get("MESSAGE"))[:MESSAGE_CHARS],
    }


class AgentJournal:
    """Reads agent journals for callers the policy lets manage the agent."""

    def __init__(self, registry: Registry, path: str | None = None) -> None:
        self.registry = registry
        self.path = path  # a directory of journal files (tests); None: this machine's

    def _open(self, name: str) -> journal.Reader:
        reader = journal.Reader(path=self.path) if self.path else journal.Reader()
        unit = f"agent-{name}.service"
        reader.add_match(_SYSTEMD_UNIT=unit)
        reader.add_disjunction()
        reader.add_match(_PID="1", UNIT=unit)
        reader.add_disjunction()
        reader.add_match(_UID="0", AGENT_NAME=name)
        reader.fileno()  # inotify from now on: what is written after our read wakes _changed
        return reader

    async def read(
        self, caller: Caller, name: str, cursor: str, lines: int, wait_ms: int
    ) -> tuple[list[dict[str, Any]], str]:
        """Entries after CURSOR (at most LINES), or the last LINES without one;
        with none yet, wait up to WAIT_MS for more. Returns them and the
        cursor to ask from next."""
        self.registry.get(caller, name, JOURNAL, LISTED)  # typed refusals, audited
        if len(cursor) > CURSOR_CHARS:
            raise InvalidArgument(f"cursor is longer than {CURSOR_CHARS} characters")
        lines = max(1, min(int(lines), MAX_LINES))
        reader = self._open(name)
        try:
            got, last = self._read(reader, cursor, lines)
            if not got and wait_ms > 0:
                await self._changed(reader, min(int(wait_ms), MAX_WAIT_MS) / 1000)
                got, last = self._read(reader, cursor, lines)
            return [entry(e) for e in got], last
        finally:
            reader.close()

    @staticmethod
    def _read(reader: journal.Reader, cursor: str, lines: int) -> tuple[list[dict[str, Any]], str]:
        if not cursor:
            reader.seek_tail()
            newest = list(itertools.islice(iter(reader.get_previous, {}), lines))
            newest.reverse()
            return newest, newest[-1]["__CURSOR"] if newest else ""
        try:
            reader.seek_cursor(cursor)
        except OSError:  # not a cursor of this journal
            raise InvalidArgument("cursor is not one this journal gave") from None
        got: list[dict[str, Any]] = []
        first = reader.get_next()
        if first and not reader.test_cursor(cursor):
            got.append(first)  # the cursor's entry is gone: what follows it is new
        while len(got) < lines:
            fields = reader.get_next()
            if not fields:
                break
            got.append(fields)
        return got, got[-1]["__CURSOR"] if got else cursor

    @staticmethod
    async def _changed(reader: journal.Reader, timeout: float) -> None:
        """Until the journal's files change (inotify), or TIMEOUT."""
        loop = asyncio.get_running_loop()
        fd = reader.fileno()
        changed: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not changed.done():
                changed.set_result(None)

        loop.add_reader(fd, wake)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed, timeout)
        finally:
            loop.remove_reader(fd)
        reader.process()
