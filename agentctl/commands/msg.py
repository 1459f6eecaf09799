"""`agentctl msg`: what you and your agents write to each other.

A thin client of agentd's org.agentos.agentd1.Messages interface (issue 15):
agentd authorizes (you write to and read the agents you manage), stores each
message durably before it answers, and delivers it to the agent's runtime.
`msg follow` is a loop of ListMessages long-polls (wait_ms), each asking for
the messages after the last id it printed, until interrupted.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import click

from ..app import AliasGroup, env, json_option, run
from ..client import AgentdClient
from ..output import fmt_list_time, plain_line, print_json, print_table, user_name
from ..params import TaskIdType

FOLLOW_WAIT_MS = 30_000  # one long-poll; agentd answers at once when there is a message
MAX_LIMIT = 500  # agentd's most (and default) per ListMessages
COLUMNS = ("ID", "TIME", "FROM -> TO", "SUBJECT", "BODY")


class MessageIdType(TaskIdType):
    """A message id as `msg list` prints it (a leading '#' is accepted)."""

    name = "ID"
    what = "message id"
    printed_by = "msg list"


MESSAGE_ID = MessageIdType()


@click.group(
    cls=AliasGroup,
    aliases={"ls": "list"},
    epilog="""\b
Examples:
  agentctl msg send scout "Use the staging database from now on"
  agentctl msg send scout - --subject "Today's notes" < notes.txt
  agentctl msg list scout
  agentctl msg follow scout
  agentctl msg list scout --json | jq -r '.[] | select(.from_kind == "agent") | .body'""",
)
def msg() -> None:
    """Write to your agents and read what they write.

    A message goes to an agent you manage (administrators: any agent) and is
    stored before `msg send` returns; the agent's runtime receives it and
    acknowledges it once read (at least once: a message not acknowledged is
    received again), and an agent sees its unread messages in its next
    task's prompt. Agents write to their owner, to their owner's other
    agents and to the members of their teams (see `agentctl team`), never
    to anyone else's.

    `msg list` and `msg follow` show the messages to and from an agent,
    oldest first: yours, and those between it and its team mates. People
    are shown by user name (or "uid N"), agents by name.
    """


@msg.command(
    "send",
    epilog="""\b
Examples:
  agentctl msg send scout "Stop the crawl, the site is down"
  id=$(agentctl msg send scout "Check the logs" --subject logs)
  git log -1 | agentctl msg send builder - --subject review""",
)
@click.argument("agent")
@click.argument("text")
@click.option(
    "-s", "--subject", default="", metavar="S", help="A subject line (at most 200 characters)."
)
@json_option
def msg_send(agent: str, text: str, subject: str, as_json: bool) -> None:
    """Send TEXT to AGENT; prints the message's id.

    TEXT "-" reads the body from standard input (trailing newlines dropped).
    The body is 1 to 65,536 characters. agentd refuses (LimitExceeded) when
    you write faster than its rate allows or the agent has 1,000 unread
    messages. With --json: {"id": N}.
    """
    body = click.get_text_stream("stdin").read().rstrip("\n") if text == "-" else text
    if not body:
        raise click.BadParameter("the message is empty", param_hint="TEXT")
    message = run(lambda c: c.send_message(agent, body, subject))
    if as_json:
        print_json({"id": message})
    else:
        click.echo(message)


@msg.command(
    "list",
    short_help="List an agent's messages (alias: ls).",
    epilog="""\b
Examples:
  agentctl msg list scout
  agentctl msg list scout --after 120 --limit 20
  agentctl msg list scout --json | jq -r '.[-1].body'""",
)
@click.argument("agent")
@click.option("--after", type=MESSAGE_ID, metavar="ID", help="Only messages with an id above ID.")
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(1, MAX_LIMIT),
    metavar="N",
    help=f"At most N messages  [agentd's default and most: {MAX_LIMIT}].",
)
@json_option
def msg_list(agent: str, after: int | None, limit: int | None, as_json: bool) -> None:
    """List the messages to and from AGENT, oldest first.

    Columns: ID, TIME (sent), FROM -> TO, SUBJECT and BODY (its first line;
    `msg list --json` has it whole). Without a terminal, one tab-separated
    line per message, no header. --json also gives each message's
    deliveries (how often the agent received it) and acked_at (when it
    acknowledged it).
    """
    options = {"after": after, "limit": limit}
    messages = run(lambda c: c.list_messages(agent, options))
    if as_json:
        print_json(messages)
        return
    print_table(COLUMNS, [_cells(m) for m in messages])


@msg.command(
    "follow",
    short_help="Print an agent's messages as they come, until interrupted.",
    epilog="""\b
Examples:
  agentctl msg follow scout
  agentctl msg follow scout --after 120 --json | jq -r .body""",
)
@click.argument("agent")
@click.option("--after", type=MESSAGE_ID, metavar="ID", help="Start after message ID.")
@json_option
def msg_follow(agent: str, after: int | None, as_json: bool) -> None:
    """Print the messages to and from AGENT, then new ones as they come,
    until interrupted (Ctrl-C ends it with status 0).

    One line per message, as `msg list` prints them (--json: one JSON object
    per line). agentd holds each request up to 30 s until there is a
    message, so following costs nothing while nobody writes.
    """
    tty = env().is_tty()

    def echo(m: dict[str, Any]) -> None:
        click.echo(json.dumps(m, sort_keys=True, default=str) if as_json else _line(m, tty))

    async def body(c: AgentdClient) -> None:
        cursor = after or 0
        while True:
            batch = await c.list_messages(agent, {"after": cursor, "wait_ms": FOLLOW_WAIT_MS})
            for m in batch:
                echo(m)
                cursor = max(cursor, int(m["id"]))

    with contextlib.suppress(KeyboardInterrupt):  # the normal end, as for journalctl -f
        run(body)


def _cells(m: dict[str, Any]) -> tuple[Any, ...]:
    route = f"{_who(m['from'], m.get('from_kind'))} -> {_who(m['to'], m.get('to_kind'))}"
    return (m["id"], fmt_list_time(m["sent_at"]), route, m.get("subject") or "-", _first(m))


def _line(m: dict[str, Any], tty: bool) -> str:
    """One `msg follow` line: tab-separated in a pipe, aligned on a terminal."""
    cells = _cells(m)
    if not tty:
        return plain_line(cells)
    msg_id, when, route, subject, first = cells
    about = "" if subject == "-" else click.style(f"[{subject}] ", bold=True)
    return f"{msg_id:>6}  {when}  {route}  {about}{first}"


def _who(name: str, kind: str | None) -> str:
    """An agent by name, a person by user name ("uid N" when this machine has none)."""
    if kind == "person" and name.startswith("uid ") and name[4:].isdigit():
        return user_name(int(name[4:])) or name
    return name


def _first(m: dict[str, Any]) -> str:
    """The body cut to its first non-empty line, with " …" if there is more."""
    lines = [line for line in str(m.get("body") or "").splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[0].strip() + (" …" if len(lines) > 1 else "")
