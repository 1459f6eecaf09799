"""The Observe interface on /org/agentos/agentd1: the fleet at a glance (issue 16).

Reads only: a snapshot of the caller's agents for `agentctl top`, the
processes of one agent's unit for `agentctl agent ps`, one agent's journal
(`agentctl agent logs`, the Cockpit page), and Prometheus metrics
for the metrics unit (agentd-metrics@.service) and `agentctl metrics`. What a
caller sees is filtered as ListAgents filters (docs/dbus-api.md).
"""

from __future__ import annotations

from sdbus import DbusInterfaceCommonAsync, dbus_method_async

from .common import U

OBSERVE_INTERFACE = "org.agentos.agentd1.Observe"


class ObserveInterface(DbusInterfaceCommonAsync, interface_name=OBSERVE_INTERFACE):
    @dbus_method_async("", "s", flags=U, method_name="Fleet", result_args_names=("snapshot",))
    async def fleet(self) -> str:
        """JSON: {"at": unix time, "agents": [...], "model": {...}}: each agent the
        caller may list with its unit's state and counters (cpu_usage_nsec,
        memory_current, tasks_current), its current task and step, its tokens
        in the last minute and its pending approvals; the model service's
        queue, batch and tokens per second."""
        raise NotImplementedError

    @dbus_method_async(
        "s",
        "s",
        flags=U,
        method_name="ListProcesses",
        input_args_names=("name",),
        result_args_names=("processes",),
    )
    async def list_processes(self, name: str) -> str:
        """JSON list of the processes in agent NAME's unit (its owner or an admin):
        pid, ppid, uid, state, threads, rss_bytes, cpu_seconds, started_at,
        command. Empty if the agent is not running."""
        raise NotImplementedError

    @dbus_method_async(
        "ssuu",
        "ss",
        flags=U,
        method_name="ReadAgentJournal",
        input_args_names=("name", "cursor", "lines", "wait_ms"),
        result_args_names=("entries", "next_cursor"),
    )
    async def read_agent_journal(
        self, name: str, cursor: str, lines: int, wait_ms: int
    ) -> tuple[str, str]:
        """Agent NAME's journal (its owner or an admin), the lines `agentctl agent
        logs` shows: JSON list of {at, priority, identifier, pid, message}. With
        an empty CURSOR the last LINES (at most 500); else those after it, and
        if there are none yet, waits up to WAIT_MS (at most 20,000) for more.
        NEXT_CURSOR is where to ask from next."""
        raise NotImplementedError

    @dbus_method_async("", "s", flags=U, method_name="Metrics", result_args_names=("text",))
    async def metrics(self) -> str:
        """Prometheus text exposition (format 0.0.4) of what the caller may see:
        an administrator or the agentd-metrics account the fleet, a person its
        own agents and tasks (docs/metrics.md)."""
        raise NotImplementedError
