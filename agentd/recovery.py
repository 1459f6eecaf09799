"""Tearing agents down, and recovery after a crash.

Removal. The registry writes the intent (state ``removing``); the work here
is idempotent: stop the unit, archive the home if asked, delete the home,
then user and group, then mark the row removed. The home's part runs in a
bounded helper process (agentd.homes), so however the agent shaped its home
agentd's event loop keeps serving. Each removal is one asyncio task per agent
(Removals): its caller awaits it (shielded: a caller that goes away does not
stop it); cancelling it, as a forced removal or agentd's shutdown does, kills
the helper. A removal that fails stops where it is: the agent
stays ``removing`` with the reason (an audit row with result ``failed``, shown
by DescribeAgent and ListAgents) for its owner to retry or an administrator
to force (no archive; a home that cannot be deleted is set aside, root-only),
and nothing else waits for it.

Recovery. The intents say what was under way when agentd stopped: a half-made
agent is rolled back; a half-removed one is finished in the background, and
reconcile waits for that at most RECONCILE_BUDGET seconds before agentd
serves, while a removal that had *failed* is left for the administrator (so a
home agentd cannot remove never holds up or loops a start); a present agent's
missing user or home is recreated (anything else at its home path is set
aside, never adopted); users, units and homes no row accounts for are removed,
a non-empty home archived first or, if it cannot be, set aside. Every repair
is an audit row; one that fails is a row with result ``failed`` and never
stops agentd's start (the next start would meet it again: a restart loop).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import accountnames, names
from .agent import Agent
from .errors import AgentdError, InvalidArgument, PermissionDenied, SystemError_
from .events import AgentChanged, AgentRemoved
from .homes import HomeWorkError
from .policy import AGENTD, Caller

if TYPE_CHECKING:
    from .registry import Registry

LIVE = ("creating", "present", "removing")
# How long agentd's start waits for removals and orphan homes it resumes before
# it serves (the rest goes on in the background): well inside systemd's default
# TimeoutStartSec of 90 s, and far longer than an ordinary home takes (ms).
RECONCILE_BUDGET = 20.0


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime())


def agent_label(agent: Agent) -> str:
    """How a set-aside home of AGENT is named (UIDs are reused, names too)."""
    return f"{agent.name}-{agent.uid}"


def _quiet(task: asyncio.Task[Any]) -> None:
    """Nobody may await a background task: its failure is already audited."""
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


class Removals:
    """The removal under way for each agent, and why the last one failed."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.tasks: dict[str, asyncio.Task[str]] = {}
        self.errors: dict[str, str] = {}

    def running(self, name: str) -> bool:
        return name in self.tasks

    def may_force(self, caller: Caller, admin: bool, agent: Agent, keep_home: bool) -> None:
        """Refuse (audited) a forced removal by a non-administrator, or with keep_home."""
        reason = ""
        if not admin:
            reason = "only administrators may force a removal"
        elif keep_home:
            reason = "a forced removal does not archive: it cannot keep the home"
        if reason:
            self.registry.audit.append(
                "agent.remove",
                actor_uid=caller.uid,
                agent=agent.name,
                agent_uid=agent.uid,
                result="refused" if admin else "denied",
                reason=reason,
            )
            raise InvalidArgument(reason) if admin else PermissionDenied(reason)

    def intend(self, agent: Agent, keep_home: bool, actor_uid: int) -> Agent:
        """Write the intent: state 'removing', and where the home's archive goes."""
        reg = self.registry
        archive = None
        if keep_home:  # a retry keeps the first attempt's archive name
            path = reg.cfg.archive_dir / f"{agent.name}-{agent.uid}-{_stamp()}.tar.gz"
            archive = agent.archive or str(path)
        with reg.store.transaction():
            reg.store.execute(
                "UPDATE agents SET state='removing', keep_home=?, archive=? "
                "WHERE name=? AND state IN ('present', 'removing')",
                (int(keep_home), archive, agent.name),
            )
            if agent.state == "removing":  # a retry: the last failure is no longer the word
                last = self.errors.get(agent.name)
                reg.audit.append(
                    "agent.remove",
                    actor_uid=actor_uid,
                    agent=agent.name,
                    agent_uid=agent.uid,
                    result="retrying",
                    reason=f"after: {last}" if last else "after an interruption",
                )
        removing = reg.find(agent.name)
        assert removing is not None
        return removing

    async def cancel(self, name: str) -> None:
        """Stop NAME's removal (its helper is killed); it stays ``removing``."""
        task = self.tasks.get(name)
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    def start(
        self, agent: Agent, actor_uid: int, *, force: bool = False, repair: bool = False
    ) -> asyncio.Task[str]:
        """Run the removal of AGENT (already ``removing``) as a task of its own."""
        work = self._run(agent, actor_uid, force, repair)
        task = self._spawn(work, f"removal of {agent.name}")
        self.tasks[agent.name] = task
        task.add_done_callback(
            lambda t: self.tasks.pop(agent.name) if self.tasks.get(agent.name) is t else None
        )
        return task

    def _spawn(self, work: Coroutine[Any, Any, str], label: str) -> asyncio.Task[str]:
        task = asyncio.get_running_loop().create_task(work, name=label)
        self.registry.track(task)
        _quiet(task)
        return task

    def last_failure(self, agent: Agent) -> str | None:
        """The reason of AGENT's last removal attempt if it failed (the audit log
        is the record, so this survives restarts)."""
        rows = self.registry.store.query(
            "SELECT result, detail FROM audit WHERE action='agent.remove' AND agent=? "
            "AND agent_uid=? AND result IN ('failed', 'retrying') ORDER BY seq DESC LIMIT 1",
            (agent.name, agent.uid),
        )
        if not rows or rows[0]["result"] != "failed":
            return None
        return str(json.loads(rows[0]["detail"]).get("reason", "failed"))

    async def _run(self, agent: Agent, actor_uid: int, force: bool, repair: bool) -> str:
        reg = self.registry
        self.errors.pop(agent.name, None)
        async with reg.lock(agent.name):
            try:
                notes = await _teardown(reg, agent, force)
            except (AgentdError, OSError) as e:
                raise self._failed(agent, actor_uid, force, e) from None
            with reg.store.transaction():
                reg.store.execute(
                    "UPDATE agents SET state='removed', removed_at=? "
                    "WHERE name=? AND state='removing'",
                    (time.time(), agent.name),
                )
                if force:
                    notes.update(forced=True, reason="forced by an administrator: no archive")
                elif repair:
                    notes["reason"] = "finished a removal interrupted by a crash"
                reg.audit.append(
                    "agent.remove",
                    actor_uid=actor_uid,
                    agent=agent.name,
                    agent_uid=agent.uid,
                    result="repaired" if repair else "ok",
                    archive=None if force else agent.archive,
                    **notes,
                )
        reg.events.publish(AgentRemoved(agent))
        return f"finished removal of {agent.name}"

    def _failed(self, agent: Agent, actor_uid: int, force: bool, e: Exception) -> SystemError_:
        reason = str(e) if isinstance(e, AgentdError) else f"{type(e).__name__}: {e}"
        reason = reason[:1000]
        self.errors[agent.name] = reason
        self.registry.audit.append(
            "agent.remove",
            actor_uid=actor_uid,
            agent=agent.name,
            agent_uid=agent.uid,
            result="failed",
            reason=reason,
            kind=e.kind if isinstance(e, HomeWorkError) else type(e).__name__,
            forced=force,
            archive=None if force else agent.archive,
        )
        self.registry.events.publish(AgentChanged(agent))
        return SystemError_(
            f"removal of agent {agent.name} failed: {reason}. It stays 'removing': its "
            f"owner may retry (agentctl agent rm {agent.name}), an administrator may "
            f"finish it without an archive (agentctl agent rm --force {agent.name})"
        )


