"""agentctl goal against a fake client: options sent, the plan's tree, watch's
lines and exit status, refusals."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agentctl_fakes import invoke, refusal

from agentctl.client import translate
from agentctl.commands.goal import tree

STEP = {"needs": ["general"], "instructions": "x", "tokens": 0, "started": None, "finished": None}


def goal(state: str, steps: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {
        "id": 3,
        "owner_uid": 1000,
        "intent": "Pick a coloured fruit",
        "planner": "pl",
        "state": state,
        "round": 1,
        "max_agents": 2,
        "created": 1700000000.0,
        "finished": None,
        "result": None,
        "error": None,
        "tasks": [],
        "steps": steps,
        **kw,
    }


def step(sid: str, state: str, after: tuple[str, ...] = (), **kw: Any) -> dict[str, Any]:
    return {
        **STEP,
        "id": sid,
        "title": f"do {sid}",
        "state": state,
        "depends_on": list(after),
        **kw,
    }


class GoalsFake:
    """Answers GetGoal from a script of goals (the last one repeats)."""

    def __init__(self, *script: dict[str, Any]) -> None:
        self.script = list(script)
        self.calls: list[tuple] = []
        self.refuse: dict[str, Exception] = {}

    def _record(self, *call: Any) -> None:
        self.calls.append(call)
        if call[0] in self.refuse:
            raise translate(self.refuse[call[0]])

    async def submit_goal(self, intent: str, options: dict[str, Any]) -> int:
        self._record("submit_goal", intent, options)
        return 3

    async def get_goal(self, goal_id: int) -> dict[str, Any]:
        self._record("get_goal", goal_id)
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    async def list_goals(self) -> list[dict[str, Any]]:
        self._record("list_goals")
        return [{k: self.script[0][k] for k in ("id", "state", "intent", "planner")} | {"steps": 3}]

    async def cancel_goal(self, goal_id: int) -> None:
        self._record("cancel_goal", goal_id)

    async def reject_goal(self, goal_id: int, reason: str) -> None:
        self._record("reject_goal", goal_id, reason)

    @contextlib.asynccontextmanager
    async def watch_goal(self, goal_id: int) -> AsyncIterator[Any]:
        self._record("watch_goal", goal_id)

        class Watch:
            async def wait(self, timeout: float) -> bool:
                return True

        yield Watch()


def test_submit_sends_the_options_and_the_plan_file(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text('{"steps": []}')
    fake = GoalsFake(goal("running", []))
    r = invoke(
        fake,
        "goal",
        "submit",
        "Pick",
        "--max-agents",
        "2",
        "--approve-plan",
        "--no-sub-agents",
        "--team",
        "crew",
        "--plan",
        str(plan),
    )
    assert (r.exit_code, r.output) == (0, "3\n"), r.stderr
    [(_, intent, options)] = [c for c in fake.calls if c[0] == "submit_goal"]
    assert intent == "Pick"
    assert options == {
        "planner": None,
        "project": None,
        "approve_plan": True,
        "max_agents": 2,
        "sub_agents": False,
        "team": "crew",
        "plan": '{"steps": []}',
    }
    r = invoke(fake, "goal", "submit", "Pick", "--json")
    assert json.loads(r.output)["state"] == "running"


def test_the_tree_puts_each_step_under_the_last_it_needs() -> None:
    info = goal(
        "running",
        [
            step("a", "completed", agent="w1", task=7, started=100.0, finished=112.0, tokens=340),
            step("b", "in_progress", agent="w2", task=8, started=100.0),
            step("c", "waiting", after=("a", "b")),
        ],
    )
    from rich.console import Console

    console = Console(width=120, record=True, color_system=None)
    console.print(tree(info, now=130.0))
    text = console.export_text()
    lines = text.splitlines()
    assert lines[0] == "goal 3: running  Pick a coloured fruit"
    assert "completed  a: do a  @w1  12s  340 tok  task 7" in text
    assert "in_progress  b: do b  @w2  30s  task 8" in text
    # c hangs under b (its last need) and names a
    b_line = next(i for i, line in enumerate(lines) if "b: do b" in line)
    assert "waiting  c: do c  (also after a)" in lines[b_line + 1]
    assert lines[b_line + 1].index("waiting") > lines[b_line].index("in_progress")


def test_watch_prints_each_change_and_exits_as_the_goal_ended() -> None:
    fake = GoalsFake(
        goal("planning", []),
        goal("running", [step("a", "in_progress")]),
        goal("running", [step("a", "in_progress")]),
        goal("completed", [step("a", "completed")], result="Red apple."),
    )
    r = invoke(fake, "goal", "watch", "3")
    assert r.exit_code == 0, r.stderr
    changes = [line.split(" ", 1)[1] for line in r.output.splitlines() if line[:2].isdigit()]
    assert changes == [
        "goal: planning",
        "goal: running",
        "step a: in_progress",
        "goal: completed",
        "step a: completed",
    ]
    assert r.output.endswith("Result:\nRed apple.\n")
    failed = GoalsFake(goal("failed", [], error="no valid plan in 3 answers"))
    r = invoke(failed, "goal", "watch", "3", "--json")
    assert r.exit_code == 1
    assert [json.loads(x) for x in r.output.splitlines()] == [
        {"goal": 3, "what": "goal", "state": "failed"}
    ]


def test_a_refusal_is_one_line_with_its_exit_status() -> None:
    fake = GoalsFake(goal("running", []))
    fake.refuse["cancel_goal"] = refusal("PermissionDenied", "uid 1001 may not cancel goal 3")
    r = invoke(fake, "goal", "cancel", "3")
    assert r.exit_code == 77
    assert r.stderr == "agentctl: uid 1001 may not cancel goal 3 (PermissionDenied)\n"
    r = invoke(fake, "goal", "reject", "3", "--reason", "smaller steps")
    assert r.exit_code == 0 and ("reject_goal", 3, "smaller steps") in fake.calls
