"""agentd.memory.service over a deterministic bag-of-words embedder: dedup,
limits, dimensions, removal, export, and that the database runs off the loop."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fakes import BagOfWords

from agentd.errors import (
    InvalidArgument,
    MemoryDimensionMismatch,
    MemoryLimitExceeded,
    MemoryUnavailable,
    NoSuchMemory,
)
from agentd.memory import EmbedResult, Limits, MemoryService, Usage
from agentd.memory.store import MemoryStore

T = TypeVar("T")
AGENT_A = ("agent", 1)
AGENT_B = ("agent", 2)
OWNER = ("owner", 1000)


def with_service(tmp_path: Path, body: Callable[[MemoryService], Awaitable[T]], **kwargs: Any) -> T:
    async def main() -> T:
        service = MemoryService(
            tmp_path / "memory.db", kwargs.pop("embedder", BagOfWords()), **kwargs
        )
        await service.open()
        try:
            return await body(service)
        finally:
            await service.close()

    return asyncio.run(main())


def rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """What the database holds, read through a connection of the test's own."""
    store = MemoryStore(path)
    try:
        return store.query(sql, params)
    finally:
        store.close()


DOC = """# Backups
Backups run nightly with restic to the NAS.

# Printers
The office printer is a Brother HL-L2350DW on 192.168.1.40.
"""


def test_adding_the_same_document_again_stores_nothing_twice(tmp_path: Path) -> None:
    async def body(s: MemoryService) -> None:
        first = await s.add_document(AGENT_A, "it.md", DOC)
        assert (first.added, first.skipped, first.removed) == (2, 0, 0)
        assert first.tokens > 0
        again = await s.add_document(AGENT_A, "it.md", DOC)
        assert (again.added, again.skipped, again.tokens) == (0, 2, 0)  # nothing embedded
        other = await s.add_document(AGENT_A, "copy.md", DOC)  # another source: its own
        assert other.added == 2
        assert (await s.usage(AGENT_A)).chunks == 4
        records = await s.list(AGENT_A, "it.md")
        assert [r.heading for r in records] == [("Backups",), ("Printers",)]
        assert [r.position for r in records] == [0, 1]

    with_service(tmp_path, body)


def test_replace_removes_what_the_new_text_no_longer_has(tmp_path: Path) -> None:
    async def body(s: MemoryService) -> None:
        await s.add_document(OWNER, "it.md", DOC)
        edited = DOC.replace("nightly", "hourly")
        result = await s.add_document(OWNER, "it.md", edited, replace=True)
        assert (result.added, result.skipped, result.removed) == (1, 1, 1)
        texts = [r.text for r in await s.list(OWNER, "it.md")]
        assert any("hourly" in t for t in texts) and not any("nightly" in t for t in texts)

    with_service(tmp_path, body)


def test_embedding_is_batched_and_its_tokens_summed(tmp_path: Path) -> None:
    embedder = BagOfWords()
    doc = "\n\n".join(f"# Section {i}\nBody {i}." for i in range(70))

    async def body(s: MemoryService) -> None:
        result = await s.add_document(AGENT_A, "big.md", doc)
        assert result.added == 70
        assert [len(c) for c in embedder.calls] == [32, 32, 6]
        assert result.tokens == sum(
            len(re.findall(r"\w+", t)) + 2 for c in embedder.calls for t in c
        )

    with_service(tmp_path, body, embedder=embedder)


def test_a_limit_refuses_the_whole_add_before_embedding(tmp_path: Path) -> None:
    embedder = BagOfWords()
    doc = "\n\n".join(f"# Part {i}\nText of part {i}." for i in range(5))

    async def body(s: MemoryService) -> None:
        await s.add_document(AGENT_A, "a.md", "# One\nFirst.\n\n# Two\nSecond.")
        calls = len(embedder.calls)
        with pytest.raises(MemoryLimitExceeded, match="chunks"):
            await s.add_document(AGENT_A, "b.md", doc)  # 2 + 5 > 4
        assert len(embedder.calls) == calls  # no tokens spent on a refused add
        assert (await s.usage(AGENT_A)).chunks == 2  # nothing of b.md
        # the owner's knowledge base has its own limit, in bytes here
        with pytest.raises(MemoryLimitExceeded, match="bytes"):
            await s.add_document(OWNER, "big.md", "word " * 100)
        assert (await s.usage(OWNER)).chunks == 0
        # another agent's memory is not counted against this one's
        assert (await s.add_document(AGENT_B, "b.md", "A short note.")).added == 1

    limits = Limits(agent_chunks=4, agent_bytes=0, owner_chunks=0, owner_bytes=100)
    with_service(tmp_path, body, embedder=embedder, limits=limits)
    assert rows(tmp_path / "memory.db", "SELECT count(*) FROM chunks") == [(3,)]
    assert rows(tmp_path / "memory.db", "SELECT count(*) FROM chunks_vec") == [(3,)]