async def _teardown(reg: Registry, agent: Agent, force: bool) -> dict[str, Any]:
    """Stop, archive (unless forced), delete the home, delete user and group; the
    notes for the audit row."""
    await reg.units.stop(agent.unit)
    reg.set_offline(agent)
    notes: dict[str, Any] = {}
    try:
        if agent.archive and not force:
            info = await reg.homes.archive(agent.name, Path(agent.archive))
            notes.update({f"archive_{k}": v for k, v in info.items() if k in ("bytes", "note")})
        await reg.homes.remove(agent.name)
    except HomeWorkError as e:
        if not force:
            raise
        notes["home_error"] = str(e)[:1000]
        if reg.homes.exists(agent.name):
            notes["home_set_aside"] = str(reg.homes.set_aside(agent.name, agent_label(agent)))
    await accountnames.delete(reg.accounts, agent)
    return notes


async def rollback_create(reg: Registry, agent: Agent, reason: str) -> None:
    """Undo a half-made agent: unit, user, group, the home it made, then its row."""
    await reg.units.stop(agent.unit)
    await accountnames.delete(reg.accounts, agent)  # never one agentd did not make
    # Only a home chowned to this agent is one this creation made; a root-owned
    # one (a crash before the chown) is left to the orphan sweep, which archives.
    if reg.homes.is_home_of(agent.name, agent.uid):
        try:
            await reg.homes.remove(agent.name)
        except HomeWorkError:
            reg.homes.set_aside(agent.name, agent_label(agent))
    with reg.store.transaction():
        reg.store.execute(  # never deleted: the id stays taken (store migration 5)
            "UPDATE agents SET state='removed', removed_at=? WHERE id=? AND state='creating'",
            (time.time(), agent.id),
        )
        reg.audit.append(
            "agent.create",
            actor_uid=0,
            agent=agent.name,
            agent_uid=agent.uid,
            result="rolled_back",
            reason=reason,
        )


