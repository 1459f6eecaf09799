"""The bus driver's GetConnectionCredentials, for agentd.api.access.Callers."""

from __future__ import annotations

from sdbus import DbusInterfaceCommonAsync, dbus_method_async


class BusDriver(DbusInterfaceCommonAsync, interface_name="org.freedesktop.DBus"):
    @dbus_method_async("s", "a{sv}", method_name="GetConnectionCredentials")
    async def get_connection_credentials(self, name: str) -> dict[str, tuple[str, object]]:
        raise NotImplementedError
