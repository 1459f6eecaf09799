"""Delegation: an agent hands sub-steps of its running task to other agents.

Invariants, and why:
- Only the agent holding a task's claim, at its current attempt, delegates
  from it (else PermissionDenied, audited, as for RecordStep), and only if its
  template allows the `delegate` tool: a template is what an owner chose to
  let an agent do.
- An agent never acts beyond its owner's rights: each child is a task of the
  parent task's owner, submitted as that owner (TaskQueue.submit_for: routing
  to the owner's capable agents, the project, the queued-tasks limit), with the
  parent's capabilities as its needs and no command (`exec`): what runs, and
  under which approval rules, is the template of the agent that takes it. Its
  model calls are charged to that agent and the owner, like any task's.
- Bounded: a task's children at most MAX_FANOUT over its life, and a child's
  children at most MAX_DEPTH levels below a person's task, so a loop of agents
  delegating to each other ends. Past a bound: LimitExceeded, audited.
- All or nothing: every child of one call is submitted in one transaction,
  audited (task.delegated) with the parent and children.
- A parent that ends (completed, failed, cancelled) takes its open children
  with it: they are cancelled, as its owner.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from ..agent import Agent
from ..audit import AuditLog
from ..errors import AgentdError, InvalidArgument, LimitExceeded, PermissionDenied
from ..events import Events, TaskChanged
from ..policy import Caller
from ..store import Store
from ..tasks.model import Task
from ..tasks.queue import TaskQueue
from ..tasks.spec import text
from ..templates import Catalog

MAX_DEPTH = 2  # a person's task -> its children -> theirs, and no further
MAX_FANOUT = 8  # children of one task, over its life
TITLE_BYTES = 200
INSTRUCTIONS_BYTES = 8 * 1024
STEPS_BYTES = MAX_FANOUT * (TITLE_BYTES + INSTRUCTIONS_BYTES + 64)  # the D-Bus argument
RESULT_CHARS = 4000  # of each child's result, in what the parent is told
TOOL = "delegate"  # the template tool that allows it
ENDED = ("completed", "failed", "cancelled", "dead_lettered")


class Delegation:
    def __init__(
        self, store: Store, queue: TaskQueue, catalog: Catalog, audit: AuditLog, events: Events
    ) -> None:
        self.store = store
        self.queue = queue
        self.catalog = catalog
        self.audit = audit
        self._waiting: dict[int, asyncio.Event] = {}  # parent task -> woken at a child's end
        events.subscribe(TaskChanged, self._on_task)

    # -- handing out ---------------------------------------------------------------------------
    def delegate(self, agent: Agent, task_id: int, attempt: int, steps_json: str) -> list[int]:
        """Submit STEPS_JSON ([{title, instructions}], 1..MAX_FANOUT) as children
        of AGENT's running TASK_ID; their ids."""
        task = self.queue._agent_task(agent, task_id, attempt, "runtime.delegate")
        try:
            self._allowed(agent, task.id)
            steps = _steps(steps_json)
            depth = self.depth(task.id) + 1
            if depth > MAX_DEPTH:
                raise LimitExceeded(
                    f"task {task.id} is itself delegated {depth - 1} level(s) deep: "
                    f"delegation goes at most {MAX_DEPTH} levels below a person's task"
                )
            have = len(self.children(task.id))
            if have + len(steps) > MAX_FANOUT:
                raise LimitExceeded(
                    f"task {task.id} has {have} delegated task(s); {len(steps)} more would pass "
                    f"the most a task may hand out ({MAX_FANOUT})"
                )
            with self.store.transaction():
                ids = [self._child(task, agent, s, depth) for s in steps]
                self._audit(agent, task.id, children=ids, depth=depth)
        except AgentdError as e:
            if not isinstance(e, PermissionDenied):  # a denial is audited by the policy
                self._audit(agent, task.id, result="refused", error=e.name, reason=str(e))
            raise
        return ids

    def _audit(self, agent: Agent, task_id: int, **detail: Any) -> None:
        self.audit.append(
            "task.delegated",
            actor_uid=agent.uid,
            agent=agent.name,
            agent_uid=agent.uid,
            task_id=task_id,
            **detail,
        )

    def _allowed(self, agent: Agent, task_id: int) -> None:
        if TOOL not in self.catalog.template(agent.template).tools:
            self.queue.policy.refuse(
                Caller(agent.uid, name=agent.name),
                "runtime.delegate",
                PermissionDenied(
                    f"agent {agent.name!r} may not delegate: its template ({agent.template}) "
                    f"does not allow the {TOOL!r} tool"
                ),
                result="denied",
                agent=agent.name,
                agent_uid=agent.uid,
                task_id=task_id,
            )

    def _child(self, parent: Task, agent: Agent, step: dict[str, str], depth: int) -> int:
        spec: dict[str, Any] = {
            "title": step["title"],
            "description": step["instructions"]
            + f"\n\n(Delegated by agent {agent.name} from task {parent.id}.)",
            "needs": list(parent.needs),
        }
        if parent.project:
            spec["project"] = parent.project
        child = self.queue.submit_for(parent.owner_uid, spec)
        self.store.execute(
            "INSERT INTO delegations (task_id, parent_id, depth, agent, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (child.id, parent.id, depth, agent.name, time.time()),
        )
        return child.id

    # -- reading back --------------------------------------------------------------------------
    def depth(self, task_id: int) -> int:
        """How far below a person's task TASK_ID is (0: a person's own)."""
        value = self.store.scalar("SELECT depth FROM delegations WHERE task_id=?", (task_id,))
        return int(value or 0)

    def children(self, task_id: int) -> list[Task]:
        rows = self.store.query(
            "SELECT task_id FROM delegations WHERE parent_id=? ORDER BY task_id", (task_id,)
        )
        found = (self.queue.find(int(r["task_id"])) for r in rows)
        return [t for t in found if t is not None]

    def results(self, agent: Agent, task_id: int) -> dict[str, Any]:
        """{done, children: [{id, title, status, agent, result, error}]} of
        AGENT's running TASK_ID."""
        task = self.queue._held(agent, task_id, "runtime.delegated", running=True)
        kids = self.children(task.id)
        return {
            "done": all(k.status in ENDED for k in kids),
            "children": [
                {
                    "id": k.id,
                    "title": k.title,
                    "status": k.status,
                    "agent": k.agent,
                    "result": (k.result or "")[:RESULT_CHARS],
                    "error": k.error,
                }
                for k in kids
            ],
        }

    async def wait(self, agent: Agent, task_id: int, timeout: float) -> dict[str, Any]:
        """results(), once every child has ended or TIMEOUT seconds passed."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            got = self.results(agent, task_id)
            left = deadline - time.monotonic()
            if got["done"] or left <= 0:
                return got
            event = self._waiting.setdefault(task_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), left)
            except TimeoutError:
                pass
            finally:
                event.clear()
                self._waiting.pop(task_id, None)

    def _on_task(self, e: TaskChanged) -> None:
        if e.task.status not in ENDED:
            return
        parent = self.store.scalar(
            "SELECT parent_id FROM delegations WHERE task_id=?", (e.task.id,)
        )
        if parent is not None and int(parent) in self._waiting:
            self._waiting[int(parent)].set()
        for child in self.children(e.task.id):  # the parent ended: its open children go
            if child.status not in ENDED:
                self.queue.lifecycle.cancel(child, child.owner_uid)


def _steps(steps_json: str) -> list[dict[str, str]]:
    try:
        data = json.loads(steps_json)
    except ValueError as e:
        raise InvalidArgument(f"steps must be JSON: {e}") from None
    if not isinstance(data, list) or not 1 <= len(data) <= MAX_FANOUT:
        raise InvalidArgument(f"steps must be a list of 1..{MAX_FANOUT} objects")
    out = []
    for i, s in enumerate(data):
        if not isinstance(s, dict) or set(s) - {"title", "instructions"}:
            raise InvalidArgument(f"step {i}: an object with title and instructions only")
        out.append(
            {
                "title": text(s.get("title"), f"step {i} title", TITLE_BYTES, required=True),
                "instructions": text(
                    s.get("instructions"),
                    f"step {i} instructions",
                    INSTRUCTIONS_BYTES,
                    required=True,
                ),
            }
        )
    return out
