"""`agentctl task show`, `task artifact`, `task log` and `task reply`: one task,
everything about it.

Kept apart from agentctl.commands.task (which adds them to the `task` group):
reading a task's fields, history, artifacts and trace is its own concern. The
trace (issue 12) is each step the agent recorded (RecordStep), which agentd
shows to the task's owner and administrators only (ListTaskSteps, as
DescribeTask); `task reply` answers a task blocked on a question (ReplyTask).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import click

from ..app import env, fail, json_option, run
from ..client import AgentdClient
from ..output import (
    Field,
    dash,
    fmt_bytes,
    fmt_event_detail,
    fmt_list_time,
    fmt_time,
    fmt_user,
    getter,
    is_binary,
    print_fields,
    print_json,
    print_section,
    print_table,
    user_cell,
)
from ..params import TASK_ID


def fmt_result(text: str) -> str:
    """A task's result (JSON text): indented on a terminal, one line otherwise;
    text that is not JSON as it is."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if env().is_tty():
        return json.dumps(value, indent=2, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)


TASK_FIELDS: list[Field] = [
    ("id", "ID", getter("id")),
    ("title", "Title", getter("title")),
    ("status", "Status", getter("status")),
    ("priority", "Priority", getter("priority")),
    ("project", "Project", getter("project", dash)),
    ("agent", "Agent", getter("agent", dash)),
    ("owner_uid", "Owner", getter("owner_uid", fmt_user)),
    ("description", "Description", getter("description")),
    ("needs", "Needs", getter("needs")),
    ("after", "After", getter("after")),
    ("exec", "Exec", getter("exec")),
    ("attempts", "Attempts", getter("attempts")),
    ("max_attempts", "Max attempts", getter("max_attempts")),
    ("block_reason", "Blocked on", getter("block_reason")),
    ("steps", "Steps", getter("steps")),
    ("notes", "Notes", getter("notes", lambda notes: "\n".join(notes))),
    ("error", "Error", getter("error")),
    ("result", "Result", getter("result", fmt_result)),
    ("created_at", "Created", getter("created_at", fmt_time)),
    ("updated_at", "Updated", getter("updated_at", fmt_time)),
    ("started_at", "Started", getter("started_at", fmt_time)),
    ("finished_at", "Finished", getter("finished_at", fmt_time)),
    ("lease_expires", "Lease expires", getter("lease_expires", fmt_time)),
]
# left out of `task show`'s text when empty ("" or no items): nothing to say
OPTIONAL_TASK_FIELDS = (
    "description",
    "needs",
    "after",
    "exec",
    "block_reason",
    "notes",
    "error",
    "result",
)


