"""Teams and messages in the machine (issue 15): two members of a team meet in
its directory (root:agentd-team-NAME 2770, their files the team's group, 0660)
while an agent of the same owner outside the team and a member of another
team cannot even see it; the team's group is in the member's process groups
(/proc/PID/status); messages between members arrive in order after an agentd
restart in between, sent and received by the agents themselves over the
system bus (their UIDs); another owner's agent is refused, audited; size and
rate limits hold; a team's task runs on a member; removing the team takes
its group and directory (archived) away. Real users, units and bus."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agentd_helpers import Agentd, wait_for

pytestmark = pytest.mark.integration
TEAMS = "/home/agents/.teams"
RUNTIME = "org.agentos.agentd1 /org/agentos/agentd1 org.agentos.agentd1.Runtime"


@pytest.fixture(scope="module")
def crew(agentd: Agentd) -> Agentd:
    a = agentd
    for name in ("tm-a", "tm-b", "tm-c"):
        a.create(name, template="sandbox", user="alice")
    a.create("tm-x", template="sandbox", user="bob")
    a.ctl("team", "create", "crew", "--description", "builds things", user="alice")
    a.ctl("team", "add", "crew", "tm-a", "tm-b", user="alice")
    a.ctl("team", "create", "other", user="bob")
    a.ctl("team", "add", "other", "tm-x", user="bob")
    return a


def run(a: Agentd, agent: str, command: str, user: str = "alice") -> dict[str, Any]:
    """An --exec task on AGENT, waited for: its status and the command's output."""
    tid = a.submit(f"run on {agent}", "--agent", agent, "--exec", command, user=user)
    a.ctl("task", "wait", str(tid), "--timeout", "120", user=user, check=False, timeout=180)
    t = a.ctl_json("task", "show", str(tid), user=user)
    assert t["status"] in ("completed", "failed"), t
    return {**t, "out": json.loads(t["result"] or "{}")}


def stat_of(a: Agentd, path: str) -> tuple[int, int, int]:
    out = a.sh(["stat", "-c", "%u %g %a", path]).stdout.split()
    return int(out[0]), int(out[1]), int(out[2], 8)


def gid_of(a: Agentd, group: str) -> int:
    return int(a.sh(["getent", "group", group]).stdout.split(":")[2])


def test_members_share_the_team_directory_and_nobody_else_reaches_it(crew: Agentd) -> None:
    a = crew
    gid = gid_of(a, "agentd-team-crew")
    uid, group, mode = stat_of(a, f"{TEAMS}/crew")
    assert (uid, group, mode) == (0, gid, 0o2770)
    assert stat_of(a, TEAMS)[2] == 0o2711
    wrote = run(a, "tm-a", f"echo hello > {TEAMS}/crew/from-a.txt && mkdir {TEAMS}/crew/sub")
    assert wrote["status"] == "completed", wrote["out"]
    # the file is tm-a's, the team's group, readable and writable by the team only
    assert stat_of(a, f"{TEAMS}/crew/from-a.txt") == (a.uid_of("agent-tm-a"), gid, 0o660)
    assert stat_of(a, f"{TEAMS}/crew/sub") == (a.uid_of("agent-tm-a"), gid, 0o2770)
    # the kernel sees the team's group on the member's process
    pid = a.main_pid("agent-tm-a.service")
    assert str(gid) in a.proc_status(pid)["Groups"].split()
    read = run(a, "tm-b", f"cat {TEAMS}/crew/from-a.txt && echo more >> {TEAMS}/crew/from-a.txt")
    assert read["status"] == "completed" and read["out"]["stdout"] == "hello\n", read["out"]
    assert a.sh(["cat", f"{TEAMS}/crew/from-a.txt"]).stdout == "hello\nmore\n"
    # alice's agent outside the team, and bob's member of another team: not there at all
    for agent, user in (("tm-c", "alice"), ("tm-x", "bob")):
        tried = run(a, agent, f"ls {TEAMS}/crew || cat {TEAMS}/crew/from-a.txt", user=user)
        assert tried["status"] == "failed", tried["out"]
        assert "No such file or directory" in tried["out"]["stderr"], tried["out"]
        pid = a.main_pid(f"agent-{agent}.service")
        assert str(gid) not in a.proc_status(pid)["Groups"].split()
    shown = a.ctl_json("team", "show", "crew", user="alice")
    assert shown["members"] == ["tm-a", "tm-b"] and shown["applied"]["tm-a"] is True, shown
    assert a.ctl("team", "show", "crew", user="bob", check=False).returncode != 0
    assert [t["name"] for t in a.ctl_json("team", "list", user="bob")] == ["other"]


