"""What every agentctl command stands on: the environment, running a call, failing.

The commands never touch D-Bus: they call a client object with async methods
(agentctl.client.AgentdClient). The client comes from Env.connect, and Env is
the click context object, so tests pass `obj=Env(connect=lambda: fake)` to
CliRunner.invoke. Every failure reported by the client arrives as one
ClientError, which RootGroup prints as one line `agentctl: MESSAGE (Name)`
with a sysexits.h status: 77 for permission denied, 69 when agentd or the bus
is unavailable, 1 otherwise; usage errors keep click's status 2.

This module imports neither agentctl.cli nor any command module, so every
command module can import it without a circle.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click

from .client import AgentdClient, ClientError

T = TypeVar("T")

EX_UNAVAILABLE = 69  # sysexits.h
EX_NOPERM = 77
EXIT_CODES = {"denied": EX_NOPERM, "unavailable": EX_UNAVAILABLE}

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@dataclass
class Env:
    """What commands take from the outside world; tests replace every part.

    connect: returns a client (called inside the event loop, once per command).
    tty: force terminal (True) or script (False) output; None asks stdout.
    execvp: replaces the process (agent logs runs journalctl through it).
    """

    connect: Callable[[], AgentdClient] = AgentdClient.connect
    tty: bool | None = None
    execvp: Callable[[str, list[str]], Any] = os.execvp

    def is_tty(self) -> bool:
        return sys.stdout.isatty() if self.tty is None else self.tty


def env() -> Env:
    """The Env of the command being run."""
    return click.get_current_context().ensure_object(Env)


def run(body: Callable[[AgentdClient], Awaitable[T]]) -> T:
    """Run BODY(client) to completion; one event loop and one connection per command."""
    e = env()

    async def main() -> T:
        return await body(e.connect())

    return asyncio.run(main())


def fail(message: str, name: str = "", code: int = 1) -> NoReturn:
    """Print the one-line error and exit with CODE; never a traceback."""
    click.echo(f"agentctl: {message}" + (f" ({name})" if name else ""), err=True)
    raise click.exceptions.Exit(code)


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


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of text, for programs."
)
