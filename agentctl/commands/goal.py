"""`agentctl goal`: an intent planned into steps that your agents run in parallel.

A thin client of agentd's org.agentos.agentd1.Goals interface: agentd
authorizes (a goal is its submitter's; administrators see all), plans through
a planner agent of yours (the planner template), runs the steps as your tasks
on your capable agents, and reports. `goal watch` redraws the plan's tree
when agentd signals a change (GoalChanged, TaskChanged), and every second for
the clock.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.text import Text
from rich.tree import Tree

from ..app import AliasGroup, env, json_option, run
from ..client import AgentdClient
from ..output import Field, fmt_time, fmt_user, getter, print_fields, print_json, print_table
from ..params import TaskIdType

FINAL = ("completed", "failed", "cancelled")
WATCH_EXIT = {"completed": 0, "failed": 1, "cancelled": 4}
STATE_STYLE = {
    "completed": "green",
    "failed": "red",
    "dead_lettered": "red",
    "cancelled": "yellow",
    "skipped": "yellow",
    "in_progress": "cyan",
    "awaiting_approval": "magenta",
    "blocked": "magenta",
}


class GoalIdType(TaskIdType):
    """A goal id as `goal list` prints it (a leading '#' is accepted)."""

    name = "GOAL"
    what = "goal id"
    printed_by = "goal list"


GOAL_ID = GoalIdType()


@click.group(
    cls=AliasGroup,
    aliases={"ls": "list"},
    epilog="""\b
