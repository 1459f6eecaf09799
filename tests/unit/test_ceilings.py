"""Per-owner ceilings (agentd.ceilings, issue 10 finding 9): the sums of memory,
CPU and tasks over an owner's agents, checked before anything is made; and
their settings in agentd.toml (agentd.config)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from world import ALICE, BOB, ROOT, World

from agentd import ceilings, config
from agentd.errors import InvalidConfig, LimitExceeded
from agentd.templates import Limits

GiB = 1 << 30


@dataclass
class A:
    name: str
    limits: Limits


def cfg(**kw: int) -> config.Config:
    return config.Config(**kw)  # type: ignore[arg-type]


def test_defaults_fit_sixteen_agents_of_every_vendor_template(w: World) -> None:
    c = config.Config()
    for t in w.reg.catalog.templates():
        agents = [A(f"a{i}", t.limits) for i in range(c.max_agents_per_owner - 1)]
        ceilings.check(c, 1000, agents, t.limits)  # the 16th fits
    assert (c.owner_memory_max, c.owner_cpu_quota_max, c.owner_tasks_max) == (16 * GiB, 1600, 4096)


def test_the_sums_pass_a_ceiling_with_a_message_that_names_it() -> None:
    c = cfg(owner_memory_max=4 * GiB)
    mine = [A("one", Limits(2 * GiB, 100, 64)), A("two", Limits(GiB, 50, 64))]
    ceilings.check(c, 1000, mine, Limits(GiB, 800, 64))  # exactly at the ceiling: fits
    with pytest.raises(LimitExceeded) as e:
        ceilings.check(c, 1000, mine, Limits(GiB + 1, 100, 64))
    text = str(e.value)
    assert "owner_memory_max" in text and "uid 1000" in text
    assert "its 2 agent(s) hold 3 GiB" in text and "over the ceiling of 4 GiB" in text
    assert "CPU" not in text  # only what was passed


def test_every_ceiling_passed_is_named() -> None:
    c = cfg(owner_memory_max=GiB, owner_cpu_quota_max=100, owner_tasks_max=100)
    with pytest.raises(LimitExceeded) as e:
        ceilings.check(c, 7, [A("x", Limits(GiB, 100, 100))], Limits(16 << 20, 1, 8))
    for key in ("owner_memory_max", "owner_cpu_quota_max=100", "owner_tasks_max=100"):
        assert key in str(e.value)
    assert "200 % CPU" not in str(e.value) and "101 % CPU in all" in str(e.value)


def test_zero_is_no_ceiling_and_replacing_leaves_the_agent_out() -> None:
    c = cfg(owner_memory_max=0, owner_cpu_quota_max=0, owner_tasks_max=0)
    ceilings.check(c, 1, [A("x", Limits(64 * GiB, 800, 16384))] * 100, Limits(64 * GiB, 800, 16384))
    c = cfg(owner_cpu_quota_max=800)
    mine = [A("x", Limits(GiB, 800, 10)), A("y", Limits(GiB, 0, 10))]
    ceilings.check(c, 1, mine, Limits(GiB, 800, 10), replacing="x")
    with pytest.raises(LimitExceeded):
        ceilings.check(c, 1, mine, Limits(GiB, 800, 10), replacing="y")


def test_create_is_refused_before_anything_is_made_and_audited(tmp_path: Path) -> None:
    w = World(tmp_path, owner_memory_max=GiB, owner_tasks_max=64)  # sandbox: 256M, 32 tasks
    w.run(w.reg.create(ALICE, "one", "sandbox"))
    w.run(w.reg.create(ALICE, "two", "sandbox"))
    before = (dict(w.accounts.users), dict(w.homes.homes), w.units.jobs)
    with pytest.raises(LimitExceeded, match="owner_tasks_max=64"):
        w.run(w.reg.create(ALICE, "three", "sandbox"))
    with pytest.raises(LimitExceeded, match="owner_memory_max"):
        w.run(w.reg.create(ALICE, "big", "sandbox", {"memory_max": 900 << 20, "tasks_max": 8}))
    assert (dict(w.accounts.users), dict(w.homes.homes), w.units.jobs) == before
    rows = w.store.query("SELECT name, state FROM agents ORDER BY name")
    assert [(r["name"], r["state"]) for r in rows] == [("one", "present"), ("two", "present")]
    refused = [e for e in w.audit_rows("agent.create") if e.result == "refused"]
    assert [e.agent for e in refused] == ["three", "big"]
    assert all(e.detail["error"] == "LimitExceeded" for e in refused)
    assert "its 2 agent(s) hold 64 tasks" in refused[0].detail["reason"]
    # another owner has sums of its own; an administrator has none
    w.run(w.reg.create(BOB, "bobs", "sandbox"))
    for i in range(3):
        w.run(w.reg.create(ROOT, f"root{i}", "sandbox"))


def test_a_removed_agent_gives_its_share_back(tmp_path: Path) -> None:
    w = World(tmp_path, owner_cpu_quota_max=100)  # sandbox: 50 %
    w.run(w.reg.create(ALICE, "one", "sandbox"))
    w.run(w.reg.create(ALICE, "two", "sandbox"))
    with pytest.raises(LimitExceeded, match="owner_cpu_quota_max"):
        w.run(w.reg.create(ALICE, "three", "sandbox"))
    w.run(w.reg.remove(ALICE, "one"))
    w.run(w.reg.create(ALICE, "three", "sandbox"))


def test_settings_read_from_agentd_toml(tmp_path: Path) -> None:
    f = tmp_path / "agentd.toml"
    f.write_text(
        'owner_memory_max = "8G"\nowner_cpu_quota_max = 400\nowner_tasks_max = 512\n'
        'home_max = "64M"\nhome_check_interval = 2\narchive_retention_count = 3\n'
        "archive_retention_bytes = 1073741824\narchive_retention_days = 30\n"
    )
    c = config.load(f)
    assert (c.owner_memory_max, c.owner_cpu_quota_max, c.owner_tasks_max) == (8 * GiB, 400, 512)
    assert (c.home_max, c.home_check_interval) == (64 << 20, 2)
    assert (c.archive_retention_count, c.archive_retention_bytes, c.archive_retention_days) == (
        3,
        GiB,
        30,
    )
    assert c.as_dict()["home_max"] == 64 << 20


@pytest.mark.parametrize(
    "text, error",
    [
        ('owner_memory_max = "lots"', "invalid size"),
        ("owner_cpu_quota_max = -1", "outside"),
        ('owner_tasks_max = "4096"', "expected an integer"),
        ('home_max = "512K"', "below"),
        ("home_check_interval = 0", "outside"),
        ("archive_retention_days = 100000", "outside"),
        ('archive_retention_count = "10"', "expected an integer"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, text: str, error: str) -> None:
    f = tmp_path / "agentd.toml"
    f.write_text(text + "\n")
    with pytest.raises(InvalidConfig, match=error):
        config.load(f)
