"""A fake of agentctl.client.AgentdClient and sample data, for the agentctl tests.

Test modules import this, never each other.
"""

from __future__ import annotations

import datetime
import fnmatch
import hashlib
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

NOBODY_UID = 3_999_999_999  # no such user on any test machine

AGENTS = [
    {
        "name": "scout",
        "template": "research",
        "state": "active",
        "uid": 61001,
        "owner_uid": 0,
        "path": "/org/agentos/agentd1/agent/scout",
    },
    {
        "name": "alpha",
        "template": "ops",
        "state": "failed",
        "uid": 61000,
        "owner_uid": NOBODY_UID,
        "path": "/org/agentos/agentd1/agent/alpha",
    },
]

DESCRIBE = {
    "name": "scout",
    "uid": 61001,
    "gid": 61001,
    "owner_uid": 0,
    "template": "research",
    "profile": "offline",
    "state": "ready",
    "home": "/home/agents/scout",
    "unit": "agent-scout.service",
    "created_at": 1700000000.5,
    "memory_max": 512 << 20,
    "cpu_quota": 150,
    "tasks_max": 128,
    "online": True,
    "active_state": "active",
    "sub_state": "running",
    "main_pid": 4242,
    "memory_current": 12_582_912,
    "cpu_usage_nsec": 1_500_000_000,
    "tasks_current": 3,
    "future_field": "x",
}


def entry(seq: int, **kw: Any) -> dict[str, Any]:
    e = {
        "seq": seq,
        "ts": 1700000000.0 + seq,
        "actor_uid": 0,
        "action": "agent.create",
        "agent": "scout",
        "agent_uid": 61001,
        "result": "ok",
        "detail": {"template": "t"},
        "hash": f"h{seq}",
    }
    e.update(kw)
    return e


def matches(e: dict[str, Any], types: Sequence[str]) -> bool:
    return not types or any(fnmatch.fnmatchcase(e["action"], t) for t in types)


def journal_entry(i: int, message: str) -> dict[str, Any]:
    return {"at": 1796150000.0 + i, "priority": 6, "identifier": "agent-scout", "pid": 42,
            "message": message}  # fmt: skip


