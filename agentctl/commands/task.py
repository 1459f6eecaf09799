"""`agentctl task`: submit, list, show, cancel, retry, unblock, wait for tasks, and
read their artifacts.

agentd's queue does the work (routing, leases, retries); these commands ask
it and present the answer. `task wait`, the one with a loop and exit codes
of its own, lives in agentctl.commands.task_wait, and `task show` and `task
artifact` (reading one task) in agentctl.commands.task_show; both are added to
the group here. Statuses and priorities are agentd's own lists (agentd.tasks.model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from agentd.tasks.model import PRIORITIES, STATUSES

from ..app import AliasGroup, env, json_option, run
from ..client import AgentdClient
from ..output import (
    dash,
    fmt_age,
    fmt_time,
    print_json,
    print_table,
)
from ..params import TASK_ID, split_ids, split_option
from .task_show import task_artifact, task_log, task_reply, task_show
from .task_wait import task_wait


@click.group(
    cls=AliasGroup,
    aliases={"ls": "list"},
    epilog="""\b
Examples:
  id=$(agentctl task submit "Summarise today's logs" --needs summarise)
  agentctl task wait "$id" && agentctl task show "$id"
  agentctl task submit "Build" --exec 'make -C src' --agent builder
  agentctl task list --status failed
  agentctl task artifact 42 report.pdf -o report.pdf""",
)
def task() -> None:
    """Submit, follow and manage tasks.

    agentd assigns each task to an agent whose template has every capability
    the task needs (or to the agent named with --agent), once the tasks it
    comes after have completed, higher priority first. The agent runs it in
    its unit and reports it completed (with a JSON result and artifacts:
    files it wrote), failed, or blocked with a question that you answer with
    `task reply` (or `task unblock`); `task log` shows each step it took.
    When an agent stops answering mid-task (its unit killed, its lease
    expired), the task is retried with backoff up to its attempt limit; after
    that it is dead-lettered.

    Statuses: pending, in_progress, blocked, completed, failed, cancelled,
    dead_lettered; the last four are final. You see and manage the tasks you
    submitted; administrators, every task.
    """


task.add_command(task_show)
task.add_command(task_artifact)
task.add_command(task_wait)
task.add_command(task_log)
task.add_command(task_reply)


@task.command(
    "submit",
    epilog="""\b
Examples:
  agentctl task submit "Summarise the report" --needs read --needs summarise
  id=$(agentctl task submit "Deploy" --after 41 --after 42 --priority high)
  agentctl task submit "Nightly tests" --exec 'make check' --max-attempts 1
  agentctl task submit "Survey the field" --team research --needs summarise
  agentctl task submit "Triage" -p website --json | jq .status""",
)
@click.argument("title")
@click.option(
    "-d", "--description", metavar="TEXT", help="What to do, in as much detail as the agent needs."
)
@click.option("-p", "--project", metavar="PROJECT", help="File the task under PROJECT.")
@click.option(
    "--needs",
    multiple=True,
    callback=split_option,
    metavar="CAP",
    help="A capability the agent must have (repeatable, or comma-separated).",
)
@click.option(
    "--priority",
    type=click.Choice(PRIORITIES),
    help="Scheduling priority  [agentd's default: medium].",
)
@click.option(
    "--after",
    multiple=True,
    callback=split_ids,
    metavar="ID",
    help="Run only after task ID has completed (repeatable, or comma-separated).",
)
@click.option("--agent", metavar="NAME", help="Assign the task to agent NAME.")
@click.option(
    "--team",
    metavar="TEAM",
    help="Give the task only to a capable member of team TEAM (not with --agent).",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    metavar="N",
    help="Attempts before the task is dead-lettered  [agentd's default: 3].",
)
@click.option(
    "--exec",
    "exec_",
    metavar="COMMAND",
    help="Run COMMAND with the agent's shell tool instead of a model.",
)
@json_option
def task_submit(
    title: str,
    description: str | None,
    project: str | None,
    needs: list[str],
    priority: str | None,
    after: list[int],
    agent: str | None,
    team: str | None,
    max_attempts: int | None,
    exec_: str | None,
    as_json: bool,
) -> None:
    """Submit a task titled TITLE; prints its id.

    agentd checks everything before it stores anything: the project and
    agent must exist and be yours, somebody you own must have the capabilities
    in --needs (NoCapableAgent otherwise), and every --after must name an
    existing task of yours (NoSuchTask otherwise; so no dependency cycle can
    ever form). With --team, only the team's members are considered: one of
    them must have the capabilities (see `agentctl team`); --agent and
    --team together are refused.

    With --exec, the agent's shell tool runs COMMAND in the agent's home, in
    its sandbox: the exit status decides completed or failed, the output
    becomes the result, and files written under artifacts/ in the home become
    the task's artifacts. Only agents whose template allows the shell tool
    accept such tasks.

    Prints the new task's id alone, so `id=$(agentctl task submit ...)` works;
    with --json, the task as `task show --json` prints it (without history).
    """
    spec = {
        "title": title,
        "description": description,
        "project": project,
        "needs": needs or None,
        "priority": priority,
        "after": after or None,
        "agent": agent,
        "team": team,
        "max_attempts": max_attempts,
        "exec": exec_,
    }
    spec = {key: value for key, value in spec.items() if value is not None}

    async def body(c: AgentdClient) -> tuple[int, dict[str, Any] | None]:
        task_id = await c.submit_task(spec)
        return task_id, (await c.describe_task(task_id) if as_json else None)

    task_id, info = run(body)
    if as_json:
        print_json(info)
    else:
        click.echo(task_id)


@task.command(
    "list",
    short_help="List tasks (alias: ls).",
    epilog="""\b
