"""A thin asyncio client of agentd's D-Bus API, returning plain Python values.

Everything that knows about D-Bus lives here: the system bus, the proxies built
from the shared interface classes in agentd.api.interfaces, variant unwrapping,
and the translation of D-Bus errors into one ClientError type. The CLI (and its
tests, which inject a fake with the same methods) never sees sdbus.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, TypeVar

import sdbus
from sdbus.dbus_exceptions import (
    DbusAccessDeniedError,
    DbusDisconnectedError,
    DbusNameHasNoOwnerError,
    DbusServiceUnknownError,
)
from sdbus.sd_bus_internals import (
    DBUS_ERROR_TO_EXCEPTION,
    SdBusBaseError,
    SdBusLibraryError,
    SdBusUnmappedMessageError,
)

# Imported for its side effect too: it registers org.agentos.agentd1.Error.* with
# sdbus, so failed calls raise the typed classes instead of a generic error.
from agentd.api.errors import PREFIX, short_name
from agentd.api.interfaces import BUS_NAME, ROOT_PATH, ManagerInterface

T = TypeVar("T")

AUDIT_APPENDED = ManagerInterface.audit_appended  # the signal, for its interface/member names
JOB_REMOVED = ManagerInterface.job_removed
NOT_RUNNING = "agentd is not running (start it with: systemctl start agentd)"
PAGE = 1000  # audit rows per ListAuditEntries call; agentd caps at 10000


class ClientError(Exception):
    """A failed call, reduced to what a person needs: a message, a name and a kind.

    kind is "denied" (the caller may not do this), "unavailable" (agentd or the
    bus cannot be reached) or "failed" (anything else), so the CLI can choose
    an exit status without knowing D-Bus error names.
    """

    def __init__(self, message: str, name: str = "", kind: str = "failed") -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.kind = kind


def translate(exc: BaseException) -> ClientError:
    """Map an sdbus exception to a ClientError with a one-line message."""
    if isinstance(exc, ClientError):
        return exc
    if isinstance(exc, DbusServiceUnknownError | DbusNameHasNoOwnerError):
        return ClientError(NOT_RUNNING, kind="unavailable")
    if isinstance(exc, SdBusUnmappedMessageError):
        # sdbus passes (error name, message) for names nobody registered
        args = [str(a) for a in exc.args]
        name = args[0] if len(args) > 1 else ""
        message = args[-1] if args else ""
        # Spawn.* and systemd1.* come from D-Bus activation of agentd.service failing
        activation = name.startswith(("org.freedesktop.DBus.Error.Spawn.",
                                      "org.freedesktop.systemd1."))
        kind = "unavailable" if activation else "failed"
        return ClientError(_one_line(message) or name, name.removeprefix(PREFIX), kind)
    if isinstance(exc, SdBusLibraryError | DbusDisconnectedError):
        return ClientError(f"D-Bus failure: {_library_message(exc)}", kind="unavailable")
    name = short_name(exc)
    denied = name == "PermissionDenied" or isinstance(exc, DbusAccessDeniedError)
    return ClientError(_one_line(str(exc)) or name, name, "denied" if denied else "failed")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _library_message(exc: BaseException) -> str:
    """sdbus reports libsystemd failures as 'File: ... returned error number: 2'."""
    m = re.search(r"error number: (\d+)", str(exc))
    return os.strerror(int(m.group(1))) if m else _one_line(str(exc))


# sdbus sends a service's uncaught Python exception as org.python.Error.NAME and raises
# the builtin class again on this side; those are agentd's failures, not ours.
_REMOTE_PYTHON_ERRORS = tuple({
    cls for name, cls in DBUS_ERROR_TO_EXCEPTION.items()
    if name.startswith("org.python.Error.") and isinstance(cls, type)
})


async def _call(call: Awaitable[T]) -> T:
    """Await one D-Bus call or property read, translating its failure to ClientError."""
    try:
        return await call
    except SdBusBaseError as e:
        raise translate(e) from None
    except _REMOTE_PYTHON_ERRORS as e:
        raise ClientError(f"internal error in agentd: {_one_line(str(e)) or '?'}",
                          type(e).__name__) from None


def unwrap(info: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    """a{sv} as sdbus returns it ({key: (signature, value)}) -> {key: value}."""
    out: dict[str, Any] = {}
    for key, (sig, value) in info.items():
        out[key] = unwrap(value) if sig == "a{sv}" else value
    return out


def _limit_variants(limits: Mapping[str, int | str]) -> dict[str, tuple[str, Any]]:
    """The a{sv} CreateAgent expects: memory_max t (or s, a size), cpu_quota u, tasks_max t."""
    sigs = {"memory_max": "t", "cpu_quota": "u", "tasks_max": "t"}
    out: dict[str, tuple[str, Any]] = {}
    for key, value in limits.items():
        out[key] = ("s", value) if isinstance(value, str) else (sigs.get(key, "t"), int(value))
    return out


def _audit_entry(row: tuple) -> dict[str, Any]:
    """A ListAuditEntries row as a dict; "" and 0 stand for "no agent" on the bus."""
    seq, ts, actor_uid, action, agent, agent_uid, result, detail_json, digest = row
    try:
        detail: Any = json.loads(detail_json) if detail_json else {}
    except ValueError:
        detail = detail_json
    return {
        "seq": seq, "ts": ts, "actor_uid": actor_uid, "action": action,
        "agent": agent or None, "agent_uid": agent_uid if agent else None,
        "result": result, "detail": detail, "hash": digest,
    }


class AgentdClient:
    """One connection to agentd on the system bus."""

    def __init__(self, bus: sdbus.SdBus) -> None:
        self.bus = bus
        self.manager = ManagerInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)

    @classmethod
    def connect(cls) -> AgentdClient:
        """Open the system bus ($DBUS_SYSTEM_BUS_ADDRESS is honoured, as by busctl)."""
        try:
            return cls(sdbus.sd_bus_open_system())
        except SdBusBaseError as e:
            raise ClientError(f"cannot connect to the system bus: {_library_message(e)}",
                              kind="unavailable") from None

    # -- agents ---------------------------------------------------------------------
    async def create_agent(self, name: str, template: str,
                           limits: Mapping[str, int | str] | None = None) -> str:
        """Create agent NAME; returns its object path."""
        return await _call(self.manager.create_agent(name, template, _limit_variants(limits or {})))

    async def get_agent(self, name: str) -> str:
        return await _call(self.manager.get_agent(name))

    async def list_agents(self) -> list[dict[str, Any]]:
        rows = await _call(self.manager.list_agents())
        return [
            {"name": name, "template": template, "state": state, "uid": uid,
             "owner_uid": owner_uid, "path": path}
            for name, template, state, uid, owner_uid, path in rows
        ]

    async def describe_agent(self, name: str) -> dict[str, Any]:
        return unwrap(await _call(self.manager.describe_agent(name)))

    async def start_agent(self, name: str, wait: bool = True) -> str:
        """Start NAME's unit; with WAIT, until systemd's job ends. Returns the result
        ("done", "failed", ...), or "queued" without WAIT."""
        return await self._job(self.manager.start_agent, name, wait)

    async def stop_agent(self, name: str, wait: bool = True) -> str:
        """Stop NAME's unit; with WAIT, until it is down. Returns the job's result."""
        return await self._job(self.manager.stop_agent, name, wait)

    async def _job(self, method: Any, name: str, wait: bool, timeout: float = 120) -> str:
        """Call METHOD, then wait for JobRemoved of the job it returns, as systemctl
        does: the match is in place before the call, so no ending is missed."""
        if not wait:
            await _call(method(name))
            return "queued"
        ended: dict[str, str] = {}
        arrived = asyncio.Event()
        restarted: list[bool] = []

        def on_signal(msg: Any) -> None:
            _name, job, _op, result = msg.get_contents()
            ended[job] = result
            arrived.set()

        def on_owner(msg: Any) -> None:
            bus_name, old, _new = msg.get_contents()
            if bus_name == BUS_NAME and old:  # agentd went away: its signal never comes
                restarted.append(True)
                arrived.set()

        slots = [
            await _call(self.bus.match_signal_async(
                BUS_NAME, ROOT_PATH, JOB_REMOVED.interface_name, JOB_REMOVED.signal_name,
                on_signal)),
            await _call(self.bus.match_signal_async(
                "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                "NameOwnerChanged", on_owner)),
        ]
        job = ""
        try:
            job = await _call(method(name))
            if job == "/":
                return "done"  # nothing to do: already in the wanted state
            async with asyncio.timeout(timeout):
                while job not in ended and not restarted:
                    arrived.clear()
                    await arrived.wait()
            if job not in ended:
                raise ClientError(f"agentd restarted while {name}'s job {job} was running; "
                                  f"see: agentctl agent show {name}", "JobLost")
            return ended[job]
        except TimeoutError:
            raise ClientError(f"timed out after {timeout:.0f}s waiting for {job}") from None
        finally:
            for slot in slots:
                slot.close()

    async def remove_agent(self, name: str, keep_home: bool = False) -> None:
        await _call(self.manager.remove_agent(name, keep_home))

    # -- templates ------------------------------------------------------------------
    async def list_templates(self) -> list[dict[str, Any]]:
        # row order as agentd.api.service sends it: name, description, profile, capabilities
        rows = await _call(self.manager.list_templates())
        return [
            {"name": name, "description": description, "profile": profile,
             "capabilities": list(capabilities)}
            for name, description, profile, capabilities in rows
        ]

    async def describe_template(self, name: str) -> dict[str, Any]:
        return unwrap(await _call(self.manager.describe_template(name)))

    # -- audit ----------------------------------------------------------------------
    async def list_audit_entries(self, after_seq: int = 0, limit: int = PAGE
                                 ) -> list[dict[str, Any]]:
        """Up to LIMIT entries with seq > AFTER_SEQ that the caller may see, oldest first."""
        return [_audit_entry(row) for row in
                await _call(self.manager.list_audit_entries(after_seq, limit))]

    async def audit_head(self) -> int:
        """Sequence number of the newest audit row."""
        return int(await _call(self.manager.audit_head.get_async()))

    async def verify_audit(self) -> dict[str, Any]:
        ok, checked, message = await _call(self.manager.verify_audit())
        return {"ok": ok, "checked": checked, "message": message}

    async def follow_audit(self, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Yield every entry with seq > AFTER_SEQ, then new ones as agentd announces them.

        The AuditAppended match is registered before the first fetch, so nothing
        appended in between is lost; bursts of signals coalesce into one fetch.
        """
        wake = asyncio.Event()
        slot = await _call(self.bus.match_signal_async(
            BUS_NAME, ROOT_PATH, AUDIT_APPENDED.interface_name, AUDIT_APPENDED.signal_name,
            lambda _msg: wake.set()))
        try:
            while True:
                wake.clear()
                while True:
                    batch = await self.list_audit_entries(after_seq, PAGE)
                    for entry in batch:
                        after_seq = max(after_seq, entry["seq"])
                        yield entry
                    if len(batch) < PAGE:
                        break
                await wake.wait()
        finally:
            slot.close()

    # -- daemon ---------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """Version, StartTimestamp (usec since the epoch), NAgents, NOnline, Config."""
        m = self.manager
        return {
            "version": await _call(m.version),
            "start_timestamp": await _call(m.start_timestamp),
            "n_agents": await _call(m.n_agents),
            "n_online": await _call(m.n_online),
            "config": dict(await _call(m.config)),
        }
