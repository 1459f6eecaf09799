"""The task queue against fakes: validation, routing, claims, leases, retries,
dead letters, authorization, artifacts and the audit events of it all."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest
from world import ALICE, BOB, ROOT, World

from agentd.agent import Agent
from agentd.audit import GENESIS, AuditLog, row_hash
from agentd.errors import (
    Busy,
    InvalidArgument,
    InvalidName,
    LeaseExpired,
    NoCapableAgent,
    NoSuchProject,
    NoSuchTask,
    PermissionDenied,
)
from agentd.events import TaskChanged
from agentd.policy import Caller
from agentd.store import Store
from agentd.tasks.queue import TaskQueue


class Q:
    """A World with a queue and helpers to act as agents."""

    def __init__(self, tmp_path: Path, **cfg: object) -> None:
        self.w = World(tmp_path, **cfg)
        self.q = TaskQueue(self.w.store, self.w.reg)
        self.events: list[tuple[int, str]] = []
        self.w.reg.events.subscribe(TaskChanged, lambda e: self.events.append((e.task.id, e.event)))

    def agent(self, name: str, owner: Caller = ALICE, template: str = "sandbox") -> Agent:
        return self.w.run(self.w.reg.create(owner, name, template))

    def submit(self, caller: Caller = ALICE, **spec: object) -> int:
        spec.setdefault("title", "t")
        return self.q.submit(caller, spec).id

    def status(self, task_id: int) -> str:
        return self.q.find(task_id).status

    def audit(self, action: str) -> list:
        return [e for e in self.w.audit.entries(limit=100000) if e.action == action]


@pytest.fixture
def q(tmp_path: Path) -> Q:
    return Q(tmp_path)


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"title": ""}, InvalidArgument),
        ({"title": "x", "colour": "red"}, InvalidArgument),
        ({"title": "x", "priority": "urgent"}, InvalidArgument),
        ({"title": "x", "needs": ["Bad Cap"]}, InvalidArgument),
        ({"title": "x", "max_attempts": 0}, InvalidArgument),
        ({"title": "x" * 300}, InvalidArgument),
        ({"title": "x", "description": "d" * 70000}, InvalidArgument),
        ({"title": "x", "needs": ["flying"]}, NoCapableAgent),
        ({"title": "x", "project": "nope"}, NoSuchProject),
        ({"title": "x", "after": [999]}, NoSuchTask),
        ({"title": "x", "agent": "ghost"}, NoCapableAgent),
    ],
)
def test_bad_submissions_are_typed_refused_and_audited(q: Q, spec: dict, error: type) -> None:
    q.agent("a1")
    with pytest.raises(error):
        q.q.submit(ALICE, spec)
    assert q.q.list(ALICE, {}) == []
    assert q.audit("task.create")[-1].result == "refused"


def test_exec_needs_an_agent_with_the_shell_tool(q: Q) -> None:
    q.agent("writer", template="writing")  # no shell tool
    with pytest.raises(NoCapableAgent, match="shell"):
        q.submit(exec="true")
    with pytest.raises(NoCapableAgent, match="lacks"):
        q.submit(agent="writer", exec="true")
    q.agent("runner")  # sandbox: has shell
    assert q.submit(exec="true")


def test_tasks_route_only_to_the_owners_agents(q: Q) -> None:
    q.agent("bobs", owner=BOB)
    with pytest.raises(NoCapableAgent):
        q.submit(ALICE)  # alice owns no agent
    with pytest.raises(NoCapableAgent, match="another user"):
        q.submit(ALICE, agent="bobs")
    q.agent("alices")
    tid = q.submit(ALICE)
    assert q.q.assign() == {"alices"}
    assert q.q.find(tid).agent == "alices"


def test_assignment_balances_load_within_wip(q: Q) -> None:
    q.agent("a1")
    q.agent("a2")  # sandbox: concurrency 2 each
    ids = [q.submit() for _ in range(5)]
    q.q.assign()
    agents = [q.q.find(i).agent for i in ids]
    assert agents.count("a1") == 2 and agents.count("a2") == 2 and agents[-1] is None
    assert q.audit("task.assigned")[0].detail["task_id"] == ids[0]


def test_claim_takes_priority_then_age_and_is_atomic(q: Q) -> None:
    a = q.agent("a1")
    low = q.submit(priority="low")
    crit = q.submit(priority="critical")
    q.q.assign()
    first = q.q.claim(a)
    assert first.id == crit and first.status == "in_progress" and first.attempts == 1
    second = q.q.claim(a)
    assert second.id == low
    assert q.q.claim(a) is None  # nothing left: nothing claimed twice
    assert [e.detail["task_id"] for e in q.audit("task.claimed")] == [crit, low]


def test_dependencies_run_in_order(q: Q) -> None:
    a = q.agent("a1")
    first = q.submit(title="first")
    second = q.submit(title="second", after=[first])
    q.q.assign()
    assert q.q.find(second).agent is None  # not runnable yet
    t = q.q.claim(a)
    assert t.id == first and q.q.claim(a) is None
    run(q.q.complete(a, first, 1, '{"ok": true}', []))
    q.q.assign()
    assert q.q.claim(a).id == second


def test_lost_lease_retries_with_backoff_then_dead_letters(tmp_path: Path) -> None:
    qq = Q(tmp_path, retry_backoff=2)
    a = qq.agent("a1")
    tid = qq.submit(max_attempts=2)
    qq.q.assign()
    t = qq.q.claim(a)
    expired = qq.q.expire_leases(now=t.lease_expires + 1)
    assert [x.status for x in expired] == ["pending"]
    t = qq.q.find(tid)
    assert t.agent is None and t.not_before >= t.updated_at + 2 - 0.01  # backoff
    qq.q.assign(now=t.not_before + 1)
    assert qq.q.claim(a) is None  # still backing off in real time
    with qq.w.store.transaction():
        qq.w.store.execute("UPDATE tasks SET not_before=0 WHERE id=?", (tid,))
    qq.q.assign()
    t = qq.q.claim(a)
    assert t.attempts == 2
    qq.q.expire_leases(now=t.lease_expires + 1)
    assert qq.status(tid) == "dead_lettered"
    assert [e.action for e in qq.w.audit.entries(task_id=tid)][-1] == "task.dead_lettered"
    qq.q.retry(ALICE, tid)
    assert qq.q.find(tid).status == "pending" and qq.q.find(tid).attempts == 0


def test_stale_and_foreign_reports_are_refused(q: Q) -> None:
    a = q.agent("a1")
    b = q.agent("b1")
    tid = q.submit(agent="a1")
    q.q.assign()
    t = q.q.claim(a)
    with pytest.raises(PermissionDenied):
        run(q.q.complete(b, tid, 1, "", []))
    assert q.audit("task.completed")[-1].result == "denied"
    with pytest.raises(LeaseExpired):
        run(q.q.complete(a, tid, 2, "", []))  # not the current attempt
    q.q.expire_leases(now=t.lease_expires + 1)
    with pytest.raises(LeaseExpired):
        run(q.q.complete(a, tid, 1, "", []))  # the claim lapsed meanwhile
    with q.w.store.transaction():
        q.w.store.execute("UPDATE tasks SET not_before=0 WHERE id=?", (tid,))
    q.q.assign()
    assert q.q.claim(a).attempts == 2
    with pytest.raises(InvalidArgument):
        run(q.q.complete(a, tid, 2, "not json", []))


def test_cancel_aborts_a_running_task_through_the_heartbeat(q: Q) -> None:
    a = q.agent("a1")
    tid = q.submit()
    q.q.assign()
    q.q.claim(a)
    q.q.cancel(ALICE, tid)
    assert q.status(tid) == "cancelled"
    assert q.q.renew(a) == [tid] and q.q.renew(a) == []
    with pytest.raises(LeaseExpired):
        run(q.q.complete(a, tid, 1, "", []))
    with pytest.raises(Busy):
        q.q.cancel(ALICE, tid)


def test_block_and_unblock_with_a_note(q: Q) -> None:
    a = q.agent("a1")
    tid = q.submit()
    q.q.assign()
    q.q.claim(a)
    q.q.block(a, tid, 1, "which file?")
    assert q.q.find(tid).block_reason == "which file?"
    q.q.unblock(ALICE, tid, "use notes.txt")
    t = q.q.find(tid)
    assert t.status == "pending" and t.notes == ("use notes.txt",)
    q.q.assign()
    assert q.q.claim(a).attempts == 2


def test_other_users_and_agents_cannot_touch_tasks(q: Q) -> None:
    a = q.agent("a1")
    tid = q.submit()
    for op in (
        lambda c: q.q.get(c, tid),
        lambda c: q.q.cancel(c, tid),
        lambda c: q.q.retry(c, tid),
        lambda c: q.q.events(c, tid),
    ):
        with pytest.raises(PermissionDenied):
            op(BOB)
        with pytest.raises(PermissionDenied):
            op(Caller(a.uid))
    assert q.q.list(BOB, {}) == [] and [t.id for t in q.q.list(ROOT, {})] == [tid]
    with pytest.raises(PermissionDenied):
        q.q.submit(Caller(a.uid), {"title": "spawn"})


def test_claim_wait_wakes_when_work_is_assigned(q: Q) -> None:
    a = q.agent("a1")

    async def scenario() -> int:
        waiter = asyncio.create_task(q.q.claim_wait(a, 5))
        await asyncio.sleep(0.05)
        q.submit()
        q.q.assign()
        task = await asyncio.wait_for(waiter, 2)
        return task.id

    assert run(scenario()) == 1


def test_projects(q: Q) -> None:
    q.agent("a1")
    q.q.create_project(ALICE, "site", "the website")
    tid = q.submit(project="site")
    assert q.q.project(ALICE, "site")["tasks"] == 1
    with pytest.raises(PermissionDenied):
        q.q.project(BOB, "site")
    with pytest.raises(Busy):
        q.q.remove_project(ALICE, "site")
    q.q.cancel(ALICE, tid)
    q.q.remove_project(ALICE, "site")
    assert q.q.projects(ALICE) == []


def test_a_project_that_is_not_a_name_is_refused_typed(q: Q) -> None:
    """The fuzz test's find: a project given as an array crashed SubmitTask."""
    q.agent("a1")
    for bad in (["a", "b"], 7, "Not A Name"):
        with pytest.raises(InvalidName):
            q.submit(project=bad)


