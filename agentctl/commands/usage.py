"""`agentctl usage` and `agentctl quota`: what the model costs, and its limits.

agentd meters every model request (chats and agents' own thinking) in tokens,
per agent and per owner, and refuses requests over a quota. `usage` shows
both (bars on a terminal, warnings for quotas nearly used up) and the
caller's quota plan (agentctl.commands.plan); `quota` sets and resets them
(administrators).
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from agentd.config import QUOTA_PERIODS

from ..app import AliasGroup, env, json_option, run
from ..client import AgentdClient
from ..output import fmt_time, fmt_user, plain_line, print_json, print_table
from ..plans_view import describe, fmt_source

# `usage` warns when less than this share of a quota, or fewer tokens than this, are left
LOW_SHARE = 0.10
LOW_TOKENS = 50


def _subject_label(q: dict[str, Any]) -> str:
    if q["kind"] == "owner":
        return f"owner {fmt_user(int(q['subject']))}"
    return str(q["subject"])


def _bar_rows(quotas: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.console import Console
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("AGENT/OWNER", "USED", "QUOTA", "", "PERIOD", "RESETS", "FROM"):
        table.add_column(col, no_wrap=True)
    for q in quotas:
        limit = q["limit"]
        share = q["used"] / limit if limit else 0
        style = "red" if share >= 1 else "yellow" if low(q) else "green"
        bar = (
            ProgressBar(
                total=limit,
                completed=min(q["used"], limit),
                width=24,
                complete_style=style,
                finished_style=style,
            )
            if limit
            else "unlimited"
        )
        table.add_row(
            _subject_label(q),
            f"{q['used']:,}",
            f"{limit:,}" if limit else "-",
            bar,
            q["period"],
            fmt_time(q["resets_at"]),
            q["source"],
        )
    Console(highlight=False).print(table)


def low(q: dict[str, Any]) -> bool:
    """Whether quota Q has less than 10% or fewer than 50 tokens left."""
    left = q["limit"] - q["used"]
    return bool(q["limit"]) and (left < LOW_TOKENS or left < LOW_SHARE * q["limit"])


def _warnings(quotas: list[dict[str, Any]], mine: dict[str, Any]) -> None:
    """One line on stderr per quota nearly used up; the caller's own names its plan."""
    plan = mine.get("plan") or {}
    for q in filter(low, quotas):
        left = max(0, q["limit"] - q["used"])
        of = "its"
        if q["kind"] == "owner" and q["source"] == "plan" and q["subject"] == str(mine["uid"]):
            of = f"plan {plan.get('name', '?')}'s"
        click.echo(
            f"warning: {_subject_label(q)} has {left:,} of {of} {q['limit']:,} "
            f"{q['period']} tokens left (resets {fmt_time(q['resets_at'])})",
            err=True,
        )


def _plan_line(mine: dict[str, Any]) -> None:
    """The caller's plan: a sentence on a terminal (first), a `plan` line in a pipe
    (last: `plan NAME`, or `plan -` for none)."""
    plan = mine.get("plan")
    if env().is_tty():
        click.echo(f"Plan {describe(plan)} (from {fmt_source(plan)})" if plan else "Plan: none")
    else:
        click.echo(plain_line(("plan", plan["name"] if plan else "-")))


@click.command(
    "usage",
    epilog="""\b
Examples:
  agentctl usage
  agentctl usage --days 30
  agentctl usage --json | jq '.quotas[] | select(.kind == "agent")'""",
)
@click.option(
    "--days",
    type=click.IntRange(1, 3660),
    default=7,
    show_default=True,
    help="How many days of history to show.",
)
@json_option
def usage(days: int, as_json: bool) -> None:
    """Show token usage against quotas, then tokens by day and agent.

    Every model request (chats and agents' own thinking) is metered, prompt
    and completion tokens, per agent and per owner. Quotas are per period
    (daily, weekly or monthly, UTC) and come from an administrator's
    setting, your quota plan (`agentctl plan`), the agent's template
    (token_budget) or agentd.toml. Your plan is shown first. A warning is
    printed, on standard error, for each quota with less than 10% or fewer
    than 50 tokens left. You see your own agents; administrators see all.
    """
    quotas, days_rows, mine = run(
        lambda c: asyncio.gather(c.list_quotas(), c.list_usage(days), c.describe_plan())
    )
    if as_json:
        print_json({"quotas": quotas, "days": days_rows, "plan": mine["plan"]})
        return
    if env().is_tty():
        _plan_line(mine)
        _bar_rows(quotas)
        click.echo()
    else:
        for q in quotas:
            click.echo(
                plain_line(
                    (
                        "quota",
                        q["kind"],
                        q["subject"],
                        q["used"],
                        q["limit"],
                        q["period"],
                        int(q["resets_at"]),
                        q["source"],
                    )
                )
            )
    rows = [
        (
            d["day"],
            d["agent"],
            fmt_user(d["owner_uid"]),
            d["requests"],
            d["prompt_tokens"],
            d["completion_tokens"],
            d["prompt_tokens"] + d["completion_tokens"],
        )
        for d in days_rows
    ]
    if env().is_tty():
        print_table(["DAY", "AGENT", "OWNER", "REQUESTS", "PROMPT", "COMPLETION", "TOTAL"], rows)
    else:
        for row in rows:
            click.echo(plain_line(("day", *row)))
        _plan_line(mine)
    _warnings(quotas, mine)


