"""agentd.goals.runner over the real store and task queue, with scripted agents:
the planner's answers (valid, invalid, held), data flow, backpressure, a failed
step's dependents and the one re-plan, the report, cancel, and a restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from world import ALICE, World

from agentd.agent import Agent
from agentd.events import TaskChanged
from agentd.goals.model import MAX_ANSWERS
from agentd.goals.runner import GoalRunner
from agentd.tasks.queue import TaskQueue


class G:
    """A World with a queue, a goal runner, a planner and workers of alice's."""

    def __init__(self, tmp_path: Path) -> None:
        self.w = World(tmp_path)
        self.q = TaskQueue(self.w.store, self.w.reg)
        self.r = GoalRunner(
            self.w.store, self.q, self.w.reg.catalog, self.w.audit, self.w.reg.events
        )
        self.planner = self.agent("pl", "planner")
        self.workers = [self.agent(f"w{i}", "sandbox") for i in range(3)]

    def agent(self, name: str, template: str) -> Agent:
        return asyncio.run(self.w.reg.create(ALICE, name, template))

    def goal(self, **kw: object):
        return self.r.create(ALICE.uid, "Write a short report on apples", "pl", **kw)

    def claimed(self, agent: Agent) -> list:
        return self.q.claim_many(agent, 10)

    def answer(self, agent: Agent, task, answer: object, ok: bool = True) -> None:
        text = answer if isinstance(answer, str) else json.dumps(answer)
        if ok:
            coro = self.q.complete(agent, task.id, task.attempts, json.dumps({"answer": text}), [])
        else:
            coro = self.q.fail(agent, task.id, task.attempts, str(answer), "", [])
        asyncio.run(coro)

    def plan(self, *steps: dict) -> None:
        [task] = self.claimed(self.planner)
        assert task.title.startswith("Plan goal")
        self.answer(self.planner, task, {"steps": list(steps)})

    def work(self) -> dict[str, tuple]:
        """The step tasks the workers claim now, one each: {title: (agent, task)}."""
        out = {}
        for a in self.workers:
            for t in self.q.claim_many(a, 1):
                out[t.title] = (a, t)
        return out


def step(sid: str, after: tuple = (), needs: tuple = ("general",)) -> dict:
    return {
        "id": sid,
        "title": sid,
        "instructions": f"do {sid}",
        "needs": list(needs),
        "depends_on": list(after),
    }


@pytest.fixture
def g(tmp_path: Path) -> G:
    return G(tmp_path)


def test_a_goal_is_planned_run_in_parallel_and_reported(g: G) -> None:
    goal = g.goal()
    assert goal.state == "planning"
    g.plan(step("a"), step("b"), step("c", after=("a", "b")))
    assert g.r.goals.get(goal.id).state == "running"
    ready = g.work()
    assert set(ready) == {"a", "b"}  # independent steps at once, on different agents
    assert len({a.name for a, _ in ready.values()}) == 2
    for title, (agent, task) in ready.items():
        g.answer(agent, task, f"result of {title}")
    [(agent, task)] = g.work().values()
    assert task.title == "c" and sorted(task.after) == sorted(t.id for _, t in ready.values())
    # the dependencies' results reach c's prompt through the task's context
    deps = [d["result"] for d in g.q.loop.context(agent, task.id)["depends"]]
    assert all("result of" in d for d in deps) and len(deps) == 2
    g.answer(agent, task, "c done")
    [report] = g.claimed(g.planner)
    assert "c done" in report.description and "result of a" in report.description
    g.answer(g.planner, report, "Apples are fine.")
    done = g.r.goals.get(goal.id)
    assert (done.state, done.result) == ("completed", "Apples are fine.")
    assert [e.action for e in g.w.audit.entries(limit=1000) if e.action.startswith("goal.")] == [
        "goal.created",
        "goal.planned",
        "goal.completed",
    ]


