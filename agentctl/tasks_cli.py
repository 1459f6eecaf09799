"""agentctl's commands for agentd's task queue: `project`, `task` and `events`.

They hang on the root group of agentctl.cli (which imports this module at its
end) and follow its conventions: the client comes from Env.connect, --json
everywhere, rich output only on a terminal and tab-separated lines otherwise,
ClientError as one line `agentctl: MESSAGE (Name)`. The one exception is
`task wait`, whose exit status is the task's outcome (see WAIT_EXIT).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fnmatch
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import click

from . import cli as base
from .cli import (
    AliasGroup,
    Field,
    _get,
    cli,
    env,
    fail,
    fmt_detail,
    fmt_time,
    fmt_user,
    json_option,
    plain,
    print_fields,
    print_json,
    print_table,
    run,
    user_name,
)
from .client import ClientError

STATUSES = ("pending", "in_progress", "blocked", "completed", "failed", "cancelled",
            "dead_lettered")
FINAL = frozenset({"completed", "failed", "cancelled", "dead_lettered"})
PRIORITIES = ("low", "medium", "high", "critical")

# `task wait`: exit status per final status, and on --timeout (as timeout(1))
WAIT_EXIT = {"completed": 0, "failed": 1, "dead_lettered": 3, "cancelled": 4}
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130
WAIT_POLL = 3.0  # seconds between re-checks when no TaskChanged arrives


# -- parameters -------------------------------------------------------------------------
class TaskIdType(click.ParamType):
    """A task id as `task submit` prints it (a leading '#' is accepted)."""

    name = "ID"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().removeprefix("#")
        if not (text.isascii() and text.isdigit()) or int(text) >= 1 << 64:
            self.fail(f"invalid task id {value!r}: a number, as `task submit` prints it",
                      param, ctx)
        return int(text)


TASK_ID = TaskIdType()


def _split(values: Sequence[str]) -> list[str]:
    """Repeatable options also take comma-separated lists: --needs a,b == --needs a --needs b."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _split_option(ctx: click.Context, param: click.Parameter, values: Sequence[str]
                  ) -> list[str]:
    return _split(values)


def _split_ids(ctx: click.Context, param: click.Parameter, values: Sequence[str]
               ) -> list[int]:
    return [TASK_ID.convert(v, param, ctx) for v in _split(values)]


# -- formatting -------------------------------------------------------------------------
def _dash(value: Any) -> str:
    return "-" if value in ("", None) else str(value)


def fmt_bytes(n: int) -> str:
    """A size for people: 512 B, 1.5 KiB, 12 MiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            text = f"{size:.1f}".removesuffix(".0") if unit != "B" else str(int(size))
            return f"{text} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def fmt_list_time(ts: float | None) -> str:
    """Times in lists: local ISO 8601 in a pipe, 'YYYY-MM-DD HH:MM' in a terminal's table."""
    if not ts or not env().is_tty():
        return fmt_time(ts)
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def fmt_age(ts: float | None, now: float | None = None) -> str:
    """How long ago, kubectl style: 45s, 12m, 5h, 3d."""
    if not ts:
        return "-"
    s = max(0, int((time.time() if now is None else now) - ts))
    for unit, size, below in (("s", 1, 120), ("m", 60, 7200), ("h", 3600, 172800)):
        if s < below:
            return f"{s // size}{unit}"
    return f"{s // 86400}d"


