"""`agentctl template`: the templates agents are created from (read-only).

Templates are agentd's configuration (vendor files overridden by /etc), so
there is nothing to change here: list them and show one.
"""

from __future__ import annotations

import click

from ..app import AliasGroup, json_option, run
from ..output import Field, fmt_mib, fmt_percent, getter, print_fields, print_json, print_table

TEMPLATE_FIELDS: list[Field] = [
    ("name", "Name", getter("name")),
    ("description", "Description", getter("description")),
    ("profile", "Profile", getter("profile")),
    ("profile_description", "Profile description", getter("profile_description")),
    ("network", "Network", getter("network")),
    ("capabilities", "Capabilities", getter("capabilities")),
    ("tools", "Tools", getter("tools")),
    ("token_budget", "Token budget", getter("token_budget")),
    ("memory_max", "Memory max", getter("memory_max", fmt_mib)),
    ("cpu_quota", "CPU quota", getter("cpu_quota", fmt_percent)),
    ("tasks_max", "Tasks max", getter("tasks_max")),
    ("source", "Source", getter("source")),
    ("system_prompt", "System prompt", getter("system_prompt")),
]


@click.group(
    cls=AliasGroup,
    aliases={"ls": "list"},
    epilog="""\b
Examples:
  agentctl template list
  agentctl template show research""",
)
def template() -> None:
    """Inspect the templates agents are created from.

    Vendor templates live in /usr/share/agentd/templates; a file of the same
    name in /etc/agentd/templates replaces one.
    """


@template.command(
    "list",
    short_help="List templates (alias: ls).",
    epilog="""\b
Example:
  agentctl template list --json | jq -r '.[].name'""",
)
@json_option
def template_list(as_json: bool) -> None:
    """List the templates an agent can be created from.

    Columns: NAME, PROFILE (the sandbox profile), CAPABILITIES and
    DESCRIPTION.
    """
    templates = sorted(run(lambda c: c.list_templates()), key=lambda t: t["name"])
    if as_json:
        print_json(templates)
        return
    print_table(
        ("NAME", "PROFILE", "CAPABILITIES", "DESCRIPTION"),
        [
            (t["name"], t["profile"], ",".join(t["capabilities"]), t["description"])
            for t in templates
        ],
    )


@template.command(
    "show",
    epilog="""\b
Example:
  agentctl template show research""",
)
@click.argument("name")
@json_option
def template_show(name: str, as_json: bool) -> None:
    """Show template NAME: capabilities, tools, sandbox profile, limits, prompt."""
    info = run(lambda c: c.describe_template(name))
    if as_json:
        print_json(info)
    else:
        print_fields(info, TEMPLATE_FIELDS)
