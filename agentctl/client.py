"""A thin asyncio client of agentd's D-Bus API, returning plain Python values.

Everything that knows about D-Bus lives here: the system bus, the proxies built
from the shared interface classes in agentd.api.interfaces, signal matches,
and the translation of D-Bus errors into one ClientError type: every call goes
through _call, the one translation point. What a value looks like on the wire
(a{sv}, the row types of agentd.api.rows) is agentctl.marshal's business; what
agentd pushes (signals for `task wait`, JSON-line streams) is collected by
agentctl.client_streams; the Memory, Sessions, Goals, Teams and Messages, and
Model calls are mixins (agentctl.client_memory, .client_sessions,
.client_goals, .client_teams, .client_model) given _call through the class.
The CLI (and its tests, which inject a fake with the same methods) never sees
sdbus nor a proxy; this is agentctl's only sdbus import.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
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
from agentd.api.interfaces import (
    BUS_NAME,
    ROOT_PATH,
    ManagerInterface,
    ModelInterface,
    TasksInterface,
)
from agentd.api.interfaces.approvals import ApprovalsInterface
from agentd.api.interfaces.goals import GoalsInterface
from agentd.api.interfaces.manager import REMOVE_FORCE
from agentd.api.interfaces.memory import MemoryInterface
from agentd.api.interfaces.observe import ObserveInterface
from agentd.api.interfaces.sessions import SessionsInterface
from agentd.api.interfaces.teams import MessagesInterface, TeamsInterface

from . import marshal
from .client_goals import GoalCalls
from .client_memory import MemoryCalls
from .client_model import ModelCalls
from .client_observe import ObserveCalls
from .client_sessions import SessionCalls
from .client_streams import TaskWatch, json_lines
from .client_teams import TeamCalls
from .marshal import TASK_FILTER, TASK_SPEC, limit_variants, unwrap, variants

T = TypeVar("T")

AUDIT_APPENDED = ManagerInterface.audit_appended  # the signal, for its interface/member names
JOB_REMOVED = ManagerInterface.job_removed
TASK_CHANGED = TasksInterface.task_changed
NOT_RUNNING = "agentd is not running (start it with: systemctl start agentd)"
PAGE = 1000  # audit rows per ListEvents call while following; agentd caps at 10000
# A removal ends when agentd's bounded helper does (agentd.homes.HomeLimits: at most
# 30 min archiving, 30 deleting): wait for it, as systemctl waits for a job.
REMOVE_TIMEOUT_USEC = 65 * 60 * 10**6
DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
# agentd is up but cannot serve this: no (embedding) model, no memory database
UNAVAILABLE = {"ModelUnavailable", "NoEmbeddingModel", "MemoryUnavailable"}


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
        activation = name.startswith(
            ("org.freedesktop.DBus.Error.Spawn.", "org.freedesktop.systemd1.")
        )
        kind = "unavailable" if activation or name.removeprefix(PREFIX) in UNAVAILABLE else "failed"
        return ClientError(_one_line(message) or name, name.removeprefix(PREFIX), kind)
    if isinstance(exc, SdBusLibraryError | DbusDisconnectedError):
        return ClientError(f"D-Bus failure: {_library_message(exc)}", kind="unavailable")
    name = short_name(exc)
    denied = name == "PermissionDenied" or isinstance(exc, DbusAccessDeniedError)
    kind = "denied" if denied else "unavailable" if name in UNAVAILABLE else "failed"
    return ClientError(_one_line(str(exc)) or name, name, kind)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _library_message(exc: BaseException) -> str:
    """sdbus reports libsystemd failures as 'File: ... returned error number: 2'."""
    m = re.search(r"error number: (\d+)", str(exc))
    return os.strerror(int(m.group(1))) if m else _one_line(str(exc))


# sdbus sends a service's uncaught Python exception as org.python.Error.NAME and raises
# the builtin class again on this side; those are agentd's failures, not ours.
_REMOTE_PYTHON_ERRORS = tuple(
    {
        cls
        for name, cls in DBUS_ERROR_TO_EXCEPTION.items()
        if name.startswith("org.python.Error.") and isinstance(cls, type)
    }
)


async def _call(call: Awaitable[T]) -> T:
    """Await one D-Bus call or property read, translating its failure to ClientError."""
    try:
        return await call
    except SdBusBaseError as e:
        raise translate(e) from None
    except _REMOTE_PYTHON_ERRORS as e:
        raise ClientError(
            f"internal error in agentd: {_one_line(str(e)) or '?'}", type(e).__name__
        ) from None


def _json(text: str, shape: type[T], method: str) -> T:
    """The JSON text METHOD answered, which must be a SHAPE; else a ClientError."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, shape):
        raise ClientError(f"agentd's {method} answered malformed JSON: {text[:60]!r}", method)
    return value