def fmt_result(text: str) -> str:
    """A task's result (JSON text): indented on a terminal, one line otherwise;
    text that is not JSON as it is."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if env().is_tty():
        return json.dumps(value, indent=2, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)


TASK_FIELDS: list[Field] = [
    ("id", "ID", _get("id")),
    ("title", "Title", _get("title")),
    ("status", "Status", _get("status")),
    ("priority", "Priority", _get("priority")),
    ("project", "Project", _get("project", _dash)),
    ("agent", "Agent", _get("agent", _dash)),
    ("owner_uid", "Owner", _get("owner_uid", fmt_user)),
    ("description", "Description", _get("description")),
    ("needs", "Needs", _get("needs")),
    ("after", "After", _get("after")),
    ("exec", "Exec", _get("exec")),
    ("attempts", "Attempts", _get("attempts")),
    ("max_attempts", "Max attempts", _get("max_attempts")),
    ("block_reason", "Blocked on", _get("block_reason")),
    ("notes", "Notes", _get("notes", lambda notes: "\n".join(notes))),
    ("error", "Error", _get("error")),
    ("result", "Result", _get("result", fmt_result)),
    ("created_at", "Created", _get("created_at", fmt_time)),
    ("updated_at", "Updated", _get("updated_at", fmt_time)),
    ("started_at", "Started", _get("started_at", fmt_time)),
    ("finished_at", "Finished", _get("finished_at", fmt_time)),
    ("lease_expires", "Lease expires", _get("lease_expires", fmt_time)),
]
# left out of `task show`'s text when empty ("" or no items): nothing to say
OPTIONAL_TASK_FIELDS = ("description", "needs", "after", "exec", "block_reason", "notes",
                        "error", "result")

PROJECT_FIELDS: list[Field] = [
    ("name", "Name", _get("name")),
    ("description", "Description", _get("description")),
    ("owner_uid", "Owner", _get("owner_uid", fmt_user)),
    ("created_at", "Created", _get("created_at", fmt_time)),
    ("tasks", "Tasks", _get("tasks")),
]


def _task_counts(info: dict[str, Any]) -> str:
    """5 (completed 3, pending 2) from DescribeProject's tasks and tasks_STATUS keys."""
    counts = [f"{status} {info[f'tasks_{status}']}" for status in STATUSES
              if info.get(f"tasks_{status}")]
    return f"{info['tasks']}" + (f" ({', '.join(counts)})" if counts else "")


def _print_section(title: str, prefix: str, columns: Sequence[str],
                   rows: list[Sequence[Any]], style_column: int | None = None) -> None:
    """A titled table after `show`'s fields on a terminal; in a pipe, one line per row
    starting with PREFIX, so `awk -F'\\t' '$1 == "artifact"'` picks them out."""
    if not env().is_tty():
        for row in rows:
            click.echo("\t".join([prefix, *(plain(cell) for cell in row)]))
        return
    click.echo()
    click.echo(click.style(title, bold=True) + ("" if rows else ": none"))
    if rows:
        print_table(columns, rows, style_column=style_column)


def _event_detail(detail: Any) -> str:
    """An event's detail without task_id (a column of its own, or the task shown)."""
    if isinstance(detail, dict):
        detail = {k: v for k, v in detail.items() if k != "task_id"}
    return fmt_detail(detail)


def _actor(uid: int) -> Any:
    return user_name(uid) or uid


# -- project ----------------------------------------------------------------------------
@cli.group(cls=AliasGroup, aliases={"ls": "list", "remove": "rm"}, epilog="""\b
Examples:
  agentctl project create website --description "The public site"
  agentctl task submit "Check the links" --project website
  agentctl project show website
  agentctl project rm website""")
def project() -> None:
    """Create, list, inspect and remove projects.

    A project groups tasks (`task submit --project P`, `task list --project
    P`). Projects belong to the user who created them; administrators see
    every project.
    """


@project.command("create", epilog="""\b
Examples:
  agentctl project create website
  agentctl project create website -d "The public site" --json""")
@click.argument("name")
@click.option("-d", "--description", default="", metavar="TEXT",
              help="What the project is about.")
@json_option
def project_create(name: str, description: str, as_json: bool) -> None:
    """Create project NAME, owned by you.

    Prints NAME, or with --json the project as `project show --json` prints it.
    """
    async def body(c: Any) -> dict[str, Any] | None:
        await c.create_project(name, description)
        return await c.describe_project(name) if as_json else None

    info = run(body)
    if as_json:
        print_json(info)
    else:
        click.echo(name)


