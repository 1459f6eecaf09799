"""The [approval] table: which agent actions wait for the owner's answer.

A template's table (or the admin's copy of it under /etc/agentd/templates)
and the [approval] table of agentd.toml have the same shape:

    [approval]
    tools = ["shell", "fetch"]              # every use of these waits...
    shell_allow = ["ls *", "cat *"]         # ...except commands made only of these
    timeout = "1h"                          # unanswered: denied

Invariant: the admin's policy can only ADD requirements, never waive the
template's: the tools are the union of both; when both gate `shell`, a
command must be allowed by both lists (only patterns written in both
count), and when only one gates it, that one's list applies; the timeout is
the shorter. An owner's `approval grant --always` patterns extend the
agent's list only where the admin's policy does not gate the shell itself:
an owner cannot waive an admin's requirement. Validated when read
(InvalidConfig naming the file), so a typo never silently frees a tool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import InvalidConfig

# The loop's tool names, and the template names that stand for several.
GATEABLE = ("shell", "read_file", "list_files", "write_file", "fetch")
GROUPS = {"files": ("read_file", "list_files", "write_file"), "web": ("fetch",)}
DEFAULT_TIMEOUT = 3600.0
TIMEOUT_BOUNDS = (1.0, 30 * 86400.0)
MAX_PATTERNS = 256
MAX_PATTERN_LEN = 256
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


@dataclass(frozen=True)
class ApprovalRules:
    tools: tuple[str, ...] = ()
    shell_allow: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    timeout_set: bool = False  # written in the table (the admin's caps the template's)

    def merged(self, admin: ApprovalRules) -> ApprovalRules:
        """The template's rules with the admin's policy added (see the module doc)."""
        tools = tuple(dict.fromkeys([*self.tools, *admin.tools]))
        if "shell" in admin.tools and "shell" in self.tools:
            allow = tuple(p for p in self.shell_allow if p in admin.shell_allow)
        elif "shell" in admin.tools:
            allow = admin.shell_allow
        else:
            allow = self.shell_allow
        timeout = min(self.timeout, admin.timeout) if admin.timeout_set else self.timeout
        return ApprovalRules(tools, allow, timeout, self.timeout_set or admin.timeout_set)

    def as_dict(
        self, agent_allow: tuple[str, ...] = (), admin_gates_shell: bool = False
    ) -> dict[str, Any]:
        """The `rules` object of Runtime.TaskApprovals (contract section 2)."""
        allow = list(self.shell_allow)
        if not admin_gates_shell:
            allow += [p for p in agent_allow if p not in allow]
        return {"tools": list(self.tools), "shell_allow": allow, "timeout": self.timeout}


def parse_duration(value: object) -> float:
    """3600, "90s", "30m", "1h", "2d" -> seconds; raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ValueError(f'{value!r} is not a duration like "90s", "30m", "1h" or "2d"')
    lo, hi = TIMEOUT_BOUNDS
    if not lo <= seconds <= hi:
        raise ValueError(f"{value!r} is outside {lo:g}s..{hi / 86400:g}d")
    return seconds


def parse_table(where: str, raw: object) -> ApprovalRules:
    """Validate an [approval] table; WHERE names the file in errors."""
    if not isinstance(raw, dict):
        raise InvalidConfig(f"{where}: [approval] must be a table")
    unknown = set(raw) - {"tools", "shell_allow", "timeout"}
    if unknown:
        raise InvalidConfig(f"{where}: [approval] unknown key(s) {', '.join(sorted(unknown))}")
    tools = raw.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        raise InvalidConfig(f"{where}: [approval] tools must be a list of tool names")
    names: list[str] = []
    for t in tools:
        if t not in GATEABLE and t not in GROUPS:
            known = ", ".join([*GATEABLE, *GROUPS])
            raise InvalidConfig(f"{where}: [approval] tools: unknown tool {t!r} (known: {known})")
        names += GROUPS.get(t, (t,))
    allow = raw.get("shell_allow", [])
    if not isinstance(allow, list) or not all(_pattern_ok(p) for p in allow):
        raise InvalidConfig(
            f"{where}: [approval] shell_allow must be a list of at most {MAX_PATTERNS} "
            f'command patterns like "ls *" (non-empty, printable, <= {MAX_PATTERN_LEN} chars)'
        )
    if len(allow) > MAX_PATTERNS:
        raise InvalidConfig(f"{where}: [approval] shell_allow has more than {MAX_PATTERNS}")
    timeout = DEFAULT_TIMEOUT
    if "timeout" in raw:
        try:
            timeout = parse_duration(raw["timeout"])
        except ValueError as e:
            raise InvalidConfig(f"{where}: [approval] timeout: {e}") from None
    return ApprovalRules(
        tuple(dict.fromkeys(names)), tuple(allow), timeout, timeout_set="timeout" in raw
    )


def _pattern_ok(p: object) -> bool:
    return isinstance(p, str) and 0 < len(p.strip()) <= MAX_PATTERN_LEN and p.isprintable()
