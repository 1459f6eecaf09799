"""AgentdClient's calls of the Sessions interface (issue 13), as a mixin.

Like agentctl.client_memory: every call goes through agentctl.client's _call
(the one translation point), every JSON reply through its _json, and a
message's stream through its _json_stream (an error line becomes a
ClientError); AgentdClient hands the three over as class attributes and makes
the proxy `sessions` (the Sessions interface on the root object).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from .marshal import CHAT_OPTIONS, variants


class SessionCalls:
    sessions: Any  # the SessionsInterface proxy, made by AgentdClient
    _translated: Callable[[Awaitable[Any]], Awaitable[Any]]
    _reply: Callable[[str, type[Any], str], Any]
    _stream: Callable[[int], AsyncIterator[dict[str, Any]]]

    async def chat_in_session(
        self, agent: str, session: int, message: str, options: Mapping[str, Any] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """folded?, queued, token... then done (with "session"); SESSION 0 starts one."""
        opts = variants(dict(options or {}), CHAT_OPTIONS, "chat option")
        fd = await self._translated(self.sessions.chat_in_session(agent, session, message, opts))
        async for event in self._stream(fd):
            yield event

    async def list_sessions(self, agent: str = "") -> list[dict[str, Any]]:
        text = await self._translated(self.sessions.list_sessions(agent))
        return [s for s in self._reply(text, list, "ListSessions") if isinstance(s, dict)]

    async def get_session(self, session: int) -> dict[str, Any]:
        text = await self._translated(self.sessions.get_session(session))
        found: dict[str, Any] = self._reply(text, dict, "GetSession")
        return found

    async def remove_session(self, session: int) -> None:
        await self._translated(self.sessions.remove_session(session))
