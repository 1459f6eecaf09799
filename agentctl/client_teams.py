"""AgentdClient's calls of the Teams and Messages interfaces (issue 15), as a mixin.

Like agentctl.client_goals: every call goes through agentctl.client's _call
(the one translation point), every JSON reply through its _json; AgentdClient
hands both over as class attributes and makes the proxies `teams` and
`messages` (both on the root object). This module needs no sdbus
(tests/unit/test_agentctl_layout.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from .marshal import variants

# ListMessages' options, as agentd.api.interfaces.teams documents them
MESSAGE_OPTIONS = {"after": "t", "limit": "u", "wait_ms": "u"}


class TeamCalls:
    teams: Any  # the TeamsInterface proxy, made by AgentdClient
    messages: Any  # the MessagesInterface proxy, made by AgentdClient
    _translated: Callable[[Awaitable[Any]], Awaitable[Any]]
    _reply: Callable[[str, type[Any], str], Any]

    # -- teams ----------------------------------------------------------------------
    async def create_team(self, name: str, description: str = "") -> None:
        await self._translated(self.teams.create_team(name, description))

    async def remove_team(self, name: str, restart: bool = False) -> str:
        """Remove team NAME; the path of its directory's archive ("" if it was empty)."""
        return str(await self._translated(self.teams.remove_team(name, restart)))

    async def add_members(self, name: str, agents: Sequence[str], restart: bool = False) -> None:
        await self._translated(self.teams.add_members(name, list(agents), restart))

    async def remove_members(self, name: str, agents: Sequence[str], restart: bool = False) -> None:
        await self._translated(self.teams.remove_members(name, list(agents), restart))

    async def list_teams(self) -> list[dict[str, Any]]:
        text = await self._translated(self.teams.list_teams())
        return [t for t in self._reply(text, list, "ListTeams") if isinstance(t, dict)]

    async def get_team(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self._reply(
            await self._translated(self.teams.get_team(name)), dict, "GetTeam"
        )
        return found

    # -- messages -------------------------------------------------------------------
    async def send_message(self, agent: str, body: str, subject: str = "") -> int:
        """Write BODY to AGENT; the message's id."""
        return int(await self._translated(self.messages.send_message(agent, subject, body)))

    async def list_messages(
        self, agent: str, options: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Messages to and from AGENT, oldest first; OPTIONS: after (ids above it),
        limit (1..500), wait_ms (wait that long for one if there is none yet;
        None values are left out)."""
        opts = variants(dict(options or {}), MESSAGE_OPTIONS, "message option")
        text = await self._translated(self.messages.list_messages(agent, opts))
        return [m for m in self._reply(text, list, "ListMessages") if isinstance(m, dict)]
