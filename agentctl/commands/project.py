"""`agentctl project`: create, list, show and remove projects (groups of tasks).

A project belongs to the user who created it; `task submit --project` files
tasks under it and `project show` counts them by status.
"""

from __future__ import annotations

from typing import Any

import click

from agentd.tasks.model import STATUSES

from ..app import AliasGroup, json_option, run
from ..client import AgentdClient
from ..output import (
    Field,
    fmt_time,
    fmt_user,
    getter,
    print_fields,
    print_json,
    print_table,
    user_cell,
    user_name,
)

PROJECT_FIELDS: list[Field] = [
    ("name", "Name", getter("name")),
    ("description", "Description", getter("description")),
    ("owner_uid", "Owner", getter("owner_uid", fmt_user)),
    ("created_at", "Created", getter("created_at", fmt_time)),
    ("tasks", "Tasks", getter("tasks")),
]


def _task_counts(info: dict[str, Any]) -> str:
    """5 (completed 3, pending 2) from DescribeProject's tasks and tasks_STATUS keys."""
    counts = [
        f"{status} {info[f'tasks_{status}']}" for status in STATUSES if info.get(f"tasks_{status}")
    ]
    return f"{info['tasks']}" + (f" ({', '.join(counts)})" if counts else "")


@click.group(
    cls=AliasGroup,
    aliases={"ls": "list", "remove": "rm"},
    epilog="""\b
Examples:
  agentctl project create website --description "The public site"
  agentctl task submit "Check the links" --project website
  agentctl project show website
  agentctl project rm website""",
)
def project() -> None:
    """Create, list, inspect and remove projects.

    A project groups tasks (`task submit --project P`, `task list --project
    P`). Projects belong to the user who created them; administrators see
    every project.
    """


@project.command(
    "create",
    epilog="""\b
Examples:
  agentctl project create website
  agentctl project create website -d "The public site" --json""",
)
@click.argument("name")
@click.option("-d", "--description", default="", metavar="TEXT", help="What the project is about.")
@json_option
def project_create(name: str, description: str, as_json: bool) -> None:
    """Create project NAME, owned by you.

    Prints NAME, or with --json the project as `project show --json` prints it.
    """

    async def body(c: AgentdClient) -> dict[str, Any] | None:
        await c.create_project(name, description)
        return await c.describe_project(name) if as_json else None

    info = run(body)
    if as_json:
        print_json(info)
    else:
        click.echo(name)


@project.command(
    "list",
    short_help="List projects (alias: ls).",
    epilog="""\b
Examples:
  agentctl project list
  agentctl project list --json | jq -r '.[].name'""",
)
@json_option
def project_list(as_json: bool) -> None:
    """List the projects you may see: all of them for an administrator, else your own.

    Columns: NAME, OWNER, TASKS (how many tasks it holds) and DESCRIPTION.
    """
    projects = sorted(run(lambda c: c.list_projects()), key=lambda p: p["name"])
    if as_json:
        print_json([dict(p, owner=user_name(p["owner_uid"])) for p in projects])
        return
    print_table(
        ("NAME", "OWNER", "TASKS", "DESCRIPTION"),
        [(p["name"], user_cell(p["owner_uid"]), p["tasks"], p["description"]) for p in projects],
    )


@project.command(
    "show",
    epilog="""\b
Examples:
  agentctl project show website
  agentctl task list --project website""",
)
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
    shown = {
        k: v
        for k, v in info.items()
        if not (k.startswith("tasks_") and k.removeprefix("tasks_") in STATUSES)
    }
    if "tasks" in info:
        shown["tasks"] = _task_counts(info)
    print_fields(shown, PROJECT_FIELDS)


@project.command(
    "rm",
    short_help="Remove a project (alias: remove).",
    epilog="""\b
Example:
  agentctl project rm website""",
)
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
