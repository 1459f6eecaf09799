"""The Goals object: goals for their owners and administrators.

Authorization and audit are the engine's (agentd.goals.service, policy goal.*);
this layer names each method's action, bounds its arguments, carries JSON,
and turns the engine's GoalChanged events into the D-Bus signal.
"""

from __future__ import annotations

import json

from sdbus import dbus_method_async_override

from ..events import Events, GoalChanged
from ..goals.model import INTENT_BYTES
from ..goals.service import PLAN_BYTES, REASON_BYTES, Goals
from ..limits import Bound
from .access import Callers, rule
from .interfaces.goals import GoalsInterface
from .marshal import Variant, plain


class GoalsObject(GoalsInterface):
    def __init__(self, goals: Goals, callers: Callers) -> None:
        super().__init__()
        self.goals = goals
        self.callers = callers

    def subscribe(self, events: Events) -> None:
        events.subscribe(GoalChanged, self._on_goal)

    def _on_goal(self, event: GoalChanged) -> None:
        self.goal_changed.emit((event.goal.id, event.goal.state, event.event))

    @dbus_method_async_override()
    @rule(
        "goal.create",
        limits={"intent": Bound(INTENT_BYTES), "options": Bound(PLAN_BYTES, items=5, depth=2)},
    )
    async def submit_goal(self, intent: str, options: dict[str, Variant]) -> int:
        caller = await self.callers.current()
        return self.goals.submit(caller, intent, plain(options)).id

    @dbus_method_async_override()
    @rule("goal.list")
    async def list_goals(self) -> str:
        return json.dumps(self.goals.listing(await self.callers.current()), ensure_ascii=False)

    @dbus_method_async_override()
    @rule("goal.show")
    async def get_goal(self, goal: int) -> str:
        caller = await self.callers.current()
        return json.dumps(self.goals.show(caller, goal), ensure_ascii=False)

    @dbus_method_async_override()
    @rule("goal.approve")
    async def approve_goal(self, goal: int) -> None:
        self.goals.approve(await self.callers.current(), goal)

    @dbus_method_async_override()
    @rule("goal.approve", limits={"reason": Bound(REASON_BYTES)})
    async def reject_goal(self, goal: int, reason: str) -> None:
        self.goals.reject(await self.callers.current(), goal, reason)

    @dbus_method_async_override()
    @rule("goal.cancel")
    async def cancel_goal(self, goal: int) -> None:
        self.goals.cancel(await self.callers.current(), goal)
