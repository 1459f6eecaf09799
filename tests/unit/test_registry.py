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
from agentd.names import account_name
from agentd.policy import Caller


def test_create_makes_a_whole_agent(w: World) -> None:
    a = w.run(w.reg.create(ALICE, "writer", "writing"))
    assert a.state == "present" and a.owner_uid == 1000
    assert w.cfg.uid_min <= a.uid <= w.cfg.uid_max and a.gid == a.uid
    assert w.accounts.user(account_name("writer")).uid == a.uid
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
    w.run(w.accounts.add(account_name("stray"), w.cfg.uid_min + 50, Path("/home/agents/stray")))
    w.homes.homes["stray"] = w.cfg.uid_min + 50
    w.units.running["agent-stray.service"] = []
    del w.accounts.users[account_name("kept")]
    repaired = w.run(w.reg.reconcile())
    assert "recreated user kept" in repaired
    assert any("orphan user agent-stray" in r for r in repaired)
    assert any("orphan unit agent-stray.service" in r for r in repaired)
    assert account_name("stray") not in w.accounts.users and "stray" not in w.homes.homes
    assert w.accounts.user(account_name("kept")) is not None
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


# -- removal that fails, is retried, forced; never adopting a home ------------------------
def fail_removal(w: World, name: str = "big", kind: str = "too-big") -> None:
    w.run(w.reg.create(ALICE, name, "sandbox"))
    w.homes.fail["archive"] = kind
    with pytest.raises(SystemError_, match="stays 'removing'"):
        w.run(w.reg.remove(ALICE, name, keep_home=True))


def test_a_failed_removal_stays_removing_with_its_reason_visible(w: World) -> None:
    from agentd.registry import LISTED

    fail_removal(w)
    agent = w.reg.find("big")
    assert agent.state == "removing" and agent.archive
    assert "simulated archive failure" in w.reg.removal_error("big")
    assert [a.name for a in w.reg.visible(ALICE, states=LISTED)] == ["big"]
    assert w.reg.get(ALICE, "big", "agent.show", LISTED).state == "removing"
    row = w.audit_rows("agent.remove")[-1]
    assert row.result == "failed" and "simulated" in row.detail["reason"]
    assert w.homes.exists("big")
    assert w.accounts.user(account_name("big")) is not None  # nothing lost


def test_only_an_administrator_may_force_and_force_finishes(w: World) -> None:
    fail_removal(w)
    for who in (ALICE, BOB):
        with pytest.raises(PermissionDenied):
            w.run(w.reg.remove(who, "big", force=True))
    assert [r.result for r in w.audit_rows("agent.remove")[-2:]] == ["denied", "denied"]
    with pytest.raises(InvalidArgument):
        w.run(w.reg.remove(ROOT, "big", keep_home=True, force=True))
    w.homes.fail["remove"] = "mount"  # even a home that cannot be deleted
    w.run(w.reg.remove(ROOT, "big", force=True))
    assert w.reg.find("big") is None and w.accounts.user(account_name("big")) is None
    assert not w.homes.exists("big") and list(w.homes.aside) == [f"big-{w.cfg.uid_min}"]
    row = w.audit_rows("agent.remove")[-1]
    assert (row.result, row.actor_uid, row.detail["forced"]) == ("ok", 0, True)
    assert row.detail["archive"] is None and row.detail["home_set_aside"]
    assert [r.result for r in w.audit_rows("agent.remove")][-2:] == ["retrying", "ok"]


def test_the_owner_may_retry_without_keeping_the_home(w: World) -> None:
    fail_removal(w)
    w.run(w.reg.remove(ALICE, "big"))
    assert w.reg.find("big") is None and not w.homes.exists("big") and w.homes.archives == []


def test_a_failed_removal_is_left_for_the_admin_at_start_not_retried(w: World) -> None:
    fail_removal(w)
    failures = len(w.audit_rows("agent.remove"))
    reg = w.reopen()
    repaired = w.run(reg.reconcile())
    assert any("left the failed removal of big" in r for r in repaired)
    assert len(w.audit_rows("agent.remove")) == failures  # no new attempt
    assert reg.find("big").state == "removing" and "simulated" in reg.removal_error("big")
    assert w.run(reg.reconcile()) == repaired  # and again at the next start: no loop


