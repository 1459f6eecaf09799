"""Quota plans (agentd.plandefs, agentd.plans, issue 16): agentd.toml's [plans.NAME]
tables, who has which plan, and what a plan decides: the owner's token quota,
how many agents and how much memory, which templates; assigned at once, audited."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from world import ALICE, BOB, ROOT, World

from agentctl.app import Env
from agentctl.cli import cli
from agentctl.commands.usage import low
from agentd import config
from agentd.errors import InvalidArgument, LimitExceeded, PermissionDenied, QuotaExceeded
from agentd.plandefs import Plan
from agentd.quotas import Meter

GiB = 1 << 30
FREE = Plan("free", 1000, "daily", 1, GiB, ("sandbox",))
PRO = Plan("pro", 100_000, "monthly", 3, 4 * GiB, ())
TEAM = Plan("team", 1_000_000, "monthly", 8, 16 * GiB, ())
DEVS, OPS = 2000, 2001  # Unix groups alice is in


def world(tmp_path: Path, default_plan: str = "", **cfg: object) -> World:
    w = World(tmp_path, plans=(FREE, PRO, TEAM), default_plan=default_plan, **cfg)
    w.reg.plans.groups_of = lambda uid: frozenset({DEVS, OPS}) if uid == ALICE.uid else frozenset()
    return w


def plan_of(w: World, uid: int) -> tuple[str, str] | None:
    found = w.reg.plans.effective(uid)
    return (found.plan.name, found.source) if found else None


# -- agentd.toml ---------------------------------------------------------------------------


def test_plans_are_read_in_order_and_left_out_keys_are_the_settings_for_everyone(
    tmp_path: Path,
) -> None:
    f = tmp_path / "agentd.toml"
    f.write_text(
        'max_agents_per_owner = 7\ndefault_plan = "free"\n'
        '[plans.free]\ntokens = 50000\nperiod = "daily"\nmax_agents = 2\n'
        'max_memory = "512M"\ntemplates = ["sandbox", "sandbox"]\n'
        "[plans.enterprise]\ntokens = 0\n"
    )
    cfg = config.load(f)
    assert [p.name for p in cfg.plans] == ["free", "enterprise"]
    assert cfg.plans[0] == Plan("free", 50000, "daily", 2, 512 << 20, ("sandbox",))
    assert cfg.plans[1] == Plan("enterprise", 0, "monthly", 7, 16 * GiB, ())
    assert cfg.default_plan == "free" and cfg.as_dict()["plans"] == "free,enterprise"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[plans.pro]\ntokens = "many"', "plans.pro.tokens: expected an integer"),
        ("[plans.pro]\ntokens = -1", "plans.pro.tokens: -1 is outside"),
        ('[plans.pro]\nperiod = "hourly"', "plans.pro.period: 'hourly' is not one of"),
        ('[plans.pro]\nmax_memory = "lots"', "plans.pro.max_memory"),
        ("[plans.pro]\nmax_agents = true", "plans.pro.max_agents: expected an integer"),
        ('[plans.pro]\ntemplates = "sandbox"', "plans.pro.templates: expected a list"),
        ("[plans.pro]\ntemplates = [1]", "plans.pro.templates: 1 is not a template name"),
        ("[plans.pro]\ntoken = 5", "plans.pro: unknown key 'token'"),
        ("[plans.Pro]\ntokens = 5", "plans.Pro: a plan name is"),
        ("plans = 5", "plans must be a table"),
        ('default_plan = "gold"\n[plans.pro]\n', "default_plan: no plan named 'gold'"),
    ],
)
def test_a_bad_plan_is_refused_naming_the_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    f = tmp_path / "agentd.toml"
    f.write_text(text + "\n")
    with pytest.raises(config.InvalidConfig) as e:
        config.load(f)
    assert str(f) in str(e.value) and message in str(e.value)


# -- whose plan ----------------------------------------------------------------------------


def test_a_users_plan_comes_before_its_groups_which_come_before_the_default(
    tmp_path: Path,
) -> None:
    w = world(tmp_path, default_plan="free")
    plans = w.reg.plans
    assert plan_of(w, ALICE.uid) == ("free", "default") == plan_of(w, BOB.uid)
    plans.assign(ROOT, "group", str(DEVS), "pro")
    assert plan_of(w, ALICE.uid) == ("pro", "group") and plan_of(w, BOB.uid) == ("free", "default")
    plans.assign(ROOT, "group", str(OPS), "team")  # of two groups' plans, the later one
    assert plan_of(w, ALICE.uid) == ("team", "group")
    plans.assign(ROOT, "user", str(ALICE.uid), "free")
    assert plan_of(w, ALICE.uid) == ("free", "user")
    plans.assign(ROOT, "user", str(ALICE.uid), "")
    assert plan_of(w, ALICE.uid) == ("team", "group")


def test_an_assignment_to_a_plan_no_longer_configured_is_ignored(tmp_path: Path) -> None:
    w = world(tmp_path)
    w.reg.plans.assign(ROOT, "user", str(ALICE.uid), "pro")
    w.cfg = config.Config(state_dir=tmp_path, admin_group="nobody-here", plans=(FREE,))
    w.reopen()
    assert w.reg.plans.effective(ALICE.uid) is None
    (row,) = w.reg.plans.assignments()
    assert (row["plan"], row["known"]) == ("pro", False)


def test_without_plans_nobody_has_one(w: World) -> None:
    assert w.reg.plans.effective(ALICE.uid) is None
    assert w.reg.plans.listing(ALICE) == {
        "plans": [],
        "default_plan": "",
        "yours": None,
        "assignments": None,
    }


# -- assigning -----------------------------------------------------------------------------


def test_only_administrators_assign_and_every_refusal_is_audited(tmp_path: Path) -> None:
    w = world(tmp_path)
    with pytest.raises(PermissionDenied):
        w.reg.plans.assign(ALICE, "user", str(ALICE.uid), "team")
    with pytest.raises(InvalidArgument, match=r"no plan named 'gold'.*free, pro, team"):
        w.reg.plans.assign(ROOT, "user", str(ALICE.uid), "gold")
    with pytest.raises(InvalidArgument, match="no group named"):
        w.reg.plans.assign(ROOT, "group", "no-such-group-here", "pro")
    rows = w.audit_rows("plan.assign")
    assert [(r.actor_uid, r.result) for r in rows] == [
        (ALICE.uid, "denied"),
        (0, "refused"),
        (0, "refused"),
    ]
    assert w.reg.plans.assignments() == []


def test_a_change_is_audited_with_the_previous_plan(tmp_path: Path) -> None:
    w = world(tmp_path)
    w.reg.plans.assign(ROOT, "user", str(ALICE.uid), "pro")
    w.reg.plans.assign(ROOT, "user", str(ALICE.uid), "team")
    w.reg.plans.assign(ROOT, "user", str(ALICE.uid), "")
    rows = w.audit_rows("plan.assign")
    assert [(r.detail["plan"], r.detail["previous"]) for r in rows] == [
        ("pro", ""),
        ("team", "pro"),
        ("", "team"),
    ]
    assert all(r.detail["id"] == ALICE.uid and r.detail["kind"] == "user" for r in rows)


def test_people_see_the_plans_and_their_own_admins_see_the_assignments(tmp_path: Path) -> None:
    w = world(tmp_path)
    w.reg.plans.assign(ROOT, "group", str(DEVS), "pro")
    mine = w.reg.plans.listing(ALICE)
    assert [p["name"] for p in mine["plans"]] == ["free", "pro", "team"]
    assert mine["yours"]["name"] == "pro" and mine["assignments"] is None
    assert [a["plan"] for a in w.reg.plans.listing(ROOT)["assignments"]] == ["pro"]
    assert w.reg.plans.show(ALICE, "pro", "")["assignments"] is None
    assert w.reg.plans.show(ROOT, "pro", "")["assignments"][0]["id"] == DEVS
    assert w.reg.plans.show(ALICE, "", "")["plan"]["source"] == "group"
    assert w.reg.plans.show(ROOT, "", str(ALICE.uid))["plan"]["name"] == "pro"
    with pytest.raises(PermissionDenied):
        w.reg.plans.show(BOB, "", str(ALICE.uid))


# -- what a plan decides -------------------------------------------------------------------


def test_the_plans_tokens_are_the_owners_quota_after_an_admins_own(tmp_path: Path) -> None:
    w = world(tmp_path, owner_token_quota=10**6)
    meter = Meter(w.cfg, w.store, w.audit, w.reg)
    agent = w.run(w.reg.create(ALICE, "one", "sandbox"))
    meter.record(agent, "chat", 900, 50, "ok", 0.1)
    meter.check(agent, ALICE.uid, 100)  # the configured default: room
    w.reg.plans.assign(ROOT, "user", str(ALICE.uid), "free")  # 1000 daily, at once
    q = meter.owner_quota(ALICE.uid)
    assert (q.limit, q.period, q.source, q.used) == (1000, "daily", "plan", 950)
    with pytest.raises(QuotaExceeded, match="owner uid 1000 has used 950 of its 1000 daily"):
        meter.check(agent, ALICE.uid, 100)
    (row,) = w.audit_rows("model.refused")
    assert (row.result, row.detail["quota"]) == ("denied", "owner")
    meter.set(ROOT, "owner", str(ALICE.uid), 5000, "daily")  # an admin's quota wins
    assert meter.owner_quota(ALICE.uid).source == "admin"
    meter.check(agent, ALICE.uid, 100)


def test_max_agents_is_the_plans_and_a_refusal_makes_nothing(tmp_path: Path) -> None:
    w = world(tmp_path)
    w.reg.plans.assign(ROOT, "user", str(ALICE.uid), "free")  # one agent
    w.run(w.reg.create(ALICE, "one", "sandbox"))
    before = (dict(w.accounts.users), dict(w.homes.homes), w.units.jobs)
    with pytest.raises(LimitExceeded, match="max_agents_per_owner=1, of plan 'free'"):
        w.run(w.reg.create(ALICE, "two", "sandbox"))
    assert (dict(w.accounts.users), dict(w.homes.homes), w.units.jobs) == before
    assert w.store.scalar("SELECT count(*) FROM agents WHERE name = 'two'") == 0
    refused = [r for r in w.audit_rows("agent.create") if r.result == "refused"]
    assert [r.agent for r in refused] == ["two"]
    w.reg.plans.assign(ROOT, "user", str(ALICE.uid), "pro")  # three: at once
    w.run(w.reg.create(ALICE, "two", "sandbox"))
    w.run(w.reg.create(ROOT, "root-one", "sandbox"))  # administrators are exempt


def test_max_memory_is_the_plans_memory_ceiling(tmp_path: Path) -> None:
    w = world(tmp_path)
    w.reg.plans.assign(ROOT, "user", str(ALICE.uid), "pro")  # 4 GiB
    w.run(w.reg.create(ALICE, "big", "sandbox", {"memory_max": 3 * GiB}))
    with pytest.raises(LimitExceeded, match=r"owner_memory_max=4294967296, of plan 'pro'"):
        w.run(w.reg.create(ALICE, "more", "sandbox", {"memory_max": 2 * GiB}))


def test_a_template_outside_the_plan_is_refused_audited_and_nothing_made(tmp_path: Path) -> None:
    w = world(tmp_path, default_plan="free")  # templates: sandbox only
    before = (dict(w.accounts.users), dict(w.homes.homes), w.units.jobs)
    with pytest.raises(PermissionDenied, match="template 'research' is not in plan 'free'"):
        w.run(w.reg.create(ALICE, "scout", "research"))
    assert (dict(w.accounts.users), dict(w.homes.homes), w.units.jobs) == before
    assert w.store.scalar("SELECT count(*) FROM agents") == 0
    (row,) = w.audit_rows("agent.create")
    assert (row.actor_uid, row.result, row.agent) == (ALICE.uid, "denied", "scout")
    assert (row.detail["plan"], row.detail["template"]) == ("free", "research")
    w.run(w.reg.create(ROOT, "scout", "research"))  # administrators are exempt
    w.reg.plans.assign(ROOT, "group", str(DEVS), "pro")  # every template, at once
    w.run(w.reg.create(ALICE, "scout2", "research"))


# -- agentctl ------------------------------------------------------------------------------


class PlanFake:
    """The client calls `agentctl plan` and `usage` make."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.pro = {**PRO.as_dict(), "source": "group", "group": "devs"}

    async def list_plans(self) -> dict[str, Any]:
        plans = [p.as_dict() for p in (FREE, PRO)]
        assignments = [{"kind": "group", "id": DEVS, "name": "devs", "plan": "pro"}]
        return {"plans": plans, "default_plan": "", "yours": self.pro, "assignments": assignments}

    async def describe_plan(self, plan: str = "", user: str = "") -> dict[str, Any]:
        self.calls.append(("describe_plan", plan, user))
        if plan:
            return {**FREE.as_dict(), "default": False, "assignments": None}
        return {"uid": 1000, "user": "alice", "plan": self.pro}

    async def assign_plan(self, kind: str, subject: str, plan: str) -> None:
        self.calls.append(("assign_plan", kind, subject, plan))

    async def list_quotas(self) -> list[dict[str, Any]]:
        resets = time.time() + 3600
        quota = {"period": "monthly", "resets_at": resets, "kind": "owner", "subject": "1000"}
        return [
            {**quota, "limit": 100_000, "used": 99_000, "source": "plan"},  # 1% left
            {**quota, "kind": "agent", "subject": "scout", "limit": 300, "used": 251,
             "source": "template"},  # 49 tokens left, but 16%
            {**quota, "kind": "agent", "subject": "calm", "limit": 300, "used": 250,
             "source": "template"},  # 50 left: no warning
        ]  # fmt: skip

    async def list_usage(self, days: int) -> list[dict[str, Any]]:
        return []


