"""`agentctl session`: the chat sessions agentd keeps (agentd.sessions).

A thin client of agentd's org.agentos.agentd1.Sessions interface: agentd
authorizes (an agent's owner, or an administrator) and audits removals.
Talking in a session is `agentctl chat NAME --resume [SESSION]`.
"""

from __future__ import annotations

from typing import Any

import click

from ..app import AliasGroup, env, json_option, run
from ..output import (
    Field,
    fmt_age,
    fmt_time,
    fmt_user,
    getter,
    print_fields,
    print_json,
    print_table,
)
from ..params import TaskIdType


class SessionIdType(TaskIdType):
    """A session id as `session list` prints it (a leading '#' is accepted)."""

    name = "SESSION"
    what = "session id"
    printed_by = "session list"


SESSION_ID = SessionIdType()


@click.group(
    cls=AliasGroup,
    aliases={"ls": "list", "remove": "rm"},
    epilog="""\b
Examples:
  agentctl session list
  agentctl session list scout
  agentctl session show 12
  agentctl chat scout --resume 12
  agentctl session rm 12""",
)
def session() -> None:
    """See, resume and remove chat sessions.

    Every conversation in `agentctl chat` on a terminal is a session that
    agentd keeps: its turns, and a summary of the older ones once they no
    longer fit the model's context (their lasting facts go to the agent's
    memory). A session belongs to its agent: the agent's owner and
    administrators see it. Removing an agent removes its sessions.
    """


@session.command("list", epilog="\b\nExample:\n  agentctl session list scout --json")
@click.argument("agent", required=False, default="")
@json_option
def session_list(agent: str, as_json: bool) -> None:
    """List your agents' sessions (of AGENT if given), most recent first.

    Administrators see every agent's. Columns: id, agent, turns, last
    used, title (the first line of the first message).
    """
    rows = run(lambda c: c.list_sessions(agent))
    if as_json:
        print_json(rows)
        return
    print_table(
        ("ID", "AGENT", "TURNS", "USED", "TITLE"),
        ((s["id"], s["agent"], s["turns"], fmt_age(s["updated"]), s["title"]) for s in rows),
    )
    if not rows and env().is_tty():
        click.echo("No sessions. `agentctl chat NAME` starts one.", err=True)


FIELDS: tuple[Field, ...] = (
    ("id", "ID", getter("id")),
    ("agent", "Agent", getter("agent")),
    ("owner_uid", "Owner", getter("owner_uid", fmt_user)),
    ("caller_uid", "Started by", getter("caller_uid", fmt_user)),
    ("title", "Title", getter("title")),
    ("turns", "Turns", getter("turns")),
    ("folded", "Summarized", getter("folded")),
    ("facts", "Facts", getter("facts")),
    ("created", "Created", getter("created", fmt_time)),
    ("updated", "Used", getter("updated", fmt_time)),
)


@session.command("show", epilog="\b\nExample:\n  agentctl session show 12 --json")
@click.argument("session_id", type=SESSION_ID)
@json_option
def session_show(session_id: int, as_json: bool) -> None:
    """Show a session: its fields, its summary and its messages.

    "summarized" counts the oldest turns folded into the summary (they stay
    listed; the model sees the summary instead), "facts" those written to
    the agent's memory (agentctl memory list AGENT).
    """
    info: dict[str, Any] = run(lambda c: c.get_session(session_id))
    if as_json:
        print_json(info)
        return
    messages = info.pop("messages", [])
    summary = info.pop("summary", "")
    print_fields(info, FIELDS)
    if summary:
        click.echo(f"\nSummary of the first {info['folded']} turns:\n{summary}")
    for m in messages:
        who = info["agent"] if m["role"] == "assistant" else "you"
        click.echo(f"\n{who}> {m['content']}")


@session.command("rm", epilog="\b\nExample:\n  agentctl session rm 12 13")
@click.argument("session_ids", type=SESSION_ID, nargs=-1, required=True)
@json_option
def session_rm(session_ids: tuple[int, ...], as_json: bool) -> None:
    """Remove sessions and their turns (facts they wrote to memory stay)."""

    async def remove(client: Any) -> list[int]:
        for sid in session_ids:
            await client.remove_session(sid)
        return list(session_ids)

    removed = run(remove)
    if as_json:
        print_json({"removed": removed})