def sends(messages: list[tuple[str, str]], to: str) -> str:
    """A command sending MESSAGES (subject, body) to agent TO, as the agent."""
    return " && ".join(
        f"busctl --system --json=short call {RUNTIME} Send sss {to} '{s}' '{b}'"
        for s, b in messages
    )


def received(a: Agentd, agent: str) -> list[dict[str, Any]]:
    """What AGENT receives (and acknowledges), calling Runtime.Receive itself."""
    got = run(a, agent, f"busctl --system --json=short call {RUNTIME} Receive uu 10 5000")
    assert got["status"] == "completed", got["out"]
    messages = json.loads(json.loads(got["out"]["stdout"])["data"][0])
    ids = " ".join(str(m["id"]) for m in messages)
    if messages:
        acked = run(a, agent, f"busctl --system call {RUNTIME} Ack at {len(messages)} {ids}")
        assert acked["status"] == "completed", acked["out"]
    return messages


def test_messages_between_members_arrive_in_order_across_a_restart(crew: Agentd) -> None:
    a = crew
    sent = run(a, "tm-a", sends([("one", "first"), ("two", "second"), ("three", "third")], "tm-b"))
    assert sent["status"] == "completed", sent["out"]
    a.restart()  # durable before Send returned: nothing is lost, the order holds
    wait_for(lambda: a.ctl("status", check=False).returncode == 0, 60, "agentd back")
    got = received(a, "tm-b")
    assert [(m["from"], m["subject"], m["body"]) for m in got] == [
        ("tm-a", "one", "first"),
        ("tm-a", "two", "second"),
        ("tm-a", "three", "third"),
    ]
    assert received(a, "tm-b") == []  # acknowledged: not received again
    # the owner reads the conversation; bob may not
    listed = a.ctl_json("msg", "list", "tm-b", user="alice")
    assert [m["body"] for m in listed] == ["first", "second", "third"]
    assert a.ctl("msg", "list", "tm-b", user="bob", check=False).returncode != 0
    # the owner writes; the agent receives it
    a.ctl("msg", "send", "tm-a", "please build", "--subject", "todo", user="alice")
    [mine] = received(a, "tm-a")
    assert (mine["from_kind"], mine["body"]) == ("person", "please build")
    rows = [r for r in a.audit("message.sent") if r["agent"] == "tm-a"]
    assert rows and "first" not in json.dumps(rows)  # metadata, never the body


def test_another_owners_agent_is_refused_and_audited(crew: Agentd) -> None:
    a = crew
    tried = run(a, "tm-x", sends([("hi", "from the agent of bob")], "tm-b"), user="bob")
    assert tried["status"] == "failed", tried["out"]
    assert (
        "PermissionDenied" in tried["out"]["stderr"] or "may not write" in tried["out"]["stderr"]
    ), tried["out"]
    denied = [r for r in a.audit("runtime.send") if r["result"] == "denied"]
    assert any(r["agent"] == "tm-x" and r["detail"].get("to") == "tm-b" for r in denied), denied
    assert a.ctl("msg", "send", "tm-b", "hi", user="bob", check=False).returncode != 0