def test_an_invalid_plan_is_asked_again_with_its_errors_then_the_goal_fails(g: G) -> None:
    goal = g.goal()
    g.plan(step("a", after=("zz",)))
    [again] = g.claimed(g.planner)
    assert "depends on 'zz', which is not a step" in again.description
    g.answer(g.planner, again, "not json at all")
    for _ in range(MAX_ANSWERS - 2):
        [again] = g.claimed(g.planner)
        g.answer(g.planner, again, {"steps": [step("a", needs=("teleport",))]})
    failed = g.r.goals.get(goal.id)
    assert failed.state == "failed" and f"no valid plan in {MAX_ANSWERS} answers" in failed.error
    assert "teleport" in failed.error


def test_a_held_plan_waits_and_is_approved_or_rejected(g: G) -> None:
    goal = g.goal(approve_plan=True)
    g.plan(step("a"))
    assert g.r.goals.get(goal.id).state == "awaiting_approval" and g.work() == {}
    g.r.reject(goal.id, ALICE.uid, "use two steps")
    [again] = g.claimed(g.planner)
    assert "use two steps" in again.description
    g.answer(g.planner, again, {"steps": [step("x"), step("y")]})
    assert g.r.goals.get(goal.id).state == "awaiting_approval"
    g.r.approve(goal.id, ALICE.uid)
    assert set(g.work()) == {"x", "y"}


def test_max_agents_is_backpressure_not_failure(g: G) -> None:
    goal = g.goal(max_agents=2)
    g.plan(*(step(f"s{i}") for i in range(5)))
    seen = []
    while len(seen) < 5:
        ready = g.work()
        assert 1 <= len(ready) <= 2
        for title, (agent, task) in ready.items():
            seen.append(title)
            g.answer(agent, task, title)
    assert sorted(seen) == [f"s{i}" for i in range(5)]
    assert g.r.goals.get(goal.id).state == "running"  # the report is next


def test_a_failed_step_skips_its_dependents_and_the_rest_is_re_planned_once(g: G) -> None:
    goal = g.goal()
    g.plan(step("a"), step("b"), step("c", after=("a",)))
    ready = g.work()
    g.answer(*ready["a"], "disk full", ok=False)
    assert g.r.goals.get(goal.id).state == "running"  # b still runs
    g.answer(*ready["b"], "b ok")
    goal2 = g.r.goals.get(goal.id)
    assert (goal2.state, goal2.round) == ("planning", 2)
    [replan] = g.claimed(g.planner)
    assert "Step 'a' (a) failed (so c did not run): disk full" in replan.description
    assert "- b (b): b ok" in replan.description
    g.answer(g.planner, replan, {"steps": [step("a2"), step("c2", after=("a2", "b"))]})
    ready = g.work()
    assert set(ready) == {"a2"}
    g.answer(*ready["a2"], "a2 ok")
    [(agent, c2)] = g.work().values()
    assert c2.title == "c2" and len(c2.after) == 2  # b from the first plan, a2 from this one
    g.answer(agent, c2, "x", ok=False)
    failed = g.r.goals.get(goal.id)
    assert failed.state == "failed" and "step 'c2' failed" in failed.error


def test_cancel_ends_every_open_task_of_the_goal(g: G) -> None:
    goal = g.goal()
    g.plan(step("a"), step("b"))
    ready = g.work()
    g.r.cancel(goal.id, ALICE.uid)
    assert {g.q.find(t.id).status for _, t in ready.values()} == {"cancelled"}
    assert g.r.goals.get(goal.id).state == "cancelled"


def test_an_event_lost_in_a_crash_is_made_up_at_start(g: G) -> None:
    goal = g.goal()
    g.w.reg.events.unsubscribe(TaskChanged, g.r._on_task)  # agentd "dies" unheard
    [task] = g.claimed(g.planner)
    g.answer(g.planner, task, {"steps": [step("a")]})
    assert g.r.goals.get(goal.id).state == "planning"
    runner = GoalRunner(g.w.store, g.q, g.w.reg.catalog, g.w.audit, g.w.reg.events)
    runner.reconcile()
    assert runner.goals.get(goal.id).state == "running" and set(g.work()) == {"a"}
    runner.reconcile()  # twice: nothing more
    assert len(runner.goals.tasks(goal.id)) == 2


