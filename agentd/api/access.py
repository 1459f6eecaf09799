"""The bus layer's whole share of authorization: each method declares its action.

``@rule("agent.start")`` on a D-Bus method (0) first bounds every argument
(agentd.limits.ARGUMENTS for the action, or ``limits=`` given here): over a
bound is InvalidArgument naming the argument and its bound, never the value,
before anything else is asked or written; then it (1) resolves the caller's
credentials and refuses a caller whose refusal budget is spent
(LimitExceeded, agentd.policy.throttle), (2) asks polkit whether it grants the
action's polkit action, but only for a person agentd's own rules do not
already make an administrator, (3) has agentd.policy screen the action for
that caller (deny by default: an action without a rule fails at import; who
may create, and how fast) and (4) runs the method with the caller at hand
(``Callers.current``), (5) translating engine errors into D-Bus errors (the
one translation point). What a method may do with a given agent, task or
project is then decided by the same policy inside the engine, which has the
resource. Tests walk every method of every interface and fail if one has no
rule, or has a string, array or dict argument without a bound.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import os
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import replace
from typing import Any, Concatenate, NoReturn, ParamSpec, Protocol, TypeVar

from sdbus import DbusFailedError, SdBus, get_current_message

from ..errors import AgentdError, InvalidArgument
from ..limits import Bound, Violation, arguments
from ..policy import Caller, Policy
from ..rules import RULES
from ..store import Store
from .callers import BusDriver
from .errors import AgentdDbusError, to_dbus
from .marshal import Variant

T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger("agentd")
ACTION = "__agentd_action__"  # the attribute @rule leaves on a method
BOUNDS = "__agentd_bounds__"  # ... and the bounds of its arguments (limits.Arguments)
_current: contextvars.ContextVar[Caller] = contextvars.ContextVar("agentd_caller")


class PolkitCheck(Protocol):
    async def allowed(self, caller: Caller, action_id: str) -> bool: ...


class Callers:
    """Who is calling: the sender's credentials, asked of the bus driver.

    dbus-daemon reports the UID, groups and PID it saw when the peer connected
    (SO_PEERCRED), which the peer cannot forge. Unique names are never reused
    on a bus, so a bounded cache keyed by unique name is safe and saves a
    round trip per call. (polkit's answers are not cached: its
    auth_admin_keep has its own memory.)
    """

    def __init__(
        self,
        bus: SdBus | None,
        policy: Policy,
        polkit: PolkitCheck | None = None,
        size: int = 4096,
        store: Store | None = None,
    ) -> None:
        self.driver = (
            BusDriver.new_proxy("org.freedesktop.DBus", "/org/freedesktop/DBus", bus)
            if bus is not None
            else None
        )
        self.policy = policy
        self.polkit = polkit
        self.cache: OrderedDict[str, Caller] = OrderedDict()
        self.size = size
        self.store = store  # when a reply may go: after the commit of what it says
        self.failures: Counter[str] = Counter()  # error replies by name (agentd.metrics)

    async def credentials(self) -> Caller:
        sender = get_current_message().sender
        if sender is None:
            raise RuntimeError("method call without a sender")
        caller = self.cache.get(sender)
        if caller is None:
            assert self.driver is not None, "Callers without a bus knows no credentials"
            creds = await self.driver.get_connection_credentials(sender)
            caller = Caller(
                uid=_uint(creds["UnixUserID"]),
                gids=frozenset(_uints(creds.get("UnixGroupIDs", ("au", [])))),
                pid=_uint(creds.get("ProcessID", ("u", 0))),
                bus_name=sender,
            )
            self.cache[sender] = caller
            while len(self.cache) > self.size:
                self.cache.popitem(last=False)
        return caller

    async def authorize(self, action: str) -> Caller:
        """The caller, with polkit's grant for ACTION; PermissionDenied if the
        policy refuses ACTION to this caller whatever the resource (screen),
        LimitExceeded while the caller's refusal budget is spent (throttle)."""
        caller = await self.credentials()
        self.policy.throttle(caller)
        polkit_action = self.policy.needs_polkit(caller, action)
        if polkit_action and self.polkit and await self.polkit.allowed(caller, polkit_action):
            caller = replace(caller, admin_for=frozenset({polkit_action}))
        self.policy.screen(caller, action)
        return caller

    async def refuse_argument(self, action: str, violation: Violation) -> NoReturn:
        """An argument over its bound: audited with its length only (within the
        caller's refusal budget), then InvalidArgument; never the value itself."""
        caller = await self.credentials()
        self.policy.throttle(caller)
        self.policy.refuse(
            caller,
            action,
            InvalidArgument(violation.message()),
            argument=violation.argument,
            bound=violation.what,
            length=violation.found,
            limit=violation.limit,
        )

    async def current(self) -> Caller:
        """The caller of the method being served (as @rule resolved it)."""
        caller = _current.get(None)
        return caller if caller is not None else await self.credentials()


