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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..agent import Agent
from ..config import Config
from ..errors import Conflict, InvalidConfig, NoCapableAgent, NoSuchTemplate
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
            "heartbeat_interval": cfg.heartbeat_interval,
            "lease_seconds": cfg.lease_seconds,
        }

    def agents_of(self, owner_uid: int) -> list[Agent]:
        return [a for a in self.registry.agents() if a.owner_uid == owner_uid]

    # -- at submit ---------------------------------------------------------------------------
    def route(
        self, caller: Caller, pinned: str | None, needs: Sequence[str], needs_shell: bool
    ) -> str | None:
        """Refuse a task no agent of the caller's could ever run; the pinned
        agent's name, or None for "any of the owner's"."""
        if pinned is not None:
            return self._pinned(caller, pinned, needs, needs_shell)
        if not any(not self.missing(a, needs, needs_shell) for a in self.agents_of(caller.uid)):
            what = ", ".join([*needs, *(["the shell tool"] if needs_shell else [])]) or "anything"
            raise NoCapableAgent(f"none of your agents has {what}")
        return None

    def _pinned(
        self, caller: Caller, pinned: object, needs: Sequence[str], needs_shell: bool
    ) -> str:
        agent = self.registry.find(pinned) if isinstance(pinned, str) else None
        if agent is None or agent.state != "present":
            raise NoCapableAgent(f"no agent named {pinned!r}")
        if not self.policy.may_manage(caller, agent.owner_uid, "task.create"):
            raise NoCapableAgent(f"agent {pinned!r} belongs to another user")
        missing = self.missing(agent, needs, needs_shell)
        if missing:
            raise NoCapableAgent(f"agent {pinned!r} lacks {', '.join(missing)}")
        return agent.name

    # -- claims (pulled by a running agent) ------------------------------------------------------
    def claim(self, agent: Agent) -> Task | None:
        """Atomically take the best runnable task for AGENT: one assigned to it,
        else an unassigned one it may run (pinned to it, or its owner's, with the
        capabilities it has), by priority then age. A task another claimer took
        first (Conflict) is skipped for the next."""
        now = time.time()
        rows = self.repo.claimable(agent.name, agent.owner_uid, now)
        unmet = self.repo.unmet_deps() if rows else set()
        for row in rows:
            if row["id"] in unmet or not self._may_take(agent, row):
                continue
            task = self.repo.find(row["id"])  # the full row only for a candidate
            if task is None:
                continue
            try:
                return self.lifecycle.claim(task, agent, now)
            except Conflict:
                continue
        return None

    def _may_take(self, agent: Agent, row: Row) -> bool:
        """Assigned to AGENT already, or AGENT has what it needs."""
        return row["agent"] is not None or not self.missing(
            agent, json.loads(row["needs"]), bool(row["exec"])
        )

    # -- assignment (the scheduler's pass) ---------------------------------------------------------
    def assign(self, now: float | None = None) -> set[str]:
        """Give runnable tasks to agents with room; return the agents that have
        work waiting (the scheduler starts their units)."""
        now = now or time.time()
        agents = {a.name: a for a in self.registry.agents()}
        self._unassign_gone(agents)
        waiting = self.repo.waiting_agents(now) & set(agents)
        load = self._load(agents)
        wip = {name: self.wip(a) for name, a in agents.items()}
        if _full(load, wip):
            return waiting
        rows = self.repo.unassigned(now)
        unmet = self.repo.unmet_deps() if rows else set()
        for row in rows:
            chosen = None if row["id"] in unmet else self._choose(row, agents, load, wip)
            if chosen is None:
                continue
            try:
                self.lifecycle.assign(self.repo.task(row), chosen)
            except Conflict:
                continue
            load[chosen] += 1
            waiting.add(chosen)
            if _full(load, wip):
                break
        return waiting

    def _load(self, agents: dict[str, Agent]) -> dict[str, int]:
        load = dict.fromkeys(agents, 0)
        for name, n in self.repo.load().items():
            if name in load:
                load[name] = n
        return load

    def _unassign_gone(self, agents: dict[str, Agent]) -> None:
        """Tasks whose agent was removed: routed again, or, if pinned to it (so
        they can never run), failed with the reason."""
        for row in self.repo.with_an_agent():
            pinned, agent = row["pinned_agent"], row["agent"]
            try:
                if pinned and pinned not in agents:
                    self.lifecycle.orphan(self.repo.task(row), pinned)
                elif agent and agent not in agents:
                    self.lifecycle.unassign(self.repo.task(row), agent)
            except Conflict:
                continue

    def _choose(
        self, row: Row, agents: dict[str, Agent], load: dict[str, int], wip: dict[str, int]
    ) -> str | None:
        """The least-loaded capable agent of the task's owner with room to spare."""
        names = (
            [row["pinned_agent"]]
            if row["pinned_agent"]
            else [n for n, a in agents.items() if a.owner_uid == row["owner_uid"]]
        )
        needs = json.loads(row["needs"])
        fit = [
            n
            for n in names
            if n in agents
            and load[n] < wip[n]
            and not self.missing(agents[n], needs, bool(row["exec"]))
        ]
        return min(fit, key=lambda n: (load[n], n)) if fit else None


def _full(load: dict[str, int], wip: dict[str, int]) -> bool:
    """No agent has room for another task."""
    return not any(load[n] < wip[n] for n in wip)
