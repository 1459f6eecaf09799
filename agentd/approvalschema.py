"""Store migration 8 (agentd.store.MIGRATIONS[7]): the approval gates' schema.

Kept beside agentd.approvals, which alone reads and writes these tables, so
that agentd.store stays under the house limit of 500 lines.

8: approval gates (agentd.approvals): each action an agent asked about and
its answer; an agent's own allow list (grant --always). tasks is rebuilt
(copied aside, recreated column for column, refilled) only so that its
status CHECK accepts 'awaiting_approval'; its children's foreign keys are
deferred meanwhile and hold again, refilled, before the COMMIT checks them.
"""

MIGRATION_8 = """
    PRAGMA defer_foreign_keys = ON;
    CREATE TEMP TABLE tasks_copy AS SELECT * FROM main.tasks;
    DROP TABLE main.tasks;
    CREATE TABLE main.tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '', project_id INTEGER REFERENCES projects(id),
        owner_uid INTEGER NOT NULL, needs TEXT NOT NULL DEFAULT '[]',
        priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 3),
        status        TEXT NOT NULL CHECK (status IN ('pending', 'in_progress', 'blocked',
                          'completed', 'failed', 'cancelled', 'dead_lettered',
                          'awaiting_approval')),
        pinned_agent TEXT, agent TEXT, exec TEXT, max_attempts INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, not_before REAL NOT NULL DEFAULT 0,
        lease_expires REAL, abort INTEGER NOT NULL DEFAULT 0, result TEXT, error TEXT,
        block_reason TEXT, notes TEXT NOT NULL DEFAULT '[]', created_at REAL NOT NULL,
        updated_at REAL NOT NULL, started_at REAL, finished_at REAL,
        version INTEGER NOT NULL DEFAULT 1, pinned_agent_id INTEGER, agent_id INTEGER);
    INSERT INTO main.tasks SELECT * FROM temp.tasks_copy;
    DROP TABLE temp.tasks_copy;
    CREATE INDEX tasks_queue ON tasks(status, priority DESC, id);
    CREATE INDEX tasks_pinned ON tasks(pinned_agent_id) WHERE pinned_agent_id IS NOT NULL;
    CREATE INDEX tasks_claim ON tasks(agent_id, status, priority DESC, id);
    CREATE INDEX tasks_pinned_claim ON tasks(pinned_agent_id, status, priority DESC, id)
        WHERE pinned_agent_id IS NOT NULL;
    CREATE INDEX tasks_owner_claim ON tasks(owner_uid, status, priority DESC, id)
        WHERE pinned_agent IS NULL;
    CREATE INDEX tasks_unresolved ON tasks(status)
        WHERE pinned_agent IS NOT NULL AND pinned_agent_id IS NULL;
    CREATE TABLE approvals (id INTEGER PRIMARY KEY,
        task_id INTEGER NOT NULL REFERENCES tasks(id), agent_id INTEGER NOT NULL,
        owner_uid INTEGER NOT NULL, attempt INTEGER NOT NULL, tool TEXT NOT NULL,
        arguments TEXT NOT NULL, why TEXT NOT NULL DEFAULT '', status TEXT NOT NULL
            CHECK (status IN ('pending', 'granted', 'denied', 'used')),
        reason TEXT NOT NULL DEFAULT '', always INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL, deadline REAL NOT NULL, answered_by INTEGER,
        answered_at REAL, used_attempt INTEGER, used_at REAL);
    CREATE INDEX approvals_task ON approvals(task_id, id);
    CREATE INDEX approvals_owner ON approvals(owner_uid, id);
    CREATE INDEX approvals_due ON approvals(deadline) WHERE status = 'pending';
    CREATE TABLE approval_allow (agent_id INTEGER NOT NULL, pattern TEXT NOT NULL,
        approval_id INTEGER NOT NULL REFERENCES approvals(id), by_uid INTEGER NOT NULL,
        at REAL NOT NULL, PRIMARY KEY (agent_id, pattern));
    """