def test_the_limit_is_checked_again_in_the_writing_transaction(tmp_path: Path) -> None:
    """Two adds that each fit alone, embedding at the same time: one is refused."""
    release = asyncio.Event

    class Slow(BagOfWords):
        def __init__(self) -> None:
            super().__init__()
            self.gate: asyncio.Event | None = None
            self.waiting = 0
            self.both: asyncio.Event | None = None

        async def embed(self, texts: list[str]) -> EmbedResult:
            assert self.gate is not None and self.both is not None
            self.waiting += 1
            if self.waiting == 2:
                self.both.set()
            await self.gate.wait()
            return await super().embed(texts)

    embedder = Slow()

    async def body(s: MemoryService) -> None:
        embedder.gate, embedder.both = release(), release()
        one = asyncio.ensure_future(s.add_document(AGENT_A, "one", "alpha beta gamma"))
        two = asyncio.ensure_future(s.add_document(AGENT_A, "two", "delta epsilon zeta"))
        await embedder.both.wait()  # both planned (each fits alone), both embedding
        embedder.gate.set()
        results = await asyncio.gather(one, two, return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["AddResult", "MemoryLimitExceeded"]
        assert (await s.usage(AGENT_A)).chunks == 1

    with_service(tmp_path, body, embedder=embedder, limits=Limits(agent_chunks=1))


def test_a_database_of_another_dimension_is_refused(tmp_path: Path) -> None:
    async def body(s: MemoryService) -> None:
        await s.add_document(AGENT_A, "a", "some text")

    with_service(tmp_path, body)
    with pytest.raises(MemoryDimensionMismatch, match="384-dimensional"):
        with_service(tmp_path, body, dimension=256, embedder=BagOfWords(256))
    assert rows(tmp_path / "memory.db", "SELECT count(*) FROM chunks") == [(1,)]


def test_an_embedder_of_another_dimension_is_refused(tmp_path: Path) -> None:
    async def body(s: MemoryService) -> None:
        with pytest.raises(MemoryDimensionMismatch):
            await s.add_document(AGENT_A, "a", "some text")
        assert (await s.usage(AGENT_A)).chunks == 0

    with_service(tmp_path, body, embedder=BagOfWords(128))


def test_remove_by_id_within_scopes_and_by_source(tmp_path: Path) -> None:
    async def body(s: MemoryService) -> None:
        a = await s.add_document(AGENT_A, "it.md", DOC)
        b = await s.add_document(AGENT_B, "it.md", DOC)
        with pytest.raises(NoSuchMemory):  # B's chunk is not in A's scope: nothing removed
            await s.remove([a.ids[0], b.ids[0]], within=[AGENT_A])
        assert (await s.usage(AGENT_A)).chunks == 2
        assert await s.remove([a.ids[0]], within=[AGENT_A]) == 1
        with pytest.raises(NoSuchMemory):
            await s.get(a.ids[0])
        kept = await s.get(a.ids[1])
        assert kept.scope == AGENT_A
        assert await s.usage(AGENT_A) == Usage(chunks=1, bytes=len(kept.text.encode()), sources=1)
        assert await s.remove_source(AGENT_B, "it.md") == 2
        assert (await s.usage(AGENT_B)).chunks == 0

    with_service(tmp_path, body)


def test_drop_scope_removes_chunks_keywords_and_vectors(tmp_path: Path) -> None:
    async def body(s: MemoryService) -> None:
        await s.add_document(AGENT_A, "it.md", DOC)
        await s.remember(AGENT_A, "The NAS password is in the vault.", kind="fact")
        await s.add_document(AGENT_B, "it.md", DOC)
        assert await s.drop_scope(AGENT_A) == 3
        assert (await s.usage(AGENT_A)).chunks == 0
        assert (await s.search([AGENT_A], "restic NAS printer")).hits == []
        assert len((await s.search([AGENT_B], "restic NAS backups")).hits) >= 1

    with_service(tmp_path, body)
    db = tmp_path / "memory.db"
    assert rows(db, "SELECT count(*) FROM chunks") == [(2,)]
    assert rows(db, "SELECT count(*) FROM chunks_vec") == [(2,)]
    assert rows(db, "SELECT count(*) FROM chunks_vec WHERE scope = 'agent1'") == [(0,)]
    assert rows(db, "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'agent1'") == [(0,)]
    assert rows(db, "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'agent2'") == [(2,)]


def test_export_and_import_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "home.memory.jsonl"

    async def body(s: MemoryService) -> None:
        await s.add_document(AGENT_A, "it.md", DOC)
        await s.remember(AGENT_A, "Deploys need the VPN.", kind="lesson", task_id=7)
        before = await s.list(AGENT_A)
        streamed = [row async for row in s.export(AGENT_A)]
        assert await s.export_file(AGENT_A, out) == 3
        assert [json.loads(line) for line in out.read_text().splitlines()] == streamed
        assert out.stat().st_mode & 0o777 == 0o600
        await s.drop_scope(AGENT_A)
        restored = await s.import_file(AGENT_A, out)
        assert (restored.added, restored.skipped, restored.tokens) == (3, 0, 0)
        after = await s.list(AGENT_A)
        fields = (
            "source",
            "position",
            "heading",
            "text",
            "kind",
            "task_id",
            "sha256",
            "created",
            "start_line",
            "end_line",
            "start_byte",
            "end_byte",
        )
        assert [[getattr(r, f) for f in fields] for r in after] == [
            [getattr(r, f) for f in fields] for r in before
        ]
        hits = (await s.search([AGENT_A], "deploys VPN")).hits  # the vectors came back too
        assert hits and hits[0].kind == "lesson" and hits[0].cosine > 0.5
        again = await s.import_file(AGENT_A, out)
        assert (again.added, again.skipped) == (0, 3)

    with_service(tmp_path, body)


def test_an_import_of_a_tampered_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"

    async def body(s: MemoryService) -> None:
        await s.add_document(AGENT_A, "it.md", DOC)
        await s.export_file(AGENT_A, out)
        lines = out.read_text().splitlines()
        row = json.loads(lines[1])
        row["text"] = "something else"
        out.write_text(lines[0] + "\n" + json.dumps(row) + "\n")
        with pytest.raises(InvalidArgument):
            await s.import_file(AGENT_B, out)
        assert (await s.usage(AGENT_B)).chunks == 0  # not even the good first line

    with_service(tmp_path, body)


def test_arguments_are_checked(tmp_path: Path) -> None:
    async def body(s: MemoryService) -> None:
        with pytest.raises(InvalidArgument):
            await s.add_document(("group", 1), "a", "text")
        with pytest.raises(InvalidArgument):
            await s.add_document(AGENT_A, "", "text")
        with pytest.raises(InvalidArgument):
            await s.remember(AGENT_A, "text", kind="opinion")
        with pytest.raises(InvalidArgument):
            await s.remember(AGENT_A, "  \n")
        with pytest.raises(InvalidArgument):
            await s.search([AGENT_A], " ")

    with_service(tmp_path, body)


def test_the_database_is_used_in_the_worker_thread_only(tmp_path: Path, monkeypatch: Any) -> None:
    """Every store call runs in the service's one worker thread, never on the
    loop's; the embedder is awaited on the loop."""
    seen: list[tuple[str, int]] = []
    for name in (
        "plan",
        "add",
        "usage",
        "list_chunks",
        "get",
        "remove",
        "drop_scope",
        "export_page",
        "query",
    ):
        original = getattr(MemoryStore, name)

        def spy(self: MemoryStore, *a: Any, _f: Any = original, _n: str = name, **k: Any) -> Any:
            seen.append((_n, threading.get_ident()))
            return _f(self, *a, **k)

        monkeypatch.setattr(MemoryStore, name, spy)
    embedder = BagOfWords()
    loop_thread = threading.get_ident()

    async def body(s: MemoryService) -> None:
        r = await s.add_document(AGENT_A, "it.md", DOC)
        await s.search([AGENT_A, OWNER], "printer address")
        await s.list(AGENT_A)
        await s.get(r.ids[0])
        await s.usage(AGENT_A)
        _ = [row async for row in s.export(AGENT_A)]
        await s.remove([r.ids[0]])
        await s.drop_scope(AGENT_A)
        assert s.worker is not None and s.worker != loop_thread
        assert {n for n, _ in seen} >= {
            "plan",
            "add",
            "query",
            "list_chunks",
            "get",
            "usage",
            "export_page",
            "remove",
            "drop_scope",
        }
        assert {t for _, t in seen} == {s.worker}

    with_service(tmp_path, body, embedder=embedder)
    assert set(embedder.threads) == {loop_thread}


def test_without_sqlite_vec_the_memory_is_unavailable(tmp_path: Path) -> None:
    async def main() -> None:
        service = MemoryService(tmp_path / "m.db", BagOfWords(), extension=str(tmp_path / "no"))
        with pytest.raises(MemoryUnavailable, match="could not be loaded"):
            await service.open()
        with pytest.raises(MemoryUnavailable):
            await service.usage(AGENT_A)
        await service.close()

    asyncio.run(main())
