"""What the loop checks before it acts on a step as the model gave it.

A small model stops early and loops: it finishes before writing the file the
task names, finishes a script it never ran, and takes a step again whose
result cannot have changed. Each check here turns one such mistake, seen in
tools/loop_try.py traces of Qwen2.5-Coder-1.5B, into a refusal the model reads
as the step's result. Each refusal is given once per file or per repeat so
that a model which cannot do better still ends (the loop's last step may only
finish).
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any

ARTIFACT_PATH = re.compile(r"\bartifacts/[\w.\-/]*\w")  # files a task asks for
SCRIPT = re.compile(r"\.(sh|py|bash)$")
READ_ONLY = frozenset({"read_file", "list_files", "fetch", "recall"})  # steps that change nothing

NOT_WRITTEN = (
    "Not finished: the task asks for {} and it does not exist yet. Write it first "
    "(write_file, or a command), then finish."
)
UNTESTED = (
    "Not finished: you wrote {path} but never ran it. Run it with shell on a small "
    "example here (for instance: {run}), check that its output is what the task asks "
    "for, fix the script if it is not, then finish."
)
REPEATED = (
    "Not run: you took this exact step just before, and its result is above. Take a "
    "different step that gets you closer to the answer, or finish with the answer."
)
REPEATED_FAILURE = (
    "Not run: this exact command failed just before, and would fail the same way. "
    "Read its error above and write a corrected or different command."
)

Action = tuple[str, str]  # (tool, its arguments as sorted JSON)


def action(tool: str, args: dict[str, Any]) -> Action:
    return (tool, json.dumps(args, sort_keys=True))


def repeated(actions: list[Action], act: Action) -> bool:
    """ACT was taken before in this run and only reads happened since, so its
    result cannot have changed. Qwen2.5-Coder-1.5B cycled run, list, read,
    run... for all ten steps of a task (tools/loop_try.py)."""
    for earlier in reversed(actions):
        if earlier == act:
            return True
        if earlier[0] not in READ_ONLY:
            return False
    return False


def failed(result: str) -> bool:
    """A shell result (agentd.agentloop.tools) that reports a non-zero exit."""
    head = result.split("\n", 1)[0]
    return head.startswith("exit ") and head != "exit 0"


def unwritten(task: dict[str, Any], home: Path) -> list[str]:
    """The artifacts/ files the task's text names that do not exist. Qwen2.5-
    Coder-1.5B finished "save it as artifacts/people.json" with the JSON in its
    answer and no file."""
    text = f"{task.get('title', '')} {task.get('description', '')}"
    named = dict.fromkeys(m.rstrip(".,;:)") for m in ARTIFACT_PATH.findall(text))
    return [p for p in named if not (home / p).exists()]


def untested(actions: list[Action]) -> dict[str, str]:
    """Scripts written with write_file and not run by a shell step since they were
    last written, each with the command that runs it. Qwen2.5-Coder-1.5B wrote
    a backup script whose count line printed nothing and a countdown that
    printed "Liftoff!" for "liftoff", and finished at once both times
    (tools/loop_try.py, 2026-11-30)."""
    scripts: dict[str, str] = {}  # path -> how to run it, while not run since written
    for tool, raw in actions:
        args = json.loads(raw)
        if tool == "write_file":
            path = str(args.get("path", "")).removeprefix("./")
            if SCRIPT.search(path):
                scripts[path] = how_to_run(path, str(args.get("content", "")))
        elif tool == "shell":
            command = str(args.get("command", ""))
            scripts = {p: r for p, r in scripts.items() if Path(p).name not in command}
    return scripts


def how_to_run(path: str, content: str) -> str:
    """As its #! line says (what `./script` would run), else by its name."""
    first = content.split("\n", 1)[0]
    words = first[2:].split() if first.startswith("#!") else []
    name = Path(words[-1] if words and Path(words[0]).name == "env" else (words or [""])[0]).name
    if name.startswith("python") or (not name and path.endswith(".py")):
        return f"python3 {path}"
    return f"{name if name in ('sh', 'dash') else 'bash'} {path}"


def degenerate(text: str) -> bool:
    """TEXT ends in a loop of the same few tokens: more room would only make it
    longer. Qwen2.5-Coder-1.5B wrote `du -sh d/*; du -sh d/*/*; ...` to the
    768-token limit, then to 1,536, three times (bench/agents.py, 2026-11-30).
    Its last 1,200 characters compress to 5% with zlib; code, prose and JSON
    rows to 20-50%."""
    tail = text[-1200:].encode()
    return len(tail) >= 600 and len(zlib.compress(tail, 9)) < 0.1 * len(tail)
