"""The task queue: projects, tasks, claims with leases, retries, artifacts.

Every transition is one transaction that checks the row's version (optimistic
versioning: two writers cannot both win), changes the status, and appends an
audit row carrying the task id; the audit row *is* the event (task.created,
task.claimed, ...). A claim is a lease the agent's heartbeat renews; when it
lapses the task is retried with exponential backoff until max_attempts, then
dead-lettered. Each claim has an attempt number that the agent quotes when it
reports, so a report from a superseded attempt is refused: a task is never run
twice at once and never lost.

Authorization follows the agents': people submit and see their own tasks
(admins all); a task only ever runs on an agent its owner owns; an agent sees
and reports only the tasks claimed by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mimetypes
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..authz import Caller, Role
from ..errors import (
    AlreadyExists,
    Busy,
    Conflict,
    InvalidArgument,
    InvalidName,
    LeaseExpired,
    NoCapableAgent,
    NoSuchProject,
    NoSuchTask,
    PermissionDenied,
)
from ..registry import Agent, Registry
from ..store import Store
from .model import FILTER_KEYS, FINAL, PRIORITIES, SPEC_KEYS, STATUSES


MAX_TITLE = 256
MAX_TEXT = 64 * 1024  # description, exec, notes, error, block reason
MAX_RESULT = 1024 * 1024
MAX_NEEDS = 32
MAX_DEPS = 64
MAX_ARTIFACTS = 256
MAX_ARTIFACT_READ = 16 * 1024 * 1024  # the system bus refuses messages past 32 MiB
_CAP_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_ARTIFACT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Task:
    id: int
    title: str
    description: str
    project: str
    owner_uid: int
    needs: tuple[str, ...]
    priority: str
    status: str
    pinned_agent: str | None
    agent: str | None
    exec: str | None
    max_attempts: int
    attempts: int
    not_before: float
    lease_expires: float | None
    result: str | None
    error: str | None
    block_reason: str | None
    notes: tuple[str, ...]
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    version: int
    after: tuple[int, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "description": self.description,
            "status": self.status, "priority": self.priority, "project": self.project,
            "agent": self.agent or "", "owner_uid": self.owner_uid, "needs": list(self.needs),
            "after": list(self.after), "exec": self.exec or "",
            "max_attempts": self.max_attempts, "attempts": self.attempts,
            "result": self.result or "", "error": self.error or "",
            "block_reason": self.block_reason or "", "notes": list(self.notes),
            "created_at": self.created_at, "updated_at": self.updated_at,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "lease_expires": self.lease_expires,
        }


@dataclass(frozen=True)
class Artifact:
    task_id: int
    name: str
    type: str
    path: str
    size: int
    sha256: str


Listener = Callable[[Task, str], None]  # (task, event)


def _text(value: object, what: str, limit: int = MAX_TEXT, required: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string")
    if required and not value.strip():
        raise InvalidArgument(f"{what} must not be empty")
    if len(value.encode()) > limit:
        raise InvalidArgument(f"{what} is longer than {limit} bytes")
    if "\0" in value:
        raise InvalidArgument(f"{what} contains a NUL byte")
    return value


class TaskQueue:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self.cfg = registry.cfg
        self.audit = registry.audit
        self.listeners: list[Listener] = []
        self._wakeups: dict[str, asyncio.Event] = {}
        # Bumped whenever an agent's runtime is replaced or gone: a ClaimTask long
        # poll left behind by a dead runtime must not claim work for nobody.
        self._generation: dict[str, int] = {}

    # -- helpers -----------------------------------------------------------------
    def _role(self, caller: Caller) -> Role:
        return self.registry.authority.role(caller)

    def _person(self, caller: Caller, action: str) -> Role:
        """People only: agents use the Runtime interface for their own tasks."""
        role = self._role(caller)
        if role is Role.AGENT:
            self.audit.append(action, actor_uid=caller.uid, result="denied",
                              reason="agents may not use the Tasks interface")
            raise PermissionDenied("agents may not use the Tasks interface")
        return role

    def _row(self, row: dict[str, Any], known: Task | None = None) -> Task:
        """A Task from a tasks row; KNOWN (the same task, earlier) saves re-reading
        its dependencies and project, which no transition changes."""
        if known is not None:
            deps, project = known.after, known.project
        else:
            deps = tuple(r["depends_on"] for r in self.store.query(
                "SELECT depends_on FROM task_deps WHERE task_id=? ORDER BY depends_on",
                (row["id"],)))
            project = ""
            if row["project_id"] is not None:
                project = self.store.scalar("SELECT name FROM projects WHERE id=?",
                                            (row["project_id"],)) or ""
        return Task(
            id=row["id"], title=row["title"], description=row["description"],
            project=project, owner_uid=row["owner_uid"], needs=tuple(json.loads(row["needs"])),
            priority=PRIORITIES[row["priority"]], status=row["status"],
            pinned_agent=row["pinned_agent"], agent=row["agent"], exec=row["exec"],
            max_attempts=row["max_attempts"], attempts=row["attempts"],
            not_before=row["not_before"], lease_expires=row["lease_expires"],
            result=row["result"], error=row["error"], block_reason=row["block_reason"],
            notes=tuple(json.loads(row["notes"])), created_at=row["created_at"],
            updated_at=row["updated_at"], started_at=row["started_at"],
            finished_at=row["finished_at"], version=row["version"], after=deps,
        )

    def find(self, task_id: int) -> Task | None:
        rows = self.store.query("SELECT * FROM tasks WHERE id=?", (task_id,))
        return self._row(rows[0]) if rows else None

    def _visible(self, caller: Caller, task_id: int, action: str) -> Task:
        role = self._person(caller, action)
        task = self.find(task_id) if isinstance(task_id, int) else None
        if task is None:
            raise NoSuchTask(f"no task {task_id}")
        if role is not Role.ADMIN and task.owner_uid != caller.uid:
            self.audit.append(action, actor_uid=caller.uid, result="denied", task_id=task_id,
                              reason=f"uid {caller.uid} does not own task {task_id}")
            raise PermissionDenied(f"task {task_id} belongs to another user")
        return task

    def _transition(self, task: Task, event: str, actor_uid: int, changes: dict[str, Any],
                    result: str = "ok", **detail: Any) -> Task:
        """Apply CHANGES if the row is still at TASK's version; audit EVENT."""
        now = time.time()
        changes = {**changes, "updated_at": now}
        sets = ", ".join(f"{k}=?" for k in changes)
        with self.store.transaction():
            self.store.execute(
                f"UPDATE tasks SET {sets}, version=version+1 WHERE id=? AND version=?",
                (*changes.values(), task.id, task.version))
            if self.store.db.changes() != 1:
                raise Conflict(f"task {task.id} changed meanwhile; try again")
            agent = self.registry.find(changes.get("agent") or task.agent or "") \
                if (changes.get("agent") or task.agent) else None
            self.audit.append(event, actor_uid=actor_uid, agent=agent.name if agent else None,
                              agent_uid=agent.uid if agent else None, result=result,
                              task_id=task.id, **detail)
        updated = self._row(self.store.query("SELECT * FROM tasks WHERE id=?", (task.id,))[0],
                            known=task)
        self._notify(updated, event)
        return updated

    def _notify(self, task: Task, event: str) -> None:
        if task.agent and task.status == "pending":
            self.wake(task.agent)
        for listener in list(self.listeners):
            listener(task, event)

    def wake(self, agent: str) -> None:
        event = self._wakeups.get(agent)
        if event is not None:
            event.set()

    # -- projects ----------------------------------------------------------------
    def create_project(self, caller: Caller, name: str, description: str = "") -> None:
        self._person(caller, "project.create")
        if not isinstance(name, str) or not _PROJECT_RE.match(name):
            raise InvalidName(f"project name {name!r} is invalid: lowercase letters, digits, "
                              "'-' and '_', starting with a letter, at most 64")
        description = _text(description, "description")
        with self.store.transaction():
            if self.store.scalar("SELECT 1 FROM projects WHERE name=? AND state='active'",
                                 (name,)):
                raise AlreadyExists(f"a project named {name!r} already exists")
            self.store.execute(
                "INSERT INTO projects (name, description, owner_uid, state, created_at) "
                "VALUES (?,?,?,'active',?)", (name, description, caller.uid, time.time()))
            self.audit.append("project.created", actor_uid=caller.uid, project=name)

    def _project(self, caller: Caller, name: str, action: str) -> dict[str, Any]:
        role = self._person(caller, action)
        rows = self.store.query("SELECT * FROM projects WHERE name=? AND state='active'",
                                (name,))
        if not rows:
            raise NoSuchProject(f"no project named {name!r}")
        if role is not Role.ADMIN and rows[0]["owner_uid"] != caller.uid:
            self.audit.append(action, actor_uid=caller.uid, result="denied", project=name,
                              reason=f"uid {caller.uid} does not own project {name}")
            raise PermissionDenied(f"project {name!r} belongs to another user")
        return rows[0]

    def projects(self, caller: Caller) -> list[dict[str, Any]]:
        role = self._person(caller, "project.list")
        rows = self.store.query(
            "SELECT p.*, (SELECT count(*) FROM tasks t WHERE t.project_id=p.id) AS tasks "
            "FROM projects p WHERE state='active' ORDER BY name")
        return [r for r in rows if role is Role.ADMIN or r["owner_uid"] == caller.uid]

    def project(self, caller: Caller, name: str) -> dict[str, Any]:
        row = self._project(caller, name, "project.show")
        counts = {r["status"]: r["n"] for r in self.store.query(
            "SELECT status, count(*) AS n FROM tasks WHERE project_id=? GROUP BY status",
            (row["id"],))}
        return {"name": row["name"], "description": row["description"],
                "owner_uid": row["owner_uid"], "created_at": row["created_at"],
                "tasks": sum(counts.values()),
                **{f"tasks_{status}": n for status, n in counts.items()}}

    def remove_project(self, caller: Caller, name: str) -> None:
        row = self._project(caller, name, "project.remove")
        with self.store.transaction():
            open_tasks = self.store.scalar(
                "SELECT count(*) FROM tasks WHERE project_id=? AND status IN "
                "('pending', 'in_progress', 'blocked')", (row["id"],))
            if open_tasks:
                raise Busy(f"project {name!r} has {open_tasks} unfinished task(s); "
                           "cancel them first")
            self.store.execute("UPDATE projects SET state='removed' WHERE id=?", (row["id"],))
            self.audit.append("project.removed", actor_uid=caller.uid, project=name)

    # -- submitting ----------------------------------------------------------------
    def submit(self, caller: Caller, spec: dict[str, Any]) -> Task:
        role = self._person(caller, "task.create")
        try:
            values = self._validate(caller, role, spec)
        except (InvalidArgument, NoSuchProject, NoSuchTask, NoCapableAgent, InvalidName) as e:
            self.audit.append("task.create", actor_uid=caller.uid, result="refused",
                              error=e.name, reason=str(e))
            raise
        now = time.time()
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO tasks (title, description, project_id, owner_uid, needs, priority,"
                " status, pinned_agent, exec, max_attempts, created_at, updated_at) "
                "VALUES (?,?,?,?,?,?,'pending',?,?,?,?,?)",
                (values["title"], values["description"], values["project_id"], caller.uid,
                 json.dumps(values["needs"]), values["priority"], values["agent"],
                 values["exec"], values["max_attempts"], now, now))
            task_id = self.store.db.last_insert_rowid()
            for dep in values["after"]:
                self.store.execute("INSERT INTO task_deps VALUES (?,?)", (task_id, dep))
            self.audit.append("task.created", actor_uid=caller.uid, task_id=task_id,
                              title=values["title"], priority=PRIORITIES[values["priority"]],
                              needs=values["needs"], after=values["after"],
                              exec=bool(values["exec"]))
        task = self.find(task_id)
        assert task is not None
        self._notify(task, "task.created")
        return task

    def _validate(self, caller: Caller, role: Role, spec: dict[str, Any]) -> dict[str, Any]:
        unknown = set(spec) - SPEC_KEYS
        if unknown:
            raise InvalidArgument(f"unknown task field(s): {', '.join(sorted(unknown))}")
        out: dict[str, Any] = {
            "title": _text(spec.get("title", ""), "title", MAX_TITLE, required=True),
            "description": _text(spec.get("description", ""), "description"),
            "exec": _text(spec.get("exec", ""), "exec") or None,
        }
        priority = spec.get("priority", "medium")
        if priority not in PRIORITIES:
            raise InvalidArgument(f"priority must be one of {', '.join(PRIORITIES)}")
        out["priority"] = PRIORITIES.index(priority)
        max_attempts = spec.get("max_attempts", 3)
        if not isinstance(max_attempts, int) or not 1 <= max_attempts <= 100:
            raise InvalidArgument("max_attempts must be 1..100")
        out["max_attempts"] = max_attempts
        needs = spec.get("needs", [])
        if (not isinstance(needs, list) or len(needs) > MAX_NEEDS
                or not all(isinstance(c, str) and _CAP_RE.match(c) for c in needs)):
            raise InvalidArgument(f"needs must be at most {MAX_NEEDS} capability names")
        out["needs"] = sorted(set(needs))
        out["project_id"] = None
        if spec.get("project"):
            out["project_id"] = self._project(caller, spec["project"], "task.create")["id"]
        out["after"] = self._deps(caller, role, spec.get("after", []))
        out["agent"] = self._route(caller, role, spec.get("agent") or None, out["needs"],
                                   bool(out["exec"]))
        return out

    def _deps(self, caller: Caller, role: Role, after: object) -> list[int]:
        if not isinstance(after, list) or len(after) > MAX_DEPS or \
                not all(isinstance(d, int) for d in after):
            raise InvalidArgument(f"after must be a list of at most {MAX_DEPS} task ids")
        for dep in after:
            task = self.find(dep)
            if task is None or (role is not Role.ADMIN and task.owner_uid != caller.uid):
                raise NoSuchTask(f"no task {dep} to depend on")
        # A new task can only point at tasks that already exist, so no cycle can form.
        return sorted(set(after))

    def _route(self, caller: Caller, role: Role, pinned: str | None, needs: list[str],
               needs_shell: bool) -> str | None:
        """Refuse a task no agent of the caller's could ever run."""
        if pinned is not None:
            agent = self.registry.find(pinned) if isinstance(pinned, str) else None
            if agent is None or agent.state != "present":
                raise NoCapableAgent(f"no agent named {pinned!r}")
            if not self.registry.authority.may_manage(caller, agent.owner_uid):
                raise NoCapableAgent(f"agent {pinned!r} belongs to another user")
            missing = self._missing(agent, needs, needs_shell)
            if missing:
                raise NoCapableAgent(f"agent {pinned!r} lacks {', '.join(missing)}")
            return pinned
        if not any(not self._missing(a, needs, needs_shell) for a in self._agents_of(caller.uid)):
            what = ", ".join(needs + (["the shell tool"] if needs_shell else [])) or "anything"
            raise NoCapableAgent(f"none of your agents has {what}")
        return None

    def _agents_of(self, owner_uid: int) -> list[Agent]:
        return [a for a in self.registry.agents() if a.owner_uid == owner_uid]

    def _missing(self, agent: Agent, needs: list[str] | tuple[str, ...],
                 needs_shell: bool) -> list[str]:
        try:
            template = self.registry.catalog.template(agent.template)
        except Exception:
            return ["a valid template"]
        missing = [c for c in needs if c not in template.capabilities]
        if needs_shell and "shell" not in template.tools:
            missing.append("the shell tool")
        return missing

    # -- reading ---------------------------------------------------------------------
    def get(self, caller: Caller, task_id: int) -> Task:
        return self._visible(caller, task_id, "task.show")

    def list(self, caller: Caller, filters: dict[str, Any]) -> list[Task]:
        role = self._person(caller, "task.list")
        unknown = set(filters) - FILTER_KEYS
        if unknown:
            raise InvalidArgument(f"unknown filter(s): {', '.join(sorted(unknown))}")
        sql, params = "SELECT * FROM tasks WHERE 1=1", []
        if role is not Role.ADMIN:
            sql += " AND owner_uid=?"
            params.append(caller.uid)
        if filters.get("status"):
            if filters["status"] not in STATUSES:
                raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}")
            sql += " AND status=?"
            params.append(filters["status"])
        if filters.get("priority"):
            if filters["priority"] not in PRIORITIES:
                raise InvalidArgument(f"priority must be one of {', '.join(PRIORITIES)}")
            sql += " AND priority=?"
            params.append(PRIORITIES.index(filters["priority"]))
        if filters.get("agent"):
            sql += " AND agent=?"
            params.append(filters["agent"])
        if filters.get("project"):
            sql += " AND project_id=(SELECT id FROM projects WHERE name=? AND state='active')"
            params.append(filters["project"])
        limit = filters.get("limit") or 1000
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(max(1, min(int(limit), 10000)))
        return [self._row(r) for r in self.store.query(sql, tuple(params))]

    def events(self, caller: Caller, task_id: int) -> list[Any]:
        self._visible(caller, task_id, "task.show")
        return self.audit.entries(task_id=task_id, limit=100000)

    def artifacts(self, caller: Caller | None, task_id: int) -> list[Artifact]:
        if caller is not None:
            self._visible(caller, task_id, "task.show")
        return [Artifact(r["task_id"], r["name"], r["type"], r["path"], r["size"], r["sha256"])
                for r in self.store.query(
                    "SELECT * FROM artifacts WHERE task_id=? ORDER BY name", (task_id,))]

    def read_artifact(self, caller: Caller, task_id: int, name: str) -> bytes:
        self._visible(caller, task_id, "artifact.read")
        found = [a for a in self.artifacts(None, task_id) if a.name == name]
        if not found:
            raise InvalidArgument(f"task {task_id} has no artifact named {name!r}")
        art = found[0]
        if art.size > MAX_ARTIFACT_READ:
            raise InvalidArgument(
                f"artifact {name!r} is {art.size} bytes, more than the {MAX_ARTIFACT_READ} "
                f"a D-Bus message may carry; as root, read {art.path}")
        data = _read_nofollow(Path(art.path), art.size + 1)
        if hashlib.sha256(data).hexdigest() != art.sha256:
            raise Conflict(f"artifact {name!r} changed since it was registered")
        self.audit.append("artifact.read", actor_uid=caller.uid, task_id=task_id, name=name)
        return data

    # -- people changing tasks ------------------------------------------------------------
    def cancel(self, caller: Caller, task_id: int) -> Task:
        task = self._visible(caller, task_id, "task.cancel")
        if task.status in FINAL:
            raise Busy(f"task {task_id} is already {task.status}")
        return self._transition(task, "task.cancelled", caller.uid, {
            "status": "cancelled", "finished_at": time.time(), "lease_expires": None,
            "abort": int(task.status == "in_progress")})

    def retry(self, caller: Caller, task_id: int) -> Task:
        task = self._visible(caller, task_id, "task.retry")
        if task.status not in ("failed", "dead_lettered", "cancelled"):
            raise Busy(f"task {task_id} is {task.status}; only failed, dead-lettered or "
                       "cancelled tasks can be retried")
        return self._transition(task, "task.retried", caller.uid, {
            "status": "pending", "attempts": 0, "agent": task.pinned_agent,
            "not_before": 0, "error": None, "finished_at": None, "abort": 0},
            reason="retried by its owner")

    def unblock(self, caller: Caller, task_id: int, note: str) -> Task:
        task = self._visible(caller, task_id, "task.unblock")
        if task.status != "blocked":
            raise Busy(f"task {task_id} is {task.status}, not blocked")
        note = _text(note, "note")
        notes = [*task.notes, note] if note else list(task.notes)
        return self._transition(task, "task.unblocked", caller.uid, {
            "status": "pending", "block_reason": None, "notes": json.dumps(notes),
            "not_before": 0}, note=note)

    # -- the agent's side ----------------------------------------------------------------
    def _agent_task(self, agent: Agent, task_id: int, attempt: int, action: str) -> Task:
        task = self.find(task_id) if isinstance(task_id, int) else None
        if task is None or task.agent != agent.name:
            self.audit.append(action, actor_uid=agent.uid, agent=agent.name,
                              agent_uid=agent.uid, result="denied", task_id=task_id,
                              reason=f"task {task_id} is not claimed by {agent.name}")
            raise PermissionDenied(f"task {task_id} is not claimed by {agent.name}")
        if task.status != "in_progress" or task.attempts != attempt:
            raise LeaseExpired(f"attempt {attempt} of task {task_id} is no longer current "
                               f"(task is {task.status}, attempt {task.attempts})")
        return task

    def claim(self, agent: Agent) -> Task | None:
        """Atomically take the best runnable task for AGENT: one assigned to it,
        else an unassigned one it may run (pinned to it, or its owner's, with the
        capabilities it has), by priority then age. Pulling keeps the scheduler
        out of the hot path; the scheduler assigns to agents that are not asking
        (stopped ones, so they start)."""
        now = time.time()
        # Two indexed look-ups, narrow columns: assigned to me first, then the best
        # unassigned ones I may take. The full row is read only for the winner.
        rows = self.store.query(
            "SELECT id, agent, needs, exec FROM tasks WHERE agent=? AND status='pending' "
            "AND not_before<=? ORDER BY priority DESC, id LIMIT 64", (agent.name, now))
        rows += self.store.query(
            "SELECT id, agent, needs, exec FROM tasks WHERE status='pending' AND "
            "agent IS NULL AND not_before<=? AND "
            "(pinned_agent=? OR (pinned_agent IS NULL AND owner_uid=?)) "
            "ORDER BY priority DESC, id LIMIT 64", (now, agent.name, agent.owner_uid))
        unmet = self._unmet_deps() if rows else set()
        for row in rows:
            if row["id"] in unmet:
                continue
            if row["agent"] is None and self._missing(
                    agent, json.loads(row["needs"]), bool(row["exec"])):
                continue
            task = self.find(row["id"])
            if task is None:
                continue
            try:
                return self._transition(task, "task.claimed", agent.uid, {
                    "status": "in_progress", "agent": agent.name,
                    "attempts": task.attempts + 1,
                    "lease_expires": now + self.cfg.lease_seconds,
                    "started_at": task.started_at or now, "abort": 0},
                    attempt=task.attempts + 1)
            except Conflict:
                continue
        return None

    def _unmet_deps(self) -> set[int]:
        """Tasks waiting for a dependency that has not completed."""
        return {r["task_id"] for r in self.store.query(
            "SELECT d.task_id FROM task_deps d JOIN tasks t ON t.id = d.depends_on "
            "JOIN tasks w ON w.id = d.task_id "
            "WHERE t.status != 'completed' AND w.status = 'pending'")}

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

    def runtime_gone(self, name: str) -> None:
        """AGENT's runtime was replaced or its unit went down: orphaned long polls
        end without claiming."""
        self._generation[name] = self._generation.get(name, 0) + 1
        self.wake(name)

    def renew(self, agent: Agent) -> list[int]:
        """Heartbeat: extend the agent's leases; return tasks it must abort."""
        now = time.time()
        with self.store.transaction():
            self.store.execute(
                "UPDATE tasks SET lease_expires=? WHERE agent=? AND status='in_progress'",
                (now + self.cfg.lease_seconds, agent.name))
            abort = [r["id"] for r in self.store.query(
                "SELECT id FROM tasks WHERE agent=? AND abort=1", (agent.name,))]
            if abort:
                self.store.execute("UPDATE tasks SET abort=0 WHERE agent=? AND abort=1",
                                   (agent.name,))
        return abort

    async def complete(self, agent: Agent, task_id: int, attempt: int, result: str,
                       artifacts: list[tuple[str, str]]) -> Task:
        return await self._finish(agent, task_id, attempt, "completed", result, artifacts)

    async def fail(self, agent: Agent, task_id: int, attempt: int, error: str, result: str,
                   artifacts: list[tuple[str, str]]) -> Task:
        return await self._finish(agent, task_id, attempt, "failed", result, artifacts,
                                  error=_text(error, "error"))

    async def _finish(self, agent: Agent, task_id: int, attempt: int, status: str,
                      result: str, artifacts: list[tuple[str, str]],
                      error: str | None = None) -> Task:
        action = f"task.{status}"
        result = _text(result, "result", MAX_RESULT)
        if result:
            try:
                json.loads(result)
            except ValueError:
                raise InvalidArgument("result must be JSON text") from None
        task = self._agent_task(agent, task_id, attempt, action)
        found: list[Artifact] = []
        if artifacts:  # hashing files is I/O: off the event loop, then re-check the claim
            found = await asyncio.to_thread(self._inspect_artifacts, agent, artifacts)
            task = self._agent_task(agent, task_id, attempt, action)
        now = time.time()
        with self.store.transaction():
            for art in found:
                self.store.execute(
                    "INSERT OR REPLACE INTO artifacts (task_id, name, type, path, size, sha256,"
                    " created_at) VALUES (?,?,?,?,?,?,?)",
                    (task_id, art.name, art.type, art.path, art.size, art.sha256, now))
                self.audit.append("artifact.created", actor_uid=agent.uid, agent=agent.name,
                                  agent_uid=agent.uid, task_id=task_id, name=art.name,
                                  path=art.path, size=art.size, sha256=art.sha256)
            return self._transition(task, action, agent.uid, {
                "status": status, "result": result or None, "error": error,
                "lease_expires": None, "finished_at": now},
                result="ok" if status == "completed" else "failed",
                attempt=attempt, **({"error": error} if error else {}))

    def block(self, agent: Agent, task_id: int, attempt: int, reason: str) -> Task:
        task = self._agent_task(agent, task_id, attempt, "task.blocked")
        reason = _text(reason, "reason", required=True)
        return self._transition(task, "task.blocked", agent.uid, {
            "status": "blocked", "block_reason": reason, "lease_expires": None},
            reason=reason, attempt=attempt)

    def _inspect_artifacts(self, agent: Agent, artifacts: list[tuple[str, str]]
                           ) -> list[Artifact]:
        """Check each reported file is the agent's own regular file in its home."""
        if len(artifacts) > MAX_ARTIFACTS:
            raise InvalidArgument(f"at most {MAX_ARTIFACTS} artifacts per task")
        out = []
        home = os.path.realpath(agent.home)
        for name, path in artifacts:
            if not _ARTIFACT_RE.match(name or ""):
                raise InvalidArgument(f"artifact name {name!r} is invalid")
            real = os.path.realpath(os.path.join(home, path))
            if not real.startswith(home + os.sep):
                raise PermissionDenied(f"artifact {name!r} is outside the agent's home")
            try:
                data_hash, size = _hash_nofollow(Path(real), agent.uid)
            except OSError as e:
                raise InvalidArgument(f"artifact {name!r} ({path}): {e.strerror or e}") from None
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            out.append(Artifact(0, name, kind, real, size, data_hash))
        return out

    # -- scheduling ---------------------------------------------------------------------------
    def _deps_done(self, task: Task) -> bool:
        if not task.after:
            return True
        marks = ",".join("?" * len(task.after))
        done = self.store.scalar(
            f"SELECT count(*) FROM tasks WHERE id IN ({marks}) AND status='completed'",
            task.after)
        return done == len(task.after)

    def expire_leases(self, now: float | None = None) -> list[Task]:
        """Retry (with backoff) or dead-letter every task whose claim lapsed."""
        now = now or time.time()
        rows = self.store.query(
            "SELECT * FROM tasks WHERE status='in_progress' AND lease_expires<?", (now,))
        return self._expire(rows, now)

    def release(self, agent: Agent) -> list[Task]:
        """A new runtime of AGENT registered: it holds no claim, so the claims of
        the instance before it (killed, crashed) have lapsed now."""
        rows = self.store.query(
            "SELECT * FROM tasks WHERE status='in_progress' AND agent=?", (agent.name,))
        released = self._expire(rows, time.time(), reason="the runtime holding it restarted")
        self.runtime_gone(agent.name)
        return released

    def _expire(self, rows: list[dict[str, Any]], now: float,
                reason: str = "lease expired") -> list[Task]:
        changed = []
        for row in rows:
            task = self._row(row)
            try:
                if task.attempts >= task.max_attempts:
                    changed.append(self._transition(task, "task.dead_lettered", 0, {
                        "status": "dead_lettered", "lease_expires": None,
                        "finished_at": now, "error": f"{reason} on the last attempt"},
                        result="failed", attempts=task.attempts, reason=reason))
                else:
                    delay = min(300, self.cfg.retry_backoff * 2 ** (task.attempts - 1))
                    changed.append(self._transition(task, "task.lease_expired", 0, {
                        "status": "pending", "lease_expires": None, "not_before": now + delay,
                        "agent": task.pinned_agent}, result="retrying",
                        attempt=task.attempts, retry_in=delay, reason=reason))
            except Conflict:
                continue
        return changed

    def grace(self) -> None:
        """After agentd restarts, give running claims a full lease again: agentd's
        own downtime must not count against the agents' heartbeats."""
        with self.store.transaction():
            self.store.execute("UPDATE tasks SET lease_expires=? WHERE status='in_progress'",
                               (time.time() + self.cfg.lease_seconds,))

    def assign(self, now: float | None = None) -> set[str]:
        """Give runnable tasks to agents with room; return the agents that have
        work waiting (the scheduler starts their units)."""
        now = now or time.time()
        agents = {a.name: a for a in self.registry.agents()}
        self._unassign_gone(agents)
        waiting = {r["agent"] for r in self.store.query(
            "SELECT DISTINCT agent FROM tasks WHERE status='pending' AND agent IS NOT NULL "
            "AND not_before<=?", (now,))} & set(agents)
        load = dict.fromkeys(agents, 0)
        for r in self.store.query(
                "SELECT agent, count(*) AS n FROM tasks WHERE agent IS NOT NULL AND status IN "
                "('pending', 'in_progress') GROUP BY agent"):
            if r["agent"] in load:
                load[r["agent"]] = r["n"]
        wip = {name: self._wip(a) for name, a in agents.items()}
        if not any(load[n] < wip[n] for n in agents):
            return waiting
        rows = self.store.query(
            "SELECT * FROM tasks WHERE status='pending' AND agent IS NULL AND not_before<=? "
            "ORDER BY priority DESC, id LIMIT 1000", (now,))
        unmet = self._unmet_deps() if rows else set()
        for row in rows:
            if row["id"] in unmet:
                continue
            chosen = self._choose(row, agents, load, wip)
            if chosen is None:
                continue
            try:
                self._transition(self._row(row), "task.assigned", 0, {"agent": chosen})
            except Conflict:
                continue
            load[chosen] += 1
            waiting.add(chosen)
            if not any(load[n] < wip[n] for n in agents):
                break
        return waiting

    def _unassign_gone(self, agents: dict[str, Agent]) -> None:
        """Tasks whose agent was removed: routed again, or, if pinned to it (so
        they can never run), failed with the reason."""
        for row in self.store.query(
                "SELECT * FROM tasks WHERE status='pending' AND "
                "(agent IS NOT NULL OR pinned_agent IS NOT NULL)"):
            pinned, agent = row["pinned_agent"], row["agent"]
            with contextlib.suppress(Conflict):
                if pinned and pinned not in agents:
                    self._transition(self._row(row), "task.failed", 0, {
                        "status": "failed", "agent": None, "finished_at": time.time(),
                        "error": f"its agent {pinned} was removed"},
                        result="failed", reason=f"agent {pinned} was removed")
                elif agent and agent not in agents:
                    self._transition(self._row(row), "task.unassigned", 0, {"agent": None},
                                     reason=f"agent {agent} is gone")

    def _choose(self, row: dict[str, Any], agents: dict[str, Agent], load: dict[str, int],
                wip: dict[str, int]) -> str | None:
        """The least-loaded capable agent of the task's owner with room to spare."""
        names = [row["pinned_agent"]] if row["pinned_agent"] else [
            n for n, a in agents.items() if a.owner_uid == row["owner_uid"]]
        needs = json.loads(row["needs"])
        fit = [n for n in names if n in agents and load[n] < wip[n]
               and not self._missing(agents[n], needs, bool(row["exec"]))]
        return min(fit, key=lambda n: (load[n], n)) if fit else None

    def _wip(self, agent: Agent) -> int:
        try:
            return self.registry.catalog.template(agent.template).concurrency
        except Exception:
            return 0

    def busy_agents(self) -> set[str]:
        return {r["agent"] for r in self.store.query(
            "SELECT DISTINCT agent FROM tasks WHERE agent IS NOT NULL AND status IN "
            "('pending', 'in_progress')")}

    def settings(self, agent: Agent) -> dict[str, Any]:
        template = self.registry.catalog.template(agent.template)
        return {"wip": template.concurrency, "tools": list(template.tools),
                "heartbeat_interval": self.cfg.heartbeat_interval,
                "lease_seconds": self.cfg.lease_seconds}


def _open_nofollow(path: Path) -> int:
    """Open PATH for reading without following a link in its last component."""
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)


def _hash_nofollow(path: Path, uid: int) -> tuple[str, int]:
    fd = _open_nofollow(path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "not a regular file")
        if st.st_uid != uid:
            raise OSError(0, "not owned by the agent")
        digest, size = hashlib.sha256(), 0
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest(), size
    finally:
        os.close(fd)


def _read_nofollow(path: Path, limit: int) -> bytes:
    fd = _open_nofollow(path)
    try:
        chunks, total = [], 0
        while total < limit and (chunk := os.read(fd, min(1 << 20, limit - total))):
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
