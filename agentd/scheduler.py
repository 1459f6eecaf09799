"""The scheduler: keeps the queue moving and units running only while needed.

One loop, woken by every task change (and once a second regardless): expire
lapsed leases, resume tasks blocked on a quota that has reset
(agentd.tasks.resume), assign runnable tasks, start the unit of every agent with work
waiting (scale from zero), and stop the unit of an agent that has had no work
for idle_timeout seconds, so thousands of agents can be registered while only
the busy ones hold a process. Agents ``held`` (agentd.diskwatch: a home over
its limit) are not started for their work: each try would be refused anyway,
and audited, once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from . import names
from .agent import UnitsAPI
from .errors import AgentdError
from .events import Events, TaskChanged, UnitStateChanged
from .policy import AGENTD
from .registry import Registry
from .tasks.queue import TaskQueue

log = logging.getLogger("agentd")
TICK = 1.0
MIN_GAP = 0.05  # at most 20 passes a second however busy the queue: claims do not wait


class Scheduler:
    def __init__(
        self,
        registry: Registry,
        queue: TaskQueue,
        units: UnitsAPI,
        events: Events,
        held: Callable[[], set[str]] = set,
    ) -> None:
        self.registry = registry
        self.held = held
        self.queue = queue
        self.units = units
        self.cfg = registry.cfg
        self._kick = asyncio.Event()
        self._starting: set[str] = set()
        self._idle_since: dict[str, float] = {}
        events.subscribe(TaskChanged, lambda _e: self.kick())
        events.subscribe(UnitStateChanged, lambda _e: self.kick())

    def kick(self) -> None:
        self._kick.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), TICK)
            self._kick.clear()
            try:
                await self.step()
            except Exception:  # keep scheduling whatever one pass hit
                log.exception("scheduler pass failed")
            await asyncio.sleep(MIN_GAP)  # kicks meanwhile coalesce into the next pass

    async def step(self, now: float | None = None) -> None:
        now = now or time.time()
        self.queue.expire_leases(now)
        self.queue.resumes.resume(now)  # quota-blocked tasks whose quota reset (O(those))
        waiting = self.queue.assign(now)
        for name in waiting:
            self.queue.wake(name)  # e.g. a retry whose backoff just ended
        running = {
            names.agent_of_unit(unit) or unit
            for unit, state in await self.units.list_units("agent-*.service")
            if state in ("active", "activating", "reloading")
        }
        for name in sorted(waiting - running - self._starting - self.held()):
            self._start(name)
        await self._stop_idle(running, now)

    def _start(self, name: str) -> None:
        """Start an agent's unit because it has work (scale from zero)."""
        self._starting.add(name)

        async def start() -> None:
            try:
                job = await self.registry.start(AGENTD, name)
                await self.units.wait_job(job)
            except AgentdError as e:
                log.warning("scheduler could not start %s: %s", name, e)
            finally:
                self._starting.discard(name)

        self.registry.track(asyncio.get_running_loop().create_task(start()))

    async def _stop_idle(self, running: set[str], now: float) -> None:
        if not self.cfg.idle_timeout:
            return
        busy = self.queue.busy_agents() | self._starting
        for name in list(self._idle_since):
            if name not in running or name in busy:
                del self._idle_since[name]
        for name in running - busy:
            since = self._idle_since.setdefault(name, now)
            if now - since >= self.cfg.idle_timeout and self.registry.find(name):
                del self._idle_since[name]
                log.info("stopping %s: idle for %ds", name, self.cfg.idle_timeout)
                with contextlib.suppress(AgentdError):
                    await self.registry.stop(AGENTD, name)
