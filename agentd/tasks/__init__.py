"""The task queue: agentd.tasks.queue.TaskQueue over the modules of this package.

Only the dependency-free vocabulary (agentd.tasks.model) is imported here, so that
`agentd.tasks` and `agentd.tasks.model` load without the engine (agentctl uses them).
"""

from .model import FILTER_KEYS, FINAL, PRIORITIES, SPEC_KEYS, STATUSES, TRANSITIONS

__all__ = ["FILTER_KEYS", "FINAL", "PRIORITIES", "SPEC_KEYS", "STATUSES", "TRANSITIONS"]
