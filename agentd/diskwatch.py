"""Home disk limits: an agent whose home passes home_max is stopped and stays stopped.

Issue 10, finding 9. An agent writes its home as fast as the disk goes, and
the homes share one filesystem (/home/agents) with each other, often with
/var/lib/agentd and the rest of the host. The kernel's own answer is project
quotas (ext4 or xfs mounted with ``prjquota``): mechanism() reports whether the
homes' filesystem has them, and agentd logs it and audits it in
``agentd.start`` (``home_limit``). agentd does not set project quotas yet, so
wherever it runs the limit is a checked size:

- every home_check_interval seconds DiskWatch.run() measures the home of
  every present agent in agentd.homework's helper process (never on the event
  loop: an iterative walk counting allocated blocks, each inode once, that
  stops at the limit, at MAX_ENTRIES entries or after MEASURE_SECONDS), BATCH
  homes per helper, one helper at a time;
- a home over its limit (or with more than MAX_ENTRIES entries, or that could
  not be measured in time, or that changed under every try) marks its agent:
  audited (``agent.home_limit``, result ``over``, with bytes, limit and
  reason), its unit stopped if it runs (registry.stop as agentd, audited
  ``agent.stop``), and every start refused with LimitExceeded (audited
  ``agent.start``, result ``error``) through StartGuard, until a measurement
  finds it under again (``agent.home_limit``, result ``under``). A start of a
  marked agent measures it again at once, so whoever freed the space need not
  wait for the next pass; the first start of an agent since agentd started is
  measured too, so a restart (which forgets the marks) slips nobody past them;
- the scheduler does not start a marked agent for its tasks (held()).

Left open by the checked size: between two passes an agent may write past its
limit, up to what its disk takes in home_check_interval seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import names
from .agent import Agent, UnitsAPI
from .errors import AgentdError, LimitExceeded
from .homes import HomeWorkError
from .policy import AGENTD
from .registry import Registry
from .sandbox import UnitProperty
from .units import UnitStatus

log = logging.getLogger("agentd")

# Entries a home may hold, whatever their size: a walk costs per entry (the
# helper stats ~20,000 a second here, agentd.homes), so this bounds one
# measurement to about a minute, and inodes are a disk resource too.
MAX_ENTRIES = 1_000_000
MEASURE_SECONDS = 120.0  # per home: twice what MAX_ENTRIES takes
BATCH = 32  # homes per helper run
STARTS_AT_ONCE = 2  # measurements for starts running together
# Mount options that mean project quotas are on, by filesystem.
PROJECT_QUOTA_OPTIONS = {"ext4": ("prjquota",), "xfs": ("prjquota", "pquota", "pqnoenforce")}


class HomesUsage(Protocol):
    async def usage(
        self, limits: dict[str, int], max_entries: int, seconds: float
    ) -> dict[str, dict[str, object]]: ...


@dataclass(frozen=True)
class Over:
    """Why an agent may not run: its home's last measurement."""

    uid: int
    bytes: int
    limit: int
    kind: str  # homework.OVER_KINDS: bytes, entries, slow, changed

    def reason(self) -> str:
        return {
            "bytes": f"uses more than {self.limit} bytes (home_max={self.limit})",
            "entries": f"holds more than {MAX_ENTRIES} entries",
            "slow": f"could not be measured within {MEASURE_SECONDS:g} s",
            "changed": "changed under every measurement",
        }.get(self.kind, self.kind)


