"""Metrics and the fleet snapshot (issue 16): the exposition format's rules,
the families agentd exports and who sees which series, top's snapshot (what
each agent uses, its task and step, its tokens in the last minute), and the
processes of a unit read from its cgroup and /proc."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from world import ALICE, BOB, ROOT, World

from agentd import policy as policy_mod
from agentd import procs
from agentd.errors import PermissionDenied
from agentd.events import TaskChanged
from agentd.fleet import Fleet, user_name
from agentd.metrics import Counters, Metrics
from agentd.policy import Caller
from agentd.promtext import Family, Histogram, escape_label, render
from agentd.tasks.queue import TaskQueue
from agentd.units import UnitUsage

REPO = Path(__file__).resolve().parents[2]
A, B = user_name(ALICE.uid), user_name(BOB.uid)  # the owner label: a name if uid has one


# -- the exposition format -------------------------------------------------------------
def test_label_values_and_help_are_escaped() -> None:
    family = Family("agentd_x", "gauge", 'a \\ b\nc "d"').add(1, agent='q"u\\o\nte')
    text = render([family])
    assert text.splitlines() == [
        '# HELP agentd_x a \\\\ b\\nc "d"',
        "# TYPE agentd_x gauge",
        'agentd_x{agent="q\\"u\\\\o\\nte"} 1',
    ]
    assert escape_label("plain") == "plain"


def test_histogram_buckets_are_cumulative_and_end_in_inf() -> None:
    h = Histogram((0.5, 1, 5))
    for v in (0.1, 0.5, 0.7, 3, 99):
        h.observe(v)
    text = render([Family("agentd_lat_seconds", "histogram", "h").add_histogram(h, kind="x")])
    assert text.splitlines()[2:] == [
        'agentd_lat_seconds_bucket{kind="x",le="0.5"} 2',  # le: 0.5 counts in 0.5
        'agentd_lat_seconds_bucket{kind="x",le="1"} 3',
        'agentd_lat_seconds_bucket{kind="x",le="5"} 4',
        'agentd_lat_seconds_bucket{kind="x",le="+Inf"} 5',
        'agentd_lat_seconds_sum{kind="x"} 103.3',
        'agentd_lat_seconds_count{kind="x"} 5',
    ]
    both = h.merge(h)
    assert (both.count, both.counts) == (10, [4, 2, 2, 2])


def test_a_counter_must_end_in_total_and_a_family_comes_once() -> None:
    with pytest.raises(ValueError, match="_total"):
        Family("agentd_tokens", "counter", "x")
    with pytest.raises(ValueError, match="twice"):
        render([Family("agentd_a", "gauge", "x"), Family("agentd_a", "gauge", "x")])
    with pytest.raises(ValueError, match="label"):
        Family("agentd_a", "gauge", "x").add(1, **{"__name__": "x"})


# -- agentd's metrics ----------------------------------------------------------------------
class Units:
    """Unit counters as systemd would report them for running units."""

    async def usage(self, unit: str) -> UnitUsage:
        return UnitUsage(42, f"/agents.slice/{unit}", 50 << 20, 3_000_000_000, 4)


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.w = World(tmp_path)
        self.a1 = self.w.run(self.w.reg.create(ALICE, "a1", "sandbox"))
        self.b1 = self.w.run(self.w.reg.create(BOB, "b1", "sandbox"))
        self.queue = TaskQueue(self.w.store, self.w.reg)
        self.states = {"a1": "active", "b1": "active"}
        self.fleet = Fleet(
            self.w.store, self.w.reg, self.w.reg.policy, Units(), lambda a: self.states[a.name]
        )
        self.counters = Counters()
        self.counters.subscribe(self.w.reg.events)
        self.metrics = Metrics(
            self.fleet, self.w.store, self.w.reg.policy, self.counters, lambda: 7
        )

    def usage(self, agent: str, owner: int, tokens: int, ago: float = 0) -> None:
        self.w.store.execute(
            "INSERT INTO usage (ts, agent, agent_uid, owner_uid, kind, prompt_tokens,"
            " completion_tokens, status, duration_s) VALUES (?, ?, 0, ?, 'think', ?, ?, 'ok', 1)",
            (time.time() - ago, agent, owner, tokens, tokens // 2),
        )

    def text(self, caller: Caller) -> str:
        return asyncio.run(self.metrics.text(caller))


def families(text: str) -> dict[str, str]:
    """Family name -> its TYPE, checking HELP comes before TYPE for each."""
    lines = text.splitlines()
    found = {}
    for i, line in enumerate(lines):
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert lines[i - 1].startswith(f"# HELP {name} ")
            found[name] = kind
    return found


def test_every_family_follows_the_conventions_and_is_documented(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    found = families(s.text(ROOT))
    doc = (REPO / "docs/metrics.md").read_text()
    for name, kind in found.items():
        assert name.startswith("agentd_"), name
        assert (kind == "counter") == name.endswith("_total"), name
        assert f"`{name}`" in doc, f"{name} is not in docs/metrics.md"
    documented = set(re.findall(r"^\| `(agentd_[a-z_]+)`", doc, re.M))
    assert documented == set(found)


def test_an_administrator_sees_the_fleet_and_the_metrics_account_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Setup(tmp_path)
    s.usage("a1", ALICE.uid, 100)
    s.usage("b1", BOB.uid, 10)
    text = s.text(ROOT)
    assert 'agentd_agents{state="running"} 2' in text
    assert f'agentd_tokens_total{{agent="b1",owner="{B}",kind="think",type="prompt"}} 10' in text
    assert f'agentd_agent_memory_bytes{{agent="a1",owner="{A}"}} 52428800' in text
    assert f'agentd_agent_cpu_seconds_total{{agent="a1",owner="{A}"}} 3' in text
    assert "agentd_audit_rows 7" in text
    # the metrics unit's account reads the same, and is nobody special elsewhere
    metrics_user = Caller(990)
    monkeypatch.setattr(policy_mod, "_account_uid", lambda name: 990)
    assert s.text(metrics_user).count("agentd_agents{") == s.text(ROOT).count("agentd_agents{")
    assert 'agent="b1"' in s.text(metrics_user) and "agentd_audit_rows" in s.text(metrics_user)
    assert s.w.reg.visible(metrics_user) == []


def test_a_person_sees_only_its_own_agents_tasks_and_tokens(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.usage("a1", ALICE.uid, 100)
    s.usage("b1", BOB.uid, 10)
    s.queue.submit(BOB, {"title": "bob's"})
    s.queue.submit(ALICE, {"title": "alice's"})
    text = s.text(ALICE)
    assert 'agent="b1"' not in text and f'owner="{B}"' not in text
    assert 'agentd_agents{state="running"} 1' in text
    assert f'agentd_tokens_total{{agent="a1",owner="{A}",kind="think",type="prompt"}} 100' in text
    assert 'agentd_tasks{status="pending"} 1' in text
    assert "agentd_task_queue_depth 1" in text
    assert "agentd_audit_rows" not in text and "agentd_errors_total" not in text
    assert "agentd_model_up 0" in text  # no model service here: down, but shown to all


def test_an_agent_may_not_read_metrics_nor_watch_the_fleet(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    with pytest.raises(PermissionDenied):
        s.text(Caller(s.a1.uid))
    with pytest.raises(PermissionDenied):
        asyncio.run(s.fleet.snapshot(Caller(s.a1.uid)))


def test_claim_latency_counts_first_claims_of_the_owners_tasks(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    task = s.queue.submit(ALICE, {"title": "t", "agent": "a1"})
    claimed = s.queue.claim(s.a1)
    assert claimed is not None and claimed.id == task.id
    retry = SimpleNamespace(attempts=2, started_at=1.0, created_at=0.0, owner_uid=ALICE.uid)
    s.counters.on_task(TaskChanged(retry, "task.claimed"))  # a retry: not counted
    alice, bob = s.text(ALICE), s.text(BOB)
    assert "agentd_task_claim_latency_seconds_count 1" in alice
    assert 'agentd_task_claim_latency_seconds_bucket{le="+Inf"} 1' in alice
    assert "agentd_task_claim_latency_seconds_count 0" in bob


# -- top's snapshot ------------------------------------------------------------------------
def test_the_snapshot_has_each_agents_use_task_step_tokens_and_approvals(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.states["b1"] = "inactive"
    task = s.queue.submit(ALICE, {"title": "count apples", "agent": "a1"})
    s.queue.claim(s.a1)
    s.w.store.execute(
        "INSERT INTO task_steps (task_id, attempt, n, step, at) VALUES (?, 1, 3, '{}', 0)",
        (task.id,),
    )
    s.usage("a1", ALICE.uid, 100)  # in the last minute: 150 tokens
    s.usage("a1", ALICE.uid, 1000, ago=120)  # earlier: not counted
    snap = asyncio.run(s.fleet.snapshot(ROOT))
    a1, b1 = snap["agents"]
    assert (a1["name"], a1["state"], a1["memory_current"], a1["tasks_current"]) == (
        "a1",
        "active",
        50 << 20,
        4,
    )
    assert (a1["task_id"], a1["task_title"], a1["step"]) == (task.id, "count apples", 3)
    assert a1["tokens_last_minute"] == 150
    assert (b1["state"], b1["memory_current"], b1["task_id"]) == ("inactive", None, None)
    assert snap["model"] == {"state": "unavailable"}
    assert [a["name"] for a in asyncio.run(s.fleet.snapshot(BOB))["agents"]] == ["b1"]


def test_ps_is_for_the_owner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Setup(tmp_path)
    seen: list[str] = []
    monkeypatch.setattr("agentd.fleet.processes", lambda cg: seen.append(cg) or [])
    assert asyncio.run(s.fleet.processes(ALICE, "a1")) == []
    assert seen == ["/agents.slice/agent-a1.service"]
    with pytest.raises(PermissionDenied):
        asyncio.run(s.fleet.processes(BOB, "a1"))


# -- a unit's processes --------------------------------------------------------------------
def test_processes_come_from_the_cgroup_in_any_layout_and_proc(tmp_path: Path) -> None:
    me = os.getpid()
    for layout in ("unified", "", "systemd"):
        root = tmp_path / layout / "cg"
        group = (root / layout if layout else root) / "agents.slice" / "agent-a.service"
        group.mkdir(parents=True)
        (group / "cgroup.procs").write_text(f"{me}\n999999999\n")  # the second: gone
        found = procs.processes("/agents.slice/agent-a.service", root)
        assert [p.pid for p in found] == [me], layout
        row = found[0]
        assert row.uid == os.getuid() and row.rss_bytes > 0 and "python" in row.command
        assert abs(row.started_at - time.time()) < 24 * 3600
    assert procs.processes("/../etc", tmp_path) == []
    assert procs.processes("/no/such.service", tmp_path) == []


def test_cpu_time_falls_back_to_cgroup_v2s_cpu_stat(tmp_path: Path) -> None:
    group = tmp_path / "unified" / "agents.slice" / "agent-a.service"
    group.mkdir(parents=True)
    (group / "cpu.stat").write_text("usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n")
    assert procs.cpu_usage_nsec("/agents.slice/agent-a.service", tmp_path) == 2_500_000
    assert procs.cpu_usage_nsec("/agents.slice/agent-b.service", tmp_path) is None
