"""Per-owner ceilings: what all of one owner's agents may hold together.

Each agent's MemoryMax, CPUQuota and TasksMax are bounded on their own
(agentd.templates: 64 GiB, 800 %, 16,384), and an ordinary owner may hold
max_agents_per_owner (16) agents; without a bound on the sums one user could
ask systemd for 1 TiB of memory, 128 CPUs and 262,144 tasks, and agents.slice
has one TasksMax for every owner together. So:

Invariant: for every ordinary owner, the sums of MemoryMax, CPUQuota and
TasksMax over its agents that are not removed (``creating``, ``present``,
``removing``: a removal in progress still holds its unit until it ends) are
within owner_memory_max, owner_cpu_quota_max and owner_tasks_max (agentd.toml;
0: no ceiling). The registry calls check() while it holds its allocation lock
and before it writes the ``creating`` row, so a refused create leaves nothing
behind (no row, user, home or unit) and two concurrent creates cannot both
pass on the same sum. An agent's limits never change after it is created (no
method sets them); were one added, it would call check() with ``replacing``.
Administrators are exempt (the registry does not call check() for them), as
from max_agents_per_owner.

Pure: it is given the owner's agents, so it needs no registry, store or bus.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .config import Config
from .errors import LimitExceeded
from .templates import Limits


class HasLimits(Protocol):
    """An agent as check() reads it (agentd.agent.Agent is one)."""

    @property
    def name(self) -> str: ...
    @property
    def limits(self) -> Limits: ...


@dataclass(frozen=True)
class Ceiling:
    key: str  # the agentd.toml setting
    what: str  # for the message
    field: str  # the Limits attribute summed

    def most(self, cfg: Config) -> int:
        value: int = getattr(cfg, self.key)
        return value

    def show(self, value: int) -> str:
        if self.field == "memory_max":
            return _bytes(value)
        if self.field == "cpu_quota":
            return f"{value} % CPU"
        return f"{value} tasks"


CEILINGS = (
    Ceiling("owner_memory_max", "memory (MemoryMax)", "memory_max"),
    Ceiling("owner_cpu_quota_max", "CPU (CPUQuota)", "cpu_quota"),
    Ceiling("owner_tasks_max", "tasks (TasksMax)", "tasks_max"),
)


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            shown = n / size
            return f"{shown:.0f} {unit}" if shown == int(shown) else f"{shown:.2f} {unit}"
    return f"{n} bytes"


def totals(agents: Iterable[HasLimits], replacing: str | None = None) -> Limits:
    """The sums of the three limits over AGENTS (but the one named REPLACING).

    A Limits holding sums, not one agent's limits: never validated."""
    memory = cpu = tasks = 0
    for agent in agents:
        if agent.name == replacing:
            continue
        memory += agent.limits.memory_max
        cpu += agent.limits.cpu_quota
        tasks += agent.limits.tasks_max
    return Limits(memory, cpu, tasks)


def check(
    cfg: Config,
    owner_uid: int,
    agents: Iterable[HasLimits],
    asked: Limits,
    replacing: str | None = None,
    note: str = "",
) -> None:
    """LimitExceeded if OWNER_UID's AGENTS (its agents not removed) plus one
    more with ASKED limits (or, REPLACING: that agent's limits changed to ASKED)
    would pass a ceiling; the message names the ceiling, the owner's sum and
    what was asked. Every ceiling passed is named, the first one first. CFG is
    the owner's (its quota plan's, agentd.plans); NOTE says where it came from."""
    agents = list(agents)
    held = totals(agents, replacing)
    count = sum(1 for a in agents if a.name != replacing)
    over = []
    for c in CEILINGS:
        most = c.most(cfg)
        have, want = getattr(held, c.field), getattr(asked, c.field)
        if most and have + want > most:
            over.append(
                f"{c.what}: its {count} agent(s) hold {c.show(have)}, this agent asks "
                f"{c.show(want)}, {c.show(have + want)} in all, over the ceiling of "
                f"{c.show(most)} ({c.key}={most}{note})"
            )
    if over:
        raise LimitExceeded(f"uid {owner_uid} would pass a per-owner ceiling: " + "; ".join(over))