Examples:
  agentctl agent create planner --template planner
  agentctl goal submit "Summarize the three reports in ~/reports and draft a memo"
  agentctl goal watch 3
  agentctl goal submit "Clean up the build logs" --approve-plan
  agentctl goal show 4
  agentctl goal approve 4
  agentctl goal reject 4 --reason "one step per log directory"
  agentctl goal cancel 4""",
)
def goal() -> None:
    """Plan an intent into steps your agents run in parallel.

    A planner agent of yours (from the planner template) plans the intent as
    steps (what to do, the capabilities each needs, which steps' results it
    needs); agentd checks the plan (a graph without cycles, capabilities
    some template provides) and asks again with the errors if it is wrong.
    Each step then runs as a task of yours on one of your capable agents
    with room, else on a sub-agent agentd makes for the goal from a template
    that can run it (your agent, named after the goal and step: g3-1-fetch),
    with the results of the steps it needs in its prompt; independent steps
    run at once, up to --max-agents. Sub-agents count against your agent
    limits; a refusal only makes steps wait. When the goal ends, their
    artifacts are copied to the goal (`task artifact` still reads them) and
    they are removed. A failed step skips the steps that need
    it, and the planner is asked once to plan the rest around it. When all
    steps are done, the planner writes the goal's result.
    """


@goal.command("submit")
@click.argument("intent")
@click.option(
    "--planner", metavar="AGENT", help="The agent that plans [default: your first planner]."
)
@click.option("--project", metavar="NAME", help="File the goal's tasks under project NAME.")
@click.option("--approve-plan", is_flag=True, help="Hold the plan until you approve it.")
@click.option(
    "--max-agents",
    type=click.IntRange(1, 100),
    default=4,
    show_default=True,
    help="Steps running at once; the others wait (nothing fails for it).",
)
@click.option(
    "--sub-agents/--no-sub-agents",
    default=True,
    show_default=True,
    help="Let agentd make agents for steps none of yours can take now.",
)
@click.option(
    "--team",
    metavar="TEAM",
    help="Run the steps on TEAM's members only (no sub-agents; see `agentctl team`).",
)
@click.option(
    "--plan",
    "plan_file",
    type=click.File("r", encoding="utf-8"),
    metavar="FILE",
    help="Your own plan (JSON as `goal show --json` prints its plan; - for stdin): "
    "checked like a planner's, then run; the planner only writes the result.",
)
@click.option("--watch", "then_watch", is_flag=True, help="Then watch it, as `goal watch`.")
@json_option
def goal_submit(
    intent: str,
    planner: str | None,
    project: str | None,
    approve_plan: bool,
    max_agents: int,
    sub_agents: bool,
    team: str | None,
    plan_file: Any,
    then_watch: bool,
    as_json: bool,
) -> None:
    """Start a goal for INTENT; prints its id (with --json, the goal)."""
    options = {
        "planner": planner,
        "project": project,
        "approve_plan": approve_plan or None,
        "max_agents": max_agents,
        "sub_agents": None if sub_agents else False,
        "team": team,
        "plan": plan_file.read() if plan_file is not None else None,
    }

    async def submit(c: AgentdClient) -> dict[str, Any]:
        return await c.get_goal(await c.submit_goal(intent, options))

    info = run(submit)
    if then_watch:
        _watch(int(info["id"]), as_json)
    elif as_json:
        print_json(info)
    else:
        click.echo(info["id"])


@goal.command("list", epilog="\b\nExample:\n  agentctl goal list --json")
@json_option
def goal_list(as_json: bool) -> None:
    """List your goals, newest first (administrators: everyone's)."""
    rows = run(lambda c: c.list_goals())
    if as_json:
        print_json(rows)
        return
    print_table(
        ("ID", "STATE", "STEPS", "PLANNER", "INTENT"),
        ((g["id"], g["state"], g["steps"], g["planner"], g["intent"]) for g in rows),
    )
    if not rows and env().is_tty():
        click.echo('No goals. `agentctl goal submit "INTENT"` starts one.', err=True)


FIELDS: tuple[Field, ...] = (
    ("id", "ID", getter("id")),
    ("state", "State", getter("state")),
    ("owner_uid", "Owner", getter("owner_uid", fmt_user)),
    ("planner", "Planner", getter("planner")),
    ("round", "Plan", getter("round")),
    ("max_agents", "Max agents", getter("max_agents")),
    ("created", "Created", getter("created", fmt_time)),
    ("finished", "Finished", getter("finished", fmt_time)),
    ("error", "Error", getter("error")),
)


@goal.command("show", epilog="\b\nExample:\n  agentctl goal show 3 --json")
@click.argument("goal_id", type=GOAL_ID)
@json_option
def goal_show(goal_id: int, as_json: bool) -> None:
    """Show a goal: its fields, its plan as a tree, and its result."""
    info: dict[str, Any] = run(lambda c: c.get_goal(goal_id))
    if as_json:
        print_json(info)
        return
    print_fields(info, FIELDS)
    console = Console(highlight=False, soft_wrap=True)
    console.print(tree(info))
    if info.get("agents"):
        click.echo("\nSub-agents:")
        print_table(
            ("NAME", "TEMPLATE", "STEP", "STATE", "ERROR"),
            (
                (a["name"], a["template"], a["step"], a["state"], a.get("error") or "")
                for a in info["agents"]
            ),
        )
    if info.get("result"):
        click.echo(f"\nResult:\n{info['result']}")


@goal.command("approve")
@click.argument("goal_id", type=GOAL_ID)
def goal_approve(goal_id: int) -> None:
    """Run a plan held for your approval (goal submit --approve-plan)."""
    run(lambda c: c.approve_goal(goal_id))


@goal.command("reject")
@click.argument("goal_id", type=GOAL_ID)
@click.option("--reason", required=True, help="What the planner should change.")
def goal_reject(goal_id: int, reason: str) -> None:
    """Send a held plan back to the planner with REASON, for a new plan."""
    run(lambda c: c.reject_goal(goal_id, reason))


@goal.command("cancel")
@click.argument("goal_id", type=GOAL_ID)
def goal_cancel(goal_id: int) -> None:
    """Cancel a goal and every task of it still open."""
    run(lambda c: c.cancel_goal(goal_id))


@goal.command(
    "watch",
    epilog="""\b
Exit status: 0 completed, 1 failed, 4 cancelled, 130 when interrupted.""",
)
@click.argument("goal_id", type=GOAL_ID)
@json_option
def goal_watch(goal_id: int, as_json: bool) -> None:
    """Watch a goal until it ends: its plan as a live tree (state, agent and
    elapsed time of each step), then its result. Not on a terminal (or with
    --json), prints each change of state as a line (as JSON) instead."""
    _watch(goal_id, as_json)


def _watch(goal_id: int, as_json: bool) -> None:
    live = env().is_tty() and not as_json

    async def body(c: AgentdClient) -> dict[str, Any]:
        seen: dict[str, str] = {}
        async with c.watch_goal(goal_id) as watch:
            with (
                Live(console=Console(highlight=False), auto_refresh=False)
                if live
                else _Quiet() as view
            ):
                while True:
                    info = await c.get_goal(goal_id)
                    if live:
                        view.update(tree(info), refresh=True)
                    else:
                        _changes(info, seen, as_json)
                    if info["state"] in FINAL:
                        return info
                    await watch.wait(1.0)

    try:
        info = run(body)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None
    if info.get("result") and not as_json:
        click.echo(f"\nResult:\n{info['result']}")
    if info.get("error") and not as_json:
        click.echo(f"agentctl: goal {goal_id} {info['state']}: {info['error']}", err=True)
    raise click.exceptions.Exit(WATCH_EXIT.get(info["state"], 1))


class _Quiet:
    """Live's stand-in off a terminal: lines are printed instead (_changes)."""

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, _renderable: object, refresh: bool = False) -> None:
        return None


