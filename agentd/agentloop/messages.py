"""The send_message and read_messages tools: the agent's mail, through agentd.

Who an agent may write to is agentd's decision (agentd.messages: its owner's
agents, its teammates, its owner); a refusal is shown to the model as the
tool's result. read_messages acknowledges what it shows: once in the
conversation, a message is read.
"""

from __future__ import annotations

from typing import Any

from .host import HostError, TaskHost
from .prompt import shown_message

READ_MOST = 10  # messages one read_messages shows
SUBJECT_CHARS = 200


async def send(host: TaskHost, args: dict[str, Any]) -> str:
    to = str(args.get("to") or "").strip()
    body = str(args.get("body") or "")
    subject = str(args.get("subject") or "")[:SUBJECT_CHARS]
    if not to or not body.strip():
        return "error: send_message needs a recipient (to) and a body"
    try:
        mid = await host.send(to, subject, body)
    except HostError as e:
        return f"error: not sent: {e} ({e.name})"
    return f"sent message {mid} to {to}"


async def read(host: TaskHost) -> str:
    try:
        got = await host.receive(READ_MOST, 0)
        if got:
            await host.ack([int(m["id"]) for m in got])
    except HostError as e:
        return f"error: {e} ({e.name})"
    if not got:
        return "no new messages"
    return "\n".join(shown_message(m) for m in got)


async def _read(host: TaskHost, _args: dict[str, Any]) -> str:
    return await read(host)


TOOLS = {"send_message": send, "read_messages": _read}
