"""agentd's Cockpit page in the machine (issue 17): cockpit.socket started, a
real browser (Debian's chromium, headless, driven by selenium) logs in with
Cockpit's PAM login as an ordinary user, sees only that user's agents,
creates and starts one, submits a task and watches its card move across the
board as agentd signals it, submits a goal with a plan and watches it run as
a tree of steps, chats with an agent and sees the answer stream in, sees on
the Usage tab the tokens agentd metered, opens an agent's details with its
journal and a task's steps and artifacts, and another user's agent is
refused to it; an administrator sees all. The page holds no rights: each call is made by
Cockpit's bridge as the logged-in user, and agentd decides. Screenshots of
each page go to build/screenshots (docs/screenshots has a set of them)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from agentd_helpers import Agentd

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BROWSER = ROOT / "tests" / "integration" / "clients" / "cockpit_browser.py"
SHOTS = ROOT / "build" / "screenshots"
PASSWORDS = {"alice": "alice-Cockpit-1", "bob": "bob-Cockpit-1", "carol": "carol-Cockpit-1"}
COCKPIT_CONF = "[WebService]\nAllowUnencrypted = true\n"


@pytest.fixture(scope="module")
def cockpit(agentd: Agentd) -> Agentd:
    a = agentd
    package = os.environ.get("AGENTD_TEST_PACKAGE")
    page = Path(package).parent / Path(package).name.replace("agentd_", "cockpit-agentd_").replace(
        "_amd64", "_all"
    ) if package else None  # fmt: skip
    if page is not None and page.is_file():  # the package's page, as an operator installs it
        a.sh(["dpkg", "-i", str(page)], timeout=300)
    else:
        a.sh(["make", "-C", str(ROOT), "--no-print-directory", "install-cockpit"])
    a.sh(["chpasswd"], input="".join(f"{u}:{p}\n" for u, p in PASSWORDS.items()))
    a.sh(["mkdir", "-p", "/etc/cockpit"])
    a.m.write_file("/etc/cockpit/cockpit.conf", COCKPIT_CONF, mode=0o644)
    a.sh(["systemctl", "start", "cockpit.socket"])
    a.create("ck-pre", template="sandbox", user="alice")
    a.create("ck-bob", template="sandbox", user="bob")
    return a


def browse(a: Agentd, user: str, action: str, *args: str) -> dict[str, Any]:
    out = a.sh(
        ["python3", str(BROWSER), user, PASSWORDS[user], str(SHOTS), action, *args], timeout=300
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def test_a_user_sees_only_their_own_agents(cockpit: Agentd) -> None:
    seen = browse(cockpit, "alice", "agents")["agents"]
    assert "ck-pre" in seen and "ck-bob" not in seen


def test_a_user_creates_and_starts_an_agent_from_the_page(cockpit: Agentd) -> None:
    a = cockpit
    got = browse(a, "alice", "create", "ck-web", "sandbox")
    assert got["error"] == "" and "ck-web" in got["agents"], got
    # what the system shows: alice's agent, a user of its own, its unit running
    shown = a.ctl_json("agent", "show", "ck-web", user="alice")
    assert shown["owner_uid"] == a.uid_of("alice"), shown
    assert a.sh(["getent", "passwd", "agent-ck-web"]).returncode == 0
    assert a.show("agent-ck-web.service", "ActiveState")["ActiveState"] == "active"


def test_an_agents_details_follow_its_journal_live(cockpit: Agentd) -> None:
    """Its owner cannot read the agent's journal with journalctl (the lines are
    the agent UID's and PID 1's); the page shows them through agentd, and a
    line the runtime writes when the page stops it arrives while shown. Bob's
    call for them is refused."""
    a = cockpit
    a.wait_online("ck-web")
    own = a.sh(
        ["runuser", "-u", "alice", "--", "journalctl", "-q", "--no-pager", "-u", "agent-ck-web"],
        check=False,
    )
    assert "online as uid" not in own.stdout, own.stdout
    got = browse(a, "alice", "journal", "ck-web")
    assert got["error"] == "", got
    assert any("agent ck-web online as uid" in line for line in got["before"]), got
    assert any("agent ck-web stopping" in line for line in got["after"]), got
    assert "agent-ck-web.service" in got["facts"], got
    refused = browse(a, "bob", "call", "Observe", "ReadAgentJournal", '["ck-web", "", 10, 0]')
    assert refused["answer"].endswith(("PermissionDenied", "NoSuchAgent")), refused


def test_a_task_submitted_on_the_board_moves_to_done(cockpit: Agentd) -> None:
    a = cockpit
    a.ctl("agent", "start", "ck-pre", user="alice")
    a.wait_online("ck-pre")
    got = browse(a, "alice", "submit", "board-move", "ck-pre", "sleep 3; echo moved")
    assert got["error"] == "", got
    assert got["columns"][-1] == "done" and len(got["columns"]) >= 2, got
    tasks = a.ctl_json("task", "list", user="alice")
    (task,) = [t for t in tasks if t["title"] == "board-move"]
    assert task["status"] == "completed" and task["agent"] == "ck-pre"


def test_a_tasks_steps_and_artifacts_show_under_the_board(cockpit: Agentd) -> None:
    """A free-form task run by the agent loop on the default model (its steps
    recorded through RecordStep), and a command task that leaves an artifact:
    the page shows what agentd has of each, and an artifact's text as read back
    through ReadArtifact."""
    a = cockpit
    a.wait_online("ck-pre")
    loop = a.submit("Suggest a name for a backup script", "--agent", "ck-pre")
    made = a.submit(
        "leave a note",
        "--agent",
        "ck-pre",
        "--exec",
        "echo 'hello from ck-pre' > artifacts/note.txt",
    )
    for task in (loop, made):
        a.ctl("task", "wait", str(task), "--timeout", "300", user="alice", check=False, timeout=330)
    steps = a.ctl_json("task", "log", str(loop), user="alice")
    got = browse(a, "alice", "details", str(loop))
    assert got["error"] == "" and got["title"].startswith(f"#{loop} Suggest"), got
    assert got["status"] in ("completed", "failed"), got
    assert steps and got["steps"] == [s["tool"] for s in steps], (got, steps)
    got = browse(a, "alice", "details", str(made), "note.txt")
    assert got["error"] == "" and got["status"] == "completed", got
    assert got["steps"] == [] and got["artifacts"] == ["note.txt"], got
    assert got["artifact_text"] == "hello from ck-pre", got


def test_the_board_filters_by_agent_and_project(cockpit: Agentd) -> None:
    a = cockpit
    a.ctl("project", "create", "ck-proj", user="alice")
    held = a.submit("in a project", "--project", "ck-proj", "--agent", "ck-pre", "--exec", "true")
    tasks = a.ctl_json("task", "list", user="alice")
    got = browse(a, "alice", "filter", "agent", "ck-pre")
    mine = sorted(str(t["id"]) for t in tasks if t["agent"] == "ck-pre")
    assert got["error"] == "" and sorted(c[0] for c in got["cards"]) == mine, (got, mine)
    assert {c[1] for c in got["cards"]} == {"ck-pre"}, got
    got = browse(a, "alice", "filter", "project", "ck-proj")
    assert got["cards"] == [[str(held), "ck-pre", "ck-proj"]], got


def test_a_chat_streams_its_answer_into_the_page(cockpit: Agentd) -> None:
    a = cockpit
    before = _chat_rows(a)
    got = browse(a, "alice", "chat", "ck-pre", "Write a story of three paragraphs about a cat.")
    assert got["error"] == "" and got["answer"], got
    assert "tokens" in got["meta"], got  # the done event's counts
    assert got["growth"] >= 2, got  # seen growing: streamed by ChatRead's long polls
    assert _chat_rows(a) == before + 1  # metered as alice's chat with ck-pre


PLAN = {
    "steps": [
        {"id": "a", "title": "First", "instructions": "Say one.", "needs": ["general"],
         "depends_on": [], "exec": "sleep 2; echo one"},
        {"id": "b", "title": "Second", "instructions": "Say two.", "needs": ["general"],
         "depends_on": ["a"], "exec": "echo two"},
    ]
}  # fmt: skip


def test_a_goal_runs_live_as_a_tree_of_its_steps(cockpit: Agentd) -> None:
    a = cockpit
    a.create("ck-plan", template="planner", user="alice")
    got = browse(a, "alice", "goal", "Count to two", json.dumps(PLAN))
    assert got["error"] == "", got
    assert got["states"][-1] == "completed", got
    steps = {s["id"]: s for s in got["goal"]["steps"]}
    assert steps["b"]["parent"] == "a" and steps["a"]["parent"] is None  # b hangs under a
    assert {s["state"] for s in steps.values()} == {"completed"}
    (row,) = [g for g in a.ctl_json("goal", "list", user="alice") if g["intent"] == "Count to two"]
    assert row["state"] == "completed"


def _chat_rows(a: Agentd) -> int:
    rows = a.ctl_json("usage", "--days", "1", user="alice")["days"]
    return sum(r["requests"] for r in rows if r["agent"] == "ck-pre")


def test_the_usage_chart_shows_the_tokens_agentd_metered(cockpit: Agentd) -> None:
    a = cockpit
    a.ctl("chat", "ck-pre", "-m", "Say hi.", "--max-tokens", "8", user="alice", timeout=300)
    metered = sum(
        r["prompt_tokens"] + r["completion_tokens"]
        for r in a.ctl_json("usage", "--days", "1", user="alice")["days"]
        if r["agent"] == "ck-pre"
    )
    got = browse(a, "alice", "usage")
    assert got["error"] == "", got
    shown = sum(b["tokens"] for b in got["bars"] if b["agent"] == "ck-pre")
    assert metered > 0 and shown == metered, (metered, got)
    assert all(b["agent"] != "ck-pre" for b in browse(a, "bob", "usage")["bars"])


def test_another_users_agent_is_refused_and_an_admin_sees_all(cockpit: Agentd) -> None:
    a = cockpit
    bob = browse(a, "bob", "agents")["agents"]
    assert "ck-bob" in bob and "ck-pre" not in bob
    refused = browse(a, "bob", "stop", "ck-pre")["answer"]
    assert refused.endswith(("PermissionDenied", "NoSuchAgent")), refused
    assert a.show("agent-ck-pre.service", "ActiveState")["ActiveState"] == "active"
    assert {"ck-bob", "ck-pre", "ck-web"} <= set(browse(a, "carol", "agents")["agents"])
