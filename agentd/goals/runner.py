"""Moving goals along: the planner's answers, the steps, the report.

Invariants, and why:
- Level-triggered: advance() looks at a goal and its tasks as they are now and
  does what is due, in one transaction with the goal's version checked
  (agentd.goals.store). A task event only says which goal to look at, so an
  event missed in a crash loses nothing: reconcile() at start advances every
  open goal, and advancing twice does nothing the second time.
- A goal acts with its owner's rights and no more: every task it makes is
  submitted as the owner, a plain person (TaskQueue.submit_for), so routing,
  projects and the owner's queued-tasks limit apply as to anything they submit.
- Backpressure: a step's task is submitted when the steps it needs are done
  and fewer than max_agents of the goal's steps are open; the rest wait in the
  plan, not in the queue. Nothing fails for waiting.
- A failed step fails its dependents (they are never submitted); once nothing
  of the goal is running, the planner is asked once (MAX_ROUNDS) to re-plan
  the remaining work around the failure, building on the steps done.

Who may ask for a goal, see it or answer it is decided before this module is
called (the bus layer and the policy's goal.* rules: the next part of issue 14).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..audit import AuditLog
from ..errors import AgentdError, Busy, LimitExceeded
from ..events import Events, GoalChanged, TaskChanged
from ..store import Store
from ..tasks.model import Task
from ..tasks.queue import TaskQueue
from ..templates import Catalog
from . import prompt
from .model import FINAL, MAX_ANSWERS, MAX_ROUNDS, PLAN_CAPABILITY, Goal, GoalTask
from .plan import MAX_STEPS, InvalidPlan, Plan, Step, load, parse, schema
from .store import GoalStore, StaleGoal
from .subagents import Make, Pin, Placing, Route, SubAgents, Wait

ENDING = ("task.completed", "task.failed", "task.cancelled", "task.dead_lettered")


class GoalRunner:
    def __init__(
        self,
        store: Store,
        queue: TaskQueue,
        catalog: Catalog,
        audit: AuditLog,
        events: Events,
        max_steps: int = MAX_STEPS,
        subagents: SubAgents | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.catalog = catalog
        self.audit = audit
        self.goals = GoalStore(store, lambda g, e: events.publish(GoalChanged(g, e)))
        self.max_steps = max_steps
        self._due: set[int] = set()
        self._draining = False
        events.subscribe(TaskChanged, self._on_task)
        queue.loop.extra.append(self.context_for)
        self.subagents = subagents
        if subagents is not None:
            subagents.advance = self._schedule  # a sub-agent made (or refused)
            events.subscribe(GoalChanged, self._on_goal)

    def context_for(self, task: Task) -> dict[str, Any]:
        """What a goal's task says to its agent's loop beyond any task's context:
        {"goal": {id, role, step, schema}}, the schema for a plan's answer."""
        row = self.goals.task(task.id)
        if row is None:
            return {}
        goal_id, role, step = row
        said: dict[str, Any] = {"id": goal_id, "role": role}
        if role == "plan":
            said["schema"] = schema(self.offered_to(self.goals.get(goal_id)), self.max_steps)
        elif step:
            said["step"] = step
        return {"goal": said}

    # -- when to look -----------------------------------------------------------------------
    def _on_task(self, event: TaskChanged) -> None:
        if event.event not in ENDING:
            return
        goal_id = self.goals.goal_of(event.task.id)
        if goal_id is not None:
            self._schedule(goal_id)

    def _on_goal(self, event: GoalChanged) -> None:
        if event.goal.state in FINAL and self.subagents is not None:
            self.subagents.kick()  # its sub-agents removed

    def _schedule(self, goal_id: int) -> None:
        """Advance GOAL_ID soon: on the next turn of the event loop (not inside the
        commit that announced the task's end), or now when no loop runs (tests)."""
        self._due.add(goal_id)
        try:
            asyncio.get_running_loop().call_soon(self.drain)
        except RuntimeError:
            self.drain()

    def drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            while self._due:
                self.advance(self._due.pop())
        finally:
            self._draining = False

    def reconcile(self) -> None:
        """At start: every open goal looked at once (an event lost in a crash)."""
        for goal_id in self.goals.open_ids():
            self.advance(goal_id)
        if self.subagents is not None:
            self.subagents.kick()  # made, or removed, what a crash left half-done

    # -- what people ask (once the caller's rights are checked) --------------------------------
    def create(
        self,
        owner_uid: int,
        intent: str,
        planner: str,
        *,
        project_id: int | None = None,
        approve_plan: bool = False,
        max_agents: int = 4,
        plan: Plan | None = None,
        sub_agents: bool = True,
        team_id: int | None = None,
    ) -> Goal:
        """A goal in state planning, with its planner's first task: both or
        neither. With PLAN (a person's, checked by the caller), the goal starts
        from it (running, or held with APPROVE_PLAN), and the planner only reports.
        With TEAM_ID, the team's members run its steps (agentd makes no sub-agents)."""
        with self.store.transaction():
            goal = self.goals.insert(
                owner_uid,
                intent,
                project_id,
                planner,
                approve_plan,
                max_agents,
                sub_agents and team_id is None,
                team_id,
            )
            team: dict[str, Any] = {} if team_id is None else {"team_id": team_id}
            self.audit.append(
                "goal.created", actor_uid=owner_uid, goal=goal.id, planner=planner, **team
            )
            if plan is None:
                self._ask_plan(goal, [])
            else:
                state = "awaiting_approval" if approve_plan else "running"
                goal = self.goals.update(goal, plan=plan.to_json(), state=state)
                if state == "running":
                    self._running(goal, [])
        return self.goals.get(goal.id)

    def approve(self, goal_id: int, actor_uid: int) -> Goal:
        """A held plan runs."""
        with self.store.transaction():
            goal = self._held(goal_id)
            goal = self.goals.update(goal, state="running")
            self.audit.append("goal.approved", actor_uid=actor_uid, goal=goal.id)
            self._running(goal, self.goals.tasks(goal_id))
        return self.goals.get(goal_id)

    def reject(self, goal_id: int, actor_uid: int, reason: str) -> Goal:
        """A held plan goes back to the planner with REASON, for a new one."""
        with self.store.transaction():
            goal = self._held(goal_id)
            goal = self.goals.update(goal, state="planning", answers=0, feedback=reason)
            self.audit.append("goal.rejected", actor_uid=actor_uid, goal=goal.id, reason=reason)
            self._ask_plan(goal, self.goals.tasks(goal_id))
        return self.goals.get(goal_id)

    def cancel(self, goal_id: int, actor_uid: int) -> Goal:
        """Every open task of the goal cancelled, and the goal with them."""
        with self.store.transaction():
            goal = self.goals.get(goal_id)
            if not goal.open:
                raise Busy(f"goal {goal_id} is already {goal.state}")
            self._cancel_open(goal)
            self.goals.update(goal, state="cancelled")
            self.audit.append("goal.cancelled", actor_uid=actor_uid, goal=goal.id)
        return self.goals.get(goal_id)

    def _held(self, goal_id: int) -> Goal:
        goal = self.goals.get(goal_id)
        if goal.state != "awaiting_approval":
            raise Busy(f"goal {goal_id} is {goal.state}, not awaiting approval")
        return goal

    # -- what to do ---------------------------------------------------------------------------
    def advance(self, goal_id: int) -> None:
        try:
            with self.store.transaction():
                goal = self.goals.get(goal_id)
                if goal.state == "planning":
                    self._planning(goal, self.goals.tasks(goal_id))
                elif goal.state == "running":
                    self._running(goal, self.goals.tasks(goal_id))
        except StaleGoal:  # moved on meanwhile: whoever moved it looks again
            return
        except _Failed as e:
            self._fail(goal_id, str(e))
        except AgentdError as e:  # a task agentd could not submit, for one
            self._fail(goal_id, f"{e} ({e.name})")

    def _planning(self, goal: Goal, tasks: list[GoalTask]) -> None:
        """Wait for the round's latest plan task; take its plan, or ask again."""
        asked = [t for t in tasks if t.role == "plan" and t.round == goal.round]
        if not asked:
            self._ask_plan(goal, tasks)
            return
        latest = asked[-1]
        if latest.open:
            return
        if latest.status == "cancelled":
            raise _Failed(f"the planner's task {latest.task_id} was cancelled")
        done = self._done_before(goal, tasks)
        try:
            if latest.lost:  # a cut or failed answer counts as a wrong one
                raise InvalidPlan([f"your last answer failed: {latest.error or latest.status}"])
            plan = parse(latest.answer(), self.offered_to(goal), self.max_steps, done)
        except InvalidPlan as e:
            if goal.answers + 1 >= MAX_ANSWERS:
                raise _Failed(f"no valid plan in {MAX_ANSWERS} answers: {e}") from None
            goal = self.goals.update(goal, answers=goal.answers + 1, feedback="\n".join(e.errors))
            self._ask_plan(goal, tasks)
            return
        state = "awaiting_approval" if goal.approve_plan else "running"
        goal = self.goals.update(goal, plan=plan.to_json(), answers=goal.answers + 1, state=state)
        self.audit.append(
            "goal.planned", actor_uid=0, goal=goal.id, steps=len(plan.steps), round=goal.round
        )
        if state == "running":
            self._running(goal, tasks)

    def _running(self, goal: Goal, tasks: list[GoalTask]) -> None:
        assert goal.plan is not None
        plan = load(goal.plan)
        now = {t.step: t for t in tasks if t.role == "step" and t.round == goal.round and t.step}
        before = self._done_before(goal, tasks)
        done = {sid for sid, t in now.items() if t.done} | set(before)
        lost = [plan.step(sid) for sid, t in now.items() if t.lost]
        if all(s.id in done for s in plan.steps):
            self._report(goal, plan, tasks)
            return
        blocked = {d for s in lost for d in plan.dependents(s.id)}
        open_ = sum(1 for t in now.values() if t.open)
        placing = self.subagents.placing(goal) if self.subagents is not None else None
        stalled: list[Step] = []
        for step in plan.steps:
            if open_ >= goal.max_agents:
                break
            if step.id in now or step.id in blocked or not set(step.depends_on) <= done:
                continue
            where = placing.place(step) if placing is not None else Route()
            if isinstance(where, (Make, Wait)):
                open_ += isinstance(where, Make) or where.counts
                stalled += [step] if isinstance(where, Wait) and not where.counts else []
                continue
            after = [(now.get(d) or before[d]).task_id for d in step.depends_on]
            pin = where.agent if isinstance(where, Pin) else None
            if not self._submit_step(goal, step, after, open_, pin):
                break
            open_ += 1
        making = placing is not None and placing.making()
        if not open_ and stalled and not making:  # nothing will wake this goal: say why
            raise _Failed(self._stall(placing, stalled[0]))
        if open_ or not lost:
            return
        # Nothing of the goal runs and a step failed: re-plan once, or fail.
        first = lost[0]
        error = now[first.id].error or now[first.id].status
        if goal.round >= MAX_ROUNDS:
            raise _Failed(f"step {first.id!r} failed: {error}")
        feedback = prompt.failure_feedback(first, error, sorted(blocked))
        goal = self.goals.update(
            goal, state="planning", round=goal.round + 1, answers=0, feedback=feedback
        )
        self._ask_plan(goal, tasks)

    def _report(self, goal: Goal, plan: Plan, tasks: list[GoalTask]) -> None:
        reports = [t for t in tasks if t.role == "report" and t.round == goal.round]
        if not reports:
            steps = [t for t in tasks if t.role == "step"]
            spec = {
                "title": f"Report goal {goal.id}",
                "description": prompt.report_request(goal, plan.steps, steps),
            }
            self._submit(goal, "report", None, {**spec, "agent": goal.planner})
            return
        latest = reports[-1]
        if latest.open:
            return
        if latest.done:
            self._finish(goal, "completed", result=latest.answer())
            return
        results = "\n".join(f"{t.step}: {t.answer()}" for t in tasks if t.role == "step" and t.done)
        error = (
            f"the report task {latest.task_id} {latest.status}: the steps' results are the result"
        )
        self._finish(goal, "completed", result=results, error=error)

    # -- making tasks -------------------------------------------------------------------------
    def _ask_plan(self, goal: Goal, tasks: list[GoalTask]) -> None:
        before = self._done_before(goal, tasks)
        done = []
        if goal.plan and before:  # a re-plan: goal.plan is still the plan that failed
            done = [(s, before[s.id].answer()) for s in load(goal.plan).steps if s.id in before]
        spec = {
            "title": f"Plan goal {goal.id}",
            "description": prompt.plan_request(goal, self.offered_to(goal), self.max_steps, done),
            "agent": goal.planner,
        }
        self._submit(goal, "plan", None, spec)

    def _submit_step(
        self, goal: Goal, step: Step, after: list[int], open_: int, pin: str | None
    ) -> bool:
        """Whether STEP's task was submitted (to PIN, else to whichever of the
        owner's agents takes it): the owner's queued-tasks limit is backpressure
        while some of the goal's steps are open, a failure if none is."""
        spec: dict[str, Any] = {
            "title": step.title,
            "description": prompt.step_request(goal, step),
            "needs": list(step.needs),
            "after": after,
        }
        if pin is not None:
            spec["agent"] = pin
        elif goal.team_id is not None:  # one of the team's members takes it
            spec["team"] = self.queue.router.teams.name_of(goal.team_id)
        if step.exec:
            spec["exec"] = step.exec
        try:
            self._submit(goal, "step", step.id, spec)
        except LimitExceeded:
            if open_:
                return False
            raise
        return True

    def _submit(self, goal: Goal, role: str, step: str | None, spec: dict[str, Any]) -> None:
        if goal.project_id is not None:
            spec["project"] = self.store.scalar(
                "SELECT name FROM projects WHERE id=?", (goal.project_id,)
            )
        task = self.queue.submit_for(goal.owner_uid, spec)
        self.goals.add_task(goal, task.id, role, step)

    # -- ending -------------------------------------------------------------------------------
    def _finish(
        self, goal: Goal, state: str, result: str | None = None, error: str | None = None
    ) -> None:
        self.goals.update(goal, state=state, result=result, error=error)
        self.audit.append(
            f"goal.{state}", actor_uid=0, goal=goal.id, owner=goal.owner_uid, reason=error or ""
        )

    def _fail(self, goal_id: int, error: str) -> None:
        with self.store.transaction():
            goal = self.goals.get(goal_id)
            if goal.open:
                self._cancel_open(goal)
                self._finish(goal, "failed", error=error)

    def _cancel_open(self, goal: Goal) -> None:
        """Every open task of GOAL cancelled, as its owner."""
        for t in self.goals.tasks(goal.id):
            if t.open:
                task = self.queue.find(t.task_id)
                if task is not None:
                    self.queue.lifecycle.cancel(task, goal.owner_uid)

    @staticmethod
    def _stall(placing: Placing | None, step: Step) -> str:
        refused = [s.error for s in placing.subs if s.state == "refused"] if placing else []
        if refused:
            return f"no agent can run step {step.id!r}: a sub-agent was refused: {refused[0]}"
        needs = ", ".join(step.needs) or "nothing"
        return f"no agent can run step {step.id!r} (needs {needs}), and none can be made for it"

    # -- reading ------------------------------------------------------------------------------
    def offered_to(self, goal: Goal) -> dict[str, str]:
        return self.offered(goal.owner_uid, bool(goal.sub_agents), goal.team_id)

    def offered(
        self, owner_uid: int, sub_agents: bool = True, team_id: int | None = None
    ) -> dict[str, str]:
        """Capability -> what the templates providing it are for: the templates of
        OWNER_UID's agents (a team's goal: its members'), who run the steps, and,
        when agentd may make sub-agents, every template (the planner's own
        capability left out: steps are work, not plans)."""
        agents = self.queue.registry.agents()
        if team_id is not None:
            agents = self.queue.router.teams.members(team_id)
        names = {a.template for a in agents if team_id is not None or a.owner_uid == owner_uid}
        anyone = sub_agents and self.subagents is not None
        offered: dict[str, list[str]] = {}
        for t in self.catalog.templates():
            if t.name not in names and not anyone:
                continue
            for cap in t.capabilities:
                if cap != PLAN_CAPABILITY:
                    offered.setdefault(cap, []).append(t.description or t.name)
        return {cap: "; ".join(what) for cap, what in offered.items()}

    @staticmethod
    def _done_before(goal: Goal, tasks: list[GoalTask]) -> dict[str, GoalTask]:
        """The steps earlier rounds completed, by id."""
        return {
            t.step: t
            for t in tasks
            if t.role == "step" and t.round < goal.round and t.done and t.step
        }


class _Failed(AgentdError):
    """The goal cannot go on; the message says why."""

    name = "GoalFailed"
