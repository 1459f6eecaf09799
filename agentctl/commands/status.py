"""`agentctl status`: agentd's version, uptime, agent counts and configuration.

Reads Manager's properties (Version, StartTimestamp, NAgents, NOnline,
Config); the uptime is computed here from StartTimestamp.
"""

from __future__ import annotations

import time
from typing import Any

import click

from ..app import env, json_option, run
from ..output import fmt_duration, fmt_time, plain, print_grid, print_json


@click.command(
    "status",
    short_help="Show agentd's version, uptime, counts and config.",
    epilog="""\b
Examples:
  agentctl status
  agentctl status --json | jq -r .config.uid_min""",
)
@json_option
def status(as_json: bool) -> None:
    """Show agentd's version, uptime, agent counts and the configuration in force.

    Agents counts every registered agent; online those whose runtime has
    registered with agentd and keeps sending heartbeats. The configuration is
    /etc/agentd/agentd.toml merged over the defaults, as agentd read it.
    """
    st = run(lambda c: c.status())
    started = st["start_timestamp"] / 1e6 if st["start_timestamp"] else None
    uptime = time.time() - started if started else None
    if as_json:
        print_json(dict(st, uptime_sec=None if uptime is None else round(uptime, 3)))
    elif env().is_tty():
        _print_terminal(st, started, uptime)
    else:
        _print_plain(st, started, uptime)


def _rows(st: dict[str, Any], started: float | None, uptime: str) -> list[tuple[str, str, str]]:
    """(key, label, value) of the daemon's own lines."""
    return [
        ("version", "Version", st["version"]),
        ("started", "Started", fmt_time(started)),
        ("uptime_sec", "Uptime", uptime),
        ("agents", "Agents", str(st["n_agents"])),
        ("online", "Online", str(st["n_online"])),
    ]


def _print_plain(st: dict[str, Any], started: float | None, uptime: float | None) -> None:
    """KEY<TAB>VALUE lines, uptime in whole seconds, then config.KEY lines."""
    for key, _label, value in _rows(st, started, "-" if uptime is None else str(int(uptime))):
        click.echo(f"{key}\t{plain(value)}")
    for key, value in sorted(st["config"].items()):
        click.echo(f"config.{key}\t{plain(value)}")


def _print_terminal(st: dict[str, Any], started: float | None, uptime: float | None) -> None:
    """Labelled lines, uptime as systemctl writes it, then the configuration indented."""
    rows = _rows(st, started, "-" if uptime is None else fmt_duration(uptime))
    print_grid(
        [
            *((label + ":", value, "") for _key, label, value in rows),
            ("Config:", "", ""),
            *((f"  {key}", value, "") for key, value in sorted(st["config"].items())),
        ]
    )
