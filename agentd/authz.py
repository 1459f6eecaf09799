"""Moved to agentd.policy; kept until the last importer moves (tasks)."""

from .policy import AGENTD, Caller, Role

__all__ = ["AGENTD", "Caller", "Role"]