@project.command("list", short_help="List projects (alias: ls).", epilog="""\b
Examples:
  agentctl project list
  agentctl project list --json | jq -r '.[].name'""")
@json_option
def project_list(as_json: bool) -> None:
    """List the projects you may see: all of them for an administrator, else your own.

    Columns: NAME, OWNER, TASKS (how many tasks it holds) and DESCRIPTION.
    """
    projects = sorted(run(lambda c: c.list_projects()), key=lambda p: p["name"])
    if as_json:
        print_json([dict(p, owner=user_name(p["owner_uid"])) for p in projects])
        return
    print_table(("NAME", "OWNER", "TASKS", "DESCRIPTION"),
                [(p["name"], user_name(p["owner_uid"]) or p["owner_uid"], p["tasks"],
                  p["description"]) for p in projects])


@project.command("show", epilog="""\b
Examples:
  agentctl project show website
  agentctl task list --project website""")
@click.argument("name")
@json_option
def project_show(name: str, as_json: bool) -> None:
    """Show project NAME: description, owner, when it was created, its tasks.

    Tasks counts every task filed under it, then how many are in each status.
    --json prints them as tasks and tasks_STATUS (tasks_pending, ...).
    """
    info = run(lambda c: c.describe_project(name))
    if as_json:
        print_json(info)
        return
    # the per-status counts (tasks_STATUS) go into the Tasks line
    shown = {k: v for k, v in info.items()
             if not (k.startswith("tasks_") and k.removeprefix("tasks_") in STATUSES)}
    if "tasks" in info:
        shown["tasks"] = _task_counts(info)
    print_fields(shown, PROJECT_FIELDS)


@project.command("rm", short_help="Remove a project (alias: remove).", epilog="""\b
Example:
  agentctl project rm website""")
@click.argument("name")
@json_option
def project_rm(name: str, as_json: bool) -> None:
    """Remove project NAME.

    agentd refuses (Busy) while the project has unfinished tasks: cancel them
    or let them end first. Alias: remove. Prints nothing on success.
    """
    run(lambda c: c.remove_project(name))
    if as_json:
        print_json({"name": name, "removed": True})


# -- task -------------------------------------------------------------------------------
@cli.group(cls=AliasGroup, aliases={"ls": "list"}, epilog="""\b
Examples:
  id=$(agentctl task submit "Summarise today's logs" --needs summarise)
  agentctl task wait "$id" && agentctl task show "$id"
  agentctl task submit "Build" --exec 'make -C src' --agent builder
  agentctl task list --status failed
  agentctl task artifact 42 report.pdf -o report.pdf""")
def task() -> None:
    """Submit, follow and manage tasks.

    agentd assigns each task to an agent whose template has every capability
    the task needs (or to the agent named with --agent), once the tasks it
    comes after have completed, higher priority first. The agent runs it in
    its unit and reports it completed (with a JSON result and artifacts:
    files it wrote), failed, or blocked with a question that you answer with
    `task unblock`. When an agent stops answering mid-task (its unit killed,
    its lease expired), the task is retried with backoff up to its attempt
    limit; after that it is dead-lettered.

    Statuses: pending, in_progress, blocked, completed, failed, cancelled,
    dead_lettered; the last four are final. You see and manage the tasks you
    submitted; administrators, every task.
    """


@task.command("submit", epilog="""\b
Examples:
  agentctl task submit "Summarise the report" --needs read --needs summarise
  id=$(agentctl task submit "Deploy" --after 41 --after 42 --priority high)
  agentctl task submit "Nightly tests" --exec 'make check' --max-attempts 1
  agentctl task submit "Triage" -p website --json | jq .status""")
@click.argument("title")
@click.option("-d", "--description", metavar="TEXT",
              help="What to do, in as much detail as the agent needs.")
@click.option("-p", "--project", metavar="PROJECT", help="File the task under PROJECT.")
@click.option("--needs", multiple=True, callback=_split_option, metavar="CAP",
              help="A capability the agent must have (repeatable, or comma-separated).")
