"""Messages (agentd.messages) over the real store and policy: who may write to
whom (the owner's agents, teammates, the owner), order, at-least-once
delivery with acknowledgement and redelivery, bounds (sizes, rate, a full
inbox), long polls woken at commit, a person's view; and the loop's tools
against a scripted host."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from world import ALICE, BOB, ROOT, World

from agentd import messages as mod
from agentd.agentloop import messages as tools
from agentd.agentloop.host import HostError
from agentd.agentloop.prompt import offered
from agentd.errors import InvalidArgument, LimitExceeded, NoSuchAgent, PermissionDenied
from agentd.messages import Mailbox
from agentd.teams import TeamDirs, Teams


class M:
    def __init__(self, tmp_path: Path, **cfg: Any) -> None:
        self.w = World(tmp_path, **cfg)
        self.teams = Teams(
            self.w.store,
            self.w.reg,
            self.w.accounts,
            TeamDirs(tmp_path / "teams", tmp_path / "archive"),
            self.w.audit,
            self.w.reg.events,
        )
        self.mb = Mailbox(
            self.w.store, self.w.reg, self.w.audit, self.w.reg.events, self.teams.share
        )
        for owner, name in ((ALICE, "a1"), (ALICE, "a2"), (BOB, "b1")):
            self.w.run(self.w.reg.create(owner, name, "sandbox"))

    def agent(self, name: str):
        return self.w.reg.find(name)


@pytest.fixture
def m(tmp_path: Path) -> M:
    return M(tmp_path)


def test_an_agent_writes_to_its_owners_agents_in_order_and_receives_at_least_once(
    m: M,
) -> None:
    a1, a2 = m.agent("a1"), m.agent("a2")
    ids = [m.mb.send_from_agent(a1, "a2", f"s{i}", f"body {i}") for i in range(3)]
    got = asyncio.run(m.mb.receive(a2, 2, 0))
    assert [g["id"] for g in got] == ids[:2] and got[0]["from"] == "a1"
    assert got[0]["body"] == "body 0" and got[0]["deliveries"] == 1
    # not acknowledged: not handed out again within the visibility timeout...
    assert [g["id"] for g in asyncio.run(m.mb.receive(a2, 10, 0))] == ids[2:]
    assert asyncio.run(m.mb.receive(a2, 10, 0)) == []
    # ...but again after a runtime restart (Register), in order
    m.mb.release(a2)
    again = asyncio.run(m.mb.receive(a2, 10, 0))
    assert [g["id"] for g in again] == ids and again[0]["deliveries"] == 2
    assert m.mb.ack(a2, ids[:2]) == 2
    assert m.mb.ack(a2, ids[:2]) == 0  # again: harmless
    m.mb.release(a2)
    assert [g["id"] for g in asyncio.run(m.mb.receive(a2, 10, 0))] == ids[2:]
    with pytest.raises(InvalidArgument, match="not addressed"):
        m.mb.ack(a1, ids[2:])  # not a1's
    rows = m.w.audit_rows("message.sent")
    assert len(rows) == 3 and rows[0].detail["to"] == "a2"
    assert "body" not in str(rows[0].detail.get("subject", ""))  # metadata only
    assert rows[0].detail["body_chars"] == len("body 0") and "subject" not in rows[0].detail


def test_redelivered_after_the_visibility_timeout(m: M, monkeypatch: pytest.MonkeyPatch) -> None:
    a1, a2 = m.agent("a1"), m.agent("a2")
    mid = m.mb.send_from_agent(a1, "a2", "", "hello")
    assert len(asyncio.run(m.mb.receive(a2, 1, 0))) == 1
    monkeypatch.setattr(mod, "VISIBILITY_S", 0.0)
    [again] = asyncio.run(m.mb.receive(a2, 1, 0))
    assert again["id"] == mid and again["deliveries"] == 2


def test_another_owners_agent_is_refused_unless_they_share_a_team(m: M) -> None:
    a1, b1 = m.agent("a1"), m.agent("b1")
    with pytest.raises(PermissionDenied, match="another owner"):
        m.mb.send_from_agent(a1, "b1", "", "hi bob's agent")
    [row] = [r for r in m.w.audit_rows("runtime.send") if r.result == "denied"]
    assert (row.agent, row.detail["to"]) == ("a1", "b1")
    with pytest.raises(NoSuchAgent):
        m.mb.send_from_agent(a1, "nobody", "", "x")
    with pytest.raises(InvalidArgument):
        m.mb.send_from_agent(a1, "a1", "", "me")
    # an administrator's team of both: now they may
    m.w.run(m.teams.create(ROOT, "mixed", ""))
    m.w.run(m.teams.add(ROOT, "mixed", ["a1", "b1"], restart=False))
    mid = m.mb.send_from_agent(a1, "b1", "", "hi teammate")
    assert asyncio.run(m.mb.receive(b1, 5, 0))[0]["id"] == mid
    assert m.mb.send_from_agent(b1, "a1", "re", "hello back")


def test_sizes_rate_and_a_full_inbox_are_bounded_and_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = M(tmp_path, messages_per_second=1, messages_burst=3)
    a1 = m.agent("a1")
    with pytest.raises(InvalidArgument, match="body"):
        m.mb.send_from_agent(a1, "a2", "", "x" * (mod.BODY_CHARS + 1))
    with pytest.raises(InvalidArgument, match="subject"):
        m.mb.send_from_agent(a1, "a2", "s" * (mod.SUBJECT_CHARS + 1), "x")
    with pytest.raises(InvalidArgument):
        m.mb.send_from_agent(a1, "a2", "", "   ")
    for _ in range(3):
        m.mb.send_from_agent(a1, "a2", "", "ok")
    with pytest.raises(LimitExceeded, match="messages_per_second"):
        m.mb.send_from_agent(a1, "a2", "", "one too many")
    refused = [r for r in m.w.audit_rows("runtime.send") if r.result == "refused"]
    assert [r.detail["error"] for r in refused] == ["InvalidArgument"] * 3 + ["LimitExceeded"]
    monkeypatch.setattr(mod, "INBOX_MAX", 3)
    with pytest.raises(LimitExceeded, match="inbox is full"):
        m.mb.send_from_person(ALICE, "a2", "", "full")
    assert m.w.store.scalar("SELECT count(*) FROM messages") == 3


def test_a_person_writes_to_and_reads_its_own_agents_only(m: M) -> None:
    a1 = m.agent("a1")
    mid = m.mb.send_from_person(ALICE, "a1", "hello", "from alice")
    back = m.mb.send_from_agent(a1, mod.OWNER, "re", "to alice")
    got = m.mb.listing(ALICE, "a1", 0, 0)
    assert [(g["id"], g["from_kind"], g["to_kind"]) for g in got] == [
        (mid, "person", "agent"),
        (back, "agent", "person"),
    ]
    assert m.mb.listing(ALICE, "a1", mid, 0)[0]["id"] == back
    with pytest.raises(PermissionDenied):
        m.mb.send_from_person(BOB, "a1", "", "not yours")
    with pytest.raises(PermissionDenied):
        m.mb.listing(BOB, "a1", 0, 0)
    assert m.mb.listing(ROOT, "a1", 0, 0)  # an administrator reads it


def test_long_polls_wake_at_commit(m: M) -> None:
    a1, a2 = m.agent("a1"), m.agent("a2")

    async def go() -> tuple[list, list]:
        waiting = asyncio.ensure_future(m.mb.receive(a2, 5, 10))
        following = asyncio.ensure_future(m.mb.follow(ALICE, "a2", 0, 0, 10))
        await asyncio.sleep(0)
        assert not waiting.done() and not following.done()
        m.mb.send_from_agent(a1, "a2", "", "wake up")
        return await asyncio.wait_for(waiting, 5), await asyncio.wait_for(following, 5)

    got, seen = asyncio.run(go())
    assert got[0]["body"] == "wake up" and seen[0]["body"] == "wake up"
    assert m.mb._wake == {}  # no waiter left behind


def test_acknowledged_messages_are_pruned_after_their_keep(m: M) -> None:
    a1, a2 = m.agent("a1"), m.agent("a2")
    ids = [m.mb.send_from_agent(a1, "a2", "", f"{i}") for i in range(2)]
    m.mb.ack(a2, ids[:1])
    assert m.mb.prune() == 0
    assert m.mb.prune(now=10**12) == 1  # the unacknowledged one stays
    assert [u["id"] for u in m.mb.unread(a2)] == ids[1:]


class Host:
    def __init__(self, refuse: bool = False) -> None:
        self.sent: list[tuple] = []
        self.acked: list[int] = []
        self.refuse = refuse
        self.inbox = [{"id": 7, "from": "a2", "subject": "plan", "body": "use make"}]

    async def send(self, to: str, subject: str, body: str) -> int:
        if self.refuse:
            raise HostError("PermissionDenied", "another owner's agent in no team with it")
        self.sent.append((to, subject, body))
        return 41

    async def receive(self, most: int, timeout_ms: int) -> list[dict[str, Any]]:
        out, self.inbox = self.inbox, []
        return out

    async def ack(self, ids: list[int]) -> int:
        self.acked += ids
        return len(ids)


def test_the_loops_tools_send_read_and_show_refusals() -> None:
    host = Host()
    said = asyncio.run(tools.send(host, {"to": "a2", "subject": "hi", "body": "done"}))
    assert said == "sent message 41 to a2" and host.sent == [("a2", "hi", "done")]
    read = asyncio.run(tools.TOOLS["read_messages"](host, {}))
    assert "from a2 (plan): use make" in read and host.acked == [7]
    assert asyncio.run(tools.read(host)) == "no new messages"
    refused = asyncio.run(tools.send(Host(refuse=True), {"to": "b1", "body": "x"}))
    assert refused.startswith("error: not sent") and "PermissionDenied" in refused
    assert "error" in asyncio.run(tools.send(host, {"to": "", "body": "x"}))
    assert offered(["files", "messages"], "offline")[-4:] == [
        "send_message",
        "read_messages",
        "ask_owner",
        "finish",
    ]
    assert "send_message" not in offered(["files"], "offline")


def test_unread_messages_are_in_the_first_prompt() -> None:
    from agentd.agentloop.prompt import intro

    ctx = {"messages": [{"id": 3, "from": "a1", "subject": "db", "body": "use staging"}]}
    limits = {"shell_timeout": 60, "steps": 10, "tokens": 1000}
    first = intro({"title": "t"}, ctx, ["finish"], Path("/h"), "none", limits, [])
    assert "Messages to you, unread until now:\n- from a1 (db): use staging" in first
    plain = intro({"title": "t"}, {}, ["finish"], Path("/h"), "none", limits, [])
    assert "Messages to you" not in plain
