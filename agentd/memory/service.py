"""MemoryService: the memory as the event loop uses it, never blocking it.

Invariant: the database is touched only from one worker thread, which owns the
apsw connection (opened there, used there, closed there), so calls are
serialized and never run on the event loop; what waits on the model (the
embedder) is awaited on the loop, between two worker calls, never holding a
transaction. A write re-checks deduplication and limits inside its own
transaction, because another call may have run while its chunks were being
embedded.

Every operation that embeds returns the tokens it cost, for the caller to
meter against the agent's or owner's quota: the memory does not meter.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import dataclasses
import functools
import json
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InvalidArgument, MemoryDimensionMismatch, MemoryUnavailable
from . import schema
from .chunking import MAX_CHARS, START, Chunk, Resume, chunk_piece, chunk_text, content_hash
from .model import KINDS, AddResult, Embedder, Hit, Limits, Record, Scope, Usage, scope
from .search import SearchParams, search
from .store import MemoryStore, NewChunk, Replace

T = TypeVar("T")

EMBED_BATCH = 32  # texts per embed call: one model request, bounded size
EXPORT_PAGE = 256


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    tokens: int  # embedding the query cost


class MemoryService:
    def __init__(
        self,
        path: Path,
        embedder: Embedder,
        *,
        dimension: int = schema.DEFAULT_DIMENSION,
        limits: Limits | None = None,
        params: SearchParams | None = None,
        max_chars: int = MAX_CHARS,
        batch: int = EMBED_BATCH,
        extension: str | None = None,
    ) -> None:
        self.path = path
        self.embedder = embedder
        self.dimension = dimension
        self.limits = limits or Limits()
        self.params = params or SearchParams()
        self.max_chars = max_chars
        self.batch = batch
        self._extension = extension
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._store: MemoryStore | None = None
        self.worker: int | None = None  # the worker thread's ident, once open

    # -- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        """Start the worker and open the database in it (MemoryUnavailable,
        MemoryDimensionMismatch: the memory cannot be used; agentd may run without)."""
        if self._executor is not None:
            return
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="agentd-memory"
        )
        try:
            self._store = await self._run(MemoryStore, self.path, self.dimension, self._extension)
            self.worker = await self._run(threading.get_ident)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            if self._store is not None:
                await self._run(self._store.close)
        finally:
            self._store = None
            self._executor.shutdown(wait=False)  # idle: its thread ends at once
            self._executor = None

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._executor is None:
            raise MemoryUnavailable("the memory is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """The store's method NAME, run in the worker."""
        if self._store is None:
            raise MemoryUnavailable("the memory is not open")
        return await self._run(getattr(self._store, name), *args, **kwargs)

    # -- adding --------------------------------------------------------------------------
    async def add_document(
        self,
        where: tuple[str, int],
        source: str,
        text: str,
        *,
        replace: bool = False,
        kind: str = "document",
        task_id: int | None = None,
        at: Resume = START,
    ) -> AddResult:
        """TEXT chunked (headings, paragraphs), the chunks not stored yet embedded
        and stored in SCOPE under SOURCE; with REPLACE, the source's chunks the
        new text no longer has are removed. AT: where TEXT continues a document
        sent in pieces. All or nothing."""
        target = scope(where)
        _check_source(source)
        _check_kind(kind)
        if replace and at != START:
            raise InvalidArgument("a continued document cannot replace its source")
        chunks, after = await self._run(chunk_piece, text, source, self.max_chars, at)
        result = await self._add(target, chunks, kind, task_id, replace)
        return dataclasses.replace(result, after=after)

    async def remember(
        self,
        where: tuple[str, int],
        text: str,
        kind: str = "fact",
        task_id: int | None = None,
        source: str | None = None,
    ) -> AddResult:
        """A lesson or fact (chunked like a document if it is long); its source
        is SOURCE, else 'task/ID' for a task's, else the kind."""
        target = scope(where)
        _check_kind(kind)
        label = source or (f"task/{task_id}" if task_id is not None else kind)
        _check_source(label)
        chunks = await self._run(chunk_text, text, label, self.max_chars)
        return await self._add(target, chunks, kind, task_id, replace=False)

    async def _add(
        self, target: Scope, chunks: list[Chunk], kind: str, task_id: int | None, replace: bool
    ) -> AddResult:
        if not chunks:
            raise InvalidArgument("nothing to remember: the text is empty")
        plan = None
        if replace:
            plan = Replace(chunks[0].source, frozenset(c.sha256 for c in chunks))
        # Checked before embedding (no tokens spent on what would be refused),
        # and again in the writing transaction.
        fresh = await self._call("plan", target, chunks, self.limits, plan)
        todo = [chunks[i] for i in fresh]
        vectors, tokens = await self._embed([c.embed_text for c in todo])
        new = [
            NewChunk(
                source=c.source,
                position=c.index,
                text=c.text,
                sha256=c.sha256,
                vector=v,
                kind=kind,
                heading=c.heading,
                task_id=task_id,
                start_byte=c.start_byte,
                end_byte=c.end_byte,
                start_line=c.start_line,
                end_line=c.end_line,
            )
            for c, v in zip(todo, vectors, strict=True)
        ]
        ids, _, removed = await self._call("add", target, new, self.limits, plan)
        return AddResult(
            added=len(ids),
            skipped=len(chunks) - len(ids),
            removed=removed,
            tokens=tokens,
            ids=tuple(ids),
        )

    async def _embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        vectors: list[list[float]] = []
        tokens = 0
        for i in range(0, len(texts), self.batch):
            part = texts[i : i + self.batch]
            result = await self.embedder.embed(part)
            if len(result.vectors) != len(part):
                raise MemoryUnavailable(
                    f"the embedder returned {len(result.vectors)} vectors for {len(part)} texts"
                )
            for v in result.vectors:
                if len(v) != self.dimension:
                    raise MemoryDimensionMismatch(
                        f"the embedding model gives {len(v)}-dimensional vectors; "
                        f"the memory holds {self.dimension}"
                    )
            vectors.extend(list(v) for v in result.vectors)
            tokens += result.tokens
        return vectors, tokens

    # -- reading -------------------------------------------------------------------------
    async def search(
        self,
        scopes: Sequence[tuple[str, int]],
        query: str,
        k: int = 5,
        kinds: Sequence[str] | None = None,
    ) -> SearchResult:
        """The K chunks of SCOPES most relevant to QUERY (none if nothing is)."""
        targets = [scope(s) for s in scopes]
        if not query.strip():
            raise InvalidArgument("an empty memory query")
        if k < 1:
            raise InvalidArgument(f"k must be positive: {k}")
        for kind in kinds or ():
            _check_kind(kind)
        vectors, tokens = await self._embed([query])
        if self._store is None:
            raise MemoryUnavailable("the memory is not open")
        hits = await self._run(
            search, self._store, targets, vectors[0], query, k, self.params, kinds
        )
        return SearchResult(hits=hits, tokens=tokens)

    async def get(self, chunk_id: int) -> Record:
        record: Record = await self._call("get", chunk_id)
        return record

    async def list(
        self, where: tuple[str, int], source: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Record]:
        if limit < 0 or offset < 0:
            raise InvalidArgument("limit and offset must not be negative")
        records: list[Record] = await self._call("list_chunks", scope(where), source, limit, offset)
        return records

    async def usage(self, where: tuple[str, int]) -> Usage:
        usage: Usage = await self._call("usage", scope(where))
        return usage

    # -- removing ------------------------------------------------------------------------
    async def remove(
        self, ids: Sequence[int], within: Sequence[tuple[str, int]] | None = None
    ) -> int:
        """Remove chunks IDS, all or none (NoSuchMemory names those not found, or
        not in the scopes WITHIN when given)."""
        targets = None if within is None else [scope(s) for s in within]
        n: int = await self._call("remove", list(ids), targets)
        return n

    async def remove_source(self, where: tuple[str, int], source: str) -> int:
        n: int = await self._call("remove_source", scope(where), source)
        return n

    async def scopes(self) -> builtins.list[Scope]:
        """Every scope that holds a chunk (agentd reconciles them with its agents)."""
        rows = await self._call(
            "query", "SELECT scope_kind, scope_id FROM scope_usage WHERE chunks > 0"
        )
        return [Scope(str(k), int(i)) for k, i in rows]

    async def drop_scope(self, where: tuple[str, int]) -> int:
        """Everything of SCOPE (an agent removed): chunks, keywords, vectors."""
        n: int = await self._call("drop_scope", scope(where))
        return n

    # -- export and import ---------------------------------------------------------------
    async def export(self, where: tuple[str, int]) -> AsyncIterator[dict[str, Any]]:
        """SCOPE's chunks as JSON-ready dicts (one JSON line each), page by page."""
        target = scope(where)
        after = 0
        while True:
            page: builtins.list[dict[str, Any]] = await self._call(
                "export_page", target, after, EXPORT_PAGE
            )
            for row in page:
                yield row
            if len(page) < EXPORT_PAGE:
                return
            after = page[-1]["id"]

    async def export_file(self, where: tuple[str, int], path: Path) -> int:
        """SCOPE's chunks written to PATH as JSON lines (mode 0600, complete or
        absent: written beside it, then renamed): for an archived agent's home."""
        target = scope(where)
        if self._store is None:
            raise MemoryUnavailable("the memory is not open")
        return await self._run(_write_export, self._store, target, path)

    async def import_file(self, where: tuple[str, int], path: Path) -> AddResult:
        """A file export_file wrote, stored in SCOPE (duplicates skipped, all or
        nothing, no model needed: the vectors are in the file)."""
        target = scope(where)
        if self._store is None:
            raise MemoryUnavailable("the memory is not open")
        ids, skipped = await self._run(_read_import, self._store, target, path, self.limits)
        return AddResult(added=len(ids), skipped=skipped, removed=0, tokens=0, ids=tuple(ids))


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidArgument(f"memory kind must be one of {', '.join(KINDS)}: {kind!r}")


def _check_source(source: str) -> None:
    if not source or len(source) > 4096 or "\0" in source:
        raise InvalidArgument("a memory source is a non-empty label of at most 4096 characters")


def _write_export(store: MemoryStore, where: Scope, path: Path) -> int:
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with open(fd, "w", encoding="utf-8") as f:
            after = 0
            while page := store.export_page(where, after, EXPORT_PAGE):
                for row in page:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += len(page)
                after = page[-1]["id"]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def _read_import(
    store: MemoryStore, where: Scope, path: Path, limits: Limits
) -> tuple[list[int], int]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise InvalidArgument(f"{path}:{n}: not JSON: {e}") from None
            if not isinstance(row, dict) or content_hash(str(row.get("text"))) != row.get("sha256"):
                raise InvalidArgument(f"{path}:{n}: not an exported memory chunk")
            rows.append(row)
    return store.restore(where, rows, limits)
