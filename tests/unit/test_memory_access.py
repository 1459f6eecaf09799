"""agentd.memory.memories: scopes as callers name them, who may read and write
which, metering of embedding tokens, audit, and what an agent's removal does
to its memory. The engine over fakes of the system, a real memory database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fakes import BagOfWords
from world import ALICE, BOB, ROOT, World

from agentd.errors import (
    InvalidArgument,
    NoSuchAgent,
    NoSuchMemory,
    PermissionDenied,
    QuotaExceeded,
)
from agentd.memory import MemoryService
from agentd.memory.memories import Memories
from agentd.policy import Caller
from agentd.quotas import Meter

T = TypeVar("T")
NOTES = "# Backups\n\nThe backup server is called vault and keeps 14 daily copies.\n"


class Setup:
    def __init__(self, tmp_path: Path, **cfg: Any) -> None:
        self.w = World(tmp_path, **cfg)
        self.a1 = self.w.run(self.w.reg.create(ALICE, "a1", "sandbox"))
        self.b1 = self.w.run(self.w.reg.create(BOB, "b1", "sandbox"))
        self.meter = Meter(self.w.cfg, self.w.store, self.w.audit, self.w.reg)
        self.path = tmp_path / "memory.db"

    def run(self, body: Callable[[Memories], Awaitable[T]]) -> T:
        async def main() -> T:
            service = MemoryService(self.path, BagOfWords())
            await service.open()
            m = Memories(service, self.w.reg.policy, self.w.audit, self.meter, self.w.reg)
            try:
                return await body(m)
            finally:
                await service.close()

        return asyncio.run(main())

    def embed_tokens(self, agent: str) -> int:
        return int(
            self.w.store.scalar(
                "SELECT COALESCE(SUM(prompt_tokens), 0) FROM usage WHERE kind='embed' AND agent=?",
                (agent,),
            )
        )


@pytest.fixture
def s(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def test_owner_adds_and_searches_its_agents_memory_and_tokens_are_metered(s: Setup) -> None:
    async def body(m: Memories) -> Any:
        added = await m.add(ALICE, "agent/a1", "notes.md", NOTES, False)
        again = await m.add(ALICE, "agent/a1", "notes.md", NOTES, False)
        hits = await m.search(ALICE, ["agent/a1"], "what is the backup server called", 3)
        return added, again, hits

    added, again, hits = s.run(body)
    assert added["scope"] == "agent/a1" and added["added"] == 1 and added["tokens"] > 0
    assert again["added"] == 0 and again["skipped"] == 1
    assert hits and "vault" in hits[0]["text"] and hits[0]["scope"] == "agent/a1"
    assert hits[0]["heading"] == ["Backups"]
    # both adds' and the search's embedding tokens, charged to the agent
    assert s.embed_tokens("a1") >= added["tokens"]
    rows = s.w.audit_rows("memory.added")
    assert len(rows) == 2 and rows[0].detail["scope"] == "agent/a1"


def test_another_owner_cannot_read_write_or_even_see_a_chunk(s: Setup) -> None:
    async def body(m: Memories) -> int:
        added = await m.add(ALICE, "agent/a1", "notes.md", NOTES, False)
        chunk = added["ids"][0]
        with pytest.raises(PermissionDenied):
            await m.search(BOB, ["agent/a1"], "backup", 3)
        with pytest.raises(PermissionDenied):
            await m.add(BOB, "agent/a1", "x", "bob was here", False)
        with pytest.raises(PermissionDenied):
            await m.listing(BOB, "knowledge/1000", "", 0, 10)
        with pytest.raises(PermissionDenied):
            await m.get(BOB, chunk)
        with pytest.raises(PermissionDenied):
            await m.remove(BOB, [chunk])
        with pytest.raises(NoSuchMemory):
            await m.get(ALICE, chunk + 1000)
        assert (await m.get(ROOT, chunk))["id"] == chunk  # an administrator reads all
        return chunk

    s.run(body)
    assert len(s.w.audit_rows("memory.removed")) == 0
    denied = [e for e in s.w.audit_rows("memory.read") if e.result == "denied"]
    assert denied  # every refusal audited


def test_an_agent_uses_only_the_runtime_and_sees_its_owners_knowledge(s: Setup) -> None:
    agent_caller = Caller(s.a1.uid, name="a1")

    async def body(m: Memories) -> Any:
        await m.add(
            ALICE, "knowledge", "handbook.md", "The office wifi password is hunter2.", False
        )
        await m.add(BOB, "knowledge", "bob.md", "Bob's wifi password is swordfish.", False)
        with pytest.raises(PermissionDenied):
            await m.search(agent_caller, ["knowledge/1000"], "wifi password", 3)
        await m.remember(s.a1, "The owner prefers tabs over spaces.", "fact", None)
        return await m.recall(s.a1, "wifi password", 5, None), await m.recall(
            s.a1, "tabs or spaces", 5, None
        )

    wifi, tabs = s.run(body)
    assert [h["scope"] for h in wifi] == ["knowledge"] and "hunter2" in wifi[0]["text"]
    assert all("swordfish" not in h["text"] for h in wifi + tabs)
    assert tabs and tabs[0]["scope"] == "agent" and tabs[0]["kind"] == "fact"


def test_scope_names_and_arguments_are_checked(s: Setup) -> None:
    async def body(m: Memories) -> None:
        for bad in ("agents/a1", "agent/", "knowledge/abc", "knowledge/-1", ""):
            with pytest.raises(InvalidArgument):
                await m.listing(ALICE, bad, "", 0, 10)
        with pytest.raises(NoSuchAgent):
            await m.listing(ALICE, "agent/nobody", "", 0, 10)
        with pytest.raises(InvalidArgument):
            await m.search(ALICE, ["agent/a1"], "x", 0)
        with pytest.raises(InvalidArgument):
            await m.remember(s.a1, "x", "document", None)  # agents write facts and lessons
        with pytest.raises(InvalidArgument):
            await m.add(ALICE, "agent/a1", "two\nlines", "text", False)

    s.run(body)


def test_a_spent_quota_refuses_before_anything_is_embedded(tmp_path: Path) -> None:
    s = Setup(tmp_path, owner_token_quota=5)

    async def body(m: Memories) -> None:
        with pytest.raises(QuotaExceeded):
            await m.add(ALICE, "agent/a1", "notes.md", NOTES * 3, False)
        assert (await m.usage(ALICE, "agent/a1"))["chunks"] == 0

    s.run(body)
    assert s.embed_tokens("a1") == 0


def test_knowledge_is_metered_against_the_owner(s: Setup) -> None:
    s.run(lambda m: m.add(ALICE, "knowledge", "h.md", NOTES, False))
    n = s.w.store.scalar(
        "SELECT SUM(prompt_tokens) FROM usage WHERE kind='embed' AND agent='' AND owner_uid=1000"
    )
    assert n and n > 0
    assert s.meter.owner_quota(1000).used >= n


def test_removal_drops_the_memory_and_a_kept_home_keeps_it_beside_the_archive(
    s: Setup, tmp_path: Path
) -> None:
    archive = tmp_path / "archive" / "a1-70000-20261130.tar.gz"
    archive.parent.mkdir()

    async def body(m: Memories) -> Any:
        await m.add(ALICE, "agent/a1", "notes.md", NOTES, False)
        await m.add(ALICE, "knowledge", "k.md", "kept knowledge", False)
        kept = s.a1.__class__(**{**s.a1.__dict__, "archive": str(archive)})
        dropped = await m.forget_agent(kept)
        empty = tmp_path / "archive" / "b1-70001-20261130.tar.gz"
        await m.forget_agent(s.b1.__class__(**{**s.b1.__dict__, "archive": str(empty)}))
        usage = await m.usage(ROOT, "knowledge/1000")
        return dropped, usage, await m.service.scopes()

    dropped, usage, scopes = s.run(body)
    assert dropped == 1 and usage["chunks"] == 1  # the owner's knowledge stays
    assert all(sc.kind != "agent" for sc in scopes)
    lines = (archive.parent / "a1-70000-20261130.memory.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "vault" in json.loads(lines[0])["text"]
    assert oct((archive.parent / "a1-70000-20261130.memory.jsonl").stat().st_mode)[-3:] == "600"
    # an agent that remembered nothing leaves no file beside its archive
    assert sorted(p.name for p in archive.parent.iterdir()) == ["a1-70000-20261130.memory.jsonl"]


def test_reconcile_drops_memories_of_agents_gone_while_agentd_was_down(s: Setup) -> None:
    async def body(m: Memories) -> Any:
        await m.add(ALICE, "agent/a1", "notes.md", NOTES, False)
        await m.add(BOB, "agent/b1", "notes.md", NOTES, False)
        dropped = await m.reconcile(lambda agent_id: agent_id == s.b1.id)
        return dropped, await m.service.scopes()

    dropped, scopes = s.run(body)
    assert dropped == [s.a1.id]
    assert [(sc.kind, sc.id) for sc in scopes] == [("agent", s.b1.id)]