def test_size_and_rate_limits_hold(crew: Agentd) -> None:
    a = crew
    big = a.m.run(
        ["agentctl", "msg", "send", "tm-a", "-"], user="alice", check=False, input="x" * 70_000
    )
    assert big.returncode != 0 and "too long" in big.stderr, big.stderr
    with a.configured("messages_per_second = 1\nmessages_burst = 4\n"):
        burst = run(a, "tm-a", sends([("n", f"m{i}") for i in range(6)], "tm-b"))
        assert burst["status"] == "failed", burst["out"]
        assert "messages_per_second" in burst["out"]["stderr"], burst["out"]
    got = received(a, "tm-b")
    # the burst of 4 passes (a fifth only if a second went by: 1 a second), no more
    assert 4 <= len(got) < 6 and [m["body"] for m in got] == [f"m{i}" for i in range(len(got))]
    refused = [r for r in a.audit("runtime.send") if r["result"] == "refused"]
    assert any(r["detail"].get("error") == "LimitExceeded" for r in refused), refused


def test_a_team_task_runs_on_a_member(crew: Agentd) -> None:
    a = crew
    tid = a.submit("team job", "--team", "crew", "--exec", "id -u")
    a.ctl("task", "wait", str(tid), "--timeout", "120", user="alice", check=False, timeout=180)
    t = a.ctl_json("task", "show", str(tid), user="alice")
    assert t["status"] == "completed" and t["agent"] in ("tm-a", "tm-b"), t
    uid = int(json.loads(t["result"])["stdout"])
    assert uid == a.uid_of(f"agent-{t['agent']}")
    refused = a.ctl("task", "submit", "x", "--team", "crew", user="bob", check=False)
    assert refused.returncode != 0


def test_a_teams_goal_runs_its_steps_on_members_only(crew: Agentd) -> None:
    a = crew
    a.create("tm-plan", template="planner", user="alice")
    steps = [
        {"id": s, "title": s, "instructions": s, "needs": [], "depends_on": [], "exec": "id -u"}
        for s in ("one", "two", "three")
    ]
    a.m.write_file("/tmp/team-plan.json", json.dumps({"steps": steps}), mode=0o644)
    out = a.ctl(
        "goal",
        "submit",
        "Count",
        "--team",
        "crew",
        "--planner",
        "tm-plan",
        "--plan",
        "/tmp/team-plan.json",
        user="alice",
    ).stdout.strip()
    goal = int(out)

    def steps_done() -> list[dict[str, Any]]:
        got = a.ctl_json("goal", "show", str(goal), user="alice")["steps"]
        return got if all(s["state"] == "completed" for s in got) else []

    done = wait_for(steps_done, 180, "the team goal's steps")
    assert {s["agent"] for s in done} <= {"tm-a", "tm-b"}, done
    for s in done:
        t = a.ctl_json("task", "show", str(s["task"]), user="alice")
        assert int(json.loads(t["result"])["stdout"]) == a.uid_of(f"agent-{s['agent']}")
    made = [r for r in a.audit("goal.sub_agent") if r["detail"].get("goal") == goal]
    assert not made, "a team's goal makes no sub-agents"
    a.ctl("goal", "cancel", str(goal), user="alice", check=False)


def test_removing_the_team_takes_its_group_and_directory(crew: Agentd) -> None:
    a = crew
    out = a.ctl("team", "rm", "crew", "--restart", user="alice").stdout
    archive = out.strip().split()[-1]
    assert a.sh(["test", "-f", archive], check=False).returncode == 0, out
    st = a.sh(["stat", "-c", "%u %a", archive]).stdout.split()
    assert st[0] == "0" and int(st[1], 8) & 0o077 == 0
    assert a.sh(["test", "-e", f"{TEAMS}/crew"], check=False).returncode != 0
    assert a.sh(["getent", "group", "agentd-team-crew"], check=False).returncode != 0
    binds = a.show("agent-tm-a.service", "BindPaths")["BindPaths"]
    assert f"{TEAMS}/crew" not in binds
