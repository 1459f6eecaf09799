"""Task vocabulary shared by the store, the engine and agentctl: one list each.

Dependency-free on purpose: agentctl imports it without pulling in the engine.
"""

from __future__ import annotations

PRIORITIES = ("low", "medium", "high", "critical")
FINAL = frozenset({"completed", "failed", "cancelled", "dead_lettered"})
STATUSES = ("pending", "in_progress", "blocked", *sorted(FINAL))
# What SubmitTask's spec and ListTasks' filter may hold (docs/dbus-api.md).
SPEC_KEYS = {"title", "description", "project", "needs", "priority", "after", "agent",
             "max_attempts", "exec"}
FILTER_KEYS = {"status", "project", "agent", "priority", "limit"}
