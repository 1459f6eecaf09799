"""Agent accounts are agent-NAME; accounts of an older agentd (bare NAME) are
renamed at start or before the agent's next start, crash-safely; a bus policy
user= rule naming an agent's account refuses its creation and start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakes import FakeAccounts
from world import ALICE, World

from agentd import buspolicy, names
from agentd.accounts import Account
from agentd.errors import InvalidConfig


class RenamingAccounts(FakeAccounts):
    """FakeAccounts that can rename, as agentd.accounts.Accounts can."""

    def group_gid(self, name: str) -> int | None:
        return self.groups.get(name)

    async def rename_user(self, old: str, new: str) -> None:
        a = self.users.pop(old)
        self.users[new] = Account(new, a.uid, a.gid, a.home, a.shell)

    async def rename_group(self, old: str, new: str) -> None:
        self.groups[new] = self.groups.pop(old)

    async def delete_group(self, name: str) -> None:
        self.groups.pop(name, None)


@pytest.fixture
def r(w: World, monkeypatch: pytest.MonkeyPatch) -> World:
    w.accounts.__class__ = RenamingAccounts
    reloads: list[int] = []

    async def reload_bus() -> None:
        reloads.append(1)

    monkeypatch.setattr(buspolicy, "reload_bus", reload_bus)
    w.reloads = reloads  # type: ignore[attr-defined]
    return w


def _make_old(w: World, name: str, user: bool = True, group: bool = True) -> None:
    """Turn agent NAME's accounts back into an older agentd's (bare NAME)."""
    acc = w.accounts
    if user:
        a = acc.users.pop(names.account_name(name))
        acc.users[name] = Account(name, a.uid, a.gid, a.home, a.shell)
    if group:
        acc.groups[name] = acc.groups.pop(names.account_name(name))


def _repairs(w: World, name: str) -> list[dict[str, Any]]:
    rows = w.store.query(
        "SELECT result, detail FROM audit WHERE action='agent.repair' AND agent=?", (name,)
    )
    import json

    return [{"result": r["result"], **json.loads(r["detail"])} for r in rows]


def test_a_new_agent_gets_a_prefixed_account(r: World) -> None:
    a = r.run(r.reg.create(ALICE, "docker", "sandbox"))
    assert set(r.accounts.users) == {"agent-docker"} and set(r.accounts.groups) == {"agent-docker"}
    assert r.accounts.users["agent-docker"].uid == a.uid
    assert a.unit == "agent-docker.service"


def test_an_old_account_is_renamed_at_start_and_audited(r: World) -> None:
    a = r.run(r.reg.create(ALICE, "build", "sandbox"))
    _make_old(r, "build")
    repaired = r.run(r.reg.reconcile())
    assert "renamed account build to agent-build" in repaired
    assert set(r.accounts.users) == {"agent-build"} and "build" not in r.accounts.groups
    assert r.accounts.groups["agent-build"] == a.gid
    assert r.reg.find("build") is not None  # not taken for an orphan, nothing recreated
    row = _repairs(r, "build")[-1]
    assert row["result"] == "repaired" and row["account_from"] == "build"
    assert row["account"] == "agent-build"
    assert r.reloads == [1]  # type: ignore[attr-defined]
    assert r.run(r.reg.reconcile()) == []  # nothing left to do


def test_a_crash_between_user_and_group_is_finished(r: World) -> None:
    a = r.run(r.reg.create(ALICE, "half", "sandbox"))
    _make_old(r, "half", user=False, group=True)  # the user was renamed, then a crash
    repaired = r.run(r.reg.reconcile())
    assert "renamed account half to agent-half (its group)" in repaired
    assert r.accounts.groups == {"agent-half": a.gid}


def test_a_running_agent_is_renamed_before_its_next_start(r: World) -> None:
    a = r.run(r.reg.create(ALICE, "busy", "sandbox"))
    r.run(r.reg.start(ALICE, "busy"))
    r.run(r.reg.settle())
    _make_old(r, "busy")
    repaired = r.run(r.reg.reconcile())
    assert any("not renamed to agent-busy while" in x for x in repaired)
    assert "busy" in r.accounts.users  # neither renamed nor an orphan, nor recreated
    assert "agent-busy" not in r.accounts.users
    assert _repairs(r, "busy")[-1]["result"] == "deferred"
    r.run(r.reg.stop(ALICE, "busy"))
    r.run(r.reg.settle())
    r.run(r.reg.start(ALICE, "busy"))
    r.run(r.reg.settle())
    assert set(r.accounts.users) == {"agent-busy"} and r.accounts.users["agent-busy"].uid == a.uid
    assert _repairs(r, "busy")[-1]["result"] == "repaired"


def test_removal_deletes_an_old_account_and_never_a_stranger(r: World) -> None:
    a = r.run(r.reg.create(ALICE, "old", "sandbox"))
    _make_old(r, "old")
    r.accounts.users["agent-old"] = Account("agent-old", 4242, 4242, "/", "/bin/sh")
    r.run(r.reg.remove(ALICE, "old"))
    assert "old" not in r.accounts.users and "old" not in r.accounts.groups
    assert r.accounts.users["agent-old"].uid == 4242 != a.uid


def test_an_old_orphan_account_is_removed(r: World) -> None:
    r.run(r.accounts.add("gone", r.cfg.uid_min + 70, Path("/home/agents/gone")))
    repaired = r.run(r.reg.reconcile())
    assert any("orphan user gone" in x for x in repaired) and "gone" not in r.accounts.users


def test_a_name_too_long_for_its_account_is_not_renamed(r: World) -> None:
    a = r.run(r.reg.create(ALICE, "x" * names.MAX_LEN, "sandbox"))
    long_old = "y" * 30  # an older agentd allowed 32
    r.store.execute("UPDATE agents SET name=? WHERE uid=?", (long_old, a.uid))
    r.accounts.users[long_old] = r.accounts.users.pop(names.account_name(a.name))
    r.accounts.groups[long_old] = r.accounts.groups.pop(names.account_name(a.name))
    r.run(r.reg.reconcile())
    assert long_old in r.accounts.users  # kept as it was, not deleted
    failed = [x for x in _repairs(r, long_old) if x["result"] == "failed"]
    assert "longer than 32" in failed[0]["reason"]


def test_the_syntax_keeps_every_account_within_32(r: World) -> None:
    from agentd.errors import InvalidName

    with pytest.raises(InvalidName, match="longer than 26"):
        r.run(r.reg.create(ALICE, "x" * 27, "sandbox"))


# -- bus policy ------------------------------------------------------------------

POLICY = """<busconfig><policy user="{user}"><allow send_destination="*"/></policy></busconfig>"""


def _policy(d: Path, user: str) -> Path:
    d.mkdir(exist_ok=True)
    path = d / "evil.conf"
    path.write_text(POLICY.format(user=user))
    return path


def test_user_rules_naming_an_account_or_its_uid_are_found(tmp_path: Path) -> None:
    d = tmp_path / "system.d"
    _policy(d, "agent-x")
    with pytest.raises(InvalidConfig, match="names account agent-x"):
        buspolicy.refuse_overrides("agent-x", 61000, [d], [])
    buspolicy.refuse_overrides("agent-y", 61001, [d], [])
    _policy(d, "61001")  # dbus-daemon takes a numeric UID too
    with pytest.raises(InvalidConfig, match='user="61001"'):
        buspolicy.refuse_overrides("agent-y", 61001, [d], [])
    _policy(d, "root")  # resolved as dbus-daemon does: through NSS
    with pytest.raises(InvalidConfig):
        buspolicy.refuse_overrides("agent-z", 0, [d], [])


def test_agentds_start_refuses_any_agent_user_rule(tmp_path: Path) -> None:
    d = tmp_path / "system.d"
    _policy(d, "agent-anything")
    with pytest.raises(InvalidConfig, match="names an agent account"):
        buspolicy.check("agentd-agents", [d], [])
    _policy(d, "agentd")  # agentd's own names are not agent- accounts
    buspolicy.check("agentd-agents", [d], [])


def test_a_broken_file_is_skipped_and_system_conf_is_read(tmp_path: Path) -> None:
    d = tmp_path / "system.d"
    d.mkdir()
    (d / "broken.conf").write_text("<busconfig")
    local = tmp_path / "system-local.conf"
    local.write_text(POLICY.format(user="agent-q"))
    assert buspolicy.user_rules([d], [local, tmp_path / "absent.conf"]) == [(local, "agent-q")]


def test_create_and_start_are_refused_while_a_rule_names_the_agent(
    r: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    d = tmp_path / "system.d"
    real = buspolicy.refuse_overrides

    def refuse(account: str, uid: int | None = None, *_: object) -> None:
        real(account, uid, [d], [])

    monkeypatch.setattr(buspolicy, "refuse_overrides", refuse)
    _policy(d, "agent-bad")
    with pytest.raises(InvalidConfig):
        r.run(r.reg.create(ALICE, "bad", "sandbox"))
    assert r.reg.find("bad") is None and "agent-bad" not in r.accounts.users
    refused = r.store.query("SELECT result FROM audit WHERE action='agent.create' AND agent='bad'")
    assert [x["result"] for x in refused] == ["refused"]

    a = r.run(r.reg.create(ALICE, "good", "sandbox"))
    _policy(d, str(a.uid))  # dropped after its creation, by UID
    with pytest.raises(InvalidConfig):
        r.run(r.reg.start(ALICE, "good"))
    assert r.units.running == {}
    rows = r.store.query("SELECT result FROM audit WHERE action='agent.start' AND agent='good'")
    assert [x["result"] for x in rows] == ["error"]
