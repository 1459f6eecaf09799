"""The client's plain values <-> the shapes agentd's D-Bus API carries, without sdbus.

a{sv} dicts come from sdbus as {key: (signature, value)} and go back with the
signature each key is declared with (TASK_SPEC, TASK_FILTER, CHAT_OPTIONS, as
agentd.api.interfaces documents them); list replies arrive as the row types of
agentd.api.rows and leave as dicts keyed by field name, which is what
AgentdClient returns and the commands (and their fakes) use. Kept apart from
agentctl.client so that it can be tested, and read, without a bus.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from agentd.api.rows import (
    AgentRow,
    ArtifactRow,
    AuditRow,
    ProjectRow,
    QuotaRow,
    TaskEventRow,
    TaskRow,
    TemplateRow,
    UsageRow,
    rows,
)


def unwrap(info: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    """a{sv} as sdbus returns it ({key: (signature, value)}) -> {key: value}."""
    out: dict[str, Any] = {}
    for key, (sig, value) in info.items():
        out[key] = unwrap(value) if sig == "a{sv}" else value
    return out


def limit_variants(limits: Mapping[str, int | str]) -> dict[str, tuple[str, Any]]:
    """The a{sv} CreateAgent expects: memory_max t (or s, a size), cpu_quota u, tasks_max t."""
    sigs = {"memory_max": "t", "cpu_quota": "u", "tasks_max": "t"}
    out: dict[str, tuple[str, Any]] = {}
    for key, value in limits.items():
        out[key] = ("s", value) if isinstance(value, str) else (sigs.get(key, "t"), int(value))
    return out


def variants(
    values: Mapping[str, Any], sigs: Mapping[str, str], what: str
) -> dict[str, tuple[str, Any]]:
    """{key: value} -> the a{sv} agentd expects, each key with its signature from SIGS.
    None values are left out (unset); a key SIGS does not know is a caller's bug."""
    out: dict[str, tuple[str, Any]] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key not in sigs:
            raise ValueError(f"unknown {what} key {key!r}")
        sig = sigs[key]
        if sig == "as":
            value = [str(v) for v in value]
        elif sig == "at":
            value = [int(v) for v in value]
        elif sig in ("u", "t"):
            value = int(value)
        elif sig == "d":
            value = float(value)
        elif sig == "b":
            value = bool(value)
        else:
            value = str(value)
        out[key] = (sig, value)
    return out


# SubmitTask's spec and ListTasks' filter, as agentd.api.interfaces documents them
TASK_SPEC = {
    "title": "s",
    "description": "s",
    "project": "s",
    "needs": "as",
    "priority": "s",
    "after": "at",
    "agent": "s",
    "team": "s",
    "max_attempts": "u",
    "exec": "s",
}
TASK_FILTER = {"status": "s", "project": "s", "agent": "s", "priority": "s", "limit": "u"}
# Chat's options
CHAT_OPTIONS = {
    "max_tokens": "u",
    "temperature": "d",
    "json_schema": "s",
    "persona": "b",
    "stop": "as",
}


def json_detail(text: str) -> Any:
    """A detail column: JSON text -> its value ({} if empty, the text if not JSON)."""
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return text


Items = Iterable[Iterable[Any]]  # a list reply as sdbus returns it


def _fields(cls: type[Any], items: Items) -> list[dict[str, Any]]:
    """Rows whose dict is exactly the row type's fields."""
    return [row._asdict() for row in rows(cls, items)]


def agents(items: Items) -> list[dict[str, Any]]:
    """ListAgents; a row's active state is called "state" here, as in `agent list`."""
    return [
        {
            "name": r.name,
            "template": r.template,
            "state": r.active_state,
            "uid": r.uid,
            "owner_uid": r.owner_uid,
            "path": r.path,
        }
        for r in rows(AgentRow, items)
    ]


def templates(items: Items) -> list[dict[str, Any]]:
    """ListTemplates."""
    return [dict(r._asdict(), capabilities=list(r.capabilities)) for r in rows(TemplateRow, items)]


def audit_entries(items: Items) -> list[dict[str, Any]]:
    """ListEvents (and ListAuditEntries) rows; "" and 0 stand for "no agent" on the bus, None
    here; detail is parsed from its JSON text."""
    return [
        dict(
            r._asdict(),
            agent=r.agent or None,
            agent_uid=r.agent_uid if r.agent else None,
            detail=json_detail(r.detail),
        )
        for r in rows(AuditRow, items)
    ]


def task_events(items: Items) -> list[dict[str, Any]]:
    """ListTaskEvents; detail is parsed from its JSON text."""
    return [dict(r._asdict(), detail=json_detail(r.detail)) for r in rows(TaskEventRow, items)]


def projects(items: Items) -> list[dict[str, Any]]:
    """ListProjects."""
    return _fields(ProjectRow, items)


def tasks(items: Items) -> list[dict[str, Any]]:
    """ListTasks."""
    return _fields(TaskRow, items)


def artifacts(items: Items) -> list[dict[str, Any]]:
    """ListArtifacts."""
    return _fields(ArtifactRow, items)


def quotas(items: Items) -> list[dict[str, Any]]:
    """ListQuotas."""
    return _fields(QuotaRow, items)


def usage(items: Items) -> list[dict[str, Any]]:
    """ListUsage."""
    return _fields(UsageRow, items)
