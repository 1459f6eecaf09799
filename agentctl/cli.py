"""agentctl: manage agentd's agents, templates, tasks and audit trail from a shell.

A click command tree in the style of simonw/llm: noun groups (agent, template,
audit; project and task, in agentctl.tasks_cli) with one small verb set
(create, list, show, start, stop, rm, logs, ...), plus `status` and `events`.
Every command takes --json. On a terminal the output is rich tables and
colour; otherwise it is plain tab-separated text without headers, so
`agentctl agent list | cut -f1` works.

The commands never touch D-Bus: they call a client object with async methods
(agentctl.client.AgentdClient). The client comes from Env.connect, and Env is
the click context object, so tests pass `obj=Env(connect=lambda: fake)` to
CliRunner.invoke. Every failure reported by the client arrives as one
ClientError, printed as one line `agentctl: MESSAGE (Name)` with a sysexits.h
status: 77 for permission denied, 69 when agentd or the bus is unavailable,
1 otherwise; usage errors keep click's status 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import pwd
import re
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn, TypeVar

import click

from agentd import __version__

from .client import AgentdClient, ClientError

T = TypeVar("T")

EX_UNAVAILABLE = 69  # sysexits.h
EX_NOPERM = 77
EXIT_CODES = {"denied": EX_NOPERM, "unavailable": EX_UNAVAILABLE}
AUDIT_PAGE = 10000  # rows per call when reading the whole log (agentd's maximum)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# -- environment ------------------------------------------------------------------------
@dataclass
class Env:
    """What commands take from the outside world; tests replace every part.

    connect: returns a client (called inside the event loop, once per command).
    tty: force terminal (True) or script (False) output; None asks stdout.
    execvp: replaces the process (agent logs runs journalctl through it).
    """

    connect: Callable[[], Any] = AgentdClient.connect
    tty: bool | None = None
    execvp: Callable[[str, list[str]], Any] = os.execvp

    def is_tty(self) -> bool:
        return sys.stdout.isatty() if self.tty is None else self.tty


def env() -> Env:
    return click.get_current_context().ensure_object(Env)


def run(body: Callable[[Any], Awaitable[T]]) -> T:
    """Run BODY(client) to completion; one event loop and one connection per command."""
    e = env()

    async def main() -> T:
        return await body(e.connect())

    return asyncio.run(main())


def fail(message: str, name: str = "", code: int = 1) -> NoReturn:
    """Print the one-line error and exit with CODE; never a traceback."""
    click.echo(f"agentctl: {message}" + (f" ({name})" if name else ""), err=True)
    raise click.exceptions.Exit(code)


# -- click plumbing ---------------------------------------------------------------------
class AliasGroup(click.Group):
    """A group whose commands may have aliases (`agent remove` is `agent rm`)."""

    def __init__(self, *args: Any, aliases: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.aliases = aliases or {}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))


class RootGroup(AliasGroup):
    """The top-level group: turns ClientError into one line and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as e:
            fail(e.message, e.name, EXIT_CODES.get(e.kind, 1))


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print JSON instead of text, for programs.")


