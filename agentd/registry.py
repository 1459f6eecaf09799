"""The agent registry: create, start, stop and remove agents, all-or-nothing.

Every change follows one rule: write the intent to the database first
(state ``creating`` or ``removing``), then touch the system, then write the
outcome. After a crash, :meth:`Registry.reconcile` reads the intents and
rolls a half-made agent back and a half-removed one forward, so a restart
leaves a whole agent or none. The registry knows nothing of D-Bus: callers
arrive as :class:`Caller` values, agentd.policy decides what they may do, and
changes leave as domain events (agentd.events) once committed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, TypedDict

from . import names, recovery
from .agent import AccountsAPI, Agent, HomesAPI, UnitsAPI, resource
from .audit import AuditLog
from .config import Config
from .errors import (
    AgentdError,
    AlreadyExists,
    Busy,
    LimitExceeded,
    NoSuchAgent,
    PermissionDenied,
)
from .events import (
    AgentChanged,
    AgentCreated,
    AgentRemoved,
    Events,
    JobFinished,
    UnitStateChanged,
)
from .policy import Caller, Policy, Role
from .sandbox import AgentIdentity, UnitProperty, unit_properties
from .store import Params, Store
from .templates import Catalog, Limits
from .units import UnitStatus


class Why(TypedDict, total=False):
    """An audit row's reason, when there is one (absent, not empty, otherwise)."""

    reason: str


def why(reason: str) -> Why:
    return {"reason": reason} if reason else {}


