"""`agentctl agent`: create, inspect, start, stop, remove agents and read their logs.

An agent is a Unix user in its own unit (agent-NAME.service); these commands
ask agentd to make and manage them (CreateAgent, StartAgent, ...). Starting
and stopping wait for systemd's job like systemctl does; `agent logs` reads
the agent's journal through agentd (its owner cannot read it with journalctl),
or, with --journalctl, execs journalctl.
"""

from __future__ import annotations

from typing import Any

import click

from .. import journal_view
from ..app import EX_UNAVAILABLE, AliasGroup, env, fail, json_option, run
from ..client import AgentdClient, ClientError
from ..output import (
    Field,
    fmt_bytes,
    fmt_list_time,
    fmt_mib,
    fmt_percent,
    fmt_time,
    fmt_user,
    getter,
    print_fields,
    print_json,
    print_table,
    user_cell,
    user_name,
)
from ..params import PercentType, SizeType


def _active(info: dict[str, Any]) -> str:
    sub = info.get("sub_state")
    return f"{info['active_state']} ({sub})" if sub else str(info["active_state"])


AGENT_FIELDS: list[Field] = [
    ("name", "Name", getter("name")),
    ("state", "State", getter("state")),
    ("template", "Template", getter("template")),
    ("profile", "Profile", getter("profile")),
    ("uid", "UID", getter("uid")),
    ("gid", "GID", getter("gid")),
    ("owner_uid", "Owner", getter("owner_uid", fmt_user)),
    ("home", "Home", getter("home")),
    ("unit", "Unit", getter("unit")),
    ("active_state", "Active", _active),
    ("sub_state", "Sub-state", getter("sub_state")),
    ("online", "Online", getter("online")),
    ("main_pid", "Main PID", getter("main_pid", lambda pid: str(pid) if pid else "-")),
    ("created_at", "Created", getter("created_at", fmt_time)),
    ("last_seen", "Last seen", getter("last_seen", fmt_time)),
    ("memory_current", "Memory", getter("memory_current", fmt_mib)),
    ("memory_max", "Memory max", getter("memory_max", fmt_mib)),
    ("cpu_usage_nsec", "CPU time", getter("cpu_usage_nsec", lambda ns: f"{ns / 1e9:.3f} s")),
    ("cpu_quota", "CPU quota", getter("cpu_quota", fmt_percent)),
    ("tasks_current", "Tasks", getter("tasks_current")),
    ("tasks_max", "Tasks max", getter("tasks_max")),
    ("removal_error", "Removal error", getter("removal_error")),
]


@click.group(
    cls=AliasGroup,
    aliases={"remove": "rm", "ls": "list"},
    epilog="""\b
Examples:
  agentctl agent create scout --template research --start
  agentctl agent show scout
  agentctl agent rm scout""",
)
def agent() -> None:
    """Create, inspect, start, stop and remove agents."""


@agent.command(
    "create",
    epilog="""\b
Examples:
  agentctl agent create scout --template research
  agentctl agent create builder -t ops --memory-max 2G --cpu-quota 150% --start
  agentctl agent create w1 -t writing --json | jq .uid""",
)
@click.argument("name")
@click.option(
    "-t",
    "--template",
    required=True,
    metavar="TEMPLATE",
    help="Template to create the agent from (see: agentctl template list).",
)
@click.option(
    "--memory-max",
    type=SizeType(),
    metavar="SIZE",
    help="Memory limit (MemoryMax=), e.g. 512M or 2G; binary units.",
)
@click.option(
    "--cpu-quota",
    type=PercentType(),
    metavar="PCT",
    help="CPU limit in percent of one CPU (CPUQuota=), e.g. 50 or 200%.",
)
@click.option(
    "--tasks-max",
    type=click.IntRange(min=1),
    metavar="N",
    help="Maximum number of processes and threads (TasksMax=).",
)
@click.option("--start", is_flag=True, help="Start the agent once it is created.")
@json_option
def agent_create(
    name: str,
    template: str,
    memory_max: int | None,
    cpu_quota: int | None,
    tasks_max: int | None,
    start: bool,
    as_json: bool,
) -> None:
    """Create agent NAME from a template.

    agentd allocates a Unix user and group for the agent from its UID range,
    makes its home /home/agents/NAME and records the calling user as its
    owner. Limits not given come from the template; agentd refuses values
    outside its bounds. Creation is all or nothing. Prints NAME, or with --json
    the agent as `agent show --json` prints it.
    """
    limits = {
        key: value
        for key, value in (
            ("memory_max", memory_max),
            ("cpu_quota", cpu_quota),
            ("tasks_max", tasks_max),
        )
        if value is not None
    }

    async def body(c: AgentdClient) -> dict[str, Any] | None:
        await c.create_agent(name, template, limits)
        if start:
            check_job(name, "start", await c.start_agent(name))
        return await c.describe_agent(name) if as_json else None

    info = run(body)
    if as_json:
        print_json(info)
    else:
        click.echo(name)


