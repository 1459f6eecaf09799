"""A goal's sub-agents (agentd.goals.subagents) over the real store, registry and
queue, with fakes of the system: made as the owner when none of the owner's
agents can take a step, pinned their steps and nothing else, removed with
their artifacts kept when the goal ends; a refusal is backpressure; a crash
between the intent and the agent is made up at start."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from world import ALICE, World

from agentd.goals.runner import GoalRunner
from agentd.goals.subagents import SubAgents, sub_agent_name
from agentd.tasks.model import Artifact
from agentd.tasks.queue import TaskQueue


class People:
    """The group database as the creator rule reads it: alice is a person."""

    def uid_min(self) -> int:
        return 1000

    def shell(self, uid: int) -> str | None:
        return "/bin/bash" if uid == ALICE.uid else None

    def member(self, uid: int, gid: int) -> bool:
        return False


class S:
    def __init__(self, tmp_path: Path, **cfg: object) -> None:
        self.tmp = tmp_path
        self.w = World(tmp_path, **cfg)
        self.start()
        self.planner = self.w.run(self.w.reg.create(ALICE, "pl", "planner"))

    def start(self) -> None:
        """The engine over the world's store, as agentd builds it at start."""
        self.w.reg.policy.logins = People()  # type: ignore[assignment]
        self.q = TaskQueue(self.w.store, self.w.reg)
        self.subs = SubAgents(
            self.w.store,
            self.w.reg,
            self.q.router,
            self.w.reg.catalog,
            self.w.audit,
            self.tmp / "goals",
        )
        self.subs.caller_of = lambda uid: ALICE
        self.r = GoalRunner(
            self.w.store,
            self.q,
            self.w.reg.catalog,
            self.w.audit,
            self.w.reg.events,
            subagents=self.subs,
        )

    def goal(self, *ids: str, **kw: object):
        plan = {"steps": [step(i) for i in ids]}
        from agentd.goals.plan import parse

        offered = self.r.offered(ALICE.uid)
        return self.r.create(
            ALICE.uid, "Do things", "pl", plan=parse(json.dumps(plan), offered, 100), **kw
        )

    async def settle(self) -> None:
        for _ in range(5):  # a job's end advances the goal on the next turn
            await self.subs.settle()
            await self.w.reg.settle()
            await asyncio.sleep(0)

    def rows(self, goal_id: int) -> dict[str, str]:
        return {a.name: a.state for a in self.subs.of_goal(goal_id)}

    async def answer(self, name: str, text: str = "done") -> list:
        agent = self.w.reg.find(name)
        assert agent is not None
        tasks = self.q.claim_many(agent, 10)
        for t in tasks:
            await self.q.complete(agent, t.id, t.attempts, json.dumps({"answer": text}), [])
        return tasks


def step(sid: str) -> dict:
    return {"id": sid, "title": sid, "instructions": f"do {sid}", "needs": ["general"]}


