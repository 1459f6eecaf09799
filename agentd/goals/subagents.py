"""A goal's sub-agents: agents agentd makes for a goal's steps and removes at its end.

Invariants, and why:
- A sub-agent is its goal's owner's agent, made as the owner, so the owner's
  limits apply as to an agent they create themselves (max_agents_per_owner,
  the ceilings, the creator group); made from a template that provides what its
  step needs, and named after the goal and step (g12-3-fetch). It runs only
  tasks pinned to it (only_pinned(), asked by the router), so it never takes
  its owner's other work, and the goal pins only its own steps to it.
- Intent first (agentd.registry's rule): a 'creating' row is written in the
  transaction that decides to make the agent, before any account exists, and
  the creation runs after that commit. After a crash, kick() at start finds the
  row: the agent is made (again) if its goal is open, removed if it has ended.
- When the goal is final, every sub-agent's artifacts are copied under
  state_dir/goals/GOAL/TASK/ (the artifact rows then point there, so
  `agentctl task artifact` reads them after the home is gone) and the agent is
  removed (agentd.registry: the unit stopped, the user and home deleted).
- A refusal (the owner's limits, a name in use) is backpressure, not failure:
  the row says why, the goal makes no more sub-agents, and its steps wait for
  the agents it has. Only a goal that then has nothing left to run fails.

Creating agents is slow (useradd, a home, a unit: MEASURED.md's lifecycle
floor), so it runs as background jobs; each one that ends advances its goal.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import names
from ..agent import Agent
from ..audit import AuditLog
from ..errors import AgentdError, AlreadyExists, NoSuchAgent, PermissionDenied
from ..policy import AGENTD, Caller
from ..registry import Registry
from ..store import Store
from ..tasks import artifacts
from ..tasks.model import Artifact
from ..tasks.routing import Router
from ..templates import Catalog, Template
from .model import FINAL, PLAN_CAPABILITY, Goal
from .plan import Step

log = logging.getLogger(__name__)

LIVE = ("creating", "present")


@dataclass(frozen=True)
class Pin:
    """Run the step on this agent (the owner's own with room, or an idle sub-agent)."""

    agent: str


@dataclass(frozen=True)
class Make:
    """Make a sub-agent from this template for the step; the step waits for it."""

    template: str


class Route:
    """Submit the step unpinned: one of the owner's own capable agents takes it."""


@dataclass(frozen=True)
class Wait:
    """Nothing free now: a goal task's end or a sub-agent's readiness looks
    again. COUNTS: the step's own sub-agent is being made (it holds a place
    under max_agents)."""

    counts: bool = False


Placement = Pin | Make | Route | Wait


@dataclass(frozen=True)
class SubAgent:
    name: str
    goal_id: int
    template: str
    step: str
    state: str
    error: str | None
    created_at: float
    ready_at: float | None
    removed_at: float | None


class SubAgents:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        router: Router,
        catalog: Catalog,
        audit: AuditLog,
        archive: Path,
    ) -> None:
        self.store = store
        self.registry = registry
        self.router = router
        self.catalog = catalog
        self.audit = audit
        self.archive = archive  # state_dir/goals: the artifacts of removed sub-agents
        self.advance: Callable[[int], None] = lambda _goal_id: None  # set by the runner
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self.retiring: set[str] = set()  # idle sub-agents being removed to make room
        self.caller_of: Callable[[int], Caller] = owner_caller  # the owner, as a caller
        router.only_pinned = self.only_pinned

    # -- reading ------------------------------------------------------------------------------
    def of_goal(self, goal_id: int) -> list[SubAgent]:
        rows = self.store.query(
            "SELECT * FROM goal_agents WHERE goal_id=? ORDER BY created_at, name", (goal_id,)
        )
        return [SubAgent(**r) for r in rows]

    def only_pinned(self, agent: Agent) -> bool:
        """Whether AGENT is a goal's sub-agent (it takes only what is pinned to it)."""
        return bool(
            self.store.scalar(
                "SELECT 1 FROM goal_agents WHERE name=? AND state IN ('creating', 'present')",
                (agent.name,),
            )
        )

    # -- where a step goes ----------------------------------------------------------------------
    def placing(self, goal: Goal) -> Placing:
        """A pass placing GOAL's due steps, one after the other (see Placing)."""
        subs = self.of_goal(goal.id)
        reserved = {
            r["name"]
            for r in self.store.query(
                "SELECT name FROM goal_agents WHERE state IN ('creating', 'present')"
            )
        }
        own = [
            a
            for a in self.registry.agents()
            if a.owner_uid == goal.owner_uid and a.name not in reserved
        ]
        if goal.team_id is not None:  # a team's goal: its members run the steps
            own = self.router.teams.members(goal.team_id)
        return Placing(self, goal, own, subs, self.router.repo.load())

    def template_for(self, owner_uid: int, step: Step) -> Template | None:
        """A template providing what STEP needs: one the owner's agents use if
        any (what they chose), else the smallest in memory, then by name."""
        used = {a.template for a in self.registry.agents() if a.owner_uid == owner_uid}
        fits = [
            t
            for t in self.catalog.templates()
            if set(step.needs) <= set(t.capabilities)
            and PLAN_CAPABILITY not in t.capabilities
            and (not step.exec or "shell" in t.tools)
        ]
        fits.sort(key=lambda t: (t.name not in used, t.limits.memory_max or 0, t.name))
        return fits[0] if fits else None

    def want(self, goal: Goal, step: Step, template: str, n: int) -> str:
        """Write the intent to make GOAL's Nth sub-agent, for STEP (inside the
        caller's transaction); the agent is made after the commit. Its name."""
        name = sub_agent_name(goal.id, n, step.id)
        self.store.execute(
            "INSERT INTO goal_agents (name, goal_id, template, step, state, created_at)"
            " VALUES (?, ?, ?, ?, 'creating', ?)",
            (name, goal.id, template, step.id, time.time()),
        )
        self.store.after_commit(self.kick)
        return name

    # -- the jobs -----------------------------------------------------------------------------
    def kick(self) -> None:
        """Start what is due and not under way: the making of every 'creating'
        row of an open goal, the removal of every live row of an ended one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (unit tests of the runner alone): nothing is made
        rows = self.store.query(
            "SELECT a.name, a.state, g.state AS goal_state FROM goal_agents a"
            " JOIN goals g ON g.id = a.goal_id WHERE a.state IN ('creating', 'present')"
        )
        for r in rows:
            name = r["name"]
            if name in self._jobs:
                continue
            ended = r["goal_state"] in FINAL
            if ended:
                job = self._remove(name)
            elif r["state"] == "creating":
                job = self._make(name)
            else:
                continue
            task = loop.create_task(job, name=f"goal-agent {name}")
            self._jobs[name] = task
            self.registry.track(task)
            task.add_done_callback(functools.partial(self._ended, name))

    def _ended(self, name: str, _task: asyncio.Task[None]) -> None:
        self._jobs.pop(name, None)
        self.kick()  # the goal may have ended while this one was being made

    def _row(self, name: str) -> tuple[SubAgent, Goal]:
        row = SubAgent(**self.store.query("SELECT * FROM goal_agents WHERE name=?", (name,))[0])
        goal = Goal(**self.store.query("SELECT * FROM goals WHERE id=?", (row.goal_id,))[0])
        return row, goal

    async def _make(self, name: str) -> None:
        row, goal = self._row(name)
        try:
            caller = self.caller_of(goal.owner_uid)
            self.registry.policy.check_creator(caller, "agent.create")
            agent = self.registry.find(name)
            if agent is None or agent.state == "removed":
                agent = await self.registry.create(caller, name, row.template)
            elif agent.owner_uid != goal.owner_uid or agent.state != "present":
                raise AlreadyExists(f"an agent named {name!r} already exists")
            await self.registry.start(caller, name)
        except AgentdError as e:
            self._set(name, "refused", error=f"{e} ({e.name})")
            self.audit.append(
                "goal.sub_agent",
                actor_uid=0,
                goal=goal.id,
                agent=name,
                result="refused",
                error=e.name,
                reason=str(e),
            )
        else:
            self._set(name, "present", ready_at=time.time())
            self.audit.append(
                "goal.sub_agent", actor_uid=0, goal=goal.id, agent=name, step=row.step
            )
        self.advance(goal.id)

    def retire(self, goal_id: int, name: str) -> None:
        """Remove GOAL_ID's idle sub-agent NAME, its artifacts kept as at the
        goal's end, after the caller's commit; the goal is advanced once it is
        gone (Placing._make_room)."""

        async def job() -> None:
            try:
                await self._remove(name)
            finally:
                self.retiring.discard(name)
            self.advance(goal_id)

        def start() -> None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            if name in self._jobs:  # still being made: look again once it is
                self._jobs[name].add_done_callback(lambda _task: self.advance(goal_id))
                return
            self.retiring.add(name)
            task = loop.create_task(job(), name=f"goal-agent {name}")
            self._jobs[name] = task
            self.registry.track(task)
            task.add_done_callback(functools.partial(self._ended, name))

        self.store.after_commit(start)

    async def _remove(self, name: str) -> None:
        _, goal = self._row(name)
        agent = self.registry.find(name)
        if agent is not None and agent.state in ("present", "removing"):
            kept = await self._keep_artifacts(goal, agent)
            try:
                await self.registry.remove(AGENTD, name)
            except NoSuchAgent:
                pass
            except AgentdError as e:  # left for the next kick (a restart, say)
                log.warning("sub-agent %s of goal %d not removed: %s", name, goal.id, e)
                return
            self.audit.append(
                "goal.sub_agent_removed", actor_uid=0, goal=goal.id, agent=name, artifacts=kept
            )
        self._set(name, "removed", removed_at=time.time())

    async def _keep_artifacts(self, goal: Goal, agent: Agent) -> int:
        """Copy the artifacts of AGENT's tasks under the goal's directory, and
        point their rows there. How many were copied."""
        rows = self.store.query(
            "SELECT r.* FROM artifacts r JOIN tasks t ON t.id = r.task_id WHERE t.agent_id=?",
            (agent.id,),
        )
        kept = 0
        for r in rows:
            art = Artifact(r["task_id"], r["name"], r["type"], r["path"], r["size"], r["sha256"])
            dest = self.archive / str(goal.id) / str(art.task_id)
            try:
                path = await asyncio.to_thread(artifacts.copy, art, dest)
            except AgentdError as e:  # changed or gone since it was reported: said, not kept
                log.warning("artifact %s of task %d not kept: %s", art.name, art.task_id, e)
                continue
            with self.store.transaction():
                self.store.execute(
                    "UPDATE artifacts SET path=? WHERE task_id=? AND name=?",
                    (path, art.task_id, art.name),
                )
            kept += 1
        return kept

    def _set(self, name: str, state: str, **changes: Any) -> None:
        changes["state"] = state
        sets = ", ".join(f"{k}=?" for k in changes)
        with self.store.transaction():
            self.store.execute(
                f"UPDATE goal_agents SET {sets} WHERE name=?", (*changes.values(), name)
            )

    async def settle(self) -> None:
        """Wait for every job under way (tests, a clean shutdown)."""
        while self._jobs:
            await asyncio.gather(*list(self._jobs.values()), return_exceptions=True)


class Placing:
    """Where each of a goal's due steps goes, as one pass decides them: the
    owner's own capable agent with room, else an idle sub-agent of the goal that
    can run it, else a new sub-agent (while the goal may make them), else the
    queue (one of the owner's agents takes it when free), else wait. What the
    pass placed counts for the steps after it."""

    def __init__(
        self,
        subagents: SubAgents,
        goal: Goal,
        own: list[Agent],
        subs: list[SubAgent],
        load: dict[int, int],
    ) -> None:
        self.s = subagents
        self.goal = goal
        self.own = own
        self.subs = subs
        self.load = load
        present = [s.name for s in subs if s.state == "present"]
        found = [subagents.registry.find(n) for n in present]
        live = [a for a in found if a is not None and a.state == "present"]
        # one being removed to make room (retire()) takes no step, and still counts
        self.retiring = [a for a in live if a.name in subagents.retiring]
        self.ready = [a for a in live if a.name not in subagents.retiring]

    def making(self) -> bool:
        """Whether a sub-agent of the goal is being made (its readiness advances
        the goal again)."""
        return any(s.state == "creating" for s in self.subs)

    def place(self, step: Step) -> Placement:
        router, shell = self.s.router, bool(step.exec)
        own = [a for a in self.own if not router.missing(a, step.needs, shell)]
        for a in sorted(own, key=lambda a: (self.load.get(a.id, 0), a.name)):
            if self.load.get(a.id, 0) < router.wip(a):
                self.load[a.id] = self.load.get(a.id, 0) + 1
                return Pin(a.name)
        # A sub-agent runs one step at a time (the goal made it for parallel
        # work, not to queue on it), the one it was made for first.
        made_for = {s.name: s.step for s in self.subs}
        ready = [a for a in self.ready if not router.missing(a, step.needs, shell)]
        for a in sorted(ready, key=lambda a: made_for.get(a.name) != step.id):
            if not self.load.get(a.id, 0):
                self.load[a.id] = 1
                return Pin(a.name)
        creating = [s for s in self.subs if s.state == "creating"]
        if any(s.step == step.id for s in creating):
            return Wait(counts=True)  # its sub-agent is being made
        live = len(self.ready) + len(creating) + len(self.retiring)
        refused = any(s.state == "refused" for s in self.subs)
        if self.goal.sub_agents and not refused and live < self.goal.max_agents:
            template = self.s.template_for(self.goal.owner_uid, step)
            if template is not None:
                name = self.s.want(self.goal, step, template.name, len(self.subs) + 1)
                self.subs.append(
                    SubAgent(
                        name, self.goal.id, template.name, step.id, "creating", None, 0, None, None
                    )
                )
                return Make(template.name)
        if own:
            return Route()
        if self.goal.sub_agents and not refused:
            return self._make_room(step)
        return Wait(counts=False)

    def _make_room(self, step: Step) -> Placement:
        """At max_agents, with every sub-agent unable to run STEP: an idle one
        is removed (retired) so that one which can is made once it is gone.
        Measured: the 1.5B model planned three "general" steps and a "shell"
        one after them; with --max-agents 3 the goal failed with three idle
        sandbox sub-agents and no room for an ops one."""
        if self.retiring:
            return Wait(counts=True)  # its removal advances the goal again
        idle = [a for a in self.ready if not self.load.get(a.id, 0)]
        if not idle or self.s.template_for(self.goal.owner_uid, step) is None:
            return Wait(counts=False)
        self.s.retire(self.goal.id, idle[0].name)
        self.ready.remove(idle[0])
        self.retiring.append(idle[0])
        return Wait(counts=True)


def sub_agent_name(goal_id: int, n: int, step_id: str) -> str:
    """g<goal>-<n>-<step>, cut to an agent name's length (agentd.names)."""
    slug = "-".join(p for p in step_id.replace("_", "-").split("-") if p)
    name = f"g{goal_id}-{n}"
    if slug:
        name = f"{name}-{slug}"[: names.MAX_LEN].rstrip("-")
    return names.check_syntax(name)


def owner_caller(uid: int) -> Caller:
    """The owner as a caller of their own, with the groups the group database
    gives them now (the owner may have left a group since the goal began)."""
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        raise PermissionDenied(f"the goal's owner (uid {uid}) no longer exists") from None
    try:
        gids = os.getgrouplist(pw.pw_name, pw.pw_gid)
    except OSError:
        gids = [pw.pw_gid]
    return Caller(uid=uid, gids=frozenset(gids))