@click.option("--priority", type=click.Choice(PRIORITIES),
              help="Scheduling priority  [agentd's default: medium].")
@click.option("--after", multiple=True, callback=_split_ids, metavar="ID",
              help="Run only after task ID has completed (repeatable, or comma-separated).")
@click.option("--agent", metavar="NAME", help="Assign the task to agent NAME.")
@click.option("--max-attempts", type=click.IntRange(min=1), metavar="N",
              help="Attempts before the task is dead-lettered  [agentd's default: 3].")
@click.option("--exec", "exec_", metavar="COMMAND",
              help="Run COMMAND with the agent's shell tool instead of a model.")
@json_option
def task_submit(title: str, description: str | None, project: str | None, needs: list[str],
                priority: str | None, after: list[int], agent: str | None,
                max_attempts: int | None, exec_: str | None, as_json: bool) -> None:
    """Submit a task titled TITLE; prints its id.

    agentd checks everything before it stores anything: the project and
    agent must exist and be yours, somebody you own must have the capabilities
    in --needs (NoCapableAgent otherwise), and every --after must name an
    existing task of yours (NoSuchTask otherwise; so no dependency cycle can
    ever form).

    With --exec, the agent's shell tool runs COMMAND in the agent's home, in
    its sandbox: the exit status decides completed or failed, the output
    becomes the result, and files written under artifacts/ in the home become
    the task's artifacts. Only agents whose template allows the shell tool
    accept such tasks.

    Prints the new task's id alone, so `id=$(agentctl task submit ...)` works;
    with --json, the task as `task show --json` prints it (without history).
    """
    spec = {"title": title, "description": description, "project": project,
            "needs": needs or None, "priority": priority, "after": after or None,
            "agent": agent, "max_attempts": max_attempts, "exec": exec_}
    spec = {key: value for key, value in spec.items() if value is not None}

    async def body(c: Any) -> tuple[int, dict[str, Any] | None]:
        task_id = await c.submit_task(spec)
        return task_id, (await c.describe_task(task_id) if as_json else None)

    task_id, info = run(body)
    if as_json:
        print_json(info)
    else:
        click.echo(task_id)


@task.command("list", short_help="List tasks (alias: ls).", epilog="""\b
Examples:
  agentctl task list
  agentctl task list --status blocked
  agentctl task list --project website --priority critical --limit 20
  agentctl task list --status failed | cut -f1 | xargs -rn1 agentctl task retry
  agentctl task list --json | jq -r '.[] | select(.attempts > 1) | .id'""")
@click.option("-s", "--status", type=click.Choice(STATUSES), help="Only tasks in STATUS.")
@click.option("-p", "--project", metavar="PROJECT", help="Only tasks of PROJECT.")
@click.option("--agent", metavar="NAME", help="Only tasks assigned to agent NAME.")
@click.option("--priority", type=click.Choice(PRIORITIES), help="Only tasks of PRIORITY.")
@click.option("-n", "--limit", type=click.IntRange(min=1), metavar="N",
              help="Only the newest N tasks  [agentd's default: 1000].")
@json_option
def task_list(status: str | None, project: str | None, agent: str | None,
              priority: str | None, limit: int | None, as_json: bool) -> None:
    """List the tasks you may see, narrowed by the options (all must match).

    Oldest first, of the newest N that match. Columns: ID, STATUS, PRIORITY,
    PROJECT, AGENT (assigned, or -), ATTEMPTS (made/allowed), AGE (since it
    was submitted) and TITLE. Without a terminal, one tab-separated line per
    task, no header, with the time it was submitted (local ISO 8601) instead
    of the age.
    """
    flt = {key: value for key, value in (
        ("status", status), ("project", project), ("agent", agent), ("priority", priority),
        ("limit", limit)) if value is not None}
    tasks = sorted(run(lambda c: c.list_tasks(flt)), key=lambda t: t["id"])
    if as_json:
        print_json(tasks)
        return
    when = fmt_age if env().is_tty() else fmt_time
    print_table(
        ("ID", "STATUS", "PRIORITY", "PROJECT", "AGENT", "ATTEMPTS", "AGE", "TITLE"),
        [(t["id"], t["status"], t["priority"], _dash(t["project"]), _dash(t["agent"]),
          f"{t['attempts']}/{t['max_attempts']}", when(t["created_at"]), t["title"])
         for t in tasks],
        style_column=1,
    )


