"""The org.agentos.agentd1 D-Bus interfaces: names, signatures, argument names.

Defined once, used by the service (agentd.api.service overrides the methods)
and by clients (agentctl builds proxies from the same classes). Every method is
flagged unprivileged so sd-bus lets ordinary users and agents reach it;
authorization happens in agentd, per caller UID, deny by default. The reference
is docs/dbus-api.md.
"""

from __future__ import annotations

from sdbus import (
    DbusInterfaceCommonAsync,
    DbusUnprivilegedFlag,
    dbus_method_async,
    dbus_property_async,
    dbus_signal_async,
)

BUS_NAME = "org.agentos.agentd1"
ROOT_PATH = "/org/agentos/agentd1"
AGENT_PATH_PREFIX = "/org/agentos/agentd1/agent"
U = DbusUnprivilegedFlag
MANAGER_INTERFACE = "org.agentos.agentd1.Manager"
RUNTIME_INTERFACE = "org.agentos.agentd1.Runtime"
AGENT_INTERFACE = "org.agentos.agentd1.Agent"


def agent_path(name: str) -> str:
    """Object path of agent NAME; '-' is escaped as systemd does ('_2d')."""
    return f"{AGENT_PATH_PREFIX}/{name.replace('-', '_2d')}"


def agent_name_from_path(path: str) -> str:
    return path.rsplit("/", 1)[-1].replace("_2d", "-")


# ListAgents row: name, template, active state, uid, owner uid, object path
AGENT_ROW = "(sssuuo)"
# ListTemplates row: name, description, profile, capabilities
TEMPLATE_ROW = "(sssas)"
# ListAuditEntries row: seq, time, actor uid, action, agent, agent uid, result,
# detail (JSON), hash
AUDIT_ROW = "(tdussusss)"


class ManagerInterface(DbusInterfaceCommonAsync, interface_name=MANAGER_INTERFACE):
    @dbus_method_async("ssa{sv}", "o", flags=U, method_name="CreateAgent",
                       input_args_names=("name", "template", "limits"),
                       result_args_names=("agent",))
    async def create_agent(self, name: str, template: str,
                           limits: dict[str, tuple[str, object]]) -> str:
        raise NotImplementedError

    @dbus_method_async("s", "o", flags=U, method_name="GetAgent",
                       input_args_names=("name",), result_args_names=("agent",))
    async def get_agent(self, name: str) -> str:
        raise NotImplementedError

    @dbus_method_async("", "a" + AGENT_ROW, flags=U, method_name="ListAgents",
                       result_args_names=("agents",))
    async def list_agents(self) -> list[tuple[str, str, str, int, int, str]]:
        raise NotImplementedError

    @dbus_method_async("s", "a{sv}", flags=U, method_name="DescribeAgent",
                       input_args_names=("name",), result_args_names=("info",))
    async def describe_agent(self, name: str) -> dict[str, tuple[str, object]]:
        raise NotImplementedError

    @dbus_method_async("s", "o", flags=U, method_name="StartAgent", input_args_names=("name",),
                       result_args_names=("job",))
    async def start_agent(self, name: str) -> str:
        """Queue the start; returns systemd's job ("/" if already running)."""
        raise NotImplementedError

    @dbus_method_async("s", "o", flags=U, method_name="StopAgent", input_args_names=("name",),
                       result_args_names=("job",))
    async def stop_agent(self, name: str) -> str:
        """Queue the stop; returns systemd's job ("/" if not running)."""
        raise NotImplementedError

    @dbus_method_async("sb", "", flags=U, method_name="RemoveAgent",
                       input_args_names=("name", "keep_home"))
    async def remove_agent(self, name: str, keep_home: bool) -> None:
        raise NotImplementedError

    @dbus_method_async("", "a" + TEMPLATE_ROW, flags=U, method_name="ListTemplates",
                       result_args_names=("templates",))
    async def list_templates(self) -> list[tuple[str, str, str, list[str]]]:
        raise NotImplementedError

    @dbus_method_async("s", "a{sv}", flags=U, method_name="DescribeTemplate",
                       input_args_names=("name",), result_args_names=("info",))
    async def describe_template(self, name: str) -> dict[str, tuple[str, object]]:
        raise NotImplementedError

    @dbus_method_async("tu", "a" + AUDIT_ROW, flags=U, method_name="ListAuditEntries",
                       input_args_names=("after_seq", "limit"), result_args_names=("entries",))
    async def list_audit_entries(self, after_seq: int, limit: int) -> list[tuple]:
        raise NotImplementedError

    @dbus_method_async("", "bts", flags=U, method_name="VerifyAudit",
                       result_args_names=("ok", "checked", "message"))
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

    @dbus_signal_async("sos", signal_name="AgentChanged",
                       signal_args_names=("name", "agent", "active_state"))
    def agent_changed(self) -> tuple[str, str, str]:
        raise NotImplementedError

    @dbus_signal_async("soss", signal_name="JobRemoved",
                       signal_args_names=("name", "job", "operation", "result"))
    def job_removed(self) -> tuple[str, str, str, str]:
        """A start or stop queued by StartAgent/StopAgent ended (result as systemd's)."""
        raise NotImplementedError

    @dbus_signal_async("t", signal_name="AuditAppended", signal_args_names=("seq",))
    def audit_appended(self) -> int:
        raise NotImplementedError


