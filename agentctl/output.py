"""How agentctl prints: value formatters and the table, field and JSON printers.

One place for the output conventions every command follows: on a terminal,
rich tables and colour; otherwise plain tab-separated lines without headers
(tabs and newlines in values escaped), so `agentctl agent list | cut -f1`
works; --json prints the raw values for programs. Formatters turn raw values
(bytes, seconds since the epoch, UIDs) into text for people and write "-"
for unknown. Whether stdout is a terminal comes from app.env(), so tests can
choose.
"""

from __future__ import annotations

import datetime
import json
import pwd
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

from .app import env

STATE_STYLES = {
    "active": "green",
    "reloading": "green",
    "failed": "bold red",
    "activating": "yellow",
    "deactivating": "yellow",
    "inactive": "dim",
    "ok": "green",
    "denied": "bold red",
    "error": "bold red",
    # task statuses
    "pending": "",
    "in_progress": "yellow",
    "blocked": "bold yellow",
    "completed": "green",
    "cancelled": "dim",
    "dead_lettered": "bold red",
}
# the columns a table may wrap (the others are cut short with an ellipsis)
WIDE_COLUMNS = ("DESCRIPTION", "DETAIL", "TITLE", "SOURCE", "TEXT")
FOLD_COLUMNS = ("SOURCE",)  # paths: broken anywhere rather than cut, to be seen whole
_BYTE_UNITS = (("B", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30))


# -- users ------------------------------------------------------------------------------
def user_name(uid: int | None) -> str | None:
    """The user name of UID, or None if this machine has no such user."""
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None


def user_cell(uid: int) -> str | int:
    """A table cell for a user: the name if this machine knows it, else the UID."""
    return user_name(uid) or uid


def fmt_user(uid: int | None) -> str:
    """'alice (1000)', or the bare UID of an unknown user, '-' for none."""
    if uid is None:
        return "-"
    name = user_name(uid)
    return f"{name} ({uid})" if name else str(uid)


# -- values -----------------------------------------------------------------------------
def fmt_bytes(n: float | None, unit: str | None = None) -> str:
    """A size for people: 512 B, 1.5 KiB, 12 MiB; in UNIT if given (1024 MiB)."""
    if n is None:
        return "-"
    if unit is None:
        unit = next((u for u, size in reversed(_BYTE_UNITS) if n >= size), "B")
    value = n / dict(_BYTE_UNITS)[unit]
    text = str(int(value)) if unit == "B" else f"{value:.1f}".removesuffix(".0")
    return f"{text} {unit}"


def fmt_mib(n: float | None) -> str:
    """A size in MiB, as `agent show` and `template show` print limits and use."""
    return fmt_bytes(n, "MiB")


def fmt_percent(pct: int) -> str:
    """A CPU quota: 150%."""
    return f"{pct}%"


def fmt_time(ts: float | None) -> str:
    """Seconds since the epoch -> local ISO 8601 time; 0 and None mean never/unknown."""
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def fmt_list_time(ts: float | None) -> str:
    """Times in lists: local ISO 8601 in a pipe, 'YYYY-MM-DD HH:MM' in a terminal's table."""
    if not ts or not env().is_tty():
        return fmt_time(ts)
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def fmt_age(ts: float | None, now: float | None = None) -> str:
    """How long ago, kubectl style: 45s, 12m, 5h, 3d."""
    if not ts:
        return "-"
    s = max(0, int((time.time() if now is None else now) - ts))
    for unit, size, below in (("s", 1, 120), ("m", 60, 7200), ("h", 3600, 172800)):
        if s < below:
            return f"{s // size}{unit}"
    return f"{s // 86400}d"


