"""An agent as the engine sees it, and what the registry needs of the system.

The registry's row type (Agent), the policy's view of it (resource), and the
three narrow protocols through which the registry touches accounts, homes and
systemd, so unit tests give it fakes and agentd gives it the real ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import names
from .accounts import Account
from .policy import Resource
from .sandbox import UnitProperty
from .store import Params, Store
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
    """One registry row, as callers see it. ``id`` is the agent's identity:
    names and UIDs are reused after removal, ids never are (store migration 5),
    so whatever must outlive a removal (tasks, audit rows) names the id."""

    id: int
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
            "id": self.id,
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


class AgentTable:
    """Reading the agents table (the registry is one). An agent is live until
    its row is ``removed``; a removed row stays, so its id is never reused."""

    store: Store
    homes: HomesAPI

    def _row_to_agent(self, row: dict[str, Any]) -> Agent:
        return Agent(
            id=row["id"],
            name=row["name"],
            uid=row["uid"],
            gid=row["gid"],
            owner_uid=row["owner_uid"],
            template=row["template"],
            profile=row["profile"],
            limits=Limits(row["memory_max"], row["cpu_quota"], row["tasks_max"]),
            state=row["state"],
            created_at=row["created_at"],
            last_seen=row["last_seen"],
            home=self.homes.path(row["name"]),
            archive=row["archive"],
        )

    def _live(self, where: str, params: Params) -> list[Agent]:
        rows = self.store.query(
            f"SELECT * FROM agents WHERE state != 'removed' AND {where} ORDER BY name", params
        )
        return [self._row_to_agent(r) for r in rows]

    def find(self, name: str) -> Agent | None:
        found = self._live("name = ?", (name,))
        return found[0] if found else None

    def by_id(self, agent_id: int | None, live: bool = True) -> Agent | None:
        """The agent of AGENT_ID (LIVE: only if not removed)."""
        if agent_id is None:
            return None
        where = "id = ?" + (" AND state != 'removed'" if live else "")
        rows = self.store.query(f"SELECT * FROM agents WHERE {where}", (agent_id,))
        return self._row_to_agent(rows[0]) if rows else None

    def as_of(self, name: str, uid: int, ts: float) -> Agent | None:
        """The agent that had NAME and UID at time TS (the newest created by then)."""
        rows = self.store.query(
            "SELECT * FROM agents WHERE name=? AND uid=? AND created_at<=? "
            "ORDER BY id DESC LIMIT 1",
            (name, uid, ts),
        )
        return self._row_to_agent(rows[0]) if rows else None

    def by_uid(self, uid: int) -> Agent | None:
        found = self._live("uid = ?", (uid,))
        return found[0] if found else None

    def present(self, ids: Iterable[int]) -> dict[int, Agent]:
        """The present agents among IDS, by id: one indexed probe each (the
        scheduler's pass reads the agents it has work for, not all of them)."""
        return self._present_where("id IN (SELECT value FROM json_each(?))", list(ids))

    def present_of(self, owners: Iterable[int]) -> dict[int, Agent]:
        """The present agents of OWNERS, by id (store migration 9's agents_owner)."""
        return self._present_where("owner_uid IN (SELECT value FROM json_each(?))", list(owners))

    def _present_where(self, where: str, values: list[int]) -> dict[int, Agent]:
        if not values:
            return {}
        rows = self.store.query(
            f"SELECT * FROM agents WHERE state = 'present' AND {where}", (json.dumps(values),)
        )
        return {r["id"]: self._row_to_agent(r) for r in rows}

    def agents(self, states: tuple[str, ...] = ("present",)) -> list[Agent]:
        marks = ",".join("?" * len(states))
        return self._live(f"state IN ({marks})", states)


def resource(agent: Agent) -> Resource:
    """An agent as agentd.policy sees it."""
    return Resource("agent", agent.name, agent.owner_uid, agent=agent.name, agent_uid=agent.uid)
