"""Issue 10, finding 9, attempted in the machine by an ordinary user (alice):

- per-owner ceilings: alice creates agents until the sum of their MemoryMax
  passes owner_memory_max, then asks for 800 % CPU and 16,384 tasks in one
  small agent: each is refused LimitExceeded naming the ceiling, audited, and
  nothing of the refused agent exists (no user, group, home, unit or row);
- the home disk limit: an agent, from inside its own unit, writes a file past
  home_max; agentd stops its unit (waited for as the unit's ActiveState) and
  refuses to start it until the file is gone;
- archive retention: three `rm --keep-home` with archive_retention_count = 2
  leave the newest two archives, the oldest deleted and audited.

Meanwhile bob reads agentd's Version in a loop; each answer within 1 s
(agentd_helpers.answering). agentd.toml gets small ceilings for the module
and is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agentd_helpers import Agentd, answering, wait_for

pytestmark = pytest.mark.integration
CONF = "/etc/agentd/agentd.toml"
ARCHIVES = "/var/lib/agentd/archive"
MiB = 1 << 20
# sandbox agents: 256 MiB, 50 %, 32 tasks; four fill owner_memory_max.
SETTINGS = """
owner_memory_max = "1G"
owner_cpu_quota_max = 400
owner_tasks_max = 512
home_max = "64M"
home_check_interval = 2
archive_retention_count = 2
"""


@pytest.fixture(scope="module")
def ceilings(agentd: Agentd) -> Iterator[None]:
    original = agentd.sh(["cat", CONF]).stdout
    agentd.m.write_file(CONF, original + "\n" + SETTINGS, mode=0o644)
    agentd.restart()
    mine = [a["name"] for a in agentd.ctl_json("agent", "list", user="alice")]
    for name in mine:  # left by an earlier module: the sums start from zero
        agentd.ctl("agent", "rm", "--force", name)
    yield
    agentd.m.write_file(CONF, original, mode=0o644)
    agentd.restart()


def nothing_of(agentd: Agentd, name: str) -> None:
    """No trace of the agent NAME: user, group, home, unit, registry row."""
    assert agentd.sh(["getent", "passwd", name], check=False).returncode == 2
    assert agentd.sh(["getent", "group", name], check=False).returncode == 2
    assert agentd.sh(["stat", f"/home/agents/{name}"], check=False).returncode != 0
    unit = agentd.show(f"agent-{name}.service", "LoadState", "ActiveState")
    assert unit == {"LoadState": "not-found", "ActiveState": "inactive"}, unit
    assert name not in {a["name"] for a in agentd.ctl_json("agent", "list")}


def refused(agentd: Agentd, name: str, *options: str) -> str:
    r = agentd.ctl(
        "agent", "create", name, "--template", "sandbox", *options, user="alice", check=False
    )
    assert r.returncode == 1 and "(LimitExceeded)" in r.stderr, (r.stdout, r.stderr)
    nothing_of(agentd, name)
    row = agentd.audit("agent.create", name)[-1]
    assert (row["result"], row["detail"]["error"]) == ("refused", "LimitExceeded")
    return r.stderr


def test_per_owner_sums_of_memory_cpu_and_tasks(agentd: Agentd, ceilings) -> None:
    with answering(agentd):
        for i in range(4):
            agentd.create(f"ceil-{i}", user="alice")
        text = refused(agentd, "ceil-4")
        assert "owner_memory_max" in text and "its 4 agent(s) hold 1 GiB" in text
        text = refused(agentd, "ceil-big", "--memory-max", "64G")
        assert "64 GiB" in text
        agentd.ctl("agent", "rm", "ceil-3", user="alice")  # room for one small agent
        text = refused(agentd, "ceil-cpu", "--memory-max", "16M", "--cpu-quota", "800")
        assert "owner_cpu_quota_max=400" in text and "950 % CPU in all" in text
        text = refused(agentd, "ceil-tasks", "--memory-max", "16M", "--tasks-max", "16384")
        assert "owner_tasks_max=512" in text and "owner_memory_max" not in text
        agentd.create("ceil-fits", user="alice")  # what is left still fits
        agentd.create("root-any", "sandbox")  # administrators are not limited
        agentd.ctl("agent", "create", "root-big", "--template", "sandbox", "--memory-max", "8G")
    for name in ("ceil-0", "ceil-1", "ceil-2", "ceil-fits"):
        agentd.ctl("agent", "rm", name, user="alice")
    for name in ("root-any", "root-big"):
        agentd.ctl("agent", "rm", name)


def active_state(agentd: Agentd, unit: str) -> str:
    return agentd.show(unit, "ActiveState")["ActiveState"]


def test_a_home_past_its_limit_stops_the_agent_until_it_is_cleared(
    agentd: Agentd, ceilings
) -> None:
    name, unit = "ceil-disk", "agent-ceil-disk.service"
    row = agentd.audit("agentd.start")[-1]
    print("home limit mechanism:", row["detail"]["home_limit"])
    assert row["detail"]["home_limit"].startswith("checked-size: ")
    agentd.create(name, user="alice", start=True)
    wait_for(lambda: active_state(agentd, unit) == "active", 60, "the unit active")
    big = f"/home/agents/{name}/big"
    with answering(agentd):
        fill = f"fallocate -l {80 * MiB} {big} || dd if=/dev/zero of={big} bs=1M count=80"
        agentd.m.run_in_unit(unit, ["/bin/sh", "-c", fill])
        try:
            wait_for(
                lambda: active_state(agentd, unit) in ("inactive", "failed"),
                120,
                "agentd to stop the agent over its home limit",
            )
        except AssertionError:
            print(agentd.sh(["du", "-s", "--block-size=1", f"/home/agents/{name}"]).stdout)
            print(agentd.sh(["journalctl", "-u", "agentd", "-n", "40", "--no-pager"]).stdout)
            raise
        over = agentd.audit("agent.home_limit", name)[-1]
        assert over["result"] == "over" and over["detail"]["stopped"] is True
        assert over["detail"]["bytes"] > 64 * MiB and over["detail"]["limit"] == 64 * MiB
        r = agentd.ctl("agent", "start", name, user="alice", check=False)
        assert r.returncode == 1 and "(LimitExceeded)" in r.stderr, r.stderr
        assert "home_max" in r.stderr
        assert active_state(agentd, unit) in ("inactive", "failed")
        start = agentd.audit("agent.start", name)[-1]
        assert start["result"] == "error" and "may not start" in start["detail"]["reason"]
    agentd.sh(["rm", big])  # an administrator clears it: the next start measures again
    agentd.ctl("agent", "start", name, user="alice")
    wait_for(lambda: active_state(agentd, unit) == "active", 60, "the unit active again")
    assert agentd.audit("agent.home_limit", name)[-1]["result"] == "under"
    agentd.ctl("agent", "rm", name, user="alice")
    nothing_of(agentd, name)


def archives(agentd: Agentd) -> list[str]:
    return sorted(agentd.sh(["ls", ARCHIVES]).stdout.split())


def test_archives_beyond_the_retention_are_pruned_oldest_first(agentd: Agentd, ceilings) -> None:
    made = []
    with answering(agentd):
        for i in range(3):
            name = f"ceil-arch-{i}"
            agentd.create(name, user="alice")
            agentd.sh(["sh", "-c", f"head -c 4096 /dev/urandom >/home/agents/{name}/notes"])
            agentd.ctl("agent", "rm", "--keep-home", name, user="alice")
            made.append(next(a for a in archives(agentd) if a.startswith(f"{name}-")))
    kept = archives(agentd)
    assert kept == sorted(made[1:]), kept
    pruned = [r["detail"]["archive"] for r in agentd.audit("archive.prune")]
    assert made[0] in pruned
    row = [r for r in agentd.audit("archive.prune") if r["detail"]["archive"] == made[0]][-1]
    assert row["detail"]["reason"] == "beyond archive_retention_count"
