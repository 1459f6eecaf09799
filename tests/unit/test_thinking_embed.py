"""Thinking.embed: an agent's own sentence vectors (its endpoint's
/v1/embeddings), bounded as the service bounds them, checked against its
quotas before the service is asked, charged what the service counted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from test_quotas import M
from world import ROOT

from agentd.errors import InvalidArgument, QuotaExceeded
from agentd.modelclient import Embeddings
from agentd.thinking import MAX_EMBED_TEXT_BYTES, MAX_EMBED_TEXTS, Thinking


class Client:
    """A model client whose embed answers 3-dimensional vectors, 5 tokens a text."""

    def __init__(self) -> None:
        self.asked: list[tuple[list[str], dict[str, Any]]] = []

    async def embed(self, texts: list[str], **who: Any) -> Embeddings:
        self.asked.append((list(texts), who))
        vectors = [[1.0, 0.0, 0.0] for _ in texts]
        return Embeddings(vectors, 5 * len(texts), [], "mini", 3)


def embedding_world(tmp_path: Path) -> tuple[M, Thinking, Client]:
    m = M(tmp_path)
    client = Client()
    return m, Thinking(m.w.reg, m.meter, client, m.w.audit), client  # type: ignore[arg-type]


def test_vectors_come_back_in_order_and_are_metered_as_embed(tmp_path: Path) -> None:
    m, t, client = embedding_world(tmp_path)
    a = m.agent("a1")
    got = asyncio.run(t.embed(a, ["one", "two"]))
    assert got == {
        "model": "mini",
        "dimensions": 3,
        "embeddings": [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
        "tokens": 10,
        "truncated": [],
    }
    # the service takes turns per agent and owner, as for generation
    assert client.asked == [(["one", "two"], {"agent": "a1", "owner": str(a.owner_uid)})]
    rows = m.w.store.query("SELECT kind, prompt_tokens FROM usage WHERE agent = 'a1'")
    assert [(r["kind"], r["prompt_tokens"]) for r in rows] == [("embed", 10)]


def test_over_quota_is_refused_before_the_service_is_asked(tmp_path: Path) -> None:
    m, t, client = embedding_world(tmp_path)
    a = m.agent("a1")
    m.meter.set(ROOT, "agent", "a1", 20, "daily")
    with pytest.raises(QuotaExceeded):
        asyncio.run(t.embed(a, ["x" * 30]))  # up to 30 + 2 tokens: over 20
    assert client.asked == []
    assert m.w.audit_rows("model.refused")


@pytest.mark.parametrize(
    "texts",
    [[], ["a"] * (MAX_EMBED_TEXTS + 1), ["é" * (MAX_EMBED_TEXT_BYTES // 2 + 1)]],
)
def test_texts_out_of_the_services_bounds_are_refused(tmp_path: Path, texts: list[str]) -> None:
    m, t, client = embedding_world(tmp_path)
    with pytest.raises(InvalidArgument):
        asyncio.run(t.embed(m.agent("a1"), texts))
    assert client.asked == []
