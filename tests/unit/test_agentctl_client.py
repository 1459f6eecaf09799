"""agentctl's client against fake proxies and a fake bus: rows read by field name,
ListEvents with its type globs, and following the audit stream.

No bus is needed: AgentdClient is built without connecting and given objects
that answer as sdbus's proxies would (plain tuples, {key: (signature, value)}).
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Callable
from typing import Any

from agentctl import client as client_mod
from agentctl.client import AgentdClient
from agentd.api.rows import AuditRow


def audit_row(seq: int, action: str = "agent.create", agent: str = "scout") -> tuple:
    return tuple(
        AuditRow(
            seq=seq,
            ts=1700000000.0 + seq,
            actor_uid=0,
            action=action,
            agent=agent,
            agent_uid=61001 if agent else 0,
            result="ok",
            detail='{"task_id": 4}' if action.startswith("task.") else "",
            hash=f"h{seq}",
        )
    )


class FakeManager:
    """The Manager proxy as sdbus would answer; ListEvents filters as agentd does."""

    def __init__(self) -> None:
        self.log: list[tuple] = [
            audit_row(1),
            audit_row(2, "task.created", agent=""),
            audit_row(3, "agent.start"),
        ]
        self.sent: list[tuple] = []
        self.head_reads = 0

    async def list_events(self, after_seq: int, limit: int, types: list[str]) -> list[tuple]:
        self.sent.append(("list_events", after_seq, limit, types))
        assert isinstance(types, list)  # "as" on the bus
        return [
            r
            for r in self.log
            if r[0] > after_seq and (not types or any(fnmatch.fnmatchcase(r[3], t) for t in types))
        ][:limit]

    async def list_agents(self) -> list[tuple]:
        return [("scout", "research", "active", 61001, 0, "/org/agentos/agentd1/agent/scout")]

    async def list_templates(self) -> list[tuple]:
        return [("research", "Reads", "offline", ["read", "summarise"])]

    @property
    def audit_head(self) -> Any:
        manager = self

        class Head:
            async def get_async(self) -> int:
                manager.head_reads += 1
                return max((r[0] for r in manager.log), default=0)

        return Head()


class FakeModel:
    async def list_quotas(self) -> list[tuple]:
        return [("agent", "scout", 1000, 950, "daily", 1700003600.0, "admin")]

    async def list_usage(self, days: int) -> list[tuple]:
        return [("2026-11-21", "scout", 0, 3, 900, 50)]


class Slot:
    def __init__(self, bus: FakeBus) -> None:
        self.bus = bus

    def close(self) -> None:
        self.bus.callbacks.clear()


class FakeBus:
    """match_signal_async as sdbus has it; signal() calls the subscribed callbacks."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[Any], None]] = []
        self.matches: list[tuple[str, ...]] = []

    async def match_signal_async(
        self, sender: str, path: str, interface: str, member: str, callback: Callable[[Any], None]
    ) -> Slot:
        self.matches.append((sender, path, interface, member))
        self.callbacks.append(callback)
        return Slot(self)

    def signal(self, seq: int) -> None:
        for callback in list(self.callbacks):
            callback(Msg(seq))


class Msg:
    def __init__(self, *contents: Any) -> None:
        self.contents = contents

    def get_contents(self) -> Any:
        return self.contents[0] if len(self.contents) == 1 else self.contents


def client() -> tuple[AgentdClient, FakeManager, FakeBus]:
    c = AgentdClient.__new__(AgentdClient)
    c.manager = FakeManager()  # type: ignore[assignment]
    c.model = FakeModel()  # type: ignore[assignment]
    c.bus = FakeBus()  # type: ignore[assignment]
    return c, c.manager, c.bus  # type: ignore[return-value]


def test_list_events_sends_the_globs_and_maps_rows_by_name() -> None:
    c, manager, _bus = client()
    got = asyncio.run(c.list_events(0, 10, ("task.*",)))
    assert manager.sent == [("list_events", 0, 10, ["task.*"])]
    assert got == [
        {
            "seq": 2,
            "ts": 1700000002.0,
            "actor_uid": 0,
            "action": "task.created",
            "agent": None,
            "agent_uid": None,
            "result": "ok",
            "detail": {"task_id": 4},
            "hash": "h2",
        }
    ]
    everything = asyncio.run(c.list_events(1, 10))
    assert [e["seq"] for e in everything] == [2, 3]
    assert everything[1]["agent"] == "scout" and everything[1]["detail"] == {}


def test_list_replies_become_dicts_by_field_name() -> None:
    c, _manager, _bus = client()

    async def scenario() -> list[Any]:
        return [
            await c.list_agents(),
            await c.list_templates(),
            await c.list_quotas(),
            await c.list_usage(3),
        ]

    agents, templates, quotas, usage = asyncio.run(scenario())
    assert agents == [
        {
            "name": "scout",
            "template": "research",
            "state": "active",
            "uid": 61001,
            "owner_uid": 0,
            "path": "/org/agentos/agentd1/agent/scout",
        }
    ]
    assert templates == [
        {
            "name": "research",
            "description": "Reads",
            "profile": "offline",
            "capabilities": ["read", "summarise"],
        }
    ]
    assert quotas == [
        {
            "kind": "agent",
            "subject": "scout",
            "limit": 1000,
            "used": 950,
            "period": "daily",
            "resets_at": 1700003600.0,
            "source": "admin",
        }
    ]
    assert usage == [
        {
            "day": "2026-11-21",
            "agent": "scout",
            "owner_uid": 0,
            "requests": 3,
            "prompt_tokens": 900,
            "completion_tokens": 50,
        }
    ]


def test_follow_events_reads_the_backlog_then_wakes_on_audit_appended() -> None:
    c, manager, bus = client()

    async def scenario() -> list[int]:
        seen: list[int] = []
        stream = c.follow_events(1, ["agent.*"])
        seen.append((await anext(stream))["seq"])  # the backlog: 3
        next_entry = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.01)
        assert not next_entry.done()  # nothing new: waiting for the signal
        manager.log += [audit_row(4, "task.claimed"), audit_row(5, "agent.stop")]
        bus.signal(5)
        seen.append((await next_entry)["seq"])
        await stream.aclose()
        return seen

    assert asyncio.run(scenario()) == [3, 5]
    member = client_mod.AUDIT_APPENDED.signal_name
    assert [m[3] for m in bus.matches] == [member] and bus.callbacks == []  # closed
    # The first round starts after SEQ 1; once it has read up to AuditHead (3), the next
    # starts there, not again after the last match.
    assert [s[1] for s in manager.sent] == [1, 3]
    assert all(s[3] == ["agent.*"] for s in manager.sent)
    assert manager.head_reads == 2


def test_follow_events_skips_rows_it_may_not_see_once_read() -> None:
    """Rows TYPES leaves out are not asked for again on every signal."""
    c, manager, bus = client()

    async def scenario() -> None:
        stream = c.follow_events(3, ["task.failed"])
        pending = asyncio.ensure_future(anext(stream))
        for seq in (4, 5, 6):
            manager.log.append(audit_row(seq, "agent.start"))
            await asyncio.sleep(0.01)
            bus.signal(seq)
            await asyncio.sleep(0.01)
        manager.log.append(audit_row(7, "task.failed"))
        bus.signal(7)
        assert (await pending)["seq"] == 7
        await stream.aclose()

    asyncio.run(scenario())
    afters = [s[1] for s in manager.sent]
    assert afters == sorted(afters) and afters[-1] == 6, afters
