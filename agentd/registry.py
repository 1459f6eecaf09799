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
from collections.abc import Callable
from typing import Any, TypedDict

from . import accountnames, ceilings, names, recovery
from .agent import AccountsAPI, Agent, AgentTable, HomesAPI, UnitsAPI, resource
from .audit import AuditLog
from .config import Config
from .errors import (
    AgentdError,
    AlreadyExists,
    Busy,
    InvalidArgument,
    LimitExceeded,
    NoSuchAgent,
    PermissionDenied,
)
from .events import (
    AgentChanged,
    AgentCreated,
    Events,
    JobFinished,
    UnitStateChanged,
)
from .limits import CallerLimits
from .plans import Plans
from .policy import Caller, Policy, Role
from .sandbox import AgentIdentity, TeamMount, UnitProperty, unit_properties
from .store import Store
from .templates import Catalog, Limits
from .units import UnitStatus


class Why(TypedDict, total=False):
    """An audit row's reason, when there is one (absent, not empty, otherwise)."""

    reason: str


def why(reason: str) -> Why:
    return {"reason": reason} if reason else {}


# RemoveAgentWithFlags' flags (agentd.api.interfaces.manager has the same for clients).
REMOVE_KEEP_HOME = 1
REMOVE_FORCE = 2
LISTED = ("present", "removing")  # what ListAgents and DescribeAgent show


