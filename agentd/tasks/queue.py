"""The task queue: the one object the daemon, the bus layer and the scheduler use.

TaskQueue is a facade over the package, each module owning one concern:
  model       the vocabulary, the records and the status-transition table
  spec        checks of what callers write (fields, sizes, names)
  repository  rows <-> records, and every query that reads tasks and projects
  lifecycle   every status change: one versioned, audited transaction each
  routing     which agent runs which task (submit, claims, assignment)
  artifacts   the files reported with results: checked, hashed, read back

What stays here, grouped at the top of the class, is who may do what and who is
told: people submit and see their own tasks (admins all); an agent sees and
reports only the tasks claimed by itself; every audited denial; and the
listeners told of each task event. (They are to become agentd.policy and
post-commit agentd.events.) Also here: the wake-ups of ClaimTask long polls.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import time
from typing import Any

from ..audit import Entry
from ..errors import (
    InvalidArgument,
    InvalidName,
    NoCapableAgent,
    NoSuchProject,
    NoSuchTask,
    PermissionDenied,
)
from ..policy import Caller, Role
from ..registry import Agent, Registry
from ..store import Store
from .artifacts import inspect as inspect_artifacts
from .artifacts import read as read_artifact_file
from .lifecycle import Lifecycle
from .model import Artifact, Listener, Task
from .repository import Repository, Row
from .routing import Router
from .spec import NewTask, dependency_ids, project_name, result_text, text
from .spec import parse as parse_spec

__all__ = ["Artifact", "Listener", "Task", "TaskQueue"]

# The refusals of a bad submission (audited as task.create "refused").
_SUBMIT_ERRORS = (InvalidArgument, NoSuchProject, NoSuchTask, NoCapableAgent, InvalidName)


class TaskQueue:
    # (`builtins.list` in annotations: the method `list` below is ListTasks.)
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self.cfg = registry.cfg
        self.audit = registry.audit
        self.listeners: builtins.list[Listener] = []
        self._wakeups: dict[str, asyncio.Event] = {}
        # Bumped whenever an agent's runtime is replaced or gone: a ClaimTask long
        # poll left behind by a dead runtime must not claim work for nobody.
        self._generation: dict[str, int] = {}
        self.repo = Repository(store)
        self.lifecycle = Lifecycle(store, self.repo, registry, self._notify)
        self.router = Router(registry, self.repo, self.lifecycle)

    # -- who may do what, and who is told (to become agentd.policy, agentd.events) --------
    def _role(self, caller: Caller, action: str) -> Role:
        return self.registry.policy.role(caller, action)

    def _person(self, caller: Caller, action: str) -> Role:
        """People only: agents use the Runtime interface for their own tasks."""
        role = self._role(caller, action)
        if role is Role.AGENT:
            self.audit.append(action, actor_uid=caller.uid, result="denied",
                              reason="agents may not use the Tasks interface")
            raise PermissionDenied("agents may not use the Tasks interface")
        return role

    def _visible(self, caller: Caller, task_id: int, action: str) -> Task:
        role = self._person(caller, action)
        task = self.repo.find(task_id) if isinstance(task_id, int) else None
        if task is None:
            raise NoSuchTask(f"no task {task_id}")
        if role is not Role.ADMIN and task.owner_uid != caller.uid:
            self.audit.append(action, actor_uid=caller.uid, result="denied", task_id=task_id,
                              reason=f"uid {caller.uid} does not own task {task_id}")
            raise PermissionDenied(f"task {task_id} belongs to another user")
        return task

    def _project(self, caller: Caller, name: str, action: str) -> Row:
        role = self._person(caller, action)
        row = self.repo.project(name)
        if row is None:
            raise NoSuchProject(f"no project named {name!r}")
        if role is not Role.ADMIN and row["owner_uid"] != caller.uid:
            self.audit.append(action, actor_uid=caller.uid, result="denied", project=name,
                              reason=f"uid {caller.uid} does not own project {name}")
            raise PermissionDenied(f"project {name!r} belongs to another user")
        return row

    def _agent_task(self, agent: Agent, task_id: int, attempt: int, action: str) -> Task:
        """The task AGENT reports on, if it holds the claim, at attempt ATTEMPT."""
        task = self.repo.find(task_id) if isinstance(task_id, int) else None
        if task is None or task.agent != agent.name:
            self.audit.append(action, actor_uid=agent.uid, agent=agent.name,
                              agent_uid=agent.uid, result="denied", task_id=task_id,
                              reason=f"task {task_id} is not claimed by {agent.name}")
            raise PermissionDenied(f"task {task_id} is not claimed by {agent.name}")
        return self.lifecycle.current(task, attempt)

    def _notify(self, task: Task, event: str) -> None:
        """Called from one place only, lifecycle.Lifecycle._published."""
        if task.agent and task.status == "pending":
            self.wake(task.agent)
        for listener in list(self.listeners):
            listener(task, event)

    # -- projects ---------------------------------------------------------------------------
    def create_project(self, caller: Caller, name: str, description: str = "") -> None:
        self._person(caller, "project.create")
        name = project_name(name)
        description = text(description, "description")
        with self.store.transaction():
            self.repo.add_project(name, description, caller.uid)
            self.audit.append("project.created", actor_uid=caller.uid, project=name)

    def projects(self, caller: Caller) -> builtins.list[Row]:
        role = self._person(caller, "project.list")
        return [r for r in self.repo.projects()
                if role is Role.ADMIN or r["owner_uid"] == caller.uid]

    def project(self, caller: Caller, name: str) -> dict[str, Any]:
        row = self._project(caller, name, "project.show")
        counts = self.repo.project_counts(row["id"])
        return {"name": row["name"], "description": row["description"],
                "owner_uid": row["owner_uid"], "created_at": row["created_at"],
                "tasks": sum(counts.values()),
                **{f"tasks_{status}": n for status, n in counts.items()}}

    def remove_project(self, caller: Caller, name: str) -> None:
        row = self._project(caller, name, "project.remove")
        with self.store.transaction():
            self.repo.retire_project(row)
            self.audit.append("project.removed", actor_uid=caller.uid, project=name)

    # -- submitting ---------------------------------------------------------------------------
    def submit(self, caller: Caller, spec: dict[str, Any]) -> Task:
        role = self._person(caller, "task.create")
        try:
            new = self._validate(caller, role, spec)
        except _SUBMIT_ERRORS as e:
            self.audit.append("task.create", actor_uid=caller.uid, result="refused",
                              error=e.name, reason=str(e))
            raise
        return self.lifecycle.create(caller.uid, new)

    def _validate(self, caller: Caller, role: Role, spec: dict[str, Any]) -> NewTask:
        new = parse_spec(spec)
        project_id = None
        if spec.get("project"):
            project_id = self._project(caller, spec["project"], "task.create")["id"]
        after = self._deps(caller, role, spec.get("after", []))
        agent = self.router.route(caller, spec.get("agent") or None, new.needs, bool(new.exec))
        return dataclasses.replace(new, project_id=project_id, after=after, agent=agent)

    def _deps(self, caller: Caller, role: Role, after: object) -> tuple[int, ...]:
        """Tasks to wait for: existing ones the caller may see. A new task can only
        point at tasks that already exist, so no cycle can form."""
        ids = dependency_ids(after)
        for dep in ids:
            task = self.repo.find(dep)
            if task is None or (role is not Role.ADMIN and task.owner_uid != caller.uid):
                raise NoSuchTask(f"no task {dep} to depend on")
        return tuple(sorted(set(ids)))

    # -- reading -------------------------------------------------------------------------------
    def find(self, task_id: int) -> Task | None:
        return self.repo.find(task_id)

    def get(self, caller: Caller, task_id: int) -> Task:
        return self._visible(caller, task_id, "task.show")

    def list(self, caller: Caller, filters: dict[str, Any]) -> builtins.list[Task]:
        role = self._person(caller, "task.list")
        return self.repo.tasks(None if role is Role.ADMIN else caller.uid, filters)

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
        return self.lifecycle.retry(task, caller.uid)

    def unblock(self, caller: Caller, task_id: int, note: str) -> Task:
        task = self._visible(caller, task_id, "task.unblock")
        return self.lifecycle.unblock(task, caller.uid, note)

    # -- the agent's side ------------------------------------------------------------------
    def claim(self, agent: Agent) -> Task | None:
        """The best runnable task for AGENT, claimed (see routing.Router.claim)."""
        return self.router.claim(agent)

    async def claim_wait(self, agent: Agent, timeout: float) -> Task | None:
        """claim(), waiting up to TIMEOUT seconds for work to be assigned."""
        deadline = time.monotonic() + timeout
        generation = self._generation.get(agent.name, 0)
        event = self._wakeups.setdefault(agent.name, asyncio.Event())
        while True:
            if self._generation.get(agent.name, 0) != generation:
                return None  # the runtime that asked is gone
            event.clear()
            task = self.claim(agent)
            remaining = deadline - time.monotonic()
            if task is not None or remaining <= 0:
                return task
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

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

    async def complete(self, agent: Agent, task_id: int, attempt: int, result: str,
                       artifacts: builtins.list[tuple[str, str]]) -> Task:
        return await self._finish(agent, task_id, attempt, "task.completed", result, artifacts)

    async def fail(self, agent: Agent, task_id: int, attempt: int, error: str, result: str,
                   artifacts: builtins.list[tuple[str, str]]) -> Task:
        return await self._finish(agent, task_id, attempt, "task.failed", result, artifacts,
                                  error=text(error, "error"))

    async def _finish(self, agent: Agent, task_id: int, attempt: int, event: str,
                      result: str, artifacts: builtins.list[tuple[str, str]],
                      error: str | None = None) -> Task:
        result = result_text(result)
        task = self._agent_task(agent, task_id, attempt, event)
        found: builtins.list[Artifact] = []
        if artifacts:  # hashing files is I/O: off the event loop, then re-check the claim
            found = await asyncio.to_thread(self._inspect_artifacts, agent, artifacts)
            task = self._agent_task(agent, task_id, attempt, event)
        return self.lifecycle.finish(task, agent, attempt, event, result, error, found)

    def block(self, agent: Agent, task_id: int, attempt: int, reason: str) -> Task:
        task = self._agent_task(agent, task_id, attempt, "task.blocked")
        return self.lifecycle.block(task, agent, attempt, reason)

    def _inspect_artifacts(self, agent: Agent, artifacts: builtins.list[tuple[str, str]]
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
        released = self.lifecycle.expire(self.repo.running_on(agent.name), time.time(),
                                         reason="the runtime holding it restarted")
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
        return self.repo.busy_agents()

    def settings(self, agent: Agent) -> dict[str, Any]:
        return self.router.settings(agent)
