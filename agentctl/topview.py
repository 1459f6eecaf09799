"""What `agentctl top` shows: rows from two snapshots, sorting, filtering, keys.

Pure (no terminal, no D-Bus), so each part is tested alone: agentd's Fleet
snapshot carries raw counters, and a CPU share only exists between two of
them, so rows() takes the previous snapshot and the current one; a unit that
restarted in between (its counter went down, or its main PID changed) has no
share until the next refresh rather than a wrong one. View holds what the
person chose (sort key and direction, filter) and takes one key at a time;
render() builds the screen with rich. agentctl.commands.top drives it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .output import STATE_STYLES, fmt_bytes

# key -> (sort name, the row's value, biggest first)
SORTS: dict[str, tuple[str, bool]] = {
    "cpu": ("cpu_percent", True),
    "memory": ("memory_current", True),
    "tokens": ("tokens_last_minute", True),
    "processes": ("tasks_current", True),
    "approvals": ("approvals_pending", True),
    "name": ("name", False),
    "state": ("state", False),
}
KEYS = {
    "c": "cpu",
    "m": "memory",
    "t": "tokens",
    "p": "processes",
    "a": "approvals",
    "n": "name",
    "s": "state",
}
HELP = "q quit  c cpu  m memory  t tokens  p procs  a approvals  n name  s state  / filter"
ESC, ENTER, BACKSPACE = "\x1b", ("\r", "\n"), ("\x7f", "\b")
SEARCHED = ("name", "owner", "template", "state", "task_title")


def cpu_percent(before: dict[str, Any] | None, now: dict[str, Any], seconds: float) -> float | None:
    """NOW's CPU use since BEFORE in percent of one CPU, or None if there is no
    fair measure (no earlier sample, no time between, a restarted unit)."""
    if before is None or seconds <= 0:
        return None
    a, b = before.get("cpu_usage_nsec"), now.get("cpu_usage_nsec")
    if a is None or b is None or b < a or before.get("main_pid") != now.get("main_pid"):
        return None
    return round(float(b - a) / (seconds * 1e9) * 100, 1)


def rows(previous: dict[str, Any] | None, current: dict[str, Any]) -> list[dict[str, Any]]:
    """CURRENT's agents, each with cpu_percent against PREVIOUS (the same agent)."""
    before = {a["name"]: a for a in (previous or {}).get("agents", [])}
    seconds = float(current.get("at", 0)) - float((previous or {}).get("at", 0))
    out = []
    for agent in current.get("agents", []):
        row = dict(agent)
        row["cpu_percent"] = cpu_percent(before.get(agent["name"]), agent, seconds)
        out.append(row)
    return out


def matches(row: dict[str, Any], pattern: str) -> bool:
    """Whether PATTERN (case-insensitive) is in the row's name, owner, template,
    state or task title."""
    needle = pattern.lower()
    return any(needle in str(row.get(key) or "").lower() for key in SEARCHED)


def select(
    found: Iterable[dict[str, Any]], sort: str = "cpu", reverse: bool = False, pattern: str = ""
) -> list[dict[str, Any]]:
    """The rows PATTERN matches, sorted by SORT (biggest first for numbers, A-Z
    for names; REVERSE turns it); rows without a value go last, then by name."""
    key, descending = SORTS[sort]
    kept = [r for r in found if not pattern or matches(r, pattern)]
    kept.sort(key=lambda r: r["name"])
    have = [r for r in kept if r.get(key) is not None]
    missing = [r for r in kept if r.get(key) is None]
    have.sort(key=lambda r: r[key], reverse=descending != reverse)
    return have + missing


@dataclass
class View:
    """The person's choices, changed one key at a time."""

    sort: str = "cpu"
    reverse: bool = False
    pattern: str = ""
    typing: str | None = None  # the filter being typed after '/', None when not
    done: bool = False

    def key(self, ch: str) -> None:
        if self.typing is not None:
            self._type(ch)
        elif ch in ("q", "Q", "\x03"):
            self.done = True
        elif ch == "/":
            self.typing = ""
        elif ch in KEYS:
            chosen = KEYS[ch]
            self.reverse = not self.reverse if chosen == self.sort else False
            self.sort = chosen
        elif ch == ESC:
            self.pattern = ""

    def _type(self, ch: str) -> None:
        assert self.typing is not None
        if ch in ENTER:
            self.pattern, self.typing = self.typing, None
        elif ch == ESC:
            self.typing = None
        elif ch in BACKSPACE:
            self.typing = self.typing[:-1]
        elif ch.isprintable() and len(self.typing) < 64:
            self.typing += ch


def _cell(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _task(row: dict[str, Any]) -> str:
    if row.get("task_id") is None:
        return "-"
    return f"#{row['task_id']} {row.get('task_title') or ''}".strip()


def header(model: dict[str, Any], shown: int, total: int, view: View) -> Text:
    state = model.get("state", "unknown")
    line = Text(f"agents {shown}/{total}   model ")
    line.append(str(state), style="green" if state == "loaded" else "yellow")
    if model.get("name"):
        line.append(f" {model['name']}")
    line.append(f"   queue {_cell(model.get('queued'))}")
    line.append(f"   batch {_cell(model.get('active'))}/{_cell(model.get('sequences'))}")
    line.append(f"   {_cell(model.get('tokens_per_second'))} tok/s")
    arrow = "↑" if view.reverse != (not SORTS[view.sort][1]) else "↓"
    line.append(f"\nsort {view.sort} {arrow}")
    if view.typing is not None:
        line.append(f"   filter: {view.typing}_", style="bold")
    elif view.pattern:
        line.append(f"   filter: {view.pattern}", style="bold")
    return line


def table(shown: list[dict[str, Any]]) -> Table:
    grid = Table(box=None, pad_edge=False, header_style="bold reverse", expand=True)
    for col, justify in (
        ("NAME", "left"),
        ("OWNER", "left"),
        ("STATE", "left"),
        ("CPU%", "right"),
        ("MEM", "right"),
        ("PROCS", "right"),
        ("TASK", "left"),
        ("STEP", "right"),
        ("TOK/MIN", "right"),
        ("APPR", "right"),
    ):
        grid.add_column(
            col,
            justify="right" if justify == "right" else "left",
            no_wrap=True,
            overflow="ellipsis",
            ratio=3 if col == "TASK" else None,
        )
    for r in shown:
        grid.add_row(
            r["name"],
            str(r.get("owner") or r.get("owner_uid")),
            Text(str(r["state"]), style=STATE_STYLES.get(str(r["state"]), "")),
            _cell(r.get("cpu_percent"), "{:.1f}"),
            fmt_bytes(r.get("memory_current")),
            _cell(r.get("tasks_current")),
            _task(r),
            _cell(r.get("step")),
            _cell(r.get("tokens_last_minute")),
            _cell(r.get("approvals_pending") or None),
        )
    return grid


def render(found: list[dict[str, Any]], model: dict[str, Any], view: View) -> RenderableType:
    shown = select(found, view.sort, view.reverse, view.pattern)
    return Group(header(model, len(shown), len(found), view), table(shown), Text(HELP, style="dim"))