# -- parameter types --------------------------------------------------------------------
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?$")
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'512M' -> bytes, binary units as systemd reads MemoryMax= (also 512MiB, 1.5G)."""
    m = _SIZE_RE.match(text.strip().upper())
    if not m:
        raise ValueError(f"invalid size {text!r}: use e.g. 512M or 2G")
    try:
        value = int(Decimal(m.group(1)) * _SIZE_UNITS[m.group(2)])
    except InvalidOperation:
        raise ValueError(f"invalid size {text!r}: use e.g. 512M or 2G") from None
    if value <= 0:
        raise ValueError(f"invalid size {text!r}: must be more than zero")
    return value


class SizeType(click.ParamType):
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


class PercentType(click.ParamType):
    name = "PCT"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().removesuffix("%")
        if not text.isdigit() or int(text) <= 0:
            self.fail(f"invalid percentage {value!r}: use e.g. 50 or 150%", param, ctx)
        return int(text)


# -- formatting -------------------------------------------------------------------------
def user_name(uid: int | None) -> str | None:
    """The user name of UID, or None if this machine has no such user."""
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None


def fmt_user(uid: int | None) -> str:
    if uid is None:
        return "-"
    name = user_name(uid)
    return f"{name} ({uid})" if name else str(uid)


def fmt_mib(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / (1 << 20):.1f}".removesuffix(".0") + " MiB"


def fmt_time(ts: float | None) -> str:
    """Seconds since the epoch -> local ISO 8601 time; 0 and None mean never/unknown."""
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def fmt_duration(seconds: float) -> str:
    """3725 -> '1h 2min 5s', the way systemctl status writes spans."""
    s = max(0, int(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    if s or not parts:
        parts.append(f"{s}s")
    return " ".join(parts)


def fmt_detail(detail: Any) -> str:
    if isinstance(detail, dict):
        return " ".join(f"{k}={v}" for k, v in detail.items())
    return "" if detail is None else str(detail)


def plain(value: Any) -> str:
    """A cell of tab-separated output: tabs and newlines escaped so rows stay rows."""
    text = "-" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


STATE_STYLES = {
    "active": "green", "reloading": "green", "failed": "bold red",
    "activating": "yellow", "deactivating": "yellow", "inactive": "dim",
    "ok": "green", "denied": "bold red", "error": "bold red",
    # task statuses
    "pending": "", "in_progress": "yellow", "blocked": "bold yellow", "completed": "green",
    "cancelled": "dim", "dead_lettered": "bold red",
}


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]],
                style_column: int | None = None) -> None:
    """A rich table on a terminal; tab-separated lines without a header otherwise."""
    if not env().is_tty():
        for row in rows:
            click.echo("\t".join(plain(cell) for cell in row))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in columns:
        table.add_column(col, no_wrap=col not in ("DESCRIPTION", "DETAIL", "TITLE"))
    for row in rows:
        cells = [Text("-" if c is None else str(c)) for c in row]
        if style_column is not None:
            cells[style_column].stylize(STATE_STYLES.get(str(row[style_column]), ""))
        table.add_row(*cells)
    Console(highlight=False).print(table)


Field = tuple[str, str, Callable[[dict[str, Any]], str]]


def print_fields(info: dict[str, Any], fields: Sequence[Field],
                 styled: Iterable[str] = ("active_state",)) -> None:
    """`show` output: label/value pairs, then any key this version does not know.

    On a terminal, the values of the keys in STYLED are coloured as STATE_STYLES says."""
    styled = set(styled)
    known = {key for key, _label, _fmt in fields}
    rows = [(key, label, fmt(info)) for key, label, fmt in fields if key in info]
    rows += [(key, key, _raw(info[key])) for key in sorted(info) if key not in known]
    if not env().is_tty():
        for key, _label, value in rows:
            click.echo(f"{key}\t{plain(value)}")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for key, label, value in rows:
        text = Text(value)
        if key in styled:
            text.stylize(STATE_STYLES.get(str(info[key]), ""))
        grid.add_row(label + ":", text)
    Console(highlight=False).print(grid)


def _raw(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_raw(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _get(key: str, fmt: Callable[[Any], str] = _raw) -> Callable[[dict[str, Any]], str]:
    return lambda info: fmt(info[key])


def _active(info: dict[str, Any]) -> str:
    sub = info.get("sub_state")
    return f"{info['active_state']} ({sub})" if sub else str(info["active_state"])


AGENT_FIELDS: list[Field] = [
    ("name", "Name", _get("name")),
    ("state", "State", _get("state")),
    ("template", "Template", _get("template")),
    ("profile", "Profile", _get("profile")),
    ("uid", "UID", _get("uid")),
    ("gid", "GID", _get("gid")),
    ("owner_uid", "Owner", _get("owner_uid", fmt_user)),
    ("home", "Home", _get("home")),
    ("unit", "Unit", _get("unit")),
    ("active_state", "Active", _active),
    ("sub_state", "Sub-state", _get("sub_state")),
    ("online", "Online", _get("online")),
    ("main_pid", "Main PID", _get("main_pid", lambda pid: str(pid) if pid else "-")),
    ("created_at", "Created", _get("created_at", fmt_time)),
    ("last_seen", "Last seen", _get("last_seen", fmt_time)),
    ("memory_current", "Memory", _get("memory_current", fmt_mib)),
    ("memory_max", "Memory max", _get("memory_max", fmt_mib)),
    ("cpu_usage_nsec", "CPU time", _get("cpu_usage_nsec", lambda ns: f"{ns / 1e9:.3f} s")),
    ("cpu_quota", "CPU quota", _get("cpu_quota", lambda pct: f"{pct}%")),
    ("tasks_current", "Tasks", _get("tasks_current")),
    ("tasks_max", "Tasks max", _get("tasks_max")),
]

TEMPLATE_FIELDS: list[Field] = [
    ("name", "Name", _get("name")),
    ("description", "Description", _get("description")),
    ("profile", "Profile", _get("profile")),
    ("profile_description", "Profile description", _get("profile_description")),
    ("network", "Network", _get("network")),
    ("capabilities", "Capabilities", _get("capabilities")),
    ("tools", "Tools", _get("tools")),
    ("token_budget", "Token budget", _get("token_budget")),
    ("memory_max", "Memory max", _get("memory_max", fmt_mib)),
    ("cpu_quota", "CPU quota", _get("cpu_quota", lambda pct: f"{pct}%")),
    ("tasks_max", "Tasks max", _get("tasks_max")),
    ("source", "Source", _get("source")),
    ("system_prompt", "System prompt", _get("system_prompt")),
]


# -- the tree ---------------------------------------------------------------------------
@click.group(cls=RootGroup, context_settings=CONTEXT, epilog="""\b
Examples:
  agentctl template list
  agentctl agent create scout --template research --memory-max 1G --start
  agentctl agent list
  agentctl agent logs scout -f
  agentctl audit -f
  id=$(agentctl task submit "Summarise the logs" --needs summarise)
  agentctl task wait "$id" && agentctl task show "$id"
  agentctl events -f --type 'task.*'
