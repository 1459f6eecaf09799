"""Service objects: check the caller, call the engine, translate errors.

Nothing here decides policy or touches the system: that is the engine's job
(agentd.registry). Each method resolves the caller's credentials, calls one
engine method and maps engine errors to org.agentos.agentd1.Error.* names.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sdbus import (
    DbusFailedError,
    SdBus,
    dbus_method_async_override,
    dbus_property_async_override,
)

from .. import __version__
from ..audit import Entry
from ..authz import Caller, Role
from ..errors import AgentdError, PermissionDenied
from ..registry import Agent, Registry
from ..units import UnitStatus
from .callers import Callers
from .errors import AgentdDbusError, to_dbus
from .interfaces import (
    AGENT_INTERFACE,
    AgentInterface,
    ManagerInterface,
    agent_path,
)

T = TypeVar("T")
log = logging.getLogger("agentd")
Variant = tuple[str, object]


def translated(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Re-raise engine errors as their D-Bus error classes."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return await fn(*args, **kwargs)
        except AgentdError as e:
            raise to_dbus(e) from None
        except DbusFailedError:
            raise
        except Exception:
            # A bug, not a caller's mistake: full detail to the journal, a typed
            # error without Python internals to the caller.
            log.exception("internal error in %s", fn.__name__)
            raise AgentdDbusError(
                f"internal error in agentd while serving {fn.__name__}; "
                "see journalctl -u agentd") from None

    return wrapper


def _usec(ts: float | None) -> int:
    return int(ts * 1_000_000) if ts else 0


def variants(info: dict[str, Any]) -> dict[str, Variant]:
    out: dict[str, Variant] = {}
    for key, value in info.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = ("b", value)
        elif isinstance(value, int):
            out[key] = ("t" if value >= 0 else "x", value)
        elif isinstance(value, float):
            out[key] = ("d", value)
        elif isinstance(value, list) and value and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            out[key] = ("at", value)
        elif isinstance(value, list):
            out[key] = ("as", [str(v) for v in value])
        else:
            out[key] = ("s", str(value))
    return out


def describe(agent: Agent, status: UnitStatus, online: bool) -> dict[str, Variant]:
    info = agent.as_dict()
    info.update(
        online=online, active_state=status.active_state, sub_state=status.sub_state,
        main_pid=status.main_pid, memory_current=status.memory_current,
        cpu_usage_nsec=status.cpu_usage_nsec, tasks_current=status.tasks_current,
    )
    return variants(info)


class AgentObject(AgentInterface):
    """/org/agentos/agentd1/agent/NAME: one agent, like a systemd unit object."""

    def __init__(self, registry: Registry, callers: Callers, name: str) -> None:
        super().__init__()
        self.registry = registry
        self.callers = callers
        self.agent_name = name
        self.cached_state = "inactive"

    def _agent(self) -> Agent:
        agent = self.registry.find(self.agent_name)
        if agent is None:
            raise RuntimeError(f"agent {self.agent_name} vanished")
        return agent

    @dbus_method_async_override()
    @translated
    async def start(self) -> str:
        return await self.registry.start(await self.callers.current(), self.agent_name)

    @dbus_method_async_override()
    @translated
    async def stop(self) -> str:
        return await self.registry.stop(await self.callers.current(), self.agent_name)

    @dbus_method_async_override()
    @translated
    async def remove(self, keep_home: bool) -> None:
        await self.registry.remove(await self.callers.current(), self.agent_name, keep_home)

    @dbus_method_async_override()
    @translated
    async def describe(self) -> dict[str, Variant]:
        agent = self.registry.get(await self.callers.current(), self.agent_name)
        status = await self.registry.status(agent)
        return describe(agent, status, agent.name in self.registry.online)

    @dbus_property_async_override()
    def name(self) -> str:
        return self.agent_name

    @dbus_property_async_override()
    def uid(self) -> int:
        return self._agent().uid

    @dbus_property_async_override()
    def owner_uid(self) -> int:
        return self._agent().owner_uid

    @dbus_property_async_override()
    def template(self) -> str:
        return self._agent().template

    @dbus_property_async_override()
    def profile(self) -> str:
        return self._agent().profile

    @dbus_property_async_override()
    def home(self) -> str:
        return str(self._agent().home)

    @dbus_property_async_override()
    def unit(self) -> str:
        return self._agent().unit

    @dbus_property_async_override()
    def active_state(self) -> str:
        return self.cached_state

    @dbus_property_async_override()
    def online(self) -> bool:
        return self.agent_name in self.registry.online

    @dbus_property_async_override()
    def created_timestamp(self) -> int:
        return _usec(self._agent().created_at)

    @dbus_property_async_override()
    def last_seen_timestamp(self) -> int:
        return _usec(self._agent().last_seen)

    @dbus_property_async_override()
    def memory_max(self) -> int:
        return self._agent().limits.memory_max

    @dbus_property_async_override()
    def cpu_quota_percent(self) -> int:
        return self._agent().limits.cpu_quota

    @dbus_property_async_override()
    def tasks_max(self) -> int:
        return self._agent().limits.tasks_max


class ManagerObject(ManagerInterface):
    """/org/agentos/agentd1: the Manager interface."""

    def __init__(self, registry: Registry, callers: Callers, bus: SdBus) -> None:
        super().__init__()
        self.registry = registry
        self.callers = callers
        self.bus = bus
        self.started = time.time()
        self.agents: dict[str, tuple[AgentObject, Any]] = {}

    # -- objects ----------------------------------------------------------------
    def export_agent(self, name: str, state: str = "inactive") -> AgentObject:
        if name in self.agents:
            return self.agents[name][0]
        obj = AgentObject(self.registry, self.callers, name)
        obj.cached_state = state
        handle = obj.export_to_dbus(agent_path(name), self.bus)
        self.agents[name] = (obj, handle)
        return obj

    def unexport_agent(self, name: str) -> None:
        entry = self.agents.pop(name, None)
        if entry is not None:
            entry[1].stop()

    def on_registry_event(self, event: str, agent: Agent) -> None:
        path = agent_path(agent.name)
        if event == "created":
            self.export_agent(agent.name)
            self.agent_new.emit((agent.name, path))
        elif event == "removed":
            self.unexport_agent(agent.name)
            self.agent_removed.emit((agent.name, path))
        elif event == "changed" and agent.name in self.agents:
            self.on_unit_state(agent.name, self.agents[agent.name][0].cached_state)

    def on_unit_state(self, name: str, active_state: str) -> None:
        """systemd reported a new ActiveState for agent-NAME.service."""
        entry = self.agents.get(name)
        if entry is None:
            return
        entry[0].cached_state = active_state
        entry[0].properties_changed.emit(
            (AGENT_INTERFACE, {}, ["ActiveState", "Online", "LastSeenTimestamp"]))
        self.agent_changed.emit((name, agent_path(name), active_state))

    def on_job(self, agent: Agent, job: str, operation: str, result: str) -> None:
        self.job_removed.emit((agent.name, job, operation, result))

    def on_audit(self, entry: Entry) -> None:
        self.audit_appended.emit(entry.seq)

    # -- Manager ------------------------------------------------------------------
    @dbus_method_async_override()
    @translated
    async def create_agent(self, name: str, template: str,
                           limits: dict[str, Variant]) -> str:
        caller = await self.callers.current()
        overrides = {key: value for key, (_sig, value) in limits.items()}
        agent = await self.registry.create(caller, name, template, overrides)
        return agent_path(agent.name)

    @dbus_method_async_override()
    @translated
    async def get_agent(self, name: str) -> str:
        caller = await self.callers.current()
        await self._not_agent("agent.get", caller)
        agent = self.registry.get(caller, name)
        return agent_path(agent.name)

    @dbus_method_async_override()
    @translated
    async def list_agents(self) -> list[tuple[str, str, str, int, int, str]]:
        caller = await self.callers.current()
        await self._not_agent("agent.list", caller)
        return [
            (a.name, a.template, self._state(a.name), a.uid, a.owner_uid, agent_path(a.name))
            for a in self.registry.visible(caller)
        ]

    def _state(self, name: str) -> str:
        entry = self.agents.get(name)
        return entry[0].cached_state if entry else "inactive"

    @dbus_method_async_override()
    @translated
    async def describe_agent(self, name: str) -> dict[str, Variant]:
        caller = await self.callers.current()
        await self._not_agent("agent.show", caller)
        agent = self.registry.get(caller, name)
        status = await self.registry.status(agent)
        return describe(agent, status, agent.name in self.registry.online)

    @dbus_method_async_override()
    @translated
    async def start_agent(self, name: str) -> str:
        return await self.registry.start(await self.callers.current(), name)

    @dbus_method_async_override()
    @translated
    async def stop_agent(self, name: str) -> str:
        return await self.registry.stop(await self.callers.current(), name)

    @dbus_method_async_override()
    @translated
    async def remove_agent(self, name: str, keep_home: bool) -> None:
        await self.registry.remove(await self.callers.current(), name, keep_home)

    @dbus_method_async_override()
    @translated
    async def list_templates(self) -> list[tuple[str, str, str, list[str]]]:
        await self._not_agent("template.list")
        return [(t.name, t.description, t.profile, list(t.capabilities))
                for t in self.registry.catalog.templates()]

    @dbus_method_async_override()
    @translated
    async def describe_template(self, name: str) -> dict[str, Variant]:
        await self._not_agent("template.show")
        info = self.registry.catalog.template(name).as_dict()
        profile = self.registry.catalog.profile(str(info["profile"]))
        info["network"] = profile.network
        info["profile_description"] = profile.description
        return variants(info)

    @dbus_method_async_override()
    @translated
    async def list_audit_entries(self, after_seq: int, limit: int) -> list[tuple]:
        caller = await self.callers.current()
        role = await self._not_agent("audit.list", caller)
        limit = max(1, min(int(limit or 1000), 10000))
        rows = []
        while len(rows) < limit:
            batch = self.registry.audit.entries(after=after_seq, limit=limit)
            if not batch:
                break
            after_seq = batch[-1].seq
            rows += [e for e in batch if role is Role.ADMIN or self._audit_visible(caller, e)]
        return [
            (e.seq, e.ts, e.actor_uid, e.action, e.agent or "", e.agent_uid or 0, e.result,
             json.dumps(e.detail, sort_keys=True), e.hash)
            for e in rows[:limit]
        ]

    def _audit_visible(self, caller: Caller, entry: Entry) -> bool:
        """A user sees what it did and what was done to the agents it owns now."""
        if entry.actor_uid == caller.uid:
            return True
        agent = self.registry.find(entry.agent) if entry.agent else None
        return agent is not None and agent.owner_uid == caller.uid and \
            agent.uid == entry.agent_uid

    @dbus_method_async_override()
    @translated
    async def verify_audit(self) -> tuple[bool, int, str]:
        caller = await self.callers.current()
        if self.registry.authority.role(caller) is not Role.ADMIN:
            self.registry.audit.append("audit.verify", actor_uid=caller.uid, result="denied",
                                       reason="only administrators may verify the audit log")
            raise PermissionDenied("only administrators may verify the audit log")
        verdict = self.registry.audit.verify()
        return verdict.ok, verdict.checked, verdict.message

    async def _not_agent(self, action: str, caller: Caller | None = None) -> Role:
        caller = caller or await self.callers.current()
        role = self.registry.authority.role(caller)
        if role is Role.AGENT:
            self.registry.audit.append(action, actor_uid=caller.uid, result="denied",
                                       reason="agents may not use the Manager interface")
            raise PermissionDenied("agents may not use the Manager interface")
        return role

    @dbus_property_async_override()
    def version(self) -> str:
        return __version__

    @dbus_property_async_override()
    def start_timestamp(self) -> int:
        return _usec(self.started)

    @dbus_property_async_override()
    def n_agents(self) -> int:
        return len(self.agents)

    @dbus_property_async_override()
    def n_online(self) -> int:
        return len(self.registry.online)

    @dbus_property_async_override()
    def audit_head(self) -> int:
        return self.registry.audit.head()[0]

    @dbus_property_async_override()
    def config(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.registry.cfg.as_dict().items()}