@task.command("show", short_help="Show a task: fields, result, history, artifacts.",
              epilog="""\b
Examples:
  agentctl task show 42
  agentctl task show 42 | awk -F'\\t' '$1 == "artifact" {print $2}'
  agentctl task show 42 --json | jq '.result | fromjson'""")
@click.argument("task_id", metavar="ID", type=TASK_ID)
@json_option
def task_show(task_id: int, as_json: bool) -> None:
    """Show task ID: every field, its result, its history and its artifacts.

    The result (JSON, as the agent reported it) is indented on a terminal.
    The history lists the task's events from the audit trail (created,
    assigned, claimed, blocked, completed, ...) with who caused each; the
    artifacts, the files the agent registered (get one with `task
    artifact`); a terminal gets the start of each SHA-256, a pipe or --json
    all of it. Without a terminal: `KEY<TAB>VALUE` lines, then one
    `event<TAB>SEQ<TAB>TIME<TAB>ACTOR<TAB>EVENT<TAB>RESULT<TAB>DETAIL` line
    per event and one `artifact<TAB>NAME<TAB>TYPE<TAB>SIZE<TAB>SHA256` line
    per artifact (sizes in bytes). --json prints DescribeTask's fields (times
    in seconds since the epoch, result as JSON text) plus "events" and
    "artifacts" lists.
    """
    async def body(c: Any) -> dict[str, Any]:
        info = await c.describe_task(task_id)
        return dict(info, events=await c.list_task_events(task_id),
                    artifacts=await c.list_artifacts(task_id))

    info = run(body)
    if as_json:
        print_json(info)
        return
    events = info.pop("events")
    artifacts = info.pop("artifacts")
    shown = {k: v for k, v in info.items()
             if not (k in OPTIONAL_TASK_FIELDS and v in ("", [], None))}
    print_fields(shown, TASK_FIELDS, styled=("status",))
    tty = env().is_tty()
    _print_section(
        "History", "event", ("SEQ", "TIME", "ACTOR", "EVENT", "RESULT", "DETAIL"),
        [(e["seq"], fmt_list_time(e["ts"]), _actor(e["actor_uid"]), e["event"], e["result"],
          _event_detail(e["detail"])) for e in events])
    # a terminal gets sizes for people and the start of each hash (all of it in a pipe)
    _print_section(
        "Artifacts", "artifact", ("NAME", "TYPE", "SIZE", "SHA256"),
        [(a["name"], a["type"], fmt_bytes(a["size"]) if tty else a["size"],
          a["sha256"][:12] + "…" if tty else a["sha256"]) for a in artifacts])


def _task_action(call: Callable[[Any], Any], task_id: int, as_json: bool) -> None:
    async def body(c: Any) -> dict[str, Any] | None:
        await call(c)
        return await c.describe_task(task_id) if as_json else None

    info = run(body)
    if as_json:
        print_json(info)


@task.command("cancel", epilog="""\b
Examples:
  agentctl task cancel 42
  agentctl task list --project old -s pending | cut -f1 | xargs -rn1 agentctl task cancel""")
@click.argument("task_id", metavar="ID", type=TASK_ID)
@json_option
def task_cancel(task_id: int, as_json: bool) -> None:
    """Cancel task ID, unless it has already ended.

    A running task is stopped: its agent is told to abort it at its next
    heartbeat. agentd refuses (Busy) for a task that has already ended.
    Prints nothing on success; with --json, the task after the change.
    """
    _task_action(lambda c: c.cancel_task(task_id), task_id, as_json)


