"""Names every interface module shares: the bus name, paths, interface names."""

from __future__ import annotations

from sdbus import DbusUnprivilegedFlag

BUS_NAME = "org.agentos.agentd1"
ROOT_PATH = "/org/agentos/agentd1"
AGENT_PATH_PREFIX = "/org/agentos/agentd1/agent"
U = DbusUnprivilegedFlag  # every method: authorization is agentd's, per caller UID
MANAGER_INTERFACE = "org.agentos.agentd1.Manager"
RUNTIME_INTERFACE = "org.agentos.agentd1.Runtime"
AGENT_INTERFACE = "org.agentos.agentd1.Agent"
TASKS_INTERFACE = "org.agentos.agentd1.Tasks"
MODEL_INTERFACE = "org.agentos.agentd1.Model"


def agent_path(name: str) -> str:
    """Object path of agent NAME; '-' is escaped as systemd does ('_2d')."""
    return f"{AGENT_PATH_PREFIX}/{name.replace('-', '_2d')}"
