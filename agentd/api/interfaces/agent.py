"""The Agent interface: one object per agent, like systemd's unit objects."""

from __future__ import annotations

from sdbus import (
    DbusInterfaceCommonAsync,
    dbus_method_async,
    dbus_property_async,
)

from .common import AGENT_INTERFACE, U


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

    @dbus_method_async("t", "", flags=U, method_name="RemoveWithFlags", input_args_names=("flags",))
    async def remove_with_flags(self, flags: int) -> None:
        """As the Manager's RemoveAgentWithFlags: 1 keeps the home, 2 forces."""
        raise NotImplementedError

    @dbus_method_async("", "a{sv}", flags=U, method_name="Describe", result_args_names=("info",))
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
