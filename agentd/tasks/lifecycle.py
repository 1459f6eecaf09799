"""Every change of a task's status, one transaction each.

Invariants, and why:
- A status changes only along a row of model.TRANSITIONS; `transition` refuses
  anything else (IllegalTransition) before it writes, so no operation can invent a
  status change the table, the CLI and the docs do not know about.
- A change applies only if the row is still at the version the caller read
  (optimistic versioning): of two writers racing on one task exactly one wins, the
  other gets Conflict and nothing of its change is written.
- The same transaction appends the audit row carrying the task id. That row *is*
  the event (task.created, task.claimed, ...): the trail cannot miss a change.
- A claim is a lease the agent's heartbeat renews; when it lapses the task is
  retried with exponential backoff until max_attempts, then dead-lettered. Each
  claim has an attempt number the agent quotes when it reports, so a report from a
  superseded attempt is refused (LeaseExpired): a task never runs twice at once
  and is never lost.

Who may ask for a change is not decided here (see queue.TaskQueue); whether the
task is in a status that allows it is.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..agent import Agent
from ..errors import Busy, Conflict, LeaseExpired
from ..registry import Registry
from ..store import Store
from .model import (
    MAX_BACKOFF,
    PRIORITIES,
    Artifact,
    IllegalTransition,
    Listener,
    Task,
    allows,
    next_status,
)
from .repository import Repository, Row
from .spec import NewTask, text


class Lifecycle:
    def __init__(
        self, store: Store, repo: Repository, registry: Registry, notify: Listener
    ) -> None:
        self.store = store
        self.repo = repo
        self.registry = registry  # to name the agent in audit rows
        self.cfg = registry.cfg
        self.audit = registry.audit
        self.notify = notify

    # -- the one way a task comes to be or changes -------------------------------------
    def create(self, owner_uid: int, new: NewTask) -> Task:
        status = next_status(None, "task.created")
        now = time.time()
        team: dict[str, Any] = {} if new.team_id is None else {"team_id": new.team_id}
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO tasks (title, description, project_id, owner_uid, needs, priority,"
                " status, pinned_agent, pinned_agent_id, exec, max_attempts, created_at,"
                " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    new.title,
                    new.description,
                    new.project_id,
                    owner_uid,
                    json.dumps(list(new.needs)),
                    new.priority,
                    status,
                    new.agent,
                    new.agent_id,
                    new.exec,
                    new.max_attempts,
                    now,
                    now,
                ),
            )
            task_id = self.store.db.last_insert_rowid()
            for dep in new.after:
                self.store.execute("INSERT INTO task_deps VALUES (?,?)", (task_id, dep))
            if new.team_id is not None:
                self.store.execute("INSERT INTO team_tasks VALUES (?,?)", (task_id, new.team_id))
            self.audit.append(
                "task.created",
                actor_uid=owner_uid,
                task_id=task_id,
                title=new.title,
                priority=PRIORITIES[new.priority],
                needs=list(new.needs),
                after=list(new.after),
                exec=bool(new.exec),
                **team,
            )
        return self._published(task_id, "task.created")

    def transition(
        self,
        task: Task,
        event: str,
        actor_uid: int,
        changes: dict[str, Any],
        result: str = "ok",
        holder: Agent | None = None,
        **detail: Any,
    ) -> Task:
        """Apply EVENT (its status from the table) and CHANGES if the row is still
        at TASK's version; audit EVENT in the same transaction. HOLDER: the agent
        the task is (or was) given to, when the caller has it at hand."""
        if "status" in changes:
            raise IllegalTransition("the transition table sets the status, not the caller")
        status = next_status(task.status, event)
        changes = {**changes, "status": status, "updated_at": time.time()}
        sets = ", ".join(f"{k}=?" for k in changes)
        with self.store.transaction():
            self.store.execute(
                f"UPDATE tasks SET {sets}, version=version+1 WHERE id=? AND version=?",
                (*changes.values(), task.id, task.version),
            )
            if self.store.db.changes() != 1:
                raise Conflict(f"task {task.id} changed meanwhile; try again")
            aid = changes.get("agent_id") or task.agent_id
            agent = holder if holder and holder.id == aid else self.registry.by_id(aid, live=False)
            self.audit.append(
                event,
                actor_uid=actor_uid,
                agent=agent.name if agent else None,
                agent_uid=agent.uid if agent else None,
                agent_id=agent.id if agent else None,
                result=result,
                task_id=task.id,
                **detail,
            )
        return self._published(task.id, event, known=task)

    def _published(self, task_id: int, event: str, known: Task | None = None) -> Task:
        """Read back what was written and hand it to the queue, which publishes it:
        the one place a task event leaves the engine. It may run inside an open
        transaction (finish()'s); agentd.events delivers it after the commit."""
        task = self.repo.reread(task_id, known)
        self.notify(task, event)
        return task

    # -- the scheduler's -----------------------------------------------------------------
    def assign(self, task: Task, agent: Agent) -> Task:
        return self.transition(task, "task.assigned", 0, _held_by(agent))

    def unassign(self, task: Task, gone: str) -> Task:
        return self.transition(
            task, "task.unassigned", 0, _held_by(None), reason=f"agent {gone} is gone"
        )

    def orphan(self, task: Task, pinned: str) -> Task:
        """TASK is pinned to an agent that was removed: it can never run."""
        return self.transition(
            task,
            "task.failed",
            0,
            {
                **_held_by(None),
                "finished_at": time.time(),
                "error": f"its agent {pinned} was removed",
            },
            result="failed",
            reason=f"agent {pinned} was removed",
        )

    def expire(self, rows: list[Row], now: float, reason: str = "lease expired") -> list[Task]:
        """Retry (with backoff) or dead-letter each claimed task in ROWS; a task
        changed meanwhile (reported, cancelled) is left alone."""
        changed = []
        for row in rows:
            try:
                changed.append(self._lapse(self.repo.task(row), now, reason))
            except Conflict:
                continue
        return changed

    def _lapse(self, task: Task, now: float, reason: str) -> Task:
        if task.attempts >= task.max_attempts:
            return self.transition(
                task,
                "task.dead_lettered",
                0,
                {
                    "lease_expires": None,
                    "finished_at": now,
                    "error": f"{reason} on the last attempt",
                },
                result="failed",
                attempts=task.attempts,
                reason=reason,
            )
        delay = min(MAX_BACKOFF, self.cfg.retry_backoff * 2 ** (task.attempts - 1))
        return self.transition(
            task,
            "task.lease_expired",
            0,
            {"lease_expires": None, "not_before": now + delay, **_pinned(task)},
            result="retrying",
            attempt=task.attempts,
            retry_in=delay,
            reason=reason,
        )

    def grace(self) -> None:
        """Give every running claim a full lease (no status changes)."""
        with self.store.transaction():
            self.store.execute(
                "UPDATE tasks SET lease_expires=? WHERE status='in_progress'",
                (time.time() + self.cfg.lease_seconds,),
            )

    # -- the agent's ---------------------------------------------------------------------
    def claim(self, task: Task, agent: Agent, now: float) -> Task:
        attempt = task.attempts + 1
        return self.transition(
            task,
            "task.claimed",
            agent.uid,
            {
                **_held_by(agent),
                "attempts": attempt,
                "lease_expires": now + self.cfg.lease_seconds,
                "started_at": task.started_at or now,
                "abort": 0,
            },
            holder=agent,
            attempt=attempt,
        )

    @staticmethod
    def current(task: Task, attempt: int) -> Task:
        """TASK if ATTEMPT is its claim still running; LeaseExpired if not."""
        if task.status != "in_progress" or task.attempts != attempt:
            raise LeaseExpired(
                f"attempt {attempt} of task {task.id} is no longer current "
                f"(task is {task.status}, attempt {task.attempts})"
            )
        return task

    def renew(self, agent: Agent) -> list[int]:
        """Heartbeat: extend the agent's leases; return (once) the tasks it must
        abort. No status changes."""
        now = time.time()
        with self.store.transaction():
            self.store.execute(
                "UPDATE tasks SET lease_expires=? WHERE agent_id=? AND status='in_progress'",
                (now + self.cfg.lease_seconds, agent.id),
            )
            abort = [
                r["id"]
                for r in self.store.query(
                    "SELECT id FROM tasks WHERE agent_id=? AND abort=1", (agent.id,)
                )
            ]
            if abort:
                self.store.execute(
                    "UPDATE tasks SET abort=0 WHERE agent_id=? AND abort=1", (agent.id,)
                )
        return abort

    def finish(
        self,
        task: Task,
        agent: Agent,
        attempt: int,
        event: str,
        result: str,
        error: str | None,
        found: list[Artifact],
    ) -> Task:
        """task.completed or task.failed, with the artifacts (already inspected)
        registered in the same transaction."""
        now = time.time()
        with self.store.transaction():
            for art in found:
                self.repo.add_artifact(task.id, art, now)
                self.audit.append(
                    "artifact.created",
                    actor_uid=agent.uid,
                    agent=agent.name,
                    agent_uid=agent.uid,
                    task_id=task.id,
                    name=art.name,
                    path=art.path,
                    size=art.size,
                    sha256=art.sha256,
                )
            return self.transition(
                task,
                event,
                agent.uid,
                {
                    "result": result or None,
                    "error": error,
                    "lease_expires": None,
                    "finished_at": now,
                },
                result="ok" if event == "task.completed" else "failed",
                holder=agent,
                attempt=attempt,
                **({"error": error} if error else {}),
            )

    def block(self, task: Task, agent: Agent, attempt: int, reason: str) -> Task:
        reason = text(reason, "reason", required=True)
        return self.transition(
            task,
            "task.blocked",
            agent.uid,
            {"block_reason": reason, "lease_expires": None},
            holder=agent,
            reason=reason,
            attempt=attempt,
        )

    def defer(self, task: Task, agent: Agent, attempt: int, seconds: float, reason: str) -> Task:
        """Back to pending, not claimable for SECONDS, for the same agent. The
        attempt is not consumed: max_attempts grows by one (attempt numbers stay
        increasing, so a report of the deferred attempt is still refused)."""
        return self.transition(
            task,
            "task.deferred",
            agent.uid,
            {
                "lease_expires": None,
                "not_before": time.time() + seconds,
                "max_attempts": task.max_attempts + 1,
            },
            holder=agent,
            attempt=attempt,
            seconds=seconds,
            reason=reason,
        )

    # -- people's (owners and admins) --------------------------------------------------------
    def replied(self, task: Task, actor_uid: int, answer: str) -> Task:
        """The owner answered what TASK is blocked on: back to pending for the
        same agent; the answer is kept (agentd.tasks.trace) in this transaction."""
        if not allows(task.status, "task.replied"):
            raise Busy(
                f"task {task.id} is {task.status}, not blocked: there is nothing to reply to"
            )
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO task_replies (task_id, question, answer, by_uid, at)"
                " VALUES (?,?,?,?,?)",
                (task.id, task.block_reason or "", answer, actor_uid, time.time()),
            )
            return self.transition(
                task,
                "task.replied",
                actor_uid,
                {"block_reason": None, "not_before": 0},
                question=task.block_reason or "",
                answer=answer,
            )

    def cancel(self, task: Task, actor_uid: int) -> Task:
        if not allows(task.status, "task.cancelled"):
            raise Busy(f"task {task.id} is already {task.status}")
        return self.transition(
            task,
            "task.cancelled",
            actor_uid,
            {
                "finished_at": time.time(),
                "lease_expires": None,
                "abort": int(task.status == "in_progress"),
            },
        )

    def retry(self, task: Task, actor_uid: int) -> Task:
        if not allows(task.status, "task.retried"):
            raise Busy(
                f"task {task.id} is {task.status}; only failed, dead-lettered or "
                "cancelled tasks can be retried"
            )
        return self.transition(
            task,
            "task.retried",
            actor_uid,
            {
                "attempts": 0,
                **_pinned(task),
                "not_before": 0,
                "error": None,
                "finished_at": None,
                "abort": 0,
            },
            reason="retried by its owner",
        )

    def unblock(self, task: Task, actor_uid: int, note: str) -> Task:
        if not allows(task.status, "task.unblocked"):
            raise Busy(f"task {task.id} is {task.status}, not blocked")
        note = text(note, "note")
        notes = [*task.notes, note] if note else list(task.notes)
        return self.transition(
            task,
            "task.unblocked",
            actor_uid,
            {"block_reason": None, "notes": json.dumps(notes), "not_before": 0},
            note=note,
        )


def _held_by(agent: Agent | None) -> dict[str, Any]:
    """The columns naming the agent a task is given to: its id matches, its name
    is for people."""
    return {"agent": agent.name if agent else None, "agent_id": agent.id if agent else None}


def _pinned(task: Task) -> dict[str, Any]:
    """Back to the agent TASK is pinned to, if any (retry, lease expiry)."""
    return {"agent": task.pinned_agent, "agent_id": task.pinned_agent_id}
