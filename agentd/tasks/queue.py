"""The task queue: the one object the daemon, the bus layer and the scheduler use.

TaskQueue is a facade over the package, each module owning one concern:
  model       the vocabulary, the records and the status-transition table
  spec        checks of what callers write (fields, sizes, names)
  repository  rows <-> records, and every query that reads tasks and projects
  lifecycle   every status change: one versioned, audited transaction each
  routing     which agent runs which task (submit, claims, assignment)
  artifacts   the files reported with results: checked, hashed, read back

What stays here, grouped at the top of the class, is who may do what and who is
told. Invariant: every public method decides who may ask before any module
below acts, and every denial is an audit row: people submit and see their own
tasks (admins all); a task only ever runs on an agent its owner may manage; an
agent sees and reports only the tasks it claimed itself, and meters its Think
calls only against a task it holds the claim of now. Per owner (not for
administrators), at most max_projects_per_owner active projects and
max_queued_tasks_per_owner tasks not yet final (agentd.toml): a person cannot
grow the database without bound by submitting. Each task event goes
as a domain event from one place (_notify, called by lifecycle inside the
change's transaction, so delivered after its commit). Also here: the wake-ups
of ClaimTask/ClaimTasks long polls, themselves subscribers of those events.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from ..agent import Agent
from ..audit import AuditLog, Entry
from ..config import Config
from ..errors import (
    InvalidArgument,
    InvalidName,
    LimitExceeded,
    NoCapableAgent,
    NoSuchProject,
    NoSuchTask,
    NoSuchTeam,
)
from ..events import Events, TaskChanged, UnitStateChanged
from ..policy import Caller, Policy, Resource, Role
from ..registry import Registry
from ..store import Store
from ..templates import Catalog
from .artifacts import inspect as inspect_artifacts
from .artifacts import read as read_artifact_file
from .lifecycle import Lifecycle
from .model import Artifact, Task
from .repository import Repository, Row
from .resume import Resumes
from .routing import Router
from .spec import NewTask, dependency_ids, project_name, result_text, text
from .spec import parse as parse_spec
from .trace import TaskLoop

__all__ = ["Artifact", "Task", "TaskQueue"]

# The refusals of a bad submission (audited as task.create "refused").
_SUBMIT_ERRORS = (
    InvalidArgument,
    NoSuchProject,
    NoSuchTask,
    NoCapableAgent,
    InvalidName,
    NoSuchTeam,
)


class TaskQueue:
    """Every task operation agentd offers, each checking who asks before it
    delegates. (`builtins.list` in annotations: the method `list` is ListTasks.)"""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        cfg: Config | None = None,
        audit: AuditLog | None = None,
        policy: Policy | None = None,
        events: Events | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        """daemon.serve passes every service; tests may let the registry's stand in."""
        self.store = store
        self.registry = registry
        self.cfg = cfg or registry.cfg
        self.audit = audit or registry.audit
        self.policy = policy or registry.policy
        self._events = events or registry.events
        self._events.subscribe(TaskChanged, self._on_task)
        self._events.subscribe(UnitStateChanged, self._on_unit_state)
        self._wakeups: dict[str, asyncio.Event] = {}
        # Bumped whenever an agent's runtime is replaced or gone: a ClaimTask long
        # poll left behind by a dead runtime must not claim work for nobody.
        self._generation: dict[str, int] = {}
        self.repo = Repository(store)
        self.lifecycle = Lifecycle(store, self.repo, registry, self._notify)
        self.router = Router(
            registry, self.repo, self.lifecycle, self.cfg, catalog or registry.catalog, self.policy
        )
        self.resumes = Resumes(store, self.repo, self.lifecycle)  # quota-blocked tasks
        self.loop = TaskLoop(self)  # traces, replies, deferral, context (agentd.tasks.trace)

    # -- who may do what (agentd.policy) and who is told (agentd.events) ------------------
    def _person(self, caller: Caller, action: str) -> Role:
        """People only: agents use the Runtime interface for their own tasks."""
        return self.policy.check(caller, action)

    def _visible(self, caller: Caller, task_id: int, action: str) -> Task:
        self.policy.check(caller, action)
        task = self.repo.find(task_id) if isinstance(task_id, int) else None
        if task is None:
            raise NoSuchTask(f"no task {task_id}")
        self.policy.check(
            caller, action, Resource("task", str(task.id), task.owner_uid, task_id=task.id)
        )
        return task

    def _project(self, caller: Caller, name: str, action: str) -> Row:
        self.policy.check(caller, action)
        row = self.repo.project(name)
        if row is None:
            raise NoSuchProject(f"no project named {name!r}")
        self.policy.check(caller, action, Resource("project", repr(name), row["owner_uid"]))
        return row

    def _agent_task(self, agent: Agent, task_id: int, attempt: int, action: str) -> Task:
        """The task AGENT reports on, if it holds the claim, at attempt ATTEMPT."""
        return self.lifecycle.current(self._held(agent, task_id, action), attempt)

    def _held(self, agent: Agent, task_id: int, action: str, running: bool = False) -> Task:
        """The task AGENT was given (RUNNING: and holds the claim of now, in
        progress); else PermissionDenied, audited as ACTION."""
        task = self.repo.find(task_id) if isinstance(task_id, int) else None
        holder = self.registry.by_id(task.agent_id) if task is not None else None
        if running and task is not None and task.status != "in_progress":
            holder = None
        self.policy.check(
            Caller(agent.uid, name=agent.name),
            action,
            Resource(
                "task",
                str(task_id),
                task.owner_uid if task else -1,
                agent=holder.name if holder else None,
                agent_uid=holder.uid if holder else None,
                task_id=task_id,
            ),
        )
        assert task is not None
        return task

    def thinking_on(self, agent: Agent, task_id: int) -> int:
        """TASK_ID, if AGENT holds its claim now: Think's ``task`` option meters
        the call against it, so it must be the agent's own running task."""
        return self._held(agent, task_id, "model.think", running=True).id

    def _owner_limit(self, caller: Caller, action: str, owner_uid: int, what: str) -> None:
        """LimitExceeded (audited) if OWNER_UID has its most of WHAT ("projects" or
        "tasks"); administrators are not limited."""
        if self.policy.role(caller, action) is not Role.USER:
            return
        if what == "projects":
            have, most = self.repo.owned_projects(owner_uid), self.cfg.max_projects_per_owner
            key = "max_projects_per_owner"
        else:
            have, most = self.repo.queued_tasks(owner_uid), self.cfg.max_queued_tasks_per_owner
            key = "max_queued_tasks_per_owner"
        if have >= most:
            self.policy.refuse(
                caller,
                action,
                LimitExceeded(
                    f"uid {owner_uid} has {have} {what}, the most allowed ({key}={most})"
                ),
            )

    def _notify(self, task: Task, event: str) -> None:
        """Called from one place only, lifecycle.Lifecycle._published, inside the
        change's transaction: the event is delivered once it commits."""
        self._events.publish(TaskChanged(task, event))

    def _on_task(self, event: TaskChanged) -> None:
        """A task became claimable by its agent (pending), or one it held ended
        and freed room in its wip (ClaimTasks): wake that agent's long polls."""
        if event.task.agent and event.task.status != "in_progress":
            self.wake(event.task.agent)

    def _on_unit_state(self, event: UnitStateChanged) -> None:
        if event.active_state in ("inactive", "failed"):
            self.runtime_gone(event.name)

    # -- projects ---------------------------------------------------------------------------
    def create_project(self, caller: Caller, name: str, description: str = "") -> None:
        self._person(caller, "project.create")
        name = project_name(name)
        description = text(description, "description")
        self._owner_limit(caller, "project.create", caller.uid, "projects")
        with self.store.transaction():
            self.repo.add_project(name, description, caller.uid)
            self.audit.append("project.created", actor_uid=caller.uid, project=name)

    def projects(self, caller: Caller) -> builtins.list[Row]:
        self._person(caller, "project.list")
        return [
            r
            for r in self.repo.projects()
            if self.policy.sees(caller, "project.list", r["owner_uid"])
        ]

    def project(self, caller: Caller, name: str) -> dict[str, Any]:
        row = self._project(caller, name, "project.show")
        counts = self.repo.project_counts(row["id"])
        return {
            "name": row["name"],
            "description": row["description"],
            "owner_uid": row["owner_uid"],
            "created_at": row["created_at"],
            "tasks": sum(counts.values()),
            **{f"tasks_{status}": n for status, n in counts.items()},
        }

    def remove_project(self, caller: Caller, name: str) -> None:
        row = self._project(caller, name, "project.remove")
        with self.store.transaction():
            self.repo.retire_project(row)
            self.audit.append("project.removed", actor_uid=caller.uid, project=name)

    # -- submitting ---------------------------------------------------------------------------
    def submit(self, caller: Caller, spec: dict[str, Any]) -> Task:
        self._person(caller, "task.create")
        self._owner_limit(caller, "task.create", caller.uid, "tasks")
        try:
            new = self._validate(caller, spec)
        except _SUBMIT_ERRORS as e:
            self.audit.append(
                "task.create", actor_uid=caller.uid, result="refused", error=e.name, reason=str(e)
            )
            raise
        return self.lifecycle.create(caller.uid, new)

    def submit_for(self, owner_uid: int, spec: dict[str, Any]) -> Task:
        """agentd submitting on OWNER_UID's behalf (a goal's planner and steps):
        every check of SPEC is made as that owner, a plain person (routing, the
        project, dependencies, the queued-tasks limit), but not the per-UID
        creation rate, which the person met when asking for the goal."""
        caller = Caller(owner_uid)
        self._owner_limit(caller, "task.create", owner_uid, "tasks")
        return self.lifecycle.create(owner_uid, self._validate(caller, spec))

    def _validate(self, caller: Caller, spec: dict[str, Any]) -> NewTask:
        new = parse_spec(spec)
        project_id = None
        if spec.get("project"):
            project_id = self._project(caller, project_name(spec["project"]), "task.create")["id"]
        after = self._deps(caller, spec.get("after", []))
        if spec.get("team"):
            if spec.get("agent"):
                raise InvalidArgument("a task goes to an agent or to a team, not both")
            team = self.router.route_team(caller, spec["team"], new.needs, bool(new.exec))
            return dataclasses.replace(new, project_id=project_id, after=after, team_id=team)
        agent = self.router.route(caller, spec.get("agent") or None, new.needs, bool(new.exec))
        return dataclasses.replace(
            new,
            project_id=project_id,
            after=after,
            agent=agent.name if agent else None,
            agent_id=agent.id if agent else None,
        )

    def _deps(self, caller: Caller, after: object) -> tuple[int, ...]:
        """Tasks to wait for: existing ones the caller may see (another's is "no
        such task", not a denial: its existence is not the caller's business). A
        new task can only point at tasks that already exist, so no cycle can form."""
        ids = dependency_ids(after)
        for dep in ids:
            task = self.repo.find(dep)
            if task is None or not self.policy.sees(caller, "task.list", task.owner_uid):
                raise NoSuchTask(f"no task {dep} to depend on")
        return tuple(sorted(set(ids)))

    # -- reading -------------------------------------------------------------------------------
    def find(self, task_id: int) -> Task | None:
        return self.repo.find(task_id)

    def get(self, caller: Caller, task_id: int) -> Task:
        return self._visible(caller, task_id, "task.show")

    def list(self, caller: Caller, filters: dict[str, Any]) -> builtins.list[Task]:
        self._person(caller, "task.list")
        everyone = self.policy.role(caller, "task.list") is Role.ADMIN
        return self.repo.tasks(None if everyone else caller.uid, filters)

    def events(self, caller: Caller, task_id: int) -> builtins.list[Entry]:
        self._visible(caller, task_id, "task.show")
        return self.audit.entries(task_id=task_id, limit=100000)

    def artifacts(self, caller: Caller | None, task_id: int) -> builtins.list[Artifact]:
        if caller is not None:
            self._visible(caller, task_id, "task.show")
        return self.repo.artifacts(task_id)

    def read_artifact(self, caller: Caller, task_id: int, name: str) -> bytes:
        self._visible(caller, task_id, "artifact.read")
        found = [a for a in self.repo.artifacts(task_id) if a.name == name]
        if not found:
            raise InvalidArgument(f"task {task_id} has no artifact named {name!r}")
        data = read_artifact_file(found[0])
        self.audit.append("artifact.read", actor_uid=caller.uid, task_id=task_id, name=name)
        return data

    # -- people changing tasks -------------------------------------------------------------------
    def cancel(self, caller: Caller, task_id: int) -> Task:
        task = self._visible(caller, task_id, "task.cancel")
        return self.lifecycle.cancel(task, caller.uid)

    def retry(self, caller: Caller, task_id: int) -> Task:
        task = self._visible(caller, task_id, "task.retry")
        self._owner_limit(caller, "task.retry", task.owner_uid, "tasks")
        return self.lifecycle.retry(task, caller.uid)

    def unblock(self, caller: Caller, task_id: int, note: str) -> Task:
        task = self._visible(caller, task_id, "task.unblock")
        return self.lifecycle.unblock(task, caller.uid, note)

    # -- the agent's side ------------------------------------------------------------------
    def claim(self, agent: Agent) -> Task | None:
        """The best runnable task for AGENT, claimed (see routing.Router.claim)."""
        return self.router.claim(agent)

    def claim_many(self, agent: Agent, most: int) -> builtins.list[Task]:
        """Up to MOST tasks for AGENT within its free wip (0: as many as fit);
        see routing.Router.claim_many."""
        return self.router.claim_many(agent, most)

    async def claim_wait(self, agent: Agent, timeout: float) -> Task | None:
        """claim(), waiting up to TIMEOUT seconds for work to be assigned."""
        found = await self._wait(agent, timeout, lambda: [t] if (t := self.claim(agent)) else [])
        return found[0] if found else None

    async def claim_many_wait(self, agent: Agent, most: int, timeout: float) -> builtins.list[Task]:
        """claim_many(), waiting up to TIMEOUT seconds for work, or for room (a
        task of the agent's ending frees a slot of its wip)."""
        return await self._wait(agent, timeout, lambda: self.claim_many(agent, most))

    async def _wait(
        self, agent: Agent, timeout: float, take: Callable[[], builtins.list[Task]]
    ) -> builtins.list[Task]:
        """TAKE() until it claims something, the deadline passes, or the runtime
        that asked is gone; woken by the agent's task events in between."""
        deadline = time.monotonic() + timeout
        generation = self._generation.get(agent.name, 0)
        event = self._wakeups.setdefault(agent.name, asyncio.Event())
        while True:
            if self._generation.get(agent.name, 0) != generation:
                return []  # the runtime that asked is gone
            event.clear()
            tasks = take()
            remaining = deadline - time.monotonic()
            if tasks or remaining <= 0:
                return tasks
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    async def complete_and_claim(
        self,
        agent: Agent,
        task_id: int,
        attempt: int,
        result: str,
        artifacts: builtins.list[tuple[str, str]],
        most: int,
        timeout: float,
    ) -> builtins.list[Task]:
        """complete(), then claim_many_wait(): one round trip per task for a busy
        runtime. A refused completion (LeaseExpired, PermissionDenied, ...) raises
        before anything is claimed; the completion is committed on its own, so a
        claim that finds nothing (or a runtime gone meanwhile) never undoes it."""
        await self.complete(agent, task_id, attempt, result, artifacts)
        return await self.claim_many_wait(agent, most, timeout)

    def wake(self, agent: str) -> None:
        event = self._wakeups.get(agent)
        if event is not None:
            event.set()

    def runtime_gone(self, name: str) -> None:
        """AGENT's runtime was replaced or its unit went down: orphaned long polls
        end without claiming."""
        self._generation[name] = self._generation.get(name, 0) + 1
        self.wake(name)

    def renew(self, agent: Agent) -> builtins.list[int]:
        """Heartbeat: extend the agent's leases; return tasks it must abort."""
        return self.lifecycle.renew(agent)

    async def complete(
        self,
        agent: Agent,
        task_id: int,
        attempt: int,
        result: str,
        artifacts: builtins.list[tuple[str, str]],
    ) -> Task:
        return await self._finish(agent, task_id, attempt, "task.completed", result, artifacts)

    async def fail(
        self,
        agent: Agent,
        task_id: int,
        attempt: int,
        error: str,
        result: str,
        artifacts: builtins.list[tuple[str, str]],
    ) -> Task:
        return await self._finish(
            agent, task_id, attempt, "task.failed", result, artifacts, error=text(error, "error")
        )

    async def _finish(
        self,
        agent: Agent,
        task_id: int,
        attempt: int,
        event: str,
        result: str,
        artifacts: builtins.list[tuple[str, str]],
        error: str | None = None,
    ) -> Task:
        result = result_text(result)
        task = self._agent_task(agent, task_id, attempt, event)
        found: builtins.list[Artifact] = []
        if artifacts:  # hashing files is I/O: off the event loop, then re-check the claim
            found = await asyncio.to_thread(self._inspect_artifacts, agent, artifacts)
            task = self._agent_task(agent, task_id, attempt, event)
        return self.lifecycle.finish(task, agent, attempt, event, result, error, found)

    def block(self, agent: Agent, task_id: int, attempt: int, reason: str) -> Task:
        task = self._agent_task(agent, task_id, attempt, "task.blocked")
        with self.store.transaction():  # a quota's refusal resumes by itself (resume.py)
            blocked = self.lifecycle.block(task, agent, attempt, reason)
            self.resumes.blocked(blocked, reason)
        return blocked

    def _inspect_artifacts(
        self, agent: Agent, artifacts: builtins.list[tuple[str, str]]
    ) -> builtins.list[Artifact]:
        """Check each reported file is the agent's own regular file in its home."""
        return inspect_artifacts(agent, artifacts)

    # -- scheduling ------------------------------------------------------------------------
    def expire_leases(self, now: float | None = None) -> builtins.list[Task]:
        """Retry (with backoff) or dead-letter every task whose claim lapsed."""
        now = now or time.time()
        return self.lifecycle.expire(self.repo.lapsed(now), now)

    def release(self, agent: Agent) -> builtins.list[Task]:
        """A new runtime of AGENT registered: it holds no claim, so the claims of
        the instance before it (killed, crashed) have lapsed now."""
        released = self.lifecycle.expire(
            self.repo.running_on(agent.id), time.time(), reason="the runtime holding it restarted"
        )
        self.runtime_gone(agent.name)
        return released

    def grace(self) -> None:
        """After agentd restarts, give running claims a full lease again: agentd's
        own downtime must not count against the agents' heartbeats."""
        self.lifecycle.grace()

    def assign(self, now: float | None = None) -> set[str]:
        """Give runnable tasks to agents with room; return the agents that have
        work waiting (the scheduler starts their units)."""
        return self.router.assign(now)

    def busy_agents(self) -> set[str]:
        """Names of the live agents holding open tasks (their units stay up)."""
        return {a.name for a in self.registry.present(self.repo.busy_agents()).values()}

    def settings(self, agent: Agent) -> dict[str, Any]:
        """What a runtime is told at registration, with the loop's steps and task_tokens."""
        return {**self.router.settings(agent), **self.loop.settings(agent)}
