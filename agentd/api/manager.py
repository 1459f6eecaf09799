"""The Manager interface and one Agent object per agent, as systemd has per unit.

Thin: each method declares its policy action (@rule), calls one engine method
and marshals the answer. The objects follow the engine through domain events
(agentd.events): an agent created or removed is exported or withdrawn, a unit
state or job outcome becomes a signal, all after the change is committed.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sdbus import SdBus, dbus_method_async_override, dbus_property_async_override

from .. import __version__
from ..agent import Agent
from ..config import Config
from ..eventlog import EventLog
from ..events import (
    AgentChanged,
    AgentCreated,
    AgentRemoved,
    AuditAppended,
    Events,
    JobFinished,
    UnitStateChanged,
)
from ..registry import LISTED, Registry
from ..templates import Catalog
from ..units import UnitStatus
from .access import Callers, rule
from .interfaces import AGENT_INTERFACE, AgentInterface, ManagerInterface, agent_path
from .marshal import Variant, plain, usec, variants
from .rows import AgentRow, AuditRow, TemplateRow


def withdraw(handle: Any) -> None:
    """handle.stop() of sdbus 0.14.3 without its cancelling of the calls being
    served (its other two steps, as it does them); stop() if they are missing."""
    interfaces = getattr(handle, "_dbus_interfaces", None)
    slots = getattr(handle, "_dbus_slots", None)
    if interfaces is None or slots is None:
        handle.stop()
        return
    for interface in interfaces:
        interface._stop_export()
    for slot in slots:
        slot.close()


def describe(
    agent: Agent, status: UnitStatus, online: bool, removal_error: str | None = None
) -> dict[str, Variant]:
    info = agent.as_dict()
    if removal_error:  # a failed removal: the agent stays 'removing' until retried or forced
        info["removal_error"] = removal_error
    info.update(
        online=online,
        active_state=status.active_state,
        sub_state=status.sub_state,
        main_pid=status.main_pid,
        memory_current=status.memory_current,
        cpu_usage_nsec=status.cpu_usage_nsec,
        tasks_current=status.tasks_current,
    )
    return variants(info)


def audit_row(e: Any) -> AuditRow:
    return AuditRow(
        e.seq,
        e.ts,
        e.actor_uid,
        e.action,
        e.agent or "",
        e.agent_uid or 0,
        e.result,
        json.dumps(e.detail, sort_keys=True),
        e.hash,
    )


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
    @rule("agent.start")
    async def start(self) -> str:
        return await self.registry.start(await self.callers.current(), self.agent_name)

    @dbus_method_async_override()
    @rule("agent.stop")
    async def stop(self) -> str:
        return await self.registry.stop(await self.callers.current(), self.agent_name)

    @dbus_method_async_override()
    @rule("agent.remove")
    async def remove(self, keep_home: bool) -> None:
        await self.registry.remove(await self.callers.current(), self.agent_name, keep_home)

    @dbus_method_async_override()
    @rule("agent.remove")
    async def remove_with_flags(self, flags: int) -> None:
        await self.registry.remove_with_flags(await self.callers.current(), self.agent_name, flags)

    @dbus_method_async_override()
    @rule("agent.describe")
    async def describe(self) -> dict[str, Variant]:
        agent = self.registry.get(await self.callers.current(), self.agent_name, states=LISTED)
        status = await self.registry.status(agent)
        error = self.registry.removal_error(agent.name)
        return describe(agent, status, agent.name in self.registry.online, error)

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
        return usec(self._agent().created_at)

    @dbus_property_async_override()
    def last_seen_timestamp(self) -> int:
        return usec(self._agent().last_seen)

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

    def __init__(
        self,
        registry: Registry,
        eventlog: EventLog,
        callers: Callers,
        bus: SdBus | None,
        catalog: Catalog | None = None,
        cfg: Config | None = None,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.catalog = catalog or registry.catalog
        self.cfg = cfg or registry.cfg
        self.eventlog = eventlog
        self.callers = callers
        self.bus = bus
        self.started = time.time()
        self.agents: dict[str, tuple[AgentObject, Any]] = {}

    # -- objects and signals -------------------------------------------------------
    def subscribe(self, events: Events) -> None:
        events.subscribe(AgentCreated, self._on_created)
        events.subscribe(AgentRemoved, self._on_removed)
        events.subscribe(AgentChanged, self._on_changed)
        events.subscribe(UnitStateChanged, self._on_unit_state)
        events.subscribe(JobFinished, self._on_job)
        events.subscribe(AuditAppended, lambda e: self.audit_appended.emit(e.entry.seq))

    def export_agent(self, name: str, state: str = "inactive") -> AgentObject:
        if name in self.agents:
            return self.agents[name][0]
        obj = AgentObject(self.registry, self.callers, name)
        obj.cached_state = state
        handle = obj.export_to_dbus(agent_path(name), self.bus)
        self.agents[name] = (obj, handle)
        return obj

    def unexport_agent(self, name: str) -> None:
        """Withdraw the agent's object now, but let the calls it is serving finish.

        sdbus's handle.stop() also cancels the tasks serving the object's calls,
        which then never get a reply (the fuzz test saw calls lost whenever an
        agent was removed under them). So the object's vtable and slots are
        closed as stop() closes them (new calls: UnknownObject), and the calls
        in flight run on and answer (NoSuchAgent, or their result)."""
        entry = self.agents.pop(name, None)
        if entry is not None:
            withdraw(entry[1])

    def _on_created(self, event: AgentCreated) -> None:
        self.export_agent(event.agent.name)
        self.agent_new.emit((event.agent.name, agent_path(event.agent.name)))

    def _on_removed(self, event: AgentRemoved) -> None:
        self.unexport_agent(event.agent.name)
        self.agent_removed.emit((event.agent.name, agent_path(event.agent.name)))

    def _on_changed(self, event: AgentChanged) -> None:
        name = event.agent.name
        if name in self.agents:
            self._on_unit_state(UnitStateChanged(name, self.agents[name][0].cached_state))

    def _on_unit_state(self, event: UnitStateChanged) -> None:
        entry = self.agents.get(event.name)
        if entry is None:
            return
        entry[0].cached_state = event.active_state
        entry[0].properties_changed.emit(
            (AGENT_INTERFACE, {}, ["ActiveState", "Online", "LastSeenTimestamp"])
        )
        self.agent_changed.emit((event.name, agent_path(event.name), event.active_state))

    def _on_job(self, event: JobFinished) -> None:
        self.job_removed.emit((event.agent.name, event.job, event.operation, event.result))

    def state_of(self, agent: Agent) -> str:
        """AGENT's unit state as agentd follows it (agentd.fleet asks)."""
        return self._state(agent)

    def _state(self, agent: Agent) -> str:
        """The unit's ActiveState, or "removing" while the agent is (its unit is gone)."""
        if agent.state == "removing":
            return "removing"
        entry = self.agents.get(agent.name)
        return entry[0].cached_state if entry else "inactive"

    # -- agents ----------------------------------------------------------------------
    @dbus_method_async_override()
    @rule("agent.create")
    async def create_agent(self, name: str, template: str, limits: dict[str, Variant]) -> str:
        agent = await self.registry.create(
            await self.callers.current(), name, template, plain(limits)
        )
        return agent_path(agent.name)

    @dbus_method_async_override()
    @rule("agent.get")
    async def get_agent(self, name: str) -> str:
        agent = self.registry.get(await self.callers.current(), name, "agent.get")
        return agent_path(agent.name)

    @dbus_method_async_override()
    @rule("agent.list")
    async def list_agents(self) -> list[AgentRow]:
        return [
            AgentRow(a.name, a.template, self._state(a), a.uid, a.owner_uid, agent_path(a.name))
            for a in self.registry.visible(await self.callers.current(), states=LISTED)
        ]

    @dbus_method_async_override()
    @rule("agent.show")
    async def describe_agent(self, name: str) -> dict[str, Variant]:
        agent = self.registry.get(await self.callers.current(), name, "agent.show", LISTED)
        status = await self.registry.status(agent)
        error = self.registry.removal_error(agent.name)
        return describe(agent, status, agent.name in self.registry.online, error)

    @dbus_method_async_override()
    @rule("agent.start")
    async def start_agent(self, name: str) -> str:
        return await self.registry.start(await self.callers.current(), name)

    @dbus_method_async_override()
    @rule("agent.stop")
    async def stop_agent(self, name: str) -> str:
        return await self.registry.stop(await self.callers.current(), name)

    @dbus_method_async_override()
    @rule("agent.remove")
    async def remove_agent(self, name: str, keep_home: bool) -> None:
        await self.registry.remove(await self.callers.current(), name, keep_home)

    @dbus_method_async_override()
    @rule("agent.remove")
    async def remove_agent_with_flags(self, name: str, flags: int) -> None:
        await self.registry.remove_with_flags(await self.callers.current(), name, flags)

    # -- templates ----------------------------------------------------------------------
    @dbus_method_async_override()
    @rule("template.list")
    async def list_templates(self) -> list[TemplateRow]:
        return [
            TemplateRow(t.name, t.description, t.profile, list(t.capabilities))
            for t in self.catalog.templates()
        ]

    @dbus_method_async_override()
    @rule("template.show")
    async def describe_template(self, name: str) -> dict[str, Variant]:
        info = self.catalog.template(name).as_dict()
        profile = self.catalog.profile(str(info["profile"]))
        info["network"] = profile.network
        info["profile_description"] = profile.description
        return variants(info)

    # -- audit ------------------------------------------------------------------------------
    @dbus_method_async_override()
    @rule("audit.list")
    async def list_audit_entries(self, after_seq: int, limit: int) -> list[AuditRow]:
        caller = await self.callers.current()
        return [audit_row(e) for e in self.eventlog.entries(caller, after_seq, limit)]

    @dbus_method_async_override()
    @rule("audit.list")
    async def list_events(self, after_seq: int, limit: int, types: list[str]) -> list[AuditRow]:
        caller = await self.callers.current()
        return [audit_row(e) for e in self.eventlog.entries(caller, after_seq, limit, types)]

    @dbus_method_async_override()
    @rule("audit.verify")
    async def verify_audit(self) -> tuple[bool, int, str]:
        verdict = self.eventlog.verify(await self.callers.current())
        return verdict.ok, verdict.checked, verdict.message

    # -- properties ---------------------------------------------------------------------------
    @dbus_property_async_override()
    def version(self) -> str:
        return __version__

    @dbus_property_async_override()
    def start_timestamp(self) -> int:
        return usec(self.started)

    @dbus_property_async_override()
    def n_agents(self) -> int:
        return len(self.agents)

    @dbus_property_async_override()
    def n_online(self) -> int:
        return len(self.registry.online)

    @dbus_property_async_override()
    def audit_head(self) -> int:
        return self.eventlog.audit.head()[0]

    @dbus_property_async_override()
    def config(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.cfg.as_dict().items()}
