"""The Memory object: owners' and administrators' view of memories and knowledge.

Authorization, metering and audit are the engine's (agentd.memory.memories,
policy memory.read and memory.write); this layer names each method's action,
bounds its arguments and carries JSON both ways.
"""

from __future__ import annotations

import json

from sdbus import dbus_method_async_override

from ..limits import Bound
from ..memory.memories import MAX_LIST, MAX_QUERY, MAX_TEXT, Memories, resume
from .access import Callers, rule
from .interfaces.memory import MemoryInterface

SCOPE = Bound(64 + 7)  # "knowledge/4294967294", "agent/" + an agent name
SOURCE = Bound(512)
SCOPES = Bound(SCOPE.chars, items=8, depth=1)
IDS = Bound(1, items=MAX_LIST, depth=1)
HEADINGS = Bound(1024, items=6, depth=2)  # Markdown's six levels


class MemoryObject(MemoryInterface):
    def __init__(self, memories: Memories, callers: Callers) -> None:
        super().__init__()
        self.memories = memories
        self.callers = callers

    @dbus_method_async_override()
    @rule("memory.write", limits={"scope": SCOPE, "source": SOURCE, "text": Bound(MAX_TEXT)})
    async def add_memory(self, scope: str, source: str, text: str, replace: bool) -> str:
        caller = await self.callers.current()
        return _json(await self.memories.add(caller, scope, source, text, replace))

    @dbus_method_async_override()
    @rule(
        "memory.write",
        limits={"scope": SCOPE, "source": SOURCE, "text": Bound(MAX_TEXT), "headings": HEADINGS},
    )
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
        caller = await self.callers.current()
        at = resume(position, byte, line, headings)
        return _json(await self.memories.add(caller, scope, source, text, False, at))

    @dbus_method_async_override()
    @rule("memory.read", limits={"scopes": SCOPES, "query": Bound(MAX_QUERY)})
    async def search_memory(self, scopes: list[str], query: str, k: int) -> str:
        caller = await self.callers.current()
        return _json(await self.memories.search(caller, scopes, query, k))

    @dbus_method_async_override()
    @rule("memory.read", limits={"scope": SCOPE, "source": SOURCE})
    async def list_memory(self, scope: str, source: str, offset: int, limit: int) -> str:
        caller = await self.callers.current()
        return _json(await self.memories.listing(caller, scope, source, offset, limit))

    @dbus_method_async_override()
    @rule("memory.read")
    async def get_memory(self, id: int) -> str:
        return _json(await self.memories.get(await self.callers.current(), id))

    @dbus_method_async_override()
    @rule("memory.write", limits={"ids": IDS})
    async def remove_memory(self, ids: list[int]) -> int:
        return await self.memories.remove(await self.callers.current(), ids)

    @dbus_method_async_override()
    @rule("memory.write", limits={"scope": SCOPE, "source": SOURCE})
    async def remove_memory_source(self, scope: str, source: str) -> int:
        caller = await self.callers.current()
        return await self.memories.remove_source(caller, scope, source)

    @dbus_method_async_override()
    @rule("memory.read", limits={"scope": SCOPE})
    async def memory_usage(self, scope: str) -> str:
        return _json(await self.memories.usage(await self.callers.current(), scope))


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)