def test_steps_no_agent_of_the_owner_can_take_go_to_sub_agents_removed_at_the_end(
    tmp_path: Path,
) -> None:
    s = S(tmp_path)

    async def run() -> None:
        goal = s.goal("fetch_data", "b")
        assert goal.state == "running"
        await s.settle()
        made = s.rows(goal.id)
        assert made == {f"g{goal.id}-1-fetch-data": "present", f"g{goal.id}-2-b": "present"}
        for name in made:
            agent = s.w.reg.find(name)
            assert agent is not None and agent.owner_uid == ALICE.uid  # made as the owner
            assert agent.template == "sandbox" and agent.unit in s.w.units.running
        # each step pinned to a sub-agent; a sub-agent takes nothing else of alice's
        worker = await s.w.reg.create(ALICE, "w", "sandbox")
        other = s.q.submit(ALICE, {"title": "unrelated", "needs": ["general"]})
        taken = {}
        for name in made:
            agent = s.w.reg.find(name)
            assert agent is not None
            [t] = s.q.claim_many(agent, 10)
            taken[name] = t
        assert other.id not in {t.id for t in taken.values()}
        assert [t.id for t in s.q.claim_many(worker, 10)] == [other.id]
        # an artifact of a step, kept when its sub-agent goes
        name, task = next(iter(taken.items()))
        agent = s.w.reg.find(name)
        assert agent is not None
        f = tmp_path / "out.txt"
        f.write_bytes(b"the data\n")
        art = Artifact(
            task.id, "out.txt", "text/plain", str(f), 9, hashlib.sha256(b"the data\n").hexdigest()
        )
        s.q.repo.add_artifact(task.id, art, 0.0)
        for name, t in taken.items():
            a = s.w.reg.find(name)
            assert a is not None
            await s.q.complete(a, t.id, t.attempts, json.dumps({"answer": "ok"}), [])
        await s.settle()
        [report] = await s.answer("pl", "All done.")
        assert report.title.startswith("Report goal")
        await s.settle()
        assert s.r.goals.get(goal.id).state == "completed"
        assert set(s.rows(goal.id).values()) == {"removed"}
        for name in made:
            assert s.w.reg.find(name) is None or s.w.reg.find(name).state == "removed"
        [kept] = s.q.repo.artifacts(task.id)
        assert kept.path == str(tmp_path / "goals" / str(goal.id) / str(task.id) / "out.txt")
        f.unlink()  # the home's copy is gone; the goal's is read
        assert s.q.read_artifact(ALICE, task.id, "out.txt") == b"the data\n"
        removed = [e.agent for e in s.w.audit_rows("goal.sub_agent_removed")]
        assert sorted(removed) == sorted(made)

    asyncio.run(run())


def test_a_refused_sub_agent_is_backpressure_and_a_goal_with_none_fails_saying_why(
    tmp_path: Path,
) -> None:
    s = S(tmp_path, max_agents_per_owner=2)  # the planner and one sub-agent

    async def run() -> None:
        goal = s.goal("a", "b", "c")
        await s.settle()
        states = sorted(s.rows(goal.id).values())  # one intent per step, at once
        assert states == ["present", "refused", "refused"]
        [refusal] = s.w.audit_rows("goal.sub_agent")[-1:]
        assert refusal.detail["error"] == "LimitExceeded"
        # the three steps run one after another on the one sub-agent
        [made] = [n for n, st in s.rows(goal.id).items() if st == "present"]
        for _ in range(3):
            assert len(await s.answer(made)) == 1  # one step at a time
            await s.settle()
        await s.answer("pl", "report")
        await s.settle()
        assert s.r.goals.get(goal.id).state == "completed"

    asyncio.run(run())


def test_a_goal_no_agent_can_run_fails_saying_why(tmp_path: Path) -> None:
    s = S(tmp_path, max_agents_per_owner=1)  # the planner alone

    async def run() -> None:
        stuck = s.goal("x")
        await s.settle()
        failed = s.r.goals.get(stuck.id)
        assert failed.state == "failed" and "sub-agent was refused" in (failed.error or "")
        assert "max_agents_per_owner" in (failed.error or "")

    asyncio.run(run())


def test_a_crash_between_the_intent_and_the_agent_is_made_up_at_start(tmp_path: Path) -> None:
    s = S(tmp_path)
    goal = s.goal("a")  # no event loop: the intent is written, nothing is made
    assert s.rows(goal.id) == {f"g{goal.id}-1-a": "creating"}
    assert s.w.reg.find(f"g{goal.id}-1-a") is None
    s.w.reopen()
    s.start()

    async def run() -> None:
        s.r.reconcile()
        await s.settle()
        assert s.rows(goal.id) == {f"g{goal.id}-1-a": "present"}
        await s.answer(f"g{goal.id}-1-a")
        await s.settle()
        s.r.cancel(goal.id, ALICE.uid)  # before the report: the sub-agent goes too
        await s.settle()
        assert s.rows(goal.id) == {f"g{goal.id}-1-a": "removed"}

    asyncio.run(run())


