"""`agentctl task wait`: wait until a task has ended; the exit status says how.

Kept out of agentctl.commands.task (which adds it to the `task` group)
because it is the one task command with a loop and exit codes of its own:
WAIT_EXIT per final status, 124 on --timeout as timeout(1) has it, 130 when
interrupted. It subscribes to TaskChanged before it first asks, and also
asks every WAIT_POLL seconds, so a lost signal or an agentd restart costs at
most that.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from agentd.tasks.model import FINAL

from ..app import fail, json_option, run
from ..client import AgentdClient, ClientError
from ..output import print_json
from ..params import TASK_ID

# `task wait`: exit status per final status, and on --timeout (as timeout(1))
WAIT_EXIT = {"completed": 0, "failed": 1, "dead_lettered": 3, "cancelled": 4}
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130
WAIT_POLL = 3.0  # seconds between re-checks when no TaskChanged arrives


@click.command(
    "wait",
    epilog="""\b
Examples:
  agentctl task wait 42
  agentctl task wait "$(agentctl task submit Build --exec 'make')" --timeout 600
  agentctl task wait 42 --json | jq -r .result
\b
Exit status: 0 completed, 1 failed, 3 dead-lettered, 4 cancelled,
124 when --timeout ran out, 130 when interrupted; otherwise as for every
command (1 for an error such as NoSuchTask, 69, 77).""",
)
@click.argument("task_id", metavar="ID", type=TASK_ID)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Give up after SECONDS (exit 124)  [default: wait for ever].",
)
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
        fail(
            f"timed out after {timeout:g}s waiting for task {task_id} (still {info['status']})",
            code=EXIT_TIMEOUT,
        )
    status = info["status"]
    if as_json:
        print_json(info)
    else:
        click.echo(status)
    if status in ("failed", "dead_lettered") and info.get("error"):
        click.echo(
            f"agentctl: task {task_id} {status.replace('_', '-')}: "
            f"{' '.join(str(info['error']).split())}",
            err=True,
        )
    raise click.exceptions.Exit(WAIT_EXIT.get(status, 1))


async def _wait(
    c: AgentdClient, task_id: int, timeout: float | None
) -> tuple[dict[str, Any], bool]:
    """Describe TASK_ID until it is final. Returns (task, timed out).

    The TaskChanged match is made before the first DescribeTask: a change
    between the two would otherwise never wake us.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    told = _Told(task_id)
    async with c.watch_tasks() as watch:
        info = await c.describe_task(task_id)
        while info["status"] not in FINAL:
            told.blocked(info)
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return info, True
            await watch.wait(task_id, WAIT_POLL if left is None else min(WAIT_POLL, left))
            info = await _describe_again(c, info, told)
    return info, False


class _Told:
    """What `task wait` said on stderr about TASK_ID, so that it says each thing once."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        self.block_reason = ""
        self.unavailable = False

    def blocked(self, info: dict[str, Any]) -> None:
        """Once per question: the task is blocked, why, and how to answer."""
        if info["status"] != "blocked":
            self.block_reason = ""
            return
        reason = str(info.get("block_reason") or "no reason given")
        if reason != self.block_reason:
            click.echo(
                f"agentctl: task {self.task_id} is blocked: {' '.join(reason.split())} "
                f"(answer with: agentctl task unblock {self.task_id} --note TEXT)",
                err=True,
            )
            self.block_reason = reason

    def unreachable(self, e: ClientError) -> None:
        """Once per outage: agentd is away, and we keep waiting."""
        if not self.unavailable:
            click.echo(f"agentctl: {e.message}; still waiting for task {self.task_id}", err=True)
        self.unavailable = True


async def _describe_again(c: AgentdClient, last: dict[str, Any], told: _Told) -> dict[str, Any]:
    """DescribeTask again; while agentd is restarting, the LAST answer (ask at next poll)."""
    try:
        info = await c.describe_task(told.task_id)
    except ClientError as e:
        if e.kind != "unavailable":
            raise
        told.unreachable(e)
        return last
    told.unavailable = False
    return info
