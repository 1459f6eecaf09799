"""A small client of systemd's D-Bus API: transient units and their state.

agentd asks systemd for units instead of running systemd-run: one bus
connection, typed errors, and jobs it can wait for. JobRemoved signals are
matched before any job is queued and their results kept for a while, so a job
that finishes before its waiter registers is not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import OrderedDict
from collections.abc import Callable

from sdbus import (
    DbusFailedError,
    DbusInterfaceCommonAsync,
    SdBus,
    SdBusBaseError,
    dbus_method_async,
    dbus_property_async,
)
from sdbus.sd_bus_internals import SdBusMessage

from .errors import SystemError_
from .sandbox import UnitProperty
from .units import UnitStatus, UnitUsage

# ListUnits' struct: name, description, load, active and sub state, the unit it
# follows, its object path, then its job's id, type and object path.
UnitInfo = tuple[str, str, str, str, str, str, str, int, str, str]
SYSTEMD = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"


class NoSuchUnitError(DbusFailedError):
    dbus_error_name = "org.freedesktop.systemd1.NoSuchUnit"


class UnitExistsError(DbusFailedError):
    dbus_error_name = "org.freedesktop.systemd1.UnitExists"


class _Manager(DbusInterfaceCommonAsync, interface_name="org.freedesktop.systemd1.Manager"):
    @dbus_method_async("ssa(sv)a(sa(sv))", "o", method_name="StartTransientUnit")
    async def start_transient_unit(
        self,
        name: str,
        mode: str,
        properties: list[UnitProperty],
        aux: list[tuple[str, list[UnitProperty]]],
    ) -> str:
        raise NotImplementedError

    @dbus_method_async("ss", "o", method_name="StopUnit")
    async def stop_unit(self, name: str, mode: str) -> str:
        raise NotImplementedError

    @dbus_method_async("s", "o", method_name="GetUnit")
    async def get_unit(self, name: str) -> str:
        raise NotImplementedError

    @dbus_method_async("s", "", method_name="ResetFailedUnit")
    async def reset_failed_unit(self, name: str) -> None:
        raise NotImplementedError

    @dbus_method_async("asas", "a(ssssssouso)", method_name="ListUnitsByPatterns")
    async def list_units_by_patterns(
        self, states: list[str], patterns: list[str]
    ) -> list[UnitInfo]:
        raise NotImplementedError

    @dbus_method_async("", "", method_name="Subscribe")
    async def subscribe(self) -> None:
        raise NotImplementedError


class _Unit(DbusInterfaceCommonAsync, interface_name="org.freedesktop.systemd1.Unit"):
    @dbus_property_async("s", property_name="ActiveState")
    def active_state(self) -> str:
        raise NotImplementedError

    @dbus_property_async("s", property_name="SubState")
    def sub_state(self) -> str:
        raise NotImplementedError


class _Service(DbusInterfaceCommonAsync, interface_name="org.freedesktop.systemd1.Service"):
    @dbus_property_async("u", property_name="MainPID")
    def main_pid(self) -> int:
        raise NotImplementedError

    @dbus_property_async("t", property_name="MemoryCurrent")
    def memory_current(self) -> int:
        raise NotImplementedError

    @dbus_property_async("t", property_name="CPUUsageNSec")
    def cpu_usage_nsec(self) -> int:
        raise NotImplementedError

    @dbus_property_async("t", property_name="TasksCurrent")
    def tasks_current(self) -> int:
        raise NotImplementedError


class _ServiceUnit(_Unit, _Service):
    pass


SERVICE_INTERFACE = "org.freedesktop.systemd1.Service"


UNSET = 2**64 - 1  # systemd's "no value" for counters
NO_JOB = "/"  # what a start or stop returns when there was nothing to do


def _text(e: BaseException) -> str:
    """The message of an sd-bus error, whether mapped to a class or not."""
    args = getattr(e, "args", ())
    return str(args[-1]) if args else type(e).__name__


def _counter(value: int) -> int | None:
    return None if value == UNSET else value


UnitStateCallback = Callable[[str, str], None]


def _escape(text: str) -> str:
    """sd_bus_path_encode: every byte outside [A-Za-z0-9] becomes _XX."""
    return "".join(c if c.isascii() and c.isalnum() else f"_{ord(c):02x}" for c in text)


def _unescape(text: str) -> str:
    return re.sub(r"_([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


class Systemd:
    """Transient units through org.freedesktop.systemd1 on BUS."""

    def __init__(self, bus: SdBus) -> None:
        self.bus = bus
        self.manager = _Manager.new_proxy(SYSTEMD, SYSTEMD_PATH, bus)
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}
        self._finished: OrderedDict[str, str] = OrderedDict()
        self._slot: object | None = None

    async def connect(self) -> None:
        self._slot = await self.bus.match_signal_async(
            SYSTEMD,
            SYSTEMD_PATH,
            "org.freedesktop.systemd1.Manager",
            "JobRemoved",
            self._on_job_removed,
        )
        await self.manager.subscribe()

    def _on_job_removed(self, message: SdBusMessage) -> None:
        _id, job, _unit, result = message.get_contents()  # (uoss)
        if not isinstance(job, str) or not isinstance(result, str):
            return
        for waiter in self._waiters.pop(job, []):
            if not waiter.done():
                waiter.set_result(result)
        self._finished[job] = result  # for waiters that come after the signal
        while len(self._finished) > 4096:
            self._finished.popitem(last=False)

    async def wait_job(self, job: str, timeout: float = 90.0) -> str:
        """The result systemd gives JOB (done, failed, canceled, timeout, ...)."""
        if job == NO_JOB:
            return "done"
        if job in self._finished:
            return self._finished[job]
        fut = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(job, [])
        waiters.append(fut)  # any number may wait for one job
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return "timeout"
        finally:
            if fut in waiters:
                waiters.remove(fut)
            if not waiters:
                self._waiters.pop(job, None)

    async def watch_units(self, prefix: str, callback: UnitStateCallback) -> None:
        """Call CALLBACK(unit, active_state) whenever a unit named PREFIX* changes."""
        path_prefix = f"{SYSTEMD_PATH}/unit/" + _escape(prefix)

        def on_changed(message: SdBusMessage) -> None:
            path = message.path
            if not path or not path.startswith(path_prefix):
                return
            iface, changed, _invalidated = message.get_contents()  # (sa{sv}as)
            if iface != "org.freedesktop.systemd1.Unit" or not isinstance(changed, dict):
                return
            state = changed.get("ActiveState")  # a variant: ("s", state)
            if isinstance(state, tuple):
                callback(_unescape(path.rsplit("/", 1)[-1]), str(state[1]))

        self._watch_slot = await self.bus.match_signal_async(
            SYSTEMD, None, "org.freedesktop.DBus.Properties", "PropertiesChanged", on_changed
        )

    async def start_transient(self, unit: str, properties: list[UnitProperty]) -> str:
        """Queue the start of transient UNIT; return systemd's job (NO_JOB: already up).

        Like systemd's StartUnit this returns once the job is queued; wait_job()
        tells how it ended (with Type=exec: once the runtime was exec'd).
        """
        for attempt in (1, 2):
            try:
                return await self.manager.start_transient_unit(unit, "fail", properties, [])
            except UnitExistsError:
                status = await self.status(unit)
                if status.active or attempt == 2:
                    return NO_JOB  # already running: starting is idempotent
                await self._reset_failed(unit)
            except SdBusBaseError as e:
                raise SystemError_(f"systemd refused to start {unit}: {_text(e)}") from None
        return NO_JOB

    async def _reset_failed(self, unit: str) -> None:
        with contextlib.suppress(SdBusBaseError):  # not loaded, or nothing to reset
            await self.manager.reset_failed_unit(unit)

    async def stop(self, unit: str, wait: bool = True) -> str:
        """Queue the stop of UNIT (a unit that is not loaded is fine: NO_JOB);
        with WAIT, return only once it is down."""
        try:
            job = await self.manager.stop_unit(unit, "replace")
        except NoSuchUnitError:
            return NO_JOB
        except SdBusBaseError as e:
            raise SystemError_(f"systemd refused to stop {unit}: {_text(e)}") from None
        if wait:
            result = await self.wait_job(job)
            if result not in ("done", "canceled"):
                raise SystemError_(f"stopping {unit} ended with job result {result}")
            await self._reset_failed(unit)
        return job

    async def status(self, unit: str) -> UnitStatus:
        try:
            path = await self.manager.get_unit(unit)
        except NoSuchUnitError:
            return UnitStatus()
        proxy = _ServiceUnit.new_proxy(SYSTEMD, path, self.bus)
        try:
            return UnitStatus(
                active_state=await proxy.active_state,
                sub_state=await proxy.sub_state,
                main_pid=await proxy.main_pid,
                memory_current=_counter(await proxy.memory_current),
                cpu_usage_nsec=_counter(await proxy.cpu_usage_nsec),
                tasks_current=_counter(await proxy.tasks_current),
            )
        except DbusFailedError:  # collected between the two calls
            return UnitStatus()

    async def usage(self, unit: str) -> UnitUsage:
        """What UNIT uses now, in one round trip (GetAll of its Service
        properties at its object path; UnitUsage() if it is not loaded)."""
        path = f"{SYSTEMD_PATH}/unit/{_escape(unit)}"
        proxy = _Service.new_proxy(SYSTEMD, path, self.bus)
        try:
            props = await proxy._properties_get_all(SERVICE_INTERFACE)
        except DbusFailedError:
            return UnitUsage()

        def value(key: str, default: object) -> object:
            return props.get(key, ("", default))[1]

        def counter(key: str) -> int | None:
            found = value(key, UNSET)
            return _counter(found) if isinstance(found, int) else None

        return UnitUsage(
            main_pid=int(str(value("MainPID", 0))),
            control_group=str(value("ControlGroup", "")),
            memory_current=counter("MemoryCurrent"),
            cpu_usage_nsec=counter("CPUUsageNSec"),
            tasks_current=counter("TasksCurrent"),
        )

    async def list_units(self, pattern: str) -> list[tuple[str, str]]:
        """(name, active_state) of loaded units matching PATTERN."""
        units = await self.manager.list_units_by_patterns([], [pattern])
        return [(u[0], u[3]) for u in units]