class AgentdClient(MemoryCalls, SessionCalls, GoalCalls, TeamCalls, ModelCalls, ObserveCalls):
    """One connection to agentd on the system bus."""

    _translated = staticmethod(_call)  # the mixins' way to the one translation point
    _reply = staticmethod(_json)
    _stream = staticmethod(lambda fd: _json_stream(fd))  # defined below
    _goal_signals = (GoalsInterface.goal_changed, TasksInterface.task_changed)

    def __init__(self, bus: sdbus.SdBus) -> None:
        self.bus = bus
        self.manager = ManagerInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
        self.tasks = TasksInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
        self.model = ModelInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
        self.approvals = ApprovalsInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
        self.memory = MemoryInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
        self.sessions = SessionsInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
        self.goals = GoalsInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
        self.teams = TeamsInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
        self.messages = MessagesInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
        self.observe = ObserveInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)

    @classmethod
    def connect(cls) -> AgentdClient:
        """Open the system bus ($DBUS_SYSTEM_BUS_ADDRESS is honoured, as by busctl)."""
        try:
            return cls(sdbus.sd_bus_open_system())
        except SdBusBaseError as e:
            raise ClientError(
                f"cannot connect to the system bus: {_library_message(e)}", kind="unavailable"
            ) from None

    async def _match(self, signal: Any, callback: Callable[[Any], None]) -> Any:
        """Subscribe CALLBACK to one of agentd's signals; returns the slot to close."""
        return await _call(
            self.bus.match_signal_async(
                BUS_NAME, ROOT_PATH, signal.interface_name, signal.signal_name, callback
            )
        )

    async def _match_owner_changed(self, callback: Callable[[Any], None]) -> Any:
        """Subscribe CALLBACK to the bus's NameOwnerChanged (agentd leaving or coming)."""
        return await _call(self.bus.match_signal_async(*DBUS, "NameOwnerChanged", callback))

    # -- agents ---------------------------------------------------------------------
    async def create_agent(
        self, name: str, template: str, limits: Mapping[str, int | str] | None = None
    ) -> str:
        """Create agent NAME; returns its object path."""
        return await _call(self.manager.create_agent(name, template, limit_variants(limits or {})))

    async def get_agent(self, name: str) -> str:
        return await _call(self.manager.get_agent(name))

    async def list_agents(self) -> list[dict[str, Any]]:
        return marshal.agents(await _call(self.manager.list_agents()))

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
            await self._match(JOB_REMOVED, on_signal),
            await self._match_owner_changed(on_owner),
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
                raise ClientError(
                    f"agentd restarted while {name}'s job {job} was running; "
                    f"see: agentctl agent show {name}",
                    "JobLost",
                )
            return ended[job]
        except TimeoutError:
            raise ClientError(f"timed out after {timeout:.0f}s waiting for {job}") from None
        finally:
            for slot in slots:
                slot.close()

    async def remove_agent(self, name: str, keep_home: bool = False) -> None:
        with self._patience(REMOVE_TIMEOUT_USEC):
            await _call(self.manager.remove_agent(name, keep_home))

    async def force_remove_agent(self, name: str) -> None:
        """RemoveAgentWithFlags(name, REMOVE_FORCE): administrators finish a removal."""
        with self._patience(REMOVE_TIMEOUT_USEC):
            await _call(self.manager.remove_agent_with_flags(name, REMOVE_FORCE))

    @contextlib.contextmanager
    def _patience(self, usec: int) -> Iterator[None]:
        """Wait up to USEC for the replies of calls made meanwhile (sd-bus: 25 s)."""
        before = self.bus.method_call_timeout_usec
        self.bus.method_call_timeout_usec = usec
        try:
            yield
        finally:
            self.bus.method_call_timeout_usec = before

    # -- templates ------------------------------------------------------------------
    async def list_templates(self) -> list[dict[str, Any]]:
        return marshal.templates(await _call(self.manager.list_templates()))

    async def describe_template(self, name: str) -> dict[str, Any]:
        return unwrap(await _call(self.manager.describe_template(name)))

    # -- audit and events -----------------------------------------------------------
    async def list_events(
        self, after_seq: int = 0, limit: int = PAGE, types: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        """Up to LIMIT audit entries with seq > AFTER_SEQ that the caller may see and
        whose action matches one of the shell-style globs TYPES (every entry if none),
        oldest first; agentd does the filtering."""
        return marshal.audit_entries(
            await _call(self.manager.list_events(after_seq, limit, list(types)))
        )

    async def audit_head(self) -> int:
        """Sequence number of the newest audit row."""
        return int(await _call(self.manager.audit_head.get_async()))

    async def verify_audit(self) -> dict[str, Any]:
        ok, checked, message = await _call(self.manager.verify_audit())
        return {"ok": ok, "checked": checked, "message": message}

    async def follow_events(
        self, after_seq: int = 0, types: Iterable[str] = ()
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield every entry list_events(AFTER_SEQ, ..., TYPES) gives, then new ones as
        agentd announces them (AuditAppended), until the caller stops.

        The match is registered before the first fetch, so nothing appended in between
        is lost; bursts of signals coalesce into one fetch. Each round first reads
        AuditHead: once a round has read everything, the next one starts after that
        head, so rows the caller may not see or TYPES leaves out are not read again.
        """
        types = list(types)
        wake = asyncio.Event()
        slot = await self._match(AUDIT_APPENDED, lambda _msg: wake.set())
        try:
            while True:
                wake.clear()
                head = await self.audit_head()
                while True:
                    batch = await self.list_events(after_seq, PAGE, types)
                    for entry in batch:
                        after_seq = max(after_seq, entry["seq"])
                        yield entry
                    if len(batch) < PAGE:
                        break
                after_seq = max(after_seq, head)
                await wake.wait()
        finally:
            slot.close()

    # -- projects -------------------------------------------------------------------
    async def create_project(self, name: str, description: str = "") -> None:
        await _call(self.tasks.create_project(name, description))

    async def list_projects(self) -> list[dict[str, Any]]:
        return marshal.projects(await _call(self.tasks.list_projects()))

    async def describe_project(self, name: str) -> dict[str, Any]:
        return unwrap(await _call(self.tasks.describe_project(name)))

    async def remove_project(self, name: str) -> None:
        await _call(self.tasks.remove_project(name))

    # -- tasks ----------------------------------------------------------------------
    async def submit_task(self, spec: Mapping[str, Any]) -> int:
        """Submit a task (keys of TASK_SPEC; None values are left out); returns its id."""
        return int(await _call(self.tasks.submit_task(variants(spec, TASK_SPEC, "task"))))

    async def list_tasks(self, filter: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Tasks the caller may see, narrowed by FILTER (keys of TASK_FILTER)."""
        flt = variants(filter or {}, TASK_FILTER, "filter")
        return marshal.tasks(await _call(self.tasks.list_tasks(flt)))

    async def describe_task(self, task: int) -> dict[str, Any]:
        return unwrap(await _call(self.tasks.describe_task(task)))

    async def list_task_events(self, task: int) -> list[dict[str, Any]]:
        """TASK's history, oldest first: its rows of the audit trail."""
        return marshal.task_events(await _call(self.tasks.list_task_events(task)))

    async def list_artifacts(self, task: int) -> list[dict[str, Any]]:
        return marshal.artifacts(await _call(self.tasks.list_artifacts(task)))

    async def read_artifact(self, task: int, name: str) -> bytes:
        return bytes(await _call(self.tasks.read_artifact(task, name)))

    async def cancel_task(self, task: int) -> None:
        await _call(self.tasks.cancel_task(task))

    async def retry_task(self, task: int) -> None:
        await _call(self.tasks.retry_task(task))

    async def unblock_task(self, task: int, note: str) -> None:
        await _call(self.tasks.unblock_task(task, note))

    async def reply_task(self, task: int, text: str) -> None:
        """Answer what blocked TASK asks (ask_owner); it runs again with the reply."""
        await _call(self.tasks.reply_task(task, text))

    async def list_task_steps(self, task: int) -> list[dict[str, Any]]:
        """TASK's trace: the steps its agent recorded, oldest first (agentd's JSON)."""
        steps = _json(await _call(self.tasks.list_task_steps(task)), list, "ListTaskSteps")
        return [s for s in steps if isinstance(s, dict)]

    @contextlib.asynccontextmanager
    async def watch_tasks(self) -> AsyncIterator[TaskWatch]:
        """Collect TaskChanged signals (and agentd restarts) while the block runs.

        Enter it before the first DescribeTask of a wait, as systemctl subscribes
        before it asks: then no change can fall between the answer and the match.
        """
        watch = TaskWatch()
        slots = [
            await self._match(TASK_CHANGED, watch.on_task_changed),
            await self._match_owner_changed(watch.on_owner_changed),
        ]
        try:
            yield watch
        finally:
            for slot in slots:
                slot.close()

    # -- approvals (issue 12): what agents ask their owners to let them do ----------
    async def list_approvals(self) -> list[dict[str, Any]]:
        """The approvals the caller may answer (an administrator: all), as GetApproval's."""
        items = _json(await _call(self.approvals.list_approvals()), list, "ListApprovals")
        return [a for a in items if isinstance(a, dict)]

    async def get_approval(self, approval: int) -> dict[str, Any]:
        return _json(await _call(self.approvals.get_approval(approval)), dict, "GetApproval")

    async def grant_approval(self, approval: int, always: bool = False) -> dict[str, Any]:
        """Let the agent run APPROVAL's action once (ALWAYS: and allow its shell
        commands from now on); returns the approval after the change."""
        reply = await _call(self.approvals.grant_approval(approval, always))
        return _json(reply, dict, "GrantApproval")

    async def deny_approval(self, approval: int, reason: str = "") -> dict[str, Any]:
        """Refuse APPROVAL's action, REASON going to the agent's model; returns it."""
        reply = await _call(self.approvals.deny_approval(approval, reason))
        return _json(reply, dict, "DenyApproval")

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


async def _json_stream(fd: int) -> AsyncIterator[dict[str, Any]]:
    """The events of a stream agentd handed over (chat, model reload) up to done;
    an error line, or an end before done, becomes a ClientError."""
    async with contextlib.aclosing(json_lines(fd)) as events:
        async for event in events:
            if event.get("event") == "error":
                name = str(event.get("error", ""))
                kind = "unavailable" if name == "ModelUnavailable" else "failed"
                raise ClientError(str(event.get("message", name)), name, kind)
            yield event
            if event.get("event") == "done":
                return
    raise ClientError("agentd closed the stream before it ended", kind="unavailable")