@click.command(
    "show",
    short_help="Show a task: fields, result, history, artifacts.",
    epilog="""\b
Examples:
  agentctl task show 42
  agentctl task show 42 | awk -F'\\t' '$1 == "artifact" {print $2}'
  agentctl task show 42 --json | jq '.result | fromjson'""",
)
@click.argument("task_id", metavar="ID", type=TASK_ID)
@json_option
def task_show(task_id: int, as_json: bool) -> None:
    """Show task ID: every field, its result, its history and its artifacts.

    The result (JSON, as the agent reported it) is indented on a terminal.
    The history lists the task's events from the audit trail (created,
    assigned, claimed, blocked, completed, ...) with who caused each; the
    artifacts, the files the agent registered (get one with `task
    artifact`); a terminal gets the start of each SHA-256, a pipe or --json
    all of it. Without a terminal: `KEY<TAB>VALUE` lines, then one
    `event<TAB>SEQ<TAB>TIME<TAB>ACTOR<TAB>EVENT<TAB>RESULT<TAB>DETAIL` line
    per event and one `artifact<TAB>NAME<TAB>TYPE<TAB>SIZE<TAB>SHA256` line
    per artifact (sizes in bytes). --json prints DescribeTask's fields (times
    in seconds since the epoch, result as JSON text) plus "events",
    "artifacts" and "steps" lists. A task an agent worked on step by step
    also shows "steps": how many, and the prompt tokens computed at each
    (`task log ID` lists the steps); and the memories it used: the notes
    recalled before its first step and by its recall tool, one
    `memory<TAB>ID<TAB>SCOPE<TAB>SOURCE<TAB>STEPS` line each without a
    terminal, "auto" marking the recall before the first step ("memories"
    in --json: id, scope, kind, source, heading, steps as [{n, auto}]).
    """

    async def body(c: AgentdClient) -> dict[str, Any]:
        info = await c.describe_task(task_id)
        return dict(
            info,
            events=await c.list_task_events(task_id),
            artifacts=await c.list_artifacts(task_id),
            steps=await c.list_task_steps(task_id),
        )

    info = run(body)
    if not info["steps"]:
        del info["steps"]  # a task not run step by step: as before the agent loop
    else:
        info["memories"] = memories_used(info["steps"])
    if as_json:
        print_json(info)
        return
    events = info.pop("events")
    artifacts = info.pop("artifacts")
    steps = info.pop("steps", [])
    used = info.pop("memories", [])
    if steps:  # the agent loop's trace (`task log ID` has every step)
        info["steps"] = token_summary(steps)
    shown = {
        k: v for k, v in info.items() if not (k in OPTIONAL_TASK_FIELDS and v in ("", [], None))
    }
    print_fields(shown, TASK_FIELDS, styled=("status",))
    tty = env().is_tty()
    print_section(
        "History",
        "event",
        ("SEQ", "TIME", "ACTOR", "EVENT", "RESULT", "DETAIL"),
        [
            (
                e["seq"],
                fmt_list_time(e["ts"]),
                user_cell(e["actor_uid"]),
                e["event"],
                e["result"],
                fmt_event_detail(e["detail"]),
            )
            for e in events
        ],
    )
    # a terminal gets sizes for people and the start of each hash (all of it in a pipe)
    print_section(
        "Artifacts",
        "artifact",
        ("NAME", "TYPE", "SIZE", "SHA256"),
        [
            (
                a["name"],
                a["type"],
                fmt_bytes(a["size"]) if tty else a["size"],
                a["sha256"][:12] + "…" if tty else a["sha256"],
            )
            for a in artifacts
        ],
    )
    if any(s.get("tool") == "recall" for s in steps):  # the loop had a memory to ask
        print_section(
            "Memories used",
            "memory",
            ("ID", "SCOPE", "SOURCE", "STEPS"),
            [(m["id"], m["scope"], memory_source(m), memory_steps(m)) for m in used],
        )


