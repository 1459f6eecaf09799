"""Home disk limits and archive retention (issue 10, finding 9): the helper's
usage walk on real directories (agentd.homework), DiskWatch over a World
(agentd.diskwatch: over the limit, the unit stops and starts are refused until
the home is under again), which mechanism the homes' filesystem allows, and the
archive retention (agentd.homes)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from world import ALICE, World

from agentd import homework
from agentd.diskwatch import MAX_ENTRIES, DiskWatch, StartGuard, mechanism
from agentd.errors import LimitExceeded
from agentd.homes import Homes, HomeWorkError, Retention
from agentd.names import unit_name
from agentd.scheduler import Scheduler
from agentd.tasks.queue import TaskQueue

MiB = 1 << 20


def filled(path: Path, size: int) -> None:
    """SIZE bytes of real data (allocated blocks, not a hole)."""
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------- the helper's walk
def test_usage_counts_allocated_blocks_each_inode_once(tmp_path: Path) -> None:
    home = tmp_path / "h"
    (home / "d" / "e").mkdir(parents=True)
    filled(home / "d" / "e" / "data", 2 * MiB)
    os.link(home / "d" / "e" / "data", home / "again")  # the same blocks
    with open(home / "hole", "wb") as f:
        f.truncate(1 << 40)  # a 1 TiB hole costs nothing
    os.symlink("/usr", home / "out")  # never followed
    r = homework.usage(str(tmp_path), "h", 10 * MiB, 100, 60)
    assert "over" not in r and r["entries"] == 6
    assert 2 * MiB <= r["bytes"] < 3 * MiB


def test_usage_stops_at_the_limit_the_entries_or_the_time(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    for i in range(4):
        filled(home / f"f{i}", MiB)
    r = homework.usage(str(tmp_path), "h", 2 * MiB, 100, 60)
    assert r["over"] == "bytes" and r["bytes"] > 2 * MiB and r["entries"] < 4
    r = homework.usage(str(tmp_path), "h", 100 * MiB, 2, 60)
    assert r["over"] == "entries"
    r = homework.usage(str(tmp_path), "h", 100 * MiB, 100, -1)
    assert r["over"] == "slow"
    assert homework.usage(str(tmp_path), "none", 1, 1, 1) == {
        "bytes": 0,
        "entries": 0,
        "note": "no home",
    }


def test_a_directory_gone_since_it_was_listed_is_passed_over(tmp_path: Path) -> None:
    """An agent's own churn (a temporary directory deleted mid-walk) does not
    make its home unmeasurable; removal and archiving still stop on it."""
    (tmp_path / "h" / "a").mkdir(parents=True)
    (tmp_path / "h" / "b").mkdir()
    seen: list[str] = []

    def visit(fd: int, stack: list[homework.Frame]) -> list[tuple[str, int]]:
        seen.append(stack[-1].name)
        if len(stack) > 1:
            return []
        with os.scandir(fd) as it:
            subdirs = [(e.name, e.inode()) for e in it]
        os.rmdir("a", dir_fd=fd)
        return subdirs

    root_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        homework.walk(root_fd, "h", visit, lambda _fd, _name: None, skip_gone=True)
        assert sorted(seen) == ["b", "h"]
        (tmp_path / "h" / "a").mkdir()
        with pytest.raises(homework.Failure, match="cannot open directory 'a'"):
            homework.walk(root_fd, "h", visit, lambda _fd, _name: None)
    finally:
        os.close(root_fd)


def test_the_helper_measures_several_homes_in_one_process(tmp_path: Path) -> None:
    homes = Homes(tmp_path / "homes", tmp_path / "archive")
    for name, size in (("small", MiB), ("big", 3 * MiB)):
        (tmp_path / "homes" / name).mkdir(parents=True)
        filled(tmp_path / "homes" / name / "f", size)
    got = asyncio.run(homes.usage({"small": 2 * MiB, "big": 2 * MiB, "gone": MiB}, 100, 60))
    assert "over" not in got["small"] and got["big"]["over"] == "bytes"
    assert got["gone"]["note"] == "no home"


# ---------------------------------------------------------------- the mechanism
OVERLAY = "30 1 0:27 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n"
EXT4 = "31 30 8:1 / /home rw,relatime - ext4 /dev/sda1 rw,prjquota\n"
XFS = "32 30 8:2 / /home/agents rw - xfs /dev/sdb rw,attr2,noquota\n"


def test_mechanism_reads_the_filesystem_of_the_homes() -> None:
    kind, why = mechanism(Path("/home/agents"), OVERLAY)
    assert kind == "checked-size" and why == "overlay at / has no project quotas"
    kind, why = mechanism(Path("/home/agents"), OVERLAY + EXT4)
    assert "ext4 at /home has project quotas" in why
    kind, why = mechanism(Path("/home/agents"), OVERLAY + EXT4 + XFS)
    assert why == "xfs at /home/agents has no project quotas"
    assert mechanism(Path("/home/agentsx"), OVERLAY + XFS)[1].startswith("overlay at /")


# ----------------------------------------------------------------- DiskWatch
class FakeUsage:
    """Homes.usage with chosen answers: name -> bytes (over when past the limit)."""

    def __init__(self) -> None:
        self.size: dict[str, int] = {}
        self.calls: list[list[str]] = []
        self.fail = False

    async def usage(
        self, limits: dict[str, int], max_entries: int, seconds: float
    ) -> dict[str, dict[str, object]]:
        self.calls.append(sorted(limits))
        if self.fail:
            raise HomeWorkError("crashed", "simulated")
        out: dict[str, dict[str, object]] = {}
        for name, limit in limits.items():
            size = self.size.get(name, 0)
            out[name] = {"bytes": size, "entries": 1}
            if size > limit:
                out[name]["over"] = "bytes"
        return out


def watched(tmp_path: Path) -> tuple[World, DiskWatch, FakeUsage]:
    w = World(tmp_path, home_max=10 * MiB)
    guard = StartGuard(w.units)
    w.reg.units = guard
    usage = FakeUsage()
    watch = DiskWatch(w.reg, usage)
    guard.guard = watch.check_start
    return w, watch, usage


async def started(w: World, name: str) -> None:
    await w.reg.start(ALICE, name)
    await w.reg.settle()


def test_over_the_limit_the_unit_stops_and_starts_are_refused_until_under(
    tmp_path: Path,
) -> None:
    w, watch, usage = watched(tmp_path)

    async def scenario() -> None:
        await w.reg.create(ALICE, "fat", "sandbox")
        await w.reg.create(ALICE, "thin", "sandbox")
        await started(w, "fat")
        await started(w, "thin")
        usage.size["fat"] = 11 * MiB
        await watch.check_all()
        await w.reg.settle()
        assert unit_name("fat") not in w.units.running
        assert unit_name("thin") in w.units.running
        assert watch.held() == {"fat"}
        with pytest.raises(LimitExceeded, match="home_max=10485760"):
            await w.reg.start(ALICE, "fat")
        await watch.check_all()  # still over, already stopped: nothing new
        usage.size["fat"] = MiB  # the file is removed: the start measures again
        await started(w, "fat")
        assert unit_name("fat") in w.units.running and watch.held() == set()

    asyncio.run(scenario())
    rows = w.audit_rows("agent.home_limit")
    assert [(r.agent, r.result) for r in rows] == [("fat", "over"), ("fat", "under")]
    assert rows[0].detail["stopped"] is True and rows[0].detail["bytes"] == 11 * MiB
    assert "uses more than 10485760 bytes" in rows[0].detail["reason"]
    stops = [r for r in w.audit_rows("agent.stop") if r.agent == "fat"]
    assert len(stops) == 1 and stops[0].actor_uid == 0
    refused = [r for r in w.audit_rows("agent.start") if r.result == "error"]
    assert len(refused) == 1 and "may not start" in refused[0].detail["reason"]


def test_a_first_start_is_measured_and_a_failed_measurement_refuses_only_marked(
    tmp_path: Path,
) -> None:
    w, watch, usage = watched(tmp_path)

    async def scenario() -> None:
        await w.reg.create(ALICE, "a", "sandbox")
        watch.since = time.time()  # made before agentd (re)started
        usage.size["a"] = 20 * MiB  # over before any pass (agentd just restarted)
        with pytest.raises(LimitExceeded):
            await w.reg.start(ALICE, "a")
        assert usage.calls == [["a"]]
        usage.fail = True
        with pytest.raises(LimitExceeded):  # marked: stays refused
            await w.reg.start(ALICE, "a")
        usage.fail, usage.size["a"] = False, 0
        await started(w, "a")
        n = len(usage.calls)
        await w.reg.stop(ALICE, "a")
        await w.reg.settle()
        await started(w, "a")  # measured since agentd started, not marked: no walk
        assert len(usage.calls) == n

    asyncio.run(scenario())


def test_an_agent_made_since_agentd_started_starts_without_a_walk(tmp_path: Path) -> None:
    """Its home is the empty one agentd made; the periodic pass watches it."""
    w, _watch, usage = watched(tmp_path)

    async def scenario() -> None:
        await w.reg.create(ALICE, "a", "sandbox")
        await started(w, "a")
        assert usage.calls == []

    asyncio.run(scenario())


def test_removed_agents_are_forgotten_and_zero_turns_the_watch_off(tmp_path: Path) -> None:
    w, watch, usage = watched(tmp_path)

    async def scenario() -> None:
        await w.reg.create(ALICE, "a", "sandbox")
        usage.size["a"] = 20 * MiB
        await watch.check_all()
        assert watch.held() == {"a"}
        await w.reg.remove(ALICE, "a")
        await watch.check_all()
        assert watch.held() == set() and not watch.measured

    asyncio.run(scenario())
    off = DiskWatch(World(tmp_path / "off", home_max=0).reg, FakeUsage())
    asyncio.run(off.run())  # returns at once
    asyncio.run(off.check_start("anything"))


def test_the_scheduler_leaves_held_agents_alone(tmp_path: Path) -> None:
    w, watch, usage = watched(tmp_path)
    q = TaskQueue(w.store, w.reg)
    sched = Scheduler(w.reg, q, w.units, w.reg.events, held=watch.held)

    async def scenario() -> None:
        await w.reg.create(ALICE, "a", "sandbox")
        usage.size["a"] = 20 * MiB
        await watch.check_all()
        q.submit(ALICE, {"title": "t", "agent": "a"})
        await sched.step()
        await w.reg.settle()
        assert unit_name("a") not in w.units.running
        assert not w.audit_rows("agent.start")

    asyncio.run(scenario())


def test_max_entries_bounds_one_measurement_to_about_a_minute() -> None:
    assert MAX_ENTRIES / 20_000 <= 60  # the helper's measured rate (agentd.homes)


# ------------------------------------------------------------ archive retention
def archives(d: Path, *ages_sizes: tuple[float, int]) -> list[str]:
    d.mkdir(parents=True, exist_ok=True)
    now, made = time.time(), []
    for i, (age_days, size) in enumerate(ages_sizes):
        p = d / f"a{i}-7000{i}-x.tar.gz"
        p.write_bytes(b"x" * size)
        os.utime(p, (now - age_days * 86400, now - age_days * 86400))
        made.append(p.name)
    return made


def test_retention_prunes_the_oldest_beyond_each_bound(tmp_path: Path) -> None:
    d = tmp_path / "archive"
    names = archives(d, (0.5, 100), (2, 100), (3, 100), (40, 100))
    (d / "other.part").write_bytes(b"x" * 1000)  # in the making: not an archive
    homes = Homes(tmp_path / "homes", d, retention=Retention(count=3, bytes=0, days=0))
    pruned = homes.prune_archives()
    assert [(p["file"], p["why"]) for p in pruned] == [(names[3], "count")]
    homes.retention = Retention(count=0, bytes=250, days=0)
    assert [p["file"] for p in homes.prune_archives()] == [names[2]]
    homes.retention = Retention(count=0, bytes=0, days=1)
    assert [(p["file"], p["why"]) for p in homes.prune_archives()] == [(names[1], "days")]
    assert sorted(p.name for p in d.iterdir()) == sorted([names[0], "other.part"])


def test_the_archive_just_written_is_kept_whatever_its_size(tmp_path: Path) -> None:
    d = tmp_path / "archive"
    names = archives(d, (0, 500), (1, 10))
    homes = Homes(tmp_path / "homes", d, retention=Retention(count=1, bytes=100, days=0))
    pruned = homes.prune_archives(keep=d / names[0])
    assert [p["file"] for p in pruned] == [names[1]] and (d / names[0]).exists()


def test_writing_an_archive_prunes_and_reports(tmp_path: Path) -> None:
    d = tmp_path / "archive"
    old = archives(d, (5, 10), (6, 10))
    seen: list[list[dict[str, object]]] = []
    homes = Homes(tmp_path / "homes", d, retention=Retention(2, 0, 0), on_prune=seen.append)
    (tmp_path / "homes" / "a").mkdir(parents=True)
    filled(tmp_path / "homes" / "a" / "f", 1000)
    info = asyncio.run(homes.archive("a", d / "a-70009-new.tar.gz"))
    assert info["bytes"]
    assert sorted(p.name for p in d.iterdir()) == sorted([old[0], "a-70009-new.tar.gz"])
    assert [[p["file"] for p in batch] for batch in seen] == [[old[1]]]


def test_a_removed_agents_memory_beside_its_archive_goes_with_it(tmp_path: Path) -> None:
    """The agent's memory written beside its archive (agentd.memory, NAME.memory.jsonl)
    counts in the archive's bytes and is pruned with it."""
    d = tmp_path / "archive"
    names = archives(d, (0, 100), (1, 100))
    for name in names:
        (d / name.replace(".tar.gz", ".memory.jsonl")).write_bytes(b"m" * 100)
    homes = Homes(tmp_path / "homes", d, retention=Retention(count=0, bytes=250, days=0))
    (pruned,) = homes.prune_archives()
    assert (pruned["file"], pruned["bytes"]) == (names[1], 200)
    kept = names[0].replace(".tar.gz", "")
    assert sorted(p.name for p in d.iterdir()) == [f"{kept}.memory.jsonl", f"{kept}.tar.gz"]