def test_the_context_tells_the_planner_its_role_and_the_schema(g: G) -> None:
    g.goal()
    [task] = g.claimed(g.planner)
    said = g.q.loop.context(g.planner, task.id)["goal"]
    assert said["role"] == "plan"
    caps = set(
        said["schema"]["properties"]["steps"]["items"]["properties"]["needs"]["items"]["enum"]
    )
    assert "general" in caps and "plan" not in caps  # steps are work, not plans
    assert "general:" in task.description and "apples" in task.description
    g.answer(g.planner, task, {"steps": [step("a")]})
    [(agent, work)] = g.work().values()
    assert g.q.loop.context(agent, work.id)["goal"] == {"id": 1, "role": "step", "step": "a"}


def test_a_person_s_plan_runs_without_asking_the_planner(g: G) -> None:
    from agentd.goals.plan import parse

    mine = parse({"steps": [dict(step("a"), exec="echo hi")]}, ["general"], commands=True)
    goal = g.r.create(ALICE.uid, "say hi", "pl", plan=mine)
    assert goal.state == "running" and g.claimed(g.planner) == []
    [(agent, task)] = g.work().values()
    assert task.exec == "echo hi"
    g.answer(agent, task, "hi")
    [report] = g.claimed(g.planner)
    assert report.title == f"Report goal {goal.id}"


@pytest.mark.parametrize(
    ("intent", "options", "error"),
    [
        ("", {}, "InvalidArgument"),
        ("x" * 20000, {}, "InvalidArgument"),
        ("go", {"colour": "red"}, "InvalidArgument"),
        ("go", {"max_agents": 0}, "InvalidArgument"),
        ("go", {"max_agents": True}, "InvalidArgument"),
        ("go", {"approve_plan": "yes"}, "InvalidArgument"),
        ("go", {"project": "Bad Name"}, "InvalidName"),
        ("go", {"project": "nope"}, "NoSuchProject"),
        ("go", {"planner": "w0"}, "NoCapableAgent"),  # a sandbox agent cannot plan
        ("go", {"planner": "ghost"}, "NoSuchAgent"),
        ("go", {"plan": '{"steps": [{"id": "a"}]}'}, "InvalidArgument"),
        ("go", {"plan": 7}, "InvalidArgument"),
    ],
)
def test_a_bad_goal_is_refused_typed_audited_and_leaves_nothing(
    g: G, intent: str, options: dict, error: str
) -> None:
    from agentd.errors import AgentdError
    from agentd.goals.service import Goals

    goals = Goals(g.r, g.w.reg, g.q, g.w.reg.policy)
    with pytest.raises(AgentdError) as e:
        goals.submit(ALICE, intent, options)
    assert e.value.name == error, e.value
    assert g.r.goals.of_owner(None) == [] and g.q.list(ALICE, {}) == []
    [row] = [x for x in g.w.audit.entries(limit=1000) if x.action == "goal.create"]
    assert row.result == "refused" and row.detail["error"] == error


def test_without_a_planner_agent_the_owner_is_told_how_to_make_one(tmp_path: Path) -> None:
    from world import BOB

    from agentd.errors import NoCapableAgent
    from agentd.goals.service import Goals

    g = G(tmp_path)
    asyncio.run(g.w.reg.create(BOB, "bw", "sandbox"))
    goals = Goals(g.r, g.w.reg, g.q, g.w.reg.policy)
    with pytest.raises(NoCapableAgent, match="--template planner"):
        goals.submit(BOB, "go", {})
    assert goals.submit(ALICE, "go", {}).planner == "pl"
