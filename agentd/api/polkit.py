"""polkit's Authority, asked whether a caller is granted an org.agentos.agentd1.* action.

The subject is the caller's unique bus name (polkit resolves it to the process
and user the bus saw, as systemd does), never a PID, which could be recycled.
No interaction is requested: agentd answers at once. If polkit is not
installed or not running, the answer is "no" (agentd's own rules still hold:
root and the admin group are administrators) and polkit is not asked again
for ABSENT_RETRY_S, so its absence costs one failed call a minute, not one a
request.
"""

from __future__ import annotations

import logging
import time

from sdbus import DbusInterfaceCommonAsync, SdBus, dbus_method_async
from sdbus.dbus_exceptions import DbusNameHasNoOwnerError, DbusServiceUnknownError
from sdbus.sd_bus_internals import SdBusBaseError

from ..policy import Caller
from .marshal import Variant

log = logging.getLogger("agentd")
ABSENT_RETRY_S = 60.0


class _Authority(DbusInterfaceCommonAsync, interface_name="org.freedesktop.PolicyKit1.Authority"):
    @dbus_method_async("(sa{sv})sa{ss}us", "(bba{ss})", method_name="CheckAuthorization")
    async def check_authorization(
        self,
        subject: tuple[str, dict[str, Variant]],
        action_id: str,
        details: dict[str, str],
        flags: int,
        cancellation_id: str,
    ) -> tuple[bool, bool, dict[str, str]]:
        raise NotImplementedError


class Polkit:
    def __init__(self, bus: SdBus) -> None:
        self.authority = _Authority.new_proxy(
            "org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority", bus
        )
        self.absent_until = 0.0

    async def allowed(self, caller: Caller, action_id: str) -> bool:
        if not caller.bus_name or time.monotonic() < self.absent_until:
            return False
        subject: tuple[str, dict[str, Variant]] = (
            "system-bus-name",
            {"name": ("s", caller.bus_name)},
        )
        try:
            authorized, _challenge, _details = await self.authority.check_authorization(
                subject, action_id, {}, 0, ""
            )
        except (DbusServiceUnknownError, DbusNameHasNoOwnerError):
            self.absent_until = time.monotonic() + ABSENT_RETRY_S
            return False
        except SdBusBaseError as e:
            log.warning("polkit: %s for %s: %s", action_id, caller.bus_name, e)
            return False
        return bool(authorized)