def test_without_sub_agents_steps_wait_for_the_owners_agents(tmp_path: Path) -> None:
    s = S(tmp_path)
    worker = s.w.run(s.w.reg.create(ALICE, "w", "sandbox"))

    async def run() -> None:
        goal = s.goal("a", "b", "c", sub_agents=False)
        await s.settle()
        assert s.rows(goal.id) == {}
        # two pinned to it (its template's wip), the third left to the queue
        assert [t.title for t in s.q.claim_many(worker, 10)] == ["a", "b"]
        [c] = [t for t in s.r.goals.tasks(goal.id) if t.step == "c"]
        assert c.status == "pending" and c.agent is None

    asyncio.run(run())


@pytest.mark.parametrize(
    ("goal", "n", "step", "name"),
    [
        (12, 3, "fetch_data", "g12-3-fetch-data"),
        (7, 1, "a", "g7-1-a"),
        (123456, 99, "a-very-long-step-id", "g123456-99-a-very-long-ste"),
        (5, 2, "x--y_", "g5-2-x-y"),
    ],
)
def test_a_sub_agent_is_named_after_its_goal_and_step(
    goal: int, n: int, step: str, name: str
) -> None:
    assert sub_agent_name(goal, n, step) == name


def test_a_teams_goal_runs_its_steps_on_the_members_only(tmp_path: Path) -> None:
    from agentd.teams import TeamDirs, Teams

    s = S(tmp_path)
    teams = Teams(
        s.w.store,
        s.w.reg,
        s.w.accounts,
        TeamDirs(tmp_path / "teams", tmp_path / "archive"),
        s.w.audit,
        s.w.reg.events,
    )
    s.q.router.teams = teams
    for name in ("m1", "out"):
        s.w.run(s.w.reg.create(ALICE, name, "sandbox"))
    s.w.run(teams.create(ALICE, "crew", ""))
    s.w.run(teams.add(ALICE, "crew", ["m1"], restart=False))
    team_id = teams.find("crew").id
    goal = s.goal("a", "b", "c", team_id=team_id, max_agents=3)
    assert goal.team_id == team_id and not goal.sub_agents
    tasks = [s.q.find(t.task_id) for t in s.r.goals.tasks(goal.id) if t.role == "step"]
    assert len(tasks) == 3
    for t in tasks:  # pinned to the member while it has room, else to the team
        team = s.w.store.scalar("SELECT team_id FROM team_tasks WHERE task_id=?", (t.id,))
        assert t.pinned_agent == "m1" or team == team_id, t
    assert s.q.claim_many(s.w.reg.find("out"), 10) == []
    assert len(s.q.claim_many(s.w.reg.find("m1"), 10)) >= 1
    assert s.rows(goal.id) == {}  # no sub-agent was made


def test_at_max_agents_an_idle_sub_agent_makes_room_for_one_that_can_run_the_step(
    tmp_path: Path,
) -> None:
    """The 1.5B model's plan that failed a goal: general steps, then a step
    needing shell, with max_agents as many as the general steps."""
    from agentd.goals.plan import parse

    s = S(tmp_path)
    steps = [step("a"), {**step("b"), "needs": ["shell"], "depends_on": ["a"]}]
    plan = parse(json.dumps({"steps": steps}), s.r.offered(ALICE.uid), 100)

    async def run() -> None:
        goal = s.r.create(ALICE.uid, "Do things", "pl", plan=plan, max_agents=1)
        await s.settle()
        first = f"g{goal.id}-1-a"
        assert s.rows(goal.id) == {first: "present"}
        await s.answer(first)
        await s.settle()
        # the sandbox one (idle, cannot run b) was removed, an ops one made for b
        assert s.rows(goal.id) == {first: "removed", f"g{goal.id}-2-b": "present"}
        assert s.w.reg.find(first) is None
        assert s.w.reg.find(f"g{goal.id}-2-b").template == "ops"
        [b] = await s.answer(f"g{goal.id}-2-b")
        assert b.title == "b"
        assert s.r.goals.get(goal.id).state == "running"  # the report is the planner's next

    asyncio.run(run())
