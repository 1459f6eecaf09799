"""Blocked tasks that resume by themselves: those blocked on a model quota.

An agent whose Think is refused QuotaExceeded blocks its task with agentd's
refusal as the reason ("...; the quota resets at 2026-12-01 00:00 UTC",
agentd.quotas). Nobody has a question to answer there: the task must go back
to pending when the quota resets, without its owner. So when a task is
blocked with such a reason, one task_resumes row records the time the quota
resets and the task's version; each scheduler pass (agentd.scheduler) unblocks
(task.unblocked, actor agentd, reason "quota reset") the rows that are due:
- the reset time has come (the period ended), or
- an administrator set or reset the agent's or owner's quota since the block
  (quotas.set_at moves on both; if the quota is still spent the task blocks
  again at its next Think, which costs one claim).

Invariants: a row acts only on the task at the version it was blocked at (any
change since, an owner's unblock, a cancel, a reply, leaves the task alone and
drops the row), so it cannot unblock a later block of another kind; and a pass
reads only the rows there are (O(quota-blocked tasks): the scheduler's work,
not the number of agents or tasks). A reason naming a reset in the past (not
agentd's: an agent may write any reason) waits MIN_WAIT, so it cannot make its
task spin.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from ..errors import Conflict
from ..store import Store
from .lifecycle import Lifecycle
from .model import Task
from .repository import Repository

# agentd.quotas.when(): "%Y-%m-%d %H:%M UTC", in QuotaExceeded's message
_RESETS = re.compile(r"quota resets at (\d{4}-\d\d-\d\d \d\d:\d\d) UTC")
MIN_WAIT = 60.0
MAX_WAIT = 32 * 86400.0  # the longest period (monthly) and then some


def quota_reset(reason: str, now: float) -> float | None:
    """When the quota REASON says it was refused by resets; None: not a quota block."""
    found = _RESETS.search(reason)
    if found is None:
        return None
    at = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp()
    if at <= now:
        at = now + MIN_WAIT
    return min(at, now + MAX_WAIT)


class Resumes:
    def __init__(self, store: Store, repo: Repository, lifecycle: Lifecycle) -> None:
        self.store = store
        self.repo = repo
        self.lifecycle = lifecycle

    def blocked(self, task: Task, reason: str) -> None:
        """TASK was just blocked for REASON (inside the block's transaction):
        note when it resumes if that is a quota's refusal."""
        now = time.time()
        at = quota_reset(reason, now)
        if at is None:
            self.store.execute("DELETE FROM task_resumes WHERE task_id=?", (task.id,))
            return
        self.store.execute(
            "INSERT OR REPLACE INTO task_resumes (task_id, version, reason, since, at)"
            " VALUES (?,?,?,?,?)",
            (task.id, task.version, "quota", now, at),
        )

    def due(self, now: float) -> list[tuple[int, int]]:
        """(task, version) of the rows whose quota has reset."""
        rows = self.store.query(
            "SELECT r.task_id, r.version FROM task_resumes r JOIN tasks t ON t.id = r.task_id"
            " WHERE r.at <= ? OR EXISTS (SELECT 1 FROM quotas q"
            "  WHERE q.owner_uid = t.owner_uid AND q.set_at > r.since AND ("
            "   (q.kind = 'agent' AND q.subject = t.agent)"
            "   OR (q.kind = 'owner' AND q.subject = CAST(t.owner_uid AS TEXT))))",
            (now,),
        )
        return [(r["task_id"], r["version"]) for r in rows]

    def resume(self, now: float | None = None) -> list[Task]:
        """Unblock every quota-blocked task whose quota has reset; drop stale rows."""
        now = time.time() if now is None else now
        resumed = []
        for task_id, version in self.due(now):
            with self.store.transaction():
                self.store.execute("DELETE FROM task_resumes WHERE task_id=?", (task_id,))
                task = self.repo.find(task_id)
                if task is None or task.status != "blocked" or task.version != version:
                    continue
                try:
                    resumed.append(
                        self.lifecycle.transition(
                            task,
                            "task.unblocked",
                            0,
                            {"block_reason": None, "not_before": 0},
                            reason="quota reset",
                        )
                    )
                except Conflict:
                    continue
        return resumed