class Registry(AgentTable):
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
        self.policy = policy or Policy(
            cfg.admin_group, self._is_agent_uid, audit, limits=CallerLimits.from_config(cfg)
        )
        self.events = events if events is not None else audit.events
        self.plans = Plans(cfg, store, audit, self.policy)  # quota plans: agentd.plans
        self._jobs: set[asyncio.Task[Any]] = set()
        self.online: set[str] = set()
        self._alloc_lock = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = {}
        self.removals = recovery.Removals(self)
        # The teams an agent is in, bound into its unit at start (agentd.teams sets it).
        self.team_mounts: Callable[[Agent], list[TeamMount]] = lambda _agent: []

    def _is_agent_uid(self, uid: int) -> bool:
        """Whether UID is a live agent's, whatever the configured range is now:
        narrowing uid_min/uid_max must not turn existing agents into people.
        (Asked on every call: an index probe, not a whole Agent built.)"""
        return bool(
            self.store.scalar(
                "SELECT 1 FROM agents WHERE uid=? AND state != 'removed' LIMIT 1", (uid,)
            )
        )

    def visible(
        self, caller: Caller, action: str = "agent.list", states: tuple[str, ...] = ("present",)
    ) -> list[Agent]:
        return [
            a for a in self.agents(states) if self.policy.sees(caller, action, a.owner_uid, a.uid)
        ]

    def get(
        self,
        caller: Caller,
        name: str,
        action: str = "agent.describe",
        states: tuple[str, ...] = ("present",),
    ) -> Agent:
        """The agent NAME, in one of STATES, if CALLER may see it (ACTION: the rule)."""
        self.policy.check(caller, action)
        agent = self.find(name)
        if agent is None or agent.state not in states:
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

    def _still_present(self, name: str) -> None:
        """After waiting for NAME's lock: a removal may have begun meanwhile."""
        agent = self.find(name)
        if agent is None or agent.state != "present":
            raise Busy(f"agent {name!r} is {agent.state if agent else 'removed'}")

    def lock(self, name: str) -> asyncio.Lock:
        """Held while NAME's unit is started or stopped, or NAME is being removed."""
        return self._locks.setdefault(name, asyncio.Lock())

    # -- create ------------------------------------------------------------
    async def create(
        self, caller: Caller, name: str, template: str, overrides: dict[str, object] | None = None
    ) -> Agent:
        role = self.policy.check(caller, "agent.create")
        try:
            names.check_syntax(name)
            tmpl = self.catalog.template(template)
            self.plans.check_template(caller, role, name, tmpl.name)
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
            await self.accounts.add(names.account_name(name), agent.uid, agent.home)
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
            accountnames.check_free(name)  # no such account, no bus rule for it
            if self.homes.exists(name):  # never adopted (agentd.homes): refused, audited
                raise AlreadyExists(
                    f"{self.homes.path(name)} already exists: agentd does not adopt a "
                    "directory it did not make (an administrator may move it away)"
                )
            if role is Role.USER:
                bound, plan = self.plans.limits(caller.uid)  # its plan's, or agentd.toml's
                owned = self.store.scalar(
                    "SELECT count(*) FROM agents WHERE owner_uid=? AND state!='removed'",
                    (caller.uid,),
                )
                if owned >= bound.max_agents_per_owner:
                    raise LimitExceeded(
                        f"uid {caller.uid} already owns {owned} agents, the most allowed "
                        f"(max_agents_per_owner={bound.max_agents_per_owner}{plan})"
                    )
                mine = self._live("owner_uid = ?", (caller.uid,))  # agentd.ceilings: the sums
                ceilings.check(bound, caller.uid, mine, limits, note=plan)
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
        await recovery.rollback_create(self, agent, reason)

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
            teams=self.team_mounts(agent),
        )

    async def start(self, caller: Caller, name: str) -> str:
        """Queue the start of agent-NAME.service; return systemd's job.

        Like systemd's StartUnit, this returns once the job is queued: the
        outcome is audited and announced (events.JobFinished) when it ends.
        """
        agent = self._managed(caller, name, "agent.start")
        async with self.lock(name):
            self._still_present(name)
            try:
                await accountnames.before_start(self, agent)  # rename, bus policy
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
        async with self.lock(name):
            self._still_present(name)
            job = await self.units.stop(agent.unit, wait=False)
        self._watch(agent, job, "stop", caller)
        return job

    def _watch(self, agent: Agent, job: str, operation: str, caller: Caller) -> None:
        self.track(
            asyncio.get_running_loop().create_task(self._job_done(agent, job, operation, caller))
        )

    def track(self, task: asyncio.Task[Any]) -> None:
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
    async def remove(
        self, caller: Caller, name: str, keep_home: bool = False, force: bool = False
    ) -> Agent:
        """Remove NAME (agentd.recovery.Removals does the work) and return it.

        An agent left ``removing`` by a failure may be removed again. FORCE,
        for administrators: cancel a removal under way, skip the archive, set
        aside a home that cannot be deleted; the agent is gone at the end."""
        agent = self.find(name) if isinstance(name, str) else None
        role = self.policy.check(caller, "agent.remove", resource(agent) if agent else None)
        if agent is None:
            raise NoSuchAgent(f"no agent named {name!r}")
        if force:
            self.removals.may_force(caller, role is Role.ADMIN, agent, keep_home)
        if agent.state == "creating":
            raise Busy(f"agent {name!r} is being created")
        if self.removals.running(name):  # its task holds the lock while it works
            if not force:
                raise Busy(f"agent {name!r} is being removed")
            await self.removals.cancel(name)
        async with self.lock(name):  # one removal at a time: registered before it is let go
            current = self.find(name)
            if current is None or current.uid != agent.uid:
                raise NoSuchAgent(f"no agent named {name!r}")
            if self.removals.running(name):
                raise Busy(f"agent {name!r} is being removed")
            removing = self.removals.intend(current, keep_home and not force, caller.uid)
            task = self.removals.start(removing, caller.uid, force=force)
        try:
            await asyncio.shield(task)  # the removal is the Removals' task, not the caller's
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if not task.done() or me is None:
                raise  # our caller goes away (shutdown): the removal goes on, cancellable
            # The removal ended and its AgentRemoved unexported the Agent object this
            # call may have come through; sdbus cancels such an object's calls: answer.
            me.uncancel()
        if task.cancelled():
            raise Busy(f"the removal of agent {name!r} was cancelled: it was forced")
        task.result()  # its failure, typed
        return agent

    async def remove_with_flags(self, caller: Caller, name: str, flags: int) -> Agent:
        """remove() with RemoveAgentWithFlags' flags: REMOVE_KEEP_HOME, REMOVE_FORCE."""
        unknown = flags & ~(REMOVE_KEEP_HOME | REMOVE_FORCE)
        if unknown:
            self.policy.check(caller, "agent.remove")
            reason = f"unknown flags {unknown:#x} (1: keep the home, 2: force)"
            self.audit.append(
                "agent.remove",
                actor_uid=caller.uid,
                agent=str(name)[:64],
                result="refused",
                error=InvalidArgument.name,
                reason=reason,
            )
            raise InvalidArgument(reason)
        keep, force = bool(flags & REMOVE_KEEP_HOME), bool(flags & REMOVE_FORCE)
        return await self.remove(caller, name, keep_home=keep, force=force)

    def removal_error(self, name: str) -> str | None:
        """Why NAME's last removal failed, while it is still ``removing``."""
        return self.removals.errors.get(name)

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
