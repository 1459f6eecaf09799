#!/usr/bin/python3
"""The scheduler's pass against the agents registered (issue 11: O(work), not
O(agents)).

In-process, no bus and no machine: agentd's engine over tests/unit/fakes.py on
a store in /tmp. One owner's agent holds its wip of assigned tasks with more
queued behind them; another owner has N idle agents. The pass (Router.assign,
what the scheduler runs on every task change, at most 20 times a second) is
timed at N = 10 (the baseline, same process) and at N = --agents, and the
statements it runs are counted with apsw's exec tracer.

    PYTHONPATH=build/vendor:tests/unit /usr/bin/python3 bench/scheduler.py [--agents 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "unit")]

from fakes import FakeAccounts, FakeHomes, FakeUnits  # noqa: E402

from agentd.audit import AuditLog  # noqa: E402
from agentd.config import Config  # noqa: E402
from agentd.policy import Caller  # noqa: E402
from agentd.registry import Registry  # noqa: E402
from agentd.store import Store  # noqa: E402
from agentd.tasks.queue import TaskQueue  # noqa: E402
from agentd.templates import Catalog  # noqa: E402

PASSES = 300
QUEUED = 2000


async def measure(idle: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config(
            state_dir=Path(tmp),
            admin_group="no-such-admin-group",
            max_agents_per_owner=idle + 1,
            owner_memory_max=0,
            owner_cpu_quota_max=0,
            owner_tasks_max=0,
            max_queued_tasks_per_owner=QUEUED,
        )
        store = Store(Path(tmp) / "q.db")
        reg = Registry(
            cfg,
            store,
            AuditLog(store, journal=None),
            FakeAccounts(),
            FakeHomes(),
            FakeUnits(),
            Catalog(REPO / "policies", Path(tmp) / "etc"),
        )
        queue = TaskQueue(store, reg)
        alice, bob = Caller(1000, frozenset({1000})), Caller(1001, frozenset({1001}))
        await reg.create(alice, "worker", "sandbox")
        for i in range(idle):
            await reg.create(bob, f"idle{i}", "sandbox")
        with store.transaction():
            for i in range(QUEUED):
                queue.submit(alice, {"title": f"t{i}"})
        queue.assign(time.time())  # the worker's wip is placed; the rest stay queued
        statements = 0

        def count(*_args: Any) -> bool:
            nonlocal statements
            statements += 1
            return True

        store.db.setexectrace(count)
        queue.assign(time.time())
        store.db.setexectrace(None)
        times = []
        for _ in range(PASSES):
            t0 = time.perf_counter()
            queue.assign(time.time())
            times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "idle_agents": idle,
        "queued": QUEUED,
        "statements_per_pass": statements,
        "pass_ms_p50": round(statistics.median(times) * 1000, 3),
        "pass_ms_p99": round(times[int(len(times) * 0.99)] * 1000, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1000, help="idle agents registered")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    base = asyncio.run(measure(10))
    big = asyncio.run(measure(args.agents))
    out = {
        "baseline": base,
        "measured": big,
        "ratio_p50": round(big["pass_ms_p50"] / base["pass_ms_p50"], 2),
    }
    print(f"{'agents':>8} {'statements':>11} {'pass p50 ms':>12} {'p99 ms':>8}")
    for r in (base, big):
        print(
            f"{r['idle_agents']:>8} {r['statements_per_pass']:>11} "
            f"{r['pass_ms_p50']:>12} {r['pass_ms_p99']:>8}"
        )
    print(f"pass time at {args.agents} agents / at 10 agents: {out['ratio_p50']}x")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