class RuntimeInterface(DbusInterfaceCommonAsync, interface_name=RUNTIME_INTERFACE):
    """Called by an agent's runtime, as the agent's UID, about itself only."""

    @dbus_method_async("", "so", flags=U, method_name="Register",
                       result_args_names=("name", "agent"))
    async def register(self) -> tuple[str, str]:
        raise NotImplementedError

    @dbus_method_async("", "", flags=U, method_name="Heartbeat")
    async def heartbeat(self) -> None:
        raise NotImplementedError


class AgentInterface(DbusInterfaceCommonAsync, interface_name=AGENT_INTERFACE):
    @dbus_method_async("", "o", flags=U, method_name="Start", result_args_names=("job",))
    async def start(self) -> str:
        raise NotImplementedError

    @dbus_method_async("", "o", flags=U, method_name="Stop", result_args_names=("job",))
    async def stop(self) -> str:
        raise NotImplementedError

    @dbus_method_async("b", "", flags=U, method_name="Remove", input_args_names=("keep_home",))
    async def remove(self, keep_home: bool) -> None:
        raise NotImplementedError

    @dbus_method_async("", "a{sv}", flags=U, method_name="Describe",
                       result_args_names=("info",))
    async def describe(self) -> dict[str, tuple[str, object]]:
        raise NotImplementedError

    @dbus_property_async("s", property_name="Name")
    def name(self) -> str:
        raise NotImplementedError

    @dbus_property_async("u", property_name="UID")
    def uid(self) -> int:
        raise NotImplementedError

    @dbus_property_async("u", property_name="OwnerUID")
    def owner_uid(self) -> int:
        raise NotImplementedError

    @dbus_property_async("s", property_name="Template")
    def template(self) -> str:
        raise NotImplementedError

    @dbus_property_async("s", property_name="Profile")
    def profile(self) -> str:
        raise NotImplementedError

    @dbus_property_async("s", property_name="Home")
    def home(self) -> str:
        raise NotImplementedError

    @dbus_property_async("s", property_name="Unit")
    def unit(self) -> str:
        raise NotImplementedError

    @dbus_property_async("s", property_name="ActiveState")
    def active_state(self) -> str:
        raise NotImplementedError

    @dbus_property_async("b", property_name="Online")
    def online(self) -> bool:
        raise NotImplementedError

    @dbus_property_async("t", property_name="CreatedTimestamp")
    def created_timestamp(self) -> int:
        raise NotImplementedError

    @dbus_property_async("t", property_name="LastSeenTimestamp")
    def last_seen_timestamp(self) -> int:
        raise NotImplementedError

    @dbus_property_async("t", property_name="MemoryMax")
    def memory_max(self) -> int:
        raise NotImplementedError

    @dbus_property_async("u", property_name="CPUQuotaPercent")
    def cpu_quota_percent(self) -> int:
        raise NotImplementedError

    @dbus_property_async("t", property_name="TasksMax")
    def tasks_max(self) -> int:
        raise NotImplementedError
