"""The executor facade (agentd/executor.py): --exec tasks run the shell tool
as before; free-form tasks go to the agent loop through the runtime's
TaskHost; without one they wait, blocked; abort stops a free-form task.
The loop itself: tests/unit/test_agentloop*.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from agentd.executor import Executor, Outcome


class Host:
    """A TaskHost whose model finishes at once (or runs one shell step first)."""

    def __init__(self, *steps: dict[str, Any]) -> None:
        self.steps = list(steps)
        self.recorded: list[dict[str, Any]] = []
        self.options: list[dict[str, Any]] = []

    async def think(
        self, messages: list[dict[str, str]], options: dict[str, Any]
    ) -> dict[str, Any]:
        self.options.append(options)
        text = json.dumps({"thought": "", **self.steps.pop(0)})
        return {"text": text, "finish_reason": "stop", "prompt_tokens": 9, "completion_tokens": 3}

    async def context(self, task: int) -> dict[str, Any]:
        return {}

    async def record_step(self, task: int, attempt: int, step: dict[str, Any]) -> None:
        self.recorded.append(step)


def run(ex: Executor, **task: Any) -> Outcome:
    task.setdefault("id", 7)
    task.setdefault("attempt", 1)
    task.setdefault("title", "count the files")
    return asyncio.run(ex.run(task))


def test_a_free_form_task_goes_to_the_loop_with_the_templates_tools(tmp_path: Path) -> None:
    host = Host(
        {"tool": "shell", "command": "echo hi > artifacts/a.txt"},
        {"tool": "finish", "answer": "hello"},
    )
    (tmp_path / "artifacts").mkdir()
    ex = Executor(tmp_path, ["shell"], host, {"steps": 4})  # type: ignore[arg-type]
    out = run(ex, title="Say hello to the team")
    assert out.status == "completed" and out.result["answer"] == "hello"
    assert out.result["completion_tokens"] == 6 and out.result["steps"] == 2
    assert out.artifacts == [("a.txt", "artifacts/a.txt")]
    schema = json.loads(host.options[0]["json_schema"])
    assert [a["properties"]["tool"]["const"] for a in schema["oneOf"]] == [
        "shell",
        "ask_owner",
        "finish",
    ]


def test_without_a_model_a_free_form_task_waits_blocked(tmp_path: Path) -> None:
    out = run(Executor(tmp_path, ["shell"]))
    assert out.status == "blocked" and "no model" in out.reason


def test_exec_tasks_still_run_their_command_with_artifacts(tmp_path: Path) -> None:
    ex = Executor(tmp_path, ["shell"], Host())  # type: ignore[arg-type]
    out = run(ex, exec="echo hi > $AGENTD_ARTIFACTS/a.txt; echo $AGENTD_TASK_ID")
    assert out.status == "completed" and out.result["stdout"] == "7\n"
    assert out.artifacts == [("a.txt", "artifacts/a.txt")]
    out = run(ex, exec="echo oops >&2; exit 3")
    assert out.status == "failed" and out.error == "command exited with status 3"
    out = run(Executor(tmp_path, []), exec="true")
    assert out.status == "failed" and "shell" in out.error


def test_abort_stops_a_free_form_task_at_its_command(tmp_path: Path) -> None:
    async def main() -> Outcome:
        host = Host({"tool": "shell", "command": "sleep 30"}, {"tool": "finish", "answer": "x"})
        ex = Executor(tmp_path, ["shell"], host)  # type: ignore[arg-type]
        job = asyncio.get_running_loop().create_task(ex.run({"id": 3, "attempt": 1, "title": "t"}))
        while 3 not in ex.shell.running:
            await asyncio.sleep(0.01)
        assert ex.abort(3)
        return await asyncio.wait_for(job, 10)

    out = asyncio.run(main())
    assert out.status == "released" and out.reason == "aborted"
