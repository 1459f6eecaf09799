"""The agent loop's side of a task in agentd: its trace, the owner's replies,
deferral, and the context a new attempt starts from (issue 12).

Invariants, and why:
- Only the agent holding a task's claim, at its current attempt, writes to it
  (RecordStep, AskOwner, DeferTask: else PermissionDenied, audited, or
  LeaseExpired); it reads its context only while it holds the claim. An agent
  cannot write into another agent's trace or learn another task's results,
  except the tasks its own task depends on, which its owner chose.
- The trace is stored with the task and shown only to the task's owner and
  administrators (the task.show rule, as the task itself).
- Every write is bounded before it is stored (a step of at most MAX_STEP bytes
  of JSON, at most MAX_STEPS steps per task, MAX_REPLIES replies, MAX_DEFERRALS
  deferrals of at most MAX_DEFER_SECONDS each): an agent in a loop cannot grow
  the database without bound. Past a bound: InvalidArgument saying which.
- A step is not an audit row (it is the agent's own account, written once per
  model step: RecordStep is a grouped write, agentd.api.access.GROUPED); the
  status changes it leads to (task.blocked with "question: ...", task.deferred,
  task.replied) are, through agentd.tasks.lifecycle.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..agent import Agent
from ..errors import AgentdError, InvalidArgument
from ..policy import Caller
from .model import Task
from .spec import text

if TYPE_CHECKING:
    from .queue import TaskQueue

MAX_STEP = 16 * 1024  # bytes of one step's JSON (the loop truncates results to 4,000 chars)
MAX_STEPS = 200  # steps per task, all attempts (templates default to 10 a attempt)
MAX_QUESTION = 16 * 1024
MAX_REPLY = 16 * 1024
MAX_REPLIES = 50
MAX_DEFER_SECONDS = 86400.0
MAX_DEFERRALS = 100
MAX_DEP_RESULT = 2000  # characters of a dependency's result in the context
DEFAULT_STEPS = 10  # model steps per task, when the template does not say
DEFAULT_TASK_TOKENS = 20000  # the token budget of one task, when the template does not say
QUESTION = "question: "  # AskOwner's block reason starts so
# What a previous attempt's error is read from, newest first (agentd.audit rows)
_ERROR_EVENTS = ("task.failed", "task.dead_lettered", "task.lease_expired", "task.deferred")


class TaskLoop:
    """The Runtime's RecordStep, AskOwner, DeferTask and TaskContext, and the
    Tasks interface's ReplyTask and ListTaskSteps, each checking who asks first
    (through the queue's checks, so refusals are audited as every other)."""

    def __init__(self, queue: TaskQueue) -> None:
        self.queue = queue
        self.store = queue.store
        self.repo = queue.repo
        self.lifecycle = queue.lifecycle
        # What else a task's context says, from whoever made the task (a goal's
        # role and plan schema: agentd.goals.runner); each returns {} if nothing.
        self.extra: list[Callable[[Task], dict[str, Any]]] = []

    # -- the agent's --------------------------------------------------------------------
    def record_step(self, agent: Agent, task_id: int, attempt: int, step_json: str) -> int:
        """Append one step to the trace of AGENT's running TASK_ID; its number."""
        task = self.queue._agent_task(agent, task_id, attempt, "runtime.record_step")
        step = _step(step_json)
        with self.store.transaction():
            have = self.store.scalar("SELECT COUNT(*) FROM task_steps WHERE task_id=?", (task.id,))
            if have >= MAX_STEPS:
                raise InvalidArgument(
                    f"task {task.id} has {have} steps, the most kept ({MAX_STEPS})"
                )
            n = step.get("n")
            if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= 10**6:
                n = have + 1
            now = time.time()
            step.update(n=n, attempt=attempt, at=now)
            self.store.execute(
                "INSERT INTO task_steps (task_id, attempt, n, step, at) VALUES (?,?,?,?,?)",
                (task.id, attempt, n, json.dumps(step, ensure_ascii=False), now),
            )
        return int(n)

    def ask_owner(self, agent: Agent, task_id: int, attempt: int, question: str) -> Task:
        """Block the task on QUESTION; the owner answers with ReplyTask."""
        task = self.queue._agent_task(agent, task_id, attempt, "runtime.ask_owner")
        question = text(question, "question", MAX_QUESTION, required=True).strip()
        if self._count("task_replies", task.id) >= MAX_REPLIES:
            raise InvalidArgument(f"task {task.id} has had {MAX_REPLIES} replies, the most kept")
        return self.lifecycle.block(task, agent, attempt, QUESTION + question)

    def defer(self, agent: Agent, task_id: int, attempt: int, seconds: float, reason: str) -> Task:
        """Back to pending, not before now+SECONDS, the attempt not consumed."""
        task = self.queue._agent_task(agent, task_id, attempt, "runtime.defer")
        if not (isinstance(seconds, int | float) and math.isfinite(seconds)):
            raise InvalidArgument("seconds must be a finite number")
        if not 0 <= seconds <= MAX_DEFER_SECONDS:
            raise InvalidArgument(f"seconds must be 0..{MAX_DEFER_SECONDS:.0f}")
        reason = text(reason, "reason")
        deferred = self.store.scalar(
            "SELECT COUNT(*) FROM audit WHERE task_id=? AND action='task.deferred'", (task.id,)
        )
        if deferred >= MAX_DEFERRALS:
            raise InvalidArgument(f"task {task.id} was deferred {deferred} times, the most allowed")
        return self.lifecycle.defer(task, agent, attempt, float(seconds), reason)

    def context(self, agent: Agent, task_id: int) -> dict[str, Any]:
        """What a new attempt of AGENT's running TASK_ID starts from (contract §2)."""
        task = self.queue._held(agent, task_id, "runtime.context", running=True)
        ctx: dict[str, Any] = {
            "trace": self.trace(task.id),
            "replies": self.replies(task.id),
            "notes": list(task.notes),
            "depends": [self._dependency(d) for d in task.after],
            "last_error": self.last_error(task),
            "project": task.project,
            "budget": self.settings(agent)["task_tokens"],
        }
        for more in self.extra:
            ctx.update(more(task))
        return ctx

    # -- people's (the owner and administrators) ------------------------------------------------
    def steps(self, caller: Caller, task_id: int) -> list[dict[str, Any]]:
        """The trace of TASK_ID, oldest first: its owner's and administrators' to see."""
        return self.trace(self.queue._visible(caller, task_id, "task.show").id)

    def reply(self, caller: Caller, task_id: int, answer: str) -> Task:
        """Answer what a blocked task asks: back to pending, the reply kept."""
        task = self.queue._visible(caller, task_id, "task.reply")
        answer = text(answer, "text", MAX_REPLY, required=True)
        return self.lifecycle.replied(task, caller.uid, answer)

    # -- reading ----------------------------------------------------------------------------
    def trace(self, task_id: int) -> list[dict[str, Any]]:
        rows = self.store.query(
            "SELECT step FROM task_steps WHERE task_id=? ORDER BY seq", (task_id,)
        )
        return [json.loads(r["step"]) for r in rows]

    def replies(self, task_id: int) -> list[dict[str, Any]]:
        rows = self.store.query(
            "SELECT question, answer, at FROM task_replies WHERE task_id=? ORDER BY id",
            (task_id,),
        )
        return [
            {"question": r["question"].removeprefix(QUESTION), "answer": r["answer"], "at": r["at"]}
            for r in rows
        ]

    def last_error(self, task: Task) -> str:
        """The previous attempt's error: the task's own, else the latest failure,
        lapse or deferral in its audit trail (a retry clears the task's)."""
        if task.error:
            return task.error
        marks = ",".join("?" * len(_ERROR_EVENTS))
        rows = self.store.query(
            f"SELECT action, detail FROM audit WHERE task_id=? AND action IN ({marks})"
            " AND result != 'denied' ORDER BY seq DESC LIMIT 1",
            (task.id, *_ERROR_EVENTS),
        )
        if not rows:
            return ""
        detail = json.loads(rows[0]["detail"] or "{}")
        why = detail.get("error") or detail.get("reason") or ""
        return f"{rows[0]['action'].removeprefix('task.')}: {why}" if why else ""

    def settings(self, agent: Agent) -> dict[str, int]:
        """The template's steps and task_tokens (agentd.templates; defaults until set)."""
        try:
            template = self.queue.router.catalog.template(agent.template)
        except AgentdError:  # a template removed since: the defaults
            return {"steps": DEFAULT_STEPS, "task_tokens": DEFAULT_TASK_TOKENS}
        return {
            "steps": int(getattr(template, "steps", DEFAULT_STEPS) or DEFAULT_STEPS),
            "task_tokens": int(
                getattr(template, "task_tokens", DEFAULT_TASK_TOKENS) or DEFAULT_TASK_TOKENS
            ),
        }

    def _dependency(self, dep_id: int) -> dict[str, Any]:
        dep = self.repo.find(dep_id)
        if dep is None:
            return {"id": dep_id, "title": "", "status": "", "result": ""}
        return {
            "id": dep.id,
            "title": dep.title,
            "status": dep.status,
            "result": (dep.result or "")[:MAX_DEP_RESULT],
            # names only: the files are in the other agent's home, out of reach
            "artifacts": [a.name for a in self.repo.artifacts(dep.id)],
        }

    def _count(self, table: str, task_id: int) -> int:
        return int(self.store.scalar(f"SELECT COUNT(*) FROM {table} WHERE task_id=?", (task_id,)))


def _step(step_json: str) -> dict[str, Any]:
    """STEP_JSON as a JSON object within MAX_STEP bytes; InvalidArgument if not."""
    size = len(step_json.encode("utf-8", "surrogatepass"))
    if size > MAX_STEP:
        raise InvalidArgument(f"step_json is {size} bytes, at most {MAX_STEP} allowed")
    try:
        step = json.loads(step_json)
    except (ValueError, RecursionError):  # RecursionError: nested past Python's limit
        raise InvalidArgument("step_json is not JSON (or is nested too deeply)") from None
    if not isinstance(step, dict):
        raise InvalidArgument("step_json must be a JSON object")
    return step
