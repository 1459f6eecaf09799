"""`agentctl chat`: talk to an agent through the shared model.

A conversation on a terminal is a session kept by agentd (agentd.sessions):
it outlives agentctl, `--resume` picks it up again, and `agentctl session`
lists, shows and removes sessions. One message (-m, or stdin) is a single
stateless exchange unless --resume or --save puts it in a session. agentd
streams the answer back; agentctl prints tokens as they come.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from ..app import env, fail, json_option, run
from ..client import AgentdClient, ClientError
from ..output import print_json

LAST = "last"


def _session_arg(value: str | None) -> int | None:
    """--resume's value: None (not given), 0 (the most recent: resolved later)
    or a session id."""
    if value is None:
        return None
    if value == LAST:
        return 0
    try:
        session = int(value.lstrip("#"))
    except ValueError:
        fail(f"--resume: {value!r} is not a session id (see agentctl session list)", code=2)
    if session <= 0:
        fail("--resume: session ids start at 1", code=2)
    return session


@click.command(
    "chat",
    epilog="""\b
Examples:
  agentctl chat scout
  agentctl chat scout --resume
  agentctl chat scout --resume 12 -m "And the second point?"
  agentctl chat scout -m "Summarize RFC 2119 in one line"
  echo "hello" | agentctl chat scout --json""",
)
@click.argument("name")
@click.option(
    "-m",
    "--message",
    metavar="TEXT",
    help="Send TEXT, print the answer and exit (default: read stdin, or talk "
    "interactively on a terminal).",
)
@click.option(
    "--resume",
    metavar="[SESSION]",
    is_flag=False,
    flag_value=LAST,
    default=None,
    help="Continue SESSION (default: NAME's most recent one).",
)
@click.option("--save", is_flag=True, help="Keep a one-message exchange as a new session.")
@click.option(
    "--max-tokens",
    type=click.IntRange(1, 4096),
    default=256,
    show_default=True,
    help="Longest answer, in tokens.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(0, 2),
    default=0.0,
    show_default=True,
    help="Sampling temperature; 0 always picks the likeliest token.",
)
@click.option(
    "--schema",
    type=click.File("r"),
    metavar="FILE",
    help="Constrain the answer to this JSON Schema (the answer is then JSON; not in a session).",
)
@click.option(
    "--no-persona",
    is_flag=True,
    help="Leave out the template's system prompt (not in a session).",
)
@json_option
def chat(
    name: str,
    message: str | None,
    resume: str | None,
    save: bool,
    max_tokens: int,
    temperature: float,
    schema: Any,
    no_persona: bool,
    as_json: bool,
) -> None:
    """Talk to agent NAME as its template's persona, streaming the answer.

    On a terminal without -m this is a conversation, kept by agentd as a
    session: leave it with an empty line or Ctrl-D, and take it up again
    later with --resume. When a session outgrows the model's context, agentd
    folds its oldest turns into a summary and writes the lasting facts it
    finds to the agent's memory. One message (-m TEXT, or stdin) is answered
    on its own, unless --resume or --save puts it in a session.

    The tokens count against the agent's and your quotas (see agentctl
    usage); over quota, the request is refused with the time the quota
    resets. You must own the agent, or be an administrator. With --json the
    answer is one JSON object (text, finish_reason, token counts, and the
    session) instead of a stream.
    """
    session = _session_arg(resume)
    options: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    if message is None and (not sys.stdin.isatty() or as_json):
        message = sys.stdin.read()
    in_session = session is not None or save or message is None
    if in_session and (schema is not None or no_persona):
        fail("--schema and --no-persona are for single messages, not sessions", code=2)
    if save and session is not None:
        fail("--save starts a new session; --resume continues one: not both", code=2)
    if schema is not None:
        text = schema.read()
        try:
            json.loads(text)
        except ValueError as e:
            fail(f"--schema: not JSON: {e}", "InvalidArgument", 2)
        options["json_schema"] = text
    if no_persona:
        options["persona"] = False
    if message is None:
        run(lambda c: _converse(c, name, session, options))
    elif in_session:
        run(lambda c: _say_in_session(c, name, session, message, options, as_json))
    else:
        run(lambda c: _say(c, name, [{"role": "user", "content": message}], options, as_json))


async def _say(
    client: AgentdClient,
    name: str,
    messages: list[dict[str, str]],
    options: dict[str, Any],
    as_json: bool,
) -> str:
    """One stateless exchange: stream the answer (or print it as JSON)."""
    done = await _show(client.chat(name, messages, options), as_json)
    if as_json:
        print_json(_summary(name, done))
    return str(done.get("text", ""))


async def _say_in_session(
    client: AgentdClient,
    name: str,
    session: int | None,
    message: str,
    options: dict[str, Any],
    as_json: bool,
) -> int:
    """One message in SESSION (None: a new one; 0: NAME's latest); its session."""
    if session == 0:
        session = await _latest(client, name)
    done = await _show(client.chat_in_session(name, session or 0, message, options), as_json)
    if as_json:
        print_json({**_summary(name, done), "session": done.get("session")})
    return int(done.get("session") or session or 0)


async def _show(events: Any, as_json: bool) -> dict[str, Any]:
    """Print the stream's tokens (not with --json) and notes; the done event."""
    done: dict[str, Any] = {}
    async for event in events:
        kind = event.get("event")
        if kind == "token" and not as_json:
            click.echo(event["text"], nl=False)
            sys.stdout.flush()
        elif kind == "folded" and not as_json:
            _note_folded(event)
        elif kind == "done":
            done = event
    if not as_json:
        click.echo()
    return done


def _note_folded(event: dict[str, Any]) -> None:
    note = f"[{event.get('turns')} older turns summarized"
    if event.get("facts"):
        note += f"; {event.get('facts_stored')} of {event.get('facts')} facts remembered"
    if event.get("facts_error"):
        note += f" ({event['facts_error']})"
    if not event.get("parsed", True):
        note += "; the model's summary did not parse: kept the opening lines instead"
    click.echo(note + "]", err=True)


def _summary(name: str, done: dict[str, Any]) -> dict[str, Any]:
    keys = ("text", "finish_reason", "prompt_tokens", "completion_tokens")
    return {"agent": name, **{k: done.get(k) for k in keys}}


async def _latest(client: AgentdClient, name: str) -> int:
    sessions = await client.list_sessions(name)
    if not sessions:
        raise ClientError(f"{name} has no sessions to resume", "NoSuchSession")
    return int(sessions[0]["id"])


async def _converse(
    client: AgentdClient, name: str, session: int | None, options: dict[str, Any]
) -> None:
    """Interactive chat in a session (a new one unless SESSION; 0: the latest)."""
    if session == 0:
        session = await _latest(client, name)
    where = f"session {session}" if session else "a new session"
    click.echo(f"Chatting with {name} in {where}. An empty line or Ctrl-D ends.", err=True)
    loop = asyncio.get_running_loop()
    while True:
        try:
            line = await loop.run_in_executor(None, lambda: input("you> "))
        except EOFError:
            line = ""
        if not line.strip():
            break
        click.echo(f"{name}> ", nl=False)
        session = await _say_in_session(client, name, session, line, options, False)
    if session and env().is_tty():
        click.echo(f"Resume with: agentctl chat {name} --resume {session}", err=True)
