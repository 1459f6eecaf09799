"""Goals in the machine (issue 14): a plan's independent steps run at once on
two of the owner's agents (two UIDs), the steps that need them after them with
their results, and the planner (its own UID, the planner template) reports; a
goal the real default model plans ends with its plan tasks answered under the
schema; a held plan is rejected back to the planner and cancelled; agentd
killed mid-goal finishes it with no step run twice; another user can neither
see nor cancel the goal; steps none of the owner's agents can run go to
sub-agents agentd makes (real users, homes, units), which leave nothing behind
but their artifacts, kept with the goal, even with agentd killed mid-goal.
Real agents, units, bus and model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from agentd_helpers import Agentd, kill_agentd, wait_for, wait_restarted

from agentd.names import account_name as account

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CAPABLE = "qwen2.5-coder-1.5b"

# A person's plan of commands (the default model's free-form work is not
# predictable enough to wait for: it may ask its owner and block): a and b
# need nothing and overlap by their sleep; c needs both.
PLAN = {
    "steps": [
        {
            "id": "a",
            "title": "Name a fruit",
            "instructions": "Say a fruit.",
            "needs": ["general"],
            "depends_on": [],
            "exec": "sleep 3; echo apple; id -u",
        },
        {
            "id": "b",
            "title": "Name a colour",
            "instructions": "Say a colour.",
            "needs": ["general"],
            "depends_on": [],
            "exec": "sleep 3; echo red; id -u",
        },
        {
            "id": "c",
            "title": "Combine them",
            "instructions": "Say both.",
            "needs": ["general"],
            "depends_on": ["a", "b"],
            "exec": "echo red apple",
        },
    ]
}


@pytest.fixture(scope="module")
def goals(agentd: Agentd) -> Agentd:
    a = agentd
    wait_for(lambda: a.ctl_json("model", "show")["state"] == "loaded", 180, "model loaded")
    a.create("gl-plan", template="planner", user="alice")
    for name in ("gl-w1", "gl-w2"):
        a.create(name, template="sandbox", user="alice")
    return a


def submit(a: Agentd, intent: str, *args: str, plan: dict | None = None) -> int:
    if plan is not None:
        a.m.write_file("/tmp/plan.json", json.dumps(plan), mode=0o644)
        args = (*args, "--plan", "/tmp/plan.json")
    out = a.ctl("goal", "submit", intent, *args, user="alice").stdout.strip()
    assert out.isdigit(), out
    return int(out)


def show(a: Agentd, goal: int, user: str = "alice") -> dict[str, Any]:
    return a.ctl_json("goal", "show", str(goal), user=user)


def watch(a: Agentd, goal: int, timeout: int = 900) -> dict[str, Any]:
    """`goal watch` to its end (its lines as JSON), then the goal."""
    r = a.m.run(
        ["timeout", str(timeout), "agentctl", "goal", "watch", str(goal), "--json"],
        user="alice",
        check=False,
        timeout=timeout + 30,
    )
    assert r.returncode in (0, 1, 4), (r.returncode, r.stderr)
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    states = [x["state"] for x in lines if x["what"] == "goal"]
    assert states and states[-1] in ("completed", "failed", "cancelled"), lines
    return show(a, goal)


def task(a: Agentd, tid: int) -> dict[str, Any]:
    return a.ctl_json("task", "show", str(tid), user="alice")


def test_independent_steps_run_at_once_on_two_agents_and_the_planner_reports(
    goals: Agentd,
) -> None:
    a = goals
    goal = submit(a, "Pick a coloured fruit", "--max-agents", "2", plan=PLAN)
    done = watch(a, goal)
    assert done["state"] == "completed" and done["result"], done
    steps = {s["id"]: s for s in done["steps"]}
    assert {s["state"] for s in steps.values()} == {"completed"}
    sa, sb, sc = (task(a, steps[k]["task"]) for k in "abc")
    # a and b ran at the same time, as two agents, two UIDs (each printed its own)
    assert sa["agent"] != sb["agent"], (sa["agent"], sb["agent"])
    ran_as = {int(json.loads(t["result"])["stdout"].split()[1]) for t in (sa, sb)}
    assert ran_as == {a.uid_of(account(t["agent"])) for t in (sa, sb)} and len(ran_as) == 2
    assert sa["started_at"] < sb["finished_at"] and sb["started_at"] < sa["finished_at"]
    # c ran after both, with their tasks as its dependencies (their results in its prompt)
    assert sorted(sc["after"]) == sorted([sa["id"], sb["id"]])
    assert sc["started_at"] >= max(sa["finished_at"], sb["finished_at"])
    # the planner (its own agent and UID) wrote the result from the steps' results
    [report] = [t for t in done["tasks"] if t["role"] == "report"]
    assert report["agent"] == "gl-plan" and report["status"] == "completed"
    assert [r["action"] for r in a.audit() if r["action"].startswith("goal.")][
        -1
    ] == "goal.completed"


def test_another_user_can_neither_see_nor_cancel_the_goal(goals: Agentd) -> None:
    a = goals
    goal = submit(a, "Pick a fruit", "--approve-plan", plan=PLAN)
    assert goal not in [g["id"] for g in a.ctl_json("goal", "list", user="bob")]
    for verb in ("show", "cancel", "approve"):
        r = a.ctl("goal", verb, str(goal), user="bob", check=False)
        assert r.returncode == 77 and "another user (PermissionDenied)" in r.stderr, r.stderr
    assert show(a, goal)["state"] == "awaiting_approval"
    denied = [r for r in a.audit("goal.cancel") if r["result"] == "denied"]
    assert denied and denied[-1]["actor_uid"] == a.uid_of("bob"), denied
    a.ctl("goal", "cancel", str(goal), user="alice")


def test_a_held_plan_is_rejected_to_the_planner_then_cancelled(goals: Agentd) -> None:
    a = goals
    goal = submit(a, "Pick a fruit", "--approve-plan", plan=PLAN)
    held = show(a, goal)
    assert held["state"] == "awaiting_approval" and len(held["steps"]) == 3
    assert all(s["state"] == "waiting" for s in held["steps"])
    a.ctl("goal", "reject", str(goal), "--reason", "use one step only", user="alice")
    again = show(a, goal)
    assert again["state"] == "planning"
    [plan_task] = [t for t in again["tasks"] if t["role"] == "plan"]
    assert "use one step only" in task(a, plan_task["task"])["description"]
    a.ctl("goal", "cancel", str(goal), user="alice")
    gone = show(a, goal)
    assert gone["state"] == "cancelled"
    assert task(a, plan_task["task"])["status"] in ("cancelled", "completed", "failed")
    r = a.ctl("goal", "cancel", str(goal), user="alice", check=False)
    assert r.returncode == 1 and "already cancelled" in r.stderr


def test_the_default_model_plans_a_goal_under_the_schema(goals: Agentd) -> None:
    """SmolLM2-135M plans under the schema's grammar: each answer is a plan in
    shape; whether its dependencies make sense is the model's luck, so the goal
    runs its plan or fails after three invalid answers, saying why. Its steps
    (the model's free-form work) are not waited for: the goal is cancelled,
    and every task of it with it."""
    a = goals
    goal = submit(a, "Write a two-line poem about the sea", "--max-agents", "2", "--no-sub-agents")
    planned = wait_for(
        lambda: (g := show(a, goal))["state"] != "planning" and g, 600, "the goal planned"
    )
    plans = [t for t in planned["tasks"] if t["role"] == "plan"]
    assert plans and all(t["agent"] == "gl-plan" for t in plans)
    answered = task(a, plans[0]["task"])
    assert answered["status"] == "completed", answered
    json.loads(json.loads(answered["result"])["answer"])  # JSON under the grammar
    if planned["state"] == "failed":
        assert "no valid plan in 3 answers" in planned["error"], planned
        return
    assert planned["state"] == "running" and planned["steps"], planned
    a.ctl("goal", "cancel", str(goal), user="alice")
    gone = show(a, goal)
    assert gone["state"] == "cancelled"
    ended = ("cancelled", "completed", "failed", "dead_lettered")
    assert all(task(a, t["task"])["status"] in ended for t in gone["tasks"])


def test_kill_9_of_agentd_mid_goal_runs_no_completed_step_again(goals: Agentd) -> None:
    a = goals
    goal = submit(a, "Pick a coloured fruit", "--max-agents", "2", plan=PLAN)
    wait_for(
        lambda: any(s["state"] == "completed" for s in show(a, goal)["steps"]), 600, "a step done"
    )
    wait_restarted(a, kill_agentd(a))
    done = watch(a, goal)
    assert done["state"] == "completed", done
    steps = [t for t in done["tasks"] if t["role"] == "step"]
    assert sorted(t["step"] for t in steps) == ["a", "b", "c"]  # one task per step
    assert all(task(a, t["task"])["status"] == "completed" for t in steps)


# Steps needing "monitor" (the ops template's, which none of alice's agents
# has): agentd makes a sub-agent of alice's for each of a and b.
SUB_PLAN = {
    "steps": [
        {
            "id": sid,
            "title": f"Check {sid}",
            "instructions": "Report.",
            "needs": ["monitor"],
            "depends_on": deps,
            "exec": cmd,
        }
        for sid, deps, cmd in (
            ("a", [], "sleep 8; id -u; echo from-a > artifacts/out-a.txt"),
            ("b", [], "sleep 8; id -u"),
            ("c", ["a", "b"], "id -u"),
        )
    ]
}


def gone(a: Agentd, name: str) -> bool:
    """No user, group, home or unit of NAME is left."""
    user = a.sh(["getent", "passwd", account(name)], check=False).returncode
    group = a.sh(["getent", "group", account(name)], check=False).returncode
    home = a.sh(["test", "-e", f"/home/agents/{name}"], check=False).returncode
    unit = a.show(f"agent-{name}.service", "LoadState")["LoadState"]
    return (user, group, home, unit) == (2, 2, 1, "not-found")


def test_sub_agents_run_steps_and_leave_only_artifacts_even_after_kill_9(goals: Agentd) -> None:
    a = goals
    goal = submit(a, "Check the machine", "--max-agents", "2", plan=SUB_PLAN)
    running = wait_for(
        lambda: (
            (g := show(a, goal))["agents"]
            and all(x["state"] == "present" for x in g["agents"])
            and any(s["state"] == "in_progress" for s in g["steps"])
            and g
        ),
        300,
        "sub-agents made and a step running",
    )
    names = sorted(x["name"] for x in running["agents"])
    assert names == [f"g{goal}-1-a", f"g{goal}-2-b"], running["agents"]
    assert all(x["template"] == "ops" for x in running["agents"])
    for name in names:  # alice's agents, real users, running as themselves
        assert a.ctl_json("agent", "show", name, user="alice")["owner_uid"] == a.uid_of("alice")
    wait_restarted(a, kill_agentd(a))  # mid-goal, steps running under the sub-agents
    done = watch(a, goal)
    assert done["state"] == "completed", done
    steps = {s["id"]: task(a, s["task"]) for s in done["steps"]}
    assert {steps[k]["agent"] for k in "ab"} == set(names)  # one each, at the same time
    sa, sb = steps["a"], steps["b"]
    assert sa["started_at"] < sb["finished_at"] and sb["started_at"] < sa["finished_at"]
    ran_as = {int(json.loads(t["result"])["stdout"].split()[0]) for t in (sa, sb)}
    assert len(ran_as) == 2 and all(uid >= 70000 for uid in ran_as), ran_as

    # at the end: removed, with nothing left; a's artifact kept with the goal
    def removed() -> bool:
        return all(x["state"] == "removed" for x in show(a, goal)["agents"])

    wait_for(removed, 120, "sub-agents removed")
    assert all(gone(a, name) for name in names), show(a, goal)["agents"]
    out = a.ctl("task", "artifact", str(sa["id"]), "out-a.txt", user="alice").stdout
    assert out == "from-a\n"
    kept = a.sh(["stat", "-c", "%U %a", f"/var/lib/agentd/goals/{goal}/{sa['id']}/out-a.txt"])
    assert kept.stdout.split() == ["root", "600"]
    removed = [r["agent"] for r in a.audit("goal.sub_agent_removed")]
    assert set(names) <= set(removed)


DELEGATOR = """description = "hands parts of its tasks to other agents"
capabilities = ["general"]
tools = ["shell", "delegate"]
profile = "offline"
concurrency = 2
"""


def delegating(steps: list[dict[str, str]], task: str = "$AGENTD_TASK_ID") -> str:
    """An --exec command: Runtime.Delegate from inside the agent, as its loop calls it."""
    return (
        "busctl --system --json=short call org.agentos.agentd1 /org/agentos/agentd1 "
        f'org.agentos.agentd1.Runtime Delegate tus {task} "$AGENTD_TASK_ATTEMPT" '
        f"'{json.dumps(steps)}'"
    )


def ran(a: Agentd, tid: int) -> dict[str, Any]:
    a.ctl("task", "wait", str(tid), "--timeout", "120", user="alice", check=False, timeout=180)
    t = task(a, tid)
    assert t["status"] in ("completed", "failed"), t
    return {**t, "out": json.loads(t["result"])}


def test_delegation_from_inside_an_agent_is_the_owners_and_bounded(goals: Agentd) -> None:
    a = goals
    a.sh(["mkdir", "-p", "/etc/agentd/templates"])
    a.m.write_file("/etc/agentd/templates/delegator.toml", DELEGATOR, mode=0o644)
    a.create("gl-boss", template="delegator", user="alice")
    parts = [{"title": f"part {x}", "instructions": f"Say {x}."} for x in "ab"]
    # handed out: two tasks of alice's, with the parent's needs, audited
    split = ("Split", "--agent", "gl-boss", "--needs", "general", "--exec", delegating(parts))
    t = ran(a, a.submit(*split))
    assert t["status"] == "completed", t["out"]
    children = json.loads(t["out"]["stdout"])["data"][0]
    assert len(children) == 2
    for cid in children:
        child = task(a, cid)
        assert child["owner_uid"] == a.uid_of("alice") and child["needs"] == ["general"], child
        assert "Delegated by agent gl-boss" in child["description"]
        # the parent ended at once (its command did not wait): its children went with it
        wait_for(lambda c=cid: task(a, c)["status"] == "cancelled", 60, "child cancelled")
    [row] = [
        r
        for r in a.audit("task.delegated")
        if t["id"] in (r.get("task_id"), r["detail"].get("task_id"))
    ]
    assert row["agent"] == "gl-boss" and row["detail"]["children"] == children, row
    # fan-out: nine parts are more than a task may hand out; nothing is made
    nine = [{"title": f"p{i}", "instructions": "x"} for i in range(9)]
    t = ran(a, a.submit("Too many", "--agent", "gl-boss", "--exec", delegating(nine)))
    assert t["status"] == "failed" and "1..8" in t["out"]["stderr"], t["out"]
    # a template without the tool, and another agent's task: refused, audited
    t = ran(a, a.submit("Not mine", "--agent", "gl-w1", "--exec", delegating(parts)))
    assert t["status"] == "failed" and "does not allow the 'delegate' tool" in t["out"]["stderr"]
    held = a.submit("Hold", "--agent", "gl-boss", "--exec", "sleep 30")
    wait_for(lambda: task(a, held)["status"] == "in_progress", 60, "held")
    t = ran(a, a.submit("Theirs", "--agent", "gl-w1", "--exec", delegating(parts, str(held))))
    assert t["status"] == "failed", t["out"]
    denied = [r for r in a.audit("runtime.delegate") if r["result"] == "denied"]
    assert {r["agent"] for r in denied} >= {"gl-w1"}, denied
    a.ctl("task", "cancel", str(held), user="alice")


@pytest.mark.slow
def test_the_capable_model_plans_a_goal_that_runs_in_parallel_to_its_result(
    goals: Agentd,
) -> None:
    """Qwen2.5-Coder-1.5B (`tools/test.sh --slow`) plans the intent; its
    independent steps run at once under different agents' UIDs (alice's own
    and sub-agents agentd makes), and the planner writes the result."""
    a = goals
    cache = REPO / "build" / "model-cache"
    a.m.run(["agentctl", "model", "install", CAPABLE, "--from", str(cache)], timeout=1800)
    a.m.run(["agentctl", "model", "use", CAPABLE], timeout=1200)
    try:
        intent = (
            "Write one sentence about the sea, one about a mountain and one about a city, "
            "each on its own and at the same time; then join the three into one paragraph."
        )
        goal = submit(a, intent, "--max-agents", "3")
        done = run_answering(a, goal, 2400)
        steps = {s["id"]: s for s in done["steps"]}
        print(json.dumps({"plan": done["plan"], "state": done["state"], "steps": steps}))
        assert done["state"] == "completed" and done["result"], done
        ran = [task(a, s["task"]) for s in steps.values()]
        overlap = {
            (x["agent"], y["agent"])
            for x in ran
            for y in ran
            if x["agent"] != y["agent"]
            and x["started_at"] < y["finished_at"]
            and y["started_at"] < x["finished_at"]
        }
        assert overlap, [(t["agent"], t["started_at"], t["finished_at"]) for t in ran]
        made = {r["agent"]: r["agent_uid"] for r in a.audit("agent.create") if r["agent_uid"]}
        uids = {made[t["agent"]] for t in ran}  # sub-agents are gone by now: their rows
        assert len(uids) >= 2, uids
    finally:
        a.m.run(["agentctl", "model", "use", "smollm2-135m"], timeout=600, check=False)


def run_answering(a: Agentd, goal: int, timeout: float) -> dict[str, Any]:
    """GOAL to its end, as its owner would see it through: the questions a
    step's agent asks answered, three a task at most (the model may ask its
    owner, again; the loop then waits for a person: a fourth question fails
    the test at once, not at the timeout 30 min later), and the commands its
    template gates (ops: shell) approved (a run of 2026-12-01 waited on one)."""
    answered: dict[int, int] = {}

    def ended() -> dict[str, Any] | None:
        g = show(a, goal)
        mine = {t["task"] for t in g["tasks"]}
        for ap in a.ctl_json("approval", "list", "--status", "pending", user="alice"):
            if ap.get("task") in mine:
                a.ctl("approval", "grant", str(ap["id"]), user="alice")
        for t in g["tasks"]:
            info = task(a, t["task"]) if t["status"] == "blocked" else None
            asked = info and info["block_reason"].startswith("question")
            if asked and answered.get(t["task"], 0) >= 3:  # fail now, not at the timeout
                raise AssertionError(f"task {t['task']} asked its owner a 4th time: {info}")
            if asked:
                reply = "Use what you know; do not ask again. Finish now with your answer."
                a.ctl("task", "reply", str(t["task"]), reply, user="alice")
                answered[t["task"]] = answered.get(t["task"], 0) + 1
        if g["state"] in ("completed", "failed", "cancelled"):
            return g
        time.sleep(5)  # the CLI's calls would share the model's 2 cores
        return None

    return wait_for(ended, timeout, f"goal {goal} ended")
