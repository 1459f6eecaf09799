"""What a goal's tasks say: the planner's request, a step's, the report's.

Pure text builders. A step's task says the goal it serves, so an agent with no
other context knows why; the results of the steps it depends on reach it
through the task's dependencies (agentd.tasks.trace "depends"), as for any task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .model import Goal, GoalTask
from .plan import INSTRUCTIONS_CHARS, Step

RESULT_CHARS = 1500  # of each step's answer in a re-plan or report request


def plan_request(
    goal: Goal,
    offered: Mapping[str, str],
    max_steps: int,
    done: Sequence[tuple[Step, str]] = (),
) -> str:
    """The planner's task: the intent, the capabilities agents offer (name:
    what the templates providing it do), and what to fix or build on."""
    lines = [
        "Plan this goal as steps other agents will carry out, some in parallel.",
        f"Goal: {goal.intent}",
        "",
        f"Answer with a JSON plan of 1 to {max_steps} steps, in the order they run. Each",
        "step has an id (a short lowercase name), a title, instructions (what to do and",
        f"what to give back, at most {INSTRUCTIONS_CHARS} characters), the capabilities",
        "it needs, and depends_on: the ids of the earlier steps whose results it needs",
        "(never its own id; empty for a step that needs no other). Steps that do not",
        "need each other's results must not depend on each other: they run at once.",
        "",
        "Capabilities the agents offer:",
    ]
    lines += [f"- {cap}: {what}" for cap, what in sorted(offered.items())]
    if done:
        lines += ["", "Steps already done (a new step may depend on their ids):"]
        lines += [f"- {s.id} ({s.title}): {clip(answer)}" for s, answer in done]
    if goal.feedback:
        lines += ["", "Fix this in your new plan:", goal.feedback]
    return "\n".join(lines)


def step_request(goal: Goal, step: Step) -> str:
    return (
        f"{step.instructions}\n\n"
        f"(This is step {step.id!r} of goal {goal.id}: {clip(goal.intent, 600)})"
    )


# The steps' results in a report request, all lines together: with the planner's
# prompt and its 512 answer tokens, within a 4,096-token sequence. Uncut, 100
# steps asked for 17,250 tokens and the report failed (bench/goals.py).
REPORT_CHARS = 7000
MIN_LINE = 60  # below, the first steps are shown and the rest counted


def report_request(goal: Goal, plan_steps: Sequence[Step], tasks: Sequence[GoalTask]) -> str:
    """The planner's last task: the goal's result from its steps' results."""
    answers = {t.step: t.answer() for t in tasks if t.role == "step" and t.done}
    lines = [
        f"Goal: {goal.intent}",
        "",
        "Its steps are done. Their results:",
    ]
    per = min(RESULT_CHARS, REPORT_CHARS // max(1, len(plan_steps)))
    shown = plan_steps if per >= MIN_LINE else plan_steps[: REPORT_CHARS // MIN_LINE]
    per = max(per, MIN_LINE)
    lines += [clip(f"- {s.id} ({s.title}): {answers.get(s.id, '')}", per) for s in shown]
    if len(shown) < len(plan_steps):
        lines.append(f"(and {len(plan_steps) - len(shown)} more steps, done; not shown)")
    lines += ["", "Write the goal's result for the person who asked, from these results."]
    return "\n".join(lines)


def failure_feedback(step: Step, error: str, cancelled: Sequence[str]) -> str:
    lost = f" (so {', '.join(cancelled)} did not run)" if cancelled else ""
    return (
        f"Step {step.id!r} ({step.title}) failed{lost}: {clip(error, 600)}. "
        "Plan the remaining work around this failure."
    )


def clip(text: str, most: int = RESULT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= most else text[: most - 1] + "…"
