"""`agentctl plan`: quota plans, named in agentd.toml and assigned to users and groups.

A thin client of the Model interface's ListPlans, DescribePlan and
AssignPlan (agentd.plans decides, authorizes and audits): anyone reads the
plans and their own; administrators see and change who has which.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from ..app import AliasGroup, env, json_option, run
from ..output import (
    Field,
    fmt_time,
    fmt_user,
    getter,
    print_fields,
    print_json,
    print_section,
    print_table,
)
from ..plans_view import fmt_memory, fmt_source, fmt_templates, fmt_tokens

PLAN_FIELDS: tuple[Field, ...] = (
    ("name", "Name", getter("name")),
    ("tokens", "Tokens", getter("tokens", fmt_tokens)),
    ("period", "Period", getter("period")),
    ("max_agents", "Max agents", getter("max_agents")),
    ("max_memory", "Max memory", getter("max_memory", fmt_memory)),
    ("templates", "Templates", getter("templates", fmt_templates)),
    ("default", "Default plan", getter("default", lambda d: "yes" if d else "no")),
    ("source", "From", getter("source")),
    ("user", "User", getter("user", fmt_user)),
)


def _assigned(assignments: list[dict[str, Any]] | None, plan: str) -> str:
    """Who has PLAN: users by name, groups as @NAME ('-' when not shown)."""
    if assignments is None:
        return "-"
    names = [
        ("@" if a["kind"] == "group" else "") + a["name"] for a in assignments if a["plan"] == plan
    ]
    return ", ".join(names)


@click.group(
    cls=AliasGroup,
    aliases={"ls": "list"},
    epilog="""\b
Examples:
  agentctl plan list
  agentctl plan show pro
  agentctl plan show --user alice
  agentctl plan assign pro --user alice
  agentctl plan assign team --group research
  agentctl plan unassign --user alice""",
)
def plan() -> None:
    """Show and assign quota plans.

    A plan is a named bundle of per-owner limits in agentd.toml
    ([plans.NAME]): tokens per period (the owner's token quota), the most
    agents, the most memory (the sum of their MemoryMax) and the templates
    the owner's agents may use. An administrator assigns plans to users and
    Unix groups. A user's plan is, first found: the plan assigned to the user,
    the plan assigned to one of the user's groups (of several, the plan
    written last in agentd.toml), default_plan, none. A change takes effect
    at the next request, and is audited (plan.assign).
    """


@plan.command(
    "list",
    short_help="List the plans (alias: ls).",
    epilog="""\b
Examples:
  agentctl plan list
  agentctl plan list --json | jq '.yours.name'""",
)
@json_option
def plan_list(as_json: bool) -> None:
    """List the plans of agentd.toml, in the order written, and say which is yours.

    ASSIGNED (administrators only) names the users and @groups that have
    each plan. Without a terminal, each line is NAME TOKENS PERIOD
    MAX-AGENTS MAX-MEMORY TEMPLATES ASSIGNED (tab-separated; tokens and
    memory 0 are unlimited, no templates is all of them).
    """
    found = run(lambda c: c.list_plans())
    if as_json:
        print_json(found)
        return
    yours = found.get("yours") or {}
    tty = env().is_tty()
    rows = [
        (
            p["name"] + (" *" if tty and p["name"] == yours.get("name") else ""),
            fmt_tokens(p["tokens"]) if tty else p["tokens"],
            p["period"],
            p["max_agents"],
            fmt_memory(p["max_memory"]) if tty else p["max_memory"],
            fmt_templates(p["templates"]) if tty else ",".join(p["templates"]),
            _assigned(found.get("assignments"), p["name"]),
        )
        for p in found["plans"]
    ]
    print_table(["NAME", "TOKENS", "PERIOD", "AGENTS", "MEMORY", "TEMPLATES", "ASSIGNED"], rows)
    if tty:
        click.echo()
        if not found["plans"]:
            click.echo("No plans: agentd.toml defines none ([plans.NAME]).")
        elif yours:
            click.echo(f"* your plan: {yours['name']} (from {fmt_source(yours)})")
        else:
            click.echo("You have no plan: agentd.toml's settings for every owner apply.")


@plan.command(
    "show",
    epilog="""\b
