"""AgentdClient's calls of the Observe interface (issue 16), as a mixin.

`agentctl top` (Fleet), `agentctl agent ps` (ListProcesses), `agentctl agent
logs` (ReadAgentJournal), `agentctl metrics` and the metrics unit (Metrics).
Like agentctl.client_teams: every call goes through agentctl.client's _call
(the one translation point), every JSON reply through its _json; AgentdClient
makes the proxy `observe` (on the root object). This module needs no sdbus
(tests/unit/test_agentctl_layout.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


class ObserveCalls:
    observe: Any  # the ObserveInterface proxy, made by AgentdClient
    _translated: Callable[[Awaitable[Any]], Awaitable[Any]]
    _reply: Callable[[str, type[Any], str], Any]

    async def fleet(self) -> dict[str, Any]:
        """One snapshot of the caller's agents and the model service."""
        snapshot: dict[str, Any] = self._reply(
            await self._translated(self.observe.fleet()), dict, "Fleet"
        )
        return snapshot

    async def list_processes(self, name: str) -> list[dict[str, Any]]:
        text = await self._translated(self.observe.list_processes(name))
        return [p for p in self._reply(text, list, "ListProcesses") if isinstance(p, dict)]

    async def read_agent_journal(
        self, name: str, cursor: str, lines: int, wait_ms: int
    ) -> tuple[list[dict[str, Any]], str]:
        """Agent NAME's journal as agentd reads it for its owner: entries and
        the cursor to ask from next (ReadAgentJournal)."""
        text, next_cursor = await self._translated(
            self.observe.read_agent_journal(name, cursor, lines, wait_ms)
        )
        entries = self._reply(text, list, "ReadAgentJournal")
        return [e for e in entries if isinstance(e, dict)], str(next_cursor)

    async def metrics(self) -> str:
        """The Prometheus text the caller may read."""
        return str(await self._translated(self.observe.metrics()))
