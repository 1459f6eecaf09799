"""SQLite state through apsw: one writer connection, WAL, versioned schema.

agentd is the only process that opens the database (agentctl goes through
D-Bus), so one connection on the event-loop thread is the whole concurrency
story. synchronous=FULL: a registry row is the intent log that makes creation
and removal recoverable, so it must be on disk before the system is touched.

Group commit: that fsync per transaction capped the agents' hot path (claim,
complete, heartbeat: bench/README.md measured 566 cycles/s over D-Bus against
1,409 in-process). So the transactions of the requests the bus layer marks
grouped (agentd.api.access.GROUPED) are savepoints of one transaction per
event loop turn, committed by a callback at the end of the turn; each of those
requests' replies waits for that commit (settled()), so durability is as
before: nothing a caller was told succeeded can be lost by a crash. A
request's failure rolls back its savepoint only; a failed COMMIT fails every
request of the group. Any other transaction commits the open group first and
then itself, at once, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import apsw

from . import approvalschema, goalschema, planschema, sessionschema, teamschema, usageschema
from .errors import InvalidConfig, NoSpace

SqlValue = int | float | str | bytes | None  # what SQLite stores (bool is an int)
Params = tuple[SqlValue, ...] | Mapping[str, SqlValue]  # ? bindings, or :name bindings

# Each entry migrates the schema from version i to i+1. Never edit a shipped
# entry: append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE agents (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        uid         INTEGER NOT NULL,
        gid         INTEGER NOT NULL,
        owner_uid   INTEGER NOT NULL,
        template    TEXT NOT NULL,
        profile     TEXT NOT NULL,
        memory_max  INTEGER NOT NULL,
        cpu_quota   INTEGER NOT NULL,
        tasks_max   INTEGER NOT NULL,
        state       TEXT NOT NULL
                    CHECK (state IN ('creating', 'present', 'removing', 'removed')),
        keep_home   INTEGER NOT NULL DEFAULT 0,
        archive     TEXT,
        created_at  REAL NOT NULL,
        removed_at  REAL,
        last_seen   REAL
    );
    CREATE UNIQUE INDEX agents_live_name ON agents(name) WHERE state != 'removed';
    CREATE UNIQUE INDEX agents_live_uid ON agents(uid) WHERE state != 'removed';
    CREATE TABLE audit (
        seq        INTEGER PRIMARY KEY,
        ts         REAL NOT NULL,
        actor_uid  INTEGER NOT NULL,
        action     TEXT NOT NULL,
        agent      TEXT,
        agent_uid  INTEGER,
        result     TEXT NOT NULL,
        detail     TEXT NOT NULL,
        prev_hash  TEXT NOT NULL,
        hash       TEXT NOT NULL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    """
    ALTER TABLE audit ADD COLUMN task_id INTEGER;
    CREATE INDEX audit_task ON audit(task_id) WHERE task_id IS NOT NULL;
    CREATE TABLE projects (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        owner_uid   INTEGER NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('active', 'removed')),
        created_at  REAL NOT NULL
    );
    CREATE UNIQUE INDEX projects_live_name ON projects(name) WHERE state = 'active';
    CREATE TABLE tasks (
        id            INTEGER PRIMARY KEY,
        title         TEXT NOT NULL,
        description   TEXT NOT NULL DEFAULT '',
        project_id    INTEGER REFERENCES projects(id),
        owner_uid     INTEGER NOT NULL,
        needs         TEXT NOT NULL DEFAULT '[]',
        priority      INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 3),
        status        TEXT NOT NULL CHECK (status IN ('pending', 'in_progress', 'blocked',
                          'completed', 'failed', 'cancelled', 'dead_lettered')),
        pinned_agent  TEXT,
        agent         TEXT,
        exec          TEXT,
        max_attempts  INTEGER NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        not_before    REAL NOT NULL DEFAULT 0,
        lease_expires REAL,
        abort         INTEGER NOT NULL DEFAULT 0,
        result        TEXT,
        error         TEXT,
        block_reason  TEXT,
        notes         TEXT NOT NULL DEFAULT '[]',
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        started_at    REAL,
        finished_at   REAL,
        version       INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX tasks_queue ON tasks(status, priority DESC, id);
    CREATE INDEX tasks_agent ON tasks(agent, status);
    CREATE TABLE task_deps (
        task_id    INTEGER NOT NULL REFERENCES tasks(id),
        depends_on INTEGER NOT NULL REFERENCES tasks(id),
        PRIMARY KEY (task_id, depends_on)
    );
    CREATE TABLE artifacts (
        id         INTEGER PRIMARY KEY,
        task_id    INTEGER NOT NULL REFERENCES tasks(id),
        name       TEXT NOT NULL,
        type       TEXT NOT NULL,
        path       TEXT NOT NULL,
        size       INTEGER NOT NULL,
        sha256     TEXT NOT NULL,
        created_at REAL NOT NULL,
        UNIQUE (task_id, name)
    );
    """,
    """
    CREATE TABLE usage (
        id                INTEGER PRIMARY KEY,
        ts                REAL NOT NULL,
        agent             TEXT NOT NULL,
        agent_uid         INTEGER NOT NULL,
        owner_uid         INTEGER NOT NULL,
        kind              TEXT NOT NULL CHECK (kind IN ('chat', 'think')),
        task_id           INTEGER,
        prompt_tokens     INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        status            TEXT NOT NULL CHECK (status IN ('ok', 'error', 'cancelled')),
        duration_s        REAL NOT NULL
    );
    CREATE INDEX usage_agent ON usage(agent, ts);
    CREATE INDEX usage_owner ON usage(owner_uid, ts);
    CREATE TABLE quotas (
        kind     TEXT NOT NULL CHECK (kind IN ('agent', 'owner')),
        subject  TEXT NOT NULL,
        tokens   INTEGER,
        period   TEXT CHECK (period IN ('daily', 'weekly', 'monthly')),
        reset_at REAL NOT NULL DEFAULT 0,
        set_by   INTEGER NOT NULL,
        set_at   REAL NOT NULL,
        PRIMARY KEY (kind, subject)
    );
    """,
    # 4: an agent's quota row and usage are its owner's for that name (they
    # survive removal and re-creation by the same owner; another owner's agent
    # of the name has its own). Existing agent rows go to the owner of the
    # live (else the latest) agent of their name; rows of no agent at all are
    # dropped, as removal dropped them before.
    """
    CREATE TABLE quotas_by_owner (
        kind      TEXT NOT NULL CHECK (kind IN ('agent', 'owner')),
        subject   TEXT NOT NULL,
        owner_uid INTEGER NOT NULL,
        tokens    INTEGER,
        period    TEXT CHECK (period IN ('daily', 'weekly', 'monthly')),
        reset_at  REAL NOT NULL DEFAULT 0,
        set_by    INTEGER NOT NULL,
        set_at    REAL NOT NULL,
        PRIMARY KEY (kind, subject, owner_uid)
    );
    INSERT INTO quotas_by_owner
        (kind, subject, owner_uid, tokens, period, reset_at, set_by, set_at)
    SELECT kind, subject, owner, tokens, period, reset_at, set_by, set_at FROM (
        SELECT q.*, CASE q.kind
            WHEN 'owner' THEN CAST(q.subject AS INTEGER)
            ELSE (SELECT a.owner_uid FROM agents a WHERE a.name = q.subject
                  ORDER BY a.state = 'removed', a.id DESC LIMIT 1)
        END AS owner
        FROM quotas q
    ) WHERE owner IS NOT NULL;
    DROP TABLE quotas;
    ALTER TABLE quotas_by_owner RENAME TO quotas;
    CREATE INDEX usage_agent_owner ON usage(agent, owner_uid, ts);
    """,
    # 5: tasks and audit rows name an agent by its id, which is never reused
    # (an agent row is never deleted: the trigger), not by its name or UID,
    # which are. A task's agent is the one of its name that existed when the
    # task was created (pinned) or last changed (holder); a pinned name no agent
    # had then stays unresolved (NULL), so the task can never run.
    """
    ALTER TABLE tasks ADD COLUMN pinned_agent_id INTEGER;
    ALTER TABLE tasks ADD COLUMN agent_id INTEGER;
    UPDATE tasks SET pinned_agent_id = (
        SELECT a.id FROM agents a WHERE a.name = tasks.pinned_agent
        AND a.created_at <= tasks.created_at ORDER BY a.id DESC LIMIT 1
    ) WHERE pinned_agent IS NOT NULL;
    UPDATE tasks SET agent_id = (
        SELECT a.id FROM agents a WHERE a.name = tasks.agent
        AND a.created_at <= tasks.updated_at ORDER BY a.id DESC LIMIT 1
    ) WHERE agent IS NOT NULL;
    DROP INDEX tasks_agent;
    CREATE INDEX tasks_agent ON tasks(agent_id, status);
    CREATE INDEX tasks_pinned ON tasks(pinned_agent_id) WHERE pinned_agent_id IS NOT NULL;
    ALTER TABLE audit ADD COLUMN agent_id INTEGER;
    CREATE INDEX agents_name_uid ON agents(name, uid);
    CREATE TRIGGER agents_never_deleted BEFORE DELETE ON agents BEGIN
        SELECT RAISE(ABORT, 'agent rows are never deleted: their ids must not be reused');
    END;
    """,
    # 6: a claim reads an agent's next tasks in claim order from indexes: those
    # assigned to it, those pinned to it, its owner's unpinned ones (and the
    # scheduler the tasks of gone agents). Without them SQLite walked the whole
    # pending queue in priority order (tasks_queue) for each claim, and 8
    # agents' claim+complete fell from 513 to 185 cycles/s when the queue grew
    # from 2,000 to 12,000 tasks (bench/tasks.py, one run each).
    """
    DROP INDEX tasks_agent;
    CREATE INDEX tasks_claim ON tasks(agent_id, status, priority DESC, id);
    CREATE INDEX tasks_pinned_claim ON tasks(pinned_agent_id, status, priority DESC, id)
        WHERE pinned_agent_id IS NOT NULL;
    CREATE INDEX tasks_owner_claim ON tasks(owner_uid, status, priority DESC, id)
        WHERE pinned_agent IS NULL;
    CREATE INDEX tasks_unresolved ON tasks(status)
        WHERE pinned_agent IS NOT NULL AND pinned_agent_id IS NULL;
    """,
    # 7: the agent loop (issue 12). task_steps: each step an agent's loop took
    # on a task (all attempts), the trace its owner reads; task_replies: the
    # owner's answers to its questions (AskOwner, ReplyTask); task_resumes: a
    # blocked task that resumes by itself (quota: at the reset, or when an admin
    # sets or resets the quota), valid only while the task is at that version.
    # New tables, not new tasks columns: migration 8 rebuilds tasks.
    """
    CREATE TABLE task_steps (
        seq      INTEGER PRIMARY KEY,
        task_id  INTEGER NOT NULL REFERENCES tasks(id),
        attempt  INTEGER NOT NULL,
        n        INTEGER NOT NULL,
        step     TEXT NOT NULL,
        at       REAL NOT NULL
    );
    CREATE INDEX task_steps_task ON task_steps(task_id, seq);
    CREATE TABLE task_replies (
        id        INTEGER PRIMARY KEY,
        task_id   INTEGER NOT NULL REFERENCES tasks(id),
        question  TEXT NOT NULL,
        answer    TEXT NOT NULL,
        by_uid    INTEGER NOT NULL,
        at        REAL NOT NULL
    );
    CREATE INDEX task_replies_task ON task_replies(task_id, id);
    CREATE TABLE task_resumes (
        task_id   INTEGER PRIMARY KEY REFERENCES tasks(id),
        version   INTEGER NOT NULL,
        reason    TEXT NOT NULL CHECK (reason IN ('quota')),
        since     REAL NOT NULL,
        at        REAL NOT NULL
    );
    CREATE INDEX task_resumes_at ON task_resumes(at);
    """,
    # 8: approval gates: approvals, an agent's own allow list, and tasks rebuilt
    # so that its status CHECK accepts 'awaiting_approval' (agentd.approvalschema).
    approvalschema.MIGRATION_8,
    # 9: the scheduler's pass reads only the work there is (agentd.tasks.routing):
    # each index holds just the rows one of its questions is about, so a pass
    # costs what is assigned, open or unplaced, not the queue or the registry.
    """
    CREATE INDEX tasks_waiting ON tasks(agent_id, not_before)
        WHERE status = 'pending' AND agent_id IS NOT NULL;
    CREATE INDEX tasks_open ON tasks(agent_id)
        WHERE status IN ('pending', 'in_progress') AND agent_id IS NOT NULL;
    CREATE INDEX tasks_owner_unplaced ON tasks(owner_uid)
        WHERE status = 'pending' AND agent_id IS NULL AND pinned_agent IS NULL;
    CREATE INDEX tasks_pinned_unplaced ON tasks(pinned_agent_id)
        WHERE status = 'pending' AND agent_id IS NULL AND pinned_agent_id IS NOT NULL;
    CREATE INDEX agents_owner ON agents(owner_uid) WHERE state = 'present';
    """,
    # 10: usage of kind 'embed' (agent memory; agentd.usageschema).
    usageschema.MIGRATION_10,
    # 11: chat sessions and their turns (agentd.sessionschema).
    sessionschema.MIGRATION_11,
    # 12: goals, the tasks they made, their sub-agents (agentd.goalschema).
    goalschema.MIGRATION_12,
    # 13: goals' sub-agents with their step; goals.sub_agents (agentd.goalschema).
    goalschema.MIGRATION_13,
    # 14: usage.first_token_s (agentd.usageschema).
    usageschema.MIGRATION_14,
    # 15: delegations, an agent's child tasks (agentd.goalschema).
    goalschema.MIGRATION_15,
    # 16: teams, their members and tasks; messages (agentd.teamschema).
    teamschema.MIGRATION_16,
    planschema.MIGRATION_17,  # 17: quota plans' assignments (agentd.planschema).
)

SCHEMA_VERSION = len(MIGRATIONS)


# Set by the bus layer around a request whose writes may join a group commit
# (agentd.api.access); the futures of the groups the request's writes joined.
_tickets: contextvars.ContextVar[list[asyncio.Future[None]] | None] = contextvars.ContextVar(
    "agentd_store_tickets", default=None
)


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        old_umask = os.umask(0o077)
        try:
            self.db = apsw.Connection(str(path))
        finally:
            os.umask(old_umask)
        self._after_commit: list[Callable[[], None]] = []
        self._group: asyncio.Future[None] | None = None  # the open group commit
        self._depth = 0  # transaction() blocks open (the outermost decides)
        self.commits = 0  # COMMITs (each one fsync of the WAL): for the benchmarks
        self.db.setbusytimeout(5000)
        self.execute("PRAGMA journal_mode=WAL")
        self.execute("PRAGMA synchronous=FULL")
        self.execute("PRAGMA foreign_keys=ON")
        self.migrate()

    @property
    def version(self) -> int:
        return int(self.scalar("PRAGMA user_version"))

    def migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, one transaction per step."""
        current = self.version
        if current > SCHEMA_VERSION:
            raise InvalidConfig(
                f"{self.path} has schema version {current}, newer than this agentd "
                f"({SCHEMA_VERSION}); refusing to run on it"
            )
        for version in range(current, SCHEMA_VERSION):
            with self.transaction():
                self.db.execute(MIGRATIONS[version])
                self.db.execute(f"PRAGMA user_version={version + 1}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing, rolled back on any exception; nested blocks join the
        outermost. Inside a request that allows it (grouped()), the block is a
        savepoint of the event loop turn's group commit; otherwise it is its own
        BEGIN IMMEDIATE .. COMMIT, after committing any open group (so a write
        that must be on disk before the system is touched is, at its end)."""
        if self._depth:
            yield
            return
        tickets = _tickets.get()
        if tickets is not None and _running_loop() is not None:
            with self._savepoint(tickets):
                yield
            return
        self.flush()
        self.db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
        except BaseException as e:
            self._depth -= 1
            self._abort(e)
        else:
            self._depth -= 1
            self._commit()

    def _commit(self) -> None:
        """COMMIT, then the hooks of what it committed."""
        try:
            self.db.execute("COMMIT")
        except BaseException as e:
            self._abort(e)
        self.commits += 1
        hooks, self._after_commit = self._after_commit, []
        for hook in hooks:
            hook()

    def _abort(self, e: BaseException) -> NoReturn:
        # A failed COMMIT (a full disk) leaves the transaction open: roll it back too,
        # and drop its hooks, or the next commit would announce rows never stored.
        if not self.db.getautocommit():
            self.db.execute("ROLLBACK")
        self._after_commit.clear()
        if isinstance(e, apsw.FullError):
            raise NoSpace(f"{self.path.parent} is full: nothing was changed") from None
        raise e

    # -- group commit ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _savepoint(self, tickets: list[asyncio.Future[None]]) -> Iterator[None]:
        """One request's transaction inside the open group (opened, and its COMMIT
        scheduled for the end of this loop turn, if there is none)."""
        if self._group is None:
            self.db.execute("BEGIN IMMEDIATE")
            loop = asyncio.get_running_loop()
            self._group = loop.create_future()
            self._group.add_done_callback(_retrieved)
            loop.call_soon(self.flush)
        if self._group not in tickets:
            tickets.append(self._group)
        mark = len(self._after_commit)
        self.db.execute("SAVEPOINT request")
        self._depth += 1
        try:
            yield
        except BaseException as e:
            self._depth -= 1
            self.db.execute("ROLLBACK TO request")
            self.db.execute("RELEASE request")
            del self._after_commit[mark:]
            if isinstance(e, apsw.FullError):
                raise NoSpace(f"{self.path.parent} is full: nothing was changed") from None
            raise
        self._depth -= 1
        self.db.execute("RELEASE request")

    def flush(self) -> None:
        """Commit the open group, if any: one fsync for every request in it. Its
        requests' replies wait for this (settled()); a failure fails them all."""
        group, self._group = self._group, None
        if group is None:
            return
        hooks, self._after_commit = self._after_commit, []
        try:
            self._commit()  # no hooks of its own: they are the group's, run below
        except BaseException as e:
            group.set_exception(e)
            return
        group.set_result(None)
        for hook in hooks:
            hook()

    async def settled(self) -> None:
        """Wait until what the current request wrote, and what it may have read
        of others' writes, is committed; raise the commit's error if it failed.
        The bus layer awaits this before every reply."""
        pending = [*(_tickets.get() or ()), *([self._group] if self._group else [])]
        for future in pending:
            await asyncio.shield(future)

    @staticmethod
    @contextlib.contextmanager
    def grouped() -> Iterator[None]:
        """Within this block (one request), transactions join group commits."""
        token = _tickets.set([])
        try:
            yield
        finally:
            _tickets.reset(token)

    def in_transaction(self) -> bool:
        return not self.db.getautocommit()

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run HOOK once the current transaction commits (dropped on rollback)."""
        self._after_commit.append(hook)

    def execute(self, sql: str, params: Params = ()) -> None:
        for _ in self.db.execute(sql, params):
            pass

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        cur = self.db.cursor()
        cur.execute(sql, params)
        try:
            names = [d[0] for d in cur.getdescription()]
        except apsw.ExecutionCompleteError:  # no rows at all
            return []
        return [dict(zip(names, row, strict=True)) for row in cur]

    def scalar(self, sql: str, params: Params = ()) -> Any:
        for row in self.db.execute(sql, params):
            return row[0]
        return None

    def close(self) -> None:
        self.flush()
        self.db.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _retrieved(future: asyncio.Future[None]) -> None:
    """A failed group's error is raised to its requests; never "never retrieved"."""
    if not future.cancelled():
        future.exception()
