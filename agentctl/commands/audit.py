"""`agentctl audit` and `agentctl events`: two views of agentd's one audit stream.

Every change and refusal is a row of agentd's hash-chained audit trail; an
event is such a row, its action the event type. So both commands read the
stream the same way, here, through the client's list_events (ListEvents:
agentd filters by type) and follow_events (AuditAppended): the newest N rows
(read_tail), the first N after a sequence number (read_after), or those and
then new ones as they come (follow). They differ only in what they show of
a row (AUDIT_VIEW, EVENT_VIEW) and in `events --type`. `audit verify` checks
the chain.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from ..app import AliasGroup, env, json_option, run
from ..client import AgentdClient
from ..output import (
    dash,
    fmt_detail,
    fmt_event_detail,
    fmt_list_time,
    fmt_time,
    plain_line,
    print_json,
    print_table,
    user_cell,
)
from ..params import split_option

AUDIT_PAGE = 10000  # rows per call when reading the whole log (agentd's maximum)

Entry = dict[str, Any]


# -- reading the stream -----------------------------------------------------------------
async def read_after(
    c: AgentdClient, after: int, limit: int, types: Sequence[str] = ()
) -> list[Entry]:
    """The first LIMIT entries (of TYPES, or all) with seq > AFTER, oldest first."""
    entries: list[Entry] = []
    while len(entries) < limit:
        want = min(limit - len(entries), AUDIT_PAGE)
        batch = await c.list_events(after, want, types)
        entries += batch
        if len(batch) < want:
            break
        after = batch[-1]["seq"]
    return entries


async def read_tail(
    c: AgentdClient, limit: int, types: Sequence[str] = ()
) -> tuple[list[Entry], int]:
    """The newest LIMIT entries (of TYPES, or all) up to AuditHead, and that head.

    Reads backwards in growing windows: (head - LIMIT, head], then the window
    before it, twice as wide, ..., until LIMIT entries are found or the start
    is reached. Without TYPES, one call usually does; a narrow TYPES, or a
    user who sees only their own rows (AuditHead counts everyone's), takes a
    few more. Each row is read once.
    """
    head = await c.audit_head()
    found: deque[Entry] = deque()
    hi, width = head, limit
    while hi > 0 and len(found) < limit:
        lo = max(0, hi - width)
        found.extendleft(reversed(await _read_window(c, lo, hi, types)))
        hi, width = lo, width * 2
    return list(found)[-limit:], head


async def _read_window(c: AgentdClient, lo: int, hi: int, types: Sequence[str]) -> list[Entry]:
    """Every entry (of TYPES) with LO < seq <= HI, oldest first."""
    window: list[Entry] = []
    after = lo
    while after < hi:
        want = min(hi - after, AUDIT_PAGE)
        batch = await c.list_events(after, want, types)
        inside = [e for e in batch if e["seq"] <= hi]
        window += inside
        if len(inside) < want:  # past HI, or no more rows the caller may see
            break
        after = inside[-1]["seq"]
    return window


# -- showing it -------------------------------------------------------------------------
@dataclass(frozen=True)
class View:
    """What a command shows of an entry: table columns, their cells, and the format
    of a --follow line on a terminal (over the cells as text, RESULT coloured)."""

    columns: tuple[str, ...]
    cells: Callable[[Entry], tuple[Any, ...]]
    line: str

    @property
    def result(self) -> int:
        return self.columns.index("RESULT")


def _audit_cells(e: Entry) -> tuple[Any, ...]:
    return (
        e["seq"],
        fmt_time(e["ts"]),
        user_cell(e["actor_uid"]),
        e["action"],
        e["agent"] or "-",
        e["result"],
        fmt_detail(e["detail"]),
    )


def _event_cells(e: Entry) -> tuple[Any, ...]:
    detail = e["detail"]
    task_id = detail.get("task_id") if isinstance(detail, dict) else None
    return (
        e["seq"],
        fmt_list_time(e["ts"]),
        user_cell(e["actor_uid"]),
        e["action"],
        dash(task_id),
        e["agent"] or "-",
        e["result"],
        fmt_event_detail(detail),
    )


AUDIT_VIEW = View(
    ("SEQ", "TIME", "ACTOR", "ACTION", "AGENT", "RESULT", "DETAIL"),
    _audit_cells,
    "{0:>6}  {1}  {2:<10} {3:<16} {4:<16} {5} {6}",
)
EVENT_VIEW = View(
    ("SEQ", "TIME", "ACTOR", "EVENT", "TASK", "AGENT", "RESULT", "DETAIL"),
    _event_cells,
    "{0:>6}  {1}  {2:<10} {3:<20} {4:>5} {5:<16} {6} {7}",
)


def _line(view: View, e: Entry, tty: bool) -> str:
    """One --follow line: tab-separated in a pipe, aligned and coloured on a terminal."""
    cells = view.cells(e)
    if not tty:
        return plain_line(cells)
    texts = [str(c) for c in cells]
    result = texts[view.result]
    texts[view.result] = click.style(f"{result:<7}", fg="green" if result == "ok" else "red")
    return view.line.format(*texts).rstrip()


def show(
    view: View,
    after: int | None,
    limit: int,
    follow: bool,
    as_json: bool,
    types: Sequence[str] = (),
) -> None:
    """What `audit` and `events` do: list the newest LIMIT entries (or the first LIMIT
    after AFTER), then with FOLLOW print new ones until interrupted."""
    if follow:
        _follow(view, after, limit, as_json, types)
        return
    if after is not None:
        entries = run(lambda c: read_after(c, after, limit, types))
    else:
        entries = run(lambda c: read_tail(c, limit, types))[0]
    if as_json:
        print_json(entries)
    else:
        print_table(view.columns, [view.cells(e) for e in entries], style_column=view.result)


def _follow(view: View, after: int | None, limit: int, as_json: bool, types: Sequence[str]) -> None:
    """The backlog (the newest LIMIT, or every entry after AFTER), then live entries;
    --json: one object per line."""
    tty = env().is_tty()

    def echo(e: Entry) -> None:
        click.echo(json.dumps(e, sort_keys=True, default=str) if as_json else _line(view, e, tty))

    async def body(c: AgentdClient) -> None:
        start = after
        if start is None:
            backlog, start = await read_tail(c, limit, types)
            for e in backlog:
                echo(e)
        async for e in c.follow_events(start, types):
            echo(e)

    with contextlib.suppress(KeyboardInterrupt):  # the normal end, as for journalctl -f
        run(body)


# -- the commands -----------------------------------------------------------------------
F = TypeVar("F", bound=Callable[..., Any])


def stream_options(what: str, when: str) -> Callable[[F], F]:
    """--after, --limit, --follow and --json: the options `audit` and `events` share."""

    def decorate(fn: F) -> F:
        for option in reversed(
            [
                click.option(
                    "--after",
                    type=click.IntRange(min=0),
                    metavar="SEQ",
                    help=f"Show {what} numbered after SEQ, oldest first.",
                ),
                click.option(
                    "-n",
                    "--limit",
                    type=click.IntRange(min=1),
                    default=50,
                    show_default=True,
                    metavar="N",
                    help=f"Show at most N {what} (the newest N without --after).",
                ),
                click.option(
                    "-f",
                    "--follow",
                    is_flag=True,
                    help=f"After the listing, print new {what} {when}.",
                ),
                json_option,
            ]
        ):
            fn = option(fn)
        return fn

    return decorate


@click.group(
    cls=AliasGroup,
    invoke_without_command=True,
    subcommand_metavar="[verify]",
    epilog="""\b
Examples:
  agentctl audit                 the last 50 entries
  agentctl audit -n 500 --json   the last 500, as a JSON list
  agentctl audit --after 1200    entries after number 1200
  agentctl audit -f              the last 50, then new ones as they happen
  agentctl audit verify          check the hash chain (administrators)""",
)
@stream_options("entries", "as agentd appends them")
@click.pass_context
def audit(ctx: click.Context, after: int | None, limit: int, follow: bool, as_json: bool) -> None:
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
    if ctx.invoked_subcommand is None:
        show(AUDIT_VIEW, after, limit, follow, as_json)


@audit.command(
    "verify",
    short_help="Check the audit trail's hash chain.",
    epilog="""\b
Example:
  agentctl audit verify || echo "audit log tampered with" >&2""",
)
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
        click.echo(f"audit log BROKEN: {verdict['message']} ({verdict['checked']} entries checked)")
    if not verdict["ok"]:
        raise click.exceptions.Exit(1)


@click.command(
    "events",
    short_help="Show the event stream: tasks, projects, agents.",
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
artifact.created, agent.online, agent.offline, agent.create, agent.start, ...""",
)
@click.option(
    "-t",
    "--type",
    "types",
    multiple=True,
    callback=split_option,
    metavar="GLOB",
    help="Only events whose type matches GLOB, e.g. 'task.*' (repeatable, or "
    "comma-separated; any may match).",
)
@stream_options("events", "as they happen")
def events(types: list[str], after: int | None, limit: int, follow: bool, as_json: bool) -> None:
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
    show(EVENT_VIEW, after, limit, follow, as_json, types)