@task.command("retry", short_help="Queue a failed, dead-lettered or cancelled task again.",
              epilog="""\b
Examples:
  agentctl task retry 42 && agentctl task wait 42
  agentctl task list -s dead_lettered | cut -f1 | xargs -rn1 agentctl task retry""")
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


@task.command("unblock", epilog="""\b
Examples:
  agentctl task show 42 | grep ^block_reason
  agentctl task unblock 42 --note "Use the staging database"
""")
@click.argument("task_id", metavar="ID", type=TASK_ID)
@click.option("--note", default="", metavar="TEXT",
              help="Your answer to the agent's question (see `task show ID`).")
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


@task.command("wait", epilog="""\b
Examples:
  agentctl task wait 42
  agentctl task wait "$(agentctl task submit Build --exec 'make')" --timeout 600
  agentctl task wait 42 --json | jq -r .result
\b
Exit status: 0 completed, 1 failed, 3 dead-lettered, 4 cancelled,
124 when --timeout ran out, 130 when interrupted; otherwise as for every
command (1 for an error such as NoSuchTask, 69, 77).""")
@click.argument("task_id", metavar="ID", type=TASK_ID)
@click.option("--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Give up after SECONDS (exit 124)  [default: wait for ever].")
@json_option
def task_wait(task_id: int, timeout: float | None, as_json: bool) -> None:
    """Wait until task ID has ended; the exit status tells how.

    Wakes on agentd's TaskChanged signal for the task and also asks again
    every few seconds, so a restart of agentd meanwhile does not leave it
    hanging. Prints the final status (completed, failed, dead_lettered,
    cancelled), with --json the whole task; for a failure, the error goes
    to stderr. While the task is blocked, says so on stderr once per
    question, with the reason.
    """
    try:
        info, timed_out = run(lambda c: _wait(c, task_id, timeout))
    except KeyboardInterrupt:
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    if timed_out:
        fail(f"timed out after {timeout:g}s waiting for task {task_id} "
             f"(still {info['status']})", code=EXIT_TIMEOUT)
    status = info["status"]
    if as_json:
        print_json(info)
    else:
        click.echo(status)
    if status in ("failed", "dead_lettered") and info.get("error"):
        click.echo(f"agentctl: task {task_id} {status.replace('_', '-')}: "
                   f"{' '.join(str(info['error']).split())}", err=True)
    raise click.exceptions.Exit(WAIT_EXIT.get(status, 1))


async def _wait(c: Any, task_id: int, timeout: float | None) -> tuple[dict[str, Any], bool]:
    """Describe TASK_ID until it is final. Returns (task, timed out).

    The TaskChanged match is made before the first DescribeTask: a change
    between the two would otherwise never wake us.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    told_block = ""
    unavailable = False
    async with c.watch_tasks() as watch:
        info = await c.describe_task(task_id)
        while info["status"] not in FINAL:
            if info["status"] == "blocked":
                reason = str(info.get("block_reason") or "no reason given")
                if reason != told_block:
                    click.echo(f"agentctl: task {task_id} is blocked: "
                               f"{' '.join(reason.split())} (answer with: agentctl task "
                               f"unblock {task_id} --note TEXT)", err=True)
                    told_block = reason
            else:
                told_block = ""
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return info, True
            await watch.wait(task_id, WAIT_POLL if left is None else min(WAIT_POLL, left))
            try:
                info = await c.describe_task(task_id)
            except ClientError as e:
                if e.kind != "unavailable":
                    raise
                # agentd restarting: keep the last answer and ask again at the next poll
                if not unavailable:
                    click.echo(f"agentctl: {e.message}; still waiting for task {task_id}",
                               err=True)
                unavailable = True
            else:
                unavailable = False
    return info, False


def is_binary(data: bytes) -> bool:
    """What a terminal should not get: NUL bytes or anything that is not UTF-8."""
    if b"\0" in data:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@task.command("artifact", epilog="""\b
