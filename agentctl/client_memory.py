"""AgentdClient's calls of the Memory interface (issue 13), as a mixin.

Invariant: every call here goes through agentctl.client's _call, the one
point where D-Bus errors become ClientError, and every JSON reply through its
_json, which refuses a reply of the wrong shape. This module imports nothing of
agentctl.client (that would be an import circle, and sdbus stays in
agentctl.client alone): AgentdClient hands both functions to the mixin as the
class attributes _translated and _reply, and makes the proxy `memory` (the
Memory interface on the root object, beside Manager).

The methods take and return plain values; the command modules
(agentctl.commands.memory and .knowledge, through agentctl.memory_verbs) and
their tests call them like any other AgentdClient method.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

# One AddMemory embeds its text before it answers: ~330 chunks for agentctl's
# 256 KiB pieces, ~1.7 s at the 200 chunks/s issue 13 aims for on 2 cores, but
# minutes behind a busy model. sd-bus gives up after 25 s; a piece may take 10 min.
ADD_TIMEOUT_USEC = 10 * 60 * 10**6
PAGE = 1000  # records per ListMemory (agentd's most)


class MemoryCalls:
    """Owners' and administrators' memory calls; scopes are "agent/NAME",
    "knowledge" (the caller's) and "knowledge/UID"."""

    memory: Any  # the MemoryInterface proxy, made by AgentdClient
    # client._call and client._json, set by AgentdClient (see the module docstring)
    _translated: Callable[[Awaitable[Any]], Awaitable[Any]]
    _reply: Callable[[str, type[Any], str], Any]
    _patience: Callable[[int], AbstractContextManager[None]]

    async def _json_call(self, call: Awaitable[str], shape: type[Any], method: str) -> Any:
        return self._reply(await self._translated(call), shape, method)

    async def add_memory(
        self, scope: str, source: str, text: str, replace: bool = False
    ) -> dict[str, Any]:
        """Store TEXT (at most 1 MiB) in SCOPE under SOURCE; with REPLACE, drop the
        chunks of SOURCE the text no longer has. {scope, source, added, skipped,
        removed, tokens, ids}."""
        with self._patience(ADD_TIMEOUT_USEC):
            call = self.memory.add_memory(scope, source, text, replace)
            result: dict[str, Any] = await self._json_call(call, dict, "AddMemory")
        return result

    async def continue_memory(
        self, scope: str, source: str, text: str, at: dict[str, Any]
    ) -> dict[str, Any]:
        """Store TEXT, the piece after the one whose reply's "next" is AT, as
        add_memory does (never replacing)."""
        headings = [(int(level), str(title)) for level, title in at.get("headings", [])]
        with self._patience(ADD_TIMEOUT_USEC):
            call = self.memory.continue_memory(
                scope,
                source,
                text,
                int(at["position"]),
                int(at["byte"]),
                int(at["line"]),
                headings,
            )
            result: dict[str, Any] = await self._json_call(call, dict, "ContinueMemory")
        return result

    async def search_memory(
        self, scopes: Sequence[str], query: str, k: int
    ) -> list[dict[str, Any]]:
        """The K chunks of SCOPES most relevant to QUERY, best first."""
        call = self.memory.search_memory(list(scopes), query, k)
        return _dicts(await self._json_call(call, list, "SearchMemory"))

    async def list_memory(
        self, scope: str, source: str = "", offset: int = 0, limit: int = PAGE
    ) -> list[dict[str, Any]]:
        """LIMIT (1..1000) records of SCOPE (of SOURCE unless empty) from OFFSET."""
        call = self.memory.list_memory(scope, source, offset, limit)
        return _dicts(await self._json_call(call, list, "ListMemory"))

    async def get_memory(self, chunk: int) -> dict[str, Any]:
        record: dict[str, Any] = await self._json_call(
            self.memory.get_memory(chunk), dict, "GetMemory"
        )
        return record

    async def remove_memory(self, ids: Sequence[int]) -> int:
        """Remove chunks IDS (1..1000), all or nothing; returns how many."""
        return int(await self._translated(self.memory.remove_memory(list(ids))))

    async def remove_memory_source(self, scope: str, source: str) -> int:
        """Remove SOURCE's chunks in SCOPE; an empty SOURCE removes the whole scope."""
        return int(await self._translated(self.memory.remove_memory_source(scope, source)))

    async def memory_usage(self, scope: str) -> dict[str, Any]:
        """{scope, chunks, bytes, sources, limit_chunks, limit_bytes} (0: no limit)."""
        usage: dict[str, Any] = await self._json_call(
            self.memory.memory_usage(scope), dict, "MemoryUsage"
        )
        return usage


def _dicts(items: list[Any]) -> list[dict[str, Any]]:
    return [item for item in items if isinstance(item, dict)]
