"""The system bus connection agentd serves on, and its well-known name.

The name is requested only once everything is exported and reconciled
(agentd.daemon), so D-Bus activation never hands a client a half-ready agentd.
"""

from __future__ import annotations

from sdbus import SdBus, request_default_bus_name_async, sd_bus_open_system, set_default_bus

from .interfaces import BUS_NAME


def open_system_bus() -> SdBus:
    bus = sd_bus_open_system()
    set_default_bus(bus)
    return bus


async def take_name() -> None:
    await request_default_bus_name_async(BUS_NAME)
