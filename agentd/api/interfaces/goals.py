"""The Goals interface: an intent planned into steps that agents run in parallel.

People submit, watch and answer goals; agents have none of their own (a
goal's tasks reach agents through the task queue, as the goal's owner's).
"""

from __future__ import annotations

from sdbus import DbusInterfaceCommonAsync, dbus_method_async, dbus_signal_async

from .common import U

GOALS_INTERFACE = "org.agentos.agentd1.Goals"


class GoalsInterface(DbusInterfaceCommonAsync, interface_name=GOALS_INTERFACE):
    """Goals: a planner agent plans, the owner's agents run the steps. Replies are JSON."""

    @dbus_method_async(
        "sa{sv}",
        "t",
        flags=U,
        method_name="SubmitGoal",
        input_args_names=("intent", "options"),
        result_args_names=("goal",),
    )
    async def submit_goal(self, intent: str, options: dict[str, tuple[str, object]]) -> int:
        """Start a goal: INTENT (1..16,384 bytes) goes to a planner agent of the
        caller's, whose plan (validated: a DAG of steps with capabilities some
        template provides) then runs as tasks of the caller's. options: planner
        (s: an agent whose template provides "plan"; default: the caller's first
        such agent), project (s), approve_plan (b: hold the plan for
        ApproveGoal/RejectGoal), max_agents (u: steps open at once, 1..100,
        default 4), plan (s: a plan of the caller's, JSON as a planner answers,
        checked the same way; the planner then only writes the result).
        Returns the goal's id."""
        raise NotImplementedError

    @dbus_method_async("", "s", flags=U, method_name="ListGoals", result_args_names=("goals_json",))
    async def list_goals(self) -> str:
        """The caller's goals (an administrator's: everyone's), newest first. JSON
        list of {id, owner_uid, state, intent, planner, steps, round, created,
        finished}."""
        raise NotImplementedError

    @dbus_method_async(
        "t",
        "s",
        flags=U,
        method_name="GetGoal",
        input_args_names=("goal",),
        result_args_names=("goal_json",),
    )
    async def get_goal(self, goal: int) -> str:
        """One goal: its state, plan, result or error, its current plan's steps
        with where each stands (a task's status, waiting, skipped), and every
        task it made. NoSuchGoal if it is not the caller's to see."""
        raise NotImplementedError

    @dbus_method_async("t", "", flags=U, method_name="ApproveGoal", input_args_names=("goal",))
    async def approve_goal(self, goal: int) -> None:
        """Run a plan held for approval. Busy if the goal is not awaiting approval."""
        raise NotImplementedError

    @dbus_method_async(
        "ts", "", flags=U, method_name="RejectGoal", input_args_names=("goal", "reason")
    )
    async def reject_goal(self, goal: int, reason: str) -> None:
        """Send a held plan back to the planner with REASON, for a new plan."""
        raise NotImplementedError

    @dbus_method_async("t", "", flags=U, method_name="CancelGoal", input_args_names=("goal",))
    async def cancel_goal(self, goal: int) -> None:
        """Cancel every open task of the goal, and the goal. Busy if it has ended."""
        raise NotImplementedError

    @dbus_signal_async(
        "tss", signal_name="GoalChanged", signal_args_names=("goal", "state", "event")
    )
    def goal_changed(self) -> tuple[int, str, str]:
        """A goal changed state (goal.created, goal.running, ..., goal.completed);
        fetch details with GetGoal (authorized)."""
        raise NotImplementedError