Examples:
  agentctl task list
  agentctl task list --status blocked
  agentctl task list --project website --priority critical --limit 20
  agentctl task list --status failed | cut -f1 | xargs -rn1 agentctl task retry
  agentctl task list --json | jq -r '.[] | select(.attempts > 1) | .id'""",
)
@click.option("-s", "--status", type=click.Choice(STATUSES), help="Only tasks in STATUS.")
@click.option("-p", "--project", metavar="PROJECT", help="Only tasks of PROJECT.")
@click.option("--agent", metavar="NAME", help="Only tasks assigned to agent NAME.")
@click.option("--priority", type=click.Choice(PRIORITIES), help="Only tasks of PRIORITY.")
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="Only the newest N tasks  [agentd's default: 1000].",
)
@json_option
def task_list(
    status: str | None,
    project: str | None,
    agent: str | None,
    priority: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List the tasks you may see, narrowed by the options (all must match).

    Oldest first, of the newest N that match. Columns: ID, STATUS, PRIORITY,
    PROJECT, AGENT (assigned, or -), ATTEMPTS (made/allowed), AGE (since it
    was submitted) and TITLE. Without a terminal, one tab-separated line per
    task, no header, with the time it was submitted (local ISO 8601) instead
    of the age.
    """
    flt = {
        key: value
        for key, value in (
            ("status", status),
            ("project", project),
            ("agent", agent),
            ("priority", priority),
            ("limit", limit),
        )
        if value is not None
    }
    tasks = sorted(run(lambda c: c.list_tasks(flt)), key=lambda t: t["id"])
    if as_json:
        print_json(tasks)
        return
    when = fmt_age if env().is_tty() else fmt_time
    print_table(
        ("ID", "STATUS", "PRIORITY", "PROJECT", "AGENT", "ATTEMPTS", "AGE", "TITLE"),
        [
            (
                t["id"],
                t["status"],
                t["priority"],
                dash(t["project"]),
                dash(t["agent"]),
                f"{t['attempts']}/{t['max_attempts']}",
                when(t["created_at"]),
                t["title"],
            )
            for t in tasks
        ],
        style_column=1,
    )


def _task_action(call: Callable[[Any], Any], task_id: int, as_json: bool) -> None:
    async def body(c: AgentdClient) -> dict[str, Any] | None:
        await call(c)
        return await c.describe_task(task_id) if as_json else None

    info = run(body)
    if as_json:
        print_json(info)


@task.command(
    "cancel",
    epilog="""\b
Examples:
  agentctl task cancel 42
  agentctl task list --project old -s pending | cut -f1 | xargs -rn1 agentctl task cancel""",
)
@click.argument("task_id", metavar="ID", type=TASK_ID)
@json_option
def task_cancel(task_id: int, as_json: bool) -> None:
    """Cancel task ID, unless it has already ended.

    A running task is stopped: its agent is told to abort it at its next
    heartbeat. agentd refuses (Busy) for a task that has already ended.
    Prints nothing on success; with --json, the task after the change.
    """
    _task_action(lambda c: c.cancel_task(task_id), task_id, as_json)


@task.command(
    "retry",
    short_help="Queue a failed, dead-lettered or cancelled task again.",
    epilog="""\b
Examples:
  agentctl task retry 42 && agentctl task wait 42
  agentctl task list -s dead_lettered | cut -f1 | xargs -rn1 agentctl task retry""",
)
@click.argument("task_id", metavar="ID", type=TASK_ID)
@json_option
def task_retry(task_id: int, as_json: bool) -> None:
    """Queue task ID again after it failed, was dead-lettered or cancelled.

    Its attempts count from zero again, and it goes back to the agent it
    was submitted for (--agent), if any. agentd refuses (Busy) for a task
    that has not ended. Prints nothing on success;
    with --json, the task after the change.
    """
    _task_action(lambda c: c.retry_task(task_id), task_id, as_json)


@task.command(
    "unblock",
    epilog="""\b
Examples:
  agentctl task show 42 | grep ^block_reason
  agentctl task unblock 42 --note "Use the staging database"
""",
)
@click.argument("task_id", metavar="ID", type=TASK_ID)
@click.option(
    "--note",
    default="",
    metavar="TEXT",
    help="Your answer to the agent's question (see `task show ID`).",
)
@json_option
def task_unblock(task_id: int, note: str, as_json: bool) -> None:
    """Answer blocked task ID and let it run again.

    An agent blocks a task when it needs something from a person; the reason
    is in `task show ID` (Blocked on). The note is added to the task's notes,
    which the agent gets when it picks the task up again; without --note the
    task just runs again. agentd refuses (Busy) for a task that is not
    blocked. Prints nothing on success; with --json, the task after the
    change.
    """
    _task_action(lambda c: c.unblock_task(task_id, note), task_id, as_json)
