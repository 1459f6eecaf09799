"""Teams: agents that work together, as a Unix group and a shared directory.

Invariants, and why:
- A team belongs to the person who made it; it is shown to, and changed by,
  that person or an administrator (policy team.*). Its members are agents its
  owner owns; an administrator may add anyone's (a person cannot pull another
  user's agent into reach of its own).
- Membership is a row, applied to a member's unit at its next start (its
  SupplementaryGroups and BindPaths: agentd.sandbox), or at once with
  ``restart``, which restarts the members whose units run. A running member's
  unit is never changed underneath it.
- Intent first, as for agents: the row is written ``creating`` before the
  group and directory are made and ``removing`` before they are taken away,
  so a crash in between leaves a row that says what to finish; reconcile()
  rolls a half-made team back and finishes a removal.
- Removing a team removes its memberships, restarts (or, without
  ``restart``, refuses while there are) running members, archives and deletes
  its directory, then its group. A team with open tasks is not removed.
- Every change is audited (team.created, team.removed, team.members); every
  refusal by the policy.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ..agent import Agent, resource
from ..audit import AuditLog
from ..errors import AgentdError, AlreadyExists, Busy, InvalidArgument, NoSuchAgent, NoSuchTeam
from ..events import AgentRemoved, Events, TeamChanged
from ..policy import AGENTD, Caller, Policy, Resource, Role
from ..registry import Registry
from ..sandbox import TeamMount
from ..store import Store
from .dirs import Groups, TeamDirs, check_name, group_name

log = logging.getLogger("agentd")

DESCRIPTION_CHARS = 1024
MAX_MEMBERS = 64  # agents named in one call, and in one team
STOPPED = ("inactive", "failed")


@dataclass(frozen=True)
class Team:
    id: int
    name: str
    owner_uid: int
    description: str
    gid: int | None
    state: str
    archive: str | None
    created_at: float
    removed_at: float | None

    @property
    def group(self) -> str:
        return group_name(self.name)

    def resource(self) -> Resource:
        return Resource("team", self.name, self.owner_uid)


class Teams:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        groups: Groups,
        dirs: TeamDirs,
        audit: AuditLog,
        events: Events,
    ) -> None:
        self.store = store
        self.registry = registry
        self.groups = groups
        self.dirs = dirs
        self.audit = audit
        self.events = events
        self.policy: Policy = registry.policy
        registry.team_mounts = self.mounts
        events.subscribe(AgentRemoved, self._on_removed)

    # -- reading ---------------------------------------------------------------------------
    def find(self, name: str) -> Team | None:
        rows = self.store.query("SELECT * FROM teams WHERE name=? AND state != 'removed'", (name,))
        return Team(**rows[0]) if rows else None

    def get(self, caller: Caller, name: str, action: str) -> Team:
        """Team NAME if CALLER may do ACTION on it (else PermissionDenied, audited);
        one the caller may not see is NoSuchTeam, as if it did not exist."""
        team = self.find(name) if isinstance(name, str) else None
        if team is None or team.state != "present":
            raise NoSuchTeam(f"no team {name!r}")
        if not self.policy.may_manage(caller, team.owner_uid, action):
            self.policy.check(caller, action, team.resource())
        return team

    def members(self, team_id: int) -> list[Agent]:
        rows = self.store.query(
            "SELECT agent_id FROM team_members WHERE team_id=? ORDER BY added_at, agent_id",
            (team_id,),
        )
        found = self.registry.present(r["agent_id"] for r in rows)
        return sorted(found.values(), key=lambda a: a.name)

    def teams_of(self, agent_id: int) -> list[Team]:
        rows = self.store.query(
            "SELECT t.* FROM team_members m JOIN teams t ON t.id = m.team_id "
            "WHERE m.agent_id=? AND t.state='present' ORDER BY t.name",
            (agent_id,),
        )
        return [Team(**r) for r in rows]

    def share(self, a: int, b: int) -> bool:
        """Whether agents A and B (ids) are in one team."""
        return bool(
            self.store.scalar(
                "SELECT 1 FROM team_members x JOIN team_members y ON x.team_id = y.team_id "
                "JOIN teams t ON t.id = x.team_id "
                "WHERE x.agent_id=? AND y.agent_id=? AND t.state='present' LIMIT 1",
                (a, b),
            )
        )

    def is_member(self, team_id: int, agent_id: int) -> bool:
        return bool(
            self.store.scalar(
                "SELECT 1 FROM team_members WHERE team_id=? AND agent_id=?", (team_id, agent_id)
            )
        )

    def mounts(self, agent: Agent) -> list[TeamMount]:
        """What AGENT's unit binds in at start: each team's group and directory."""
        return [
            TeamMount(t.group, self.dirs.path(t.name))
            for t in self.teams_of(agent.id)
            if self.dirs.is_ours(t.name, t.gid)
        ]

    def listing(self, caller: Caller) -> list[dict[str, Any]]:
        self.policy.check(caller, "team.list")
        rows = self.store.query("SELECT * FROM teams WHERE state='present' ORDER BY name")
        teams = [Team(**r) for r in rows]
        return [
            self.describe(t) for t in teams if self.policy.sees(caller, "team.list", t.owner_uid)
        ]

    async def show(self, caller: Caller, name: str) -> dict[str, Any]:
        """The team, and for each member whether its running unit has the team
        yet (None: not running; False: it joined since, applied at its next start)."""
        team = self.get(caller, name, "team.show")
        info = self.describe(team)
        info["applied"] = {m.name: await self.mounted(m, team) for m in self.members(team.id)}
        return info

    def describe(self, team: Team) -> dict[str, Any]:
        return {
            "name": team.name,
            "owner_uid": team.owner_uid,
            "description": team.description,
            "group": team.group,
            "gid": team.gid,
            "directory": str(self.dirs.path(team.name)),
            "members": [m.name for m in self.members(team.id)],
            "created_at": team.created_at,
            "open_tasks": self._open_tasks(team.id),
        }

    async def mounted(self, agent: Agent, team: Team) -> bool | None:
        """Whether AGENT's running unit has TEAM (None: not running), read from
        its main process's groups: what the kernel checks."""
        status = await self.registry.units.status(agent.unit)
        if not status.main_pid or team.gid is None:
            return None
        try:
            with open(f"/proc/{status.main_pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("Groups:"):
                        return team.gid in {int(g) for g in line.split()[1:]}
        except OSError:
            return None
        return False

    def _open_tasks(self, team_id: int) -> int:
        return int(
            self.store.scalar(
                "SELECT count(*) FROM team_tasks tt JOIN tasks t ON t.id = tt.task_id "
                "WHERE tt.team_id=? AND t.status IN ('pending', 'in_progress', 'blocked', "
                "'awaiting_approval')",
                (team_id,),
            )
        )

    # -- making ----------------------------------------------------------------------------
    async def create(self, caller: Caller, name: str, description: str) -> Team:
        self.policy.check(caller, "team.create", Resource("team", str(name), caller.uid))
        try:
            check_name(name)
            if not isinstance(description, str) or len(description) > DESCRIPTION_CHARS:
                raise InvalidArgument(f"description: at most {DESCRIPTION_CHARS} characters")
            if self.find(name) is not None:
                raise AlreadyExists(f"team {name!r} exists")
            if self.groups.group_gid(group_name(name)) is not None:
                raise AlreadyExists(
                    f"group {group_name(name)!r} exists: agentd does not adopt a group it "
                    "did not make"
                )
            if self.dirs.exists(name):
                raise AlreadyExists(f"{self.dirs.path(name)} exists: agentd does not adopt it")
        except AgentdError as e:
            self._refused(caller, "team.created", name, e)
        now = time.time()
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO teams (name, owner_uid, description, state, created_at) "
                "VALUES (?, ?, ?, 'creating', ?)",
                (name, caller.uid, description, now),
            )
            team_id = int(self.store.scalar("SELECT last_insert_rowid()"))
        try:
            gid = await self.groups.add_group(group_name(name))
            self.dirs.make(name, gid)
        except AgentdError as e:
            await self._undo(team_id, name)
            self._refused(caller, "team.created", name, e, result="error")
        with self.store.transaction():
            self.store.execute("UPDATE teams SET gid=?, state='present' WHERE id=?", (gid, team_id))
            self.audit.append(
                "team.created", actor_uid=caller.uid, team=name, gid=gid, owner_uid=caller.uid
            )
            self.events.publish(TeamChanged(name, "created"))
        return self._by_id(team_id)

    def name_of(self, team_id: int) -> str:
        return self._by_id(team_id).name

    def _by_id(self, team_id: int) -> Team:
        return Team(**self.store.query("SELECT * FROM teams WHERE id=?", (team_id,))[0])

    async def _undo(self, team_id: int, name: str) -> None:
        """Roll a half-made team back: its directory (if ours and empty), its
        group (if made), its row."""
        gid = self.groups.group_gid(group_name(name))
        if self.dirs.is_ours(name, gid):
            with contextlib.suppress(OSError):
                self.dirs.path(name).rmdir()
        if gid is not None:
            await self.groups.delete_group(group_name(name))
        self.store.execute(
            "UPDATE teams SET state='removed', removed_at=? WHERE id=?", (time.time(), team_id)
        )

    def _refused(
        self, caller: Caller, action: str, team: str, error: AgentdError, result: str = "refused"
    ) -> NoReturn:
        self.audit.append(
            action,
            actor_uid=caller.uid,
            result=result,
            team=str(team)[:64],
            error=error.name,
            reason=str(error),
        )
        raise error

    # -- members ---------------------------------------------------------------------------
    async def add(self, caller: Caller, name: str, agents: Sequence[str], restart: bool) -> None:
        team = self.get(caller, name, "team.manage")
        found = self._agents(caller, team, agents)
        have = {m.id for m in self.members(team.id)}
        new = [a for a in found if a.id not in have]
        if len(have) + len(new) > MAX_MEMBERS:
            self._refused(
                caller,
                "team.members",
                name,
                InvalidArgument(f"a team has at most {MAX_MEMBERS} members"),
            )
        now = time.time()
        with self.store.transaction():
            for agent in new:
                self.store.execute(
                    "INSERT INTO team_members (team_id, agent_id, added_at) VALUES (?, ?, ?)",
                    (team.id, agent.id, now),
                )
            self.audit.append(
                "team.members",
                actor_uid=caller.uid,
                team=name,
                added=[a.name for a in new],
                restart=restart,
            )
            self.events.publish(TeamChanged(name, "members"))
        if restart:
            await self._restart(caller, new)

    async def drop(self, caller: Caller, name: str, agents: Sequence[str], restart: bool) -> None:
        team = self.get(caller, name, "team.manage")
        found = self._agents(caller, team, agents, joining=False)
        with self.store.transaction():
            for agent in found:
                self.store.execute(
                    "DELETE FROM team_members WHERE team_id=? AND agent_id=?", (team.id, agent.id)
                )
            self.audit.append(
                "team.members",
                actor_uid=caller.uid,
                team=name,
                removed=[a.name for a in found],
                restart=restart,
            )
            self.events.publish(TeamChanged(name, "members"))
        if restart:
            await self._restart(caller, found)

    def _agents(
        self, caller: Caller, team: Team, names: Sequence[str], joining: bool = True
    ) -> list[Agent]:
        """The agents NAMES, each one CALLER manages and, to join, one the team's
        owner owns (an administrator may add anyone's)."""
        if not names:
            raise InvalidArgument("name at least one agent")
        if len(names) > MAX_MEMBERS or len(set(names)) != len(names):
            raise InvalidArgument(f"name at most {MAX_MEMBERS} agents, each once")
        out = []
        for agent_name in names:
            agent = self.registry.find(agent_name) if isinstance(agent_name, str) else None
            if agent is None or agent.state != "present":
                raise NoSuchAgent(f"no agent named {agent_name!r}")
            self.policy.check(caller, "team.manage", resource(agent))
            admin = self.policy.role(caller, "team.manage") is Role.ADMIN
            if joining and not admin and agent.owner_uid != team.owner_uid:
                self.policy.refuse(
                    caller,
                    "team.manage",
                    InvalidArgument(
                        f"agent {agent.name!r} is not an agent of team {team.name!r}'s owner"
                    ),
                    agent=agent.name,
                    agent_uid=agent.uid,
                    team=team.name,
                )
            if not joining and not self.is_member(team.id, agent.id):
                raise InvalidArgument(f"agent {agent.name!r} is not in team {team.name!r}")
            out.append(agent)
        return out

    async def _running(self, agents: Sequence[Agent]) -> list[Agent]:
        out = []
        for agent in agents:
            status = await self.registry.units.status(agent.unit)
            if status.active_state not in STOPPED:
                out.append(agent)
        return out

    async def _restart(self, caller: Caller, agents: Sequence[Agent]) -> None:
        """Restart those of AGENTS whose units run, so their units are made
        again with their teams as they are now."""
        for agent in await self._running(agents):
            job = await self.registry.stop(caller, agent.name)
            await self.registry.units.wait_job(job)
            await self.registry.start(caller, agent.name)

    # -- removing --------------------------------------------------------------------------
    async def remove(self, caller: Caller, name: str, restart: bool) -> str | None:
        """Remove team NAME; the archive of its directory (None: it was empty)."""
        team = self.get(caller, name, "team.manage")
        members = self.members(team.id)
        try:
            open_tasks = self._open_tasks(team.id)
            if open_tasks:
                raise Busy(f"team {name!r} has {open_tasks} open task(s): cancel them first")
            running = await self._running(members)
            if running and not restart:
                raise Busy(
                    f"team {name!r} has running members ({', '.join(a.name for a in running)}): "
                    "stop them, or remove with restart"
                )
        except AgentdError as e:
            self._refused(caller, "team.removed", name, e)
        with self.store.transaction():
            self.store.execute("UPDATE teams SET state='removing' WHERE id=?", (team.id,))
            self.store.execute("DELETE FROM team_members WHERE team_id=?", (team.id,))
        if restart:
            await self._restart(caller, members)
        return await self._finish_removal(self._by_id(team.id), caller)

    async def _finish_removal(self, team: Team, caller: Caller) -> str | None:
        try:
            archive = await self.dirs.archive_and_remove(team.name)
            if self.groups.group_gid(team.group) is not None:
                await self.groups.delete_group(team.group)
        except AgentdError as e:
            self.audit.append(
                "team.removed",
                actor_uid=caller.uid,
                team=team.name,
                result="error",
                reason=f"{e}; the team stays 'removing' until removed again",
            )
            raise
        with self.store.transaction():
            self.store.execute(
                "UPDATE teams SET state='removed', removed_at=?, archive=? WHERE id=?",
                (time.time(), archive, team.id),
            )
            self.audit.append(
                "team.removed", actor_uid=caller.uid, team=team.name, archive=archive or ""
            )
            self.events.publish(TeamChanged(team.name, "removed"))
        return archive

    async def reconcile(self) -> list[str]:
        """At start: roll back teams a crash left half-made, finish removals."""
        done = []
        for row in self.store.query("SELECT * FROM teams WHERE state IN ('creating', 'removing')"):
            team = Team(**row)
            try:
                if team.state == "creating":
                    await self._undo(team.id, team.name)
                    done.append(f"team {team.name}: rolled back a creation a crash interrupted")
                else:
                    await self._finish_removal(team, AGENTD)
                    done.append(f"team {team.name}: finished a removal a crash interrupted")
            except AgentdError as e:
                done.append(f"team {team.name}: {e}")
        return done

    def _on_removed(self, event: AgentRemoved) -> None:
        """A removed agent leaves its teams (its id is never reused)."""
        self.store.execute("DELETE FROM team_members WHERE agent_id=?", (event.agent.id,))

    def task_team(self, caller: Caller, name: object) -> Team:
        """The team a task is submitted to: one CALLER may use."""
        if not isinstance(name, str):
            raise InvalidArgument("team must be a team name")
        return self.get(caller, name, "team.manage")