@click.command(
    "artifact",
    epilog="""\b
Examples:
  agentctl task artifact 42 report.md
  agentctl task artifact 42 report.pdf > report.pdf
  agentctl task artifact 42 report.pdf -o report.pdf --json""",
)
@click.argument("task_id", metavar="ID", type=TASK_ID)
@click.argument("name")
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write to FILE instead of stdout ('-': stdout, even a terminal).",
)
@json_option
def task_artifact(task_id: int, name: str, output: str | None, as_json: bool) -> None:
    """Write artifact NAME of task ID to stdout or FILE.

    Artifacts are files the agent wrote in its home and registered with
    agentd; their names, types, sizes and SHA-256 are in `task show ID`.
    Only the task's owner (and administrators) may read them; agentd reads
    the file, agentctl never opens the agent's home. Binary data is not
    written to a terminal unless asked for with `-o -`. With --json (which
    needs -o FILE), prints what was written: file, size and SHA-256.
    """
    if as_json and output in (None, "-"):
        raise click.UsageError(
            "--json describes the file written by -o FILE; "
            "without -o FILE the artifact itself is the output"
        )
    data = run(lambda c: c.read_artifact(task_id, name))
    if output is None or output == "-":
        if output is None and env().is_tty() and is_binary(data):
            fail(
                f"artifact {name!r} of task {task_id} is binary ({len(data)} bytes); "
                f"not writing it to a terminal: redirect it (> FILE), or use -o FILE "
                f"(-o - to force)"
            )
        stdout = click.get_binary_stream("stdout")
        stdout.write(data)
        stdout.flush()
        return
    try:
        with open(output, "wb") as f:
            f.write(data)
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror or e}")
    if as_json:
        print_json(
            {
                "task": task_id,
                "name": name,
                "file": output,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )


# -- the agent loop's trace and the owner's reply (issue 12) -------------------------
RESULT_CHARS = 200  # of a step's result on a terminal (the loop keeps up to 4,000)


def fmt_args(arguments: object) -> str:
    if isinstance(arguments, dict) and len(arguments) == 1:
        (value,) = arguments.values()
        if isinstance(value, str):
            return value
    return json.dumps(arguments, ensure_ascii=False) if arguments else ""


def one_line(text: object, most: int) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= most else flat[: most - 1] + "…"


def token_summary(steps: list[dict[str, Any]]) -> str:
    """'N steps; prompt P (computed C), completion K' for `task show`."""
    total = {k: sum(int(s.get(k) or 0) for s in steps) for k in _TOKENS}
    per_step = "/".join(str(int(s.get("computed_tokens") or 0)) for s in steps)
    return (
        f"{len(steps)} steps; tokens: prompt {total['prompt_tokens']} "
        f"(computed {total['computed_tokens']}: {per_step or '-'}), "
        f"completion {total['completion_tokens']}"
    )


_TOKENS = ("prompt_tokens", "computed_tokens", "completion_tokens")


def memories_used(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The memories the task's recall steps showed the agent (before its first
    step, "auto", and with its recall tool), each once, in the order first used."""
    used: dict[int, dict[str, Any]] = {}
    for s in steps:
        if s.get("tool") != "recall" or not isinstance(s.get("memories"), list):
            continue
        auto = isinstance(s.get("arguments"), dict) and s["arguments"].get("auto") is True
        for m in s["memories"]:
            if not isinstance(m, dict) or not isinstance(m.get("id"), int):
                continue
            entry = used.setdefault(
                m["id"], {k: m.get(k) for k in ("id", "scope", "kind", "source", "heading")}
            )
            entry.setdefault("steps", []).append({"n": s.get("n"), "auto": auto})
    return list(used.values())


def memory_source(m: dict[str, Any]) -> str:
    source = str(m.get("source") or m.get("kind") or "")
    return f"{source} > {m['heading']}" if m.get("heading") else source


def memory_steps(m: dict[str, Any]) -> str:
    """'1 (auto), 4': the steps that recalled it, "auto" before the first step."""
    return ", ".join(f"{s['n']}{' (auto)' if s['auto'] else ''}" for s in m["steps"])


@click.command(
    "log",
    short_help="Show the steps an agent took on a task.",
    epilog="""\b
Examples:
  agentctl task log 42
  agentctl task log 42 --json | jq '.[] | select(.tool == "shell") | .arguments'""",
)
@click.argument("task_id", metavar="ID", type=TASK_ID)
@json_option
def task_log(task_id: int, as_json: bool) -> None:
    """Show each step the agent took on task ID, oldest first.

    One row per step: attempt, step number, the tool (shell, read_file,
    list_files, write_file, fetch, ask_owner, finish; "error" for a step the
    model got wrong), its arguments, the result (truncated on a terminal),
    tokens (prompt, computed: what the model actually had to compute after
    reusing the previous step's cache, completion) and seconds. Only the
    task's owner and administrators see it. Without a terminal: tab-separated
    ATTEMPT N TIME TOOL ARGUMENTS RESULT PROMPT COMPUTED COMPLETION SECONDS
    lines, the result on one line. --json prints every step as agentd keeps it.
    """
    steps = run(lambda c: c.list_task_steps(task_id))
    if as_json:
        print_json(steps)
        return
    most = RESULT_CHARS if env().is_tty() else 4000
    print_table(
        (
            "ATTEMPT",
            "N",
            "TIME",
            "TOOL",
            "ARGUMENTS",
            "RESULT",
            "PROMPT",
            "COMPUTED",
            "COMPLETION",
            "SECONDS",
        ),
        [
            (
                s.get("attempt", ""),
                s.get("n", ""),
                fmt_list_time(s["at"]) if isinstance(s.get("at"), int | float) else dash(""),
                s.get("tool", ""),
                one_line(fmt_args(s.get("arguments")), most),
                one_line(s.get("result", ""), most),
                s.get("prompt_tokens", 0),
                s.get("computed_tokens", 0),
                s.get("completion_tokens", 0),
                f"{float(s.get('seconds') or 0):.1f}",
            )
            for s in steps
        ],
    )


@click.command(
    "reply",
    epilog="""\b
Examples:
  agentctl task show 42 | grep ^block_reason
  agentctl task reply 42 "Use /srv/data, not /tmp"
""",
)
@click.argument("task_id", metavar="ID", type=TASK_ID)
@click.argument("text")
@json_option
def task_reply(task_id: int, text: str, as_json: bool) -> None:
    """Answer the question blocked task ID asks, and let it run again.

    An agent asks with its ask_owner tool: the task is blocked with the
    reason "question: ..." (`task show ID`, Blocked on). Your reply is kept
    with the task and given to the same agent when it picks the task up
    again. agentd refuses (Busy) for a task that is not blocked; only the
    task's owner and administrators may reply. Prints nothing on success;
    with --json, the task after the reply.
    """

    async def body(c: AgentdClient) -> dict[str, Any] | None:
        await c.reply_task(task_id, text)
        return await c.describe_task(task_id) if as_json else None

    info = run(body)
    if info is not None:
        print_json(info)