def test_artifacts_must_be_the_agents_own_files_in_its_home(q: Q, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "artifacts").mkdir(parents=True)
    (home / "artifacts" / "report.txt").write_text("hello")
    (home / "artifacts" / "link").symlink_to("/etc/passwd")
    (tmp_path / "outside.txt").write_text("x")
    me = dataclasses.replace(q.agent("a1"), uid=os.getuid(), home=home)
    ok = q.q._inspect_artifacts(me, [("report.txt", "artifacts/report.txt")])
    assert ok[0].size == 5 and ok[0].type == "text/plain"
    assert ok[0].sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    with pytest.raises(PermissionDenied):
        q.q._inspect_artifacts(me, [("x", "../outside.txt")])
    with pytest.raises(PermissionDenied):
        q.q._inspect_artifacts(me, [("x", "artifacts/link")])  # resolves outside home
    with pytest.raises(InvalidArgument):
        q.q._inspect_artifacts(me, [("../bad", "artifacts/report.txt")])
    other = dataclasses.replace(me, uid=os.getuid() + 1)
    with pytest.raises(InvalidArgument, match="not owned"):
        q.q._inspect_artifacts(other, [("r", "artifacts/report.txt")])


def test_every_transition_is_an_audited_event_and_the_chain_holds(q: Q) -> None:
    a = q.agent("a1")
    tid = q.submit()
    q.q.assign()
    q.q.claim(a)
    run(q.q.complete(a, tid, 1, '{"answer": 42}', []))
    actions = [e.action for e in q.w.audit.entries(task_id=tid)]
    assert actions == ["task.created", "task.assigned", "task.claimed", "task.completed"]
    assert [e for _, e in q.events] == actions
    assert q.w.audit.verify().ok