def mechanism(path: Path, mountinfo: str | None = None) -> tuple[str, str]:
    """("project-quota" or "checked-size", why) for the filesystem holding PATH,
    read from /proc/self/mountinfo (or MOUNTINFO's text)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError as e:
            return "checked-size", f"mountinfo unreadable: {e.strerror}"
    target, best = str(path), ("", "?", "")
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 5:
            continue
        tail = fields[fields.index("-") + 1 :]
        point = fields[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]) and len(tail) >= 3:
            best = (point, tail[0], tail[2])  # the later of equal mounts is on top
    point, fstype, options = best
    wanted = PROJECT_QUOTA_OPTIONS.get(fstype, ())
    if any(o in options.split(",") for o in wanted):
        return "checked-size", (
            f"{fstype} at {point} has project quotas, which agentd does not set yet"
        )
    return "checked-size", f"{fstype} at {point or '?'} has no project quotas"


class DiskWatch:
    def __init__(self, registry: Registry, homes: HomesUsage) -> None:
        self.registry = registry
        self.cfg = registry.cfg
        self.homes = homes
        self.over: dict[str, Over] = {}
        self.measured: set[str] = set()  # measured since agentd started
        self.since = time.time()  # agents created after this were made empty by us
        self._slots: asyncio.Semaphore | None = None

    def held(self) -> set[str]:
        """Agents that may not start now (the scheduler leaves them)."""
        return set(self.over)

    async def run(self) -> None:
        if not self.cfg.home_max:
            return
        while True:
            try:
                await self.check_all()
            except Exception:  # keep watching whatever one pass hit
                log.exception("home usage pass failed")
            await asyncio.sleep(self.cfg.home_check_interval)

    async def check_all(self) -> None:
        """Measure every present agent's home once, BATCH homes per helper."""
        agents = self.registry.agents(("present",))
        present = {a.name for a in agents}
        for name in set(self.over) - present:
            del self.over[name]  # removed meanwhile
        self.measured &= present
        for i in range(0, len(agents), BATCH):
            batch = agents[i : i + BATCH]
            try:
                found = await self.homes.usage(
                    {a.name: self.cfg.home_max for a in batch}, MAX_ENTRIES, MEASURE_SECONDS
                )
            except HomeWorkError as e:
                log.warning("home usage: %s", e)
                continue
            for agent in batch:
                await self.apply(agent, found.get(agent.name), stop=True)

    async def apply(self, agent: Agent, result: dict[str, object] | None, stop: bool) -> None:
        """Record AGENT's measurement; over its limit: mark it and (STOP) stop its unit."""
        if result is None or "error" in result:
            log.warning("home of %s not measured: %s", agent.name, (result or {}).get("error"))
            return
        current = self.registry.find(agent.name)
        if current is None or current.uid != agent.uid or current.state != "present":
            self.over.pop(agent.name, None)
            return
        self.measured.add(agent.name)
        size = int(str(result.get("bytes", 0)))
        kind = result.get("over")
        if not kind:
            if self.over.pop(agent.name, None) is not None:
                self._audit(agent, "under", size, reason="back under home_max")
            return
        over = Over(agent.uid, size, self.cfg.home_max, str(kind))
        first = agent.name not in self.over
        self.over[agent.name] = over
        stopped = stop and await self._stop(agent)
        if first or stopped:
            self._audit(agent, "over", size, reason=f"its home {over.reason()}", stopped=stopped)

    async def _stop(self, agent: Agent) -> bool:
        status: UnitStatus = await self.registry.status(agent)
        if not status.active:
            return False
        log.warning("stopping %s: its home is over its limit", agent.name)
        with contextlib.suppress(AgentdError):  # removed or busy meanwhile: nothing runs
            await self.registry.stop(AGENTD, agent.name)
            return True
        return False

    def _audit(
        self, agent: Agent, result: str, size: int, reason: str, stopped: bool = False
    ) -> None:
        self.registry.audit.append(
            "agent.home_limit",
            actor_uid=AGENTD.uid,
            agent=agent.name,
            agent_uid=agent.uid,
            result=result,
            bytes=size,
            limit=self.cfg.home_max,
            reason=reason,
            stopped=stopped,
        )

    async def check_start(self, name: str) -> None:
        """Before NAME's unit starts: LimitExceeded while its home is over its
        limit. A marked agent, or one not measured since agentd started, is
        measured now (a failed measurement refuses only a marked agent)."""
        agent = self.registry.find(name)
        if not self.cfg.home_max or agent is None:
            return
        # An agent created since agentd started got an empty home from it, and
        # the periodic pass has watched it since: no measurement before its first
        # start (a helper process, ~50 ms of every create+start otherwise).
        fresh = agent.created_at >= self.since
        if name in self.over or (name not in self.measured and not fresh):
            if self._slots is None:
                self._slots = asyncio.Semaphore(STARTS_AT_ONCE)
            try:
                async with self._slots:
                    found = await self.homes.usage(
                        {name: self.cfg.home_max}, MAX_ENTRIES, MEASURE_SECONDS
                    )
                await self.apply(agent, found.get(name), stop=False)  # its lock is held
            except HomeWorkError as e:
                log.warning("home of %s not measured before its start: %s", name, e)
        over = self.over.get(name)
        if over is not None:
            raise LimitExceeded(
                f"agent {name!r} may not start: its home {over.reason()}; "
                "it may start once its home is back under the limit"
            )


class StartGuard:
    """The registry's UnitsAPI with one check before every start: ``guard``
    (DiskWatch.check_start, set once the watch exists) may refuse it. A
    refusal raised here is audited by Registry.start like any failed start."""

    def __init__(self, units: UnitsAPI) -> None:
        self.units = units
        self.guard: Callable[[str], Awaitable[None]] | None = None

    async def start_transient(self, unit: str, properties: list[UnitProperty]) -> str:
        name = names.agent_of_unit(unit)
        if self.guard is not None and name is not None:
            await self.guard(name)
        return await self.units.start_transient(unit, properties)

    async def stop(self, unit: str, wait: bool = True) -> str:
        return await self.units.stop(unit, wait)

    async def wait_job(self, job: str) -> str:
        return await self.units.wait_job(job)

    async def status(self, unit: str) -> UnitStatus:
        return await self.units.status(unit)

    async def list_units(self, pattern: str) -> list[tuple[str, str]]:
        return await self.units.list_units(pattern)
