"""The registry against fakes: authorization, all-or-nothing creation and
removal, and recovery from a crash at each step."""

from pathlib import Path

import pytest
from fakes import Crash
from world import ALICE, BOB, ROOT, World

from agentd.errors import (
    AlreadyExists,
    InvalidArgument,
    InvalidName,
    LimitExceeded,
    NoSuchAgent,
    NoSuchTemplate,
    PermissionDenied,
    SystemError_,
)
from agentd.events import JobFinished
from agentd.policy import Caller


def test_create_makes_a_whole_agent(w: World) -> None:
    a = w.run(w.reg.create(ALICE, "writer", "writing"))
    assert a.state == "present" and a.owner_uid == 1000
    assert w.cfg.uid_min <= a.uid <= w.cfg.uid_max and a.gid == a.uid
    assert w.accounts.user("writer").uid == a.uid
    assert w.homes.owner("writer") == a.uid
    (row,) = w.audit_rows("agent.create")
    assert row.result == "ok" and row.actor_uid == 1000 and row.agent_uid == a.uid


def test_uids_are_unique_and_skip_taken_ones(w: World) -> None:
    w.accounts.foreign["squatter"] = w.cfg.uid_min
    uids = {w.run(w.reg.create(ROOT, f"a{i}", "sandbox")).uid for i in range(3)}
    assert len(uids) == 3 and w.cfg.uid_min not in uids


@pytest.mark.parametrize(
    ("name", "template", "limits", "error"),
    [
        ("Bad Name", "sandbox", {}, InvalidName),
        ("root", "sandbox", {}, InvalidName),
        ("ok", "no-such", {}, NoSuchTemplate),
        ("ok", "sandbox", {"memory_max": 1}, InvalidArgument),
        ("ok", "sandbox", {"tasks_max": 10**9}, InvalidArgument),
    ],
)
def test_bad_input_creates_nothing(w: World, name, template, limits, error) -> None:
    with pytest.raises(error):
        w.run(w.reg.create(ALICE, name, template, limits))
    assert (
        w.accounts.users == {}
        and w.homes.homes == {}
        and w.reg.agents(("creating", "present")) == []
    )
    assert w.audit_rows("agent.create")[-1].result == "refused"


def test_duplicate_name(w: World) -> None:
    w.run(w.reg.create(ALICE, "dup", "sandbox"))
    with pytest.raises(AlreadyExists):
        w.run(w.reg.create(BOB, "dup", "sandbox"))


def test_uid_range_exhausted(tmp_path: Path) -> None:
    w = World(tmp_path, uid_min=70000, uid_max=70001)
    w.run(w.reg.create(ROOT, "a", "sandbox"))
    w.run(w.reg.create(ROOT, "b", "sandbox"))
    with pytest.raises(LimitExceeded, match="exhausted"):
        w.run(w.reg.create(ROOT, "c", "sandbox"))


def test_per_owner_limit_applies_to_users_not_admins(tmp_path: Path) -> None:
    w = World(tmp_path, max_agents_per_owner=1)
    w.run(w.reg.create(ALICE, "one", "sandbox"))
    with pytest.raises(LimitExceeded):
        w.run(w.reg.create(ALICE, "two", "sandbox"))
    w.run(w.reg.create(ROOT, "three", "sandbox"))


def test_owners_manage_only_their_agents_and_denials_are_audited(w: World) -> None:
    w.run(w.reg.create(ALICE, "mine", "sandbox"))
    for op in (w.reg.start(BOB, "mine"), w.reg.stop(BOB, "mine"), w.reg.remove(BOB, "mine")):
        with pytest.raises(PermissionDenied):
            w.run(op)
    with pytest.raises(PermissionDenied):
        w.reg.get(BOB, "mine")
    assert [r.result for r in w.audit_rows("agent.remove")] == ["denied"]
    assert [a.name for a in w.reg.visible(BOB)] == []
    assert [a.name for a in w.reg.visible(ALICE)] == ["mine"]
    w.run(w.reg.start(ALICE, "mine"))
    assert "agent-mine.service" in w.units.running


def test_agents_manage_nothing_and_see_only_themselves(w: World) -> None:
    a = w.run(w.reg.create(ROOT, "worker", "sandbox"))
    w.run(w.reg.create(ROOT, "other", "sandbox"))
    me = Caller(a.uid, frozenset({a.uid}))
    with pytest.raises(PermissionDenied):
        w.run(w.reg.create(me, "spawn", "sandbox"))
    with pytest.raises(PermissionDenied):
        w.run(w.reg.stop(me, "other"))
    with pytest.raises(PermissionDenied):
        w.run(w.reg.stop(me, "worker"))
    assert [x.name for x in w.reg.visible(me)] == ["worker"]
    assert w.reg.register_runtime(me).name == "worker"
    assert "worker" in w.reg.online
    with pytest.raises(PermissionDenied):
        w.reg.register_runtime(ALICE)


def test_start_failure_is_typed_and_audited(w: World) -> None:
    w.run(w.reg.create(ROOT, "x", "sandbox"))
    w.units.fail_start = True
    with pytest.raises(SystemError_):
        w.run(w.reg.start(ROOT, "x"))
    assert w.audit_rows("agent.start")[-1].result == "error"