def test_schema_1_databases_migrate_and_their_chain_still_verifies(tmp_path: Path) -> None:
    import agentd.store as store_mod

    old = store_mod.MIGRATIONS
    store_mod.MIGRATIONS = old[:1]
    store_mod.SCHEMA_VERSION = 1
    try:  # rows written the way schema-1 agentd wrote them
        s = Store(tmp_path / "old.db")
        prev = GENESIS
        for seq in (1, 2, 3):
            digest = row_hash(seq, 1.5, 0, "agent.create", f"a{seq}", None, "ok", "{}", prev)
            s.execute(
                "INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?)",
                (seq, 1.5, 0, "agent.create", f"a{seq}", None, "ok", "{}", prev, digest),
            )
            prev = digest
        s.execute("INSERT INTO meta VALUES ('audit_head', ?)", (f"3:{prev}",))
        s.close()
    finally:
        store_mod.MIGRATIONS = old
        store_mod.SCHEMA_VERSION = len(old)
    s = Store(tmp_path / "old.db")
    assert s.version == len(old)
    log = AuditLog(s, journal=None)
    assert log.verify().ok
    log.append("task.created", actor_uid=0, task_id=1)
    assert log.verify().ok and log.verify().checked == 4


def test_a_new_runtime_releases_the_claims_of_the_one_before(q: Q) -> None:
    a = q.agent("a1")
    tid = q.submit()
    q.q.assign()
    q.q.claim(a)
    q.q.renew(a)  # heartbeats alone would keep the dead instance's lease alive
    assert q.status(tid) == "in_progress"
    (released,) = q.q.release(a)
    assert released.id == tid and released.status == "pending"
    assert q.audit("task.lease_expired")[-1].detail["reason"] == "the runtime holding it restarted"


def test_a_long_poll_left_by_a_dead_runtime_claims_nothing(q: Q) -> None:
    a = q.agent("a1")

    async def scenario() -> object:
        orphan = asyncio.create_task(q.q.claim_wait(a, 5))
        await asyncio.sleep(0.05)
        q.q.release(a)  # a new runtime registered: the asker above is dead
        q.submit()
        q.q.assign()
        return await asyncio.wait_for(orphan, 2)

    assert run(scenario()) is None
    assert q.q.find(1).status == "pending"


def test_tasks_of_a_removed_agent_are_rerouted_or_failed_once(q: Q) -> None:
    q.agent("a1")
    q.agent("a2")
    pinned = q.submit(agent="a1")
    free = q.submit()
    q.q.assign()
    assert q.q.find(free).agent in ("a1", "a2")
    q.w.run(q.w.reg.remove(ALICE, "a1"))
    q.q.assign()
    q.q.assign()  # a second pass changes nothing more
    t = q.q.find(pinned)
    assert t.status == "failed" and "a1 was removed" in t.error
    assert q.q.find(free).agent == "a2"
    assert len(q.audit("task.failed")) == 1
