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


class _Agent(NamedTuple):
    name: str
    template: str
    active_state: str
    uid: int
    owner_uid: int
    path: str


class AgentRow(_Agent):
    """ListAgents."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(sssuuo)"


class _Template(NamedTuple):
    name: str
    description: str
    profile: str
    capabilities: list[str]


class TemplateRow(_Template):
    """ListTemplates."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(sssas)"


class _Audit(NamedTuple):
    seq: int
    ts: float
    actor_uid: int
    action: str
    agent: str
    agent_uid: int
    result: str
    detail: str
    hash: str


class AuditRow(_Audit):
    """ListAuditEntries and ListEvents; detail is JSON text."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(tdussusss)"


class _Task(NamedTuple):
    id: int
    title: str
    status: str
    priority: str
    project: str
    agent: str
    attempts: int
    max_attempts: int
    created_at: float


class TaskRow(_Task):
    """ListTasks."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(tsssssuud)"


class _Project(NamedTuple):
    name: str
    description: str
    owner_uid: int
    tasks: int


class ProjectRow(_Project):
    """ListProjects."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(ssut)"


class _Artifact(NamedTuple):
    name: str
    type: str
    path: str
    size: int
    sha256: str


class ArtifactRow(_Artifact):
    """ListArtifacts."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(sssts)"


class _TaskEvent(NamedTuple):
    seq: int
    ts: float
    actor_uid: int
    event: str
    result: str
    detail: str


class TaskEventRow(_TaskEvent):
    """ListTaskEvents; detail is JSON text."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(tdusss)"


class _Quota(NamedTuple):
    kind: str
    subject: str
    limit: int
    used: int
    period: str
    resets_at: float
    source: str


class QuotaRow(_Quota):
    """ListQuotas: kind (agent|owner), subject, tokens per period (0: unlimited),
    used, period, resets at (Unix time), source (admin|template|config)."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(ssttsds)"


class _Usage(NamedTuple):
    day: str
    agent: str
    owner_uid: int
    requests: int
    prompt_tokens: int
    completion_tokens: int


class UsageRow(_Usage):
    """ListUsage: one agent's requests and tokens on one UTC day."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(ssuttt)"


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
