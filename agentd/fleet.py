"""The fleet as `agentctl top` sees it: one snapshot of the caller's agents.

One call gives everything a screen of top needs, so that a refresh each
second costs one D-Bus round trip to agentd, not one per agent and column:
each agent the caller may list (agentd.policy's row filter, the one
ListAgents uses: a person sees its own agents, an administrator all of them),
its unit's state and what the unit uses now (one GetAll of systemd's Service
properties per running unit), the task it is running and that task's latest
step, the tokens its model calls used in the last minute, the approvals it
waits for; and the model service's queue, batch and throughput.

Counters are reported raw (CPU time in nanoseconds, with the time of the
snapshot): a CPU share is a difference between two snapshots, which only the
one who takes both can compute (agentctl.top); agentd keeps no per-viewer
state. Reads only, no audit: like ListAgents. Engine code: no D-Bus here
(the unit counters come through the UnitUsageReader the daemon passes).
"""

from __future__ import annotations

import asyncio
import pwd
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from functools import lru_cache
from typing import Any, Protocol

from .agent import Agent
from .errors import AgentdError
from .policy import Caller, Policy
from .procs import Process, cpu_usage_nsec, processes
from .registry import LISTED, Registry
from .store import Store
from .units import UnitUsage

FLEET = "fleet.read"  # the policy action of a snapshot (agentd.rules)
PS = "agent.ps"  # ... of an agent's process list
RUNNING = frozenset({"active", "activating", "reloading", "deactivating"})
WINDOW_S = 60.0  # tokens per minute: usage rows of the last minute
MODEL_TIMEOUT_S = 0.5  # a slow model service does not hold up the screen
CURRENT = ("in_progress", "awaiting_approval")  # a task an agent is working on
MODEL_KEYS = (
    "state",
    "name",
    "queued",
    "active",
    "sequences",
    "batch",
    "tokens_per_second",
    "tokens_generated",
    "prompt_tokens",
    "requests_total",
)


class UnitUsageReader(Protocol):
    async def usage(self, unit: str) -> UnitUsage: ...


@lru_cache(maxsize=1024)
def user_name(uid: int) -> str:
    """UID's user name, or the number if it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _with_cpu(usage: UnitUsage) -> UnitUsage:
    """USAGE, its CPU time read from the cgroup if systemd does not count it."""
    if usage.cpu_usage_nsec is not None or not usage.control_group:
        return usage
    return replace(usage, cpu_usage_nsec=cpu_usage_nsec(usage.control_group))


class Fleet:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        policy: Policy,
        units: UnitUsageReader,
        state_of: Callable[[Agent], str],
        model_show: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registry = registry
        self.policy = policy
        self.units = units
        self.state_of = state_of  # the unit's ActiveState, as agentd follows it
        self.model_show = model_show
        self.clock = clock

    def agents(self, caller: Caller, action: str = FLEET) -> list[Agent]:
        """The agents CALLER may list under ACTION's rule."""
        return self.registry.visible(caller, action, states=LISTED)

    async def usages(self, agents: Iterable[Agent]) -> dict[str, UnitUsage]:
        """What each running agent's unit uses now (asked concurrently)."""
        running = [a for a in agents if self.state_of(a) in RUNNING]
        found = await asyncio.gather(*(self.units.usage(a.unit) for a in running))
        return {a.name: _with_cpu(u) for a, u in zip(running, found, strict=True)}

    async def snapshot(self, caller: Caller) -> dict[str, Any]:
        """{"at": unix time, "agents": [one dict per agent], "model": {...}}."""
        self.policy.check(caller, FLEET)
        agents = self.agents(caller)
        usages, model = await asyncio.gather(self.usages(agents), self.model())
        at = self.clock()
        pending = self._pending_approvals()
        rows = [
            self._row(a, usages.get(a.name), pending.get(a.id, 0), at)
            for a in sorted(agents, key=lambda a: a.name)
        ]
        return {"at": round(at, 3), "agents": rows, "model": model}

    def _row(
        self, agent: Agent, usage: UnitUsage | None, approvals: int, at: float
    ) -> dict[str, Any]:
        u = usage or UnitUsage()
        task = self._current_task(agent)
        return {
            "name": agent.name,
            "owner_uid": agent.owner_uid,
            "owner": user_name(agent.owner_uid),
            "uid": agent.uid,
            "template": agent.template,
            "state": self.state_of(agent),
            "online": agent.name in self.registry.online,
            "main_pid": u.main_pid,
            "cpu_usage_nsec": u.cpu_usage_nsec,
            "memory_current": u.memory_current,
            "memory_max": agent.limits.memory_max,
            "tasks_current": u.tasks_current,
            "task_id": task["id"] if task else None,
            "task_title": task["title"] if task else None,
            "task_status": task["status"] if task else None,
            "step": task["step"] if task else None,
            "tokens_last_minute": self._tokens_since(agent, at - WINDOW_S),
            "approvals_pending": approvals,
        }

    def _current_task(self, agent: Agent) -> dict[str, Any] | None:
        rows = self.store.query(
            "SELECT id, title, status, attempts, (SELECT MAX(n) FROM task_steps s"
            " WHERE s.task_id = t.id AND s.attempt = t.attempts) AS step"
            " FROM tasks t WHERE agent_id = ? AND status IN (?, ?) ORDER BY id LIMIT 1",
            (agent.id, *CURRENT),
        )
        return rows[0] if rows else None

    def _tokens_since(self, agent: Agent, since: float) -> int:
        total = self.store.scalar(
            "SELECT SUM(prompt_tokens + completion_tokens) FROM usage"
            " WHERE agent = ? AND ts >= ? AND owner_uid = ?",
            (agent.name, since, agent.owner_uid),
        )
        return int(total or 0)

    def _pending_approvals(self) -> dict[int, int]:
        rows = self.store.query(
            "SELECT agent_id, COUNT(*) AS n FROM approvals"
            " WHERE status = 'pending' AND deadline > -1 GROUP BY agent_id"
        )
        return {int(r["agent_id"]): int(r["n"]) for r in rows}

    async def model(self) -> dict[str, Any]:
        """The model service's state and live stats; state "unavailable" if it
        does not answer within MODEL_TIMEOUT_S."""
        if self.model_show is None:
            return {"state": "unavailable"}
        try:
            show = await asyncio.wait_for(self.model_show(), MODEL_TIMEOUT_S)
        except (AgentdError, OSError, TimeoutError):
            return {"state": "unavailable"}
        flat: dict[str, Any] = {"state": show.get("state", "unknown")}
        for section in ("model", "config", "stats"):
            flat.update(show.get(section) or {})
        return {key: flat[key] for key in MODEL_KEYS if flat.get(key) is not None}

    async def processes(self, caller: Caller, name: str) -> list[Process]:
        """The processes in agent NAME's unit now ([] if it is not running);
        for its owner or an administrator (policy action agent.ps)."""
        agent = self.registry.get(caller, name, PS, LISTED)
        if self.state_of(agent) not in RUNNING:
            return []
        usage = await self.units.usage(agent.unit)
        if not usage.control_group:
            return []
        return processes(usage.control_group)  # a few small /proc files each: no thread