def _uint(variant: Variant) -> int:
    """The number in a u variant of the bus driver's credentials."""
    sig, value = variant
    if not isinstance(value, int):
        raise TypeError(f"bus driver credentials: {sig} where u was expected")
    return value


def _uints(variant: Variant) -> list[int]:
    """The numbers in an au variant of the bus driver's credentials."""
    sig, values = variant
    if not isinstance(values, list) or not all(isinstance(v, int) for v in values):
        raise TypeError(f"bus driver credentials: {sig} where au was expected")
    return values


class HasCallers(Protocol):
    callers: Callers


S = TypeVar("S", bound=HasCallers)
# A D-Bus method as @rule takes and returns it: a coroutine method of a HasCallers.
Method = Callable[Concatenate[S, P], Coroutine[Any, Any, T]]


def close_fds(value: object) -> None:
    """Close every Unix fd a caller slipped into a variant (``("h", fd)`` or
    ``("ah", [fd...])``): sdbus (0.14.3) gives a handler its own duplicate of
    each and never closes it, so 600 calls carrying one took agentd from 12 to
    612 open fds (of 1,024): anyone could fill the table. No agentd method takes
    an fd, so each one that arrives is closed at once, whatever the call."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple) and len(item) == 2 and item[0] in ("h", "ah"):
            fds = item[1] if isinstance(item[1], list) else [item[1]]
            for fd in fds:
                if isinstance(fd, int) and not isinstance(fd, bool) and fd > 2:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


# The agents' hot path: their writes join the event loop turn's group commit
# (agentd.store), one fsync for all of them; every reply still waits for its
# commit. Everything else commits on its own: the registry, for one, must have
# its intent on disk before it touches the system.
GROUPED = frozenset(
    {
        "runtime.register",
        "runtime.heartbeat",
        "task.claim",
        "task.completed",
        "task.failed",
        "task.blocked",
        "runtime.record_step",  # the agent loop: once per model step
        "runtime.ask_owner",
        "runtime.defer",
    }
)


async def _durably(store: Store | None, action: str, call: Awaitable[T]) -> T:
    """CALL's result, once what it wrote (and what it read) is committed."""
    if store is None:
        return await call
    with store.grouped() if action in GROUPED else contextlib.nullcontext():
        result = await call
        await store.settled()
    return result


def _count(callers: Callers, name: str) -> None:
    """One more error reply named NAME (Callers of tests may keep no count)."""
    failures = getattr(callers, "failures", None)
    if failures is not None:
        failures[name] += 1


def rule(
    action: str, limits: Mapping[str, Bound] | None = None
) -> Callable[[Method[S, P, T]], Method[S, P, T]]:
    """Declare that a D-Bus method performs ACTION (a key of agentd.policy.RULES);
    LIMITS: bounds of its arguments, over agentd.limits.ARGUMENTS[ACTION]."""
    if action not in RULES:
        raise ValueError(f"no policy rule for action {action!r}")

    def decorate(fn: Method[S, P, T]) -> Method[S, P, T]:
        names = list(inspect.signature(fn).parameters)[1:]  # after self
        bounds = arguments(action, names, limits)

        @functools.wraps(fn)
        async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
            close_fds((args, kwargs))  # no method takes one: sdbus hands us dups to close
            try:
                violation = bounds.check(args, kwargs)  # first: before anything is asked
                if violation is not None:
                    await self.callers.refuse_argument(action, violation)
                caller = await self.callers.authorize(action)
                token = _current.set(caller)
                try:
                    return await _durably(self.callers.store, action, fn(self, *args, **kwargs))
                finally:
                    _current.reset(token)
            except AgentdError as e:
                _count(self.callers, e.name)
                raise to_dbus(e) from None
            except DbusFailedError:
                raise
            except Exception:
                # A bug, not a caller's mistake: full detail to the journal, a typed
                # error without Python internals to the caller.
                log.exception("internal error in %s", fn.__name__)
                _count(self.callers, "Internal")
                raise AgentdDbusError(
                    f"internal error in agentd while serving {fn.__name__}; "
                    "see journalctl -u agentd"
                ) from None

        setattr(wrapper, ACTION, action)
        setattr(wrapper, BOUNDS, bounds)
        return wrapper

    return decorate
