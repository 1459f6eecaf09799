"""The scheduler's pass is O(work), not O(agents) (issue 11): what it reads does
not grow with the agents registered or the tasks queued behind the ones it
places, and no statement it runs walks the tasks or agents tables or the
pending queue.

Every statement a pass runs is captured with apsw's exec tracer and explained
(EXPLAIN QUERY PLAN): a "SCAN tasks" or "SCAN agents" would read the whole
table, a search of tasks_queue by status the whole pending queue. The rows
handed back to Python are counted with the row tracer.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from world import ALICE, BOB, World

from agentd.tasks.queue import TaskQueue


class Pass:
    """One Router.assign() pass, traced: its statements and the rows they returned."""

    def __init__(self, w: World, q: TaskQueue) -> None:
        self.w, self.q = w, q
        self.statements: list[tuple[str, Any]] = []
        self.rows = 0

    def run(self) -> set[str]:
        db = self.w.store.db

        def on_exec(_cursor: Any, sql: str, bindings: Any) -> bool:
            self.statements.append((sql, bindings))
            return True

        def on_row(_cursor: Any, row: Any) -> Any:
            self.rows += 1
            return row

        db.setexectrace(on_exec)
        db.setrowtrace(on_row)
        try:
            return self.q.assign(time.time())
        finally:
            db.setexectrace(None)
            db.setrowtrace(None)

    def unbounded_reads(self) -> list[str]:
        """The plan lines of the pass's reads that may walk rows no question is
        about: a SCAN of tasks or agents, or a SEARCH of tasks that neither
        seeks one agent, owner or task nor reads a migration-9 index (which
        hold only the rows asked about)."""
        found = []
        for sql, bindings in self.statements:
            if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            plan = self.w.store.db.cursor().execute(f"EXPLAIN QUERY PLAN {sql}", bindings)
            found += [f"{detail}  <- {sql[:80]}" for *_ids, detail in plan if _unbounded(detail)]
        return found


SMALL_INDEXES = (
    "tasks_waiting",
    "tasks_open",
    "tasks_owner_unplaced",
    "tasks_pinned_unplaced",
    "tasks_unresolved",
)
SEEKS = ("agent_id=?", "owner_uid=?", "rowid=?", "(id=?")


def _unbounded(detail: str) -> bool:
    if detail.startswith("SCAN") and (" tasks" in detail or " agents" in detail):
        return True
    if detail.startswith("SEARCH tasks"):
        return not any(i in detail for i in SMALL_INDEXES) and not any(k in detail for k in SEEKS)
    return False


def world_with(tmp_path: Path, agents: int, queued: int) -> tuple[World, TaskQueue]:
    """AGENTS idle agents of bob's, one agent of alice's with QUEUED tasks for it."""
    w = World(
        tmp_path,
        max_agents_per_owner=1000,
        owner_memory_max=0,
        owner_cpu_quota_max=0,
        owner_tasks_max=0,
    )
    q = TaskQueue(w.store, w.reg)

    async def make() -> None:
        await w.reg.create(ALICE, "worker", "sandbox")
        for i in range(agents):
            await w.reg.create(BOB, f"idle{i}", "sandbox")

    asyncio.run(make())
    for i in range(queued):
        q.submit(ALICE, {"title": f"t{i}"})
    return w, q


def traced_pass(tmp_path: Path, agents: int, queued: int) -> Pass:
    w, q = world_with(tmp_path, agents, queued)
    q.assign(time.time())  # the first pass places what fits the worker's wip
    p = Pass(w, q)
    assert p.run() == {"worker"}
    return p


def test_a_pass_reads_the_same_with_3_or_300_agents_and_10_or_400_tasks(
    tmp_path: Path,
) -> None:
    small = traced_pass(tmp_path / "small", agents=3, queued=10)
    large = traced_pass(tmp_path / "large", agents=300, queued=400)
    assert len(large.statements) == len(small.statements), (small.statements, large.statements)
    assert large.rows == small.rows, (small.rows, large.rows)


def test_no_statement_of_a_pass_walks_the_tasks_or_agents_table(tmp_path: Path) -> None:
    p = traced_pass(tmp_path, agents=20, queued=50)
    assert p.statements  # the trace works: a pass runs queries
    assert p.unbounded_reads() == []


def test_a_pass_with_room_places_work_and_still_reads_only_its_agents(tmp_path: Path) -> None:
    """Unplaced work of one owner: only that owner's agents are read."""
    w, q = world_with(tmp_path / "w", agents=50, queued=0)
    tid = q.submit(ALICE, {"title": "one"}).id
    p = Pass(w, q)
    assert p.run() == {"worker"}
    assert q.find(tid).agent == "worker"
    assert p.unbounded_reads() == []
    # The rows read: the task and the worker, not bob's 50 agents.
    assert p.rows < 20, p.rows