def test_an_interrupted_removal_resumes_in_the_background(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from agentd import recovery

    w.run(w.reg.create(ALICE, "slow", "sandbox"))
    with w.store.transaction():  # agentd died mid-removal
        w.store.execute("UPDATE agents SET state='removing' WHERE name='slow'")
    monkeypatch.setattr(recovery, "RECONCILE_BUDGET", 0.05)

    async def main() -> list[str]:
        release = asyncio.Event()
        real = w.homes.remove

        async def hang(name: str) -> dict[str, object]:
            await release.wait()
            return await real(name)

        w.homes.remove = hang  # type: ignore[method-assign]
        reg = w.reopen()
        repaired = await reg.reconcile()  # returns within the budget
        assert reg.find("slow").state == "removing"
        release.set()
        await reg.settle()
        assert reg.find("slow") is None
        return repaired

    assert w.run(main()) == ["removal of slow: continues in the background"]
    assert w.audit_rows("agent.remove")[-1].result == "repaired"


def test_force_cancels_a_removal_under_way(w: World) -> None:
    import asyncio

    from agentd.errors import Busy

    w.run(w.reg.create(ALICE, "stuck", "sandbox"))

    async def main() -> None:
        entered = asyncio.Event()

        async def hang(name: str, dest: object, skip_empty: bool = False) -> dict[str, object]:
            entered.set()
            await asyncio.sleep(3600)
            return {}

        w.homes.archive = hang  # type: ignore[method-assign]
        first = asyncio.ensure_future(w.reg.remove(ALICE, "stuck", keep_home=True))
        await entered.wait()
        with pytest.raises(Busy):
            await w.reg.remove(ALICE, "stuck")  # one removal at a time
        await w.reg.remove(ROOT, "stuck", force=True)
        with pytest.raises(Busy, match="cancelled"):
            await first

    w.run(main())
    assert w.reg.find("stuck") is None and not w.homes.exists("stuck")


def test_unknown_remove_flags_are_refused_and_audited(w: World) -> None:
    from agentd.api.interfaces import manager as iface
    from agentd.registry import REMOVE_FORCE, REMOVE_KEEP_HOME

    assert (iface.REMOVE_KEEP_HOME, iface.REMOVE_FORCE) == (REMOVE_KEEP_HOME, REMOVE_FORCE)
    w.run(w.reg.create(ALICE, "f", "sandbox"))
    with pytest.raises(InvalidArgument):
        w.run(w.reg.remove_with_flags(ALICE, "f", 4))
    assert w.audit_rows("agent.remove")[-1].result == "refused"
    w.run(w.reg.remove_with_flags(ALICE, "f", REMOVE_KEEP_HOME))
    assert w.reg.find("f") is None and len(w.homes.archives) == 1


def test_create_never_adopts_an_existing_home(w: World) -> None:
    w.homes.homes["squat"] = 0  # a directory agentd did not make
    with pytest.raises(AlreadyExists, match="does not adopt"):
        w.run(w.reg.create(ALICE, "squat", "sandbox"))
    assert w.homes.homes["squat"] == 0 and w.reg.find("squat") is None
    assert w.audit_rows("agent.create")[-1].result == "refused"


def test_a_home_in_the_way_of_a_present_agent_is_set_aside(w: World) -> None:
    a = w.run(w.reg.create(ALICE, "kept", "sandbox"))
    w.homes.homes["kept"] = 0  # someone replaced it
    repaired = w.run(w.reg.reconcile())
    assert any("set aside" in r for r in repaired) and "recreated home of kept" in repaired
    assert w.homes.owner("kept") == a.uid and list(w.homes.aside) == [f"kept-{a.uid}-in-the-way"]


def test_an_orphan_home_that_cannot_be_archived_is_set_aside(w: World) -> None:
    w.homes.homes["lost"] = w.cfg.uid_min + 7
    w.homes.content["lost"] = True
    w.homes.fail["archive"] = "too-big"
    repaired = w.run(w.reg.reconcile())
    assert any("set orphan home" in r for r in repaired)
    assert "lost" not in w.homes.homes and list(w.homes.aside) == ["orphan-lost"]
    assert w.run(w.reg.reconcile()) == []


def test_the_caller_is_answered_though_its_agent_object_is_withdrawn(w: World) -> None:
    """The D-Bus layer withdraws the Agent object on AgentRemoved, and sdbus then
    cancels that object's calls, including the Remove being answered."""
    import asyncio

    from agentd.events import AgentRemoved

    w.run(w.reg.create(ALICE, "self", "sandbox"))

    async def main() -> None:
        call = asyncio.ensure_future(w.reg.remove(ALICE, "self"))
        w.reg.events.subscribe(AgentRemoved, lambda e: call.cancel())
        assert (await call).name == "self"

    w.run(main())
    assert w.reg.find("self") is None


def test_two_removals_of_one_agent_at_once_make_one(w: World) -> None:
    import asyncio

    from agentd.errors import Busy

    w.run(w.reg.create(ALICE, "twice", "sandbox"))

    async def main() -> list[object]:
        calls = [w.reg.remove(ALICE, "twice"), w.reg.remove(ROOT, "twice")]
        return await asyncio.gather(*calls, return_exceptions=True)

    first, second = w.run(main())
    assert first.name == "twice" and isinstance(second, Busy)
    assert [r.result for r in w.audit_rows("agent.remove")] == ["ok"]


def test_a_repair_that_fails_is_audited_and_start_goes_on(w: World) -> None:
    from agentd.errors import SystemError_ as Refused

    w.run(w.reg.create(ALICE, "fine", "sandbox"))
    w.run(w.accounts.add("stray", w.cfg.uid_min + 60, Path("/home/agents/stray")))

    async def refuse(name: str) -> None:
        raise Refused(f"userdel {name} failed: simulated")

    w.accounts.delete = refuse  # type: ignore[method-assign]
    repaired = w.run(w.reopen().reconcile())  # no exception: agentd starts
    assert any("could not remove orphans" in r for r in repaired)
    assert w.audit_rows("agent.repair")[-1].result == "failed"
