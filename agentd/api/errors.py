"""D-Bus error classes under org.agentos.agentd1.Error.*, one per engine error.

Importing this module registers the names with sdbus in both directions: the
service's engine errors leave as typed D-Bus errors, and a client (agentctl)
gets the same classes back instead of a generic failure.
"""

from __future__ import annotations

from sdbus import DbusFailedError

from .. import errors

PREFIX = "org.agentos.agentd1.Error."


class AgentdDbusError(DbusFailedError):
    dbus_error_name = PREFIX + "Failed"


def _make(err: type[errors.AgentdError]) -> type[AgentdDbusError]:
    if err is errors.AgentdError:
        return AgentdDbusError
    return type(f"{err.name}Error", (AgentdDbusError,), {"dbus_error_name": PREFIX + err.name})


BY_ENGINE_ERROR: dict[type[errors.AgentdError], type[AgentdDbusError]] = {
    err: _make(err) for err in errors.ALL_ERRORS
}
BY_NAME: dict[str, type[AgentdDbusError]] = {
    cls.dbus_error_name: cls for cls in BY_ENGINE_ERROR.values()
}


def to_dbus(exc: errors.AgentdError) -> AgentdDbusError:
    cls = BY_ENGINE_ERROR.get(type(exc), AgentdDbusError)
    return cls(str(exc))


def short_name(exc: BaseException) -> str:
    """'NoSuchAgent' for org.agentos.agentd1.Error.NoSuchAgent, else the full name."""
    name = getattr(exc, "dbus_error_name", type(exc).__name__)
    return name.removeprefix(PREFIX)
