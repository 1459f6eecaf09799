"""Task vocabulary shared by the store, the engine and agentctl: one list each.

Invariant: a task's status changes only along a row of TRANSITIONS, and each
row is named by the event (the audit action) that records it. The table is the
single answer to "may EVENT happen to a task in STATUS, and what does it become";
the engine refuses anything else (IllegalTransition), so a new operation cannot
silently invent a status change.

Dependency-free on purpose (standard library only, nothing from agentd):
agentctl imports it without pulling in the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PRIORITIES = ("low", "medium", "high", "critical")
# In lifecycle order, as the store's CHECK lists them (and `task list --status` shows).
STATUSES = (
    "pending",
    "in_progress",
    "blocked",
    "completed",
    "failed",
    "cancelled",
    "dead_lettered",
    "awaiting_approval",  # issue 12: waits for its owner's answer (agentd.approvals)
)
FINAL = frozenset(("completed", "failed", "cancelled", "dead_lettered"))
# What SubmitTask's spec and ListTasks' filter may hold (docs/dbus-api.md).
SPEC_KEYS = {
    "team",  # a team's members run it (agentd.teams)
    "title",
    "description",
    "project",
    "needs",
    "priority",
    "after",
    "agent",
    "max_attempts",
    "exec",
}
FILTER_KEYS = {"status", "project", "agent", "priority", "limit"}

# -- limits -------------------------------------------------------------------------
MAX_TITLE = 256
MAX_TEXT = 64 * 1024  # description, exec, notes, error, block reason
MAX_RESULT = 1024 * 1024
MAX_NEEDS = 32
MAX_DEPS = 64
MAX_ARTIFACTS = 256
MAX_ARTIFACT_READ = 16 * 1024 * 1024  # the system bus refuses messages past 32 MiB
# What agentd (root) will hash for an agent's report, counted by st_size before a
# byte is read (a sparse file counts at its full size). Measured on the 2-CPU
# test machine (sha256 with SHA-NI, 1 MiB reads, one CPU): 0.7 s per GiB of
# cached data, 2.9 s per GiB of a sparse file's holes on ext4; a whole 4 GiB
# report hashed in 2.6 s in the testbed (tmpfs). So one report costs at most
# ~3 s per artifact and ~12 s in all, where unbounded a 16 TB sparse file costs
# ~13 h per listing, and a report may list it 256 times. Bigger outputs stay in
# the agent's home, named in the result, not registered.
MAX_ARTIFACT_SIZE = 1024**3  # 1 GiB per artifact
MAX_TASK_ARTIFACTS_SIZE = 4 * 1024**3  # 4 GiB for all the artifacts of one report
MAX_BACKOFF = 300  # seconds: the longest wait before a lapsed claim is retried

# -- the status-transition table ------------------------------------------------------
# (from, event, to). `None` as "from" is a task that does not exist yet.
# assigned/unassigned keep the status: they only change which agent it waits for.
TRANSITIONS: tuple[tuple[str | None, str, str], ...] = (
    (None, "task.created", "pending"),
    ("pending", "task.assigned", "pending"),
    ("pending", "task.unassigned", "pending"),
    ("pending", "task.claimed", "in_progress"),
    ("pending", "task.failed", "failed"),  # its pinned agent was removed
    ("pending", "task.cancelled", "cancelled"),
    ("in_progress", "task.completed", "completed"),
    ("in_progress", "task.failed", "failed"),
    ("in_progress", "task.blocked", "blocked"),
    ("in_progress", "task.cancelled", "cancelled"),
    ("in_progress", "task.lease_expired", "pending"),  # retried after a backoff
    ("in_progress", "task.dead_lettered", "dead_lettered"),  # ... or not: last attempt
    ("in_progress", "task.deferred", "pending"),  # the agent waits: not before, attempt kept
    ("in_progress", "approval.requested", "awaiting_approval"),  # the agent let go of it
    ("awaiting_approval", "approval.granted", "pending"),  # back to the same agent
    ("awaiting_approval", "approval.denied", "pending"),  # ... told the reason
    ("awaiting_approval", "task.cancelled", "cancelled"),
    ("blocked", "task.unblocked", "pending"),
    ("blocked", "task.replied", "pending"),  # the owner answered its question (kept)
    ("blocked", "task.cancelled", "cancelled"),
    ("failed", "task.retried", "pending"),
    ("cancelled", "task.retried", "pending"),
    ("dead_lettered", "task.retried", "pending"),
)
EVENTS = tuple(dict.fromkeys(event for _, event, _ in TRANSITIONS))
_NEXT: dict[tuple[str | None, str], str] = {(s, e): t for s, e, t in TRANSITIONS}


class IllegalTransition(RuntimeError):
    """The engine asked for a status change the table does not allow: a bug in
    agentd, never a caller's mistake (so not an AgentdError: the bus layer
    reports it as an internal error)."""


def allows(status: str | None, event: str) -> bool:
    return (status, event) in _NEXT


def next_status(status: str | None, event: str) -> str:
    """The status EVENT takes a task in STATUS to; IllegalTransition if none."""
    try:
        return _NEXT[(status, event)]
    except KeyError:
        raise IllegalTransition(f"{event} is not allowed from status {status}") from None


# -- the records ----------------------------------------------------------------------
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
    pinned_agent: str | None  # names, for people; the ids are what match (never reused)
    agent: str | None
    pinned_agent_id: int | None
    agent_id: int | None
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
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "status": self.status,
            "priority": self.priority,
            "project": self.project,
            "agent": self.agent or "",
            "agent_id": self.agent_id or 0,
            "owner_uid": self.owner_uid,
            "needs": list(self.needs),
            "after": list(self.after),
            "exec": self.exec or "",
            "max_attempts": self.max_attempts,
            "attempts": self.attempts,
            "result": self.result or "",
            "error": self.error or "",
            "block_reason": self.block_reason or "",
            "notes": list(self.notes),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
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