\b
Exit status: 0 on success, 1 on failure, 2 on a usage error, 69 if agentd
is not running, 77 if agentd denied the request (`task wait` has its own:
see agentctl task wait --help). See agentctl COMMAND --help.""")
@click.version_option(__version__, "--version", prog_name="agentctl",
                      message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Manage AI agents run by agentd.

    Each agent is a Unix user with its own home under /home/agents, running in
    its own systemd unit (agent-NAME.service). agentctl talks to agentd over
    the D-Bus system bus (org.agentos.agentd1); agentd decides what the calling
    user may do: administrators manage every agent, other users the agents they
    created.

    Work reaches agents as tasks: submitted to agentd's queue (optionally in a
    project), assigned to an agent whose template has the capabilities the
    task needs, run in that agent's unit, and finished with a result and
    artifacts. Every change is an event in the audit trail.

    Output is a table on a terminal and tab-separated text in a pipe; --json
    gives every field, for programs.
    """
    ctx.ensure_object(Env)


# -- agent ------------------------------------------------------------------------------
@cli.group(cls=AliasGroup, aliases={"remove": "rm", "ls": "list"}, epilog="""\b
Examples:
  agentctl agent create scout --template research --start
  agentctl agent show scout
  agentctl agent rm scout""")
def agent() -> None:
    """Create, inspect, start, stop and remove agents."""


@agent.command("create", epilog="""\b
Examples:
  agentctl agent create scout --template research
  agentctl agent create builder -t ops --memory-max 2G --cpu-quota 150% --start
  agentctl agent create w1 -t writing --json | jq .uid""")
@click.argument("name")
@click.option("-t", "--template", required=True, metavar="TEMPLATE",
              help="Template to create the agent from (see: agentctl template list).")
@click.option("--memory-max", type=SizeType(), metavar="SIZE",
              help="Memory limit (MemoryMax=), e.g. 512M or 2G; binary units.")
@click.option("--cpu-quota", type=PercentType(), metavar="PCT",
              help="CPU limit in percent of one CPU (CPUQuota=), e.g. 50 or 200%.")
@click.option("--tasks-max", type=click.IntRange(min=1), metavar="N",
              help="Maximum number of processes and threads (TasksMax=).")
@click.option("--start", is_flag=True, help="Start the agent once it is created.")
@json_option
def agent_create(name: str, template: str, memory_max: int | None, cpu_quota: int | None,
                 tasks_max: int | None, start: bool, as_json: bool) -> None:
    """Create agent NAME from a template.

    agentd allocates a Unix user and group for the agent from its UID range,
    makes its home /home/agents/NAME and records the calling user as its
    owner. Limits not given come from the template; agentd refuses values
    outside its bounds. Creation is all or nothing. Prints NAME, or with --json
    the agent as `agent show --json` prints it.
    """
    limits = {key: value for key, value in (
        ("memory_max", memory_max), ("cpu_quota", cpu_quota), ("tasks_max", tasks_max),
    ) if value is not None}

    async def body(c: Any) -> dict[str, Any] | None:
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
        raise ClientError(f"{operation} of agent-{name}.service ended with job result "
                          f"'{result}'; see: agentctl agent logs {name}", "JobFailed")


