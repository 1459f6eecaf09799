"""`agentctl approval`: see and answer what your agents ask to do (issue 12).

An agent whose template gates a tool (its [approval] table) stops before
using it: the task waits in status awaiting_approval, with the EXACT action
(tool and arguments) in an approval that only its owner or an administrator
may answer; agentd refuses an agent, even for its own task. These commands
are a thin client of agentd's org.agentos.agentd1.Approvals interface: agentd
authorizes, audits (approval.granted, approval.denied) and moves the task.

The calls are AgentdClient's (list_approvals, get_approval, grant_approval,
deny_approval), which translate agentd's refusals into ClientError like any
other call; this module never sees D-Bus. Tests inject a fake with the four
methods.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import click

from ..app import AliasGroup, env, json_option, run
from ..client import AgentdClient
from ..output import (
    Field,
    dash,
    fmt_age,
    fmt_time,
    fmt_user,
    getter,
    print_fields,
    print_json,
    print_table,
)
from ..params import TaskIdType

STATUSES = ("pending", "granted", "denied", "used")


class ApprovalIdType(TaskIdType):
    """An approval id as `approval list` prints it (a leading '#' is accepted)."""

    name = "ID"
    what = "approval id"
    printed_by = "approval list"


APPROVAL_ID = ApprovalIdType()


def fmt_action(info: dict[str, Any]) -> str:
    """The action as the owner should read it: the command for shell, else the JSON."""
    arguments = info.get("arguments") or {}
    if info.get("tool") == "shell" and isinstance(arguments.get("command"), str):
        return str(arguments["command"])
    return json.dumps(arguments, ensure_ascii=False, sort_keys=True)


@click.group(
    cls=AliasGroup,
    aliases={"ls": "list"},
    epilog="""\b
Examples:
  agentctl approval list
  agentctl approval show 7
  agentctl approval grant 7
  agentctl approval grant 8 --always
  agentctl approval deny 9 --reason "Do not touch /srv; work in your home"
  agentctl events -f --type 'approval.*'""",
)
def approval() -> None:
    """See and answer what your agents ask permission to do.

    A template's [approval] table (or the admin's in agentd.toml) names the
    tools whose every use waits for the owner (e.g. tools = ["shell"]),
    except shell commands made only of allowed simple commands (shell_allow
    = ["ls *", "cat *"]), and how long an answer may take (timeout = "1h").
    Such a task waits in status awaiting_approval until you answer; the
    approval holds the exact action. A grant lets the agent run it once; a
    denial (or no answer before the timeout) tells the agent's model it was
    refused, and why. Pending approvals survive an agentd restart.

    You see and answer the approvals of the tasks you submitted;
    administrators, all of them. Agents cannot answer any, not even their
    own. Every request and answer is in the audit trail (approval.*).
    """


@approval.command(
    "list",
    short_help="List approvals (alias: ls).",
    epilog="""\b
