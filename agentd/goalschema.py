"""Store migration 12 (agentd.store.MIGRATIONS[11]): goals (agentd.goals).

agentd.goals.store alone reads and writes these tables; kept apart so that
agentd.store stays under the house limit of 500 lines.

- goals: one row per goal, its state and the plan being run or held. `round`
  counts plans made (1 the first, 2 after the one re-plan a failure allows);
  `answers` counts the planner's answers in this round (an invalid plan is
  asked again, with its errors in `feedback`, up to a bound).
- goal_tasks: the tasks a goal made, and what each is to it: the planner's
  'plan' and 'report' tasks, and a 'step' of a round's plan. Keyed by task, so
  a task event finds its goal with one look-up; tasks themselves are not
  changed (the queue knows nothing of goals).
- goal_agents: the sub-agents a goal created, by name, written before the
  agent is ('creating'), so a crash between the two leaves a row that says
  what to look for, and the goal's end removes every one ('removed').
- usage_task: the tokens each step spent (GetGoal, `goal watch`), read by
  task without a scan of every model call.
"""

MIGRATION_12 = """
    CREATE TABLE goals (
        id            INTEGER PRIMARY KEY,
        owner_uid     INTEGER NOT NULL,
        intent        TEXT NOT NULL,
        project_id    INTEGER REFERENCES projects(id),
        planner       TEXT NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ('planning', 'awaiting_approval',
                          'running', 'completed', 'failed', 'cancelled')),
        plan          TEXT,
        round         INTEGER NOT NULL DEFAULT 1,
        answers       INTEGER NOT NULL DEFAULT 0,
        feedback      TEXT NOT NULL DEFAULT '',
        approve_plan  INTEGER NOT NULL DEFAULT 0,
        max_agents    INTEGER NOT NULL,
        result        TEXT,
        error         TEXT,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        finished_at   REAL,
        version       INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX goals_owner ON goals(owner_uid, id);
    CREATE INDEX goals_open ON goals(state)
        WHERE state IN ('planning', 'awaiting_approval', 'running');
    CREATE TABLE goal_tasks (
        task_id   INTEGER PRIMARY KEY REFERENCES tasks(id),
        goal_id   INTEGER NOT NULL REFERENCES goals(id),
        role      TEXT NOT NULL CHECK (role IN ('plan', 'step', 'report')),
        round     INTEGER NOT NULL,
        step      TEXT
    );
    CREATE INDEX goal_tasks_goal ON goal_tasks(goal_id, round);
    CREATE TABLE goal_agents (
        name      TEXT PRIMARY KEY,
        goal_id   INTEGER NOT NULL REFERENCES goals(id),
        template  TEXT NOT NULL,
        state     TEXT NOT NULL CHECK (state IN ('creating', 'present', 'removed'))
    );
    CREATE INDEX goal_agents_goal ON goal_agents(goal_id);
    CREATE INDEX usage_task ON usage(task_id) WHERE task_id IS NOT NULL;
"""

# 13: sub-agents made for a goal's steps (agentd.goals.subagents). goal_agents
# of migration 12 was never written (no release made sub-agents): it is made
# again with the step each agent was made for, the states a creation can end
# in, and when; goals gain `sub_agents` (0: a person's "--no-sub-agents").
# - 'creating': the intent, written before the agent exists, so a crash leaves
#   a row that says what to look for (agentd.goals.subagents.reconcile);
# - 'present': made, and the goal's for its steps alone;
# - 'refused': agentd would not make it (the owner's limits, a name in use);
#   the error says why, and the goal makes no more (backpressure, not failure);
# - 'removed': the goal ended, its artifacts were copied, the agent is gone.
MIGRATION_13 = """
    DROP TABLE goal_agents;
    CREATE TABLE goal_agents (
        name        TEXT PRIMARY KEY,
        goal_id     INTEGER NOT NULL REFERENCES goals(id),
        template    TEXT NOT NULL,
        step        TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('creating', 'present', 'refused',
                        'removed')),
        error       TEXT,
        created_at  REAL NOT NULL,
        ready_at    REAL,
        removed_at  REAL
    );
    CREATE INDEX goal_agents_goal ON goal_agents(goal_id, state);
    CREATE INDEX goal_agents_live ON goal_agents(state) WHERE state IN ('creating', 'present');
    ALTER TABLE goals ADD COLUMN sub_agents INTEGER NOT NULL DEFAULT 1;
"""

# 15: delegation (agentd.goals.delegation): the child tasks an agent handed
# out from its running task (Runtime.Delegate), keyed by child, so a child's
# end finds its parent with one look-up; depth 1 for a person's task's
# children, 2 for theirs (the bound: agentd.goals.delegation.MAX_DEPTH).
MIGRATION_15 = """
    CREATE TABLE delegations (
        task_id     INTEGER PRIMARY KEY REFERENCES tasks(id),
        parent_id   INTEGER NOT NULL REFERENCES tasks(id),
        depth       INTEGER NOT NULL,
        agent       TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE INDEX delegations_parent ON delegations(parent_id);
"""
