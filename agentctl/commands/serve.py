"""`agentctl serve`: the OpenAI-compatible API on the host, for an owner's programs.

The same endpoint an agent has inside its unit (agentd.endpoint), served by
agentctl as the person who runs it: each request is a Model.Chat with the
agent, so agentd checks that this person may use the agent and meters the
tokens to it and its owner. It listens on loopback only, and answers only
requests bearing the key it prints (or reads from --key-file): another local
user can connect to the port but gets 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click

from ..app import env, fail
from ..client import AgentdClient, ClientError

DEFAULT_LISTEN = "127.0.0.1:8080"


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        fail(f"--listen: {value!r} is not ADDRESS:PORT", code=2)
    if not sep or not 0 <= number <= 65535:
        fail(f"--listen: {value!r} is not ADDRESS:PORT", code=2)
    if not address.is_loopback:
        fail("--listen: only a loopback address (127.0.0.1, ::1) is served", code=2)
    return str(address), number


def _key(path: Path | None) -> str:
    if path is None:
        return "sk-serve-" + os.urandom(24).hex()
    try:
        if path.stat().st_mode & 0o077:
            fail(f"--key-file: {path} must not be readable by others (chmod 600)", code=2)
        key = path.read_text().strip()
    except OSError as e:
        fail(f"--key-file: {e.strerror}: {path}", code=2)
    if len(key) < 16:
        fail("--key-file: the key must be at least 16 characters", code=2)
    return key


def chat_backend(client: AgentdClient, agent: str) -> Any:
    """Model.Chat with AGENT as the endpoint's backend: a refusal before the first
    event (not the owner's agent, a quota) is a BackendError the caller answers."""
    from agentd.endpoint.app import BackendError

    async def backend(messages: list[dict[str, str]], options: dict[str, Any]) -> Any:
        events: Any = client.chat(agent, messages, options)  # an async generator
        try:
            first = await anext(events)
        except ClientError as e:
            await events.aclose()
            raise BackendError(e.name or "Failed", e.message) from None
        return _rest(first, events)

    return backend


async def _rest(first: dict[str, Any], events: Any) -> AsyncIterator[dict[str, Any]]:
    from agentd.endpoint.app import BackendError

    try:
        yield first
        async for event in events:
            yield event
    except ClientError as e:
        raise BackendError(e.name or "Failed", e.message) from None
    finally:
        await events.aclose()


@click.command(
    "serve",
    epilog="""\b
Examples:
  agentctl serve scout
  agentctl serve scout --listen 127.0.0.1:9000 --key-file ~/.config/scout.key
  # in another shell, with what serve printed:
  OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=sk-serve-... python3 app.py""",
)
@click.argument("agent")
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="ADDRESS:PORT",
    help="Where to listen: a loopback address only (port 0: one the kernel picks).",
)
@click.option(
    "--key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read the API key from this file (mode 0600; at least 16 characters) "
    "instead of making one for this run.",
)
def serve(agent: str, listen: str, key_file: Path | None) -> None:
    """Serve the OpenAI-compatible API (POST /v1/chat/completions, GET
    /v1/models) for AGENT on loopback, as you: every request is a chat with
    AGENT (an agent you own, or any if you administer agentd), metered to it
    and its owner and refused over quota with HTTP 429. Prints the
    OPENAI_BASE_URL and OPENAI_API_KEY to give your programs, then serves
    until interrupted. Requests without the key get 401."""
    from agentd.endpoint.app import Endpoint  # not at agentctl's every start

    host, port = _listen(listen)
    key = _key(key_file)
    e = env()

    async def main() -> None:
        client = e.connect()
        endpoint = Endpoint(chat_backend(client, agent), key, f"agent {agent}")
        try:
            bound = await endpoint.start(host, port)
        except OSError as err:
            fail(f"cannot listen on {listen}: {err.strerror or err}")
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"OPENAI_BASE_URL=http://{shown}:{bound}/v1")
        click.echo(
            f"OPENAI_API_KEY={key}" if key_file is None else f"OPENAI_API_KEY from {key_file}"
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await endpoint.close()

    asyncio.run(main())