no_block_option = click.option(
    "--no-block", is_flag=True,
    help="Return once systemd has queued the job instead of waiting for it to end.")


@agent.command("start", epilog="""\b
Examples:
  agentctl agent start scout && agentctl agent show scout
  agentctl agent start --no-block scout""")
@click.argument("name")
@no_block_option
@json_option
def agent_start(name: str, no_block: bool, as_json: bool) -> None:
    """Start agent NAME's unit (agent-NAME.service).

    Like systemctl start, waits until systemd's start job has ended (the
    runtime is exec'd as the agent) and fails if it did not succeed.
    Prints nothing on success; with --json, the agent after the start.
    """
    async def body(c: Any) -> dict[str, Any] | None:
        check_job(name, "start", await c.start_agent(name, wait=not no_block))
        return await c.describe_agent(name) if as_json else None

    info = run(body)
    if as_json:
        print_json(info)


@agent.command("stop", epilog="""\b
Example:
  agentctl agent stop scout""")
@click.argument("name")
@no_block_option
@json_option
def agent_stop(name: str, no_block: bool, as_json: bool) -> None:
    """Stop agent NAME's unit; the agent, its user and its home remain.

    Waits until the unit is down (unless --no-block). Prints nothing on
    success; with --json, the agent after the stop.
    """
    async def body(c: Any) -> dict[str, Any] | None:
        check_job(name, "stop", await c.stop_agent(name, wait=not no_block))
        return await c.describe_agent(name) if as_json else None

    info = run(body)
    if as_json:
        print_json(info)


@agent.command("rm", short_help="Remove an agent (alias: remove).", epilog="""\b
Examples:
  agentctl agent rm scout
  agentctl agent remove scout --keep-home""")
@click.argument("name")
@click.option("--keep-home", is_flag=True,
              help="Archive the home to /var/lib/agentd/archive (root only) before deleting it.")
@json_option
def agent_rm(name: str, keep_home: bool, as_json: bool) -> None:
    """Remove agent NAME: stop its unit, delete its user and group and its home.

    Alias: remove. Prints nothing on success.
    """
    run(lambda c: c.remove_agent(name, keep_home))
    if as_json:
        print_json({"name": name, "removed": True, "keep_home": keep_home})


@agent.command("list", short_help="List agents (alias: ls).", epilog="""\b
Examples:
  agentctl agent list
  agentctl agent list | awk -F'\\t' '$3 == "failed" {print $1}'
  agentctl agent list --json | jq -r '.[].name'""")
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
        [(a["name"], a["template"], a["state"], a["uid"],
          user_name(a["owner_uid"]) or a["owner_uid"]) for a in agents],
        style_column=2,
    )


@agent.command("show", epilog="""\b
Examples:
  agentctl agent show scout
  agentctl agent show scout --json | jq .memory_current""")
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


@agent.command("logs", short_help="Show an agent's journal and audit lines.", epilog="""\b
Examples:
  agentctl agent logs scout -n 50
  agentctl agent logs scout -f
\b
Reading the journal of system units needs membership of the systemd-journal
or adm group (or root); journalctl says so when lines are hidden.""")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines as they arrive.")
@click.option("-n", "--lines", type=click.IntRange(min=0), metavar="N",
              help="Show only the last N lines.")
@json_option
def agent_logs(name: str, follow: bool, lines: int | None, as_json: bool) -> None:
    """Show agent NAME's journal: its unit's output and agentd's audit events about it.

    Runs journalctl on the agent's unit (agent-NAME.service: what the agent
    wrote, and systemd's messages about the unit) together with the audit
    lines agentd logged with AGENT_NAME=NAME, interleaved by time, in
    short-iso format (--json: journalctl's JSON, one object per line).
    """
    run(lambda c: c.get_agent(name))  # a typed NoSuchAgent/PermissionDenied first
    unit = f"agent-{name}.service"
    argv = ["journalctl", "-o", "json" if as_json else "short-iso"]
    if lines is not None:
        argv += ["-n", str(lines)]
    if follow:
        argv.append("-f")
    # One disjunction, as `journalctl -u` builds (which cannot be OR-ed with more):
    # the unit's own lines, PID 1's about it, and agentd's (root) audit lines.
    argv += [f"_SYSTEMD_UNIT={unit}", "+", "_PID=1", f"UNIT={unit}",
             "+", "_UID=0", f"AGENT_NAME={name}"]
    try:
        env().execvp("journalctl", argv)
    except OSError as e:
        fail(f"cannot run journalctl: {e.strerror or e}", code=EX_UNAVAILABLE)


