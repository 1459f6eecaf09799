"""The Manager interface on /org/agentos/agentd1: agents, templates, the audit log."""

from __future__ import annotations

from collections.abc import Sequence

from sdbus import (
    DbusInterfaceCommonAsync,
    dbus_method_async,
    dbus_property_async,
    dbus_signal_async,
)

from ..rows import AgentRow, AuditRow, TemplateRow
from .common import MANAGER_INTERFACE, U

# (seq, ts, actor_uid, action, agent, agent_uid, result, detail, hash): AuditRow
AuditStruct = tuple[int, float, int, str, str, int, str, str, str]
# RemoveAgentWithFlags / Agent.RemoveWithFlags
REMOVE_KEEP_HOME = 1
REMOVE_FORCE = 2


class ManagerInterface(DbusInterfaceCommonAsync, interface_name=MANAGER_INTERFACE):
    @dbus_method_async(
        "ssa{sv}",
        "o",
        flags=U,
        method_name="CreateAgent",
        input_args_names=("name", "template", "limits"),
        result_args_names=("agent",),
    )
    async def create_agent(
        self, name: str, template: str, limits: dict[str, tuple[str, object]]
    ) -> str:
        raise NotImplementedError

    @dbus_method_async(
        "s",
        "o",
        flags=U,
        method_name="GetAgent",
        input_args_names=("name",),
        result_args_names=("agent",),
    )
    async def get_agent(self, name: str) -> str:
        raise NotImplementedError

    @dbus_method_async(
        "",
        "a" + AgentRow.SIGNATURE,
        flags=U,
        method_name="ListAgents",
        result_args_names=("agents",),
    )
    async def list_agents(self) -> Sequence[tuple[str, str, str, int, int, str]]:
        raise NotImplementedError

    @dbus_method_async(
        "s",
        "a{sv}",
        flags=U,
        method_name="DescribeAgent",
        input_args_names=("name",),
        result_args_names=("info",),
    )
    async def describe_agent(self, name: str) -> dict[str, tuple[str, object]]:
        raise NotImplementedError

    @dbus_method_async(
        "s",
        "o",
        flags=U,
        method_name="StartAgent",
        input_args_names=("name",),
        result_args_names=("job",),
    )
    async def start_agent(self, name: str) -> str:
        """Queue the start; returns systemd's job ("/" if already running)."""
        raise NotImplementedError

    @dbus_method_async(
        "s",
        "o",
        flags=U,
        method_name="StopAgent",
        input_args_names=("name",),
        result_args_names=("job",),
    )
    async def stop_agent(self, name: str) -> str:
        """Queue the stop; returns systemd's job ("/" if not running)."""
        raise NotImplementedError

    @dbus_method_async(
        "sb", "", flags=U, method_name="RemoveAgent", input_args_names=("name", "keep_home")
    )
    async def remove_agent(self, name: str, keep_home: bool) -> None:
        raise NotImplementedError

    @dbus_method_async(
        "st",
        "",
        flags=U,
        method_name="RemoveAgentWithFlags",
        input_args_names=("name", "flags"),
    )
    async def remove_agent_with_flags(self, name: str, flags: int) -> None:
        """RemoveAgent with flags: 1 keeps the home (as keep_home), 2 forces
        (administrators only: cancels a removal under way, skips the archive,
        sets aside a home that cannot be deleted; the agent is gone at the end).
        Other bits are InvalidArgument."""
        raise NotImplementedError

    @dbus_method_async(
        "",
        "a" + TemplateRow.SIGNATURE,
        flags=U,
        method_name="ListTemplates",
        result_args_names=("templates",),
    )
    async def list_templates(self) -> Sequence[tuple[str, str, str, list[str]]]:
        raise NotImplementedError

    @dbus_method_async(
        "s",
        "a{sv}",
        flags=U,
        method_name="DescribeTemplate",
        input_args_names=("name",),
        result_args_names=("info",),
    )
    async def describe_template(self, name: str) -> dict[str, tuple[str, object]]:
        raise NotImplementedError

    @dbus_method_async(
        "tu",
        "a" + AuditRow.SIGNATURE,
        flags=U,
        method_name="ListAuditEntries",
        input_args_names=("after_seq", "limit"),
        result_args_names=("entries",),
    )
    async def list_audit_entries(self, after_seq: int, limit: int) -> Sequence[AuditStruct]:
        raise NotImplementedError

    @dbus_method_async(
        "tuas",
        "a" + AuditRow.SIGNATURE,
        flags=U,
        method_name="ListEvents",
        input_args_names=("after_seq", "limit", "types"),
        result_args_names=("entries",),
    )
    async def list_events(
        self, after_seq: int, limit: int, types: list[str]
    ) -> Sequence[AuditStruct]:
        """ListAuditEntries, filtered by agentd: only rows whose action matches one of
        the shell-style patterns in types (e.g. "task.*"); all rows if types is empty."""
        raise NotImplementedError

    @dbus_method_async(
        "",
        "bts",
        flags=U,
        method_name="VerifyAudit",
        result_args_names=("ok", "checked", "message"),
    )
    async def verify_audit(self) -> tuple[bool, int, str]:
        raise NotImplementedError

    @dbus_property_async("s", property_name="Version")
    def version(self) -> str:
        raise NotImplementedError

    @dbus_property_async("t", property_name="StartTimestamp")
    def start_timestamp(self) -> int:
        raise NotImplementedError

    @dbus_property_async("u", property_name="NAgents")
    def n_agents(self) -> int:
        raise NotImplementedError

    @dbus_property_async("u", property_name="NOnline")
    def n_online(self) -> int:
        raise NotImplementedError

    @dbus_property_async("t", property_name="AuditHead")
    def audit_head(self) -> int:
        """Sequence number of the newest audit row (0: none yet)."""
        raise NotImplementedError

    @dbus_property_async("a{ss}", property_name="Config")
    def config(self) -> dict[str, str]:
        raise NotImplementedError

    @dbus_signal_async("so", signal_name="AgentNew", signal_args_names=("name", "agent"))
    def agent_new(self) -> tuple[str, str]:
        raise NotImplementedError

    @dbus_signal_async("so", signal_name="AgentRemoved", signal_args_names=("name", "agent"))
    def agent_removed(self) -> tuple[str, str]:
        raise NotImplementedError

    @dbus_signal_async(
        "sos", signal_name="AgentChanged", signal_args_names=("name", "agent", "active_state")
    )
    def agent_changed(self) -> tuple[str, str, str]:
        raise NotImplementedError

    @dbus_signal_async(
        "soss", signal_name="JobRemoved", signal_args_names=("name", "job", "operation", "result")
    )
    def job_removed(self) -> tuple[str, str, str, str]:
        """A start or stop queued by StartAgent/StopAgent ended (result as systemd's)."""
        raise NotImplementedError

    @dbus_signal_async("t", signal_name="AuditAppended", signal_args_names=("seq",))
    def audit_appended(self) -> int:
        raise NotImplementedError
