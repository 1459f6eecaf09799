"""Goals in agentd's store (tables of store migration 12, agentd.goalschema).

Invariant: a goal's row changes only through update(), which bumps its version
and refuses a stale one (StaleGoal), so two advances of one goal cannot both
act on what they read. Tasks are read here (a join) and never written: the
queue alone changes tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import Conflict, NoSuchGoal
from ..store import Store
from .model import OPEN, Goal, GoalTask


class StaleGoal(Conflict):
    """The goal moved on since it was read (another advance got there first)."""


class GoalStore:
    def __init__(self, store: Store, changed: Callable[[Goal, str], None] | None = None) -> None:
        self.store = store
        self.changed = changed or (lambda _goal, _event: None)  # told inside the transaction

    def insert(
        self,
        owner_uid: int,
        intent: str,
        project_id: int | None,
        planner: str,
        approve_plan: bool,
        max_agents: int,
        sub_agents: bool = True,
        team_id: int | None = None,
    ) -> Goal:
        now = time.time()
        self.store.execute(
            "INSERT INTO goals (owner_uid, intent, project_id, planner, state, approve_plan,"
            " max_agents, sub_agents, team_id, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, 'planning', ?, ?, ?, ?, ?, ?)",
            (
                owner_uid,
                intent,
                project_id,
                planner,
                int(approve_plan),
                max_agents,
                int(sub_agents),
                team_id,
                now,
                now,
            ),
        )
        goal = self.get(int(self.store.scalar("SELECT last_insert_rowid()")))
        self.changed(goal, "goal.created")
        return goal

    def get(self, goal_id: int) -> Goal:
        rows = self.store.query("SELECT * FROM goals WHERE id=?", (goal_id,))
        if not rows:
            raise NoSuchGoal(f"no goal {goal_id}")
        return Goal(**rows[0])

    def find(self, goal_id: int) -> Goal | None:
        rows = self.store.query("SELECT * FROM goals WHERE id=?", (goal_id,))
        return Goal(**rows[0]) if rows else None

    def of_owner(self, owner_uid: int | None) -> list[Goal]:
        """OWNER_UID's goals (None: everyone's), newest first."""
        if owner_uid is None:
            rows = self.store.query("SELECT * FROM goals ORDER BY id DESC")
        else:
            rows = self.store.query(
                "SELECT * FROM goals WHERE owner_uid=? ORDER BY id DESC", (owner_uid,)
            )
        return [Goal(**r) for r in rows]

    def open_ids(self) -> list[int]:
        marks = ",".join("?" * len(OPEN))
        rows = self.store.query(f"SELECT id FROM goals WHERE state IN ({marks}) ORDER BY id", OPEN)
        return [int(r["id"]) for r in rows]

    def update(self, goal: Goal, **changes: Any) -> Goal:
        """GOAL with CHANGES, if it is still at the version read; StaleGoal if not."""
        if "state" in changes and changes["state"] not in OPEN:
            changes.setdefault("finished_at", time.time())
        changes["updated_at"] = time.time()
        sets = ", ".join(f"{k}=?" for k in changes)
        with self.store.transaction():
            self.store.execute(
                f"UPDATE goals SET {sets}, version=version+1 WHERE id=? AND version=?",
                (*changes.values(), goal.id, goal.version),
            )
            if int(self.store.scalar("SELECT changes()")) != 1:
                raise StaleGoal(f"goal {goal.id} changed meanwhile")
            after = self.get(goal.id)
            self.changed(after, f"goal.{after.state}")
        return after

    # -- the goal's tasks -----------------------------------------------------------------
    def add_task(self, goal: Goal, task_id: int, role: str, step: str | None = None) -> None:
        self.store.execute(
            "INSERT INTO goal_tasks (task_id, goal_id, role, round, step) VALUES (?, ?, ?, ?, ?)",
            (task_id, goal.id, role, goal.round, step),
        )

    def task(self, task_id: int) -> tuple[int, str, str | None] | None:
        """(goal id, role, step) of a task a goal made; None for any other task."""
        rows = self.store.query(
            "SELECT goal_id, role, step FROM goal_tasks WHERE task_id=?", (task_id,)
        )
        return (int(rows[0]["goal_id"]), rows[0]["role"], rows[0]["step"]) if rows else None

    def goal_of(self, task_id: int) -> int | None:
        value = self.store.scalar("SELECT goal_id FROM goal_tasks WHERE task_id=?", (task_id,))
        return None if value is None else int(value)

    def tasks(self, goal_id: int) -> list[GoalTask]:
        """Every task GOAL_ID made, oldest first, with its status now."""
        rows = self.store.query(
            "SELECT g.task_id, g.role, g.round, g.step, t.status, t.result, t.error, t.agent,"
            " t.started_at, t.finished_at, (SELECT COALESCE(SUM(u.prompt_tokens"
            " + u.completion_tokens), 0) FROM usage u WHERE u.task_id = t.id) AS tokens"
            " FROM goal_tasks g JOIN tasks t ON t.id = g.task_id"
            " WHERE g.goal_id=? ORDER BY g.task_id",
            (goal_id,),
        )
        return [GoalTask(**r) for r in rows]
