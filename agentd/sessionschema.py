"""Store migration 11 (agentd.store.MIGRATIONS[10]): chat sessions (agentd.sessions).

agentd.sessions.store alone reads and writes these tables; kept apart
so that agentd.store stays under the house limit of 500 lines. A session's
turns go with it (ON DELETE CASCADE); agents' rows are never deleted (their
ids stay taken), so a session of a removed agent is dropped by agentd
(Sessions.forget_agent, and again at start for a crash in between).
"""

MIGRATION_11 = """
    CREATE TABLE chat_sessions (
        id              INTEGER PRIMARY KEY,
        agent_id        INTEGER NOT NULL REFERENCES agents(id),
        owner_uid       INTEGER NOT NULL,
        caller_uid      INTEGER NOT NULL,
        title           TEXT NOT NULL,
        summary         TEXT NOT NULL DEFAULT '',
        folded          INTEGER NOT NULL DEFAULT 0,
        facts           INTEGER NOT NULL DEFAULT 0,
        turns           INTEGER NOT NULL DEFAULT 0,
        tokens_per_char REAL NOT NULL,
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL
    );
    CREATE INDEX chat_sessions_agent ON chat_sessions(agent_id, updated_at);
    CREATE TABLE chat_turns (
        session_id  INTEGER NOT NULL REFERENCES chat_sessions(id) ON DELETE CASCADE,
        seq         INTEGER NOT NULL,
        role        TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content     TEXT NOT NULL,
        tokens      INTEGER NOT NULL DEFAULT 0,
        created_at  REAL NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
"""
