"""Memories: the memory as callers reach it, authorized, metered and audited.

The engine side of the Memory and Runtime interfaces (agentd.api.memory,
agentd.api.runtime). Invariants, and why:
- A scope is named as callers know it ("agent/NAME", "knowledge",
  "knowledge/UID") and resolved here to the store's ("agent", agent id) or
  ("owner", uid): an agent's memory follows its id, never its recycled name.
- Every call asks agentd.policy with the resource in hand: a person reads and
  writes its own agents' memories and its own knowledge base; an
  administrator everyone's; an agent only its own memory and its owner's
  knowledge (Runtime.Remember/Recall, which name no scope at all).
- Embedding is metered like generation: the tokens an add or a search cost
  are charged to the agent's quota (knowledge: its owner's), after a check
  that they fit; a spent quota refuses before anything is embedded.
- Every write and removal is an audit row (memory.added, memory.removed).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..agent import Agent, AgentTable, resource
from ..audit import AuditLog
from ..errors import InvalidArgument, NoSuchAgent
from ..homes import companions
from ..modelclient import Embeddings, ModelClient
from ..policy import Caller, Policy, Resource
from ..quotas import Meter
from .chunking import START, Resume
from .model import AddResult, Hit, Record, Scope
from .service import MemoryService

MAX_TEXT = 1 << 20  # one AddMemory: agentctl sends larger files in pieces
MAX_POSITION = 1 << 31  # a continued document's chunks (ContinueMemory)
MAX_OFFSET = 1 << 48  # its byte and line offsets: a document of 256 TiB
MAX_REMEMBER = 16 * 1024
MAX_QUERY = 4096
MAX_K, MAX_RECALL_K, MAX_LIST = 50, 20, 1000
# One embedding token per 3 bytes is an upper bound for English through
# WordPiece (~4.3 bytes per token measured on the repo's docs), held before an
# add so that a spent quota refuses before the model works.
BYTES_PER_TOKEN_BOUND = 3
RUNTIME_KINDS = ("fact", "lesson")


class Memories:
    def __init__(
        self,
        service: MemoryService,
        policy: Policy,
        audit: AuditLog,
        meter: Meter,
        agents: AgentTable,
    ) -> None:
        self.service = service
        self.policy = policy
        self.audit = audit
        self.meter = meter
        self.agents = agents

    def _find(self, name: str) -> Agent | None:
        return self.agents.find(name)

    def _by_id(self, agent_id: int) -> Agent | None:
        """Removed agents too: a memory is its agent's owner's until it is dropped."""
        return self.agents.by_id(agent_id, live=False)

    # -- scopes --------------------------------------------------------------------------
    def resolve(self, caller: Caller, name: str, action: str) -> tuple[Scope, Agent | None]:
        """The store's scope for NAME, if CALLER may do ACTION on it (audited if not)."""
        self.policy.check(caller, action)
        kind, _, rest = name.partition("/")
        if kind == "agent" and rest:
            agent = self._find(rest)
            if agent is None or agent.state != "present":
                raise NoSuchAgent(f"no agent named {rest!r}")
            self.policy.check(caller, action, resource(agent))
            return Scope("agent", agent.id), agent
        if kind == "knowledge":
            uid = caller.uid if not rest else _uid(rest)
            self.policy.check(caller, action, _knowledge(uid))
            return Scope("owner", uid), None
        raise InvalidArgument(
            f"memory scope must be agent/NAME, knowledge or knowledge/UID: {name!r}"
        )

    def _check_record(self, caller: Caller, rec: Record, action: str) -> None:
        """May CALLER do ACTION on the chunk REC (PermissionDenied, audited)?"""
        if rec.scope.kind == "owner":
            self.policy.check(caller, action, _knowledge(rec.scope.id))
            return
        agent = self._by_id(rec.scope.id)
        res = resource(agent) if agent else Resource("agent", f"#{rec.scope.id}", -1)
        self.policy.check(caller, action, res)

    def describe(self, scope: Scope) -> str:
        """SCOPE as callers name it."""
        if scope.kind == "owner":
            return f"knowledge/{scope.id}"
        agent = self._by_id(scope.id)
        return f"agent/{agent.name}" if agent else f"agent#{scope.id}"

    # -- people (the Memory interface) ---------------------------------------------------
    async def add(
        self,
        caller: Caller,
        name: str,
        source: str,
        text: str,
        replace: bool,
        at: Resume = START,
    ) -> dict[str, Any]:
        scope, agent = self.resolve(caller, name, "memory.write")
        if not source or len(source) > 512 or "\n" in source:
            raise InvalidArgument("source must be 1..512 characters on one line")
        if len(text.encode()) > MAX_TEXT:
            raise InvalidArgument(f"text is over {MAX_TEXT} bytes: send it in pieces")
        bound = len(text.encode()) // BYTES_PER_TOKEN_BOUND + 1
        self._admit(caller, scope, agent, bound)
        started = time.monotonic()
        result = await self.service.add_document(scope, source, text, replace=replace, at=at)
        self._charge(scope, agent, result.tokens, time.monotonic() - started, None)
        self._audit_add(caller, scope, agent, source, result)
        return {"scope": self.describe(scope), "source": source, **_result(result)}

    async def search(
        self, caller: Caller, names: Sequence[str], query: str, k: int
    ) -> list[dict[str, Any]]:
        if not names or len(names) > 8:
            raise InvalidArgument("search 1..8 scopes")
        _check_query(query, k, MAX_K)
        resolved = [self.resolve(caller, n, "memory.read") for n in names]
        scope, agent = resolved[0]
        self._admit(caller, scope, agent, len(query.encode()))
        started = time.monotonic()
        found = await self.service.search([s for s, _ in resolved], query, k)
        self._charge(scope, agent, found.tokens, time.monotonic() - started, None)
        return [self.hit(h) for h in found.hits]

    async def listing(
        self, caller: Caller, name: str, source: str, offset: int, limit: int
    ) -> list[dict[str, Any]]:
        scope, _ = self.resolve(caller, name, "memory.read")
        if not 1 <= limit <= MAX_LIST:
            raise InvalidArgument(f"limit must be 1..{MAX_LIST}")
        rows = await self.service.list(scope, source or None, limit=limit, offset=offset)
        return [self.record(r) for r in rows]

    async def get(self, caller: Caller, chunk_id: int) -> dict[str, Any]:
        self.policy.check(caller, "memory.read")
        rec = await self.service.get(chunk_id)
        self._check_record(caller, rec, "memory.read")
        return self.record(rec)

    async def remove(self, caller: Caller, ids: Sequence[int]) -> int:
        self.policy.check(caller, "memory.write")
        if not ids or len(ids) > MAX_LIST:
            raise InvalidArgument(f"remove 1..{MAX_LIST} ids")
        records = [await self.service.get(chunk_id) for chunk_id in ids]
        for rec in records:
            self._check_record(caller, rec, "memory.write")
        n = await self.service.remove(list(ids))
        for scope in {r.scope for r in records}:
            self._audit_removed(caller, scope, [r.id for r in records if r.scope == scope])
        return n

    async def remove_source(self, caller: Caller, name: str, source: str) -> int:
        scope, _ = self.resolve(caller, name, "memory.write")
        if source:
            n = await self.service.remove_source(scope, source)
        else:
            n = await self.service.drop_scope(scope)
        self._audit_removed(caller, scope, [], source=source or None, count=n)
        return n

    async def usage(self, caller: Caller, name: str) -> dict[str, Any]:
        scope, _ = self.resolve(caller, name, "memory.read")
        u = await self.service.usage(scope)
        chunks, size = self.service.limits.of(scope)
        return {
            "scope": self.describe(scope),
            "chunks": u.chunks,
            "bytes": u.bytes,
            "sources": u.sources,
            "limit_chunks": chunks,
            "limit_bytes": size,
        }

    # -- the agent itself (the Runtime interface) ----------------------------------------
    async def remember(
        self, agent: Agent, text: str, kind: str, task: int | None, source: str | None = None
    ) -> dict[str, Any]:
        """TEXT into AGENT's memory (its runtime, or agentd for it: a session's
        facts, SOURCE session/ID); metered and audited as the agent's."""
        if kind not in RUNTIME_KINDS:
            raise InvalidArgument(f"kind must be one of {', '.join(RUNTIME_KINDS)}")
        if not text.strip() or len(text.encode()) > MAX_REMEMBER:
            raise InvalidArgument(f"text must be 1..{MAX_REMEMBER} bytes")
        scope = Scope("agent", agent.id)
        caller = Caller(uid=agent.uid, name=agent.name)
        self._admit(caller, scope, agent, len(text.encode()) // BYTES_PER_TOKEN_BOUND + 1)
        started = time.monotonic()
        result = await self.service.remember(scope, text, kind=kind, task_id=task, source=source)
        self._charge(scope, agent, result.tokens, time.monotonic() - started, task)
        label = source or (f"task/{task}" if task else kind)
        self._audit_add(caller, scope, agent, label, result, kind=kind)
        return _result(result)

    async def recall(
        self, agent: Agent, query: str, k: int, task: int | None
    ) -> list[dict[str, Any]]:
        _check_query(query, k, MAX_RECALL_K)
        mine, knowledge = Scope("agent", agent.id), Scope("owner", agent.owner_uid)
        caller = Caller(uid=agent.uid, name=agent.name)
        self._admit(caller, mine, agent, len(query.encode()))
        started = time.monotonic()
        found = await self.service.search([mine, knowledge], query, k)
        self._charge(mine, agent, found.tokens, time.monotonic() - started, task)
        return [self.hit(h, short=True) for h in found.hits]

    # -- agent removal -------------------------------------------------------------------
    async def forget_agent(self, agent: Agent) -> int:
        """Drop AGENT's memory; with its home kept (an archive), first write it
        beside the archive as JSON lines (vectors included: re-importable)."""
        scope = Scope("agent", agent.id)
        if agent.archive and (await self.service.usage(scope)).chunks:
            await self.service.export_file(scope, _memory_archive(Path(agent.archive)))
        return await self.service.drop_scope(scope)

    async def reconcile(self, live: Callable[[int], bool]) -> list[int]:
        """Drop the memories of agents no longer present (a crash between the
        removal's commit and forget_agent): the ids dropped."""
        dropped = []
        for scope in await self.service.scopes():
            if scope.kind == "agent" and not live(scope.id):
                await self.service.drop_scope(scope)
                dropped.append(scope.id)
        return dropped

    # -- helpers -------------------------------------------------------------------------
    def _admit(self, caller: Caller, scope: Scope, agent: Agent | None, tokens: int) -> None:
        if agent is not None:
            self.meter.check(agent, caller.uid, tokens)
        else:
            self.meter.check_owner(scope.id, caller.uid, tokens)

    def _charge(
        self, scope: Scope, agent: Agent | None, tokens: int, seconds: float, task: int | None
    ) -> None:
        if tokens <= 0:
            return
        if agent is not None:
            self.meter.record(agent, "embed", tokens, 0, "ok", seconds, task)
        else:
            self.meter.record_owner(scope.id, "embed", tokens, seconds)

    def _audit_add(
        self,
        caller: Caller,
        scope: Scope,
        agent: Agent | None,
        source: str,
        result: AddResult,
        **detail: Any,
    ) -> None:
        self.audit.append(
            "memory.added",
            actor_uid=caller.uid,
            agent=agent.name if agent else None,
            agent_uid=agent.uid if agent else None,
            agent_id=agent.id if agent else None,
            scope=self.describe(scope),
            source=source,
            added=result.added,
            skipped=result.skipped,
            removed=result.removed,
            tokens=result.tokens,
            **detail,
        )

    def _audit_removed(
        self, caller: Caller, scope: Scope, ids: builtins.list[int], **detail: Any
    ) -> None:
        agent = self._by_id(scope.id) if scope.kind == "agent" else None
        self.audit.append(
            "memory.removed",
            actor_uid=caller.uid,
            agent=agent.name if agent else None,
            agent_uid=agent.uid if agent else None,
            agent_id=scope.id if scope.kind == "agent" else None,
            scope=self.describe(scope),
            ids=ids[:100],
            **({"count": len(ids)} | detail),
        )

    def record(self, r: Record) -> dict[str, Any]:
        return {
            "id": r.id,
            "scope": self.describe(r.scope),
            "source": r.source,
            "position": r.position,
            "heading": list(r.heading),
            "text": r.text,
            "kind": r.kind,
            "task": r.task_id or 0,
            "created": r.created,
            "sha256": r.sha256,
            "start_line": r.start_line,
            "end_line": r.end_line,
        }

    def hit(self, h: Hit, short: bool = False) -> dict[str, Any]:
        out = self.record(h)
        if short:  # the agent sees "agent" or "knowledge", not ids of people
            out["scope"] = "agent" if h.scope.kind == "agent" else "knowledge"
        out.update(score=round(h.score, 6), cosine=round(h.cosine, 4), keyword=h.keyword)
        return out


class ModelEmbedder:
    """The inference service's embed, as the memory's Embedder."""

    def __init__(self, client: ModelClient) -> None:
        self.client = client

    async def embed(self, texts: list[str]) -> Embeddings:
        return await self.client.embed(texts, agent="agentd-memory")


def _knowledge(uid: int) -> Resource:
    return Resource("knowledge", f"knowledge/{uid}", uid)


def _uid(text: str) -> int:
    if not text.isdigit() or int(text) > 0xFFFFFFFE:
        raise InvalidArgument(f"knowledge/UID needs a numeric UID: {text!r}")
    return int(text)


def _check_query(query: str, k: int, most: int) -> None:
    if not query.strip() or len(query.encode()) > MAX_QUERY:
        raise InvalidArgument(f"query must be 1..{MAX_QUERY} bytes")
    if not 1 <= k <= most:
        raise InvalidArgument(f"k must be 1..{most}")


def _result(r: AddResult) -> dict[str, Any]:
    return {
        "added": r.added,
        "skipped": r.skipped,
        "removed": r.removed,
        "tokens": r.tokens,
        "ids": list(r.ids),
        "next": {
            "position": r.after.position,
            "byte": r.after.byte,
            "line": r.after.line,
            "headings": [list(h) for h in r.after.headings],
        },
    }


def resume(position: int, byte: int, line: int, headings: Sequence[tuple[int, str]]) -> Resume:
    """Where a continued document's next piece starts, as a caller gave it
    (AddMemory's "next"), checked: InvalidArgument if it could not be one."""
    if not 0 <= position <= MAX_POSITION or not 0 <= byte <= MAX_OFFSET:
        raise InvalidArgument("position or byte offset out of range")
    if not 1 <= line <= MAX_OFFSET:
        raise InvalidArgument("line must be 1 or more")
    levels = [level for level, _ in headings]
    if any(not 1 <= lv <= 6 for lv in levels) or levels != sorted(set(levels)):
        raise InvalidArgument("headings: levels 1..6, outermost first, each once")
    if any("\n" in title for _, title in headings):
        raise InvalidArgument("headings: a title is one line")
    return Resume(position, byte, line, tuple((int(lv), str(t)) for lv, t in headings))


def _memory_archive(archive: Path) -> Path:
    """NAME-UID-STAMP.tar.gz -> NAME-UID-STAMP.memory.jsonl, beside it (pruned with
    the archive by the retention: agentd.homes.COMPANION_SUFFIXES)."""
    (path,) = [p for p in companions(archive) if p.name.endswith(".memory.jsonl")]
    return path


__all__ = ["Memories", "ModelEmbedder"]
