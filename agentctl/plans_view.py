"""How agentctl shows a quota plan (agentd.plans): shared by `agentctl plan`
and `agentctl usage`, which as command modules may not import each other.
"""

from __future__ import annotations

from typing import Any

from .output import fmt_bytes


def fmt_tokens(n: int) -> str:
    return f"{n:,}" if n else "unlimited"


def fmt_memory(n: int) -> str:
    return fmt_bytes(n) if n else "no ceiling"


def fmt_templates(names: list[str]) -> str:
    return ", ".join(names) if names else "all"


def fmt_source(plan: dict[str, Any]) -> str:
    """Where an owner's plan comes from: its user, a group, or default_plan."""
    if plan["source"] == "group":
        return f"group {plan['group']}"
    return "default_plan" if plan["source"] == "default" else "user"


def describe(plan: dict[str, Any]) -> str:
    """One line: NAME: tokens per period, agents, memory, templates."""
    return (
        f"{plan['name']}: {fmt_tokens(plan['tokens'])} tokens {plan['period']}, "
        f"{plan['max_agents']} agents, memory {fmt_memory(plan['max_memory'])}, "
        f"templates {fmt_templates(plan['templates'])}"
    )
