"""agentctl: manage agentd's agents, templates, tasks and audit trail from a shell.

A click command tree in the style of simonw/llm: noun groups (agent, template,
audit, project, task, approval, goal, team, msg, memory, knowledge, session,
model, quota, plan) with one small verb set (create, add, list, show, search, start,
stop, rm, logs, ...), plus `status`, `events`, `chat` and `usage`. Every
command takes --json. On a terminal the output is rich tables and colour;
otherwise it is plain tab-separated text without headers, so `agentctl agent
list | cut -f1` works.

This module is the one place the tree is assembled: the root group `cli` and
the entry point `main` (/usr/bin/agentctl runs agentctl.cli:main) live here,
and COMMANDS lists what hangs on the root, from the modules of
agentctl.commands (one per noun group). The rest of the house:
agentctl.app (Env, run, fail, exit codes, the group classes),
agentctl.output (formatters and printers), agentctl.params (parameter
types), agentctl.client (the only D-Bus code) and agentctl.marshal (wire
shapes). Nothing imports this module but the entry points, so there is no
import circle.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from agentd import __version__

from .app import CONTEXT, Env, RootGroup
from .commands import (
    agent,
    approval,
    audit,
    chat,
    goal,
    knowledge,
    memory,
    metrics,
    model,
    msg,
    plan,
    project,
    serve,
    session,
    status,
    task,
    team,
    template,
    top,
    usage,
)


@click.group(
    cls=RootGroup,
    context_settings=CONTEXT,
    epilog="""\b
Examples:
  agentctl template list
  agentctl agent create scout --template research --memory-max 1G --start
  agentctl agent list
  agentctl agent logs scout -f
  agentctl audit -f
  id=$(agentctl task submit "Summarise the logs" --needs summarise)
  agentctl task wait "$id" && agentctl task show "$id"
  agentctl events -f --type 'task.*'
  agentctl memory add scout docs/*.md && agentctl memory search scout "deploy"
  agentctl team create research && agentctl team add research scout --restart
  agentctl msg send scout "Use the staging database" && agentctl msg follow scout
\b
Exit status: 0 on success, 1 on failure, 2 on a usage error, 69 if agentd
is not running (or has no model, embedding model or memory to serve the
request), 77 if agentd denied the request (`task wait` has its own:
see agentctl task wait --help). See agentctl COMMAND --help.""",
)
@click.version_option(
    __version__, "--version", prog_name="agentctl", message="%(prog)s %(version)s"
)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Manage AI agents run by agentd.

    Each agent is a Unix user with its own home under /home/agents, running in
    its own systemd unit (agent-NAME.service). agentctl talks to agentd over
    the D-Bus system bus (org.agentos.agentd1); agentd decides what the calling
    user may do: administrators manage every agent, other users the agents they
    created.

    Work reaches agents as tasks: submitted to agentd's queue (optionally in a
    project), assigned to an agent whose template has the capabilities the
    task needs, run in that agent's unit, and finished with a result and
    artifacts. Every change is an event in the audit trail.

    Output is a table on a terminal and tab-separated text in a pipe; --json
    gives every field, for programs.
    """
    ctx.ensure_object(Env)


COMMANDS: tuple[click.Command, ...] = (
    agent.agent,
    template.template,
    audit.audit,
    audit.events,
    project.project,
    task.task,
    approval.approval,
    goal.goal,
    team.team,
    msg.msg,
    memory.memory,
    knowledge.knowledge,
    model.model,
    chat.chat,
    serve.serve,
    session.session,
    usage.usage,
    usage.quota,
    plan.plan,
    status.status,
    top.top,
    metrics.metrics,
)
for _command in COMMANDS:
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of /usr/bin/agentctl; returns the exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="agentctl", obj=Env())
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0
