"""Goals for people: submit, list, show, approve, reject, cancel.

Invariant: every method decides who may ask (agentd.policy, goal.*) before
the runner acts; another person's goal is refused (PermissionDenied, audited)
as another's task is, and lists show each caller only their own. A goal
is its owner's: its planner must be one of the owner's agents whose template
can plan, and everything it submits goes as the owner (agentd.goals.runner).
"""

from __future__ import annotations

import json
from typing import Any

from ..agent import Agent
from ..errors import AgentdError, InvalidArgument, NoCapableAgent, NoSuchGoal, PermissionDenied
from ..policy import Caller, Policy, Resource
from ..registry import Registry
from ..tasks.queue import TaskQueue
from ..tasks.spec import project_name, text
from .model import INTENT_BYTES, PLAN_CAPABILITY, Goal, GoalTask
from .plan import InvalidPlan, load, parse
from .runner import GoalRunner
from .subagents import SubAgent

MAX_AGENTS = 100  # the most steps of one goal open at once (issue 14: 100+ sub-agents)
DEFAULT_AGENTS = 4
OPTIONS = {"planner", "project", "approve_plan", "max_agents", "plan", "sub_agents", "team"}
MAX_STEPS_GIVEN = 1000  # the steps of a plan a person gives (a planner's: plan.MAX_STEPS)
REASON_BYTES = 4096
PLAN_BYTES = 1 << 20  # a person's plan (options "plan"): 1,000 steps of ~1 KiB


class Goals:
    def __init__(
        self, runner: GoalRunner, registry: Registry, queue: TaskQueue, policy: Policy
    ) -> None:
        self.runner = runner
        self.store = runner.goals
        self.registry = registry
        self.queue = queue
        self.policy = policy
        self.audit = runner.audit

    # -- asking -------------------------------------------------------------------------------
    def submit(self, caller: Caller, intent: str, options: dict[str, Any]) -> Goal:
        """A new goal; a bad request is refused whole (typed, and audited as
        goal.create "refused", as a bad task is) and leaves nothing behind."""
        self.policy.check(caller, "goal.create")  # a denial is audited by the policy
        try:
            return self._submit(caller, intent, options)
        except PermissionDenied:
            raise
        except AgentdError as e:
            self.audit.append(
                "goal.create", actor_uid=caller.uid, result="refused", error=e.name, reason=str(e)
            )
            raise

    def _submit(self, caller: Caller, intent: str, options: dict[str, Any]) -> Goal:
        intent = text(intent, "intent", INTENT_BYTES, required=True)
        unknown = set(options) - OPTIONS
        if unknown:
            raise InvalidArgument(f"unknown goal option(s): {', '.join(sorted(unknown))}")
        most = options.get("max_agents", DEFAULT_AGENTS)
        if not isinstance(most, int) or isinstance(most, bool) or not 1 <= most <= MAX_AGENTS:
            raise InvalidArgument(f"max_agents must be 1..{MAX_AGENTS}")
        approve = options.get("approve_plan", False)
        if not isinstance(approve, bool):
            raise InvalidArgument("approve_plan must be a boolean")
        subs = options.get("sub_agents", True)
        if not isinstance(subs, bool):
            raise InvalidArgument("sub_agents must be a boolean")
        project_id = None
        if options.get("project"):
            name = project_name(options["project"])
            project_id = self.queue._project(caller, name, "goal.create")["id"]
        planner = self._planner(caller, options.get("planner") or None)
        team_id = None
        if options.get("team"):  # its members run the steps (agentd.teams)
            if self.queue.router.teams is None:
                raise InvalidArgument("teams are not enabled in this agentd")
            team_id = self.queue.router.teams.task_team(caller, options["team"]).id
            subs = False
        plan = None
        if options.get("plan"):  # the person's own plan, checked as a planner's is
            if not isinstance(options["plan"], str):
                raise InvalidArgument("plan must be JSON text")
            try:
                offered = self.runner.offered(caller.uid, subs, team_id)
                plan = parse(options["plan"], offered, MAX_STEPS_GIVEN, commands=True)
            except InvalidPlan as e:
                raise InvalidArgument(f"the plan is not one agentd can run: {e}") from None
        return self.runner.create(
            caller.uid,
            intent,
            planner.name,
            project_id=project_id,
            approve_plan=approve,
            max_agents=most,
            plan=plan,
            sub_agents=subs,
            team_id=team_id,
        )

    def _planner(self, caller: Caller, name: object) -> Agent:
        """The named agent, or the first of the caller's that can plan."""
        if name is not None:
            if not isinstance(name, str):
                raise InvalidArgument("planner must be an agent's name")
            agent = self.registry.get(caller, name, "goal.create")
            if agent.owner_uid != caller.uid:
                raise NoCapableAgent(
                    f"agent {name!r} is not yours: a goal's planner is its owner's"
                )
            if not self._plans(agent):
                raise NoCapableAgent(
                    f"agent {name!r} cannot plan: its template ({agent.template}) does not "
                    f"provide {PLAN_CAPABILITY!r} (the planner template does)"
                )
            return agent
        mine = sorted(
            (a for a in self.registry.agents() if a.owner_uid == caller.uid and self._plans(a)),
            key=lambda a: a.name,
        )
        if not mine:
            raise NoCapableAgent(
                "no agent of yours can plan goals: create one from the planner template "
                "(agentctl agent create NAME --template planner) or name one with --planner"
            )
        return mine[0]

    def _plans(self, agent: Agent) -> bool:
        try:
            return PLAN_CAPABILITY in self.registry.catalog.template(agent.template).capabilities
        except AgentdError:  # a template removed since: it plans nothing
            return False

    # -- reading ------------------------------------------------------------------------------
    def listing(self, caller: Caller) -> list[dict[str, Any]]:
        self.policy.check(caller, "goal.list")
        return [
            _summary(g)
            for g in self.store.of_owner(None)
            if self.policy.sees(caller, "goal.list", g.owner_uid)
        ]

    def show(self, caller: Caller, goal_id: int) -> dict[str, Any]:
        goal = self._visible(caller, goal_id, "goal.show")
        tasks = self.store.tasks(goal.id)
        subs = self.runner.subagents.of_goal(goal.id) if self.runner.subagents else []
        return {
            **goal.as_dict(),
            "steps": _steps(goal, tasks),
            "tasks": [_task(t) for t in tasks],
            "agents": [_sub_agent(a) for a in subs],
        }

    # -- answering ----------------------------------------------------------------------------
    def approve(self, caller: Caller, goal_id: int) -> Goal:
        goal = self._visible(caller, goal_id, "goal.approve")
        return self.runner.approve(goal.id, caller.uid)

    def reject(self, caller: Caller, goal_id: int, reason: str) -> Goal:
        goal = self._visible(caller, goal_id, "goal.approve")
        reason = text(reason, "reason", REASON_BYTES, required=True)
        return self.runner.reject(goal.id, caller.uid, reason)

    def cancel(self, caller: Caller, goal_id: int) -> Goal:
        goal = self._visible(caller, goal_id, "goal.cancel")
        return self.runner.cancel(goal.id, caller.uid)

    def _visible(self, caller: Caller, goal_id: int, action: str) -> Goal:
        self.policy.check(caller, action)
        goal = self.store.find(goal_id)
        if goal is None:
            raise NoSuchGoal(f"no goal {goal_id}")
        self.policy.check(caller, action, Resource("goal", str(goal.id), goal.owner_uid))
        return goal