Examples:
  agentctl task artifact 42 report.md
  agentctl task artifact 42 report.pdf > report.pdf
  agentctl task artifact 42 report.pdf -o report.pdf --json""")
@click.argument("task_id", metavar="ID", type=TASK_ID)
@click.argument("name")
@click.option("-o", "--output", metavar="FILE",
              type=click.Path(dir_okay=False, allow_dash=True),
              help="Write to FILE instead of stdout ('-': stdout, even a terminal).")
@json_option
def task_artifact(task_id: int, name: str, output: str | None, as_json: bool) -> None:
    """Write artifact NAME of task ID to stdout or FILE.

    Artifacts are files the agent wrote in its home and registered with
    agentd; their names, types, sizes and SHA-256 are in `task show ID`.
    Only the task's owner (and administrators) may read them; agentd reads
    the file, agentctl never opens the agent's home. Binary data is not
    written to a terminal unless asked for with `-o -`. With --json (which
    needs -o FILE), prints what was written: file, size and SHA-256.
    """
    if as_json and output in (None, "-"):
        raise click.UsageError("--json describes the file written by -o FILE; "
                               "without -o FILE the artifact itself is the output")
    data = run(lambda c: c.read_artifact(task_id, name))
    if output is None or output == "-":
        if output is None and env().is_tty() and is_binary(data):
            fail(f"artifact {name!r} of task {task_id} is binary ({len(data)} bytes); "
                 f"not writing it to a terminal: redirect it (> FILE), or use -o FILE "
                 f"(-o - to force)")
        stdout = click.get_binary_stream("stdout")
        stdout.write(data)
        stdout.flush()
        return
    try:
        with open(output, "wb") as f:
            f.write(data)
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror or e}")
    if as_json:
        print_json({"task": task_id, "name": name, "file": output, "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest()})


# -- events -----------------------------------------------------------------------------
def _matcher(globs: Sequence[str]) -> Callable[[dict[str, Any]], bool]:
    if not globs:
        return lambda _e: True
    return lambda e: any(fnmatch.fnmatchcase(e["action"], g) for g in globs)


async def _events_after(c: Any, after: int, limit: int,
                        keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The first LIMIT kept entries with seq > AFTER."""
    found: list[dict[str, Any]] = []
    while len(found) < limit:
        batch = await c.list_audit_entries(after, base.AUDIT_PAGE)
        found += [e for e in batch if keep(e)]
        if len(batch) < base.AUDIT_PAGE:
            break
        after = batch[-1]["seq"]
    return found[:limit]


async def _events_tail(c: Any, limit: int, keep: Callable[[dict[str, Any]], bool]
                       ) -> tuple[list[dict[str, Any]], int]:
    """The newest LIMIT kept entries up to AuditHead, and that head.

    Reads backwards in growing windows: (head - LIMIT, head], then the window
    before it, twice as wide, ..., until LIMIT entries are kept or the start
    is reached. Without --type, one call usually does; a narrow --type, or a
    user who sees only their own rows, takes a few more. Each row is read once.
    """
    head = await c.audit_head()
    found: deque[dict[str, Any]] = deque()
    hi = head
    width = limit
    while hi > 0 and len(found) < limit:
        lo = max(0, hi - width)
        window: list[dict[str, Any]] = []
        after = lo
        while after < hi:
            want = min(hi - after, base.AUDIT_PAGE)
            batch = await c.list_audit_entries(after, want)
            inside = [e for e in batch if e["seq"] <= hi]
            window += [e for e in inside if keep(e)]
            if len(inside) < want:  # past HI, or no more rows the caller may see
                break
            after = inside[-1]["seq"]
        found.extendleft(reversed(window))
        hi = lo
        width *= 2
    return list(found)[-limit:], head