Examples:
  agentctl plan show
  agentctl plan show enterprise
  agentctl plan show --user alice --json""",
)
@click.argument("name", required=False, default="")
@click.option(
    "--user",
    "user",
    default="",
    metavar="USER",
    help="Show USER's plan (a user name or UID; others' for administrators only).",
)
@json_option
def plan_show(name: str, user: str, as_json: bool) -> None:
    """Show plan NAME, or the plan of a user (without NAME: yours).

    For a plan: its limits and whether it is default_plan; administrators
    also see who it is assigned to. For a user: the plan and where it comes
    from (the user's own assignment, a group's, or default_plan).
    """
    if name and user:
        raise click.UsageError("give a plan NAME or --user, not both")
    found = run(lambda c: c.describe_plan(name, user))
    if as_json:
        print_json(found)
        return
    if name:
        print_fields({k: v for k, v in found.items() if k != "assignments"}, PLAN_FIELDS)
        assignments = found.get("assignments")
        if assignments is not None:
            rows: list[Sequence[Any]] = [
                (a["kind"], a["name"], a["id"], fmt_user(a["set_by"]), fmt_time(a["set_at"]))
                for a in assignments
            ]
            print_section("Assigned to", "assignment", ["KIND", "NAME", "ID", "BY", "AT"], rows)
        return
    mine = found["plan"]
    if mine is None:
        if env().is_tty():
            click.echo(
                f"{fmt_user(found['uid'])} has no plan: agentd.toml's settings for every "
                "owner apply."
            )
        else:
            click.echo(f"uid\t{found['uid']}\nplan\t-")
        return
    info = {k: v for k, v in mine.items() if k != "group"}
    info.update(user=found["uid"], source=fmt_source(mine))
    print_fields(info, PLAN_FIELDS)


def _subject(user: str, group: str) -> tuple[str, str]:
    if bool(user) == bool(group):
        raise click.UsageError("give exactly one of --user and --group")
    return ("user", user) if user else ("group", group)


user_option = click.option("--user", default="", metavar="USER", help="A user, by name or UID.")
group_option = click.option(
    "--group", default="", metavar="GROUP", help="A Unix group, by name or GID."
)


@plan.command(
    "assign",
    epilog="""\b
Examples:
  agentctl plan assign pro --user alice
  agentctl plan assign team --group research""",
)
@click.argument("name")
@user_option
@group_option
@json_option
def plan_assign(name: str, user: str, group: str, as_json: bool) -> None:
    """Administrators: give a user or a Unix group plan NAME.

    It replaces the plan the user or group had, and takes effect at the
    next request (the next agent created, the next model request). The
    change is audited (plan.assign, with the previous plan). An
    administrator's `agentctl quota set` for an owner still comes before
    the plan's tokens.
    """
    kind, subject = _subject(user, group)
    run(lambda c: c.assign_plan(kind, subject, name))
    if as_json:
        print_json({"kind": kind, "subject": subject, "plan": name})
    else:
        click.echo(f"{kind} {subject}: plan {name}")


@plan.command(
    "unassign",
    epilog="""\b
Examples:
  agentctl plan unassign --user alice
  agentctl plan unassign --group research""",
)
@user_option
@group_option
@json_option
def plan_unassign(user: str, group: str, as_json: bool) -> None:
    """Administrators: take a user's or a Unix group's plan away.

    The user's plan is then its groups', default_plan's, or none, from the
    next request on. Audited (plan.assign, with an empty plan).
    """
    kind, subject = _subject(user, group)
    run(lambda c: c.assign_plan(kind, subject, ""))
    if as_json:
        print_json({"kind": kind, "subject": subject, "plan": None})
    else:
        click.echo(f"{kind} {subject}: no plan")
