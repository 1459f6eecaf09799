"""Goals' vocabulary: states, the records, and the bounds of planning.

No database and no I/O here, so the runner, the store and (later) the bus
layer share one definition of what a goal is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

STATES = ("planning", "awaiting_approval", "running", "completed", "failed", "cancelled")
OPEN = ("planning", "awaiting_approval", "running")
FINAL = ("completed", "failed", "cancelled")

# The planner's answers in one round: an invalid plan is asked again with its
# errors, this many times in all (issue 14: "asks the model again with the errors").
MAX_ANSWERS = 3
# Plans in all: the first, and one re-plan of the remaining work after a failed step.
MAX_ROUNDS = 2
INTENT_BYTES = 16 * 1024
PLAN_CAPABILITY = "plan"  # what a planner's template provides (the shipped `planner`)

# Task statuses, as agentd.tasks.model spells them, that end a task.
TASK_DONE = ("completed",)
TASK_LOST = ("failed", "cancelled", "dead_lettered")


@dataclass(frozen=True)
class Goal:
    """One goal's row (store migration 12, agentd.goalschema)."""

    id: int
    owner_uid: int
    intent: str
    project_id: int | None
    planner: str
    state: str
    plan: str | None  # the plan being run or held (agentd.goals.plan, JSON)
    round: int
    answers: int
    feedback: str
    approve_plan: int
    max_agents: int
    result: str | None
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    version: int
    sub_agents: int = 1  # whether agentd may make sub-agents for its steps (migration 13)
    team_id: int | None = None  # the team whose members run its steps (migration 16)

    @property
    def open(self) -> bool:
        return self.state in OPEN

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner_uid": self.owner_uid,
            "intent": self.intent,
            "planner": self.planner,
            "state": self.state,
            "plan": json.loads(self.plan) if self.plan else None,
            "round": self.round,
            "approve_plan": bool(self.approve_plan),
            "max_agents": self.max_agents,
            "sub_agents": bool(self.sub_agents),
            "team_id": self.team_id,
            "result": self.result,
            "error": self.error,
            "created": self.created_at,
            "updated": self.updated_at,
            "finished": self.finished_at,
        }


@dataclass(frozen=True)
class GoalTask:
    """A task a goal made, what it is to the goal, and where the task stands."""

    task_id: int
    role: str  # plan | step | report
    round: int
    step: str | None
    status: str
    result: str | None
    error: str | None
    agent: str | None
    started_at: float | None = None
    finished_at: float | None = None
    tokens: int = 0

    @property
    def done(self) -> bool:
        return self.status in TASK_DONE

    @property
    def lost(self) -> bool:
        return self.status in TASK_LOST

    @property
    def open(self) -> bool:
        return not (self.done or self.lost)

    def answer(self) -> str:
        """The task's answer: its result's "answer" if it has one, else its result."""
        if not self.result:
            return ""
        try:
            data = json.loads(self.result)
        except ValueError:
            return self.result
        if isinstance(data, dict) and isinstance(data.get("answer"), str):
            return str(data["answer"])
        return self.result
