"""Store migration 16 (agentd.store.MIGRATIONS[15]): teams and messages.

agentd.teams alone reads and writes the team tables, agentd.messages the
messages table; kept apart so that agentd.store stays under the house limit.

- teams: one row per team, written 'creating' before its Unix group and
  directory are made and 'removing' before they are taken away, so a crash
  in between leaves a row that says what to finish (agentd.teams.Teams.
  reconcile), as agents' rows do. `gid` is the group's, once made.
- team_members: which agents are in which team, by agent id (a name reused
  by a new agent is not a member). Applied to a member's unit at its start.
- team_tasks: the tasks submitted to a team (routed only to its members).
- messages: durable, ordered by id (so per sender and receiver too), each
  from an agent or a person (sender_agent_id NULL) to an agent or its owner
  (recipient_agent_id NULL). `delivered_at` is when Receive last handed it
  out: redelivered after a visibility timeout until acknowledged (`acked_at`),
  which is what "at least once" means here. Only unacknowledged messages are
  in the inbox index.
- goals.team_id: a goal whose steps the team's members run (no sub-agents).
"""

MIGRATION_16 = """
    CREATE TABLE teams (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        owner_uid   INTEGER NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        gid         INTEGER,
        state       TEXT NOT NULL
                    CHECK (state IN ('creating', 'present', 'removing', 'removed')),
        archive     TEXT,
        created_at  REAL NOT NULL,
        removed_at  REAL
    );
    CREATE UNIQUE INDEX teams_live_name ON teams(name) WHERE state != 'removed';
    CREATE TABLE team_members (
        team_id   INTEGER NOT NULL REFERENCES teams(id),
        agent_id  INTEGER NOT NULL REFERENCES agents(id),
        added_at  REAL NOT NULL,
        PRIMARY KEY (team_id, agent_id)
    );
    CREATE INDEX team_members_agent ON team_members(agent_id);
    CREATE TABLE team_tasks (
        task_id  INTEGER PRIMARY KEY REFERENCES tasks(id),
        team_id  INTEGER NOT NULL REFERENCES teams(id)
    );
    CREATE INDEX team_tasks_team ON team_tasks(team_id);
    CREATE TABLE messages (
        id                  INTEGER PRIMARY KEY,
        sender_uid          INTEGER NOT NULL,
        sender_agent_id     INTEGER REFERENCES agents(id),
        recipient_uid       INTEGER NOT NULL,
        recipient_agent_id  INTEGER REFERENCES agents(id),
        subject             TEXT NOT NULL,
        body                TEXT NOT NULL,
        sent_at             REAL NOT NULL,
        delivered_at        REAL,
        deliveries          INTEGER NOT NULL DEFAULT 0,
        acked_at            REAL
    );
    CREATE INDEX messages_inbox ON messages(recipient_agent_id, id) WHERE acked_at IS NULL;
    CREATE INDEX messages_to ON messages(recipient_agent_id, id);
    CREATE INDEX messages_from ON messages(sender_agent_id, id);
    CREATE INDEX messages_acked ON messages(acked_at) WHERE acked_at IS NOT NULL;
    ALTER TABLE goals ADD COLUMN team_id INTEGER REFERENCES teams(id);
"""