def _event_cells(e: dict[str, Any]) -> tuple[Any, ...]:
    detail = e["detail"]
    task_id = detail.get("task_id") if isinstance(detail, dict) else None
    return (e["seq"], fmt_list_time(e["ts"]), _actor(e["actor_uid"]), e["action"],
            _dash(task_id), e["agent"] or "-", e["result"], _event_detail(detail))


def _event_line(e: dict[str, Any], tty: bool) -> str:
    cells = _event_cells(e)
    if not tty:
        return "\t".join(plain(c) for c in cells)
    seq, ts, actor, action, task_id, agent_name, result, detail = (str(c) for c in cells)
    colour = {"ok": "green"}.get(result, "red")
    return (f"{seq:>6}  {ts}  {actor:<10} {action:<20} {task_id:>5} {agent_name:<16} "
            f"{click.style(f'{result:<7}', fg=colour)} {detail}").rstrip()


@cli.command("events", short_help="Show the event stream: tasks, projects, agents.",
             epilog="""\b
Examples:
  agentctl events                         the last 50 events
  agentctl events -f --type 'task.*'      task events, then new ones live
  agentctl events -t task.failed -t task.dead_lettered -n 10
  agentctl events -f --json | jq -c 'select(.detail.task_id == 42)'
\b
Event types: project.created, project.removed, task.created, task.assigned,
task.claimed, task.completed, task.blocked, task.unblocked, task.failed,
task.retried, task.cancelled, task.dead_lettered, task.lease_expired,
artifact.created, agent.online, agent.offline, agent.create, agent.start, ...""")
@click.option("-t", "--type", "types", multiple=True, callback=_split_option,
              metavar="GLOB",
              help="Only events whose type matches GLOB, e.g. 'task.*' (repeatable, or "
                   "comma-separated; any may match).")
@click.option("--after", type=click.IntRange(min=0), metavar="SEQ",
              help="Show events numbered after SEQ, oldest first.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=50, show_default=True,
              metavar="N", help="Show at most N events (the newest N without --after).")
@click.option("-f", "--follow", is_flag=True,
              help="After the listing, print new events as they happen.")
@json_option
def events(types: list[str], after: int | None, limit: int, follow: bool,
           as_json: bool) -> None:
    """Show agentd's events: every change to tasks, projects and agents.

    Events are the entries of the audit trail (see `agentctl audit`); an
    entry's action is the event type, and events about a task carry its id
    (column TASK; detail.task_id in JSON). You see the events you may see
    in the audit trail: your own and your agents', or all of them as an
    administrator.

    Without --after, shows the newest N matching events; with --after SEQ,
    the first N after SEQ. --follow then prints new ones as agentd announces
    them (AuditAppended) until interrupted; with --after, every matching
    event after SEQ. --json prints a list, or one object per line with
    --follow. Columns: SEQ, TIME, ACTOR, EVENT, TASK, AGENT, RESULT, DETAIL.
    """
    keep = _matcher(types)
    if follow:
        _events_follow(after, limit, keep, as_json)
        return
    if after is not None:
        entries = run(lambda c: _events_after(c, after, limit, keep))
    else:
        entries = run(lambda c: _events_tail(c, limit, keep))[0]
    if as_json:
        print_json(entries)
    else:
        print_table(("SEQ", "TIME", "ACTOR", "EVENT", "TASK", "AGENT", "RESULT", "DETAIL"),
                    [_event_cells(e) for e in entries], style_column=6)


def _events_follow(after: int | None, limit: int, keep: Callable[[dict[str, Any]], bool],
                   as_json: bool) -> None:
    tty = env().is_tty()

    def show(e: dict[str, Any]) -> None:
        click.echo(json.dumps(e, sort_keys=True, default=str) if as_json
                   else _event_line(e, tty))

    async def body(c: Any) -> None:
        start = after
        if start is None:
            backlog, start = await _events_tail(c, limit, keep)
            for e in backlog:
                show(e)
        async for e in c.follow_audit(start):
            if keep(e):
                show(e)

    with contextlib.suppress(KeyboardInterrupt):  # the normal end, as for journalctl -f
        run(body)

