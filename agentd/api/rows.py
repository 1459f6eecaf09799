"""Row types of the D-Bus API's list methods, shared by agentd and its clients.

Each NamedTuple is one struct of a list reply, field for field in signature
order, so the service builds rows by name and a client (agentctl) reads them
by name instead of unpacking tuples by position. A NamedTuple *is* a tuple,
so sdbus marshals it as the struct unchanged; SIGNATURE is the struct's
D-Bus signature, checked against the interface definitions by the tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple, TypeVar

R = TypeVar("R", bound=tuple)


class AgentRow(NamedTuple):
    """ListAgents."""

    name: str
    template: str
    active_state: str
    uid: int
    owner_uid: int
    path: str

    SIGNATURE = "(sssuuo)"


class TemplateRow(NamedTuple):
    """ListTemplates."""

    name: str
    description: str
    profile: str
    capabilities: list[str]

    SIGNATURE = "(sssas)"


class AuditRow(NamedTuple):
    """ListAuditEntries and ListEvents; detail is JSON text."""

    seq: int
    ts: float
    actor_uid: int
    action: str
    agent: str
    agent_uid: int
    result: str
    detail: str
    hash: str

    SIGNATURE = "(tdussusss)"


class TaskRow(NamedTuple):
    """ListTasks."""

    id: int
    title: str
    status: str
    priority: str
    project: str
    agent: str
    attempts: int
    max_attempts: int
    created_at: float

    SIGNATURE = "(tsssssuud)"


class ProjectRow(NamedTuple):
    """ListProjects."""

    name: str
    description: str
    owner_uid: int
    tasks: int

    SIGNATURE = "(ssut)"


class ArtifactRow(NamedTuple):
    """ListArtifacts."""

    name: str
    type: str
    path: str
    size: int
    sha256: str

    SIGNATURE = "(sssts)"


class TaskEventRow(NamedTuple):
    """ListTaskEvents; detail is JSON text."""

    seq: int
    ts: float
    actor_uid: int
    event: str
    result: str
    detail: str

    SIGNATURE = "(tdusss)"


class QuotaRow(NamedTuple):
    """ListQuotas: kind (agent|owner), subject, tokens per period (0: unlimited),
    used, period, resets at (Unix time), source (admin|template|config)."""

    kind: str
    subject: str
    limit: int
    used: int
    period: str
    resets_at: float
    source: str

    SIGNATURE = "(ssttsds)"


class UsageRow(NamedTuple):
    """ListUsage: one agent's requests and tokens on one UTC day."""

    day: str
    agent: str
    owner_uid: int
    requests: int
    prompt_tokens: int
    completion_tokens: int

    SIGNATURE = "(ssuttt)"


ALL_ROWS: tuple[type[Any], ...] = (
    AgentRow,
    TemplateRow,
    AuditRow,
    TaskRow,
    ProjectRow,
    ArtifactRow,
    TaskEventRow,
    QuotaRow,
    UsageRow,
)


def rows(cls: type[R], items: Iterable[Iterable[Any]]) -> list[R]:
    """Replies as typed rows (a client's side of a list method)."""
    return [cls(*item) for item in items]
