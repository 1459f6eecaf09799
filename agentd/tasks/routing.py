"""Which agent runs which task: routing at submit, claims, and assignment.

Invariants, and why:
- A task only ever runs on an agent its owner owns (or the one it is pinned to,
  which its owner may manage), with every capability it needs and, for an exec
  task, the shell tool. Checked at submit (so a task no agent could ever run is
  refused at once, not queued forever) and again at claim and assignment (an
  agent's template may have changed meanwhile).
- An agent holds at most its template's `concurrency` open tasks (its wip).
- A task waits for its dependencies ("after") to complete.
- An agent whose template is missing or broken runs nothing: it "lacks a valid
  template", and its wip is 0. Any other error is a bug and propagates.

Claims are pulled by running agents (the hot path, no scheduler in it); the
scheduler assigns to agents that are not asking (stopped ones, so they start).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..agent import Agent
from ..config import Config
from ..errors import Conflict, InvalidArgument, InvalidConfig, NoCapableAgent, NoSuchTemplate
from ..policy import Caller, Policy
from ..registry import Registry
from .lifecycle import Lifecycle
from .model import Task
from .repository import Repository, Row

if TYPE_CHECKING:
    from ..templates import Catalog

# What a missing or broken template raises (agentd.templates.Catalog.template).
_TEMPLATE_ERRORS = (NoSuchTemplate, InvalidConfig)


class Router:
    def __init__(
        self,
        registry: Registry,
        repo: Repository,
        lifecycle: Lifecycle,
        cfg: Config,
        catalog: Catalog,
        policy: Policy,
    ) -> None:
        self.registry = registry
        self.repo = repo
        self.lifecycle = lifecycle
        self.cfg = cfg
        self.catalog = catalog
        self.policy = policy
        self._swept = False  # tasks pinned by a name nobody had: failed at the first pass
        # Agents that run only tasks pinned to them (a goal's sub-agents: set by
        # agentd.goals.subagents): they never take their owner's other work.
        self.only_pinned: Callable[[Agent], bool] = lambda _agent: False
        self.teams: Any = None  # agentd.teams.Teams, set by agentd.daemon (team tasks)

    # -- what an agent can do --------------------------------------------------------------
    def missing(self, agent: Agent, needs: Sequence[str], needs_shell: bool) -> list[str]:
        """What AGENT lacks to run a task needing NEEDS (and the shell tool)."""
        try:
            template = self.catalog.template(agent.template)
        except _TEMPLATE_ERRORS:
            return ["a valid template"]
        missing = [c for c in needs if c not in template.capabilities]
        if needs_shell and "shell" not in template.tools:
            missing.append("the shell tool")
        return missing

    def wip(self, agent: Agent) -> int:
        """How many open tasks AGENT may hold."""
        try:
            return self.catalog.template(agent.template).concurrency
        except _TEMPLATE_ERRORS:
            return 0

    def settings(self, agent: Agent) -> dict[str, Any]:
        """What the agent's runtime is told when it registers."""
        template = self.catalog.template(agent.template)
        cfg = self.cfg
        return {
            "wip": template.concurrency,
            "tools": list(template.tools),
            "profile": template.profile,  # offline: no fetch tool (agentd.agentloop)
            "persona": template.system_prompt,  # the loop's system prompt begins with it
            "heartbeat_interval": cfg.heartbeat_interval,
            "lease_seconds": cfg.lease_seconds,
            "program": list(template.program),  # kept running by the runtime (agentd.program)
        }

    def agents_of(self, owner_uid: int) -> list[Agent]:
        return [a for a in self.registry.agents() if a.owner_uid == owner_uid]

    # -- at submit ---------------------------------------------------------------------------
    def route(
        self, caller: Caller, pinned: str | None, needs: Sequence[str], needs_shell: bool
    ) -> Agent | None:
        """Refuse a task no agent of the caller's could ever run; the pinned
        agent, or None for "any of the owner's"."""
        if pinned is not None:
            return self._pinned(caller, pinned, needs, needs_shell)
        mine = [a for a in self.agents_of(caller.uid) if not self.only_pinned(a)]
        if not any(not self.missing(a, needs, needs_shell) for a in mine):
            what = ", ".join([*needs, *(["the shell tool"] if needs_shell else [])]) or "anything"
            raise NoCapableAgent(f"none of your agents has {what}")
        return None

    def route_team(
        self, caller: Caller, name: object, needs: Sequence[str], needs_shell: bool
    ) -> int:
        """A team's task: the team must be one CALLER may use, and one of its
        members able to run it (else NoCapableAgent at once). The team's id."""
        if self.teams is None:
            raise InvalidArgument("teams are not enabled in this agentd")
        team = self.teams.task_team(caller, name)
        members = self.teams.members(team.id)
        if not any(not self.missing(a, needs, needs_shell) for a in members):
            what = ", ".join([*needs, *(["the shell tool"] if needs_shell else [])]) or "anything"
            raise NoCapableAgent(f"no member of team {team.name!r} has {what}")
        return int(team.id)

    def _pinned(
        self, caller: Caller, pinned: object, needs: Sequence[str], needs_shell: bool
    ) -> Agent:
        agent = self.registry.find(pinned) if isinstance(pinned, str) else None
        if agent is None or agent.state != "present":
            raise NoCapableAgent(f"no agent named {pinned!r}")
        if not self.policy.may_manage(caller, agent.owner_uid, "task.create"):
            raise NoCapableAgent(f"agent {pinned!r} belongs to another user")
        missing = self.missing(agent, needs, needs_shell)
        if missing:
            raise NoCapableAgent(f"agent {pinned!r} lacks {', '.join(missing)}")
        return agent

    # -- claims (pulled by a running agent) ------------------------------------------------------
    def claim(self, agent: Agent) -> Task | None:
        """Atomically take the best runnable task for AGENT: one assigned to it,
        else an unassigned one it may run (pinned to it, or its owner's, with the
        capabilities it has), by priority then age. A task another claimer took
        first (Conflict) is skipped for the next. (ClaimTask: not bounded by the
        agent's wip, as it never was; its runtime counts.)"""
        taken = self._take(agent, 1)
        return taken[0] if taken else None

    def claim_many(self, agent: Agent, most: int) -> list[Task]:
        """Up to MOST tasks for AGENT, as claim() picks them, bounded by its free
        wip (room()); MOST 0 (or more than the room) means as many as there is
        room for. Each claim is its own versioned transaction and no await falls
        between them, so no other request interleaves: the batch is as atomic as
        one claim, and a task is never given twice."""
        room = self.room(agent)
        return self._take(agent, room if most <= 0 else min(most, room))

    def room(self, agent: Agent) -> int:
        """AGENT's free wip: its template's concurrency minus the tasks it holds
        (in progress, claimed by it). 0 for an agent without a valid template."""
        return max(0, self.wip(agent) - len(self.repo.running_on(agent.id)))

    def _take(self, agent: Agent, n: int) -> list[Task]:
        if n <= 0:
            return []
        now = time.time()
        taken: list[Task] = []
        pinned_only = self.only_pinned(agent)
        for row in self.repo.claimable(agent.id, agent.owner_uid, now):
            if len(taken) >= n:
                break
            if not self._may_take(agent, row, pinned_only) or self.repo.waits(row["id"]):
                continue
            task = self.repo.find(row["id"])  # the full row only for a candidate
            if task is None:
                continue
            try:
                taken.append(self.lifecycle.claim(task, agent, now))
            except Conflict:
                continue
        return taken

    def _may_take(self, agent: Agent, row: Row, pinned_only: bool) -> bool:
        """Assigned to AGENT already, or AGENT has what it needs (and takes more
        than what is pinned to it; and is in the team, for a team's task)."""
        if row["agent_id"] is not None or row["pinned_agent_id"] == agent.id:
            return True
        if row["team_id"] is not None and not self.repo.is_member(row["team_id"], agent.id):
            return False
        return not pinned_only and not self.missing(
            agent, json.loads(row["needs"]), bool(row["exec"])
        )

    # -- assignment (the scheduler's pass) ---------------------------------------------------------
    def assign(self, now: float | None = None) -> set[str]:
        """Give runnable tasks to agents with room; return the names of the agents
        that have work waiting (the scheduler starts their units). Tasks name
        agents by id: a name reused by a new agent does not inherit them; the
        tasks of a removed agent are routed again, or failed if pinned to it.

        A pass is O(work), not O(agents): it reads only the agents that tasks
        wait for (assigned, pinned, or of an owner with unplaced work), found
        from indexes that hold only such rows (store migration 9). Before, a
        pass asked every agent with room for work: with 1,000 idle agents of
        another owner registered it ran 1,004 statements and took 80 ms p50;
        now 7 statements and 0.12 ms, as with 10 agents (bench/scheduler.py,
        one run, 2026-11-30). Passes run up to 20 times a second."""
        now = now or time.time()
        owners, pinned = self.repo.unplaced()
        named = pinned | self.repo.assigned_agents()
        live = self.registry.present(named)
        if named - live.keys() or not self._swept:
            self._unassign_gone(named - live.keys())
            self._swept = True
        candidates = self.registry.present_of(owners) if owners else {}
        candidates.update((aid, a) for aid, a in live.items() if aid in pinned)
        if owners:  # members of another owner's team may run its tasks
            candidates.update(self.registry.present(self.repo.foreign_members()))
        placed = self._place(candidates, now) if candidates else set()
        waiting = {live[aid].name for aid in self.repo.waiting_agents(now) if aid in live}
        return waiting | {candidates[aid].name for aid in placed}

    def _place(self, agents: dict[int, Agent], now: float) -> set[int]:
        """Give each of AGENTS with room its best runnable tasks, least loaded
        first, one task per agent per round: from each agent's side, by index,
        so a pass costs what there is to place, not the length of the queue."""
        load = self.repo.load()
        wip = {aid: self.wip(a) for aid, a in agents.items()}
        placed: set[int] = set()
        room = [aid for aid in agents if load.get(aid, 0) < wip[aid]]
        while room:
            room.sort(key=lambda a: (load.get(a, 0), agents[a].name))
            took = [aid for aid in room if self._place_one(agents[aid], now)]
            for aid in took:
                load[aid] = load.get(aid, 0) + 1
            placed.update(took)
            room = [aid for aid in took if load[aid] < wip[aid]]
        return placed

    def _place_one(self, agent: Agent, now: float) -> bool:
        pinned_only = self.only_pinned(agent)
        for row in self.repo.unassigned_for(agent.id, agent.owner_uid, now):
            if not self._may_take(agent, row, pinned_only) or self.repo.waits(row["id"]):
                continue
            task = self.repo.find(row["id"])
            if task is None:
                continue
            try:
                self.lifecycle.assign(task, agent)
            except Conflict:
                continue
            return True
        return False

    def _unassign_gone(self, gone: set[int]) -> None:
        """Pending tasks of the agents in GONE (removed): routed again, or, if
        pinned to one (so they can never run), failed with the reason; and tasks
        pinned by a name no agent had (store migration 5), failed."""
        for row in self.repo.pending_of(gone):
            pinned = row["pinned_agent"]
            try:
                if pinned and (row["pinned_agent_id"] in gone or row["pinned_agent_id"] is None):
                    self.lifecycle.orphan(self.repo.task(row), pinned)
                elif row["agent_id"] in gone:
                    self.lifecycle.unassign(self.repo.task(row), row["agent"])
            except Conflict:
                continue
