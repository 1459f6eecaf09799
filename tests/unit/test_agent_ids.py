"""Issue 10, finding 4: tasks and audit rows follow an agent's id, never its
name or UID, both of which a new agent may reuse after a removal.

The attack: alice's agent ``build`` is removed; bob creates ``build`` (the
fake accounts hand out the lowest free UID, so it gets the same UID too); the
old agent's pinned, held, retried and lapsed tasks, and its audit rows, must
not reach bob's agent."""

from __future__ import annotations

import time
from pathlib import Path

import apsw
import pytest
from world import ALICE, BOB, World

from agentd.eventlog import EventLog
from agentd.policy import Caller, Role
from agentd.store import MIGRATIONS, Store
from agentd.tasks.queue import TaskQueue


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path)


def _reuse(w: World) -> tuple[object, object]:
    """Alice's build removed, bob's build created: (old, new)."""
    old = w.run(w.reg.create(ALICE, "build", "sandbox"))
    w.run(w.reg.remove(ALICE, "build"))
    new = w.run(w.reg.create(BOB, "build", "sandbox"))
    assert (new.name, new.uid) == (old.name, old.uid) and new.id != old.id
    return old, new


def test_a_task_pinned_to_a_removed_agent_fails_instead_of_reaching_its_namesake(
    w: World,
) -> None:
    q = TaskQueue(w.store, w.reg)
    w.run(w.reg.create(ALICE, "build", "sandbox"))
    t = q.submit(ALICE, {"title": "deploy", "agent": "build", "exec": "make deploy"}).id
    w.run(w.reg.remove(ALICE, "build"))
    bobs = w.run(w.reg.create(BOB, "build", "sandbox"))
    assert q.claim(bobs) is None
    assert q.assign() == set()  # the scheduler's pass fails it, gives it nobody
    task = q.find(t)
    assert (task.status, task.agent_id) == ("failed", None)
    assert "was removed" in (task.error or "")
    assert q.claim(bobs) is None


def test_a_held_task_is_not_renewed_completed_or_retried_by_the_namesake(w: World) -> None:
    q = TaskQueue(w.store, w.reg)
    old = w.run(w.reg.create(ALICE, "build", "sandbox"))
    t = q.submit(ALICE, {"title": "secret", "agent": "build"}).id
    claimed = q.claim(old)
    assert claimed is not None and claimed.id == t
    w.run(w.reg.remove(ALICE, "build"))
    bobs = w.run(w.reg.create(BOB, "build", "sandbox"))
    assert q.renew(bobs) == []
    lease = q.find(t).lease_expires
    with pytest.raises(Exception, match="not claimed by build"):
        w.run(q.complete(bobs, t, claimed.attempts, '"forged"', []))
    assert q.find(t).status == "in_progress" and q.find(t).lease_expires == lease
    # the lease lapses: back to the pinned agent, which is gone, so it fails
    q.expire_leases(time.time() + 10**6)
    q.assign()
    assert q.claim(bobs) is None
    assert q.find(t).status in ("failed", "dead_lettered")
    q.retry(ALICE, t)
    assert q.claim(bobs) is None and q.assign() == set()
    assert q.find(t).status == "failed"


def test_an_unpinned_task_goes_to_its_owners_other_agents_only(w: World) -> None:
    q = TaskQueue(w.store, w.reg)
    old = w.run(w.reg.create(ALICE, "build", "sandbox"))
    q.submit(ALICE, {"title": "mine"})
    assert q.assign() == {"build"}
    w.run(w.reg.remove(ALICE, "build"))
    bobs = w.run(w.reg.create(BOB, "build", "sandbox"))
    assert bobs.id != old.id
    assert q.assign() == set() and q.claim(bobs) is None
    alices = w.run(w.reg.create(ALICE, "other", "sandbox"))
    assert q.assign() == {"other"}
    got = q.claim(alices)
    assert got is not None and (got.agent, got.agent_id) == ("other", alices.id)


def test_audit_rows_follow_the_agent_id_not_the_reused_name_and_uid(w: World) -> None:
    old, new = _reuse(w)
    log = EventLog(w.audit, w.reg, w.reg.policy)
    mine = {e.seq for e in log.entries(ALICE, 0, 1000) if e.agent == "build"}
    bobs = {e.seq for e in log.entries(BOB, 0, 1000) if e.agent == "build"}
    ids = {e.seq: e.agent_id for e in w.audit.entries(limit=1000) if e.agent == "build"}
    assert mine and bobs and not mine & bobs
    assert {ids[s] for s in mine} == {old.id}  # her removed agent's history stays hers
    assert {ids[s] for s in bobs} == {new.id}
    assert w.audit.verify().ok


