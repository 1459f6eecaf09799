"""`agentctl team`: agents that work together, as a Unix group and a shared directory.

A thin client of agentd's org.agentos.agentd1.Teams interface (issue 15):
agentd authorizes (a team is its creator's; administrators manage all),
makes the group and directory, and applies membership to each member's unit
at its next start (or at once, restarting it, with --restart). `team show`
says, per member, whether its running unit carries the team yet.
`task submit --team` routes a task to the team's members (agentctl.commands.task).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import click

from ..app import AliasGroup, env, json_option, run
from ..client import AgentdClient
from ..output import (
    Field,
    fmt_time,
    fmt_user,
    getter,
    print_fields,
    print_json,
    print_section,
    print_table,
    user_cell,
)

RESTART_HELP = "Restart the members whose units run now, so the change applies at once."
# GetTeam's "applied" per member: true, false (joined or left since its unit
# started: applied at its next start) or null (not running)
APPLIED = {True: "running, applied", False: "running, applies at next start", None: "not running"}

FIELDS: tuple[Field, ...] = (
    ("name", "Name", getter("name")),
    ("description", "Description", getter("description")),
    ("owner_uid", "Owner", getter("owner_uid", fmt_user)),
    ("directory", "Directory", getter("directory")),
    ("group", "Group", getter("group")),
    ("gid", "GID", getter("gid")),
    ("created_at", "Created", getter("created_at", fmt_time)),
    ("open_tasks", "Open tasks", getter("open_tasks")),
)


@click.group(
    cls=AliasGroup,
    aliases={"ls": "list"},
    epilog="""\b
