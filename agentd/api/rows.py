"""Row types of the D-Bus API's list methods, shared by agentd and its clients.

Each row is one struct of a list reply, field for field in signature order,
so the service builds rows by name and a client (agentctl) reads them by name
instead of unpacking tuples by position. A row is a NamedTuple, so a tuple,
and sdbus marshals it as the struct unchanged; SIGNATURE is the struct's
D-Bus signature, checked against the interface definitions by the tests. (A
row subclasses the NamedTuple of its fields: a NamedTuple's own body may
declare fields only, not a class constant such as SIGNATURE.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar

R = TypeVar("R", bound=tuple[Any, ...])


class Row(Protocol):
    """What every row class has: its struct's D-Bus signature."""

    SIGNATURE: ClassVar[str]


class AgentRow(
    NamedTuple(
        "AgentRow",
        [
            ("name", str),
            ("template", str),
            ("active_state", str),
            ("uid", int),
            ("owner_uid", int),
            ("path", str),
        ],
    )
):
    """ListAgents."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(sssuuo)"


class TemplateRow(
    NamedTuple(
        "TemplateRow",
        [
            ("name", str),
            ("description", str),
            ("profile", str),
            ("capabilities", list[str]),
        ],
    )
):
    """ListTemplates."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(sssas)"


class AuditRow(
    NamedTuple(
        "AuditRow",
        [
            ("seq", int),
            ("ts", float),
            ("actor_uid", int),
            ("action", str),
            ("agent", str),
            ("agent_uid", int),
            ("result", str),
            ("detail", str),
            ("hash", str),
        ],
    )
):
    """ListAuditEntries and ListEvents; detail is JSON text."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(tdussusss)"


class TaskRow(
    NamedTuple(
        "TaskRow",
        [
            ("id", int),
            ("title", str),
            ("status", str),
            ("priority", str),
            ("project", str),
            ("agent", str),
            ("attempts", int),
            ("max_attempts", int),
            ("created_at", float),
        ],
    )
):
    """ListTasks."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(tsssssuud)"


class ProjectRow(
    NamedTuple(
        "ProjectRow",
        [
            ("name", str),
            ("description", str),
            ("owner_uid", int),
            ("tasks", int),
        ],
    )
):
    """ListProjects."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(ssut)"


class ArtifactRow(
    NamedTuple(
        "ArtifactRow",
        [
            ("name", str),
            ("type", str),
            ("path", str),
            ("size", int),
            ("sha256", str),
        ],
    )
):
    """ListArtifacts."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(sssts)"


class TaskEventRow(
    NamedTuple(
        "TaskEventRow",
        [
            ("seq", int),
            ("ts", float),
            ("actor_uid", int),
            ("event", str),
            ("result", str),
            ("detail", str),
        ],
    )
):
    """ListTaskEvents; detail is JSON text."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(tdusss)"


class QuotaRow(
    NamedTuple(
        "QuotaRow",
        [
            ("kind", str),
            ("subject", str),
            ("limit", int),
            ("used", int),
            ("period", str),
            ("resets_at", float),
            ("source", str),
        ],
    )
):
    """ListQuotas: kind (agent|owner), subject, tokens per period (0: unlimited),
    used, period, resets at (Unix time), source (admin|template|plan|config)."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(ssttsds)"


class UsageRow(
    NamedTuple(
        "UsageRow",
        [
            ("day", str),
            ("agent", str),
            ("owner_uid", int),
            ("requests", int),
            ("prompt_tokens", int),
            ("completion_tokens", int),
        ],
    )
):
    """ListUsage: one agent's requests and tokens on one UTC day."""

    __slots__ = ()
    SIGNATURE: ClassVar[str] = "(ssuttt)"


ALL_ROWS: tuple[type[Row], ...] = (
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