def test_audit_rows_from_before_agent_ids_are_read_as_of_their_time(w: World) -> None:
    _old, new = _reuse(w)
    # rows written before migration 5 carried no agent id (hashes stay valid: a
    # row without agent_id hashes as before)
    w.store.execute("UPDATE audit SET agent_id=NULL")
    log = EventLog(w.audit, w.reg, w.reg.policy)
    seen_by_bob = [e for e in log.entries(BOB, 0, 1000) if e.actor_uid != BOB.uid]
    alices = [e for e in log.entries(ALICE, 0, 1000) if e.actor_uid != ALICE.uid]
    assert all(e.ts >= new.created_at for e in seen_by_bob), seen_by_bob
    assert all(e.ts < new.created_at for e in alices), alices
    assert [e.action for e in log.entries(ALICE, 0, 1000)] == ["agent.create", "agent.remove"]


def test_agent_rows_are_never_deleted_so_ids_are_never_reused(w: World) -> None:
    old, new = _reuse(w)
    with pytest.raises(apsw.ConstraintError, match="never deleted"):
        w.store.execute("DELETE FROM agents WHERE id=?", (old.id,))
    third = w.run(w.reg.create(ALICE, "third", "sandbox"))
    assert third.id > new.id > old.id


def test_schema_5_gives_tasks_the_agent_of_their_time(tmp_path: Path) -> None:
    db = apsw.Connection(str(tmp_path / "old.db"))
    for step in MIGRATIONS[:4]:
        db.execute(step)
    db.execute("PRAGMA user_version=4")
    agent = (
        "INSERT INTO agents (name, uid, gid, owner_uid, template, profile, memory_max, "
        "cpu_quota, tasks_max, state, created_at) VALUES (?,?,?,?,'t','p',1,1,1,?,?)"
    )
    db.execute(agent, ("build", 70001, 70001, 1000, "removed", 10.0))  # id 1, alice's
    db.execute(agent, ("build", 70001, 70001, 1001, "present", 20.0))  # id 2, bob's
    task = (
        "INSERT INTO tasks (title, owner_uid, priority, status, pinned_agent, agent, "
        "max_attempts, created_at, updated_at) VALUES (?,?,1,'pending',?,?,3,?,?)"
    )
    db.execute(task, ("alice's", 1000, "build", "build", 15.0, 15.0))
    db.execute(task, ("bob's", 1001, "build", "build", 25.0, 25.0))
    db.execute(task, ("nobody's", 1000, "ghost", None, 25.0, 25.0))
    db.close()
    store = Store(tmp_path / "old.db")
    rows = store.query("SELECT title, pinned_agent_id, agent_id FROM tasks ORDER BY id")
    assert [tuple(r.values()) for r in rows] == [
        ("alice's", 1, 1),
        ("bob's", 2, 2),
        ("nobody's", None, None),
    ]
    store.close()


# -- issue 10, finding 10's leftovers ----------------------------------------------------------
def test_verify_finds_a_cut_tail_that_journald_recorded(w: World) -> None:
    for name in ("j1", "j2", "j3"):
        w.run(w.reg.create(ALICE, name, "sandbox"))
    journal: dict[str, tuple[int, str]] = {}
    seq, digest = w.audit.head()
    chain = w.audit.chain()
    assert chain is not None
    journal[chain] = (seq, digest)
    w.audit.anchor = journal.get
    assert w.audit.verify().ok
    keep = seq - 2
    kept = w.store.scalar("SELECT hash FROM audit WHERE seq=?", (keep,))
    w.store.execute("DELETE FROM audit WHERE seq>?", (keep,))
    w.store.execute("UPDATE meta SET value=? WHERE key='audit_head'", (f"{keep}:{kept}",))
    v = w.audit.verify()
    assert not v.ok and f"rows {keep + 1}-{seq} were removed" in v.message
    journal[chain] = (keep, "0" * 64)  # journald's copy of a row differs
    v = w.audit.verify()
    assert not v.ok and "differs from journald" in v.message
    journal.clear()  # another chain's records (a new database) say nothing of this one
    assert w.audit.verify().ok


class _Logins:
    def __init__(self, members: set[int]) -> None:
        self.members = members

    def uid_min(self) -> int:
        return 1000

    def shell(self, uid: int) -> str | None:
        return "/bin/bash"

    def member(self, uid: int, gid: int) -> bool:
        return uid in self.members


def test_an_admin_removed_from_the_group_stops_being_one_at_once(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = w.reg.policy
    monkeypatch.setattr(policy, "admin_gid", lambda: 4242)
    logins = _Logins({1002})
    policy.logins = logins
    carol = Caller(1002, frozenset({1002, 4242}))  # her connection's groups, from login
    assert policy.role(carol) is Role.ADMIN
    logins.members.clear()  # gpasswd -d carol agentd-admin; her process keeps the gid
    assert policy.role(carol) is Role.USER


def test_narrowing_the_uid_range_keeps_agents_agents(tmp_path: Path) -> None:
    a = World(tmp_path).run(World(tmp_path).reg.create(ALICE, "narrow", "sandbox"))
    narrowed = World(tmp_path, uid_min=a.uid + 1000, uid_max=a.uid + 2000)  # restarted
    assert narrowed.reg.policy.role(Caller(a.uid, frozenset({a.gid}))) is Role.AGENT
