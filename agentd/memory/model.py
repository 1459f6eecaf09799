"""The memory's vocabulary: scopes, stored chunks, hits, limits, the embedder.

No database and no I/O here, so the service, the store and the bus layer share
one definition of what a memory is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ..errors import InvalidArgument
from .chunking import START, Resume

SCOPE_KINDS = ("agent", "owner")  # an agent's own memory; its owner's knowledge base
KINDS = ("document", "lesson", "fact")


class Scope(NamedTuple):
    """("agent", agent id): an agent's own memory. ("owner", uid): the knowledge
    base all of that owner's agents read. A plain tuple works where one is taken."""

    kind: str
    id: int

    @property
    def key(self) -> str:
        """One token ('agent12'): the vector index's partition and the
        full-text index's scope column (unicode61 keeps letters+digits whole)."""
        return f"{self.kind}{self.id}"

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


def scope(value: tuple[str, int]) -> Scope:
    """VALUE checked and as a Scope."""
    kind, ident = value
    if kind not in SCOPE_KINDS:
        raise InvalidArgument(f"memory scope must be one of {', '.join(SCOPE_KINDS)}: {kind!r}")
    if isinstance(ident, bool) or not isinstance(ident, int) or ident < 0:
        raise InvalidArgument(f"memory scope id must be a non-negative integer: {ident!r}")
    return Scope(kind, ident)


@dataclass(frozen=True)
class Record:
    """A stored chunk, without its vector."""

    id: int
    scope: Scope
    source: str
    position: int
    heading: tuple[str, ...]
    text: str
    kind: str
    task_id: int | None
    sha256: str
    created: float
    start_byte: int
    end_byte: int
    start_line: int
    end_line: int


@dataclass(frozen=True)
class Hit(Record):
    """A search result. score: reciprocal rank fusion of the vector and keyword
    rankings (higher is better); cosine: exact similarity to the query;
    keyword: whether the full-text search matched it."""

    score: float
    cosine: float
    keyword: bool


@dataclass(frozen=True)
class Usage:
    chunks: int
    bytes: int  # UTF-8 bytes of the chunks' text (vectors not counted)
    sources: int


@dataclass(frozen=True)
class AddResult:
    """What an add did; tokens: what embedding cost, for the caller to meter."""

    added: int
    skipped: int  # already stored (same scope, source and content hash)
    removed: int  # replaced chunks of the source (add_document(replace=True))
    tokens: int
    ids: tuple[int, ...]  # the added chunks' ids
    after: Resume = START  # where a text continuing this document would start


@dataclass(frozen=True)
class Limits:
    """Per scope: an agent's own memory, an owner's knowledge base. 0: unlimited."""

    agent_chunks: int = 20_000
    agent_bytes: int = 16 * 1024 * 1024
    owner_chunks: int = 100_000
    owner_bytes: int = 64 * 1024 * 1024

    def of(self, scope: Scope) -> tuple[int, int]:
        """(chunks, bytes) allowed in SCOPE."""
        if scope.kind == "agent":
            return self.agent_chunks, self.agent_bytes
        return self.owner_chunks, self.owner_bytes


@dataclass(frozen=True)
class EmbedResult:
    vectors: list[list[float]]  # one per text, in order
    tokens: int  # what the model read, to meter against quotas


class Embedded(Protocol):
    """What an embedder answers (an EmbedResult, or agentd.modelclient's
    Embeddings as it is)."""

    @property
    def vectors(self) -> Sequence[Sequence[float]]: ...
    @property
    def tokens(self) -> int: ...


class Embedder(Protocol):
    """The inference service's embed operation, as the memory uses it."""

    async def embed(self, texts: list[str]) -> Embedded: ...
