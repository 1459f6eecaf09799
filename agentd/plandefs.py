"""Quota plans as agentd.toml defines them: ``[plans.NAME]`` tables.

A plan is a named bundle of per-owner limits that an administrator assigns
to users or Unix groups (agentd.plans): tokens per period (the owner's token
quota), the most agents, the most memory (the sum of their MemoryMax) and the
templates its agents may use. Every key is optional; one left out is
agentd.toml's own setting for every owner (owner_token_quota,
token_quota_period, max_agents_per_owner, owner_memory_max; every template).

Invariant: a Plan is valid once made. parse_plans() checks every key of
every table and refuses the first bad one with InvalidConfig naming the file,
the plan and the key, before anything is used, so a bad plan never half
applies: agentd does not start (``agentd --check-config`` says why).

Pure: no store, no bus; agentd.config calls it while loading.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import sizes
from .errors import InvalidConfig

PLAN_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}\Z")
MAX_PLANS = 64
MAX_TEMPLATES = 256
KEYS = ("tokens", "period", "max_agents", "max_memory", "templates")
_BOUNDS = {"tokens": (0, 10**15), "max_agents": (0, 100000), "max_memory": (0, 1 << 60)}


@dataclass(frozen=True)
class Plan:
    name: str
    tokens: int  # per period, the owner's token quota; 0: unlimited
    period: str  # daily | weekly | monthly (agentd.config.QUOTA_PERIODS)
    max_agents: int  # as max_agents_per_owner
    max_memory: int  # bytes, as owner_memory_max; 0: no ceiling
    templates: tuple[str, ...] = ()  # allowed templates; empty: every one

    def allows(self, template: str) -> bool:
        return not self.templates or template in self.templates

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "templates": list(self.templates)}


def _integer(where: str, key: str, value: object) -> int:
    if key == "max_memory" and isinstance(value, str):
        try:
            value = sizes.parse_size(value)
        except ValueError as e:
            raise InvalidConfig(f"{where}.{key}: {e}") from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidConfig(f"{where}.{key}: expected an integer, got {value!r}")
    lo, hi = _BOUNDS[key]
    if not lo <= value <= hi:
        raise InvalidConfig(f"{where}.{key}: {value} is outside {lo}..{hi}")
    return value


def _templates(where: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_TEMPLATES:
        raise InvalidConfig(
            f"{where}.templates: expected a list of at most {MAX_TEMPLATES} template names"
        )
    for name in value:
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise InvalidConfig(f"{where}.templates: {name!r} is not a template name")
    return tuple(dict.fromkeys(value))


def parse_plan(
    where: str, name: str, table: object, defaults: Plan, periods: Iterable[str]
) -> Plan:
    """One [plans.NAME] table (WHERE: "FILE: plans.NAME", for messages); a key
    left out is DEFAULTS' (agentd.toml's settings for every owner)."""
    if not PLAN_NAME.match(name):
        raise InvalidConfig(
            f"{where}: a plan name is 1-32 lowercase letters, digits, '-' or '_', "
            "starting with a letter"
        )
    if not isinstance(table, dict):
        raise InvalidConfig(f"{where}: expected a table ([plans.{name}])")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise InvalidConfig(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    values: dict[str, Any] = {"name": name}
    for key, value in table.items():
        if key == "templates":
            values[key] = _templates(where, value)
        elif key == "period":
            if value not in tuple(periods):
                raise InvalidConfig(f"{where}.period: {value!r} is not one of {', '.join(periods)}")
            values[key] = value
        else:
            values[key] = _integer(where, key, value)
    return dataclasses.replace(defaults, **values)


def parse_plans(
    path: str, table: object, defaults: Plan, periods: Iterable[str]
) -> tuple[Plan, ...]:
    """The [plans] table of PATH, in the order written (agentd.plans uses it)."""
    if not isinstance(table, dict):
        raise InvalidConfig(f"{path}: plans must be a table of [plans.NAME] tables")
    if len(table) > MAX_PLANS:
        raise InvalidConfig(f"{path}: plans: at most {MAX_PLANS} plans")
    periods = tuple(periods)
    return tuple(
        parse_plan(f"{path}: plans.{name}", name, value, defaults, periods)
        for name, value in table.items()
    )
