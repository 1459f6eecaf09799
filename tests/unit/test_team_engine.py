"""Teams (agentd.teams) over the real store, policy and directories, with fake
accounts and units: the group and the 2770 directory made and rolled back,
members the owner's (an administrator's choice otherwise), applied to units
at start or by restart, removal archived and refused while busy, crash
repair, and team tasks routed to members only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from world import ALICE, BOB, ROOT, World

from agentd.errors import (
    AlreadyExists,
    Busy,
    InvalidArgument,
    InvalidName,
    NoCapableAgent,
    NoSuchTeam,
    PermissionDenied,
)
from agentd.events import AgentRemoved
from agentd.tasks.queue import TaskQueue
from agentd.teams import TeamDirs, Teams


class T:
    def __init__(self, tmp_path: Path) -> None:
        self.w = World(tmp_path)
        self.root = tmp_path / "homes" / ".teams"
        self.dirs = TeamDirs(self.root, tmp_path / "archive")
        self.t = Teams(
            self.w.store, self.w.reg, self.w.accounts, self.dirs, self.w.audit, self.w.reg.events
        )
        self.q = TaskQueue(self.w.store, self.w.reg)
        self.q.router.teams = self.t
        for name in ("a1", "a2", "a3"):
            self.w.run(self.w.reg.create(ALICE, name, "sandbox"))
        self.w.run(self.w.reg.create(BOB, "b1", "sandbox"))

    def agent(self, name: str):
        return self.w.reg.find(name)

    def props(self, name: str) -> dict:
        out: dict = {}
        for key, (_sig, value) in self.w.reg.unit_properties(self.agent(name)):
            out.setdefault(key, []).append(value)
        return out


@pytest.fixture
def t(tmp_path: Path) -> T:
    return T(tmp_path)


def test_a_team_is_a_group_and_a_setgid_directory_nobody_else_enters(t: T) -> None:
    team = t.w.run(t.t.create(ALICE, "build", "the build crew"))
    gid = t.w.accounts.groups["agentd-team-build"]
    st = os.stat(t.root / "build")
    assert (team.gid, st.st_uid, st.st_gid) == (gid, 0, gid)
    assert stat.S_IMODE(st.st_mode) == 0o2770
    assert stat.S_IMODE(os.stat(t.root).st_mode) == 0o2711  # setgid: see TeamDirs.make
    [row] = t.w.audit_rows("team.created")
    assert (row.actor_uid, row.detail["team"], row.detail["gid"]) == (ALICE.uid, "build", gid)


def test_bad_names_and_taken_groups_or_directories_are_refused_and_nothing_is_made(
    t: T,
) -> None:
    for bad in ("", "Build", "a" * 21, "-x", "a--b"):
        with pytest.raises(InvalidName):
            t.w.run(t.t.create(ALICE, bad, ""))
    t.w.accounts.groups["agentd-team-taken"] = 4242  # a group agentd did not make
    with pytest.raises(AlreadyExists, match="does not adopt"):
        t.w.run(t.t.create(ALICE, "taken", ""))
    (t.root / "there").mkdir(parents=True)
    with pytest.raises(AlreadyExists):
        t.w.run(t.t.create(ALICE, "there", ""))
    assert "agentd-team-there" not in t.w.accounts.groups
    assert t.w.store.scalar("SELECT count(*) FROM teams") == 0
    assert len(t.w.audit_rows("team.created")) == 7  # each refusal audited
    t.w.run(t.t.create(ALICE, "once", ""))
    with pytest.raises(AlreadyExists):
        t.w.run(t.t.create(ALICE, "once", ""))


def test_members_are_the_owners_agents_and_get_the_team_at_their_next_start(t: T) -> None:
    t.w.run(t.t.create(ALICE, "build", ""))
    t.w.run(t.t.add(ALICE, "build", ["a1", "a2"], restart=False))
    props = t.props("a1")
    assert props["SupplementaryGroups"][-1] == ["agentd-agents", "agentd-team-build"]
    binds = [b for v in props["BindPaths"] for b in v]
    assert (str(t.root / "build"), str(t.root / "build"), False, 16384) in binds
    assert props["UMask"][-1] == 0o007  # the later property wins
    assert t.props("a3")["UMask"] == [0o077] and "agentd-team-build" not in str(t.props("a3"))
    # bob's agent: refused, audited; bob cannot even see alice's team
    with pytest.raises(PermissionDenied):
        t.w.run(t.t.add(ALICE, "build", ["b1"], restart=False))
    with pytest.raises(PermissionDenied):
        t.w.run(t.t.add(BOB, "build", ["b1"], restart=False))
    with pytest.raises(PermissionDenied):
        t.w.run(t.t.show(BOB, "build"))
    assert t.t.listing(BOB) == []
    assert [x["name"] for x in t.t.listing(ALICE)] == ["build"]
    assert any(r.result == "denied" for r in t.w.audit_rows("team.manage"))
    # an administrator may add anyone's
    t.w.run(t.t.add(ROOT, "build", ["b1"], restart=False))
    assert t.t.listing(ALICE)[0]["members"] == ["a1", "a2", "b1"]
    with pytest.raises(NoSuchTeam):
        t.w.run(t.t.add(ALICE, "nope", ["a1"], restart=False))
    with pytest.raises(InvalidArgument):
        t.w.run(t.t.drop(ALICE, "build", ["a3"], restart=False))


def test_restart_applies_membership_to_running_members_only(t: T) -> None:
    t.w.run(t.t.create(ALICE, "build", ""))
    t.w.run(t.w.reg.start(ALICE, "a1"))
    t.w.run(t.t.add(ALICE, "build", ["a1", "a2"], restart=True))
    running = t.w.units.running
    assert "agent-a2.service" not in running  # stopped members are not started
    groups = dict((k, v) for k, (_s, v) in running["agent-a1.service"] if k == "BindPaths")
    assert groups, "a1's unit was made again with the team bound in"
    t.w.run(t.t.drop(ALICE, "build", ["a1"], restart=True))
    assert "agentd-team-build" not in str(running["agent-a1.service"])


def test_removal_is_refused_while_busy_then_archives_and_deletes(t: T) -> None:
    t.w.run(t.t.create(ALICE, "build", ""))
    t.w.run(t.t.add(ALICE, "build", ["a1"], restart=False))
    (t.root / "build" / "notes.txt").write_text("shared\n")
    t.w.run(t.w.reg.start(ALICE, "a1"))
    with pytest.raises(Busy, match="running members"):
        t.w.run(t.t.remove(ALICE, "build", restart=False))
    task = t.q.submit(ALICE, {"title": "x", "team": "build"})
    with pytest.raises(Busy, match="open task"):
        t.w.run(t.t.remove(ALICE, "build", restart=True))
    t.q.cancel(ALICE, task.id)
    archive = t.w.run(t.t.remove(ALICE, "build", restart=True))
    assert archive and Path(archive).exists() and "team-build-" in archive
    assert stat.S_IMODE(os.stat(archive).st_mode) & 0o077 == 0
    assert not (t.root / "build").exists()
    assert "agentd-team-build" not in t.w.accounts.groups
    assert "agentd-team-build" not in str(t.w.units.running["agent-a1.service"])
    assert t.t.find("build") is None
    [row] = [r for r in t.w.audit_rows("team.removed") if r.result == "ok"]
    assert row.detail["archive"] == archive


def test_a_crash_mid_creation_is_rolled_back_and_mid_removal_finished(t: T) -> None:
    t.w.run(t.t.create(ALICE, "gone", ""))
    # as if agentd died after marking 'removing' and before the directory went
    t.w.store.execute("UPDATE teams SET state='removing' WHERE name='gone'")
    # and after the group of a new team was made, before its directory
    t.w.store.execute(
        "INSERT INTO teams (name, owner_uid, state, created_at) VALUES ('half', 1000, "
        "'creating', 0)"
    )
    t.w.accounts.groups["agentd-team-half"] = 977
    done = t.w.run(t.t.reconcile())
    assert len(done) == 2
    assert "agentd-team-half" not in t.w.accounts.groups
    assert "agentd-team-gone" not in t.w.accounts.groups
    assert not (t.root / "gone").exists()
    assert t.w.store.scalar("SELECT count(*) FROM teams WHERE state != 'removed'") == 0
    assert [r.detail["team"] for r in t.w.audit_rows("team.removed")] == ["gone"]


def test_team_tasks_go_to_capable_members_only(t: T) -> None:
    t.w.run(t.t.create(ALICE, "build", ""))
    with pytest.raises(NoCapableAgent, match="no member"):
        t.q.submit(ALICE, {"title": "x", "team": "build"})
    t.w.run(t.t.add(ALICE, "build", ["a2"], restart=False))
    with pytest.raises(InvalidArgument, match="not both"):
        t.q.submit(ALICE, {"title": "x", "team": "build", "agent": "a2"})
    with pytest.raises(PermissionDenied):
        t.q.submit(BOB, {"title": "x", "team": "build"})
    task = t.q.submit(ALICE, {"title": "team job", "team": "build"})
    assert t.q.claim_many(t.agent("a1"), 5) == []  # alice's, not in the team
    [got] = t.q.claim_many(t.agent("a2"), 5)
    assert got.id == task.id
    [row] = [r for r in t.w.audit_rows("task.created") if r.task_id == task.id]
    assert row.detail["team_id"] == t.t.find("build").id


def test_an_administrators_team_routes_to_another_owners_member(t: T) -> None:
    t.w.run(t.t.create(ROOT, "ops", ""))
    t.w.run(t.t.add(ROOT, "ops", ["b1"], restart=False))
    task = t.q.submit(ROOT, {"title": "root job", "team": "ops"})
    assert "b1" in t.q.router.assign()  # the scheduler finds bob's member
    [got] = t.q.claim_many(t.agent("b1"), 5)
    assert got.id == task.id


def test_a_removed_agent_leaves_its_teams(t: T) -> None:
    t.w.run(t.t.create(ALICE, "build", ""))
    t.w.run(t.t.add(ALICE, "build", ["a1", "a2"], restart=False))
    t.w.reg.events.publish(AgentRemoved(t.agent("a1")))
    assert t.t.listing(ALICE)[0]["members"] == ["a2"]
