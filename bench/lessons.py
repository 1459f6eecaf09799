#!/usr/bin/python3
"""Lesson parse rate: how often a model's end-of-task lesson is the JSON asked for.

Issue 13: the lessons an agent writes are produced under a JSON schema, and
with the 1.5B model at least 99.5% must parse. This asks the model for the
lesson of every task of the agent suite (bench/agent_tasks) under four
outcomes (completed with a long and a short answer, failed at the step limit,
failed on a model error), with the loop's own request: its ASK_LESSON turn,
LESSON_SCHEMA, LESSON_TOKENS, temperature 0, parsed by its parse_lesson
(agentd.agentloop.memory). The conversation before it is shortened to what
the lesson is about: the persona and the task as the first turns, the final
answer (or the failure) as the last; the real loop has the steps between.

Starts agentd-inference on the GGUF (no systemd, no agentd; as
tools/loop_try.py), sends SEQUENCES requests at a time, and prints the parse
rate, the finish reasons and the failures; --json writes the report.

    PYTHONPATH=build/vendor AGENTD_LLAMA_VENDOR=build/vendor-llama /usr/bin/python3 \\
        bench/lessons.py --gguf build/model-cache/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench" / "agent_tasks"), str(REPO / "tools")]

import suite  # noqa: E402  (bench/agent_tasks/suite.py)
from loop_try import serve, wait_loaded  # noqa: E402  (the service, as the loop bench starts it)

from agentd.agentloop.memory import (  # noqa: E402
    ASK_LESSON,
    LESSON_SCHEMA,
    LESSON_TOKENS,
    parse_lesson,
)
from agentd.modelclient import ModelClient  # noqa: E402
from agentd.templates import Catalog  # noqa: E402

OUTCOMES = (
    ("completed", "you finished it with the answer above", "long"),
    ("completed", "you finished it with the answer above", "short"),
    ("failed", "it failed (the step limit (10 steps) was reached)", ""),
    ("failed", "it failed (model: the model did not answer within 150 s)", ""),
)


def conversation(task: suite.Task, persona: str, outcome: tuple[str, str, str]) -> list[dict]:
    status, how, answer = outcome
    first = f"Task: {task.title}\n{task.description}".strip()
    if status == "completed":
        text = (
            f"I did what the task asked ({task.title.rstrip('.')}); the result is in my home."
            if answer == "long"
            else "Done."
        )
        said = json.dumps({"thought": "", "tool": "finish", "arguments": {"answer": text}})
        tail = [{"role": "assistant", "content": said}, {"role": "user", "content": ""}]
    else:
        said = json.dumps({"thought": "I will look at the files.", "tool": "list_files"})
        tail = [{"role": "assistant", "content": said}, {"role": "user", "content": "notes.txt"}]
    tail[-1]["content"] = (tail[-1]["content"] + "\n\n" + ASK_LESSON.format(how=how)).strip()
    return [{"role": "system", "content": persona}, {"role": "user", "content": first}, *tail]


async def ask(client: ModelClient, messages: list[dict]) -> dict[str, Any]:
    request = {
        "op": "generate",
        "agent": "lessons",
        "owner": "1",
        "messages": messages,
        "max_tokens": LESSON_TOKENS,
        "temperature": 0.0,
        "json_schema": json.loads(LESSON_SCHEMA),
    }
    async for event in client.request(request):
        if event.get("event") == "done":
            return event
    raise RuntimeError("no answer")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    catalog = Catalog(REPO / "policies", Path("/nonexistent"))
    cases = [
        (task, outcome, catalog.template(task.template).system_prompt)
        for task in suite.load(None)
        for outcome in OUTCOMES
    ][: args.limit or None]
    work = Path(tempfile.mkdtemp(prefix="lessons-"))
    proc, socket = serve(args.gguf.resolve(), work, args.context, args.sequences)
    client = ModelClient(socket)
    gate = asyncio.Semaphore(args.sequences)
    results: list[dict[str, Any]] = []

    async def one(task: suite.Task, outcome: tuple[str, str, str], persona: str) -> None:
        async with gate:
            done = await ask(client, conversation(task, persona, outcome))
        row = {
            "task": task.name,
            "outcome": f"{outcome[0]}{'/' + outcome[2] if outcome[2] else ''}",
            "finish_reason": done.get("finish_reason"),
            "completion_tokens": done.get("completion_tokens"),
        }
        try:
            worked, lesson = parse_lesson(str(done.get("text", "")), done.get("finish_reason"))
            row.update(parsed=True, worked=worked, lesson=lesson)
        except ValueError as e:
            row.update(parsed=False, error=str(e))
        results.append(row)
        mark = "ok  " if row["parsed"] else "FAIL"
        said = str(row.get("lesson", row.get("error")))[:90]
        print(f"{mark} {row['task']:<22} {row['outcome']:<16} {said}", flush=True)

    try:
        await wait_loaded(client, proc)
        started = time.monotonic()
        await asyncio.gather(*(one(*case) for case in cases))
        took = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    parsed = sum(r["parsed"] for r in results)
    reasons: dict[str, int] = {}
    for r in results:
        reasons[str(r["finish_reason"])] = reasons.get(str(r["finish_reason"]), 0) + 1
    return {
        "gguf": args.gguf.name,
        "requests": len(results),
        "parsed": parsed,
        "parse_rate": round(parsed / max(1, len(results)), 4),
        "finish_reasons": reasons,
        "seconds": round(took, 1),
        "goal": 0.995,
        "results": sorted(results, key=lambda r: (r["task"], r["outcome"])),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--sequences", type=int, default=4)
    ap.add_argument("--limit", type=int, default=0, help="the first N requests only")
    ap.add_argument("--json", type=Path, help="write the report here")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = asyncio.run(run(args))
    print(
        f"{report['parsed']}/{report['requests']} lessons parsed "
        f"({report['parse_rate']:.1%}; goal 99.5%), finish reasons {report['finish_reasons']}, "
        f"{report['seconds']} s"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
