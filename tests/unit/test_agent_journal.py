"""agentd.journal against a stand-in journal reader: which lines (the matches
`agentctl agent logs` uses), the last N, after a cursor, clipped, a wait woken
by the journal's descriptor, refusals. The real journal is read in
tests/integration/test_cockpit.py (an agent's details, followed live)."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from agentd import journal as journal_mod
from agentd.errors import InvalidArgument, NoSuchAgent, PermissionDenied
from agentd.journal import MESSAGE_CHARS, AgentJournal


class FakeReader:
    """What sd-journal gives AgentJournal: entries in order, cursors, an fd."""

    entries: ClassVar[list[dict[str, Any]]] = []
    matches: ClassVar[list[Any]] = []
    pipe: ClassVar[tuple[int, int]] = (-1, -1)

    def __init__(self, path: str | None = None) -> None:
        self.pos = len(self.entries)  # after seek_tail
        FakeReader.matches = []

    def add_match(self, **fields: str) -> None:
        FakeReader.matches.append(fields)

    def add_disjunction(self) -> None:
        FakeReader.matches.append("+")

    def fileno(self) -> int:
        return FakeReader.pipe[0]

    def seek_tail(self) -> None:
        self.pos = len(self.entries)

    def get_previous(self) -> dict[str, Any]:
        if self.pos == 0:
            return {}
        self.pos -= 1
        return self.entries[self.pos]

    def seek_cursor(self, cursor: str) -> None:
        if not cursor.startswith("c"):
            raise OSError(22, "Invalid argument")
        self.pos = int(cursor[1:])  # get_next then gives the cursor's entry

    def get_next(self) -> dict[str, Any]:
        if self.pos >= len(self.entries):
            return {}
        self.pos += 1
        return self.entries[self.pos - 1]

    def test_cursor(self, cursor: str) -> bool:
        return self.entries[self.pos - 1]["__CURSOR"] == cursor

    def process(self) -> int:
        os.read(FakeReader.pipe[0], 64)
        return 1

    def close(self) -> None:
        pass


def line(i: int, message: str = "") -> dict[str, Any]:
    return {
        "__CURSOR": f"c{i}",
        "__REALTIME_TIMESTAMP": datetime(2026, 12, 1, 12, 0, i, tzinfo=UTC),
        "MESSAGE": message or f"line {i}",
        "PRIORITY": 6,
        "SYSLOG_IDENTIFIER": "agent-web",
        "_PID": 4242,
    }


class Registry:
    """The one call AgentJournal makes: get(caller, name, action, states)."""

    def __init__(self) -> None:
        self.asked: list[tuple[Any, ...]] = []

    def get(self, caller: Any, name: str, action: str, states: Any) -> None:
        self.asked.append((caller, name, action))
        if name == "other":
            raise PermissionDenied("alice may not manage other")
        if name == "gone":
            raise NoSuchAgent("no agent gone")


@pytest.fixture
def journal(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(journal_mod.journal, "Reader", FakeReader)
    FakeReader.entries = [line(i) for i in range(10)]
    FakeReader.pipe = os.pipe()
    yield AgentJournal(Registry())  # type: ignore[arg-type]
    for fd in FakeReader.pipe:
        os.close(fd)


def read(j: AgentJournal, name: str = "web", cursor: str = "", lines: int = 3, wait: int = 0):
    return asyncio.run(j.read("alice", name, cursor, lines, wait))  # type: ignore[arg-type]


def test_the_matches_are_agent_logs_own(journal: AgentJournal) -> None:
    read(journal)
    assert FakeReader.matches == [
        {"_SYSTEMD_UNIT": "agent-web.service"},
        "+",
        {"_PID": "1", "UNIT": "agent-web.service"},
        "+",
        {"_UID": "0", "AGENT_NAME": "web"},
    ]
    assert journal.registry.asked == [("alice", "web", "agent.journal")]  # type: ignore[attr-defined]


def test_the_last_lines_then_those_after_the_cursor(journal: AgentJournal) -> None:
    got, cursor = read(journal, lines=3)
    assert [e["message"] for e in got] == ["line 7", "line 8", "line 9"] and cursor == "c9"
    assert got[0] == {
        "at": datetime(2026, 12, 1, 12, 0, 7, tzinfo=UTC).timestamp(),
        "priority": 6,
        "identifier": "agent-web",
        "pid": 4242,
        "message": "line 7",
    }
    FakeReader.entries += [line(10), line(11, "x" * (MESSAGE_CHARS + 50))]
    got, cursor = read(journal, cursor="c9", lines=500)
    assert [e["message"][:7] for e in got] == ["line 10", "xxxxxxx"] and cursor == "c11"
    assert len(got[1]["message"]) == MESSAGE_CHARS
    assert read(journal, cursor="c11") == ([], "c11")  # nothing new, no wait asked


def test_a_wait_ends_when_the_journal_changes(journal: AgentJournal) -> None:
    async def go() -> tuple[list[dict[str, Any]], str]:
        pending = asyncio.ensure_future(journal.read("alice", "web", "c9", 10, 20_000))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert not pending.done()  # waiting on the journal's descriptor
        FakeReader.entries.append(line(10, "new"))
        os.write(FakeReader.pipe[1], b"x")  # what inotify does when journald writes
        return await asyncio.wait_for(pending, 5)

    got, cursor = asyncio.run(go())
    assert [e["message"] for e in got] == ["new"] and cursor == "c10"


def test_refusals_are_typed(journal: AgentJournal) -> None:
    with pytest.raises(PermissionDenied):
        read(journal, name="other")
    with pytest.raises(NoSuchAgent):
        read(journal, name="gone")
    with pytest.raises(InvalidArgument, match="cursor is not one this journal gave"):
        read(journal, cursor="bogus")
    with pytest.raises(InvalidArgument, match="longer than 1024"):
        read(journal, cursor="c" * 1025)