async def reconcile(registry: Registry) -> list[str]:
    """Make the system match the registry after a crash; return what was repaired."""
    repaired: list[str] = await accountnames.rename_all(registry)  # before any look-up
    for agent in registry.agents(("creating",)):
        repaired += await _guarded(registry, f"roll back {agent.name}", _rollback(registry, agent))
    slow: list[asyncio.Task[str]] = []
    for agent in registry.agents(("removing",)):
        failure = registry.removals.last_failure(agent)
        if failure is None:
            slow.append(registry.removals.start(agent, actor_uid=0, repair=True))
        else:
            registry.removals.errors[agent.name] = failure
            repaired.append(
                f"left the failed removal of {agent.name} for an administrator: {failure[:200]}"
            )
    for agent in registry.agents():
        repaired += await _guarded(
            registry, f"repair {agent.name}", _repair_present(registry, agent)
        )
    repaired += await _guarded(registry, "remove orphans", _remove_orphans(registry, slow))
    repaired += await _within_budget(slow, RECONCILE_BUDGET)
    return repaired


async def _guarded(registry: Registry, what: str, work: Awaitable[list[str]]) -> list[str]:
    """A repair that fails is audited and reported, never a crash of agentd's
    start: the next start would meet it again, and systemd would loop."""
    try:
        return await work
    except (AgentdError, OSError) as e:
        message = f"could not {what}: {e}"[:1000]
        registry.audit.append("agent.repair", actor_uid=AGENTD.uid, result="failed", reason=message)
        return [message]


async def _rollback(registry: Registry, agent: Agent) -> list[str]:
    await rollback_create(registry, agent, reason="agentd stopped during creation")
    return [f"rolled back creation of {agent.name}"]


async def _within_budget(tasks: list[asyncio.Task[str]], budget: float) -> list[str]:
    """What the tasks did, waiting BUDGET seconds at most; the rest keep going."""
    if not tasks:
        return []
    _done, pending = await asyncio.wait(tasks, timeout=budget)
    out = []
    for task in tasks:
        if task in pending:
            out.append(f"{task.get_name()}: continues in the background")
        elif task.cancelled():
            out.append(f"{task.get_name()}: cancelled")
        elif task.exception() is not None:
            out.append(f"{task.get_name()}: {task.exception()}")
        else:
            out.append(task.result())
    return out


async def _repair_present(registry: Registry, agent: Agent) -> list[str]:
    fixed = []
    account = accountnames.lookup(registry.accounts, agent)
    if account is None:
        await registry.accounts.add(names.account_name(agent.name), agent.uid, agent.home)
        fixed.append(f"recreated user {agent.name}")
    if not registry.homes.is_home_of(agent.name, agent.uid):
        if registry.homes.exists(agent.name):  # never adopted: kept for the admin
            aside = registry.homes.set_aside(agent.name, f"{agent.name}-{agent.uid}-in-the-way")
            fixed.append(f"set aside {agent.home}, not the agent's own directory, as {aside}")
        registry.homes.make(agent.name, agent.uid, agent.gid)
        fixed.append(f"recreated home of {agent.name}")
    for what in fixed:
        registry.audit.append(
            "agent.repair",
            actor_uid=AGENTD.uid,
            agent=agent.name,
            agent_uid=agent.uid,
            result="repaired",
            reason=what,
        )
    return fixed


async def _remove_orphans(registry: Registry, slow: list[asyncio.Task[str]]) -> list[str]:
    """Users, homes and units of agents the registry does not have (homes: in
    tasks appended to SLOW)."""
    live = {a.name for a in registry.agents(LIVE)}
    fixed = []
    for account in registry.accounts.agent_users(registry.cfg.uid_min, registry.cfg.uid_max):
        if not accountnames.is_agents(account.name, live):
            await registry.accounts.delete(account.name)
            fixed.append(f"deleted orphan user {account.name} (uid {account.uid})")
    for unit, _state in await registry.units.list_units("agent-*.service"):
        name = names.agent_of_unit(unit)
        if name is not None and name not in live:
            await registry.units.stop(unit)
            fixed.append(f"stopped orphan unit {unit}")
    for what in fixed:
        registry.audit.append("agent.repair", actor_uid=AGENTD.uid, result="repaired", reason=what)
    for name in registry.homes.names():
        if name not in live:
            work = _clear_orphan_home(registry, name)
            slow.append(registry.removals._spawn(work, f"orphan home {name}"))
    return fixed


async def _clear_orphan_home(registry: Registry, name: str) -> str:
    """Never drop data silently: a non-empty orphan home is archived first, and
    one that cannot be archived or deleted is set aside for the admin."""
    homes, path = registry.homes, registry.homes.path(name)
    dest = registry.cfg.archive_dir / f"orphan-{name}-{_stamp()}.tar.gz"
    try:
        info = await homes.archive(name, dest, skip_empty=True)
        await homes.remove(name)
        what = (
            f"removed empty orphan home {path}"
            if info.get("note")
            else f"archived and removed orphan home {path}"
        )
        detail: dict[str, Any] = {"archive": None if info.get("note") else str(dest)}
    except HomeWorkError as e:
        aside = homes.set_aside(name, f"orphan-{name}")
        what = f"set orphan home {path} aside as {aside}"
        detail = {"home_error": str(e)[:1000]}
    registry.audit.append(
        "agent.repair", actor_uid=AGENTD.uid, result="repaired", reason=what, **detail
    )
    return what
