"""The org.agentos.agentd1 D-Bus interfaces: names, signatures, argument names.

Defined once, one module per interface, used by the service (agentd.api.manager,
.tasks, .runtime and .model override the methods) and by clients (agentctl
builds proxies from the same classes). The structs of list replies are the
NamedTuples of agentd.api.rows. Every method is flagged unprivileged so sd-bus
lets ordinary users and agents reach it; authorization happens in agentd, per
caller UID, deny by default (agentd.policy). The reference is docs/dbus-api.md.
"""

from __future__ import annotations

from .agent import AgentInterface
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
from .manager import ManagerInterface
from .model import ModelInterface
from .runtime import RuntimeInterface
from .tasks import TasksInterface

# Every interface agentd serves (the introspection files and the policy test walk it).
INTERFACES = (ManagerInterface, RuntimeInterface, TasksInterface, AgentInterface, ModelInterface)

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
    "ManagerInterface",
    "ModelInterface",
    "RuntimeInterface",
    "TasksInterface",
    "agent_path",
]
