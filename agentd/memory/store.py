"""MemoryStore: the memory database's reads and writes, synchronous.

Invariant: one thread at a time uses a MemoryStore (agentd.memory.service runs
every call in its single worker thread), and every write is one transaction:
an add stores all of its chunks or, refused by a limit or failing, none.

Limits are counted per scope (an agent's memory, an owner's knowledge base)
in chunks and in UTF-8 bytes of text, checked inside the writing transaction,
so two adds cannot both pass a check that only one of them fits.
"""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import apsw

from ..errors import (
    InvalidArgument,
    MemoryDimensionMismatch,
    MemoryLimitExceeded,
    NoSpace,
    NoSuchMemory,
)
from . import schema
from .model import KINDS, Limits, Record, Scope, Usage, scope

_RECORD_COLUMNS = (
    "id, scope_kind, scope_id, source, position, heading, text, kind, task_id, sha256, "
    "created, start_byte, end_byte, start_line, end_line"
)


class Content(Protocol):
    """What deduplication and limits look at (a chunking.Chunk or a NewChunk)."""

    @property
    def source(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def text(self) -> str: ...


@dataclass(frozen=True)
class Replace:
    """add_document(replace=True): SOURCE's chunks whose hashes are not in KEEP
    (the new text's) are removed in the add's transaction."""

    source: str
    keep: frozenset[str]


@dataclass(frozen=True)
class NewChunk:
    """A chunk to store, with its vector (already embedded)."""

    source: str
    position: int
    text: str
    sha256: str
    vector: Sequence[float]
    kind: str = "document"
    heading: tuple[str, ...] = ()
    task_id: int | None = None
    start_byte: int = 0
    end_byte: int = 0
    start_line: int = 0
    end_line: int = 0
    created: float | None = None  # now, unless restored from an export


def pack(vector: Sequence[float]) -> bytes:
    """float32, little-endian: sqlite-vec's float vector format."""
    return struct.pack(f"<{len(vector)}f", *vector)


def unpack(blob: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(blob) // 4}f", blob))


class MemoryStore:
    def __init__(
        self, path: Path, dimension: int = schema.DEFAULT_DIMENSION, extension: str | None = None
    ) -> None:
        self.path = path
        self.dimension = dimension
        self.db = schema.connect(path, dimension, extension)

    def close(self) -> None:
        self.db.close()

    # -- reads ---------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.db.execute(sql, params))

    def usage(self, where: Scope) -> Usage:
        chunks, size = self._used(where)
        ((sources,),) = self.query(
            "SELECT count(DISTINCT source) FROM chunks WHERE scope_kind = ? AND scope_id = ?",
            where,
        )
        return Usage(chunks=chunks, bytes=size, sources=sources)

    def _used(self, where: Scope) -> tuple[int, int]:
        """(chunks, bytes) in SCOPE, as the triggers keep them."""
        rows = self.query(
            "SELECT chunks, bytes FROM scope_usage WHERE scope_kind = ? AND scope_id = ?", where
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def known_hashes(self, where: Scope, source: str) -> set[str]:
        rows = self.query(
            "SELECT sha256 FROM chunks WHERE scope_kind = ? AND scope_id = ? AND source = ?",
            (*where, source),
        )
        return {h for (h,) in rows}

    def get(self, chunk_id: int) -> Record:
        rows = self.query(f"SELECT {_RECORD_COLUMNS} FROM chunks WHERE id = ?", (chunk_id,))
        if not rows:
            raise NoSuchMemory(f"no memory chunk {chunk_id}")
        return _record(rows[0])

    def records(self, ids: Iterable[int]) -> dict[int, Record]:
        ids = list(ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.query(f"SELECT {_RECORD_COLUMNS} FROM chunks WHERE id IN ({marks})", ids)
        return {row[0]: _record(row) for row in rows}

    def list_chunks(
        self, where: Scope, source: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Record]:
        """SCOPE's chunks by source and position (the order a reader expects)."""
        sql = f"SELECT {_RECORD_COLUMNS} FROM chunks WHERE scope_kind = ? AND scope_id = ?"
        params: list[Any] = [*where]
        if source is not None:
            sql += " AND source = ?"
            params.append(source)
        sql += " ORDER BY source, position, id LIMIT ? OFFSET ?"
        return [_record(r) for r in self.query(sql, [*params, limit, offset])]

    def export_page(self, where: Scope, after_id: int, limit: int) -> list[dict[str, Any]]:
        """Up to LIMIT of SCOPE's chunks with ids above AFTER_ID, as JSON-ready
        dicts (the vector as base64 float32, so an import needs no model)."""
        rows = self.query(
            f"SELECT {_RECORD_COLUMNS}, vector FROM chunks WHERE scope_kind = ? AND scope_id = ? "
            "AND id > ? ORDER BY id LIMIT ?",
            (*where, after_id, limit),
        )
        out = []
        for row in rows:
            r = _record(row[:-1])
            out.append(
                {
                    "id": r.id,
                    "source": r.source,
                    "position": r.position,
                    "heading": list(r.heading),
                    "text": r.text,
                    "kind": r.kind,
                    "task_id": r.task_id,
                    "sha256": r.sha256,
                    "created": r.created,
                    "start_byte": r.start_byte,
                    "end_byte": r.end_byte,
                    "start_line": r.start_line,
                    "end_line": r.end_line,
                    "dimension": len(row[-1]) // 4,
                    "vector": base64.b64encode(row[-1]).decode(),
                }
            )
        return out

    # -- writes --------------------------------------------------------------------------
    def plan(
        self,
        where: Scope,
        chunks: Sequence[Content],
        limits: Limits,
        replace: Replace | None = None,
    ) -> list[int]:
        """The indexes of CHUNKS not stored yet (same scope, source and content
        hash; the first of equal ones), once they are checked to fit SCOPE's
        limits after REPLACE's removals: MemoryLimitExceeded if not. Reads only."""
        stored: dict[str, set[str]] = {}  # source -> its hashes, stored or planned
        fresh: list[int] = []
        for i, c in enumerate(chunks):
            hashes = stored.get(c.source)
            if hashes is None:
                hashes = stored[c.source] = self.known_hashes(where, c.source)
                if replace is not None and c.source == replace.source:
                    hashes &= replace.keep
            if c.sha256 not in hashes:
                hashes.add(c.sha256)
                fresh.append(i)
        freed = self._replaced(where, replace) if replace is not None else (0, 0)
        self._check_limits(where, [chunks[i] for i in fresh], limits, freed)
        return fresh

    def add(
        self,
        where: Scope,
        chunks: Sequence[NewChunk],
        limits: Limits,
        replace: Replace | None = None,
    ) -> tuple[list[int], int, int]:
        """Store CHUNKS in SCOPE, skipping those already there (plan()); with
        REPLACE, that source's chunks whose hashes it does not keep are removed.
        All or nothing. Returns (added ids, skipped, removed)."""
        where = scope(where)
        for c in chunks:
            self._check(c)
        now = time.time()
        with self._transaction():
            fresh = self.plan(where, chunks, limits, replace)
            removed = 0
            if replace is not None:
                removed = self._remove_source_except(where, replace.source, replace.keep)
            ids = [self._insert(where, chunks[i], now) for i in fresh]
        return ids, len(chunks) - len(fresh), removed

    def remove(self, ids: Sequence[int], within: Sequence[Scope] | None = None) -> int:
        """Remove the chunks IDS (all or nothing: NoSuchMemory if one is not there,
        or not in the scopes WITHIN when given)."""
        ids = sorted(set(ids))
        found = self.records(ids)
        allowed = {scope(s) for s in within} if within is not None else None
        missing = [
            i
            for i in ids
            if i not in found or (allowed is not None and found[i].scope not in allowed)
        ]
        if missing:
            raise NoSuchMemory(f"no memory chunk {', '.join(map(str, missing))}")
        with self._transaction():
            for i in ids:
                self.db.execute("DELETE FROM chunks WHERE id = ?", (i,))
        return len(ids)

    def remove_source(self, where: Scope, source: str) -> int:
        with self._transaction():
            return self._remove_source_except(scope(where), source, ())

    def drop_scope(self, where: Scope) -> int:
        """Every chunk of SCOPE (an agent removed): rows, full-text and vectors."""
        where = scope(where)
        with self._transaction():
            n = self._used(where)[0]
            self.db.execute("DELETE FROM chunks WHERE scope_kind = ? AND scope_id = ?", where)
            self.db.execute("DELETE FROM scope_usage WHERE scope_kind = ? AND scope_id = ?", where)
        return n

    def restore(
        self, where: Scope, rows: Iterable[dict[str, Any]], limits: Limits
    ) -> tuple[list[int], int]:
        """Exported rows (export_page's dicts) stored in SCOPE, all or nothing.
        Returns (added ids, skipped duplicates)."""
        chunks = [self._from_export(r) for r in rows]
        ids, skipped, _ = self.add(where, chunks, limits)
        return ids, skipped

    def _from_export(self, row: dict[str, Any]) -> NewChunk:
        try:
            vector = unpack(base64.b64decode(row["vector"], validate=True))
            return NewChunk(
                source=str(row["source"]),
                position=int(row["position"]),
                text=str(row["text"]),
                sha256=str(row["sha256"]),
                vector=vector,
                kind=str(row.get("kind", "document")),
                heading=tuple(str(h) for h in row.get("heading", ())),
                task_id=None if row.get("task_id") is None else int(row["task_id"]),
                start_byte=int(row.get("start_byte", 0)),
                end_byte=int(row.get("end_byte", 0)),
                start_line=int(row.get("start_line", 0)),
                end_line=int(row.get("end_line", 0)),
                created=float(row["created"]) if "created" in row else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidArgument(f"not an exported memory chunk: {e}") from None

    def _check(self, c: NewChunk) -> None:
        if len(c.vector) != self.dimension:
            raise MemoryDimensionMismatch(
                f"a {len(c.vector)}-dimensional vector for a memory of {self.dimension}"
            )
        if c.kind not in KINDS:
            raise InvalidArgument(f"memory kind must be one of {', '.join(KINDS)}: {c.kind!r}")
        if not c.text:
            raise InvalidArgument("an empty memory chunk")

    def _check_limits(
        self, where: Scope, fresh: Sequence[Content], limits: Limits, freed: tuple[int, int]
    ) -> None:
        max_chunks, max_bytes = limits.of(where)
        used_chunks, used_bytes = self._used(where)
        chunks = used_chunks - freed[0] + len(fresh)
        size = used_bytes - freed[1] + sum(len(c.text.encode()) for c in fresh)
        if max_chunks and chunks > max_chunks:
            raise MemoryLimitExceeded(
                f"memory {_named(where)} would hold {chunks} chunks, "
                f"over its limit of {max_chunks}: "
                "nothing was added"
            )
        if max_bytes and size > max_bytes:
            raise MemoryLimitExceeded(
                f"memory {_named(where)} would hold {size} bytes, over its limit of {max_bytes}: "
                "nothing was added"
            )

    def _insert(self, where: Scope, c: NewChunk, now: float) -> int:
        self.db.execute(
            "INSERT INTO chunks (scope_kind, scope_id, source, position, heading, text, sha256,"
            " kind, task_id, created, bytes, start_byte, end_byte, start_line, end_line, vector)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                *where,
                c.source,
                c.position,
                json.dumps(list(c.heading)),
                c.text,
                c.sha256,
                c.kind,
                c.task_id,
                now if c.created is None else c.created,
                len(c.text.encode()),
                c.start_byte,
                c.end_byte,
                c.start_line,
                c.end_line,
                pack(c.vector),
            ),
        )
        return int(self.db.last_insert_rowid())

    def _replaced(self, where: Scope, replace: Replace) -> tuple[int, int]:
        """(chunks, bytes) that REPLACE removes."""
        sql, params = _source_except(where, replace.source, replace.keep)
        ((n, size),) = self.query(
            f"SELECT count(*), coalesce(sum(bytes), 0) FROM chunks {sql}", params
        )
        return int(n), int(size)

    def _remove_source_except(self, where: Scope, source: str, keep: Collection[str]) -> int:
        sql, params = _source_except(where, source, keep)
        ((n,),) = self.query(f"SELECT count(*) FROM chunks {sql}", params)
        self.db.execute(f"DELETE FROM chunks {sql}", params)
        return int(n)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE .. COMMIT, rolled back on any exception; a full disk is NoSpace."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException as e:
            if not self.db.getautocommit():
                self.db.execute("ROLLBACK")
            if isinstance(e, apsw.FullError):
                raise NoSpace(f"{self.path.parent} is full: nothing was changed") from None
            raise


def _source_except(where: Scope, source: str, keep: Collection[str]) -> tuple[str, list[Any]]:
    """WHERE clause and parameters: SOURCE's chunks in SCOPE but those hashed KEEP."""
    sql = "WHERE scope_kind = ? AND scope_id = ? AND source = ?"
    if keep:
        sql += f" AND sha256 NOT IN ({','.join('?' * len(keep))})"
    return sql, [*where, source, *keep]


def _record(row: Sequence[Any]) -> Record:
    return Record(
        id=row[0],
        scope=Scope(row[1], row[2]),
        source=row[3],
        position=row[4],
        heading=tuple(json.loads(row[5])),
        text=row[6],
        kind=row[7],
        task_id=row[8],
        sha256=row[9],
        created=row[10],
        start_byte=row[11],
        end_byte=row[12],
        start_line=row[13],
        end_line=row[14],
    )


def _named(where: Scope) -> str:
    """A scope as a refusal names it (the store knows ids, not agent names)."""
    return f"of agent #{where.id}" if where.kind == "agent" else f"knowledge of uid {where.id}"