class FakeClient:
    """The AgentdClient methods, answering from canned data and recording calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.fail: dict[str, Exception] = {}
        self.audit = [entry(i) for i in range(1, 8)]
        self.job_result = "done"
        self.live: list[dict[str, Any]] = []
        self.verdict = {"ok": True, "checked": 7, "message": "ok"}

    def _record(self, method: str, *args: Any) -> None:
        self.calls.append((method, *args))
        if method in self.fail:
            raise self.fail[method]

    async def create_agent(self, name: str, template: str, limits: dict) -> str:
        self._record("create_agent", name, template, limits)
        return f"/org/agentos/agentd1/agent/{name}"

    async def get_agent(self, name: str) -> str:
        self._record("get_agent", name)
        return f"/org/agentos/agentd1/agent/{name}"

    async def read_agent_journal(
        self, name: str, cursor: str, lines: int, wait_ms: int
    ) -> tuple[list[dict[str, Any]], str]:
        """Two lines, then (following) a third, then the end of the test."""
        self._record("read_agent_journal", name, cursor, lines, wait_ms)
        if not cursor:
            return [journal_entry(1, "agent scout online"), journal_entry(2, "working")], "c2"
        if cursor == "c2":
            return [journal_entry(3, "agent scout stopping")], "c3"
        raise KeyboardInterrupt  # what ends a real follow: Ctrl-C

    async def list_agents(self) -> list[dict[str, Any]]:
        self._record("list_agents")
        return [dict(a) for a in AGENTS]

    async def describe_agent(self, name: str) -> dict[str, Any]:
        self._record("describe_agent", name)
        return dict(DESCRIBE, name=name)

    async def start_agent(self, name: str, wait: bool = True) -> str:
        self._record("start_agent", name, wait)
        return self.job_result if wait else "queued"

    async def stop_agent(self, name: str, wait: bool = True) -> str:
        self._record("stop_agent", name, wait)
        return self.job_result if wait else "queued"

    async def remove_agent(self, name: str, keep_home: bool = False) -> None:
        self._record("remove_agent", name, keep_home)

    async def list_templates(self) -> list[dict[str, Any]]:
        self._record("list_templates")
        return [
            {
                "name": "research",
                "description": "Reads and summarises",
                "profile": "offline",
                "capabilities": ["read", "summarise"],
            }
        ]

    async def describe_template(self, name: str) -> dict[str, Any]:
        self._record("describe_template", name)
        return {
            "name": name,
            "capabilities": ["read"],
            "memory_max": 1 << 30,
            "system_prompt": "line one\nline two",
        }

    async def list_events(
        self, after_seq: int = 0, limit: int = 1000, types: Sequence[str] = ()
    ) -> list[dict]:
        """As agentd answers ListEvents: the rows after AFTER_SEQ whose action matches
        one of the globs TYPES (all rows if none), at most LIMIT."""
        self._record("list_events", after_seq, limit, tuple(types))
        return [e for e in self.audit if e["seq"] > after_seq and matches(e, types)][:limit]

    async def audit_head(self) -> int:
        self._record("audit_head")
        return max((e["seq"] for e in self.audit), default=0)

    async def verify_audit(self) -> dict[str, Any]:
        self._record("verify_audit")
        return self.verdict

    async def follow_events(
        self, after_seq: int = 0, types: Sequence[str] = ()
    ) -> AsyncIterator[dict[str, Any]]:
        self._record("follow_events", after_seq, tuple(types))
        for e in self.live:
            if e["seq"] > after_seq and matches(e, types):
                yield e

    async def list_task_steps(self, task: int) -> list[dict[str, Any]]:
        """A task not run step by step by the agent loop: no trace."""
        self._record("list_task_steps", task)
        return []

    async def reply_task(self, task: int, text: str) -> None:
        self._record("reply_task", task, text)

    async def status(self) -> dict[str, Any]:
        self._record("status")
        return {
            "version": "0.1.0",
            "start_timestamp": 1_700_000_000_000_000,
            "n_agents": 2,
            "n_online": 1,
            "config": {"uid_min": "61000", "admin_group": "agentadm"},
        }


def refusal(name: str, message: str) -> Exception:
    """The typed D-Bus error agentd sends as org.agentos.agentd1.Error.NAME."""
    from agentd.api.errors import BY_NAME, PREFIX

    return BY_NAME[PREFIX + name](message)


class MemoryProxy:
    """The Memory interface's proxy as agentd answers (JSON text), over a dict of
    chunks: one chunk per paragraph, the same text in a source stored once, the
    caller (uid 1000) owning "knowledge". refuse[METHOD] is raised by METHOD."""

    CALLER = 1000

    def __init__(self) -> None:
        self.chunks: dict[int, dict[str, Any]] = {}
        self.next_id = 1
        self.sent: list[tuple[Any, ...]] = []
        self.refuse: dict[str, Exception] = {}
        self.reply: dict[str, str] = {}  # METHOD -> this text instead of the JSON

    def _answer(self, method: str, *args: Any) -> None:
        self.sent.append((method, *args))
        if method in self.refuse:
            raise self.refuse[method]

    def _scope(self, scope: str) -> str:
        return f"knowledge/{self.CALLER}" if scope == "knowledge" else scope

    def _json(self, method: str, value: Any) -> str:
        return self.reply.get(method, json.dumps(value))

    async def add_memory(self, scope: str, source: str, text: str, replace: bool) -> str:
        self._answer("add_memory", scope, source, text, replace)
        return self._add("add_memory", scope, source, text, replace, {})

    async def continue_memory(
        self,
        scope: str,
        source: str,
        text: str,
        position: int,
        byte: int,
        line: int,
        headings: list[tuple[int, str]],
    ) -> str:
        self._answer("continue_memory", scope, source, text, position, byte, line, headings)
        at = {"position": position, "byte": byte, "line": line, "headings": headings}
        return self._add("continue_memory", scope, source, text, False, at)

    def _add(
        self, method: str, scope: str, source: str, text: str, replace: bool, at: dict[str, Any]
    ) -> str:
        """Paragraphs as chunks, numbered and located from AT (a continued piece)."""
        assert len(text.encode()) <= 1 << 20, "agentd takes at most 1 MiB"
        first = at.get("position", 0)
        scope = self._scope(scope)
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        have = {
            c["text"]: i
            for i, c in self.chunks.items()
            if (c["scope"], c["source"]) == (scope, source)
        }
        ids, skipped = [], 0
        for n, p in enumerate(paragraphs):
            if p in have:
                skipped += 1
                continue
            have[p] = self.next_id
            ids.append(self.next_id)
            self.chunks[self.next_id] = {
                "id": self.next_id,
                "scope": scope,
                "source": source,
                "position": first + n,
                "heading": [],
                "text": p,
                "kind": "document",
                "task": 0,
                "created": 1764500000.0 + self.next_id,
                "sha256": hashlib.sha256(p.encode()).hexdigest(),
                "start_line": 1,
                "end_line": 1 + p.count("\n"),
            }
            self.next_id += 1
        removed = 0
        if replace:
            gone = [i for t, i in have.items() if t not in paragraphs]
            for i in gone:
                del self.chunks[i]
            removed = len(gone)
        result = {"scope": scope, "source": source, "added": len(ids), "skipped": skipped}
        result.update(removed=removed, tokens=len(text) // 4, ids=ids)
        result["next"] = {
            "position": first + len(paragraphs),
            "byte": at.get("byte", 0) + len(text.encode()),
            "line": at.get("line", 1) + text.count("\n"),
            "headings": [],
        }
        return self._json(method, result)

    async def search_memory(self, scopes: list[str], query: str, k: int) -> str:
        self._answer("search_memory", scopes, query, k)
        wanted = {self._scope(s) for s in scopes}
        words = _words(query)
        hits = [
            dict(c, score=len(words & _words(c["text"])) / 60, cosine=0.5, keyword=True)
            for c in self.chunks.values()
            if c["scope"] in wanted and words & _words(c["text"])
        ]
        hits.sort(key=lambda h: -h["score"])
        return self._json("search_memory", hits[:k])

    def _of(self, scope: str, source: str) -> list[dict[str, Any]]:
        scope = self._scope(scope)
        return [
            c for c in self.chunks.values() if c["scope"] == scope and source in ("", c["source"])
        ]

    async def list_memory(self, scope: str, source: str, offset: int, limit: int) -> str:
        self._answer("list_memory", scope, source, offset, limit)
        return self._json("list_memory", self._of(scope, source)[offset : offset + limit])

    async def get_memory(self, chunk: int) -> str:
        self._answer("get_memory", chunk)
        if chunk not in self.chunks:
            raise refusal("NoSuchMemory", f"no memory chunk {chunk}")
        return self._json("get_memory", self.chunks[chunk])

    async def remove_memory(self, ids: list[int]) -> int:
        self._answer("remove_memory", ids)
        missing = [i for i in ids if i not in self.chunks]
        if missing:
            raise refusal("NoSuchMemory", f"no memory chunk {', '.join(map(str, missing))}")
        for i in ids:
            del self.chunks[i]
        return len(ids)

    async def remove_memory_source(self, scope: str, source: str) -> int:
        self._answer("remove_memory_source", scope, source)
        gone = self._of(scope, source)
        for c in gone:
            del self.chunks[c["id"]]
        return len(gone)

    async def memory_usage(self, scope: str) -> str:
        self._answer("memory_usage", scope)
        chunks = self._of(scope, "")
        usage = {
            "scope": self._scope(scope),
            "chunks": len(chunks),
            "bytes": sum(len(c["text"].encode()) for c in chunks),
            "sources": len({c["source"] for c in chunks}),
            "limit_chunks": 20000,
            "limit_bytes": 0,
        }
        return self._json("memory_usage", usage)


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def local_iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def invoke(client: Any, *args: str, tty: bool = False) -> Any:
    """agentctl ARGS run in-process against CLIENT (a stand-in for AgentdClient)."""
    from click.testing import CliRunner

    from agentctl.app import Env
    from agentctl.cli import cli

    return CliRunner(mix_stderr=False).invoke(
        cli, list(args), obj=Env(connect=lambda: client, tty=tty)
    )