class Registry:
    def __init__(
        self,
        cfg: Config,
        store: Store,
        audit: AuditLog,
        accounts: AccountsAPI,
        homes: HomesAPI,
        units: UnitsAPI,
        catalog: Catalog,
        policy: Policy | None = None,
        events: Events | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.audit = audit
        self.accounts = accounts
        self.homes = homes
        self.units = units
        self.catalog = catalog
        self.policy = policy or Policy(cfg.admin_group, self._is_agent_uid, audit)
        self.events = events if events is not None else audit.events
        self._jobs: set[asyncio.Task[None]] = set()
        self.online: set[str] = set()
        self._alloc_lock = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = {}

    # -- reading --------------------------------------------------------
    def _row_to_agent(self, row: dict[str, Any]) -> Agent:
        return Agent(
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

    def by_uid(self, uid: int) -> Agent | None:
        found = self._live("uid = ?", (uid,))
        return found[0] if found else None

    def agents(self, states: tuple[str, ...] = ("present",)) -> list[Agent]:
        marks = ",".join("?" * len(states))
        return self._live(f"state IN ({marks})", states)

    def _is_agent_uid(self, uid: int) -> bool:
        return self.cfg.uid_min <= uid <= self.cfg.uid_max and self.by_uid(uid) is not None

    def visible(self, caller: Caller, action: str = "agent.list") -> list[Agent]:
        return [a for a in self.agents() if self.policy.sees(caller, action, a.owner_uid, a.uid)]

    def get(self, caller: Caller, name: str, action: str = "agent.describe") -> Agent:
        """The agent NAME if CALLER may see it (ACTION: the rule that asks)."""
        self.policy.check(caller, action)
        agent = self.find(name)
        if agent is None or agent.state != "present":
            raise NoSuchAgent(f"no agent named {name!r}")
        self.policy.check(caller, action, resource(agent))
        return agent

    async def status(self, agent: Agent) -> UnitStatus:
        return await self.units.status(agent.unit)

    # -- authorization ----------------------------------------------------
    def _managed(self, caller: Caller, name: str, action: str) -> Agent:
        agent = self.find(name) if isinstance(name, str) else None
        self.policy.check(caller, action, resource(agent) if agent else None)
        if agent is None:
            raise NoSuchAgent(f"no agent named {name!r}")
        if agent.state != "present":
            raise Busy(f"agent {name!r} is {agent.state}")
        return agent

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # -- create ------------------------------------------------------------
    async def create(
        self, caller: Caller, name: str, template: str, overrides: dict[str, object] | None = None
    ) -> Agent:
        role = self.policy.check(caller, "agent.create")
        try:
            names.check_syntax(name)
            tmpl = self.catalog.template(template)
            limits = tmpl.limits.with_overrides(overrides or {})
            agent = await self._reserve(caller, role, name, tmpl.name, tmpl.profile, limits)
        except PermissionDenied:
            raise
        except AgentdError as e:
            self.audit.append(
                "agent.create",
                actor_uid=caller.uid,
                agent=str(name)[:64],
                result="refused",
                error=e.name,
                reason=str(e),
            )
            raise
        try:
            await self.accounts.add(name, agent.uid, agent.home)
            self.homes.make(name, agent.uid, agent.gid)
        except Exception as e:  # a crash or cancellation is left to reconcile()
            await self._rollback_create(agent, reason=str(e) or type(e).__name__)
            raise
        with self.store.transaction():
            self.store.execute(
                "UPDATE agents SET state='present' WHERE name=? AND state='creating'", (name,)
            )
            self.audit.append(
                "agent.create",
                actor_uid=caller.uid,
                agent=name,
                agent_uid=agent.uid,
                template=tmpl.name,
                profile=tmpl.profile,
                owner_uid=caller.uid,
                home=str(agent.home),
            )
        created = self.find(name)
        assert created is not None
        self.events.publish(AgentCreated(created))
        return created

    async def _reserve(
        self, caller: Caller, role: Role, name: str, template: str, profile: str, limits: Limits
    ) -> Agent:
        """Check the name, pick a UID and write the 'creating' row: the intent."""
        async with self._alloc_lock:
            if self.find(name) is not None:
                raise AlreadyExists(f"an agent named {name!r} already exists")
            names.check_free_account(name)
            if role is Role.USER:
                owned = self.store.scalar(
                    "SELECT count(*) FROM agents WHERE owner_uid=? AND state!='removed'",
                    (caller.uid,),
                )
                if owned >= self.cfg.max_agents_per_owner:
                    raise LimitExceeded(
                        f"uid {caller.uid} already owns {owned} agents, the most allowed "
                        f"(max_agents_per_owner={self.cfg.max_agents_per_owner})"
                    )
            uid = self._free_uid()
            with self.store.transaction():
                self.store.execute(
                    "INSERT INTO agents (name, uid, gid, owner_uid, template, profile, "
                    "memory_max, cpu_quota, tasks_max, state, created_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,'creating',?)",
                    (
                        name,
                        uid,
                        uid,
                        caller.uid,
                        template,
                        profile,
                        limits.memory_max,
                        limits.cpu_quota,
                        limits.tasks_max,
                        time.time(),
                    ),
                )
        agent = self.find(name)
        assert agent is not None
        return agent

    def _free_uid(self) -> int:
        used = {
            r["uid"] for r in self.store.query("SELECT uid FROM agents WHERE state != 'removed'")
        }
        for uid in range(self.cfg.uid_min, self.cfg.uid_max + 1):
            if uid not in used and not self.accounts.id_taken(uid):
                return uid
        raise LimitExceeded(
            f"the agent ID range {self.cfg.uid_min}-{self.cfg.uid_max} is exhausted"
        )

    async def _rollback_create(self, agent: Agent, reason: str) -> None:
        """Undo a half-made agent: unit, user, group, home, then its row."""
        await self.units.stop(agent.unit)
        account = self.accounts.user(agent.name)
        ours = account.uid == agent.uid if account else self.accounts.group_exists(agent.name)
        if ours:  # never delete a same-named account agentd did not make
            await self.accounts.delete(agent.name)
        if self.homes.owner(agent.name) in (agent.uid, 0):
            self.homes.remove(agent.name)
        with self.store.transaction():
            self.store.execute(
                "DELETE FROM agents WHERE name=? AND state='creating'", (agent.name,)
            )
            self.audit.append(
                "agent.create",
                actor_uid=0,
                agent=agent.name,
                agent_uid=agent.uid,
                result="rolled_back",
                reason=reason,
            )

    # -- start / stop --------------------------------------------------------
    def unit_properties(self, agent: Agent) -> list[UnitProperty]:
        profile = self.catalog.profile(agent.profile)
        ident = AgentIdentity(agent.name, agent.uid, agent.gid, agent.home)
        return unit_properties(
            ident,
            agent.limits,
            profile,
            runtime_command=self.cfg.runtime_command,
            slice_=self.cfg.slice,
            heartbeat_interval=self.cfg.heartbeat_interval,
            agents_group=self.cfg.agents_group,
        )

    async def start(self, caller: Caller, name: str) -> str:
        """Queue the start of agent-NAME.service; return systemd's job.

        Like systemd's StartUnit, this returns once the job is queued: the
        outcome is audited and announced (events.JobFinished) when it ends.
        """
        agent = self._managed(caller, name, "agent.start")
        async with self._lock(name):
            try:
                job = await self.units.start_transient(agent.unit, self.unit_properties(agent))
            except AgentdError as e:
                self.audit.append(
                    "agent.start",
                    actor_uid=caller.uid,
                    agent=name,
                    agent_uid=agent.uid,
                    result="error",
                    reason=str(e),
                )
                raise
        self._watch(agent, job, "start", caller)
        return job

    async def stop(self, caller: Caller, name: str) -> str:
        """Queue the stop of the agent's unit; return systemd's job."""
        agent = self._managed(caller, name, "agent.stop")
        async with self._lock(name):
            job = await self.units.stop(agent.unit, wait=False)
        self._watch(agent, job, "stop", caller)
        return job

    def _watch(self, agent: Agent, job: str, operation: str, caller: Caller) -> None:
        self.track(
            asyncio.get_running_loop().create_task(self._job_done(agent, job, operation, caller))
        )

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a background task alive until it ends; settle() waits for it."""
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _job_done(self, agent: Agent, job: str, operation: str, caller: Caller) -> None:
        result = await self.units.wait_job(job)
        self.audit.append(
            f"agent.{operation}",
            actor_uid=caller.uid,
            agent=agent.name,
            agent_uid=agent.uid,
            result="ok" if result == "done" else "failed",
            unit=agent.unit,
            job=job,
            job_result=result,
        )
        if operation == "stop":
            self.set_offline(agent)
        self.events.publish(JobFinished(agent, job, operation, result))
        self.events.publish(AgentChanged(agent))

    async def settle(self) -> None:
        """Wait for every watched job to end (tests, and a clean shutdown)."""
        while self._jobs:
            await asyncio.gather(*list(self._jobs), return_exceptions=True)

    # -- remove --------------------------------------------------------------
    async def remove(self, caller: Caller, name: str, keep_home: bool = False) -> Agent:
        agent = self._managed(caller, name, "agent.remove")
        async with self._lock(name):
            archive = None
            if keep_home:
                stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
                archive = str(self.cfg.archive_dir / f"{name}-{agent.uid}-{stamp}.tar.gz")
            with self.store.transaction():
                self.store.execute(
                    "UPDATE agents SET state='removing', keep_home=?, archive=? "
                    "WHERE name=? AND state='present'",
                    (int(keep_home), archive, name),
                )
            removing = self.find(name)
            assert removing is not None
            await self._finish_remove(removing, actor_uid=caller.uid)
        return agent

    async def _finish_remove(self, agent: Agent, actor_uid: int, repair: bool = False) -> None:
        """Stop, archive or delete the home, delete user and group: all idempotent."""
        await self.units.stop(agent.unit)
        self.set_offline(agent)
        if agent.archive:
            self.homes.archive(agent.name, Path(agent.archive))
        self.homes.remove(agent.name)
        account = self.accounts.user(agent.name)
        if account is None or account.uid == agent.uid:
            await self.accounts.delete(agent.name)
        with self.store.transaction():
            self.store.execute(
                "UPDATE agents SET state='removed', removed_at=? WHERE name=? AND state='removing'",
                (time.time(), agent.name),
            )
            self.audit.append(
                "agent.remove",
                actor_uid=actor_uid,
                agent=agent.name,
                agent_uid=agent.uid,
                result="repaired" if repair else "ok",
                archive=agent.archive,
                **why("finished a removal interrupted by a crash" if repair else ""),
            )
        self.events.publish(AgentRemoved(agent))

    # -- runtime ---------------------------------------------------------------
    def runtime_agent(self, caller: Caller) -> Agent:
        """The agent whose runtime is calling; anyone else is refused."""
        self.policy.check(caller, "runtime.register")
        agent = self.by_uid(caller.uid)
        if agent is None:  # removed between the policy's look-up and ours
            raise NoSuchAgent(f"uid {caller.uid} is not an agent")
        if agent.state != "present":  # its own removal is under way: not an intrusion
            raise Busy(f"agent {agent.name} is {agent.state}")
        return agent

    def register_runtime(self, caller: Caller) -> Agent:
        agent = self.runtime_agent(caller)
        self._touch(agent)
        if agent.name not in self.online:
            self.online.add(agent.name)
            self.audit.append(
                "agent.online",
                actor_uid=caller.uid,
                agent=agent.name,
                agent_uid=agent.uid,
                pid=caller.pid,
            )
            self.events.publish(AgentChanged(agent))
        return agent

    def heartbeat(self, caller: Caller) -> Agent:
        agent = self.runtime_agent(caller)
        self._touch(agent)
        if agent.name not in self.online:
            return self.register_runtime(caller)
        return agent

    def _touch(self, agent: Agent) -> None:
        with self.store.transaction():
            self.store.execute(
                "UPDATE agents SET last_seen=? WHERE name=? AND state='present'",
                (time.time(), agent.name),
            )

    def set_offline(self, agent: Agent, reason: str = "") -> None:
        if agent.name in self.online:
            self.online.discard(agent.name)
            self.audit.append(
                "agent.offline",
                actor_uid=0,
                agent=agent.name,
                agent_uid=agent.uid,
                **why(reason),
            )

    def on_unit_state(self, event: UnitStateChanged) -> None:
        """A unit that went down takes its runtime with it."""
        agent = self.find(event.name)
        if agent is not None and event.active_state in ("inactive", "failed"):
            self.set_offline(agent, reason=f"unit {event.active_state}")

    def sweep(self, now: float | None = None) -> None:
        """Mark agents offline whose heartbeats stopped (3 intervals missed)."""
        limit = (now or time.time()) - 3 * self.cfg.heartbeat_interval
        for agent in self.agents():
            if agent.name in self.online and (agent.last_seen or 0) < limit:
                self.set_offline(agent, reason="heartbeat lost")
                self.events.publish(AgentChanged(agent))

    # -- recovery -----------------------------------------------------------------
    async def reconcile(self) -> list[str]:
        """Make the system match the registry after a crash (agentd.recovery);
        return what was repaired."""
        return await recovery.reconcile(self)
