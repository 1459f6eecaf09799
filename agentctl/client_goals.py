"""AgentdClient's calls of the Goals interface (issue 14), as a mixin.

Like agentctl.client_sessions: every call goes through agentctl.client's _call
(the one translation point), every JSON reply through its _json. Watching a
goal subscribes to GoalChanged and TaskChanged (a step's progress) through
the client's _match, which AgentdClient hands over with the others; this
module needs no sdbus (tests/unit/test_agentctl_layout.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from agentd.api.interfaces import BUS_NAME

from .marshal import variants

GOAL_OPTIONS = {
    "planner": "s",
    "project": "s",
    "approve_plan": "b",
    "max_agents": "u",
    "plan": "s",
    "sub_agents": "b",
    "team": "s",
}


class GoalWatch:
    """Wakes a `goal watch` when its goal or any task changed, or agentd
    restarted (signals are lost meanwhile: the watcher asks again)."""

    def __init__(self, goal: int) -> None:
        self.goal = goal
        self._wake = asyncio.Event()

    def on_goal_changed(self, msg: Any) -> None:
        goal, _state, _event = msg.get_contents()
        if int(goal) == self.goal:
            self._wake.set()

    def on_task_changed(self, _msg: Any) -> None:
        self._wake.set()  # maybe one of the goal's steps: GetGoal says

    def on_owner_changed(self, msg: Any) -> None:
        if msg.get_contents()[0] == BUS_NAME:
            self._wake.set()

    async def wait(self, timeout: float) -> bool:
        """Until something changed since the last call, at most TIMEOUT seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        changed = self._wake.is_set()
        self._wake.clear()
        return changed


class GoalCalls:
    goals: Any  # the GoalsInterface proxy, made by AgentdClient
    _goal_signals: tuple[Any, Any]  # GoalChanged and TaskChanged, set by AgentdClient
    _translated: Callable[[Awaitable[Any]], Awaitable[Any]]
    _reply: Callable[[str, type[Any], str], Any]
    _match: Callable[[Any, Callable[[Any], None]], Awaitable[Any]]
    _match_owner_changed: Callable[[Callable[[Any], None]], Awaitable[Any]]

    async def submit_goal(self, intent: str, options: Mapping[str, Any] | None = None) -> int:
        """A new goal's id; OPTIONS: planner, project, approve_plan, max_agents,
        plan, sub_agents (None values are left out)."""
        opts = variants(dict(options or {}), GOAL_OPTIONS, "goal option")
        return int(await self._translated(self.goals.submit_goal(intent, opts)))

    async def list_goals(self) -> list[dict[str, Any]]:
        text = await self._translated(self.goals.list_goals())
        return [g for g in self._reply(text, list, "ListGoals") if isinstance(g, dict)]

    async def get_goal(self, goal: int) -> dict[str, Any]:
        found: dict[str, Any] = self._reply(
            await self._translated(self.goals.get_goal(goal)), dict, "GetGoal"
        )
        return found

    async def approve_goal(self, goal: int) -> None:
        await self._translated(self.goals.approve_goal(goal))

    async def reject_goal(self, goal: int, reason: str) -> None:
        await self._translated(self.goals.reject_goal(goal, reason))

    async def cancel_goal(self, goal: int) -> None:
        await self._translated(self.goals.cancel_goal(goal))

    @contextlib.asynccontextmanager
    async def watch_goal(self, goal: int) -> AsyncIterator[GoalWatch]:
        """Wake-ups for GOAL while the block runs; enter it before the first GetGoal."""
        watch = GoalWatch(goal)
        goal_changed, task_changed = self._goal_signals
        slots = [
            await self._match(goal_changed, watch.on_goal_changed),
            await self._match(task_changed, watch.on_task_changed),
            await self._match_owner_changed(watch.on_owner_changed),
        ]
        try:
            yield watch
        finally:
            for slot in slots:
                slot.close()
