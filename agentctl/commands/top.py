"""`agentctl top`: the caller's agents and the model service, live.

Each refresh is one Fleet call (agentd's snapshot of the agents the caller
may list); CPU shares come from two of them (agentctl.topview). The live view
puts the terminal in cbreak mode to read single keys and always gives it
back as it found it, whatever ends the loop (q, ^C, an error). `--once`
samples twice, DELAY apart, and prints one table (or `--json`), for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Any

import click

from ..app import env, fail, run
from ..client import AgentdClient
from ..output import fmt_bytes, print_json, print_table
from ..topview import SORTS, View, render, rows, select

COLUMNS = ("NAME", "OWNER", "STATE", "CPU%", "MEM", "PROCS", "TASK", "STEP", "TOK/MIN", "APPR")


@click.command(
    "top",
    short_help="Show agents' CPU, memory, tasks and tokens, live.",
    epilog="""\b
Keys (live view):
  c m t p a   sort by CPU, memory, tokens per minute, processes, approvals
  n s         sort by name, state (the same key again reverses the order)
  /           type a filter (Enter applies, Esc cancels); Esc clears it
  q, Ctrl-C   quit
\b
Examples:
  agentctl top
  agentctl top --owner alice --sort memory
  agentctl top --once
  agentctl top --once --json | jq '.agents[] | {name, cpu_percent, memory_current}'""",
)
@click.option("--once", is_flag=True, help="Print one table and exit (two samples, DELAY apart).")
@click.option("--json", "as_json", is_flag=True, help="With --once: print JSON, for programs.")
@click.option(
    "-d",
    "--delay",
    type=click.FloatRange(0.2, 60),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes (and between --once's two samples).",
)
@click.option(
    "--sort",
    type=click.Choice(sorted(SORTS)),
    default="cpu",
    show_default=True,
    help="The column to sort by first.",
)
@click.option(
    "--filter",
    "pattern",
    default="",
    metavar="TEXT",
    help="Only agents whose name, owner, template, state or task has TEXT.",
)
@click.option("--owner", metavar="USER", help="Only agents owned by USER (name or UID).")
@click.option("--state", metavar="STATE", help="Only agents whose unit is STATE (active, ...).")
def top(
    once: bool,
    as_json: bool,
    delay: float,
    sort: str,
    pattern: str,
    owner: str | None,
    state: str | None,
) -> None:
    """Show the agents you may see, refreshed every second: the state of each
    agent's unit, its CPU use (percent of one CPU since the last refresh), memory,
    processes (systemd's TasksCurrent), the task it is running and that task's
    latest step, the tokens its model calls used in the last minute and the
    approvals it waits for; above them, the model service's queue, batch (the
    sequences decoded together now, of how many it can) and tokens per second.

    Administrators see every agent; other users the agents they own. The live
    view needs a terminal; in a script use --once (with --json for every field:
    counters are raw there too, cpu_usage_nsec and memory_current in bytes).
    """
    if as_json and not once:
        raise click.UsageError("--json needs --once")
    if not once and not (env().is_tty() and sys.stdin.isatty()):
        fail("the live view needs a terminal: use --once (and --json) in scripts", code=2)

    def keep(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in found if _wanted(r, owner, state)]

    if once:
        snapshot = run(lambda c: _twice(c, delay))
        found = select(keep(snapshot["agents"]), sort, False, pattern)
        if as_json:
            print_json(dict(snapshot, agents=found))
        else:
            print_table(COLUMNS, (_line(r) for r in found), style_column=2)
        return
    run(lambda c: _live(c, View(sort=sort, pattern=pattern), delay, keep))


def _wanted(row: dict[str, Any], owner: str | None, state: str | None) -> bool:
    if owner is not None and owner not in (str(row.get("owner")), str(row.get("owner_uid"))):
        return False
    return state is None or row.get("state") == state


async def _twice(client: AgentdClient, delay: float) -> dict[str, Any]:
    """A snapshot whose agents have cpu_percent over DELAY seconds."""
    first = await client.fleet()
    await asyncio.sleep(delay)
    second = await client.fleet()
    return {
        "at": second.get("at"),
        "interval": round(float(second.get("at", 0)) - float(first.get("at", 0)), 3),
        "agents": rows(first, second),
        "model": second.get("model", {}),
    }


def _line(r: dict[str, Any]) -> tuple[Any, ...]:
    cpu = r.get("cpu_percent")
    task = f"#{r['task_id']} {r.get('task_title') or ''}".strip() if r.get("task_id") else None
    return (
        r["name"],
        r.get("owner"),
        r["state"],
        None if cpu is None else f"{cpu:.1f}",
        fmt_bytes(r.get("memory_current")),
        r.get("tasks_current"),
        task,
        r.get("step"),
        r.get("tokens_last_minute"),
        r.get("approvals_pending"),
    )


@contextlib.contextmanager
def cbreak(fd: int) -> Iterator[None]:
    """The terminal on FD in cbreak mode (keys one at a time, no echo), restored after."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _live(client: AgentdClient, view: View, delay: float, keep: Any) -> None:
    from rich.console import Console
    from rich.live import Live

    loop = asyncio.get_running_loop()
    keys: asyncio.Queue[str] = asyncio.Queue()
    fd = sys.stdin.fileno()

    def readable() -> None:
        data = os.read(fd, 64)
        for ch in data.decode(errors="ignore") if data else "q":  # end of input: quit
            keys.put_nowait(ch)

    previous: dict[str, Any] | None = None
    current = await client.fleet()
    taken = loop.time()
    with (
        cbreak(fd),
        Live(console=Console(highlight=False), screen=True, auto_refresh=False) as live,
    ):
        loop.add_reader(fd, readable)
        try:
            while not view.done:
                found = keep(rows(previous, current))
                live.update(render(found, current.get("model", {}), view), refresh=True)
                wait = taken + delay - loop.time()
                if wait <= 0:
                    previous, current = current, await client.fleet()
                    taken = loop.time()
                    continue
                with contextlib.suppress(TimeoutError):
                    view.key(await asyncio.wait_for(keys.get(), wait))
        finally:
            loop.remove_reader(fd)