# -- template ---------------------------------------------------------------------------
@cli.group(cls=AliasGroup, aliases={"ls": "list"}, epilog="""\b
Examples:
  agentctl template list
  agentctl template show research""")
def template() -> None:
    """Inspect the templates agents are created from.

    Vendor templates live in /usr/share/agentd/templates; a file of the same
    name in /etc/agentd/templates replaces one.
    """


@template.command("list", short_help="List templates (alias: ls).", epilog="""\b
Example:
  agentctl template list --json | jq -r '.[].name'""")
@json_option
def template_list(as_json: bool) -> None:
    """List the templates an agent can be created from.

    Columns: NAME, PROFILE (the sandbox profile), CAPABILITIES and
    DESCRIPTION.
    """
    templates = sorted(run(lambda c: c.list_templates()), key=lambda t: t["name"])
    if as_json:
        print_json(templates)
        return
    print_table(
        ("NAME", "PROFILE", "CAPABILITIES", "DESCRIPTION"),
        [(t["name"], t["profile"], ",".join(t["capabilities"]), t["description"])
         for t in templates],
    )


@template.command("show", epilog="""\b
Example:
  agentctl template show research""")
@click.argument("name")
@json_option
def template_show(name: str, as_json: bool) -> None:
    """Show template NAME: capabilities, tools, sandbox profile, limits, prompt."""
    info = run(lambda c: c.describe_template(name))
    if as_json:
        print_json(info)
    else:
        print_fields(info, TEMPLATE_FIELDS)


# -- audit ------------------------------------------------------------------------------
@cli.group(cls=AliasGroup, invoke_without_command=True, subcommand_metavar="[verify]",
           epilog="""\b
Examples:
  agentctl audit                 the last 50 entries
  agentctl audit -n 500 --json   the last 500, as a JSON list
  agentctl audit --after 1200    entries after number 1200
  agentctl audit -f              the last 50, then new ones as they happen
  agentctl audit verify          check the hash chain (administrators)""")
@click.option("--after", type=click.IntRange(min=0), metavar="SEQ",
              help="Show entries numbered after SEQ, oldest first.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=50, show_default=True,
              metavar="N", help="Show at most N entries (the newest N without --after).")
@click.option("-f", "--follow", is_flag=True,
              help="After the listing, print new entries as agentd appends them.")
@json_option
@click.pass_context
def audit(ctx: click.Context, after: int | None, limit: int, follow: bool,
          as_json: bool) -> None:
    """Show agentd's audit trail.

    Every state change and every refusal is an entry: number (SEQ), time,
    actor (the calling user), action, agent, result and details. Each entry
    carries the hash of the one before it, so editing or deleting one breaks
    the chain (see `audit verify`). Administrators see every entry; other
    users see what they did and what was done to the agents they own.

    Without --after, shows the newest N entries; with --after SEQ, the first
    N entries after SEQ. --follow then keeps printing new entries, announced
    by agentd's AuditAppended signal, until interrupted (with --after, it
    prints every entry after SEQ). --json prints a list, or one JSON object
    per line with --follow.
    """
    if ctx.invoked_subcommand is not None:
        return
    if follow:
        _audit_follow(after, limit, as_json)
        return
    if after is not None:
        entries = run(lambda c: _audit_after(c, after, limit))
    else:
        entries = run(lambda c: _audit_tail(c, limit))
    if as_json:
        print_json(entries)
    else:
        print_table(("SEQ", "TIME", "ACTOR", "ACTION", "AGENT", "RESULT", "DETAIL"),
                    [_audit_cells(e) for e in entries], style_column=5)