Examples:
  agentctl approval list
  agentctl approval list --status pending | cut -f1
  agentctl approval list --json | jq '.[] | select(.tool == "shell") | .arguments.command'""",
)
@click.option("-s", "--status", type=click.Choice(STATUSES), help="Only approvals in STATUS.")
@json_option
def approval_list(status: str | None, as_json: bool) -> None:
    """List the approvals you may answer, oldest first (agentd keeps the newest 1000).

    Columns: ID, STATUS (pending, granted, denied, used: granted and run),
    TASK, AGENT, TOOL, AGE (since the agent asked) and ACTION (the shell
    command, or the tool's arguments as JSON). Without a terminal, one
    tab-separated line per approval, no header, with the time it was asked
    (local ISO 8601) instead of the age.
    """
    items = run(lambda c: c.list_approvals())
    items = sorted((a for a in items if status in (None, a["status"])), key=lambda a: a["id"])
    if as_json:
        print_json(items)
        return
    when = fmt_age if env().is_tty() else fmt_time
    print_table(
        ("ID", "STATUS", "TASK", "AGENT", "TOOL", "AGE", "ACTION"),
        [
            (
                a["id"],
                a["status"],
                a["task"],
                dash(a["agent"]),
                a["tool"],
                when(a["created_at"]),
                fmt_action(a),
            )
            for a in items
        ],
        style_column=1,
    )


def _uid(uid: int) -> int | None:
    return uid if uid >= 0 else None  # GetApproval says -1 for nobody yet


FIELDS: tuple[Field, ...] = (
    ("id", "ID", getter("id")),
    ("status", "Status", getter("status")),
    ("task", "Task", getter("task")),
    ("agent", "Agent", getter("agent", dash)),
    ("attempt", "Attempt", getter("attempt")),
    ("tool", "Tool", getter("tool")),
    ("arguments", "Action", fmt_action),
    ("why", "Why", getter("why", dash)),
    ("created_at", "Asked", getter("created_at", fmt_time)),
    ("deadline", "Deadline", getter("deadline", fmt_time)),
    ("answered_by", "Answered by", lambda i: fmt_user(_uid(i["answered_by"]))),
    ("answered_at", "Answered", lambda i: fmt_time(i["answered_at"] or None)),
    ("reason", "Reason", getter("reason", dash)),
    ("always", "Always", getter("always")),
)


def _print(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(info)
    else:
        print_fields(info, FIELDS, styled=("status",))


@approval.command(
    "show",
    epilog="""\b
Examples:
  agentctl approval show 7
  agentctl approval show 7 --json | jq -r .arguments.command""",
)
@click.argument("approval_id", metavar="ID", type=APPROVAL_ID)
@json_option
def approval_show(approval_id: int, as_json: bool) -> None:
    """Show approval ID: the exact action the agent asks to run, and its answer.

    Action is the shell command (tool shell) or the tool's arguments as JSON;
    Why is the rule that made it ask; Deadline is when it is denied if
    nobody answers ("timed out"). Without a terminal, one `key<TAB>value`
    line per field.
    """
    _print(run(lambda c: c.get_approval(approval_id)), as_json)


@approval.command(
    "grant",
    epilog="""\b
Examples:
  agentctl approval grant 7
  agentctl approval grant 8 --always    # and never ask again for this command""",
)
@click.argument("approval_id", metavar="ID", type=APPROVAL_ID)
@click.option(
    "--always",
    is_flag=True,
    help="Also add the command's simple commands to the agent's allow list (shell only).",
)
@json_option
def approval_grant(approval_id: int, always: bool, as_json: bool) -> None:
    """Let the agent run the action of pending approval ID, once.

    The task goes back to its agent (status pending), which runs the action
    exactly once, also across restarts. With --always, each simple command
    of the shell command is added, literally, to the agent's own allow list,
    so that the same commands no longer ask; agentd refuses --always for a
    command it cannot prove safe to repeat, and for tools other than shell.
    agentd refuses (Busy) an approval already answered. Prints nothing on
    success; with --json, the approval after the change.
    """
    _answer(lambda c: c.grant_approval(approval_id, always), as_json)


@approval.command(
    "deny",
    epilog="""\b
Examples:
  agentctl approval deny 9 --reason "Use the staging database, not production"
  agentctl approval list -s pending | cut -f1 | xargs -rn1 agentctl approval deny""",
)
@click.argument("approval_id", metavar="ID", type=APPROVAL_ID)
@click.option(
    "--reason",
    default="",
    metavar="TEXT",
    help="Why, for the agent's model (at most 4096 characters).",
)
@json_option
def approval_deny(approval_id: int, reason: str, as_json: bool) -> None:
    """Refuse the action of pending approval ID; the agent never runs it.

    The task goes back to its agent, whose model is told the action was
    denied by its owner, with the reason, and carries on without it.
    agentd refuses (Busy) an approval already answered. Prints nothing on
    success; with --json, the approval after the change.
    """
    _answer(lambda c: c.deny_approval(approval_id, reason), as_json)


def _answer(call: Callable[[AgentdClient], Awaitable[dict[str, Any]]], as_json: bool) -> None:
    info = run(call)
    if as_json:
        print_json(info)