def invoke(fake: PlanFake, *args: str, tty: bool = False) -> Any:
    env = Env(connect=lambda: fake, tty=tty)
    return CliRunner(mix_stderr=False).invoke(cli, list(args), obj=env)


def test_plan_list_show_and_assign_with_json() -> None:
    fake = PlanFake()
    r = invoke(fake, "plan", "list", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["yours"]["name"] == "pro"
    r = invoke(fake, "plan", "list")
    assert r.stdout.splitlines()[1].split("\t") == [
        "pro", "100000", "monthly", "3", str(4 * GiB), "", "@devs",
    ]  # fmt: skip
    r = invoke(fake, "plan", "list", tty=True)
    assert "your plan: pro (from group devs)" in r.stdout and "unlimited" not in r.stdout
    r = invoke(fake, "plan", "show", "free", "--json")
    assert json.loads(r.stdout)["templates"] == ["sandbox"]
    r = invoke(fake, "plan", "show", "--user", "alice")
    assert "name\tpro" in r.stdout and "source\tgroup devs" in r.stdout
    assert invoke(fake, "plan", "show", "free", "--user", "alice").exit_code == 2
    r = invoke(fake, "plan", "assign", "team", "--group", "devs", "--json")
    assert json.loads(r.stdout) == {"kind": "group", "subject": "devs", "plan": "team"}
    assert invoke(fake, "plan", "unassign", "--user", "alice").exit_code == 0
    assert invoke(fake, "plan", "assign", "team").exit_code == 2  # no --user or --group
    assigned = [c for c in fake.calls if c[0] == "assign_plan"]
    assert assigned == [
        ("assign_plan", "group", "devs", "team"),
        ("assign_plan", "user", "alice", ""),
    ]


def test_usage_shows_the_plan_and_warns_under_fifty_tokens_or_ten_percent() -> None:
    r = invoke(PlanFake(), "usage")
    assert r.exit_code == 0 and r.stdout.splitlines()[-1] == "plan\tpro"
    first, second = r.stderr.splitlines()  # "calm", 50 tokens and 16% left: no warning
    assert first.startswith("warning: owner ") and "1,000 of plan pro's 100,000 monthly" in first
    assert second.startswith("warning: scout has 49 of its 300 monthly tokens left")
    r = invoke(PlanFake(), "usage", "--json")
    assert json.loads(r.stdout)["plan"]["name"] == "pro"
    r = invoke(PlanFake(), "usage", tty=True)
    assert r.stdout.startswith("Plan pro: 100,000 tokens monthly, 3 agents, memory 4 GiB")


@pytest.mark.parametrize(
    ("limit", "used", "warned"),
    [(1000, 901, True), (1000, 900, False), (100, 51, True), (100, 50, False), (0, 10**9, False)],
)
def test_low_is_under_ten_percent_or_under_fifty_tokens(
    limit: int, used: int, warned: bool
) -> None:
    assert low({"limit": limit, "used": used}) is warned
