"""The org.agentos.agentd1 D-Bus interfaces: names, signatures, argument names.

Defined once, one module per interface, used by the service (agentd.api.manager,
.tasks, .runtime and .model override the methods) and by clients (agentctl
builds proxies from the same classes). The structs of list replies are the
NamedTuples of agentd.api.rows. Every method is flagged unprivileged so sd-bus
lets ordinary users and agents reach it; authorization happens in agentd, per
caller UID, deny by default (agentd.policy). The reference is docs/dbus-api.md.

Importing this package loads only the names (.common); the interface classes
load together on first use of any of them (PEP 562 ``__getattr__``). An
agent's runtime imports ``.runtime`` and ``.common`` alone: building the four
other classes costs each agent start ~2 ms of CPU (``python3 -X importtime``,
build machine, 2026-11-30) for interfaces it never calls.
tests/unit/test_runtime_imports.py keeps it so.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .common import (
    AGENT_INTERFACE,
    AGENT_PATH_PREFIX,
    BUS_NAME,
    MANAGER_INTERFACE,
    MODEL_INTERFACE,
    ROOT_PATH,
    RUNTIME_INTERFACE,
    TASKS_INTERFACE,
    agent_path,
)

if TYPE_CHECKING:
    from sdbus import DbusInterfaceCommonAsync

    from .agent import AgentInterface
    from .approvals import ApprovalsInterface
    from .goals import GoalsInterface
    from .manager import ManagerInterface
    from .memory import MemoryInterface
    from .model import ModelInterface
    from .observe import ObserveInterface
    from .runtime import RuntimeInterface
    from .sessions import SessionsInterface
    from .tasks import TasksInterface
    from .teams import MessagesInterface, TeamsInterface

    # Every interface agentd serves (the introspection files and the policy test walk it).
    INTERFACES: tuple[type[DbusInterfaceCommonAsync], ...]

# class name -> its module, in INTERFACES order
_CLASSES = {
    "ManagerInterface": "manager",
    "RuntimeInterface": "runtime",
    "TasksInterface": "tasks",
    "AgentInterface": "agent",
    "ModelInterface": "model",
    "ApprovalsInterface": "approvals",  # issue 12: approval gates
    "MemoryInterface": "memory",  # issue 13: memory and knowledge
    "SessionsInterface": "sessions",  # issue 13: chat sessions
    "GoalsInterface": "goals",  # issue 14: goals
    "TeamsInterface": "teams",  # issue 15: teams
    "MessagesInterface": "teams",  # issue 15: messages
    "ObserveInterface": "observe",  # issue 16: top, agent ps, metrics
}


def __getattr__(name: str) -> object:
    """The first use of any interface class (or INTERFACES) loads them all, so
    that ``vars()`` of this package lists every class from then on."""
    if name != "INTERFACES" and name not in _CLASSES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    loaded = {n: getattr(import_module(f".{m}", __name__), n) for n, m in _CLASSES.items()}
    globals().update(loaded, INTERFACES=tuple(loaded.values()))
    return globals()[name]


__all__ = [
    "AGENT_INTERFACE",
    "AGENT_PATH_PREFIX",
    "BUS_NAME",
    "INTERFACES",
    "MANAGER_INTERFACE",
    "MODEL_INTERFACE",
    "ROOT_PATH",
    "RUNTIME_INTERFACE",
    "TASKS_INTERFACE",
    "AgentInterface",
    "ApprovalsInterface",
    "GoalsInterface",
    "ManagerInterface",
    "MemoryInterface",
    "MessagesInterface",
    "ModelInterface",
    "ObserveInterface",
    "RuntimeInterface",
    "SessionsInterface",
    "TasksInterface",
    "TeamsInterface",
    "agent_path",
]
