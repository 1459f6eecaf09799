"""Crash recovery: make the system match the registry when agentd starts.

The registry writes its intent (``creating``, ``removing``) before it touches
the system, so after a crash the rows say what was under way: a half-made
agent is rolled back, a half-removed one finished, a present one's missing
user or home recreated, and users, units and homes no row accounts for are
removed (a non-empty home archived first). Every repair is an audit row.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import names
from .agent import Agent
from .policy import AGENTD

if TYPE_CHECKING:
    from .registry import Registry

LIVE = ("creating", "present", "removing")


async def reconcile(registry: Registry) -> list[str]:
    """Make the system match the registry after a crash; return what was repaired."""
    repaired: list[str] = []
    for agent in registry.agents(("creating",)):
        await registry._rollback_create(agent, reason="agentd stopped during creation")
        repaired.append(f"rolled back creation of {agent.name}")
    for agent in registry.agents(("removing",)):
        await registry._finish_remove(agent, actor_uid=0, repair=True)
        repaired.append(f"finished removal of {agent.name}")
    for agent in registry.agents():
        repaired += await _repair_present(registry, agent)
    repaired += await _remove_orphans(registry)
    return repaired


async def _repair_present(registry: Registry, agent: Agent) -> list[str]:
    fixed = []
    account = registry.accounts.user(agent.name)
    if account is None:
        await registry.accounts.add(agent.name, agent.uid, agent.home)
        fixed.append(f"recreated user {agent.name}")
    if registry.homes.owner(agent.name) != agent.uid:
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


async def _remove_orphans(registry: Registry) -> list[str]:
    """Users, homes and units of agents the registry does not have."""
    live = {a.name for a in registry.agents(LIVE)}
    fixed = []
    for account in registry.accounts.agent_users(registry.cfg.uid_min, registry.cfg.uid_max):
        if account.name not in live:
            await registry.accounts.delete(account.name)
            fixed.append(f"deleted orphan user {account.name} (uid {account.uid})")
    for unit, _state in await registry.units.list_units("agent-*.service"):
        name = names.agent_of_unit(unit)
        if name is not None and name not in live:
            await registry.units.stop(unit)
            fixed.append(f"stopped orphan unit {unit}")
    for name in registry.homes.names():
        if name not in live:
            _archive_orphan_home(registry, name)
            fixed.append(f"archived and removed orphan home {registry.homes.path(name)}")
    for what in fixed:
        registry.audit.append("agent.repair", actor_uid=AGENTD.uid, result="repaired", reason=what)
    return fixed


def _archive_orphan_home(registry: Registry, name: str) -> None:
    """Never drop data silently: a non-empty orphan home is archived first."""
    home = registry.homes.path(name)
    if home.is_dir() and not home.is_symlink() and any(home.iterdir()):
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        registry.homes.archive(name, registry.cfg.archive_dir / f"orphan-{name}-{stamp}.tar.gz")
    registry.homes.remove(name)