async def _audit_after(c: Any, after: int, limit: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    while len(entries) < limit:
        want = min(limit - len(entries), AUDIT_PAGE)
        batch = await c.list_audit_entries(after, want)
        entries += batch
        if len(batch) < want:
            break
        after = batch[-1]["seq"]
    return entries[:limit]


async def _audit_tail(c: Any, limit: int) -> list[dict[str, Any]]:
    """The newest LIMIT entries: start LIMIT rows before AuditHead; if the caller may
    see fewer rows than that there (a user sees only their own), read from the start."""
    start = max(0, await c.audit_head() - limit)
    if start:
        recent = await _audit_after(c, start, limit)
        if len(recent) >= limit:
            return recent
    newest: deque[dict[str, Any]] = deque(maxlen=limit)
    after = 0
    while True:
        batch = await c.list_audit_entries(after, AUDIT_PAGE)
        newest.extend(batch)
        if len(batch) < AUDIT_PAGE:
            return list(newest)
        after = batch[-1]["seq"]


def _audit_cells(e: dict[str, Any]) -> tuple[Any, ...]:
    return (e["seq"], fmt_time(e["ts"]), user_name(e["actor_uid"]) or e["actor_uid"],
            e["action"], e["agent"] or "-", e["result"], fmt_detail(e["detail"]))


def _audit_line(e: dict[str, Any], tty: bool) -> str:
    cells = _audit_cells(e)
    if not tty:
        return "\t".join(plain(c) for c in cells)
    seq, ts, actor, action, agent_name, result, detail = (str(c) for c in cells)
    colour = {"ok": "green"}.get(result, "red")
    return (f"{seq:>6}  {ts}  {actor:<10} {action:<16} {agent_name:<16} "
            f"{click.style(f'{result:<7}', fg=colour)} {detail}").rstrip()


def _audit_follow(after: int | None, limit: int, as_json: bool) -> None:
    tty = env().is_tty()

    def show(e: dict[str, Any]) -> None:
        click.echo(json.dumps(e, sort_keys=True) if as_json else _audit_line(e, tty))

    async def body(c: Any) -> None:
        start = after
        if start is None:
            backlog = await _audit_tail(c, limit)
            for e in backlog:
                show(e)
            start = backlog[-1]["seq"] if backlog else 0
        async for e in c.follow_audit(start):
            show(e)

    with contextlib.suppress(KeyboardInterrupt):  # the normal end, as for journalctl -f
        run(body)


@audit.command("verify", short_help="Check the audit trail's hash chain.", epilog="""\b
Example:
  agentctl audit verify || echo "audit log tampered with" >&2""")
@json_option
def audit_verify(as_json: bool) -> None:
    """Check the audit trail's hash chain from the first entry to the head.

    Prints the verdict and how many entries were checked; exits 1 if the
    chain is broken (an entry edited, deleted or reordered), 77 if you are
    not an administrator.
    """
    verdict = run(lambda c: c.verify_audit())
    if as_json:
        print_json(verdict)
    elif verdict["ok"]:
        click.echo(f"audit log intact: {verdict['checked']} entries checked")
    else:
        click.echo(f"audit log BROKEN: {verdict['message']} "
                   f"({verdict['checked']} entries checked)")
    if not verdict["ok"]:
        raise click.exceptions.Exit(1)


# -- status -----------------------------------------------------------------------------
@cli.command("status", short_help="Show agentd's version, uptime, counts and config.",
             epilog="""\b
Examples:
  agentctl status
  agentctl status --json | jq -r .config.uid_min""")
@json_option
def status(as_json: bool) -> None:
    """Show agentd's version, uptime, agent counts and the configuration in force.

    Agents counts every registered agent; online those whose runtime has
    registered with agentd and keeps sending heartbeats. The configuration is
    /etc/agentd/agentd.toml merged over the defaults, as agentd read it.
    """
    st = run(lambda c: c.status())
    started = st["start_timestamp"] / 1e6 if st["start_timestamp"] else None
    uptime = time.time() - started if started else None
    if as_json:
        print_json(dict(st, uptime_sec=None if uptime is None else round(uptime, 3)))
        return
    rows: list[tuple[str, str, str]] = [
        ("version", "Version", st["version"]),
        ("started", "Started", fmt_time(started)),
        ("uptime_sec", "Uptime", fmt_duration(uptime) if uptime is not None else "-"),
        ("agents", "Agents", str(st["n_agents"])),
        ("online", "Online", str(st["n_online"])),
    ]
    if not env().is_tty():
        rows[2] = ("uptime_sec", "Uptime", str(int(uptime)) if uptime is not None else "-")
        for key, _label, value in rows:
            click.echo(f"{key}\t{plain(value)}")
        for key, value in sorted(st["config"].items()):
            click.echo(f"config.{key}\t{plain(value)}")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for _key, label, value in rows:
        grid.add_row(label + ":", Text(value))
    grid.add_row("Config:", "")
    for key, value in sorted(st["config"].items()):
        grid.add_row(Text(f"  {key}"), Text(value))
    Console(highlight=False).print(grid)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of /usr/bin/agentctl; returns the exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="agentctl",
                 obj=Env())
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


# The task queue's commands (project, task, events) and the model's (model, chat,
# usage, quota) register themselves on `cli`.
from . import model_cli, tasks_cli  # noqa: E402, F401
