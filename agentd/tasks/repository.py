"""Tasks, projects and artifacts in SQLite: rows <-> records, and the queries.

Invariant: this module never writes a task row. It reads tasks, and it writes
what has no status (projects, artifact rows); every task insert and status change
is in lifecycle.py, which checks the transition table and the row's version.
Keeping the SQL that reads tasks here and the SQL that changes them there is what
makes that rule checkable by reading one file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from ..errors import AlreadyExists, Busy, InvalidArgument
from ..store import Store
from .model import FILTER_KEYS, PRIORITIES, STATUSES, Artifact, Task

Row = dict[str, Any]

# Tasks an agent still has to finish (or start): they keep its unit up.
_OPEN = "('pending', 'in_progress')"


_COLUMNS = (
    "id, agent_id, pinned_agent_id, needs, exec, priority, "
    "(SELECT team_id FROM team_tasks WHERE task_id = tasks.id) AS team_id"
)
_ASSIGNED = (
    f"SELECT {_COLUMNS} FROM tasks WHERE agent_id=? AND status='pending' "
    "AND not_before<=? ORDER BY priority DESC, id LIMIT {limit}"
)
_UNASSIGNED_FOR = (
    f"SELECT * FROM (SELECT {_COLUMNS} FROM tasks WHERE pinned_agent_id=? "
    "AND status='pending' AND agent_id IS NULL AND not_before<=? "
    "ORDER BY priority DESC, id LIMIT {limit}) "
    f"UNION ALL SELECT * FROM (SELECT {_COLUMNS} FROM tasks WHERE owner_uid=? "
    "AND status='pending' AND pinned_agent IS NULL AND agent_id IS NULL "
    "AND not_before<=? ORDER BY priority DESC, id LIMIT {limit}) "
    "ORDER BY priority DESC, id LIMIT {limit}"
)
# Team tasks (agentd.teams) of teams AGENT is in whose owner is not its own (an
# administrator's team of several owners' agents; its owner's own agents find
# them above). Only such memberships are walked: usually none.
_FOREIGN_TEAMS_FOR = (
    f"SELECT {_COLUMNS} FROM tasks WHERE id IN (SELECT tt.task_id FROM team_members m "
    "JOIN teams tm ON tm.id = m.team_id JOIN team_tasks tt ON tt.team_id = m.team_id "
    "WHERE m.agent_id=? AND tm.owner_uid != ?) AND status='pending' AND agent_id IS NULL "
    "AND pinned_agent IS NULL AND not_before<=? ORDER BY priority DESC, id LIMIT {limit}"
)

# Loose index scans: the next distinct value after the last, one seek each in
# an index holding only the rows asked about (store migration 9; INDEXED BY:
# left to itself the planner walked tasks_claim's unassigned rows instead).
_LOOSE = (
    "WITH RECURSIVE d(v) AS (SELECT MIN({col}) FROM tasks INDEXED BY {index} WHERE {where} "
    "UNION ALL SELECT (SELECT MIN({col}) FROM tasks INDEXED BY {index} WHERE {where} "
    "AND {col} > d.v) FROM d WHERE d.v IS NOT NULL) SELECT v FROM d WHERE v IS NOT NULL"
)
_OWNERS_UNPLACED = _LOOSE.format(
    col="owner_uid",
    index="tasks_owner_unplaced",
    where="status = 'pending' AND agent_id IS NULL AND pinned_agent IS NULL",
)
_ASSIGNED_AGENTS = _LOOSE.format(
    col="agent_id", index="tasks_waiting", where="status = 'pending' AND agent_id IS NOT NULL"
)
_PINNED_UNPLACED = _LOOSE.format(
    col="pinned_agent_id",
    index="tasks_pinned_unplaced",
    where="status = 'pending' AND agent_id IS NULL AND pinned_agent_id IS NOT NULL",
)


class Repository:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- tasks ---------------------------------------------------------------------------
    def task(self, row: Row, known: Task | None = None) -> Task:
        """A Task from a tasks row; KNOWN (the same task, earlier) saves re-reading
        its dependencies and project, which no transition changes."""
        if known is not None:
            deps, project = known.after, known.project
        else:
            deps, project = self._deps_of(row["id"]), self._project_name(row["project_id"])
        return Task(
            id=row["id"],
            title=row["title"],
            description=row["description"],
            project=project,
            owner_uid=row["owner_uid"],
            needs=tuple(json.loads(row["needs"])),
            priority=PRIORITIES[row["priority"]],
            status=row["status"],
            pinned_agent=row["pinned_agent"],
            agent=row["agent"],
            pinned_agent_id=row["pinned_agent_id"],
            agent_id=row["agent_id"],
            exec=row["exec"],
            max_attempts=row["max_attempts"],
            attempts=row["attempts"],
            not_before=row["not_before"],
            lease_expires=row["lease_expires"],
            result=row["result"],
            error=row["error"],
            block_reason=row["block_reason"],
            notes=tuple(json.loads(row["notes"])),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            version=row["version"],
            after=deps,
        )

    def _deps_of(self, task_id: int) -> tuple[int, ...]:
        return tuple(
            r["depends_on"]
            for r in self.store.query(
                "SELECT depends_on FROM task_deps WHERE task_id=? ORDER BY depends_on", (task_id,)
            )
        )

    def _project_name(self, project_id: int | None) -> str:
        if project_id is None:
            return ""
        return self.store.scalar("SELECT name FROM projects WHERE id=?", (project_id,)) or ""

    def find(self, task_id: int) -> Task | None:
        rows = self.store.query("SELECT * FROM tasks WHERE id=?", (task_id,))
        return self.task(rows[0]) if rows else None

    def reread(self, task_id: int, known: Task | None = None) -> Task:
        """The row of a task known to exist (one just written)."""
        return self.task(
            self.store.query("SELECT * FROM tasks WHERE id=?", (task_id,))[0], known=known
        )

    def tasks(self, owner_uid: int | None, filters: dict[str, Any]) -> list[Task]:
        """ListTasks: OWNER_UID's tasks (None: everyone's), newest first."""
        unknown = set(filters) - FILTER_KEYS
        if unknown:
            raise InvalidArgument(f"unknown filter(s): {', '.join(sorted(unknown))}")
        sql, params = "SELECT * FROM tasks WHERE 1=1", []
        if owner_uid is not None:
            sql += " AND owner_uid=?"
            params.append(owner_uid)
        if filters.get("status"):
            if filters["status"] not in STATUSES:
                raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}")
            sql += " AND status=?"
            params.append(filters["status"])
        if filters.get("priority"):
            if filters["priority"] not in PRIORITIES:
                raise InvalidArgument(f"priority must be one of {', '.join(PRIORITIES)}")
            sql += " AND priority=?"
            params.append(PRIORITIES.index(filters["priority"]))
        if filters.get("agent"):
            sql += " AND agent=?"
            params.append(filters["agent"])
        if filters.get("project"):
            sql += " AND project_id=(SELECT id FROM projects WHERE name=? AND state='active')"
            params.append(filters["project"])
        limit = filters.get("limit") or 1000
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise InvalidArgument("limit must be a number of tasks (1..10000)")
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(max(1, min(limit, 10000)))
        return [self.task(r) for r in self.store.query(sql, tuple(params))]

    # -- what the scheduler and the claims look at ----------------------------------------
    def claimable(self, agent_id: int, owner_uid: int, now: float) -> Iterator[Row]:
        """Narrow rows, best first: tasks assigned to agent AGENT_ID, then unassigned
        ones it may take (pinned to it, or its owner's). Read a few at a time: a
        claim nearly always takes the first, and building 128 rows per claim was
        a fifth of an in-process claim+complete cycle (cProfile, tmpfs)."""
        yield from self._window(_ASSIGNED, (agent_id, now))
        yield from self.unassigned_for(agent_id, owner_uid, now)

    def unassigned_for(self, agent_id: int, owner_uid: int, now: float) -> Iterator[Row]:
        """Unassigned runnable tasks agent AGENT_ID may take, best first: pinned to
        it, or its owner's unpinned ones, each read from its own index in claim
        order (one query with OR walked every unassigned task of everyone)."""
        yield from self._window(_UNASSIGNED_FOR, (agent_id, now, owner_uid, now))
        if self.in_foreign_team(agent_id, owner_uid):
            yield from self._window(_FOREIGN_TEAMS_FOR, (agent_id, owner_uid, now))

    def in_foreign_team(self, agent_id: int, owner_uid: int) -> bool:
        """Whether agent AGENT_ID is in a team another owner has (an index look-up)."""
        return bool(
            self.store.scalar(
                "SELECT 1 FROM team_members m JOIN teams t ON t.id = m.team_id "
                "WHERE m.agent_id=? AND t.owner_uid != ? LIMIT 1",
                (agent_id, owner_uid),
            )
        )

    def is_member(self, team_id: int, agent_id: int) -> bool:
        return bool(
            self.store.scalar(
                "SELECT 1 FROM team_members WHERE team_id=? AND agent_id=?", (team_id, agent_id)
            )
        )

    def foreign_members(self) -> set[int]:
        """Agents in a team of another owner than theirs: candidates for that
        team's tasks in the scheduler's pass (usually none)."""
        return {
            r["agent_id"]
            for r in self.store.query(
                "SELECT m.agent_id FROM team_members m JOIN teams t ON t.id = m.team_id "
                "JOIN agents a ON a.id = m.agent_id WHERE a.owner_uid != t.owner_uid "
                "AND t.state = 'present'"
            )
        }

    def _window(self, sql: str, params: tuple[Any, ...]) -> Iterator[Row]:
        """SQL's first 4 rows, then, if the caller wants more, its first 64 again
        less those (the caller may have claimed some meanwhile: an OFFSET would
        skip rows). Each window is read whole before it is handed out."""
        first = self.store.query(sql.format(limit=4), params)
        yield from first
        if len(first) == 4:
            seen = {r["id"] for r in first}
            again = self.store.query(sql.format(limit=64), params)
            yield from (r for r in again if r["id"] not in seen)

    def waits(self, task_id: int) -> bool:
        """Whether TASK_ID has a dependency not completed yet (an index look-up)."""
        return bool(
            self.store.scalar(
                "SELECT 1 FROM task_deps d JOIN tasks t ON t.id = d.depends_on "
                "WHERE d.task_id=? AND t.status != 'completed' LIMIT 1",
                (task_id,),
            )
        )

    def pending_of(self, agents: set[int]) -> list[Row]:
        """Pending tasks assigned or pinned to one of AGENTS (ids), and those
        pinned by a name no agent had (pinned_agent_id NULL, store migration 5:
        to nobody), by index."""
        ids = json.dumps(sorted(agents))
        return self.store.query(
            "SELECT * FROM tasks WHERE status = 'pending' AND agent_id IS NOT NULL "
            "AND agent_id IN (SELECT value FROM json_each(?1)) "
            "UNION SELECT * FROM tasks INDEXED BY tasks_pinned_unplaced "
            "WHERE status = 'pending' AND agent_id IS NULL AND pinned_agent_id IS NOT NULL "
            "AND pinned_agent_id IN (SELECT value FROM json_each(?1)) "
            "UNION SELECT * FROM tasks WHERE status = 'pending' "
            "AND pinned_agent IS NOT NULL AND pinned_agent_id IS NULL",
            (ids,),
        )

    def assigned_agents(self) -> set[int]:
        """Ids of agents with pending tasks assigned to them, runnable now or not
        (tasks_waiting: at most the agents' wip in all)."""
        return self._distinct(_ASSIGNED_AGENTS)

    def waiting_agents(self, now: float) -> set[int]:
        """Ids of agents with a pending task assigned to them that may run now
        (store migration 9's tasks_waiting: the assigned pending tasks only)."""
        return {
            r["agent_id"]
            for r in self.store.query(
                "SELECT DISTINCT agent_id FROM tasks INDEXED BY tasks_waiting "
                "WHERE status = 'pending' AND agent_id IS NOT NULL AND not_before <= ?",
                (now,),
            )
        }

    def unplaced(self) -> tuple[set[int], set[int]]:
        """Who unassigned pending tasks wait for: the owners of unpinned ones and
        the agents pinned ones name. Each is a loose index scan (one seek per
        distinct value, store migration 9), so a pass over 12,000 queued tasks
        of one owner costs two seeks, not a walk of the queue."""
        return self._distinct(_OWNERS_UNPLACED), self._distinct(_PINNED_UNPLACED)

    def _distinct(self, sql: str) -> set[int]:
        return {r["v"] for r in self.store.query(sql)}

    def load(self) -> dict[int, int]:
        """Open tasks per agent id."""
        return {
            r["agent_id"]: r["n"]
            for r in self.store.query(
                "SELECT agent_id, count(*) AS n FROM tasks INDEXED BY tasks_open "
                f"WHERE status IN {_OPEN} AND agent_id IS NOT NULL GROUP BY agent_id"
            )
        }

    def busy_agents(self) -> set[int]:
        return {
            r["agent_id"]
            for r in self.store.query(
                "SELECT DISTINCT agent_id FROM tasks INDEXED BY tasks_open "
                f"WHERE status IN {_OPEN} AND agent_id IS NOT NULL"
            )
        }

    def lapsed(self, now: float) -> list[Row]:
        return self.store.query(
            "SELECT * FROM tasks WHERE status='in_progress' AND lease_expires<?", (now,)
        )

    def running_on(self, agent_id: int) -> list[Row]:
        return self.store.query(
            "SELECT * FROM tasks WHERE status='in_progress' AND agent_id=?", (agent_id,)
        )

    # -- projects --------------------------------------------------------------------------
    def project(self, name: str) -> Row | None:
        rows = self.store.query("SELECT * FROM projects WHERE name=? AND state='active'", (name,))
        return rows[0] if rows else None

    def projects(self) -> list[Row]:
        return self.store.query(
            "SELECT p.*, (SELECT count(*) FROM tasks t WHERE t.project_id=p.id) AS tasks "
            "FROM projects p WHERE state='active' ORDER BY name"
        )

    def project_counts(self, project_id: int) -> dict[str, int]:
        """Tasks of the project per status."""
        return {
            r["status"]: r["n"]
            for r in self.store.query(
                "SELECT status, count(*) AS n FROM tasks WHERE project_id=? GROUP BY status",
                (project_id,),
            )
        }

    def owned_projects(self, owner_uid: int) -> int:
        """OWNER_UID's active projects (max_projects_per_owner)."""
        return int(
            self.store.scalar(
                "SELECT count(*) FROM projects WHERE owner_uid=? AND state='active'", (owner_uid,)
            )
        )

    def queued_tasks(self, owner_uid: int) -> int:
        """OWNER_UID's tasks not yet final (max_queued_tasks_per_owner). The status
        index (tasks_queue) narrows this to the open tasks of everyone, which
        max_queued_tasks_per_owner times the number of owners bounds."""
        return int(
            self.store.scalar(
                "SELECT count(*) FROM tasks WHERE status IN ('pending', 'in_progress', "
                "'blocked') AND owner_uid=?",
                (owner_uid,),
            )
        )

    def add_project(self, name: str, description: str, owner_uid: int) -> None:
        """Insert; call inside the transaction that audits it."""
        if self.store.scalar("SELECT 1 FROM projects WHERE name=? AND state='active'", (name,)):
            raise AlreadyExists(f"a project named {name!r} already exists")
        self.store.execute(
            "INSERT INTO projects (name, description, owner_uid, state, created_at) "
            "VALUES (?,?,?,'active',?)",
            (name, description, owner_uid, time.time()),
        )

    def retire_project(self, row: Row) -> None:
        """Mark removed; refused while it has unfinished tasks. Call inside the
        transaction that audits it."""
        open_tasks = self.store.scalar(
            "SELECT count(*) FROM tasks WHERE project_id=? AND status IN "
            "('pending', 'in_progress', 'blocked')",
            (row["id"],),
        )
        if open_tasks:
            raise Busy(
                f"project {row['name']!r} has {open_tasks} unfinished task(s); cancel them first"
            )
        self.store.execute("UPDATE projects SET state='removed' WHERE id=?", (row["id"],))

    # -- artifacts ---------------------------------------------------------------------------
    def artifacts(self, task_id: int) -> list[Artifact]:
        return [
            Artifact(r["task_id"], r["name"], r["type"], r["path"], r["size"], r["sha256"])
            for r in self.store.query(
                "SELECT * FROM artifacts WHERE task_id=? ORDER BY name", (task_id,)
            )
        ]

    def add_artifact(self, task_id: int, art: Artifact, now: float) -> None:
        self.store.execute(
            "INSERT OR REPLACE INTO artifacts (task_id, name, type, path, size, sha256,"
            " created_at) VALUES (?,?,?,?,?,?,?)",
            (task_id, art.name, art.type, art.path, art.size, art.sha256, now),
        )