@click.group(
    cls=AliasGroup,
    aliases={"ls": "list"},
    epilog="""\b
Examples:
  agentctl quota set scout 50000 --period daily
  agentctl quota set alice 1000000 --period monthly
  agentctl quota reset scout""",
)
def quota() -> None:
    """Set and reset token quotas (administrators).

    A quota is a number of tokens (prompt plus completion) per period, for
    one agent or for an owner (all their agents together). 0 is unlimited.
    """


async def _kind(client: AgentdClient, subject: str, as_owner: bool, as_agent: bool) -> str:
    """agent if SUBJECT names an agent (agents are users too), else owner."""
    if as_owner or as_agent:
        return "owner" if as_owner else "agent"
    names = {a["name"] for a in await client.list_agents()}
    return "agent" if subject in names else "owner"


kind_options = [
    click.option("--owner", "as_owner", is_flag=True, help="SUBJECT is an owner (user)."),
    click.option("--agent", "as_agent", is_flag=True, help="SUBJECT is an agent."),
]


def _kind_options(fn: Any) -> Any:
    for opt in reversed(kind_options):
        fn = opt(fn)
    return fn


@quota.command(
    "set",
    epilog="""\b
Examples:
  agentctl quota set scout 50000 --period daily
  agentctl quota set --owner alice 0""",
)
@click.argument("subject")
@click.argument("tokens", type=click.IntRange(min=0))
@click.option(
    "--period",
    type=click.Choice(QUOTA_PERIODS),
    default="monthly",
    show_default=True,
    help="When the count starts again (UTC calendar).",
)
@_kind_options
@json_option
def quota_set(
    subject: str, tokens: int, period: str, as_owner: bool, as_agent: bool, as_json: bool
) -> None:
    """Give SUBJECT (an agent, or an owner by user name or UID) TOKENS per PERIOD.

    This overrides the template's token_budget and agentd.toml's default;
    0 means unlimited. The change is audited.
    """

    async def body(c: AgentdClient) -> str:
        kind = await _kind(c, subject, as_owner, as_agent)
        await c.set_quota(kind, subject, tokens, period)
        return kind

    kind = run(body)
    if as_json:
        print_json({"kind": kind, "subject": subject, "tokens": tokens, "period": period})
    else:
        click.echo(f"{kind} {subject}: {tokens or 'unlimited'} tokens {period}")


@quota.command(
    "reset",
    epilog="""\b
Examples:
  agentctl quota reset scout""",
)
@click.argument("subject")
@_kind_options
@json_option
def quota_reset(subject: str, as_owner: bool, as_agent: bool, as_json: bool) -> None:
    """Count SUBJECT's usage afresh from now for the current period (the limit stays)."""

    async def body(c: AgentdClient) -> str:
        kind = await _kind(c, subject, as_owner, as_agent)
        await c.reset_quota(kind, subject)
        return kind

    kind = run(body)
    if as_json:
        print_json({"kind": kind, "subject": subject, "reset": True})
    else:
        click.echo(f"{kind} {subject}: usage counted from now")


@quota.command(
    "list",
    short_help="List quotas (alias: ls).",
    epilog="""\b
Examples:
  agentctl quota list --json""",
)
@json_option
def quota_list(as_json: bool) -> None:
    """List the quotas of the agents you may see and of their owners."""
    quotas = run(lambda c: c.list_quotas())
    if as_json:
        print_json(quotas)
        return
    print_table(
        ["KIND", "SUBJECT", "USED", "QUOTA", "PERIOD", "RESETS", "FROM"],
        [
            (
                q["kind"],
                _subject_label(q),
                q["used"],
                q["limit"] or "unlimited",
                q["period"],
                fmt_time(q["resets_at"]),
                q["source"],
            )
            for q in quotas
        ],
    )
