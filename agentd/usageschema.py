"""Store migration 10 (agentd.store.MIGRATIONS[9]): usage of kind 'embed'.

Embedding tokens (agentd.memory) are metered against quotas like generation,
as usage rows of kind 'embed'; those of an owner's knowledge base belong to no
agent (agent '', agent_uid -1) and count in the owner's quota only. usage is
rebuilt (copied, recreated, refilled) only so that its kind CHECK accepts
'embed'. Kept apart so that agentd.store stays under 500 lines.
"""

MIGRATION_10 = """
    CREATE TABLE usage_new (
        id                INTEGER PRIMARY KEY,
        ts                REAL NOT NULL,
        agent             TEXT NOT NULL,
        agent_uid         INTEGER NOT NULL,
        owner_uid         INTEGER NOT NULL,
        kind              TEXT NOT NULL CHECK (kind IN ('chat', 'think', 'embed')),
        task_id           INTEGER,
        prompt_tokens     INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        status            TEXT NOT NULL CHECK (status IN ('ok', 'error', 'cancelled')),
        duration_s        REAL NOT NULL
    );
    INSERT INTO usage_new SELECT id, ts, agent, agent_uid, owner_uid, kind, task_id,
        prompt_tokens, completion_tokens, status, duration_s FROM usage;
    DROP TABLE usage;
    ALTER TABLE usage_new RENAME TO usage;
    CREATE INDEX usage_agent ON usage(agent, ts);
    CREATE INDEX usage_owner ON usage(owner_uid, ts);
    CREATE INDEX usage_agent_owner ON usage(agent, owner_uid, ts);
    """

# 14: when a model call's first token reached agentd (seconds after the call
# began; NULL for a call that streamed none, and for rows before it): the
# "first model token" of issue 14's spawn-to-first-token (bench/goals.py).
MIGRATION_14 = """
    ALTER TABLE usage ADD COLUMN first_token_s REAL;
"""