def check_job(name: str, operation: str, result: str) -> None:
    """Fail like systemctl does when the unit's job did not end well."""
    if result not in ("done", "queued"):
        raise ClientError(
            f"{operation} of agent-{name}.service ended with job result "
            f"'{result}'; see: agentctl agent logs {name}",
            "JobFailed",
        )


def _job(name: str, operation: str, no_block: bool, as_json: bool) -> None:
    """Start or stop (OPERATION) NAME's unit and check the job; --json: the agent after."""

    async def body(c: AgentdClient) -> dict[str, Any] | None:
        method = c.start_agent if operation == "start" else c.stop_agent
        check_job(name, operation, await method(name, wait=not no_block))
        return await c.describe_agent(name) if as_json else None

    info = run(body)
    if as_json:
        print_json(info)


no_block_option = click.option(
    "--no-block",
    is_flag=True,
    help="Return once systemd has queued the job instead of waiting for it to end.",
)


@agent.command(
    "start",
    epilog="""\b
Examples:
  agentctl agent start scout && agentctl agent show scout
  agentctl agent start --no-block scout""",
)
@click.argument("name")
@no_block_option
@json_option
def agent_start(name: str, no_block: bool, as_json: bool) -> None:
    """Start agent NAME's unit (agent-NAME.service).

    Like systemctl start, waits until systemd's start job has ended (the
    runtime is exec'd as the agent) and fails if it did not succeed.
    Prints nothing on success; with --json, the agent after the start.
    """
    _job(name, "start", no_block, as_json)


@agent.command(
    "stop",
    epilog="""\b
Example:
  agentctl agent stop scout""",
)
@click.argument("name")
@no_block_option
@json_option
def agent_stop(name: str, no_block: bool, as_json: bool) -> None:
    """Stop agent NAME's unit; the agent, its user and its home remain.

    Waits until the unit is down (unless --no-block). Prints nothing on
    success; with --json, the agent after the stop.
    """
    _job(name, "stop", no_block, as_json)


PS_COLUMNS = ("PID", "PPID", "USER", "STATE", "THREADS", "RSS", "CPU", "STARTED", "COMMAND")


@agent.command(
    "ps",
    short_help="List the processes in an agent's unit.",
    epilog="""\b
Examples:
  agentctl agent ps scout
  agentctl agent ps scout --json | jq '.[] | select(.rss_bytes > 100e6)'""",
)
@click.argument("name")
@json_option
def agent_ps(name: str, as_json: bool) -> None:
    """List the processes in agent NAME's unit now, as ps would: each one's
    PID, parent, user (the agent's, for every process it runs), state, threads,
    resident memory, CPU time (user and system, seconds), start and command.

    agentd reads them from the unit's cgroup (systemd's ControlGroup) and /proc,
    so a process the agent started in the background is listed and one outside
    the unit never is. Nothing is listed when the agent is not running. For the
    agent's owner and administrators. --json gives rss_bytes, cpu_seconds and
    started_at (Unix time) as numbers.
    """
    found = run(lambda c: c.list_processes(name))
    if as_json:
        print_json(found)
        return
    print_table(
        PS_COLUMNS,
        (
            (
                p["pid"],
                p["ppid"],
                user_name(p["uid"]) or p["uid"],
                p["state"],
                p["threads"],
                fmt_bytes(p["rss_bytes"]),
                f"{p['cpu_seconds']:.2f}",
                fmt_list_time(p["started_at"]),
                p["command"],
            )
            for p in found
        ),
    )


@agent.command(
    "rm",
    short_help="Remove an agent (alias: remove).",
    epilog="""\b
Examples:
  agentctl agent rm scout
  agentctl agent remove scout --keep-home
  agentctl agent rm --force scout    # an administrator, after a failed removal""",
)
@click.argument("name")
@click.option(
    "--keep-home",
    is_flag=True,
    help="Archive the home to /var/lib/agentd/archive (root only) before deleting it.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Administrators: finish a removal that failed or hangs, without an archive.",
)
@json_option
def agent_rm(name: str, keep_home: bool, force: bool, as_json: bool) -> None:
    """Remove agent NAME: stop its unit, delete its user and group and its home.

    Alias: remove. Prints nothing on success. A removal that fails (a home
    too big or too deep to archive, one that cannot be deleted in time)
    leaves the agent listed as `removing`, with the reason in `agent show`;
    run `agent rm` again to retry (without --keep-home to give up the
    archive). --force, for administrators, cancels a removal under way,
    skips the archive, and sets aside a home it cannot delete
    (/home/agents/.removed, root only): the agent is gone at the end.
    """
    if force and keep_home:
        raise click.UsageError("--force does not archive: it cannot be used with --keep-home")
    if force:
        run(lambda c: c.force_remove_agent(name))
    else:
        run(lambda c: c.remove_agent(name, keep_home))
    if as_json:
        print_json({"name": name, "removed": True, "keep_home": keep_home, "force": force})


