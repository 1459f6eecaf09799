"""An agent as the engine sees it, and what the registry needs of the system.

The registry's row type (Agent), the policy's view of it (resource), and the
three narrow protocols through which the registry touches accounts, homes and
systemd, so unit tests give it fakes and agentd gives it the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import names
from .accounts import Account
from .policy import Resource
from .sandbox import UnitProperty
from .templates import Limits
from .units import UnitStatus


class AccountsAPI(Protocol):
    def user(self, name: str) -> Account | None: ...
    def id_taken(self, uid: int) -> bool: ...
    def group_exists(self, name: str) -> bool: ...
    def agent_users(self, lo: int, hi: int) -> list[Account]: ...
    async def add(self, name: str, uid: int, home: Path) -> None: ...
    async def delete(self, name: str) -> None: ...


class HomesAPI(Protocol):
    """agentd.homes.Homes. make refuses an existing path (AlreadyExists); remove
    and archive run in a bounded helper process and raise a SystemError_ (a
    HomeWorkError) when they cannot finish; set_aside renames a home into a
    root-only place and returns where."""

    def path(self, name: str) -> Path: ...
    def make(self, name: str, uid: int, gid: int) -> Path: ...
    def exists(self, name: str) -> bool: ...
    def owner(self, name: str) -> int | None: ...
    def is_home_of(self, name: str, uid: int) -> bool: ...
    async def remove(self, name: str) -> dict[str, object]: ...
    async def archive(
        self, name: str, dest: Path, skip_empty: bool = False
    ) -> dict[str, object]: ...
    def set_aside(self, name: str, label: str) -> Path: ...
    def names(self) -> list[str]: ...


class UnitsAPI(Protocol):
    async def start_transient(self, unit: str, properties: list[UnitProperty]) -> str: ...
    async def stop(self, unit: str, wait: bool = True) -> str: ...
    async def wait_job(self, job: str) -> str: ...
    async def status(self, unit: str) -> UnitStatus: ...
    async def list_units(self, pattern: str) -> list[tuple[str, str]]: ...


@dataclass(frozen=True)
class Agent:
    """One registry row, as callers see it."""

    name: str
    uid: int
    gid: int
    owner_uid: int
    template: str
    profile: str
    limits: Limits
    state: str
    created_at: float
    last_seen: float | None
    home: Path
    archive: str | None = None

    @property
    def unit(self) -> str:
        return names.unit_name(self.name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uid": self.uid,
            "gid": self.gid,
            "owner_uid": self.owner_uid,
            "template": self.template,
            "profile": self.profile,
            "state": self.state,
            "home": str(self.home),
            "unit": self.unit,
            "created_at": self.created_at,
            "last_seen": self.last_seen,
            "memory_max": self.limits.memory_max,
            "cpu_quota": self.limits.cpu_quota,
            "tasks_max": self.limits.tasks_max,
        }


def resource(agent: Agent) -> Resource:
    """An agent as agentd.policy sees it."""
    return Resource("agent", agent.name, agent.owner_uid, agent=agent.name, agent_uid=agent.uid)