Examples:
  agentctl team create research -d "Reads and summarises together"
  agentctl team add research scout writer --restart
  agentctl team show research
  agentctl task submit "Survey the field" --team research
  agentctl team remove research writer
  agentctl team rm research --restart""",
)
def team() -> None:
    """Make teams of agents that share a directory and may write to each other.

    A team is a Unix group (agentd-team-NAME) and a directory
    (/home/agents/.teams/NAME, group-writable by the team alone) that agentd
    binds into every member's unit when it starts: the one place members'
    files meet. Members may send each other messages (see `agentctl msg`),
    and `task submit --team NAME` gives a task only to a capable member.

    A team belongs to the user who made it; its members are that user's
    agents (an administrator may add anyone's). A running member's unit is
    never changed underneath it: joining or leaving applies at the member's
    next start, or at once with --restart, which restarts the running
    members named. `team show` tells which members carry the team already.
    """


def _then_show(call: Callable[[AgentdClient], Awaitable[Any]], name: str, as_json: bool) -> None:
    """Make a change; with --json, print the team after it."""

    async def body(c: AgentdClient) -> dict[str, Any] | None:
        await call(c)
        return await c.get_team(name) if as_json else None

    info = run(body)
    if as_json:
        print_json(info)


@team.command(
    "create",
    short_help="Create a team, owned by you.",
    epilog="""\b
Examples:
  agentctl team create research
  agentctl team create ops -d "Keeps the build green" --json""",
)
@click.argument("name")
@click.option("-d", "--description", default="", metavar="TEXT", help="What the team is for.")
@json_option
def team_create(name: str, description: str, as_json: bool) -> None:
    """Create team NAME, owned by you, without members.

    NAME: lowercase letters, digits and single hyphens, starting with a
    letter, at most 20 characters. agentd makes the group agentd-team-NAME
    and the directory /home/agents/.teams/NAME, and refuses (AlreadyExists)
    if the team, the group or the directory exists already.

    Prints NAME, or with --json the team as `team show --json` prints it.
    """
    _then_show(lambda c: c.create_team(name, description), name, as_json)
    if not as_json:
        click.echo(name)


@team.command(
    "add",
    short_help="Add agents to a team.",
    epilog="""\b
Examples:
  agentctl team add research scout writer
  agentctl team add research scout --restart""",
)
@click.argument("name")
@click.argument("agents", metavar="AGENT...", nargs=-1, required=True)
@click.option("--restart", is_flag=True, help=RESTART_HELP)
@json_option
def team_add(name: str, agents: tuple[str, ...], restart: bool, as_json: bool) -> None:
    """Add the AGENTs to team NAME.

    Each joins at its next start: its unit then carries the team's group and
    directory. With --restart, agentd restarts those running now, so they
    join at once.
    Prints nothing on success; with --json, the team after the change.
    """
    _then_show(lambda c: c.add_members(name, agents, restart), name, as_json)


@team.command(
    "remove",
    short_help="Take agents out of a team (the team stays).",
    epilog="""\b
Examples:
  agentctl team remove research writer
  agentctl team remove research writer --restart""",
)
@click.argument("name")
@click.argument("agents", metavar="AGENT...", nargs=-1, required=True)
@click.option("--restart", is_flag=True, help=RESTART_HELP)
@json_option
def team_remove(name: str, agents: tuple[str, ...], restart: bool, as_json: bool) -> None:
    """Take the AGENTs out of team NAME (the team stays: `team rm` removes it).

    Each leaves at its next start; until then its running unit still reaches
    the team's directory. With --restart, agentd restarts those running now.
    Prints nothing on success; with --json, the team after the change.
    """
    _then_show(lambda c: c.remove_members(name, agents, restart), name, as_json)


@team.command(
    "list",
    short_help="List teams (alias: ls).",
    epilog="""\b
Examples:
  agentctl team list
  agentctl team list --json | jq -r '.[] | select(.open_tasks > 0) | .name'""",
)
@json_option
def team_list(as_json: bool) -> None:
    """List your teams (an administrator's: every team).

    Columns: NAME, OWNER, MEMBERS (comma-separated), TASKS (open tasks routed
    to the team) and DESCRIPTION.
    """
    teams = sorted(run(lambda c: c.list_teams()), key=lambda t: t["name"])
    if as_json:
        print_json(teams)
        return
    print_table(
        ("NAME", "OWNER", "MEMBERS", "TASKS", "DESCRIPTION"),
        [
            (
                t["name"],
                user_cell(t["owner_uid"]),
                ",".join(t.get("members") or []) or "-",
                t.get("open_tasks", 0),
                t.get("description") or "",
            )
            for t in teams
        ],
    )
    if not teams and env().is_tty():
        click.echo("No teams. `agentctl team create NAME` makes one.", err=True)


@team.command(
    "show",
    short_help="Show a team and whether it applies to each member.",
    epilog="""\b
Examples:
  agentctl team show research
  agentctl team show research --json | jq '.applied'""",
)
@click.argument("name")
@json_option
def team_show(name: str, as_json: bool) -> None:
    """Show team NAME: its directory, group and GID, owner, open tasks, and
    each member with whether the team applies to it.

    A member is "running, applied" (its unit carries the team's group and
    directory), "running, applies at next start" (it joined since its unit
    started: `team add NAME AGENT --restart` applies it now) or "not running"
    (it joins when it starts). Without a terminal, the fields as
    tab-separated key/value lines, then one line `member AGENT STATE` per
    member. --json prints "applied" as true, false or null (not running).
    """
    info: dict[str, Any] = run(lambda c: c.get_team(name))
    if as_json:
        print_json(info)
        return
    applied = info.get("applied") or {}
    print_fields({k: v for k, v in info.items() if k not in ("members", "applied")}, FIELDS)
    print_section(
        "Members",
        "member",
        ("AGENT", "STATE"),
        [(m, APPLIED.get(applied.get(m), "-")) for m in info.get("members") or []],
    )


@team.command(
    "rm",
    short_help="Remove a team; prints its archive's path.",
    epilog="""\b
Examples:
  agentctl team rm research
  agentctl team rm research --restart""",
)
@click.argument("name")
@click.option(
    "--restart", is_flag=True, help="Restart the running members without the team, then remove it."
)
@json_option
def team_rm(name: str, restart: bool, as_json: bool) -> None:
    """Remove team NAME: its members leave it, its directory is archived and
    deleted, and its group deleted.

    agentd refuses (Busy) while the team has open tasks, or running members
    unless --restart, which restarts them without the team. The directory's
    files are kept in an archive readable by root alone, under
    /var/lib/agentd/archive; its path is printed (nothing if the directory
    was empty). With --json: {"name", "removed", "archive"} (archive null if
    there is none).
    """
    archive = run(lambda c: c.remove_team(name, restart))
    if as_json:
        print_json({"name": name, "removed": True, "archive": archive or None})
    elif archive:
        click.echo(archive)