def test_start_returns_the_job_and_reports_its_outcome(w: World) -> None:
    w.run(w.reg.create(ALICE, "j", "sandbox"))
    seen: list = []
    w.reg.events.subscribe(
        JobFinished, lambda e: seen.append((e.agent.name, e.job, e.operation, e.result))
    )
    job = w.run(w.reg.start(ALICE, "j"))
    assert job.startswith("/org/freedesktop/systemd1/job/")
    assert seen == [("j", job, "start", "done")]
    row = w.audit_rows("agent.start")[-1]
    assert (row.result, row.detail["job"], row.actor_uid) == ("ok", job, 1000)
    w.units.job_result = "failed"
    job = w.run(w.reg.start(ALICE, "j"))
    assert seen[-1] == ("j", job, "start", "failed")
    assert w.audit_rows("agent.start")[-1].result == "failed"
    stop = w.run(w.reg.stop(ALICE, "j"))
    assert seen[-1][1:3] == (stop, "stop")


def test_useradd_failure_rolls_back(w: World) -> None:
    w.accounts.fail_useradd = True
    with pytest.raises(SystemError_):
        w.run(w.reg.create(ROOT, "x", "sandbox"))
    assert w.reg.find("x") is None and w.accounts.groups == {}
    assert w.audit_rows("agent.create")[-1].result == "rolled_back"


@pytest.mark.parametrize("where", ["after_group", "before_home"])
def test_crash_during_create_is_rolled_back_on_restart(w: World, where: str) -> None:
    if where == "after_group":
        w.accounts.crash_after_group = True
    else:
        w.homes.crash_on_make = True
    with pytest.raises(Crash):
        w.run(w.reg.create(ROOT, "half", "sandbox"))
    assert w.reg.find("half").state == "creating"
    w.accounts.crash_after_group = w.homes.crash_on_make = False
    repaired = w.run(w.reopen().reconcile())
    assert repaired == ["rolled back creation of half"]
    assert w.reg.find("half") is None
    assert w.accounts.users == {} and w.accounts.groups == {} and w.homes.homes == {}
    assert w.audit_rows("agent.create")[-1].result == "rolled_back"
    assert w.audit.verify().ok


def test_crash_during_remove_is_finished_on_restart(w: World) -> None:
    w.run(w.reg.create(ROOT, "gone", "sandbox"))
    w.run(w.reg.start(ROOT, "gone"))

    async def crash(name: str) -> None:
        raise Crash()

    w.accounts.delete = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        w.run(w.reg.remove(ROOT, "gone", keep_home=True))
    del w.accounts.delete  # back to the class method
    assert w.reg.find("gone").state == "removing"
    w.run(w.reopen().reconcile())
    assert w.reg.find("gone") is None
    assert w.accounts.users == {} and w.homes.homes == {} and w.units.running == {}
    assert len(w.homes.archives) == 1
    assert w.audit_rows("agent.remove")[-1].result == "repaired"


def test_orphans_are_removed_and_missing_parts_recreated(w: World) -> None:
    w.run(w.reg.create(ROOT, "kept", "sandbox"))
    w.run(w.accounts.add("stray", w.cfg.uid_min + 50, Path("/home/agents/stray")))
    w.homes.homes["stray"] = w.cfg.uid_min + 50
    w.units.running["agent-stray.service"] = []
    del w.accounts.users["kept"]
    repaired = w.run(w.reg.reconcile())
    assert "recreated user kept" in repaired
    assert any("orphan user stray" in r for r in repaired)
    assert any("orphan unit agent-stray.service" in r for r in repaired)
    assert "stray" not in w.accounts.users and "stray" not in w.homes.homes
    assert w.accounts.user("kept") is not None
    assert w.run(w.reg.reconcile()) == []  # idempotent


def test_remove_with_and_without_keep_home(w: World) -> None:
    w.run(w.reg.create(ALICE, "a", "sandbox"))
    w.run(w.reg.create(ALICE, "b", "sandbox"))
    w.run(w.reg.remove(ALICE, "a"))
    w.run(w.reg.remove(ALICE, "b", keep_home=True))
    assert w.homes.homes == {} and len(w.homes.archives) == 1
    assert "b-" in w.homes.archives[0].name
    with pytest.raises(NoSuchAgent):
        w.run(w.reg.remove(ALICE, "a"))
    # A removed name can be created again, with a fresh row.
    assert w.run(w.reg.create(ALICE, "a", "sandbox")).state == "present"


def test_heartbeat_sweep_marks_offline(w: World) -> None:
    a = w.run(w.reg.create(ROOT, "hb", "sandbox"))
    me = Caller(a.uid)
    w.reg.register_runtime(me)
    w.reg.sweep(now=10**12)
    assert "hb" not in w.reg.online
    assert w.audit_rows("agent.offline")[-1].detail["reason"] == "heartbeat lost"
    w.reg.heartbeat(me)
    assert "hb" in w.reg.online


def test_a_runtime_of_an_agent_being_removed_is_busy_not_an_intruder(w: World) -> None:
    from agentd.errors import Busy

    a = w.run(w.reg.create(ROOT, "leaving", "sandbox"))
    with w.store.transaction():
        w.store.execute("UPDATE agents SET state='removing' WHERE name='leaving'")
    with pytest.raises(Busy):
        w.reg.heartbeat(Caller(a.uid))
    assert not [r for r in w.audit.entries(limit=1000) if r.result == "denied"]
    with pytest.raises(PermissionDenied):
        w.reg.heartbeat(Caller(w.cfg.uid_max))  # a UID that is no agent at all
