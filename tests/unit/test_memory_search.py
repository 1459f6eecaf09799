"""agentd.memory.search: scopes never leak, reciprocal rank fusion, the
relevance floor, over a deterministic bag-of-words embedder."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from agentd.memory import EmbedResult, MemoryService, SearchParams
from agentd.memory.search import keyword_query, rrf

T = TypeVar("T")
A, B = ("agent", 1), ("agent", 2)
OWNER, OTHER_OWNER = ("owner", 1000), ("owner", 1001)


class BagOfWords:
    """Hashed bag of words, normalized: texts sharing words are near."""

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim

    async def embed(self, texts: list[str]) -> EmbedResult:
        vectors = []
        for text in texts:
            v = [0.0] * self.dim
            for w in re.findall(r"\w+", text.lower()):
                h = hashlib.sha256(w.encode()).digest()
                v[int.from_bytes(h[:4], "little") % self.dim] += 1.0 if h[4] & 1 else -1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            vectors.append([x / norm for x in v] if any(v) else [1.0] + [0.0] * (self.dim - 1))
        return EmbedResult(vectors=vectors, tokens=len(texts))


def with_service(tmp_path: Path, body: Callable[[MemoryService], Awaitable[T]], **kw: Any) -> T:
    async def main() -> T:
        service = MemoryService(tmp_path / "memory.db", BagOfWords(), **kw)
        await service.open()
        try:
            return await body(service)
        finally:
            await service.close()

    return asyncio.run(main())


def test_rrf_orders_a_hand_made_case() -> None:
    # vector ranking 1, 2, 3; keyword ranking 3, 1: 1 is in both near the top,
    # 3 is first in one and last in the other, 2 is in one only.
    scores = rrf([[1, 2, 3], [3, 1]], k=60)
    assert scores[1] == 1 / 61 + 1 / 62
    assert scores[3] == 1 / 63 + 1 / 61
    assert scores[2] == 1 / 62
    assert sorted(scores, key=lambda i: -scores[i]) == [1, 3, 2]
    assert rrf([], k=60) == {}


def test_keyword_query_quotes_words_and_drops_stopwords() -> None:
    assert keyword_query('What is the "NAS" password? OR NEAR(x)') == (
        '"nas" OR "password" OR "near" OR "x"'
    )
    assert keyword_query("what is the") is None
    assert keyword_query("") is None


def test_a_search_reads_only_the_scopes_it_is_given(tmp_path: Path) -> None:
    note = "The deploy key for the staging cluster rotates every Monday."

    async def body(s: MemoryService) -> None:
        ids = {}
        for where in (A, B, OWNER, OTHER_OWNER):
            ids[where] = (await s.remember(where, f"{note} ({where[0]} {where[1]})")).ids[0]
        hits = (await s.search([A, OWNER], "staging cluster deploy key", k=10)).hits
        assert {h.id for h in hits} == {ids[A], ids[OWNER]}
        assert {h.scope for h in hits} == {A, OWNER}
        only_b = (await s.search([B], "staging deploy key", k=10)).hits
        assert [h.id for h in only_b] == [ids[B]]
        # a keyword present only in another scope's chunk finds nothing here
        await s.remember(B, "Zanzibar token is kept by agent B alone.")
        assert (await s.search([A, OWNER], "zanzibar token", k=10)).hits == []

    with_service(tmp_path, body)


def test_a_keyword_match_keeps_what_the_vector_floor_alone_would_drop(tmp_path: Path) -> None:
    """An identifier the query names is found by BM25: the chunk is returned
    though its cosine is under min_cosine (it passes the keyword floor)."""
    target_text = "Error E4711 means the build cache is corrupt; clear it."  # cosine 1/sqrt(10)

    async def body(s: MemoryService) -> None:
        for i in range(8):
            await s.remember(A, f"The build server fails with a timeout, attempt {i}.")
        target = await s.remember(A, target_text)
        hits = (await s.search([A], "E4711", k=3)).hits
        assert [h.id for h in hits] == [target.ids[0]]
        assert hits[0].keyword
        assert SearchParams().min_cosine_keyword <= hits[0].cosine < SearchParams().min_cosine
        both = (await s.search([A], "build server timeout E4711", k=10)).hits
        assert target.ids[0] in {h.id for h in both}
        scores = [h.score for h in both]
        assert scores == sorted(scores, reverse=True)

    with_service(tmp_path, body)

    async def vector_floor_only(s: MemoryService) -> None:
        assert (await s.search([A], "E4711", k=3)).hits == []

    with_service(tmp_path, vector_floor_only, params=SearchParams(min_cosine_keyword=0.35))


def test_an_unrelated_query_returns_nothing(tmp_path: Path) -> None:
    async def body(s: MemoryService) -> None:
        await s.add_document(OWNER, "net.md", "# Network\nThe router is at 10.0.0.1.\n")
        await s.remember(A, "Backups run nightly with restic.")
        assert (await s.search([A, OWNER], "recipe for chocolate cake")).hits == []
        assert (await s.search([A, OWNER], "what is it")).hits == []  # stopwords only
        assert (await s.search([A, OWNER], "restic backups")).hits != []

    with_service(tmp_path, body)


def test_the_floor_is_a_parameter(tmp_path: Path) -> None:
    async def body(s: MemoryService) -> None:
        await s.remember(A, "alpha beta gamma delta epsilon zeta eta theta")
        # one word of eight in common: cosine 1/sqrt(8) ~0.354 and a keyword match
        assert (await s.search([A], "alpha")).hits[0].keyword

    with_service(tmp_path, body)

    async def strict(s: MemoryService) -> None:
        assert (await s.search([A], "alpha")).hits == []

    with_service(tmp_path, strict, params=SearchParams(min_cosine=0.9, min_cosine_keyword=0.9))


def test_search_by_kind(tmp_path: Path) -> None:
    async def body(s: MemoryService) -> None:
        await s.remember(A, "Always run the linter before pushing.", kind="lesson")
        await s.remember(A, "The linter is ruff.", kind="fact")
        lessons = (await s.search([A], "linter", kinds=["lesson"], k=5)).hits
        assert [h.kind for h in lessons] == ["lesson"]
        both = (await s.search([A], "linter", k=5)).hits
        assert sorted(h.kind for h in both) == ["fact", "lesson"]

    with_service(tmp_path, body)


def test_a_long_query_keeps_its_longest_words() -> None:
    query = "fix the flaky integration test in the scheduler module before the nightly release"
    assert keyword_query(query + " tomorrow") == (  # 9 words: the shortest goes
        '"flaky" OR "integration" OR "test" OR "scheduler" OR "module" OR "nightly"'
        ' OR "release" OR "tomorrow"'
    )
    many = " ".join(f"w{i:03d}" for i in range(20)) + " longestword"
    assert '"longestword"' in (keyword_query(many) or "")
    assert (keyword_query(many) or "").count(" OR ") == 7
