"""A task blocked on a model quota resumes by itself (agentd.tasks.resume): at
the reset the refusal named, or when an admin sets or resets the quota; never a
task that changed since, and never faster than MIN_WAIT for a reset in the past.
The quota refusal's text is agentd.quotas' own, from a real Meter."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from world import ALICE, ROOT, World

from agentd.errors import QuotaExceeded
from agentd.quotas import Meter
from agentd.scheduler import Scheduler
from agentd.tasks.queue import TaskQueue
from agentd.tasks.resume import MIN_WAIT, quota_reset


class R:
    def __init__(self, tmp_path: Path) -> None:
        self.w = World(tmp_path)
        self.q = TaskQueue(self.w.store, self.w.reg)
        self.meter = Meter(self.w.cfg, self.w.store, self.w.audit, self.w.reg)
        self.a1 = self.w.run(self.w.reg.create(ALICE, "a1", "sandbox"))
        self.tid = self.q.submit(ALICE, {"title": "t", "agent": "a1"}).id
        assert self.q.claim(self.a1) is not None

    def refusal(self) -> QuotaExceeded:
        """What Think answers an agent over its quota (agentd.quotas' message)."""
        self.meter.set(ROOT, "agent", "a1", 5, "daily")
        self.meter.record(self.a1, "think", 5, 0, "ok", 0.1)
        with pytest.raises(QuotaExceeded) as e:
            self.meter.check(self.a1, self.a1.uid)
        return e.value

    def status(self) -> str:
        return self.q.find(self.tid).status


@pytest.fixture
def r(tmp_path: Path) -> R:
    return R(tmp_path)


def test_a_quota_blocked_task_resumes_at_the_reset_by_itself(r: R) -> None:
    refused = r.refusal()
    r.q.block(r.a1, r.tid, 1, str(refused))
    assert r.status() == "blocked"
    assert r.q.resumes.resume(now=time.time()) == [] and r.status() == "blocked"
    resumed = r.q.resumes.resume(now=refused.resets_at)
    assert [t.id for t in resumed] == [r.tid] and r.status() == "pending"
    (row,) = [e for e in r.w.audit.entries(task_id=r.tid) if e.action == "task.unblocked"]
    assert (row.actor_uid, row.detail["reason"]) == (0, "quota reset")
    again = r.q.claim(r.a1)
    assert again is not None and again.id == r.tid  # the same agent claims it again
    assert r.q.resumes.resume(now=refused.resets_at + 1) == []  # the row is gone


@pytest.mark.parametrize("how", ["reset", "set"])
def test_an_admins_reset_or_new_quota_resumes_it_now(r: R, how: str) -> None:
    r.q.block(r.a1, r.tid, 1, str(r.refusal()))
    time.sleep(0.01)  # set_at after the block's time, as it is for any person
    if how == "reset":
        r.meter.reset(ROOT, "agent", "a1")
    else:
        r.meter.set(ROOT, "owner", str(ALICE.uid), 0, "daily")
    assert [t.id for t in r.q.resumes.resume()] == [r.tid] and r.status() == "pending"


def test_a_task_changed_since_is_left_alone(r: R) -> None:
    r.q.block(r.a1, r.tid, 1, str(r.refusal()))
    r.q.unblock(ALICE, r.tid, "go on")  # its owner did it first
    assert r.q.claim(r.a1) is not None
    r.q.block(r.a1, r.tid, 2, "which file?")  # blocked again, on a question
    assert r.q.resumes.resume(now=time.time() + 40 * 86400) == []
    assert r.q.find(r.tid).block_reason == "which file?"


def test_other_blocks_do_not_resume(r: R) -> None:
    r.q.block(r.a1, r.tid, 1, "which file?")
    r.meter.reset(ROOT, "agent", "a1")
    assert r.q.resumes.resume(now=time.time() + 40 * 86400) == [] and r.status() == "blocked"


def test_a_reset_in_the_past_waits_instead_of_spinning() -> None:
    now = time.time()
    assert quota_reset("the quota resets at 2000-01-01 00:00 UTC", now) == now + MIN_WAIT
    assert quota_reset("no quota here", now) is None
    at = quota_reset("; the quota resets at 2100-01-01 00:00 UTC", now)
    assert at is not None and at <= now + 32 * 86400  # bounded by the longest period


def test_the_scheduler_resumes_it_without_anyone(r: R) -> None:
    refused = r.refusal()
    r.q.block(r.a1, r.tid, 1, str(refused))
    sched = Scheduler(r.w.reg, r.q, r.w.units, r.w.reg.events)

    async def main() -> None:
        await sched.step(now=refused.resets_at + 1)
        await r.w.reg.settle()  # the unit it starts for the work (scale from zero)

    r.w.run(main())
    task = r.q.find(r.tid)
    assert task.status == "pending" and task.agent == "a1"
