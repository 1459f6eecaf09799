"""The Sessions object: chat sessions, for agents' owners and administrators.

Authorization and audit are the engine's (agentd.sessions, policy model.chat
and session.*); this layer names each method's action, bounds its arguments
and carries JSON and streams.
"""

from __future__ import annotations

import json

from sdbus import dbus_method_async_override

from ..chat import MAX_CHARS
from ..limits import Bound
from ..sessions import Sessions
from ..thinking import parse_options
from .access import Callers, rule
from .interfaces.sessions import SessionsInterface
from .marshal import Variant, plain
from .streams import Streams

NAME = Bound(64)


class SessionsObject(SessionsInterface):
    def __init__(self, sessions: Sessions, callers: Callers, streams: Streams) -> None:
        super().__init__()
        self.sessions = sessions
        self.callers = callers
        self.streams = streams  # the Model object's: closed with it at shutdown

    @dbus_method_async_override()
    @rule("model.chat", limits={"agent": NAME, "message": Bound(MAX_CHARS)})
    async def chat_in_session(
        self, agent: str, session: int, message: str, options: dict[str, Variant]
    ) -> int:
        caller = await self.callers.current()
        events = self.sessions.chat(caller, agent, session, message, parse_options(plain(options)))
        return self.streams.open(events)

    @dbus_method_async_override()
    @rule("session.list", limits={"agent": NAME})
    async def list_sessions(self, agent: str) -> str:
        return json.dumps(self.sessions.listing(await self.callers.current(), agent))

    @dbus_method_async_override()
    @rule("session.show")
    async def get_session(self, id: int) -> str:
        return json.dumps(self.sessions.show(await self.callers.current(), id), ensure_ascii=False)

    @dbus_method_async_override()
    @rule("session.remove")
    async def remove_session(self, id: int) -> None:
        self.sessions.remove(await self.callers.current(), id)
