"""agentd's Prometheus metrics: what they are, where each comes from, who sees which.

Gauges are read when asked (a scrape every 15 s or so), from the same places
the API answers from: the registry and unit counters (agentd.fleet), the
tasks, usage and approvals tables, the model service's show. Counters that no
table keeps (the claim latency histogram, audit rows appended by result, the
errors D-Bus calls were answered with) are counted in memory from agentd's
events since it started; Prometheus' rate() takes a restart's reset in stride.

Who sees what is agentd.policy's row filter for the action metrics.read: an
administrator (root, agentd-admin, a polkit grant) and the account
agentd-metrics (agentd.rules: the metrics unit's user, an administrator for
this one action) see the fleet; any other person sees the series of its own
agents and tasks and the model service's (as Model.Describe shows anyone),
and not the daemon-wide audit and error counters. docs/metrics.md lists every
family; tests/unit/test_metrics.py holds them to that list.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from . import __version__
from .events import AuditAppended, Events, TaskChanged
from .fleet import Fleet, user_name
from .policy import Caller, Policy, Role
from .promtext import Family, Histogram, render
from .store import Store
from .tasks.model import STATUSES

METRICS = "metrics.read"  # the policy action (agentd.rules)
# seconds from submit to first claim: a task claimed at once by a running agent
# takes a heartbeat or less; one that starts a stopped agent, a unit start
LATENCY_BOUNDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# systemd's ActiveState -> the state label (docs/metrics.md)
STATE_LABELS = {
    "active": "running",
    "activating": "starting",
    "reloading": "running",
    "deactivating": "stopping",
    "inactive": "stopped",
    "failed": "failed",
    "removing": "removing",
}
STATES = ("running", "starting", "stopping", "stopped", "failed", "removing")


class Counters:
    """What agentd counts from its events, since it started."""

    def __init__(self) -> None:
        self.claim_latency: dict[int, Histogram] = {}  # by the task's owner uid
        self.audit_rows: Counter[str] = Counter()  # by result
        self.errors: Counter[str] = Counter()  # D-Bus error replies, by short name

    def subscribe(self, events: Events) -> None:
        events.subscribe(TaskChanged, self.on_task)
        events.subscribe(AuditAppended, lambda e: self.audit_rows.update([e.entry.result]))

    def on_task(self, event: TaskChanged) -> None:
        task = event.task
        if event.event != "task.claimed" or task.attempts != 1 or task.started_at is None:
            return  # the first claim only: a retry's wait is backoff, not latency
        owner = self.claim_latency.setdefault(task.owner_uid, Histogram(LATENCY_BOUNDS))
        owner.observe(max(0.0, task.started_at - task.created_at))


class Metrics:
    def __init__(
        self,
        fleet: Fleet,
        store: Store,
        policy: Policy,
        counters: Counters,
        audit_head: Callable[[], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fleet = fleet
        self.store = store
        self.policy = policy
        self.counters = counters
        self.audit_head = audit_head
        self.clock = clock
        self.started = clock()

    async def text(self, caller: Caller) -> str:
        """The exposition text CALLER may read (Prometheus text format 0.0.4)."""
        self.policy.check(caller, METRICS)
        everyone = self.policy.role(caller, METRICS) is Role.ADMIN
        owner = None if everyone else caller.uid
        families = await self._agents(caller)
        families += self._tasks(owner)
        families += self._tokens(owner)
        families += self._model(await self.fleet.model())
        if everyone:
            families += self._daemon()
        return render(families)

    # -- agents ----------------------------------------------------------------------
    async def _agents(self, caller: Caller) -> list[Family]:
        agents = self.fleet.agents(caller, METRICS)
        usages = await self.fleet.usages(agents)
        by_state = Counter(STATE_LABELS.get(self.fleet.state_of(a), "stopped") for a in agents)
        states = Family("agentd_agents", "gauge", "Agents by the state of their unit.")
        for state in (*STATES, *sorted(set(by_state) - set(STATES))):
            states.add(by_state[state], state=state)
        online = Family(
            "agentd_agents_online", "gauge", "Agents whose runtime is registered and heartbeating."
        )
        online.add(sum(a.name in self.fleet.registry.online for a in agents))
        memory = Family("agentd_agent_memory_bytes", "gauge", "Memory of a running agent's unit.")
        cpu = Family(
            "agentd_agent_cpu_seconds_total",
            "counter",
            "CPU time used by a running agent's unit since it started.",
        )
        procs = Family(
            "agentd_agent_processes",
            "gauge",
            "Processes and threads in a running agent's unit (TasksCurrent).",
        )
        for a in sorted(agents, key=lambda a: a.name):
            u = usages.get(a.name)
            if u is None:
                continue
            labels = {"agent": a.name, "owner": user_name(a.owner_uid)}
            if u.memory_current is not None:
                memory.add(u.memory_current, **labels)
            if u.cpu_usage_nsec is not None:
                cpu.add(u.cpu_usage_nsec / 1e9, **labels)
            if u.tasks_current is not None:
                procs.add(u.tasks_current, **labels)
        return [states, online, memory, cpu, procs]

    # -- tasks -----------------------------------------------------------------------
    def _tasks(self, owner: int | None) -> list[Family]:
        mine, params = ("owner_uid = ?", (owner,)) if owner is not None else ("1", ())
        counts = {
            r["status"]: r["n"]
            for r in self.store.query(
                f"SELECT status, COUNT(*) AS n FROM tasks WHERE {mine} GROUP BY status", params
            )
        }
        tasks = Family("agentd_tasks", "gauge", "Tasks by status.")
        for status in STATUSES:
            tasks.add(counts.get(status, 0), status=status)
        ready = self.store.scalar(
            f"SELECT COUNT(*) FROM tasks WHERE status = 'pending' AND not_before <= ? AND {mine}",
            (self.clock(), *params),
        )
        depth = Family(
            "agentd_task_queue_depth",
            "gauge",
            "Pending tasks ready to be claimed (not waiting for a retry's backoff).",
        )
        depth.add(int(ready or 0))
        latency = Histogram(LATENCY_BOUNDS)
        for uid, histogram in self.counters.claim_latency.items():
            if owner is None or uid == owner:
                latency = latency.merge(histogram)
        claims = Family(
            "agentd_task_claim_latency_seconds",
            "histogram",
            "Seconds from a task's submission to its first claim by an agent "
            "(since agentd started).",
        )
        claims.add_histogram(latency)
        approvals = Family("agentd_approvals_pending", "gauge", "Approvals waiting for an answer.")
        approvals.add(
            int(
                self.store.scalar(
                    f"SELECT COUNT(*) FROM approvals WHERE status = 'pending' AND {mine}", params
                )
                or 0
            )
        )
        return [tasks, depth, claims, approvals]

    def _tokens(self, owner: int | None) -> list[Family]:
        mine, params = ("owner_uid = ?", (owner,)) if owner is not None else ("1", ())
        rows = self.store.query(
            "SELECT agent, owner_uid, kind, SUM(prompt_tokens) AS prompt,"
            f" SUM(completion_tokens) AS completion FROM usage WHERE {mine}"
            " GROUP BY agent, owner_uid, kind ORDER BY agent, owner_uid, kind",
            params,
        )
        tokens = Family(
            "agentd_tokens_total",
            "counter",
            "Model tokens used, by agent, owner, kind of call and type.",
        )
        for r in rows:
            labels = {"agent": r["agent"], "owner": user_name(r["owner_uid"]), "kind": r["kind"]}
            tokens.add(r["prompt"] or 0, **labels, type="prompt")
            tokens.add(r["completion"] or 0, **labels, type="completion")
        return [tokens]

    # -- the model service -------------------------------------------------------------
    @staticmethod
    def _model(model: Mapping[str, Any]) -> list[Family]:
        def number(key: str) -> float:
            value = model.get(key)
            return float(value) if isinstance(value, int | float) else 0.0

        up = Family(
            "agentd_model_up", "gauge", "1 if the model service answers with a model loaded."
        )
        up.add(1 if model.get("state") in ("loaded", "reloading") else 0)
        gauges = [
            ("agentd_model_queued_requests", "queued", "Requests waiting in the model's queue."),
            ("agentd_model_batch_sequences", "active", "Sequences decoded together now (batch)."),
            ("agentd_model_sequences", "sequences", "Sequences the model can decode at once."),
            (
                "agentd_model_tokens_per_second",
                "tokens_per_second",
                "Tokens generated per second, recently.",
            ),
        ]
        families = [up] + [Family(n, "gauge", h).add(number(k)) for n, k, h in gauges]
        counters = [
            ("agentd_model_requests_total", "requests_total", "Requests the model service served"),
            ("agentd_model_generated_tokens_total", "tokens_generated", "Tokens it generated"),
            ("agentd_model_prompt_tokens_total", "prompt_tokens", "Prompt tokens it read"),
        ]
        families += [
            Family(n, "counter", h + " (since it started).").add(number(k)) for n, k, h in counters
        ]
        return families

    # -- the daemon --------------------------------------------------------------------
    def _daemon(self) -> list[Family]:
        rows = Family("agentd_audit_rows", "gauge", "Rows in the audit log (its head's sequence).")
        rows.add(self.audit_head())
        appended = Family(
            "agentd_audit_appended_total",
            "counter",
            "Audit rows appended since agentd started, by result.",
        )
        for result, n in sorted(self.counters.audit_rows.items()):
            appended.add(n, result=result)
        errors = Family(
            "agentd_errors_total",
            "counter",
            "D-Bus calls answered with an error since agentd started, by error "
            "(Internal: a bug, see the journal).",
        )
        for name, n in sorted(self.counters.errors.items()):
            errors.add(n, error=name)
        info = Family("agentd_build_info", "gauge", "agentd's version.").add(1, version=__version__)
        started = Family("agentd_start_time_seconds", "gauge", "When agentd started (Unix time).")
        started.add(round(self.started, 3))
        return [rows, appended, errors, info, started]
