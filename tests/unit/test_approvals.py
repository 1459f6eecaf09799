"""Approval gates in the engine (agentd.approvals): request, grant, deny,
timeout, use exactly once, restart; who may answer; the [approval] table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from world import ALICE, BOB, REPO, ROOT, World

from agentd.approvalrules import ApprovalRules, parse_duration, parse_table
from agentd.approvals import TIMED_OUT, Approvals
from agentd.config import load
from agentd.errors import Busy, InvalidArgument, InvalidConfig, LeaseExpired, PermissionDenied
from agentd.policy import Caller
from agentd.tasks.queue import TaskQueue
from agentd.templates import parse_template

GATED = """description = "an admin's copy with an approval table"
capabilities = ["general"]
tools = ["files", "shell"]
profile = "offline"

[approval]
tools = ["shell", "fetch"]
shell_allow = ["ls *", "cat *", "wc *"]
timeout = "1h"
"""


class G:
    """A World with alice's agent a1 (template "gated", an admin's file), a task it holds."""

    def __init__(self, tmp_path: Path, admin: ApprovalRules | None = None) -> None:
        (tmp_path / "etc" / "templates").mkdir(parents=True)
        (tmp_path / "etc" / "templates" / "gated.toml").write_text(GATED)
        self.w = World(tmp_path)
        self.admin = admin or ApprovalRules()
        self.start()
        self.a1 = self.w.run(self.w.reg.create(ALICE, "a1", "gated"))
        self.tid = self.q.submit(ALICE, {"title": "t", "agent": "a1"}).id
        assert self.claim() == 1

    def start(self) -> None:
        self.q = TaskQueue(self.w.store, self.w.reg)
        self.ap = Approvals(self.q, self.w.reg.catalog, self.admin)
        self.heard: list[tuple[str, int, str]] = []
        self.ap.listeners.append(lambda what, a: self.heard.append((what, a["id"], a["status"])))

    def restart(self) -> None:
        self.w.store.close()
        self.w.reopen()
        self.start()
        self.a1 = self.w.reg.by_id(self.a1.id)  # type: ignore[assignment]

    def claim(self) -> int:
        task = self.q.claim(self.a1)
        assert task is not None and task.id == self.tid
        return task.attempts

    def ask(self, command: str = "rm -rf build", attempt: int = 1) -> int:
        return self.ap.request(
            self.a1, self.tid, attempt, "shell", json.dumps({"command": command})
        )

    def rows(self, action: str) -> list:
        return [e for e in self.w.audit.entries(limit=100000) if e.action == action]

    def status(self) -> str:
        return self.q.find(self.tid).status  # type: ignore[union-attr]


@pytest.fixture
def g(tmp_path: Path) -> G:
    return G(tmp_path)


def test_a_request_makes_the_task_wait_with_the_exact_action(g: G) -> None:
    aid = g.ask("cd build && rm -rf out")
    assert g.status() == "awaiting_approval"
    info = g.ap.show(ALICE, aid)
    assert info["arguments"] == {"command": "cd build && rm -rf out"}
    assert info["status"] == "pending" and info["agent"] == "a1" and info["task"] == g.tid
    assert "cd build" in info["why"]
    assert 3590 < info["deadline"] - info["created_at"] <= 3600
    (row,) = g.rows("approval.requested")
    assert (row.task_id, row.agent, row.detail["approval"]) == (g.tid, "a1", aid)
    assert g.heard == [("requested", aid, "pending")]
    assert [a["id"] for a in g.ap.listing(ALICE)] == [aid]
    assert g.ap.listing(BOB) == []


def test_grant_returns_the_task_to_the_same_agent_and_it_runs_once(g: G) -> None:
    aid = g.ask()
    g.ap.answer(ALICE, aid, grant=True)
    assert g.status() == "pending" and g.q.find(g.tid).agent_id == g.a1.id  # type: ignore[union-attr]
    assert g.rows("approval.granted")[0].detail["approval"] == aid
    attempt = g.claim()
    got = g.ap.for_task(g.a1, g.tid)
    assert got["approvals"][0]["status"] == "granted"
    g.ap.use(g.a1, aid, attempt)
    g.ap.use(g.a1, aid, attempt)  # the reply was lost: asked again, same answer
    assert g.ap.show(ALICE, aid)["status"] == "used"
    assert len(g.rows("approval.used")) == 1


def test_a_used_approval_is_never_used_by_another_attempt(g: G) -> None:
    aid = g.ask()
    g.ap.answer(ALICE, aid, grant=True)
    attempt = g.claim()
    g.ap.use(g.a1, aid, attempt)
    g.q.lifecycle.expire([g.w.store.query("SELECT * FROM tasks WHERE id=?", (g.tid,))[0]], 0.0)
    g.w.store.execute("UPDATE tasks SET not_before=0 WHERE id=?", (g.tid,))
    again = g.claim()
    assert again == attempt + 1
    with pytest.raises(Busy, match="used by attempt"):
        g.ap.use(g.a1, aid, again)


def test_the_request_does_not_consume_an_attempt(g: G) -> None:
    before = g.q.find(g.tid).max_attempts  # type: ignore[union-attr]
    g.ask()
    assert g.q.find(g.tid).max_attempts == before + 1  # type: ignore[union-attr]


def test_deny_tells_the_reason_and_the_action_cannot_be_used(g: G) -> None:
    aid = g.ask()
    g.ap.answer(ALICE, aid, grant=False, reason="not the build dir")
    assert g.status() == "pending"
    attempt = g.claim()
    (a,) = g.ap.for_task(g.a1, g.tid)["approvals"]
    assert (a["status"], a["reason"]) == ("denied", "not the build dir")
    with pytest.raises(Busy):
        g.ap.use(g.a1, aid, attempt)
    assert g.rows("approval.denied")[0].detail["reason"] == "not the build dir"


def test_only_the_owner_or_an_admin_answers_never_an_agent(g: G) -> None:
    aid = g.ask()
    with pytest.raises(PermissionDenied):
        g.ap.answer(BOB, aid, grant=True)
    agent = Caller(g.a1.uid, name="a1")
    with pytest.raises(PermissionDenied):
        g.ap.answer(agent, aid, grant=True)
    with pytest.raises(PermissionDenied):
        g.ap.listing(agent)
    denied = [r for r in g.rows("approval.grant") if r.result == "denied"]
    assert {r.actor_uid for r in denied} == {BOB.uid, g.a1.uid}
    assert g.ap.show(ALICE, aid)["status"] == "pending"
    g.ap.answer(ROOT, aid, grant=False, reason="admin says no")
    with pytest.raises(Busy):
        g.ap.answer(ALICE, aid, grant=True)


def test_an_agent_uses_only_its_own_approvals_at_its_current_attempt(g: G) -> None:
    aid = g.ask()
    g.ap.answer(ALICE, aid, grant=True)
    attempt = g.claim()
    a2 = g.w.run(g.w.reg.create(ALICE, "a2", "gated"))
    with pytest.raises(PermissionDenied):
        g.ap.use(a2, aid, attempt)
    with pytest.raises(LeaseExpired):
        g.ap.use(g.a1, aid, attempt - 1)
    assert g.ap.show(ALICE, aid)["status"] == "granted"


def test_unanswered_past_the_deadline_is_denied_as_timed_out(g: G) -> None:
    aid = g.ask()
    assert g.ap.expire() == 0
    g.ap.clock = lambda: 10**12
    assert g.ap.expire() == 1
    info = g.ap.show(ALICE, aid)
    assert (info["status"], info["reason"]) == ("denied", TIMED_OUT)
    assert g.status() == "pending"
    (row,) = g.rows("approval.denied")
    assert row.actor_uid == 0 and row.detail["reason"] == TIMED_OUT


def test_approvals_survive_a_restart_pending_and_answered(g: G) -> None:
    aid = g.ask()
    g.restart()
    assert g.ap.show(ALICE, aid)["status"] == "pending" and g.status() == "awaiting_approval"
    g.ap.answer(ALICE, aid, grant=True)
    g.restart()
    attempt = g.claim()
    g.ap.use(g.a1, aid, attempt)
    g.restart()
    assert g.ap.show(ALICE, aid)["status"] == "used"
    g.ap.use(g.a1, aid, attempt)  # the same attempt may ask again; no other may


def test_grant_always_extends_the_agents_own_allow_list(g: G) -> None:
    aid = g.ask("rm -f out.txt; ls")
    g.ap.answer(ALICE, aid, grant=True, always=True)
    g.claim()
    rules = g.ap.for_task(g.a1, g.tid)["rules"]
    assert rules["tools"] == ["shell", "fetch"]
    assert rules["shell_allow"] == ["ls *", "cat *", "wc *", "rm -f out.txt"]  # ls was allowed
    assert json.loads(g.rows("approval.granted")[0].detail["always"]) == ["rm -f out.txt"]
    with pytest.raises(InvalidArgument):
        g.ap.answer(ALICE, aid, grant=False, always=True)


def test_always_is_refused_for_what_cannot_be_repeated_safely(g: G) -> None:
    aid = g.ask("ls $(rm x)")
    with pytest.raises(InvalidArgument, match="cannot be proved"):
        g.ap.answer(ALICE, aid, grant=True, always=True)
    assert g.ap.show(ALICE, aid)["status"] == "pending"


def test_bad_requests_are_refused(g: G) -> None:
    for tool, args in (("launch", "{}"), ("shell", "[1]"), ("shell", "{"), ("shell", "x" * 20000)):
        with pytest.raises(InvalidArgument):
            g.ap.request(g.a1, g.tid, 1, tool, args)
    assert g.status() == "in_progress"


def test_a_cancelled_task_can_still_be_answered_on_the_record(g: G) -> None:
    aid = g.ask()
    g.q.cancel(ALICE, g.tid)
    assert g.status() == "cancelled"
    g.ap.answer(ALICE, aid, grant=False, reason="cancelled anyway")
    assert g.rows("approval.denied")[0].task_id == g.tid


def test_the_admin_policy_only_adds_requirements(tmp_path: Path) -> None:
    admin = ApprovalRules(("shell", "write_file"), ("ls *",), 60.0, True)
    g = G(tmp_path, admin)
    rules = g.ap.for_task(g.a1, g.tid)["rules"]
    assert rules["tools"] == ["shell", "fetch", "write_file"]
    assert rules["shell_allow"] == ["ls *"]  # only what both allow
    assert rules["timeout"] == 60.0


def test_the_shipped_templates_and_an_admins_copy_parse(tmp_path: Path) -> None:
    ops = parse_template(REPO / "policies" / "templates" / "ops.toml")
    assert "shell" in ops.approval.tools and "ls *" in ops.approval.shell_allow
    assert (ops.steps, ops.task_tokens) == (10, 20000)
    copy = tmp_path / "ops.toml"
    copy.write_text(GATED)
    assert parse_template(copy).approval.tools == ("shell", "fetch")


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"tools": ["launch"]}, "unknown tool"),
        ({"tools": "shell"}, "list of tool names"),
        ({"shell_allow": [""]}, "shell_allow"),
        ({"shell_allow": ["ls\n*"]}, "shell_allow"),
        ({"timeout": "soon"}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"timout": "1h"}, "unknown key"),
    ],
)
def test_a_bad_approval_table_is_refused_naming_the_file(table: dict, match: str) -> None:
    with pytest.raises(InvalidConfig, match=match) as e:
        parse_table("/etc/agentd/templates/x.toml", table)
    assert "/etc/agentd/templates/x.toml" in str(e.value)


def test_steps_and_task_tokens_are_bounded(tmp_path: Path) -> None:
    for line in ("steps = 0", "steps = 101", "task_tokens = 5", 'steps = "10"'):
        path = tmp_path / "t.toml"
        path.write_text(f"{line}\n")
        with pytest.raises(InvalidConfig):
            parse_template(path)


def test_durations() -> None:
    assert [parse_duration(v) for v in ("90s", "30m", "1h", "2d", 5, "1.5h")] == [
        90.0,
        1800.0,
        3600.0,
        172800.0,
        5.0,
        5400.0,
    ]


def test_agentd_toml_approval_table(tmp_path: Path) -> None:
    path = tmp_path / "agentd.toml"
    path.write_text('[approval]\ntools = ["shell"]\nshell_allow = ["ls *"]\ntimeout = "10m"\n')
    cfg = load(path)
    assert cfg.approval == ApprovalRules(("shell",), ("ls *",), 600.0, True)
    path.write_text('[approval]\ntools = ["rm"]\n')
    with pytest.raises(InvalidConfig, match="unknown tool"):
        load(path)
