"""What callers may write into a task: the field-by-field checks.

Invariant: no text reaches the database that these checks did not accept (type,
size, no NUL byte, known keys), and each refusal is a typed InvalidArgument that
names the field, so a bus caller learns what to fix. Checks that need the
database or the registry (the project, the dependencies, which agent could run
the task) are made by the queue after these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..chat import loads
from ..errors import InvalidArgument, InvalidName
from .model import MAX_DEPS, MAX_NEEDS, MAX_RESULT, MAX_TEXT, MAX_TITLE, PRIORITIES, SPEC_KEYS

_CAP_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class NewTask:
    """A submitted task, checked; project_id, after and agent are filled in by
    the queue once it has checked them against the database and the registry."""

    title: str
    description: str
    exec: str | None
    priority: int  # an index into PRIORITIES, as stored
    max_attempts: int
    needs: tuple[str, ...]
    project_id: int | None = None
    after: tuple[int, ...] = ()
    agent: str | None = None
    agent_id: int | None = None
    team_id: int | None = None  # routed only to this team's members


def text(value: object, what: str, limit: int = MAX_TEXT, required: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string")
    if required and not value.strip():
        raise InvalidArgument(f"{what} must not be empty")
    if len(value.encode()) > limit:
        raise InvalidArgument(f"{what} is longer than {limit} bytes")
    if "\0" in value:
        raise InvalidArgument(f"{what} contains a NUL byte")
    return value


def project_name(name: object) -> str:
    if not isinstance(name, str) or not _PROJECT_RE.match(name):
        raise InvalidName(
            f"project name {shown(name)} is invalid: lowercase letters, digits, "
            "'-' and '_', starting with a letter, at most 64"
        )
    return name


def shown(value: object, limit: int = 80) -> str:
    """VALUE as an error message may quote it: its repr, cut to LIMIT characters
    (a caller's value may be long; messages reach the caller and the audit log)."""
    text = repr(value) if len(str(value)) <= limit else repr(str(value)[:limit]) + "…"
    return text[: limit + 4]


def result_text(result: object) -> str:
    """A task's result: empty, or JSON text of at most MAX_RESULT bytes."""
    checked = text(result, "result", MAX_RESULT)
    if checked:
        try:
            loads(checked)
        except ValueError:
            raise InvalidArgument("result must be JSON text") from None
    return checked


def parse(spec: dict[str, Any]) -> NewTask:
    """The fields of SPEC that need nothing but themselves to check."""
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise InvalidArgument(f"unknown task field(s): {', '.join(sorted(unknown))}")
    return NewTask(
        title=text(spec.get("title", ""), "title", MAX_TITLE, required=True),
        description=text(spec.get("description", ""), "description"),
        exec=text(spec.get("exec", ""), "exec") or None,
        priority=_priority(spec.get("priority", "medium")),
        max_attempts=_max_attempts(spec.get("max_attempts", 3)),
        needs=_needs(spec.get("needs", [])),
    )


def dependency_ids(after: object) -> list[int]:
    """The shape of SPEC's "after" (whether those tasks exist is the queue's)."""
    if (
        not isinstance(after, list)
        or len(after) > MAX_DEPS
        or not all(isinstance(d, int) for d in after)
    ):
        raise InvalidArgument(f"after must be a list of at most {MAX_DEPS} task ids")
    return after


def _priority(priority: object) -> int:
    if priority not in PRIORITIES:
        raise InvalidArgument(f"priority must be one of {', '.join(PRIORITIES)}")
    return PRIORITIES.index(priority)


def _max_attempts(value: object) -> int:
    if not isinstance(value, int) or not 1 <= value <= 100:
        raise InvalidArgument("max_attempts must be 1..100")
    return value


def _needs(needs: object) -> tuple[str, ...]:
    if (
        not isinstance(needs, list)
        or len(needs) > MAX_NEEDS
        or not all(isinstance(c, str) and _CAP_RE.match(c) for c in needs)
    ):
        raise InvalidArgument(f"needs must be at most {MAX_NEEDS} capability names")
    return tuple(sorted(set(needs)))
