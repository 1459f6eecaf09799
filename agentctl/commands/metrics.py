"""`agentctl metrics`: agentd's Prometheus metrics, as the metrics unit serves them.

The text is agentd's (Observe.Metrics) and filtered for the caller as the
unit's is for agentd-metrics: an administrator sees the fleet, another user
its own agents and tasks. --json parses it into samples (name, labels, value)
for scripts that would rather not parse the exposition format themselves.
"""

from __future__ import annotations

import re
from typing import Any

import click

from ..app import run
from ..output import print_json

SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)\Z")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _unescape(value: str) -> str:
    return re.sub(r"\\[\\\"n]", lambda e: UNESCAPE[str(e.group(0))], value)


def samples(text: str) -> list[dict[str, Any]]:
    """The samples of exposition TEXT; comment lines (HELP, TYPE) are skipped."""
    out = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if line.startswith("#") or m is None:
            continue
        labels = {k: _unescape(v) for k, v in LABEL.findall(m["labels"] or "")}
        out.append({"name": m["name"], "labels": labels, "value": float(m["value"])})
    return out


@click.command(
    "metrics",
    short_help="Print agentd's Prometheus metrics.",
    epilog="""\b
Examples:
  agentctl metrics
  agentctl metrics | grep '^agentd_agents{'
  agentctl metrics --json | jq '.[] | select(.name == "agentd_tasks")'
  curl -s http://127.0.0.1:9479/metrics    # the same, from agentd-metrics.socket""",
)
@click.option("--json", "as_json", is_flag=True, help="Print the samples as JSON, for programs.")
def metrics(as_json: bool) -> None:
    """Print agentd's metrics in Prometheus' text format: agents by state, tasks
    by status, queue depth, the claim latency histogram, tokens by agent and
    owner, the model service's queue and throughput, audit rows and errors
    (the list: /usr/share/doc/agentd/metrics.md).

    Administrators see the whole fleet and agentd's own counters; other users
    the series of their own agents and tasks, and the model service's.
    Prometheus scrapes the same text from agentd-metrics.socket
    (127.0.0.1:9479), served as the unprivileged user agentd-metrics.
    """
    text = run(lambda c: c.metrics())
    if as_json:
        print_json(samples(text))
    else:
        click.echo(text, nl=False)