@agent.command(
    "list",
    short_help="List agents (alias: ls).",
    epilog="""\b
Examples:
  agentctl agent list
  agentctl agent list | awk -F'\\t' '$3 == "failed" {print $1}'
  agentctl agent list --json | jq -r '.[].name'""",
)
@json_option
def agent_list(as_json: bool) -> None:
    """List the agents you may see: all of them for an administrator, else your own.

    Columns: NAME, TEMPLATE, STATE (the unit's ActiveState), UID and OWNER
    (a user name when this machine knows it). Without a terminal, one
    tab-separated line per agent, no header.
    """
    agents = run(lambda c: c.list_agents())
    agents = sorted(agents, key=lambda a: a["name"])
    if as_json:
        print_json([dict(a, owner=user_name(a["owner_uid"])) for a in agents])
        return
    print_table(
        ("NAME", "TEMPLATE", "STATE", "UID", "OWNER"),
        [
            (a["name"], a["template"], a["state"], a["uid"], user_cell(a["owner_uid"]))
            for a in agents
        ],
        style_column=2,
    )


@agent.command(
    "show",
    epilog="""\b
Examples:
  agentctl agent show scout
  agentctl agent show scout --json | jq .memory_current""",
)
@click.argument("name")
@json_option
def agent_show(name: str, as_json: bool) -> None:
    """Show everything agentd knows about agent NAME.

    Identity (UID, GID, owner, home), its unit's state and main PID, when it
    was created and last heard from, and its limits against current use:
    sizes in MiB, CPU time in seconds, times in local ISO 8601. Fields agentd
    could not learn (e.g. usage of a stopped unit) are left out. --json prints
    the raw values: bytes, nanoseconds, seconds since the epoch.
    """
    info = run(lambda c: c.describe_agent(name))
    if as_json:
        print_json(info)
    else:
        print_fields(info, AGENT_FIELDS)


@agent.command(
    "logs",
    short_help="Show an agent's journal and audit lines.",
    epilog="""\b
Examples:
  agentctl agent logs scout -n 50
  agentctl agent logs scout -f
  agentctl agent logs scout --journalctl --since today
\b
agentd reads the journal for you: an agent's lines are its own UID's and
PID 1's, which a person reads with journalctl only as a member of the
systemd-journal or adm group (the whole system's journal). --journalctl runs
journalctl itself: every field and the whole history, for those who may.""",
)
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines as they arrive.")
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=1, max=journal_view.BATCH),
    metavar="N",
    help="Show the last N lines (default 50, at most 500).",
)
@click.option(
    "--journalctl",
    "use_journalctl",
    is_flag=True,
    help="Exec journalctl instead (needs systemd-journal or adm membership, or root).",
)
@json_option
def agent_logs(
    name: str, follow: bool, lines: int | None, use_journalctl: bool, as_json: bool
) -> None:
    """Show agent NAME's journal: its unit's output and agentd's audit events about it.

    The lines are its unit's (agent-NAME.service: what the agent wrote, and
    systemd's messages about the unit) and those root wrote about it
    (AGENT_NAME=NAME: agentd's audit, its network unit), interleaved by time,
    as TIME IDENTIFIER[PID]: MESSAGE (--json: one object per line, with at,
    priority, identifier, pid and message). You must own the agent or be an
    administrator.
    """
    if not use_journalctl:
        run(lambda c: journal_view.show(c, name, lines or 50, follow, as_json))
        return
    run(lambda c: c.get_agent(name))  # a typed NoSuchAgent/PermissionDenied first
    unit = f"agent-{name}.service"
    argv = ["journalctl", "-o", "json" if as_json else "short-iso"]
    if lines is not None:
        argv += ["-n", str(lines)]
    if follow:
        argv.append("-f")
    # One disjunction, as `journalctl -u` builds (which cannot be OR-ed with more):
    # the unit's own lines, PID 1's about it, and agentd's (root) audit lines.
    argv += [
        f"_SYSTEMD_UNIT={unit}",
        "+",
        "_PID=1",
        f"UNIT={unit}",
        "+",
        "_UID=0",
        f"AGENT_NAME={name}",
    ]
    try:
        env().execvp("journalctl", argv)
    except OSError as e:
        fail(f"cannot run journalctl: {e.strerror or e}", code=EX_UNAVAILABLE)
