"""Store migration 17 (agentd.store.MIGRATIONS[16]): quota plan assignments.

agentd.plans alone reads and writes this table; kept apart so that
agentd.store stays under the house limit.

- plan_assignments: one row per user or Unix group an administrator gave a
  plan (agentctl plan assign). ``subject`` is the UID or GID in decimal, not
  a name, so a renamed user or group keeps its plan. ``plan`` is a plan's
  name in agentd.toml; a row naming a plan no longer there is kept (and
  shown) but ignored, so editing agentd.toml never loses an assignment.
  Removing an assignment deletes its row; the audit log keeps the history.
"""

MIGRATION_17 = """
    CREATE TABLE plan_assignments (
        kind     TEXT NOT NULL CHECK (kind IN ('user', 'group')),
        subject  TEXT NOT NULL,
        plan     TEXT NOT NULL,
        set_by   INTEGER NOT NULL,
        set_at   REAL NOT NULL,
        PRIMARY KEY (kind, subject)
    );
"""