def _summary(goal: Goal) -> dict[str, Any]:
    steps = len(json.loads(goal.plan)["steps"]) if goal.plan else 0
    return {
        "id": goal.id,
        "owner_uid": goal.owner_uid,
        "state": goal.state,
        "intent": goal.intent,
        "planner": goal.planner,
        "steps": steps,
        "round": goal.round,
        "created": goal.created_at,
        "finished": goal.finished_at,
    }


def _steps(goal: Goal, tasks: list[GoalTask]) -> list[dict[str, Any]]:
    """The current plan's steps with where each stands: its task's status,
    "waiting" (for the steps it needs, or for room under max_agents) or
    "skipped" (a step it needs failed)."""
    if not goal.plan:
        return []
    plan = load(goal.plan)
    now = {t.step: t for t in tasks if t.role == "step" and t.round == goal.round and t.step}
    lost = {sid for sid, t in now.items() if t.lost}
    skipped = {d for sid in lost for d in plan.dependents(sid)}
    out = []
    for s in plan.steps:
        t = now.get(s.id)
        state = t.status if t else ("skipped" if s.id in skipped else "waiting")
        out.append(
            {
                **s.as_dict(),
                "state": state,
                "task": t.task_id if t else None,
                "agent": t.agent if t else None,
                "started": t.started_at if t else None,
                "finished": t.finished_at if t else None,
                "tokens": t.tokens if t else 0,
            }
        )
    return out


def _sub_agent(a: SubAgent) -> dict[str, Any]:
    return {
        "name": a.name,
        "template": a.template,
        "step": a.step,
        "state": a.state,
        "error": a.error,
        "created": a.created_at,
        "ready": a.ready_at,
        "removed": a.removed_at,
    }


def _task(t: GoalTask) -> dict[str, Any]:
    return {
        "task": t.task_id,
        "role": t.role,
        "round": t.round,
        "step": t.step,
        "status": t.status,
        "agent": t.agent,
        "error": t.error,
        "started": t.started_at,
        "finished": t.finished_at,
        "tokens": t.tokens,
    }
