"""The Teams and Messages objects: teams and messages for people.

Authorization and audit are the engine's (agentd.teams, agentd.messages;
policy team.* and message.*); this layer names each method's action, bounds
its arguments and carries JSON.
"""

from __future__ import annotations

import json

from sdbus import dbus_method_async_override

from ..errors import InvalidArgument
from ..events import Events, TeamChanged
from ..limits import NAME, Bound
from ..messages import BODY_CHARS, MAX_WAIT_MS, SUBJECT_CHARS, Mailbox
from ..teams import Teams
from ..teams.service import DESCRIPTION_CHARS, MAX_MEMBERS
from .access import Callers, rule
from .interfaces.teams import MessagesInterface, TeamsInterface
from .marshal import Variant, plain

AGENTS = Bound(64, items=MAX_MEMBERS, depth=1, total=MAX_MEMBERS * 64)
SUBJECT = Bound(SUBJECT_CHARS)
BODY = Bound(BODY_CHARS)
LIST_OPTIONS = Bound(64, items=4, depth=2, total=256)


class TeamsObject(TeamsInterface):
    def __init__(self, teams: Teams, callers: Callers) -> None:
        super().__init__()
        self.teams = teams
        self.callers = callers

    def subscribe(self, events: Events) -> None:
        events.subscribe(TeamChanged, lambda e: self.team_changed.emit((e.team, e.event)))

    @dbus_method_async_override()
    @rule("team.create", limits={"name": NAME, "description": Bound(DESCRIPTION_CHARS)})
    async def create_team(self, name: str, description: str) -> None:
        await self.teams.create(await self.callers.current(), name, description)

    @dbus_method_async_override()
    @rule("team.manage", limits={"name": NAME})
    async def remove_team(self, name: str, restart: bool) -> str:
        return await self.teams.remove(await self.callers.current(), name, restart) or ""

    @dbus_method_async_override()
    @rule("team.manage", limits={"name": NAME, "agents": AGENTS})
    async def add_members(self, name: str, agents: list[str], restart: bool) -> None:
        await self.teams.add(await self.callers.current(), name, agents, restart)

    @dbus_method_async_override()
    @rule("team.manage", limits={"name": NAME, "agents": AGENTS})
    async def remove_members(self, name: str, agents: list[str], restart: bool) -> None:
        await self.teams.drop(await self.callers.current(), name, agents, restart)

    @dbus_method_async_override()
    @rule("team.list")
    async def list_teams(self) -> str:
        return json.dumps(self.teams.listing(await self.callers.current()), ensure_ascii=False)

    @dbus_method_async_override()
    @rule("team.show", limits={"name": NAME})
    async def get_team(self, name: str) -> str:
        info = await self.teams.show(await self.callers.current(), name)
        return json.dumps(info, ensure_ascii=False)


class MessagesObject(MessagesInterface):
    def __init__(self, mailbox: Mailbox, callers: Callers) -> None:
        super().__init__()
        self.mailbox = mailbox
        self.callers = callers

    @dbus_method_async_override()
    @rule("message.send", limits={"agent": NAME, "subject": SUBJECT, "body": BODY})
    async def send_message(self, agent: str, subject: str, body: str) -> int:
        caller = await self.callers.current()
        return self.mailbox.send_from_person(caller, agent, subject, body)

    @dbus_method_async_override()
    @rule("message.list", limits={"agent": NAME, "options": LIST_OPTIONS})
    async def list_messages(self, agent: str, options: dict[str, Variant]) -> str:
        caller = await self.callers.current()
        after, limit, wait_ms = _list_options(plain(options))
        if wait_ms:
            got = await self.mailbox.follow(caller, agent, after, limit, wait_ms / 1000)
        else:
            got = self.mailbox.listing(caller, agent, after, limit)
        return json.dumps(got, ensure_ascii=False)


def _list_options(options: dict[str, object]) -> tuple[int, int, int]:
    unknown = set(options) - {"after", "limit", "wait_ms"}
    if unknown:
        raise InvalidArgument(f"unknown option(s): {', '.join(sorted(unknown))}")
    values = []
    for key in ("after", "limit", "wait_ms"):
        v = options.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise InvalidArgument(f"{key} must be a non-negative integer")
        values.append(v)
    after, limit, wait_ms = values
    return after, limit, min(wait_ms, MAX_WAIT_MS)
