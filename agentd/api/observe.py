"""The Observe object: `agentctl top`, `agentctl agent ps`, an agent's journal
(`agentctl agent logs`, the Cockpit page) and the metrics.

Thin, as every api module: each method declares its action (fleet.read,
agent.ps, agent.journal, metrics.read; agentd.rules), calls one engine method
(agentd.fleet, agentd.journal, agentd.metrics) and carries its answer as JSON
or text.
"""

from __future__ import annotations

import json

from sdbus import dbus_method_async_override

from ..fleet import FLEET, PS, Fleet
from ..journal import CURSOR_CHARS, JOURNAL, AgentJournal
from ..limits import NAME, Bound
from ..metrics import METRICS, Metrics
from .access import Callers, rule
from .interfaces.observe import ObserveInterface


class ObserveObject(ObserveInterface):
    def __init__(
        self, fleet: Fleet, metrics: Metrics, callers: Callers, journal: AgentJournal
    ) -> None:
        super().__init__()
        self.journal = journal
        self.fleet_view = fleet
        self.metrics_view = metrics
        self.callers = callers

    @dbus_method_async_override()
    @rule(FLEET)
    async def fleet(self) -> str:
        return json.dumps(await self.fleet_view.snapshot(await self.callers.current()))

    @dbus_method_async_override()
    @rule(PS, limits={"name": NAME})
    async def list_processes(self, name: str) -> str:
        rows = await self.fleet_view.processes(await self.callers.current(), name)
        return json.dumps([p.as_dict() for p in rows])

    @dbus_method_async_override()
    @rule(JOURNAL, limits={"name": NAME, "cursor": Bound(CURSOR_CHARS)})
    async def read_agent_journal(
        self, name: str, cursor: str, lines: int, wait_ms: int
    ) -> tuple[str, str]:
        caller = await self.callers.current()
        entries, next_cursor = await self.journal.read(caller, name, cursor, lines, wait_ms)
        return json.dumps(entries, ensure_ascii=False), next_cursor

    @dbus_method_async_override()
    @rule(METRICS)
    async def metrics(self) -> str:
        return await self.metrics_view.text(await self.callers.current())