def fmt_duration(seconds: float) -> str:
    """3725 -> '1h 2min 5s', the way systemctl status writes spans."""
    s = max(0, int(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    if s or not parts:
        parts.append(f"{s}s")
    return " ".join(parts)


def fmt_detail(detail: Any) -> str:
    """An audit entry's detail: key=value pairs."""
    if isinstance(detail, dict):
        return " ".join(f"{k}={v}" for k, v in detail.items())
    return "" if detail is None else str(detail)


def fmt_event_detail(detail: Any) -> str:
    """An event's detail without task_id (a column of its own, or the task shown)."""
    if isinstance(detail, dict):
        detail = {k: v for k, v in detail.items() if k != "task_id"}
    return fmt_detail(detail)


def dash(value: Any) -> str:
    """'-' for an empty or missing value (the bus sends "" for none)."""
    return "-" if value in ("", None) else str(value)


def raw(value: Any) -> str:
    """Any value as text: lists comma-separated, dicts as k=v, booleans yes/no."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={raw(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def is_binary(data: bytes) -> bool:
    """What a terminal should not get: NUL bytes or anything that is not UTF-8."""
    if b"\0" in data:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def plain(value: Any) -> str:
    """A cell of tab-separated output: tabs and newlines escaped so rows stay rows."""
    text = "-" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def plain_line(cells: Iterable[Any]) -> str:
    """One tab-separated line of output."""
    return "\t".join(plain(cell) for cell in cells)


# -- printers ---------------------------------------------------------------------------
def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], style_column: int | None = None
) -> None:
    """A rich table on a terminal; tab-separated lines without a header otherwise."""
    if not env().is_tty():
        for row in rows:
            click.echo(plain_line(row))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in columns:
        fold = col in FOLD_COLUMNS
        table.add_column(
            col, no_wrap=col not in WIDE_COLUMNS, overflow="fold" if fold else "ellipsis"
        )
    for row in rows:
        cells = [Text("-" if c is None else str(c)) for c in row]
        if style_column is not None:
            cells[style_column].stylize(STATE_STYLES.get(str(row[style_column]), ""))
        table.add_row(*cells)
    Console(highlight=False).print(table)


def print_section(
    title: str,
    prefix: str,
    columns: Sequence[str],
    rows: list[Sequence[Any]],
    style_column: int | None = None,
) -> None:
    """A titled table after `show`'s fields on a terminal; in a pipe, one line per row
    starting with PREFIX, so `awk -F'\\t' '$1 == "artifact"'` picks them out."""
    if not env().is_tty():
        for row in rows:
            click.echo(plain_line([prefix, *row]))
        return
    click.echo()
    click.echo(click.style(title, bold=True) + ("" if rows else ": none"))
    if rows:
        print_table(columns, rows, style_column=style_column)


# (key, label, how to format the value of `show`'s dict)
Field = tuple[str, str, Callable[[dict[str, Any]], str]]


def getter(key: str, fmt: Callable[[Any], str] = raw) -> Callable[[dict[str, Any]], str]:
    """The Field formatter that shows info[KEY] through FMT."""
    return lambda info: fmt(info[key])


def print_fields(
    info: dict[str, Any], fields: Sequence[Field], styled: Iterable[str] = ("active_state",)
) -> None:
    """`show` output: label/value pairs, then any key this version does not know.

    On a terminal, the values of the keys in STYLED are coloured as STATE_STYLES says."""
    styled = set(styled)
    known = {key for key, _label, _fmt in fields}
    rows = [(key, label, fmt(info)) for key, label, fmt in fields if key in info]
    rows += [(key, key, raw(info[key])) for key in sorted(info) if key not in known]
    if not env().is_tty():
        for key, _label, value in rows:
            click.echo(f"{key}\t{plain(value)}")
        return
    print_grid(
        (label + ":", value, STATE_STYLES.get(str(info[key]), "") if key in styled else "")
        for key, label, value in rows
    )


def print_grid(rows: Iterable[tuple[str, str, str]]) -> None:
    """Bold labels and their values, aligned, on a terminal; each row is (label, value,
    style of the value)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for label, value, style in rows:
        text = Text(value)
        if style:
            text.stylize(style)
        grid.add_row(Text(label), text)
    Console(highlight=False).print(grid)
