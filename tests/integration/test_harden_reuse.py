"""Issue 10, finding 4, attacked in the systemd machine: tasks follow reused names.

alice's agent ``ru-build`` holds one task and has another pinned to it, waiting
for the first; alice removes the agent and bob creates an agent of the same
name. Before, retry, lease expiry, unblock and claims matched agents by name,
so the waiting task (its ``--exec`` command included) went to bob's agent, and
bob saw the old agent's audit rows. Now tasks and audit rows name the agent's
id, which is never reused: both tasks fail ("its agent was removed"), a retry
fails again, bob's agent runs nothing and bob sees none of it, while alice
still sees her removed agent's history; and bob is answered within 1 s
throughout.

agentd runs with short timings (lease 4 s) so that the held task's lease lapses
within the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agentd_helpers import FAST, Agentd, answering, wait_for

pytestmark = pytest.mark.integration
NAME = "ru-build"
DB = "/var/lib/agentd/agentd.db"


@pytest.fixture(scope="module")
def fast(agentd: Agentd) -> Iterator[Agentd]:
    with agentd.configured(FAST) as a:
        yield a


def status(a: Agentd, task: int) -> str:
    return str(a.ctl_json("task", "show", str(task), user="alice")["status"])


def task_of(row: dict) -> object:
    detail = row.get("detail")
    return detail.get("task_id") if isinstance(detail, dict) else None


def sql(a: Agentd, query: str) -> str:
    return str(a.sh(["sqlite3", DB, query]).stdout.strip())


def test_a_reused_name_inherits_no_task_and_no_audit_row(fast: Agentd) -> None:
    a = fast
    a.create(NAME, user="alice")
    old = a.ctl_json("agent", "show", NAME, user="alice")
    held = a.submit("holds the agent", "--agent", NAME, "--exec", "sleep 600")
    try:
        wait_for(lambda: status(a, held) == "in_progress", 60, "the first task claimed")
    except AssertionError:
        print(a.sh("journalctl --no-pager -n 150 -o short-monotonic", check=False).stdout)
        print(a.ctl("task", "show", str(held), user="alice", check=False).stdout)
        raise
    secret = a.submit(
        "secret", "--agent", NAME, "--after", str(held), "--exec", "touch $HOME/ran-secret"
    )
    with answering(a):
        a.ctl("agent", "rm", NAME, user="alice")
        a.create(NAME, user="bob")
        new = a.ctl_json("agent", "show", NAME, user="bob")
        print(f"old id {old['id']} uid {old['uid']}; new id {new['id']} uid {new['uid']}")
        assert new["id"] != old["id"] and new["owner_uid"] != old["owner_uid"]
        for task in (held, secret):
            wait_for(lambda t=task: status(a, t) == "failed", 90, f"task {task} failed")
        a.ctl("task", "retry", str(secret), user="alice")
        wait_for(lambda: status(a, secret) == "failed", 60, "the retried task failed again")
        a.ctl("agent", "start", NAME, user="bob")
        a.wait_online(NAME)

    shown = a.ctl_json("task", "show", str(secret), user="alice")
    assert "was removed" in shown["error"], shown
    claims = sql(a, f"SELECT agent_id FROM audit WHERE action='task.claimed' AND task_id={held}")
    assert claims.split() == [str(old["id"])]  # the first claim only, by the old agent
    assert (
        sql(a, f"SELECT count(*) FROM audit WHERE agent_id={new['id']} AND task_id IS NOT NULL")
        == "0"
    )
    assert sql(a, f"SELECT count(*) FROM tasks WHERE agent_id={new['id']}") == "0"
    assert a.sh(["test", "-e", f"{new['home']}/ran-secret"], check=False).returncode != 0

    bobs = a.ctl_json("audit", "--limit", "100000", user="bob")
    assert not [r for r in bobs if task_of(r) in (held, secret)], bobs[-5:]
    assert not [r for r in bobs if r["agent"] == NAME and r["actor_uid"] == old["owner_uid"]]
    alices = a.ctl_json("audit", "--limit", "100000", user="alice")
    theirs = {(r["action"], task_of(r)) for r in alices if r["agent"] == NAME}
    assert ("task.claimed", held) in theirs and ("agent.remove", None) in theirs, theirs
    assert not [r for r in alices if r["agent"] == NAME and r["actor_uid"] == new["owner_uid"]]
