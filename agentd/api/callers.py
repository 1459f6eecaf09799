"""Who is calling: the sender's credentials, asked of the bus driver.

dbus-daemon reports the UID, groups and PID it saw when the peer connected
(SO_PEERCRED), which the peer cannot forge. Unique names are never reused on a
bus, so a bounded cache keyed by unique name is safe and saves a round trip per
call.
"""

from __future__ import annotations

from collections import OrderedDict

from sdbus import DbusInterfaceCommonAsync, SdBus, dbus_method_async, get_current_message

from ..authz import Caller


class _BusDriver(DbusInterfaceCommonAsync, interface_name="org.freedesktop.DBus"):
    @dbus_method_async("s", "a{sv}", method_name="GetConnectionCredentials")
    async def get_connection_credentials(self, name: str) -> dict[str, tuple[str, object]]:
        raise NotImplementedError


class Callers:
    def __init__(self, bus: SdBus, size: int = 4096) -> None:
        self.driver = _BusDriver.new_proxy("org.freedesktop.DBus", "/org/freedesktop/DBus", bus)
        self.cache: OrderedDict[str, Caller] = OrderedDict()
        self.size = size

    async def current(self) -> Caller:
        """The caller of the method being served."""
        sender = get_current_message().sender
        if sender is None:
            raise RuntimeError("method call without a sender")
        caller = self.cache.get(sender)
        if caller is None:
            creds = await self.driver.get_connection_credentials(sender)
            caller = Caller(
                uid=int(creds["UnixUserID"][1]),
                gids=frozenset(int(g) for g in creds.get("UnixGroupIDs", ("au", []))[1]),
                pid=int(creds.get("ProcessID", ("u", 0))[1]),
            )
            self.cache[sender] = caller
            while len(self.cache) > self.size:
                self.cache.popitem(last=False)
        return caller