def _changes(info: dict[str, Any], seen: dict[str, str], as_json: bool) -> None:
    """One line per change of the goal's or a step's state since the last call."""
    now = {"goal": info["state"], **{f"step {s['id']}": s["state"] for s in info["steps"]}}
    for key, state in now.items():
        if seen.get(key) != state:
            seen[key] = state
            if as_json:  # one JSON object a line, as `journalctl -o json`
                click.echo(json.dumps({"goal": info["id"], "what": key, "state": state}))
            else:
                click.echo(f"{time.strftime('%H:%M:%S')} {key}: {state}")


def tree(info: dict[str, Any], now: float | None = None) -> Tree:
    """The plan as a tree: each step under the last step it needs (the others
    it needs named), with its state, agent, elapsed time and tokens."""
    now = time.time() if now is None else now
    head = Text.assemble(
        f"goal {info['id']}: ", (info["state"], _style(info["state"])), f"  {info['intent']}"
    )
    root = Tree(head)
    nodes: dict[str, Tree] = {}
    for s in info.get("steps", []):
        needs = s["depends_on"]
        parent = nodes.get(needs[-1]) if needs else None
        also = f"  (also after {', '.join(needs[:-1])})" if len(needs) > 1 else ""
        label = Text.assemble(
            (s["state"], _style(s["state"])),
            f"  {s['id']}: {s['title']}",
            (_details(s, now), "dim"),
            (also, "dim"),
        )
        nodes[s["id"]] = (parent or root).add(label)
    if not info.get("steps"):
        root.add(Text("planning…" if info["state"] == "planning" else "no plan", style="dim"))
    return root


def _details(step: dict[str, Any], now: float) -> str:
    """@agent  12s  340 tok  task 7 (what is known of it)."""
    out = ""
    if step.get("agent"):
        out += f"  @{step['agent']}"
    if step.get("started"):
        out += f"  {fmt_seconds((step.get('finished') or now) - step['started'])}"
    if step.get("tokens"):
        out += f"  {step['tokens']} tok"
    if step.get("task"):
        out += f"  task {step['task']}"
    return out


def fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m{seconds % 60:02d}s"


def _style(state: str) -> str:
    return STATE_STYLE.get(state, "")
